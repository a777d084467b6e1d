"""gBOIN: the generalized BOIN design for graded toxicities (Mu, Yuan, Xu & Liu 2019).

Sources
-------
* Mu R., Yuan Y., Xu J., Mandrekar S.J., Yin J. (2019). gBOIN: a unified model-assisted phase I
  trial design accounting for toxicity grades, and binary or continuous end points. JRSS-C
  68:289-308 (the paper's text was not reachable; the rules below follow the package).
* The R package TITEgBOIN 0.4.0 (Takeda's group), functions ``next_TITE_QuasiBOIN`` and
  ``select_mtd_TITE_QuasiBOIN`` with complete data (no pending patients): its behaviour, as
  written up in docs/reference_notes/gboin_titegboin.md (sections 1, 2, 4-6), is what the
  defaults reproduce.  No code was taken from it.

Outcome and state
-----------------
Each patient's worst grade g (among the events starting inside the DLT window) gets the
severity score ``scores[g]``, normalized by the largest score: the *normalized equivalent
toxicity score* (nETS) ``x = scores[g] / max(scores)`` in [0, 1] (quasi-Bernoulli).  Default
scores ``{0: 0, 1: 0, 2: 0.5, 3: 1.0, 4: 1.5}`` (TITEgBOIN's default).  The engines carry
the nETS as integer *units* (``score_units``, :func:`escalation_sim.grades.score_units_from`):
``x = units[g] / unit_scale``, so a dose's score sum ``y / unit_scale`` is exact (default:
thirds, unit_scale 3; grade 5, when the truth has it and the scores stop at 4, is refused by
the scenario loader: the scores must cover the truth's grades).

Rules (doses 1-based in the text)
---------------------------------
Target ``phi`` on the nETS scale (e.g. 0.47 / 1.5 = 0.3133); ``phi1 = p_saf`` (default
0.6 phi) and ``phi2 = p_tox`` (default 1.4 phi) give BOIN's boundaries ``lambda_e`` and
``lambda_d`` (:func:`escalation_sim.designs.boin.boin_lambdas`), **not rounded**.  With ``n``
patients and nETS sum ``s`` at the current dose, ``mu = s / n``:

* escalate iff ``mu <= lambda_e``; de-escalate iff ``mu >= lambda_d``; otherwise stay
  (equivalently ``s <= lambda_e n`` / ``s >= lambda_d n``: real "count" boundaries).
* elimination: dose j and all above are eliminated when ``n_j >= 3`` and
  ``Pr(p_j > phi | Beta(s_j + 1, n_j - s_j + 1)) > cutoff_eli`` (0.95), the real-valued
  score sum entering the Beta shape directly (TITEgBOIN 0.4.0; UnifiedDoseFinding instead
  rounds the boundary to an integer, which eliminates less eagerly).
* nobody counted at the current dose (possible only in the calendar engine, when every
  patient there counts at a lower level under ``conduct.shortfall.policy: received``): stay,
  as TITE-gBOIN does with no patient left at the current dose;
* guards, ``extrasafe``/``offset``, ``n_earlystop`` (counted when the decision is to stay,
  TITEgBOIN 0.4.0) and the movement rules are the interval kernel's
  (:mod:`escalation_sim.designs.interval`).
* MTD: among the treated, non-eliminated doses, the weighted pool-adjacent-violators
  regression of ``(s + 0.005) / (n + 0.01)`` with weights ``1 / var``,
  ``var = (s + 0.005)(n - s + 0.005) / ((n + 0.01)^2 (n + 1.01))``; ``k * 1e-10`` is added to
  the k-th admissible estimate and the dose closest to ``phi`` is chosen (ties: the lower
  dose; after the offsets, the higher dose wins a tie below ``phi``, the lower above it).
  ``mtd_prior: 0.05`` gives BOIN's constants (UnifiedDoseFinding's choice).

With scores ``{0: 0, 1: 1}`` (every event a 1) gBOIN is BOIN on the DLT ``grade >= 1``: the
same decision in every state (BOIN's integer boundaries ``floor(lambda_e n)`` and
``ceil(lambda_d n)`` describe the same comparisons for an integer DLT count; BOIN caps its
de-escalation boundary at the elimination boundary, which changes no move because an
eliminated current dose is left for the highest dose below it either way), and the same MTD
with ``mtd_prior: 0.05`` (tests/test_graded_core.py checks both).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

from pydantic import Field, field_validator, model_validator

from ..grades import check_scores, score_units_from
from ..types import Decision, LazyModule, TrialState
from .base import Design, DesignContext, DesignSpecBase, Outcome
from .boin import _check_phis, _resolve_phis, boin_lambdas
from .interval import (DE_ESCALATE, ESCALATE, STAY, IntervalDesign, Step, extrasafe_field,
                       offset_field)
from .registry import DesignEntry, register
from .tables import DecisionTable, TableRequest

special = LazyModule("scipy.special")  # imported on first use: a faster start-up

__all__ = ["GBOIN", "Spec", "make", "DEFAULT_SCORES", "prob_above_real",
           "elimination_threshold", "gboin_boundaries"]

#: TITEgBOIN's default severity scores for grades 0-1, 2, 3, 4 (here per grade 0..4)
DEFAULT_SCORES: Dict[int, float] = {0: 0.0, 1: 0.0, 2: 0.5, 3: 1.0, 4: 1.5}
#: the prior pseudo-count a of the isotonic MTD estimate (s + a) / (n + 2a) (TITEgBOIN)
GBOIN_MTD_PRIOR = 0.005


@lru_cache(maxsize=65536)
def prob_above_real(target: float, n: int, s: float) -> float:
    """Pr(p > target | Beta(s + 1, n - s + 1)) for a real score sum ``s`` (0 <= s <= n)."""
    # special.betainc is the Beta cdf (the boost ibeta call behind scipy.stats.beta.cdf)
    return 1.0 - float(special.betainc(s + 1.0, n - s + 1.0, target))


@lru_cache(maxsize=None)
def elimination_threshold(target: float, n: int, cutoff: float = 0.95) -> float:
    """The real ``s*`` with ``Pr(p > target | Beta(s* + 1, n - s* + 1)) = cutoff``: a dose
    with n patients is eliminated iff its score sum exceeds it (n >= 3).  ``inf`` when even
    s = n does not reach the cut-off.  Bisection to 1e-12 (the probability rises with s)."""
    if prob_above_real(target, n, float(n)) <= cutoff:
        return math.inf
    lo, hi = 0.0, float(n)
    if prob_above_real(target, n, 0.0) > cutoff:
        return 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if prob_above_real(target, n, mid) > cutoff:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class GBOIN(IntervalDesign):
    """gBOIN on the normalized score (see the module docstring).  ``y`` in a ``TrialState``
    is the sum of integer score units; ``scores`` the severity score per grade 0..G."""

    scores: Tuple[float, ...] = (0.0, 0.0, 0.5, 1.0, 1.5)
    phi1: Optional[float] = None   # p_saf, resolved to 0.6 * target
    phi2: Optional[float] = None   # p_tox, resolved to 1.4 * target
    name: str = "gboin"
    mtd_prior: float = GBOIN_MTD_PRIOR
    score_units: Tuple[int, ...] = field(default=(), init=False, compare=False)
    unit_scale: int = field(default=0, init=False, compare=False)

    outcome = Outcome.SCORE

    def __post_init__(self) -> None:
        s = check_scores(list(self.scores))
        units, L = score_units_from(s)
        object.__setattr__(self, "scores", s)
        object.__setattr__(self, "score_units", units)
        object.__setattr__(self, "unit_scale", L)
        p1, p2 = _resolve_phis(self.target, self.phi1, self.phi2)
        _check_phis(self.target, p1, p2)
        object.__setattr__(self, "phi1", p1)
        object.__setattr__(self, "phi2", p2)
        super().__post_init__()

    # -- the score scale ---------------------------------------------------------------------
    def score_sum(self, y: int) -> float:
        """The nETS sum of ``y`` units."""
        return y / self.unit_scale

    @property
    def lambdas(self) -> Tuple[float, float]:
        return boin_lambdas(self.target, self.phi1, self.phi2)

    # -- the rule ----------------------------------------------------------------------------
    def rule(self, n: int, y: int) -> Step:
        if n == 0:     # nobody counted at the dose (calendar conduct.shortfall: received)
            return Step(STAY, "(nobody counted at this dose: stay, treat there again)")
        lam_e, lam_d = self.lambdas
        mu = self.score_sum(y) / n
        if mu <= lam_e:
            return Step(ESCALATE, f"(mean score {mu:.4g} <= {lam_e:.4g}: escalate)")
        if mu >= lam_d:
            return Step(DE_ESCALATE, f"(mean score {mu:.4g} >= {lam_d:.4g}: de-escalate)")
        return Step(STAY, f"({lam_e:.4g} < mean score {mu:.4g} < {lam_d:.4g})")

    def step(self, state: TrialState, dose: int) -> Union[Step, Decision]:
        n, y = state.n[dose], state.y[dose]
        verdict = self.rule(n, y)
        return Step(verdict.move, f"score {self.score_sum(y):.4g}/{n} at dose {dose + 1} "
                                  f"{verdict.why}")

    # -- elimination on the real score sum ------------------------------------------------
    def meets_elimination(self, n: int, y: int) -> bool:
        return (n >= self.elimination_min_n
                and prob_above_real(self.target, n, self.score_sum(y)) > self.cutoff_eli)

    def elimination_bound(self, n: int) -> Optional[int]:
        """The smallest unit sum that eliminates a dose with n patients (None: none)."""
        if n < self.elimination_min_n:
            return None
        for y in range(n * self.unit_scale + 1):
            if self.meets_elimination(n, y):
                return y
        return None

    def extrasafe_hit(self, state: TrialState) -> bool:
        n1, y1 = state.n[0], state.y[0]
        return n1 >= 3 and (prob_above_real(self.target, n1, self.score_sum(y1))
                            > self.cutoff_eli - self.offset)

    # -- selection and estimates on the score scale -------------------------------------
    def select_mtd(self, state: TrialState) -> Optional[int]:
        return super().select_mtd(self._normalized(state))

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        out = super().estimates(self._normalized(state))
        out["eliminated"] = self.eliminated(state)
        out["pr_above_target"] = [None if state.n[d] == 0 else
                                  prob_above_real(self.target, state.n[d],
                                                  self.score_sum(state.y[d]))
                                  for d in range(state.n_doses)]
        lam_e, lam_d = self.lambdas
        out.update(lambda_e=lam_e, lambda_d=lam_d,
                   score_sum=[self.score_sum(v) for v in state.y])
        return out

    def _normalized(self, state: TrialState) -> "_ScoreState":
        return _ScoreState(state, self)

    def eliminated(self, state) -> List[bool]:
        return super().eliminated(_units(state))

    def admissible(self, state) -> Optional[List[int]]:
        """The kernel's admissible doses, elimination judged on the unit state."""
        return super().admissible(_units(state))


