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
  ``n_earlystop``: stop when a dose has that many patients; which dose is counted is the
  option ``n_earlystop_at`` (the packages differ): ``"stay"`` (default; BOIN ``get.oc``) the
  current dose when the decision is to stay there, ``"current"`` (Keyboard ``get.oc.kb``)
  the current dose whatever the decision, ``"next"`` (FIND ``run_sim_i3plus3`` /
  ``run_sim_mtpi2``) the dose the next cohort would receive.
* **MTD selection** (BOIN ``select.mtd``): among doses tried and not eliminated, the
  pool-adjacent-violators isotonic regression of ``(y + 0.05) / (n + 0.1)`` with weights
  ``1 / var``, ``var = (y + 0.05)(n - y + 0.05) / ((n + 0.1)^2 (n + 1.1))``; ``k * 1e-10``
  is added to the k-th admissible estimate (the published tie rule: the higher dose wins a
  tie below the target, the lower one above it) and the dose closest to the target is
  chosen.  ``mtd_cap()`` (BOIN's ``boundMTD``) may exclude doses whose estimate is not
  below a bound.  ``mtd_prior`` (default 0.05) is the ``a`` of those pseudo-counts: the
  estimate is the Beta(a, a) posterior mean ``(y + a) / (n + 2a)`` weighted by its inverse
  posterior variance (a = 1: the Beta(1, 1) posterior mean of R ``escalation``'s
  ``select_mtpi2_mtd``).
* ``elimination_min_n`` (default 3): the fewest patients at a dose for the elimination rule
  (BOIN, Keyboard ``get.oc.kb`` and FIND use 3; R ``escalation``'s ``get_mtpi2`` uses 2).

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

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import (TYPE_CHECKING, Any, ClassVar, Dict, List, Literal, NamedTuple, Optional, Sequence,
                    Tuple, Union)

from pydantic import Field, model_validator

from ..types import Decision, LazyModule, StopReason, TrialState
from .base import Design, DesignContext, DesignSpecBase

#: scipy.special, imported on first use (the command line's validate, table and --help
#: start without it)
special = LazyModule("scipy.special")

if TYPE_CHECKING:  # pragma: no cover
    from .tables import DecisionTable, TableRequest

__all__ = ["ESCALATE", "STAY", "DE_ESCALATE", "Step", "IntervalDesign", "prob_above",
           "elimination_boundary", "isotonic_regression", "isotonic_inputs", "TIE_OFFSET",
           "N_EARLYSTOP_AT", "IntervalSpec", "count_form", "count_rows", "count_table",
           "COUNT_TABLE_OPTIONS", "extrasafe_field", "offset_field", "check_spec_ei",
           "ei_context"]

ESCALATE, STAY, DE_ESCALATE = 1, 0, -1

#: offset added to the k-th admissible isotonic estimate (R ``select.mtd``)
TIE_OFFSET = 1e-10

#: exact enumeration's batch rules tabulate the rule over every (n, y) up to max_n: beyond
#: this many patients the scalar methods are used instead (the tables would be too large)
MAX_TABLE_N = 300

#: which dose ``n_earlystop`` counts (see the module docstring)
N_EARLYSTOP_AT = ("stay", "current", "next")


class Step(NamedTuple):
    """A rule's verdict at the current dose: ``move`` (ESCALATE / STAY / DE_ESCALATE) and the
    text that explains it."""

    move: int
    why: str


# --------------------------------------------------------------------------- elimination
@lru_cache(maxsize=65536)
def prob_above(target: float, n: int, y: int) -> float:
    """Pr(p > target | y of n, Beta(1, 1) prior), written as 1 - cdf like ``1 - pbeta``."""
    # special.betainc is the Beta cdf (the boost ibeta call behind scipy.stats.beta.cdf)
    return 1.0 - float(special.betainc(y + 1, n - y + 1, target))


#: a posterior probability within 1 / _NEAR_TIE of the cut-off is compared as
#: :func:`prob_above` compares it (in floating point, scipy's betainc)
_NEAR_TIE = 10 ** 12


@lru_cache(maxsize=None)
def elimination_boundary(target: float, n: int, cutoff: float = 0.95,
                         min_n: int = 3) -> Optional[int]:
    """Smallest y in 1..n with Pr(p > target | y, n) > cutoff; None if n < min_n or none.

    The decisions are those of ``prob_above(target, n, y) > cutoff`` (scipy), reached
    without importing scipy: under the Beta(1, 1) prior ``Pr(p > t | y of n) = P(Binomial(n
    + 1, t) <= y)`` (the Beta-binomial identity), summed in integers from the exact binary
    values of ``target`` (``a / 2^e``) and ``cutoff``; only a probability within 1e-12 of
    the cut-off (where a floating-point result could fall either side; e.g. n = 1, target
    0.1, cut-off 0.99: 1 - 0.1^2 = 0.99 in decimals) is compared by :func:`prob_above`
    itself.  tests/test_boin.py holds this to scipy on every target 0.05..0.5, cut-off
    0.90..0.99 and n <= 100."""
    if n < min_n:
        return None
    t, c = float(target), float(cutoff)
    if not (0.0 < t < 1.0 and math.isfinite(c)):
        return _boundary_by_scipy(target, n, cutoff)
    e, S = _tail_numerators(t, n)
    p, q = c.as_integer_ratio()            # cutoff = p / q exactly, q = 2^f
    f = q.bit_length() - 1
    # Pr = S[y] / 2^(e N).  On the common scale 2^m, m = max(e N, f): Pr > cutoff iff
    # S[y] 2^(m - e N) > p 2^(m - f); a near tie is |difference| < 2^m / _NEAR_TIE
    eN = e * (n + 1)
    m = max(eN, f)
    shift, limit = m - eN, p << (m - f)
    near = ((1 << m) - 1) // _NEAR_TIE
    for y in range(1, n + 1):
        diff = (S[y] << shift) - limit
        if -near <= diff <= near:
            if prob_above(target, n, y) > cutoff:
                return y
        elif diff > 0:
            return y
    return None


@lru_cache(maxsize=256)
def _tail_numerators(t: float, n: int) -> Tuple[int, Tuple[int, ...]]:
    """``(e, S)``: with ``t = a / 2^e`` exactly and N = n + 1, ``S[y] = sum_{i <= y} C(N, i)
    a^i (2^e - a)^(N - i)`` for y = 0..n, so that ``P(Binomial(N, t) <= y) = S[y] / 2^(e
    N)`` exactly (integers)."""
    a, d = t.as_integer_ratio()
    e, b, N = d.bit_length() - 1, d - a, n + 1
    T = b ** N
    S = [T]
    for y in range(1, n + 1):
        T = T * (N - y + 1) * a // (y * b)   # exact: T_y y b = T_(y-1) (N - y + 1) a
        S.append(S[-1] + T)
    return e, tuple(S)


def _boundary_by_scipy(target: float, n: int, cutoff: float) -> Optional[int]:
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


def isotonic_inputs(n: Sequence[int], y: Sequence[int], prior: float = 0.05
                    ) -> Tuple[List[float], List[float]]:
    """``select.mtd``'s estimates ``(y + 0.05) / (n + 0.1)`` and weights ``1 / var``.

    ``prior`` is the ``a`` of a Beta(a, a) prior (0.05 gives ``select.mtd``'s constants to the
    bit: ``2 * 0.05`` is the double ``0.1``)."""
    a, a2 = prior, 2 * prior
    phat = [(yy + a) / (nn + a2) for nn, yy in zip(n, y)]
    var = [(yy + a) * (nn - yy + a) / ((nn + a2) ** 2 * (nn + a2 + 1))
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
    n_earlystop_at: str = "stay"
    elimination_min_n: int = 3
    mtd_prior: float = 0.05

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
        if self.n_earlystop_at not in N_EARLYSTOP_AT:
            raise ValueError(f"n_earlystop_at must be one of {', '.join(N_EARLYSTOP_AT)} "
                             f"(got {self.n_earlystop_at!r})")
        if self.elimination_min_n < 1:
            raise ValueError(f"elimination_min_n must be >= 1 (got {self.elimination_min_n})")
        if not self.mtd_prior > 0:
            raise ValueError(f"mtd_prior must be > 0 (got {self.mtd_prior})")

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
        b_elim = self.elimination_bound(n)
        return b_elim is not None and y >= b_elim

    def elimination_bound(self, n: int) -> Optional[int]:
        """Eliminate the dose (and all above) if # DLT >= this with ``n`` patients."""
        return elimination_boundary(self.target, n, self.cutoff_eli, self.elimination_min_n)

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
        if self.n_earlystop is not None:
            if self.n_earlystop_at == "stay":
                if nxt == d and state.n[d] >= self.n_earlystop:
                    return Decision.halt(StopReason.N_AT_DOSE,
                                         f"{state.n[d]} patients at dose {d + 1} (n_earlystop "
                                         f"{self.n_earlystop}) and the rule says stay")
            else:
                at = d if self.n_earlystop_at == "current" else nxt
                if state.n[at] >= self.n_earlystop:
                    which = "the current" if at == d else "the next"
                    return Decision.halt(StopReason.N_AT_DOSE,
                                         f"{why}; {which} dose {at + 1} has {state.n[at]} "
                                         f"patients (n_earlystop {self.n_earlystop})")
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

    def exact_rules(self, max_n: int) -> Any:
        return self._interval_rules(max_n)

    def _interval_rules(self, max_n: int, own_step: bool = False, own_mtd: bool = False):
        """:class:`~.batch.IntervalRules` when the kernel's methods are this class's
        (a subclass vouches with ``own_step`` / ``own_mtd`` that its overrides of ``step`` /
        ``select_mtd`` reduce to the kernel's), else None."""
        from .base import Outcome
        from .batch import IntervalRules
        if (self.outcome is not Outcome.BINARY_DLT or self.time_to_event or self.extrasafe
                or max_n > MAX_TABLE_N):
            return None
        cls = type(self)
        names = ["decide", "move", "safety_stop", "lowest_eliminated", "eliminated",
                 "meets_elimination", "admissible", "canonical", "extrasafe_hit"]
        names += [] if own_step else ["step"]
        names += [] if own_mtd else ["select_mtd"]
        if any(getattr(cls, m) is not getattr(IntervalDesign, m) for m in names):
            return None
        return IntervalRules(self, max_n)

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
        phat, w = isotonic_inputs([state.n[d] for d in adm], [state.y[d] for d in adm],
                                  self.mtd_prior)
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
            ph, w = isotonic_inputs([state.n[d] for d in tried], [state.y[d] for d in tried],
                                    self.mtd_prior)
            for d, v in zip(tried, isotonic_regression(ph, w)):
                p_hat[d] = v
        return {
            "p_hat": p_hat,
            "eliminated": self.eliminated(state),
            "pr_above_target": [None if state.n[d] == 0 else
                                prob_above(self.target, state.n[d], state.y[d])
                                for d in range(state.n_doses)],
        }


    def credible_intervals(self, state: TrialState, level: float = 0.95) -> Dict[str, Any]:
        """BOIN ``select.mtd``'s isotonic estimates and Beta posterior intervals
        (:func:`escalation_sim.designs.intervals.isotonic_beta_intervals`)."""
        from .base import Outcome
        if self.outcome is not Outcome.BINARY_DLT:  # gBOIN: y are score units, not DLTs
            return None
        from .intervals import isotonic_beta_intervals
        return isotonic_beta_intervals(state.n, state.y, level, self.mtd_prior)


# --------------------------------------------------------------------------- spec options
def _check_ei(target: float, e1: float, e2: float, n1: str, n2: str) -> None:
    if not e1 < target:
        raise ValueError(f"{n1} must be < target {target:g} (got {e1:g})")
    if not target + e2 < 1:
        raise ValueError(f"{n2} must be < 1 - target {1 - target:g} (got {e2:g})")


def check_spec_ei(spec: "IntervalSpec", n1: str, n2: str) -> Any:
    """A spec's validator: the interval [target - ``n1``, target + ``n2``] must lie in (0, 1)
    when the spec gives the target (otherwise :func:`ei_context` checks it)."""
    if spec.target is not None:
        _check_ei(spec.target, getattr(spec, n1), getattr(spec, n2), n1, n2)
    return spec


def ei_context(spec: "IntervalSpec", ctx: DesignContext, n1: str, n2: str) -> Any:
    """``spec.context(ctx)`` after checking the interval [target - ``n1``, target + ``n2``]
    with the resolved target; a failure names the design."""
    c = spec.context(ctx)
    try:
        _check_ei(c.target, getattr(spec, n1), getattr(spec, n2), n1, n2)
    except ValueError as exc:
        raise ValueError(f"design {spec.name or spec.type!r}: {exc}") from None
    return c


def extrasafe_field() -> Any:
    """The spec field ``extrasafe`` of BOIN and Keyboard (the same declaration)."""
    return Field(
        default=False,
        description="also stop when Pr(p_1 > target | data) > cutoff_eli - offset at dose 1")


def offset_field() -> Any:
    """The spec field ``offset`` of BOIN and Keyboard (the same declaration)."""
    return Field(default=0.05, ge=0, lt=0.5,
                 description="lowers cutoff_eli for the extrasafe rule")


class IntervalSpec(DesignSpecBase):
    """Options of the kernel that the count-based interval designs (mTPI-2, Keyboard, i3+3)
    expose in the scenario file; each design redeclares ``n_earlystop_at`` with its reference
    package's default."""

    cutoff_eli: float = Field(
        default=0.95, ge=0.5, lt=1,
        description="eliminate a dose (and all above) when Pr(p > target | data) exceeds this "
                    "and n >= elimination_min_n")
    elimination_min_n: int = Field(
        default=3, ge=1, le=1000,
        description="fewest patients at a dose for the elimination rule (3: BOIN, Keyboard, "
                    "FIND; 2: R escalation get_mtpi2; 1: the rule as tabulated)")
    n_earlystop: Optional[int] = Field(
        default=None, ge=1,
        description="stop when a dose has this many patients; which dose: n_earlystop_at")
    n_earlystop_at: Literal["stay", "current", "next"] = Field(
        default="stay",
        description="the dose n_earlystop counts: stay = the current dose when the rule says "
                    "stay (BOIN get.oc), current = the current dose (Keyboard get.oc.kb), "
                    "next = the dose of the next cohort (FIND)")
    mtd_prior: float = Field(
        default=0.05, gt=0, le=10,
        description="a of the Beta(a, a) pseudo-counts of the isotonic MTD estimate "
                    "(y + a)/(n + 2a): 0.05 as BOIN/Keyboard/FIND select.mtd, 1 as R "
                    "escalation select_mtpi2_mtd")
    #: the two options that set the interval [target - first, target + second] the design
    #: checks against the target (:func:`check_spec_ei`); None: the design has none
    ei_fields: ClassVar[Optional[Tuple[str, str]]] = None

    @model_validator(mode="after")
    def _check_ei_fields(self) -> "IntervalSpec":
        if self.ei_fields is not None:
            check_spec_ei(self, *self.ei_fields)
        return self

    def kernel_options(self) -> Dict[str, Any]:
        """The kernel's keyword arguments from this spec."""
        return {"cutoff_eli": self.cutoff_eli, "elimination_min_n": self.elimination_min_n,
                "n_earlystop": self.n_earlystop, "n_earlystop_at": self.n_earlystop_at,
                "mtd_prior": self.mtd_prior}

    def design_args(self, c: DesignContext) -> Dict[str, Any]:
        """The keyword arguments every count-based interval design takes, from the resolved
        context ``c`` (``spec.context(ctx)``) and this spec."""
        return {"n_doses": c.n_doses, "target": c.target, "cohort_size": c.cohort_size,
                "start_dose": c.start_dose, "name": self.name or self.type,
                **self.kernel_options()}


#: spec options of :class:`IntervalSpec` that change a count table
COUNT_TABLE_OPTIONS = ("target", "cohort_size", "max_n", "cutoff_eli", "elimination_min_n",
                       "name")


# --------------------------------------------------------------------------- count table
LETTERS = {ESCALATE: "E", STAY: "S", DE_ESCALATE: "D"}


def count_form(design: IntervalDesign, ns: Sequence[int]) -> Dict[str, Any]:
    """The decision at each (n, y) of ``design``'s rule and elimination, and its count form.

    ``decisions[i]`` has one code per y = 0..n: E (escalate), S (stay), D (de-escalate) or U
    (DU: de-escalate and eliminate the dose and those above).  Count form: ``escalate`` = the
    largest y with E (None if none), ``deescalate`` = the smallest y with D or U (None if
    none), ``eliminate`` = the smallest y with U (None if none).  ``monotone`` says whether
    every row is E..E S..S D..D U..U, i.e. whether the count form says everything."""
    esc, dee, eli, rows = [], [], [], []
    order = {"E": 0, "S": 1, "D": 2, "U": 3}
    monotone = True
    for n in ns:
        codes = "".join("U" if design.meets_elimination(n, y) else
                        LETTERS[design.rule(n, y).move] for y in range(n + 1))
        rows.append(codes)
        e = [y for y, c in enumerate(codes) if c == "E"]
        d = [y for y, c in enumerate(codes) if c in "DU"]
        esc.append(max(e) if e else None)
        dee.append(min(d) if d else None)
        eli.append(design.elimination_bound(n))
        monotone &= all(order[a] <= order[b] for a, b in zip(codes, codes[1:]))
    return {"n": list(ns), "escalate": esc, "deescalate": dee, "eliminate": eli,
            "decisions": rows, "monotone": monotone}


def count_rows(b: Dict[str, Any]) -> List[str]:
    """The printed rows of a :func:`count_form` (BOIN ``get.boundary``'s layout)."""
    rows = [("Number of patients treated", b["n"]),
            ("Escalate if # of DLT <=", b["escalate"]),
            ("De-escalate if # of DLT >=", b["deescalate"]),
            ("Eliminate if # of DLT >=", b["eliminate"])]
    if "stop_lowest" in b:
        rows.append(("Stop if # DLT at dose 1 >=", b["stop_lowest"]))
    return [f"{label:<28}" + "".join(f"{'NA' if v is None else v:>4}" for v in vals)
            for label, vals in rows]


def count_table(request: "TableRequest", title: str, options: Sequence[str],
                describe: str = "") -> "DecisionTable":
    """The decision table of a count-based interval design in BOIN's count form: every
    n = 1..max_n for cohorts of 1, the multiples of the cohort size otherwise.  When some row
    is not of the form E..S..D (never for the built-in designs), the full table by (n, y)
    follows.  ``describe`` (a line under the title) says what the rule compares."""
    from .tables import DecisionTable
    design, notes = request.build_data_free(options, "decision table", "decision table")
    inner = design.inner
    c = inner.cohort_size
    ns = [n for n in range(1, design.max_n + 1) if c == 1 or n % c == 0]
    b = count_form(inner, ns)
    if inner.extrasafe:
        b["stop_lowest"] = [elimination_boundary(inner.target, n, inner.cutoff_eli - inner.offset)
                            for n in ns]
    b.update(target=inner.target, cutoff_eli=inner.cutoff_eli,
             elimination_min_n=inner.elimination_min_n)
    lines = [f"{title}, target {inner.target:g}"]
    if describe:
        lines.append(describe)
    lines += count_rows(b)
    if not b["monotone"]:
        lines.append("Not monotone in the DLT count: decision by n (rows) and # DLT = 0, 1, ... "
                     "(E escalate, S stay, D de-escalate, U eliminate):")
        lines += [f"{n:>4}  {' '.join(codes)}" for n, codes in zip(ns, b["decisions"])]
    return DecisionTable("\n".join(lines), b, tuple(notes))
