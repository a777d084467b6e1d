"""The compiled TITE-BOIN kernel (engines/calendar/kernel_tite.py) against the simpy engine.

The reference is the simpy engine (``engine="simpy"``): every per-trial output of
``simulate_des_trials`` must be identical, trial by trial and bit for bit, when TITE-BOIN's
trials run in the numba kernel; the Python fast path (kernel off) is checked to agree too.
Each test says how many trials the kernel ran and how many it left to the Python fast path.
Skipped as a whole when numba (the optional extra ``fast``) is not installed.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

pytest.importorskip("numba", reason="numba not installed: the compiled calendar kernel "
                                    "(pip install 'escalation-sim[fast]') is not tested")

from escalation_sim import load_scenario  # noqa: E402
from escalation_sim.designs.base import DesignContext  # noqa: E402
from escalation_sim.designs.registry import get_entry  # noqa: E402
from escalation_sim.designs.tite import TiteState  # noqa: E402
from escalation_sim.engines.calendar import kernel, kernel_tite, simulate_des_trials  # noqa: E402
from escalation_sim.engines.calendar.fast import design_memo  # noqa: E402
from escalation_sim.engines.calendar.model import Setup  # noqa: E402
from escalation_sim.inputs.conduct import Conduct  # noqa: E402

from test_fastcal import SIMPY_ONLY, conducts  # noqa: E402
# the counting, the three-way comparison and the per-test reset of given-up designs
from test_kernel import _Counts as _KernelCounts, _kernel_not_given_up, assert_kernel_trials  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
SEED = ROOT / "scenarios" / "relma_cel_sle.yaml"


@pytest.fixture(scope="module", autouse=True)
def _kernels_compiled_in_this_worker():
    """Compile (or load from numba's cache) the kernels in this process first: while another
    process (another pytest-xdist worker) holds the compile lock, a call runs on the Python
    fast path (kernel.take_compile_turn), and a test expecting the kernel would see none."""
    import time
    from escalation_sim.engines.calendar import kernel_tite as kt
    from escalation_sim.inputs.conduct import Conduct as _C
    from test_fastcal import build as _build
    deadline = time.monotonic() + 600
    for design, done in ((_build("3+3", n_doses=2, max_n=6), kernel._compiled),
                         (_build("tite-boin", n_doses=2, max_n=6), kt._compiled)):
        while not done() and time.monotonic() < deadline:
            simulate_des_trials(design, [0.1, 0.3], _C(), 1, range(2), engine="fast")
            if not done():
                time.sleep(0.2)
    yield


def _Counts(monkeypatch):
    """How many trials the TITE kernel ran and how many it left to the Python fast path."""
    return _KernelCounts(monkeypatch, kernel_tite, lambda args: args[-4][args[-5], 0])


def assert_tite_trials(monkeypatch, design, p, conduct, seed, trials):
    """simpy, the Python fast path and the TITE kernel: every output key identical."""
    return assert_kernel_trials(monkeypatch, design, p, conduct, seed, trials, _Counts)


def tite_boin(n_doses=4, target=0.25, cohort_size=3, max_n=24, **kw):
    ctx = DesignContext(n_doses=n_doses, target=target, cohort_size=cohort_size,
                        max_n=max_n, start_dose=0)
    entry = get_entry("tite-boin")
    return entry.build(entry.spec_model(type="tite-boin", **kw), ctx)


def _setup(design, conduct=None):
    return Setup(design, [0.1] * design.n_doses, conduct or Conduct(), False, 100)


@pytest.mark.parametrize("path", [p for p in SCENARIOS if p.stem not in SIMPY_ONLY],
                         ids=lambda p: p.stem)
def test_tite_kernel_equals_simpy_on_every_bundled_scenario(path, monkeypatch):
    """Every bundled scenario's TITE-BOIN and TITE-CRM designs (TITE-CRM: Python fast path,
    the kernel must leave it alone), under its conduct block, on its DLT rates."""
    sc = load_scenario(path)
    conduct = sc.model.conduct if sc.has_logistics else Conduct()
    items = [it.design for it in sc.designs
             if type(it.design.inner).__name__ in ("TITEBOIN", "TITECRM")]
    for design in items:
        counts = assert_tite_trials(monkeypatch, design, sc.p_true.tolist(), conduct, 7,
                                    range(100))
        if type(design.inner).__name__ == "TITEBOIN" and conduct.accrual_per_month:
            assert counts.kernel > 0, design
        else:
            assert counts.kernel == counts.python == 0


@pytest.mark.parametrize("estimator", ["imputation", "quasi"])
def test_tite_kernel_equals_simpy_on_the_seed_scenario_many_trials(estimator, monkeypatch):
    """The seed scenario (its full logistics), TITE-BOIN with each estimator: 1,000 trials
    with the scenario's (imputation), 400 with the quasi estimator."""
    sc = load_scenario(SEED)
    tr = sc.model.trial
    design = tite_boin(sc.n_doses, sc.target, tr.cohort_size, tr.max_n, estimator=estimator)
    counts = assert_tite_trials(monkeypatch, design, sc.p_true.tolist(), sc.model.conduct,
                                2026, range(1000 if estimator == "imputation" else 400))
    assert counts.kernel >= (950 if estimator == "imputation" else 380)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conduct=conducts(), n_doses=st.integers(2, 5), cohort_size=st.sampled_from([1, 2, 3]),
       max_n=st.sampled_from([6, 12, 18, 30]), seed=st.integers(0, 2**31),
       frac=st.sampled_from([0.0, 0.34, 0.5, 1.0]),
       estimator=st.sampled_from(["imputation", "quasi"]),
       rules=st.sampled_from([None, [{"no_skip": True}], [{"stop_n_at_dose": 6}],
                              [{"demand_n_at_dose": 3}]]),
       p=st.lists(st.floats(0.0, 0.8), min_size=5, max_size=5))
