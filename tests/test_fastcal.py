"""The calendar engine's fast path (engines/calendar/fast.py) against the simpy engine.

The reference is the simpy engine itself (``engine="simpy"``): every per-trial output of
``simulate_des_trials`` and every column of the patient log must be identical, trial by
trial and bit for bit, on every bundled scenario and on random conduct blocks (hypothesis).
The call order of :class:`HeapClock` is checked against simpy's own timeouts.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from escalation_sim import load_scenario
from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.registry import get_entry
from escalation_sim.engines.calendar import clock_for, simulate_des_trials, simulate_one
from escalation_sim.engines.calendar.clock import SimpyClock
from escalation_sim.engines.calendar.fast import ENV_VAR, HeapClock, unsupported
from escalation_sim.engines.calendar.policies import CohortPolicy, TimeToEventPolicy
from escalation_sim.inputs.conduct import Conduct, Phase, Screening
from escalation_sim.inputs.distributions import DurationSpec

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
#: bundled scenarios whose conduct uses options of issue 14 that time-to-event designs run on
#: simpy (backfill, short products): their classic designs are checked in
#: test_fast_path_equals_simpy_with_backfill_and_shortfall_on_cart_backfill
SIMPY_ONLY = ("cart_backfill",)
TYPES = ["3+3", "boin", "crm", "mtpi2", "keyboard", "i3+3", "tite-boin", "tite-crm", "rolling6"]


def build(type_name, n_doses=4, target=0.25, cohort_size=3, max_n=24, start_dose=0):
    ctx = DesignContext(n_doses=n_doses, target=target, cohort_size=cohort_size,
                        max_n=max_n, start_dose=start_dose)
    entry = get_entry(type_name)
    kw = {}
    if type_name in ("crm", "tite-crm"):
        kw["skeleton"] = list(np.linspace(0.08, 0.45, n_doses))
    return entry.build(entry.spec_model(type=type_name, **kw), ctx)


def _same_value(a, b) -> bool:
    if isinstance(a, np.ndarray):
        if a.dtype.kind == "f":
            return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
        return a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def assert_same_trials(design, p, conduct, seed, trials, record=True):
    """simpy and the fast path: every output key, every log column, identical."""
    ref = simulate_des_trials(design, p, conduct, seed, trials, record_patients=record,
                              engine="simpy")
    got = simulate_des_trials(design, p, conduct, seed, trials, record_patients=record,
                              engine="fast")
    # without the log, classic designs run on the lean ClassicTrial
    lean = simulate_des_trials(design, p, conduct, seed, trials, engine="fast")
    assert sorted(ref) == sorted(got) == sorted(lean)
    for key in ref:
        if key == "patients" and record:
            assert sorted(ref[key]) == sorted(got[key])
            for col in ref[key]:
                assert _same_value(ref[key][col], got[key][col]), (key, col)
            assert lean[key] is None
        else:
            assert _same_value(ref[key], got[key]), key
            assert _same_value(ref[key], lean[key]), key
    return ref


# ------------------------------------------------------------------------ the clock
def test_heap_clock_orders_calls_as_simpy_timeouts():
    """Same fixture as test_des's check of SimpyClock: ties, nested calls at delay 0, and a
    stop with calls pending at the same instant (before it: run; after it: not)."""
    import simpy
    delays = [3.0, 1.0, 3.0, 0.0, 2.5, 1.0, 0.0, 3.0]
    nested = {1: [0.0, 2.0], 4: [0.5], 6: [0.0]}

    def run(schedule_fn, now_fn, execute):
        fired = []

        def handler(tag):
            fired.append((now_fn(), tag))
            for m, dl in enumerate(nested.get(tag, []) if isinstance(tag, int) else []):
                schedule_fn(dl, f"{tag}.{m}")
        for i, dl in enumerate(delays):
            schedule_fn(dl, i)
        execute(handler)
        return fired

    env = simpy.Environment()
    ref_handler = {}

    def env_schedule(dl, tag):
        ev = env.timeout(dl, tag)
        ev.callbacks.append(lambda e: ref_handler["h"](e.value))
    ref = run(env_schedule, lambda: env.now, lambda h: (ref_handler.update(h=h), env.run()))
    for cls in (SimpyClock, HeapClock):
        clock = cls()
        box = {}
        got = run(lambda dl, tag: clock.after(dl, lambda call: box["h"](call.arg), tag),
                  lambda: clock.now,
                  lambda h: (box.update(h=h), clock.after(10.0, lambda call: clock.stop()),
                             clock.run()))
        assert got == ref, cls.__name__
    assert len(ref) == len(delays) + 4


@pytest.mark.parametrize("cls", [SimpyClock, HeapClock])
def test_stop_lets_calls_already_due_now_run(cls):
    """stop() at day 2: a call scheduled earlier for day 2 still runs; one scheduled after
    the stop for day 2, and later ones, do not; the clock then reads day 2."""
    clock = cls()
    fired = []
    clock.after(2.0, lambda c: (fired.append("a"), clock.stop(),
                                clock.after(0.0, lambda c: fired.append("late"))))
    clock.after(2.0, lambda c: fired.append("b"))
    clock.after(3.0, lambda c: fired.append("c"))
    clock.run()
    assert fired == ["a", "b"] and clock.now == 2.0


def test_heap_clock_raises_when_nothing_is_left_before_stop():
    clock = HeapClock()
    clock.after(1.0, lambda c: None)
    with pytest.raises(RuntimeError, match="No scheduled events left"):
        clock.run()


# ------------------------------------------------------------------ bundled scenarios
def test_issue14_conduct_options_the_fast_path_leaves_to_simpy():
    """Backfill, short products, costs, the review options and screen_while_paused run on
    the fast path for classic designs on a binary truth; with a time-to-event design, a
    graded truth, manufacture_before_slot, or the options not on the allow-list
    (min_followup_days, manufacturing_capacity) the call runs on simpy."""
    sc = load_scenario(ROOT / "scenarios" / "cart_backfill.yaml")
    conduct = sc.model.conduct
    for it in sc.designs:
        assert clock_for(it.design, conduct) is HeapClock
        assert unsupported(it.design, conduct, CohortPolicy) is None
    tite = build("tite-boin")
    sf = {"shortfall": conduct.shortfall.model_dump()}
    assert "conduct.shortfall" in unsupported(tite, _conduct(Conduct(), sf), TimeToEventPolicy)
    assert clock_for(tite, _conduct(Conduct(), sf)) is SimpyClock
    assert unsupported(build("boin"), conduct, CohortPolicy, graded_truth=True) == \
        "conduct.backfill, conduct.shortfall, conduct.costs"
    premade = _conduct(conduct, {"manufacture_before_slot": True})
    assert clock_for(build("boin"), premade) is SimpyClock
    for extra, field in (({"min_followup_days": 7.0}, "conduct.min_followup_days"),
                         ({"manufacturing_capacity": {"slots": 2}},
                          "conduct.manufacturing_capacity")):
        assert unsupported(build("boin"), _conduct(conduct, extra), CohortPolicy) == field
    paused = _conduct(Conduct(), {"screen_while_paused": False})
    assert unsupported(build("boin"), paused, CohortPolicy) is None
    assert unsupported(tite, paused, TimeToEventPolicy) == "conduct.screen_while_paused"


def _conduct(base: Conduct, extra: dict) -> Conduct:
    """``base`` with the fields of ``extra`` (validated as a scenario's block)."""
    return Conduct.model_validate({**base.model_dump(), **extra})


def test_fast_path_equals_simpy_with_backfill_and_shortfall_on_cart_backfill():
    """scenarios/cart_backfill.yaml (backfill, short products counted as assigned, costs):
    its designs and the other classic designs that take backfill (mTPI-2, Keyboard, i3+3,
    BLRM on the scenario's dose amounts), then the same block with the short products counted
    as received or excluded, under a review before escalations on a 14-day calendar and with
    cohorts of 3, 2, 1: every design on the lean ConductTrial, trials and patient logs as
    simpy's."""
    from escalation_sim.engines.calendar import fast
    from escalation_sim.engines.calendar.model import Setup
    sc = load_scenario(ROOT / "scenarios" / "cart_backfill.yaml")
    tr = sc.model.trial
    p = sc.p_true.tolist()
    designs = [it.design for it in sc.designs]
    designs += [build(t, sc.n_doses, sc.target, tr.cohort_size, tr.max_n)
                for t in ("mtpi2", "keyboard", "i3+3")]
    ctx = DesignContext(n_doses=sc.n_doses, target=sc.target, cohort_size=tr.cohort_size,
                        max_n=tr.max_n, start_dose=0)
    blrm = get_entry("blrm")
    designs.append(blrm.build(blrm.spec_model(type="blrm", dose_amounts=[
        d.amount for d in sc.model.doses]), ctx))
    base = sc.model.conduct
    sf = base.shortfall.model_dump()
    variants = [base]
    for policy in ("received", "exclude"):
        variants.append(_conduct(base, {
            "shortfall": dict(sf, policy=policy, prob=0.4),
            "review": {"days": 3.0, "before": "escalation"}, "review_every_days": 14.0,
            "cohort_sizes": [3, 2, 1]}))
    for design in designs:
        for conduct in variants:
            assert clock_for(design, conduct) is HeapClock
            setup = Setup(design, p, conduct, False, 1000, clock=HeapClock)
            assert fast.trial_class(setup)[0].__name__ == "ConductTrial"
            res = assert_same_trials(design, p, conduct, 7, range(40))
            assert res["n_backfill"].sum() > 0 and res["n_short"].sum() > 0


@pytest.mark.parametrize("path", [p for p in SCENARIOS if p.stem not in SIMPY_ONLY],
                         ids=lambda p: p.stem)
def test_fast_path_equals_simpy_on_every_bundled_scenario(path):
    """Every bundled scenario, each of its designs plus TITE-BOIN / TITE-CRM, under its own
    conduct block (or the default one when it has none), with the patient log."""
    sc = load_scenario(path)
    conduct = sc.model.conduct if sc.has_logistics else Conduct()
    tr = sc.model.trial
    # score designs (gBOIN, TITE-gBOIN) need the graded model: with it, in
    # test_fast_path_equals_simpy_on_every_bundled_graded_scenario; the binary designs run
    # here on the DLT rates
    # efficacy designs (BOIN12, Keyboard phase I/II) are time-free only: the calendar engine
    # refuses them (tests/test_efficacy_designs.py)
    items = [it.design for it in sc.designs
             if it.design.outcome.name not in ("SCORE", "JOINT")]
    for t in ("tite-boin", "tite-crm"):
        if not any(it.type == t for it in sc.designs):
            items.append(build(t, sc.n_doses, sc.target, tr.cohort_size, tr.max_n,
                               tr.start_dose - 1))
    for design in items:
        assert clock_for(design, conduct) is HeapClock
        assert_same_trials(design, sc.p_true.tolist(), conduct, 7, range(24))


# ------------------------------------------------------------------ random scenarios
@st.composite
def conducts(draw):
    def dur():
        kind = draw(st.sampled_from(["fixed", "gamma", "lognormal", "normal", "uniform", "zero"]))
        if kind == "zero":
            return 0.0
        mean = draw(st.sampled_from([1.0, 3.0, 7.0, 21.0]))
        if kind == "fixed":
            return mean
        return DurationSpec(mean=mean, sd=mean * draw(st.sampled_from([0.2, 0.5])), dist=kind)
    n_ph = draw(st.integers(0, 4))
    kinds = ["leukapheresis", "manufacturing", "bridging", "lymphodepletion", "other"]
    phases = [Phase(name=f"ph{i}", kind=draw(st.sampled_from(kinds)), duration_days=dur(),
                    failure_prob=draw(st.sampled_from([0.0, 0.0, 0.1, 0.4])),
                    probability=draw(st.sampled_from([1.0, 1.0, 0.5])))
              for i in range(n_ph)]
    gate = draw(st.sampled_from([None] + [p.name for p in phases]))
    onset = draw(st.sampled_from(["uniform", "spec"]))
    return Conduct(
        accrual_per_month=draw(st.sampled_from([None, 0.5, 2.0, 30.0])),
        screening=Screening(failure_prob=draw(st.sampled_from([0.0, 0.3])),
                            duration_days=dur()),
        max_wait_days=draw(st.sampled_from([None, 0.0, 20.0])),
        when_paused=draw(st.sampled_from(["wait", "leave"])),
        phases=phases, gate_before_phase=gate,
        dlt_window_days=draw(st.sampled_from([7.0, 28.0])),
        dlt_onset="uniform" if onset == "uniform" else DurationSpec(mean=5, sd=3),
        dropout_prob=draw(st.sampled_from([0.0, 0.2])),
        stagger_days=draw(st.sampled_from([0.0, 0.0, 5.0, 14.0])),
        stagger_mode=draw(st.sampled_from(["sentinel", "all"])),
        stagger_scope=draw(st.sampled_from(["new_dose", "every_cohort"])),
        max_in_followup=draw(st.sampled_from([None, 1, 2, 3])),
        review_days=draw(st.sampled_from([0.0, 0.0, 7.0])))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conduct=conducts(), type_name=st.sampled_from(TYPES),
       n_doses=st.integers(2, 5), cohort_size=st.sampled_from([1, 2, 3]),
       max_n=st.sampled_from([6, 12, 18]), seed=st.integers(0, 2**31),
       p=st.lists(st.floats(0.0, 0.8), min_size=5, max_size=5))
