"""The efficacy designs' batch rules (issue 13; escalation_sim/designs/batch_obd.py): BOIN12
and Keyboard phase I/II decisions and OBD selections on arrays, held to the designs' own
scalar ``decide`` / ``select_mtd`` on every state of whole enumerations (the scalar methods
are the reference: they implement the papers and the R package, see tests/test_boin12.py and
tests/test_keyboard_obd.py), and the state graph's batched growth held to its state-by-state
growth (same states, same tallies, to the bit)."""
import math

import numpy as np
import pytest

from escalation_sim.designs.batch import check_against_scalar
from escalation_sim.designs.boin12 import Boin12Design
from escalation_sim.designs.keyboard_obd import KeyboardObdDesign
from escalation_sim.designs.rules import with_stopping_rules
from escalation_sim.engines import graph as graph_mod
from escalation_sim.engines.exact import exact_tally
from escalation_sim.engines.graph import StateGraph

P = [0.05, 0.12, 0.25, 0.40]
Q = [0.20, 0.40, 0.55, 0.60]

# (label, design, max_n, truth DLT, truth response); truths that reach stops of every kind
CASES = [
    ("boin12", Boin12Design(4, target=0.35), 15, P, Q),
    ("boin12-tox", Boin12Design(4, target=0.3), 15, [0.3, 0.45, 0.6, 0.7], [0.1, 0.2, 0.3, 0.3]),
    ("boin12-u-both", Boin12Design(4, target=0.3, u=(100.0, 50.0, 30.0, 0.0)), 12, P, Q),
    ("boin12-5d-nstar", Boin12Design(5, target=0.25, min_efficacy=0.3, n_star=3, explore_n=6,
                                     c_t=0.9, c_e=0.8, start_dose=1), 12,
     [0.05, 0.1, 0.2, 0.3, 0.5], [0.1, 0.3, 0.3, 0.5, 0.5]),
    ("keyboard-obd", KeyboardObdDesign(4, target=0.3), 15, P, Q),
    ("keyboard-obd-futile", KeyboardObdDesign(4, target=0.25, target_efficacy=0.5, n_early=9),
     15, [0.1, 0.3, 0.5, 0.6], [0.1, 0.2, 0.6, 0.6]),
    ("keyboard-obd-u2", KeyboardObdDesign(4, target=0.3, utility=2), 12, P, Q),
    ("keyboard-obd-u3", KeyboardObdDesign(5, target=0.3, utility=3, indicator=0.2,
                                          start_dose=2), 12,
     [0.05, 0.1, 0.2, 0.3, 0.5], [0.1, 0.3, 0.3, 0.5, 0.5]),
]
RULES = [
    ("stop_n_at_dose", {"stop_n_at_dose": 9}),
    ("no_skip", {"rules": [{"no_skip": True}]}),
]


def _wrapped(design, max_n, extra=None):
    from escalation_sim.designs.base import RuleSpec
    extra = dict(extra or {})
    rules = [RuleSpec(**r) for r in extra.pop("rules", [])]
    return with_stopping_rules(design, max_n=max_n, rules=rules, **extra)


def _all_states(d, p, q):
    g = StateGraph(d)
    exact_tally(d, p, graph=g, efficacy=q)
    return g, [g.states[i] for i in range(g.n_states)]


@pytest.fixture
def scalar_graph(monkeypatch):
    """The state graph deciding new states one by one with the scalar methods."""
    monkeypatch.setattr(graph_mod.StateGraph, "batch_decisions", False)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_batch_rules_are_the_scalar_rules_on_every_state(case, scalar_graph):
    label, design, max_n, p, q = case
    d = _wrapped(design, max_n)
    rules = d.exact_rules(max_n)
    assert rules is not None
    g, states = _all_states(d, p, q)
    assert check_against_scalar(d, rules, states) is None
    stops = set(g.stop_code[: g.n_states].tolist())
    assert len(stops) >= 2, stops            # the enumeration reaches stops of its own


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r[0])
@pytest.mark.parametrize("which", [0, 4], ids=["boin12", "keyboard-obd"])
def test_batch_rules_under_the_wrappers(which, rule, scalar_graph):
    label, design, max_n, p, q = CASES[which]
    d = _wrapped(design, max_n, rule[1])
    rules = d.exact_rules(max_n)
    assert rules is not None
    _, states = _all_states(d, p, q)
    assert check_against_scalar(d, rules, states) is None


def test_demand_rule_has_no_batch_rules():
    from escalation_sim.designs.base import RuleSpec
    d = with_stopping_rules(Boin12Design(4), max_n=12,
                            rules=[RuleSpec(demand_n_at_dose=6)])
    assert d.exact_rules(12) is None
    g = StateGraph(d)
    assert g.batch_rules is None


