"""Exact enumeration: the closed form of the 3+3, probability bookkeeping, dose paths."""
import math

import pytest

from escalation_sim import exact_oc, load_scenario, simulate
from escalation_sim.designs.threeplusthree import lin_shih_oc
from escalation_sim.engines.graph import StateGraph
from escalation_sim.engines.exact import exact_oc_dict, exact_tally
from escalation_sim.outcomes import state_from_outcomes
from escalation_sim.engines.paths import dose_paths

TRUTHS = [[0.05, 0.10, 0.18, 0.28], [0.25, 0.40, 0.55, 0.70], [0.02, 0.04, 0.06, 0.08],
          [0.45, 0.55, 0.65, 0.75], [0.10, 0.30, 0.30, 0.50, 0.60]]


@pytest.mark.parametrize("p", TRUTHS)
@pytest.mark.parametrize("de_esc", [True, False])
@pytest.mark.parametrize("top6", [True, False])
def test_33_enumeration_equals_closed_form(p, de_esc, top6, build_design):
    """3+3 exact OCs by state enumeration vs the closed form (after Lin & Shih 2001)."""
    d = build_design("3+3", len(p), de_escalation=de_esc, top_dose_needs_six=top6)
    oc = exact_oc_dict(d, p, 0.25)
    cf = lin_shih_oc(p, de_escalation=de_esc, top_dose_needs_six=top6)
    assert oc["p_select"] == pytest.approx(list(cf.p_mtd), abs=1e-12)
    assert oc["p_no_mtd"] == pytest.approx(cf.p_no_mtd, abs=1e-12)
    assert oc["mean_n"] == pytest.approx(list(cf.expected_n), abs=1e-12)
    assert oc["mean_dlt"] == pytest.approx(list(cf.expected_dlt), abs=1e-12)


def test_33_published_pass_probabilities(build_design):
    """P(the 3+3 escalates past a dose with true DLT rate p): the standard table
    (0.17 at p = 0.5, 0.31 at 0.4, 0.71 at 0.2, 0.91 at 0.1, 0.99 at 0.03)."""
    for p, ref in [(0.5, 0.17), (0.4, 0.31), (0.2, 0.71), (0.1, 0.91), (0.03, 0.99)]:
        tally = exact_tally(build_design("3+3", 2), [p, 0.9])
        reached_dose2 = math.fsum(w for k, w in tally.counts.items() if k[2][1] > 0)
        assert round(reached_dose2, 2) == ref


@pytest.mark.parametrize("t", ["3+3", "boin", "crm"])
@pytest.mark.parametrize("p", TRUTHS[:4])
def test_probabilities_sum_to_one(t, p, build_design):
    opts = {"skeleton": [0.10, 0.17, 0.25, 0.35]} if t == "crm" else {}
    tally = exact_tally(build_design(t, 4, **opts), p)
    assert abs(math.fsum(tally.counts.values()) - 1) < 1e-12


def test_exact_results_api_matches_simulation_keys(root):
    sc = load_scenario(root / "scenarios" / "standard_mtd2.yaml")
    ex = exact_oc(None, sc).to_dict()
    mc = simulate(sc, n_trials=500).to_dict()
    assert [d["design"] for d in ex["designs"]] == [d["design"] for d in mc["designs"]]
    for a, b in zip(ex["designs"], mc["designs"], strict=True):
        assert set(a) == set(b)
    one = exact_oc("boin", sc)
    assert [d.name for d in one.designs] == ["boin"]


def test_state_merging_is_effective(build_design):
    """Distinct states are far fewer than paths: BOIN, N = 24 has 4^8 = 65536 cohort paths."""
    d = build_design("boin", 4)
    g = StateGraph(d)
    exact_tally(d, TRUTHS[0], graph=g)
    assert g.n_states < 65536 / 10


def test_dose_paths_agree_with_decide(build_design):
    d = build_design("crm", 4, skeleton=[0.10, 0.17, 0.25, 0.35])
    s = state_from_outcomes("1NNN", 4)
    tree = dose_paths(d, s, 2)
    assert tree["next_dose"] == d.decide(s).dose + 1
    for child in tree["children"]:
        y = child["outcome"].count("T")
        s2 = s.add_cohort(tree["next_dose"] - 1, 3, y)
        dec = d.decide(s2)
        assert child["next_dose"] == (None if dec.stop else dec.dose + 1)
        assert len(child["children"]) in (0, 4)