def test_fast_path_equals_simpy_on_random_scenarios(conduct, type_name, n_doses, cohort_size,
                                                    max_n, seed, p):
    design = build(type_name, n_doses=n_doses, cohort_size=cohort_size, max_n=max_n)
    assert_same_trials(design, sorted(p)[:n_doses], conduct, seed, range(8))


CLASSIC = ["3+3", "boin", "crm", "mtpi2", "keyboard", "i3+3", "blrm"]
#: designs deciding by fixed cohorts: no backfill, no counting at the level received, no
#: cohort_sizes (scenario validation refuses them)
FIXED_COHORTS = ("3+3",)


@st.composite
def conducts14(draw, type_name, n_doses):
    """:func:`conducts` with issue 14's blocks the fast path runs for classic designs:
    backfill, short products (each counting policy, each fraction law), the review committee
    (before every decision or only escalations, on a calendar), cohort sizes, costs, no
    screening while accrual is paused (finite accrual)."""
    base = draw(conducts())
    fixed = type_name in FIXED_COHORTS
    extra = {}
    if not fixed and draw(st.booleans()):
        cap = draw(st.sampled_from([3, 6, 12]))
        extra["backfill"] = {"max_per_dose": cap,
                             "max_total": draw(st.sampled_from([1, 4, 24])),
                             "min_evaluable": min(cap, draw(st.sampled_from([1, 2, 3])))}
    if draw(st.booleans()):
        policies = ["assigned", "exclude"] + ([] if fixed else ["received"])
        dist = draw(st.sampled_from(["uniform", "beta", "fixed"]))
        policy = draw(st.sampled_from(policies))
        extra["shortfall"] = {     # (every product short and excluded: no trial would end)
            "prob": draw(st.sampled_from([0.1, 0.5] + ([1.0] if policy == "assigned" else []))),
            "received_fraction": {"mean": draw(st.sampled_from([0.4, 0.7])),
                                  "sd": draw(st.sampled_from([0.0, 0.1])), "dist": dist},
            "policy": policy,
            "dose_amounts": [float(a) for a in draw(st.sampled_from(
                [[1, 2, 4, 8, 16], [10, 15, 20, 25, 30]]))[:n_doses]]}
    review = draw(st.sampled_from([None, "every_decision", "escalation"]))
    if review is not None:
        extra["review_days"] = 0.0
        extra["review"] = {"days": draw(st.sampled_from([0.0, 5.0])), "before": review}
    extra["review_every_days"] = draw(st.sampled_from([None, None, 7.0, 30.0]))
    if not fixed:
        extra["cohort_sizes"] = draw(st.sampled_from([None, None, [3, 2, 1], [1, 3]]))
    if draw(st.booleans()):
        extra["costs"] = {"screening": 5000.0, "manufacturing": 150000.0,
                          "infusion": 50000.0, "per_month": 40000.0}
    if base.accrual_per_month is not None:
        extra["screen_while_paused"] = draw(st.booleans())
    return _conduct(base, extra)


