"""TITE-gBOIN: the generalized BOIN on a graded toxicity score, deciding with pending patients.

gBOIN (Mu, Yuan, Xu & Liu 2019, JRSS-C 68:289) replaces BOIN's binary DLT by the patient's
*normalized equivalent toxicity score* (nETS): severity scores per worst grade (default
0 / 0 / 0.5 / 1 / 1.5 for grades 0-4) divided by the largest, a number in [0, 1] treated as
a quasi-Bernoulli outcome.  TITE-gBOIN (Takeda, Xia, Liu, Tanaka, Jin & Hsu 2022, Pharm Stat
21:496) decides before every patient's DLT window is over.  The rules below are those of the
R package TITEgBOIN 0.4.0 (``next_TITE_QuasiBOIN``, ``select_mtd_TITE_QuasiBOIN``), as
written down in docs/reference_notes/gboin_titegboin.md sections 2-6 (the papers' texts were
not reachable; the package is by the TITE-gBOIN authors' group).

Data (a :class:`~escalation_sim.designs.tite.TiteState` whose ``y`` are integer score units,
``max_units`` = the design's ``unit_scale`` L): at dose d, ``n_d`` every patient enrolled
(pending included), ``c_d`` the pending patients, ``STFT_d`` the sum of their followed
fractions of the window (linear weights), ``y_d`` = units / L, the nETS sum of the
non-pending patients (pending patients contribute nothing yet).  A patient stops being
pending at its first scored event inside the window or when its window ends (the calendar
engine's definition, :class:`~escalation_sim.engines.calendar.policies.ScoreTimeToEventPolicy`).

Boundaries (section 2), on the nETS scale, never rounded:
``lambda_e = log((1-phi1)/(1-phi)) / log(phi(1-phi1) / (phi1(1-phi)))`` and
``lambda_d = log((1-phi)/(1-phi2)) / log(phi2(1-phi) / (phi(1-phi2)))``, phi1 = 0.6 phi and
phi2 = 1.4 phi by default.

Decision at the current dose d, in this order (section 4):

1. elimination: the lowest dose j with ``n_j >= elimination_min_n`` (3) and
   ``Pr(p_j > phi | Beta(y_j + 1, n_j - y_j + 1)) > cutoff_eli`` (0.95) is eliminated with
   every higher dose -- ``n_j`` includes the pending patients, ``y_j`` is observed only,
   real-valued (the package's choice: pending patients counted as non-toxic);
2. ``extrasafe`` (at dose 1 only): ``n_1 >= elimination_min_n`` and Pr(p_1 > phi) >
   cutoff_eli - offset: stop, no MTD;
3. the current dose eliminated: go to the dose below the lowest eliminated one (none: stop,
   no MTD); no patient left at the current dose (all lost before evaluation, possible in
   the calendar engine only): treat there again;
4. suspension: more than ``max_pending_fraction`` (0.5) x n_d pending at d: suspend accrual
   (a decision with cohort size 0; the engine waits for more data);
5. ``mu_d = y_d / (n_d - c_d + STFT_d)`` (``y_d / n_d`` when nobody is pending): escalate if
   ``mu_d <= lambda_e`` (stay at the top dose or below an eliminated dose), de-escalate if
   ``mu_d >= lambda_d`` (at dose 1: stay, and suspend if anybody is pending there), else
   stay; with no follow-up at all (n_d - c_d + STFT_d = 0) stay;
6. ``n_earlystop`` (off by default, as gBOIN's; the package's default is 100): a dose with
   that many patients stops the trial if the decision is to stay there (not when accrual is
   suspended).

With every patient's follow-up complete this is gBOIN's decision (TITEgBOIN's
``next_TITE_QuasiBOIN`` with ``npend = 0``).  The trial's ``max_n`` and ``rules`` wrap it as
for every design.

MTD (section 6, on complete data): elimination recomputed from the final data (with n >= 3,
as the package's OC code calls it), no MTD if dose 1 is eliminated or no admissible dose
(treated, not eliminated) remains; estimates ``(y + 0.005) / (n + 0.01)`` with variance
``(y + 0.005)(n - y + 0.005) / ((n + 0.01)^2 (n + 1.01))``, weighted pool-adjacent-violators
over the admissible doses, ``k * 1e-10`` added to the k-th, and the dose closest to phi.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Literal, Optional, Tuple

from pydantic import Field, field_validator, model_validator

from ..grades import check_scores, score_units_from
from ..types import Decision, StopReason, TrialState
from .base import Design, DesignContext, DesignSpecBase, Outcome
from .boin import boin_lambdas
from .gboin import (DEFAULT_SCORES, GBOIN_MTD_PRIOR, elimination_threshold, p_saf_field,
                    p_tox_field, prob_above_real)
from .interval import TIE_OFFSET, isotonic_regression
from .registry import DesignEntry, register
from .tables import DecisionTable, TableInputError, TableRequest

__all__ = ["TITEGBOIN", "TiteGBOINSpec", "boin_lambdas", "elimination_score",
           "DEFAULT_SCORES"]

#: the severity scores, the score's Beta tail and elimination threshold, and the MTD prior are
#: gBOIN's (designs/gboin.py); the boundaries BOIN's (designs/boin.py)
MTD_PRIOR = GBOIN_MTD_PRIOR
_prob_above = prob_above_real
elimination_score = elimination_threshold


def _pending(state: TrialState) -> Tuple[Tuple[int, float], ...]:
    return getattr(state, "pending", ())


@dataclass(frozen=True)
class TITEGBOIN(Design):
    """TITE-gBOIN (TITEgBOIN 0.4.0's rules; see the module docstring)."""

    n_doses: int
    target: float
    cohort_size: int
    start_dose: int = 0
    #: severity score per worst grade 0..G (validated, as gBOIN's ``scores``)
    scores: Tuple[float, ...] = (0.0, 0.0, 0.5, 1.0, 1.5)
    score_units: Tuple[int, ...] = (0, 0, 1, 2, 3, 3)
    unit_scale: int = 3
    phi1: Optional[float] = None
    phi2: Optional[float] = None
    cutoff_eli: float = 0.95
    extrasafe: bool = False
    offset: float = 0.05
    n_earlystop: Optional[int] = None
    max_pending_fraction: float = 0.5
    elimination_min_n: int = 3
    name: str = "tite-gboin"
    time_to_event: ClassVar[bool] = True
    outcome: ClassVar[Outcome] = Outcome.SCORE

    def __post_init__(self) -> None:
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"target must be in (0, 1) (got {self.target})")
        p1, p2 = self.phis
        if not 0.0 < p1 < self.target < p2 < 1.0:
            raise ValueError(f"need 0 < phi1 < target < phi2 < 1 (got phi1 {p1:g}, target "
                             f"{self.target:g}, phi2 {p2:g})")
        if not 0.0 <= self.max_pending_fraction <= 1.0:
            raise ValueError(f"max_pending_fraction must be in [0, 1] "
                             f"(got {self.max_pending_fraction})")
        u = self.score_units
        if (not u or u[0] != 0 or any(b < a for a, b in zip(u, u[1:]))
                or max(u) != self.unit_scale or self.unit_scale < 1):
            raise ValueError(f"score_units must start at 0, never decrease and reach "
                             f"unit_scale (got {u}, {self.unit_scale})")

    # -- boundaries ------------------------------------------------------------------
    @property
    def phis(self) -> Tuple[float, float]:
        p1 = 0.6 * self.target if self.phi1 is None else self.phi1
        p2 = 1.4 * self.target if self.phi2 is None else self.phi2
        return p1, p2

    @property
    def lambdas(self) -> Tuple[float, float]:
        return boin_lambdas(self.target, *self.phis)

    @property
    def max_cohort_size(self) -> int:
        return self.cohort_size

    # -- data ------------------------------------------------------------------------
    def _data(self, state: TrialState):
        K = state.n_doses
        L = self.unit_scale
        c = [0] * K
        s = [0.0] * K
        for d, f in _pending(state):
            c[d] += 1
            s[d] += f
        y = [v / L for v in state.y]
        return list(state.n), y, c, s

    def _eliminated_from(self, n, y, min_n: int) -> int:
        """Index of the lowest eliminated dose (K if none)."""
        for j in range(len(n)):
            if n[j] >= min_n and _prob_above(self.target, n[j], y[j]) > self.cutoff_eli:
                return j
        return len(n)

    def mu(self, n: int, y: float, c: int, stft: float) -> Optional[float]:
        """``y / (n - c + STFT)`` (None: no follow-up at all)."""
        if c == 0:
            return y / n
        ess = n - c + stft
        return None if ess <= 0 else y / ess

    # -- decisions -------------------------------------------------------------------
    def decide(self, state: TrialState) -> Decision:
        cs = self.cohort_size
        d = state.current
        if d is None:
            return Decision.treat(self.start_dose, cs, f"start at dose {self.start_dose + 1}")
        n, y, c, s = self._data(state)
        K = len(n)
        elim = self._eliminated_from(n, y, self.elimination_min_n)
        if elim == 0:
            return Decision.halt(StopReason.LOWEST_DOSE_TOO_TOXIC,
                                 f"dose 1 eliminated: Pr(nETS > {self.target:g}) > "
                                 f"{self.cutoff_eli:g} with score {y[0]:.3f} of {n[0]}")
        if (self.extrasafe and d == 0 and n[0] >= self.elimination_min_n
                and _prob_above(self.target, n[0], y[0]) > self.cutoff_eli - self.offset):
            return Decision.halt(StopReason.LOWEST_DOSE_TOO_TOXIC,
                                 f"extrasafe: Pr(nETS at dose 1 > {self.target:g}) > "
                                 f"{self.cutoff_eli - self.offset:g}")
        if d >= elim:
            return Decision.treat(elim - 1, cs, f"dose {elim + 1} and above eliminated: "
                                                f"dose {elim}")
        if n[d] == 0:       # every patient there was lost before evaluation (calendar engine)
            return Decision.treat(d, cs, f"no patient left at dose {d + 1}: treat there again")
        obs = (f"score {y[d]:.3f} of {n[d]} at dose {d + 1}"
               + (f", {c[d]} pending (STFT {s[d]:.2f})" if c[d] else ""))
        if c[d] > self.max_pending_fraction * n[d]:
            return Decision(d, 0, f"{obs}: more than {self.max_pending_fraction:g} of the "
                                  f"patients pending: suspend accrual", None, None)
        mu = self.mu(n[d], y[d], c[d], s[d])
        lam_e, lam_d = self.lambdas
        if mu is None:
            nxt, why = d, "no follow-up yet: stay"
        elif mu <= lam_e:
            if d == K - 1:
                nxt, why = d, f"mu {mu:.4f} <= {lam_e:.4f} at the top dose: stay"
            elif d + 1 >= elim:
                nxt, why = d, f"mu {mu:.4f} <= {lam_e:.4f} but dose {d + 2} eliminated: stay"
            else:
                nxt, why = d + 1, f"mu {mu:.4f} <= {lam_e:.4f}: escalate"
        elif mu >= lam_d:
            if d == 0:
                if c[d] > 0:
                    return Decision(d, 0, f"{obs}: mu {mu:.4f} >= {lam_d:.4f} at dose 1 with "
                                          f"patients pending: suspend accrual", None, None)
                nxt, why = d, f"mu {mu:.4f} >= {lam_d:.4f} at dose 1: stay"
            else:
                nxt, why = d - 1, f"mu {mu:.4f} >= {lam_d:.4f}: de-escalate"
        else:
            nxt, why = d, f"mu {mu:.4f} between {lam_e:.4f} and {lam_d:.4f}: stay"
        if nxt == d and self.n_earlystop is not None and n[d] >= self.n_earlystop:
            return Decision.halt(StopReason.N_AT_DOSE,
                                 f"{obs}: {why}, and dose {d + 1} has {n[d]} >= "
                                 f"{self.n_earlystop} patients: stop")
        return Decision.treat(nxt, cs, f"{obs}: {why}")

    def mtd_estimates(self, state: TrialState) -> Dict[int, float]:
        """The isotonic estimates the MTD is chosen from, per admissible dose (0-based);
        empty when there is no MTD (section 6 of the notes)."""
        n, y, _, _ = self._data(state)
        elim = self._eliminated_from(n, y, 3)
        if self.extrasafe and n[0] >= 3 and \
                _prob_above(self.target, n[0], y[0]) > self.cutoff_eli - self.offset:
            elim = 0
        adm = [j for j in range(min(elim, len(n))) if n[j] > 0]
        if elim == 0 or not adm:
            return {}
        a = MTD_PRIOR
        est = [(y[j] + a) / (n[j] + 2 * a) for j in adm]
        var = [(y[j] + a) * (n[j] - y[j] + a) / ((n[j] + 2 * a) ** 2 * (n[j] + 1 + 2 * a))
               for j in adm]
        return dict(zip(adm, isotonic_regression(est, [1.0 / v for v in var])))

    def select_mtd(self, state: TrialState) -> Optional[int]:
        """The MTD on complete data (section 6 of the notes; see the module docstring)."""
        best, best_d = None, math.inf
        for k, (j, p) in enumerate(self.mtd_estimates(state).items(), start=1):
            dist = abs(p + k * TIE_OFFSET - self.target)
            if dist < best_d:
                best, best_d = j, dist
        return best

    def canonical(self, state: TrialState):
        return state

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        n, y, c, s = self._data(state)
        lam_e, lam_d = self.lambdas
        elim = self._eliminated_from(n, y, self.elimination_min_n)
        return {
            "nets_sum": y, "pending": c, "stft": s,
            "ess": [n[d] - c[d] + s[d] for d in range(len(n))],
            "mu": [None if n[d] == 0 else self.mu(n[d], y[d], c[d], s[d])
                   for d in range(len(n))],
            "pr_above_target": [None if n[d] == 0 else _prob_above(self.target, n[d], y[d])
                                for d in range(len(n))],
            "eliminated": [d >= elim for d in range(len(n))],
            "lambda_e": lam_e, "lambda_d": lam_d,
        }


