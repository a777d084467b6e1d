"""The compiled calendar kernel (engines/calendar/kernel.py) against the simpy engine.

The reference is the simpy engine (``engine="simpy"``): every per-trial output of
``simulate_des_trials`` (selected dose, stop reason, n and DLTs per dose, duration, decision
days, every count) must be identical, trial by trial and bit for bit, when the classic
designs' trials run in the numba kernel; the Python fast path (kernel off) is checked to
agree too.  Each test also checks that the kernel did run the trials (not only its Python
fallback).  Skipped as a whole when numba (the optional extra ``fast``) is not installed.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

pytest.importorskip("numba", reason="numba not installed: the compiled calendar kernel "
                                    "(pip install 'escalation-sim[fast]') is not tested")

from escalation_sim import load_scenario  # noqa: E402
from escalation_sim.engines.calendar import (is_time_to_event, kernel,  # noqa: E402
                                             simulate_des_trials)
from escalation_sim.inputs.conduct import Conduct  # noqa: E402

from test_fastcal import SIMPY_ONLY, _same_value, build, conducts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
#: designs deciding on complete cohorts (rolling 6 decides with pending patients: Python)
CLASSIC = ["3+3", "boin", "crm", "mtpi2", "keyboard", "i3+3", "rolling6"]


@pytest.fixture(autouse=True, scope="module")
def _kernel_compiled_here():
    """The kernel compiled (or loaded) in this process before the tests count its trials:
    while another test worker holds the compile lock, a call runs on the Python fast path
    instead (kernel.take_compile_turn), so ask until this process has had its turn."""
    import time
    if not kernel.enabled():
        return
    sc = load_scenario(ROOT / "scenarios" / "relma_cel_sle.yaml")
    deadline = time.monotonic() + 600
    while not kernel._compiled() and time.monotonic() < deadline:
        simulate_des_trials(sc.designs[1].design, sc.p_true.tolist(), sc.model.conduct, 1,
                            range(1), engine="fast")
        if not kernel._compiled():
            time.sleep(0.2)


@pytest.fixture(autouse=True)
def _kernel_not_given_up():
    """Each test starts with no design given up by the kernel: a test whose trials outgrow
    their blocks (tiny blocks, slow random conducts) makes the kernel give its design up for
    the process, and a later test on an equal design in the same worker (pytest-xdist
    orders them differently) would then see only the Python fast path."""
    from escalation_sim.engines.calendar.fast import _memos
    for memo in list(_memos.values()):
        for key in ("kernel_table", "kernel_tite_table"):
            table = memo.get(key)
            if table is not None:
                table.declined = False
    yield


class _Counts:
    """How many trials a kernel module ran and how many it left to the Python fast path
    (``status(args)``: the status column of ``run_block``'s rows that ran, from its args)."""

    def __init__(self, monkeypatch, module=kernel, status=lambda args: args[-3][:, 0]):
        self.kernel = self.python = 0
        run, py = module.run_block, module._Block.python_trial

        def run_block(*args):
            out = run(*args)
            self.kernel += int((status(args) == kernel.ST_OK).sum())
            return out

        def python_trial(blk, setup, r):
            self.python += 1
            return py(blk, setup, r)
        monkeypatch.setattr(module, "run_block", run_block)
        monkeypatch.setattr(module._Block, "python_trial", python_trial)


def assert_kernel_trials(monkeypatch, design, p, conduct, seed, trials, counts=_Counts):
    """simpy, the Python fast path and the kernel: every output key identical; returns the
    trial counts of the kernel call (``counts(monkeypatch)`` installs the counting)."""
    ref = simulate_des_trials(design, p, conduct, seed, trials, engine="simpy")
    monkeypatch.setenv(kernel.KERNEL_ENV, "0")
    lean = simulate_des_trials(design, p, conduct, seed, trials, engine="fast")
    monkeypatch.delenv(kernel.KERNEL_ENV)
    counts = counts(monkeypatch)
    got = simulate_des_trials(design, p, conduct, seed, trials, engine="fast")
    monkeypatch.undo()
    assert sorted(ref) == sorted(got) == sorted(lean)
    for key in ref:
        assert _same_value(ref[key], got[key]), key
        assert _same_value(ref[key], lean[key]), key
    assert counts.kernel + counts.python in (0, len(trials))
    return counts


def _kernel_designs(sc):
    tr = sc.model.trial
    # efficacy designs (BOIN12, Keyboard phase I/II) are time-free only: the calendar
    # engine refuses them (tests/test_efficacy_designs.py)
    items = [it.design for it in sc.designs
             if it.design.outcome.name not in ("SCORE", "JOINT")
             and not is_time_to_event(it.design)]
    for t in ("3+3", "boin"):
        items.append(build(t, sc.n_doses, sc.target, tr.cohort_size, tr.max_n,
                           tr.start_dose - 1))
    return items


@pytest.mark.parametrize("path", [p for p in SCENARIOS if p.stem not in SIMPY_ONLY],
                         ids=lambda p: p.stem)
def test_kernel_equals_simpy_on_every_bundled_scenario(path, monkeypatch):
    """Every bundled scenario's classic designs (plus 3+3 and BOIN on its trial settings),
    under its own conduct block (or the default one), on the scenario's DLT rates."""
    sc = load_scenario(path)
    conduct = sc.model.conduct if sc.has_logistics else Conduct()
    for design in _kernel_designs(sc):
        counts = assert_kernel_trials(monkeypatch, design, sc.p_true.tolist(), conduct, 7,
                                      range(150))
        assert counts.kernel > 0, design           # (the kernel ran, not only Python)


def test_kernel_equals_simpy_on_the_seed_scenario_many_trials(monkeypatch):
    """The seed scenario (its full logistics), 3+3 / BOIN / CRM, 1,500 trials each."""
    sc = load_scenario(ROOT / "scenarios" / "relma_cel_sle.yaml")
    for it in sc.designs:
        if is_time_to_event(it.design):
            continue
        counts = assert_kernel_trials(monkeypatch, it.design, sc.p_true.tolist(),
                                      sc.model.conduct, 2026, range(1500))
        assert counts.kernel >= 1400


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conduct=conducts(), type_name=st.sampled_from(CLASSIC),
       n_doses=st.integers(2, 5), cohort_size=st.sampled_from([1, 2, 3]),
       max_n=st.sampled_from([6, 12, 18, 30]), seed=st.integers(0, 2**31),
       p=st.lists(st.floats(0.0, 0.8), min_size=5, max_size=5))
