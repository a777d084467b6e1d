"""Thread safety of the shared state graphs (reliability issue, item 1).

The state graphs are cached per design for the whole process and grow lazily while trials walk
them.  Under the ``threading`` backend several chunks walk one graph at once; before the graph
locked its growth, a cold graph gave different numbers on every run (or a dose index of -1).
The expected values here are the ``sequential`` backend's: the guarantee under test is that the
backend changes nothing, bit for bit.  ``sys.setswitchinterval`` makes threads switch every few
bytecodes so that an unlocked race shows up on every run, not once in a while.
"""
import sys

import pytest

from escalation_sim import simulate
from escalation_sim.engines import graph as graph_mod
from escalation_sim.run.study import run_study

from test_study import study_file


@pytest.fixture
def busy_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _cold():
    graph_mod._GRAPHS.clear()


def _designs(res):
    return res.to_dict()["designs"]


@pytest.mark.parametrize("scenario", ["standard_mtd3.yaml", "standard_mtd1.yaml"])
def test_threading_equals_sequential_on_cold_graphs(scenario, busy_switching):
    path = f"scenarios/{scenario}"
    _cold()
    ref = _designs(simulate(path, n_trials=20000, seed=7, backend="sequential"))
    for _ in range(3):
        _cold()
        got = simulate(path, n_trials=20000, seed=7, n_jobs=4, chunk_size=500,
                       backend="threading")
        assert _designs(got) == ref


def test_threading_equals_sequential_in_calendar_time(busy_switching):
    path = "scenarios/relma_cel_sle.yaml"
    _cold()
    ref = simulate(path, n_trials=300, seed=3, backend="sequential")
    _cold()
    got = simulate(path, n_trials=300, seed=3, n_jobs=3, chunk_size=25, backend="threading")
    assert _designs(got) == _designs(ref)
    assert got.to_dict()["paired"] == ref.to_dict()["paired"]


def test_multiprocessing_backend_runs_and_equals_sequential():
    path = "scenarios/standard_mtd2.yaml"
    ref = simulate(path, n_trials=6000, seed=4, backend="sequential")
    got = simulate(path, n_trials=6000, seed=4, n_jobs=2, chunk_size=1000,
                   backend="multiprocessing")
    assert _designs(got) == _designs(ref)


def test_study_threading_equals_sequential(tmp_path, busy_switching):
    f = study_file(tmp_path)
    _cold()
    ref = run_study(f, tmp_path / "seq", n_jobs=1, backend="sequential", quiet=True)
    _cold()
    got = run_study(f, tmp_path / "thr", n_jobs=4, backend="threading", quiet=True)
    cols = ["cell", "design", "pcs", "p_no_mtd", "mean_n_total"]
    a = ref.oc.sort_values(["cell", "design"])[cols].reset_index(drop=True)
    b = got.oc.sort_values(["cell", "design"])[cols].reset_index(drop=True)
    assert a.equals(b)
