"""mTPI-2: the modified toxicity probability interval design, version 2 (Guo et al. 2017).

Sources
-------
* Guo W, Wang S-J, Yang S, Lynn H, Ji Y (2017). A Bayesian interval dose-finding design
  addressing Ockham's razor: mTPI-2.  Contemporary Clinical Trials 58:23-33.  (Only the
  abstract could be read; the rules below are the ones the two packages agree on.)
* R package FIND 0.1.1 (Y. Zhang, Yuan Ji's group; ``run_sim_mtpi2``, ``select_mtd``): the
  reference package.  Its behaviour is what the defaults reproduce.
* R package escalation (K. Brock; ``get_mtpi2``): its test "mtpi_selector matches published
  example" encodes the decisions of Figure 3 of Guo et al. for target 0.3,
  epsilon1 = epsilon2 = 0.05 (tests/test_mtpi2.py checks them).
No code was taken from either package.

Rule (doses 1-based in the text)
--------------------------------
Prior Beta(1, 1); with ``n`` patients and ``y`` DLTs at the current dose the DLT rate has
posterior Beta(1 + y, 1 + n - y).  The equivalence interval is
``EI = [target - epsilon1, target + epsilon2]`` (0.05 each by default); the unit interval is
cut into intervals of the EI's width ``epsilon1 + epsilon2``, stepping down from the EI's
lower end and up from its upper end; the outermost interval on each side is whatever is left
(cut points within 1e-9 of 0 or 1 are dropped, so rounding never creates a sliver).  The
*unit probability mass* of an interval is its posterior probability divided by its width; the
interval with the largest UPM decides: below the EI escalate, the EI stay, above de-escalate.
An exact tie (not met for the usual settings) goes to the lowest interval, as in both packages
(escalation checks the lower intervals first, FIND takes R's first maximum).

Safety, movement and selection are the interval kernel's (:mod:`~escalation_sim.designs.interval`):
a dose with ``n >= elimination_min_n`` (3) and ``Pr(p > target | data) > cutoff_eli`` (0.95) is
eliminated with all higher doses (the decision is then "DU": de-escalate); dose 1 eliminated
stops the trial with no MTD; never escalate into an eliminated dose; at the top dose "escalate"
means stay, at dose 1 "de-escalate" means stay.  The MTD is selected as BOIN's ``select.mtd``
does (FIND's ``select_mtd(method = "mTPI2")`` is that algorithm).

Options where the packages differ (named; defaults: FIND)
---------------------------------------------------------
* ``elimination_min_n`` (3): FIND 3; escalation's ``get_mtpi2`` eliminates from n = 2 (and
  with ``>=``, which differs only on exact equality).  With cohorts of 3 n = 2 never occurs.
* ``n_earlystop`` / ``n_earlystop_at`` ("next"): FIND stops when the dose of the next cohort
  already has ``n.earlystop`` patients (its default 100 means off: here ``None``).
* ``mtd_prior`` (0.05): the isotonic estimate's pseudo-counts; escalation's
  ``select_mtpi2_mtd`` uses the Beta(1, 1) posterior mean (``mtd_prior: 1``; its admissible
  set (n >= 2, PAVA-smoothed exclusion) is not reproduced).
FIND rounds the interval end points to 3 decimals and picks the interval by its midpoint;
neither changes a decision for targets and epsilons given to 2 decimals.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Dict, Literal, Tuple

import numpy as np
from pydantic import Field

from ..types import LazyModule
from .base import Design, DesignContext
from .interval import (COUNT_TABLE_OPTIONS, DE_ESCALATE, ESCALATE, STAY, IntervalDesign,
                       IntervalSpec, Step, count_table, ei_context)
from .registry import DesignEntry, register
from .tables import DecisionTable, TableRequest

#: scipy.special, imported on first use (the command line starts without it)
_special = LazyModule("scipy.special")

__all__ = ["MTPI2", "Spec", "make", "equal_width_intervals", "interval_masses", "mtpi2_table",
           "epsilon_field"]

#: cut points closer than this to 0 or 1 are dropped
EDGE_TOL = 1e-9


@lru_cache(maxsize=None)
def equal_width_intervals(target: float, eps_low: float, eps_high: float
                          ) -> Tuple[Tuple[float, ...], int]:
    """Cut points of the equal-width intervals around ``[target - eps_low, target + eps_high]``
    and the index of the interval that is the EI (interval i is [cuts[i], cuts[i+1]])."""
    lo, hi, width = target - eps_low, target + eps_high, eps_low + eps_high
    if not (0 < lo < hi < 1):
        raise ValueError(f"the interval [{lo:g}, {hi:g}] around the target must lie inside "
                         f"(0, 1)")
    below = []
    k = 1
    while lo - k * width > EDGE_TOL:
        below.append(lo - k * width)
        k += 1
    above = []
    k = 1
    while hi + k * width < 1 - EDGE_TOL:
        above.append(hi + k * width)
        k += 1
    cuts = [0.0] + below[::-1] + [lo, hi] + above + [1.0]
    cuts = [round(c, 12) for c in cuts]
    return tuple(cuts), len(below) + 1


def interval_masses(cuts: Tuple[float, ...], n: int, y: int) -> np.ndarray:
    """Posterior probability of each interval under Beta(1 + y, 1 + n - y)."""
    cdf = _special.betainc(1.0 + y, 1.0 + n - y, np.asarray(cuts))
    return np.diff(cdf)


@dataclass(frozen=True)
class EqualWidthDesign(IntervalDesign):
    """A count-based interval design on :func:`equal_width_intervals` around the target
    (mTPI-2, Keyboard); ``_widths`` gives the two options that set the central interval."""

    def _widths(self) -> Tuple[float, float]:
        raise NotImplementedError

    def __post_init__(self) -> None:
        super().__post_init__()
        equal_width_intervals(self.target, *self._widths())  # validates

    @property
    def intervals(self) -> Tuple[Tuple[float, ...], int]:
        return equal_width_intervals(self.target, *self._widths())

    def estimates(self, state) -> Dict[str, Any]:
        """The kernel's estimates plus the count boundaries at the current dose's n."""
        return _with_current_bounds(self, super().estimates(state), state)


@dataclass(frozen=True)
class MTPI2(EqualWidthDesign):
    """mTPI-2 (see the module docstring); defaults reproduce FIND 0.1.1."""

    epsilon1: float = 0.05
    epsilon2: float = 0.05
    n_earlystop_at: str = "next"
    name: str = "mtpi2"

    def _widths(self) -> Tuple[float, float]:
        return self.epsilon1, self.epsilon2

    def rule(self, n: int, y: int) -> Step:
        return _mtpi2_rule(self.target, self.epsilon1, self.epsilon2, n, y)


@lru_cache(maxsize=65536)
def _mtpi2_rule(target: float, eps1: float, eps2: float, n: int, y: int) -> Step:
    cuts, ei = equal_width_intervals(target, eps1, eps2)
    upm = interval_masses(cuts, n, y) / np.diff(np.asarray(cuts))
    best = int(np.argmax(upm))  # first maximum: ties go to the lowest interval
    where = f"[{cuts[best]:g}, {cuts[best + 1]:g}]"
    if best < ei:
        return Step(ESCALATE, f"(largest unit probability mass: {where}, below the EI)")
    if best > ei:
        return Step(DE_ESCALATE, f"(largest unit probability mass: {where}, above the EI)")
    return Step(STAY, f"(largest unit probability mass: the EI {where})")


def _with_current_bounds(design: IntervalDesign, out: Dict[str, Any], state) -> Dict[str, Any]:
    """Add the count boundaries at the current dose's n (as BOIN's estimates do)."""
    from .interval import count_form
    out.update({"n_current": None, "escalate_if_dlt_le": None, "deescalate_if_dlt_ge": None,
                "eliminate_if_dlt_ge": None})
    if state.current is not None:
        n_c = state.n[state.current]
        b = count_form(design, [n_c])
        out.update(n_current=n_c, escalate_if_dlt_le=b["escalate"][0],
                   deescalate_if_dlt_ge=b["deescalate"][0], eliminate_if_dlt_ge=b["eliminate"][0])
    return out


def epsilon_field() -> Any:
    """The spec field of mTPI-2's and i3+3's epsilon1 / epsilon2 (the same declaration)."""
    return Field(default=0.05, gt=0, lt=1,
                 description="the EI is [target - epsilon1, target + epsilon2]")


# --------------------------------------------------------------------------- spec
class Spec(IntervalSpec):
    """mTPI-2 in the scenario file (``type: mtpi2``)."""

    type: Literal["mtpi2"] = "mtpi2"
    ei_fields: ClassVar[Tuple[str, str]] = ("epsilon1", "epsilon2")
    epsilon1: float = epsilon_field()
    epsilon2: float = epsilon_field()
    n_earlystop_at: Literal["stay", "current", "next"] = Field(
        default="next",
        description="the dose n_earlystop counts: next = the dose of the next cohort (FIND "
                    "run_sim_mtpi2), current = the current dose, stay = the current dose when "
                    "the rule says stay (BOIN get.oc)")


def make(spec: Spec, ctx: DesignContext) -> Design:
    """mTPI-2 from its spec (the registry adds the stopping rules)."""
    c = ei_context(spec, ctx, "epsilon1", "epsilon2")
    return MTPI2(epsilon1=spec.epsilon1, epsilon2=spec.epsilon2, **spec.design_args(c))


def mtpi2_table(request: TableRequest) -> DecisionTable:
    """The count form of the mTPI-2 decision table (Guo et al. 2017, Figure 3, for target
    0.3): escalate / de-escalate / eliminate boundaries by n."""
    design, _ = request.build()
    inner = design.inner
    cuts, ei = inner.intervals
    describe = (f"EI [{cuts[ei]:g}, {cuts[ei + 1]:g}]; the interval with the largest unit "
                f"probability mass (Beta(1, 1) prior) decides")
    return count_table(request, "mTPI-2 decision table", COUNT_TABLE_OPTIONS
                       + ("epsilon1", "epsilon2"), describe)


register(DesignEntry(
    type="mtpi2", spec_model=Spec, make=make, design_class=MTPI2, table=mtpi2_table,
    summary="modified toxicity probability interval design 2 (Guo et al. 2017; R FIND "
            "run_sim_mtpi2/select_mtd)"))
