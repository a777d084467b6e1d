"""The state graph (engines/graph.py): compact storage, growth, dropped and rebuilt index
levels, pickling for worker processes, failure safety (issue 16).

Expected values come from the designs themselves (a state's stored decision must be what
``decide`` says for it) and from a plain reference loop over ``decide`` / ``add_cohort``
with the shared ``dlt`` stream - the contract every engine follows (see test_engine.py).
"""
import gc
import logging
import math
import pickle
from dataclasses import dataclass

import numpy as np
import pytest

from escalation_sim.designs.base import Design, DesignContext
from escalation_sim.designs.registry import get_entry
from escalation_sim.engines import graph as graph_mod
from escalation_sim.engines.cohort import simulate_cohort_chunk
from escalation_sim.engines.exact import exact_tally
from escalation_sim.engines.graph import (MAX_PATIENTS, StateGraph, gc_paused, graph_for,
                                          install_graph)
from escalation_sim.randomness import stream_key, uniforms
from escalation_sim.types import STOP_INDEX, Decision, StopReason, TrialState

P = [0.05, 0.12, 0.25, 0.40]


def build(t, max_n=24, **opts):
    if t == "crm":
        opts.setdefault("skeleton", [0.10, 0.17, 0.25, 0.35])
    entry = get_entry(t)
    spec = entry.spec_model.model_validate({"type": t, **opts})
    return entry.build(spec, DesignContext(4, 0.25, 3, max_n, 0))


def reference_end(design, seed, t):
    """Trial t by hand: decide, draw the cohort from u(t, k) < p_d, add it."""
    key = stream_key(seed, "dlt")
    state = TrialState.empty(design.n_doses)
    while True:
        dec = design.decide(state)
        if dec.stop:
            return state
        u = uniforms(key, t, np.arange(state.total_n, state.total_n + dec.cohort_size))
        state = state.add_cohort(dec.dose, dec.cohort_size, int((u < P[dec.dose]).sum()))


@pytest.mark.parametrize("t", ["3+3", "boin", "crm"])
def test_stored_states_and_decisions_are_the_designs(t):
    """Every stored state rebuilds to a TrialState whose decision, stop reason and MTD are
    the ones the graph holds, and whose canonical key is distinct from every other."""
    design = build(t)
    g = StateGraph(design)
    exact_tally(design, P, graph=g)
    keys = set()
    for sid in range(g.n_states):
        st = g.states[sid]
        assert st.total_n == g.total_n[sid]
        dec = design.decide(st)
        if dec.stop:
            assert g.dose[sid] == -1 and g.size[sid] == 0
            assert g.stop_code[sid] == STOP_INDEX[dec.stop_reason]
            assert g.mtd(sid) == design.select_mtd(st)
        else:
            assert (g.dose[sid], g.size[sid], g.stop_code[sid]) == (dec.dose, dec.cohort_size, 0)
        keys.add(design.canonical(st))
    assert len(keys) == g.n_states


def test_states_view_is_a_sequence():
    g = StateGraph(build("boin"))
    g.step(np.array([0, 0]), np.array([0, 1]))
    assert len(g.states) == g.n_states == 3
    assert g.states[-1] == g.states[2]
    assert [s.total_n for s in g.states] == [0, 3, 3]
    assert g.states[1:] == [g.states[1], g.states[2]]
    with pytest.raises(IndexError):
        g.states[3]


@pytest.mark.parametrize("t", ["boin", "crm"])
def test_pickled_graph_is_compact_and_walks_like_a_fresh_one(t):
    """The pickle holds the arrays only (no Python object per state); a worker that installs
    it grows it further (rebuilding the index of the levels it needs) and ends every trial
    where the reference loop ends it."""
    design = build(t, max_n=30)
    graph_mod._GRAPHS.clear()
    parent = graph_for(design)
    simulate_cohort_chunk(design, P, 5, 0, 2000)
    blob = pickle.dumps(parent)
    # per state: 2 x 4 int16 counts, 6 more int16, an int8 stop code, 4 int32 transitions
    assert len(blob) < 47 * parent.n_states + 2000
    graph_mod._GRAPHS.clear()
    child = install_graph(pickle.loads(blob))
    assert graph_for(design) is child and child.n_states == parent.n_states
    for name in ("n", "y", "cur", "last_n", "last_y", "dose", "size", "total_n", "stop_code",
                 "trans", "_mtd"):
        a, b = getattr(parent, name), getattr(child, name)
        assert np.array_equal(a[:parent.n_states], b[:child.n_states])
    ch = simulate_cohort_chunk(design, P, 5, 2000, 2600)   # new trials: the graph grows
    assert ch.graph is child and child.n_states > parent.n_states
    assert child.stats["index_rebuilds"] > 0
    for i in range(0, 600, 7):
        end = child.states[ch.sids[i]]
        ref = reference_end(design, 5, 2000 + i)
        assert (end.n, end.y, end.current) == (ref.n, ref.y, ref.current)
    graph_mod._GRAPHS.clear()


def test_install_graph_keeps_the_larger_graph():
    design = build("boin")
    graph_mod._GRAPHS.clear()
    big = StateGraph(design)
    exact_tally(design, P, graph=big)
    small = StateGraph(design)
    assert install_graph(big) is big
    assert install_graph(small) is big and graph_for(design) is big
    graph_mod._GRAPHS.clear()
    assert install_graph(small) is small
    graph_mod._GRAPHS.clear()


