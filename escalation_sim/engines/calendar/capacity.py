"""Limited manufacturing capacity (``conduct.manufacturing_capacity``): a hold point at the
start of the first ``manufacturing`` phase.

At most ``slots`` runs are under way at once; a patient whose path reaches the manufacturing
phase while every slot is taken waits in a queue (enrollment order = order of arrival at the
queue).  A run holds its slot for ``per_days`` days from its start when given (a booking),
else until the manufacturing phase ends (a failed run also holds it to the end of the
phase).  A patient who fails a phase before manufacturing, or skips manufacturing, never
queues.  The wait delays everything after it; the patient log shows it
(``manufacturing_wait_days``) and shifts the later phases.

Implementation: :class:`CapacityPathway` replaces :class:`~.pathway.Pathway`.  When a slot is
granted, the patient's remaining pre-drawn days (to the gate, and to a later failure) are
re-based on the start of the run, and the usual path continues from there, so the gate,
failures and the decision policy are unchanged.

With ``manufacture_before_slot`` (:class:`PremadeCapacityPathway`): the run asks for its slot
on the day the patient is screened in (the premade phases start then), ``per_days`` is
required (a booking), the manufacturing queue is first screened first served, enrolled or
not; its docstring says what happens when the queue is full.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Dict

from .pathway import Pathway, PremadePathway
from .patient import Patient

if TYPE_CHECKING:  # pragma: no cover
    from .trial import Trial


class CapacityPathway(Pathway):
    """``Pathway`` with a queue for manufacturing slots."""

    __slots__ = ("m", "slots", "per_days", "busy", "queue", "waits", "queue_max")

    def __init__(self, trial: "Trial", gate_index: int):
        super().__init__(trial, gate_index)
        c = trial.setup.conduct
        cap = c.manufacturing_capacity
        self.m = next(p for p, ph in enumerate(c.phases) if ph.kind == "manufacturing")
        self.slots = cap.slots
        self.per_days = cap.per_days
        self.busy = 0
        self.queue: deque = deque()
        self.waits: Dict[int, float] = {}          # patient j -> days waited for a slot
        self.queue_max = 0

    def start(self, pat: Patient) -> None:
        d = self.trial.draws
        j = pat.j
        f = d.fail_at[j]
        m = self.m
        happens = d.phase_happens[j]
        if (0 <= f < m) or not happens[m]:       # never reaches a manufacturing run
            super().start(pat)
            return
        before = float(d.phase_days[j][:m].sum())
        self.trial.clock.after(before, self._request, pat)

    def _request(self, call) -> None:
        self.queue.append((call.arg, self.trial.clock.now))
        self._grant()
        if len(self.queue) > self.queue_max:      # patients left waiting
            self.queue_max = len(self.queue)

    def _grant(self) -> None:
        t = self.trial
        d = t.draws
        while self.queue and self.busy < self.slots:
            pat, since = self.queue.popleft()
            self.busy += 1
            j = pat.j
            now = t.clock.now
            self.waits[j] = now - since
            hold = self.per_days if self.per_days is not None else float(d.phase_days[j][self.m])
            t.clock.after(hold, self._free, None)
            # re-base the remaining pre-drawn days on the start of the run
            before = float(d.phase_days[j][:self.m].sum())
            d.pre_days[j] -= before
            if d.fail_at[j] >= 0:
                d.fail_days[j] -= before
            Pathway.start(self, pat)

    def _free(self, call) -> None:
        self.busy -= 1
        self._grant()


class PremadeCapacityPathway(PremadePathway):
    """``manufacture_before_slot`` with ``manufacturing_capacity`` (``per_days`` required):
    the product's run takes a capacity slot when it starts, and it starts when the patient
    is screened in, slot in the trial or not.

    * On the day a patient is screened in (every eligible arrival is then an event), its run
      asks for a manufacturing slot: granted at once if fewer than ``slots`` bookings are
      running, else the patient joins the manufacturing queue (first screened, first
      served).  A granted run books its slot ``per_days`` days from its start, whatever
      happens to the patient or the product afterwards: a failed run, and a run made for a
      patient who leaves the waiting list (``max_wait_days``) or is still on it at the close
      (a wasted run), used its slot all the same.
    * The run starts (leukapheresis first: the premade phases) on the day the slot is
      granted, ``g``.  A patient enrolled on or after ``g`` enters as with
      ``manufacture_before_slot`` alone, the premade phases under way since ``g``: its path
      is shifted earlier by ``min(enrollment - g, days of its premade phases)``.  A patient
      enrolled while its run is still queued (in particular one who took a trial slot on
      the day it was screened in and found the manufacturing slots full) waits, enrolled,
      and its whole path starts on ``g``.
    * A patient on the waiting list whose wait runs out before its run is granted leaves the
      manufacturing queue with it: no run, no slot used, not a wasted run.
    * ``waits``: enrolled patient j -> days its run queued (``g`` - day screened in);
      ``premade``: j -> (days from screened in to enrollment, shift of the phases after the
      premade ones), in the form the patient log and the costs read
      (``start = enrollment + cum days + wait - shift``).
    """

    __slots__ = ("slots", "per_days", "busy", "queue", "waits", "queue_max", "m",
                 "granted", "held", "deadline")

    def __init__(self, trial: "Trial", gate_index: int):
        super().__init__(trial, gate_index)
        c = trial.setup.conduct
        cap = c.manufacturing_capacity
        self.slots = cap.slots
        self.per_days = float(cap.per_days)
        self.busy = 0
        self.queue: deque = deque()               # (candidate, day screened in)
        self.waits: Dict[int, float] = {}
        self.queue_max = 0
        self.m = 0                                # the queue is before the first phase
        self.granted: Dict[int, float] = {}      # candidate -> day its run was granted
        self.held: Dict[int, Patient] = {}       # enrolled, run still queued
        self.deadline = trial.setup.max_wait

    # -- the run's slot -----------------------------------------------------------------
    def screened_in(self, i: int) -> None:
        """Candidate ``i`` was screened in now: its run asks for a slot."""
        self.queue.append((i, self.trial.clock.now))
        self._grant()
        if len(self.queue) > self.queue_max:
            self.queue_max = len(self.queue)

    def _grant(self) -> None:
        t = self.trial
        now = t.clock.now
        while self.queue and self.busy < self.slots:
            i, since = self.queue.popleft()
            pat = self.held.pop(i, None)
            if pat is None and since + self.deadline < now:
                continue                          # left the waiting list: no run
            self.busy += 1
            self.granted[i] = now
            t.clock.after(self.per_days, self._free, None)
            if pat is not None:                   # enrolled, waiting for its run: go now
                self.waits[pat.j] = now - since
                Pathway.start(self, pat)

    def _free(self, call) -> None:
        self.busy -= 1
        self._grant()

    # -- enrollment ---------------------------------------------------------------------
    def start(self, pat: Patient) -> None:
        t = self.trial
        d = t.draws
        i = pat.candidate
        now = t.clock.now
        ready = d.arrival_time[i] + d.screen_days[i]
        waited = max(now - ready, 0.0)
        j = pat.j
        g = self.granted.get(i)
        if g is None:                             # the run is still queued
            self.premade[j] = (waited, waited)
            self.held[i] = pat
            return
        w = g - ready
        self.waits[j] = w
        credit = min(max(now - g, 0.0), float(d.phase_days[j][:self.n_pre].sum()))
        self.premade[j] = (waited, credit + w)
        if credit > 0:
            d.pre_days[j] -= credit
            if d.fail_at[j] >= 0:
                d.fail_days[j] = max(d.fail_days[j] - credit, 0.0)
        Pathway.start(self, pat)

    def wasted_runs(self, pats) -> int:
        """Runs granted to patients never enrolled (``pats``: the trial's patients)."""
        enrolled = {p.candidate for p in pats}
        return sum(1 for i in self.granted if i not in enrolled)


def capacity_columns(res) -> dict:
    """Per trial: mean days waited for a manufacturing slot (over runs started; 0 with
    none) and the longest queue."""
    import numpy as np
    waits = np.array([(sum(t.path.waits.values()) / len(t.path.waits)) if t.path.waits
                      else 0.0 for t in res])
    qmax = np.array([t.path.queue_max for t in res], dtype=np.int64)
    return {"manufacturing_wait_days": waits, "manufacturing_queue_max": qmax}