def test_tite_kernel_equals_simpy_on_random_scenarios(conduct, n_doses, cohort_size, max_n,
                                                      seed, frac, estimator, rules, p):
    """Random conduct blocks (phases, failures, gates, spacing, caps, waiting, drop-outs;
    unlimited accrual stays on the Python fast path) and random TITE-BOIN designs (pending
    fraction, estimator, rules wrapping the design)."""
    kw = {} if rules is None else {"rules": rules}
    if rules == [{"demand_n_at_dose": 3}] and max_n < 6:
        kw = {}
    design = tite_boin(n_doses, 0.25, cohort_size, max_n, max_pending_fraction=frac,
                       estimator=estimator, **kw)
    with pytest.MonkeyPatch.context() as mp:
        counts = assert_tite_trials(mp, design, sorted(p)[:n_doses], conduct, seed,
                                    range(12))
    if conduct.accrual_per_month is not None:
        assert counts.kernel + counts.python == 12


def test_table_decisions_are_the_designs():
    """Each state the kernel's table holds: for pending patients at the current dose whose
    verdict (TITEBOIN.step) is a given class, the table's decision is design.decide's on
    such a state (pending fractions chosen to give each verdict)."""
    from escalation_sim.designs.interval import Step
    sc = load_scenario(SEED)
    design = sc.designs[[type(it.design.inner).__name__ for it in sc.designs]
                        .index("TITEBOIN")].design
    setup = _setup(design, sc.model.conduct)
    simulate_des_trials(design, sc.p_true.tolist(), sc.model.conduct, 1, range(20),
                        engine="fast")
    table = kernel_tite.table_for(setup)
    assert len(table) > 20 and table.reduced
    inner = design.inner
    seen = set()
    for k, st_ in enumerate(table.states):
        cur = st_.current
        if cur is None or st_.n[cur] - st_.y[cur] < 1:
            continue
        m_max = st_.n[cur] - st_.y[cur]
        for m in range(1, m_max + 1):
            for f in (0.0, 0.5, 1.0):
                pend = tuple((cur, f) for _ in range(m))
                full = TiteState(st_.n, st_.y, cur, st_.last_n, st_.last_y, pend)
                verdict = inner.step(full, cur)
                cls = (kernel_tite.C_SUSP if not isinstance(verdict, Step) else
                       {1: kernel_tite.C_ESC, 0: kernel_tite.C_STAY,
                        -1: kernel_tite.C_DE}[verdict.move])
                seen.add(cls)
                b = kernel_tite.R_DEC + 4 * cls
                assert table.add(st_.n + st_.y + (cur,), cls)      # (computed if not yet)
                dec = design.decide(full)
                assert table.T[k, b] == int(bool(dec.stop))
                if not dec.stop:
                    assert (table.T[k, b + 1], table.T[k, b + 2]) == (dec.dose,
                                                                      dec.cohort_size)
    assert seen == {kernel_tite.C_ESC, kernel_tite.C_STAY, kernel_tite.C_DE,
                    kernel_tite.C_SUSP}


def test_trials_beyond_the_blocks_run_in_python(monkeypatch):
    """Tiny pre-drawn blocks: most trials need more numbers than drawn and go to the Python
    fast path (which extends its own); the results are still simpy's."""
    import escalation_sim.engines.calendar as cal
    monkeypatch.setattr(cal, "block_sizes", lambda conduct, max_n: (9, 5, 4))
    sc = load_scenario(SEED)
    design = tite_boin(sc.n_doses, sc.target, 3, 18, max_pending_fraction=0.4)
    counts = assert_tite_trials(monkeypatch, design, sc.p_true.tolist(), sc.model.conduct,
                                3, range(60))
    assert counts.python > 30


