"""Chunks of trials and the backends that run them.

The trial index range ``0 .. n_trials-1`` is cut into chunks; :func:`run_chunk` runs every
design on the same trial indices (common random numbers) and returns integer tallies, so the
merged result is identical for any chunk size, number of workers or backend.  Chunks are
dispatched (by :mod:`escalation_sim.run.loop`, the one run loop) with joblib: loky processes
by default, ``threading``, ``sequential``, ``multiprocessing`` or ``dask``.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from itertools import combinations
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..designs.base import Design, Outcome
from ..engines.cohort import simulate_cohort_chunk
from ..results.oc import OutcomeTally, truth_sets

#: the most trials in one chunk, per engine: small enough that a checkpointed chunk loses
#: little work (about 30 ms of cohort-engine or 0.5 s of calendar time on one core) and that
#: per-trial rows of a chunk stay a few MB, large enough that per-chunk costs do not show
CHUNK_CAP = {"cohort": 100_000, "des": 500}
#: at least this many chunks when the run is small enough, so that workers share the work
MIN_CHUNKS = 8


@dataclass
class ChunkResult:
    start: int
    stop: int
    tallies: List[OutcomeTally]
    pair_sums: Dict[Tuple[int, int], Dict[str, List[float]]]
    durations: Optional[List[np.ndarray]] = None        # DES: per design, per trial
    des_stats: Optional[List[Dict[str, np.ndarray]]] = None
    trials: Optional[List[Dict[str, np.ndarray]]] = None  # per design, columnar per trial


def _per_trial_metrics(mtd, n, y, ok, over):
    sel = mtd >= 0
    # with no acceptable dose, stopping without an MTD is the correct answer
    correct = np.zeros(mtd.size, dtype=np.int64) if ok.any() else (~sel).astype(np.int64)
    correct[sel] = ok[mtd[sel]]
    overdose = np.zeros(mtd.size, dtype=np.int64)
    overdose[sel] = over[mtd[sel]]
    return {"correct": correct, "select_overdose": overdose,
            "n_total": n.sum(axis=1).astype(np.int64), "dlt_total": y.sum(axis=1).astype(np.int64)}


def _exact_sum(x: np.ndarray) -> Fraction:
    return sum(map(Fraction, x.tolist()), Fraction(0))


def run_chunk(designs: Sequence[Design], p_true: Sequence[float], target: float, seed: int,
              start: int, stop: int, conduct=None, keep_trials: bool = False,
              acceptable=None, record_patients: bool = False, model=None,
              efficacy=None) -> ChunkResult:
    """Simulate trials ``start..stop-1`` for every design (same patients for all).

    ``model``: the :class:`~escalation_sim.inputs.truth.OutcomeModel` of a graded truth (None
    for ``truth: {p_dlt}``); the time-free engine draws each patient's outcome from it, the
    calendar engine also each event type's onset.  ``efficacy``: P(response) per dose, for
    the designs that use responses (``Outcome.JOINT``)."""
    K = designs[0].n_doses
    ok_b, over_b = truth_sets(p_true, target, acceptable)
    ok, over = ok_b.astype(np.int64), over_b.astype(np.int64)
    tallies, metrics, trials, durations, des_stats = [], [], [], [], []
    for design in designs:
        score = design.outcome is Outcome.SCORE
        ok_d, over_d = ok, over
        joint = design.outcome is Outcome.JOINT
        if joint:   # its own correct answer: the true OBD (results.oc.obd_truth_sets)
            from ..results.oc import obd_truth_sets
            ok_j, over_j = obd_truth_sets(design, p_true, efficacy)
            ok_d, over_d = ok_j.astype(np.int64), over_j.astype(np.int64)
        if score:  # its own true target dose: mean normalized score closest to its target
            ok_s, over_s = truth_sets(model.mean_score(design.inner.scores),
                                      design.inner.target)
            ok_d, over_d = ok_s.astype(np.int64), over_s.astype(np.int64)
        if conduct is None:
            ch = simulate_cohort_chunk(design, p_true, seed, start, stop, model=model,
                                       efficacy=efficacy if joint else None)
            g = ch.graph
            tallies.append(OutcomeTally.from_graph_sids(g, ch.sids))
            # per-trial arrays through the per-state look-up tables
            uniq, inv = np.unique(ch.sids, return_inverse=True)
            inv = inv.ravel()
            mtd_u, stop_u, n_u, y_u = g.endings(uniq)     # terminal_key's values, as arrays
            mtd, stopc, n, y = mtd_u[inv], stop_u[inv], n_u[inv], y_u[inv]
            if score:   # the states sum score units; the engine counted the DLTs (the
                #             per-trial tables keep one layout for every design: n and DLTs)
                y = ch.dlt.astype(np.int64)
            durations.append(None)
            des_stats.append(None)
        else:
            from ..engines.calendar import simulate_des_trials
            res = simulate_des_trials(design, p_true if model is None else model, conduct, seed,
                                      np.arange(start, stop),
                                      record_patients=record_patients)
            mtd, stopc, n, y = res["mtd"], res["stop_code"], res["n"], res["y"]
            t = OutcomeTally(K)
            for key in zip(mtd.tolist(), stopc.tolist(), map(tuple, n.tolist()),
                           map(tuple, y.tolist())):
                t.add(key, 1)
            tallies.append(t)
            if score:   # the tally sums score units; the per-trial DLTs come from the engine
                y = res["dlt"]
            durations.append(np.asarray(res["duration_days"], dtype=float))
            des_stats.append({k: v for k, v in res.items()
                              if k not in ("mtd", "stop_code", "n", "y", "dlt", "trial",
                                           "duration_days")
                              and isinstance(v, np.ndarray) and v.ndim == 1
                              and v.dtype.kind in "iuf" and v.size == stop - start})
        m = _per_trial_metrics(mtd, n, y, ok_d, over_d)
        if durations[-1] is not None:
            m["duration_days"] = durations[-1]
        metrics.append(m)
        if keep_trials:
            cols = {"trial": np.arange(start, stop), "mtd": mtd, "stop_code": stopc}
            for d in range(K):
                cols[f"n_{d + 1}"] = n[:, d]
            for d in range(K):
                cols[f"dlt_{d + 1}"] = y[:, d]
            if durations[-1] is not None:
                for k, v in des_stats[-1].items():
                    if isinstance(v, np.ndarray) and v.ndim == 1 and v.size == stop - start:
                        cols[k] = v
                cols["duration_days"] = durations[-1]
            trials.append(cols)
    pair_sums: Dict[Tuple[int, int], Dict[str, List[float]]] = {}
    for a, b in combinations(range(len(designs)), 2):
        sums = {}
        for name in metrics[a]:
            d = metrics[a][name] - metrics[b][name]
            if d.dtype.kind == "f":  # exact rational sums: merged totals do not depend
                # on the chunking (ChunkMerger rounds them to float once, at the end)
                sums[name] = [_exact_sum(d), _exact_sum(d * d)]
            else:
                sums[name] = [int(d.sum()), int((d * d).sum())]
        pair_sums[(a, b)] = sums
    return ChunkResult(start, stop, tallies, pair_sums,
                       durations if conduct is not None else None,
                       des_stats if conduct is not None else None,
                       trials if keep_trials else None)


def chunk_ranges(n_trials: int, chunk_size: int) -> List[Tuple[int, int]]:
    return [(a, min(a + chunk_size, n_trials)) for a in range(0, n_trials, chunk_size)]


def default_chunk_size(n_trials: int, engine: str) -> int:
    """The one default chunk size (trials per chunk) of every run, checkpointed or not.

    It depends on the trial count and the engine only, never on the number of workers, so a
    checkpoint written by a run on one core can be resumed on many.  Results do not depend
    on the chunk size at all (integer tallies merge exactly).
    """
    if engine not in CHUNK_CAP:
        raise ValueError(f"engine must be one of {sorted(CHUNK_CAP)} (got {engine!r})")
    return max(1, min(CHUNK_CAP[engine], math.ceil(n_trials / MIN_CHUNKS)))


def resolve_n_jobs(n_jobs: int, backend: Optional[str]) -> int:
    """Validate ``n_jobs``; -1 means every CPU.  Local process pools are capped at the number
    of CPUs: more processes than cores only cost memory (each holds its own state graphs)."""
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or (n_jobs < 1 and n_jobs != -1):
        raise ValueError(f"n_jobs must be -1 (every CPU) or a positive integer (got {n_jobs!r})")
    cpus = os.cpu_count() or 1
    if n_jobs == -1:
        return cpus
    if backend in (None, "loky", "multiprocessing") and n_jobs > cpus:
        return cpus
    return n_jobs


def make_parallel(n_jobs: int, backend: str, scheduler: Optional[str] = None):
    """A joblib ``Parallel`` for the chosen backend.

    ``dask`` needs an active dask.distributed ``Client`` (see :func:`backend_session`).
    """
    import joblib
    if backend == "sequential" or n_jobs == 1 and backend != "dask":
        return joblib.Parallel(n_jobs=1, return_as="generator")
    if backend == "dask":
        _need_distributed()
        # joblib registers its dask backend through parallel_config (Parallel(backend="dask")
        # would pass joblib's nesting_level on to Client.submit)
        with joblib.parallel_config(backend="dask"):
            return joblib.Parallel(return_as="generator")
    if backend == "multiprocessing":
        # joblib's multiprocessing pool cannot stream results: the chunks come back as one
        # list, in order, when all are done (memory then holds every chunk's tallies)
        return joblib.Parallel(n_jobs=n_jobs, backend=backend, return_as="list")
    return joblib.Parallel(n_jobs=n_jobs, backend=backend, return_as="generator")


def _need_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError("backend 'dask' needs the distributed extra: "
                           "pip install 'escalation-sim[distributed]'") from exc


@contextmanager
def backend_session(backend: Optional[str], n_jobs: int = 1, scheduler: Optional[str] = None):
    """Context for a run on ``backend``: for ``dask``, a dask.distributed ``Client``.

    With a scheduler address the client connects to it; without one it reuses the current
    client if there is one, else starts a ``LocalCluster`` of ``n_jobs`` single-threaded worker
    processes.  Clients and clusters started here are closed on exit.
    """
    if backend != "dask":
        yield None
        return
    _need_distributed()
    import logging
    from dask.distributed import Client, LocalCluster
    if scheduler is None:
        from distributed import default_client
        try:
            current = default_client()
        except ValueError:  # no client yet
            current = None
        if current is not None:
            yield current
            return
        n = n_jobs if n_jobs and n_jobs > 0 else (os.cpu_count() or 1)
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client:
            yield client
        return
    with Client(scheduler) as client:
        yield client
