"""The interval-design kernel: what BOIN, TITE-BOIN and the interval designs to come share.

An interval design (BOIN, and later mTPI-2, Keyboard, i3+3, gBOIN) decides from the data at
the current dose alone: escalate, stay or de-escalate.  What differs between them is only that
*rule*; everything around it is the same and lives here, written once:

* **Elimination** (safety; Liu & Yuan 2015, and the same rule in mTPI-2, Keyboard, i3+3):
  with a Beta(1, 1) prior, dose ``j`` and every higher dose are eliminated when ``n_j >= 3``
  and ``Pr(p_j > target | y_j, n_j) > cutoff_eli`` (0.95).  Eliminated doses are derived
  from the counts (the lowest dose meeting the rule and all above), which equals the sticky
  flags of a simulation because a dose's counts change only while it is the current dose.
  Dose 1 eliminated stops the trial with no MTD.  ``extrasafe``: also stop when the current
  dose is dose 1 and ``Pr(p_1 > target) > cutoff_eli - offset`` (checked, as BOIN's
  ``get.oc`` does, only when an elimination boundary exists at ``n_1``).
* **Movement guards** around the rule: never escalate into an eliminated dose (stay);
  asked to escalate at the top dose, stay; asked to de-escalate at dose 1, stay; if the
  result is still an eliminated dose (possible only in configurations where the rule's
  boundaries cross the elimination boundary) go to the highest non-eliminated dose;
  ``n_earlystop``: stop when the decision is to stay and the current dose already has that
  many patients (BOIN ``get.oc``'s rule).
* **MTD selection** (BOIN ``select.mtd``): among doses tried and not eliminated, the
  pool-adjacent-violators isotonic regression of ``(y + 0.05) / (n + 0.1)`` with weights
  ``1 / var``, ``var = (y + 0.05)(n - y + 0.05) / ((n + 0.1)^2 (n + 1.1))``; ``k * 1e-10``
  is added to the k-th admissible estimate (the published tie rule: the higher dose wins a
  tie below the target, the lower one above it) and the dose closest to the target is
  chosen.  ``mtd_cap()`` (BOIN's ``boundMTD``) may exclude doses whose estimate is not
  below a bound.

Writing a new interval design
-----------------------------
Subclass :class:`IntervalDesign` as a frozen dataclass, add the design's own options as
fields (with defaults) and supply ``rule(n, y) -> Step``: the move at a dose with ``n``
patients and ``y`` DLTs, plus the text that explains it (``"(escalate if <= 1)"``).  The
kernel adds the observation (``"1/3 DLT at dose 2"``), the guards and the outcome words.
A time-to-event variant overrides ``step(state, dose)`` instead: with pending patients at
the dose it computes its effective DLT count and returns its ``Step`` (or a ``Decision``,
e.g. a suspension), and defers to the complete-data ``step`` otherwise (see TITE-BOIN in
:mod:`escalation_sim.designs.tite`).  Register it with a spec model in the same file.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from scipy.stats import beta as beta_dist

from ..types import Decision, StopReason, TrialState
from .base import Design

__all__ = ["ESCALATE", "STAY", "DE_ESCALATE", "Step", "IntervalDesign", "prob_above",
           "elimination_boundary", "isotonic_regression", "isotonic_inputs", "TIE_OFFSET"]

ESCALATE, STAY, DE_ESCALATE = 1, 0, -1

#: offset added to the k-th admissible isotonic estimate (R ``select.mtd``)
TIE_OFFSET = 1e-10


class Step(NamedTuple):
    """A rule's verdict at the current dose: ``move`` (ESCALATE / STAY / DE_ESCALATE) and the
    text that explains it."""

    move: int
    why: str


# --------------------------------------------------------------------------- elimination
@lru_cache(maxsize=65536)
def prob_above(target: float, n: int, y: int) -> float:
    """Pr(p > target | y of n, Beta(1, 1) prior), written as 1 - cdf like ``1 - pbeta``."""
    return 1.0 - float(beta_dist.cdf(target, y + 1, n - y + 1))


@lru_cache(maxsize=None)
def elimination_boundary(target: float, n: int, cutoff: float = 0.95,
                         min_n: int = 3) -> Optional[int]:
    """Smallest y in 1..n with Pr(p > target | y, n) > cutoff; None if n < min_n or none."""
    if n < min_n:
        return None
    for y in range(1, n + 1):
        if prob_above(target, n, y) > cutoff:
            return y
    return None


# --------------------------------------------------------------------------- isotonic
def isotonic_regression(values: Sequence[float], weights: Sequence[float]) -> List[float]:
    """Weighted pool-adjacent-violators: repeatedly merge the first adjacent pair of blocks
    that decreases, giving the merged block the weighted mean of its members."""
    blocks: List[List[int]] = [[i] for i in range(len(values))]
    vals = [float(v) for v in values]
    w = [float(x) for x in weights]
    while True:
        viol = None
        for b in range(len(blocks) - 1):
            if vals[blocks[b + 1][0]] < vals[blocks[b][0]]:
                viol = b
                break
        if viol is None:
            break
        members = blocks[viol] + blocks[viol + 1]
        num = sum(vals[i] * w[i] for i in members)
        den = sum(w[i] for i in members)
        pooled = num / den
        for i in members:
            vals[i] = pooled
        blocks[viol:viol + 2] = [members]
    return vals


def isotonic_inputs(n: Sequence[int], y: Sequence[int]) -> Tuple[List[float], List[float]]:
    """``select.mtd``'s estimates ``(y + 0.05) / (n + 0.1)`` and weights ``1 / var``."""
    phat = [(yy + 0.05) / (nn + 0.1) for nn, yy in zip(n, y)]
    var = [(yy + 0.05) * (nn - yy + 0.05) / ((nn + 0.1) ** 2 * (nn + 0.1 + 1))
           for nn, yy in zip(n, y)]
    return phat, [1.0 / v for v in var]


