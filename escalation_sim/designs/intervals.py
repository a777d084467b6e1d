"""Credible intervals of the per-dose DLT rates, for display on real data.

Two families, following what the reference packages report:

* **Interval designs** (BOIN and the designs on the interval kernel): as BOIN's
  ``select.mtd`` (R package BOIN, ``R/select.mtd.R``): at each tried dose the Beta(y + a,
  n - y + a) posterior (a = 0.05, the pseudo-counts of the isotonic estimate) gives the
  (1 - level)/2 and (1 + level)/2 quantiles; each bound is then made non-decreasing in dose by
  the same weighted pool-adjacent-violators regression as the point estimate (weights: the
  inverse posterior variance).  BOIN indexes the pooled bounds by dose number where the
  estimates are indexed by tried dose; the two agree when the tried doses are 1..k, the
  usual case, and here both are indexed by tried dose.
* **Model-based designs**: from the posterior.  One-parameter CRM as dfcrm's ``crm()``:
  posterior mean of beta +- z * posterior sd of beta (normal approximation), mapped through
  the dose-toxicity model (dfcrm's default ``conf.level`` is 0.90; ours is ``level``).  Two-
  parameter models (CRM ``logistic2``, BLRM): the quantiles of p_d under the posterior on the
  quadrature grid (:func:`grid_cdf_intervals`; about 0.002 from the exact quantiles, which
  is within the Monte Carlo checks of tests/test_realdata.py).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import norm

from .interval import isotonic_inputs, isotonic_regression


def check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1) (got {level})")
    return level


def interval_doc(method: str, level: float, estimate, lower, upper) -> Dict[str, Any]:
    """The one shape every design returns (per-dose lists, None where there is no value)."""
    def clean(v):
        return [None if x is None else float(x) for x in v]
    return {"method": method, "level": level, "estimate": clean(estimate),
            "lower": clean(lower), "upper": clean(upper)}


def isotonic_beta_intervals(n: Sequence[int], y: Sequence[int], level: float = 0.95,
                            prior: float = 0.05) -> Dict[str, Any]:
    """BOIN ``select.mtd``-style estimates and intervals (module docstring)."""
    level = check_level(level)
    K = len(n)
    tried = [d for d in range(K) if n[d] > 0]
    est: List[Optional[float]] = [None] * K
    lo: List[Optional[float]] = [None] * K
    hi: List[Optional[float]] = [None] * K
    if tried:
        nn = [n[d] for d in tried]
        yy = [y[d] for d in tried]
        phat, w = isotonic_inputs(nn, yy, prior)
        a = [v + prior for v in yy]
        b = [m - v + prior for m, v in zip(nn, yy)]
        q_lo = [float(beta_dist.ppf((1 - level) / 2, ai, bi)) for ai, bi in zip(a, b)]
        q_hi = [float(beta_dist.ppf((1 + level) / 2, ai, bi)) for ai, bi in zip(a, b)]
        for d, e, l_, h in zip(tried, isotonic_regression(phat, w),
                               isotonic_regression(q_lo, w), isotonic_regression(q_hi, w)):
            est[d], lo[d], hi[d] = e, l_, h
    return interval_doc(f"isotonic Beta(y + {prior:g}, n - y + {prior:g}) posterior "
                        "(BOIN select.mtd)", level, est, lo, hi)


def normal_beta_intervals(beta_mean: float, beta_var: float, tox, level: float
                          ) -> Dict[str, Any]:
    """dfcrm ``crm()``-style: beta_mean +- z sd mapped through ``tox(beta) -> per-dose p``
    (decreasing in beta for the empiric and one-parameter logistic models)."""
    level = check_level(level)
    z = float(norm.ppf(0.5 + level / 2))
    sd = float(np.sqrt(max(beta_var, 0.0)))
    est = list(tox(beta_mean))
    a, b = list(tox(beta_mean + z * sd)), list(tox(beta_mean - z * sd))
    lower = [min(u, v) for u, v in zip(a, b)]
    upper = [max(u, v) for u, v in zip(a, b)]
    return interval_doc("posterior mean of beta +- z sd through the model (dfcrm crm)",
                        level, est, lower, upper)


def grid_cdf_intervals(grid, log_dens: np.ndarray, estimate, level: float, method: str
                       ) -> Dict[str, Any]:
    """Quantiles of p_d under a 2-D quadrature posterior (:mod:`.quadrature2d`, nodes (i, j)
    of theta1 x theta2).  p_d < c  <=>  theta1 < logit(c) - exp(theta2) x_d, so
    Pr(p_d < c) = sum_j Pr(theta1 < tau_j, theta2 = node j), where the posterior mass of each
    theta2 node is spread over theta1 by giving each theta1 node a cell (between the
    mid-points of its neighbours, the grid's ends outside) of uniform density.  Unlike the
    node values alone (a step function, too coarse in the tails and at the reference dose
    where x_d = 0), this is continuous in c; the quantile is found by bisection on logit(c)."""
    from . import quadrature2d as q2
    level = check_level(level)
    pr = grid.prior
    h = q2.HALF_WIDTH_SD
    lo1, hi1 = pr.mean1 - h * pr.sd1, pr.mean1 + h * pr.sd1
    t1, w1, _ = q2.composite_gauss_legendre(lo1, hi1, q2.PANELS, q2.ORDER)
    t2, w2, _ = q2.composite_gauss_legendre(pr.mean2 - h * pr.sd2, pr.mean2 + h * pr.sd2,
                                            q2.PANELS, q2.ORDER)
    n1, n2 = t1.size, t2.size
    mass = (np.outer(w1, w2).ravel() * np.exp(log_dens - log_dens.max())).reshape(n1, n2)
    mass /= mass.sum()
    bounds = np.concatenate([[lo1], 0.5 * (t1[1:] + t1[:-1]), [hi1]])      # n1 + 1 cells
    cum = np.vstack([np.zeros(n2), np.cumsum(mass, axis=0)])               # (n1 + 1) x n2
    width = np.diff(bounds)
    exp_t2 = np.exp(t2)
    cols = np.arange(n2)

    def cdf(lc: float, x: float) -> float:
        tau = lc - exp_t2 * x
        k = np.clip(np.searchsorted(bounds, tau, side="right") - 1, 0, n1 - 1)
        frac = np.clip((tau - bounds[k]) / width[k], 0.0, 1.0)
        return float((cum[k, cols] + frac * mass[k, cols]).sum())

    lower, upper = [], []
    for x in grid.x:
        out = []
        for prob in ((1 - level) / 2, (1 + level) / 2):
            lo, hi = LOGIT_LO, LOGIT_HI
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                if cdf(mid, float(x)) < prob:
                    lo = mid
                else:
                    hi = mid
            out.append(1.0 / (1.0 + np.exp(-0.5 * (lo + hi))))
        lower.append(out[0])
        upper.append(out[1])
    return interval_doc(method, level, estimate, lower, upper)


#: the logit range searched (p from 4e-44 to 1 - 2e-15: priors may put mass that far out;
#: above, 1 - p is no longer representable next to 1)
LOGIT_LO, LOGIT_HI = -100.0, 34.0
