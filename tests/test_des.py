"""Tests of the discrete-event CAR-T trial engine (escalation_sim.engines.calendar), the conduct block and
the duration distributions.

The independent references are: a trivial reference loop over ``design.decide`` /
``state.add_cohort`` with the shared ``dlt`` stream (the contract the engines share), the
time-free cohort engine, closed forms (zero-logistics durations are cohorts x window; known
quantile / mean formulas) and the conduct rules themselves checked on the patient event log.
"""
from __future__ import annotations

import math

import numpy as np
import pydantic
import pytest
from scipy import integrate, special, stats

from escalation_sim.inputs.conduct import Conduct, Phase, Screening
from escalation_sim.engines.calendar import STOP_CODES, simulate_des_trials, simulate_one
from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.registry import get_entry
from escalation_sim.inputs.distributions import (DurationSpec, Fixed, Gamma, LogNormal, TruncNormal,
                                          Uniform, as_distribution, make_distribution)
from escalation_sim.randomness import stream_key, uniforms
from escalation_sim.types import StopReason, TrialState

SEED = 20240408
P_TRUE = [0.05, 0.12, 0.25, 0.40]          # 4 doses, as the seed trial (relma-cel, NCT05765006)
P_TOXIC = [0.30, 0.45, 0.60, 0.70]
CTX = DesignContext(n_doses=4, target=0.3, cohort_size=3, max_n=24, start_dose=0)


def build(type_name: str, ctx: DesignContext = CTX, **kw):
    entry = get_entry(type_name)
    return entry.build(entry.spec_model(type=type_name, **kw), ctx)


def reference_trial(design, p_true, seed: int, trial: int):
    """The trivial reference: loop design.decide / state.add_cohort; the k-th treated patient
    has a DLT at dose d iff uniforms(stream_key(seed, 'dlt'), trial, k) < p_d."""
    key = stream_key(seed, "dlt")
    state = TrialState.empty(design.n_doses)
    cohorts, k = [], 0
    while True:
        dec = design.decide(state)
        if dec.stop:
            return cohorts, state, dec
        u = uniforms(key, trial, np.arange(k, k + dec.cohort_size))
        y = int((u < p_true[dec.dose]).sum())
        k += dec.cohort_size
        cohorts.append((dec.dose, dec.cohort_size, y))
        state = state.add_cohort(dec.dose, dec.cohort_size, y)


def cohorts_from_log(log, trial: int):
    """(dose, evaluable patients, DLTs) per cohort, from the patient log of one trial."""
    rows = (log["trial"] == trial) & log["evaluable"]
    out = []
    for c in np.unique(log["cohort"][rows]):
        sel = rows & (log["cohort"] == c)
        doses = np.unique(log["dose_level"][sel])
        assert doses.size == 1
        out.append((int(doses[0]) - 1, int(sel.sum()), int(log["dlt"][sel].sum())))
    return out


# =========================================================================== consistency
@pytest.mark.parametrize("type_name", ["3+3", "boin", "crm"])
@pytest.mark.parametrize("p_true", [P_TRUE, P_TOXIC])
def test_zero_logistics_equals_reference_loop_trial_by_trial(type_name, p_true):
    design = build(type_name)
    trials = range(150)
    res = simulate_des_trials(design, p_true, Conduct.zero(), SEED, trials,
                              record_patients=True)
    log = res["patients"]
    for r, t in enumerate(trials):
        cohorts, state, dec = reference_trial(design, p_true, SEED, t)
        assert cohorts_from_log(log, t) == cohorts, f"trial {t}"
        assert res["final_state"][r] == state
        assert res["stop_code"][r] == STOP_CODES.index(dec.stop_reason)
        assert res["stop_reason"][r] == dec.stop_reason.value
        m = design.select_mtd(state)
        assert res["mtd"][r] == (-1 if m is None else m)
        assert tuple(res["n"][r]) == state.n and tuple(res["y"][r]) == state.y
        # closed form: zero logistics -> cohorts one after the other, each one window long
        assert res["duration_days"][r] == pytest.approx(28.0 * len(cohorts))
        assert res["n_decisions"][r] == len(cohorts)


@pytest.mark.parametrize("type_name", ["3+3", "boin", "crm"])
def test_zero_logistics_equals_cohort_engine(type_name):
    from escalation_sim.engines.cohort import simulate_cohort_chunk
    design = build(type_name)
    ch = simulate_cohort_chunk(design, P_TRUE, SEED, 0, 400)
    res = simulate_des_trials(design, P_TRUE, Conduct.zero(), SEED, range(400))
    # the engine merges states with equal canonical keys (e.g. 3+3 ignores the last cohort's
    # DLT count once it has decided), so compare keys, counts, MTD and stop reason
    for r, sid in enumerate(ch.sids.tolist()):
        st, es = res["final_state"][r], ch.graph.states[sid]
        assert design.canonical(st) == design.canonical(es)
        assert (st.n, st.y) == (es.n, es.y)
        assert res["mtd"][r] == (-1 if ch.graph.mtd(sid) is None else ch.graph.mtd(sid))
        assert res["stop_code"][r] == ch.graph.stop_code[sid]


