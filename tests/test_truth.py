"""The patient-outcome model (escalation_sim/inputs/truth.py): graded toxicities, onsets, the
DLT rule, efficacy; exact per-dose rates; scenario validation.

References used, each independent of the code under test:
- the definitions of the model (module docstring): P(grade >= g) is the sum of the listed
  probabilities of grades g and above; a DLT is a qualifying grade starting inside the window;
- Owen (1956), Ann. Math. Statist. 27:1075, the bivariate normal CDF through Owen's T function
  (scipy.special.owens_t), accurate to ~1e-16;
- scipy.stats.multivariate_normal.cdf (Genz's algorithms), to the tolerance requested;
- brute-force Monte Carlo of the generator itself (fixed seed, within 4 standard errors);
- moments of the gamma law: mean k theta, variance k theta^2, excess kurtosis 6 / k.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from escalation_sim.grades import check_scores, normalized_scores
from escalation_sim.inputs.distributions import make_distribution
from escalation_sim.inputs.scenario import ScenarioError, load_scenario, load_scenario_text
from escalation_sim.inputs.truth import (OutcomeModel, ToxicityType, bivariate_normal_cdf,
                                         p_any_event)
from escalation_sim.randomness import stream_key, uniforms

ROOT = Path(__file__).resolve().parents[1]
SEED = 20260412
N_MC = 1_000_000

CRS = {1: [0.30, 0.35, 0.40, 0.40], 2: [0.10, 0.15, 0.20, 0.25],
       3: [0.02, 0.04, 0.07, 0.12], 4: [0.00, 0.01, 0.02, 0.04]}
ICANS = {1: [0.10, 0.15, 0.20, 0.20], 2: [0.04, 0.06, 0.08, 0.10],
         3: [0.02, 0.05, 0.11, 0.20], 4: [0.00, 0.01, 0.04, 0.08]}
ICAHT = {3: [0.05, 0.08, 0.10, 0.15], 4: [0.01, 0.02, 0.03, 0.05]}


def crs_icans(rho=0.5, window=28.0, icans_onset=(8.0, 4.0), rule=None, efficacy=None):
    crs = ToxicityType.from_grades("CRS", CRS, make_distribution(3.0, 2.0, "gamma"))
    icans = ToxicityType.from_grades("ICANS", ICANS, make_distribution(*icans_onset, "gamma"))
    return OutcomeModel([crs, icans], correlation=rho, window_days=window,
                        rule=rule or [("CRS", 3), ("ICANS", 3)], efficacy=efficacy)


def three_types(rho=0.3):
    crs = ToxicityType.from_grades("CRS", CRS, make_distribution(3.0, 2.0, "gamma"))
    icans = ToxicityType.from_grades("ICANS", ICANS, make_distribution(8.0, 6.0, "lognormal"))
    icaht = ToxicityType.from_grades("ICAHT", ICAHT)  # no onset law: inside the window
    return OutcomeModel([crs, icans, icaht], correlation=rho, window_days=14.0,
                        rule=[("CRS", 3), ("ICANS", 2), ("ICAHT", 4)])


def owen_phi2(h, k, rho):
    """Phi2(h, k; rho) from Owen (1956): (Phi(h) + Phi(k)) / 2 - T(h, a_h) - T(k, a_k) - beta,
    a_h = (k - rho h) / (h sqrt(1 - rho^2)), beta = 1/2 when h k < 0 (or h k = 0 and h + k < 0)."""
    s = math.sqrt(1 - rho * rho)
    ah = (k - rho * h) / (h * s) if h != 0 else math.copysign(math.inf, k - rho * h)
    ak = (h - rho * k) / (k * s) if k != 0 else math.copysign(math.inf, h - rho * k)
    if h == 0 and k == 0:
        return 0.25 + math.asin(rho) / (2 * math.pi)
    beta = 0.0 if (h * k > 0 or (h * k == 0 and h + k >= 0)) else 0.5
    return (0.5 * special.ndtr(h) + 0.5 * special.ndtr(k) - special.owens_t(h, ah)
            - special.owens_t(k, ak) - beta)


def mvn_orthant_reference(S, q, rho):
    """P(some j has U_j < S_j and onset inside the window), by conditioning on which onsets fall
    inside the window (probability prod q_j or 1 - q_j) and asking scipy for the orthant
    probability P(z_j >= a_j for those j) of the exchangeable normal."""
    S = np.asarray(S, float)
    J = len(S)
    R = np.full((J, J), rho)
    np.fill_diagonal(R, 1.0)
    a = special.ndtri(S)
    none = 0.0
    for inside in itertools.product([False, True], repeat=J):
        w = np.prod([q[j] if inside[j] else 1 - q[j] for j in range(J)])
        idx = [j for j in range(J) if inside[j]]
        if not idx:
            orth = 1.0
        elif len(idx) == 1:
            orth = 1.0 - S[idx[0]]
        else:
            orth = stats.multivariate_normal.cdf(
                -a[idx], cov=R[np.ix_(idx, idx)], abseps=1e-10, releps=1e-10, maxpts=2_000_000,
                rng=np.random.default_rng(7))
        none += w * orth
    return 1.0 - none


def z_prop(phat, p, n):
    if p <= 0.0 or p >= 1.0:
        return 0.0 if phat == p else math.inf
    return (phat - p) / math.sqrt(p * (1 - p) / n)


def draw(model, n=N_MC, seed=SEED):
    """n patients: patient i is patient i % 3 of trial i // 3, at dose i % K."""
    i = np.arange(n)
    return model.outcomes(seed, i // 3, i % 3, i % model.n_doses), i % model.n_doses


# --------------------------------------------------------------------------------------
# exact rates vs brute-force Monte Carlo of the generator
# --------------------------------------------------------------------------------------
MODELS = {
    "crs-icans rho 0.5, 28 days": lambda: crs_icans(0.5),
    "crs-icans rho -0.6, 7 days": lambda: crs_icans(-0.6, window=7.0),
    "crs-icans independent, 10 days": lambda: crs_icans(0.0, window=10.0),
    "three types rho 0.3, 14 days": lambda: three_types(0.3),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_exact_rates_match_the_generator_within_4_se(name):
    m = MODELS[name]()
    o, dose = draw(m)
    scores = {0: 0, 1: 0, 2: 0.5, 3: 1.0, 4: 1.5}
    pw = m.worst_grade_probs()
    mean_s = m.mean_score(scores)
    ns = o.normalized_score(scores)
    worst = []
    for d in range(m.n_doses):
        at = dose == d
        n = int(at.sum())
        checks = [("dlt", o.dlt[at].mean(), m.dlt_rates()[d]),
                  ("late", o.late[at].mean(), m.late_rates()[d])]
        for j, t in enumerate(m.types):
            for g in range(1, t.max_grade + 1):
                checks.append((f"{t.name}>={g}", (o.grade[at, j] >= g).mean(),
                               m.grade_at_least(t.name, g)[d]))
        for g in range(pw.shape[0]):
            checks.append((f"worst={g}", (o.worst_grade[at] == g).mean(), pw[g, d]))
        for label, phat, p in checks:
            worst.append((abs(z_prop(phat, p, n)), label, d, phat, p))
        sd = ns[at].std()
        worst.append((abs(ns[at].mean() - mean_s[d]) / (sd / math.sqrt(n)), "mean score", d,
                      ns[at].mean(), mean_s[d]))
    worst.sort(reverse=True)
    assert worst[0][0] < 4.0, worst[:3]


def test_derived_dlt_rate_vs_scipy_bivariate_normal():
    for rho, window in [(0.5, 28.0), (-0.6, 7.0), (0.9, 10.0), (-0.95, 5.0)]:
        m = crs_icans(rho, window=window)
        q = [m.p_onset_within("CRS"), m.p_onset_within("ICANS")]
        for d in range(4):
            S = [m.grade_at_least("CRS", 3)[d], m.grade_at_least("ICANS", 3)[d]]
            ref = mvn_orthant_reference(S, q, rho)
            assert m.dlt_rates()[d] == pytest.approx(ref, abs=1e-9), (rho, window, d)


def test_three_type_rate_vs_scipy_multivariate_normal():
    m = three_types(0.3)
    S = [m.grade_at_least("CRS", 3), m.grade_at_least("ICANS", 2), m.grade_at_least("ICAHT", 4)]
    q = [m.p_onset_within(t) for t in ("CRS", "ICANS", "ICAHT")]
    for d in (1, 3):
        ref = mvn_orthant_reference([s[d] for s in S], q, 0.3)
        assert m.dlt_rates()[d] == pytest.approx(ref, abs=1e-8)


def test_bivariate_normal_cdf_vs_owens_t_to_1e_13():
    worst = 0.0
    for h in (-6.0, -2.5, -0.7, 0.0, 0.3, 1.4, 4.0):
        for k in (-5.0, -1.1, 0.0, 0.8, 2.2, 7.0):
            for rho in (-0.999, -0.8, -0.3, 0.05, 0.5, 0.9, 0.999):
                worst = max(worst, abs(bivariate_normal_cdf(h, k, rho) - owen_phi2(h, k, rho)))
    assert worst < 1e-13


def test_bivariate_normal_cdf_limits():
    # Phi2(inf, k) = Phi(k); Phi2(-inf, k) = 0; rho = 0 is the product
    assert bivariate_normal_cdf(math.inf, 0.3, 0.4) == pytest.approx(special.ndtr(0.3), abs=1e-15)
    assert bivariate_normal_cdf(-math.inf, 0.3, 0.4) == 0.0
    assert bivariate_normal_cdf(0.2, -0.5, 0.0) == pytest.approx(
        special.ndtr(0.2) * special.ndtr(-0.5), abs=1e-15)


# --------------------------------------------------------------------------------------
# common random numbers: the binary model and the first type reuse the dlt stream
# --------------------------------------------------------------------------------------
def _grid(n=60_000):
    i = np.arange(n)
    return i // 6, i % 6, (i * 7) % 4


def test_binary_truth_flag_is_the_cohort_engines_rule():
    p = [0.05, 0.10, 0.18, 0.28]
    t, k, d = _grid()
    o = OutcomeModel.binary(p).outcomes(SEED, t, k, d)
    ref = uniforms(stream_key(SEED, "dlt"), t.astype(np.uint64), k.astype(np.uint64)) < \
        np.asarray(p)[d]
    assert np.array_equal(o.dlt, ref)
    assert not o.late.any()


@pytest.mark.parametrize("onset", ["none", "fixed 2 days", "uniform inside the window"])
def test_one_type_graded_truth_reproduces_the_binary_model(onset):
    line = {"none": "", "fixed 2 days": "\n      onset_days: 2",
            "uniform inside the window": "\n      onset_days: {mean: 14, sd: 8, dist: uniform}"}
    sc = load_scenario_text(GRADED.replace("""
    - type: ICANS
      grades: {3: [0.02, 0.05, 0.11, 0.20], 4: [0.00, 0.01, 0.04, 0.08]}
      onset_days: {mean: 8, sd: 4}""", "").replace(
        "      onset_days: {mean: 3, sd: 2}", line[onset].lstrip("\n")).replace(
        "  correlation: 0.5\n", "").replace("  - {type: ICANS, min_grade: 3}\n", ""), "g.yaml")
    # P(CRS grade >= 3) = p_3 + p_4 (definition)
    expected = [0.02 + 0.00, 0.04 + 0.01, 0.07 + 0.02, 0.12 + 0.04]
    assert sc.p_true.tolist() == expected
    t, k, d = _grid()
    o = sc.outcome_model.outcomes(SEED, t, k, d)
    u = uniforms(stream_key(SEED, "dlt"), t.astype(np.uint64), k.astype(np.uint64))
    assert np.array_equal(o.dlt, u < sc.p_true[d])
    for g in range(1, 5):  # grade >= g iff u < P(grade >= g)
        assert np.array_equal(o.grade[:, 0] >= g, u < sc.outcome_model.types[0].at_least[g][d])


@pytest.mark.parametrize("rho", [0.0, 0.5, -0.5])
def test_first_type_uses_the_dlt_stream_and_the_second_its_own(rho):
    m = crs_icans(rho)
    t, k, d = _grid()
    o = m.outcomes(SEED, t, k, d)
    tt, kk = t.astype(np.uint64), k.astype(np.uint64)
    u = uniforms(stream_key(SEED, "dlt"), tt, kk)
    assert np.array_equal(o.grade[:, 0] >= 3, u < m.grade_at_least("CRS", 3)[d])
    if rho == 0.0:
        v = uniforms(stream_key(SEED, "toxicity:ICANS"), tt, kk)
        assert np.array_equal(o.grade[:, 1] >= 2, v < m.grade_at_least("ICANS", 2)[d])


@pytest.mark.parametrize("name", list(MODELS) + ["binary"])
def test_dlt_flags_fast_path_equals_the_full_outcomes(name):
    m = OutcomeModel.binary([0.1, 0.2, 0.3, 0.4]) if name == "binary" else MODELS[name]()
    t, k, d = _grid(100_000)
    assert np.array_equal(m.dlt_flags(SEED, t, k, d), m.outcomes(SEED, t, k, d).dlt)


def test_outcomes_do_not_depend_on_batching_or_on_other_patients():
    m = crs_icans(0.5, efficacy=[0.2, 0.4, 0.55, 0.6])
    t, k, d = _grid(3000)
    whole = m.outcomes(SEED, t, k, d)
    for a, b in [(0, 1000), (1000, 1001), (1001, 3000)]:
        part = m.outcomes(SEED, t[a:b], k[a:b], d[a:b])
        for f in ("grade", "within_window", "dlt", "late", "worst_grade", "response"):
            assert np.array_equal(getattr(part, f), getattr(whole, f)[a:b]), f
        assert np.array_equal(part.onset_day, whole.onset_day[a:b], equal_nan=True)


def test_appending_a_type_changes_no_other_type():
    # docs/design.md: streams are named after the type and L gains only a last row (the
    # three-type model has a third type ICAHT and another ICANS onset law, same latents)
    t, k, d = _grid(20_000)
    two = crs_icans(0.3).outcomes(SEED, t, k, d)
    three = three_types(0.3).outcomes(SEED, t, k, d)
    assert np.array_equal(two.grade[:, 0], three.grade[:, 0])
    assert np.array_equal(two.grade[:, 1], three.grade[:, 1])
    assert np.array_equal(two.onset_day[:, 0], three.onset_day[:, 0], equal_nan=True)


def test_grades_never_fall_when_the_dose_rises():
    # grade probabilities whose tails P(grade >= g) rise with dose: the same patient (same
    # uniforms) cannot get a lower grade at a higher dose (coupling through thresholds)
    m = crs_icans(0.5)
    t, k, _ = _grid(20_000)
    prev = None
    for d in range(4):
        o = m.outcomes(SEED, t, k, np.full(t.size, d))
        if prev is not None:
            assert (o.grade >= prev).all()
        prev = o.grade


def test_response_is_the_efficacy_stream_below_the_rate():
    eff = [0.20, 0.40, 0.55, 0.60]
    m = crs_icans(0.5, efficacy=eff)
    t, k, d = _grid()
    o = m.outcomes(SEED, t, k, d)
    ref = uniforms(stream_key(SEED, "efficacy"), t.astype(np.uint64), k.astype(np.uint64)) < \
        np.asarray(eff)[d]
    assert np.array_equal(o.response, ref)
    assert m.response_rates().tolist() == eff
    assert crs_icans(0.5).outcomes(SEED, t, k, d).response is None


# --------------------------------------------------------------------------------------
# independence, correlation and onset laws (empirical)
# --------------------------------------------------------------------------------------
def test_correlation_zero_gives_independent_types():
    m = crs_icans(0.0)
    o, dose = draw(m)
    at = dose == 3
    n = int(at.sum())
    a, b = o.grade[at, 0] >= 2, o.grade[at, 1] >= 2
    p_a, p_b = m.grade_at_least("CRS", 2)[3], m.grade_at_least("ICANS", 2)[3]
    assert abs(z_prop((a & b).mean(), p_a * p_b, n)) < 4


def test_latent_correlation_is_rho():
    # the latents' normal scores are recovered exactly from the grades' thresholds only in
    # coarse bins, so check the joint tail against the bivariate normal (Owen's T reference)
    rho = 0.5
    m = crs_icans(rho)
    o, dose = draw(m)
    at = dose == 3
    S1, S2 = m.grade_at_least("CRS", 2)[3], m.grade_at_least("ICANS", 2)[3]
    both = owen_phi2(special.ndtri(S1), special.ndtri(S2), rho)
    phat = ((o.grade[at, 0] >= 2) & (o.grade[at, 1] >= 2)).mean()
    assert abs(z_prop(phat, both, int(at.sum()))) < 4
    assert both > 1.3 * S1 * S2  # the check has power: the joint tail is far from independence


@pytest.mark.parametrize("dist", ["gamma", "lognormal"])
def test_onset_law_moments(dist):
    mean, sd = 8.0, 4.0
    typ = ToxicityType.from_grades("X", {1: [1.0]}, make_distribution(mean, sd, dist))
    m = OutcomeModel([typ], rule=[("X", 1)], window_days=1000.0)
    n = N_MC
    o = m.outcomes(SEED, np.arange(n), 0, 0)
    x = o.onset_day[:, 0]
    assert not np.isnan(x).any()
    assert abs(x.mean() - mean) / (sd / math.sqrt(n)) < 4
    if dist == "gamma":  # gamma shape k: excess kurtosis 6 / k
        kk = (mean / sd) ** 2
        mu4 = sd ** 4 * (3 + 6 / kk)
    else:  # lognormal: excess kurtosis e^{4s2} + 2e^{3s2} + 3e^{2s2} - 6
        s2 = math.log1p((sd / mean) ** 2)
        mu4 = sd ** 4 * (math.exp(4 * s2) + 2 * math.exp(3 * s2) + 3 * math.exp(2 * s2) - 3)
    se_var = math.sqrt((mu4 - sd ** 4) / n)
    assert abs(x.var() - sd ** 2) / se_var < 4


# --------------------------------------------------------------------------------------
# hand-derived exact values
# --------------------------------------------------------------------------------------
def test_onset_after_the_window_is_never_a_dlt_but_late():
    typ = ToxicityType.from_grades("X", {3: [0.1, 0.3]}, make_distribution(30.0))  # fixed day 30
    m = OutcomeModel([typ], rule=[("X", 3)], window_days=28.0)
    assert m.dlt_rates().tolist() == [0.0, 0.0]
    assert m.late_rates().tolist() == [0.1, 0.3]
    o = m.outcomes(SEED, np.arange(5000), 0, np.arange(5000) % 2)
    assert not o.dlt.any() and o.late.any() and not np.isnan(o.onset_day[o.late, 0]).any()
    assert (o.worst_grade == 0).all()  # the event is outside the window


def test_uniform_onset_halfway_through_the_window_halves_the_rate():
    # uniform on [0, 56] (mean 28, sd 56 / sqrt(12)): P(onset <= 28) = 1/2
    typ = ToxicityType.from_grades("X", {3: [0.1, 0.3]},
                                   make_distribution(28.0, 56.0 / math.sqrt(12.0), "uniform"))
    m = OutcomeModel([typ], rule=[("X", 3)], window_days=28.0)
    assert m.dlt_rates() == pytest.approx([0.05, 0.15], abs=1e-15)
    assert m.late_rates() == pytest.approx([0.05, 0.15], abs=1e-15)


def test_dlt_day_and_late_flags_follow_the_definition():
    m = crs_icans(0.5, window=7.0)
    o, _ = draw(m, 200_000)
    assert not (o.dlt & o.late).any()
    assert np.isnan(o.dlt_day[~o.dlt]).all()
    assert (o.dlt_day[o.dlt] <= 7.0).all()
    qual = np.stack([o.grade[:, 0] >= 3, o.grade[:, 1] >= 3], axis=1)
    inside = np.where(qual & (o.onset_day <= 7.0), o.onset_day, np.inf).min(axis=1)
    assert np.array_equal(o.dlt_day[o.dlt], inside[o.dlt])
    assert np.array_equal(o.late, qual.any(axis=1) & ~o.dlt)


def test_worst_grade_distribution_of_one_type_is_the_listed_probabilities():
    typ = ToxicityType.from_grades("CRS", CRS)
    m = OutcomeModel([typ], rule=[("CRS", 3)])
    pw = m.worst_grade_probs()
    for g in range(1, 5):
        assert pw[g] == pytest.approx(CRS[g], abs=1e-15)
    grade0 = [1 - sum(CRS[g][d] for g in CRS) for d in range(4)]
    assert pw[0] == pytest.approx(grade0, abs=1e-15)
    # gBOIN scores 0 / 0 / 0.5 / 1 / 1.5 normalized by 1.5 (Mu et al. 2019)
    expected = [(0.5 * CRS[2][d] + 1.0 * CRS[3][d] + 1.5 * CRS[4][d]) / 1.5 for d in range(4)]
    assert m.mean_score({0: 0, 1: 0, 2: 0.5, 3: 1.0, 4: 1.5}) == pytest.approx(expected, abs=1e-15)
    values, probs = m.score_distribution([0, 0, 0.5, 1.0, 1.5])
    assert values.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert probs[0] == pytest.approx([grade0[d] + CRS[1][d] for d in range(4)], abs=1e-15)


# --------------------------------------------------------------------------------------
# properties (hypothesis, derandomized)
# --------------------------------------------------------------------------------------
prob = st.floats(0.0, 1.0, allow_nan=False)
pos = st.floats(1e-6, 0.999, allow_nan=False)
rhos = st.floats(-0.95, 0.95, allow_nan=False)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(s1=pos, s2=pos, q1=prob, q2=prob, rho=rhos, bump=st.floats(0.0, 0.5))
def test_p_dlt_within_boole_and_frechet_bounds_and_monotone(s1, s2, q1, q2, rho, bump):
    S = np.array([[s1], [s2]])
    q = np.array([q1, q2])
    p = p_any_event(S, q, rho)[0]
    assert max(q1 * s1, q2 * s2) - 1e-12 <= p <= min(1.0, q1 * s1 + q2 * s2) + 1e-12
    # a larger P(grade >= min_grade) of either type never lowers P(DLT)
    up = p_any_event(np.array([[min(s1 + bump, 1.0)], [s2]]), q, rho)[0]
    assert up >= p - 1e-12
    up2 = p_any_event(np.array([[s1], [min(s2 + bump, 1.0)]]), q, rho)[0]
    assert up2 >= p - 1e-12


@settings(max_examples=100, deadline=None, derandomize=True)
@given(s1=pos, s2=pos, q1=prob, q2=prob, r1=rhos, r2=rhos)
def test_p_dlt_falls_as_the_correlation_rises(s1, s2, q1, q2, r1, r2):
    # Slepian: the joint probability rises with rho, so the union's falls
    lo, hi = sorted((r1, r2))
    S, q = np.array([[s1], [s2]]), np.array([q1, q2])
    assert p_any_event(S, q, hi)[0] <= p_any_event(S, q, lo)[0] + 1e-12


@settings(max_examples=60, deadline=None, derandomize=True)
@given(s=st.lists(pos, min_size=3, max_size=3), q=st.lists(prob, min_size=3, max_size=3),
       rho=st.floats(0.0, 0.95))
def test_three_type_bounds(s, q, rho):
    m = np.array(s) * np.array(q)
    p = p_any_event(np.array(s)[:, None], np.array(q), rho)[0]
    assert m.max() - 1e-12 <= p <= min(1.0, m.sum()) + 1e-12


@settings(max_examples=60, deadline=None, derandomize=True)
@given(probs=st.lists(st.floats(0.0, 0.25), min_size=4, max_size=4),
       probs2=st.lists(st.floats(0.0, 0.25), min_size=4, max_size=4), rho=rhos,
       window=st.floats(1.0, 40.0))
def test_worst_grade_probabilities_sum_to_one_and_late_is_non_negative(probs, probs2, rho,
                                                                        window):
    a = ToxicityType.from_grades("A", {g + 1: [p] for g, p in enumerate(probs)},
                                 make_distribution(5.0, 3.0))
    b = ToxicityType.from_grades("B", {g + 1: [p] for g, p in enumerate(probs2)},
                                 make_distribution(12.0, 6.0, "lognormal"))
    m = OutcomeModel([a, b], correlation=rho, window_days=window)
    pw = m.worst_grade_probs()
    assert (pw >= 0).all() and pw.sum(axis=0) == pytest.approx([1.0], abs=1e-12)
    assert (m.late_rates() >= 0).all()
    assert (m.dlt_rates() <= m.any_time_rates() + 1e-15).all()


# --------------------------------------------------------------------------------------
# severity scores
# --------------------------------------------------------------------------------------
def test_scores_of_mu_et_al_normalize_by_the_largest():
    assert normalized_scores({0: 0, 1: 0, 2: 0.5, 3: 1.0, 4: 1.5}).tolist() == \
        pytest.approx([0, 0, 1 / 3, 2 / 3, 1])
    assert check_scores({"0": 0, "1": 0, "2": 1}) == (0.0, 0.0, 1.0)  # JSON writes keys as text
    assert check_scores([0, 0.5, 1]) == (0.0, 0.5, 1.0)


@pytest.mark.parametrize("scores,max_grade,msg", [
    ({0: 0, 1: 0.5, 2: 0.4, 3: 1}, None, "must not decrease with the grade: grade 2 scores 0.4"),
    ({0: 0.1, 1: 0.5}, None, "grade 0 (no toxicity) must score 0"),
    ({0: 0, 2: 1}, None, "missing 1"),
    ({0: 0, 1: -1}, None, "finite numbers >= 0"),
    ({0: 0, 1: 0}, None, "the largest score must be > 0"),
    ({0: 0, 1: 0.5, 2: 1}, 4, "no score for grade 4, which the truth can produce"),
    ({0: 0, 7: 1}, None, "grades must be integers from 0 to 5 (got 7)"),
    ("high", None, "must map grades to scores"),
])
def test_bad_scores(scores, max_grade, msg):
    with pytest.raises(ValueError) as ei:
        check_scores(scores, max_grade)
    assert msg in str(ei.value) and "(got " in str(ei.value)


def test_score_of_a_grade_the_truth_cannot_reach_is_an_error():
    m = OutcomeModel([ToxicityType.from_grades("CRS", CRS)])
    with pytest.raises(ValueError, match="no score for grade 4"):
        m.mean_score({0: 0, 1: 0, 2: 0.5, 3: 1})
    # also for a batch of patients none of whom reached grade 4 (dose 1 has P(grade 4) = 0)
    o = m.outcomes(SEED, np.arange(100), 0, 0)
    assert o.grade.max() < 4
    with pytest.raises(ValueError, match="no score for grade 4"):
        o.normalized_score({0: 0, 1: 0, 2: 0.5, 3: 1})


# --------------------------------------------------------------------------------------
# scenario files
# --------------------------------------------------------------------------------------
GRADED = """\
name: graded
doses: [DL1, DL2, DL3, DL4]
truth:
  toxicities:
    - type: CRS
      grades:
        1: [0.30, 0.35, 0.40, 0.40]
        2: [0.10, 0.15, 0.20, 0.25]
        3: [0.02, 0.04, 0.07, 0.12]
        4: [0.00, 0.01, 0.02, 0.04]
      onset_days: {mean: 3, sd: 2}
    - type: ICANS
      grades: {3: [0.02, 0.05, 0.11, 0.20], 4: [0.00, 0.01, 0.04, 0.08]}
      onset_days: {mean: 8, sd: 4}
  correlation: 0.5
dlt:
  - {type: CRS, min_grade: 3}
  - {type: ICANS, min_grade: 3}
target: 0.25
trial: {max_n: 24, cohort_size: 3}
designs: [{type: boin}]
"""


def problems(text):
    with pytest.raises(ScenarioError) as ei:
        load_scenario_text(text, "s.yaml")
    return ei.value.problems


def test_graded_scenario_p_true_is_the_derived_dlt_curve():
    sc = load_scenario_text(GRADED, "g.yaml")
    assert sc.dlt_window_days == 28.0
    S1 = [0.02, 0.05, 0.09, 0.16]   # CRS: p3 + p4
    S2 = [0.02, 0.06, 0.15, 0.28]   # ICANS: p3 + p4
    q = [float(make_distribution(3, 2).cdf(28.0)), float(make_distribution(8, 4).cdf(28.0))]
    ref = [mvn_orthant_reference([a, b], q, 0.5) for a, b in zip(S1, S2, strict=True)]
    assert sc.p_true == pytest.approx(ref, abs=1e-9)
    assert sc.true_dlt_rates() == pytest.approx(ref, abs=1e-9)
    assert (sc.true_late_rates() >= 0).all() and sc.true_response_rates() is None


def test_the_window_comes_from_conduct_then_truth_then_28_days():
    seven = load_scenario_text(GRADED.replace("  correlation: 0.5\n",
                                              "  correlation: 0.5\n  dlt_window_days: 7\n"), "g")
    assert seven.dlt_window_days == 7.0
    m = crs_icans(0.5, window=7.0)
    # the ICANS entry above lists only grades 3-4; the rates over grades >= 3 are the same
    assert seven.p_true == pytest.approx(m.dlt_rates(), abs=1e-15)
    conduct = load_scenario_text(GRADED + "conduct: {dlt_window_days: 7}\n", "g")
    assert conduct.dlt_window_days == 7.0
    assert conduct.p_true == pytest.approx(m.dlt_rates(), abs=1e-15)
    assert load_scenario_text(GRADED + "conduct: {}\n", "g").dlt_window_days == 28.0


def test_default_rule_is_every_type_at_grade_3():
    sc = load_scenario_text(GRADED.replace(
        "dlt:\n  - {type: CRS, min_grade: 3}\n  - {type: ICANS, min_grade: 3}\n", ""), "g")
    assert sc.outcome_model.rule_names == (("CRS", 3), ("ICANS", 3))
    d = sc.resolved()
    assert d["dlt"] == [{"type": "CRS", "min_grade": 3}, {"type": "ICANS", "min_grade": 3}]
    assert d["truth"]["dlt_window_days"] == 28.0 and d["truth"]["correlation"] == 0.5
    assert "dlt_window_days" not in load_scenario_text(GRADED + "conduct: {}\n",
                                                       "g").resolved()["truth"]


def test_resolved_graded_scenario_loads_back_to_the_same_truth():
    import json
    sc = load_scenario_text(GRADED, "g")
    again = json.loads(json.dumps(sc.resolved()))  # grade keys become strings, as in JSON
    assert list(again["truth"]["toxicities"][0]["grades"]) == ["1", "2", "3", "4"]
    from escalation_sim.inputs.scenario import load_scenario_dict
    sc2 = load_scenario_dict(again, "r")
    assert sc2.p_true.tolist() == sc.p_true.tolist()


def test_binary_truth_resolves_as_before():
    sc = load_scenario(ROOT / "scenarios" / "standard_mtd2.yaml")
    d = sc.resolved()
    assert set(d["truth"]) == {"p_dlt", "allow_non_monotone", "label"} and "dlt" not in d
    assert sc.dlt_window_days == 28.0


def test_with_truth_replaces_a_graded_truth_by_a_binary_one():
    sc = load_scenario_text(GRADED, "g").with_truth([0.1, 0.2, 0.3, 0.4])
    assert not sc.model.truth.graded and sc.model.dlt is None
    assert sc.p_true.tolist() == [0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize("edit,expected", [
    (("3: [0.02, 0.04, 0.07, 0.12]", "3: [0.02, -0.04, 0.07, 0.12]"),
     "truth.toxicities[0].grades: grade 3: every probability must be a finite number in "
     "[0, 1]; bad: [-0.04] (got [0.02, -0.04, 0.07, 0.12])"),
    (("1: [0.30, 0.35, 0.40, 0.40]", "1: [0.30, 0.35, 0.40, 0.70]"),
     "truth.toxicities[0].grades: the grade probabilities at dose 4 sum to 1.11 > 1 "
     "(got {\"1\": 0.7, \"2\": 0.25, \"3\": 0.12, \"4\": 0.04})"),
    (("4: [0.00, 0.01, 0.02, 0.04]", "6: [0.00, 0.01, 0.02, 0.04]"),
     "truth.toxicities[0].grades: grades must be integers from 1 to 5 (got 6)"),
    (("4: [0.00, 0.01, 0.02, 0.04]", "0: [0.00, 0.01, 0.02, 0.04]"),
     "truth.toxicities[0].grades: grades must be integers from 1 to 5 (grade 0 is the "
     "remainder: do not list it) (got 0)"),
    (("  - {type: ICANS, min_grade: 3}", "  - {type: ICNAS, min_grade: 3}"),
     "dlt[1].type: unknown toxicity type; did you mean 'ICANS'? (types in truth.toxicities: "
     "CRS, ICANS) (got 'ICNAS')"),
    (("correlation: 0.5", "correlation: 1.0"), "truth.correlation: must be in (-1, 1) (got 1.0)"),
    (("correlation: 0.5", "correlation: -1.2"),
     "truth.correlation: must be in (-1, 1) (got -1.2)"),
    (("correlation: 0.5", "correlation: 0.5\n  efficacy: [0.2, 0.4, 1.5, 0.6]"),
     "truth.efficacy: every probability must be a finite number in [0, 1]; bad: [1.5] "
     "(got [0.2, 0.4, 1.5, 0.6])"),
    (("correlation: 0.5", "correlation: 0.5\n  efficacy: [0.2, 0.4, 0.6]"),
     "truth.efficacy: has 3 values for 4 doses (got [0.2, 0.4, 0.6])"),
    (("2: [0.10, 0.15, 0.20, 0.25]", "2: [0.10, 0.15, 0.20]"),
     "truth.toxicities[0].grades.2: has 3 values for 4 doses (got [0.1, 0.15, 0.2])"),
    ([("- type: ICANS", "- type: crs"), ("  - {type: ICANS, min_grade: 3}\n", "")],
     "truth.toxicities[1].type: duplicate type name 'crs' (also truth.toxicities[0]) "
     "(got 'crs')"),
    (("onset_days: {mean: 3, sd: 2}", "onset_days: {mean: 3, sd: -2}"),
     "truth.toxicities[0].onset_days.sd: must be >= 0 (got -2.0)"),
    (("onset_days: {mean: 3, sd: 2}", "onset_days: {mean: 3, sd: 12}"),
     "truth.toxicities[0].onset_days: a gamma duration needs sd <= 3 x mean (got mean 3.0, "
     "sd 12.0); use dist: lognormal for a more skewed duration"),
    (("onset_days: {mean: 3, sd: 2}", "onset_days: {mean: 3, sd: 2, dist: weibull}"),
     "truth.toxicities[0].onset_days.dist: Input should be 'gamma', 'lognormal', 'normal', "
     "'fixed' or 'uniform' (got 'weibull')"),
    (("  - {type: ICANS, min_grade: 3}", "  - {type: CRS, min_grade: 4}"),
     "dlt[1].type: CRS is already in dlt[0]; list each type once (got 'CRS')"),
    (("  - {type: ICANS, min_grade: 3}", "  - {type: ICANS, min_grade: 5}"),
     "dlt[1].min_grade: ICANS lists grades up to 4, so this criterion can never be met (got 5)"),
    (("  - {type: ICANS, min_grade: 3}", "  - {type: ICANS, min_grade: 0}"),
     "dlt[1].min_grade: Input should be greater than or equal to 1 (got 0)"),
    (("  correlation: 0.5\n", "  correlation: 0.5\n  p_dlt: [0.1, 0.2, 0.3, 0.4]\n"),
     "truth: give either p_dlt (one binary DLT per patient) or toxicities (graded event types "
     "with a dlt rule), not both (got "),
    (("  correlation: 0.5\n", "  correlation: 0.5\n  dlt_window_days: 0\n"),
     "truth.dlt_window_days: must be > 0 days (got 0.0)"),
])
def test_graded_truth_validation(edit, expected):
    text = GRADED
    for old, new in edit if isinstance(edit, list) else [edit]:
        assert old in text
        text = text.replace(old, new, 1)
    p = problems(text)
    assert any(x.startswith(expected) for x in p), p
    assert len(p) == 1, p


BINARY = GRADED.replace(GRADED[GRADED.index("truth:"):GRADED.index("target:")],
                        "truth: {p_dlt: [0.05, 0.10, 0.18, 0.28]}\n")


@pytest.mark.parametrize("extra,expected", [
    ("dlt: [{type: DLT, min_grade: 1}]\n",
     'dlt: a DLT rule needs a graded truth (truth.toxicities); with truth.p_dlt every event '
     'is a DLT (got [{"type": "DLT", "min_grade": 1}])'),
    ("", None),
])
def test_binary_truth_takes_no_dlt_rule(extra, expected):
    text = BINARY + extra
    if expected is None:
        assert load_scenario_text(text, "b").p_true.tolist() == [0.05, 0.10, 0.18, 0.28]
    else:
        assert problems(text) == [expected]


def test_binary_truth_rejects_graded_only_options():
    p = problems(BINARY.replace("[0.05, 0.10, 0.18, 0.28]}",
                                "[0.05, 0.10, 0.18, 0.28], correlation: 0.2, "
                                "dlt_window_days: 21, efficacy: [0.1, 0.2]}"))
    assert p == ["truth.efficacy: has 2 values for 4 doses (got [0.1, 0.2])",
                 "truth.correlation: needs at least two toxicity types in truth.toxicities "
                 "(got 0.2)",
                 "truth.dlt_window_days: only a graded truth (truth.toxicities) uses a DLT "
                 "window (got 21.0)"]


def test_truth_needs_p_dlt_or_toxicities():
    p = problems(BINARY.replace("{p_dlt: [0.05, 0.10, 0.18, 0.28]}", "{label: x}"))
    assert p == ["truth: give either p_dlt (one binary DLT per patient) or toxicities (graded "
                 "event types with a dlt rule), not neither (got {\"label\": \"x\"})"]


def test_correlation_needs_two_types_and_is_non_negative_for_three():
    one = GRADED[:GRADED.index("    - type: ICANS")] + GRADED[GRADED.index("  correlation"):]
    one = one.replace("  - {type: ICANS, min_grade: 3}\n", "")
    assert problems(one) == ["truth.correlation: needs at least two toxicity types (got 0.5)"]
    three = GRADED.replace("  correlation: 0.5", "    - type: ICAHT\n"
                           "      grades: {3: [0.05, 0.08, 0.10, 0.15]}\n  correlation: -0.2")
    p = problems(three)
    assert p == ["truth.correlation: must be >= 0 with three or more toxicity types (an "
                 "exchangeable correlation below 0 is supported for two types only) (got -0.2)"]


def test_window_in_truth_must_agree_with_conduct():
    text = GRADED.replace("  correlation: 0.5\n", "  correlation: 0.5\n  dlt_window_days: 21\n")
    assert problems(text + "conduct: {dlt_window_days: 28}\n") == [
        "truth.dlt_window_days: with a conduct block the DLT window is conduct.dlt_window_days "
        "(28); remove truth.dlt_window_days or make them equal (got 21)"]
    assert load_scenario_text(text + "conduct: {dlt_window_days: 21}\n", "g").dlt_window_days == 21


def test_derived_curve_must_rise_unless_allowed():
    text = GRADED.replace("3: [0.02, 0.04, 0.07, 0.12]", "3: [0.02, 0.04, 0.07, 0.01]").replace(
        "4: [0.00, 0.01, 0.02, 0.04]", "4: [0.00, 0.01, 0.02, 0.00]").replace(
        "{3: [0.02, 0.05, 0.11, 0.20], 4: [0.00, 0.01, 0.04, 0.08]}",
        "{3: [0.02, 0.05, 0.11, 0.01]}")
    p = problems(text)
    assert len(p) == 1 and p[0].startswith(
        "truth: the DLT rate derived from the toxicities and the dlt rule must be "
        "non-decreasing in dose; set truth.allow_non_monotone: true to allow it (got [")
    ok = load_scenario_text(text.replace("  correlation: 0.5\n",
                                         "  correlation: 0.5\n  allow_non_monotone: true\n"), "g")
    assert ok.p_true[3] < ok.p_true[2]


def test_every_graded_problem_at_once():
    p = problems(GRADED.replace("2: [0.10, 0.15, 0.20, 0.25]", "2: [0.10, 0.15, 0.20]")
                 .replace("{type: ICANS, min_grade: 3}", "{type: ICNAS, min_grade: 3}")
                 .replace("target: 0.25", "target: 1.5"))
    assert [x.split(":")[0] for x in p] == ["target", "truth.toxicities[0].grades.2", "dlt[1].type"]


def test_cli_validate_graded_file_exit_2_no_traceback(tmp_path, cli):
    f = tmp_path / "bad.yaml"
    f.write_text(GRADED.replace("{type: ICANS, min_grade: 3}", "{type: ICNAS, min_grade: 3}"))
    r = cli("validate", f)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr + r.stdout
    assert f"{f}: dlt[1].type: unknown toxicity type; did you mean 'ICANS'?" in r.stderr + r.stdout


def test_readme_graded_truth_block_validates():
    text = (ROOT / "README.md").read_text()
    sec = text[text.index("## Graded toxicities and the DLT rule"):]
    block = sec[sec.index("```yaml\n") + 8:sec.index("```\n", sec.index("```yaml\n") + 8)]
    sc = load_scenario_text("name: readme\ndoses: [DL1, DL2, DL3, DL4]\n" + block +
                            "target: 0.25\ntrial: {max_n: 24}\ndesigns: [{type: boin}]\n",
                            "README.md")
    assert sc.model.truth.graded and sc.true_response_rates().tolist() == [0.2, 0.4, 0.55, 0.6]


def test_runs_say_what_the_engines_do_not_use_yet(capsys):
    """The notes are RunNote warnings (the library never prints; the command line prints
    them as ``note:`` lines)."""
    import warnings
    import escalation_sim as es
    from escalation_sim.run import RunNote
    sc = load_scenario_text(GRADED.replace("  correlation: 0.5\n",
                                           "  correlation: 0.5\n  efficacy: [0.1, 0.2, 0.3, 0.4]\n"),
                            "g.yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        es.simulate(sc, n_trials=20, seed=1)
    notes = [str(w.message) for w in caught if issubclass(w.category, RunNote)]
    # the time-free engine draws each patient from the outcome model (issue 12): no note
    # about a binary DLT at the derived rates any more
    assert not [n for n in notes if "graded truth" in n]
    # efficacy is read only by the efficacy designs (issue 13: boin12, keyboard-obd)
    assert ("g.yaml: truth.efficacy is used only by the efficacy designs (boin12, "
            "keyboard-obd); none is run") in notes
    assert capsys.readouterr().err == ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        es.simulate(load_scenario_text(BINARY, "b.yaml"), n_trials=20, seed=1)
    assert not [w for w in caught if issubclass(w.category, RunNote)]


def test_bundled_cart_scenario_runs_on_the_derived_curve():
    import escalation_sim as es
    sc = load_scenario(ROOT / "scenarios" / "cart_crs_icans.yaml")
    assert sc.model.truth.graded and sc.dlt_window_days == 28.0
    assert sc.outcome_model.rule_names == (("CRS", 3), ("ICANS", 3))
    p = sc.p_true
    assert (np.diff(p) > 0).all()
    # the comment in the file states the true MTD (closest to the target 0.25) is DL3
    assert int(np.argmin(np.abs(p - 0.25))) == 2
    res = es.simulate(sc, n_trials=40, seed=1, n_jobs=1)
    assert [d.name for d in res.designs] == ["boin", "tite-boin", "gboin", "tite-gboin"]
    assert res.to_dict()["p_true"] == p.tolist()
    # the comment states the true mean normalized score (default scores) and that 0.26,
    # the gBOIN target, is closest to it at DL3
    s = sc.outcome_model.mean_score({0: 0, 1: 0, 2: 0.5, 3: 1, 4: 1.5})
    np.testing.assert_allclose(s, [0.064, 0.125, 0.216, 0.336], atol=5e-4)
    assert int(np.argmin(np.abs(s - 0.26))) == 2
