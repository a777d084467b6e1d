"""Tests of the CRM design (escalation_sim.designs.crm).

Independent references used here:
* DOMAIN.md's skeleton example (Lee & Cheung 2009 indifference-interval calibration).
* Closed forms derived by hand from the getprior recursion: for the empiric model
  log s_k = log(t) * r^(nu - k) with r = log(t - δ) / log(t + δ); for the logistic model the
  same with x_k = logit(s_k) - a0 and r = (logit(t - δ) - a0) / (logit(t + δ) - a0); and the
  defining property of the calibration (where p_k(beta) = t + δ, p_{k-1}(beta) = t - δ).
* scipy.integrate.quad on the unnormalised posterior (adaptive, tolerances 1e-15/1e-13).
* With no data the posterior is the N(0, sigma^2) prior: E[beta] = 0 and
  Pr(p_1 > t) = Phi(b*/sigma), b* = log(log t / log s_1).
* Published dfcrm recommendations quoted in the R package `escalation` (Brock), whose
  tests compare against dfcrm::crm directly (sources next to each case).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.special import expit
from scipy.stats import norm

from escalation_sim.designs import crm as crm_mod
from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.crm import CRM, Spec, crm_posterior, make, getprior
from escalation_sim.designs.registry import get_entry
from escalation_sim.designs.rules import StopAtN, StopWhenNAtDose
from escalation_sim.outcomes import state_from_outcomes
from escalation_sim.types import StopReason, TrialState


# --------------------------------------------------------------------------------------
# skeleton calibration
def test_getprior_domain_example():
    # DOMAIN.md (Lee & Cheung 2009 method): delta 0.05, target 0.3, nu 3, K 4
    sk = getprior(0.05, 0.3, 3, 4)
    assert [round(v, 4) for v in sk] == [0.1225, 0.2040, 0.3000, 0.4018]


def test_getprior_empiric_closed_form_hand_case():
    # Hand computation, delta 0.04, target 0.25, nu 2, K 5:
    # r = log(0.21)/log(0.29) = (-1.560648)/(-1.237874) = 1.260749
    # log s_1 = log(0.25) * r = -1.386294 * 1.260749 = -1.747769 -> s_1 = 0.1742
    # log s_3 = log(0.25) / r = -1.099580 -> s_3 = 0.3330
    # log s_4 = -1.099580 / r = -0.872164 -> s_4 = 0.4180
    # log s_5 = -0.872164 / r = -0.691783 -> s_5 = 0.5007
    sk = getprior(0.04, 0.25, 2, 5)
    assert [round(v, 4) for v in sk] == [0.1742, 0.2500, 0.3330, 0.4180, 0.5007]
    r = math.log(0.21) / math.log(0.29)
    closed = [0.25 ** (r ** (2 - k)) for k in range(1, 6)]
    assert sk == pytest.approx(closed, abs=1e-12)


@pytest.mark.parametrize("model", ["empiric", "logistic"])
@pytest.mark.parametrize("delta,target,nu,K", [(0.05, 0.3, 3, 4), (0.04, 0.25, 2, 5),
                                                (0.07, 0.2, 1, 6), (0.03, 0.33, 5, 5)])
def test_getprior_indifference_property(model, delta, target, nu, K):
    # Defining property (Lee & Cheung 2009): the beta at which dose k reaches target+delta
    # puts dose k-1 at target-delta (below the prior MTD), and the beta at which dose k
    # reaches target-delta puts dose k+1 at target+delta (above it).
    a0 = 3.0
    sk = getprior(delta, target, nu, K, model=model, intcpt=a0)
    assert sk[nu - 1] == pytest.approx(target, abs=1e-14)
    assert all(b > a for a, b in zip(sk[:-1], sk[1:], strict=True))

    def beta_where(s, p):       # solve p_d(beta) = p for the skeleton value s
        if model == "empiric":
            return math.log(math.log(p) / math.log(s))
        return math.log((math.log(p / (1 - p)) - a0) / (math.log(s / (1 - s)) - a0))

    def p_at(s, beta):
        return float(crm_mod.dose_tox(beta, [s], model, a0)[0])

    for k in range(1, nu):                   # 0-based k, down from the prior MTD
        b = beta_where(sk[k], target + delta)
        assert p_at(sk[k - 1], b) == pytest.approx(target - delta, abs=1e-12)
    for k in range(nu - 1, K - 1):           # up from the prior MTD
        b = beta_where(sk[k], target - delta)
        assert p_at(sk[k + 1], b) == pytest.approx(target + delta, abs=1e-12)


def test_getprior_logistic_closed_form():
    # x_k = x_nu * r^(nu - k), r = (logit(t-δ) - a0)/(logit(t+δ) - a0), s = expit(a0 + x)
    lg = lambda p: math.log(p / (1 - p))  # noqa: E731
    t, d, a0 = 0.3, 0.05, 3.0
    r = (lg(t - d) - a0) / (lg(t + d) - a0)
    x3 = lg(t) - a0
    closed = [1 / (1 + math.exp(-(a0 + x3 * r ** (3 - k)))) for k in range(1, 5)]
    assert getprior(d, t, 3, 4, model="logistic") == pytest.approx(closed, abs=1e-12)


def test_getprior_rejects_bad_input():
    with pytest.raises(ValueError, match="halfwidth"):
        getprior(0.3, 0.3, 2, 4)
    with pytest.raises(ValueError, match="prior_mtd"):
        getprior(0.05, 0.3, 5, 4)
    with pytest.raises(ValueError, match="intcpt"):
        getprior(0.05, 0.3, 2, 4, model="logistic", intcpt=-1.0)


# --------------------------------------------------------------------------------------
# posterior: reference by adaptive quadrature
def _ref_posterior(skeleton, n, y, model="empiric", prior_var=1.34, a0=3.0, target=0.3,
                   L=30.0):
    """E[beta], E[p_d] and Pr(p_1 > target) by scipy.integrate.quad (independent code)."""
    s_all = np.asarray(skeleton, float)
    n = np.asarray(n, float)
    y = np.asarray(y, float)
    use = n > 0
    s, nn, yy = s_all[use], n[use], y[use]

    def ptox(b, sk):
        if model == "empiric":
            return sk ** math.exp(b)
        eta = a0 + math.exp(b) * (np.log(sk / (1 - sk)) - a0)
        return np.exp(-np.logaddexp(0, -eta))

    def logdens(b):
        """log prior + log likelihood at an array of beta values."""
        bb = np.atleast_1d(np.asarray(b, float))
        eb = np.exp(bb)[None, :]
        if model == "empiric":
            lp = eb * np.log(s)[:, None]                 # log p
            l1 = np.log(-np.expm1(lp))                   # log(1 - p)
        else:
            eta = a0 + eb * (np.log(s / (1 - s)) - a0)[:, None]
            lp, l1 = -np.logaddexp(0, -eta), -np.logaddexp(0, eta)
        ll = np.zeros(eb.shape[1])
        for c, v in zip(yy, lp, strict=True):                        # skip 0 * log(0)
            if c > 0:
                ll += c * v
        for c, v in zip(nn - yy, l1, strict=True):
            if c > 0:
                ll += c * v
        return -0.5 * bb ** 2 / prior_var + ll

    grid = np.linspace(-L, L, 6001)
    vals = logdens(grid)
    vals[~np.isfinite(vals)] = -np.inf
    mode, top = grid[int(np.argmax(vals))], float(np.max(vals))

    # scalar version for quad (plain floats: much faster than numpy on a few doses)
    terms = [(yd, nd - yd, ls, xd) for (yd, nd, ls, xd) in
             ((float(a), float(b), math.log(v), math.log(v / (1 - v)) - a0)
              for a, b, v in zip(yy, nn, s, strict=True))]

    def f(b):
        eb = math.exp(b)
        v = -0.5 * b * b / prior_var - top
        for yd, md, ls, xd in terms:
            if model == "empiric":
                lp = eb * ls
                l1 = math.log(-math.expm1(lp)) if md > 0 else 0.0
            else:
                eta = a0 + eb * xd
                lp = -(math.log1p(math.exp(-eta)) if eta > -700 else -eta)
                l1 = -(math.log1p(math.exp(eta)) if eta < 700 else eta) if md > 0 else 0.0
            if yd > 0:
                v += yd * lp
            if md > 0:
                v += md * l1
        return math.exp(v) if v > -745 else 0.0

    s1 = skeleton[0]
    if model == "empiric":
        bstar = math.log(math.log(target) / math.log(s1))
    else:
        num = math.log(target / (1 - target)) - a0
        bstar = math.log(num / (math.log(s1 / (1 - s1)) - a0)) if num < 0 else -math.inf
    cut = min(max(bstar, -L), L)
    pts = [mode + dd for dd in (-2, -1, -0.5, -0.2, 0, 0.2, 0.5, 1, 2)]

    def q(g, a, b):
        if not b > a:
            return 0.0
        inside = [x for x in pts if a < x < b]
        with warnings.catch_warnings():   # roundoff notices at these tight tolerances
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            return integrate.quad(g, a, b, points=inside or None, epsabs=1e-15,
                                  epsrel=1e-13, limit=2000)[0]

    def both(g):
        return q(g, -L, cut) + q(g, cut, L)

    z_low = q(f, -L, cut)
    z = z_low + q(f, cut, L)
    e_beta = both(lambda b: b * f(b)) / z
    p_mean = [both(lambda b, k=k: float(ptox(b, s_all)[k]) * f(b)) / z
              for k in range(len(skeleton))]
    return e_beta, np.array(p_mean), z_low / z


FIXED_CASES = [
    # (skeleton, outcomes, model, prior_var, target)
    ((0.05, 0.1, 0.25, 0.4, 0.6), "1NNN 2NTN", "empiric", 1.34, 0.25),
    ((0.1225, 0.204, 0.3, 0.4018), "1NNN 2NNN 3TTN 2NTN", "empiric", 1.34, 0.3),
    ((0.1, 0.2, 0.4, 0.55), "2NNT 2NNN 3NTT 2NNT", "empiric", 0.75, 0.2),
    ((0.1, 0.2, 0.33, 0.45, 0.6, 0.7, 0.8), "1NNN 2NNN 3NTT 2NNN 3TNN 3TNT 2NNN",
     "logistic", 1.34, 0.33),
    ((0.05, 0.1, 0.2, 0.3), "1TTT 1TTT", "logistic", 1.34, 0.3),
    ((0.05, 0.1, 0.2, 0.3), "4NNN 4NNN 4NNN", "empiric", 1.34, 0.3),
]


@pytest.mark.parametrize("skeleton,outcomes,model,prior_var,target", FIXED_CASES)
def test_posterior_matches_quad_fixed(skeleton, outcomes, model, prior_var, target):
    st_ = state_from_outcomes(outcomes, len(skeleton))
    fit = crm_posterior(skeleton, st_.n, st_.y, model=model, prior_var=prior_var,
                        target=target)
    e_beta, p_mean, pr = _ref_posterior(skeleton, st_.n, st_.y, model, prior_var, 3.0, target)
    assert fit.beta_mean == pytest.approx(e_beta, abs=1e-8)
    assert np.asarray(fit.p_mean) == pytest.approx(p_mean, abs=1e-8)
    assert fit.pr_p1_above == pytest.approx(pr, abs=1e-8)
    # the plug-in estimate is the model curve at E[beta]
    plug = crm_mod.dose_tox(e_beta, skeleton, model, 3.0)
    assert np.asarray(fit.p_plugin) == pytest.approx(plug, abs=1e-8)


def test_posterior_matches_quad_random_including_extremes():
    rng = np.random.default_rng(20240601)
    for i in range(72):
        model = ("empiric", "logistic")[i % 2]
        K = int(rng.integers(3, 7))
        sk = tuple(sorted({round(float(v), 3) for v in rng.uniform(0.01, 0.85, K)}))
        K = len(sk)
        total = int(rng.integers(1, 61)) if i % 3 else 60
        n = np.bincount(rng.integers(0, K, total), minlength=K)
        kind = i % 6
        if kind in (0, 1):
            y = n.copy()                      # every patient had a DLT
        elif kind == 2:
            y = np.zeros_like(n)              # no DLT at all
        else:
            y = rng.binomial(n, rng.uniform(0, 1, K))
        prior_var = (1.34, 0.75, 4.0)[i % 3]
        target = float(rng.choice([0.2, 0.25, 0.3, 0.33]))
        fit = crm_posterior(sk, n, y, model=model, prior_var=prior_var, target=target)
        e_beta, p_mean, pr = _ref_posterior(sk, n, y, model, prior_var, 3.0, target)
        ctx = (model, sk, n.tolist(), y.tolist(), prior_var, target)
        assert abs(fit.beta_mean - e_beta) < 1e-8, ctx
        assert np.max(np.abs(np.asarray(fit.p_mean) - p_mean)) < 1e-8, ctx
        assert abs(fit.pr_p1_above - pr) < 1e-8, ctx


@pytest.mark.parametrize("model", ["empiric", "logistic"])
def test_posterior_without_data_is_the_prior(model):
    sk = (0.05, 0.12, 0.25, 0.4)
    fit = crm_posterior(sk, (0,) * 4, (0,) * 4, model=model, prior_var=1.34, target=0.25)
    assert fit.beta_mean == pytest.approx(0.0, abs=1e-12)
    assert fit.p_plugin == pytest.approx(sk, abs=1e-12)     # p_d(0) = s_d in both models
    if model == "empiric":
        bstar = math.log(math.log(0.25) / math.log(0.05))
    else:
        bstar = math.log((math.log(1 / 3) - 3) / (math.log(0.05 / 0.95) - 3))
    assert fit.pr_p1_above == pytest.approx(norm.cdf(bstar / math.sqrt(1.34)), abs=1e-12)
    # b* is where dose 1 crosses the target (hand-derived; checked on the model curve)
    assert crm_mod.tox_threshold_beta(sk, 0.25, model, 3.0) == pytest.approx(bstar, abs=1e-14)
    assert crm_mod.dose_tox(bstar, sk, model, 3.0)[0] == pytest.approx(0.25, abs=1e-14)


# --------------------------------------------------------------------------------------
# published dfcrm recommendations (model choice, i.e. dfcrm crm()$mtd, 1-based)
@pytest.mark.parametrize("skeleton,target,prior_var,outcomes,expected", [
    # brockk.github.io/escalation/reference/get_dfcrm.html example: recommended_dose 2
    ((0.05, 0.1, 0.25, 0.4, 0.6), 0.25, 1.34, "1NNN 2NTN", 2),
    # escalation tests/testthat/test_dfcrm.R ("supports correct interface"): 1
    ((0.05, 0.1, 0.25, 0.4, 0.6), 0.25, 1.34, "1NNN 2NTT", 1),
    # escalation tests/testthat/test_stop_when_too_toxic.R: 5 and 2
    ((0.05, 0.1, 0.25, 0.4, 0.6), 0.25, 1.34, "1NNN 2NNN", 5),
    ((0.05, 0.1, 0.25, 0.4, 0.6), 0.25, 1.34, "1NNN 2NNT", 2),
    # brockk/dosefinding tests/testthat/test_dfcrm.R: "advocates continuing at dose 1"
    ((0.1, 0.2, 0.4, 0.55), 0.2, 0.75, "2NNT 2NNN 3NTT 2NNT", 1),
])
def test_published_dfcrm_recommendations(skeleton, target, prior_var, outcomes, expected):
    d = CRM(n_doses=len(skeleton), target=target, skeleton=skeleton, prior_var=prior_var)
    assert d.select_mtd(state_from_outcomes(outcomes, len(skeleton))) == expected - 1


# --------------------------------------------------------------------------------------
# decisions
SK4 = getprior(0.05, 0.3, 3, 4)
LOW = (0.01, 0.02, 0.03, 0.05, 0.08)


def test_design_is_hashable_even_from_lists():
    a = CRM(n_doses=4, target=0.3, skeleton=list(SK4), two_stage=[0, 1])
    b = CRM(n_doses=4, target=0.3, skeleton=SK4, two_stage=(0, 1))
    assert a == b and hash(a) == hash(b)


def test_start_dose_and_first_cohort():
    d = CRM(n_doses=4, target=0.3, skeleton=SK4, cohort_size=3, start_dose=1)
    dec = d.decide(TrialState.empty(4))
    assert (dec.dose, dec.cohort_size) == (1, 3)
    assert d.select_mtd(TrialState.empty(4)) is None


@pytest.mark.parametrize("model", ["empiric", "logistic"])
@pytest.mark.parametrize("skeleton", [SK4, (0.01, 0.02, 0.03, 0.05), (0.05, 0.1, 0.15, 0.2)])
def test_coherence_after_toxic_cohort(model, skeleton):
    # 2/3 >= target: the next dose may not exceed dose 2, however low the fitted curve
    d = CRM(n_doses=4, target=0.3, skeleton=skeleton, model=model, cohort_size=3)
    assert d.decide(state_from_outcomes("1NNN 2TTN", 4)).dose <= 1


def test_no_skipping_from_dose_one():
    st_ = state_from_outcomes("1NNN", 5)
    d = CRM(n_doses=5, target=0.3, skeleton=LOW, cohort_size=3)
    assert d.select_mtd(st_) == 4               # the fit alone points at the top dose
    assert d.decide(st_).dose == 1              # restricted: dose 2, never dose 3
    free = CRM(n_doses=5, target=0.3, skeleton=LOW, cohort_size=3, restrict=False)
    assert free.decide(st_).dose == 4


def test_restriction_counts_from_the_last_dose_as_in_dfcrm():
    # dfcrm crmsim: cur <- min(cur, last level + 1), even when higher doses were tried
    st_ = state_from_outcomes("1NNN 2NNN 3NNN 1NNN", 5)
    d = CRM(n_doses=5, target=0.3, skeleton=LOW, cohort_size=3)
    assert d.select_mtd(st_) == 4
    assert d.decide(st_).dose == 1


def test_coherence_uses_greater_or_equal_like_dfcrm():
    # dfcrm: if (sum(ynew)/mcohort >= target) no escalation.  1/3 vs target 1/3 and 0.35.
    st_ = state_from_outcomes("1NNN 2NTN", 5)
    at = CRM(n_doses=5, target=1 / 3, skeleton=LOW, cohort_size=3)
    above = CRM(n_doses=5, target=0.35, skeleton=LOW, cohort_size=3)
    assert at.select_mtd(st_) > 1 and above.select_mtd(st_) > 1
    assert at.decide(st_).dose == 1
    assert above.decide(st_).dose == 2


def test_estimate_option_changes_only_the_estimate():
    st_ = state_from_outcomes("1NNN 2NTN", 5)
    a = CRM(n_doses=5, target=0.25, skeleton=(0.05, 0.1, 0.25, 0.4, 0.6))
    b = CRM(n_doses=5, target=0.25, skeleton=(0.05, 0.1, 0.25, 0.4, 0.6),
            estimate="posterior_mean")
    ea, eb = a.estimates(st_), b.estimates(st_)
    assert ea["p_hat"] == ea["p_plugin"] and eb["p_hat"] == eb["p_posterior_mean"]
    assert ea["p_plugin"] == eb["p_plugin"]
    ref = _ref_posterior((0.05, 0.1, 0.25, 0.4, 0.6), st_.n, st_.y, target=0.25)
    assert eb["p_hat"] == pytest.approx(list(ref[1]), abs=1e-8)
    assert ea["beta_mean"] == pytest.approx(ref[0], abs=1e-8)
    assert ea["pr_dose1_above_target"] == pytest.approx(ref[2], abs=1e-8)


# --------------------------------------------------------------------------------------
# safety rule
def test_safety_stop():
    d = CRM(n_doses=4, target=0.3, skeleton=SK4, cohort_size=3, safety_threshold=0.9)
    toxic = state_from_outcomes("1TTT", 4)
    ok = state_from_outcomes("1NTT", 4)
    pr_toxic = _ref_posterior(SK4, toxic.n, toxic.y, target=0.3)[2]
    pr_ok = _ref_posterior(SK4, ok.n, ok.y, target=0.3)[2]
    assert pr_toxic > 0.9 > pr_ok              # quad: about 0.970 and 0.834
    dec = d.decide(toxic)
    assert dec.stop and dec.stop_reason is StopReason.LOWEST_DOSE_TOO_TOXIC
    assert d.select_mtd(toxic) is None
    assert not d.decide(ok).stop and d.select_mtd(ok) == 0
    # without the option the same design keeps going at dose 1
    plain = CRM(n_doses=4, target=0.3, skeleton=SK4, cohort_size=3)
    assert plain.decide(toxic).dose == 0 and plain.select_mtd(toxic) == 0


# --------------------------------------------------------------------------------------
# two-stage
def test_two_stage_sequence_then_model():
    d = CRM(n_doses=4, target=0.3, skeleton=SK4, cohort_size=1,
            two_stage=(0, 0, 1, 1, 2, 2, 3))
    assert d.decide(TrialState.empty(4)).dose == 0
    assert d.decide(state_from_outcomes("1N", 4)).dose == 0
    assert d.decide(state_from_outcomes("1N 1N", 4)).dose == 1
    assert d.decide(state_from_outcomes("1N 1N 2N", 4)).dose == 1
    assert d.decide(state_from_outcomes("1N 1N 2N 2N 3N", 4)).dose == 2
    # first DLT: the model takes over; 1/1 >= target, so no escalation past dose 2
    after = state_from_outcomes("1N 1N 2N 2T", 4)
    assert d.decide(after).dose <= 1
    assert d.decide(after).dose == min(1, d.select_mtd(after))
    # sequence used up without a DLT: the model (restricted to one level up) decides
    done = state_from_outcomes("1N 1N 2N 2N 3N 3N 4N", 4)
    assert d.decide(done).dose == 3


def test_two_stage_with_cohorts_of_three():
    d = CRM(n_doses=5, target=0.25, skeleton=(0.05, 0.1, 0.25, 0.4, 0.6), cohort_size=3,
            two_stage=(0, 1, 2, 3, 4))
    assert d.decide(state_from_outcomes("1NNN 2NNN", 5)).dose == 2
    # a DLT ends stage 1: 1/3 >= 0.25 caps at dose 2 and the model says dose 2
    assert d.decide(state_from_outcomes("1NNN 2NTN", 5)).dose == 1


# --------------------------------------------------------------------------------------
# hypothesis properties
_cohort = st.tuples(st.integers(0, 4), st.integers(1, 3), st.integers(0, 3))
_design = st.builds(
    lambda sk_i, model, est, tgt, restrict: CRM(
        n_doses=5, target=tgt, skeleton=[LOW, (0.05, 0.1, 0.25, 0.4, 0.6),
                                         getprior(0.05, tgt, 3, 5)][sk_i],
        model=model, estimate=est, cohort_size=3, restrict=restrict),
    st.integers(0, 2), st.sampled_from(["empiric", "logistic"]),
    st.sampled_from(["plugin", "posterior_mean"]), st.sampled_from([0.2, 0.25, 0.3]),
    st.booleans())


def _state(cohorts):
    s = TrialState.empty(5)
    for dose, n, y in cohorts:
        s = s.add_cohort(dose, n, min(y, n))
    return s


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_design, st.lists(_cohort, min_size=0, max_size=8), _cohort)
def test_one_more_dlt_in_last_cohort_never_raises_next_dose(design, history, last):
    dose, n, y = last
    y = min(y, n - 1)                    # room for one more DLT
    base = _state(history)
    fewer = base.add_cohort(dose, n, y)
    more = base.add_cohort(dose, n, y + 1)
    assert design.decide(more).dose <= design.decide(fewer).dose
    assert design.select_mtd(more) <= design.select_mtd(fewer)


@settings(max_examples=150, deadline=None)
@given(_design, st.lists(_cohort, min_size=1, max_size=10))
def test_restricted_design_never_skips_and_is_coherent(design, history):
    if not design.restrict:
        design = CRM(**{**design.__dict__, "restrict": True})
    s = _state(history)
    dec = design.decide(s)
    assert dec.dose <= s.current + 1 and dec.dose <= s.highest_tried + 1
    if s.last_y / s.last_n >= design.target:
        assert dec.dose <= s.current


# --------------------------------------------------------------------------------------
# spec, builder, registry
CTX = DesignContext(n_doses=4, target=0.3, cohort_size=3, max_n=24, start_dose=0)


def test_registry_round_trip_and_build():
    entry = get_entry("crm")
    assert entry.spec_model is Spec
    raw = {"type": "crm", "name": "crm-cal", "skeleton": {"halfwidth": 0.05, "prior_mtd": 3},
           "model": "empiric", "safety_threshold": 0.9, "two_stage": [1, 1, 2, 3, 4],
           "stop_n_at_dose": 9}
    spec = entry.spec_model.model_validate(raw)
    again = Spec.model_validate(spec.model_dump(mode="json"))
    assert again == spec
    built = entry.build(spec, CTX)
    assert isinstance(built, StopAtN) and built.n == 24
    assert isinstance(built.base, StopWhenNAtDose) and built.base.n == 9
    inner = built.inner
    assert isinstance(inner, CRM) and inner.name == "crm-cal"
    assert [round(v, 4) for v in inner.skeleton] == [0.1225, 0.2040, 0.3000, 0.4018]
    assert inner.two_stage == (0, 0, 1, 2, 3)
    assert hash(inner) == hash(make(spec, CTX))
    assert built.decide(TrialState.empty(4)).dose == 0
    full = state_from_outcomes(" ".join(["1NNN"] * 8), 4)
    assert built.decide(full).stop_reason is StopReason.MAX_N


def test_spec_defaults_reproduce_dfcrm_settings():
    inner = make(Spec(type="crm", skeleton=[0.05, 0.1, 0.2, 0.3]), CTX)
    assert (inner.model, inner.prior_var, inner.intcpt, inner.estimate, inner.restrict) == \
        ("empiric", 1.34, 3.0, "plugin", True)
    assert inner.safety_threshold is None and inner.two_stage is None
    # no skeleton given: calibrated with halfwidth 0.05 at the upper median dose (3 of 4)
    default = make(Spec(type="crm"), CTX)
    assert default.skeleton == getprior(0.05, 0.3, 3, 4)


def test_spec_validation_messages():
    with pytest.raises(ValueError, match=r"strictly increasing \(got \[0.1, 0.3, 0.2\]\)"):
        Spec(type="crm", skeleton=[0.1, 0.3, 0.2])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        Spec(type="crm", skeleton=[0.1, 0.3, 1.2])
    with pytest.raises(ValueError, match="unknown|Extra"):
        Spec(type="crm", skeleton={"halfwidth": 0.05, "nu": 3})
    with pytest.raises(ValueError, match="1-based"):
        Spec(type="crm", two_stage=[0, 1])
    with pytest.raises(ValueError, match="skeleton has 3 values but there are 4 doses"):
        make(Spec(type="crm", skeleton=[0.1, 0.2, 0.3]), CTX)
    with pytest.raises(ValueError, match="prior_mtd"):
        make(Spec(type="crm", skeleton={"prior_mtd": 6}), CTX)
    with pytest.raises(ValueError, match="two_stage"):
        make(Spec(type="crm", two_stage=[1, 5]), CTX)
    with pytest.raises(ValueError, match="intcpt"):
        make(Spec(type="crm", model="logistic", intcpt=0.5,
                   skeleton=[0.1, 0.3, 0.5, 0.7]), CTX)


# --------------------------------------------------------------------------------------
# the two-parameter logistic model (model: logistic2)
#
# References: scipy.integrate.dblquad on the unnormalised posterior (independent code, +/-12
# prior SDs, tolerances 1e-13 / 1e-11), the one-parameter logistic posterior by quad (the
# limit intcpt_var -> 0), and closed forms with no data.
def _ref2(skeleton, n, y, a0=3.0, a_var=1.34, b_var=1.34, corr=0.0, dose=0, target=0.3):
    """E[p_dose], Pr(p_1 > target) of the two-parameter model by dblquad."""
    x = np.log(np.asarray(skeleton) / (1 - np.asarray(skeleton))) - a0
    n, y = np.asarray(n, float), np.asarray(y, float)
    use = n > 0
    sa, sb = math.sqrt(a_var), math.sqrt(b_var)

    # plain floats and math (log(1 + e^v), stably): the integrand is called about 10^5
    # times per integral, where numpy on arrays of 3 values costs more than the arithmetic
    data = [(float(xd), float(yd), float(nd - yd)) for xd, nd, yd, u
            in zip(x, n, y, use, strict=True) if u]

    def softplus(v):
        return v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))

    def logf(a, b):
        za, zb = (a - a0) / sa, b / sb
        lp = -(za * za - 2 * corr * za * zb + zb * zb) / (2 * (1 - corr * corr))
        eb = math.exp(b)
        for xd, yd, md in data:
            eta = a + eb * xd
            lp -= yd * softplus(-eta) + md * softplus(eta)
        return lp

    A, B = (a0 - 12 * sa, a0 + 12 * sa), (-12 * sb, 12 * sb)
    c0 = max(logf(u, v) for u in np.linspace(*A, 101) for v in np.linspace(*B, 101))

    def f(a, b):
        return math.exp(logf(a, b) - c0)

    tol = dict(epsabs=1e-13, epsrel=1e-11)
    z = integrate.dblquad(f, *B, *A, **tol)[0]
    mean = integrate.dblquad(lambda a, b: f(a, b) * expit(a + math.exp(b) * x[dose]),
                             *B, *A, **tol)[0] / z
    lt = math.log(target / (1 - target))
    below = integrate.dblquad(f, *B, A[0], lambda b: min(max(lt - math.exp(b) * x[0], A[0]),
                                                          A[1]), **tol)[0] / z
    return mean, 1 - below


def test_logistic2_posterior_matches_dblquad():
    sk, st_ = SK4, state_from_outcomes("1NNN 2NTN 3TTN", 4)
    fit = crm_posterior(sk, st_.n, st_.y, model="logistic2", target=0.3, intcpt_var=2.0,
                        prior_corr=0.3)
    for dose in (1, 2):
        mean, pr = _ref2(sk, st_.n, st_.y, a_var=2.0, corr=0.3, dose=dose)
        assert fit.p_mean[dose] == pytest.approx(mean, abs=1e-6)
    assert fit.pr_p1_above == pytest.approx(pr, abs=1e-6)


def test_logistic2_tends_to_the_one_parameter_model():
    # intcpt_var -> 0 pins the intercept at intcpt: the one-parameter logistic model
    sk, st_ = SK4, state_from_outcomes("1NNN 2NNN 3NTT 2NTN", 4)
    two = crm_posterior(sk, st_.n, st_.y, model="logistic2", target=0.3, intcpt_var=1e-10)
    e_beta, p_mean, pr = _ref_posterior(sk, st_.n, st_.y, "logistic", 1.34, 3.0, 0.3)
    assert two.beta_mean == pytest.approx(e_beta, abs=1e-6)
    assert np.asarray(two.p_mean) == pytest.approx(p_mean, abs=1e-6)
    assert two.pr_p1_above == pytest.approx(pr, abs=1e-6)   # the theta2-axis cut
    assert two.intercept_mean == pytest.approx(3.0, abs=1e-6)


def test_logistic2_without_data_reproduces_the_skeleton():
    # dose labels by backward substitution at the prior means (Cheung 2011; trialr's
    # logistic2): the model at (E[a], E[b]) = (intcpt, 0) is the skeleton
    fit = crm_posterior(SK4, (0,) * 4, (0,) * 4, model="logistic2", target=0.3)
    assert fit.intercept_mean == pytest.approx(3.0, abs=1e-10)
    assert fit.beta_mean == pytest.approx(0.0, abs=1e-10)
    assert fit.p_plugin == pytest.approx(SK4, abs=1e-10)
    # Pr(p_1 > t) with independent normal a, b: a 1-D integral over b (a | b normal)
    x1, lt = math.log(SK4[0] / (1 - SK4[0])) - 3.0, math.log(0.3 / 0.7)
    ref = integrate.quad(lambda b: norm.pdf(b, 0, math.sqrt(1.34))
                         * norm.sf((lt - math.exp(b) * x1 - 3.0) / math.sqrt(1.34)),
                         -14, 14, epsabs=1e-13, limit=200)[0]
    assert fit.pr_p1_above == pytest.approx(ref, abs=1e-8)
    assert getprior(0.05, 0.3, 3, 4, model="logistic2") == getprior(0.05, 0.3, 3, 4,
                                                                    model="logistic")


def test_logistic2_design_options_and_refusals():
    spec = Spec(type="crm", model="logistic2", skeleton=list(SK4), intcpt_var=2.0,
                prior_corr=-0.2)
    inner = make(spec, CTX)
    assert (inner.model, inner.intcpt_var, inner.prior_corr) == ("logistic2", 2.0, -0.2)
    assert "intercept_mean" in inner.estimates(state_from_outcomes("1NNN", 4))
    default = make(Spec(type="crm", model="logistic2", skeleton=list(SK4)), CTX)
    assert (default.intcpt_var, default.prior_corr) == (1.34, 0.0)
    with pytest.raises(ValueError, match="an option of model logistic2 only"):
        Spec(type="crm", intcpt_var=2.0)
    with pytest.raises(ValueError, match="an option of model logistic2 only"):
        Spec(type="crm", model="logistic", prior_corr=0.1)
    tite = get_entry("tite-crm")
    with pytest.raises(ValueError, match="not available with tite-crm"):
        tite.build(tite.spec_model.model_validate({"type": "tite-crm", "model": "logistic2",
                                                   "skeleton": list(SK4)}), CTX)


def test_logistic2_monte_carlo_within_4se_of_exact():
    from escalation_sim import exact_oc, simulate
    from escalation_sim.inputs.scenario import load_scenario_text
    sc = load_scenario_text("""