class _ScoreState:
    """A read-only view of a score state whose ``y`` are nETS sums (floats), for the kernel's
    isotonic selection and estimates; elimination is judged on the unit state it wraps."""

    def __init__(self, state: TrialState, design: GBOIN):
        self.n = state.n
        self.y = tuple(design.score_sum(v) for v in state.y)
        self.current = state.current
        self.n_doses = state.n_doses
        self.units = state


def _units(state):
    return state.units if isinstance(state, _ScoreState) else state


# --------------------------------------------------------------------------- spec
def _scores_field() -> Any:
    return Field(default_factory=lambda: dict(DEFAULT_SCORES),
                 description="severity score per worst grade, e.g. {0: 0, 1: 0, 2: 0.5, 3: 1, "
                             "4: 1.5} (the default); normalized by the largest score; must "
                             "not decrease, grade 0 scores 0, and cover every grade the truth "
                             "can produce")


def p_saf_field() -> Any:
    """The spec field ``p_saf`` of gBOIN and TITE-gBOIN."""
    return Field(default=None, gt=0, lt=1,
                 description="highest mean normalized score deemed sub-therapeutic; default "
                             "0.6*target")


def p_tox_field() -> Any:
    """The spec field ``p_tox`` of gBOIN and TITE-gBOIN."""
    return Field(default=None, gt=0, lt=1,
                 description="lowest mean normalized score deemed overly toxic; default "
                             "1.4*target")