LOGISTICS = [
    Conduct(),
    Conduct(accrual_per_month=6, dropout_prob=0.15, stagger_days=10, max_in_followup=2,
            when_paused="leave", review_days=7,
            dlt_onset=DurationSpec(mean=6, sd=4, dist="lognormal")),
    Conduct(accrual_per_month=0.7, max_wait_days=None, stagger_days=5, stagger_mode="all",
            stagger_scope="every_cohort",
            phases=[Phase(name="apheresis", duration_days=2),
                    Phase(name="mfg", kind="manufacturing", failure_prob=0.3,
                          duration_days=DurationSpec(mean=25, sd=8, dist="normal")),
                    Phase(name="ld", kind="lymphodepletion", duration_days=3,
                          failure_prob=0.1)]),
]


@pytest.mark.parametrize("conduct", LOGISTICS)
def test_logistics_never_change_classic_trials(conduct):
    """Classic designs decide on complete cohorts, so logistics change only the calendar:
    the terminal state of every trial equals the zero-logistics one."""
    design = build("boin")
    zero = simulate_des_trials(design, P_TRUE, Conduct.zero(), SEED, range(120))
    res = simulate_des_trials(design, P_TRUE, conduct, SEED, range(120))
    assert res["final_state"] == zero["final_state"]
    assert (res["mtd"] == zero["mtd"]).all()
    assert (res["duration_days"] > zero["duration_days"]).all()


@pytest.mark.parametrize("type_name", ["boin", "tite-boin", "tite-crm"])
def test_dlt_flags_follow_the_shared_stream_whatever_the_logistics(type_name):
    design = build(type_name)
    key = stream_key(SEED, "dlt")
    for conduct in [Conduct.zero()] + LOGISTICS:
        res = simulate_des_trials(design, P_TRUE, conduct, SEED, range(40),
                                  record_patients=True)
        log = res["patients"]
        ev = log["evaluable"]
        k = log["evaluable_index"][ev]
        u = uniforms(key, log["trial"][ev], k)
        p = np.asarray(P_TRUE)[log["dose_level"][ev] - 1]
        assert (log["dlt"][ev] == (u < p)).all()
        assert not log["dlt"][~ev].any()
        for r, t in enumerate(range(40)):
            kk = np.sort(log["evaluable_index"][ev & (log["trial"] == t)])
            assert (kk == np.arange(res["n_evaluable"][r])).all()   # 0, 1, ..., in order
            # infusion order is the k order
            sel = ev & (log["trial"] == t)
            order = np.argsort(log["evaluable_index"][sel])
            assert (np.diff(log["infusion_day"][sel][order]) >= 0).all()


def test_results_do_not_depend_on_chunking_or_order():
    design = build("boin")
    conduct = LOGISTICS[1]
    whole = simulate_des_trials(design, P_TRUE, conduct, SEED, range(60))
    parts = [simulate_des_trials(design, P_TRUE, conduct, SEED, range(a, b))
             for a, b in [(0, 7), (7, 40), (40, 60)]]
    back = simulate_des_trials(design, P_TRUE, conduct, SEED, list(range(59, -1, -1)))
    for key in ("mtd", "stop_code", "duration_days", "n_screened", "n_lost", "n", "y"):
        joined = np.concatenate([p[key] for p in parts])
        assert np.array_equal(whole[key], joined), key
        assert np.array_equal(whole[key], back[key][::-1]), key


# =========================================================================== calendar
def test_durations_positive_and_longer_with_slower_accrual():
    design = build("3+3")
    means = []
    for rate in [None, 4.0, 1.0, 0.25]:
        res = simulate_des_trials(design, P_TRUE, Conduct(accrual_per_month=rate), SEED,
                                  range(150))
        assert (res["duration_days"] > 0).all()
        means.append(res["duration_days"].mean())
    assert means == sorted(means)
    assert means[-1] > 2 * means[0]


def test_first_decision_time_closed_form_with_fixed_phases():
    """Unlimited accrual and fixed phases: the first cohort is decided exactly
    sum(phases) + window + review days after the first enrollment."""
    conduct = Conduct(accrual_per_month=None, screening=Screening(failure_prob=0.0),
                      phases=[Phase(name="leuka", duration_days=2),
                              Phase(name="mfg", kind="manufacturing", duration_days=20),
                              Phase(name="ld", kind="lymphodepletion", duration_days=3),
                              Phase(name="rest", duration_days=2)],
                      review_days=4)
    res = simulate_des_trials(build("boin"), P_TRUE, conduct, SEED, range(20))
    assert np.allclose(res["time_to_first_decision_days"], 2 + 20 + 3 + 2 + 28 + 4)
    # and every cohort takes exactly that long
    assert np.allclose(res["duration_days"], res["n_decisions"] * (2 + 20 + 3 + 2 + 28 + 4))


