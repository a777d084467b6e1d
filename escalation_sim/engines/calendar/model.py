"""The simpy model of one CAR-T dose-escalation trial.

A trial is one :class:`Trial` object holding all of its state; simpy provides the clock and
the event queue.  To keep the simpy layer thin every step is a single ``env.timeout`` whose
callback performs the next step: no generator process per patient and no event per phase (a
patient's phase durations are pre-drawn, so the stretch from enrollment to the gate, from
the gate to infusion and from infusion to the end of the window are one timeout each).
Events per trial: one per eligible arrival (ready after screening), and per enrolled patient
one at the end of its path (failure, drop-out or end of window), plus gate arrival / release
when patients can be held, plus infusion and DLT onset for time-to-event designs.

Patient path
------------
arrival (Poisson, ``accrual_per_month``) -> screening (``screening.duration_days``; fails
with ``screening.failure_prob``) -> eligible: enrolled into an open slot, else the waiting
list (``when_paused: wait``, at most ``max_wait_days``) or lost (``leave``) -> phases in order
(each skipped with probability ``1 - probability``, each may end in failure with
``failure_prob``: never infused, the slot reopens) -> the *gate* (before the first
lymphodepletion phase by default): held by sentinel spacing (``stagger_*``) and by the
follow-up cap (``max_in_followup``, counted from gate release to the end of the window) ->
remaining phases -> infusion (day 0) -> DLT window (``dlt_window_days``); a drop-out leaves
before the end of the window, not evaluable, and the slot reopens.

DLTs: the k-th evaluable infusion of the trial (k = 0, 1, ... in order of infusion time, ties
in enrollment order; drop-outs excluded) has a DLT at dose d iff ``u_dlt(k) < p_d``.

Classic designs
---------------
A decision ``treat(dose, c)`` opens a cohort of ``c`` slots at ``dose``.  The cohort is
complete when ``c`` of its patients finished the window evaluable; after ``review_days``
the design decides on the updated :class:`~escalation_sim.types.TrialState` (the state the
cohort engine reaches), and so on until it stops.  Accrual is paused while the cohort is full.

Time-to-event designs
---------------------
Designs whose undecorated design has ``time_to_event = True`` decide whenever an eligible
patient is ready and no slot is open, from a ``TiteState`` at that moment: per-dose counts of
every enrolled patient still in the trial (``n``), DLTs observed so far (``y``) and, for each
pending patient (no DLT yet, window not over; enrolled-not-yet-infused patients count with
follow-up 0), the fraction of the window followed.  A decision with ``cohort_size == 0``
suspends accrual until the data change; a stop decision while patients are pending pauses
accrual until they finish (decisions are re-taken whenever the data change); the trial ends
when the design stops with no patient in flight.

Everything random comes from :mod:`escalation_sim.engines.calendar.draws` (counter-based streams).
"""
from __future__ import annotations

from bisect import bisect_right
from collections import deque
from itertools import accumulate
from typing import Any, Dict, List, Optional

import simpy

from ...inputs.conduct import Conduct
from ...designs.base import Design
from ...designs.registry import is_time_to_event
from ...types import Decision, StopReason, TrialState
from .draws import TrialDraws

INF = float("inf")

# patient record fields (one list per patient)
CAND, DOSE, GROUP, ENROLL, GATE, RELEASE, INFUSE, KIDX, DLT, STATUS, END = range(11)
# patient status / planned end
PIPELINE, FOLLOWUP, COMPLETE, FAILED, DROPPED = 0, 1, 2, 3, 4

_TITE_STATE = None


def _tite_state_cls():
    global _TITE_STATE
    if _TITE_STATE is None:
        from ...designs.tite import TiteState
        _TITE_STATE = TiteState
    return _TITE_STATE


