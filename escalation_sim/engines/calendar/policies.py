"""Decision policies: when the design is asked, what it sees, and how outcomes are counted.

The :class:`~escalation_sim.engines.calendar.trial.Trial` runs the calendar and calls its
policy at the points where a design-specific choice is made:

================== =====================================================================
``start()``        the trial opens (before any arrival)
``open_slot()``    an eligible patient is ready and no slot is free: may decide (True if
                   it opened a cohort)
``on_enroll(p)``   a patient took a slot
``infuse(p, dt)``  ``p`` will be infused ``dt`` days from now: schedule what follows
``on_evaluable(p)`` ``p``'s DLT window closed (evaluable)
``on_lost(p)``     ``p`` failed a phase or dropped out (not evaluable); the trial then
                   refills slots and calls ``after_change()``
``after_change()`` the data or the slots changed (the trial has refilled slots first)
``final_state()``  the trial stops: the terminal state (may record a last decision time)
================== =====================================================================

plus two class-level facts: ``decides_on_arrival`` (an arrival with no free slot may lead to
a decision, so accrual keeps its events running) and :meth:`binding_cap` (whether a
follow-up cap can ever bind under this policy).

:class:`CohortPolicy` (classic designs) decides on complete data when a cohort's windows
have closed (after the review); :class:`TimeToEventPolicy` decides whenever a patient is
ready, with each pending patient's follow-up.  A new way of deciding or counting (backfill
cohorts, counting the dose received rather than assigned, ...) is a new policy or a
subclass, not a branch in the trial.
"""
from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING, Dict, Optional

from ...designs.base import Design
from ...designs.tite import TiteState
from ...types import Decision, TrialState
from .patient import COMPLETE, DROPPED, Patient

if TYPE_CHECKING:  # pragma: no cover
    from .trial import Trial

_infusion_order = attrgetter("infusion_day", "j")      # observed in infusion order


class DecisionPolicy:
    """The interface (and the defaults: do nothing)."""

    __slots__ = ("trial",)

    #: an arrival finding no free slot may lead to a decision (accrual keeps running)
    decides_on_arrival = False

    @staticmethod
    def binding_cap(cap: Optional[int], design: Design) -> Optional[int]:
        """The follow-up cap as it can bind under this policy (None: never binds)."""
        return cap

    def __init__(self, trial: "Trial"):
        self.trial = trial

    def start(self) -> None:
        pass

    def open_slot(self) -> bool:
        return False

    def on_enroll(self, pat: Patient) -> None:
        pass

    def infuse(self, pat: Patient, delay: float) -> None:
        raise NotImplementedError

    def on_evaluable(self, pat: Patient) -> None:
        raise NotImplementedError

    def on_lost(self, pat: Patient) -> None:
        raise NotImplementedError

    def after_change(self) -> None:
        pass

    def final_state(self) -> TrialState:
        raise NotImplementedError


class CohortPolicy(DecisionPolicy):
    """Classic designs: ``decide(state)`` on complete cohorts.

    A decision ``treat(dose, c)`` opens ``c`` slots; a patient lost before the end of the
    window frees its slot again (replacement).  When ``c`` patients have completed the window
    they are observed in infusion order (ties in enrollment order), the state gains the
    cohort, and after the review the design decides -- so the sequence of cohorts does not
    depend on the logistics at all.  Infusion is not an event: the whole path is scheduled
    once the infusion day is known.
    """

    __slots__ = ("state",)

    @staticmethod
    def binding_cap(cap: Optional[int], design: Design) -> Optional[int]:
        # never more patients in flight than a cohort has slots
        return None if cap is not None and cap >= design.max_cohort_size else cap

    def __init__(self, trial: "Trial"):
        self.trial = trial
        self.state = trial.setup.empty_state

    def start(self) -> None:
        self.trial.open(self.trial.setup.decide(self.state))

    def infuse(self, pat: Patient, delay: float) -> None:
        t = self.trial
        clock = t.clock
        d = t.draws
        j = pat.j
        pat.infusion_day = clock.now + delay
        t.n_treated += 1          # counted now: a classic trial never stops mid-window
        if d.drop[j]:
            pat.status = DROPPED
            clock.after(delay + d.drop_day[j], t.on_end, pat)
        else:
            pat.status = COMPLETE
            clock.after(delay + t.setup.window, t.on_end, pat)

    def on_evaluable(self, pat: Patient) -> None:
        c = pat.cohort
        c.done.append(pat)
        if len(c.done) == c.size:
            self._complete(c)

    def on_lost(self, pat: Patient) -> None:
        pat.cohort.free += 1                      # a replacement takes the slot

    def _complete(self, c) -> None:
        t = self.trial
        members, c.done = c.done, []              # no patient <-> cohort reference cycle
        members.sort(key=_infusion_order)
        observe = t.toxicity.observe
        y = 0
        for pat in members:
            y += observe(pat)            # the DLT flag, or a score design's units
        c.y = y
        mu = t.setup.max_units
        if mu is None:
            self.state = self.state.add_cohort(c.dose, c.size, y)
        else:
            self.state = self.state.add_cohort(c.dose, c.size, y, max_units=mu)
        delay = t.setup.review.delay(t.clock.now)
        if delay > 0:
            t.clock.after(delay, self._decide)
        else:
            self._decide()

    def _decide(self, call=None) -> None:
        t = self.trial
        t.decision_times.append(t.clock.now - t.first_enroll)
        t.open(t.setup.decide(self.state))
        if not t.finished:
            t.fill()

    def final_state(self) -> TrialState:
        return self.state




