"""Arrivals, screening and the waiting list.

Arrivals are Poisson (``accrual_per_month``); each is screened (``screening.duration_days``,
failing with ``screening.failure_prob``); an eligible patient takes a free slot, or joins
the waiting list (``when_paused: wait``, at most ``max_wait_days``) or is lost (``leave``).
With ``accrual_per_month: null`` (unlimited) a free slot is filled at once by a new eligible
candidate.

Arrivals are pre-drawn; only the *eligible* ones are events (on the day screening ends), and
only while they can matter: when the policy does not decide on arrival and no slot is free,
no arrival is scheduled and :meth:`Accrual.catch_up` replays the ones that came meanwhile
(each joins the waiting list or leaves, in order) before a slot is next filled.
"""
from __future__ import annotations

from bisect import bisect_right
from collections import deque
from typing import TYPE_CHECKING, List, Optional

from .draws import merge_ready

if TYPE_CHECKING:  # pragma: no cover
    from .log import Recorder
    from .trial import Trial


class Accrual:
    """One trial's arrivals: the eligible-arrival queue, the waiting list and the counts."""

    __slots__ = ("trial", "draws", "rec", "unlimited", "leave", "max_wait", "rq", "rq_pos",
                 "armed", "waiting", "n_arrived", "n_screened", "n_screen_failed", "n_lost",
                 "n_wait_max", "n_waiting_at_close", "pauses", "n_not_screened", "every")

    def __init__(self, trial: "Trial", rec: Optional["Recorder"]):
        s = trial.setup
        self.trial = trial
        self.draws = trial.draws
        self.rec = rec
        self.unlimited = s.unlimited
        self.leave = s.leave
        self.max_wait = s.max_wait
        self.rq: List[tuple] = []        # (day screening ends, candidate), eligible, sorted
        self.rq_pos = 0
        self.armed = False               # the next eligible arrival is scheduled
        self.waiting: deque = deque()    # (candidate, deadline)
        self.n_arrived = 0               # unlimited accrual: candidates drawn so far
        self.n_screened = 0
        self.n_screen_failed = 0
        self.n_lost = 0
        self.n_wait_max = 0
        self.n_waiting_at_close = 0
        # screen_while_paused: false (classic designs): days the paused state changed
        self.pauses: Optional[List[tuple]] = None
        if not s.conduct.screen_while_paused and not s.unlimited:
            self.pauses = [(0.0, False)]
        self.n_not_screened = 0
        #: every eligible arrival is an event, slot or not (manufacture_before_slot with
        #: manufacturing_capacity: the pathway hears of each patient screened in, in time)
        self.every = getattr(s, "premade_capacity", False)

    # -- the eligible-arrival queue ------------------------------------------------------
    def start(self) -> None:
        self._merge_ready(0)
        self.arm()

    def _merge_ready(self, start: int) -> None:
        self.rq = merge_ready(self.draws, self.rq[self.rq_pos:], start)
        self.rq_pos = 0

    def _peek(self) -> tuple:
        """(ready day, candidate) of the next eligible arrival.  Arrivals not drawn yet come
        after the last drawn one, so the head of the queue is final once it is ready by
        then; otherwise draw more arrivals first."""
        d = self.draws
        while self.rq_pos >= len(self.rq) or self.rq[self.rq_pos][0] > d.arrival_time[-1]:
            n0 = len(d.arrival_time)
            d.more_arrivals()
            self._merge_ready(n0)
        return self.rq[self.rq_pos]

    def arm(self) -> None:
        """Schedule the next eligible arrival, if it can matter now."""
        t = self.trial
        if self.armed or t.finished or (t.cohort.free <= 0 and not t.policy.decides_on_arrival
                                        and not self.every):
            return
        r, i = self._peek()
        self.rq_pos += 1
        self.armed = True
        t.clock.after(r - t.clock.now, self._ready, i)

    def _ready(self, call) -> None:
        self.armed = False
        t = self.trial
        if t.finished:
            return
        if self.pauses is not None and self.unscreened(call.arg):
            self.arm()
            return
        if self.every:
            t.path.screened_in(call.arg)
        t.offer(call.arg)
        self.arm()

    # -- screen_while_paused: false ------------------------------------------------------
    def mark(self, now: float) -> None:
        """Record whether accrual is paused now (no slot for a new patient): the escalation
        cohort is full and the policy opens no other slot on an arrival."""
        t = self.trial
        paused = t.cohort.free <= 0 and not t.policy.decides_on_arrival
        if paused != self.pauses[-1][1]:
            self.pauses.append((now, paused))

    def paused_at(self, day: float) -> bool:
        p = self.pauses
        k = bisect_right(p, (day, True)) - 1
        return p[k][1] if k >= 0 else False

    def unscreened(self, i: int) -> bool:
        """Candidate ``i`` arrived while accrual was paused: never screened (goes
        elsewhere); True if so."""
        if not self.paused_at(self.draws.arrival_time[i]):
            return False
        self.n_not_screened += 1
        if self.rec is not None:
            self.rec.lost(i, self.draws.arrival_time[i], "not_screened_paused")
        return True

    def catch_up(self, until: float) -> None:
        """Replay the eligible arrivals up to ``until`` that no event handled (no slot was
        free for them): each joins the waiting list or leaves."""
        if self.armed or self.unlimited:
            return
        while True:
            r, i = self._peek()
            if r > until:
                return
            self.rq_pos += 1
            if self.pauses is not None and self.unscreened(i):
                continue
            self.wait_or_leave(i, r)

    def new_candidate(self) -> int:
        """Unlimited accrual: the next eligible candidate, ready now."""
        d = self.draws
        rec = self.rec
        now = self.trial.clock.now
        while True:
            i = self.n_arrived
            while i >= len(d.screen_failed):
                d.more_arrivals()
            self.n_arrived = i + 1
            if rec is not None:
                rec.arrival[i] = rec.ready[i] = now
            if d.screen_failed[i]:
                self.n_screen_failed += 1
                if rec is not None:
                    rec.fate[i] = "screen_failed"
                continue
            return i

    # -- the waiting list ---------------------------------------------------------------
    def wait_or_leave(self, i: int, t: float) -> None:
        """No slot for candidate ``i`` (eligible on day ``t``)."""
        if self.leave:
            self.n_lost += 1
            if self.rec is not None:
                self.rec.lost(i, t, "lost_paused")
            return
        self.purge(t)
        self.waiting.append((i, t + self.max_wait))
        if len(self.waiting) > self.n_wait_max:
            self.n_wait_max = len(self.waiting)

    def purge(self, now: float) -> None:
        """Patients whose wait ran out before ``now`` are lost (on their deadline)."""
        w = self.waiting
        while w and w[0][1] < now:
            i, dl = w.popleft()
            self.n_lost += 1
            if self.rec is not None:
                self.rec.lost(i, dl, "lost_waiting")

    def next_waiting(self) -> int:
        return self.waiting.popleft()[0]

    # -- the close -----------------------------------------------------------------------
    def close(self, t_end: float) -> None:
        """The trial stopped on ``t_end``: settle the waiting list."""
        if not self.unlimited:
            self.catch_up(t_end)
        self.purge(t_end)
        self.n_waiting_at_close = len(self.waiting)
        if self.rec is not None:
            for i, _ in self.waiting:
                self.rec.fate[i] = "not_enrolled"
        self.waiting.clear()

    def count_arrivals(self, t_end: float) -> None:
        """Arrival-driven accrual: every arrival up to the close was screened."""
        d = self.draws
        if self.unlimited:
            self.n_screened = self.n_arrived
            return
        while d.arrival_time[-1] <= t_end:
            d.more_arrivals()
        self.n_arrived = self.n_screened = bisect_right(d.arrival_time, t_end)
        self.n_screen_failed = sum(d.screen_failed[:self.n_screened])
        if self.pauses is not None:         # arrivals during a pause were not screened
            off = [i for i in range(self.n_arrived) if self.paused_at(d.arrival_time[i])]
            self.n_not_screened = len(off)
            self.n_screened -= len(off)
            self.n_screen_failed -= sum(d.screen_failed[i] for i in off)
        rec = self.rec
        if rec is not None:
            for i in range(self.n_arrived):
                rec.arrival[i] = d.arrival_time[i]
                if self.pauses is not None and self.paused_at(d.arrival_time[i]):
                    rec.fate[i] = "not_screened_paused"      # no screening, no end of it
                    rec.ready.pop(i, None)
                    continue
                rec.ready.setdefault(i, d.arrival_time[i] + d.screen_days[i])
                if d.screen_failed[i]:
                    rec.fate[i] = "screen_failed"
