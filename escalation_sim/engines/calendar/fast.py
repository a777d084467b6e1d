"""The calendar engine's fast path: the same trial parts on a plain heap loop (no simpy).

The simpy engine (:class:`~escalation_sim.engines.calendar.clock.SimpyClock`) stays the
reference.  :class:`HeapClock` is a drop-in clock with the four members the parts use
(``now``, ``after``, ``run``/``stop``, ``close``) and simpy's order of calls: by day, then by
order of scheduling (simpy's key ``(day, NORMAL, event id)``; ``stop`` is itself a call
scheduled now, so calls already scheduled for this instant still happen, later ones do
not).  With the same order every trial consumes the same pre-drawn numbers in the same
roles, so the two engines give the same trials bit for bit (``tests/test_fastcal.py``
compares per-trial outputs and patient logs on every bundled scenario and on random ones).

What the fast path runs is an explicit allow-list (:func:`unsupported`): the decision
policies, conduct fields and call options known when it was checked against simpy.  Any
other feature (a new conduct field set away from its default, a new policy, an extra
option) runs on simpy, with a log message on ``escalation_sim.engines.calendar`` saying why.
Graded truths (``truth.toxicities``: per-type grades and onsets, the DLT rule) are on it, for
binary designs and score designs (gBOIN, TITE-gBOIN): see "graded truths, lean" below.
Issue 14's backfill, short products, review options, ``cohort_sizes``,
``screen_while_paused: false`` and costs are on it for classic designs on a binary truth
(:mod:`.fast_conduct`).

One body, no copies: the lean trial classes restate, flattened, the steps of the reference
engine's parts (enrolment, pathway, gate, infusion, follow-up), each held to the simpy
reference trial by trial by ``tests/test_fastcal.py`` (a change to a reference part must be
mirrored here, and those tests fail until it is).  Inside the fast path each hot step is
written once, in :class:`ClassicTrial`: what the other trials do differently on it is a class
flag read there (``tite``: time-to-event designs; ``conduct_fields``: :mod:`.fast_conduct`'s
patients; ``binary``: graded time-to-event truths; ``on_arrival``,
``pausing``), and a hook method only where the step is per cohort, per decision or rare
(``_observe``, ``_grow``, ``_final_state``, ``_lost``, ``_toxicity``).  A flag costs an attribute read; a helper call per event or per patient costs
4-8 % of the fast path's speed (measured at the end of issue 16's work and again when the
copies were merged: calls per patient on the conduct loop cost about 7 %), so no per-event
step is a separate call that the copies did not make.

Engine choice: ``simulate_des_trials(..., engine=...)`` with ``"auto"`` (the fast path when
supported, the default), ``"fast"`` (the fast path or an error) or ``"simpy"``; when not
given, the environment variable ``ESCALATION_SIM_CALENDAR_ENGINE`` (``auto`` / ``simpy``,
set by the CLI's ``--calendar-engine``) decides, so worker processes follow the command.
"""
from __future__ import annotations

import logging
import os
from bisect import bisect_right
from collections import OrderedDict, deque
from functools import lru_cache
from heapq import heappop, heappush
from typing import Any, Callable, List, Optional

import numpy as np

from scipy import special

from ...designs.base import Design
from ...designs.tite import TiteState
from ...inputs.conduct import Conduct, Phase, Screening
from ...inputs.distributions import _Z_GRID, DurationSpec, Gamma, _gamma_log_quantiles
from ...types import StopReason, TrialState
from .draws import TrialDraws, merge_ready, patient_draws
from .shortfall import dlt_rate_at
from .policies import CohortPolicy, ScoreTimeToEventPolicy, TimeToEventPolicy
from .trial import Trial

ENGINES = ("auto", "fast", "simpy")
_log = logging.getLogger("escalation_sim.engines.calendar")
ENV_VAR = "ESCALATION_SIM_CALENDAR_ENGINE"

_new = object.__new__


class _Call:
    """What a handler receives: ``arg`` is the payload given to ``after``."""

    __slots__ = ("arg",)


class HeapClock:
    """A plain heap of ``(day, order, fn, arg)``; see the module docstring."""

    __slots__ = ("now", "_q", "_n", "_stopped")

    def __init__(self) -> None:
        self.now = 0.0
        self._q: List[tuple] = []
        self._n = 0
        self._stopped = False

    def after(self, delay: float, fn: Callable[[Any], Any], arg: Any = None) -> None:
        """In ``delay`` (>= 0) days, call ``fn(call)`` with ``call.arg == arg``."""
        n = self._n = self._n + 1
        heappush(self._q, (self.now + delay, n, fn, arg))

    def run(self) -> None:
        """Process calls until :meth:`stop` (an error if the queue empties first, as
        simpy's ``run(until=event)``)."""
        q = self._q
        pop = heappop
        call = _new(_Call)
        while q:
            now, _, fn, arg = pop(q)
            if fn is None:                       # the stop marker
                return
            self.now = now
            call.arg = arg
            fn(call)
            call = _new(_Call)               # a handler may keep its call
        raise RuntimeError(f"No scheduled events left but the trial did not stop "
                           f"(day {self.now})")

    def stop(self) -> None:
        """End the run after the calls already scheduled for this instant."""
        if not self._stopped:
            self._stopped = True
            n = self._n = self._n + 1
            heappush(self._q, (self.now, n, None, None))

    def close(self) -> None:
        """Drop the calls still queued (they hold bound methods of the trial)."""
        self._q.clear()


# ---------------------------------------------------------------------------- allow-list
#: conduct fields the fast path was checked for, against simpy (any value)
KNOWN_CONDUCT = frozenset({
    "accrual_per_month", "screening", "max_wait_days", "when_paused", "phases",
    "gate_before_phase", "dlt_window_days", "dlt_onset", "dropout_prob", "stagger_days",
    "stagger_mode", "stagger_scope", "max_in_followup", "review_days"})
#: issue 14's conduct fields the fast path runs for classic designs on a binary truth
#: (:mod:`.fast_conduct`); with a time-to-event design or a graded truth they stay on simpy
KNOWN_CONDUCT_CLASSIC = frozenset({
    "backfill", "shortfall", "review", "review_every_days", "cohort_sizes", "costs",
    "screen_while_paused"})
KNOWN_PHASE = frozenset({"name", "duration_days", "failure_prob", "probability", "kind"})
KNOWN_SCREENING = frozenset({"failure_prob", "duration_days"})
KNOWN_DURATION = frozenset(DurationSpec.model_fields)


