"""Tests of the BLRM with EWOC (escalation_sim.designs.blrm) and its 2-D quadrature
(escalation_sim.designs.quadrature2d).

Independent references used here:
* The worked example of Neuenschwander, Branson & Gsponer (2008, Stat Med 27:2420), "NBG":
  doses 1, 2.5, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 250 mg, d* = 250; prior
  means (2.15, 0.52), SDs (0.84, 0.80), covariance 0.134; data 3/4/5/4 patients without DLT at
  1/2.5/5/10 mg and 2/2 DLTs at 25 mg.  The data are those of R package OncoBayes2's
  ``hist_SA`` (data-raw/SA_example.R: num_patients 3, 4, 5, 4, 2) and of the bcrm call quoted
  in brockk/escalation tests/testthat/test_trialr_nbg.R (commit 1dbbe45f, 18 patients).  (The
  outcome string '1NNN 2NNNN 3NNNN 4NNNN 7TT' printed in the trialr / escalation vignettes
  has only 4 patients at 5 mg, 17 in all; we use the 18-patient data.)
  - [BCRM] posterior means of P(DLT) by bcrm (JAGS MCMC, bivariate lognormal prior), quoted
    in that escalation test: Monte Carlo error of a few 1e-3, tolerance 0.005.
  - [FIG1] NBG Figure 1 (lower right panel) read off by eye, quoted in the same test:
    tolerance 0.04 (the test's own).
  - [NOTES] the researcher's independent grid computation (3001 x 3001 midpoint grid over
    +/-8 prior SDs, printed to 4 decimals; /work/wt/notes/blrm_ewoc.md section 3.1):
    tolerance 2e-4 (rounding plus that grid's error).
  - the recommendation "dose 7 under the closest-posterior-mean rule" printed by bcrm/trialr.
* scipy.integrate.dblquad (adaptive, tolerances 1e-11 / 1e-9) on the unnormalised
  posterior over +/-12 prior SDs, with the indicator handled by the inner limit: the grid
  must agree to 1e-6 (issue 13).
* With no data, Pr(p_d >= c) is a 1-D integral (theta1 given theta2 is normal):
  scipy.integrate.quad, agreement to 1e-8.
* A much finer and wider grid (convergence study, docs/design.md): agreement to 1e-7 at
  N <= 24.
* Exact operating characteristics (state enumeration) for the Monte Carlo engine, 4 SE.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from scipy.special import expit
from scipy.stats import norm

from escalation_sim import exact_oc, simulate
from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.blrm import BLRM, Spec
from escalation_sim.designs.quadrature2d import (LogisticGrid2D, Prior2D, log_posterior,
                                                 partial_weights, composite_gauss_legendre,
                                                 summarise)
from escalation_sim.designs.registry import get_entry
from escalation_sim.inputs.scenario import ScenarioError, load_scenario_text
from escalation_sim.outcomes import state_from_outcomes
from escalation_sim.types import StopReason, TrialState

ROOT = Path(__file__).resolve().parents[1]

NBG_DOSES = [1, 2.5, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 250]
NBG_SD = (0.84, 0.80)
NBG_CORR = 0.134 / (0.84 * 0.80)
NBG_OPTS = {"dose_amounts": NBG_DOSES, "reference_dose": 250, "prior_mean": [2.15, 0.52],
            "prior_sd": list(NBG_SD), "prior_corr": NBG_CORR}
NBG_DATA = "1NNN 2NNNN 3NNNNN 4NNNN 7TT"          # 18 patients (OncoBayes2 hist_SA)

BCRM = [0.01276366, 0.03170250, 0.06454400, 0.13103260, 0.19505604, 0.25486603, 0.30990977,
        0.36015142, 0.44716663, 0.51852928, 0.64632144, 0.72710146, 0.81804596, 0.86567496,
        0.89421686]
FIG1 = [0.01, 0.02, 0.05, 0.13, 0.19, 0.25, 0.30, 0.35, 0.47, 0.53, 0.68, 0.74, 0.85, 0.89,
        0.92]
# [NOTES] section 3.1, doses 4-8 (1-based): mean p, P(target), P(overdose)
NOTES_MEAN = {4: 0.1272, 5: 0.1918, 6: 0.2527, 7: 0.3089, 8: 0.3601}
NOTES_TARGET = {4: 0.2718, 5: 0.4360, 6: 0.4762, 7: 0.4303, 8: 0.3503}
NOTES_OVER = {4: 0.0301, 5: 0.1208, 6: 0.2644, 7: 0.4235, 8: 0.5686}
NOTES_PRIOR_OVER = [0.0628, 0.0962, 0.1359, 0.1962, 0.2460, 0.2903, 0.3310, 0.3693, 0.4394,
                    0.5038, 0.6440, 0.7603, 0.9226, 0.9916, 0.9997]

NOTES_PRIOR_MEAN = [0.0595, 0.0852, 0.1142, 0.1566, 0.1906, 0.2205, 0.2477, 0.2731, 0.3199,
                    0.3631, 0.4606, 0.5474, 0.6952, 0.8055, 0.8707]

AMOUNTS4 = [10, 20, 40, 80]
CTX4 = DesignContext(n_doses=4, target=0.25, cohort_size=3, max_n=24, start_dose=0)


def build(opts, ctx=None, k=None):
    entry = get_entry("blrm")
    spec = entry.spec_model.model_validate({"type": "blrm", **opts})
    k = k or len(opts.get("dose_amounts", AMOUNTS4))
    ctx = ctx or DesignContext(n_doses=k, target=0.3, cohort_size=3, max_n=60, start_dose=0)
    return entry.build(spec, ctx)


def nbg(**extra):
    return build({**NBG_OPTS, **extra})


def default4(**extra):
    return build({"dose_amounts": AMOUNTS4, **extra}, CTX4)


# --------------------------------------------------------------------------------------
# brute-force references
def dblquad_reference(x, prior: Prior2D, n, y, dose, cuts, half_width=12.0):
    """E[p_dose], Pr(p_dose < c) for c in cuts by adaptive 2-D integration."""
    x = np.asarray(x, float)
    n, y = np.asarray(n, float), np.asarray(y, float)
    used = n > 0
    r = prior.corr

    # the data as plain floats: the integrand is called about 10^5 times per integral, so it
    # is written with math (log(1 + e^v), stably) rather than numpy on arrays of 4-15 values
    data = [(float(xd), float(yd), float(nd - yd)) for xd, nd, yd, u
            in zip(x, n, y, used, strict=True) if u]

    def softplus(v):
        return v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))

    def logf(t1, t2):
        z1 = (t1 - prior.mean1) / prior.sd1
        z2 = (t2 - prior.mean2) / prior.sd2
        lp = -(z1 * z1 - 2 * r * z1 * z2 + z2 * z2) / (2 * (1 - r * r))
        e2 = math.exp(t2)
        for xd, yd, md in data:
            eta = t1 + e2 * xd
            lp -= yd * softplus(-eta) + md * softplus(eta)
        return lp

    a1, b1 = prior.mean1 - half_width * prior.sd1, prior.mean1 + half_width * prior.sd1
    a2, b2 = prior.mean2 - half_width * prior.sd2, prior.mean2 + half_width * prior.sd2
    # scale by the density's maximum on a coarse grid so that the integrals are O(1)
    g1, g2 = np.linspace(a1, b1, 121), np.linspace(a2, b2, 121)
    c0 = max(logf(u, v) for u in g1 for v in g2)

    def f(t1, t2):
        return math.exp(logf(t1, t2) - c0)

    tol = dict(epsabs=1e-11, epsrel=1e-9)      # 1,000x inside the 1e-6 the tests assert
    z = integrate.dblquad(f, a2, b2, a1, b1, **tol)[0]
    mean = integrate.dblquad(lambda t1, t2: f(t1, t2) * expit(t1 + math.exp(t2) * x[dose]),
                             a2, b2, a1, b1, **tol)[0] / z
    below = []
    for c in cuts:
        lc = math.log(c / (1 - c))
        upper = lambda t2, lc=lc: min(max(lc - math.exp(t2) * x[dose], a1), b1)  # noqa: E731
        below.append(integrate.dblquad(f, a2, b2, a1, upper, **tol)[0] / z)
    return mean, below


def prior_over(x_d, prior: Prior2D, c):
    """Pr(p_d >= c) under the prior alone: theta1 | theta2 is normal, one quad over theta2."""
    lc = math.log(c / (1 - c))
    s_c = prior.sd1 * math.sqrt(1 - prior.corr ** 2)

    def integrand(t2):
        m_c = prior.mean1 + prior.corr * prior.sd1 / prior.sd2 * (t2 - prior.mean2)
        return (norm.pdf(t2, prior.mean2, prior.sd2)
                * norm.sf((lc - math.exp(t2) * x_d - m_c) / s_c))

    return integrate.quad(integrand, prior.mean2 - 12 * prior.sd2, prior.mean2 + 12 * prior.sd2,
                          epsabs=1e-13, epsrel=1e-12, limit=200)[0]


# --------------------------------------------------------------------------------------
# quadrature building blocks
def test_partial_weights_integrate_polynomials_exactly():
    # the piecewise interpolant of a polynomial of degree < order is the polynomial itself,
    # so the partial integrals are exact (closed-form antiderivative)
    x, _, edges = composite_gauss_legendre(-2.0, 3.0, 3, 8)
    f = 1 + x - 2 * x ** 3 + 0.1 * x ** 7

    def F(t):
        return t + t ** 2 / 2 - t ** 4 / 2 + 0.1 * t ** 8 / 8

    taus = np.array([-3.0, -2.0, -1.3, 0.1, 1 / 3, 2.9, 3.0, 4.0])
    W = partial_weights(taus, edges, 8)
    for tau, w in zip(taus, W, strict=True):
        t = min(max(tau, -2.0), 3.0)
        assert w @ f == pytest.approx(F(t) - F(-2.0), abs=1e-11)


def test_prior_interval_probabilities_match_one_dimensional_integrals():
    x = tuple(math.log(d / 250) for d in NBG_DOSES)
    prior = Prior2D(2.15, 0.52, *NBG_SD, NBG_CORR)
    g = LogisticGrid2D(x, prior, (0.16, 0.33))
    post = summarise(g, log_posterior(g, [0] * 15, [0] * 15))
    for d in range(15):
        for j, c in enumerate((0.16, 0.33)):
            assert 1 - post.below[d][j] == pytest.approx(prior_over(x[d], prior, c), abs=1e-8)
        # [NOTES] section 3.2: prior P(p >= 0.33), 4 decimals
        # [NOTES] section 3.2: prior P(p >= 0.33) (its midpoint grid integrates the
        # indicator to about 2e-4) and prior mean P(DLT)
        assert 1 - post.below[d][1] == pytest.approx(NOTES_PRIOR_OVER[d], abs=3e-4)
        assert post.p_mean[d] == pytest.approx(NOTES_PRIOR_MEAN[d], abs=1e-4)


# --------------------------------------------------------------------------------------
# the worked example
def test_nbg_posterior_means_match_bcrm_and_figure_1():
    d = nbg(max_step=None)
    est = d.estimates(state_from_outcomes(NBG_DATA, 15))
    for ours, ref, fig in zip(est["p_mean"], BCRM, FIG1, strict=True):
        assert ours == pytest.approx(ref, abs=0.005)      # [BCRM], MCMC error
        assert ours == pytest.approx(fig, abs=0.04)       # [FIG1], read off a plot
    # [NOTES] posterior mean of (log alpha, log beta) = (2.3889, 0.3203)
    assert est["log_alpha_mean"] == pytest.approx(2.3889, abs=2e-4)
    assert est["log_beta_mean"] == pytest.approx(0.3203, abs=2e-4)


def test_nbg_interval_probabilities_match_the_notes():
    d = nbg(max_step=None)
    est = d.estimates(state_from_outcomes(NBG_DATA, 15))
    for k in NOTES_MEAN:
        assert est["p_mean"][k - 1] == pytest.approx(NOTES_MEAN[k], abs=2e-4)
        assert est["p_target ([0.16, 0.33))"][k - 1] == pytest.approx(NOTES_TARGET[k], abs=2e-4)
        assert est["p_overdose (>=0.33)"][k - 1] == pytest.approx(NOTES_OVER[k], abs=2e-4)


def test_nbg_recommendations():
    s = state_from_outcomes(NBG_DATA, 15)
    for opts in ({"max_step": None}, {}):           # the default step cap (x2 from 25 mg)
        d = nbg(**opts)
        dec = d.decide(s)
        # EWOC: doses 1-5 have P(overdose) < 0.25 (20 mg: 0.264); the highest P(target)
        # among them is 15 mg (0.436) [NOTES section 3.2]
        assert dec.dose == 4 and not dec.stop
        assert "doses 1-5" in dec.reason and "0.436" in dec.reason
    # the closest-posterior-mean rule of bcrm / trialr recommends dose 7 (25 mg)
    p = nbg().estimates(s)["p_mean"]
    assert min(range(15), key=lambda i: abs(p[i] - 0.30)) == 6


def test_nbg_example_against_dblquad():
    x = [math.log(v / 250) for v in NBG_DOSES]
    prior = Prior2D(2.15, 0.52, *NBG_SD, NBG_CORR)
    s = state_from_outcomes(NBG_DATA, 15)
    est = nbg().estimates(s)
    for dose in (4, 5):                              # 15 and 20 mg, around the EWOC boundary
        mean, below = dblquad_reference(x, prior, s.n, s.y, dose, (0.16, 0.33))
        assert est["p_mean"][dose] == pytest.approx(mean, abs=1e-6)
        assert est["p_underdose (<0.16)"][dose] == pytest.approx(below[0], abs=1e-6)
        assert est["p_overdose (>=0.33)"][dose] == pytest.approx(1 - below[1], abs=1e-6)


def test_default_prior_n24_state_against_dblquad():
    d = default4()
    x = [math.log(a / 40) for a in AMOUNTS4]
    prior = Prior2D(math.log(0.25 / 0.75), 0.0, 2.0, 1.0, 0.0)
    s = TrialState((3, 6, 12, 3), (0, 1, 3, 2), 2, 3, 1)
    est = d.estimates(s)
    for dose in (1, 2):
        mean, below = dblquad_reference(x, prior, s.n, s.y, dose, (0.16, 0.33))
        assert est["p_mean"][dose] == pytest.approx(mean, abs=1e-6)
        assert est["p_target ([0.16, 0.33))"][dose] == pytest.approx(below[1] - below[0],
                                                                     abs=1e-6)


# --------------------------------------------------------------------------------------
# convergence study (docs/design.md): the default grid against a finer, wider one
STUDY = [
    ("nbg", tuple(math.log(v / 250) for v in NBG_DOSES), Prior2D(2.15, 0.52, *NBG_SD, NBG_CORR),
     (3, 4, 5, 4, 0, 0, 2) + (0,) * 8, (0, 0, 0, 0, 0, 0, 2) + (0,) * 8),
    ("nbg prior", tuple(math.log(v / 250) for v in NBG_DOSES),
     Prior2D(2.15, 0.52, *NBG_SD, NBG_CORR), (0,) * 15, (0,) * 15),
    ("weak, 24 mixed", tuple(math.log(a / 40) for a in AMOUNTS4),
     Prior2D(math.log(1 / 3), 0.0, 2.0, 1.0, 0.0), (3, 6, 12, 3), (0, 1, 3, 2)),
    ("weak, 24 mixed 2", tuple(math.log(a / 40) for a in AMOUNTS4),
     Prior2D(math.log(1 / 3), 0.0, 2.0, 1.0, 0.0), (6, 9, 6, 3), (0, 2, 3, 3)),
    ("weak, 24 DLT at dose 1", tuple(math.log(a / 40) for a in AMOUNTS4),
     Prior2D(math.log(1 / 3), 0.0, 2.0, 1.0, 0.0), (24, 0, 0, 0), (24, 0, 0, 0)),
    ("weak, 24 without DLT at dose 4", tuple(math.log(a / 40) for a in AMOUNTS4),
     Prior2D(math.log(1 / 3), 0.0, 2.0, 1.0, 0.0), (0, 0, 0, 24), (0, 0, 0, 0)),
]


def _all(grid, n, y):
    p = summarise(grid, log_posterior(grid, n, y))
    return np.concatenate([p.p_mean, np.ravel(p.below), p.theta_mean])


@pytest.mark.parametrize("name,x,prior,n,y", STUDY, ids=[s[0] for s in STUDY])
def test_default_grid_converged(name, x, prior, n, y):
    default = _all(LogisticGrid2D(x, prior, (0.16, 0.33)), n, y)
    fine = _all(LogisticGrid2D(x, prior, (0.16, 0.33), half_width_sd=12.0, panels=16,
                               order=24), n, y)
    assert np.max(np.abs(default - fine)) < 1e-7


# --------------------------------------------------------------------------------------
# decision rules
def test_first_cohort_at_the_start_dose():
    d = build({"dose_amounts": AMOUNTS4, "start_dose": 2}, CTX4)
    dec = d.decide(TrialState.empty(4))
    assert (dec.dose, dec.cohort_size) == (1, 3)


def test_ewoc_and_highest_target_probability():
    d = default4()
    for text in ("1NNN", "1NNN 2NNN", "1NNN 2NTN", "1NNN 2NNN 3TTN", "1NNN 2NNN 3NNN 4TTT"):
        s = state_from_outcomes(text, 4)
        est, dec = d.estimates(s), d.decide(s)
        over = est["p_overdose (>=0.33)"]
        target = est["p_target ([0.16, 0.33))"]
        cap = min(3, s.highest_tried + 1)          # doubling amounts: the step cap is +1 too
        allowed = [k for k in range(cap + 1) if over[k] < 0.25]
        if dec.stop:
            assert dec.stop_reason in (StopReason.NO_ADMISSIBLE_DOSE, StopReason.RULE_COMPLETE)
            continue
        assert dec.dose in allowed
        assert target[dec.dose] == max(target[k] for k in allowed)
        assert est["too_toxic"] == [o >= 0.25 for o in over]


def test_max_step_caps_the_amount():
    # amounts 10, 15, 40: from 10, doubling allows 15 but not 40 (no skipping off); the
    # prior puts the median DLT rate 1/3 at 40 with little spread, so 40 has the highest
    # P(target) and passes EWOC
    opts = {"dose_amounts": [10, 15, 40], "reference_dose": 40, "no_skipping": False,
            "prior_mean": [math.log(1 / 3), 0.0], "prior_sd": [0.5, 0.3]}
    d = build(opts, k=3)
    s = state_from_outcomes("1NNN", 3)
    free = build({**opts, "max_step": None}, k=3).decide(s)
    assert free.dose == 2                         # without the cap the model goes to 40
    dec = d.decide(s)
    assert dec.dose == 1 and "max step 1 from dose 1: at most dose 2" in dec.reason
    # max_step 3: amount <= 4 x 10 = 40 is allowed
    assert build({**opts, "max_step": 3.0}, k=3).decide(s).dose == 2


def test_no_skipping_caps_at_one_above_the_highest_tried():
    opts = {"dose_amounts": [10, 11, 12, 13], "reference_dose": 13, "max_step": None,
            "prior_mean": [-1.0, 0.0], "prior_sd": [1.0, 0.5]}
    s = state_from_outcomes("1NNN 1NNN 1NNN", 4)
    assert build({**opts, "no_skipping": False}).decide(s).dose > 1
    dec = build(opts).decide(s)
    assert dec.dose == 1 and "no skipping" in dec.reason


def test_no_admissible_dose_stops_or_treats_lowest():
    s = state_from_outcomes("1TTT", 4)
    d = default4()
    assert d.estimates(s)["p_overdose (>=0.33)"][0] >= 0.25
    dec = d.decide(s)
    assert dec.stop and dec.stop_reason is StopReason.NO_ADMISSIBLE_DOSE
    assert "no dose passes EWOC" in dec.reason
    assert d.select_mtd(s) is None
    low = default4(if_no_admissible="treat_lowest").decide(s)
    assert (low.dose, low.stop) == (0, False) and "treat_lowest" in low.reason


def test_stopping_rule_at_six_patients_with_target_probability():
    d = default4()
    # 6 patients at dose 2 with 1 DLT and 9 more around it: dose 2 is recommended again
    s = state_from_outcomes("1NNN 2NNN 3TTN 2TNN 2NNN", 4)
    est, dec = d.estimates(s), d.decide(s)
    target = est["p_target ([0.16, 0.33))"]
    free = default4(stop_n_at_mtd=None).decide(s)
    assert free.dose == 1 and not free.stop
    if target[1] >= 0.5:
        assert dec.stop and dec.stop_reason is StopReason.RULE_COMPLETE
        assert d.select_mtd(s) == 1
    else:
        assert dec.dose == 1 and not dec.stop
    # a threshold of 0 fires whenever the recommended dose has >= 6 patients
    zero = default4(stop_p_target=0.0)
    dz = zero.decide(s)
    assert dz.stop and dz.stop_reason is StopReason.RULE_COMPLETE
    assert "already has 9 patients" in dz.reason and zero.select_mtd(s) == 1


def test_select_mtd_among_tried_admissible_doses():
    d = default4(stop_n_at_mtd=None)
    assert d.select_mtd(TrialState.empty(4)) is None
    s = state_from_outcomes("1NNN 2NNN 3NNN 4NNN 4NNN", 4)
    est = d.estimates(s)
    target, over = est["p_target ([0.16, 0.33))"], est["p_overdose (>=0.33)"]
    ok = [k for k in range(4) if over[k] < 0.25]
    assert d.select_mtd(s) == max(ok, key=lambda k: (target[k], -k))
    # an untried dose is never selected
    s2 = state_from_outcomes("1NNN 2NNN", 4)
    assert d.select_mtd(s2) in (0, 1)


def test_canonical_key_and_memoised_posterior():
    d = default4()
    a = state_from_outcomes("1NNN 2NTN", 4)
    b = TrialState(a.n, a.y, a.current, 3, 0)      # a different last cohort, same counts
    assert d.canonical(a) == d.canonical(b)
    assert d.decide(a) == d.decide(b)
    assert default4(max_step=None).canonical(a) == (a.n, a.y, None)


def test_design_is_hashable_and_validates():
    d = default4()
    assert hash(d) == hash(default4())
    with pytest.raises(ValueError, match="strictly increasing"):
        BLRM(n_doses=2, dose_amounts=(2.0, 1.0), reference_dose=1.0, prior_mean=(0.0, 0.0))
    with pytest.raises(ValueError, match="overdose_cutoff"):
        BLRM(n_doses=2, dose_amounts=(1.0, 2.0), reference_dose=1.0, prior_mean=(0.0, 0.0),
             overdose_cutoff=0.0)


def test_defaults_are_documented_values():
    d = default4().inner
    assert d.reference_dose == 40                   # amount of dose K//2 + 1
    assert d.prior_mean == pytest.approx((math.log(0.25 / 0.75), 0.0))
    assert d.prior_sd == (2.0, 1.0) and d.prior_corr == 0.0
    assert d.target_interval == (0.16, 0.33) and d.overdose_cutoff == 0.25
    assert d.max_step == 1.0 and d.stop_n_at_mtd == 6 and d.stop_p_target == 0.5


def test_spec_validation_messages():
    with pytest.raises(ValueError, match="target_interval must be"):
        Spec.model_validate({"type": "blrm", "target_interval": [0.33, 0.16]})
    with pytest.raises(ValueError, match="prior_sd must be two positive"):
        Spec.model_validate({"type": "blrm", "prior_sd": [1, 0]})
    with pytest.raises(ValueError, match="stop_p_target has no effect"):
        Spec.model_validate({"type": "blrm", "stop_n_at_mtd": None, "stop_p_target": 0.4})
    with pytest.raises(ValueError, match="not_a_key|Extra inputs"):
        Spec.model_validate({"type": "blrm", "not_a_key": 1})


# --------------------------------------------------------------------------------------
# scenario files and the command line
SCENARIO = """\
name: blrm-test
doses:
  - {{label: DL1, amount: 10}}
  - {{label: DL2, amount: 20}}
  - {{label: DL3, amount: 40}}
  - {{label: DL4, amount: 80}}