name: crm2
doses: [DL1, DL2, DL3, DL4]
truth: {p_dlt: [0.05, 0.12, 0.25, 0.40]}
target: 0.25
trial: {max_n: 24, cohort_size: 3}
designs:
  - {type: crm, model: logistic2, skeleton: [0.10, 0.17, 0.25, 0.35]}
  - {type: crm, name: titesim-restriction, restrict: no_skip_only,
     skeleton: [0.10, 0.17, 0.25, 0.35]}
""", "crm2.yaml")
    R = 20000
    mc, ex = simulate(sc, n_trials=R, seed=3), exact_oc(None, sc)
    for name in ("crm", "titesim-restriction"):
        a, b = mc.design_oc(name), ex.design_oc(name)
        for k in range(4):
            p = b["p_select"][k]
            assert abs(a["p_select"][k] - p) <= 4 * math.sqrt(p * (1 - p) / R) + 1e-12
        assert abs(sum(b["p_select"]) + b["p_no_mtd"] - 1) < 1e-12


# --------------------------------------------------------------------------------------
# restrict: no_skip_only (dfcrm titesim: cur <- min(model's dose, cur + 1), no coherence)
@pytest.mark.parametrize("outcomes,cohort", [("1N 1N 1N 2T", 1), ("1NNN 2NNN 2TNN", 3)])
def test_no_skip_only_escalates_after_a_toxicity_but_never_skips(outcomes, cohort):
    s = state_from_outcomes(outcomes, 5)
    free = CRM(n_doses=5, target=0.3, skeleton=LOW, restrict=False, cohort_size=cohort)
    rec = free.decide(s).dose
    assert rec > s.current + 1                           # the model alone would skip
    ns = CRM(n_doses=5, target=0.3, skeleton=LOW, restrict="no_skip_only", cohort_size=cohort)
    dec = ns.decide(s)
    assert dec.dose == min(rec, s.current + 1) == s.current + 1   # escalates after a DLT
    assert "no skipping" in dec.reason
    full = CRM(n_doses=5, target=0.3, skeleton=LOW, restrict=True, cohort_size=cohort)
    assert full.decide(s).dose == s.current                       # crmsim: coherence
    # the last cohort no longer matters to the decision: it is left out of the state key
    other = TrialState(s.n, s.y, s.current, s.last_n, 0)
    assert ns.canonical(other) == ns.canonical(s)
    assert full.canonical(other) != full.canonical(s)


def test_restrict_option_values():
    assert make(Spec(type="crm", restrict="no_skip_only", skeleton=list(SK4)),
                CTX).restrict == "no_skip_only"
    with pytest.raises(ValueError):
        Spec(type="crm", restrict="coherence")
    with pytest.raises(ValueError, match="restrict must be"):
        CRM(n_doses=4, target=0.3, skeleton=SK4, restrict="sometimes")