def _classic(type_name, n_doses, cohort_size, max_n):
    if type_name != "blrm":
        return build(type_name, n_doses=n_doses, cohort_size=cohort_size, max_n=max_n)
    ctx = DesignContext(n_doses=n_doses, target=0.25, cohort_size=cohort_size, max_n=max_n,
                        start_dose=0)
    entry = get_entry("blrm")
    return entry.build(entry.spec_model(type="blrm", dose_amounts=[
        float(2 ** d) for d in range(n_doses)]), ctx)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), type_name=st.sampled_from(CLASSIC), n_doses=st.integers(2, 5),
       cohort_size=st.sampled_from([1, 2, 3]), max_n=st.sampled_from([6, 12, 18]),
       seed=st.integers(0, 2**31), p=st.lists(st.floats(0.0, 0.8), min_size=5, max_size=5))
def test_fast_path_equals_simpy_with_backfill_and_shortfall(data, type_name, n_doses,
                                                            cohort_size, max_n, seed, p):
    """Random conduct blocks with backfill, short products, review options, cohort sizes and
    costs, every classic design that takes them: the lean ConductTrial (and the parts on the
    heap clock, with the patient log) give simpy's trials."""
    conduct = data.draw(conducts14(type_name, n_doses))
    design = _classic(type_name, n_doses, cohort_size, max_n)
    assert clock_for(design, conduct) is HeapClock
    assert_same_trials(design, sorted(p)[:n_doses], conduct, seed, range(8))


