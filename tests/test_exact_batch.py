"""Exact enumeration's array sweep (issue 16): the designs' batch rules against their scalar
``decide`` / ``select_mtd`` on every state of whole enumerations, and the array sweep's
tally against the state graph's sweep, to the bit (same endings, same order, same sums)."""
import math

import pytest

from escalation_sim.designs.batch import CRMRules, check_against_scalar
from escalation_sim.engines.exact import array_rules, exact_tally
from escalation_sim.engines.graph import StateGraph

P4 = [0.05, 0.12, 0.25, 0.40]
P5 = [0.04, 0.08, 0.15, 0.28, 0.45]
SKEL5 = [0.05, 0.10, 0.17, 0.25, 0.35]

# (type, doses, max N, cohort size, start dose, options)
COVERED = [
    ("boin", 4, 24, 3, 0, {}),
    ("boin", 5, 30, 3, 1, {"n_earlystop": 9}),
    ("keyboard", 4, 24, 3, 0, {"n_earlystop": 9}),                 # at: current
    ("mtpi2", 4, 24, 3, 0, {"n_earlystop": 9}),                    # at: next
    ("i3+3", 4, 24, 3, 0, {"n_earlystop": 9, "n_earlystop_at": "stay"}),
    ("boin", 4, 24, 3, 0, {"bound_mtd": True, "cutoff_eli": 0.9}),
    ("boin", 4, 12, 1, 0, {}),
    ("boin", 4, 20, 3, 0, {}),                 # 20 = 6 cohorts + a cut cohort of 2
    ("mtpi2", 4, 24, 3, 0, {}),
    ("keyboard", 5, 24, 3, 0, {}),
    ("i3+3", 4, 24, 3, 0, {}),
    ("crm", 5, 27, 3, 0, {"skeleton": SKEL5}),
    ("crm", 5, 24, 3, 0, {"skeleton": SKEL5, "estimate": "posterior_mean"}),
    ("crm", 5, 24, 3, 0, {"skeleton": SKEL5, "safety_threshold": 0.8}),
    ("crm", 5, 24, 3, 0, {"skeleton": SKEL5, "restrict": False}),
    ("crm", 4, 24, 3, 0, {"skeleton": [0.10, 0.17, 0.25, 0.35], "restrict": "no_skip_only"}),
    ("crm", 4, 10, 1, 0, {"skeleton": [0.10, 0.17, 0.25, 0.35]}),
    ("boin", 4, 24, 3, 0, {"stop_n_at_dose": 9}),
    # titration (get.oc titration=TRUE): its states decided by the scalar code
    ("boin", 4, 24, 3, 0, {"titration": True}),
    ("boin", 5, 24, 3, 2, {"titration": True, "titration_complete_cohort": False}),
    ("boin", 5, 24, 3, 2, {"titration": True, "titration_from_start_dose": True,
                           "titration_step_down": True}),
    ("crm", 5, 24, 3, 0, {"skeleton": SKEL5, "restrict": False,
                          "rules": [{"no_skip": True}, {"stop_n_at_dose": 12}]}),
]

NOT_COVERED = [
    ("3+3", 4, 24, 3, 0, {}),
    ("boin", 4, 24, 3, 0, {"extrasafe": True}),
    ("i3+3", 4, 24, 3, 0, {"extrasafe_mtd": True}),
    ("crm", 4, 24, 3, 0, {"skeleton": [0.10, 0.17, 0.25, 0.35], "model": "logistic"}),
    ("crm", 4, 24, 3, 0, {"skeleton": [0.10, 0.17, 0.25, 0.35], "two_stage": [1, 2]}),
    ("boin", 4, 24, 3, 0, {"rules": [{"demand_n_at_dose": 9}]}),
    ("boin", 1, 303, 3, 0, {}),      # beyond MAX_TABLE_N: no (n, y) tables that large
]


def _build(build_design, case):
    t, k, n, c, s, opts = case
    return build_design(t, k, cohort_size=c, max_n=n, start_dose=s, **opts)


def _truth(k):
    return {1: [0.3], 4: P4, 5: P5}[k]


