"""Graded outcomes, time-free side (issue 12): score units, score states, the engines on the
outcome model and gBOIN.  Reference values say where they come from."""
from __future__ import annotations

import numpy as np
import pytest

from escalation_sim.designs.base import Outcome
from escalation_sim.designs.gboin import GBOIN, elimination_threshold
from escalation_sim.grades import score_units_from
from escalation_sim.types import TrialState


# -- score units (contract point 1) -------------------------------------------------------
@pytest.mark.parametrize("scores, units, scale", [
    # the gBOIN default of Mu et al. 2019 / TITEgBOIN: 0, 0.5, 1, 1.5 for grades 0-1, 2, 3, 4;
    # normalized 0, 1/3, 2/3, 1 -> thirds; grade 5 (not scored) takes grade 4's units
    ({0: 0, 1: 0, 2: 0.5, 3: 1.0, 4: 1.5}, (0, 0, 1, 2, 3, 3), 3),
    # binary BOIN as a score design: grade >= 1 scores 1
    ({0: 0, 1: 1}, (0, 1, 1, 1, 1, 1), 1),
    # quarters: 0, 0.25, 0.5, 1 -> L = 4
    ([0, 0.5, 1, 2], (0, 1, 2, 4, 4, 4), 4),
    # tenths: 0.1 / 1 -> L = 10
    ([0, 0.1, 0.3, 1, 1, 1], (0, 1, 3, 10, 10, 10), 10),
])
def test_score_units(scores, units, scale):
    assert score_units_from(scores) == (units, scale)


def test_score_units_rejects_irrational_ratios():
    with pytest.raises(ValueError, match=r"multiples of 1/L .*\(got \[0, 1, 3.14159"):
        score_units_from([0, 1, 3.14159])


@pytest.mark.parametrize("scores, msg", [
    ({0: 0, 1: 1, 2: 0.5}, "must not decrease"),
    ([0, -1, 1], ">= 0"),
    ([0, 0], "largest score must be > 0"),
])
def test_score_units_validates(scores, msg):
    with pytest.raises(ValueError, match=msg):
        score_units_from(scores)


# -- TrialState with score units (contract point 2) ---------------------------------------
def test_add_cohort_accepts_units_up_to_n_times_max_units():
    s = TrialState.empty(2).add_cohort(1, 3, 9, max_units=3)
    assert (s.n, s.y, s.last_y) == ((0, 3), (0, 9), 9)
    with pytest.raises(ValueError, match="invalid cohort"):
        TrialState.empty(2).add_cohort(1, 3, 10, max_units=3)
    with pytest.raises(ValueError, match="invalid cohort"):  # binary default unchanged
        TrialState.empty(2).add_cohort(1, 3, 4)


def test_outcome_kinds():
    assert Outcome.SCORE.value == "graded toxicity score"
    assert Outcome.BINARY_DLT.value == "binary DLT"


# -- engines on the outcome model (contract point 3) --------------------------------------
def _one_type_model(p):
    from escalation_sim.inputs.truth import OutcomeModel, ToxicityType
    # one type without an onset law, DLT = grade >= 3: P(DLT) = P(grade >= 3) = p
    grades = {1: [0.2] * len(p), 3: [x * 0.5 for x in p], 4: [x * 0.5 for x in p]}
    return OutcomeModel([ToxicityType.from_grades("CRS", grades)], rule=[("CRS", 3)])


def test_cohort_engine_one_type_truth_equals_binary_truth():
    """The module docstring of inputs/truth.py: a one-type truth reproduces the binary model
    (the first type's latent is the dlt stream, grade >= g iff u < P(grade >= g)), so a binary
    design sees the same patients whether given the DLT rates or the outcome model."""
    import numpy as np
    from escalation_sim.designs.boin import BOIN
    from escalation_sim.designs.rules import with_stopping_rules
    from escalation_sim.engines.cohort import simulate_cohort_chunk
    p = [0.05, 0.12, 0.25, 0.4]
    model = _one_type_model(p)
    assert np.allclose(model.dlt_rates(), p, atol=1e-15)
    design = with_stopping_rules(BOIN(n_doses=4, target=0.25, cohort_size=3), max_n=24)
    a = simulate_cohort_chunk(design, model.dlt_rates(), 7, 0, 3000)
    b = simulate_cohort_chunk(design, model.dlt_rates(), 7, 0, 3000, model=model)
    assert np.array_equal(a.sids, b.sids)


