"""The one run loop: plans, chunks, merging, checkpoints and per-trial streaming.

Every run goes through this module: :func:`escalation_sim.simulate` and
:func:`escalation_sim.exact_oc`, :func:`escalation_sim.run.study.run_study`, and the command
line's ``run``, ``exact``, ``report`` and ``study``.

* :func:`plan_run` turns a scenario and the caller's options into a :class:`RunPlan`: the
  designs to run, the engine (``cohort``, ``des`` or ``exact`` - the one place this choice is
  made), the trial count, seed and chunk size.
* :func:`execute` runs the chunks of one or many plans through one dispatch (in this
  process; this process and a pool of worker processes sharing one queue of chunks;
  threads, joblib's multiprocessing pool or a Dask cluster), merges each plan's tallies
  as chunks arrive, saves every chunk to the plan's checkpoint and reuses the chunks a killed run saved (each checked
  first), and yields each plan's :class:`~escalation_sim.results.tables.Results` when its
  last chunk is in.
* :func:`run_plan` and :func:`run_exact` run one plan in memory; :func:`run_in_folder` runs
  one plan into an output folder: under the folder's lock, checkpointed on request,
  per-trial rows streamed to disk chunk by chunk, every output written atomically and
  ``manifest.json`` last.

The library never prints.  Progress is reported through a ``progress(n_trials_done)``
callback; things the user should know (designs skipped, parts of a graded truth not simulated,
damaged checkpoint chunks set aside, stale locks taken over) are
:class:`~escalation_sim.run.RunNote` warnings.

Test hooks (fault injection, tests/test_faults.py), off unless set in the environment:
``ESCALATION_SIM_TEST_CHUNK_FD=<fd>`` writes ``chunk <start> <stop>`` to that file descriptor
after each chunk is saved; ``ESCALATION_SIM_TEST_HOLD_AFTER=<k>`` then, after the k-th chunk
this process saved, writes ``hold`` and waits until a line can be read from
``ESCALATION_SIM_TEST_RELEASE_FD`` (forever when it is not set) - so a test can kill the run,
or start a second one, at an exact chunk boundary without sleeping.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ..designs.base import Outcome
from ..inputs.scenario import DesignItem, Scenario
from ..results.tables import DesignResult, Results
from .checkpoint import Checkpoint, ChunkDamaged, CheckpointError
from .merge import ChunkMerger
from . import RunNote
from .pool import (AUTO_PARALLEL_SECONDS, MIN_PARALLEL_SECONDS,  # noqa: F401 (re-exported)
                   SECONDS_PER_TRIAL, auto_n_jobs, pool_chunk, pool_up, start_pool,
                   stop_pool)
from .runner import (backend_session, chunk_ranges, default_chunk_size, make_parallel,
                     resolve_n_jobs, run_chunk)

Progress = Optional[Callable[[int], None]]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# plans
@dataclass
class RunPlan:
    """What one run computes: the scenario, its designs, the engine and the trial range."""

    scenario: Scenario
    items: List[DesignItem]
    engine: str                       # "cohort" | "des" | "exact"
    n_trials: int = 0                 # 0 for exact enumeration
    seed: int = 0
    chunk_size: Optional[int] = None  # None: the checkpoint's, else default_chunk_size
    keep_trials: bool = False
    key: Any = 0                      # the plan's name in a multi-plan run (a study cell)

    @property
    def designs(self):
        return [it.design for it in self.items]

    @property
    def conduct(self):
        return self.scenario.model.conduct if self.engine == "des" else None

    def resolved_chunk_size(self) -> int:
        return int(self.chunk_size) if self.chunk_size is not None else \
            default_chunk_size(self.n_trials, self.engine)


@dataclass
class Dispatch:
    """Where chunks run: ``n_jobs`` workers of ``backend`` (``scheduler``: a Dask address).

    ``auto``: nobody chose ``n_jobs``; :func:`execute` picks it from the work (see
    :func:`auto_n_jobs`) and ``n_jobs`` is then the most it may use.  ``exact``: the caller
    named the backend, so ``n_jobs`` workers are started whatever the work; otherwise a
    process pool is not started for a run shorter than :data:`MIN_PARALLEL_SECONDS` (with a
    note): two jobs are then never slower than one."""

    n_jobs: int = 1
    backend: str = "loky"
    scheduler: Optional[str] = None
    auto: bool = False
    exact: bool = False


def seconds_per_trial(item: DesignItem, engine: str) -> float:
    """One core's estimated time per trial of ``item`` on ``engine``: the design type's own
    figure on the cohort engine when its registry entry gives one (``seconds_per_trial``:
    the efficacy designs, whose state graphs are far larger), else
    :data:`SECONDS_PER_TRIAL`."""
    base = SECONDS_PER_TRIAL.get(engine, 0.0)
    if engine != "cohort":
        return base
    from ..designs.registry import get_entry
    try:
        hint = get_entry(item.type).seconds_per_trial
    except KeyError:          # a design built in Python under a type name not registered
        hint = None
    return base if hint is None else float(hint)


def estimated_seconds(plans: Sequence["RunPlan"], todo: Dict[Any, List[Tuple[int, int]]]) -> float:
    """One core's estimated time for the chunks still to run (:func:`seconds_per_trial` of
    each design)."""
    return sum(seconds_per_trial(it, p.engine) * (b - a)
               for p in plans for it in p.items for a, b in todo.get(p.key, ()))


def dispatch_for(scenario: Optional[Scenario] = None, n_jobs: Optional[int] = None,
                 backend: Optional[str] = None, scheduler: Optional[str] = None) -> Dispatch:
    """The dispatch settings: the arguments, else the scenario's ``simulation`` block;
    ``n_jobs`` given nowhere (or ``auto``) lets :func:`execute` choose."""
    sim = scenario.model.simulation if scenario is not None else None
    explicit_backend = backend
    backend = backend or (sim.backend if sim is not None else None) or "loky"
    n = n_jobs if n_jobs is not None else (sim.n_jobs if sim is not None else "auto")
    scheduler = scheduler or (sim.scheduler if sim is not None else None)
    exact = explicit_backend is not None
    if n == "auto":
        # threads share one interpreter lock and sequential means one: only process pools
        # (and Dask) are worth more than one worker
        most = resolve_n_jobs(-1, backend) if backend in ("loky", "multiprocessing", "dask") \
            else 1
        return Dispatch(most, backend, scheduler, auto=True, exact=exact)
    return Dispatch(resolve_n_jobs(int(n), backend), backend, scheduler, exact=exact)


def choose_engine(scenario: Scenario, logistics: Optional[bool] = None,
                  method: str = "monte-carlo") -> str:
    """``exact`` for exact enumeration; else ``des`` (the calendar-time engine) when the
    scenario has a conduct block and ``logistics`` is not False, ``cohort`` otherwise."""
    if method == "exact":
        return "exact"
    if method != "monte-carlo":
        raise ValueError(f"method must be 'monte-carlo' or 'exact' (got {method!r})")
    use_des = scenario.has_logistics if logistics is None else bool(logistics)
    if use_des and not scenario.has_logistics:
        raise ValueError(f"{scenario.source}: logistics requested but the scenario has no "
                         "conduct block")
    return "des" if use_des else "cohort"


def plan_run(scenario: Scenario, *, method: str = "monte-carlo",
             n_trials: Optional[int] = None, seed: Optional[int] = None,
             chunk_size: Optional[int] = None,
             designs: Optional[Sequence[Union[str, DesignItem]]] = None,
             logistics: Optional[bool] = None, keep_trials: bool = False,
             key: Any = 0) -> RunPlan:
    """The plan of a run of ``scenario``.

    ``designs``: names (or :class:`DesignItem` objects) to run, default every design of the
    scenario.  Time-to-event designs need calendar time: on the time-free engines they are an
    error when asked for by name (or when they are all there is), and are otherwise skipped
    with a :class:`RunNote`.  ``n_trials``, ``seed`` and ``chunk_size`` default to the
    scenario's ``simulation`` block.
    """
    sim = scenario.model.simulation
    engine = choose_engine(scenario, logistics, method)
    explicit = bool(designs)
    if not designs:
        items = list(scenario.designs)
    else:
        items = [d if isinstance(d, DesignItem) else scenario.design(d) for d in designs]
    tte = [it.name for it in items if it.time_to_event]
    if tte and engine != "des":
        if explicit or len(tte) == len(items):
            if engine == "exact":
                raise ValueError(f"exact enumeration is for time-free designs; not for {tte}")
            why = ("the run ignores the conduct block" if scenario.has_logistics
                   else "add a conduct block to the scenario")
            raise ValueError(f"{scenario.source}: time-to-event designs {tte} need calendar "
                             f"time ({why}); run them with logistics or leave them out")
        warnings.warn(RunNote(f"{scenario.source}: time-to-event designs {', '.join(tte)} "
                              "skipped: they need calendar time (the conduct block)"),
                      stacklevel=2)
        items = [it for it in items if not it.time_to_event]
    joint = [it.name for it in items if it.design.outcome is Outcome.JOINT]
    if joint and engine == "des":
        raise ValueError(f"{scenario.source}: designs {joint} choose a dose on toxicity and "
                         f"efficacy; the calendar engine does not observe responses (it has "
                         f"no efficacy window): run them on the time-free engine (run "
                         f"--no-logistics, or --method exact) or leave them out")
    if engine == "des":
        from ..inputs.scenario import conduct_notes
        for note in conduct_notes(scenario.model.conduct, items):
            warnings.warn(RunNote(f"{scenario.source}: {note}"), stacklevel=2)
    if engine == "exact":
        return RunPlan(scenario, items, engine, key=key)
    n_trials = int(n_trials if n_trials is not None else sim.n_trials)
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1 (got {n_trials})")
    seed = int(seed if seed is not None else sim.seed)
    chunk_size = chunk_size if chunk_size is not None else sim.chunk_size
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
    return RunPlan(scenario, items, engine, n_trials, seed,
                   None if chunk_size is None else int(chunk_size), bool(keep_trials), key)


def truth_notes(plan: RunPlan) -> None:
    """Say (as :class:`RunNote` warnings) which parts of a graded truth the engines do not use
    yet (issue 12).  Every engine draws each patient from the outcome model (the calendar
    engine also each event type at its own onset); efficacy is used only by the designs that
    choose a dose on toxicity and efficacy (BOIN12, Keyboard phase I/II)."""
    sc = plan.scenario
    truth = sc.model.truth
    if truth.efficacy is not None and not any(it.design.outcome is Outcome.JOINT
                                              for it in plan.items):
        warnings.warn(RunNote(f"{sc.source}: truth.efficacy is used only by the efficacy "
                              f"designs (boin12, keyboard-obd); none is run"), stacklevel=3)
    conduct = sc.model.conduct
    if (truth.graded and plan.engine == "des" and conduct is not None
            and "dlt_onset" in conduct.model_fields_set
            and all(t.onset_days is not None for t in truth.toxicities)):
        warnings.warn(RunNote(f"{sc.source}: conduct.dlt_onset is not used: every type of "
                              f"truth.toxicities has its own onset_days"), stacklevel=3)


# ---------------------------------------------------------------------------------------------
# test hooks
class _Hooks:
    def __init__(self):
        env = os.environ
        self.fd = int(env["ESCALATION_SIM_TEST_CHUNK_FD"]) \
            if env.get("ESCALATION_SIM_TEST_CHUNK_FD") else None
        self.hold_after = int(env["ESCALATION_SIM_TEST_HOLD_AFTER"]) \
            if env.get("ESCALATION_SIM_TEST_HOLD_AFTER") else None
        self.release_fd = int(env["ESCALATION_SIM_TEST_RELEASE_FD"]) \
            if env.get("ESCALATION_SIM_TEST_RELEASE_FD") else None
        self.saved = 0

    def chunk_saved(self, start: int, stop: int) -> None:
        if self.fd is None and self.hold_after is None:
            return
        self.saved += 1
        self._say(f"chunk {start} {stop}")
        if self.hold_after is not None and self.saved == self.hold_after:
            self._say("hold")
            if self.release_fd is None:
                while True:  # until a signal ends the process
                    time.sleep(3600)
            with os.fdopen(os.dup(self.release_fd), "rb", buffering=0) as f:
                f.readline()

    def _say(self, line: str) -> None:
        if self.fd is not None:
            os.write(self.fd, (line + "\n").encode())


# ---------------------------------------------------------------------------------------------
# the loop
@dataclass
class RunStats:
    """What :func:`execute` did: trials computed and trials reused from checkpoints."""

    computed_trials: int = 0
    resumed_trials: int = 0
    chunk_sizes: Dict[Any, int] = field(default_factory=dict)


def execute(plans: Sequence[RunPlan], dispatch: Dispatch, *,
            checkpoints: Optional[Dict[Any, Checkpoint]] = None,
            spools: Optional[Dict[Any, "TrialSpool"]] = None, progress: Progress = None,
            stats: Optional[RunStats] = None) -> Iterator[Tuple[RunPlan, Results]]:
    """Run every chunk of every plan; yield ``(plan, Results)`` as each plan completes.

    Chunks of all plans go through one dispatch.  A plan with a checkpoint reuses the chunks
    already saved there (each one read and checked first; damaged ones are set aside with a
    note and recomputed) and saves every new chunk as it arrives.  A plan with a spool
    streams its per-trial rows to disk instead of keeping them in memory.  Memory holds one
    merger per plan in progress, never the chunks themselves.  Results do not depend on the
    backend, the number of workers, the chunk size or on which chunks were reused.
    """
    checkpoints = checkpoints or {}
    spools = spools or {}
    stats = stats if stats is not None else RunStats()
    t0 = time.perf_counter()
    by_key = {p.key: p for p in plans}
    if len(by_key) != len(plans):
        raise ValueError("plans need distinct keys")
    todo: Dict[Any, List[Tuple[int, int]]] = {}
    reused: Dict[Any, List[int]] = {}
    sizes: Dict[Any, int] = {}
    for p in plans:
        if p.engine not in ("cohort", "des"):
            raise ValueError(f"execute runs Monte Carlo plans (got engine {p.engine!r})")
        ck = checkpoints.get(p.key)
        if ck is not None:
            ck.check_plan(p)
            sizes[p.key] = ck.chunk_size
            good = ck.verified_starts()
        else:
            sizes[p.key] = p.resolved_chunk_size()
            good = set()
        ranges = chunk_ranges(p.n_trials, sizes[p.key])
        todo[p.key] = [r for r in ranges if r[0] not in good]
        reused[p.key] = sorted(good)
        done = sum(b - a for a, b in ranges if a in good)
        stats.resumed_trials += done
        if done and progress is not None:
            progress(done)
    stats.chunk_sizes.update(sizes)
    n_jobs = dispatch.n_jobs
    if dispatch.auto:
        work = estimated_seconds(plans, todo)
        n_jobs = auto_n_jobs(work, dispatch.n_jobs)
        log.info("n_jobs auto: %d worker(s) for about %.1f s of one core's work", n_jobs, work)
    elif n_jobs > 1 and not dispatch.exact and dispatch.backend in ("loky", "multiprocessing"):
        work = estimated_seconds(plans, todo)
        if work < MIN_PARALLEL_SECONDS:
            warnings.warn(RunNote(
                f"n_jobs {n_jobs}: ran in one process: the run is about {work:.2f} s of one "
                "core's work, less than starting worker processes takes (name the backend, "
                "e.g. --backend loky, to start them anyway)"), stacklevel=3)
            n_jobs = 1

    mergers: Dict[Any, ChunkMerger] = {}

    def merger(p: RunPlan) -> ChunkMerger:
        if p.key not in mergers:
            mergers[p.key] = ChunkMerger(p.scenario.n_doses, len(p.items),
                                         keep_trials=p.key not in spools)
        return mergers[p.key]

    def finish(p: RunPlan) -> Results:
        m = merger(p)
        ck = checkpoints.get(p.key)
        for s in reused[p.key]:  # checked when the run started; checked again as it is read
            try:
                m.add(ck.load(s))
            except ChunkDamaged as exc:
                raise CheckpointError(f"{exc}; the file changed while the run was going: "
                                      "run again to recompute it") from None
        del mergers[p.key]
        if m.n_trials != p.n_trials:  # pragma: no cover - a bug, never expected
            raise RuntimeError(f"merged {m.n_trials} trials, expected {p.n_trials}")
        meta = {"elapsed_s": time.perf_counter() - t0, "n_jobs": n_jobs,
                "backend": dispatch.backend, "chunk_size": sizes[p.key], "engine": p.engine}
        return Results(p.scenario, m.design_results(p.items), m.pair_sums(), p.n_trials,
                       p.seed, "monte-carlo", meta)

    remaining = {k: len(v) for k, v in todo.items()}
    for p in plans:
        if remaining[p.key] == 0:
            yield p, finish(p)
    if not any(remaining.values()):
        return
    hooks = _Hooks()
    tasks = [(p, a, b) for p in plans for a, b in todo[p.key]]
    if dispatch.backend == "dask" or (n_jobs > 1 and dispatch.backend in ("threading",
                                                                          "multiprocessing")):
        chunks = _joblib_chunks(tasks, n_jobs, dispatch)
    elif n_jobs > 1 and dispatch.backend == "loky":
        chunks = _shared_chunks(tasks, n_jobs - 1)
    else:   # one process: sequential, or n_jobs 1 (no pool, no joblib)
        chunks = (_chunk_task(p, a, b) for p, a, b in tasks)
    try:
        for key, ch in chunks:
            p = by_key[key]
            ck = checkpoints.get(key)
            if ck is not None:
                ck.save(ch)
            if key in spools:
                spools[key].add(ch)
            merger(p).add(ch)
            stats.computed_trials += ch.stop - ch.start
            hooks.chunk_saved(ch.start, ch.stop)
            if progress is not None:
                progress(ch.stop - ch.start)
            remaining[key] -= 1
            if remaining[key] == 0:
                yield p, finish(p)
    finally:
        # when the loop stops early (an error, an interrupt, SIGTERM turned into an
        # exception) closing the source stops its workers and drops their tasks
        chunks.close()


def _chunk_args(p: RunPlan, a: int, b: int) -> Tuple[tuple, dict]:
    """The arguments of :func:`~escalation_sim.run.runner.run_chunk` for trials a..b-1."""
    return ((p.designs, [float(x) for x in p.scenario.p_true], p.scenario.target, p.seed,
             a, b, p.conduct, p.keep_trials, p.scenario.model.oc.acceptable),
            {"model": _model(p), "efficacy": _efficacy(p)})


def _chunk_task(p: RunPlan, a: int, b: int):
    args, kwargs = _chunk_args(p, a, b)
    return p.key, run_chunk(*args, **kwargs)


def _joblib_chunks(tasks, n_jobs: int, dispatch: Dispatch):
    """Chunks through joblib (threads, multiprocessing, Dask), as they finish."""
    import joblib
    jobs = (joblib.delayed(pool_chunk)(p.key, *_chunk_args(p, a, b)) for p, a, b in tasks)
    with backend_session(dispatch.backend, n_jobs, dispatch.scheduler):
        results = make_parallel(n_jobs, dispatch.backend)(jobs)
        try:
            yield from results
        finally:
            # ends joblib's dispatch: joblib then stops the workers and drops their tasks
            close = getattr(results, "close", None)
            if close is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "tasks executed but not used"
                    close()


#: chunks queued for each pool worker beyond the one it runs (so that it never waits for
#: the parent, which hands out work only between its own chunks)
_QUEUED_PER_WORKER = 1


def _shared_chunks(tasks, n_workers: int):
    """Chunks computed by this process and ``n_workers`` pool processes, as they finish.

    One queue of chunks, in chunk order.  The pool is started (it returns at once; the
    command line may have started it already) and this process computes chunks while the
    workers start (interpreter and imports, ~0.3 s each).  Chunks go to the workers once
    one is up, each then holding at most ``1 + _QUEUED_PER_WORKER``; every other chunk stays
    in the queue and goes to whoever is free first.  So a run that ends before the workers
    are up is not slower than one process, and at the end the parent waits for at most
    two chunks per worker.  Results do
    not depend on who computed which chunk: chunks are seeded by trial index and tallies
    merge exactly, in any order.

    Each worker builds the state graphs it needs once (cached for every later chunk and
    run); the parent's graphs are not sent: a worker builds its graph while the parent
    builds its own, and a task carrying one (85 kB at N = 24, many MB at N = 60) would not
    fit the pipe to a worker that is still starting, which leaves loky's feeder thread
    blocked when the run is interrupted then."""
    from concurrent.futures import FIRST_COMPLETED, wait
    pool = start_pool(n_workers)
    queue = deque(tasks)
    running: Dict[Any, Any] = {}       # future -> None
    done = False
    t0 = time.perf_counter()
    here = 0      # chunks computed here
    first = 0.0   # seconds until the workers' first chunk came in

    def feed() -> None:
        if not pool_up():   # no worker up yet: the parent computes on
            return
        while queue and len(running) < n_workers * (1 + _QUEUED_PER_WORKER):
            p, a, b = queue.popleft()
            running[pool.submit(pool_chunk, p.key, *_chunk_args(p, a, b))] = None

    try:
        while queue or running:
            for f in [f for f in running if f.done()]:
                del running[f]
                first = first or time.perf_counter() - t0
                yield f.result()
            feed()
            if queue:
                p, a, b = queue.popleft()
                ch = _chunk_task(p, a, b)
                here += 1
                feed()   # before the parent's chunk goes to be saved and merged
                yield ch
            elif running:
                wait(list(running), return_when=FIRST_COMPLETED)
        done = True
        log.info("%d of %d chunks computed in the parent, the rest in %d worker(s); their "
                 "first chunk came in %.2f s after the start", here, len(tasks), n_workers,
                 first)
    finally:
        if not done:   # an error or an interrupt: stop the workers, drop their chunks
            running.clear()
            del pool       # (the traceback keeps this frame: the pool must not be kept)
            stop_pool(collect=True)


def _model(plan: RunPlan):
    """The outcome model the time-free engine draws patients from: the scenario's for a
    graded truth, None for ``truth: {p_dlt}`` (the binary rule u < p_d)."""
    sc = plan.scenario
    return sc.outcome_model if sc.model.truth.graded else None


def _efficacy(plan: RunPlan):
    """``truth.efficacy`` (P(response) per dose) when a design of the plan uses responses
    (``Outcome.JOINT``: BOIN12, Keyboard phase I/II), else None (other designs never see
    it: their draws are unchanged)."""
    if not any(it.design.outcome is Outcome.JOINT for it in plan.items):
        return None
    eff = plan.scenario.model.truth.efficacy
    return None if eff is None else [float(v) for v in eff]


def run_plan(plan: RunPlan, dispatch: Optional[Dispatch] = None, *,
             checkpoint: Optional[Checkpoint] = None, progress: Progress = None) -> Results:
    """Run one plan (Monte Carlo or exact) and return its results."""
    if plan.engine == "exact":
        return run_exact(plan)
    truth_notes(plan)
    dispatch = dispatch or Dispatch()
    [(_, res)] = list(execute([plan], dispatch,
                              checkpoints={plan.key: checkpoint} if checkpoint else None,
                              progress=progress))
    return res


def run_exact(plan: RunPlan) -> Results:
    """Exact operating characteristics of the plan's designs (SEs 0)."""
    from ..engines.exact import exact_tally
    truth_notes(plan)
    t0 = time.perf_counter()
    model = _model(plan)
    eff = _efficacy(plan)
    res = [DesignResult(it.name, it.type, exact_tally(it.design, plan.scenario.p_true,
                                                      model=model, efficacy=eff))
           for it in plan.items]
    return Results(plan.scenario, res, {}, 0, 0, "exact",
                   {"elapsed_s": time.perf_counter() - t0, "engine": "exact"})