def test_release_index_changes_nothing_but_speed():
    design = build("crm")
    a, b = StateGraph(design), StateGraph(design)
    rng_trials = np.arange(0, 3000, dtype=np.uint64)
    from escalation_sim.engines.cohort import _walk_block
    key = stream_key(9, "dlt")
    sa = _walk_block(a, np.array(P), key, rng_trials[:1500])
    sb = _walk_block(b, np.array(P), key, rng_trials[:1500])
    assert b.release_index(10**6) > 0           # drop every level of b
    ta = _walk_block(a, np.array(P), key, rng_trials[1500:])
    tb = _walk_block(b, np.array(P), key, rng_trials[1500:])
    assert b.stats["index_rebuilds"] > 0
    assert a.n_states == b.n_states
    for s, t in ((sa, sb), (ta, tb)):
        assert [a.states[i] for i in s.tolist()] == [b.states[i] for i in t.tolist()]


def test_chunk_reports_the_build():
    design = build("boin", max_n=27)
    graph_mod._GRAPHS.clear()
    first = simulate_cohort_chunk(design, P, 1, 0, 3000)
    again = simulate_cohort_chunk(design, P, 1, 0, 3000)
    assert first.new_states == first.graph.n_states - 1       # all but the empty trial
    assert first.build_seconds > 0 and first.seconds >= first.build_seconds
    assert again.new_states == 0 and again.build_seconds == 0
    assert np.array_equal(first.sids, again.sids)
    assert first.graph.stats["design_seconds"] <= first.graph.stats["build_seconds"]
    graph_mod._GRAPHS.clear()


def test_growth_is_logged_not_printed(caplog, capsys):
    graph_mod._GRAPHS.clear()
    with caplog.at_level(logging.DEBUG, logger="escalation_sim.engines.cohort"):
        simulate_cohort_chunk(build("boin", max_n=21), P, 1, 0, 500)
    assert any("new states" in r.getMessage() for r in caplog.records)
    assert capsys.readouterr() == ("", "")
    graph_mod._GRAPHS.clear()


@dataclass(frozen=True)
class _Fails(Design):
    """Escalates by one dose per cohort of 3; decide raises once 2 DLTs are seen."""

    n_doses: int = 3
    cohort_size: int = 3

    def decide(self, state):
        if state.total_y >= 2:
            raise ValueError("boom")
        if state.total_n >= 9:
            return Decision.halt(StopReason.MAX_N)
        return Decision.treat(min(state.total_n // 3, 2), 3)

    def select_mtd(self, state):
        return None


def test_a_failing_design_call_leaves_the_graph_consistent():
    g = StateGraph(_Fails())
    ok = g.step(np.array([0, 0]), np.array([0, 1]))   # 0 or 1 DLT: fine
    n = g.n_states
    with pytest.raises(ValueError, match="boom"):
        g.step(np.array([ok[0], ok[1], ok[1]]), np.array([0, 0, 1]))  # last: 2 DLTs
    assert g.n_states == n
    assert (g.trans[ok[0]] == -1).all() and (g.trans[ok[1]] == -1).all()
    for lvl in g._levels.values():
        assert all(sid < n for sid in lvl.values())
    nxt = g.step(np.array([ok[0]]), np.array([1]))   # still usable
    assert g.states[int(nxt[0])].total_y == 1


@dataclass(frozen=True)
class _Huge(Design):
    """Cohorts of 1000 forever (more patients than int16 counts can hold)."""

    n_doses: int = 1
    cohort_size: int = 1000

    def decide(self, state):
        return Decision.treat(0, 1000)

    def select_mtd(self, state):
        return 0


def test_too_many_patients_is_a_clear_error():
    g = StateGraph(_Huge())
    sid = 0
    with pytest.raises(RuntimeError, match=f"more than {MAX_PATIENTS} patients"):
        for _ in range(40):
            sid = g.successor(sid, 0)


def test_gc_paused_restores_the_collector():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_exact_probabilities_sum_to_one_at_larger_n():
    """BOIN and CRM at N = 36 on 5 doses: many levels dropped and rebuilt along the way."""
    for t, opts in (("boin", {}), ("crm", {"skeleton": [0.05, 0.10, 0.17, 0.25, 0.35]})):
        entry = get_entry(t)
        d = entry.build(entry.spec_model.model_validate({"type": t, **opts}),
                        DesignContext(5, 0.25, 3, 36, 0))
        tally = exact_tally(d, [0.05, 0.10, 0.20, 0.30, 0.45], graph=StateGraph(d))
        assert abs(math.fsum(tally.counts.values()) - 1) < 1e-12


def test_endings_are_the_terminal_keys():
    from escalation_sim.results.oc import terminal_key
    design = build("crm")
    ch = simulate_cohort_chunk(design, P, 3, 0, 400)
    mtd, stop, n, y = ch.graph.endings(ch.sids)
    for i, sid in enumerate(ch.sids.tolist()):
        key = terminal_key(ch.graph, sid)
        assert (mtd[i], stop[i], tuple(n[i]), tuple(y[i])) == key


def _worker_chunk(graph, design, start, stop):
    """What a worker does with a graph it receives: install it, then simulate."""
    install_graph(graph)
    ch = simulate_cohort_chunk(design, P, 8, start, stop)
    return ch.new_states, np.column_stack(ch.graph.endings(ch.sids))


def test_worker_processes_reuse_a_shipped_graph():
    """A graph built in the parent and sent to loky workers is used as is: the workers'
    chunks add no state and end every trial where the parent's run ends it."""
    import joblib
    design = build("boin", max_n=30)
    graph_mod._GRAPHS.clear()
    whole = simulate_cohort_chunk(design, P, 8, 0, 4000)       # builds the graph
    g = graph_for(design)
    out = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(_worker_chunk)(g, design, a, a + 1000) for a in range(0, 4000, 1000))
    assert [new for new, _ in out] == [0, 0, 0, 0]
    assert np.array_equal(np.concatenate([e for _, e in out]),
                          np.column_stack(whole.graph.endings(whole.sids)))
    graph_mod._GRAPHS.clear()