def test_screen_while_paused_false_on_the_fast_path():
    """``screen_while_paused: false`` on the seed scenario (classic designs: BOIN with and
    without backfill, 3+3) and on cart_backfill.yaml: the lean paused trials give simpy's
    trials, unscreened arrivals counted alike (and some there are)."""
    from escalation_sim.engines.calendar import fast
    from escalation_sim.engines.calendar.model import Setup
    seed = load_scenario(ROOT / "scenarios" / "relma_cel_sle.yaml")
    cart = load_scenario(ROOT / "scenarios" / "cart_backfill.yaml")
    off = {"screen_while_paused": False}
    cases = [(build("boin"), seed, _conduct(seed.model.conduct, off)),
             (build("3+3"), seed, _conduct(seed.model.conduct, off)),
             (build("boin"), seed, _conduct(seed.model.conduct, {**off, "backfill": {}})),
             (cart.designs[1].design, cart, _conduct(cart.model.conduct, off))]
    names = []
    for design, sc, conduct in cases:
        setup = Setup(design, sc.p_true.tolist(), conduct, False, 1000, clock=HeapClock)
        names.append(fast.trial_class(setup)[0].__name__)
        res = assert_same_trials(design, sc.p_true.tolist(), conduct, 3, range(30))
        assert res["n_not_screened"].sum() > 0
    assert names == ["PausedClassicTrial", "PausedClassicTrial", "PausedConductTrial",
                     "PausedConductTrial"]


def test_conduct_trials_with_tiny_blocks(monkeypatch):
    """Blocks of two arrivals and patients and one evaluable patient: every conduct trial
    extends its arrivals, patients, DLT draws and short-product fractions on demand, in both
    engines alike (scenarios/cart_backfill.yaml, short products counted each way)."""
    import escalation_sim.engines.calendar as cal
    monkeypatch.setattr(cal, "block_sizes", lambda conduct, max_n: (2, 2, 1))
    sc = load_scenario(ROOT / "scenarios" / "cart_backfill.yaml")
    sf = sc.model.conduct.shortfall.model_dump()
    for policy in ("assigned", "received", "exclude"):
        conduct = _conduct(sc.model.conduct, {"shortfall": dict(sf, policy=policy, prob=0.4)})
        for it in sc.designs:
            assert_same_trials(it.design, sc.p_true.tolist(), conduct, 5, range(12))


def test_zero_logistics_ties_and_simulate_one():
    """Zero-length logistics put many calls on the same instant (order decides)."""
    for t in TYPES:
        assert_same_trials(build(t), [0.1, 0.2, 0.3, 0.45], Conduct.zero(), 3, range(30))
    a = simulate_one(build("tite-crm"), [0.1, 0.2, 0.3, 0.45], Conduct(), 5, 2, engine="simpy")
    b = simulate_one(build("tite-crm"), [0.1, 0.2, 0.3, 0.45], Conduct(), 5, 2, engine="fast")
    assert isinstance(a.clock if a.clock is not None else SimpyClock(), SimpyClock)
    assert (a.final_state, a.decision_times, a.t_end) == (b.final_state, b.decision_times,
                                                          b.t_end)


