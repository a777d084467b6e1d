"""One simulated trial: the parts wired together on a clock.

A :class:`Trial` holds its parts and the few things they share:

=============== ======================================================================
``clock``       the calendar (:mod:`.clock`)
``accrual``     arrivals, screening, waiting list (:mod:`.accrual`)
``path``        enrollment to infusion through the phases (:mod:`.pathway`)
``gate``        hold point before lymphodepletion, or None (:mod:`.gates`)
``toxicity``    who has a DLT and when (:mod:`.toxicity`)
``policy``      when the design decides and what it sees (:mod:`.policies`)
``cohort``      the cohort taking patients (:class:`.patient.Cohort`)
``pats``        enrolled patients in enrollment order
=============== ======================================================================

and runs the steps every trial has: offer a ready patient a slot, enroll, end a patient's
path, refill slots when something changed, open a cohort, finish.  Each step is a plain
method called by the clock; no generator process per patient and no event per phase.
Events per trial: one per eligible arrival that can matter, per enrolled patient one at the
end of its path, plus gate arrival / release when patients can be held, plus infusion and
DLT onset for time-to-event designs.
"""
from __future__ import annotations

from typing import List, Optional

from ...types import Decision, StopReason, TrialState
from .accrual import Accrual
from .draws import TrialDraws, patient_draws
from .gates import Gate
from .log import Recorder
from .model import Setup
from .pathway import Pathway
from .patient import COMPLETE, DROPPED, FAILED, Cohort, Patient
from .toxicity import GradedToxicity, Toxicity


class Trial:
    """One simulated trial: create, ``run()``, then read the attributes."""

    def __init__(self, setup: Setup, draws: TrialDraws):
        s = self.setup = setup
        self.draws = draws
        self.clock = s.clock()
        self.finished = False
        self.rec: Optional[Recorder] = Recorder() if s.record else None
        self.cohort = Cohort.none()
        self.pats: List[Patient] = []
        self.in_flight = 0                     # enrolled, path not ended
        self.n_treated = 0
        self.n_manuf_fail = 0
        self.n_phase_fail = 0
        self.n_dropout = 0
        self.decision_times: List[float] = []
        self.first_enroll: Optional[float] = None
        self.t_end = 0.0
        self.stop_reason: Optional[StopReason] = None
        self.final_state: Optional[TrialState] = None
        self.toxicity = (Toxicity(s.p, draws) if s.graded is None else
                         GradedToxicity.make(s.p, draws, s.graded))
        self.path = (s.pathway or Pathway)(self, s.gate)
        self.gate = Gate(self, s.cap, s.spacing(), s.known_release) if s.gated else None
        self.accrual = Accrual(self, self.rec)
        self.policy = s.policy(self)

    # ------------------------------------------------------------------ running
    def run(self) -> "Trial":
        self.policy.start()
        if self.setup.unlimited:
            self.fill()
        else:
            self.accrual.start()
        if not self.finished:
            self.clock.run()
        self.accrual.count_arrivals(self.t_end)
        return self

    def release(self) -> None:
        """Break the trial's reference cycles once it is over (events still queued hold
        bound methods; parts point back at the trial), so reference counting frees it."""
        self.clock.close()
        self.clock = None
        for part in (self.accrual, self.path, self.gate, self.policy):
            if part is not None:
                part.trial = None

    # ------------------------------------------------------------------ slots
    # a slot is free when the cohort has one, or when the policy opens a cohort to make one:
    # ``self.cohort.free > 0 or self.policy.open_slot()``
    def offer(self, i: int) -> None:
        """Candidate ``i`` is eligible now."""
        acc = self.accrual
        now = self.clock.now
        if acc.waiting:
            acc.purge(now)
        if not acc.waiting and (self.cohort.free > 0 or self.policy.open_slot()):
            self.enroll(i)
        elif not self.finished:
            acc.wait_or_leave(i, now)
        if acc.pauses is not None and not self.finished:
            acc.mark(now)

    def fill(self) -> None:
        """Enroll waiting (or, with unlimited accrual, new) patients into free slots."""
        acc = self.accrual
        unlimited = acc.unlimited
        now = self.clock.now
        if not (unlimited or acc.armed):
            acc.catch_up(now)
        while not self.finished:
            if acc.waiting:
                acc.purge(now)
            if not acc.waiting and not unlimited:
                break
            if not (self.cohort.free > 0 or self.policy.open_slot()):
                break
            self.enroll(acc.next_waiting() if acc.waiting else acc.new_candidate())
        if acc.pauses is not None and not self.finished:
            acc.mark(now)
        if not (unlimited or acc.armed):
            acc.arm()

    def changed(self) -> None:
        """The data or the slots changed: refill, then let the policy react."""
        if self.finished:
            return
        self.fill()
        self.policy.after_change()

    def open(self, dec: Decision) -> None:
        """Act on a decision: stop, or open a cohort of ``dec.cohort_size`` slots."""
        if dec.stop:
            self.finish(dec)
            return
        self.cohort = Cohort(self.cohort.index + 1, dec.dose, dec.cohort_size,
                             dec.cohort_size)

    def finish(self, dec: Decision) -> None:
        self.finished = True
        self.t_end = self.clock.now
        self.stop_reason = dec.stop_reason or StopReason.RULE_COMPLETE
        self.final_state = self.policy.final_state()
        self.accrual.close(self.t_end)
        self.clock.stop()

    # ------------------------------------------------------------------ patients
    def enroll(self, i: int) -> None:
        j = len(self.pats)
        patient_draws(self.draws, j, self.setup.max_patients)
        now = self.clock.now
        if self.first_enroll is None:
            self.first_enroll = now
        c = self.cohort
        if c.free <= 0:                  # a slot the policy opened beside the cohort (backfill)
            c = self.policy.side_cohort()
        c.free -= 1
        c.active += 1
        pat = Patient(j, i, c, c.dose, now)
        self.pats.append(pat)
        self.in_flight += 1
        self.policy.on_enroll(pat)
        self.path.start(pat)

    def on_end(self, call) -> None:
        """End of a patient's path (``call.arg``): failure, drop-out or end of the DLT
        window."""
        pat: Patient = call.arg
        pat.end_day = self.clock.now
        self.in_flight -= 1
        if pat.release_day >= 0:
            self.gate.leave()
        st = pat.status
        if st == COMPLETE:
            self.policy.on_evaluable(pat)
            return
        if st == FAILED:
            self.n_phase_fail += 1
            if self.setup.manufacturing[self.draws.fail_at[pat.j]]:
                self.n_manuf_fail += 1
        elif st == DROPPED:
            self.n_dropout += 1
        pat.cohort.active -= 1
        self.policy.on_lost(pat)
        self.changed()
