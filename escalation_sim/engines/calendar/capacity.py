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
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Dict

from .pathway import Pathway
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


def capacity_columns(res) -> dict:
    """Per trial: mean days waited for a manufacturing slot (over runs started; 0 with
    none) and the longest queue."""
    import numpy as np
    waits = np.array([(sum(t.path.waits.values()) / len(t.path.waits)) if t.path.waits
                      else 0.0 for t in res])
    qmax = np.array([t.path.queue_max for t in res], dtype=np.int64)
    return {"manufacturing_wait_days": waits, "manufacturing_queue_max": qmax}