class Setup:
    """Everything shared by the trials of one simulation call (design, truth, conduct)."""

    def __init__(self, design: Design, p_true, conduct: Conduct, record: bool,
                 max_patients: int):
        self.design = design
        self.K = design.n_doses
        self.p = [float(v) for v in p_true]
        self.tite = is_time_to_event(design)
        self.conduct = conduct
        self.window = conduct.dlt_window_days
        self.unlimited = conduct.accrual_per_month is None
        self.leave = conduct.when_paused == "leave"
        self.max_wait = INF if conduct.max_wait_days is None else conduct.max_wait_days
        cap = conduct.max_in_followup
        # classic designs never have more patients in flight than the cohort has slots, so a
        # cap at least that large never binds
        if cap is not None and not self.tite and cap >= design.max_cohort_size:
            cap = None
        self.cap = cap
        self.stagger = conduct.stagger_days
        self.gated = self.stagger > 0 or cap is not None
        self.gate = conduct.gate_index if self.gated else len(conduct.phases)
        self.stagger_all = conduct.stagger_mode == "all"
        self.stagger_cohort = conduct.stagger_scope == "every_cohort"
        # sentinel spacing without a binding cap: once a group's sentinel is released, the
        # release day of the others is known at enrollment (no gate event needed)
        self.known_release = self.gated and cap is None and not self.stagger_all
        self.review = conduct.review_days
        self.phase_names = [p.name for p in conduct.phases]
        self.manufacturing = [p.kind == "manufacturing" for p in conduct.phases]
        self.record = record
        self.max_patients = max_patients
        self._decisions: Dict[Any, Decision] = {}
        self._mtds: Dict[Any, Optional[int]] = {}
        self._canonical = design.canonical

    def decide(self, state: TrialState) -> Decision:
        """Memoised ``design.decide`` for complete-data states, by the design's canonical key
        (states with equal keys get equal decisions; they repeat across trials)."""
        key = self._canonical(state)
        dec = self._decisions.get(key)
        if dec is None:
            dec = self._decisions[key] = self.design.decide(state)
        return dec

    def select_mtd(self, state: TrialState) -> Optional[int]:
        key = self._canonical(state)
        try:
            return self._mtds[key]
        except KeyError:
            m = self._mtds[key] = self.design.select_mtd(state)
            return m


