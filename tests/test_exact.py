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


# --------------------------------------------------------------------------------------
# The cohort-by-cohort numpy sweep (issue 16) against the enumeration it replaced.
# Reference values recorded from the previous implementation (a dictionary of state ids
# expanded one state at a time with Python floats), main at commit 81a787a, by running
# exact_tally + compute_oc for these settings and printing repr() of each value; "sha" is
# the SHA-256 of repr(sorted(tally.counts.items())), i.e. of every ending and its
# probability to the last bit.  4 doses, target 0.25, cohorts of 3, start at dose 1.
P_REF = [0.05, 0.12, 0.25, 0.40]
SKEL = [0.10, 0.17, 0.25, 0.35]
OLD_SWEEP = {
    ("3+3", 24, ()): {
        "p_select": [0.1361381576400325, 0.3704406375341053, 0.34728096563301286,
                     0.11870747531445637],
        "p_no_mtd": 0.027432763878393027,
        "mean_n": [3.7681544496798653, 4.631388442968272, 4.441763243471406, 2.51581686366029],
        "mean_dlt": [0.18840772248399332, 0.5557666131561927, 1.1104408108678512,
                     1.0063267454641158],
        "endings": 261,
        "sha": "7665bf5a11cf9bc789347fb454b2d6adbad1805304d2c906693790b0e3750300",
    },
    ("boin", 24, ()): {
        "p_select": [0.015320139057795085, 0.3045335268091197, 0.5176077727023679,
                     0.16232212718705796],
        "p_no_mtd": 0.0002164342436592922,
        "mean_n": [5.332533155185821, 8.23000779560887, 7.191879696048071, 3.241401086371436],
        "mean_dlt": [0.26662665775929106, 0.9876009354730643, 1.7979699240120175,
                     1.2965604345485746],
        "endings": 1293,
        "sha": "f22192ccd1154f189664bc3f95622296bbc3475754c774dc453d7ef48716d547",
    },
    ("crm", 24, ()): {
        "p_select": [0.009676653223199149, 0.1806512562968633, 0.5133421854518525,
                     0.29632990502808515],
        "p_no_mtd": 0.0,
        "mean_n": [4.073601435137326, 6.284279026374126, 8.26384758575292, 5.378271952735629],
        "mean_dlt": [0.2036800717568663, 0.7541134831648948, 2.06596189643823,
                     2.1513087810942517],
        "endings": 1509,
        "sha": "d13eba4eebbdc07449da07987762f6e52c9a895a85f20d8e8870f936ec69fb8f",
    },
    ("boin", 36, ()): {
        "p_select": [0.007706915326933619, 0.24492857002347063, 0.6034875340041345,
                     0.14366051673803387],
        "p_no_mtd": 0.00021646390742738905,
        "mean_n": [5.5932471841995355, 11.635463818625913, 13.23585067924624,
                   5.528662650779988],
        "mean_dlt": [0.2796623592099768, 1.3962556582351098, 3.3089626698115597,
                     2.211465060311995],
        "endings": 15888,
        "sha": "14eed163ea9e609f0e64227542c36465fa6ec1e1ef36cfa1e8ef0b550f219dc6",
    },
    ("crm", 36, ()): {
        "p_select": [0.00241897666710194, 0.16145143469161516, 0.6080540303387358,
                     0.22807555830254714],
        "p_no_mtd": 0.0,
        "mean_n": [4.149051491659243, 8.396011987854468, 14.839380967421752,
                   8.615555553064539],
        "mean_dlt": [0.20745257458296215, 1.007521438542536, 3.7098452418554375,
                     3.446222221225816],
        "endings": 18291,
        "sha": "1835b344fa8da7980a491570865b50feda1a22adf0f1164ff77d71cbadf63dd8",
    },
    # cohorts of 1 then 2 then 3, and a cut last cohort (N = 25): states reached after
    # different numbers of cohorts, the case where the order of the sums matters most
    ("boin", 25, (("titration", True),)): {
        "p_select": [0.01106961492163812, 0.2509726097256605, 0.550752436483506,
                     0.1869958505943751],
        "p_no_mtd": 0.00020948827482021644,
        "mean_n": [2.3444495410608317, 6.473771633284007, 10.129532182345022,
                   6.048123501143952],
        "mean_dlt": [0.11722247705304159, 0.7768525959940807, 2.532383045586255,
                     2.41924940045758],
        "endings": 6405,
        "sha": "60fb70f7bc52bcd5a54929277a9c26b2edd40775c5d618ace67d23108290b955",
    },
    ("crm", 25, (("two_stage", (1, 2, 3)),)): {
        "p_select": [0.009701644277550901, 0.19509925363703728, 0.5140901947601556,
                     0.2811089073252563],
        "p_no_mtd": 0.0,
        "mean_n": [4.083278088360525, 6.464930282670989, 8.777189771204771,
                   5.674601857763714],
        "mean_dlt": [0.2041639044180263, 0.7757916339205186, 2.1942974428011928,
                     2.269840743105486],
        "endings": 2169,
        "sha": "5c2085c5288ef3f4abd5be5c8984d66e7ddf7f88e0a183d2341d5a8dfe2bbbd6",
    },
}