def test_kernel_equals_simpy_on_random_scenarios(conduct, type_name, n_doses, cohort_size,
                                                 max_n, seed, p):
    """Random conduct blocks (phases, failures, gates, spacing, caps, review, waiting,
    drop-outs; unlimited accrual stays on the Python fast path) and random classic designs."""
    design = build(type_name, n_doses=n_doses, cohort_size=cohort_size, max_n=max_n)
    with pytest.MonkeyPatch.context() as mp:
        counts = assert_kernel_trials(mp, design, sorted(p)[:n_doses], conduct, seed,
                                      range(12))
    if conduct.accrual_per_month is not None and not is_time_to_event(design):
        assert counts.kernel + counts.python == 12


def test_trials_beyond_the_blocks_run_in_python(monkeypatch):
    """Tiny pre-drawn blocks: most trials need more numbers than drawn and go to the Python
    fast path (which extends its own); the results are still simpy's."""
    import escalation_sim.engines.calendar as cal
    monkeypatch.setattr(cal, "block_sizes", lambda conduct, max_n: (9, 5, 4))
    sc = load_scenario(ROOT / "scenarios" / "relma_cel_sle.yaml")
    counts = assert_kernel_trials(monkeypatch, sc.designs[1].design, sc.p_true.tolist(),
                                  sc.model.conduct, 3, range(60))
    assert counts.python > 30