# ------------------------------------------------------------------ choice and fallback
class _FutureConduct(Conduct):
    """A conduct block with a feature the fast path does not know (stands for the fields
    other work adds)."""

    future_option: bool = False


def test_allow_list_falls_back_to_simpy_with_a_note(caplog):
    design = build("boin")
    assert unsupported(design, Conduct(), CohortPolicy) is None
    assert unsupported(design, Conduct(), TimeToEventPolicy, record_patients=True) is None
    # an unknown field at its default is the old behaviour: still the fast path
    assert unsupported(design, _FutureConduct(), CohortPolicy) is None
    future = _FutureConduct(future_option=True)
    assert unsupported(design, future, CohortPolicy) == "conduct.future_option"

    class Backfill(CohortPolicy):
        __slots__ = ()
    assert "decision policy Backfill" in unsupported(design, Conduct(), Backfill)
    assert "option shortfall" in unsupported(design, Conduct(), CohortPolicy, shortfall=0.1)
    with caplog.at_level(logging.INFO, logger="escalation_sim.engines.calendar"):
        assert clock_for(design, future) is SimpyClock
    assert "fast path does not support conduct.future_option" in caplog.text
    with pytest.raises(ValueError, match="does not support: conduct.future_option"):
        clock_for(design, future, "fast")


def test_engine_option_and_environment(monkeypatch):
    design = build("crm")
    assert clock_for(design, Conduct()) is HeapClock
    assert clock_for(design, Conduct(), "simpy") is SimpyClock
    monkeypatch.setenv(ENV_VAR, "simpy")
    assert clock_for(design, Conduct()) is SimpyClock
    assert clock_for(design, Conduct(), "auto") is HeapClock
    monkeypatch.setenv(ENV_VAR, "turbo")
    with pytest.raises(ValueError, match="calendar engine must be one of auto, fast, simpy"):
        clock_for(design, Conduct())


def test_cli_calendar_engine_option(cli, monkeypatch):
    """``--calendar-engine simpy`` gives the same tables (only the timing differs), is
    passed to the engine through the environment only while the command runs, and is a
    note on a run without calendar time; a bad value is a usage error (exit 2)."""
    import json
    seen = []
    import escalation_sim.engines.calendar as cal
    real = cal.clock_for

    def spy(*a, **k):
        cls = real(*a, **k)
        seen.append(cls.__name__)
        return cls
    monkeypatch.setattr(cal, "clock_for", spy)
    monkeypatch.delenv(ENV_VAR, raising=False)
    path = ROOT / "scenarios" / "relma_cel_sle.yaml"
    out = {}
    for eng in ("simpy", "auto"):
        seen.clear()
        r = cli("run", path, "--n-trials", 60, "--backend", "sequential", "--json",
                "--calendar-engine", eng)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        doc.pop("elapsed_s", None)
        doc.get("meta", {}).pop("elapsed_s", None)
        out[eng] = doc
        assert set(seen) == {"SimpyClock" if eng == "simpy" else "HeapClock"}
    assert json.dumps(out["simpy"], sort_keys=True) == json.dumps(out["auto"], sort_keys=True)
    import os
    assert ENV_VAR not in os.environ
    r = cli("run", ROOT / "scenarios" / "standard_mtd3.yaml", "--n-trials", 50,
            "--calendar-engine", "simpy", "--quiet")
    assert r.returncode == 0
    assert "--calendar-engine is ignored: this run has no calendar time" in r.stderr
    r = cli("run", path, "--calendar-engine", "turbo")
    assert r.returncode == 2 and "invalid choice: 'turbo'" in r.stderr


def test_grid_interp_is_numpy_interp_bit_for_bit():
    """The fast path's gamma durations: grid_interp must equal numpy.interp on the normal-
    score grid exactly (random normal scores, every grid point and its two neighbours), for
    shapes from 0.3 to 10^4; and FastGamma must equal Gamma."""
    from scipy import special
    from escalation_sim.engines.calendar.fast import FastGamma, _gamma_table, grid_interp
    from escalation_sim.inputs.distributions import _Z_GRID, Gamma
    rng = np.random.default_rng(20261127)
    inner = _Z_GRID[1:-1]
    edges = np.concatenate([inner, np.nextafter(inner, -np.inf), np.nextafter(inner, np.inf),
                            [-8.3, 8.3, 0.0, -0.0, _Z_GRID[0]]])
    for shape in (0.3, 1.0, 4.0, 17.64, 100.0, 1e3, 1e4):
        fp, slopes = _gamma_table(shape)
        for z in (special.ndtri(rng.random(200_000)), edges):
            ref = np.interp(z, _Z_GRID, fp)
            got = grid_interp(z, fp, slopes)
            assert np.array_equal(ref.view(np.int64), got.view(np.int64)), shape
    u = rng.random(50_000)
    for mu, sd in ((21.0, 5.0), (14.0, 5.0), (3.0, 3.0), (1.0, 0.1)):
        ref = Gamma(mu=mu, sd=sd).sample_from_uniforms(u)
        assert np.array_equal(ref, FastGamma(mu=mu, sd=sd).sample_from_uniforms(u))
        assert np.array_equal(Gamma(mu=mu, sd=sd).sample_within(u, 28.0),
                              FastGamma(mu=mu, sd=sd).sample_within(u, 28.0))