truth: {{p_dlt: {p}}}
target: 0.25
trial: {{max_n: 24, cohort_size: 3, start_dose: 1}}
designs:
  - {{type: blrm}}
simulation: {{n_trials: 20000, seed: 5}}
"""


def test_missing_amounts_refused_with_file_and_field(tmp_path, cli):
    text = SCENARIO.format(p=[0.05, 0.12, 0.25, 0.40]).replace(
        "  - {label: DL2, amount: 20}", "  - DL2")
    with pytest.raises(ScenarioError) as err:
        load_scenario_text(text, "s.yaml")
    assert any(p.startswith("designs[0] (blrm): the blrm design needs every dose's amount")
               and "(got no amount for dose 2)" in p for p in err.value.problems)
    f = tmp_path / "s.yaml"
    f.write_text(text)
    r = cli("validate", f)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{f}: designs[0] (blrm): the blrm design needs every dose's amount" in r.stderr


def test_amounts_given_twice_refused():
    text = SCENARIO.format(p=[0.05, 0.12, 0.25, 0.40]).replace(
        "  - {type: blrm}", "  - {type: blrm, dose_amounts: [1, 2, 3, 4]}")
    with pytest.raises(ScenarioError, match="give it in one place"):
        load_scenario_text(text, "s.yaml")


def test_design_amounts_without_scenario_amounts():
    text = SCENARIO.format(p=[0.05, 0.12, 0.25, 0.40])
    for k, lab in enumerate(("DL1", "DL2", "DL3", "DL4")):
        text = text.replace(f"  - {{label: {lab}, amount: {AMOUNTS4[k]}}}", f"  - {lab}")
    text = text.replace("  - {type: blrm}", "  - {type: blrm, dose_amounts: [10, 20, 40, 80]}")
    sc = load_scenario_text(text, "s.yaml")
    assert sc.designs[0].design.inner.dose_amounts == (10.0, 20.0, 40.0, 80.0)


@pytest.mark.parametrize("p", [[0.05, 0.12, 0.25, 0.40], [0.25, 0.40, 0.55, 0.70],
                               [0.02, 0.04, 0.06, 0.08]])
def test_monte_carlo_within_4se_of_exact(p):
    sc = load_scenario_text(SCENARIO.format(p=p), "blrm-test.yaml")
    R = 20000
    mc = simulate(sc, n_trials=R, seed=5, n_jobs=1).design_oc("blrm")
    ex_res = exact_oc(None, sc)
    ex = ex_res.design_oc("blrm")
    z = []
    for k in range(4):
        q = ex["p_select"][k]
        se = math.sqrt(q * (1 - q) / R)
        assert abs(mc["p_select"][k] - q) <= 4 * se + 1e-12, (k, mc["p_select"], ex["p_select"])
        z.append((mc["p_select"][k] - q) / se if se else 0.0)
    q = ex["p_no_mtd"]
    assert abs(mc["p_no_mtd"] - q) <= 4 * math.sqrt(q * (1 - q) / R) + 1e-12
    w, _, _, n, _ = ex_res.designs[0].tally.arrays()
    tot = n.sum(axis=1)
    var = float((w * (tot - (w * tot).sum()) ** 2).sum())
    assert abs(mc["mean_n_total"] - ex["mean_n_total"]) <= 4 * math.sqrt(var / R) + 1e-12
    assert abs(sum(ex["p_select"]) + ex["p_no_mtd"] - 1) < 1e-12


def test_conduct_commands(tmp_path, cli):
    f = tmp_path / "s.yaml"
    f.write_text(SCENARIO.format(p=[0.05, 0.12, 0.25, 0.40]))
    r = cli("next-dose", f, "--outcomes", "1NNN 2NTN")
    assert r.returncode == 0, r.stderr
    assert "next: dose 2 (DL2), cohort of 3 -- highest P(0.16 <= DLT rate < 0.33)" in r.stdout
    assert "p_overdose (>=0.33)" in r.stdout and "p_mean" in r.stdout
    r = cli("select-mtd", f, "--n", "3,6,9,6", "--dlt", "0,1,2,3")
    assert r.returncode == 0 and "blrm: MTD = " in r.stdout
    r = cli("paths", f, "--outcomes", "1NNN", "--cohorts", "2")
    assert r.returncode == 0 and "after 1NNN: dose 2 (DL2)" in r.stdout


def test_table_next_cohort(cli):
    r = cli("table", "--design", "blrm", "--target", 0.25, "--outcomes", "1NNN",
            "--cohort-size", 3, "--option", "dose_amounts=[10,20,40,80]")
    assert r.returncode == 0, r.stderr
    assert "blrm is model-based" in " ".join(r.stdout.split())
    assert "next cohort: 3 at dose 2" in r.stdout
    # each row is the design's own decision after that outcome
    d = default4()
    for y in range(4):
        s = state_from_outcomes("1NNN 2" + "T" * y + "N" * (3 - y), 4)
        dec = d.decide(s)
        step = (f"stop ({dec.stop_reason.value})" if dec.stop
                else f"dose {dec.dose + 1}, cohort of 3")
        assert any(line.startswith(f"{y} of 3") and step in line
                   for line in r.stdout.splitlines())
    r = cli("table", "--design", "blrm", "--target", 0.25)
    assert r.returncode == 2
    assert "--option dose_amounts: required by the blrm table" in r.stderr
