"""The design interface every escalation rule implements.

A design is an immutable, hashable description.  ``decide(state)`` is a pure function of the
trial state returning the next ``Decision``; ``select_mtd(state)`` returns the dose (0-based)
recommended at the end of the trial, or ``None`` for "no MTD".  The cohort engine, exact
enumeration, the discrete-event engine and the conduct helpers all call these two functions.

Each design module also defines a pydantic ``Spec`` model (the YAML form of the design,
unknown keys rejected) and registers it with :mod:`escalation_sim.designs.registry`, together
with what the rest of the package needs to know about the design (its metadata): whether it
decides with pending patients, which outcome it consumes, how it takes the trial's cohort
size and sample size, and its decision table.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Dict, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field

from ..types import Decision, TrialState


class Outcome(str, Enum):
    """The patient outcome a design consumes (the scenario's truth must supply it).

    Only binary DLTs exist today; graded toxicity scores (gBOIN) and joint toxicity-efficacy
    outcomes (BOIN12, EffTox) are the next members."""

    BINARY_DLT = "binary DLT"


class Design:
    """Base class (frozen dataclasses subclass it).  Subclasses set ``n_doses``.

    Class-level metadata, declared once by the design class and read through wrappers:
    ``time_to_event`` (decides with pending patients, i.e. takes a ``TiteState``; only the
    calendar engine can run it) and ``outcome`` (what each patient contributes)."""

    n_doses: int
    time_to_event: ClassVar[bool] = False
    outcome: ClassVar[Outcome] = Outcome.BINARY_DLT

    @property
    def max_n(self) -> Optional[int]:
        """The most patients the design will treat, or None when no rule caps the total
        (a ``StopAtN`` wrapper sets it; 3+3 without one caps itself per dose)."""
        return None

    #: the largest cohort a decision of this design can ask for (used by the engines)
    @property
    def max_cohort_size(self) -> int:  # pragma: no cover - overridden
        return getattr(self, "cohort_size", 1)

    def decide(self, state: TrialState) -> Decision:  # pragma: no cover - abstract
        raise NotImplementedError

    def select_mtd(self, state: TrialState) -> Optional[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        """Current per-dose estimates for display (optional)."""
        return {}

    def canonical(self, state: TrialState) -> Any:
        """A hashable key such that states with equal keys get equal decisions and MTDs.

        The engines merge states by this key.  The default, the state itself, is always
        safe; a design that ignores part of the state (e.g. the last cohort) may drop it,
        which shrinks the state graph and speeds up exact enumeration.
        """
        return state

    @property
    def inner(self) -> "Design":
        """The undecorated design (wrappers override)."""
        return self


@dataclass(frozen=True)
class DesignContext:
    """Trial-level settings a design inherits unless its spec overrides them.

    ``dose_amounts``: each dose's ``amount`` from the scenario's ``doses`` (None for a dose
    given without one; None altogether when the caller knows no doses, e.g. a table).  Only
    designs whose model uses the dose scale (BLRM) read it."""

    n_doses: int
    target: float
    cohort_size: int
    max_n: int
    start_dose: int  # 0-based
    dose_amounts: Optional[Tuple[Optional[float], ...]] = None


class DesignSpecBase(BaseModel):
    """Keys every design accepts in the scenario file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: str
    name: Optional[str] = Field(default=None, description="label in tables; defaults to type")
    target: Optional[float] = Field(default=None, gt=0, lt=1,
                                    description="overrides the scenario target")
    cohort_size: Optional[int] = Field(default=None, ge=1, le=12)
    max_n: Optional[int] = Field(default=None, ge=1, le=1000)
    start_dose: Optional[int] = Field(default=None, ge=1, description="1-based")
    stop_n_at_dose: Optional[int] = Field(
        default=None, ge=1,
        description="stop when the dose recommended next already has this many patients")

    def context(self, ctx: DesignContext) -> DesignContext:
        return DesignContext(
            n_doses=ctx.n_doses,
            target=self.target if self.target is not None else ctx.target,
            cohort_size=self.cohort_size if self.cohort_size is not None else ctx.cohort_size,
            max_n=self.max_n if self.max_n is not None else ctx.max_n,
            start_dose=(self.start_dose - 1) if self.start_dose is not None else ctx.start_dose,
            dose_amounts=ctx.dose_amounts,
        )


def closest_to_target(values, target: float) -> int:
    """Index of the value closest to ``target``; ties go to the lower index."""
    best = 0
    best_dist = abs(values[0] - target)
    for i in range(1, len(values)):
        dist = abs(values[i] - target)
        if dist < best_dist:
            best, best_dist = i, dist
    return best