# -- gBOIN: reference values of docs/reference_notes/gboin_titegboin.md --------------------

PHI_G = 0.47 / 1.5      # the TITEgBOIN examples' target (notes §1)
DEFAULT = {0: 0, 1: 0, 2: 0.5, 3: 1.0, 4: 1.5}


@pytest.mark.parametrize("target, lam_e, lam_d", [
    # notes §2, [COMPUTED] from the closed form with p.saf = 0.6 target, p.tox = 1.4 target
    (0.20, 0.157242, 0.238462),
    (0.25, 0.196801, 0.298392),
    (0.30, 0.236491, 0.358519),
    (PHI_G, 0.247100, 0.374594),
    (1 / 3, 0.263034, 0.398744),
])
def test_gboin_boundaries_notes_section_2(target, lam_e, lam_d):
    e, d = GBOIN(n_doses=2, target=target).lambdas
    assert abs(e - lam_e) < 1e-6 and abs(d - lam_d) < 1e-6


# notes §5 (phi = 0.47/1.5, cutoff 0.95): the real score sum above which a dose is eliminated
SECTION5 = {3: 2.3322, 4: 2.8293, 5: 3.3086, 6: 3.7742, 7: 4.2291, 8: 4.6753, 9: 5.1141,
            10: 5.5466, 12: 6.3962, 15: 7.6401, 18: 8.8562, 21: 10.0509, 24: 11.2286,
            27: 12.3923, 30: 13.5442}


@pytest.mark.parametrize("n", sorted(SECTION5))
def test_gboin_elimination_thresholds_notes_section_5(n):
    assert abs(elimination_threshold(PHI_G, n) - SECTION5[n]) < 5e-5


def test_gboin_elimination_uses_the_real_score_sum():
    """Notes §5: grades 4, 4, 2 at n = 3 give s = 3.5/1.5 = 2.3333 > 2.3322: eliminated under
    TITEgBOIN 0.4.0 (the integer boundary of UnifiedDoseFinding, 3, would not)."""
    from escalation_sim.outcomes import state_from_outcomes
    g = GBOIN(n_doses=3, target=PHI_G)
    st = state_from_outcomes("1:000 2:442", 3, g.score_units)
    assert g.eliminated(st) == [False, True, True]
    assert g.decide(st).dose == 0
    st = state_from_outcomes("1:000 2:441", 3, g.score_units)   # s = 3.0/1.5 = 2.0
    assert g.eliminated(st) == [False, False, False]


def _state(n, s_units, cur):
    return TrialState(tuple(n), tuple(s_units), cur, n[cur], s_units[cur])


def test_gboin_next_dose_notes_section_8_1():
    """Notes §8.1, n = (3,3,4,4,4,0) at dose 5: gBOIN with y = (0,0,1/3,2/3,1,0) -> dose 5
    (mean 0.25 just above lambda_e 0.2471); BOIN-as-gBOIN (scores 0/1), target 0.3, y =
    (0,0,1,1,1,0) -> dose 5."""
    g = GBOIN(n_doses=6, target=PHI_G)
    assert g.decide(_state((3, 3, 4, 4, 4, 0), (0, 0, 1, 2, 3, 0), 4)).dose == 4
    b = GBOIN(n_doses=6, target=0.3, scores=(0, 1))
    assert b.decide(_state((3, 3, 4, 4, 4, 0), (0, 0, 1, 1, 1, 0), 4)).dose == 4
    # one more unit at dose 5 (s = 4/3, mean 0.333 in (lambda_e, lambda_d)) still stays;
    # s = 5/3 (mean 0.4167 >= lambda_d 0.3746) de-escalates
    assert g.decide(_state((3, 3, 4, 4, 4, 0), (0, 0, 1, 2, 5, 0), 4)).dose == 3