def test_patient_log_paths_are_consistent():
    conduct = LOGISTICS[2]
    res = simulate_des_trials(build("boin"), P_TRUE, conduct, SEED, range(30),
                              record_patients=True)
    log = res["patients"]
    assert set(np.unique(log["fate"])) <= {"screen_failed", "lost_waiting", "lost_paused",
                                           "not_enrolled", "failed_mfg", "failed_ld",
                                           "dropout", "evaluable"}
    enrolled = log["patient"] >= 0
    assert (log["enrolled_day"][enrolled] >= log["screening_end_day"][enrolled] - 1e-9).all()
    assert (log["screening_end_day"] >= log["arrival_day"]).all()
    ev = log["evaluable"]
    # phases follow each other; infusion right after the last phase; window 28 days
    assert np.allclose(log["apheresis_start_day"][ev], log["enrolled_day"][ev])
    assert np.allclose(log["mfg_start_day"][ev], log["apheresis_end_day"][ev])
    assert (log["ld_start_day"][ev] >= log["mfg_end_day"][ev] - 1e-9).all()  # gate wait
    assert np.allclose(log["ld_start_day"][ev] - log["mfg_end_day"][ev],
                       log["gate_wait_days"][ev])
    assert np.allclose(log["infusion_day"][ev], log["ld_end_day"][ev])
    assert np.allclose(log["window_end_day"][ev], log["infusion_day"][ev] + 28)
    assert ((log["dlt_day"][ev & log["dlt"]] > 0) & (log["dlt_day"][ev & log["dlt"]] <= 28)).all()
    # manufacturing failures are never infused; counts agree with the trial table
    mf = log["fate"] == "failed_mfg"
    assert np.isnan(log["infusion_day"][mf]).all() and np.isnan(log["ld_start_day"][mf]).all()
    for r, t in enumerate(range(30)):
        rows = log["trial"] == t
        assert res["n_manufacturing_failures"][r] == (mf & rows).sum()
        assert res["n_screened"][r] == rows.sum()
        assert res["n_screen_failed"][r] == (rows & ~log["eligible"]).sum()
        assert res["n_enrolled"][r] == (rows & enrolled).sum()
        assert res["n_evaluable"][r] == (rows & ev).sum() == res["n"][r].sum()
        assert res["n_lost"][r] == (rows & np.isin(log["fate"],
                                                   ["lost_waiting", "lost_paused"])).sum()
    # replacement: the evaluable patients make up exactly the planned cohorts
    assert (res["n"].sum(axis=1) <= 24).all()


def _infusions_by(log, trial, key):
    rows = (log["trial"] == trial) & ~np.isnan(log["infusion_day"])
    out = {}
    for g in np.unique(log[key][rows]):
        out[int(g)] = np.sort(log["infusion_day"][rows & (log[key] == g)])
    return out


@pytest.mark.parametrize("mode,scope", [("sentinel", "new_dose"), ("sentinel", "every_cohort"),
                                        ("all", "new_dose")])
def test_sentinel_spacing_respected(mode, scope):
    conduct = Conduct(accrual_per_month=8, stagger_days=14, stagger_mode=mode,
                      stagger_scope=scope, max_wait_days=None)
    res = simulate_des_trials(build("boin"), P_TRUE, conduct, SEED, range(40),
                              record_patients=True)
    log = res["patients"]
    key = "cohort" if scope == "every_cohort" else "dose_level"
    held = 0
    for t in range(40):
        for days in _infusions_by(log, t, key).values():
            if mode == "sentinel":
                assert (days[1:] >= days[0] + 14 - 1e-9).all()
            else:
                assert (np.diff(days) >= 14 - 1e-9).all()
        held += np.nansum(log["gate_wait_days"][log["trial"] == t] > 0)
    assert held > 0                      # the rule did bind


def _max_overlap(starts, ends):
    # times rounded to 1e-6 day: an end and a start at the same instant may differ by an ulp
    events = sorted([(round(s, 6), 1) for s in starts] + [(round(e, 6), -1) for e in ends])
    cur = best = 0
    for _, step in events:        # an end at the same time as a start frees the slot first
        cur += step
        best = max(best, cur)
    return best


@pytest.mark.parametrize("type_name", ["boin", "tite-boin"])
def test_followup_cap_respected(type_name):
    cap = 2
    conduct = Conduct(accrual_per_month=10, max_in_followup=cap, dropout_prob=0.1,
                      max_wait_days=None)
    res = simulate_des_trials(build(type_name), P_TRUE, conduct, SEED, range(30),
                              record_patients=True)
    log = res["patients"]
    infused = ~np.isnan(log["infusion_day"])
    end = np.where(log["evaluable"], log["window_end_day"],
                   log["infusion_day"] + log["dropout_day"])
    bound = 0
    for t in range(30):
        rows = (log["trial"] == t) & infused
        starts = log["lymphodepletion_start_day"][rows]
        starts = np.where(np.isnan(starts), log["infusion_day"][rows], starts)
        assert _max_overlap(starts.tolist(), end[rows].tolist()) <= cap
        bound += np.nansum(log["gate_wait_days"][log["trial"] == t] > 0)
    assert bound > 0


