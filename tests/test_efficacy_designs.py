"""BOIN12 and Keyboard phase I/II on the engines (issue 13): joint toxicity x efficacy
outcomes in the cohort engine and exact enumeration, the OBD operating characteristics,
validation and the command line.

Sources of the expected values:
* exact enumeration is the oracle of Monte Carlo (fixed seed, within 4 SE);
* the engine's trials are replayed patient by patient with the counter-based uniforms of
  :mod:`escalation_sim.randomness` (DLT iff u < p_d on the ``dlt`` stream, the binary rule of
  every design; response iff v < q_d on the ``efficacy`` stream, as
  :meth:`OutcomeModel.outcomes` draws it) and the designs' own pure ``decide``;
* true utilities and OBDs are computed by hand in the comments from the formulas of Lin et
  al. 2020 (BOIN12's utility u1 q(1-p) + u2 (1-p)(1-q) + u3 pq + u4 p(1-q)) and of the R
  package Keyboard 0.1.3 ``select.obd.kb`` (utility 1 = f1(p) f2(q));
* ``select.obd.kb``'s Rd example (docs/reference_notes/keyboard.md, section 7.3) and the
  BOIN12 paper's worked example, p. 1396 (docs/reference_notes/boin12.md, section 8).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from escalation_sim.designs.boin12 import Boin12Design
from escalation_sim.designs.keyboard_obd import KeyboardObdDesign
from escalation_sim.designs.rules import with_stopping_rules
from escalation_sim.engines.cohort import simulate_cohort_chunk
from escalation_sim.engines.exact import (ExactTooLarge, exact_tally, joint_pmf_table)
from escalation_sim.inputs.scenario import ScenarioError, load_scenario_dict
from escalation_sim.outcomes import joint_state_from_outcomes
from escalation_sim.randomness import stream_key, uniforms
from escalation_sim.results.oc import (OutcomeTally, compute_oc, efficacy_design_oc,
                                       obd_truth_sets)
from escalation_sim.types import JointState

P = [0.05, 0.10, 0.25, 0.45]
Q = [0.20, 0.45, 0.50, 0.52]


def designs(max_n):
    return [with_stopping_rules(Boin12Design(4, target=0.3), max_n=max_n),
            with_stopping_rules(KeyboardObdDesign(4, target=0.3), max_n=max_n)]


# ----------------------------------------------------------------------------- exact
def test_joint_pmf_rows_are_distributions_with_binomial_margins():
    """Each cohort's joint outcome distribution sums to 1 and its DLT and response margins
    are the binomials of p_d and q_d (patients independent, DLT independent of response)."""
    from escalation_sim.engines.graph import joint_code_count, joint_decode
    pmf = joint_pmf_table(P, Q, 3)
    assert joint_code_count(3) == 20 == math.comb(6, 3)
    t, r, _ = joint_decode(np.arange(20), 3)
    for d in range(4):
        for c in (1, 2, 3):
            assert abs(pmf[d, c].sum() - 1.0) < 1e-12
            for k in range(c + 1):
                bt = math.comb(c, k) * P[d] ** k * (1 - P[d]) ** (c - k)
                br = math.comb(c, k) * Q[d] ** k * (1 - Q[d]) ** (c - k)
                assert abs(pmf[d, c][t == k].sum() - bt) < 1e-12
                assert abs(pmf[d, c][r == k].sum() - br) < 1e-12


@pytest.mark.parametrize("p,q", [(P, Q), ([0.02, 0.05, 0.08, 0.12], [0.1, 0.3, 0.6, 0.6]),
                                 ([0.5, 0.6, 0.7, 0.8], [0.5, 0.5, 0.5, 0.5])])
def test_exact_total_probability_is_one(p, q):
    for d in designs(12):
        w = exact_tally(d, p, efficacy=q).arrays()[0]
        assert abs(w.sum() - 1.0) < 1e-12


def test_exact_refuses_n27_at_once():
    """About 6 million states at N = 27 (measured growth: 5.2 k, 29 k, 147 k states at
    N = 12, 15, 18, about 2 million at N = 24): refused by the estimate before any state is
    built (N = 24 runs on the joint array sweep, tests/test_batch_obd.py)."""
    d = designs(27)[0]
    with pytest.raises(ExactTooLarge, match="toxicity-and-efficacy"):
        exact_tally(d, P, efficacy=Q)


def _oc(design, tally):
    oc = compute_oc(tally, P, 0.3, None, sets=obd_truth_sets(design, P, Q))
    return efficacy_design_oc(oc, tally, design, P, Q)


@pytest.mark.parametrize("which", [0, 1], ids=["boin12", "keyboard-obd"])
def test_monte_carlo_agrees_with_exact_within_4_se(which):
    d = designs(12)[which]
    ex = _oc(d, exact_tally(d, P, efficacy=Q))
    ch = simulate_cohort_chunk(d, P, 2026, 0, 20_000, efficacy=Q)
    mc = _oc(d, OutcomeTally.from_graph_sids(ch.graph, ch.sids))
    pairs = [(mc["p_select"][k], ex["p_select"][k], mc["se_p_select"][k]) for k in range(4)]
    pairs += [(mc["mean_n"][k], ex["mean_n"][k], mc["se_mean_n"][k]) for k in range(4)]
    pairs += [(mc["mean_dlt"][k], ex["mean_dlt"][k], mc["se_mean_dlt"][k]) for k in range(4)]
    for key in ("p_no_mtd", "p_select_obd", "mean_utility_selected", "mean_responders_total"):
        pairs.append((mc[key], ex[key], mc["se_" + key]))
    for m, e, se in pairs:
        if se == 0:
            assert m == pytest.approx(e, abs=1e-12)
        else:
            assert abs(m - e) / se < 4, (m, e, se)
    assert ex["p_select_obd"] == ex["p_select"][1]        # true OBD = dose 2 (see below)


# ----------------------------------------------------------------------------- draws
def _replay(design, p, q, seed, t):
    """Trial ``t`` by hand: patient k (0-based, in order) at dose d has a DLT iff
    u(t, k) < p_d (stream dlt) and a response iff v(t, k) < q_d (stream efficacy)."""
    kd, ke = stream_key(seed, "dlt"), stream_key(seed, "efficacy")
    state = JointState.empty(4)
    k = 0
    while True:
        dec = design.decide(state)
        if dec.stop:
            return state
        tox = eff = both = 0
        for _ in range(dec.cohort_size):
            ti = np.array([t], dtype=np.uint64)
            ki = np.array([k], dtype=np.uint64)
            a = bool(uniforms(kd, ti, ki)[0] < p[dec.dose])
            b = bool(uniforms(ke, ti, ki)[0] < q[dec.dose])
            tox, eff, both, k = tox + a, eff + b, both + (a and b), k + 1
        state = state.add_cohort(dec.dose, dec.cohort_size, tox, e=eff, b=both)


@pytest.mark.parametrize("which", [0, 1], ids=["boin12", "keyboard-obd"])
def test_engine_trials_equal_a_patient_by_patient_replay(which):
    """Patients, DLTs and responders per dose of each trial.  (The graph merges states by the
    design's canonical key, which leaves out the "both" counts when the design does not read
    them: Keyboard never, BOIN12 when u1 + u4 = u2 + u3, as with the defaults; the graph's
    representative state then carries another trial's "both" counts.)"""
    d = designs(24)[which]
    ch = simulate_cohort_chunk(d, P, 7, 100, 250, efficacy=Q)
    for i, sid in enumerate(ch.sids.tolist()):
        got = ch.graph.state(sid)
        want = _replay(d, P, Q, 7, 100 + i)
        assert (got.n, got.y, got.e) == (want.n, want.y, want.e)
        assert ch.graph.mtd(sid) == d.select_mtd(want)


def _scenario(designs_yaml, efficacy=True, extra=None):
    raw = {"name": "obd", "doses": [1, 2, 3, 4], "target": 0.3,
           "truth": {"p_dlt": P, **({"efficacy": Q} if efficacy else {})},
           "trial": {"cohort_size": 3, "max_n": 12}, "designs": designs_yaml,
           "simulation": {"n_trials": 2000, "seed": 11}}
    raw.update(extra or {})
    return load_scenario_dict(raw, "obd.yaml")


def test_binary_designs_ignore_truth_efficacy():
    """Adding truth.efficacy changes nothing for a binary design (same tally, trial by
    trial the same patients), even run beside an efficacy design."""
    from escalation_sim.api import simulate
    a = simulate(_scenario([{"type": "boin"}], efficacy=False), n_jobs=1)
    b = simulate(_scenario([{"type": "boin"}, {"type": "boin12"}]), n_jobs=1,
                 designs=["boin"])
    c = simulate(_scenario([{"type": "boin"}, {"type": "boin12"}]), n_jobs=1)
    assert a.designs[0].tally.counts == b.designs[0].tally.counts == c.designs[0].tally.counts


# ----------------------------------------------------------------------------- truth, OCs
def test_true_obd_by_hand():
    """BOIN12, u = (100, 40, 60, 0), phi_t 0.3, phi_e 0.25: U_2 = 100(.45)(.9) + 40(.9)(.55)
    + 60(.1)(.45) = 63.0, U_3 = 100(.5)(.75) + 40(.75)(.5) + 60(.25)(.5) = 60.0; dose 1
    (q .20 < .25) and dose 4 (p .45 > .3) are not admissible -> OBD dose 2.  Keyboard
    utility 1: dose 2 f1 = 1, f2 = (.45 - .3)/.3 = .5 -> .5; dose 3 f1 = 1 - .1/.25 = .6,
    f2 = .2/.3 -> .4; dose 1 q .2 < .4 and dose 4 p .45 > .3 not admissible -> dose 2."""
    b, k = (x.inner for x in designs(12))
    assert b.true_utility(P, Q)[1:3] == pytest.approx([63.0, 60.0], abs=1e-12)
    assert b.true_admissible(P, Q) == [False, True, True, False]
    assert b.true_obd(P, Q) == 1
    assert k.true_utility(P, Q)[1:3] == pytest.approx([0.5, 0.4], abs=1e-12)
    assert k.true_obd(P, Q) == 1
    assert b.true_obd([0.5] * 4, Q) is None


def test_results_tables_and_cli_text_carry_the_obd_ocs():
    from escalation_sim.api import exact_oc
    res = exact_oc(scenario=_scenario([{"type": "boin12"}, {"type": "keyboard-obd"},
                                       {"type": "boin"}]))
    oc = res.oc().set_index("design")
    assert oc.loc["boin12", "true_obd"] == 2 and oc.loc["boin", "true_mtd"] == 3
    # P(select the OBD) = P(select dose 2) of the per-dose table
    summ = res.summary().set_index(["design", "dose"])
    assert oc.loc["boin12", "p_select_obd"] == summ.loc[("boin12", 2), "p_select"]
    # mean responders = sum_d E[n_d] q_d (Wald's identity)
    want = sum(summ.loc[("keyboard-obd", d + 1), "mean_n"] * Q[d] for d in range(4))
    assert oc.loc["keyboard-obd", "mean_responders_total"] == pytest.approx(want, rel=1e-12)
    text = res.table()
    assert "optimal biological dose" in text and "P(OBD) %" in text
    assert "* true MTD: dose 3." in text


# ----------------------------------------------------------------------------- validation
def test_efficacy_design_without_truth_efficacy_is_a_clear_error():
    with pytest.raises(ScenarioError) as err:
        _scenario([{"type": "boin"}, {"type": "keyboard-obd"}], efficacy=False)
    msg = str(err.value)
    assert "designs[1].type" in msg and "truth.efficacy" in msg and "keyboard-obd" in msg


def test_bad_utility_is_a_clear_error():
    with pytest.raises(ScenarioError, match=r"designs\[0\]\.utility"):
        _scenario([{"type": "boin12", "utility": [100, 40, 60]}])


def test_cli_missing_efficacy_and_calendar_engine_exit_2(tmp_path, cli):
    import yaml
    f = tmp_path / "noeff.yaml"
    f.write_text(yaml.safe_dump({"name": "x", "doses": [1, 2, 3, 4], "target": 0.3,
                                 "truth": {"p_dlt": P}, "trial": {"max_n": 12},
                                 "designs": [{"type": "boin12"}]}))
    r = cli("run", f)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{f}: designs[0].type:" in r.stderr and "truth.efficacy" in r.stderr
    g = tmp_path / "cal.yaml"
    g.write_text(yaml.safe_dump({
        "name": "x", "doses": [1, 2, 3, 4], "target": 0.3,
        "truth": {"p_dlt": P, "efficacy": Q}, "trial": {"max_n": 12},
        "designs": [{"type": "keyboard-obd"}],
        "conduct": {"accrual_per_month": 2.0, "dlt_window_days": 28}}))
    r = cli("run", g, "--n-trials", 10)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "keyboard-obd" in r.stderr and "calendar engine" in r.stderr


# ----------------------------------------------------------------------------- references
def test_select_obd_kb_rd_example_through_the_engine_state():
    """select.obd.kb's Rd example: npts (3, 6, 12, 3, 3), ntox (1, 2, 4, 2, 3), neff (0, 0,
    5, 1, 1), targets 0.3 / 0.4 -> OBD 3 under each utility."""
    n, y, e = (3, 6, 12, 3, 3), (1, 2, 4, 2, 3), (0, 0, 5, 1, 1)
    both = tuple(max(0, a + b - m) for a, b, m in zip(y, e, n, strict=True))   # not read by the rule
    st = JointState(n, y, 4, 3, 3, e, both)
    for u in (1, 2, 3):
        assert KeyboardObdDesign(5, target=0.3, target_efficacy=0.4,
                                 utility=u).select_mtd(st) == 2


def test_boin12_paper_example_through_the_registry_design():
    """Lin et al. 2020, p. 1396 (as R escalation's test "BOIN12 matches published example"
    cites it): 5 doses, phi_t 0.35, phi_e 0.25, after 1NNN 2ENT 3ETT 2EEN the next dose is
    2."""
    d = Boin12Design(5, target=0.35, min_efficacy=0.25)
    st = joint_state_from_outcomes("1NNN 2ENT 3ETT 2EEN", 5)
    assert d.decide(st).dose == 1


def test_boin12_with_utilities_that_read_both_counts_keeps_them_per_trial():
    """u = (100, 50, 30, 0) (the Shiny app's second set, R escalation's test): u1 + u4 !=
    u2 + u3, so the "both" counts enter the utility and the states keep them."""
    d = with_stopping_rules(Boin12Design(4, target=0.3, u=(100.0, 50.0, 30.0, 0.0)),
                            max_n=24)
    ch = simulate_cohort_chunk(d, P, 7, 0, 150, efficacy=Q)
    for i, sid in enumerate(ch.sids.tolist()):
        got, want = ch.graph.state(sid), _replay(d, P, Q, 7, i)
        assert (got.n, got.y, got.e, got.b) == (want.n, want.y, want.e, want.b)


# ----------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def obd_file(tmp_path_factory):
    import yaml
    f = tmp_path_factory.mktemp("obd") / "obd.yaml"
    f.write_text(yaml.safe_dump({"name": "x", "doses": [1, 2, 3, 4, 5], "target": 0.35,
                                 "truth": {"p_dlt": [0.05, 0.1, 0.2, 0.3, 0.4],
                                           "efficacy": [0.1, 0.3, 0.5, 0.5, 0.5]},
                                 "trial": {"max_n": 36, "cohort_size": 3},
                                 "designs": [{"type": "boin12", "min_efficacy": 0.25},
                                             {"type": "keyboard-obd", "target": 0.3}]}))
    return f


def test_cli_next_dose_follows_the_published_example(obd_file, cli):
    """Lin et al. 2020 p. 1396: after 1NNN 2ENT 3ETT 2EEN, dose 2 (RDS 11.340, 28.620, 7.997,
    29.5, 29.5 by the reference notes' recomputation)."""
    r = cli("next-dose", obd_file, "--design", "boin12", "--outcomes",
             "1NNN 2ENT 3ETT 2EEN", "--json")
    assert r.returncode == 0, r.stderr
    import json
    doc = json.loads(r.stdout)
    assert doc["next_dose"] == 2 and doc["selects"] == "OBD"
    assert doc["responders"] == [0, 3, 1, 0, 0]
    assert [round(x, 2) for x in doc["estimates"]["rds"]] == [11.34, 28.62, 8.0, 29.5, 29.5]


def test_cli_select_mtd_says_it_selects_the_obd(obd_file, cli):
    """select.obd.kb's Rd example (OBD dose 3) as outcome letters: doses 1-5 with (n, DLT,
    responses) (3, 1, 0), (6, 2, 0), (12, 4, 5), (3, 2, 1), (3, 3, 1)."""
    out = "1TNN 2TTNNNN 3BBTTEEENNNNN 4BTN 5BTT"
    r = cli("select-mtd", obd_file, "--design", "keyboard-obd", "--outcomes", out)
    assert r.returncode == 0, r.stderr
    assert "optimal biological dose (OBD)" in r.stdout and "OBD = dose 3" in r.stdout


def test_cli_paths_and_tables(obd_file, cli):
    r = cli("paths", obd_file, "--design", "boin12", "--cohorts", "1", "--truth",
             "0.05,0.1,0.2,0.3,0.4", "--efficacy", "0.1,0.3,0.5,0.5,0.5", "--json")
    assert r.returncode == 0, r.stderr
    import json
    doc = json.loads(r.stdout)
    kids = doc["tree"]["children"]
    assert len(kids) == 20                         # C(3 + 3, 3) joint outcomes of 3
    assert sum(k["p_outcome"] for k in kids) == pytest.approx(1.0, abs=1e-12)
    r = cli("paths", obd_file, "--design", "boin12", "--truth", "0.05,0.1,0.2,0.3,0.4")
    assert r.returncode == 2 and "--efficacy" in r.stderr
    r = cli("table", "--design", "keyboard-obd", "--target", "0.2", "--option",
             "target_efficacy=0.4", "--cohort-size", "3", "--max-n", "3")
    assert r.returncode == 0, r.stderr
    # Keyboard 0.1.3 get.decision.obd.kb, bounds 0.15/0.25/0.35 and 0.25/0.45/0.65, targets
    # 0.2 / 0.4, n = 3 (reference notes 7.1): rows y = 0..3
    rows = [ln.split()[1:] for ln in r.stdout.splitlines() if ln.startswith("    ")]
    assert rows == [["EUE", "E", "E", "E"], ["DUE", "S", "S", "S"],
                    ["DUT"] * 4, ["DUT"] * 4]
    r = cli("table", "--design", "boin12", "--target", "0.35", "--cohort-size", "3",
             "--max-n", "12")
    assert r.returncode == 0, r.stderr
    # BOIN boundaries for phi_t 0.35 (reference notes section 3): (n, esc <=, de-esc >=) =
    # (3, 0, 2), (6, 1, 3), (9, 2, 4), (12, 3, 6)
    got = [ln.split()[:3] for ln in r.stdout.splitlines() if ln.strip()[:1].isdigit()]
    assert got == [["3", "0", "2"], ["6", "1", "3"], ["9", "2", "4"], ["12", "3", "6"]]


def test_html_report_has_the_obd_table():
    from escalation_sim.api import exact_oc
    from escalation_sim.report import render_report
    res = exact_oc(scenario=_scenario([{"type": "boin12"}, {"type": "boin"}]))
    html = render_report(res, swimmer=False)
    assert "Efficacy designs: optimal biological dose" in html
    assert "P(select the true OBD)" in html and "mean responders per trial" in html
    p = res.design_oc("boin12")["p_select_obd"]
    assert f"{100 * p:.1f}%" in html.split("Efficacy designs")[1]


def test_calendar_engine_refuses_efficacy_designs_when_called_directly():
    from escalation_sim.engines.calendar import simulate_des_trials
    from escalation_sim.inputs.conduct import Conduct
    with pytest.raises(ValueError, match="calendar engine does not observe responses"):
        simulate_des_trials(designs(12)[0], P, Conduct(), 1, range(3))


def test_graded_truth_monte_carlo_agrees_with_exact_within_4_se():
    """A graded truth (scenarios/cart_crs_icans.yaml's CRS / ICANS and DLT rule) with
    truth.efficacy: each patient's DLT flag comes from the outcome model, the response from
    the efficacy stream; exact enumeration uses the model's exact DLT rates."""
    import yaml
    from pathlib import Path
    from escalation_sim.api import exact_oc, simulate
    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "scenarios" / "cart_crs_icans.yaml").read_text())
    raw.pop("conduct", None)
    raw["doses"] = ["DL1", "DL2", "DL3", "DL4"]
    raw["truth"]["efficacy"] = [0.3, 0.5, 0.6, 0.6]
    raw["trial"]["max_n"] = 12
    raw["designs"] = [{"type": "boin12"}, {"type": "keyboard-obd"}]
    raw["simulation"] = {"n_trials": 20000, "seed": 3}
    sc = load_scenario_dict(raw, "g.yaml")
    assert sc.model.truth.graded
    mc, ex = simulate(sc, n_jobs=1), exact_oc(scenario=sc)
    for d in ("boin12", "keyboard-obd"):
        a, b = mc.design_oc(d), ex.design_oc(d)
        for key in ("p_select", "mean_n", "mean_dlt", "mean_responders"):
            for m, e, se in zip(a[key], b[key], a["se_" + key], strict=True):
                assert se == 0 and m == pytest.approx(e, abs=1e-12) or abs(m - e) / se < 4