@pytest.mark.parametrize("scores, target, y, iso, mtd", [
    # notes §8.2, n = (3,3,6,9,9,0); isotonic estimates with the 0.005 prior, MTD 1-based
    ((0, 1), 0.3, (0, 0, 1, 2, 3, 0), [0.0017, 0.0017, 0.1672, 0.2225, 0.3335], 5),
    ((0, 0, 0.5, 1.0, 1.5), PHI_G, (0, 0, 4, 7, 11, 0),   # y = 2, 3.5, 5.5 (/1.5) in thirds
     [0.0017, 0.0017, 0.2227, 0.2595, 0.4075], 4),
])
def test_gboin_select_mtd_notes_section_8_2(scores, target, y, iso, mtd):
    g = GBOIN(n_doses=6, target=target, scores=scores)
    st = TrialState((3, 3, 6, 9, 9, 0), y, 4, 9, y[4])
    assert g.select_mtd(st) + 1 == mtd
    est = g.estimates(st)["p_hat"]
    assert [round(v, 4) for v in est[:5]] == iso and est[5] is None


# -- gBOIN with scores (0, 1) is BOIN ----------------------------------------------------
def test_gboin_with_binary_scores_decides_as_boin_in_every_reachable_state():
    """The module docstring of designs/gboin.py: scores {0: 0, 1: 1} make gBOIN's rule BOIN's
    (y/n <= lambda_e iff y <= floor(lambda_e n), y/n >= lambda_d iff y >= ceil(lambda_d n));
    checked on every state of BOIN's exact state graph (4 doses, N = 24, target 0.25), and
    the MTD with the same isotonic prior (mtd_prior 0.05)."""
    from escalation_sim.designs.boin import BOIN
    from escalation_sim.designs.rules import with_stopping_rules
    from escalation_sim.engines.exact import exact_tally
    from escalation_sim.engines.graph import StateGraph
    boin = with_stopping_rules(BOIN(n_doses=4, target=0.25), max_n=24)
    gb = with_stopping_rules(GBOIN(n_doses=4, target=0.25, scores=(0, 1), mtd_prior=0.05),
                             max_n=24)
    g = StateGraph(boin)
    exact_tally(boin, [0.1, 0.2, 0.3, 0.4], graph=g)
    assert g.n_states > 1000
    for sid in range(g.n_states):
        st = g.state(sid)
        a, b = boin.decide(st), gb.decide(st)
        assert (a.dose, a.cohort_size, a.stop_reason) == (b.dose, b.cohort_size, b.stop_reason)
        if a.stop:
            assert boin.select_mtd(st) == gb.select_mtd(st), st


# -- scenarios with gBOIN -----------------------------------------------------------------
S83 = """
name: gboin-8-3
doses: [D1, D2, D3, D4, D5, D6]
truth:                      # notes §8.3: grade 0/1, 2, 3, 4 probabilities per dose
  toxicities:
    - type: TOX
      grades:
        2: [0.12, 0.15, 0.18, 0.19, 0.16, 0.11]
        3: [0.04, 0.07, 0.11, 0.14, 0.15, 0.11]
        4: [0.01, 0.03, 0.09, 0.16, 0.35, 0.59]
target: 0.3
trial: {max_n: 18, cohort_size: 3}
designs:
  - {type: gboin, target: 0.31333333333333335}
  - {type: boin}
"""


def test_gboin_true_mean_scores_notes_section_8_3():
    from escalation_sim.inputs.scenario import load_scenario_text
    sc = load_scenario_text(S83, "s83.yaml")
    # notes §8.3 [COMPUTED]: nETS 0.0767, 0.1267, 0.2233, 0.3167, 0.5033, 0.7000
    assert np.allclose(sc.outcome_model.mean_score(DEFAULT),
                       [0.115 / 1.5, 0.19 / 1.5, 0.335 / 1.5, 0.475 / 1.5, 0.755 / 1.5, 0.7],
                       atol=1e-12)
    # ... and P(grade >= 3) = 0.05, 0.10, 0.20, 0.30, 0.50, 0.70 (the derived DLT rate)
    assert np.allclose(sc.p_true, [0.05, 0.10, 0.20, 0.30, 0.50, 0.70], atol=1e-12)