# ---------------------------------------------------------------------------------------------
# per-trial rows on disk
class TrialSpool:
    """The per-trial rows of a run on disk, one Parquet file per chunk.

    A checkpointed run's per-trial files already are such a spool (``checkpoint=``); without
    a checkpoint the spool writes its own files into ``folder`` (removed by :meth:`remove`).
    Either way the files carry checksums and are checked when read back.
    """

    def __init__(self, folder: Union[str, Path], n_designs: int,
                 checkpoint: Optional[Checkpoint] = None):
        self.folder = Path(folder) if checkpoint is None else checkpoint.root
        self.n_designs = n_designs
        self.checkpoint = checkpoint
        if checkpoint is None:
            if self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True)

    def path(self, start: int, stop: int) -> Path:
        if self.checkpoint is not None:
            return self.checkpoint.paths(start, stop)[1]
        return self.folder / f"trials-{start:012d}-{stop:012d}.parquet"

    def add(self, chunk) -> None:
        if self.checkpoint is not None:
            return  # the checkpoint saved this chunk's rows already
        from .checkpoint import _write_table, per_trial_table
        _write_table(self.path(chunk.start, chunk.stop),
                     per_trial_table(chunk, chunk.stop - chunk.start))

    def read(self, start: int, stop: int):
        """The kept per-trial arrays of the chunk (one dict of columns per design)."""
        from .checkpoint import read_per_trial
        _, _, trials = read_per_trial(self.path(start, stop), self.n_designs, start, stop)
        if trials is None:
            raise ChunkDamaged(self.path(start, stop), "per-trial rows missing")
        return trials

    def remove(self) -> None:
        if self.checkpoint is None:
            shutil.rmtree(self.folder, ignore_errors=True)