class TimeToEventPolicy(DecisionPolicy):
    """Time-to-event designs: decide with pending patients.

    The design is asked whenever an eligible patient is ready and no slot is free, and when
    the last patient in flight finishes; it sees a ``TiteState``: per-dose counts of every
    enrolled patient still in the trial, DLTs observed so far and, per pending patient (no
    DLT yet, window not over; not infused yet = follow-up 0), the fraction of the window
    followed.  A cohort of size 0 suspends accrual until the data change; a stop while
    patients are pending pauses accrual until they finish; the trial ends when the design
    stops with nobody in flight.  Infusion is an event (the patient is observed then: DLT
    flag and onset), and so is a DLT onset.
    """

    __slots__ = ("n_active", "y_obs", "pending", "design", "setup", "last")

    decides_on_arrival = True

    def __init__(self, trial: "Trial"):
        super().__init__(trial)
        K = trial.setup.K
        self.n_active = [0] * K
        self.y_obs = [0] * K
        self.pending: Dict[Patient, None] = {}       # in enrollment order
        self.design = trial.setup.design
        self.setup = trial.setup
        self.last = (None, None)          # (state, decision) of the last call

    def pending_follow_up(self, at=None) -> tuple:
        """``((dose, fraction of the window followed), ...)`` per pending patient, in
        enrollment order (not infused yet: 0); ``at(patient, dose)``: the level a patient
        counts at (default: its dose)."""
        t = self.trial
        now = t.clock.now
        W = t.setup.window
        if at is None:
            return tuple((p.dose, 0.0 if p.infusion_day < 0 else
                          min((now - p.infusion_day) / W, 1.0)) for p in self.pending)
        return tuple((at(p, p.dose), 0.0 if p.infusion_day < 0 else
                      min((now - p.infusion_day) / W, 1.0)) for p in self.pending)

    def state(self):
        """The ``TiteState`` now."""
        c = self.trial.cohort
        return TiteState(tuple(self.n_active), tuple(self.y_obs),
                         c.dose if c.index >= 0 else None, c.active, c.y, self.pending_follow_up())

    def decide(self) -> Decision:
        """The design's decision now.  Memoised exactly (decide is a pure function of the
        state): states without pending patients repeat across trials, so they share the
        setup's memo; with pending patients the follow-up fractions make states unique,
        except when the design is asked twice at one instant (kept: the last call)."""
        st = self.state()
        if not st.pending:
            return self.setup.decide_exact(st)
        last, dec = self.last
        if st != last:
            dec = self.design.decide(st)
            self.last = (st, dec)
        return dec

    def open_slot(self) -> bool:
        t = self.trial
        if t.finished:
            return False
        dec = self.decide()
        if dec.stop:
            if t.in_flight == 0:
                t.finish(dec)
            return False
        if dec.cohort_size <= 0:         # accrual suspended until the data change
            return self.suspended()
        if t.first_enroll is not None:
            t.decision_times.append(t.clock.now - t.first_enroll)
        t.open(dec)
        return True

    def suspended(self) -> bool:
        """The design suspends accrual (a decision with cohort size 0): whether a slot
        opened all the same (False: the patient waits or leaves)."""
        return False

    def on_enroll(self, pat: Patient) -> None:
        self.n_active[pat.dose] += 1
        self.pending[pat] = None

    def infuse(self, pat: Patient, delay: float) -> None:
        self.trial.clock.after(delay, self._infused, pat)

    def _infusion_starts(self, pat: Patient) -> bool:
        """The patient is infused now: count it; a drop-out ends at its drop day (False),
        anyone else is followed (True)."""
        t = self.trial
        pat.infusion_day = t.clock.now
        t.n_treated += 1
        if t.draws.drop[pat.j]:
            pat.status = DROPPED
            t.clock.after(t.draws.drop_day[pat.j], t.on_end, pat)
            return False
        pat.status = COMPLETE
        return True

    def _infused(self, call) -> None:
        pat: Patient = call.arg
        if not self._infusion_starts(pat):
            return
        t = self.trial
        clock = t.clock
        if t.toxicity.observe(pat):
            clock.after(t.toxicity.onset_day(pat), self._dlt, pat)
        clock.after(t.setup.window, t.on_end, pat)

    def _dlt(self, call) -> None:
        pat: Patient = call.arg
        self.y_obs[pat.dose] += 1
        self.pending.pop(pat, None)
        pat.cohort.y += 1
        self.trial.changed()

    def on_evaluable(self, pat: Patient) -> None:
        self.pending.pop(pat, None)
        self.trial.changed()

    def on_lost(self, pat: Patient) -> None:
        self.n_active[pat.dose] -= 1
        self.pending.pop(pat, None)

    def after_change(self) -> None:
        t = self.trial
        if not t.finished and t.in_flight == 0 and t.cohort.free == 0:
            dec = self.decide()
            if dec.stop:
                t.finish(dec)

    def final_state(self) -> TrialState:
        t = self.trial
        if t.first_enroll is not None:
            t.decision_times.append(t.t_end - t.first_enroll)
        c = t.cohort
        return TrialState(tuple(self.n_active), tuple(self.y_obs),
                          c.dose if c.index >= 0 else None, c.active, c.y)