def test_gboin_exact_total_probability_and_monte_carlo_within_4_se():
    import escalation_sim as es
    from escalation_sim.inputs.scenario import load_scenario_text
    sc = load_scenario_text(S83, "s83.yaml")
    ex = es.exact_oc(sc)
    assert abs(ex._get("gboin").tally.total - 1.0) < 1e-12
    mc = es.simulate(sc, n_trials=20_000, seed=11, n_jobs=1)
    for name in ("gboin", "boin"):
        a, b = ex.design_oc(name), mc.design_oc(name)
        for key in ("p_select", "mean_n"):
            for e, m, s in zip(a[key], b[key], b["se_" + key], strict=True):
                assert abs(m - e) <= 4 * s + 1e-12, (name, key, e, m, s)
        for e, m, s in zip(a.get("mean_score", []), b.get("mean_score", []),
                           b.get("se_mean_score", []), strict=True):
            assert abs(m - e) <= 4 * s + 1e-12
    # the gBOIN true target dose is its own: mean score closest to 0.3133 = dose 4
    assert ex.design_oc("gboin")["true_mtd"] == 4
    assert "normalized score" in ex.design_oc("gboin")["true_target_definition"]
    assert "DLT rate" in ex.design_oc("boin")["true_target_definition"]


def test_grade3_events_by_walds_identity_match_monte_carlo_counts():
    """A binary design on a graded truth counts its DLTs; with the rule CRS >= 3 and no
    onsets, DLTs are the grade >= 3 CRS events, so the observed mean per dose must agree with
    E[n_d] x P(grade >= 3) (Wald's identity) within 4 SE."""
    import escalation_sim as es
    from escalation_sim.inputs.scenario import load_scenario_text
    text = S83.replace("type: TOX", "type: CRS").replace(
        "  - {type: gboin, target: 0.31333333333333335}\n", "")
    sc = load_scenario_text(text, "w.yaml")
    mc = es.simulate(sc, n_trials=20_000, seed=12, n_jobs=1)
    oc = mc.design_oc("boin")
    wald = oc["toxicity_types"]["CRS"]["mean_grade3_events"]
    for obs, se, w in zip(oc["mean_dlt"], oc["se_mean_dlt"], wald, strict=True):
        assert abs(obs - w) <= 4 * se + 1e-12, (obs, w, se)


def _scenario_problems(text):
    from escalation_sim.inputs.scenario import ScenarioError, load_scenario_text
    with pytest.raises(ScenarioError) as e:
        load_scenario_text(text, "g.yaml")
    return e.value.problems


def test_loader_rejects_gboin_on_a_binary_truth():
    text = ("name: b\ndoses: [A, B]\ntruth: {p_dlt: [0.1, 0.3]}\ntarget: 0.25\n"
            "trial: {max_n: 12}\ndesigns: [{type: gboin, target: 0.3}]\n")
    assert _scenario_problems(text) == [
        "designs[0].type: gboin needs a graded truth (truth.toxicities); the truth gives "
        "p_dlt only (got 'gboin')"]


@pytest.mark.parametrize("scores, message", [
    ("{0: 0, 1: 0, 2: 1.0, 3: 0.5, 4: 1.5}", "designs[0].scores: scores must not decrease "
     "with the grade: grade 3 scores 0.5 < grade 2's 1"),
    ("{0: 0, 1: -1, 2: 0.5, 3: 1.0, 4: 1.5}", "designs[0].scores: scores must be finite "
     "numbers >= 0; bad: [-1]"),
    ("{0: 0, 1: 0, 2: 0.5, 3: 1.0}", "designs[0].scores: no score for grade 4, which the "
     "truth can produce"),
])
def test_bad_scores(scores, message):
    text = S83.replace("{type: gboin, target: 0.31333333333333335}",
                       f"{{type: gboin, target: 0.3, scores: {scores}}}")
    problems = _scenario_problems(text)
    assert len(problems) == 1 and problems[0].startswith(message), problems
    assert "(got " in problems[0]


def test_gboin_needs_its_own_target():
    text = S83.replace("{type: gboin, target: 0.31333333333333335}", "{type: gboin}")
    assert _scenario_problems(text)[0].startswith(
        "designs[0].target: gboin needs its own target on the normalized score scale")