# --------------------------------------------------------------------------- the kernel
@dataclass(frozen=True)
class IntervalDesign(Design):
    """Elimination, movement guards and isotonic MTD selection around ``rule`` (see the
    module docstring).  Subclasses are frozen dataclasses."""

    n_doses: int
    target: float
    cohort_size: int = 3
    start_dose: int = 0  # 0-based
    cutoff_eli: float = 0.95
    extrasafe: bool = False
    offset: float = 0.05
    n_earlystop: Optional[int] = None
    name: str = "interval"

    def __post_init__(self) -> None:
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"target must be in (0, 1) (got {self.target})")
        if self.n_doses < 1:
            raise ValueError(f"n_doses must be >= 1 (got {self.n_doses})")
        if self.cohort_size < 1:
            raise ValueError(f"cohort_size must be >= 1 (got {self.cohort_size})")
        if not 0 <= self.start_dose < self.n_doses:
            raise ValueError(f"start_dose (0-based) must be in 0..{self.n_doses - 1} "
                             f"(got {self.start_dose})")
        if not 0.5 <= self.cutoff_eli < 1.0:
            raise ValueError(f"cutoff_eli must be in [0.5, 1) (got {self.cutoff_eli})")
        if not 0.0 <= self.offset < 0.5:
            raise ValueError(f"offset must be in [0, 0.5) (got {self.offset})")
        if self.n_earlystop is not None and self.n_earlystop < 1:
            raise ValueError(f"n_earlystop must be >= 1 (got {self.n_earlystop})")

    @property
    def max_cohort_size(self) -> int:
        return self.cohort_size

    # -- what a design supplies ------------------------------------------------------------
    def rule(self, n: int, y: int) -> Step:  # pragma: no cover - abstract
        """The move at a dose with ``n`` patients and ``y`` DLTs (complete data)."""
        raise NotImplementedError

    def step(self, state: TrialState, dose: int) -> Union[Step, Decision]:
        """The rule applied at ``dose`` (the current dose), with the observation in the text.
        Overridden by time-to-event variants and to add stages (BOIN's titration); a
        ``Decision`` returned here is final (no guard applies)."""
        n, y = state.n[dose], state.y[dose]
        verdict = self.rule(n, y)
        return Step(verdict.move, f"{y}/{n} DLT at dose {dose + 1} {verdict.why}".rstrip())

    def start(self) -> Decision:
        """The first cohort."""
        return Decision.treat(self.start_dose, self.cohort_size, "start")

    def mtd_cap(self) -> Optional[float]:
        """Only doses whose isotonic estimate is below this are selectable (None: no cap)."""
        return None

    # -- elimination -----------------------------------------------------------------------
    def meets_elimination(self, n: int, y: int) -> bool:
        b_elim = elimination_boundary(self.target, n, self.cutoff_eli)
        return b_elim is not None and y >= b_elim

    def lowest_eliminated(self, state: TrialState) -> Optional[int]:
        """Lowest dose meeting the elimination rule (it and all above are eliminated)."""
        for d in range(state.n_doses):
            if self.meets_elimination(state.n[d], state.y[d]):
                return d
        return None

    def eliminated(self, state: TrialState) -> List[bool]:
        low = self.lowest_eliminated(state)
        return [low is not None and d >= low for d in range(state.n_doses)]

    def extrasafe_hit(self, state: TrialState) -> bool:
        n1, y1 = state.n[0], state.y[0]
        return n1 >= 3 and prob_above(self.target, n1, y1) > self.cutoff_eli - self.offset

    def safety_stop(self, state: TrialState, low: Optional[int]) -> Optional[Decision]:
        """Stop when dose 1 is eliminated, or by the extra-safe rule at dose 1."""
        if low == 0:
            return Decision.halt(StopReason.LOWEST_DOSE_TOO_TOXIC,
                                 f"dose 1 eliminated: Pr(DLT rate > {self.target}) > "
                                 f"{self.cutoff_eli} with {state.y[0]}/{state.n[0]}")
        if (self.extrasafe and state.current == 0
                and elimination_boundary(self.target, state.n[0], self.cutoff_eli) is not None
                and self.extrasafe_hit(state)):
            return Decision.halt(StopReason.LOWEST_DOSE_TOO_TOXIC,
                                 f"extra-safe rule: Pr(DLT rate at dose 1 > {self.target}) > "
                                 f"{self.cutoff_eli - self.offset:g} with "
                                 f"{state.y[0]}/{state.n[0]}")
        return None

    # -- guards ----------------------------------------------------------------------------
    def move(self, state: TrialState, d: int, step: Step, low: Optional[int]) -> Decision:
        """Apply ``step`` at dose ``d`` under the guards (module docstring)."""
        top = state.n_doses - 1
        why, nxt = step.why, d
        if step.move > 0:
            if d == top:
                why += ": escalate asked at the top dose: stay"
            elif low is not None and d + 1 >= low:
                why += f" but dose {d + 2} is eliminated: stay"
            else:
                nxt, why = d + 1, why + ": escalate"
        elif step.move < 0:
            if d == 0:
                why += ": de-escalate asked at dose 1: stay"
            else:
                nxt, why = d - 1, why + ": de-escalate"
        else:
            why += ": stay"
        if low is not None and nxt >= low:  # never treat an eliminated dose
            nxt, why = low - 1, why + f"; dose {low + 1} and above eliminated"
        if self.n_earlystop is not None and nxt == d and state.n[d] >= self.n_earlystop:
            return Decision.halt(StopReason.N_AT_DOSE,
                                 f"{state.n[d]} patients at dose {d + 1} (n_earlystop "
                                 f"{self.n_earlystop}) and the rule says stay")
        return Decision.treat(nxt, self.cohort_size, why)

    # -- the interface ---------------------------------------------------------------------
    def decide(self, state: TrialState) -> Decision:
        if state.current is None:
            return self.start()
        d = state.current
        low = self.lowest_eliminated(state)
        stop = self.safety_stop(state, low)
        if stop is not None:
            return stop
        step = self.step(state, d)
        if isinstance(step, Decision):
            return step
        return self.move(state, d, step, low)

    def canonical(self, state: TrialState):
        """Decisions use the per-dose counts and the current dose only."""
        return (state.n, state.y, state.current)

    def admissible(self, state: TrialState) -> Optional[List[int]]:
        """Tried, non-eliminated doses; None if dose 1 is eliminated (incl. extrasafe)."""
        elim = self.eliminated(state)
        if self.extrasafe and self.extrasafe_hit(state):
            elim = [True] * state.n_doses
        if elim[0]:
            return None
        return [d for d in range(state.n_doses) if state.n[d] > 0 and not elim[d]]

    def select_mtd(self, state: TrialState) -> Optional[int]:
        adm = self.admissible(state)
        if not adm:
            return None
        phat, w = isotonic_inputs([state.n[d] for d in adm], [state.y[d] for d in adm])
        iso = isotonic_regression(phat, w)
        est = [v + (k + 1) * TIE_OFFSET for k, v in enumerate(iso)]
        candidates = list(range(len(adm)))
        cap = self.mtd_cap()
        if cap is not None:
            candidates = [k for k in candidates if est[k] < cap]
            if not candidates:
                return None
        best = min(candidates, key=lambda k: (abs(est[k] - self.target), k))
        return adm[best]

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        """Isotonic estimates over all tried doses (as ``select.mtd`` prints them, eliminated
        doses included, no tie offsets; None when untried), eliminated flags and the
        Beta(1, 1) Pr(p > target) per dose."""
        tried = [d for d in range(state.n_doses) if state.n[d] > 0]
        p_hat: List[Optional[float]] = [None] * state.n_doses
        if tried:
            ph, w = isotonic_inputs([state.n[d] for d in tried], [state.y[d] for d in tried])
            for d, v in zip(tried, isotonic_regression(ph, w)):
                p_hat[d] = v
        return {
            "p_hat": p_hat,
            "eliminated": self.eliminated(state),
            "pr_above_target": [None if state.n[d] == 0 else
                                prob_above(self.target, state.n[d], state.y[d])
                                for d in range(state.n_doses)],
        }