#: call options the fast path was checked for (``graded_truth``: a graded outcome model,
#: see "graded truths, lean" below)
KNOWN_OPTIONS = frozenset({"record_patients", "graded_truth"})


def _extra_fields(model, known, label: str) -> List[str]:
    """Fields of ``model`` outside ``known`` whose value is not the field's default."""
    out = []
    fields = type(model).model_fields
    for name, f in fields.items():
        if name in known:
            continue
        default = f.get_default(call_default_factory=True)
        if getattr(model, name) != default:
            out.append(f"{label}{name}")
    extra = getattr(model, "model_extra", None) or {}
    out.extend(f"{label}{k}" for k in extra)
    return out


def unsupported(design: Design, conduct: Conduct, policy: type, **options: Any
                ) -> Optional[str]:
    """Why the fast path cannot run this call (``None``: it can).

    ``policy``: the decision policy class the simpy engine would use; ``options``: any other
    call option (``record_patients`` and ``graded_truth`` are known).  Everything outside
    the allow-list is a reason, so features added to the simpy engine later fall back to
    it."""
    reasons: List[str] = []
    if policy not in (CohortPolicy, TimeToEventPolicy):
        reasons.append(f"decision policy {policy.__name__}")
    if not isinstance(conduct, Conduct):
        reasons.append(f"conduct type {type(conduct).__name__}")
    else:
        known = KNOWN_CONDUCT
        if policy is CohortPolicy and options.get("graded_truth") is None:
            known = KNOWN_CONDUCT | KNOWN_CONDUCT_CLASSIC
        reasons += _extra_fields(conduct, known, "conduct.")
        if not isinstance(conduct.screening, Screening):
            reasons.append("conduct.screening type")
        else:
            reasons += _extra_fields(conduct.screening, KNOWN_SCREENING, "conduct.screening.")
        for i, ph in enumerate(conduct.phases):
            if not isinstance(ph, Phase):
                reasons.append(f"conduct.phases[{i}] type")
                continue
            reasons += _extra_fields(ph, KNOWN_PHASE, f"conduct.phases[{i}].")
            d = ph.duration_days
            if isinstance(d, DurationSpec):
                reasons += _extra_fields(d, KNOWN_DURATION, f"conduct.phases[{i}].duration_days.")
    for k, v in options.items():
        if k not in KNOWN_OPTIONS and v is not None:
            reasons.append(f"option {k}")
    return ", ".join(reasons) if reasons else None


def choose(engine: Optional[str]) -> str:
    """The requested engine: ``engine`` or the environment's, checked."""
    if engine is None:
        engine = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if engine not in ENGINES:
        raise ValueError(f"calendar engine must be one of {', '.join(ENGINES)} "
                         f"(got {engine!r})")
    return engine


# ------------------------------------------------------------------ classic designs, lean
# The classic-design trial of trial.py + accrual.py + pathway.py + gates.py + CohortPolicy,
# flattened into one object: the same calls scheduled in the same order with the same
# day arithmetic (``now + delay`` with the very ``delay`` expressions of the parts), so the
# heap order -- and every pre-drawn number's role -- is the simpy engine's.  Handlers are
# bound methods called with the payload itself (no call object); patients and cohorts are
# short lists; decisions walk a memoised graph of states (one dict look-up per cohort).

# patient fields
_J, _CO, _DOSE, _INF, _ST, _REL = range(6)
# cohort fields
_CIDX, _CDOSE, _CSIZE, _CFREE, _CACT, _CDONE = range(6)
_PIPELINE, _COMPLETE, _FAILED, _DROPPED, _EXCLUDED = 0, 1, 2, 3, 4
# conduct patients (fast_conduct.ConductTrial): the six fields above, then enrolment day,
# received fraction of the product, backfill or not, dose it counts at (-1: excluded)
_ENR, _RECV, _BF, _CNT = 6, 7, 8, 9


def _inf_order(p):
    return (p[_INF], p[_J])


#: designs whose decision memos are kept for the process (least recently used dropped)
_MEMO_DESIGNS = 32
#: entries of one time-to-event memo before it starts afresh
_TITE_MEMO_MAX = 500_000
_memos: "OrderedDict[Any, dict]" = OrderedDict()


def design_memo(setup) -> dict:
    """The fast path's decision memos of ``setup.design``, kept across calls (the runner
    calls the engine once per chunk of 500 trials; decisions are pure functions of the
    design and the state, so equal designs share them).  A design that cannot be hashed
    keeps them on ``setup`` (this call only)."""
    design = setup.design
    try:
        memo = _memos.get(design)
    except TypeError:
        memo = getattr(setup, "_fast_memo", None)
        if memo is None:
            memo = setup._fast_memo = {}
        return memo
    try:                       # (threads may race here: a lost update only recomputes)
        if memo is None:
            memo = _memos[design] = {}
            while len(_memos) > _MEMO_DESIGNS:
                _memos.popitem(last=False)
        else:
            _memos.move_to_end(design)
    except KeyError:
        pass
    return memo


class _Node:
    """A state of the design's state graph: the state, its decision, successors by DLTs."""

    __slots__ = ("state", "dec", "succ")

    def __init__(self, state, dec):
        self.state = state
        self.dec = dec
        self.succ = {}


def state_graph_root(setup) -> _Node:
    """The memoised graph of complete-data states of ``setup`` (built as trials walk it)."""
    memo = design_memo(setup)
    root = memo.get("root")
    if root is None:
        root = memo["root"] = _Node(setup.empty_state, setup.decide(setup.empty_state))
    return root


class _AccrualCounts:
    """What ``_collect`` reads from ``trial.accrual``."""

    __slots__ = ("n_screened", "n_screen_failed", "n_lost", "n_wait_max",
                 "n_waiting_at_close", "n_arrived", "n_not_screened")