@pytest.mark.parametrize("when_paused", ["wait", "leave"])
def test_waiting_list_and_max_wait(when_paused):
    conduct = Conduct(accrual_per_month=6, max_wait_days=10, when_paused=when_paused)
    res = simulate_des_trials(build("boin"), P_TRUE, conduct, SEED, range(40),
                              record_patients=True)
    log = res["patients"]
    enrolled = log["patient"] >= 0
    wait = log["enrolled_day"][enrolled] - log["screening_end_day"][enrolled]
    lost = np.isin(log["fate"], ["lost_waiting", "lost_paused"])
    if when_paused == "wait":
        assert (wait <= 10 + 1e-9).all() and (wait > 0).any()
        assert (log["fate"][lost] == "lost_waiting").all()
        assert np.allclose(log["lost_day"][lost] - log["screening_end_day"][lost], 10)
        assert res["n_waiting_max"].max() >= 1
    else:
        assert np.allclose(wait, 0)
        assert (log["fate"][lost] == "lost_paused").all()
        assert np.allclose(log["lost_day"][lost], log["screening_end_day"][lost])
        assert (res["n_waiting_max"] == 0).all()
    assert lost.sum() == res["n_lost"].sum() > 0


def test_no_max_wait_means_nobody_lost_and_unlimited_means_no_wait():
    res = simulate_des_trials(build("boin"), P_TRUE, Conduct(max_wait_days=None), SEED,
                              range(30))
    assert (res["n_lost"] == 0).all() and res["n_waiting_max"].max() > 0
    res = simulate_des_trials(build("boin"), P_TRUE, Conduct(accrual_per_month=None), SEED,
                              range(30))
    assert (res["n_lost"] == 0).all() and (res["n_waiting_max"] == 0).all()


def test_dropouts_are_replaced_and_counted():
    conduct = Conduct(accrual_per_month=None, dropout_prob=0.3)
    res = simulate_des_trials(build("boin"), P_TRUE, conduct, SEED, range(50))
    assert (res["n"].sum(axis=1) == 24).all()        # BOIN always reaches max_n evaluable
    assert (res["n_treated"] == res["n_evaluable"] + res["n_dropouts"]).all()
    assert res["n_dropouts"].mean() == pytest.approx(24 * 0.3 / 0.7, rel=0.15)


def test_accrual_gaps_are_exponential():
    from escalation_sim.engines.calendar.draws import DrawPlan
    plan = DrawPlan(Conduct(accrual_per_month=2.0), SEED)
    gaps, failed, sdays = plan.arrivals(np.arange(200, dtype=np.uint64), 0, 100)
    mean = 365.25 / 12 / 2.0
    se = mean / math.sqrt(gaps.size)
    assert abs(gaps.mean() - mean) < 4 * se
    assert abs(failed.mean() - 1 / 3) < 4 * math.sqrt(2 / 9 / failed.size)
    assert abs(sdays.mean() - 14.0) < 4 * 7.0 / math.sqrt(sdays.size)


def test_phase_draws_follow_the_documented_stream_layout():
    """draws.py's table: patient j, phase p uses phase-stream draws j*3P + 3p + (0, 1, 2) for
    (happens, days, fails); fail_at is the first phase that happens and fails."""
    from escalation_sim.engines.calendar.draws import ChunkDraws, DrawPlan
    conduct = Conduct(phases=[Phase(name="a", duration_days=2, failure_prob=0.2, probability=0.7),
                              Phase(name="m", kind="manufacturing", failure_prob=0.3,
                                    duration_days=DurationSpec(mean=25, sd=8, dist="normal")),
                              Phase(name="b", probability=0.4, duration_days=10),
                              Phase(name="ld", kind="lymphodepletion", duration_days=3,
                                    failure_prob=0.1)])
    P, prob = 4, [0.7, 1.0, 0.4, 1.0]
    fail = [0.2, 0.3, 0.0, 0.1]
    plan = DrawPlan(conduct, SEED)
    chunk = ChunkDraws(plan, np.arange(5, 25, dtype=np.uint64), 10, 12, 10)
    key = stream_key(SEED, "phase")
    for r, trial in enumerate(range(5, 25)):
        d = chunk.trial(r)
        d.more_patients()                      # the extension follows the same layout
        for j in range(len(d.fail_at)):
            base = j * 3 * P + 3 * np.arange(P)
            happens = uniforms(key, trial, base) < np.asarray(prob)
            fails = happens & (uniforms(key, trial, base + 2) < np.asarray(fail))
            assert d.phase_happens[j].tolist() == happens.tolist()
            assert d.fail_at[j] == (int(np.argmax(fails)) if fails.any() else -1)
            assert d.phase_days[j][2] == (10.0 if happens[2] else 0.0)


def test_simulate_one_and_result_columns():
    design = build("crm")
    t = simulate_one(design, P_TRUE, Conduct(), SEED, 3)
    res = simulate_des_trials(design, P_TRUE, Conduct(), SEED, [3])
    assert t.final_state == res["final_state"][0]
    assert t.t_end - t.first_enroll == res["duration_days"][0]
    for key in ("trial", "mtd", "stop_code", "n", "y", "duration_days", "n_screened",
                "n_enrolled", "n_treated", "n_lost", "n_waiting_max",
                "n_manufacturing_failures", "decision_times"):
        assert key in res
    assert res["decision_times"][0][-1] == res["duration_days"][0]
    assert STOP_CODES[0] is None and STOP_CODES[1:] == tuple(StopReason)


