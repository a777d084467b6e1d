"""Top-level functions: ``simulate`` a scenario, ``exact`` operating characteristics."""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .results import DesignResult, Results
from .oc import OutcomeTally
from .scenario import Scenario, load_scenario


def _as_scenario(scenario) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    return load_scenario(scenario)


def _select(sc: Scenario, designs: Optional[Sequence[str]]):
    if not designs:
        return list(sc.designs)
    return [sc.design(n) for n in designs]


def simulate(scenario: Union[Scenario, str], n_trials: Optional[int] = None,
             seed: Optional[int] = None, n_jobs: Optional[int] = None,
             chunk_size: Optional[int] = None, backend: Optional[str] = None,
             designs: Optional[Sequence[str]] = None, keep_trials: bool = False,
             logistics: Optional[bool] = None,
             progress: Optional[Callable[[int], None]] = None, checkpoint=None) -> Results:
    """Monte Carlo operating characteristics of the scenario's designs.

    Time-free scenarios run on the vectorised cohort engine; scenarios with a ``conduct``
    block run on the discrete-event engine (``logistics=False`` forces the cohort engine).
    Results are bit-identical for any ``n_jobs``, ``chunk_size`` or ``backend``.
    """
    from .runner import run_chunks
    sc = _as_scenario(scenario)
    sim = sc.model.simulation
    n_trials = int(n_trials if n_trials is not None else sim.n_trials)
    seed = int(seed if seed is not None else sim.seed)
    n_jobs = int(n_jobs if n_jobs is not None else sim.n_jobs)
    backend = backend or sim.backend
    chunk_size = chunk_size or sim.chunk_size
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1 (got {n_trials})")
    items = _select(sc, designs)
    use_des = sc.has_logistics if logistics is None else bool(logistics)
    if use_des and not sc.has_logistics:
        raise ValueError(f"{sc.source}: logistics requested but the scenario has no conduct block")
    tte = [it.name for it in items if it.time_to_event]
    if tte and not use_des:
        raise ValueError(f"{sc.source}: time-to-event designs {tte} need calendar time: add a "
                         "conduct block to the scenario (or drop them from this run)")
    conduct = sc.model.conduct if use_des else None
    t0 = time.perf_counter()
    K = sc.n_doses
    tallies = [OutcomeTally(K) for _ in items]
    pair_sums = {}
    dur_parts, stat_parts, trial_parts = [[] for _ in items], [[] for _ in items], [[] for _ in items]
    gen = run_chunks([it.design for it in items], sc.p_true, sc.target, seed, n_trials,
                     conduct=conduct, n_jobs=n_jobs, chunk_size=chunk_size, backend=backend,
                     keep_trials=keep_trials, acceptable=sc.model.oc.acceptable,
                     progress=progress,
                     skip=checkpoint.done_starts() if checkpoint is not None else None,
                     on_chunk=checkpoint.save if checkpoint is not None else None)
    chunks = list(gen)
    if checkpoint is not None:
        chunks = checkpoint.load_all()
    chunks.sort(key=lambda c: c.start)
    for ch in chunks:
        for i, t in enumerate(ch.tallies):
            tallies[i].merge(t)
            if ch.durations is not None:
                dur_parts[i].append(ch.durations[i])
                stat_parts[i].append(ch.des_stats[i])
            if ch.trials is not None:
                trial_parts[i].append(ch.trials[i])
        for pair, sums in ch.pair_sums.items():
            acc = pair_sums.setdefault(pair, {})
            for m, (s, ss) in sums.items():
                a = acc.setdefault(m, [0, 0])
                a[0] += s
                a[1] += ss
    results = []
    for i, it in enumerate(items):
        dur = np.concatenate(dur_parts[i]) if dur_parts[i] else None
        totals = {}
        if stat_parts[i]:
            for k in stat_parts[i][0]:
                v = np.concatenate([np.asarray(s[k], dtype=float) for s in stat_parts[i]])
                if v.ndim == 1 and v.size == n_trials:
                    totals["mean_" + k] = float(v.mean())
        trials = None
        if trial_parts[i]:
            trials = {k: np.concatenate([p[k] for p in trial_parts[i]]) for k in trial_parts[i][0]}
        results.append(DesignResult(it.name, it.type, tallies[i], dur, totals, trials))
    meta = {"elapsed_s": time.perf_counter() - t0, "n_jobs": n_jobs, "backend": backend,
            "chunk_size": chunk_size, "engine": "des" if use_des else "cohort"}
    return Results(sc, results, pair_sums, n_trials, seed, "monte-carlo", meta)


def compare(scenario, **kw) -> Results:
    """Alias of :func:`simulate` (every design of the scenario on the same patients)."""
    return simulate(scenario, **kw)


def exact_oc(design=None, scenario: Union[Scenario, str, None] = None,
             designs: Optional[Sequence[str]] = None) -> Results:
    """Exact operating characteristics (a ``Results`` with the simulation's tables, SEs 0).

    ``design``: a design name of the scenario, a list of names, a ``Design`` object, or None
    for every design of the scenario.
    """
    from .exact import exact_tally
    from .designs.base import Design
    from .scenario import DesignItem
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
    if bad:
        raise ValueError(f"exact enumeration is for time-free designs; not for {bad}")
    t0 = time.perf_counter()
    res = [DesignResult(it.name, it.type, exact_tally(it.design, sc.p_true)) for it in items]
    return Results(sc, res, {}, 0, 0, "exact", {"elapsed_s": time.perf_counter() - t0})
