"""Bayesian logistic regression model (BLRM) with escalation with overdose control (EWOC).

References
----------
* Neuenschwander B, Branson M, Gsponer T (2008). Critical aspects of the Bayesian approach to
  phase I cancer trials. Statistics in Medicine 27:2420-2439 ("NBG").
* Babb J, Rogatko A, Zacks S (1998). Cancer phase I clinical trials: efficient dose escalation
  with overdose control. Statistics in Medicine 17:1103-1120 (EWOC).
* The interval defaults (0.16, 0.33) and the overdose cut-off 0.25 are NBG's, also the
  defaults of R package OncoBayes2 (``blrm_trial``: ``interval_prob = c(0, 0.16, 0.33, 1)``,
  ``prob_overdose = 0.25``).

Model
-----
``logit p(d) = log(alpha) + beta log(d / d*)`` with dose amounts d (the scenario's
``doses[].amount``, or the design's ``dose_amounts``), reference dose d*
(``reference_dose``), and a bivariate normal prior on (log alpha, log beta): means
``prior_mean``, standard deviations ``prior_sd``, correlation ``prior_corr``.  So beta =
exp(log beta) > 0 and p increases with dose for every parameter value.

The posterior is integrated deterministically (no MCMC) on a fixed 2-D grid by
:mod:`~escalation_sim.designs.quadrature2d` (composite Gauss-Legendre over +/-8 prior SDs,
2 x 64 nodes per axis; the interval probabilities use exact partial-panel weights); it is
memoised on the per-dose counts.  Convergence study: tests/test_blrm.py and docs/design.md.

Per dose the design reports the posterior mean P(DLT) and the posterior probabilities of
underdosing p < ``target_interval[0]``, target ``target_interval[0] <= p <
target_interval[1]`` and overdosing p >= ``target_interval[1]``.

Next dose (``decide``)
  * no patient yet: ``start_dose``, one cohort (the protocol fixes the first dose; EWOC is not
    applied to the prior alone);
  * admissible doses: P(overdose) < ``overdose_cutoff`` (EWOC), amount <= (1 + ``max_step``)
    x the current dose's amount (``max_step`` 1.0: at most doubling; null: no cap; the
    current dose is the last cohort's), and, with ``no_skipping`` (default true), at most one
    level above the highest dose tried.  Because p increases with dose, every rule admits a
    set of the lowest doses, so the admissible set is empty exactly when dose 1 fails EWOC;
  * no admissible dose: stop with ``no_admissible_dose`` and no MTD (``if_no_admissible:
    stop``, the default) or treat at dose 1 anyway (``treat_lowest``);
  * otherwise the admissible dose with the highest P(target) (ties: the lower dose);
  * stopping: when that dose already has >= ``stop_n_at_mtd`` patients (6) and its P(target)
    >= ``stop_p_target`` (0.5), stop (``rule_complete``) and declare it the MTD.  Set
    ``stop_n_at_mtd: null`` to turn the rule off.  ``max_n`` (the trial's) always applies.

Final recommendation (``select_mtd``)
  The dose at which the stopping rule fired, if it fires on these data; otherwise, among the
  doses tried (n > 0) with P(overdose) < ``overdose_cutoff``, the one with the highest
  P(target); None when no patient was treated or no tried dose passes EWOC.

Defaults that are escalation-sim choices (NBG leave the prior to the trial)
  * ``reference_dose``: the amount of dose K//2 + 1 (the upper median dose, CRM's default
    prior MTD);
  * prior: mean (logit(target), 0), SD (2, 1), correlation 0 - weakly informative: the
    prior median DLT rate at the reference dose is the target, the SDs are those of the
    OncoBayes2 single-agent example (after NBG 2008).

Worked example (NBG 2008, via the sources in tests/test_blrm.py): doses 1, 2.5, 5, 10, 15, 20,
25, 30, 40, 50, 75, 100, 150, 200, 250 mg, d* = 250, prior means (2.15, 0.52), SDs (0.84,
0.80), correlation 0.134 / (0.84 x 0.80); 3, 4, 5, 4 patients without DLT at 1, 2.5, 5,
10 mg and 2/2 DLTs at 25 mg, i.e. ``1NNN 2NNNN 3NNNNN 4NNNN 7TT`` (18 patients, as OncoBayes2's
``hist_SA``; the string ``1NNN 2NNNN 3NNNN 4NNNN 7TT`` of the trialr / escalation vignettes
drops one patient at 5 mg).  EWOC admits doses 1-5 (P(overdose) at 20 mg is 0.264) and
recommends 15 mg (P(target) 0.436); the posterior means agree with bcrm's MCMC to 0.004.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Optional, Tuple

from pydantic import Field, field_validator, model_validator

from ..types import Decision, StopReason, TrialState
from .base import Design, DesignContext, DesignSpecBase
from .quadrature2d import Posterior2D, Prior2D, logistic_grid, posterior
from .registry import DesignEntry, register
from .tables import DecisionTable, TableInputError, TableRequest, next_cohort_table

DEFAULT_INTERVAL = (0.16, 0.33)
DEFAULT_OVERDOSE_CUTOFF = 0.25
DEFAULT_PRIOR_SD = (2.0, 1.0)
#: relative tolerance of the max-step comparison (amounts are decimal numbers)
_STEP_TOL = 1e-9


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class BLRMFit:
    """Posterior summaries of one state: per dose the posterior mean P(DLT) and the
    probabilities of under-, target and overdosing."""

    __slots__ = ("post", "p_mean", "p_under", "p_target", "p_over")

    def __init__(self, post: Posterior2D):
        self.post = post
        self.p_mean = post.p_mean
        self.p_under = tuple(b[0] for b in post.below)
        self.p_target = tuple(max(b[1] - b[0], 0.0) for b in post.below)
        self.p_over = tuple(max(1.0 - b[1], 0.0) for b in post.below)


@dataclass(frozen=True)
class BLRM(Design):
    """BLRM with EWOC (see the module docstring)."""

    n_doses: int
    dose_amounts: Tuple[float, ...]
    reference_dose: float
    prior_mean: Tuple[float, float]
    prior_sd: Tuple[float, float] = DEFAULT_PRIOR_SD
    prior_corr: float = 0.0
    target_interval: Tuple[float, float] = DEFAULT_INTERVAL
    overdose_cutoff: float = DEFAULT_OVERDOSE_CUTOFF
    max_step: Optional[float] = 1.0
    no_skipping: bool = True
    stop_n_at_mtd: Optional[int] = 6
    stop_p_target: float = 0.5
    if_no_admissible: str = "stop"
    cohort_size: int = 1
    start_dose: int = 0
    target: Optional[float] = None          # the scenario target (display only)
    name: str = "blrm"

    def __post_init__(self):
        for f in ("dose_amounts", "prior_mean", "prior_sd", "target_interval"):
            object.__setattr__(self, f, tuple(float(v) for v in getattr(self, f)))
        amounts = self.dose_amounts
        if len(amounts) != self.n_doses:
            raise ValueError(f"dose_amounts has {len(amounts)} values for {self.n_doses} doses "
                             f"(got {list(amounts)})")
        if not all(math.isfinite(a) and a > 0 for a in amounts):
            raise ValueError(f"dose amounts must be positive numbers (got {list(amounts)})")
        if any(b <= a for a, b in zip(amounts, amounts[1:])):
            raise ValueError(f"dose amounts must be strictly increasing (got {list(amounts)})")
        if not (math.isfinite(self.reference_dose) and self.reference_dose > 0):
            raise ValueError(f"reference_dose must be a positive amount "
                             f"(got {self.reference_dose})")
        lo, hi = self.target_interval
        if not 0 < lo < hi < 1:
            raise ValueError(f"target_interval must be [lo, hi] with 0 < lo < hi < 1 "
                             f"(got {list(self.target_interval)})")
        if not 0 < self.overdose_cutoff <= 1:
            raise ValueError(f"overdose_cutoff must lie in (0, 1] (got {self.overdose_cutoff})")
        if self.max_step is not None and not self.max_step > 0:
            raise ValueError(f"max_step must be > 0 or null (got {self.max_step})")
        if self.stop_n_at_mtd is not None and self.stop_n_at_mtd < 1:
            raise ValueError(f"stop_n_at_mtd must be >= 1 or null (got {self.stop_n_at_mtd})")
        if not 0 <= self.stop_p_target <= 1:
            raise ValueError(f"stop_p_target must lie in [0, 1] (got {self.stop_p_target})")
        if self.if_no_admissible not in ("stop", "treat_lowest"):
            raise ValueError(f"if_no_admissible must be 'stop' or 'treat_lowest' "
                             f"(got {self.if_no_admissible!r})")
        if not 0 <= self.start_dose < self.n_doses:
            raise ValueError(f"start_dose {self.start_dose} outside 0..{self.n_doses - 1}")
        if self.cohort_size < 1:
            raise ValueError(f"cohort_size must be >= 1 (got {self.cohort_size})")
        _ = self.prior  # validates the prior

    # -- model ------------------------------------------------------------------------
    @property
    def prior(self) -> Prior2D:
        return Prior2D(self.prior_mean[0], self.prior_mean[1], self.prior_sd[0],
                       self.prior_sd[1], self.prior_corr)

    @property
    def log_dose_ratio(self) -> Tuple[float, ...]:
        """x_d = log(d / d*)."""
        return tuple(math.log(a / self.reference_dose) for a in self.dose_amounts)

    def fit(self, state: TrialState) -> BLRMFit:
        g = logistic_grid(self.log_dose_ratio, self.prior, self.target_interval)
        return BLRMFit(posterior(g, tuple(state.n), tuple(state.y)))

    def _ewoc_ok(self, fit: BLRMFit) -> List[bool]:
        return [p < self.overdose_cutoff for p in fit.p_over]

    def _caps(self, state: TrialState) -> Tuple[int, List[str]]:
        """Highest dose the escalation caps allow (0-based) and the caps' descriptions."""
        top, why = self.n_doses - 1, []
        if self.max_step is not None and state.current is not None:
            bound = (1.0 + self.max_step) * self.dose_amounts[state.current] * (1 + _STEP_TOL)
            step_top = max(d for d in range(self.n_doses) if self.dose_amounts[d] <= bound)
            if step_top < top:
                top = step_top
                why.append(f"max step {self.max_step:g} from dose {state.current + 1}: "
                           f"at most dose {step_top + 1}")
        if self.no_skipping:
            skip_top = min(state.highest_tried + 1, self.n_doses - 1)
            if skip_top < top:
                top = skip_top
                why.append(f"no skipping: at most dose {skip_top + 1}")
        return top, why

    def _best(self, fit: BLRMFit, doses) -> Optional[int]:
        best = None
        for d in doses:
            if best is None or fit.p_target[d] > fit.p_target[best]:
                best = d
        return best

    def _stop_rule(self, state: TrialState, fit: BLRMFit, d: int) -> bool:
        return (self.stop_n_at_mtd is not None and state.n[d] >= self.stop_n_at_mtd
                and fit.p_target[d] >= self.stop_p_target)

    def _recommend(self, state: TrialState, fit: BLRMFit):
        """(dose or None, reason)."""
        lo, hi = self.target_interval
        ok = self._ewoc_ok(fit)
        top, caps = self._caps(state)
        allowed = [d for d in range(top + 1) if ok[d]]
        if not allowed:
            return None, (f"no dose passes EWOC: P(DLT rate >= {hi:g}) at dose 1 = "
                          f"{fit.p_over[0]:.3f} >= {self.overdose_cutoff:g}")
        d = self._best(fit, allowed)
        n_ok = sum(ok)
        span = "dose 1" if n_ok == 1 else f"doses 1-{n_ok}"
        reason = (f"highest P({lo:g} <= DLT rate < {hi:g}) = {fit.p_target[d]:.3f} at dose "
                  f"{d + 1} among the admissible doses (EWOC P(DLT rate >= {hi:g}) < "
                  f"{self.overdose_cutoff:g}: {span}")
        reason += "; " + "; ".join(caps) + ")" if caps and top + 1 < n_ok else ")"
        return d, reason

    # -- interface ---------------------------------------------------------------------
    def decide(self, state: TrialState) -> Decision:
        if state.current is None or state.total_n == 0:
            return Decision.treat(self.start_dose, self.cohort_size,
                                  f"start at dose {self.start_dose + 1}")
        fit = self.fit(state)
        d, reason = self._recommend(state, fit)
        if d is None:
            if self.if_no_admissible == "stop":
                return Decision.halt(StopReason.NO_ADMISSIBLE_DOSE, reason)
            return Decision(0, self.cohort_size, reason + "; treating at dose 1 anyway "
                            "(if_no_admissible: treat_lowest)", None, fit.p_mean)
        if self._stop_rule(state, fit, d):
            return Decision.halt(StopReason.RULE_COMPLETE,
                                 f"{reason}; dose {d + 1} already has {state.n[d]} patients "
                                 f"(>= {self.stop_n_at_mtd}) and P(target) >= "
                                 f"{self.stop_p_target:g}: MTD dose {d + 1}")
        return Decision(d, self.cohort_size, reason, None, fit.p_mean)

    def canonical(self, state: TrialState):
        """Decisions use the counts and, through the max-step cap, the current dose."""
        return (state.n, state.y, state.current if self.max_step is not None else None)

    def select_mtd(self, state: TrialState) -> Optional[int]:
        if state.total_n == 0:
            return None
        fit = self.fit(state)
        if state.current is not None:
            d, _ = self._recommend(state, fit)
            if d is not None and self._stop_rule(state, fit, d):
                return d
        ok = self._ewoc_ok(fit)
        return self._best(fit, [d for d in range(self.n_doses) if state.n[d] > 0 and ok[d]])

    def credible_intervals(self, state: TrialState, level: float = 0.95) -> Dict[str, Any]:
        """Posterior quantiles of p_d on the quadrature grid, with the posterior means."""
        from .intervals import grid_cdf_intervals
        from .quadrature2d import log_posterior
        g = logistic_grid(self.log_dose_ratio, self.prior, self.target_interval)
        ld = log_posterior(g, tuple(state.n), tuple(state.y))
        return grid_cdf_intervals(g, ld, self.fit(state).p_mean, level,
                                  "posterior quantiles of p (quadrature)")

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        fit = self.fit(state)
        lo, hi = self.target_interval
        return {
            "p_mean": list(fit.p_mean),
            f"p_underdose (<{lo:g})": list(fit.p_under),
            f"p_target ([{lo:g}, {hi:g}))": list(fit.p_target),
            f"p_overdose (>={hi:g})": list(fit.p_over),
            "too_toxic": [not ok for ok in self._ewoc_ok(fit)],
            "log_alpha_mean": fit.post.theta_mean[0],
            "log_beta_mean": fit.post.theta_mean[1],
            "dose_amounts": list(self.dose_amounts),
            "reference_dose": self.reference_dose,
        }