# -- outcome strings with grades (real data) --------------------------------------------
def test_graded_outcome_strings():
    from escalation_sim.outcomes import OutcomeStringError, parse_outcomes, state_from_outcomes
    assert parse_outcomes("1:003 2:0104", 3, graded=True) == [(0, "003"), (1, "0104")]
    st = state_from_outcomes("1:003 2:0104", 3, (0, 0, 1, 2, 3, 3))
    assert (st.n, st.y, st.current, st.last_y) == ((3, 4, 0), (2, 3, 0), 1, 3)
    with pytest.raises(OutcomeStringError, match=r"cohort 2 '2NTN': N/T letters are for "
                                                 r"binary designs"):
        state_from_outcomes("1:000 2NTN", 3, (0, 0, 1, 2, 3, 3))
    with pytest.raises(OutcomeStringError, match=r"cohort 1 '1:003': grades \(dose:digits\) "
                                                 r"are for score designs"):
        state_from_outcomes("1:003", 3)
    with pytest.raises(OutcomeStringError, match=r"cohort 1 '1:063'"):
        state_from_outcomes("1:063", 3, (0, 0, 1, 2, 3, 3))


def test_cli_next_dose_and_select_mtd_with_grades(tmp_path, capsys):
    from escalation_sim.cli import main
    f = tmp_path / "g.yaml"
    f.write_text(S83.replace("max_n: 18", "max_n: 30"))
    # notes §8.1's gBOIN data in grades: dose 3 one grade 2 (1/3), dose 4 one grade 3 (2/3),
    # dose 5 one grade 4 (1): stay at dose 5
    out = "1:000 2:000 3:0020 4:0300 5:4000"
    assert main(["next-dose", str(f), "--design", "gboin", "--outcomes", out, "--json"]) == 0
    import json
    doc = json.loads(capsys.readouterr().out)
    assert doc["next_dose"] == 5 and doc["dlt"] is None
    assert [round(v, 6) for v in doc["score_sum"]] == [0, 0, 0.333333, 0.666667, 1, 0]
    assert main(["next-dose", str(f), "--design", "gboin", "--outcomes", "1NNN"]) == 2
    err = capsys.readouterr().err
    assert "--outcomes: cohort 1 '1NNN': N/T letters are for binary designs" in err
    assert main(["next-dose", str(f), "--design", "boin", "--outcomes", "1:000"]) == 2
    assert "--outcomes: cohort 1 '1:000': grades (dose:digits) are for score designs" in \
        capsys.readouterr().err
    # notes §8.2 (gBOIN): n = (3,3,6,9,9,0), s = (0,0,2,3.5,5.5)/1.5 -> MTD dose 4
    data = "1:000 2:000 3:000033 4:000000443 5:000004444"
    assert main(["select-mtd", str(f), "--design", "gboin", "--outcomes", data]) == 0
    assert "gboin: MTD = dose 4 (D4)" in capsys.readouterr().out
    assert main(["select-mtd", str(f), "--design", "gboin", "--n", "3,3,3,3,3,3",
                 "--dlt", "0,0,0,0,0,0"]) == 2
    assert "scores graded toxicities: give --outcomes" in capsys.readouterr().err


# -- the engine's patient tables equal the outcome model's per-patient draws --------------
CART = """
name: c
doses: [DL1, DL2, DL3, DL4]
truth:
  toxicities:
    - type: CRS
      grades:
        1: [0.30, 0.35, 0.40, 0.40]
        2: [0.10, 0.15, 0.20, 0.25]
        3: [0.02, 0.04, 0.07, 0.12]
        4: [0.00, 0.01, 0.02, 0.04]
      onset_days: {mean: 3, sd: 2, dist: gamma}
    - type: ICANS
      grades:
        1: [0.10, 0.15, 0.20, 0.20]
        2: [0.04, 0.06, 0.08, 0.10]
        3: [0.02, 0.05, 0.11, 0.20]
        4: [0.00, 0.01, 0.04, 0.08]
      onset_days: {mean: 20, sd: 8, dist: gamma}
  correlation: 0.5
target: 0.25
trial: {max_n: 24, cohort_size: 3}
designs:
  - {type: boin}
  - {type: gboin, target: 0.31333333333333335}
"""