def test_bad_inputs():
    with pytest.raises(ValueError, match="p_true has 3 values for 4 doses"):
        simulate_des_trials(build("boin"), [0.1, 0.2, 0.3], Conduct(), 1, range(2))
    with pytest.raises(TypeError):
        simulate_des_trials(build("boin"), P_TRUE, None, 1, range(2))
    res = simulate_des_trials(build("boin"), P_TRUE, {"accrual_per_month": 3}, 1, range(2))
    assert res["n"].shape == (2, 4)


# =========================================================================== conduct
@pytest.mark.parametrize("bad,where,msg", [
    ({"dlt_window_days": -3}, "dlt_window_days", "must be > 0 (got -3.0)"),
    ({"accrual_per_month": 0}, "accrual_per_month", "must be > 0"),
    ({"screening": {"failure_prob": 1.5}}, "screening.failure_prob",
     "must be a probability in [0, 1] (got 1.5)"),
    ({"phases": [{"name": "m", "duration_days": -3}]}, "phases.0.duration_days.mean",
     "must be >= 0 (got -3.0)"),
    ({"phases": [{"name": "m", "duration_days": {"mean": 20, "sd": -1}}]},
     "phases.0.duration_days.sd", "must be >= 0 (got -1.0)"),
    ({"max_in_followup": 0}, "max_in_followup", "must be >= 1"),
    ({"stagger_days": -1}, "stagger_days", "must be >= 0 (got -1.0)"),
    ({"gate_before_phase": "infusion"}, "", "no phase named 'infusion'"),
    ({"phases": [{"name": "a"}, {"name": "a"}]}, "", "duplicate phase name(s) a"),
    ({"dropout_prob": 1.0}, "dropout_prob", "must be < 1"),
    ({"when_paused": "queue"}, "when_paused", ""),
    ({"unknown_key": 1}, "unknown_key", ""),
])
def test_conduct_validation_messages(bad, where, msg):
    with pytest.raises(pydantic.ValidationError) as err:
        Conduct.model_validate(bad)
    errors = err.value.errors()
    locs = [".".join(str(p) for p in e["loc"]) for e in errors]
    assert where in locs
    assert any(msg in e["msg"] for e in errors)


def test_conduct_defaults_and_zero():
    c = Conduct()
    assert [p.name for p in c.phases] == ["leukapheresis", "manufacturing", "bridging",
                                          "lymphodepletion", "rest"]
    assert c.gate_index == 3 and c.dlt_window_days == 28 and c.dlt_onset == "uniform"
    # lymphodepletion days -5 to -3, infusion on day 0
    assert c.phases[3].distribution.mean + c.phases[4].distribution.mean == 5
    assert c.mean_enrollment_to_infusion_days() == pytest.approx(5 + 21 + 0.3 * 14 + 3 + 2)
    z = Conduct.zero()
    assert z.accrual_per_month is None and z.phases == [] and not z.gated
    assert Conduct.model_validate(c.model_dump()) == c       # round trip
    y = Conduct.model_validate({"phases": [{"name": "m", "duration_days": 21}]})
    assert isinstance(y.phases[0].distribution, Fixed)


# =========================================================================== distributions
U = (np.arange(20000) + 0.5) / 20000            # stratified uniforms: mean of ppf = mean


@pytest.mark.parametrize("dist,ref", [
    (Gamma(21.0, 5.0), stats.gamma(a=(21 / 5) ** 2, scale=25 / 21)),
    (Gamma(3.0, 5.0), stats.gamma(a=(3 / 5) ** 2, scale=25 / 3)),
    (LogNormal(21.0, 5.0), stats.lognorm(s=math.sqrt(math.log1p((5 / 21) ** 2)),
                                         scale=21 / math.sqrt(1 + (5 / 21) ** 2))),
    (TruncNormal(10.0, 8.0), stats.truncnorm(a=-10 / 8, b=np.inf, loc=10, scale=8)),
    (Uniform(2.0, 8.0), stats.uniform(loc=2, scale=6)),
])
def test_distributions_against_scipy(dist, ref):
    x = dist.sample_from_uniforms(U)
    assert np.allclose(x, ref.ppf(U), rtol=1e-5, atol=1e-9)
    assert dist.mean == pytest.approx(ref.mean(), rel=1e-9)
    assert x.mean() == pytest.approx(ref.mean(), rel=2e-3)
    assert np.allclose(dist.cdf(x), U, atol=1e-6)


def test_gamma_table_matches_exact_quantiles_in_the_tails():
    u = np.array([2.0 ** -54, 1e-12, 1e-6, 0.3, 0.999999, 1 - 2.0 ** -53])
    for shape_sd in [(21, 5), (5, 3), (2, 3)]:
        g = Gamma(*shape_sd)
        exact = special.gammaincinv(g.shape, u) * g.scale
        assert np.allclose(g.sample_from_uniforms(u), exact, rtol=1e-5)


def test_sample_within_window():
    g = Gamma(7.0, 5.0)
    x = g.sample_within(U, 28.0)
    assert (x <= 28).all() and (x > 0).all()
    # conditional mean E[X | X <= 28] by quadrature
    ref = integrate.quad(lambda t: t * stats.gamma.pdf(t, a=g.shape, scale=g.scale), 0, 28)[0]
    ref /= stats.gamma.cdf(28, a=g.shape, scale=g.scale)
    assert x.mean() == pytest.approx(ref, rel=2e-3)