_SLICE = 5_000  # trials per piece of the per-trial tables as they are written


def write_trial_tables(outputs, plan: RunPlan, spool: TrialSpool, chunk_size: int,
                       formats=("csv", "parquet")) -> List[Path]:
    """Write ``trials`` and ``trial_doses`` (the tables :meth:`Results.trials` and
    :meth:`Results.doses_long` give, same rows in the same order) from the spooled chunks,
    one chunk at a time, each file atomically."""
    from ..results.tables import doses_frame, trials_frame
    sc = plan.scenario
    ranges = chunk_ranges(plan.n_trials, chunk_size)

    def pieces(i):  # design i's rows, chunk by chunk, in slices of at most _SLICE trials
        for a, b in ranges:
            cols = spool.read(a, b)[i]
            for lo in range(0, b - a, _SLICE):
                yield trials_frame(sc.name, plan.items[i].name,
                                   {k: v[lo:lo + _SLICE] for k, v in cols.items()})

    def trials_parts():
        for i in range(len(plan.items)):
            yield from pieces(i)

    def doses_parts():
        for i in sorted(range(len(plan.items)), key=lambda i: plan.items[i].name):
            for t in pieces(i):
                yield doses_frame(t, sc.n_doses).sort_values(["trial", "dose"], kind="stable")

    written = []
    for name, parts in (("trials", trials_parts), ("trial_doses", doses_parts)):
        if "csv" in formats:
            written.append(outputs.write(f"{name}.csv", lambda f, parts=parts: _csv_stream(
                f, parts())))
        if "parquet" in formats:
            try:
                import pyarrow  # noqa: F401
            except ImportError:  # pragma: no cover
                continue
            written.append(outputs.write(f"{name}.parquet",
                                         lambda f, parts=parts: _parquet_stream(f, parts())))
    return written