def _ref_design(build_design, t, max_n, opts):
    o = {k: list(v) if isinstance(v, tuple) else v for k, v in opts}
    if t == "crm":
        o["skeleton"] = SKEL
    return build_design(t, 4, max_n=max_n, **o)


@pytest.mark.parametrize("case", list(OLD_SWEEP), ids=lambda c: f"{c[0]}-N{c[1]}")
def test_sweep_equals_previous_enumeration(case, build_design):
    """New sweep vs the old per-state enumeration (values above): every OC to 1e-15
    relative, the same endings, probabilities summing to 1 within 1e-12, and the whole
    tally to the bit (the sums are made in the old order)."""
    import hashlib
    ref = OLD_SWEEP[case]
    design = _ref_design(build_design, *case)
    g = StateGraph(design)           # a fresh graph: the sweep builds it
    tally = exact_tally(design, P_REF, graph=g)
    oc = exact_oc_dict(design, P_REF, 0.25)   # the cached graph, built anew or reused
    assert len(tally.counts) == ref["endings"]
    assert abs(math.fsum(tally.counts.values()) - 1) < 1e-12
    for name in ("p_select", "mean_n", "mean_dlt"):
        for got, want in zip(oc[name], ref[name], strict=True):
            assert got == pytest.approx(want, rel=1e-15, abs=0.0)
    assert oc["p_no_mtd"] == pytest.approx(ref["p_no_mtd"], rel=1e-15, abs=0.0)
    digest = hashlib.sha256(repr(sorted(tally.counts.items())).encode()).hexdigest()
    assert digest == ref["sha"]


def test_sweep_reuses_a_built_graph_and_stays_exact(build_design):
    """A second truth on the same graph adds no state and still sums to 1; a graph built
    by Monte Carlo first (lazily, in another order) gives the same tally to the bit."""
    design = _ref_design(build_design, "boin", 24, ())
    g = StateGraph(design)
    exact_tally(design, P_REF, graph=g)
    n = g.n_states
    other = exact_tally(design, [0.30, 0.45, 0.55, 0.70], graph=g)
    assert g.n_states == n
    assert abs(math.fsum(other.counts.values()) - 1) < 1e-12
    fresh = StateGraph(design)
    from escalation_sim.engines.cohort import _walk_block
    from escalation_sim.randomness import stream_key
    import numpy as np
    _walk_block(fresh, np.array([0.3, 0.3, 0.3, 0.3]), stream_key(1, "dlt"),
                np.arange(3000, dtype=np.uint64))
    assert 0 < fresh.n_states < n
    again = exact_tally(design, [0.30, 0.45, 0.55, 0.70], graph=fresh)
    assert list(again.counts.items()) == list(other.counts.items())


def test_zero_probability_branches_are_skipped_and_grown_later(build_design):
    """With p = 0 at a dose its DLT branches are never created; a later truth needs them,
    in levels whose index the first sweep dropped: they are rebuilt, and the result equals
    a sweep on a fresh graph."""
    design = _ref_design(build_design, "boin", 24, ())
    g = StateGraph(design)
    exact_tally(design, [0.0, 0.12, 0.25, 0.40], graph=g)
    n0 = g.n_states
    got = exact_tally(design, P_REF, graph=g)
    assert g.n_states > n0
    assert g.stats["index_rebuilds"] > 0
    want = exact_tally(design, P_REF, graph=StateGraph(design))
    assert sorted(got.counts.items()) == sorted(want.counts.items())
