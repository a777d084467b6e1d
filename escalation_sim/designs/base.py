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
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from pydantic import (BaseModel, ConfigDict, Field, ValidationInfo, field_validator,
                      model_serializer, model_validator)

from ..types import Decision, TrialState


class Outcome(str, Enum):
    """The patient outcome a design consumes (the scenario's truth must supply it).

    * ``BINARY_DLT``: each patient contributes 0 or 1 (a DLT); ``TrialState.y`` counts DLTs.
    * ``SCORE``: each patient contributes the integer units of the severity score of its worst
      grade in the DLT window (gBOIN).  A design class with this outcome has instance
      attributes ``score_units`` (units per worst grade 0..5, non-decreasing, ``[0] == 0``;
      :func:`escalation_sim.grades.score_units_from`) and ``unit_scale`` (= max units > 0);
      ``TrialState.y[d]`` is the sum of units at dose d and a patient's normalized score is
      ``score_units[g] / unit_scale``.  Needs a graded truth (``truth.toxicities``).

    * ``JOINT``: each patient contributes a binary DLT and a binary response (BOIN12,
      Keyboard phase I/II); the state is a ``JointState``: ``y`` counts DLTs, ``e`` responders and
      ``b`` patients with both.  Needs ``truth.efficacy``."""

    BINARY_DLT = "binary DLT"
    SCORE = "graded toxicity score"
    JOINT = "binary DLT and response"


class Design:
    """Base class (frozen dataclasses subclass it).  Subclasses set ``n_doses``.

    Class-level metadata, declared once by the design class and read through wrappers:
    ``time_to_event`` (decides with pending patients, i.e. takes a ``TiteState``; only the
    calendar engine can run it), ``outcome`` (what each patient contributes) and
    ``max_n_per_dose``."""

    n_doses: int
    time_to_event: ClassVar[bool] = False
    outcome: ClassVar[Outcome] = Outcome.BINARY_DLT
    #: the most patients the design itself ever treats at one dose (None: no such cap);
    #: rules asking for more are refused (``rules.check_rules``)
    max_n_per_dose: ClassVar[Optional[int]] = None

    #: units of a score design's patient outcome per worst grade 0..5 (``Outcome.SCORE``)
    score_units: Tuple[int, ...] = (0, 1, 1, 1, 1, 1)
    #: units of the largest score (1 for a binary design: y counts DLTs)
    unit_scale: int = 1

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

    def credible_intervals(self, state: TrialState, level: float = 0.95
                           ) -> Optional[Dict[str, Any]]:
        """Per-dose DLT-rate estimates with credible intervals for display, or None for a
        design without a model of the rates (3+3).  ``{"method", "level", "estimate",
        "lower", "upper"}``, per-dose lists with None where there is no value
        (:mod:`escalation_sim.designs.intervals`)."""
        return None

    def exact_rules(self, max_n: int) -> Any:
        """This design's ``decide`` / ``select_mtd`` / ``canonical`` on arrays of states, for
        exact enumeration with at most ``max_n`` patients (:mod:`.batch`), or None (the
        default: exact enumeration then calls the scalar methods state by state)."""
        return None

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


