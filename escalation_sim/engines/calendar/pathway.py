"""A patient's logistics from enrollment to infusion (the phases).

The phases (leukapheresis, manufacturing, bridging, lymphodepletion, rest ...) are given as
data; their durations, whether each happens and where a patient fails are pre-drawn
(:mod:`~escalation_sim.engines.calendar.draws`), so the stretch before the gate and the
stretch from the gate to infusion are one scheduled call each, not one event per phase:

* a failure before the gate ends the path at the end of the failing phase;
* otherwise the patient goes to the :class:`~escalation_sim.engines.calendar.gates.Gate`
  (when the trial has one) and from there :meth:`Pathway.after_gate`: a failure after the
  gate, or infusion -- handed to the decision policy, which schedules what follows.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .patient import FAILED, Patient

if TYPE_CHECKING:  # pragma: no cover
    from .trial import Trial


class Pathway:
    """Schedules each enrolled patient's way to infusion (or to a failed phase)."""

    __slots__ = ("trial", "gate_index")

    def __init__(self, trial: "Trial", gate_index: int):
        self.trial = trial
        self.gate_index = gate_index      # phases before it run before the gate

    def start(self, pat: Patient) -> None:
        """``pat`` was enrolled now."""
        t = self.trial
        d = t.draws
        j = pat.j
        f = d.fail_at[j]
        if 0 <= f < self.gate_index:                 # fails before the gate / infusion
            pat.status = FAILED
            t.clock.after(d.fail_days[j], t.on_end, pat)
        elif t.gate is None:
            # no gate part (none configured, or a cap that can never bind): the phases after
            # the draws' gate position run straight on, so infusion follows all of them
            t.policy.infuse(pat, d.pre_days[j] + d.post_days[j])
        else:
            t.gate.enter(pat)

    def after_gate(self, pat: Patient, wait: float) -> None:
        """``pat`` leaves the gate ``wait`` days from now (0: now)."""
        t = self.trial
        d = t.draws
        j = pat.j
        if d.fail_at[j] >= self.gate_index:          # fails after the gate
            pat.status = FAILED
            t.clock.after(wait + d.fail_days[j] - d.pre_days[j], t.on_end, pat)
        else:
            t.policy.infuse(pat, wait + d.post_days[j])