class ClassicTrial:
    """One classic-design trial on the lean loop: create, ``run()``, read the attributes
    ``_collect`` reads (as :class:`~escalation_sim.engines.calendar.trial.Trial`)."""

    __slots__ = ("setup", "draws", "q", "seq", "now", "finished", "node", "cohort", "pats",
                 "in_flight", "n_treated", "n_manuf_fail", "n_phase_fail", "n_dropout",
                 "decision_times", "first_enroll", "t_end", "stop_reason", "final_state",
                 "accrual", "rq", "rq_pos", "armed", "waiting", "n_tox",
                 "queue", "in_followup", "seen", "h_ready", "h_end", "h_arrive",
                 "h_release", "h_decide", "gate_i", "gated", "window", "by_cohort",
                 "stagger", "sequential", "known_release", "cap", "at_last", "arr_rows",
                 "jlim")

    def __init__(self, setup, draws, lean=None):
        self.setup = setup
        self.draws = draws
        # lean: (ready queue, arrival days, screen-failed flags, screening days) as numpy
        # rows; the arrival lists of ``draws`` are then made only if the trial needs them
        self.arr_rows = None if lean is None else lean[1:]
        self.q = []
        self.seq = 0
        self.now = 0.0
        self.finished = False
        self.cohort = [-1, -1, 0, 0, 0, None]
        self.pats = []
        self.in_flight = 0
        self.n_treated = 0
        self.n_manuf_fail = 0
        self.n_phase_fail = 0
        self.n_dropout = 0
        self.decision_times = []
        self.first_enroll = None
        self.t_end = 0.0
        self.stop_reason = None
        self.final_state = None
        acc = self.accrual = _AccrualCounts()
        acc.n_screened = acc.n_screen_failed = acc.n_lost = acc.n_wait_max = 0
        acc.n_waiting_at_close = acc.n_arrived = acc.n_not_screened = 0
        self.rq = [] if lean is None else lean[0]
        self.rq_pos = 0
        self.at_last = None if lean is None else float(lean[1][-1])
        self.armed = False
        self.waiting = deque()
        self.n_tox = 0
        self.queue = deque()
        self.in_followup = 0
        self.seen = {}
        self.h_ready = self._ready
        self.h_end = self._on_end
        self.h_arrive = self._arrive
        self.h_release = self._release
        self.h_decide = self._decide
        self.gate_i = setup.gate
        self.gated = setup.gated
        self.window = setup.window
        self.by_cohort = setup.conduct.stagger_scope == "every_cohort"
        self.stagger = setup.stagger
        self.sequential = setup.conduct.stagger_mode == "all"
        self.known_release = setup.known_release
        self.cap = setup.cap
        self.jlim = min(setup.max_patients, len(draws.fail_at))

    # ---------------------------------------------------------------- the loop
    def _after(self, delay, fn, arg):
        n = self.seq = self.seq + 1
        heappush(self.q, (self.now + delay, n, fn, arg))

    def run(self) -> "ClassicTrial":
        s = self.setup
        self._start()
        if s.unlimited:
            self._fill()
        else:
            if self.arr_rows is None:
                self._merge_ready(0)
                self.at_last = self.draws.arrival_time[-1]
            self._arm()
        if not self.finished:
            q = self.q
            pop = heappop
            while True:
                if not q:
                    raise RuntimeError(f"No scheduled events left but the trial did not "
                                       f"stop (day {self.now})")
                now, _, fn, arg = pop(q)
                if fn is None:
                    break
                self.now = now
                fn(arg)
        self._count_arrivals(self.t_end)
        return self

    #: arrivals keep coming while the cohort has no free slot (the parts' policies'
    #: ``decides_on_arrival``: time-to-event designs; a property where it depends on the
    #: trial's state, backfill), and an arrival or a refill finding no free slot asks
    #: ``_open_slot`` for one
    on_arrival = False
    #: ``screen_while_paused: false``: ``_catch_up`` drops arrivals in a pause unscreened
    pausing = False
    #: a time-to-event design (:class:`TiteTrial`): an enrolled patient is pending, the
    #: infusion is a call (``h_infused``), a cohort's last field counts the DLTs seen
    #: (classic designs: the patients whose window closed)
    tite = False
    #: patients carry the conduct fields (``_ENR`` ...: :mod:`.fast_conduct`)
    conduct_fields = False

    def _start(self):
        self.node = state_graph_root(self.setup)
        self._open(self.node.dec)

    def _open_slot(self):
        """A slot for the arrival (asked only when ``on_arrival`` is true, right after it)."""
        return False

    def release(self) -> None:
        self.q = None
        self.h_ready = self.h_end = self.h_arrive = self.h_release = self.h_decide = None

    def _stop(self):
        n = self.seq = self.seq + 1
        heappush(self.q, (self.now, n, None, None))

    # ---------------------------------------------------------------- accrual
    def _merge_ready(self, start):
        self.rq = merge_ready(self.draws, self.rq[self.rq_pos:], start)
        self.rq_pos = 0

    def _lists(self):
        """Make the arrival lists of ``draws`` from the lean rows (before extending them)."""
        if self.arr_rows is not None:
            at, failed, sdays = self.arr_rows
            d = self.draws
            d.arrival_time = at.tolist()
            d.screen_failed = failed.tolist()
            d.screen_days = sdays.tolist()
            self.arr_rows = None

    def _peek(self):
        d = self.draws
        while self.rq_pos >= len(self.rq) or self.rq[self.rq_pos][0] > self.at_last:
            self._lists()
            n0 = len(d.arrival_time)
            d.more_arrivals()
            self._merge_ready(n0)
            self.at_last = d.arrival_time[-1]
        return self.rq[self.rq_pos]

    def _arm(self):
        """Schedule the next eligible arrival, unless one is scheduled or no slot can take
        it (``_ready`` without an arrival)."""
        ClassicTrial._ready(self, None)

    def _ready(self, i):
        """Eligible arrival ``i`` is ready: it takes a free slot (or one ``_open_slot``
        opens), waits or leaves; then the next arrival is scheduled, unless one is or no
        slot can take it (``i`` None: only that)."""
        now = self.now
        if i is not None:
            self.armed = False
            if self.finished:
                return
            # offer(i)
            w = self.waiting
            if w and w[0][1] < now:
                self._purge(now)
            if not w and (self.cohort[_CFREE] > 0 or (self.on_arrival
                                                      and self._open_slot())):
                self._enroll(i)
            elif not self.finished:
                self._wait_or_leave(i, now)
        # arm
        if self.armed or self.finished or (self.cohort[_CFREE] <= 0 and not self.on_arrival):
            return
        rq, pos = self.rq, self.rq_pos
        if pos >= len(rq) or rq[pos][0] > self.at_last:
            r, i = self._peek()
        else:
            r, i = rq[pos]
        self.rq_pos += 1
        self.armed = True
        n = self.seq = self.seq + 1
        heappush(self.q, (now + (r - now), n, self.h_ready, i))

    def _catch_up(self, until):
        if self.armed or self.setup.unlimited:
            return
        pausing = self.pausing
        while True:
            r, i = self._peek()
            if r > until:
                return
            self.rq_pos += 1
            if pausing and self._unscreened(i):
                continue
            self._wait_or_leave(i, r)

    def _new_candidate(self):
        d = self.draws
        acc = self.accrual
        while True:
            i = acc.n_arrived
            while i >= len(d.screen_failed):
                d.more_arrivals()
            acc.n_arrived = i + 1
            if d.screen_failed[i]:
                acc.n_screen_failed += 1
                continue
            return i

    def _wait_or_leave(self, i, t):
        acc = self.accrual
        s = self.setup
        if s.leave:
            acc.n_lost += 1
            return
        self._purge(t)
        w = self.waiting
        w.append((i, t + s.max_wait))
        if len(w) > acc.n_wait_max:
            acc.n_wait_max = len(w)

    def _purge(self, now):
        w = self.waiting
        while w and w[0][1] < now:
            w.popleft()
            self.accrual.n_lost += 1

    def _close(self, t_end):
        if not self.setup.unlimited:
            self._catch_up(t_end)
        self._purge(t_end)
        self.accrual.n_waiting_at_close = len(self.waiting)
        self.waiting.clear()

    def _count_arrivals(self, t_end):
        d = self.draws
        acc = self.accrual
        if self.setup.unlimited:
            acc.n_screened = acc.n_arrived
            return
        if self.arr_rows is not None:
            at, failed, _ = self.arr_rows
            if self.at_last > t_end:          # within the drawn arrivals
                n = int(np.searchsorted(at, t_end, side="right"))
                acc.n_arrived = acc.n_screened = n
                acc.n_screen_failed = int(np.count_nonzero(failed[:n]))
                return
            self._lists()
        while d.arrival_time[-1] <= t_end:
            d.more_arrivals()
        acc.n_arrived = acc.n_screened = bisect_right(d.arrival_time, t_end)
        acc.n_screen_failed = sum(d.screen_failed[:acc.n_screened])

    # ---------------------------------------------------------------- the trial
    def _fill(self):
        s = self.setup
        unlimited = s.unlimited
        now = self.now
        if not (unlimited or self.armed):
            self._catch_up(now)
        w = self.waiting
        while not self.finished:
            if w and w[0][1] < now:
                self._purge(now)
            if not w and not unlimited:
                break
            if not (self.cohort[_CFREE] > 0 or (self.on_arrival and self._open_slot())):
                break
            self._enroll(w.popleft()[0] if w else self._new_candidate())
        if not (unlimited or self.armed):
            ClassicTrial._ready(self, None)                 # _arm

    def _open(self, dec):
        if dec.dose is None:                      # dec.stop
            self._finish(dec)
            return
        if self.conduct_fields:
            self.cands = None                     # the backfill candidates change
        self.cohort = [self.cohort[_CIDX] + 1, dec.dose, dec.cohort_size, dec.cohort_size, 0,
                       0 if self.tite else []]

    def _finish(self, dec):
        self.finished = True
        self.t_end = self.now
        self.stop_reason = dec.stop_reason or StopReason.RULE_COMPLETE
        self.final_state = self._final_state()
        self._close(self.t_end)
        self._stop()

    def _final_state(self):
        return self.node.state

    def _enroll(self, i):
        """Arrival ``i`` takes a slot (of the cohort, or one opened beside it: backfill) and
        starts its path."""
        j = len(self.pats)
        if j >= self.jlim:
            self._extend(j)
        now = self.now
        if self.first_enroll is None:
            self.first_enroll = now
        c = self.cohort
        if c[_CFREE] <= 0:                # a slot opened beside the cohort (backfill)
            c = self.side
        c[_CFREE] -= 1
        c[_CACT] += 1
        dose = c[_CDOSE]
        if self.conduct_fields:
            pat = [j, c, dose, -1.0, _PIPELINE, -1.0, now, 1.0, False, dose]
            # ConductPolicy.on_enroll
            self.assigned[dose] += 1
            if c[_CIDX] == -2:
                pat[_BF] = True
                self.bf_active += 1
                self.n_bf_enrolled += 1
            frac = self.frac
            if frac is not None:
                f = frac[j]
                if f < 1.0:
                    pat[_RECV] = f
                    self.n_short += 1
                    pat[_CNT] = self.sf.counted_dose(dose, f)
        else:
            pat = [j, c, dose, -1.0, _PIPELINE, -1.0]
            if self.tite:
                self.n_active[dose] += 1
                self.pending[j] = pat
        self.pats.append(pat)
        self.in_flight += 1
        # Pathway.start
        d = self.draws
        f = d.fail_at[j]
        if 0 <= f < self.gate_i:
            pat[_ST] = _FAILED
            n = self.seq = self.seq + 1
            heappush(self.q, (now + d.fail_days[j], n, self.h_end, pat))
        elif not self.gated:
            self._after_gate(pat, d.pre_days[j])
        else:
            # Gate.enter
            if self.known_release:
                first = self.seen.get(c[_CIDX] if self.by_cohort else dose)
                if first is not None:
                    gate = now + d.pre_days[j]
                    release = first + self.stagger - d.post_days[j]
                    if gate >= release:                 # max(gate, release)
                        release = gate
                    pat[_REL] = release
                    self.in_followup += 1
                    self._after_gate(pat, release - now)
                    return
            n = self.seq = self.seq + 1
            heappush(self.q, (now + d.pre_days[j], n, self.h_arrive, pat))

    def _extend(self, j):
        """Patient ``j`` is past the drawn patients or the guard."""
        s, d = self.setup, self.draws
        patient_draws(d, j, s.max_patients)
        self.jlim = min(s.max_patients, len(d.fail_at))

    def _after_gate(self, pat, wait):
        """The path after the gate, released ``wait`` days from now (without a gate: the
        pre-infusion days): a failure in the remaining phases, else the infusion
        (``ConductPolicy.infuse`` with ``conduct_fields``: an excluded patient's path ends
        there); the DLT window or a drop-out follows, or, for time-to-event designs
        (``tite``), the infusion is a call the design sees."""
        d = self.draws
        j = pat[_J]
        now = self.now
        n = self.seq = self.seq + 1
        if d.fail_at[j] >= self.gate_i:
            pat[_ST] = _FAILED
            heappush(self.q, (now + (wait + d.fail_days[j] - d.pre_days[j]), n,
                              self.h_end, pat))
            return
        delay = wait + d.post_days[j]
        if self.tite:
            heappush(self.q, (now + delay, n, self.h_infused, pat))
            return
        pat[_INF] = now + delay
        self.n_treated += 1
        if self.conduct_fields:
            if pat[_CNT] < 0:                    # excluded at infusion
                pat[_ST] = _EXCLUDED
                self.n_excluded += 1
                heappush(self.q, (now + delay, n, self.h_end, pat))
                return
            if pat[_BF]:
                self.n_bf_treated += 1
        if d.drop[j]:
            pat[_ST] = _DROPPED
            heappush(self.q, (now + (delay + d.drop_day[j]), n, self.h_end, pat))
        else:
            pat[_ST] = _COMPLETE
            heappush(self.q, (now + (delay + self.window), n, self.h_end, pat))

    # ---------------------------------------------------------------- the gate

    def _arrive(self, pat):
        self.queue.append(pat)
        self._admit()

    def _admit(self):
        q = self.queue
        cap = self.cap
        post = self.draws.post_days
        stagger = self.stagger
        spaced = stagger > 0
        while q and (cap is None or self.in_followup < cap):
            pat = q.popleft()
            self.in_followup += 1
            now = self.now
            release = now
            if spaced:
                p = post[pat[_J]]
                key = pat[_CO][_CIDX] if self.by_cohort else pat[_DOSE]
                seen = self.seen
                last = seen.get(key)
                if last is None:
                    seen[key] = now + p
                else:
                    release = max(now, last + stagger - p)
                    if self.sequential:
                        seen[key] = release + p
            pat[_REL] = release
            if release > now:
                n = self.seq = self.seq + 1
                heappush(self.q, (now + (release - now), n, self.h_release, pat))
            else:
                self._after_gate(pat, 0.0)

    def _release(self, pat):
        self._after_gate(pat, 0.0)

    # ---------------------------------------------------------------- end of a path
    def _on_end(self, pat):
        self.in_flight -= 1
        if pat[_REL] >= 0:
            self.in_followup -= 1
            if self.queue:
                self._admit()
        if pat[_ST] == _COMPLETE:
            c = pat[_CO]
            if self.tite:                   # TimeToEventPolicy: the design sees it now
                self.pending.pop(pat[_J], None)
                self._changed()
            elif c[_CIDX] >= 0:
                # an escalation cohort of a classic design completes with its last patient
                done = c[_CDONE]
                done.append(pat)
                if len(done) == c[_CSIZE]:
                    self._complete(c)
            else:
                # a backfill patient's window closed: observed now (ConductTrial)
                d = self.draws
                k = self.n_tox
                self.n_tox = k + 1
                while k >= len(d.dlt_u):
                    d.more_evaluable()
                lvl = pat[_CNT]
                self.n_bf[lvl] += 1
                self.n_pool[lvl] += 1
                f = pat[_RECV]
                dose = pat[_DOSE]
                ptrue = self.ptrue
                if d.dlt_u[k] < (ptrue[dose] if f >= 1.0 else
                                 dlt_rate_at(self.amounts[dose] * f, self.amounts, ptrue)):
                    self.y_bf[lvl] += 1
                    self.y_pool[lvl] += 1
                c[_CACT] -= 1
                self.cands = None
                if not self.finished:
                    self._fill()
        else:
            self._lost(pat)

    def _count_loss(self, pat):
        st = pat[_ST]
        if st == _FAILED:
            self.n_phase_fail += 1
            if self.setup.manufacturing[self.draws.fail_at[pat[_J]]]:
                self.n_manuf_fail += 1
        elif st == _DROPPED:
            self.n_dropout += 1

    def _lost(self, pat):
        """The patient failed or dropped out: its slot is free again."""
        self._count_loss(pat)
        c = pat[_CO]
        c[_CACT] -= 1
        c[_CFREE] += 1
        if not self.finished:
            self._fill()

    def _complete(self, c):
        members, c[_CDONE] = c[_CDONE], []
        members.sort(key=_inf_order)
        y = self._observe(members, c[_CDOSE])
        node = self.node
        nxt = node.succ.get(y)
        if nxt is None:
            nxt = self._grow(node, c, y)
        self.node = nxt
        delay = self.setup.review.days
        if delay > 0:
            n = self.seq = self.seq + 1
            heappush(self.q, (self.now + delay, n, self.h_decide, None))
        else:
            self._decide(None)

    def _observe(self, members, dose):
        """The DLTs of a completed cohort's ``members`` (in infusion order) at ``dose``."""
        d = self.draws
        u = d.dlt_u
        p = self.setup.p[dose]
        k = self.n_tox
        y = 0
        for _ in members:
            while k >= len(u):
                d.more_evaluable()
                u = d.dlt_u
            if u[k] < p:
                y += 1
            k += 1
        self.n_tox = k
        return y

    def _grow(self, node, c, y):
        """The state graph's new node after ``node`` when cohort ``c`` saw ``y``."""
        st = node.state.add_cohort(c[_CDOSE], c[_CSIZE], y)
        nxt = node.succ[y] = _Node(st, self.setup.decide(st))
        return nxt

    def _decide(self, _):
        self._open_dec(self.node.dec)

    def _open_dec(self, dec):
        """A decision after a cohort (and its review): the next cohort, or the end
        (``cohort_sizes``: of the conduct's size)."""
        if self.conduct_fields and self.sizes is not None:
            dec = self._sized(dec)
        self.decision_times.append(self.now - self.first_enroll)
        self._open(dec)
        if not self.finished:
            self._fill()


