"""The simpy model of one CAR-T dose-escalation trial.

A trial is one :class:`Trial` object holding all of its state; simpy provides the clock and
the event queue.  To keep the simpy layer thin every step of a patient's path is a single
``env.timeout`` whose callback performs the next step (no generator process per patient, no
event per phase: a patient's phase durations are pre-drawn, so the path from enrollment to
the gate, from the gate to infusion, and from infusion to the end of the window are one
timeout each).  Per patient that is at most: gate arrival, release, infusion, DLT onset
(time-to-event designs only) and end of window / drop-out / failure.

Patient path
------------
arrival (Poisson, ``accrual_per_month``) -> screening (``screening.duration_days``; fails
with ``screening.failure_prob``) -> eligible: enrolled into an open slot, else waiting list
(``when_paused: wait``, at most ``max_wait_days``) or lost (``leave``) -> phases in order
(each may be skipped with ``1 - probability`` and may end in failure with
``failure_prob``: the patient is never infused and the slot reopens) -> the *gate* (before
the first lymphodepletion phase by default): held by sentinel spacing (``stagger_*``) and the
follow-up cap (``max_in_followup``, counted from gate release to the end of the window) ->
remaining phases -> infusion (day 0) -> DLT window (``dlt_window_days``): a DLT (per the
shared ``dlt`` stream) starts on its onset day; a drop-out leaves, not evaluable, and the slot
reopens.

Gating (classic designs)
------------------------
The design's decision ``treat(dose, c)`` opens a cohort of ``c`` slots at ``dose``.  The
cohort is complete when ``c`` of its patients finished the window evaluable; after
``review_days`` the design decides on the updated :class:`~escalation_sim.types.TrialState`
(the exact state the cohort engine would reach).  Accrual is paused while a cohort is full.

Time-to-event designs
---------------------
Designs whose undecorated design has ``time_to_event = True`` decide whenever an eligible
patient is ready and no slot is open, from a ``TiteState`` at that moment: per-dose counts of
every enrolled patient still in the trial (``n``), DLTs observed so far (``y``) and, for each
pending patient (no DLT yet, window not over; enrolled-not-yet-infused patients count with
follow-up 0), the fraction of the window followed.  ``cohort_size == 0`` in a decision means
"suspend accrual until the data change"; a stop decision with patients still pending pauses
accrual until they finish (decisions are re-taken whenever the data change), and the trial
ends when the design stops on complete data.

Everything random comes from :mod:`escalation_sim.des.draws` (counter-based streams).
"""
from __future__ import annotations

from collections import deque
from itertools import accumulate
from typing import Any, Dict, List, Optional

import simpy

from ..conduct import Conduct
from ..designs.base import Design
from ..types import Decision, StopReason, TrialState
from .draws import TrialDraws

INF = float("inf")

# patient status codes
PIPELINE, FOLLOWUP, COMPLETE, FAILED, DROPPED = 0, 1, 2, 3, 4


_TITE_STATE = None


def _tite_state_cls():
    global _TITE_STATE
    if _TITE_STATE is None:
        from ..designs.tite import TiteState
        _TITE_STATE = TiteState
    return _TITE_STATE


def is_time_to_event(design: Design) -> bool:
    return bool(getattr(design.inner, "time_to_event", False))


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
        self.gated = conduct.gated
        self.gate = conduct.gate_index
        self.cap = conduct.max_in_followup
        self.stagger = conduct.stagger_days
        self.stagger_all = conduct.stagger_mode == "all"
        self.stagger_cohort = conduct.stagger_scope == "every_cohort"
        self.review = conduct.review_days
        self.phase_names = [p.name for p in conduct.phases]
        self.manufacturing = [p.kind == "manufacturing" for p in conduct.phases]
        self.record = record
        self.max_patients = max_patients
        self._decisions: Dict[TrialState, Decision] = {}
        self._mtds: Dict[TrialState, Optional[int]] = {}

    def decide(self, state: TrialState) -> Decision:
        """Memoised ``design.decide`` (classic designs: states repeat across trials)."""
        dec = self._decisions.get(state)
        if dec is None:
            dec = self._decisions[state] = self.design.decide(state)
        return dec

    def select_mtd(self, state: TrialState) -> Optional[int]:
        if state in self._mtds:
            return self._mtds[state]
        m = self._mtds[state] = self.design.select_mtd(state)
        return m