def _csv_stream(f, frames) -> None:
    first = True
    for df in frames:
        f.write(df.to_csv(index=False, header=first).encode("utf-8"))
        first = False


def _parquet_stream(f, frames) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    writer = None
    try:
        for df in frames:
            table = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(f, table.schema, compression="snappy",
                                          write_page_checksum=True)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()


# ---------------------------------------------------------------------------------------------
# one run into an output folder
SPOOL = ".trials-spool"


def run_in_folder(plan: RunPlan, out: Union[str, Path], dispatch: Optional[Dispatch] = None,
                  *, resume: bool = False, progress: Progress = None,
                  command: Optional[str] = None) -> Results:
    """Run ``plan`` and write its outputs into the folder ``out``.

    The folder is locked for the whole run (a second run on it is refused, naming the
    holder).  With ``resume`` every chunk is checkpointed under ``out/checkpoint`` and the
    chunks of an interrupted run are reused; without it nothing is checkpointed.  Per-trial
    rows (``keep_trials``) go to disk chunk by chunk, so memory does not grow with the number
    of trials.  Every output is written atomically and ``manifest.json`` comes last.  The
    returned results hold no per-trial rows (they are in ``trials.csv``/``.parquet``).
    """
    from ..results.files import OutputSet
    from .lock import FolderLock, check_output_folder
    out = Path(out)
    check_output_folder(out)
    with FolderLock(out, command=command):
        if plan.engine == "exact":
            res = run_exact(plan)
            res.write(out)
            return res
        truth_notes(plan)
        ck = Checkpoint.for_plan(out, plan, resume=True, extend=True) if resume else None
        if (out / SPOOL).exists():
            shutil.rmtree(out / SPOOL, ignore_errors=True)  # left by a killed run
        spool = TrialSpool(out / SPOOL, len(plan.items), checkpoint=ck) \
            if plan.keep_trials else None
        try:
            stats = RunStats()
            [(_, res)] = list(execute([plan], dispatch or Dispatch(),
                                      checkpoints={plan.key: ck} if ck else None,
                                      spools={plan.key: spool} if spool else None,
                                      progress=progress, stats=stats))
            outputs = OutputSet(out).start()
            if spool is not None:
                write_trial_tables(outputs, plan, spool, stats.chunk_sizes[plan.key])
            res.write(out, outputs=outputs)
        finally:
            if spool is not None:
                spool.remove()
    return res