def test_duration_spec_parsing_and_validation():
    assert DurationSpec.model_validate(5).to_distribution() == Fixed(5.0)
    assert isinstance(make_distribution(21, 5), Gamma)
    assert isinstance(make_distribution(21, 5, "lognormal"), LogNormal)
    assert isinstance(make_distribution(21, 0, "lognormal"), Fixed)
    assert as_distribution(None) == Fixed(0.0) and as_distribution(3) == Fixed(3.0)
    u = make_distribution(10, 2, "uniform")
    assert u.low == pytest.approx(10 - 2 * math.sqrt(3))
    with pytest.raises(pydantic.ValidationError, match="would reach below 0 days"):
        DurationSpec(mean=2, sd=3, dist="uniform")
    with pytest.raises(pydantic.ValidationError, match="sd must be 0"):
        DurationSpec(mean=2, sd=3, dist="fixed")
    with pytest.raises(pydantic.ValidationError, match="mean must be > 0 when sd > 0"):
        DurationSpec(mean=0, sd=3)
    with pytest.raises(pydantic.ValidationError, match=r"sd <= 3 x mean"):
        DurationSpec(mean=1, sd=5)
    assert DurationSpec(mean=1, sd=5, dist="lognormal").to_distribution() == LogNormal(1, 5)
    assert DurationSpec(mean=1, sd=1e-300).to_distribution() == Fixed(1.0)
    with pytest.raises(ValueError, match=r"must be >= 0 \(got -1\)"):
        as_distribution(-1)


def test_known_release_shortcut_matches_gate_events():
    """Sentinel spacing without a binding cap lets the engine compute a patient's release
    day at enrollment once the sentinel is on its way; it must give what the gate events
    give."""
    from escalation_sim.engines.calendar.draws import ChunkDraws, DrawPlan, block_sizes
    from escalation_sim.engines.calendar.model import Setup
    from escalation_sim.engines.calendar.trial import Trial
    conduct = Conduct(accrual_per_month=5, stagger_days=12, dropout_prob=0.1,
                      phases=[Phase(name="mfg", kind="manufacturing", failure_prob=0.1,
                                    duration_days=DurationSpec(mean=20, sd=6)),
                              Phase(name="ld", kind="lymphodepletion", duration_days=3,
                                    failure_prob=0.1)])
    out = []
    for shortcut in (True, False):
        for type_name in ("boin", "tite-boin"):
            design = build(type_name)
            setup = Setup(design, P_TRUE, conduct, False, 10_000)
            assert setup.known_release
            setup.known_release = shortcut
            plan = DrawPlan(conduct, SEED)
            chunk = ChunkDraws(plan, np.arange(40, dtype=np.uint64), *block_sizes(conduct, 24))
            out.append([Trial(setup, chunk.trial(r)).run() for r in range(40)])
    for fast, slow in [(out[0], out[2]), (out[1], out[3])]:
        for a, b in zip(fast, slow, strict=True):
            assert a.final_state == b.final_state
            # same calendar up to rounding (a sum of delays vs a chain of events)
            assert a.t_end == pytest.approx(b.t_end, abs=1e-9)
            assert np.allclose([p.infusion_day for p in a.pats],
                               [p.infusion_day for p in b.pats], atol=1e-9)


# =========================================================================== parts
def test_policy_is_chosen_by_the_design_and_decides_whether_the_cap_can_bind():
    """Classic designs never have more patients in flight than a cohort has slots, so a
    follow-up cap of at least the cohort size never binds for them; it does for TITE."""
    from escalation_sim.engines.calendar import CohortPolicy, TimeToEventPolicy
    from escalation_sim.engines.calendar.model import Setup
    conduct = Conduct(max_in_followup=3, stagger_days=0)
    classic = Setup(build("boin"), P_TRUE, conduct, False, 1000)
    tite = Setup(build("tite-boin"), P_TRUE, conduct, False, 1000)
    assert classic.policy is CohortPolicy and tite.policy is TimeToEventPolicy
    assert classic.cap is None and not classic.gated
    assert tite.cap == 3 and tite.gated
    assert Setup(build("boin"), P_TRUE, Conduct(max_in_followup=2), False, 1000).cap == 2


def test_clock_orders_calls_as_simpy_timeouts():
    """SimpyClock.after must fire in the order simpy gives timeouts (day, then scheduling
    order), including ties and calls scheduled from inside a call."""
    import simpy
    from escalation_sim.engines.calendar.clock import SimpyClock
    delays = [3.0, 1.0, 3.0, 0.0, 2.5, 1.0, 0.0, 3.0]
    nested = {1: [0.0, 2.0], 4: [0.5], 6: [0.0]}      # call i schedules more calls

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
    ref = run(env_schedule, lambda: env.now,
              lambda h: (ref_handler.update(h=h), env.run()))
    clock = SimpyClock()
    box = {}
    got = run(lambda dl, tag: clock.after(dl, lambda call: box["h"](call.arg), tag),
              lambda: clock.now,
              lambda h: (box.update(h=h), clock.after(10.0, lambda call: clock.stop()),
                         clock.run()))
    assert got == ref
    assert len(ref) == len(delays) + 4