def test_batch_tables_are_filled_by_the_scalar_functions():
    """Every RDS cell the rules read is the scalar ``BOIN12.rds`` of that cell (the lazy
    table calls it), every letter the scalar ``KeyboardOBD.letter``."""
    from escalation_sim.designs.batch_obd import LETTERS
    from escalation_sim.designs.boin12 import JointCounts
    b = Boin12Design(4, target=0.35)
    rules = b.exact_rules(12)
    n = np.array([[6, 3, 0, 0]]); y = np.array([[1, 2, 0, 0]])
    e = np.array([[3, 1, 0, 0]]); bb = np.array([[1, 1, 0, 0]])
    got = rules.rds(n, y, e, bb)[0]
    c = JointCounts((6, 3, 0, 0), (1, 2, 0, 0), (3, 1, 0, 0), (1, 1, 0, 0), 1)
    assert got.tolist() == [b.rules.rds(c, k) for k in range(4)]
    k = KeyboardObdDesign(4, target=0.2, target_efficacy=0.4)
    kr = k.exact_rules(3)
    for yy in range(4):
        for r in range(4):
            code = int(kr.letter(np.array([3]), np.array([yy]), np.array([r]))[0])
            assert LETTERS[code] == k.rules.letter(3, yy, r)


@pytest.mark.parametrize("which", [0, 2, 4], ids=["boin12", "boin12-u-both", "keyboard-obd"])
def test_batched_graph_growth_equals_scalar_growth(which, monkeypatch):
    """The graph grown with batch decisions holds the same states, decisions and OBDs in
    the same order as the graph grown state by state, and the exact tallies are equal to
    the bit."""
    label, design, max_n, p, q = CASES[which]
    d = _wrapped(design, max_n)
    g1 = StateGraph(d)
    t1 = exact_tally(d, p, graph=g1, efficacy=q)
    assert g1.batch_rules is not None
    monkeypatch.setattr(graph_mod.StateGraph, "batch_decisions", False)
    g0 = StateGraph(d)
    t0 = exact_tally(d, p, graph=g0, efficacy=q)
    assert g0.batch_rules is None
    assert g1.n_states == g0.n_states
    k = g0.n_states
    for name in ("n", "y", "e", "b", "cur", "dose", "size", "stop_code", "_mtd"):
        assert np.array_equal(getattr(g1, name)[:k], getattr(g0, name)[:k]), name
    assert list(t1.counts.items()) == list(t0.counts.items())
    assert abs(math.fsum(t1.counts.values()) - 1) < 1e-12


@pytest.mark.parametrize("which", [0, 4], ids=["boin12", "keyboard-obd"])
def test_monte_carlo_with_batch_decisions_is_unchanged(which, monkeypatch):
    """The cohort engine's trials are the same whichever way new states are decided."""
    from escalation_sim.engines.cohort import simulate_cohort_chunk
    from escalation_sim.results.oc import OutcomeTally
    label, design, _, p, q = CASES[which]
    d = _wrapped(design, 24)
    graph_mod._GRAPHS.pop(d, None)
    a = simulate_cohort_chunk(d, p, 5, 0, 4000, efficacy=q)
    ta = OutcomeTally.from_graph_sids(a.graph, a.sids).counts
    monkeypatch.setattr(graph_mod.StateGraph, "batch_decisions", False)
    graph_mod._GRAPHS.pop(d, None)
    b = simulate_cohort_chunk(d, p, 5, 0, 4000, efficacy=q)
    tb = OutcomeTally.from_graph_sids(b.graph, b.sids).counts
    graph_mod._GRAPHS.pop(d, None)
    assert list(ta.items()) == list(tb.items())