def test_patient_latents_equal_outcomes():
    """OutcomeModel.patient_latents + grades_at must give, for every (trial, patient, dose),
    the worst grade and DLT flag of OutcomeModel.outcomes (ICANS onsets late enough that ~10%
    fall after the 28-day window, so the window matters)."""
    from escalation_sim.inputs.scenario import load_scenario_text
    model = load_scenario_text(CART, "c.yaml").outcome_model
    trials = np.arange(500, 900, dtype=np.uint64)
    x, late = model.patient_latents(5, trials, 24)
    t, k, d = np.meshgrid(trials, np.arange(24), np.arange(4), indexing="ij")
    po = model.outcomes(5, t, k, d)
    ti, ki = np.meshgrid(np.arange(400), np.arange(24), indexing="ij")
    ti, ki = np.repeat(ti.ravel(), 4), np.repeat(ki.ravel(), 4)
    worst, dlt = model.grades_at(x[:, ti, ki], late[:, ti, ki], d.ravel())
    assert np.array_equal(worst, po.worst_grade)
    assert np.array_equal(dlt, po.dlt)
    assert po.late.any() and (po.worst_grade > 0).any()


_HLH = """    - type: HLH
      grades:
        2: [0.01, 0.02, 0.03, 0.05]
        3: [0.01, 0.01, 0.02, 0.04]
      onset_days: {mean: 15, sd: 9, dist: lognormal}
  correlation:"""


def _cart_variant(kind):
    """CART with other correlations, a third type, a type without onsets."""
    if kind == "cart":
        return CART
    if kind == "negative":
        return CART.replace("correlation: 0.5", "correlation: -0.3")
    if kind == "independent":
        return CART.replace("correlation: 0.5", "correlation: 0")
    if kind == "three-types":
        return CART.replace("  correlation:", _HLH, 1).replace("correlation: 0.5",
                                                                "correlation: 0.4")
    if kind == "no-onset":
        return CART.replace("      onset_days: {mean: 3, sd: 2, dist: gamma}\n", "")
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["cart", "negative", "independent", "three-types",
                                  "no-onset"])
def test_patient_codes_equal_outcomes(kind):
    """OutcomeModel.patient_codes + code_tables (what the cohort engine reads) must give, for
    every (trial, patient, dose), the worst grade in the window and the DLT flag of
    OutcomeModel.outcomes; 400 trials x 24 patients span two slices of _CODE_SLICE."""
    from escalation_sim.inputs.scenario import load_scenario_text
    model = load_scenario_text(_cart_variant(kind), "c.yaml").outcome_model
    assert len(model.types) == (3 if kind == "three-types" else 2)
    trials = np.arange(500, 900, dtype=np.uint64)
    codes = model.patient_codes(5, trials, 24)
    worst_t, dlt_t = model.code_tables()
    t, k, d = np.meshgrid(trials, np.arange(24), np.arange(4), indexing="ij")
    po = model.outcomes(5, t, k, d)
    c = np.repeat(codes[:, :, None], 4, axis=2)
    assert np.array_equal(worst_t[c, d].ravel(), po.worst_grade)
    assert np.array_equal(dlt_t[c, d].ravel(), po.dlt)
    assert po.dlt.any() and (po.worst_grade > 0).any()
    if kind != "no-onset":
        assert po.late.any()


@pytest.mark.parametrize("kind", ["cart", "negative"])
def test_bracketed_counts_equal_direct_counts(kind):
    """Two correlated types: patient_codes finds most of the second type's counts from bins
    of the two uniforms (OutcomeModel._bracket_table) and computes z for the rest; every
    code must equal the direct count of thresholds above the latents that
    OutcomeModel.patient_latents draws (z in _latents' order), on 192,000 patients."""
    from escalation_sim.inputs.scenario import load_scenario_text
    from escalation_sim.randomness import stream_key, uniforms
    model = load_scenario_text(_cart_variant(kind), "c.yaml").outcome_model
    trials = np.arange(8000, dtype=np.uint64)
    codes = model.patient_codes(11, trials, 24)
    x, late = model.patient_latents(11, trials, 24)
    T = model._code_thresholds()
    want = np.zeros(codes.shape, dtype=np.int64)
    for j in range(2):
        bj = (x[j][..., None] < T[j]).sum(axis=-1)
        bj[late[j]] = 0
        want = want * (T[j].size + 1) + bj
    assert np.array_equal(codes, want)
    # both routes were taken: bin pairs that decide, and patients whose z was needed
    B = model._BRACKET_BINS
    t, k = np.repeat(trials, 24), np.tile(np.arange(24, dtype=np.uint64), trials.size)
    u0 = uniforms(stream_key(11, "dlt"), t, k)
    u1 = uniforms(stream_key(11, "toxicity:ICANS"), t, k)
    undecided = model._bracket_table()[(u0 * B).astype(int) * B + (u1 * B).astype(int)] < 0
    assert 0.001 < undecided.mean() < 0.2


