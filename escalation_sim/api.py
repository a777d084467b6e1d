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


# ---------------------------------------------------------------- real data (issue 15)
def _real_design(design, scenario, target, n_doses, options, cohort_size, max_n):
    """``(name, design, n_doses, dose labels, DLT window)`` from a scenario's design name or
    a design type with its options."""
    from .designs.base import Design
    from .run.realdata import build_design
    if scenario is not None:
        sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario,
                                                                          require_truth=False)
        if design is None and len(sc.designs) != 1:
            raise ValueError(f"{sc.source} has several designs "
                             f"({', '.join(d.name for d in sc.designs)}): name one")
        it = sc.designs[0] if design is None else sc.design(design)
        return it.name, it.design, sc.n_doses, sc.dose_labels, sc.dlt_window_days
    if isinstance(design, Design):
        k = design.n_doses
        return (str(getattr(design, "name", type(design.inner).__name__)), design, k,
                [f"DL{i + 1}" for i in range(k)], None)
    if target is None or n_doses is None:
        raise ValueError("give a scenario, a Design, or a design type with target and n_doses")
    built = build_design(design, target, n_doses, options, cohort_size, max_n)
    return design, built, n_doses, [f"DL{i + 1}" for i in range(n_doses)], None


def next_dose(design=None, outcomes: str = "", *, scenario=None, pending=(),
              window_days: Optional[float] = None, target: Optional[float] = None,
              n_doses: Optional[int] = None, options: Optional[dict] = None,
              cohort_size: Optional[int] = None, max_n: Optional[int] = None,
              level: float = 0.95):
    """The next dose on real data, as a :class:`~escalation_sim.run.realdata.Recommendation`
    (1-based dose levels; estimates with ``level`` credible intervals).

    ``design``: a design name of ``scenario`` (a file or Scenario; its truth is optional), a
    ``Design``, or a design type (``"boin"``) with ``target``, ``n_doses`` and ``options``.
    ``outcomes``: complete patients (``"1NNN 2NTN"``); ``pending``: time-to-event designs'
    patients still in follow-up, ``[(dose, days followed), ...]`` with ``window_days``
    (default: the scenario's DLT window)."""
    from .run.realdata import recommend, trial_state
    name, d, k, _, window = _real_design(design, scenario, target, n_doses, options,
                                         cohort_size, max_n)
    state = trial_state(k, outcomes, list(pending or ()), window_days or window)
    return recommend(d, state, name, level)


def select_mtd(design=None, outcomes: Optional[str] = None, *, n=None, dlt=None,
               scenario=None, target: Optional[float] = None, n_doses: Optional[int] = None,
               options: Optional[dict] = None, level: float = 0.95):
    """The MTD on final data (``outcomes``, or per-dose ``n`` and ``dlt``), as a
    :class:`~escalation_sim.run.realdata.MTDSelection` (1-based)."""
    from .run.realdata import as_state, select_mtd as _select, trial_state
    name, d, k, _, _ = _real_design(design, scenario, target, n_doses, options, None, None)
    state = trial_state(k, outcomes) if outcomes is not None else as_state(n, dlt)
    return _select(d, state, name, level)


def dose_paths(design=None, outcomes: str = "", cohorts: int = 2, *, scenario=None,
               truth=None, cohort_sizes=None, target: Optional[float] = None,
               n_doses: Optional[int] = None, options: Optional[dict] = None,
               cohort_size: Optional[int] = None, max_n: Optional[int] = None) -> dict:
    """Every course of the next cohorts (nested dict, 1-based doses).  ``truth`` adds each
    node's probability; ``final_recommendations(tree)`` in
    :mod:`escalation_sim.engines.paths` sums them per final recommendation."""
    from .engines.paths import dose_paths as _paths
    from .run.realdata import trial_state
    _, d, k, _, _ = _real_design(design, scenario, target, n_doses, options, cohort_size,
                                 max_n)
    return _paths(d, trial_state(k, outcomes), cohorts, truth=truth, cohort_sizes=cohort_sizes)


def replay(log, design=None, *, scenario=None, window_days: Optional[float] = None,
           as_of=None, target: Optional[float] = None, n_doses: Optional[int] = None,
           options: Optional[dict] = None, cohort_size: Optional[int] = None,
           level: float = 0.95, tox_types=None, dlt_rule=None):
    """Replay a patient log (CSV path): every design's recommendation at each real decision
    point beside what the trial did (:class:`~escalation_sim.run.replay.ReplayResult`;
    ``design``: a name or list of names of ``scenario``, default all of them, or a design
    type with ``target`` and ``n_doses``).  ``as_of``: the data cut-off (a ``date``;
    default the log's last date).  Graded logs (``TYPE_grade`` / ``TYPE_onset``
    columns): the types and DLT rule of a graded scenario, else ``tox_types`` (e.g.
    ``["CRS", "ICANS"]``) and ``dlt_rule`` (``[("CRS", 3), ...]``, default every type at
    grade >= 3).  Bad rows raise
    :class:`~escalation_sim.inputs.patient_log.PatientLogError` listing every problem."""
    from .inputs.patient_log import read_patient_log
    from .run.replay import replay_log
    if scenario is not None:
        sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario,
                                                                          require_truth=False)
        names = [design] if isinstance(design, str) else design
        items = list(sc.designs) if not names else [sc.design(x) for x in names]
        designs = [(it.name, it.design) for it in items]
        labels, window = sc.dose_labels, window_days or sc.dlt_window_days
        if sc.has_truth and sc.model.truth.graded:   # graded logs: the truth's types, rule
            tox_types = sc.outcome_model.type_names
            dlt_rule = sc.outcome_model.rule_names
    else:
        name, d, _, labels, _ = _real_design(design, None, target, n_doses, options,
                                             cohort_size, None)
        if window_days is None:
            raise ValueError("window_days: the DLT window is needed without a scenario")
        designs, window = [(name, d)], window_days
    log_data = read_patient_log(log, len(labels), window, as_of, tox_types or (), dlt_rule)
    return replay_log(log_data, designs, window, labels, as_of, level)
