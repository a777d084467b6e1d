"""Top-level functions: ``simulate`` a scenario, ``exact`` operating characteristics.

A thin façade over the run loop (:mod:`escalation_sim.run.loop`), which chooses the engine,
cuts the trials into chunks, dispatches, merges and checkpoints.  Nothing here prints: notes
(e.g. time-to-event designs skipped on a time-free engine) are
:class:`~escalation_sim.run.RunNote` warnings.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

from .inputs.scenario import Scenario, load_scenario
from .results.tables import Results


def _as_scenario(scenario) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    return load_scenario(scenario)


def simulate(scenario: Union[Scenario, str], n_trials: Optional[int] = None,
             seed: Optional[int] = None, n_jobs: Optional[int] = None,
             chunk_size: Optional[int] = None, backend: Optional[str] = None,
             designs: Optional[Sequence[str]] = None, keep_trials: bool = False,
             logistics: Optional[bool] = None,
             progress: Optional[Callable[[int], None]] = None, checkpoint=None,
             scheduler: Optional[str] = None) -> Results:
    """Monte Carlo operating characteristics of the scenario's designs.

    Time-free scenarios run on the vectorised cohort engine; scenarios with a ``conduct``
    block run on the discrete-event engine (``logistics=False`` forces the cohort engine).
    Results are bit-identical for any ``n_jobs``, ``chunk_size`` or ``backend``.
    ``backend="dask"`` runs on the dask.distributed scheduler at ``scheduler`` (or on the
    current client, or on a LocalCluster of ``n_jobs`` workers started for the run).
    ``checkpoint`` (a :class:`escalation_sim.run.checkpoint.Checkpoint`) saves each chunk as it
    finishes and reuses the chunks an interrupted run already saved (each checked first).
    ``progress(n)`` is called with the number of trials each chunk adds.
    """
    from .run.loop import dispatch_for, plan_run, run_plan
    sc = _as_scenario(scenario)
    plan = plan_run(sc, n_trials=n_trials, seed=seed, chunk_size=chunk_size, designs=designs,
                    logistics=logistics, keep_trials=keep_trials)
    return run_plan(plan, dispatch_for(sc, n_jobs, backend, scheduler), checkpoint=checkpoint,
                    progress=progress)


def compare(scenario, **kw) -> Results:
    """Alias of :func:`simulate` (every design of the scenario on the same patients)."""
    return simulate(scenario, **kw)


def exact_oc(design=None, scenario: Union[Scenario, str, None] = None,
             designs: Optional[Sequence[str]] = None) -> Results:
    """Exact operating characteristics (a ``Results`` with the simulation's tables, SEs 0).

    ``design``: a design name of the scenario, a list of names, a ``Design`` object, or None
    for every design of the scenario.
    """
    from .designs.base import Design
    from .inputs.scenario import DesignItem
    from .run.loop import plan_run, run_exact
    if scenario is None and isinstance(design, (Scenario, str)) and not designs:
        design, scenario = None, design
    sc = _as_scenario(scenario)
    if isinstance(design, Design):
        chosen = [DesignItem(getattr(design, "name", type(design).__name__),
                             getattr(design, "name", "custom"), None, design)]
    elif isinstance(design, str):
        chosen = [design]
    else:
        chosen = design or designs
    return run_exact(plan_run(sc, method="exact", designs=chosen))


def _trial_indices(trials) -> list:
    if isinstance(trials, bool):
        raise ValueError(f"trials must be a count or a sequence of trial indices (got {trials!r})")
    if isinstance(trials, int):
        if trials < 1:
            raise ValueError(f"trials must be >= 1 (got {trials})")
        return list(range(trials))
    idx = list(trials)
    bad = [t for t in idx if isinstance(t, bool) or not isinstance(t, int) or t < 0]
    if not idx or bad:
        raise ValueError(f"trial indices must be integers >= 0 (got {idx!r})")
    return idx


def patient_log(scenario: Union[Scenario, str], design: Union[str, Sequence[str], None] = None,
                trials=1, seed: Optional[int] = None):
    """The calendar engine's patient log: a pandas DataFrame, one row per arrival.

    ``design``: a design name, a list of names, or None for every design of the scenario;
    ``trials``: how many trials (the first ones) or which trial indices; ``seed``: default
    the scenario's.  Trial ``t`` is trial ``t`` of :func:`simulate` with the same seed (the
    same patients).  Columns: ``design`` then the log's columns (documented in
    :mod:`escalation_sim.engines.calendar.log`: arrival, screening, fate, enrollment, dose,
    cohort, gate wait, infusion, DLT and onset, drop-out, window end, each phase's start and
    end).  For a swimmer plot of one trial use :func:`swimmer_data`.
    """
    import pandas as pd
    from .engines.calendar import calendar_truth, simulate_des_trials
    sc = _as_scenario(scenario)
    if not sc.has_logistics:
        raise ValueError(f"{sc.source}: no conduct block, so there is no calendar time and no "
                         "patient log; add a conduct block")
    names = [design] if isinstance(design, str) else design
    idx = _trial_indices(trials)
    seed = int(seed if seed is not None else sc.model.simulation.seed)
    frames = []
    items = list(sc.designs) if not names else [sc.design(n) for n in names]
    for it in items:
        res = simulate_des_trials(it.design, calendar_truth(sc), sc.model.conduct, seed, idx,
                                  record_patients=True)
        df = pd.DataFrame(res["patients"])
        df.insert(0, "design", it.name)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def swimmer_data(scenario: Union[Scenario, str], design: Optional[str] = None, trial: int = 0,
                 seed: Optional[int] = None) -> dict:
    """One simulated trial ready for :func:`escalation_sim.plotting.plot_swimmer`:
    ``{"patients", "decisions", "mtd", "duration_days", "design"}`` (see
    :func:`escalation_sim.engines.calendar.swimmer.swimmer_data`)."""
    from .engines.calendar import swimmer_data as _swimmer_data
    return _swimmer_data(_as_scenario(scenario), design, int(_trial_indices([trial])[0]), seed)
