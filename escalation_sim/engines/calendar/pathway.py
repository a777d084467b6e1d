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


class PremadePathway(Pathway):
    """``Pathway`` with ``conduct.manufacture_before_slot``: leukapheresis and manufacturing
    (the phases up to the last of kind ``manufacturing``) start when the patient is screened
    in, slot or not.

    A patient enrolled the day it is screened in follows the usual path.  One enrolled later
    (from the waiting list) has had its premade phases under way since it was screened in:
    its path is shifted earlier by ``credit = min(days waited, days of its premade
    phases)`` (the phase draws of its enrollment order, as for everyone), so what is left
    of manufacturing, if anything, runs first and the rest of the path follows as usual
    (a product made before the slot opened waits for it).  A premade phase that fails had
    failed while the patient waited when it ended before the enrollment day: the engine
    learns it when the patient takes the slot (the draws are those of the enrollment
    order), and the patient leaves at once (fate ``failed_<phase>``, a manufacturing
    failure), the slot going to the next patient.  ``premade``: patient j -> (days from
    screened in to enrollment, credit): the premade phases started ``waited`` days before
    enrollment, the later ones ``credit`` days earlier than without the option (the patient
    log's phase days and ``premade_days``; costs: runs and vein-to-vein from the start of
    leukapheresis)."""

    __slots__ = ("n_pre", "premade")

    def __init__(self, trial, gate_index: int):
        super().__init__(trial, gate_index)
        self.n_pre = trial.setup.conduct.premade_phases
        self.premade = {}                  # patient j -> days made before its enrollment

    def start(self, pat: Patient) -> None:
        t = self.trial
        d = t.draws
        i = pat.candidate
        waited = t.clock.now - (d.arrival_time[i] + d.screen_days[i])
        if waited > 1e-9:                  # (1e-9: the clock's rounding of a ready day)
            j = pat.j
            credit = min(waited, float(d.phase_days[j][:self.n_pre].sum()))
            self.premade[j] = (waited, credit)
            if credit > 0:
                d.pre_days[j] -= credit
                if d.fail_at[j] >= 0:
                    d.fail_days[j] = max(d.fail_days[j] - credit, 0.0)
        Pathway.start(self, pat)