_CY = 5      # time-to-event cohorts: DLTs observed (classic ones keep ``done`` there)


class TiteTrial(ClassicTrial):
    """One time-to-event-design trial on the lean loop: :class:`ClassicTrial`'s accrual,
    pathway and gate with :class:`~.policies.TimeToEventPolicy`'s rules flattened in
    (decide when a ready patient finds no free slot and when the last patient in flight
    finishes; infusion and DLT onset are calls).  Decisions are memoised exactly (``decide``
    is pure): across trials for states without a pending patient and for states whose
    pending patients all have follow-up fraction 0 (not infused yet) or 1 -- about 40% of
    the pending-patient calls on the seed scenario, repeating across trials -- and the
    others against the last call only (continuous fractions do not repeat)."""

    __slots__ = ("n_active", "y_obs", "pending", "last", "memo", "h_infused", "h_dlt",
                 "design", "p", "mu")

    on_arrival = True
    tite = True
    #: the DLT is a binary draw (graded and score truths: ``_toxicity``)
    binary = True

    def __init__(self, setup, draws, lean=None):
        super().__init__(setup, draws, lean)
        K = setup.K
        self.cohort = [-1, -1, 0, 0, 0, 0]
        self.mu = 1                       # TiteState.max_units (score designs: more)
        self.n_active = [0] * K
        self.y_obs = [0] * K
        self.pending = {}                 # j -> patient, in enrollment order
        self.last = (None, None)
        shared = design_memo(setup)
        memo = shared.get("tite")
        if memo is None or len(memo) > _TITE_MEMO_MAX:
            memo = shared["tite"] = {}
        self.memo = memo
        self.design = setup.design
        self.p = setup.p
        self.h_infused = self._infused
        self.h_dlt = self._dlt

    def release(self) -> None:
        super().release()
        self.h_infused = self.h_dlt = None

    def _start(self):
        pass

    def _decide_now(self):
        now = self.now
        W = self.window
        pend = tuple((p[_DOSE], 0.0 if p[_INF] < 0 else min((now - p[_INF]) / W, 1.0))
                     for p in self.pending.values())
        c = self.cohort
        key = (tuple(self.n_active), tuple(self.y_obs), c[_CDOSE] if c[_CIDX] >= 0 else None,
               c[_CACT], c[_CY])
        mu = self.mu
        if not pend:
            dec = self.memo.get(key)
            if dec is None:
                dec = self.memo[key] = self.setup.decide_exact(TiteState(*key, (), mu))
            return dec
        full = key + (pend,)
        last, dec = self.last
        if full == last:
            return dec
        if all(f == 0.0 or f == 1.0 for _, f in pend):
            # every pending patient not infused yet (or at the end of its window): such
            # states repeat across trials, so they share the memo too
            dec = self.memo.get(full)
            if dec is None:
                dec = self.memo[full] = self.design.decide(TiteState(*full, mu))
        else:
            dec = self.design.decide(TiteState(*full, mu))
        self.last = (full, dec)
        return dec

    def _open_slot(self):
        if self.finished:
            return False
        dec = self._decide_now()
        if dec.stop:
            if self.in_flight == 0:
                self._finish(dec)
            return False
        if dec.cohort_size <= 0:
            return False
        if self.first_enroll is not None:
            self.decision_times.append(self.now - self.first_enroll)
        self._open(dec)
        return True

    def _finish(self, dec):
        if self.first_enroll is not None:
            self.decision_times.append(self.now - self.first_enroll)
        ClassicTrial._finish(self, dec)

    def _final_state(self):
        c = self.cohort
        return TrialState(tuple(self.n_active), tuple(self.y_obs),
                          c[_CDOSE] if c[_CIDX] >= 0 else None, c[_CACT], c[_CY])

    def _infused(self, pat):
        d = self.draws
        j = pat[_J]
        now = pat[_INF] = self.now
        self.n_treated += 1
        if d.drop[j]:
            pat[_ST] = _DROPPED
            n = self.seq = self.seq + 1
            heappush(self.q, (now + d.drop_day[j], n, self.h_end, pat))
            return
        pat[_ST] = _COMPLETE
        k = self.n_tox
        self.n_tox = k + 1
        if self.binary:                 # the DLT call at its onset, if it has one
            while k >= len(d.dlt_u):
                d.more_evaluable()
            if d.dlt_u[k] < self.p[pat[_DOSE]]:
                n = self.seq = self.seq + 1
                heappush(self.q, (now + d.onset_day[k], n, self.h_dlt, pat))
        else:
            self._toxicity(pat, k, now)
        n = self.seq = self.seq + 1
        heappush(self.q, (now + self.window, n, self.h_end, pat))

    def _toxicity(self, pat, k, now):
        """Schedule what the design will see of infused patient ``pat``, the ``k``-th
        observed (graded and score truths)."""
        raise NotImplementedError

    def _dlt(self, pat):
        self.y_obs[pat[_DOSE]] += 1
        self.pending.pop(pat[_J], None)
        pat[_CO][_CY] += 1
        self._changed()

    def _changed(self):
        if self.finished:
            return
        self._fill()
        # TimeToEventPolicy.after_change
        if not self.finished and self.in_flight == 0 and self.cohort[_CFREE] == 0:
            dec = self._decide_now()
            if dec.stop:
                self._finish(dec)

    def _lost(self, pat):
        self._count_loss(pat)
        pat[_CO][_CACT] -= 1
        self.n_active[pat[_DOSE]] -= 1
        self.pending.pop(pat[_J], None)
        self._changed()