# =========================================================================== spec
class TiteGBOINSpec(DesignSpecBase):
    """TITE-gBOIN in the scenario file (``type: tite-gboin``); options as ``gboin`` (without
    ``mtd_prior``: the selection uses TITEgBOIN's 0.005) plus ``max_pending_fraction`` and
    ``elimination_min_n``.  ``target`` is on the normalized score scale and must be given
    (e.g. 0.47 / 1.5 = 0.3133 for the package's example)."""

    type: Literal["tite-gboin"] = "tite-gboin"
    scores: Dict[int, float] = Field(
        default_factory=lambda: dict(DEFAULT_SCORES),
        description="severity score per worst grade (0..5), non-decreasing, grade 0 scores "
                    "0; normalized by the largest (default 0/0/0.5/1/1.5 for grades 0-4)")
    p_saf: Optional[float] = p_saf_field()
    p_tox: Optional[float] = p_tox_field()
    cutoff_eli: float = Field(
        default=0.95, ge=0.5, lt=1,
        description="eliminate a dose (and all above) when Pr(p > target | Beta(s+1, n-s+1)) "
                    "exceeds this and n >= elimination_min_n (s: the observed score sum, n: "
                    "pending patients included)")
    extrasafe: bool = Field(default=False, description="stop early when dose 1 is very "
                                                       "likely too toxic (cutoff_eli - offset)")
    offset: float = Field(default=0.05, gt=0, lt=0.5)
    n_earlystop: Optional[int] = Field(default=None, ge=1,
                                       description="stop when the current dose has this many "
                                                   "patients and the decision is to stay "
                                                   "(TITEgBOIN 0.4.0 n.earlystop)")
    max_pending_fraction: float = Field(
        default=0.5, ge=0, le=1,
        description="suspend accrual when more than this fraction of the patients at the "
                    "current dose are pending (TITEgBOIN maxpen: 0.5)")
    elimination_min_n: int = Field(default=3, ge=1,
                                   description="fewest patients at a dose for elimination")

    @field_validator("scores", mode="before")
    @classmethod
    def _scores(cls, v):
        if isinstance(v, dict):
            score_units_from(v)            # raises "message (got VALUE)"
        return v

    @model_validator(mode="after")
    def _check(self) -> "TiteGBOINSpec":
        if self.p_saf is not None and self.p_tox is not None and not self.p_saf < self.p_tox:
            raise ValueError(f"p_saf must be < p_tox (got p_saf={self.p_saf}, "
                             f"p_tox={self.p_tox})")
        return self