# ----------------------------------------------------------------------------- array sweep
SWEEP = [0, 1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("which", SWEEP, ids=lambda i: CASES[i][0])
def test_joint_array_sweep_equals_graph_sweep_to_the_bit(which):
    """The joint array sweep (graph=None) and the graph sweep give the same endings in the
    same order with the same probabilities (==, not approx), visit as many states, and the
    probabilities add up to 1 within 1e-12."""
    from escalation_sim.engines.exact import joint_array_rules
    label, design, max_n, p, q = CASES[which]
    d = _wrapped(design, max_n)
    assert joint_array_rules(d) is not None
    g = StateGraph(d)
    want = exact_tally(d, p, graph=g, efficacy=q)
    got = exact_tally(d, p, efficacy=q)
    assert getattr(got, "n_states", None) == g.n_states
    assert list(got.counts.items()) == list(want.counts.items())
    assert abs(math.fsum(got.counts.values()) - 1) < 1e-12


@pytest.mark.parametrize("rule", RULES + [("cut-cohort", {})], ids=lambda r: r[0])
def test_joint_array_sweep_under_the_wrappers(rule):
    """stop_n_at_dose, no_skip, and max_n 14 (the last cohort cut to 2)."""
    label, design, _, p, q = CASES[4]
    n = 14 if rule[0] == "cut-cohort" else 15
    d = _wrapped(design, n, rule[1])
    g = StateGraph(d)
    want = exact_tally(d, p, graph=g, efficacy=q)
    got = exact_tally(d, p, efficacy=q)
    assert got.n_states == g.n_states
    assert list(got.counts.items()) == list(want.counts.items())


def test_exact_size_limits_with_and_without_batch_rules():
    """With batch rules, N = 24 on 4 doses (about 2 million states, measured) is allowed and
    N = 27 refused at once; without them (a demand_n_at_dose rule) the graph sweep's limit
    still refuses N = 24."""
    from escalation_sim.designs.base import RuleSpec
    from escalation_sim.engines.exact import ExactTooLarge, exact_size_problem
    for design in (Boin12Design(4), KeyboardObdDesign(4)):
        assert exact_size_problem(with_stopping_rules(design, max_n=24)) is None
        d27 = with_stopping_rules(design, max_n=27)
        assert "toxicity-and-efficacy" in exact_size_problem(d27)
        with pytest.raises(ExactTooLarge, match="Monte Carlo"):
            exact_tally(d27, P, efficacy=Q)
        demand = with_stopping_rules(design, max_n=24, rules=[RuleSpec(demand_n_at_dose=6)])
        assert "estimate" in exact_size_problem(demand)


@pytest.mark.parametrize("which", [2, 4], ids=["boin12-u-both", "keyboard-obd"])
def test_integer_index_keys_survive_release_and_pickling(which, monkeypatch):
    """A graph indexed by integer keys, its index dropped (release_index) or pickled and
    rebuilt from the arrays, goes on merging states as a fresh state-by-state graph does:
    the next trials' endings are the same."""
    import pickle
    from escalation_sim.engines.cohort import simulate_cohort_chunk
    from escalation_sim.engines.graph import MAX_PATIENTS, install_graph
    from escalation_sim.results.oc import OutcomeTally
    label, design, _, p, q = CASES[which]
    d = _wrapped(design, 24)
    graph_mod._GRAPHS.pop(d, None)
    first = simulate_cohort_chunk(d, p, 9, 0, 1500, efficacy=q).graph
    assert first._key_scale is not None
    first.release_index(MAX_PATIENTS)
    a = simulate_cohort_chunk(d, p, 9, 1500, 3000, efficacy=q)
    assert a.graph is first and first.stats["index_rebuilds"] > 0
    graph_mod._GRAPHS.pop(d, None)
    install_graph(pickle.loads(pickle.dumps(first)))
    b = simulate_cohort_chunk(d, p, 9, 3000, 4500, efficacy=q)
    assert b.graph is not first and b.graph._key_scale is not None
    monkeypatch.setattr(graph_mod.StateGraph, "batch_decisions", False)
    for got in (a, b):
        graph_mod._GRAPHS.pop(d, None)
        ref = simulate_cohort_chunk(d, p, 9, got.trial_start,
                                    got.trial_start + got.sids.size, efficacy=q)
        assert ref.graph._key_scale is None
        want = OutcomeTally.from_graph_sids(ref.graph, ref.sids).counts
        have = OutcomeTally.from_graph_sids(got.graph, got.sids).counts
        assert sorted(have.items()) == sorted(want.items())
    graph_mod._GRAPHS.pop(d, None)


def test_cli_refuses_exact_n27_with_one_line_and_exit_2(tmp_path):
    """Beyond the lifted limit the command line names the file and field (exit 2)."""
    import subprocess
    import sys
    import yaml
    f = tmp_path / "big.yaml"
    f.write_text(yaml.safe_dump({"name": "big", "doses": [1, 2, 3, 4], "target": 0.3,
                                 "truth": {"p_dlt": P, "efficacy": Q},
                                 "trial": {"max_n": 27, "cohort_size": 3},
                                 "designs": [{"type": "keyboard-obd"}]}))
    r = subprocess.run([sys.executable, "-m", "escalation_sim", "run", str(f), "--method",
                        "exact"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{f}: trial.max_n: design 'keyboard-obd':" in r.stderr
    assert "(got 27)" in r.stderr and "Monte Carlo" in r.stderr


def test_quick_first_order_is_first_order():
    """The joint sweep's merge (one unstable argsort) gives _first_order's arrays."""
    from escalation_sim.engines.exact import _first_order, _first_order_quick
    rng = np.random.default_rng(3)
    for size, hi in ((0, 5), (1, 5), (50, 3), (10_000, 700), (10_000, 10**15)):
        ids = rng.integers(0, hi, size).astype(np.int64) * 7919
        for a, b in zip(_first_order(ids), _first_order_quick(ids), strict=True):
            assert np.array_equal(a, b)