# ------------------------------------------------------------------ gamma durations
@lru_cache(maxsize=256)
def _gamma_table(shape: float):
    fp = _gamma_log_quantiles(shape)
    with np.errstate(invalid="ignore", over="ignore"):
        slopes = (fp[1:] - fp[:-1]) / (_Z_GRID[1:] - _Z_GRID[:-1])
    return fp, slopes


_Z0 = float(_Z_GRID[0])
_INV_DZ = 1.0 / ((float(_Z_GRID[-1]) - _Z0) / (_Z_GRID.size - 1))


def grid_interp(z: np.ndarray, fp: np.ndarray, slopes: np.ndarray) -> np.ndarray:
    """``numpy.interp(z, _Z_GRID, fp)`` bit for bit, for ``z`` inside the grid: the grid is
    uniform, so the interval comes from one division (then corrected by one comparison each
    way) instead of a binary search, and the value is numpy's own expression (``slope * (x
    - x_j) + f_j`` with the precomputed slope; ``f_j`` at a grid point; its NaN fallbacks),
    about 10 times faster.  Checked against ``numpy.interp`` in tests/test_fastcal.py."""
    xp = _Z_GRID
    if z.size and not (z.min() >= xp[0] and z.max() < xp[-1]):
        return np.interp(z, xp, fp)
    j = np.floor((z - _Z0) * _INV_DZ).astype(np.intp)
    np.clip(j, 0, xp.size - 2, out=j)
    j -= xp[j] > z
    j += xp[j + 1] <= z
    with np.errstate(invalid="ignore", over="ignore"):
        sl = slopes[j]
        lo, hi = fp[j], fp[j + 1]
        x0 = xp[j]
        res = sl * (z - x0) + lo
        nan = np.isnan(res)
        if nan.any():
            res = np.where(nan, sl * (z - xp[j + 1]) + hi, res)
            res = np.where(np.isnan(res) & (lo == hi), lo, res)
        return np.where(x0 == z, lo, res)