# --------------------------------------------------------------------------------------
def _pair(name: str):
    def check(v):
        if v is None:
            return v
        if not (isinstance(v, (list, tuple)) and len(v) == 2):
            raise ValueError(f"{name} must be a list of two numbers (got {v!r})")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                   and math.isfinite(x) for x in v):
            raise ValueError(f"{name} must be two finite numbers (got {list(v)})")
        return [float(x) for x in v]
    return check


class Spec(DesignSpecBase):
    """BLRM with EWOC in the scenario file (``type: blrm``)."""

    type: Literal["blrm"] = "blrm"
    dose_amounts: Optional[List[float]] = Field(
        default=None, description="dose amounts, one per dose, increasing; default: the "
                                  "scenario's doses[].amount (give one or the other)")
    reference_dose: Optional[float] = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="reference dose d* (an amount); default: the amount of dose K//2 + 1")
    prior_mean: Optional[List[float]] = Field(
        default=None, description="prior means of (log alpha, log beta); default "
                                  "(logit(target), 0)")
    prior_sd: List[float] = Field(default=list(DEFAULT_PRIOR_SD),
                                  description="prior SDs of (log alpha, log beta)")
    prior_corr: float = Field(default=0.0, gt=-1, lt=1,
                              description="prior correlation of log alpha and log beta")
    target_interval: List[float] = Field(
        default=list(DEFAULT_INTERVAL),
        description="[lo, hi]: target interval [lo, hi); underdosing below lo, overdosing "
                    "[hi, 1] (NBG 2008: [0.16, 0.33])")
    overdose_cutoff: float = Field(default=DEFAULT_OVERDOSE_CUTOFF, gt=0, le=1,
                                   description="EWOC: admissible doses have "
                                               "P(overdosing) < this")
    max_step: Optional[float] = Field(
        default=1.0, gt=0, description="next dose amount <= (1 + max_step) x current amount "
                                       "(1.0: at most doubling); null: no cap")
    no_skipping: bool = Field(default=True,
                              description="never more than one level above the highest "
                                          "dose tried")
    stop_n_at_mtd: Optional[int] = Field(
        default=6, ge=1, description="stop when the recommended dose already has this many "
                                     "patients and P(target) >= stop_p_target; null: off")
    stop_p_target: float = Field(default=0.5, ge=0, le=1,
                                 description="see stop_n_at_mtd")
    if_no_admissible: Literal["stop", "treat_lowest"] = Field(
        default="stop", description="when no dose passes EWOC: stop with no MTD, or treat "
                                    "at dose 1 anyway")

    @field_validator("dose_amounts", mode="before")
    @classmethod
    def _amounts(cls, v):
        if v is None:
            return v
        if not isinstance(v, (list, tuple)) or not v or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ValueError(f"dose_amounts must be a list of numbers (got {v!r})")
        vals = [float(x) for x in v]
        if not all(math.isfinite(x) and x > 0 for x in vals):
            raise ValueError(f"dose amounts must be positive (got {vals})")
        if any(b <= a for a, b in zip(vals, vals[1:])):
            raise ValueError(f"dose amounts must be strictly increasing (got {vals})")
        return vals

    _prior_mean = field_validator("prior_mean", mode="before")(
        classmethod(lambda cls, v: _pair("prior_mean")(v)))
    _prior_sd = field_validator("prior_sd", mode="before")(
        classmethod(lambda cls, v: _pair("prior_sd")(v)))
    _interval = field_validator("target_interval", mode="before")(
        classmethod(lambda cls, v: _pair("target_interval")(v)))

    @field_validator("prior_sd")
    @classmethod
    def _sd_positive(cls, v):
        if not all(x > 0 for x in v):
            raise ValueError(f"prior_sd must be two positive numbers (got {v})")
        return v

    @field_validator("target_interval")
    @classmethod
    def _interval_order(cls, v):
        if not 0 < v[0] < v[1] < 1:
            raise ValueError(f"target_interval must be [lo, hi] with 0 < lo < hi < 1 (got {v})")
        return v

    @model_validator(mode="after")
    def _stop_options(self) -> "Spec":
        if self.stop_n_at_mtd is None and "stop_p_target" in self.model_fields_set:
            raise ValueError(f"stop_p_target has no effect when stop_n_at_mtd is null "
                             f"(got stop_p_target {self.stop_p_target})")
        return self