class Spec(DesignSpecBase):
    """gBOIN in the scenario file (``type: gboin``).  ``target`` is on the normalized score
    scale; a scenario must give it (the scenario's own target is a DLT rate: the loader
    refuses to take it), tables take ``--target``."""

    type: Literal["gboin"] = "gboin"
    scores: Dict[int, float] = _scores_field()
    p_saf: Optional[float] = p_saf_field()
    p_tox: Optional[float] = p_tox_field()
    cutoff_eli: float = Field(
        default=0.95, ge=0.5, lt=1,
        description="eliminate a dose (and all above) when Pr(p > target | Beta(s+1, n-s+1)) "
                    "exceeds this and n >= 3 (s: the real score sum)")
    extrasafe: bool = extrasafe_field()
    offset: float = offset_field()
    n_earlystop: Optional[int] = Field(
        default=None, ge=1,
        description="stop when the current dose has this many patients and the rule says "
                    "stay (TITEgBOIN 0.4.0 n.earlystop)")
    mtd_prior: float = Field(
        default=GBOIN_MTD_PRIOR, gt=0, le=10,
        description="a of the isotonic MTD estimate (s + a)/(n + 2a): 0.005 as TITEgBOIN "
                    "select_mtd, 0.05 as BOIN / UnifiedDoseFinding")

    @field_validator("scores", mode="before")
    @classmethod
    def _scores(cls, v):
        if v is None:
            return v
        if not isinstance(v, dict):
            raise ValueError(f"must map grades to scores, e.g. {{0: 0, 1: 0, 2: 0.5, 3: 1, "
                             f"4: 1.5}} (got {v!r})")
        check_scores(v)            # not decreasing, >= 0, grade 0 scores 0, ...
        score_units_from(v)        # representable in integer units
        return {int(k): float(x) for k, x in v.items()}

    @model_validator(mode="after")
    def _check(self) -> "Spec":
        if self.p_saf is not None and self.p_tox is not None and not self.p_saf < self.p_tox:
            raise ValueError(f"p_saf must be < p_tox (got p_saf={self.p_saf}, "
                             f"p_tox={self.p_tox})")
        if self.target is not None:
            p1, p2 = _resolve_phis(self.target, self.p_saf, self.p_tox)
            _check_phis(self.target, p1, p2)
        return self

    def score_tuple(self) -> Tuple[float, ...]:
        return check_scores(self.scores)