def test_lean_trials_are_freed_by_reference_counting():
    """simulate_des_trials pauses the garbage collector, so a finished lean trial must hold
    no reference cycle once released (its heap and bound handlers are dropped)."""
    import gc
    conduct = Conduct(stagger_days=5, max_in_followup=2, dropout_prob=0.2, review_days=3)
    gc_on = gc.isenabled()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        backfill = _conduct(conduct, {
            "backfill": {"max_per_dose": 6}, "costs": {"infusion": 1.0},
            "shortfall": {"prob": 0.3, "received_fraction": {"mean": 0.5},
                          "dose_amounts": [1.0, 2.0, 3.0, 4.0]}})
        for t, c in (("boin", conduct), ("tite-boin", conduct), ("boin", backfill)):
            res = simulate_des_trials(build(t), [0.1, 0.2, 0.3, 0.45], c, 1, range(20),
                                      engine="fast")
            assert res["n_enrolled"].sum() > 20
        assert res["n_backfill"].sum() > 0
        del res
        gc.collect()
        ours = {type(o).__name__ for o in gc.garbage
                if type(o).__module__.startswith("escalation_sim")}
        assert not ours & {"ClassicTrial", "TiteTrial", "ConductTrial", "_AccrualCounts",
                           "TrialDraws", "_PatView"}, ours
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if gc_on:
            gc.enable()


def test_a_setup_with_an_unknown_part_runs_on_simpy(monkeypatch, caplog):
    """A feature added to the simpy engine through Setup (a new attribute, a new review
    part) is not on the fast path's allow-list: the call runs on simpy, with a note."""
    from escalation_sim.engines.calendar import model
    from escalation_sim.engines.calendar.fast import setup_unsupported
    from escalation_sim.engines.calendar.trial import Trial
    design = build("boin")
    plain = model.Setup(design, [0.1, 0.2, 0.3, 0.4], Conduct(), False, 100)
    assert setup_unsupported(plain) is None
    real_init = model.Setup.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self.outcomes = "graded"            # stands for a graded-outcome model (issue 12)
    monkeypatch.setattr(model.Setup, "__init__", init)
    import escalation_sim.engines.calendar as cal
    made = []
    real_tc = cal.trial_class

    def spy(setup):
        out = real_tc(setup)
        made.append((out[0], setup.clock))
        return out
    monkeypatch.setattr(cal, "trial_class", spy)
    with caplog.at_level(logging.INFO, logger="escalation_sim.engines.calendar"):
        simulate_des_trials(design, [0.1, 0.2, 0.3, 0.4], Conduct(), 1, range(3))
    assert made == [(Trial, SimpyClock)]
    assert "fast path does not support Setup.outcomes" in caplog.text


# ------------------------------------------------------------------ graded truths
GRADED_SCENARIOS = [p for p in SCENARIOS if load_scenario(p).model.truth.graded]
GRADED_TYPES = TYPES + ["gboin", "tite-gboin"]


def build_graded(type_name, n_doses=4, target=0.25, cohort_size=3, max_n=24, start_dose=0,
                 scores=None):
    """``build`` with gBOIN / TITE-gBOIN's severity scores (``scores``: one per grade from 0;
    None = the design's default)."""
    if type_name not in ("gboin", "tite-gboin"):
        return build(type_name, n_doses, target, cohort_size, max_n, start_dose)
    ctx = DesignContext(n_doses=n_doses, target=target, cohort_size=cohort_size,
                        max_n=max_n, start_dose=start_dose)
    entry = get_entry(type_name)
    # its own target on the normalized score scale (cart_crs_icans.yaml's 0.26)
    kw = {"target": 0.26} if scores is None else {"target": 0.26,
                                                  "scores": dict(enumerate(scores))}
    return entry.build(entry.spec_model(type=type_name, **kw), ctx)


def test_every_bundled_scenario_with_a_graded_truth_is_tested():
    """The graded comparisons below are not vacuous: cart_crs_icans.yaml has a graded truth
    (two types, CRS and ICANS, with their own onsets; the scenario file)."""
    assert ROOT / "scenarios" / "cart_crs_icans.yaml" in GRADED_SCENARIOS


@pytest.mark.parametrize("path", GRADED_SCENARIOS, ids=lambda p: p.stem)
def test_fast_path_equals_simpy_on_every_bundled_graded_scenario(path):
    """Every bundled scenario with a graded truth (``truth.toxicities``, each event at its own
    onset), every design it lists (binary and score designs) plus TITE-BOIN, TITE-CRM, gBOIN
    and TITE-gBOIN, on the outcome model, under its conduct block and under zero logistics
    (many calls at one instant), with the patient log."""
    from escalation_sim.engines.calendar import calendar_truth
    sc = load_scenario(path)
    truth = calendar_truth(sc)
    tr = sc.model.trial
    items = [it.design for it in sc.designs]
    for t in ("tite-boin", "tite-crm", "gboin", "tite-gboin"):
        if not any(it.type == t for it in sc.designs):
            items.append(build_graded(t, sc.n_doses, sc.target, tr.cohort_size, tr.max_n,
                                      tr.start_dose - 1))
    conducts_ = [sc.model.conduct if sc.has_logistics else Conduct()]
    conducts_.append(Conduct(dlt_window_days=conducts_[0].dlt_window_days))
    for design in items:
        for conduct in conducts_:
            assert clock_for(design, conduct, graded=True) is HeapClock
            assert_same_trials(design, truth, conduct, 7, range(40))