class TooToxicRuleSpec(BaseModel):
    """``stop_when_too_toxic: {dose: 1, threshold: 0.3, confidence: 0.9}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dose: int = Field(ge=1, description="1-based dose whose DLT rate is watched (usually 1)")
    threshold: float = Field(gt=0, lt=1, description="the DLT rate that is too high")
    confidence: float = Field(gt=0, lt=1,
                              description="stop when Pr(DLT rate > threshold | data) exceeds "
                                          "this (Beta(1, 1) prior, the dose's own data)")
    min_n: int = Field(default=3, ge=1, description="fewest patients at the dose for the rule")


#: the rule names of ``rules:`` in the order they wrap a design (innermost first)
RULE_NAMES = ("no_skip", "stop_n_at_dose", "demand_n_at_dose", "stop_when_too_toxic")


#: how each rule is written, for messages
_RULE_EXAMPLES = {"no_skip": "true", "stop_n_at_dose": "9", "demand_n_at_dose": "6",
                  "stop_when_too_toxic": "{dose: 1, threshold: 0.3, confidence: 0.9}"}


class RuleSpec(BaseModel):
    """One entry of a design's ``rules:`` list: a mapping with exactly one rule name.

    * ``no_skip: true`` - never escalate past the highest dose tried + 1 (``false``: no rule);
    * ``stop_n_at_dose: m`` - stop when the dose of the next cohort already has m patients
      (the same as the design key ``stop_n_at_dose``; give it in one place only);
    * ``demand_n_at_dose: m`` - the trial may not stop, other than for safety, until the dose
      it would recommend has at least m patients: a stop is replaced by a cohort at that
      dose (R escalation's ``demand_n_at_dose(dose = 'recommended')``); ``max_n`` still ends
      the trial, so m must not exceed it;
    * ``stop_when_too_toxic: {dose, threshold, confidence, min_n}`` - stop with no MTD when
      the dose has at least ``min_n`` (3) patients and Pr(DLT rate > threshold | its data) >
      confidence, Beta(1, 1) prior (may be given for several doses).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    no_skip: Optional[bool] = None
    stop_n_at_dose: Optional[int] = Field(default=None, ge=1)
    demand_n_at_dose: Optional[int] = Field(default=None, ge=1)
    stop_when_too_toxic: Optional[TooToxicRuleSpec] = None

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, data: Any) -> Any:
        """A bare rule name (``rules: [no_skip]``) is the commonest slip: say how to write it."""
        if not isinstance(data, (dict, cls)):
            import difflib
            close = difflib.get_close_matches(data.strip().lower(), RULE_NAMES, n=1,
                                              cutoff=0.6) if isinstance(data, str) else []
            hint = (f"; did you mean {{{close[0]}: {_RULE_EXAMPLES[close[0]]}}}?" if close
                    else "")
            raise ValueError(f"each entry of rules is a mapping with one rule name, such as "
                             f"{{no_skip: true}}{hint}")
        return data

    @model_validator(mode="after")
    def _one_rule(self) -> "RuleSpec":
        given = [k for k in RULE_NAMES if getattr(self, k) is not None]
        if len(given) != 1:
            what = "no rule" if not given else f"{len(given)} rules ({', '.join(given)})"
            raise ValueError(f"each entry of rules is one mapping with one rule name, one of "
                             f"{', '.join(RULE_NAMES)}; this one has {what}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in RULE_NAMES if getattr(self, k) is not None)

    @property
    def value(self) -> Any:
        return getattr(self, self.kind)

    @model_serializer(mode="wrap")
    def _only_the_rule(self, handler):
        return {k: v for k, v in handler(self).items() if v is not None}

    def describe(self) -> str:
        """The rule in words (for reports)."""
        v = self.value
        if self.kind == "no_skip":
            return "no skipping when escalating" if v else "skipping allowed"
        if self.kind == "stop_n_at_dose":
            return f"stop when the next dose has {v} patients"
        if self.kind == "demand_n_at_dose":
            return f"no stop (except for safety) before {v} patients at the recommended dose"
        return (f"stop if Pr(DLT rate at dose {v.dose} > {v.threshold:g}) > "
                f"{v.confidence:g} (n >= {v.min_n})")


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
    rules: Optional[List[RuleSpec]] = Field(
        default=None,
        description="stopping and modifying rules, e.g. [{no_skip: true}, "
                    "{stop_when_too_toxic: {dose: 1, threshold: 0.3, confidence: 0.9}}, "
                    "{stop_n_at_dose: 9}, {demand_n_at_dose: 6}]; whatever their order they "
                    "wrap the design as no_skip, stop_n_at_dose, demand_n_at_dose, "
                    "stop_when_too_toxic, then max_n")

    @field_validator("rules")
    @classmethod
    def _rules(cls, v: Optional[List[RuleSpec]], info: ValidationInfo):
        if not v:
            return v
        kinds = [r.kind for r in v]
        for k in ("no_skip", "stop_n_at_dose", "demand_n_at_dose"):
            where = [i for i, x in enumerate(kinds) if x == k]
            if len(where) > 1:
                raise ValueError(f"{k} is given twice (rules[{where[0]}] and rules[{where[1]}]); "
                                 f"give it once (got {[v[i].value for i in where]})")
        if "stop_n_at_dose" in kinds and info.data.get("stop_n_at_dose") is not None:
            i = kinds.index("stop_n_at_dose")
            raise ValueError(f"stop_n_at_dose is given both as a design key and in rules "
                             f"(rules[{i}]); give it once (got {info.data['stop_n_at_dose']} "
                             f"and {v[i].value})")
        doses = [r.value.dose for r in v if r.kind == "stop_when_too_toxic"]
        dup = sorted({d for d in doses if doses.count(d) > 1})
        if dup:
            raise ValueError(f"stop_when_too_toxic is given twice for dose {dup[0]}; give "
                             f"one rule per dose (got doses {doses})")
        return v

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