class ScoreTimeToEventPolicy(TimeToEventPolicy):
    """Time-to-event designs on a graded toxicity score (TITE-gBOIN).

    ``y[d]`` is the sum of the units *seen so far* at dose d: a patient's units are those of
    the worst grade among its events that have started and lie inside the window
    (contract point 5), updated at each event's onset.

    **When a patient stops being pending**: at the onset of its first event inside the
    window that carries a positive score (units > 0), or at the end of its window, whichever
    comes first.  From then on it counts as a complete observation (``n - c``) with the
    units seen so far; a later, worse event inside the window raises its units when it
    starts.  Events scoring 0 (e.g. grade 1 with scores 0/0/0.5/1/1.5) do not end pending.
    This is TITEgBOIN 0.4.0's definition ("pending = no event yet and window not complete",
    docs/reference_notes/gboin_titegboin.md section 3), whose simulator gives each patient at
    most one event; with one event per patient the two coincide.
    """

    __slots__ = ()

    def state(self):
        t = self.trial
        c = t.cohort
        return TiteState(tuple(self.n_active), tuple(self.y_obs),
                         c.dose if c.index >= 0 else None, c.active, c.y, self.pending_follow_up(),
                         t.setup.max_units)

    def _infused(self, call) -> None:
        pat: Patient = call.arg
        if not self._infusion_starts(pat):
            return
        t = self.trial
        clock = t.clock
        tox = t.toxicity
        tox.observe(pat)
        for day, units in tox.steps(pat):          # in time order (the clock keeps it)
            clock.after(day, self._event, (pat, units))
        clock.after(t.setup.window, t.on_end, pat)

    def _event(self, call) -> None:
        pat, units = call.arg
        gain = units - pat.seen
        pat.seen = units
        self.y_obs[pat.dose] += gain
        pat.cohort.y += gain
        self.pending.pop(pat, None)
        self.trial.changed()