class Trial:
    """One simulated trial (create, ``run()``, then read the attributes)."""

    def __init__(self, setup: Setup, draws: TrialDraws):
        s = self.s = setup
        self.d = draws
        self.env = simpy.Environment()
        self.end = self.env.event()
        self.finished = False
        # accrual
        self.n_arrived = 0
        self.n_screen_failed = 0
        self.waiting: deque = deque()          # (candidate, deadline)
        self.n_lost = 0
        self.n_wait_max = 0
        self.n_waiting_at_close = 0
        # patients (index j = enrollment order)
        self.pat_cand: List[int] = []
        self.pat_dose: List[int] = []
        self.pat_group: List[int] = []
        self.pat_enroll: List[float] = []
        self.pat_gate: List[float] = []        # reached the gate
        self.pat_release: List[float] = []     # released from the gate
        self.pat_inf: List[float] = []
        self.pat_k: List[int] = []
        self.pat_dlt: List[bool] = []
        self.pat_status: List[int] = []
        self.pat_end: List[float] = []         # window end / drop-out / failure time
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
        self.group_done = 0
        self.group_y = 0
        self.group_active = 0
        self.decision_times: List[float] = []
        self.first_enroll: Optional[float] = None
        self.t_end = 0.0
        self.stop_reason: Optional[StopReason] = None
        self.final_state: Optional[TrialState] = None
        # time-to-event bookkeeping
        if s.tite:
            self.n_active = [0] * s.K
            self.y_obs = [0] * s.K
            self.pending: Dict[int, None] = {}
        # candidate log (only when recording)
        if s.record:
            self.cand_arrival: Dict[int, float] = {}
            self.cand_ready: Dict[int, float] = {}
            self.cand_fate: Dict[int, str] = {}
            self.cand_lost: Dict[int, float] = {}
            self.cand_j: Dict[int, int] = {}

    # ================================================================== running
    def run(self) -> "Trial":
        s = self.s
        if not s.tite:
            self._open(s.decide(self.state))
        if s.unlimited:
            self._fill()
        else:
            self._next_arrival()
        if not self.finished:
            self.env.run(until=self.end)
        return self

    def _at(self, delay: float, fn, value=None) -> None:
        ev = self.env.timeout(delay, value)
        ev.callbacks.append(fn)

    # ================================================================== accrual
    def _next_arrival(self) -> None:
        d = self.d
        i = self.n_arrived
        while i >= len(d.arrival_time):
            d.more_arrivals()
        self._at(d.arrival_time[i] - self.env.now, self._on_arrival, i)

    def _on_arrival(self, ev) -> None:
        if self.finished:
            return
        i = ev.value
        d = self.d
        self.n_arrived = i + 1
        self._next_arrival()
        rec = self.s.record
        if rec:
            self.cand_arrival[i] = self.env.now
        if d.screen_failed[i]:
            self.n_screen_failed += 1
            if rec:
                self.cand_fate[i] = "screen_failed"
                self.cand_ready[i] = self.env.now + d.screen_days[i]
            return
        sd = d.screen_days[i]
        if sd > 0:
            self._at(sd, self._on_ready, i)
        else:
            self._offer(i)

    def _on_ready(self, ev) -> None:
        if not self.finished:
            self._offer(ev.value)

    def _new_candidate(self) -> int:
        """Unlimited accrual: the next eligible candidate, ready now."""
        d = self.d
        now = self.env.now
        rec = self.s.record
        while True:
            i = self.n_arrived
            while i >= len(d.screen_failed):
                d.more_arrivals()
            self.n_arrived = i + 1
            if rec:
                self.cand_arrival[i] = now
                self.cand_ready[i] = now
            if d.screen_failed[i]:
                self.n_screen_failed += 1
                if rec:
                    self.cand_fate[i] = "screen_failed"
                continue
            return i

    def _offer(self, i: int) -> None:
        """Candidate ``i`` is eligible now."""
        if self.s.record:
            self.cand_ready[i] = self.env.now
        self._purge()
        if not self.waiting and self._slot():
            self._enroll(i)
            return
        if self.finished:
            self._not_enrolled(i)
        elif self.s.leave:
            self.n_lost += 1
            if self.s.record:
                self.cand_fate[i] = "lost_paused"
                self.cand_lost[i] = self.env.now
        else:
            self.waiting.append((i, self.env.now + self.s.max_wait))
            if len(self.waiting) > self.n_wait_max:
                self.n_wait_max = len(self.waiting)

    def _purge(self) -> None:
        w = self.waiting
        now = self.env.now
        while w and w[0][1] < now:
            i, dl = w.popleft()
            self.n_lost += 1
            if self.s.record:
                self.cand_fate[i] = "lost_waiting"
                self.cand_lost[i] = dl

    def _not_enrolled(self, i: int) -> None:
        if self.s.record:
            self.cand_fate[i] = "not_enrolled"

    def _fill(self) -> None:
        """Enroll waiting (or, with unlimited accrual, new) patients into open slots."""
        unlimited = self.s.unlimited
        while not self.finished:
            self._purge()
            if not self.waiting and not unlimited:
                return
            if not self._slot():
                return
            if self.waiting:
                i = self.waiting.popleft()[0]
            else:
                i = self._new_candidate()
            self._enroll(i)

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
        self.group_done = 0
        self.group_y = 0
        self.group_active = 0

    def _decide_classic(self, ev=None) -> None:
        self.decision_times.append(self.env.now - self.first_enroll)
        dec = self.s.decide(self.state)
        self._open(dec)
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
        self.finished = True
        self.t_end = self.env.now
        self.stop_reason = dec.stop_reason or StopReason.RULE_COMPLETE
        if self.s.tite and self.first_enroll is not None:
            self.decision_times.append(self.t_end - self.first_enroll)
        if self.s.tite:
            self.final_state = TrialState(tuple(self.n_active), tuple(self.y_obs),
                                          self.group_dose if self.group >= 0 else None,
                                          self.group_active, self.group_y)
        else:
            self.final_state = self.state
        self._purge()
        self.n_waiting_at_close = len(self.waiting)
        if self.s.record:
            for i, _ in self.waiting:
                self.cand_fate[i] = "not_enrolled"
        self.waiting.clear()
        if not self.end.triggered:
            self.end.succeed()

    def tite_state(self):
        """The :class:`~escalation_sim.designs.tite.TiteState` at the current time."""
        now = self.env.now
        W = self.s.window
        inf = self.pat_inf
        dose = self.pat_dose
        pend = []
        for j in self.pending:
            t0 = inf[j]
            f = 0.0 if t0 < 0 else min((now - t0) / W, 1.0)
            pend.append((dose[j], f))
        return _tite_state_cls()(tuple(self.n_active), tuple(self.y_obs),
                         self.group_dose if self.group >= 0 else None,
                         self.group_active, self.group_y, tuple(pend))

    # ================================================================== patient path
    def _enroll(self, i: int) -> None:
        s, d = self.s, self.d
        j = len(self.pat_dose)
        if j >= s.max_patients:
            raise RuntimeError(f"trial {d.trial}: more than {s.max_patients} patients enrolled; "
                               f"does the design ever stop?")
        while j >= len(d.fail_at):
            d.more_patients()
        now = self.env.now
        if self.first_enroll is None:
            self.first_enroll = now
        dose = self.group_dose
        self.group_open -= 1
        self.group_active += 1
        self.pat_cand.append(i)
        self.pat_dose.append(dose)
        self.pat_group.append(self.group)
        self.pat_enroll.append(now)
        self.pat_gate.append(-1.0)
        self.pat_release.append(-1.0)
        self.pat_inf.append(-1.0)
        self.pat_k.append(-1)
        self.pat_dlt.append(False)
        self.pat_status.append(PIPELINE)
        self.pat_end.append(-1.0)
        self.in_flight += 1
        if s.tite:
            self.n_active[dose] += 1
            self.pending[j] = None
        if s.record:
            self.cand_j[i] = j
        days = d.phase_days[j]
        f = d.fail_at[j]
        if f >= 0:
            t_fail = sum(days[:f + 1])
        if s.gated:
            g = s.gate
            if 0 <= f < g:
                self._at(t_fail, self._on_fail, j)
            else:
                self._at(sum(days[:g]), self._on_gate, j)
        elif f >= 0:
            self._at(t_fail, self._on_fail, j)
        else:
            self._at(sum(days), self._on_infusion, j)

    def _on_gate(self, ev) -> None:
        j = ev.value
        self.pat_gate[j] = self.env.now
        self.gate_q.append(j)
        self._try_gate()

    def _try_gate(self) -> None:
        s = self.s
        q = self.gate_q
        while q and (s.cap is None or self.in_fu < s.cap):
            j = q.popleft()
            self.in_fu += 1
            now = self.env.now
            days = self.d.phase_days[j]
            post = sum(days[s.gate:])
            release = now
            if s.stagger > 0:
                key = self.pat_group[j] if s.stagger_cohort else self.pat_dose[j]
                rec = self.stag.get(key)
                if rec is None:
                    self.stag[key] = [now + post, now + post]
                elif s.stagger_all:
                    release = max(now, rec[1] + s.stagger - post)
                    rec[1] = release + post
                else:
                    release = max(now, rec[0] + s.stagger - post)
            self.pat_release[j] = release
            self._at(release - now, self._on_release, j)

    def _on_release(self, ev) -> None:
        j = ev.value
        s = self.s
        days = self.d.phase_days[j]
        f = self.d.fail_at[j]
        if f >= s.gate:
            self._at(sum(days[s.gate:f + 1]), self._on_fail, j)
        else:
            self._at(sum(days[s.gate:]), self._on_infusion, j)

    def _on_fail(self, ev) -> None:
        j = ev.value
        s = self.s
        now = self.env.now
        self.pat_status[j] = FAILED
        self.pat_end[j] = now
        self.in_flight -= 1
        self.n_phase_fail += 1
        if s.manufacturing[self.d.fail_at[j]]:
            self.n_manuf_fail += 1
        if self.pat_release[j] >= 0:
            self.in_fu -= 1
        self._lose_patient(j)
        if self.pat_release[j] >= 0:
            self._try_gate()

    def _lose_patient(self, j: int) -> None:
        """Patient ``j`` leaves without being evaluable: free the slot (replacement)."""
        if self.pat_group[j] == self.group:
            self.group_active -= 1
        if self.s.tite:
            self.n_active[self.pat_dose[j]] -= 1
            self.pending.pop(j, None)
        elif self.pat_group[j] == self.group:
            self.group_open += 1
        self._changed()

    def _on_infusion(self, ev) -> None:
        j = ev.value
        s, d = self.s, self.d
        now = self.env.now
        self.pat_inf[j] = now
        self.pat_status[j] = FOLLOWUP
        self.n_treated += 1
        if d.drop[j]:
            self._at(d.drop_day[j], self._on_dropout, j)
            return
        k = self.n_eval
        self.n_eval = k + 1
        while k >= len(d.dlt_u):
            d.more_evaluable()
        self.pat_k[j] = k
        dlt = d.dlt_u[k] < s.p[self.pat_dose[j]]
        self.pat_dlt[j] = dlt
        if dlt and s.tite:
            self._at(d.onset_day[k], self._on_dlt, j)
        self._at(s.window, self._on_window_end, j)

    def _on_dlt(self, ev) -> None:
        j = ev.value
        if self.pat_status[j] != FOLLOWUP:
            return
        self.y_obs[self.pat_dose[j]] += 1
        self.pending.pop(j, None)
        if self.pat_group[j] == self.group:
            self.group_y += 1
        self._changed()

    def _on_dropout(self, ev) -> None:
        j = ev.value
        self.pat_status[j] = DROPPED
        self.pat_end[j] = self.env.now
        self.in_flight -= 1
        self.n_dropout += 1
        if self.s.gated:
            self.in_fu -= 1
        self._lose_patient(j)
        if self.s.gated:
            self._try_gate()

    def _on_window_end(self, ev) -> None:
        j = ev.value
        s = self.s
        self.pat_status[j] = COMPLETE
        self.pat_end[j] = self.env.now
        self.in_flight -= 1
        if s.gated:
            self.in_fu -= 1
            self._try_gate()
        if s.tite:
            self.pending.pop(j, None)
            self._changed()
            return
        self.group_done += 1
        if self.pat_dlt[j]:
            self.group_y += 1
        if self.group_done == self.group_size:
            self.state = self.state.add_cohort(self.group_dose, self.group_size, self.group_y)
            if s.review > 0:
                self._at(s.review, self._decide_classic)
            else:
                self._decide_classic()

    # ================================================================== patient log
    def patient_rows(self) -> List[Dict[str, Any]]:
        """One dict per arrival (only with ``record=True``)."""
        s, d = self.s, self.d
        nan = float("nan")
        W = s.window
        rows = []
        for i in range(self.n_arrived):
            arr = self.cand_arrival.get(i, nan)
            j = self.cand_j.get(i, -1)
            row: Dict[str, Any] = {
                "arrival_index": i,
                "arrival_day": arr,
                "screening_end_day": self.cand_ready.get(i, nan),
                "eligible": not d.screen_failed[i],
                "lost_day": self.cand_lost.get(i, nan),
            }
            fate = self.cand_fate.get(i)
            if j < 0:
                if fate is None:          # still in screening when the trial closed
                    fate = "not_enrolled"
                row.update(fate=fate, patient=-1, enrolled_day=nan, dose_level=0, cohort=-1,
                           gate_wait_days=nan, infusion_day=nan, evaluable=False,
                           evaluable_index=-1, dlt=False, dlt_day=nan, dropout_day=nan,
                           window_end_day=nan)
                for name in s.phase_names:
                    row[f"{name}_start_day"] = nan
                    row[f"{name}_end_day"] = nan
                rows.append(row)
                continue
            st = self.pat_status[j]
            enroll = self.pat_enroll[j]
            inf = self.pat_inf[j]
            f = d.fail_at[j]
            if st == FAILED:
                fate = f"failed_{s.phase_names[f]}"
            elif st == DROPPED:
                fate = "dropout"
            elif st == COMPLETE:
                fate = "evaluable"
            else:
                fate = "in_progress"
            k = self.pat_k[j]
            evaluable = st == COMPLETE
            row.update(
                fate=fate, patient=j, enrolled_day=enroll, dose_level=self.pat_dose[j] + 1,
                cohort=self.pat_group[j],
                gate_wait_days=(self.pat_release[j] - self.pat_gate[j]
                                if self.pat_release[j] >= 0 and self.pat_gate[j] >= 0 else nan),
                infusion_day=inf if inf >= 0 else nan,
                evaluable=evaluable, evaluable_index=k,
                dlt=bool(self.pat_dlt[j]) and evaluable,
                dlt_day=(d.onset_day[k] if evaluable and self.pat_dlt[j] else nan),
                dropout_day=(d.drop_day[j] if st == DROPPED else nan),
                window_end_day=(inf + W if st == COMPLETE else nan))
            days = d.phase_days[j]
            happens = d.phase_happens[j]
            cum = [0.0] + list(accumulate(days))
            g = s.gate if s.gated else len(days)
            rel = self.pat_release[j]
            last = f if f >= 0 else len(days) - 1
            for p, name in enumerate(s.phase_names):
                if p > last or not happens[p]:
                    row[f"{name}_start_day"] = nan
                    row[f"{name}_end_day"] = nan
                    continue
                if p < g:
                    start = enroll + cum[p]
                else:
                    if rel < 0:
                        start = nan
                    else:
                        start = rel + cum[p] - cum[g]
                row[f"{name}_start_day"] = start
                row[f"{name}_end_day"] = start + days[p]
            rows.append(row)
        return rows