def _graded_model(draw, n_doses, window, max_grade):
    """A random graded truth: 1-3 types, grades up to ``max_grade``, each type with an onset
    law or none (then the conduct's ``dlt_onset``), a correlation, a DLT rule."""
    from escalation_sim.inputs.truth import OutcomeModel, ToxicityType
    J = draw(st.integers(1, 3))
    types = []
    for j in range(J):
        top = draw(st.integers(1, max_grade))
        grades = {}
        for g in range(1, top + 1):
            ps = sorted(draw(st.lists(st.sampled_from([0.0, 0.02, 0.05, 0.1, 0.2, 0.3]),
                                      min_size=n_doses, max_size=n_doses)))
            grades[g] = [p / top * 2 for p in ps]          # sums at most 0.6 per dose
        kind = draw(st.sampled_from(["none", "gamma", "lognormal", "uniform", "fixed", "late"]))
        if kind == "none":
            onset = None
        elif kind == "late":                                  # some events after the window
            onset = DurationSpec(mean=window * 0.9, sd=window * 0.4, dist="gamma")
        elif kind == "fixed":                 # ties between types; day 0 and the window's end
            onset = DurationSpec(mean=draw(st.sampled_from([0.0, 1.0, window])), sd=0.0,
                                 dist="fixed")
        else:
            mean = draw(st.sampled_from([1.0, 3.0, 8.0]))
            onset = DurationSpec(mean=mean, sd=mean * 0.5, dist=kind)
        types.append(ToxicityType.from_grades(
            f"T{j}", grades, None if onset is None else onset.to_distribution()))
    rho = draw(st.sampled_from([0.0, 0.0, 0.5])) if J > 1 else 0.0
    rule = [(t.name, draw(st.integers(1, t.max_grade))) for t in types
            if draw(st.booleans())] or [(types[0].name, types[0].max_grade)]
    return OutcomeModel(types, correlation=rho, rule=rule, window_days=window)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), conduct=conducts(), type_name=st.sampled_from(GRADED_TYPES),
       n_doses=st.integers(2, 5), cohort_size=st.sampled_from([1, 2, 3]),
       max_n=st.sampled_from([6, 12, 18]), seed=st.integers(0, 2**31))
def test_fast_path_equals_simpy_on_random_graded_scenarios(data, conduct, type_name, n_doses,
                                                           cohort_size, max_n, seed):
    """Random conduct blocks and random graded truths (types, grades, onsets -- some after
    the window --, correlation, DLT rule), binary and score designs (random scores)."""
    score = type_name in ("gboin", "tite-gboin")
    max_grade = 4 if score else 5
    model = _graded_model(data.draw, n_doses, conduct.dlt_window_days, max_grade)
    # one type, grade 1 only, no onset law: the binary truth ``u < p`` (no score designs)
    assume(not (score and model.is_binary))
    scores = None
    if score:
        steps = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=4, max_size=4))
        steps[-1] = steps[-1] or 1.0                          # the largest score is > 0
        scores = [0.0] + list(np.cumsum(steps))
    design = build_graded(type_name, n_doses=n_doses, cohort_size=cohort_size, max_n=max_n,
                          scores=scores)
    assert_same_trials(design, model, conduct, seed, range(8))


def test_graded_truth_beyond_the_dlt_bits(monkeypatch):
    """More doses than the DLT flags' bits (``draws.MASK_DOSES``, lowered here to 2): both
    engines read the day the DLT is known instead (``WideGradedToxicity``)."""
    from escalation_sim.engines.calendar import calendar_truth, draws
    monkeypatch.setattr(draws, "MASK_DOSES", 2)
    sc = load_scenario(ROOT / "scenarios" / "cart_crs_icans.yaml")
    conduct = sc.model.conduct
    for t in ("boin", "tite-boin"):
        assert_same_trials(build(t), calendar_truth(sc), conduct, 3, range(30))
        assert_same_trials(build(t), calendar_truth(sc), Conduct(), 3, range(30))


@pytest.mark.parametrize("mask_doses", [62, 2])
def test_graded_truth_with_tiny_blocks(monkeypatch, mask_doses):
    """Blocks of one evaluable patient (and two arrivals / patients): every trial extends its
    graded block on demand (``TrialDraws.more_evaluable``), in both engines alike; with the
    DLT flags as bits and (``MASK_DOSES`` = 2) without."""
    import escalation_sim.engines.calendar as cal
    from escalation_sim.engines.calendar import calendar_truth, draws
    monkeypatch.setattr(cal, "block_sizes", lambda conduct, max_n: (2, 2, 1))
    monkeypatch.setattr(draws, "MASK_DOSES", mask_doses)
    sc = load_scenario(ROOT / "scenarios" / "cart_crs_icans.yaml")
    for it in sc.designs:
        assert_same_trials(it.design, calendar_truth(sc), sc.model.conduct, 5, range(12))


