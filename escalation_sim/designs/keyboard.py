"""Keyboard: the strongest-key interval design (Yan, Mandrekar & Yuan 2017).

Sources
-------
* Yan F, Mandrekar SJ, Yuan Y (2017). Keyboard: a novel Bayesian toxicity probability
  interval design for phase I clinical trials.  Clinical Cancer Research 23:3994-4003.  (The
  paper's text and its boundary table could not be read.)
* R package Keyboard 0.1.3 (2022): ``get.boundary.kb``, ``get.oc.kb`` and ``select.mtd.kb``,
  whose behaviour the defaults reproduce.  No code was taken from it.

Rule (doses 1-based in the text)
--------------------------------
Keys: the target key ``[target - margin_left, target + margin_right]`` (0.05 each by default,
so keys are 0.1 wide) and keys of the same width stepping down to 0 and up to 1; the outermost
key on each side is whatever is left (cut points within 1e-9 of 0 or 1 are dropped: the
package's floating-point loop leaves a key of width 3e-17 next to 0 for target 0.25, which
changes no decision).  With ``n`` patients and ``y`` DLTs at the current dose (prior
Beta(1, 1), posterior Beta(1 + y, 1 + n - y)) the *strongest key* is the key with the largest
posterior probability, the two outermost keys' probabilities scaled by width / their own
width (the package's "compensation factor for incomplete keys"; the comparison is therefore
that of mTPI-2's unit probability mass, and the two designs' tables agree where no tie
occurs).  An exact tie goes to the highest key (the package's ``max(which(...))``).  Strongest
key left of the target key: escalate; the target key: stay; right of it: de-escalate.

Safety, movement and selection are the interval kernel's
(:mod:`~escalation_sim.designs.interval`) with ``get.oc.kb``'s settings: elimination when
``n >= 3`` and ``Pr(p > target | data) > cutoff_eli`` (0.95), of the dose and those above;
dose 1 eliminated stops the trial (no MTD); ``extrasafe`` (stop when at dose 1 with
``n >= 3`` and ``Pr(p_1 > target) > cutoff_eli - offset``); never escalate into an eliminated
dose; stay when asked to escalate at the top dose or de-escalate at dose 1.  The MTD:
``select.mtd.kb``, which is BOIN's ``select.mtd`` (isotonic ``(y + 0.05) / (n + 0.1)``).

Package behaviour and where this module departs from it
-------------------------------------------------------
* ``n_earlystop`` (``n.earlystop``, default 100 = off, here ``None``): ``get.oc.kb`` stops as
  soon as the current dose has that many patients, whatever the decision would be
  (``n_earlystop_at: current``, the default here).  It checks this before the elimination
  rule; here the safety stop is checked first, which changes only the reported stop reason
  (the selection then finds dose 1 eliminated either way).
* ``elimination_min_n`` (3): ``get.oc.kb`` hard-codes n >= 3; ``get.boundary.kb``'s printed
  table has no minimum (``elimination_min_n: 1`` prints it).
* ``get.oc.kb`` builds its decision table with the default margins and elimination cut-off
  whatever the user passes (only its elimination step uses the user's ``cutoff.eli``); this
  module uses the given ``margin_left``, ``margin_right`` and ``cutoff_eli`` everywhere.
* ``mtd_prior`` (0.05): the pseudo-counts of the isotonic estimate, as ``select.mtd.kb``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Literal, Tuple

import numpy as np
from pydantic import Field

from .base import Design, DesignContext
from .interval import (COUNT_TABLE_OPTIONS, DE_ESCALATE, ESCALATE, STAY, IntervalSpec, Step,
                       count_table, ei_context, extrasafe_field, offset_field)
from .mtpi2 import EqualWidthDesign, equal_width_intervals, interval_masses
from .registry import DesignEntry, register
from .tables import DecisionTable, TableRequest

__all__ = ["Keyboard", "Spec", "make", "keyboard_table", "strongest_key"]


@lru_cache(maxsize=65536)
def strongest_key(target: float, margin_left: float, margin_right: float, n: int, y: int
                  ) -> Tuple[int, int, Tuple[float, float]]:
    """``(index of the strongest key, index of the target key, (its ends))``."""
    cuts, tk = equal_width_intervals(target, margin_left, margin_right)
    mass = interval_masses(cuts, n, y)
    width = margin_left + margin_right
    mass[0] *= width / (cuts[1] - cuts[0])        # compensation for the incomplete keys
    mass[-1] *= width / (cuts[-1] - cuts[-2])
    best = int(len(mass) - 1 - np.argmax(mass[::-1]))  # last maximum: ties to the highest key
    return best, tk, (cuts[best], cuts[best + 1])


@dataclass(frozen=True)
class Keyboard(EqualWidthDesign):
    """The Keyboard design (see the module docstring); defaults reproduce Keyboard 0.1.3."""

    margin_left: float = 0.05
    margin_right: float = 0.05
    n_earlystop_at: str = "current"
    name: str = "keyboard"

    def _widths(self) -> Tuple[float, float]:
        return self.margin_left, self.margin_right

    @property
    def keys(self) -> Tuple[float, ...]:
        return self.intervals[0]

    def rule(self, n: int, y: int) -> Step:
        best, tk, (a, b) = strongest_key(self.target, self.margin_left, self.margin_right,
                                         n, y)
        where = f"[{a:g}, {b:g}]"
        if best < tk:
            return Step(ESCALATE, f"(strongest key {where}, left of the target key)")
        if best > tk:
            return Step(DE_ESCALATE, f"(strongest key {where}, right of the target key)")
        return Step(STAY, f"(strongest key: the target key {where})")


# --------------------------------------------------------------------------- spec
class Spec(IntervalSpec):
    """Keyboard in the scenario file (``type: keyboard``)."""

    type: Literal["keyboard"] = "keyboard"
    ei_fields: ClassVar[Tuple[str, str]] = ("margin_left", "margin_right")
    margin_left: float = Field(default=0.05, gt=0, lt=1,
                               description="the target key is [target - margin_left, "
                                           "target + margin_right] (marginL)")
    margin_right: float = Field(default=0.05, gt=0, lt=1,
                                description="the target key is [target - margin_left, "
                                            "target + margin_right] (marginR)")
    extrasafe: bool = extrasafe_field()
    offset: float = offset_field()
    n_earlystop_at: Literal["stay", "current", "next"] = Field(
        default="current",
        description="the dose n_earlystop counts: current = the current dose, whatever the "
                    "decision (get.oc.kb), next = the dose of the next cohort, stay = the "
                    "current dose when the rule says stay (BOIN get.oc)")


def make(spec: Spec, ctx: DesignContext) -> Design:
    """Keyboard from its spec (the registry adds the stopping rules)."""
    c = ei_context(spec, ctx, "margin_left", "margin_right")
    return Keyboard(margin_left=spec.margin_left, margin_right=spec.margin_right,
                    extrasafe=spec.extrasafe, offset=spec.offset, **spec.design_args(c))


def keyboard_table(request: TableRequest) -> DecisionTable:
    """``get.boundary.kb``'s table in count form (with ``extrasafe``, the stopping row)."""
    design, _ = request.build()
    keys = design.inner.keys
    describe = ("keys " + " ".join(f"{k:g}" for k in keys) + "; the strongest key "
                "(Beta(1, 1) prior) decides")
    return count_table(request, "Keyboard decision table",
                       COUNT_TABLE_OPTIONS + ("margin_left", "margin_right", "extrasafe",
                                              "offset"), describe)


register(DesignEntry(
    type="keyboard", spec_model=Spec, make=make, design_class=Keyboard, table=keyboard_table,
    summary="Keyboard strongest-key design (Yan, Mandrekar & Yuan 2017; R Keyboard 0.1.3 "
            "get.oc.kb/select.mtd.kb)"))