def make_tite_gboin(spec: TiteGBOINSpec, ctx: DesignContext) -> Design:
    if spec.target is None:
        raise ValueError("target: tite-gboin needs its own target on the normalized score "
                         "scale (e.g. 0.3133 = 0.47/1.5); the scenario's target is a DLT rate "
                         "(got none)")
    c = spec.context(ctx)
    scores = check_scores(spec.scores)
    units, L = score_units_from(scores)
    try:
        return TITEGBOIN(n_doses=c.n_doses, target=c.target, cohort_size=c.cohort_size,
                         start_dose=c.start_dose, scores=scores, score_units=units,
                         unit_scale=L,
                         phi1=spec.p_saf, phi2=spec.p_tox, cutoff_eli=spec.cutoff_eli,
                         extrasafe=spec.extrasafe, offset=spec.offset,
                         n_earlystop=spec.n_earlystop,
                         max_pending_fraction=spec.max_pending_fraction,
                         elimination_min_n=spec.elimination_min_n,
                         name=spec.name or spec.type)
    except ValueError as exc:
        raise ValueError(f"design {spec.name or spec.type!r}: {exc}") from None


# =========================================================================== table
def tite_gboin_table(request: TableRequest) -> DecisionTable:
    """Boundaries on the normalized score (unrounded), the real elimination thresholds per
    n, and the rules with pending patients.  ``--target`` is the normalized-score target."""
    if request.spec.target is None and request.target is not None:
        spec = type(request.spec).model_validate(
            request.spec.model_dump(exclude_unset=True) | {"target": request.target,
                                                           "type": "tite-gboin"})
        request = dataclasses.replace(request, spec=spec)
    design, notes = request.build_data_free(
        ("target", "p_saf", "p_tox", "cutoff_eli", "max_pending_fraction", "scores",
         "elimination_min_n", "cohort_size", "max_n"),
        table="TITE-gBOIN boundary table", changes="boundaries")
    inner = design.inner
    lam_e, lam_d = inner.lambdas
    max_n = request.max_n if request.max_n is not None else (request.spec.max_n or 30)
    if max_n > 1000:  # pragma: no cover - validated by the spec
        raise TableInputError("max_n", f"at most 1000 (got {max_n})")
    ns = list(range(1, max_n + 1))
    elim = [None if n < inner.elimination_min_n else elimination_score(
        inner.target, n, inner.cutoff_eli) for n in ns]
    units = inner.score_units
    L = inner.unit_scale
    lines = [f"TITE-gBOIN, target normalized score {inner.target:g} "
             f"(phi1 {inner.phis[0]:g}, phi2 {inner.phis[1]:g}); scores per worst grade "
             f"0-5 as normalized scores: "
             + ", ".join(f"{u}/{L}" if u not in (0, L) else str(u // L) for u in units),
             "mu = nETS sum of the patients not pending / (n - pending + STFT)",
             f"escalate if mu <= {lam_e:.6f}; de-escalate if mu >= {lam_d:.6f} (unrounded); "
             f"else stay",
             f"suspend accrual when more than {inner.max_pending_fraction:g} x n are pending "
             f"at the current dose",
             "",
             f"{'n':>4}  {'escalate if sum <=':>18}  {'de-escalate if sum >=':>21}  "
             f"{'eliminate if sum >':>18}"]
    for n, e in zip(ns, elim):
        et = "-" if e is None or math.isinf(e) else f"{e:.4f}"
        lines.append(f"{n:>4}  {n * lam_e:>18.4f}  {n * lam_d:>21.4f}  {et:>18}")
    lines.append("(sums of normalized scores of n patients with complete follow-up)")
    data = {"target": inner.target, "lambda_e": lam_e, "lambda_d": lam_d,
            "score_units": list(units), "unit_scale": L, "n": ns,
            "escalate_if_sum_le": [n * lam_e for n in ns],
            "deescalate_if_sum_ge": [n * lam_d for n in ns],
            "eliminate_if_sum_gt": [None if e is None or math.isinf(e) else e for e in elim],
            "max_pending_fraction": inner.max_pending_fraction}
    return DecisionTable("\n".join(lines), data, notes)


register(DesignEntry(type="tite-gboin", spec_model=TiteGBOINSpec, make=make_tite_gboin,
                     design_class=TITEGBOIN, table=tite_gboin_table,
                     summary="TITE-gBOIN: gBOIN on a graded toxicity score deciding with "
                             "pending patients (Takeda et al. 2022; TITEgBOIN 0.4.0); "
                             "discrete-event engine only"))
