"""Stopping and safety rules as small wrappers any design can take.

Each wrapper is itself a ``Design``: it calls the wrapped design's ``decide`` and may replace
the decision.  ``select_mtd`` and the design's metadata (``time_to_event``, ``outcome``,
``max_n``) are forwarded, except where the rule itself changes them.  Builders do not wrap
designs themselves: :func:`with_stopping_rules` (called by the registry for every design type)
adds the scenario's ``stop_n_at_dose`` and ``max_n`` rules in one fixed order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from scipy.stats import beta as beta_dist

from ..types import Decision, StopReason, TrialState
from .base import Design


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

    def select_mtd(self, state: TrialState) -> Optional[int]:
        return self.base.select_mtd(state)

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        return self.base.estimates(state)

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
    """Stop with no MTD when Pr(p_dose > target | data) > threshold, Beta(a, b) prior."""

    dose: int = 0
    target: float = 0.3
    threshold: float = 0.95
    min_n: int = 3
    prior_a: float = 1.0
    prior_b: float = 1.0

    def too_toxic(self, state: TrialState) -> bool:
        n, y = state.n[self.dose], state.y[self.dose]
        if n < self.min_n:
            return False
        prob = beta_dist.sf(self.target, self.prior_a + y, self.prior_b + n - y)
        return prob > self.threshold

    def decide(self, state: TrialState) -> Decision:
        if self.too_toxic(state):
            return Decision.halt(StopReason.LOWEST_DOSE_TOO_TOXIC,
                                 f"Pr(DLT rate at dose {self.dose + 1} > {self.target}) > "
                                 f"{self.threshold}")
        return self.base.decide(state)

    def select_mtd(self, state: TrialState) -> Optional[int]:
        if self.too_toxic(state):
            return None
        return self.base.select_mtd(state)


def with_stopping_rules(design: Design, *, stop_n_at_dose: Optional[int] = None,
                        max_n: Optional[int] = None) -> Design:
    """``design`` wrapped in ``StopWhenNAtDose(stop_n_at_dose)`` (if given), then in
    ``StopAtN(max_n)`` (if given): the order every built design has."""
    if stop_n_at_dose is not None:
        design = StopWhenNAtDose(base=design, n=stop_n_at_dose)
    if max_n is not None:
        design = StopAtN(base=design, n=max_n)
    return design
