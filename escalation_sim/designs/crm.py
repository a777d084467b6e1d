"""The continual reassessment method (CRM), Bayesian one-parameter version.

References
----------
* O'Quigley J, Pepe M, Fisher L (1990). Continual reassessment method: a practical design for
  phase 1 clinical trials in cancer. Biometrics 46:33-48.
* Cheung YK (2011). Dose Finding by the Continual Reassessment Method. Chapman & Hall/CRC.
* Cheung YK (2005). Coherence principles in dose-finding studies. Biometrika 92:863-873.
* Lee SM, Cheung YK (2009). Model calibration in the continual reassessment method.
  Clinical Trials 6:227-238 (skeleton by indifference intervals, :func:`getprior`).
* R package dfcrm (Cheung): ``crm()`` / ``crmsim()`` with ``method = "bayes"``.  The defaults
  below reproduce it; every departure is a named option or listed under "Deviations".

Model
-----
Doses d = 1..K with skeleton s_1 < ... < s_K in (0, 1).  One parameter beta with prior
N(0, sigma^2), ``prior_var`` = sigma^2 = 1.34 by default (dfcrm ``scale = sqrt(1.34)``).

* ``model="empiric"`` (power model, dfcrm default): p_d(beta) = s_d ** exp(beta).
* ``model="logistic"``: p_d(beta) = 1 / (1 + exp(-(a0 + exp(beta) x_d))) with fixed
  intercept a0 = ``intcpt`` = 3 and scaled doses x_d = logit(s_d) - a0 (all must be < 0,
  as in dfcrm), so that p_d(0) = s_d.
* ``model="logistic2"``: the two-parameter logistic model p_d(a, b) = 1 / (1 + exp(-(a +
  exp(b) x_d))) with a bivariate normal prior: a ~ N(``intcpt``, ``intcpt_var``), b ~ N(0,
  ``prior_var``), correlation ``prior_corr`` (O'Quigley, Pepe & Fisher 1990 discuss it; it
  is trialr's ``logistic2``).  Dose labels by backward substitution at the prior means
  (Cheung 2011, as trialr does): x_d = (logit(s_d) - E[a]) / exp(E[b]) = logit(s_d) -
  ``intcpt``, so that the model at the prior means reproduces the skeleton - the same labels
  as the one-parameter logistic model, which is the limit intcpt_var -> 0.  Choices (no
  published default exists for the intercept's prior): ``intcpt_var`` 1.34, the variance
  dfcrm gives the slope, and ``prior_corr`` 0; the skeleton calibration (``getprior``) is
  the logistic model's.  The posterior is integrated on the 2-D grid of
  :mod:`~escalation_sim.designs.quadrature2d` (shared with BLRM); ``plugin`` evaluates p_d
  at the posterior means of (a, b); Pr(p_1 > target) uses the grid's exact cut weights.
  Not available with ``tite-crm`` (its pending-patient weights use the 1-D grid).

With n_d patients and y_d DLTs at dose d the posterior is proportional to
exp(-beta^2 / (2 sigma^2)) * prod_d p_d^y_d (1 - p_d)^(n_d - y_d).  It is integrated in log
space by composite Gauss-Legendre quadrature (8 nodes per panel of width <= 0.1 over
[-B, B], B = max(10, 12 sigma); nodes and the K x G tables of log p_d, log(1 - p_d) are
computed once per design), which agrees with adaptive quadrature to ~1e-12 for the posterior
mean of beta, the posterior mean of each p_d and Pr(p_1 > target | data) (see
tests/test_crm.py).  Pr(p_1 > target) is Pr(beta < b*) with b* = log(log(t)/log(s_1))
(empiric) or log((logit(t) - a0)/x_1) (logistic); the node set is split exactly at b*.

Estimate (``estimate``)
  ``"plugin"`` (dfcrm): p_hat_d = p_d(E[beta | data]).  ``"posterior_mean"``: E[p_d | data].

Next dose (``decide``)
  Before any patient: ``start_dose`` (dfcrm ``x0``), one cohort.  Afterwards the dose whose
  p_hat is closest to the target (ties to the lower dose; so all p_hat above target gives dose
  1 and all below gives the top dose, as in dfcrm).  Then, when ``restrict`` is true, exactly
  dfcrm ``crmsim``'s restriction: if the last cohort's observed DLT rate last_y/last_n is
  >= target the dose is capped at the last cohort's dose (coherence, Cheung 2005); otherwise
  it is capped at the last cohort's dose + 1 (no skipping: escalation is by one level from
  the dose just given, which also never skips an untried dose).
  ``restrict: no_skip_only`` is dfcrm ``titesim``'s restriction: the cap at the last dose + 1
  only, so escalation right after a toxic cohort is allowed (``titesim``'s help page
  describes both restrictions, but its code applies only this one).  ``restrict: false``:
  purely model-based.
  Options not in dfcrm:
  ``safety_threshold`` (e.g. 0.9): stop with ``LOWEST_DOSE_TOO_TOXIC`` when
  Pr(p_1 > target | data) > threshold; ``select_mtd`` then returns None.
  ``two_stage`` (0-based doses, one cohort per entry): the initial escalation sequence, used
  while no DLT has been observed (the stage is derived from the counts: stage 1 iff total_y
  == 0 and the sequence is not used up); from the first DLT on the model (with the
  restrictions above) decides.  The trial starts at ``two_stage[0]``.

Final recommendation (``select_mtd``)
  The unrestricted model choice on all data (dfcrm ``crm()$mtd``), None when no patient was
  treated or when the safety rule applies.

Scenario keys (``type: crm``)
  ``skeleton``: a list (one strictly increasing probability per dose) or
  ``{halfwidth: 0.05, prior_mtd: 3}`` (1-based prior MTD; calibrated by :func:`getprior` for
  the chosen model).  Omitted: halfwidth 0.05 at the upper median dose K//2 + 1 (an
  escalation-sim default; dfcrm has none).  ``model``, ``prior_var``, ``intcpt``,
  ``intcpt_var`` and ``prior_corr`` (``logistic2`` only), ``estimate``, ``restrict``,
  ``safety_threshold``, ``two_stage`` (1-based doses) as above.

Deviations from dfcrm (all tiny or in non-default settings)
  * dfcrm integrates the numerator of E[beta] over [-10, 10] and the denominator over the
    whole line with ``integrate``; here both use [-B, B] (difference < 1e-15 at the default
    prior).
  * dfcrm's two-stage ``crmsim`` uses a prior sd of 500 for the model fit while *every*
    outcome so far is a DLT (e.g. the very first cohort is all DLT); we keep the N(0, sigma^2)
    prior throughout.  dfcrm's initial design ``x0`` is per patient and as long as the trial;
    ``two_stage`` here is per cohort and, when it is used up with no DLT, the model takes
    over.
  * ``select_mtd`` gives None with no data (dfcrm needs data to call ``crm``).
  * The maximum-likelihood variant (``method = "mle"``) is not offered.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, List, Literal, NamedTuple, Optional, Tuple, Union

import numpy as np
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator)

from ..types import Decision, StopReason, TrialState
from .base import Design, DesignContext, DesignSpecBase, closest_to_target
from .quadrature2d import Prior2D, log_posterior, logistic_grid, posterior as posterior2d
from .registry import DesignEntry, register
from .tables import DecisionTable, TableInputError, TableRequest, next_cohort_table

DEFAULT_PRIOR_VAR = 1.34
DEFAULT_INTCPT = 3.0
DEFAULT_HALFWIDTH = 0.05
DEFAULT_INTCPT_VAR = 1.34       # logistic2: prior variance of the intercept (our choice)
MODELS = ("empiric", "logistic", "logistic2")

# composite Gauss-Legendre rule: _GL_Q nodes on panels no wider than _PANEL
_GL_Q = 8
_GL_X, _GL_W = np.polynomial.legendre.leggauss(_GL_Q)
_PANEL = 0.1


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


# --------------------------------------------------------------------------------------
# skeleton calibration (Lee & Cheung 2009)
def getprior(halfwidth: float, target: float, prior_mtd: int, n_doses: int,
             model: str = "empiric", intcpt: float = DEFAULT_INTCPT) -> Tuple[float, ...]:
    """Skeleton by indifference intervals (Lee & Cheung 2009), as dfcrm ``getprior``.

    ``prior_mtd`` is 1-based.  The prior MTD gets p = ``target``; each neighbour is placed so
    that the model switches between the two doses where the DLT rate crosses target +/-
    ``halfwidth``.  Empiric model: going down, log s_{k-1} = log s_k * log(t-δ)/log(t+δ);
    going up, log s_{k+1} = log s_k * log(t+δ)/log(t-δ).  Logistic model: the same recursion
    on the scaled doses x_k = logit(s_k) - a0 with logit(t±δ) - a0 in place of log(t±δ), and
    s_k = expit(a0 + x_k).

    ``model="logistic2"`` uses the logistic recursion (its dose labels are the logistic
    model's at the prior means).

    >>> [round(v, 4) for v in getprior(0.05, 0.3, 3, 4)]
    [0.1225, 0.204, 0.3, 0.4018]
    """
    if model == "logistic2":
        model = "logistic"
    if not 0 < target < 1:
        raise ValueError(f"target must lie in (0, 1) (got {target})")
    if not 0 < halfwidth < min(target, 1 - target):
        raise ValueError(f"halfwidth must lie in (0, {min(target, 1 - target):g}) so that "
                         f"target +/- halfwidth stays inside (0, 1) (got {halfwidth})")
    if n_doses < 1:
        raise ValueError(f"n_doses must be >= 1 (got {n_doses})")
    if not 1 <= prior_mtd <= n_doses:
        raise ValueError(f"prior_mtd must be between 1 and {n_doses} (got {prior_mtd})")
    nu = prior_mtd - 1
    lo, hi = target - halfwidth, target + halfwidth
    if model == "empiric":
        x = [0.0] * n_doses
        x[nu] = math.log(target)
        a_lo, a_hi = math.log(lo), math.log(hi)
    elif model == "logistic":
        a_lo, a_hi = _logit(lo) - intcpt, _logit(hi) - intcpt
        if a_hi >= 0:
            raise ValueError(f"intcpt {intcpt} is too small for the logistic skeleton: "
                             f"logit(target + halfwidth) = {_logit(hi):.4g} must be < intcpt")
        x = [0.0] * n_doses
        x[nu] = _logit(target) - intcpt
    else:
        raise ValueError(f"model must be one of {', '.join(MODELS)} (got {model!r})")
    for k in range(nu, 0, -1):          # downwards: dose k-1 from dose k
        slope = a_hi / x[k]             # exp(b_k), the value at which p_k = t + δ
        x[k - 1] = a_lo / slope         # dose k-1 reaches t - δ at that same beta
    for k in range(nu, n_doses - 1):    # upwards: dose k+1 from dose k
        slope = a_lo / x[k]
        x[k + 1] = a_hi / slope
    if model == "empiric":
        return tuple(math.exp(v) for v in x)
    return tuple(1.0 / (1.0 + math.exp(-(intcpt + v))) for v in x)


# --------------------------------------------------------------------------------------
# posterior by quadrature
def _composite_gl(a: float, b: float) -> Tuple[np.ndarray, np.ndarray]:
    if not b > a:
        return np.empty(0), np.empty(0)
    m = max(1, int(math.ceil((b - a) / _PANEL - 1e-9)))
    edges = np.linspace(a, b, m + 1)
    half = 0.5 * (edges[1:] - edges[:-1])
    mid = 0.5 * (edges[1:] + edges[:-1])
    x = (mid[:, None] + half[:, None] * _GL_X[None, :]).ravel()
    w = (half[:, None] * _GL_W[None, :]).ravel()
    return x, w


def tox_threshold_beta(skeleton, target: float, model: str, intcpt: float) -> float:
    """b* with p_1(beta) > target  <=>  beta < b* (-inf when p_1 can never exceed target)."""
    s1 = skeleton[0]
    if model == "empiric":
        return math.log(math.log(target) / math.log(s1))
    x1 = _logit(s1) - intcpt
    num = _logit(target) - intcpt
    if num >= 0:
        return -math.inf
    return math.log(num / x1)


def dose_tox(beta, skeleton, model: str, intcpt: float) -> np.ndarray:
    """p_d(beta) for every dose (broadcast: result has shape (K,) + shape(beta))."""
    beta = np.asarray(beta, dtype=float)
    s = np.asarray(skeleton, dtype=float).reshape((-1,) + (1,) * beta.ndim)
    if model == "empiric":
        return s ** np.exp(beta)
    x = np.log(s / (1 - s)) - intcpt
    return 1.0 / (1.0 + np.exp(-(intcpt + np.exp(beta) * x)))


class _Grid:
    """Quadrature nodes and per-dose tables for one (skeleton, model, prior, target)."""

    def __init__(self, skeleton: Tuple[float, ...], model: str, intcpt: float,
                 prior_var: float, target: float):
        sigma = math.sqrt(prior_var)
        bound = max(10.0, 12.0 * sigma)
        bstar = tox_threshold_beta(skeleton, target, model, intcpt)
        cut = min(max(bstar, -bound), bound)
        x1, w1 = _composite_gl(-bound, cut)
        x2, w2 = _composite_gl(cut, bound)
        self.split = len(x1)                      # nodes [0, split) have beta < b*
        self.nodes = np.concatenate([x1, x2])
        w = np.concatenate([w1, w2])
        self.log_w = np.log(w) - 0.5 * self.nodes ** 2 / prior_var
        s = np.asarray(skeleton, dtype=float)[:, None]
        eb = np.exp(self.nodes)[None, :]
        if model == "empiric":
            logp = eb * np.log(s)                            # log p = exp(beta) log s
            log1mp = np.log(-np.expm1(logp))
        else:
            eta = intcpt + eb * (np.log(s / (1 - s)) - intcpt)
            logp = -np.logaddexp(0.0, -eta)
            log1mp = -np.logaddexp(0.0, eta)
        self.logp = np.ascontiguousarray(logp)
        self.log1mp = np.ascontiguousarray(log1mp)
        self.p = np.exp(self.logp)
        self.skeleton = skeleton
        self.model = model
        self.intcpt = intcpt


@lru_cache(maxsize=256)
def _grid(skeleton: Tuple[float, ...], model: str, intcpt: float, prior_var: float,
          target: float) -> _Grid:
    return _Grid(skeleton, model, intcpt, prior_var, target)


class CRMFit(NamedTuple):
    beta_mean: float                 # E[beta | data]
    p_plugin: Tuple[float, ...]      # p_d(E[beta | data])   (dfcrm ptox)
    p_mean: Tuple[float, ...]        # E[p_d | data]
    pr_p1_above: float               # Pr(p_1 > target | data)
    intercept_mean: Optional[float] = None   # E[a | data] (logistic2 only)


@lru_cache(maxsize=1 << 16)
def _fit(grid: _Grid, n: Tuple[int, ...], y: Tuple[int, ...]) -> CRMFit:
    nn = np.asarray(n, dtype=float)
    yy = np.asarray(y, dtype=float)
    lw = grid.log_w + yy @ grid.logp + (nn - yy) @ grid.log1mp
    w = np.exp(lw - lw.max())
    z = w.sum()
    beta_mean = float(grid.nodes @ w / z)
    p_mean = grid.p @ w / z
    pr = float(w[:grid.split].sum() / z)
    plug = dose_tox(beta_mean, grid.skeleton, grid.model, grid.intcpt)
    return CRMFit(beta_mean, tuple(float(v) for v in plug), tuple(float(v) for v in p_mean),
                  min(max(pr, 0.0), 1.0))


def logistic2_labels(skeleton, intcpt: float) -> Tuple[float, ...]:
    """Dose labels of the two-parameter model: x_d = logit(s_d) - intcpt (backward
    substitution at the prior means a = intcpt, b = 0)."""
    return tuple(_logit(float(v)) - float(intcpt) for v in skeleton)


def crm2_posterior(skeleton, n, y, intcpt: float = DEFAULT_INTCPT,
                   intcpt_var: float = DEFAULT_INTCPT_VAR,
                   prior_var: float = DEFAULT_PRIOR_VAR, prior_corr: float = 0.0,
                   target: float = 0.3) -> CRMFit:
    """Posterior summaries of the two-parameter logistic model (``model="logistic2"``)."""
    prior = Prior2D(float(intcpt), 0.0, math.sqrt(intcpt_var), math.sqrt(prior_var),
                    float(prior_corr))
    g = logistic_grid(logistic2_labels(skeleton, intcpt), prior, (float(target),))
    post = posterior2d(g, tuple(int(v) for v in n), tuple(int(v) for v in y))
    return CRMFit(post.theta_mean[1], post.p_plugin, post.p_mean,
                  min(max(1.0 - post.below[0][0], 0.0), 1.0), post.theta_mean[0])


def crm_posterior(skeleton, n, y, model: str = "empiric", prior_var: float = DEFAULT_PRIOR_VAR,
                  intcpt: float = DEFAULT_INTCPT, target: float = 0.3,
                  intcpt_var: float = DEFAULT_INTCPT_VAR, prior_corr: float = 0.0) -> CRMFit:
    """Posterior summaries for per-dose counts ``n`` / DLTs ``y`` (0-based dose order)."""
    if model == "logistic2":
        return crm2_posterior(skeleton, n, y, intcpt, intcpt_var, prior_var, prior_corr,
                              target)
    g = _grid(tuple(float(v) for v in skeleton), model, float(intcpt), float(prior_var),
              float(target))
    return _fit(g, tuple(int(v) for v in n), tuple(int(v) for v in y))


# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CRM(Design):
    """Bayesian one-parameter CRM (see the module docstring for the rules and defaults)."""

    n_doses: int
    target: float
    skeleton: Tuple[float, ...]
    model: str = "empiric"
    prior_var: float = DEFAULT_PRIOR_VAR
    intcpt: float = DEFAULT_INTCPT
    estimate: str = "plugin"
    cohort_size: int = 1
    start_dose: int = 0
    restrict: Union[bool, str] = True
    safety_threshold: Optional[float] = None
    two_stage: Optional[Tuple[int, ...]] = None
    name: str = "crm"
    intcpt_var: float = DEFAULT_INTCPT_VAR     # logistic2 only
    prior_corr: float = 0.0                    # logistic2 only

    def __post_init__(self):
        # keep the design hashable even when given lists
        object.__setattr__(self, "skeleton", tuple(float(v) for v in self.skeleton))
        if self.two_stage is not None:
            object.__setattr__(self, "two_stage", tuple(int(d) for d in self.two_stage))
        check_skeleton(self.skeleton, self.n_doses)
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)} (got {self.model!r})")
        if not (self.restrict is True or self.restrict is False
                or self.restrict == "no_skip_only"):
            raise ValueError(f"restrict must be true, false or 'no_skip_only' "
                             f"(got {self.restrict!r})")
        if self.estimate not in ("plugin", "posterior_mean"):
            raise ValueError(f"estimate must be 'plugin' or 'posterior_mean' "
                             f"(got {self.estimate!r})")
        if not 0 < self.target < 1:
            raise ValueError(f"target must lie in (0, 1) (got {self.target})")
        if not self.prior_var > 0:
            raise ValueError(f"prior_var must be > 0 (got {self.prior_var})")
        if self.model == "logistic":
            check_logistic_intercept(self.skeleton, self.intcpt)
        if self.model == "logistic2":
            if self.time_to_event:
                raise ValueError("model logistic2 is not available with tite-crm (the "
                                 "pending-patient likelihood uses the one-parameter grid)")
            if not (math.isfinite(self.intcpt_var) and self.intcpt_var > 0):
                raise ValueError(f"intcpt_var must be > 0 (got {self.intcpt_var})")
            if not -1 < self.prior_corr < 1:
                raise ValueError(f"prior_corr must lie in (-1, 1) (got {self.prior_corr})")
        if not 0 <= self.start_dose < self.n_doses:
            raise ValueError(f"start_dose {self.start_dose} outside 0..{self.n_doses - 1}")
        if self.cohort_size < 1:
            raise ValueError(f"cohort_size must be >= 1 (got {self.cohort_size})")
        if self.safety_threshold is not None and not 0 < self.safety_threshold < 1:
            raise ValueError(f"safety_threshold must lie in (0, 1) (got {self.safety_threshold})")
        if self.two_stage is not None:
            if len(self.two_stage) == 0:
                raise ValueError("two_stage must list at least one dose")
            bad = [d for d in self.two_stage if not 0 <= d < self.n_doses]
            if bad:
                raise ValueError(f"two_stage doses must lie in 0..{self.n_doses - 1} "
                                 f"(got {list(self.two_stage)})")

    # -- model ------------------------------------------------------------------------
    def fit(self, state: TrialState) -> CRMFit:
        if self.model == "logistic2":
            return crm2_posterior(self.skeleton, state.n, state.y, self.intcpt,
                                  self.intcpt_var, self.prior_var, self.prior_corr,
                                  self.target)
        g = _grid(self.skeleton, self.model, float(self.intcpt), float(self.prior_var),
                  float(self.target))
        return _fit(g, tuple(state.n), tuple(state.y))

    def p_hat(self, fit: CRMFit) -> Tuple[float, ...]:
        return fit.p_plugin if self.estimate == "plugin" else fit.p_mean

    def _too_toxic(self, fit: CRMFit) -> bool:
        return self.safety_threshold is not None and fit.pr_p1_above > self.safety_threshold

    def _stage1_dose(self, state: TrialState) -> Optional[int]:
        """Next dose of the initial sequence, or None once the model is in charge."""
        if self.two_stage is None or state.total_y > 0:
            return None
        remaining = list(state.n)
        for d in self.two_stage:   # walk the sequence, consuming the cohorts already given
            if remaining[d] <= 0:
                return d
            remaining[d] -= min(self.cohort_size, remaining[d])
        return None

    # -- interface ---------------------------------------------------------------------
    def decide(self, state: TrialState) -> Decision:
        if state.current is None or state.total_n == 0:
            first = self.two_stage[0] if self.two_stage is not None else self.start_dose
            return Decision.treat(first, self.cohort_size, f"start at dose {first + 1}")
        fit = self.fit(state)
        p_hat = self.p_hat(fit)
        if self._too_toxic(fit):
            return Decision.halt(
                StopReason.LOWEST_DOSE_TOO_TOXIC,
                f"Pr(DLT rate at dose 1 > {self.target:g}) = {fit.pr_p1_above:.3f} > "
                f"{self.safety_threshold:g}")
        d1 = self._stage1_dose(state)
        if d1 is not None:
            return Decision(d1, self.cohort_size, f"initial sequence (no DLT yet): dose {d1 + 1}",
                            None, p_hat)
        rec = closest_to_target(p_hat, self.target)
        reason = f"estimate closest to {self.target:g} at dose {rec + 1}"
        if self.restrict is True:
            cur = state.current
            if state.last_n > 0 and state.last_y / state.last_n >= self.target:
                if rec > cur:
                    rec, reason = cur, reason + (f"; no escalation after {state.last_y}/"
                                                 f"{state.last_n} DLT (coherence)")
            elif rec > cur + 1:
                rec, reason = cur + 1, reason + "; escalation by one level (no skipping)"
        elif self.restrict == "no_skip_only" and rec > state.current + 1:
            rec, reason = state.current + 1, reason + "; escalation by one level (no skipping)"
        return Decision(rec, self.cohort_size, reason, None, p_hat)

    def exact_rules(self, max_n: int) -> Any:
        from .batch import CRMRules
        # empiric only: the batch posterior relies on its log posterior being concave
        if (self.model != "empiric" or self.two_stage is not None or self.time_to_event
                or any(getattr(type(self), m) is not getattr(CRM, m)
                       for m in ("decide", "select_mtd", "canonical", "fit", "p_hat",
                                 "_too_toxic"))):
            return None
        return CRMRules(self)

    def canonical(self, state: TrialState):
        """Decisions use the counts, the current dose and whether the last cohort's DLT rate
        reached the target (the coherence restriction, ``restrict: true`` only)."""
        last_toxic = (self.restrict is True and state.last_n > 0
                      and state.last_y / state.last_n >= self.target)
        return (state.n, state.y, state.current, last_toxic)

    def select_mtd(self, state: TrialState) -> Optional[int]:
        if state.total_n == 0:
            return None
        fit = self.fit(state)
        if self._too_toxic(fit):
            return None
        return closest_to_target(self.p_hat(fit), self.target)

    def posterior_log_weights(self, state: TrialState) -> np.ndarray:
        """Unnormalised log posterior weights of the one-parameter grid's nodes (quadrature
        weights included), the same terms as ``_fit``."""
        g = _grid(self.skeleton, self.model, float(self.intcpt), float(self.prior_var),
                  float(self.target))
        nn = np.asarray(state.n, dtype=float)
        yy = np.asarray(state.y, dtype=float)
        return g.log_w + yy @ g.logp + (nn - yy) @ g.log1mp

    def credible_intervals(self, state: TrialState, level: float = 0.95) -> Dict[str, Any]:
        """One-parameter models as dfcrm's ``crm()`` (beta's posterior mean +- z sd through
        the model); ``logistic2``: posterior quantiles of p_d on the quadrature grid
        (:mod:`escalation_sim.designs.intervals`)."""
        from .intervals import grid_cdf_intervals, normal_beta_intervals
        fit = self.fit(state)
        if self.model == "logistic2":
            prior = Prior2D(float(self.intcpt), 0.0, math.sqrt(self.intcpt_var),
                            math.sqrt(self.prior_var), float(self.prior_corr))
            g = logistic_grid(logistic2_labels(self.skeleton, self.intcpt), prior,
                              (float(self.target),))
            ld = log_posterior(g, tuple(state.n), tuple(state.y))
            return grid_cdf_intervals(g, ld, self.p_hat(fit), level,
                                      "posterior quantiles of p (quadrature)")
        g = _grid(self.skeleton, self.model, float(self.intcpt), float(self.prior_var),
                  float(self.target))
        lw = self.posterior_log_weights(state)
        w = np.exp(lw - lw.max())
        w /= w.sum()
        mean = float(g.nodes @ w)
        var = float(((g.nodes - mean) ** 2) @ w)
        out = normal_beta_intervals(
            mean, var, lambda b: dose_tox(b, self.skeleton, self.model, float(self.intcpt)),
            level)
        out["estimate"] = [float(v) for v in self.p_hat(fit)]
        return out

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        fit = self.fit(state)
        return {
            "p_hat": list(self.p_hat(fit)),
            "p_plugin": list(fit.p_plugin),
            "p_posterior_mean": list(fit.p_mean),
            "beta_mean": fit.beta_mean,
            "pr_dose1_above_target": fit.pr_p1_above,
            "skeleton": list(self.skeleton),
            **({"intercept_mean": fit.intercept_mean} if self.model == "logistic2" else {}),
        }


def check_skeleton(skeleton, n_doses: Optional[int] = None) -> None:
    vals = [float(v) for v in skeleton]
    if n_doses is not None and len(vals) != n_doses:
        raise ValueError(f"skeleton has {len(vals)} values but there are {n_doses} doses "
                         f"(got {vals})")
    if not vals:
        raise ValueError("skeleton must list one probability per dose (got [])")
    if not all(math.isfinite(v) and 0 < v < 1 for v in vals):
        raise ValueError(f"skeleton values must lie strictly between 0 and 1 (got {vals})")
    if any(b <= a for a, b in zip(vals, vals[1:])):
        raise ValueError(f"skeleton must be strictly increasing (got {vals})")


def check_logistic_intercept(skeleton, intcpt: float) -> None:
    bad = [v for v in skeleton if _logit(v) - intcpt >= 0]
    if bad:
        raise ValueError(f"intcpt {intcpt} is too small for the logistic model: every "
                         f"skeleton value must be below 1/(1+exp(-intcpt)) = "
                         f"{1 / (1 + math.exp(-intcpt)):.4f} (got {list(skeleton)})")


# --------------------------------------------------------------------------------------
class SkeletonCalibration(BaseModel):
    """Skeleton by indifference intervals (Lee & Cheung 2009)."""

    model_config = ConfigDict(extra="forbid")

    halfwidth: float = Field(default=DEFAULT_HALFWIDTH, gt=0, lt=0.5,
                             description="half-width delta of the indifference interval")
    prior_mtd: Optional[int] = Field(default=None, ge=1,
                                     description="1-based prior guess of the MTD; default "
                                                 "the upper median dose K//2 + 1")


class Spec(DesignSpecBase):
    """CRM in the scenario file."""

    type: Literal["crm"] = "crm"
    skeleton: Optional[Union[List[float], SkeletonCalibration]] = Field(
        default=None,
        description="prior DLT probabilities, one per dose, strictly increasing in (0, 1); or "
                    "{halfwidth: 0.05, prior_mtd: 3} to calibrate them (Lee & Cheung 2009); "
                    "default: calibrated with halfwidth 0.05 and prior_mtd K//2 + 1")
    model: Literal["empiric", "logistic", "logistic2"] = Field(
        default="empiric", description="empiric (power) p = s^exp(beta), one-parameter "
                                       "logistic with intercept intcpt, or logistic2: "
                                       "two-parameter logistic, intercept ~ N(intcpt, "
                                       "intcpt_var)")
    prior_var: float = Field(default=DEFAULT_PRIOR_VAR, gt=0, le=100,
                             description="variance of the normal prior on beta (dfcrm 1.34)")
    intcpt_var: Optional[float] = Field(
        default=None, gt=0, le=100, allow_inf_nan=False,
        description=f"logistic2 only: prior variance of the intercept (default "
                    f"{DEFAULT_INTCPT_VAR})")
    prior_corr: Optional[float] = Field(
        default=None, gt=-1, lt=1, description="logistic2 only: prior correlation of "
                                               "intercept and log slope (default 0)")
    intcpt: float = Field(default=DEFAULT_INTCPT, allow_inf_nan=False,
                          description="fixed intercept a0 of the logistic model")
    estimate: Literal["plugin", "posterior_mean"] = Field(
        default="plugin", description="plugin: p_d at the posterior mean of beta (dfcrm); "
                                      "posterior_mean: posterior mean of p_d")
    restrict: Union[bool, Literal["no_skip_only"]] = Field(
        default=True,
        description="true: dfcrm crmsim's restriction (no escalation after a cohort with DLT "
                    "rate >= target, otherwise at most one level up); no_skip_only: dfcrm "
                    "titesim's (at most one level up only); false: none")
    safety_threshold: Optional[float] = Field(
        default=None, gt=0, lt=1,
        description="stop with no MTD when Pr(DLT rate at dose 1 > target | data) exceeds this")
    two_stage: Optional[List[int]] = Field(
        default=None, min_length=1,
        description="initial escalation sequence (1-based doses, one cohort each) used "
                    "until the first DLT")

    @field_validator("skeleton", mode="before")
    @classmethod
    def _skeleton(cls, v):
        if v is None:
            return None
        if isinstance(v, dict):
            try:
                return SkeletonCalibration.model_validate(v)
            except ValidationError as err:
                msgs = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in err.errors())
                raise ValueError(f"skeleton calibration {v}: {msgs}") from None
        if isinstance(v, SkeletonCalibration):
            return v
        if isinstance(v, (list, tuple)):
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise ValueError(f"skeleton must be a list of numbers (got {list(v)})")
            check_skeleton(v)
            return [float(x) for x in v]
        raise ValueError(f"skeleton must be a list of probabilities or a mapping "
                         f"{{halfwidth: 0.05, prior_mtd: 3}} (got {v!r})")

    @field_validator("two_stage")
    @classmethod
    def _two_stage(cls, v):
        if v is not None and any(d < 1 for d in v):
            raise ValueError(f"two_stage doses are 1-based and must be >= 1 (got {v})")
        return v

    @field_validator("intcpt_var", "prior_corr")
    @classmethod
    def _logistic2_only(cls, v, info: ValidationInfo):
        model = info.data.get("model", "empiric")
        if v is not None and model != "logistic2":
            raise ValueError(f"an option of model logistic2 only (got {v} with model {model})")
        return v


def resolve_skeleton(spec: Spec, n_doses: int, target: float) -> Tuple[float, ...]:
    sk = spec.skeleton
    if sk is None:
        sk = SkeletonCalibration()
    if isinstance(sk, SkeletonCalibration):
        nu = sk.prior_mtd if sk.prior_mtd is not None else n_doses // 2 + 1
        if nu > n_doses:
            raise ValueError(f"skeleton.prior_mtd must be between 1 and {n_doses} (got {nu})")
        return getprior(sk.halfwidth, target, nu, n_doses, spec.model, spec.intcpt)
    check_skeleton(sk, n_doses)
    return tuple(float(v) for v in sk)


def make(spec: Spec, ctx: DesignContext) -> Design:
    return make_with(CRM, spec, ctx)


def make_with(cls, spec: Spec, ctx: DesignContext) -> Design:
    """``cls`` (CRM or a subclass taking the same options) from its spec (the registry adds
    the stopping rules)."""
    c = spec.context(ctx)
    skeleton = resolve_skeleton(spec, c.n_doses, c.target)
    two = None
    if spec.two_stage is not None:
        bad = [d for d in spec.two_stage if not 1 <= d <= c.n_doses]
        if bad:
            raise ValueError(f"two_stage doses must lie between 1 and {c.n_doses} "
                             f"(got {spec.two_stage})")
        two = tuple(d - 1 for d in spec.two_stage)
    return cls(
        n_doses=c.n_doses, target=c.target, skeleton=skeleton, model=spec.model,
        prior_var=spec.prior_var, intcpt=spec.intcpt, estimate=spec.estimate,
        cohort_size=c.cohort_size, start_dose=c.start_dose, restrict=spec.restrict,
        safety_threshold=spec.safety_threshold, two_stage=two, name=spec.name or spec.type,
        **({"intcpt_var": spec.intcpt_var if spec.intcpt_var is not None
            else DEFAULT_INTCPT_VAR,
            "prior_corr": spec.prior_corr if spec.prior_corr is not None else 0.0}
           if spec.model == "logistic2" else {}))


# --------------------------------------------------------------------------------------
def table_n_doses(request: TableRequest) -> int:
    """The number of doses of a CRM table: given, or the length of a skeleton list."""
    sk = request.spec.skeleton  # type: ignore[attr-defined]
    if request.n_doses is not None:
        return request.n_doses
    if isinstance(sk, list):
        return len(sk)
    raise TableInputError("n_doses", f"required by the {request.spec.type} table unless the "
                                     "skeleton is given as a list")


def crm_table(request: TableRequest) -> DecisionTable:
    """The next-cohort table (:func:`~escalation_sim.designs.tables.next_cohort_table`):
    CRM is model-based and has no fixed boundary table."""
    return next_cohort_table(request, n_doses=table_n_doses(request))


register(DesignEntry(type="crm", spec_model=Spec, make=make, design_class=CRM, table=crm_table,
                     summary="continual reassessment method (Bayesian, dfcrm defaults)"))