def test_released_trial_is_freed_by_reference_counting():
    """simulate_des_trials pauses the garbage collector, so a finished trial must hold no
    reference cycle once released (else memory grows until the collector runs).  The simpy
    environment keeps its own small cycle (simpy binds its event classes to it), detached
    from the trial."""
    import gc
    import weakref
    from escalation_sim.engines.calendar.draws import ChunkDraws, DrawPlan, block_sizes
    from escalation_sim.engines.calendar.model import Setup
    from escalation_sim.engines.calendar.trial import Trial
    conduct = LOGISTICS[1]
    for type_name in ("boin", "tite-boin"):
        setup = Setup(build(type_name), P_TRUE, conduct, True, 10_000)
        chunk = ChunkDraws(DrawPlan(conduct, SEED), np.arange(3, dtype=np.uint64),
                           *block_sizes(conduct, 24))
        gc_on = gc.isenabled()
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            t = Trial(setup, chunk.trial(0)).run()
            assert len(t.pats) > 5
            t.release()
            ref = weakref.ref(t)
            del t
            assert ref() is None, type_name
            gc.collect()
            ours = {type(o).__name__ for o in gc.garbage
                    if type(o).__module__.startswith("escalation_sim")}
            assert ours <= {"SimpyClock"}, (type_name, ours)   # no patient, cohort, part
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            if gc_on:
                gc.enable()


def test_time_to_event_decision_memo_is_exact(monkeypatch):
    """The TITE policy memoises decide (pure in the state); without the memo, every trial
    must come out the same."""
    from escalation_sim.engines.calendar import TimeToEventPolicy
    conduct = LOGISTICS[1]
    keys = ("mtd", "stop_code", "duration_days", "n", "y", "n_decisions", "n_treated")
    for type_name in ("tite-boin", "tite-crm"):
        design = build(type_name)
        memo = simulate_des_trials(design, P_TRUE, conduct, SEED, range(40))
        with monkeypatch.context() as m:
            m.setattr(TimeToEventPolicy, "decide", lambda self: self.design.decide(self.state()))
            plain = simulate_des_trials(design, P_TRUE, conduct, SEED, range(40))
        for key in keys:
            assert np.array_equal(memo[key], plain[key]), (type_name, key)
        assert [list(a) for a in memo["decision_times"]] == \
            [list(a) for a in plain["decision_times"]]


def test_infusion_follows_the_last_phase_when_the_cap_never_binds():
    """The conduct's phases run in sequence and infusion ends the last one (rest): the
    infusion day is the rest phase's end day, whether or not a gate part exists.  Before the
    fix, a dropped non-binding cap left out the phases after the gate position (5 days)."""
    conduct = Conduct(max_in_followup=3)        # cohorts of 3: the cap never binds
    res = simulate_des_trials(build("boin"), P_TRUE, conduct, SEED, range(5),
                              record_patients=True)
    log = res["patients"]
    ev = log["evaluable"]
    assert np.allclose(log["infusion_day"][ev], log["rest_end_day"][ev])


# =========================================================================== patient log
def test_swimmer_table_converts_relative_days():
    from escalation_sim.engines.calendar import swimmer_table
    # a log in the engine's form: dlt_day and dropout_day are days after infusion; patient
    # 0-based; one screen failure (patient -1) to be dropped
    log = {"trial": [0, 0, 0], "arrival_index": [0, 1, 2], "arrival_day": [1.0, 5.0, 9.0],
           "screening_end_day": [10.0, 12.0, 20.0], "patient": [0, -1, 1],
           "dose_level": [1, 0, 2], "infusion_day": [40.0, np.nan, 60.0],
           "dlt": [True, False, False], "dlt_day": [6.5, np.nan, np.nan],
           "dropout_day": [np.nan, np.nan, 9.0], "window_end_day": [68.0, np.nan, np.nan],
           "evaluable": [True, False, False]}
    df = swimmer_table(log)
    assert df["patient"].tolist() == [1, 2]
    assert df["dose"].tolist() == [1, 2]
    assert df["dlt_day"].iloc[0] == 46.5                     # 40 + 6.5
    assert df["window_end_day"].tolist() == [68.0, 69.0]     # drop-out: 60 + 9
    assert df["screening_start_day"].tolist() == [1.0, 9.0]
    assert len(swimmer_table(log, include_not_enrolled=True)) == 3
    with pytest.raises(ValueError, match="several trials"):
        swimmer_table({**log, "trial": [0, 1, 1]})