class FastGamma(Gamma):
    """:class:`~escalation_sim.inputs.distributions.Gamma` with the same durations, bit for
    bit, from :func:`grid_interp` instead of ``numpy.interp``."""

    def sample_from_uniforms(self, u) -> np.ndarray:
        z = special.ndtri(np.asarray(u, dtype=np.float64))
        return np.exp(grid_interp(z, *_gamma_table(self.shape))) * self.scale


def _fast_dist(dist):
    return FastGamma(mu=dist.mu, sd=dist.sd) if type(dist) is Gamma else dist


def fast_draw_plan(plan):
    """``plan`` with its gamma durations drawn through :class:`FastGamma` (same numbers)."""
    plan.screen_dist = _fast_dist(plan.screen_dist)
    plan.phase_dists = [_fast_dist(d) for d in plan.phase_dists]
    if plan.onset_dist is not None:
        plan.onset_dist = _fast_dist(plan.onset_dist)
    return plan


class LeanChunkDraws:
    """A chunk's pre-drawn numbers for :class:`ClassicTrial` (limited accrual): the same
    streams, draw indices and block sizes as
    :class:`~escalation_sim.engines.calendar.draws.ChunkDraws` (so the same numbers), with
    the eligible arrivals sorted by the day screening ends in one vectorised step, and the
    per-arrival lists made only for a trial that extends or counts past its block."""

    def __init__(self, plan, trials, n_arrivals, n_patients, n_evaluable):
        self.plan = plan
        self.trials = np.asarray(trials, dtype=np.uint64)
        gaps, failed, sdays = plan.arrivals(self.trials, 0, n_arrivals)
        at = plan.times(np.cumsum(gaps, axis=1))      # piecewise accrual: calendar days
        days, happens, *pat = plan.patients(self.trials, 0, n_patients)
        self.days, self.happens = days, happens
        self.at, self.failed, self.sdays = at, failed, sdays
        ready = at + sdays                    # as Accrual._merge_ready: at[i] + sd[i]
        order = np.argsort(np.where(failed, np.inf, ready), axis=1, kind="stable")
        self.ready = np.take_along_axis(ready, order, axis=1)
        self.order = order
        self.n_elig = (~failed).sum(axis=1).tolist()
        self.lists = [a.tolist() for a in pat]
        self._keep(*plan.evaluable(self.trials, 0, n_evaluable))

    def _keep(self, u, onset, graded):
        """Keep the evaluable block (binary truth: the DLT uniforms and onsets as lists)."""
        self.u, self.onset = u.tolist(), onset.tolist()

    def _dlts(self, r: int):
        return self.u[r], self.onset[r]

    def trial(self, r: int):
        """(TrialDraws without arrival lists, lean rows) of the r-th trial; the lists are
        used as they are (each trial is run once)."""
        fail_at, drop, drop_day, pre, post, fail_days = [c[r] for c in self.lists]
        u, onset = self._dlts(r)
        d = TrialDraws(self.plan, int(self.trials[r]), None, None, None, self.days[r],
                       self.happens[r], fail_at, drop, drop_day, pre, post, fail_days, u,
                       onset)
        ne = self.n_elig[r]
        rq = list(zip(self.ready[r, :ne].tolist(), self.order[r, :ne].tolist()))
        return d, (rq, self.at[r], self.failed[r], self.sdays[r])