def resolve_amounts(spec: Spec, ctx: DesignContext) -> Tuple[float, ...]:
    """The dose amounts: the spec's ``dose_amounts`` or the scenario's ``doses[].amount``."""
    if spec.dose_amounts is not None:
        if ctx.dose_amounts is not None and any(a is not None for a in ctx.dose_amounts):
            raise ValueError("dose_amounts is given both in the design and in the scenario's "
                             "doses[].amount; give it in one place (got dose_amounts "
                             f"{spec.dose_amounts} and doses amounts "
                             f"{list(ctx.dose_amounts)})")
        if len(spec.dose_amounts) != ctx.n_doses:
            raise ValueError(f"dose_amounts has {len(spec.dose_amounts)} values for "
                             f"{ctx.n_doses} doses (got {spec.dose_amounts})")
        return tuple(spec.dose_amounts)
    given = ctx.dose_amounts
    if given is None or any(a is None for a in given):
        missing = (list(range(1, ctx.n_doses + 1)) if given is None
                   else [i + 1 for i, a in enumerate(given) if a is None])
        raise ValueError("the blrm design needs every dose's amount (its model is in "
                         "log(dose / reference dose)): write the doses as {label: DL1, "
                         "amount: 25e6}, or give the design dose_amounts (got no amount for "
                         f"dose{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(str(m) for m in missing)})")
    vals = tuple(float(a) for a in given)  # type: ignore[arg-type]
    if any(b <= a for a, b in zip(vals, vals[1:])):
        raise ValueError(f"the blrm design needs strictly increasing dose amounts "
                         f"(got {list(vals)})")
    return vals