def test_states_beyond_the_table_run_in_python(monkeypatch):
    """A table capped at 100 states (172 are reached here): trials reaching a state beyond it go to the Python fast
    path; the results are still simpy's."""
    design = tite_boin(5, 0.25, 3, 15, max_pending_fraction=0.6)
    memo = design_memo(_setup(design))
    memo.pop("kernel_tite_table", None)
    monkeypatch.setattr(kernel_tite, "MAX_ROWS", 100)
    try:
        with pytest.MonkeyPatch.context() as mp:
            counts = assert_tite_trials(mp, design, [0.1, 0.2, 0.3, 0.5, 0.6],
                                        Conduct(accrual_per_month=4), 11, range(40))
        assert counts.python > 0 and counts.kernel > 0
        assert kernel_tite.table_for(_setup(design)).full
    finally:
        memo.pop("kernel_tite_table", None)


def test_a_design_with_ever_new_states_goes_back_to_python(monkeypatch, caplog):
    """A table still growing by more than DECLINE_GROWTH states per trial once past
    DECLINE_STATES (here 20): the kernel gives the design up, with a note, and its trials
    run on the Python fast path; same trials as simpy."""
    design = tite_boin(5, 0.25, 1, 18, max_pending_fraction=0.7)
    memo = design_memo(_setup(design))
    memo.pop("kernel_tite_table", None)
    monkeypatch.setattr(kernel, "DECLINE_STATES", 20)
    monkeypatch.setattr(kernel, "DECLINE_GROWTH", 0.5)
    p = [0.05, 0.1, 0.2, 0.3, 0.5]
    c = Conduct(accrual_per_month=3)
    try:
        with caplog.at_level(logging.INFO, logger="escalation_sim.engines.calendar"):
            with pytest.MonkeyPatch.context() as mp:
                assert_tite_trials(mp, design, p, c, 5, range(40))
        assert "this design's trials run on the Python fast path" in caplog.text
        assert kernel_tite.table_for(_setup(design)).declined
        assert "gave up" in kernel_tite.kernel_unsupported(_setup(design, c))
        with pytest.MonkeyPatch.context() as mp:
            counts = assert_tite_trials(mp, design, p, c, 6, range(10))
        assert counts.kernel == counts.python == 0
    finally:
        memo.pop("kernel_tite_table", None)


def test_fallback_routes(monkeypatch):
    """What the kernel leaves to the Python fast path: TITE-CRM, unlimited accrual, the
    patient log, a graded truth, the kernel turned off; the trials are simpy's."""
    sc = load_scenario(SEED)
    crm = next(it.design for it in sc.designs if type(it.design.inner).__name__ == "TITECRM")
    boin = tite_boin(sc.n_doses, sc.target, 3, 18)
    p = sc.p_true.tolist()
    counts = assert_tite_trials(monkeypatch, crm, p, sc.model.conduct, 4, range(20))
    assert counts.kernel == counts.python == 0
    unlimited = sc.model.conduct.model_copy(update={"accrual_per_month": None})
    counts = assert_tite_trials(monkeypatch, boin, p, unlimited, 4, range(20))
    assert counts.kernel == counts.python == 0
    assert "unlimited accrual" in kernel_tite.kernel_unsupported(_setup(boin, unlimited))
    counts = _Counts(monkeypatch)
    out = simulate_des_trials(boin, p, sc.model.conduct, 4, range(5), record_patients=True)
    assert out["patients"] is not None and counts.kernel == counts.python == 0
    monkeypatch.undo()
    monkeypatch.setenv(kernel.KERNEL_ENV, "0")
    counts = _Counts(monkeypatch)
    simulate_des_trials(boin, p, sc.model.conduct, 4, range(5), engine="fast")
    assert counts.kernel == counts.python == 0
    monkeypatch.undo()
    from escalation_sim.engines.calendar import calendar_truth
    graded = load_scenario(ROOT / "scenarios" / "cart_crs_icans.yaml")
    g = next(it.design for it in graded.designs
             if type(it.design.inner).__name__ == "TITEBOIN")
    counts = assert_tite_trials(monkeypatch, g, calendar_truth(graded), graded.model.conduct,
                                2, range(8))
    assert counts.kernel == counts.python == 0


def test_full_keys_when_the_design_keeps_the_latest_cohort(monkeypatch):
    """A design whose canonical key is the whole state (the always-safe default) gets a
    table keyed by the latest cohort's size and DLTs too; the trials are still simpy's."""
    from escalation_sim.designs.tite import TITEBOIN
    monkeypatch.setattr(TITEBOIN, "canonical", lambda self, state: state)
    design = tite_boin(4, 0.25, 3, 18)
    memo = design_memo(_setup(design))
    memo.pop("kernel_tite_table", None)
    sc = load_scenario(SEED)
    try:
        with pytest.MonkeyPatch.context() as mp:
            counts = assert_tite_trials(mp, design, sc.p_true.tolist(), sc.model.conduct, 8,
                                        range(60))
        assert counts.kernel > 50
        table = kernel_tite.table_for(_setup(design))
        assert not table.reduced and table.klen == 2 * 4 + 3
    finally:
        memo.pop("kernel_tite_table", None)