#: attributes of :class:`~escalation_sim.engines.calendar.model.Setup` the fast path was
#: checked for; another one (not None / False) means the simpy engine grew a feature
KNOWN_SETUP = frozenset({
    "K", "_canonical", "_decisions", "_exact", "_mtds", "cap", "clock", "conduct", "design",
    "empty_state", "gate", "gated", "known_release", "leave", "manufacturing",
    "max_patients", "max_wait", "p", "phase_names", "policy", "record", "review", "stagger",
    "unlimited", "window", "_fast_memo", "model", "units", "max_units", "graded",
    "shortfall", "backfill_rules", "conduct_memo", "_fast_conduct_memo"})


def setup_unsupported(setup) -> Optional[str]:
    """What of ``setup`` the fast path does not know (``None``: nothing)."""
    from .gates import FixedReview
    from .model import Setup
    extra = [k for k, v in vars(setup).items()
             if k not in KNOWN_SETUP and v is not None and v is not False]
    if type(setup) is not Setup:
        extra.append(f"setup class {type(setup).__name__}")
    if type(setup.review) is not FixedReview:
        extra.append(f"review part {type(setup.review).__name__}")
    return ", ".join(f"Setup.{k}" if not k.startswith(("setup ", "review ")) else k
                     for k in extra) or None


def trial_class(setup):
    """``(trial class, lean chunk class or None)`` to run ``setup``'s trials with (a setup
    with something :func:`setup_unsupported` names is moved to simpy's clock): the lean
    :class:`ClassicTrial` for classic designs on the fast path without the patient log
    (with :class:`LeanChunkDraws` under limited accrual), else the parts' ``Trial`` (on
    whichever clock ``setup`` has) and the usual chunks."""
    if setup.clock is HeapClock:
        why = setup_unsupported(setup)
        if why is not None:
            _log.info("calendar engine: simpy (the fast path does not support %s)", why)
            from .clock import SimpyClock
            setup.clock = SimpyClock
            return Trial, None
    if setup.clock is HeapClock and not setup.record:
        if setup.graded is None:
            lean = None if setup.unlimited else LeanChunkDraws
            from .backfill import BackfillPolicy, ConductPolicy
            paused = not setup.conduct.screen_while_paused
            if setup.policy is ConductPolicy or setup.policy is BackfillPolicy:
                from .fast_conduct import (ConductTrial, LeanConductChunkDraws,
                                           PausedConductTrial)
                return ((PausedConductTrial if paused else ConductTrial),
                        None if setup.unlimited else LeanConductChunkDraws)
            if setup.conduct.costs is not None:      # (costs read the parts' patients)
                return Trial, None
            if paused and setup.policy is CohortPolicy:
                from .fast_conduct import PausedClassicTrial
                return PausedClassicTrial, lean
            if setup.policy is CohortPolicy:
                return ClassicTrial, lean
            if setup.policy is TimeToEventPolicy:
                return TiteTrial, lean
        else:
            lean = None if setup.unlimited else LeanGradedChunkDraws
            if setup.policy is CohortPolicy:
                return GradedClassicTrial, lean
            if setup.policy is TimeToEventPolicy:
                return GradedTiteTrial, lean
            if setup.policy is ScoreTimeToEventPolicy:
                return ScoreTiteTrial, lean
    return Trial, None


# ------------------------------------------------------------------ graded truths, lean
# A graded truth (truth.toxicities: per-type grades and onsets, the scenario's DLT rule)
# changes only what an observed patient contributes and when a time-to-event design sees
# it; both come from the chunk's graded block (DrawPlan.graded_block), read exactly as the
# toxicity parts (toxicity.py) read them: binary designs the DLT flags (bits of
# ``dlt_mask``; ``dlt_known`` beyond MASK_DOSES doses) and the day the DLT is known, score
# designs the units of the worst grade in the window and, for time-to-event designs, the
# steps of the units seen (``ScoreToxicity.steps``).  Score designs' trials keep each
# patient's DLT flag (``_collect`` counts the DLTs of complete patients).

