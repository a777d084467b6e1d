"""Stopping and safety rules as small wrappers any design can take.

Each wrapper is itself a ``Design``: it calls the wrapped design's ``decide`` and may replace
the decision.  ``select_mtd`` and the design's metadata (``time_to_event``, ``outcome``,
``max_n``) are forwarded, except where the rule itself changes them.  Builders do not wrap
designs themselves: :func:`with_stopping_rules` (called by the registry for every design type)
adds the scenario's rules - the design's ``rules:`` list, its ``stop_n_at_dose`` and the
sample-size cap ``max_n`` - in one fixed order, whatever their order in the file (innermost
first):

1. ``no_skip`` (:class:`NoSkipping`): an escalation past the highest dose tried + 1 is cut to
   that dose;
2. ``stop_n_at_dose`` (:class:`StopWhenNAtDose`): stop when the next dose already has n;
3. ``demand_n_at_dose`` (:class:`DemandNAtDose`): overrides the stops above it (the design's
   own and rule 2), except safety stops, until the recommended dose has m patients;
4. ``stop_when_too_toxic`` (:class:`StopWhenTooToxic`, one per dose given): safety, checked
   before everything inside it, so ``demand_n_at_dose`` never delays it;
5. ``max_n`` (:class:`StopAtN`): the hard cap on the sample size, which nothing overrides
   (``demand_n_at_dose`` above ``max_n`` is therefore a contradiction, refused by
   :func:`check_rules`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

from ..types import Decision, LazyModule, StopReason, TrialState
from .base import RULE_NAMES, Design, RuleSpec

#: scipy.special, imported on first use (the command line's validate, table and --help
#: start without it)
special = LazyModule("scipy.special")

#: stops that ``demand_n_at_dose`` never overrides (``max_n`` is not among them: in a built
#: design ``StopAtN`` wraps ``DemandNAtDose`` and so is never overridden; composed the other
#: way round in Python, as R escalation's ``stop_at_n(...) %>% demand_n_at_dose(...)``, the
#: demand does override it)
SAFETY_STOPS = frozenset({StopReason.LOWEST_DOSE_TOO_TOXIC, StopReason.ALL_DOSES_ELIMINATED,
                          StopReason.NO_ADMISSIBLE_DOSE})


class RuleConflict(ValueError):
    """A rule that contradicts the design's settings; ``field`` is its path in the design's
    spec (``rules[2].demand_n_at_dose``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class _Wrapper(Design):
    base: Design

    @property
    def n_doses(self) -> int:  # type: ignore[override]
        return self.base.n_doses

    @property
    def max_cohort_size(self) -> int:
        return self.base.max_cohort_size

    @property
    def inner(self) -> Design:
        return self.base.inner

    @property
    def time_to_event(self) -> bool:  # type: ignore[override]
        return self.base.time_to_event

    @property
    def outcome(self):  # type: ignore[override]
        return self.base.outcome

    @property
    def max_n(self) -> Optional[int]:
        return self.base.max_n

    @property
    def score_units(self):  # type: ignore[override]
        return self.base.score_units

    @property
    def unit_scale(self) -> int:  # type: ignore[override]
        return self.base.unit_scale

    def select_mtd(self, state: TrialState) -> Optional[int]:
        return self.base.select_mtd(state)

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        return self.base.estimates(state)

    def credible_intervals(self, state: TrialState, level: float = 0.95):
        return self.base.credible_intervals(state, level)

    def canonical(self, state: TrialState):
        # the rules here depend on per-dose counts only, which every key keeps
        return self.base.canonical(state)

    def __getattr__(self, item):  # forward read-only options (target, name, ...)
        if item.startswith("__") or item == "base":
            raise AttributeError(item)
        return getattr(self.base, item)


@dataclass(frozen=True)
class StopAtN(_Wrapper):
    """Stop once ``n`` patients have been treated; a last cohort is cut to fit."""

    n: int = 0

    @property
    def max_n(self) -> Optional[int]:
        inner = self.base.max_n
        return self.n if inner is None else min(self.n, inner)

    def exact_rules(self, max_n: int) -> Any:
        from .batch import StopAtNRules
        base = self.base.exact_rules(max_n)
        return None if base is None else StopAtNRules(base, self.n)

    def decide(self, state: TrialState) -> Decision:
        if state.total_n >= self.n:
            return Decision.halt(StopReason.MAX_N, f"{state.total_n} patients treated (max {self.n})")
        d = self.base.decide(state)
        if d.stop:
            return d
        room = self.n - state.total_n
        if d.cohort_size > room:
            return Decision(d.dose, room, d.reason, None, d.estimates)
        return d


@dataclass(frozen=True)
class StopWhenNAtDose(_Wrapper):
    """Stop when the dose recommended next already has ``n`` patients."""

    n: int = 0

    def exact_rules(self, max_n: int) -> Any:
        from .batch import StopWhenNAtDoseRules
        base = self.base.exact_rules(max_n)
        return None if base is None else StopWhenNAtDoseRules(base, self.n)

    def decide(self, state: TrialState) -> Decision:
        d = self.base.decide(state)
        if not d.stop and state.n[d.dose] >= self.n:
            return Decision.halt(StopReason.N_AT_DOSE,
                                 f"dose {d.dose + 1} already has {state.n[d.dose]} patients "
                                 f"(stop at {self.n})")
        return d


@dataclass(frozen=True)
class NoSkipping(_Wrapper):
    """Never escalate past the highest tried dose + 1."""

    def exact_rules(self, max_n: int) -> Any:
        from .batch import NoSkippingRules
        base = self.base.exact_rules(max_n)
        return None if base is None else NoSkippingRules(base)

    def decide(self, state: TrialState) -> Decision:
        d = self.base.decide(state)
        if not d.stop:
            cap = state.highest_tried + 1
            if d.dose > cap:
                return Decision(cap, d.cohort_size, d.reason + "; capped by no-skipping",
                                None, d.estimates)
        return d


@dataclass(frozen=True)
class StopWhenTooToxic(_Wrapper):
    """Stop with no MTD when dose ``dose`` (0-based) has at least ``min_n`` patients and
    Pr(p_dose > tox_threshold | its data) > confidence, Beta(prior_a, prior_b) prior (the
    names of R escalation's ``stop_when_too_toxic``; the probability here comes from the
    dose's own data, not from the design's model).  The field names avoid ``target`` and
    ``threshold`` so that the wrapped design's ``target`` stays readable through the
    wrapper."""

    dose: int = 0
    tox_threshold: float = 0.3
    confidence: float = 0.95
    min_n: int = 3
    prior_a: float = 1.0
    prior_b: float = 1.0

    def too_toxic(self, state: TrialState) -> bool:
        n, y = state.n[self.dose], state.y[self.dose]
        if n < self.min_n:
            return False
        if self.unit_scale != 1:  # a score design: y counts score units
            y = y / self.unit_scale
        # the Beta survival function (scipy.stats.beta.sf is this same boost ibetac call; the
        # special function spares the command line the 0.4 s import of scipy.stats)
        prob = special.betaincc(self.prior_a + y, self.prior_b + n - y, self.tox_threshold)
        return prob > self.confidence

    def decide(self, state: TrialState) -> Decision:
        if self.too_toxic(state):
            return Decision.halt(StopReason.LOWEST_DOSE_TOO_TOXIC,
                                 f"Pr(DLT rate at dose {self.dose + 1} > {self.tox_threshold:g}) "
                                 f"> {self.confidence:g} with {state.y[self.dose]}/"
                                 f"{state.n[self.dose]}")
        return self.base.decide(state)

    def select_mtd(self, state: TrialState) -> Optional[int]:
        if self.too_toxic(state):
            return None
        return self.base.select_mtd(state)


@dataclass(frozen=True)
class DemandNAtDose(_Wrapper):
    """The trial may not stop, other than for safety (:data:`SAFETY_STOPS`), until the dose it
    would recommend (``select_mtd``) has at least ``n`` patients: a stop of the wrapped design
    is replaced by a cohort at that dose (R escalation's ``demand_n_at_dose`` with
    ``dose = 'recommended'``).  A recommended dose above the highest dose tried + 1 (possible
    for a model-based design) is reached one dose at a time.  No recommendation (None): the
    stop stands."""

    n: int = 0

    def decide(self, state: TrialState) -> Decision:
        d = self.base.decide(state)
        if not d.stop or d.stop_reason in SAFETY_STOPS:
            return d
        rec = self.base.select_mtd(state)
        if rec is None or state.n[rec] >= self.n:
            return d
        dose = min(rec, state.highest_tried + 1)
        return Decision.treat(dose, self.base.max_cohort_size,
                              f"{d.reason}; but dose {rec + 1} has {state.n[rec]} patients "
                              f"(demand {self.n}): treat at dose {dose + 1}")


def describe_rules(rules: Sequence[RuleSpec]) -> str:
    """The rules in words, innermost first (the order they wrap the design)."""
    ordered = sorted(rules, key=lambda r: RULE_NAMES.index(r.kind))
    return "; ".join(r.describe() for r in ordered)


def check_rules(rules: Sequence[RuleSpec], *, max_n: Optional[int], n_doses: int,
                stop_n_at_dose: Optional[int] = None, max_n_per_dose: Optional[int] = None,
                design_type: str = "design") -> None:
    """Refuse rules that contradict the design (a :class:`RuleConflict` names the rule).

    ``stop_n_at_dose`` is the design key of that name (the rule may also be in ``rules``);
    ``max_n_per_dose`` the most patients the design itself ever treats at one dose (the
    design class's ``max_n_per_dose``: 6 for the 3+3 and the rolling six), or None."""
    stops = [(f"rules[{i}].stop_n_at_dose", r.value) for i, r in enumerate(rules)
             if r.kind == "stop_n_at_dose"]
    if stop_n_at_dose is not None:
        stops.append(("stop_n_at_dose", stop_n_at_dose))
    for where, n in stops:
        if max_n is not None and n > max_n:
            raise RuleConflict(where, f"must not exceed max_n ({max_n}): the trial ends at "
                                      f"max_n first, so the rule could never apply (got {n})")
    for i, r in enumerate(rules):
        if r.kind == "demand_n_at_dose" and max_n is not None and r.value > max_n:
            raise RuleConflict(f"rules[{i}].demand_n_at_dose",
                               f"must not exceed max_n ({max_n}): the trial ends at max_n, "
                               f"so the demand could never be met (got {r.value})")
        if (r.kind == "demand_n_at_dose" and max_n_per_dose is not None
                and r.value > max_n_per_dose):
            raise RuleConflict(f"rules[{i}].demand_n_at_dose",
                               f"must not exceed {max_n_per_dose}: the {design_type} design "
                               f"treats at most {max_n_per_dose} patients at a dose, so the "
                               f"demand would push it past its own rule (got {r.value})")
        if r.kind == "stop_when_too_toxic" and r.value.dose > n_doses:
            raise RuleConflict(f"rules[{i}].stop_when_too_toxic.dose",
                               f"must be between 1 and {n_doses} (got {r.value.dose})")


def with_stopping_rules(design: Design, *, stop_n_at_dose: Optional[int] = None,
                        max_n: Optional[int] = None,
                        rules: Optional[Sequence[RuleSpec]] = None) -> Design:
    """``design`` wrapped in its rules in the fixed order of the module docstring:
    ``no_skip``, ``stop_n_at_dose`` (the design key or the rule), ``demand_n_at_dose``,
    ``stop_when_too_toxic`` (in list order), ``max_n``."""
    by: Dict[str, list] = {k: [] for k in RULE_NAMES}
    for r in rules or ():
        by[r.kind].append(r.value)
    if stop_n_at_dose is not None:
        by["stop_n_at_dose"].append(stop_n_at_dose)
    if any(by["no_skip"]):
        design = NoSkipping(base=design)
    for n in by["stop_n_at_dose"]:
        design = StopWhenNAtDose(base=design, n=n)
    for n in by["demand_n_at_dose"]:
        design = DemandNAtDose(base=design, n=n)
    for t in by["stop_when_too_toxic"]:
        design = StopWhenTooToxic(base=design, dose=t.dose - 1, tox_threshold=t.threshold,
                                  confidence=t.confidence, min_n=t.min_n)
    if max_n is not None:
        design = StopAtN(base=design, n=max_n)
    return design