def test_patient_log_api_matches_the_simulation():
    """es.patient_log's trial t is trial t of es.simulate (same seed): its evaluable patients
    and DLTs per dose are the run's per-trial counts (kept by the runner, another path)."""
    import escalation_sim as es
    from pathlib import Path
    sc = es.load_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "relma_cel_sle.yaml")
    designs = ["3+3", "tite-boin"]
    log = es.patient_log(sc, designs, trials=[2, 5], seed=11)
    assert list(log.columns[:3]) == ["design", "trial", "arrival_index"]
    assert sorted(set(zip(log["design"], log["trial"], strict=True))) == [
        ("3+3", 2), ("3+3", 5), ("tite-boin", 2), ("tite-boin", 5)]
    run = es.simulate(sc, n_trials=6, seed=11, designs=designs, keep_trials=True, n_jobs=1)
    per_trial = run.trials().set_index(["design", "trial"])
    for (name, t), rows in log.groupby(["design", "trial"]):
        ev = rows[rows["evaluable"]]
        for k in range(1, 5):
            assert (ev["dose_level"] == k).sum() == per_trial.loc[(name, t), f"n_{k}"]
            assert ((ev["dose_level"] == k) & ev["dlt"]).sum() == \
                per_trial.loc[(name, t), f"dlt_{k}"]
        assert len(rows) == per_trial.loc[(name, t), "n_screened"]
    first = es.patient_log(sc, "boin", trials=2, seed=11)
    assert sorted(first["trial"].unique()) == [0, 1] and set(first["design"]) == {"boin"}
    for bad in (0, [-1], [], True, [1.5]):
        with pytest.raises(ValueError, match="trial"):
            es.patient_log(sc, "boin", trials=bad)
    no_conduct = es.load_scenario_text(
        "name: x\ndoses: [a, b]\ntruth: {p_dlt: [0.1, 0.3]}\ntarget: 0.25\n"
        "trial: {max_n: 6}\ndesigns: [{type: boin}]\n")
    with pytest.raises(ValueError, match="no conduct block"):
        es.patient_log(no_conduct)


# =========================================================================== properties
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@st.composite
def conducts(draw):
    mean = draw(st.floats(1, 30))
    phases = [Phase(name="mfg", kind="manufacturing",
                    duration_days=DurationSpec(mean=mean, sd=mean * draw(st.floats(0, 1)),
                                               dist=draw(st.sampled_from(["gamma", "lognormal",
                                                                          "normal"]))),
                    failure_prob=draw(st.sampled_from([0.0, 0.2]))),
              Phase(name="bridge", probability=draw(st.sampled_from([0.0, 0.5, 1.0])),
                    duration_days=draw(st.sampled_from([0.0, 7.0]))),
              Phase(name="ld", kind="lymphodepletion", duration_days=3)]
    return Conduct(accrual_per_month=draw(st.sampled_from([None, 0.5, 2.0, 20.0])),
                   max_wait_days=draw(st.sampled_from([None, 0.0, 15.0])),
                   when_paused=draw(st.sampled_from(["wait", "leave"])),
                   phases=phases, dropout_prob=draw(st.sampled_from([0.0, 0.25])),
                   stagger_days=draw(st.sampled_from([0.0, 9.0])),
                   stagger_mode=draw(st.sampled_from(["sentinel", "all"])),
                   max_in_followup=draw(st.sampled_from([None, 1, 2])),
                   review_days=draw(st.sampled_from([0.0, 5.0])),
                   dlt_window_days=draw(st.sampled_from([10.0, 28.0])))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conduct=conducts(), type_name=st.sampled_from(["3+3", "boin", "crm", "tite-boin"]),
       seed=st.integers(0, 2**31))
def test_event_log_invariants(conduct, type_name, seed):
    design = build(type_name)
    res = simulate_des_trials(design, P_TRUE, conduct, seed, range(4), record_patients=True)
    log = res["patients"]
    ev = log["evaluable"]
    u = uniforms(stream_key(seed, "dlt"), log["trial"][ev], log["evaluable_index"][ev])
    assert (log["dlt"][ev] == (u < np.asarray(P_TRUE)[log["dose_level"][ev] - 1])).all()
    assert (res["n"].sum(axis=1) == res["n_evaluable"]).all()
    assert (res["n"].sum(axis=1) <= 24).all()
    enrolled = log["patient"] >= 0
    assert (log["enrolled_day"][enrolled] >= log["screening_end_day"][enrolled] - 1e-9).all()
    if conduct.max_wait_days is not None:
        wait = log["enrolled_day"][enrolled] - log["screening_end_day"][enrolled]
        assert (wait <= conduct.max_wait_days + 1e-9).all()
    infused = ~np.isnan(log["infusion_day"])
    end = np.where(ev, log["window_end_day"], log["infusion_day"] + log["dropout_day"])
    for r in range(4):
        rows = log["trial"] == r
        assert res["n_screened"][r] == rows.sum()
        assert res["n_enrolled"][r] == (rows & enrolled).sum()
        assert res["n_treated"][r] == (rows & infused).sum()
        if conduct.max_in_followup is not None:
            sel = rows & infused
            assert _max_overlap(log["ld_start_day"][sel].tolist(),
                                end[sel].tolist()) <= conduct.max_in_followup
        if conduct.stagger_days > 0:
            for days in _infusions_by(log, r, "dose_level").values():
                if conduct.stagger_mode == "sentinel":
                    assert (days[1:] >= days[0] + conduct.stagger_days - 1e-6).all()
                else:
                    assert (np.diff(days) >= conduct.stagger_days - 1e-6).all()