class _PatView:
    """What ``_collect`` reads of a lean score-design trial's patient."""

    __slots__ = ("dose", "status", "dlt")

    def __init__(self, dose, status, dlt):
        self.dose = dose
        self.status = status
        self.dlt = dlt


def _observe_graded(d, k, dose):
    """``(has a DLT, day known or NaN)`` of patient k at ``dose`` (graded block of ``d``)."""
    mask = d.dlt_mask
    if mask is not None:
        while k >= len(mask):
            d.more_evaluable()
            mask = d.dlt_mask
        if mask[k] >> dose & 1:
            return True
        return False
    while k >= d.dlt_known.shape[0]:
        d.more_evaluable()
    day = d.dlt_known.item(k, dose)
    return day == day


def _score_of(d, k, dose, units):
    """``(has a DLT, units of the worst grade in the window)`` of patient k at ``dose``."""
    while k >= d.dlt_known.shape[0]:
        d.more_evaluable()
    day = d.dlt_known.item(k, dose)
    return day == day, units[d.worst_late.item(k, dose) >> 1]


#: nodes of one design's state graph (graded truths) before it starts afresh: a score
#: design's cohort adds 0..size x max_units units, so its graph keeps growing (about 1.7 new
#: nodes per trial after 25,000 gBOIN trials on cart_crs_icans.yaml, against 0.04 for BOIN)
_GRAPH_MAX = 200_000


class GradedClassicTrial(ClassicTrial):
    """:class:`ClassicTrial` on a graded truth (binary or score designs): a completed cohort
    is observed in infusion order, each patient adding its DLT flag (binary designs) or the
    units of its worst grade in the window (score designs, ``add_cohort(max_units=...)``).
    The design's state graph starts afresh after ``_GRAPH_MAX`` new nodes."""

    __slots__ = ("units", "mu", "xdlt", "shared")

    def __init__(self, setup, draws, lean=None):
        super().__init__(setup, draws, lean)
        self.units = setup.units
        self.mu = setup.max_units
        self.xdlt = {}                 # score designs: j of the observed patients with a DLT
        self.shared = design_memo(setup)

    def release(self) -> None:
        super().release()
        if self.units is not None:
            x = self.xdlt
            self.pats = [_PatView(p[_DOSE], p[_ST], p[_J] in x) for p in self.pats]

    def _observe(self, members, dose):
        d = self.draws
        k = self.n_tox
        y = 0
        units = self.units
        if units is None:
            for _ in members:
                y += _observe_graded(d, k, dose)
                k += 1
        else:
            x = self.xdlt
            for pat in members:
                dlt, u = _score_of(d, k, dose, units)
                if dlt:
                    x[pat[_J]] = True
                y += u
                k += 1
        self.n_tox = k
        return y

    def _grow(self, node, c, y):
        if self.mu is None:
            st = node.state.add_cohort(c[_CDOSE], c[_CSIZE], y)
        else:
            st = node.state.add_cohort(c[_CDOSE], c[_CSIZE], y, max_units=self.mu)
        nxt = node.succ[y] = _Node(st, self.setup.decide(st))
        sh = self.shared
        grown = sh["grown"] = sh.get("grown", 0) + 1
        if grown > _GRAPH_MAX:            # (this trial keeps its own path)
            sh["grown"] = 0
            sh["root"] = _Node(self.setup.empty_state,
                               self.setup.decide(self.setup.empty_state))
        return nxt


class GradedTiteTrial(TiteTrial):
    """:class:`TiteTrial` on a graded truth, binary designs: an infused patient with a DLT
    is seen on the day the DLT is known (the earliest qualifying onset inside the window)."""

    __slots__ = ()

    binary = False

    def _toxicity(self, pat, k, now):
        d = self.draws
        dose = pat[_DOSE]
        if _observe_graded(d, k, dose):
            n = self.seq = self.seq + 1
            heappush(self.q, (now + d.dlt_known.item(k, dose), n, self.h_dlt, pat))


class ScoreTiteTrial(TiteTrial):
    """:class:`TiteTrial` for time-to-event score designs (TITE-gBOIN,
    :class:`~.policies.ScoreTimeToEventPolicy`): the design sees ``TiteState(...,
    max_units)``; each event inside the window that raises the units seen so far is a call
    at its onset (in time order), ending the patient's pending status."""

    __slots__ = ("units", "xdlt", "xseen", "h_event")

    binary = False

    def __init__(self, setup, draws, lean=None):
        super().__init__(setup, draws, lean)
        self.units = setup.units
        self.mu = setup.max_units
        self.xdlt = {}
        self.xseen = {}
        self.h_event = self._event

    def release(self) -> None:
        super().release()
        self.h_event = None
        x = self.xdlt
        self.pats = [_PatView(p[_DOSE], p[_ST], p[_J] in x) for p in self.pats]

    def _toxicity(self, pat, k, now):
        d = self.draws
        j = pat[_J]
        dose = pat[_DOSE]
        dlt, _ = _score_of(d, k, dose, self.units)
        if dlt:
            self.xdlt[j] = True
        # ScoreToxicity.steps: events in onset order, those inside the window raising the
        # units seen so far
        units, W = self.units, self.window
        grades = d.grades[k, dose].tolist()
        days = d.type_onset[k].tolist()
        ev = sorted(((days[t], g) for t, g in enumerate(grades) if g > 0),
                    key=lambda e: e[0])
        best = 0
        q = self.q
        for day, g in ev:
            u = units[g]
            if day <= W and u > best:
                best = u
                n = self.seq = self.seq + 1
                heappush(q, (now + day, n, self.h_event, (pat, u)))

    def _event(self, arg):
        pat, units = arg
        j = pat[_J]
        gain = units - self.xseen.get(j, 0)
        self.xseen[j] = units
        self.y_obs[pat[_DOSE]] += gain
        pat[_CO][_CY] += gain
        self.pending.pop(j, None)
        self._changed()


class LeanGradedChunkDraws(LeanChunkDraws):
    """:class:`LeanChunkDraws` for a graded truth: the arrivals and patients as there, and
    the graded block kept as arrays per trial (as ``ChunkDraws``), the DLT flags as lists."""

    def _keep(self, u, onset, graded):
        self.graded = graded
        self.mask = None if graded[4] is None else graded[4].tolist()

    def _dlts(self, r: int):
        return [], []

    def trial(self, r: int):
        d, lean = super().trial(r)
        d.grades, d.type_onset, d.dlt_known, d.worst_late = [
            None if a is None else a[r] for a in self.graded[:4]]
        d.dlt_mask = None if self.mask is None else self.mask[r]
        return d, lean
