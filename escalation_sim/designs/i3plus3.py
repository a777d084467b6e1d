"""i3+3: the interval 3+3 design (Liu, Wang & Ji 2020).

Sources
-------
* Liu M, Wang S-J, Ji Y (2020). The i3+3 design for phase I clinical trials.  Journal of
  Biopharmaceutical Statistics 30:294-304.  (Only the abstract could be read; its decision
  table was not reachable.)
* R package FIND 0.1.1 (Y. Zhang, Yuan Ji's group; ``get_decision_i3plus3``,
  ``run_sim_i3plus3``, ``select_mtd``): the reference package, whose behaviour the defaults
  reproduce.  No code was taken from it.

Rule (doses 1-based in the text)
--------------------------------
Equivalence interval ``EI = [a, b] = [target - epsilon1, target + epsilon2]`` (0.05 each by
default).  With ``n`` patients and ``y`` DLTs at the current dose:

1. ``y / n < a``: escalate;
2. ``a <= y / n <= b``: stay;
3. ``y / n > b``: stay if ``(y - 1) / n < a`` (one DLT fewer would have meant escalating: the
   data cannot tell the dose is above the EI), otherwise de-escalate.

The bounds are decimal numbers: ``a`` and ``b`` are rounded to 12 decimals and the comparisons
are made on ``y - a n`` with a 1e-9 tolerance, so a rate on a bound (1/4 with EI [0.25, 0.35])
counts as inside the EI, as in R where ``1/4 >= 0.25``.  Safety, movement and selection are
the interval kernel's (:mod:`~escalation_sim.designs.interval`): "DU" (``n >= 3`` and
``Pr(p > target | data) > cutoff_eli``, 0.95) eliminates the dose and those above (the
decision is then to de-escalate; at dose 1 the trial stops with no MTD); never escalate into
an eliminated dose; at the top dose "escalate" means stay, at dose 1 "de-escalate" means stay.
The MTD: FIND's ``select_mtd``, which is BOIN's ``select.mtd``.

Options (named; defaults: FIND)
-------------------------------
* ``n_earlystop`` / ``n_earlystop_at`` ("next"): ``run_sim_i3plus3`` stops when the dose of
  the next cohort already has ``n.earlystop`` patients (its code says this replaced an older
  "stop when the decision is stay" rule, ``n_earlystop_at: stay``); FIND's 100 means off,
  here ``None``.
* ``elimination_min_n`` (3): the simulator never eliminates with fewer than 3 patients.
* ``extrasafe_mtd`` (false): FIND's ``select_mtd(extrasafe = TRUE)``: when the selected dose's
  isotonic estimate (with its tie offset) exceeds ``b``, select the dose below it instead (no
  MTD if it is dose 1).  Not a stopping rule: FIND's i3+3 has no extra-safe stop.
* ``mtd_prior`` (0.05): the pseudo-counts of the isotonic estimate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Literal, Optional, Tuple

from pydantic import Field

from ..types import TrialState
from .base import Design, DesignContext
from .interval import (COUNT_TABLE_OPTIONS, DE_ESCALATE, ESCALATE, STAY, TIE_OFFSET,
                       IntervalDesign, IntervalSpec, Step, _check_ei, count_table, ei_context,
                       isotonic_inputs, isotonic_regression)
from .mtpi2 import _with_current_bounds, epsilon_field
from .registry import DesignEntry, register
from .tables import DecisionTable, TableRequest

__all__ = ["I3Plus3", "Spec", "make", "i3plus3_table"]

#: tolerance of the comparisons of y / n with the EI bounds (on y - bound * n)
TOL = 1e-9


@dataclass(frozen=True)
class I3Plus3(IntervalDesign):
    """The i3+3 design (see the module docstring); defaults reproduce FIND 0.1.1."""

    epsilon1: float = 0.05
    epsilon2: float = 0.05
    extrasafe_mtd: bool = False
    n_earlystop_at: str = "next"
    name: str = "i3+3"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ei(self.target, self.epsilon1, self.epsilon2, "epsilon1", "epsilon2")

    @property
    def ei(self):
        return (round(self.target - self.epsilon1, 12), round(self.target + self.epsilon2, 12))

    def rule(self, n: int, y: int) -> Step:
        a, b = self.ei
        if y - a * n < -TOL:
            return Step(ESCALATE, f"({y}/{n} below the EI [{a:g}, {b:g}])")
        if y - b * n <= TOL:
            return Step(STAY, f"({y}/{n} inside the EI [{a:g}, {b:g}])")
        if (y - 1) - a * n < -TOL:
            return Step(STAY, f"({y}/{n} above the EI [{a:g}, {b:g}] but {y - 1}/{n} below "
                              f"it)")
        return Step(DE_ESCALATE, f"({y}/{n} and {y - 1}/{n} not below the EI "
                                 f"[{a:g}, {b:g}])")

    def exact_rules(self, max_n: int) -> Any:
        # without extrasafe_mtd, select_mtd is the kernel's
        if self.extrasafe_mtd or type(self).select_mtd is not I3Plus3.select_mtd:
            return None
        return self._interval_rules(max_n, own_mtd=True)

    def select_mtd(self, state: TrialState) -> Optional[int]:
        best = super().select_mtd(state)
        if best is None or not self.extrasafe_mtd:
            return best
        adm = self.admissible(state) or []
        phat, w = isotonic_inputs([state.n[d] for d in adm], [state.y[d] for d in adm],
                                  self.mtd_prior)
        iso = isotonic_regression(phat, w)
        k = adm.index(best)
        if iso[k] + (k + 1) * TIE_OFFSET > self.ei[1]:
            return best - 1 if best > 0 else None
        return best

    def estimates(self, state) -> Dict[str, Any]:
        """The kernel's estimates plus the count boundaries at the current dose's n."""
        return _with_current_bounds(self, super().estimates(state), state)


# --------------------------------------------------------------------------- spec
class Spec(IntervalSpec):
    """i3+3 in the scenario file (``type: i3+3``)."""

    type: Literal["i3+3"] = "i3+3"
    ei_fields: ClassVar[Tuple[str, str]] = ("epsilon1", "epsilon2")
    epsilon1: float = epsilon_field()
    epsilon2: float = epsilon_field()
    extrasafe_mtd: bool = Field(
        default=False,
        description="select the dose below the selected one when its isotonic estimate "
                    "exceeds the EI's upper end (FIND select_mtd extrasafe = TRUE)")
    n_earlystop_at: Literal["stay", "current", "next"] = Field(
        default="next",
        description="the dose n_earlystop counts: next = the dose of the next cohort (FIND "
                    "run_sim_i3plus3), current = the current dose, stay = the current dose "
                    "when the rule says stay (BOIN get.oc)")


def make(spec: Spec, ctx: DesignContext) -> Design:
    """i3+3 from its spec (the registry adds the stopping rules)."""
    c = ei_context(spec, ctx, "epsilon1", "epsilon2")
    return I3Plus3(epsilon1=spec.epsilon1, epsilon2=spec.epsilon2,
                   extrasafe_mtd=spec.extrasafe_mtd, **spec.design_args(c))


def i3plus3_table(request: TableRequest) -> DecisionTable:
    """The i3+3 decision table in count form."""
    design, _ = request.build()
    a, b = design.inner.ei
    describe = (f"EI [{a:g}, {b:g}]: escalate if y/n < {a:g}; stay if inside, or above it "
                f"with (y-1)/n < {a:g}; else de-escalate")
    return count_table(request, "i3+3 decision table",
                       COUNT_TABLE_OPTIONS + ("epsilon1", "epsilon2"), describe)


register(DesignEntry(
    type="i3+3", spec_model=Spec, make=make, design_class=I3Plus3, table=i3plus3_table,
    summary="interval 3+3 design (Liu, Wang & Ji 2020; R FIND run_sim_i3plus3/select_mtd)"))