def make(spec: Spec, ctx: DesignContext) -> Design:
    c = spec.context(ctx)
    amounts = resolve_amounts(spec, c)
    ref = spec.reference_dose if spec.reference_dose is not None else amounts[c.n_doses // 2]
    if spec.prior_mean is not None:
        mean = tuple(spec.prior_mean)
    else:
        if c.target is None:
            raise ValueError("prior_mean is required when no target is given (the default "
                             "is (logit(target), 0))")
        mean = (_logit(c.target), 0.0)
    return BLRM(n_doses=c.n_doses, dose_amounts=amounts, reference_dose=float(ref),
                prior_mean=mean, prior_sd=tuple(spec.prior_sd), prior_corr=spec.prior_corr,
                target_interval=tuple(spec.target_interval),
                overdose_cutoff=spec.overdose_cutoff, max_step=spec.max_step,
                no_skipping=spec.no_skipping, stop_n_at_mtd=spec.stop_n_at_mtd,
                stop_p_target=spec.stop_p_target, if_no_admissible=spec.if_no_admissible,
                cohort_size=c.cohort_size, start_dose=c.start_dose, target=c.target,
                name=spec.name or spec.type)


def blrm_table(request: TableRequest) -> DecisionTable:
    """The next-cohort table (model-based: no fixed boundary table).  The doses come from
    ``dose_amounts`` (``--option dose_amounts=[...]``)."""
    amounts = request.spec.dose_amounts  # type: ignore[attr-defined]
    if amounts is None:
        raise TableInputError("dose_amounts", "required by the blrm table: the model is in "
                                              "log(dose / reference dose), e.g. "
                                              "dose_amounts=[10,20,40,80]")
    if request.n_doses is not None and request.n_doses != len(amounts):
        raise TableInputError("n_doses", f"dose_amounts lists {len(amounts)} doses "
                                         f"(got {request.n_doses})")
    return next_cohort_table(request, n_doses=len(amounts))


register(DesignEntry(type="blrm", spec_model=Spec, make=make, design_class=BLRM,
                     table=blrm_table,
                     summary="Bayesian logistic regression with EWOC (Neuenschwander et al. "
                             "2008)"))