def test_graded_state_graph_starting_afresh_changes_nothing(monkeypatch):
    """A score design's state graph keeps growing; past ``_GRAPH_MAX`` new nodes (lowered
    here to 5) it starts afresh, mid-chunk, with the same trials (simpy as the reference)."""
    from escalation_sim.engines.calendar import calendar_truth, fast
    monkeypatch.setattr(fast, "_GRAPH_MAX", 5)
    sc = load_scenario(ROOT / "scenarios" / "cart_crs_icans.yaml")
    design = build_graded("gboin")
    fast._memos.pop(design, None)
    roots = []
    root_of = fast.state_graph_root

    def spy(setup):
        roots.append(root_of(setup))
        return roots[-1]
    monkeypatch.setattr(fast, "state_graph_root", spy)
    assert_same_trials(design, calendar_truth(sc), sc.model.conduct, 11, range(40))
    assert len({id(r) for r in roots}) > 1              # it did start afresh


@pytest.mark.parametrize("type_name", ["boin", "tite-boin", "gboin", "tite-gboin", "tite-crm"])
def test_graded_onsets_on_the_edges_of_the_window(type_name):
    """Events on the day of infusion (fixed onset 0) and on the last day of the window (fixed
    onset = ``dlt_window_days``: inside, so a DLT and, for TITE designs, a call at the same
    instant as the end of the window, scheduled before it), with a third type without an
    onset law (the conduct's ``dlt_onset``): every tie as simpy orders it."""
    from escalation_sim.inputs.truth import OutcomeModel, ToxicityType
    W = 21.0
    grades = {1: [0.1, 0.2, 0.2, 0.2], 2: [0.1, 0.1, 0.2, 0.2], 3: [0.05, 0.1, 0.15, 0.2],
              4: [0.0, 0.05, 0.05, 0.1]}
    types = [ToxicityType.from_grades("A", grades, DurationSpec(mean=0.0, sd=0.0, dist="fixed")
                                      .to_distribution()),
             ToxicityType.from_grades("B", grades, DurationSpec(mean=W, sd=0.0, dist="fixed")
                                      .to_distribution()),
             ToxicityType.from_grades("C", grades)]
    model = OutcomeModel(types, correlation=0.3, rule=[("B", 3), ("C", 4)], window_days=W)
    for conduct in (Conduct(dlt_window_days=W),
                    Conduct(dlt_window_days=W, accrual_per_month=3.0, stagger_days=7.0,
                            max_in_followup=2, dropout_prob=0.1)):
        assert_same_trials(build_graded(type_name), model, conduct, 13, range(30))


def test_graded_truth_runs_on_the_fast_path():
    """A graded truth is on the allow-list (auto and fast run it on the heap loop; the lean
    trial classes of a graded truth without the log), and a graded call with an option the
    fast path does not know still falls back to simpy."""
    from escalation_sim.engines.calendar import calendar_truth
    from escalation_sim.engines.calendar import fast
    from escalation_sim.engines.calendar.model import Setup
    sc = load_scenario(ROOT / "scenarios" / "cart_crs_icans.yaml")
    conduct = sc.model.conduct
    names = []
    for it in sc.designs:
        assert clock_for(it.design, conduct, graded=True) is HeapClock
        setup = Setup(it.design, sc.p_true.tolist(), conduct, False, 1000, clock=HeapClock,
                      model=calendar_truth(sc))
        names.append(fast.trial_class(setup)[0].__name__)
    # boin, tite-boin, gboin, tite-gboin (the scenario file's order)
    assert names == ["GradedClassicTrial", "GradedTiteTrial", "GradedClassicTrial",
                     "ScoreTiteTrial"]
    assert unsupported(sc.designs[0].design, conduct, CohortPolicy, graded_truth=True,
                       shortfall=True) == "option shortfall"


def test_piecewise_accrual_same_trials_on_both_engines():
    """issue 14's accrual schedule runs on the fast path: trial by trial as simpy (the lean
    chunk maps the unit-rate arrival times through the schedule like the parts do)."""
    sc = load_scenario(ROOT / "scenarios" / "relma_cel_sle.yaml")
    conduct = sc.model.conduct.model_copy(update={"accrual_per_month": [
        {"until_day": 180, "rate": 0.5}, {"rate": 1.5}]})
    conduct = Conduct.model_validate(conduct.model_dump())
    for it in sc.designs[:2]:
        assert clock_for(it.design, conduct) is HeapClock
        assert_same_trials(it.design, sc.p_true.tolist(), conduct, 7, range(40), record=False)
        assert_same_trials(it.design, sc.p_true.tolist(), conduct, 7, range(10))


def test_piecewise_accrual_with_a_graded_truth_same_trials_on_both_engines():
    """The graded lean chunk maps arrival times through a piecewise accrual schedule as the
    binary one does (every design of cart_crs_icans.yaml, score designs included)."""
    from escalation_sim.engines.calendar import calendar_truth
    sc = load_scenario(ROOT / "scenarios" / "cart_crs_icans.yaml")
    conduct = sc.model.conduct.model_copy(update={"accrual_per_month": [
        {"until_day": 180, "rate": 0.5}, {"rate": 1.5}]})
    conduct = Conduct.model_validate(conduct.model_dump())
    for it in sc.designs:
        assert clock_for(it.design, conduct, graded=True) is HeapClock
        assert_same_trials(it.design, calendar_truth(sc), conduct, 7, range(30))