@pytest.mark.parametrize("case", COVERED, ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}-{c[5]}")
def test_batch_rules_are_the_scalar_rules_on_every_state(case, build_design):
    """Every state the graph sweep visits: the batch decision (dose, cohort size, stop
    code) and MTD equal the design's own decide / select_mtd."""
    d = _build(build_design, case)
    rules = array_rules(d)
    assert rules is not None
    g = StateGraph(d)
    exact_tally(d, _truth(case[1]), graph=g)
    states = [g.states[i] for i in range(g.n_states)]
    assert check_against_scalar(d, rules, states) is None


@pytest.mark.parametrize("case", COVERED, ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}-{c[5]}")
def test_array_sweep_equals_graph_sweep_to_the_bit(case, build_design):
    """The array sweep (graph=None) and the graph sweep give the same endings in the same
    order with the same probabilities (==, not approx), and visit as many states.  With
    titration (cohorts of 1, then of cohort_size - 1) a state can be reached after different
    numbers of cohorts, and the array sweep (one step per cohort) counts it once per step:
    on the 4-dose case 9,499 visits of the graph's 9,329 states, 170 of them states reached
    at two depths, as a breadth-first walk of the scalar decide shows."""
    d = _build(build_design, case)
    p = _truth(case[1])
    g = StateGraph(d)
    want = exact_tally(d, p, graph=g)
    got = exact_tally(d, p)
    if case[5].get("titration"):
        assert getattr(got, "n_states", 0) >= g.n_states
    else:
        assert getattr(got, "n_states", None) == g.n_states
    assert list(got.counts.items()) == list(want.counts.items())
    assert abs(math.fsum(got.counts.values()) - 1) < 1e-12


def test_crm_scalar_fallback_gives_the_same_decisions(build_design, monkeypatch):
    """With the margin so wide that every count vector goes to the scalar posterior, and
    with no margin at all, the CRM's batch rules still give the scalar decisions."""
    case = ("crm", 5, 18, 3, 0, {"skeleton": SKEL5, "safety_threshold": 0.8})
    d = _build(build_design, case)
    g = StateGraph(d)
    exact_tally(d, P5, graph=g)
    states = [g.states[i] for i in range(g.n_states)]
    for margin in (2.0, 0.0):
        monkeypatch.setattr(CRMRules, "MARGIN", margin)
        rules = array_rules(d)
        assert check_against_scalar(d, rules, states) is None
        if margin:
            assert rules.base.fallbacks > 0


def test_crm_batch_posterior_matches_the_scalar_one(build_design):
    """The windowed batch posterior (plug-in estimates and Pr(p_1 > target)) agrees with
    the scalar quadrature to 1e-12 on every count vector of an enumeration."""
    import numpy as np
    from escalation_sim.designs.crm import _fit
    d = _build(build_design, ("crm", 5, 30, 3, 0, {"skeleton": SKEL5}))
    g = StateGraph(d)
    exact_tally(d, P5, graph=g)
    rules = array_rules(d).base
    n = g.n[: g.n_states].astype(np.int64)
    y = g.y[: g.n_states].astype(np.int64)
    keep = n.sum(axis=1) > 0
    n, y = n[keep], y[keep]
    p, pr = rules._batch_fit(n, y)
    for i in range(0, n.shape[0], 97):
        f = _fit(rules.grid, tuple(n[i].tolist()), tuple(y[i].tolist()))
        assert np.allclose(p[i], f.p_plugin, rtol=0, atol=1e-12)
        assert abs(pr[i] - f.pr_p1_above) < 1e-12


@pytest.mark.parametrize("case", NOT_COVERED, ids=lambda c: f"{c[0]}-{c[5]}")
def test_designs_without_batch_rules_use_the_graph_sweep(case, build_design):
    d = _build(build_design, case)
    assert array_rules(d) is None
    tally = exact_tally(d, _truth(case[1]))
    assert getattr(tally, "n_states", None) is None
    assert abs(math.fsum(tally.counts.values()) - 1) < 1e-12