def test_states_beyond_the_table_run_in_python(monkeypatch):
    """A decision table capped at 60 states (3+3 has 493 here): trials reaching a state
    beyond it go to the Python fast path; the results are still simpy's."""
    from escalation_sim.engines.calendar.fast import design_memo
    design = build("3+3", n_doses=5, max_n=27)
    memo = design_memo(_setup(design))           # (shared by equal designs in the process)
    memo.pop("kernel_table", None)
    monkeypatch.setattr(kernel, "MAX_NODES", 60)
    try:
        with pytest.MonkeyPatch.context() as mp:
            counts = assert_kernel_trials(mp, design, [0.2, 0.3, 0.5, 0.6, 0.7], Conduct(),
                                          11, range(60))
        assert counts.python > 0 and counts.kernel > 0
        assert kernel.table_for(_setup(design)).full
    finally:
        memo.pop("kernel_table", None)


def test_table_grown_on_demand(monkeypatch):
    """A table started from the empty state alone (PREBUILD = 1): each trial reaching a state
    not enumerated yet stops, the state's successors are enumerated and the trial runs again
    in the kernel; the results are still simpy's, none runs in Python."""
    from escalation_sim.engines.calendar.fast import design_memo
    design = build("crm", n_doses=5, cohort_size=2, max_n=20)
    memo = design_memo(_setup(design))
    memo.pop("kernel_table", None)
    monkeypatch.setattr(kernel, "PREBUILD", 1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            counts = assert_kernel_trials(mp, design, [0.05, 0.1, 0.2, 0.3, 0.5],
                                          Conduct(), 5, range(80))
        assert counts.python == 0 and counts.kernel == 80
        table = kernel.table_for(_setup(design))
        assert 1 < len(table) < len(kernel.Table(_setup(design), prebuild=10**9))
    finally:
        memo.pop("kernel_table", None)


def test_a_design_with_ever_new_states_goes_back_to_python(monkeypatch, caplog):
    """A table still growing by more than DECLINE_GROWTH states per trial once past
    DECLINE_STATES (here 100): the kernel gives the design up, with a note, and its trials
    (this call's rest and later calls) run on the Python fast path; same trials as simpy."""
    from escalation_sim.engines.calendar.fast import design_memo
    design = build("boin", n_doses=5, cohort_size=1, max_n=18)
    memo = design_memo(_setup(design))
    memo.pop("kernel_table", None)
    monkeypatch.setattr(kernel, "DECLINE_STATES", 100)
    monkeypatch.setattr(kernel, "PREBUILD", 1)
    p = [0.05, 0.1, 0.2, 0.3, 0.5]
    try:
        with caplog.at_level(logging.INFO, logger="escalation_sim.engines.calendar"):
            with pytest.MonkeyPatch.context() as mp:
                counts = assert_kernel_trials(mp, design, p, Conduct(), 5, range(600))
        assert "this design's trials run on the Python fast path" in caplog.text
        assert counts.python > 300
        table = kernel.table_for(_setup(design))
        assert table.declined
        assert "gave up" in kernel.kernel_unsupported(_setup(design))
        with pytest.MonkeyPatch.context() as mp:
            counts = assert_kernel_trials(mp, design, p, Conduct(), 6, range(20))
        assert counts.kernel == counts.python == 0
    finally:
        memo.pop("kernel_table", None)


def _setup(design):
    from escalation_sim.engines.calendar.model import Setup
    return Setup(design, [0.1] * design.n_doses, Conduct(), False, 100)


def test_table_has_the_designs_decisions():
    """The enumerated table: each non-stopping state's successors are its cohort's outcomes
    (one per DLT count), with the design's own decision (design.decide) at each."""
    design = build("3+3")
    setup = _setup(design)
    t = kernel.Table(setup)
    assert not t.full
    for k, (st_, dec) in enumerate(zip(t.states, t.decs, strict=True)):
        assert dec == design.decide(st_)
        if dec.stop:
            assert (t.T[k, kernel.T_SUCC:] == -1).all()
            continue
        for y in range(dec.cohort_size + 1):
            nxt = t.T[k, kernel.T_SUCC + y]
            assert t.states[nxt] == st_.add_cohort(dec.dose, dec.cohort_size, y)


def test_kernel_off_by_environment_and_without_numba(monkeypatch, caplog):
    sc = load_scenario(ROOT / "scenarios" / "relma_cel_sle.yaml")
    args = (sc.designs[0].design, sc.p_true.tolist(), sc.model.conduct, 1, range(5))
    monkeypatch.setenv(kernel.KERNEL_ENV, "0")
    counts = _Counts(monkeypatch)
    simulate_des_trials(*args, engine="fast")
    assert counts.kernel == counts.python == 0
    monkeypatch.delenv(kernel.KERNEL_ENV)
    monkeypatch.setattr(kernel, "HAVE_NUMBA", False)
    monkeypatch.setattr(kernel, "_noted", False)
    with caplog.at_level(logging.INFO, logger="escalation_sim.engines.calendar"):
        simulate_des_trials(*args, engine="fast")
    assert counts.kernel == counts.python == 0
    assert "numba is not installed" in caplog.text


@pytest.mark.skipif(not hasattr(__import__("os"), "getuid"), reason="POSIX file locks")
def test_one_process_compiles_while_the_others_run_python(monkeypatch, caplog, tmp_path):
    """While another process holds the compile lock (here another open file of this
    process, which flock treats the same way), a process whose kernel is not compiled yet
    runs the call on the Python fast path, the same trials, with a note; once the lock is
    free it takes it, runs the kernel, and gives the lock back when the call ends."""
    import fcntl
    import os
    sc = load_scenario(ROOT / "scenarios" / "relma_cel_sle.yaml")
    args = (sc.designs[1].design, sc.p_true.tolist(), sc.model.conduct, 3, range(40))
    monkeypatch.setenv(kernel.KERNEL_ENV, "0")
    want = simulate_des_trials(*args, engine="fast")          # the Python fast path
    monkeypatch.delenv(kernel.KERNEL_ENV)
    lock = tmp_path / "kernel.lock"
    monkeypatch.setattr(kernel, "_compiled", lambda: False)
    monkeypatch.setattr(kernel, "_lock_path", lambda: str(lock))
    monkeypatch.setattr(kernel, "_waiting_noted", False)
    counts = _Counts(monkeypatch)
    other = os.open(lock, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        with caplog.at_level(logging.INFO, logger="escalation_sim.engines.calendar"):
            waited = simulate_des_trials(*args, engine="fast")
        assert counts.kernel == 0
        assert "another process is compiling the kernel" in caplog.text
    finally:
        os.close(other)
    ran = simulate_des_trials(*args, engine="fast")
    assert counts.kernel == 40 and kernel._turn_fd is None
    for got in (waited, ran):
        assert sorted(got) == sorted(want)
        for key in want:
            assert _same_value(want[key], got[key]), key
    free = os.open(lock, os.O_RDWR)                 # given back: free to take at once
    try:
        fcntl.flock(free, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(free)


def test_kernel_output_dtypes_match_the_python_path():
    """Same column dtypes and shapes (the golden files compare them too)."""
    sc = load_scenario(ROOT / "scenarios" / "relma_cel_sle.yaml")
    a = simulate_des_trials(sc.designs[1].design, sc.p_true.tolist(), sc.model.conduct, 5,
                            np.arange(20), engine="simpy")
    b = simulate_des_trials(sc.designs[1].design, sc.p_true.tolist(), sc.model.conduct, 5,
                            np.arange(20), engine="fast")
    for key, v in a.items():
        if isinstance(v, np.ndarray):
            assert (v.dtype, v.shape) == (b[key].dtype, b[key].shape), key