def make(spec: Spec, ctx: DesignContext) -> Design:
    """gBOIN from its spec (the registry adds the stopping rules)."""
    c = spec.context(ctx)
    p1, p2 = _resolve_phis(c.target, spec.p_saf, spec.p_tox)
    try:
        _check_phis(c.target, p1, p2)
    except ValueError as exc:
        raise ValueError(f"design {spec.name or spec.type!r}: {exc}") from None
    return GBOIN(n_doses=c.n_doses, target=c.target, cohort_size=c.cohort_size,
                 start_dose=c.start_dose, scores=spec.score_tuple(), phi1=p1, phi2=p2,
                 cutoff_eli=spec.cutoff_eli, extrasafe=spec.extrasafe, offset=spec.offset,
                 n_earlystop=spec.n_earlystop, mtd_prior=spec.mtd_prior,
                 name=spec.name or spec.type)


# --------------------------------------------------------------------------- table
TABLE_OPTIONS = ("target", "cohort_size", "max_n", "scores", "p_saf", "p_tox", "cutoff_eli",
                 "name")


def gboin_boundaries(design: GBOIN, ns) -> Dict[str, Any]:
    """Real count boundaries on the score sum: escalate if s <= lambda_e n, de-escalate if
    s >= lambda_d n, eliminate if s > s*(n) (:func:`elimination_threshold`; None for n < 3)."""
    lam_e, lam_d = design.lambdas
    elim = [None if n < design.elimination_min_n else
            elimination_threshold(design.target, n, design.cutoff_eli) for n in ns]
    return {"target": design.target, "p_saf": design.phi1, "p_tox": design.phi2,
            "lambda_e": lam_e, "lambda_d": lam_d, "cutoff_eli": design.cutoff_eli,
            "scores": list(design.scores), "score_units": list(design.score_units),
            "unit_scale": design.unit_scale, "n": list(ns),
            "escalate": [lam_e * n for n in ns], "deescalate": [lam_d * n for n in ns],
            "eliminate_above": [None if e is None or math.isinf(e) else e for e in elim]}


def boundary_table(request: TableRequest) -> DecisionTable:
    """gBOIN's boundaries on the normalized score sum s at each n (real numbers, not
    rounded): escalate if s <= value, de-escalate if s >= value, eliminate if s > value."""
    design, notes = request.build_data_free(TABLE_OPTIONS, "boundary table", "boundaries")
    inner = design.inner
    c = inner.cohort_size
    ns = [n for n in range(1, design.max_n + 1) if c == 1 or n % c == 0]
    b = gboin_boundaries(inner, ns)

    def fmt(v):
        return f"{'NA' if v is None else format(v, '.4f'):>8}"

    lines = [f"gBOIN boundaries, target {inner.target:g} (normalized score), lambda_e "
             f"{b['lambda_e']:.6f}, lambda_d {b['lambda_d']:.6f}",
             "s = sum of normalized scores at the dose; scores per grade 0..: "
             + ", ".join(f"{v:g}" for v in inner.scores),
             f"{'Number of patients treated':<30}" + "".join(f"{n:>8}" for n in ns),
             f"{'Escalate if s <=':<30}" + "".join(fmt(v) for v in b["escalate"]),
             f"{'De-escalate if s >=':<30}" + "".join(fmt(v) for v in b["deescalate"]),
             f"{'Eliminate if s >':<30}" + "".join(fmt(v) for v in b["eliminate_above"])]
    return DecisionTable("\n".join(lines), b, tuple(notes))


register(DesignEntry(
    type="gboin", spec_model=Spec, make=make, design_class=GBOIN, table=boundary_table,
    summary="generalized BOIN on graded toxicity scores (Mu et al. 2019; R TITEgBOIN 0.4.0)"))