def test_cohort_engine_tables_and_per_step_draws_agree():
    import escalation_sim.engines.cohort as co
    from escalation_sim.inputs.scenario import load_scenario_text
    sc = load_scenario_text(CART, "c.yaml")
    # the patient tables without codes: a model whose code tables are refused
    no_codes = load_scenario_text(CART, "c.yaml").outcome_model
    no_codes.MAX_CODE_CELLS = 0
    assert no_codes.code_tables() is None and sc.outcome_model.code_tables() is not None
    for item in sc.designs:
        a = co.simulate_cohort_chunk(item.design, sc.p_true, 3, 0, 4000, model=sc.outcome_model)
        c = co.simulate_cohort_chunk(item.design, sc.p_true, 3, 0, 4000, model=no_codes)
        old, co._TABLE_CELLS = co._TABLE_CELLS, 0      # force the per-step path
        try:
            b = co.simulate_cohort_chunk(item.design, sc.p_true, 3, 0, 4000,
                                         model=sc.outcome_model)
        finally:
            co._TABLE_CELLS = old
        for other in (b, c):
            assert np.array_equal(a.sids, other.sids)
            assert (a.dlt is None) == (other.dlt is None)
            if a.dlt is not None:
                assert np.array_equal(a.dlt, other.dlt)


def test_tidy_tables_gain_graded_columns_only_for_graded_truths():
    import escalation_sim as es
    from escalation_sim.inputs.scenario import load_scenario_text
    sc = load_scenario_text(S83, "s83.yaml")
    res = es.exact_oc(sc)
    summ = res.summary()
    for col in ("p_grade3_TOX", "mean_grade3_events_TOX", "mean_late_events", "mean_score"):
        assert col in summ.columns
    g = summ[summ.design == "gboin"]
    # the definition (notes §8.3): P(grade >= 3) = 0.05 ... 0.70
    assert np.allclose(g.p_grade3_TOX, [0.05, 0.10, 0.20, 0.30, 0.50, 0.70], atol=1e-12)
    # Wald: E[events] = E[n] P, so the grade >= 3 events equal the expected DLTs (rule: >= 3)
    assert np.allclose(g.mean_grade3_events_TOX, g.mean_n * g.p_grade3_TOX, atol=1e-12)
    assert summ[summ.design == "boin"].mean_score.isna().all()
    oc = res.oc()
    assert set(oc.true_target_definition.str.contains("normalized score")) == {True, False}
    binary = load_scenario_text("name: b\ndoses: [A, B, C]\ntruth: {p_dlt: [0.1, 0.2, 0.4]}\n"
                                "target: 0.25\ntrial: {max_n: 12}\ndesigns: [{type: boin}]\n",
                                "b.yaml")
    cols = set(es.exact_oc(binary).summary().columns)
    assert not [c for c in cols if "grade3" in c or "late" in c or "score" in c]


def test_graded_run_identical_across_workers_and_chunks():
    """The outcome model travels to worker processes with the chunk: the same results with
    2 loky workers and small chunks as in one process (common random numbers per patient)."""
    import escalation_sim as es
    from escalation_sim.inputs.scenario import load_scenario_text
    sc = load_scenario_text(CART, "c.yaml")
    a = es.simulate(sc, n_trials=6000, seed=4, n_jobs=1)
    b = es.simulate(sc, n_trials=6000, seed=4, n_jobs=2, backend="loky", chunk_size=1500)
    assert a.to_dict()["designs"] == b.to_dict()["designs"]
    assert a.paired().equals(b.paired())
