"""Top-level functions: ``simulate`` a scenario, ``exact`` operating characteristics."""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence, Union


from .results.tables import DesignResult, Results
from .run.merge import ChunkMerger
from .inputs.scenario import Scenario, load_scenario


def _as_scenario(scenario) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    return load_scenario(scenario)


def _skip_note(sc: Scenario, names) -> None:
    import sys
    print(f"note: {sc.source}: time-to-event designs {', '.join(names)} skipped: they need "
          "calendar time (the conduct block)", file=sys.stderr)


def _truth_note(sc: Scenario, calendar: bool) -> None:
    """Say which parts of a graded truth the engines do not use yet (issue 12)."""
    import sys
    truth = sc.model.truth
    if truth.graded:
        rates = " / ".join(f"{p:.3f}" for p in sc.p_true)
        timing = ("; DLT days inside the window follow conduct.dlt_onset, not the types' "
                  "onset_days" if calendar else "")
        print(f"note: {sc.source}: graded truth: the engines simulate one binary DLT per "
              f"patient at the derived rates {rates}{timing}", file=sys.stderr)
    if truth.efficacy is not None:
        print(f"note: {sc.source}: truth.efficacy is not used by the engines yet",
              file=sys.stderr)


def _select(sc: Scenario, designs: Optional[Sequence[str]]):
    if not designs:
        return list(sc.designs)
    return [sc.design(n) for n in designs]


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
    finishes and skips the chunks an interrupted run already saved.
    """
    from .run.runner import run_chunks
    sc = _as_scenario(scenario)
    sim = sc.model.simulation
    n_trials = int(n_trials if n_trials is not None else sim.n_trials)
    seed = int(seed if seed is not None else sim.seed)
    n_jobs = int(n_jobs if n_jobs is not None else sim.n_jobs)
    backend = backend or sim.backend
    chunk_size = chunk_size or sim.chunk_size
    scheduler = scheduler or sim.scheduler
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1 (got {n_trials})")
    items = _select(sc, designs)
    use_des = sc.has_logistics if logistics is None else bool(logistics)
    if use_des and not sc.has_logistics:
        raise ValueError(f"{sc.source}: logistics requested but the scenario has no conduct block")
    tte = [it.name for it in items if it.time_to_event]
    if tte and not use_des:
        if designs or len(tte) == len(items):
            why = ("the run ignores the conduct block" if sc.has_logistics
                   else "add a conduct block to the scenario")
            raise ValueError(f"{sc.source}: time-to-event designs {tte} need calendar time "
                             f"({why}); run them with logistics or leave them out")
        _skip_note(sc, tte)
        items = [it for it in items if not it.time_to_event]
    conduct = sc.model.conduct if use_des else None
    _truth_note(sc, use_des)
    if checkpoint is not None:
        chunk_size = checkpoint.chunk_size
        checkpoint.verify(n_trials=n_trials, seed=seed, designs=[it.name for it in items],
                          engine="des" if use_des else "cohort", keep_trials=keep_trials)
    t0 = time.perf_counter()
    merger = ChunkMerger(sc.n_doses, len(items))
    done = checkpoint.done_starts() if checkpoint is not None else set()
    if done and progress is not None:
        progress(sum(min(s + chunk_size, n_trials) - s for s in done))
    gen = run_chunks([it.design for it in items], sc.p_true, sc.target, seed, n_trials,
                     conduct=conduct, n_jobs=n_jobs, chunk_size=chunk_size, backend=backend,
                     keep_trials=keep_trials, acceptable=sc.model.oc.acceptable,
                     progress=progress, skip=done or None, scheduler=scheduler,
                     on_chunk=checkpoint.save if checkpoint is not None else None)
    for ch in gen:  # merged as they arrive: memory does not grow with the number of chunks
        merger.add(ch)
    if checkpoint is not None:  # chunks finished by an earlier (interrupted) run
        for ch in checkpoint.iter_chunks(done):
            merger.add(ch)
    if merger.n_trials != n_trials:  # pragma: no cover - a bug, never expected
        raise RuntimeError(f"merged {merger.n_trials} trials, expected {n_trials}")
    meta = {"elapsed_s": time.perf_counter() - t0, "n_jobs": n_jobs, "backend": backend,
            "chunk_size": chunk_size, "engine": "des" if use_des else "cohort"}
    return Results(sc, merger.design_results(items), merger.pair_sums(), n_trials, seed,
                   "monte-carlo", meta)


def compare(scenario, **kw) -> Results:
    """Alias of :func:`simulate` (every design of the scenario on the same patients)."""
    return simulate(scenario, **kw)


def exact_oc(design=None, scenario: Union[Scenario, str, None] = None,
             designs: Optional[Sequence[str]] = None) -> Results:
    """Exact operating characteristics (a ``Results`` with the simulation's tables, SEs 0).

    ``design``: a design name of the scenario, a list of names, a ``Design`` object, or None
    for every design of the scenario.
    """
    from .engines.exact import exact_tally
    from .designs.base import Design
    from .inputs.scenario import DesignItem
    if scenario is None and isinstance(design, (Scenario, str)) and not designs:
        design, scenario = None, design
    sc = _as_scenario(scenario)
    if isinstance(design, Design):
        items = [DesignItem(getattr(design, "name", type(design).__name__),
                            getattr(design, "name", "custom"), None, design)]
    elif isinstance(design, str):
        items = _select(sc, [design])
    else:
        items = _select(sc, design or designs)
    bad = [it.name for it in items if it.time_to_event]
    if bad and design is None and not designs and len(bad) < len(items):
        _skip_note(sc, bad)
        items = [it for it in items if not it.time_to_event]
    elif bad:
        raise ValueError(f"exact enumeration is for time-free designs; not for {bad}")
    _truth_note(sc, False)
    t0 = time.perf_counter()
    res = [DesignResult(it.name, it.type, exact_tally(it.design, sc.p_true)) for it in items]
    return Results(sc, res, {}, 0, 0, "exact", {"elapsed_s": time.perf_counter() - t0})


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
    from .engines.calendar import simulate_des_trials
    sc = _as_scenario(scenario)
    if not sc.has_logistics:
        raise ValueError(f"{sc.source}: no conduct block, so there is no calendar time and no "
                         "patient log; add a conduct block")
    names = [design] if isinstance(design, str) else design
    idx = _trial_indices(trials)
    seed = int(seed if seed is not None else sc.model.simulation.seed)
    frames = []
    for it in _select(sc, names):
        res = simulate_des_trials(it.design, sc.p_true, sc.model.conduct, seed, idx,
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
