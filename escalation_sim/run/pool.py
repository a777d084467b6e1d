"""The worker pool of local parallel runs, and how many workers a run gets.

A run with ``n_jobs`` J > 1 on the default backend (named ``loky``: local processes)
computes its chunks in this process and in a pool of J - 1 worker processes, all taking chunks
from one queue (:func:`escalation_sim.run.loop.execute`).  The pool is process-wide and
reused: a second run in the same process (a notebook's) finds its workers started, their
imports done and their state graphs built; they end with the process (or :func:`stop_pool`).  Starting it returns at once; the workers start (interpreter, imports)
while this process goes on, so the command line can start it before it has even read the
scenario (:func:`start_pool` from ``cli.main``).

This module imports nothing heavy: the command line consults it before importing numpy.
"""
from __future__ import annotations

import os

#: one core's time per trial and design, by engine, for choosing the number of workers (the
#: cohort engine's figure is BOIN/CRM at N = 24, benchmarks/bench_oc.py; the calendar
#: engine's the seed scenario, benchmarks/bench_des.py -- estimates, never limits)
SECONDS_PER_TRIAL = {"cohort": 3.5e-7, "des": 2.5e-4}
#: below this many estimated one-core seconds a run stays in one process when nobody chose
#: ``n_jobs``: its workers would be up (~0.3-0.5 s: interpreter and imports) too late to
#: take much of the work; the parent computes from the start, so above it they only add
AUTO_PARALLEL_SECONDS = 1.0
#: an explicit ``n_jobs`` > 1 on a process backend chosen by default still runs in one
#: process below this many estimated seconds (the workers would not be up before it ends)
MIN_PARALLEL_SECONDS = 0.5
#: thread pools of numerical libraries in the workers: one thread each (the processes are
#: the parallelism)
#: idle loky workers end after this many seconds (spawned ones end with the process)
POOL_IDLE_SECONDS = 300
_POOL_ENV = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                              "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS")}

#: environment variables the workers read, inherited when they start: a pool started under
#: other values is replaced (``--calendar-engine`` sets the first,
#: :data:`escalation_sim.engines.calendar.fast.ENV_VAR`)
_INHERITED = ("ESCALATION_SIM_CALENDAR_ENGINE",)

_POOL = None   # (executor, (workers, kind, values of _INHERITED), future of an _up task)


def auto_n_jobs(work_seconds: float, most: int) -> int:
    """Processes for a run estimated at ``work_seconds`` on one core: one below
    :data:`AUTO_PARALLEL_SECONDS`, else one per second of work (at least two), at most
    ``most``."""
    if work_seconds < AUTO_PARALLEL_SECONDS or most <= 1:
        return 1
    return max(2, min(int(most), int(work_seconds)))


def _worker_start(env: dict) -> None:
    """Each pool worker runs this as it starts: one thread per numerical library (set before
    numpy loads them), Ctrl-C left to the parent (which ends the workers: no traceback from
    each), and the imports every time-free chunk needs."""
    import signal
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from . import runner  # noqa: F401  (the cohort engine, state graphs, tallies)


def pool_chunk(key, args: tuple, kwargs: dict):
    """A chunk computed in a worker: ``(key, run_chunk(*args, **kwargs))``."""
    from .runner import run_chunk
    return key, run_chunk(*args, **kwargs)


#: the kind of workers: ``spawn`` (multiprocessing's, run by concurrent.futures), set by the
#: command line, or ``loky`` (the library's default).  A spawned worker is up 0.24 s after it
#: is started against 0.45 s for a loky worker, which imports joblib first (and so does this
#: process, ~0.1 s, before it can start one; measured on 2 cores, bytecode cached), but it
#: imports the ``__main__`` module again: fine for the command line's (guarded), not for a
#: user's script that runs a simulation without ``if __name__ == "__main__":``.
WORKERS = "loky"


def start_pool(n_workers: int):
    """The process-wide pool with ``n_workers`` worker processes (:data:`WORKERS`), started
    if needed (a pool of another size or kind, or a broken one, is replaced).  It returns at
    once: the workers start while the caller goes on."""
    global _POOL
    key = (n_workers, WORKERS, tuple(os.environ.get(k) for k in _INHERITED))
    if _POOL is not None and _POOL[1] == key and not _broken(_POOL[0]):
        return _POOL[0]
    stop_pool()
    import signal
    # the workers start with SIGINT ignored (it is ignored here while the first task starts
    # them): a Ctrl-C at the terminal, which goes to every process of the command, is left
    # to this process, which ends them (no traceback from each; a Ctrl-C in these few
    # milliseconds is lost)
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:   # not the main thread: signals stay as they are
        old = None
    try:
        if WORKERS == "spawn":
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            pool = ProcessPoolExecutor(max_workers=n_workers,
                                       mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_start, initargs=(dict(_POOL_ENV),))
        else:
            from joblib.externals.loky import ProcessPoolExecutor
            pool = ProcessPoolExecutor(max_workers=n_workers, timeout=POOL_IDLE_SECONDS,
                                       initializer=_worker_start, initargs=(dict(_POOL_ENV),),
                                       env=dict(_POOL_ENV))
        _POOL = (pool, key, pool.submit(_up))
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    return pool


def _up() -> None:
    """A no-op task: its result says that a worker is up (started, imports done)."""


def pool_up() -> bool:
    """Whether a worker of the pool :func:`start_pool` gave last is up (it has run a
    task).  The run loop hands chunks to the workers only from then on: a worker still
    starting would hold them while the parent, which could compute them, waits."""
    return _POOL is not None and _POOL[2].done()


def _broken(pool) -> bool:
    flags = getattr(pool, "_flags", None)   # loky's
    if flags is not None:
        return bool(getattr(flags, "broken", None) or getattr(flags, "shutdown", False))
    return bool(getattr(pool, "_broken", False) or getattr(pool, "_shutdown_thread", False))


def stop_pool(collect: bool = False) -> None:
    """End the pool's workers now, if :func:`start_pool` started any: after an error or an
    interrupt (a worker in the middle of a chunk is terminated), and when a command is over
    (a process about to exit then does not wait for idle workers to wind down).

    ``collect``: free the pool now (a garbage collection), so that its queues' semaphores
    are released while multiprocessing's resource tracker still runs: after an interrupt the
    command line ends every process it started, the tracker included."""
    global _POOL
    if _POOL is None:
        return
    pool, _POOL = _POOL[0], None
    if hasattr(pool, "_flags"):   # loky: its manager thread ends the workers (~15 ms)
        pool.shutdown(wait=True, kill_workers=True)
    else:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
        pool.shutdown(wait=True)   # the executor's manager thread closes its queues
        del procs
    del pool
    if collect:
        import gc
        gc.collect()