class Trial:
    """One simulated trial: create, ``run()``, then read the attributes."""

    def __init__(self, setup: Setup, draws: TrialDraws):
        s = self.s = setup
        self.d = draws
        self.env = simpy.Environment()
        self.end = self.env.event()
        self.finished = False
        # accrual: eligible arrivals sorted by the day screening ends
        self.rq: List[tuple] = []
        self.rq_pos = 0
        self.armed = False                     # a ready event is scheduled
        self.n_arrived = 0                     # unlimited accrual: candidates drawn
        self.n_screened = 0
        self.n_screen_failed = 0
        self.waiting: deque = deque()          # (candidate, deadline)
        self.n_lost = 0
        self.n_wait_max = 0
        self.n_waiting_at_close = 0
        # patients, index j = enrollment order; one record list each (fields above)
        self.pats: List[list] = []
        self.n_eval = 0                        # k counter (evaluable infusions)
        self.n_treated = 0
        self.n_manuf_fail = 0
        self.n_phase_fail = 0
        self.n_dropout = 0
        self.in_flight = 0
        # gate
        self.in_fu = 0
        self.gate_q: deque = deque()
        self.stag: Dict[Any, List[float]] = {}
        # design
        self.state = TrialState.empty(s.K)
        self.group = -1
        self.group_dose = -1
        self.group_open = 0
        self.group_size = 0
        self.group_done: List[int] = []
        self.group_y = 0
        self.group_active = 0
        self.decision_times: List[float] = []
        self.first_enroll: Optional[float] = None
        self.t_end = 0.0
        self.stop_reason: Optional[StopReason] = None
        self.final_state: Optional[TrialState] = None
        if s.tite:
            self.n_active = [0] * s.K
            self.y_obs = [0] * s.K
            self.pending: Dict[int, None] = {}
        if s.record:
            self.cand_ready: Dict[int, float] = {}
            self.cand_fate: Dict[int, str] = {}
            self.cand_lost: Dict[int, float] = {}
            self.cand_j: Dict[int, int] = {}
            self.cand_arrival: Dict[int, float] = {}

    # ================================================================== running
    def run(self) -> "Trial":
        s = self.s
        if not s.tite:
            self._open(s.decide(self.state))
        if s.unlimited:
            self._fill()
        else:
            self._merge_ready(0)
            self._arm()
        if not self.finished:
            self.env.run(until=self.end)
        self._close_accrual()
        return self

    def release(self) -> None:
        """Drop the simpy environment once the trial is over.  Events still queued (the next
        arrival, windows running past a final decision) hold the environment and this trial
        in a reference cycle; emptying the queue lets reference counting free everything."""
        queue = getattr(self.env, "_queue", None)
        if queue is not None:
            queue.clear()
        self.env = None
        self.end = None
        self.rq = []

    # ================================================================== accrual
    def _merge_ready(self, start: int) -> None:
        d = self.d
        at, sf, sd = d.arrival_time, d.screen_failed, d.screen_days
        new = [(at[i] + sd[i], i) for i in range(start, len(at)) if not sf[i]]
        rest = self.rq[self.rq_pos:] + new
        rest.sort()
        self.rq = rest
        self.rq_pos = 0

    def _peek(self) -> tuple:
        """(ready day, candidate) of the next eligible arrival.  Arrivals not drawn yet come
        after the last drawn one, so the head of the queue is final once it is ready by
        then; otherwise draw more arrivals first."""
        d = self.d
        while self.rq_pos >= len(self.rq) or self.rq[self.rq_pos][0] > d.arrival_time[-1]:
            n0 = len(d.arrival_time)
            d.more_arrivals()
            self._merge_ready(n0)
        return self.rq[self.rq_pos]

    def _arm(self) -> None:
        """Schedule the next eligible arrival.  Classic designs skip this while no slot is
        open: arrivals during a pause only join the waiting list (or leave), which
        :meth:`_catch_up` replays, in order, when a slot opens."""
        if self.armed or self.finished or (not self.s.tite and self.group_open <= 0):
            return
        r, i = self._peek()
        self.rq_pos += 1
        self.armed = True
        ev = self.env.timeout(r - self.env.now, i)
        ev.callbacks.append(self._on_ready)

    def _on_ready(self, ev) -> None:
        self.armed = False
        if self.finished:
            return
        self._offer(ev.value)
        self._arm()

    def _catch_up(self, until: float) -> None:
        """Replay the eligible arrivals up to ``until`` that no event handled (no slot was
        open for them): each joins the waiting list or leaves."""
        if self.armed or self.s.unlimited:
            return
        while True:
            r, i = self._peek()
            if r > until:
                return
            self.rq_pos += 1
            self._wait_or_leave(i, r)

    def _new_candidate(self) -> int:
        """Unlimited accrual: the next eligible candidate, ready now."""
        d = self.d
        rec = self.s.record
        while True:
            i = self.n_arrived
            while i >= len(d.screen_failed):
                d.more_arrivals()
            self.n_arrived = i + 1
            if rec:
                self.cand_arrival[i] = self.cand_ready[i] = self.env.now
            if d.screen_failed[i]:
                self.n_screen_failed += 1
                if rec:
                    self.cand_fate[i] = "screen_failed"
                continue
            return i

    def _offer(self, i: int) -> None:
        """Candidate ``i`` is eligible now."""
        self._purge(self.env.now)
        if not self.waiting and self._slot():
            self._enroll(i)
        elif not self.finished:
            self._wait_or_leave(i, self.env.now)

    def _wait_or_leave(self, i: int, t: float) -> None:
        """No slot for candidate ``i`` (eligible on day ``t``)."""
        if self.s.leave:
            self.n_lost += 1
            if self.s.record:
                self.cand_fate[i] = "lost_paused"
                self.cand_lost[i] = t
            return
        self._purge(t)
        self.waiting.append((i, t + self.s.max_wait))
        if len(self.waiting) > self.n_wait_max:
            self.n_wait_max = len(self.waiting)

    def _purge(self, now: float) -> None:
        w = self.waiting
        while w and w[0][1] < now:
            i, dl = w.popleft()
            self.n_lost += 1
            if self.s.record:
                self.cand_fate[i] = "lost_waiting"
                self.cand_lost[i] = dl

    def _fill(self) -> None:
        """Enroll waiting (or, with unlimited accrual, new) patients into open slots."""
        unlimited = self.s.unlimited
        now = self.env.now
        self._catch_up(now)
        while not self.finished:
            self._purge(now)
            if not self.waiting and not unlimited:
                break
            if not self._slot():
                break
            if self.waiting:
                i = self.waiting.popleft()[0]
            else:
                i = self._new_candidate()
            self._enroll(i)
        if not unlimited:
            self._arm()

    def _close_accrual(self) -> None:
        """Counts of arrivals up to the close (arrival-driven accrual)."""
        d = self.d
        if self.s.unlimited:
            self.n_screened = self.n_arrived
            return
        while d.arrival_time[-1] <= self.t_end:
            d.more_arrivals()
        self.n_arrived = self.n_screened = bisect_right(d.arrival_time, self.t_end)
        self.n_screen_failed = sum(d.screen_failed[:self.n_screened])
        if self.s.record:
            for i in range(self.n_screened):
                self.cand_arrival[i] = d.arrival_time[i]
                self.cand_ready.setdefault(i, d.arrival_time[i] + d.screen_days[i])
                if d.screen_failed[i]:
                    self.cand_fate[i] = "screen_failed"

    # ================================================================== slots & decisions
    def _slot(self) -> bool:
        if self.group_open > 0:
            return True
        if not self.s.tite or self.finished:
            return False
        dec = self.s.design.decide(self.tite_state())
        if dec.stop:
            if self.in_flight == 0:
                self._finish(dec)
            return False
        if dec.cohort_size <= 0:         # accrual suspended until the data change
            return False
        if self.first_enroll is not None:
            self.decision_times.append(self.env.now - self.first_enroll)
        self._open(dec)
        return True

    def _open(self, dec: Decision) -> None:
        if dec.stop:
            self._finish(dec)
            return
        self.group += 1
        self.group_dose = dec.dose
        self.group_open = dec.cohort_size
        self.group_size = dec.cohort_size
        self.group_done = []
        self.group_y = 0
        self.group_active = 0

    def _decide_classic(self, ev=None) -> None:
        self.decision_times.append(self.env.now - self.first_enroll)
        self._open(self.s.decide(self.state))
        if not self.finished:
            self._fill()

    def _changed(self) -> None:
        """The data or the slots changed."""
        if self.finished:
            return
        self._fill()
        if (self.s.tite and not self.finished and self.in_flight == 0
                and self.group_open == 0):
            dec = self.s.design.decide(self.tite_state())
            if dec.stop:
                self._finish(dec)

    def _finish(self, dec: Decision) -> None:
        s = self.s
        self.finished = True
        self.t_end = self.env.now
        self.stop_reason = dec.stop_reason or StopReason.RULE_COMPLETE
        if s.tite:
            if self.first_enroll is not None:
                self.decision_times.append(self.t_end - self.first_enroll)
            self.final_state = TrialState(tuple(self.n_active), tuple(self.y_obs),
                                          self.group_dose if self.group >= 0 else None,
                                          self.group_active, self.group_y)
        else:
            self.final_state = self.state
        if not s.unlimited:
            self._catch_up(self.t_end)
        self._purge(self.t_end)
        self.n_waiting_at_close = len(self.waiting)
        if s.record:
            for i, _ in self.waiting:
                self.cand_fate[i] = "not_enrolled"
        self.waiting.clear()
        if not self.end.triggered:
            self.end.succeed()

    def tite_state(self):
        """The :class:`~escalation_sim.designs.tite.TiteState` at the current time."""
        now = self.env.now
        W = self.s.window
        pats = self.pats
        pend = []
        for j in self.pending:
            p = pats[j]
            t0 = p[INFUSE]
            pend.append((p[DOSE], 0.0 if t0 < 0 else min((now - t0) / W, 1.0)))
        return _tite_state_cls()(tuple(self.n_active), tuple(self.y_obs),
                                 self.group_dose if self.group >= 0 else None,
                                 self.group_active, self.group_y, tuple(pend))

    # ================================================================== patient path
    def _enroll(self, i: int) -> None:
        s, d, env = self.s, self.d, self.env
        j = len(self.pats)
        if j >= s.max_patients:
            raise RuntimeError(f"trial {d.trial}: more than {s.max_patients} patients enrolled; "
                               f"does the design ever stop?")
        while j >= len(d.fail_at):
            d.more_patients()
        now = env.now
        if self.first_enroll is None:
            self.first_enroll = now
        dose = self.group_dose
        self.group_open -= 1
        self.group_active += 1
        pat = [i, dose, self.group, now, -1.0, -1.0, -1.0, -1, False, PIPELINE, -1.0]
        self.pats.append(pat)
        self.in_flight += 1
        if s.tite:
            self.n_active[dose] += 1
            self.pending[j] = None
        if s.record:
            self.cand_j[i] = j
        f = d.fail_at[j]
        if 0 <= f < s.gate:                          # fails before the gate / infusion
            pat[STATUS] = FAILED
            ev = env.timeout(d.fail_days[j], j)
            ev.callbacks.append(self._on_end)
        elif not s.gated:
            self._to_infusion(j, pat, d.pre_days[j])
        else:
            rec = self.stag.get(self.group if s.stagger_cohort else dose) \
                if s.known_release else None
            if rec is None:
                ev = env.timeout(d.pre_days[j], j)
                ev.callbacks.append(self._on_gate)
                return
            # the group's sentinel is already on its way: the release day is known now
            gate = now + d.pre_days[j]
            release = max(gate, rec[0] + s.stagger - d.post_days[j])
            pat[GATE] = gate
            pat[RELEASE] = release
            self.in_fu += 1
            if f >= 0:
                pat[STATUS] = FAILED
                ev = env.timeout(release - now + d.fail_days[j] - d.pre_days[j], j)
                ev.callbacks.append(self._on_end)
            else:
                self._to_infusion(j, pat, release - now + d.post_days[j])

    def _to_infusion(self, j: int, pat: list, delay: float) -> None:
        """Schedule the infusion ``delay`` days from now (and, for classic designs, the end of
        the patient's path at once: drop-out or end of window)."""
        env = self.env
        if self.s.tite:
            ev = env.timeout(delay, j)
            ev.callbacks.append(self._on_infusion)
            return
        d = self.d
        t_inf = env.now + delay
        pat[INFUSE] = t_inf
        if d.drop[j]:
            pat[STATUS] = DROPPED
            ev = env.timeout(delay + d.drop_day[j], j)
        else:
            pat[STATUS] = COMPLETE
            ev = env.timeout(delay + self.s.window, j)
        ev.callbacks.append(self._on_end)

    def _on_gate(self, ev) -> None:
        j = ev.value
        self.pats[j][GATE] = self.env.now
        self.gate_q.append(j)
        self._try_gate()

    def _try_gate(self) -> None:
        s = self.s
        q = self.gate_q
        while q and (s.cap is None or self.in_fu < s.cap):
            j = q.popleft()
            pat = self.pats[j]
            self.in_fu += 1
            now = self.env.now
            post = self.d.post_days[j]
            release = now
            if s.stagger > 0:
                key = pat[GROUP] if s.stagger_cohort else pat[DOSE]
                rec = self.stag.get(key)
                if rec is None:
                    self.stag[key] = [now + post, now + post]
                elif s.stagger_all:
                    release = max(now, rec[1] + s.stagger - post)
                    rec[1] = release + post
                else:
                    release = max(now, rec[0] + s.stagger - post)
            pat[RELEASE] = release
            if release > now:
                ev = self.env.timeout(release - now, j)
                ev.callbacks.append(self._on_release)
            else:
                self._release(j, pat)

    def _on_release(self, ev) -> None:
        j = ev.value
        self._release(j, self.pats[j])

    def _release(self, j: int, pat: list) -> None:
        d = self.d
        if d.fail_at[j] >= self.s.gate:
            pat[STATUS] = FAILED
            ev = self.env.timeout(d.fail_days[j] - d.pre_days[j], j)
            ev.callbacks.append(self._on_end)
        else:
            self._to_infusion(j, pat, d.post_days[j])

    def _on_infusion(self, ev) -> None:
        """Time-to-event designs: infusion, then DLT onset and end of window / drop-out."""
        j = ev.value
        s, d, env = self.s, self.d, self.env
        pat = self.pats[j]
        pat[INFUSE] = env.now
        self.n_treated += 1
        if d.drop[j]:
            pat[STATUS] = DROPPED
            ev = env.timeout(d.drop_day[j], j)
            ev.callbacks.append(self._on_end)
            return
        pat[STATUS] = COMPLETE
        k = self.n_eval
        self.n_eval = k + 1
        while k >= len(d.dlt_u):
            d.more_evaluable()
        pat[KIDX] = k
        if d.dlt_u[k] < s.p[pat[DOSE]]:
            pat[DLT] = True
            ev = env.timeout(d.onset_day[k], j)
            ev.callbacks.append(self._on_dlt)
        ev = env.timeout(s.window, j)
        ev.callbacks.append(self._on_end)

    def _on_dlt(self, ev) -> None:
        j = ev.value
        pat = self.pats[j]
        self.y_obs[pat[DOSE]] += 1
        self.pending.pop(j, None)
        if pat[GROUP] == self.group:
            self.group_y += 1
        self._changed()

    def _on_end(self, ev) -> None:
        """End of the patient's path: failure, drop-out or end of the DLT window."""
        j = ev.value
        s = self.s
        pat = self.pats[j]
        pat[END] = self.env.now
        self.in_flight -= 1
        st = pat[STATUS]
        released = pat[RELEASE] >= 0
        if released:
            self.in_fu -= 1
        if st == COMPLETE:
            if s.tite:
                self.pending.pop(j, None)
                if released and self.gate_q:
                    self._try_gate()
                self._changed()
                return
            self.n_treated += 1
            self.group_done.append(j)
            if released and self.gate_q:
                self._try_gate()
            if len(self.group_done) == self.group_size:
                self._complete_cohort()
            return
        if st == FAILED:
            self.n_phase_fail += 1
            if s.manufacturing[self.d.fail_at[j]]:
                self.n_manuf_fail += 1
        else:  # DROPPED
            self.n_dropout += 1
            if not s.tite:
                self.n_treated += 1
        if pat[GROUP] == self.group:
            self.group_active -= 1
        if s.tite:
            self.n_active[pat[DOSE]] -= 1
            self.pending.pop(j, None)
        elif pat[GROUP] == self.group:
            self.group_open += 1              # replacement
        if released and self.gate_q:
            self._try_gate()
        self._changed()

    def _complete_cohort(self) -> None:
        """Classic designs: the cohort's windows are closed; outcomes in infusion order."""
        s, d = self.s, self.d
        pats = self.pats
        members = sorted(self.group_done, key=lambda j: (pats[j][INFUSE], j))
        p = s.p[self.group_dose]
        y = 0
        for j in members:
            k = self.n_eval
            self.n_eval = k + 1
            while k >= len(d.dlt_u):
                d.more_evaluable()
            pats[j][KIDX] = k
            if d.dlt_u[k] < p:
                pats[j][DLT] = True
                y += 1
        self.group_y = y
        self.state = self.state.add_cohort(self.group_dose, self.group_size, y)
        if s.review > 0:
            ev = self.env.timeout(s.review)
            ev.callbacks.append(self._decide_classic)
        else:
            self._decide_classic()

    # ================================================================== patient log
    def patient_rows(self) -> List[Dict[str, Any]]:
        """One dict per arrival up to the close (only with ``record=True``)."""
        s, d = self.s, self.d
        nan = float("nan")
        rows = []
        for i in range(self.n_arrived):
            j = self.cand_j.get(i, -1)
            row: Dict[str, Any] = {
                "arrival_index": i,
                "arrival_day": self.cand_arrival.get(i, nan),
                "screening_end_day": self.cand_ready.get(i, nan),
                "eligible": not d.screen_failed[i],
                "lost_day": self.cand_lost.get(i, nan),
            }
            if j < 0:
                row.update(fate=self.cand_fate.get(i, "not_enrolled"), patient=-1,
                           enrolled_day=nan, dose_level=0, cohort=-1, gate_wait_days=nan,
                           infusion_day=nan, evaluable=False, evaluable_index=-1, dlt=False,
                           dlt_day=nan, dropout_day=nan, window_end_day=nan)
                for name in s.phase_names:
                    row[f"{name}_start_day"] = nan
                    row[f"{name}_end_day"] = nan
                rows.append(row)
                continue
            pat = self.pats[j]
            st = pat[STATUS]
            f = d.fail_at[j]
            inf = pat[INFUSE]
            evaluable = st == COMPLETE
            k = pat[KIDX]
            if st == FAILED:
                fate = f"failed_{s.phase_names[f]}"
            elif st == DROPPED:
                fate = "dropout"
            else:
                fate = "evaluable"
            dlt = bool(pat[DLT]) and evaluable
            rel, gate = pat[RELEASE], pat[GATE]
            row.update(
                fate=fate, patient=j, enrolled_day=pat[ENROLL], dose_level=pat[DOSE] + 1,
                cohort=pat[GROUP],
                gate_wait_days=rel - gate if rel >= 0 and gate >= 0 else nan,
                infusion_day=inf if inf >= 0 and st != FAILED else nan,
                evaluable=evaluable, evaluable_index=k if evaluable else -1, dlt=dlt,
                dlt_day=d.onset_day[k] if dlt else nan,
                dropout_day=d.drop_day[j] if st == DROPPED else nan,
                window_end_day=pat[END] if evaluable else nan)
            days = d.phase_days[j]
            happens = d.phase_happens[j]
            cum = [0.0] + list(accumulate(days))
            g = s.gate
            last = f if f >= 0 else len(days) - 1
            for p, name in enumerate(s.phase_names):
                if p > last or not happens[p] or (p >= g and rel < 0):
                    row[f"{name}_start_day"] = nan
                    row[f"{name}_end_day"] = nan
                    continue
                start = pat[ENROLL] + cum[p] if p < g else rel + sum(days[g:p])
                row[f"{name}_start_day"] = start
                row[f"{name}_end_day"] = start + days[p]
            rows.append(row)
        return rows
