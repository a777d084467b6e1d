"""The calendar engine on the graded outcome model (issue 12, calendar side).

References: the outcome model's own per-patient outcomes (common random numbers: the
calendar engine's patient k must be ``OutcomeModel.outcomes``' patient k), the binary
engine's trials (a binary truth given as an ``OutcomeModel`` must give them to the bit), and
hand-built truths whose grades and onsets are certain (probability 1, fixed onset days), so
what a time-to-event design may have seen at each decision time is known by hand.
"""
from __future__ import annotations


import numpy as np
import pytest

from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.registry import get_entry
from escalation_sim.engines.calendar import simulate_des_trials, simulate_one
from escalation_sim.engines.calendar.policies import ScoreTimeToEventPolicy, TimeToEventPolicy
from escalation_sim.inputs.conduct import Conduct
from escalation_sim.inputs.distributions import Fixed, make_distribution
from escalation_sim.inputs.truth import OutcomeModel, ToxicityType

SEED = 77
CTX = DesignContext(n_doses=3, target=0.3, cohort_size=3, max_n=15, start_dose=0)
RULE = [("CRS", 3), ("ICANS", 3)]


def build(type_name: str, ctx: DesignContext = CTX, **kw):
    entry = get_entry(type_name)
    return entry.build(entry.spec_model(type=type_name, **kw), ctx)


def cart_conduct(**kw) -> Conduct:
    base = dict(accrual_per_month=2.0, screening={"failure_prob": 0.2, "duration_days": 7},
                phases=[{"name": "manufacturing", "kind": "manufacturing",
                         "duration_days": {"mean": 21, "sd": 5}, "failure_prob": 0.05},
                        {"name": "lymphodepletion", "kind": "lymphodepletion",
                         "duration_days": 3}],
                dlt_window_days=28, stagger_days=7, max_in_followup=3, dropout_prob=0.05)
    base.update(kw)
    return Conduct.model_validate(base)


def graded_model(rho=0.5, icans_mean=8.0) -> OutcomeModel:
    crs = ToxicityType.from_grades("CRS", {1: [0.3, 0.35, 0.4], 2: [0.1, 0.15, 0.2],
                                           3: [0.05, 0.1, 0.2], 4: [0.0, 0.02, 0.05]},
                                   make_distribution(3.0, 2.0, "gamma"))
    icans = ToxicityType.from_grades("ICANS", {1: [0.1, 0.15, 0.2], 2: [0.05, 0.1, 0.1],
                                               3: [0.03, 0.08, 0.15], 4: [0.0, 0.02, 0.06]},
                                     make_distribution(icans_mean, 4.0, "gamma"))
    return OutcomeModel([crs, icans], correlation=rho, rule=RULE, window_days=28.0)


# ------------------------------------------------------------------ binary truth unchanged
@pytest.mark.parametrize("type_name", ["boin", "tite-boin", "3+3"])
@pytest.mark.parametrize("onset", ["uniform", {"mean": 7, "sd": 5, "dist": "gamma"}])
def test_binary_model_gives_the_binary_trials_to_the_bit(type_name, onset):
    """Reference: the engine given the rates themselves (today's binary path)."""
    p = [0.08, 0.2, 0.4]
    conduct = cart_conduct(dlt_onset=onset)
    design = build(type_name)
    a = simulate_des_trials(design, p, conduct, SEED, range(40), record_patients=True)
    b = simulate_des_trials(design, OutcomeModel.binary(p), conduct, SEED, range(40),
                            record_patients=True)
    for key in ("mtd", "n", "y", "duration_days", "n_treated", "n_decisions"):
        np.testing.assert_array_equal(a[key], b[key])
    for x, y in zip(a["decision_times"], b["decision_times"], strict=True):
        np.testing.assert_array_equal(x, y)
    assert set(a["patients"]) == set(b["patients"])      # no graded columns for a binary truth


# ------------------------------------------------------------------ common random numbers
def test_grades_at_every_dose_equal_the_models_outcomes():
    """Reference: OutcomeModel.outcomes at each dose (the engine's table per patient)."""
    m = graded_model()
    t = np.repeat(np.arange(5), 40)
    k = np.tile(np.arange(40), 5)
    grade, onset = m.grades_at_every_dose(SEED, t, k)
    for d in range(3):
        out = m.outcomes(SEED, t, k, d)
        np.testing.assert_array_equal(grade[:, :, d].T, out.grade)
        ev = out.grade > 0
        np.testing.assert_array_equal(onset.T[ev], out.onset_day[ev])


@pytest.mark.parametrize("type_name", ["boin", "tite-boin"])
def test_each_patient_is_the_outcome_models_patient(type_name):
    """Every evaluable patient of the log (its evaluable index k, trial t, dose d) has exactly
    OutcomeModel.outcomes(seed, t, k, d): per-type grades and onsets, the DLT flag and day,
    late events and the worst grade in the window."""
    m = graded_model()
    res = simulate_des_trials(build(type_name), m, cart_conduct(), SEED, range(30),
                              record_patients=True)
    log = res["patients"]
    ev = log["evaluable"]
    t, k, d = log["trial"][ev], log["evaluable_index"][ev], log["dose_level"][ev] - 1
    out = m.outcomes(SEED, t, k, d)
    np.testing.assert_array_equal(log["dlt"][ev], out.dlt)
    np.testing.assert_array_equal(log["late"][ev], out.late)
    np.testing.assert_array_equal(log["worst_grade"][ev], out.worst_grade)
    np.testing.assert_array_equal(log["dlt_day"][ev][out.dlt], out.dlt_day[out.dlt])
    for j, name in enumerate(m.type_names):
        np.testing.assert_array_equal(log[f"{name}_grade"][ev], out.grade[:, j])
        has = out.grade[:, j] > 0
        np.testing.assert_array_equal(log[f"{name}_onset_day"][ev][has], out.onset_day[has, j])
        assert np.isnan(log[f"{name}_onset_day"][ev][~has]).all()
    # the design's y are the logged DLTs (binary design)
    for r, trial in enumerate(res["trial"]):
        rows = ev & (log["trial"] == trial)
        for dose in range(3):
            sel = rows & (log["dose_level"] == dose + 1)
            assert res["y"][r, dose] == int(log["dlt"][sel].sum())
    assert not (log["dlt"] & log["late"]).any()


def test_same_patients_in_every_design():
    """Common random numbers: patient k of trial t has the same grades whatever the design
    (the dose aside): at equal doses, equal outcomes."""
    m = graded_model()
    logs = [simulate_des_trials(build(n), m, cart_conduct(), SEED, range(20),
                                record_patients=True)["patients"] for n in ("boin", "tite-boin")]
    seen = {}
    for log in logs:
        ev = log["evaluable"]
        for t, k, d, g1, g2 in zip(log["trial"][ev], log["evaluable_index"][ev],
                                   log["dose_level"][ev], log["CRS_grade"][ev],
                                   log["ICANS_grade"][ev], strict=True):
            key = (int(t), int(k), int(d))
            assert seen.setdefault(key, (g1, g2)) == (g1, g2)


def test_late_events_are_logged_and_never_dlts():
    """ICANS always grade 3 but starting on day 40 (after the 28-day window): no DLT ever,
    every evaluable patient has a late event; CRS never qualifies."""
    crs = ToxicityType.from_grades("CRS", {2: [0.5, 0.5, 0.5]}, Fixed(2.0))
    icans = ToxicityType.from_grades("ICANS", {3: [1.0, 1.0, 1.0]}, Fixed(40.0))
    m = OutcomeModel([crs, icans], rule=RULE, window_days=28.0)
    assert m.dlt_rates().tolist() == [0.0, 0.0, 0.0]          # exact: q_ICANS = 0
    res = simulate_des_trials(build("tite-boin"), m, cart_conduct(), SEED, range(10),
                              record_patients=True)
    log = res["patients"]
    ev = log["evaluable"]
    assert ev.sum() > 0 and res["y"].sum() == 0 and not log["dlt"].any()
    assert log["late"][ev].all() and not log["late"][~ev].any()
    np.testing.assert_array_equal(log["ICANS_onset_day"][ev], 40.0)
    assert (log["worst_grade"][ev] <= 2).all()                # ICANS is outside the window


def test_window_mismatch_is_refused():
    with pytest.raises(ValueError, match="DLT window"):
        simulate_des_trials(build("boin"), graded_model(), cart_conduct(dlt_window_days=21),
                            SEED, range(2))


# ------------------------------------------------------------------ what a TITE design sees
def _recording(monkeypatch, cls=TimeToEventPolicy):
    """Record (time, TiteState) each time a time-to-event design is asked."""
    seen = []
    orig = cls.state

    def state(self):
        st = orig(self)
        seen.append((self.trial.clock.now, st))
        return st

    monkeypatch.setattr(cls, "state", state)
    return seen


def test_tite_sees_early_crs_at_once_and_late_icans_only_when_it_starts(monkeypatch):
    """Hand-built: every patient has grade 2 CRS on day 2 (not a DLT) and grade 3 ICANS on day
    20 (a DLT); zero logistics, so the first cohort of 3 is infused on day 0.  TITE-BOIN
    suspends (3 of 3 pending), sees nothing on day 2 (grade 2 CRS is no DLT) and sees the
    first DLT on day 20 exactly, while the day-2 CRS events have long passed."""
    seen = _recording(monkeypatch)
    crs = ToxicityType.from_grades("CRS", {2: [1.0, 1.0, 1.0]}, Fixed(2.0))
    icans = ToxicityType.from_grades("ICANS", {3: [1.0, 1.0, 1.0]}, Fixed(20.0))
    m = OutcomeModel([crs, icans], rule=RULE, window_days=28.0)
    tr = simulate_one(build("tite-boin"), m, Conduct.zero(28.0), SEED, 0)
    with_dlt = [(now, st) for now, st in seen if sum(st.y) > 0]
    # the three day-20 onsets are three events at one instant, processed one by one
    assert with_dlt and with_dlt[0][0] == 20.0
    assert with_dlt[0][1].n == (3, 0, 0) and with_dlt[0][1].y == (1, 0, 0)
    assert [now for now, st in seen if now < 20.0] == [0.0, 0.0]     # start, then suspend
    assert all(sum(st.y) == 0 for now, st in seen if now < 20.0)
    for p in tr.pats:
        assert p.dlt and tr.toxicity.onset_day(p) == 20.0
        assert tr.toxicity.worst_late(p) == (3, False)
        assert sorted(tr.toxicity.events(p)) == [(0, 2, 2.0), (1, 3, 20.0)]


def test_tite_sees_each_dlt_exactly_when_its_qualifying_onset_has_passed(monkeypatch):
    """At every decision of TITE-BOIN on a random graded truth with real logistics, y at each
    dose is the number of patients there whose qualifying onset (infusion + dlt_day) is not
    later than the decision time."""
    seen = _recording(monkeypatch)
    m = graded_model(icans_mean=12.0)
    design = build("tite-boin")
    for trial in range(6):
        seen.clear()
        tr = simulate_one(design, m, cart_conduct(), SEED, trial)
        for now, st in seen:
            y = [0, 0, 0]
            for p in tr.pats:
                if p.dlt and p.infusion_day >= 0 and \
                        p.infusion_day + tr.toxicity.onset_day(p) <= now:
                    y[p.dose] += 1
            assert list(st.y) == y, (trial, now)


# ------------------------------------------------------------------ score designs (TITE-gBOIN)
PHI_G = 0.47 / 1.5


def test_tite_gboin_sees_units_of_started_events_and_stops_pending_at_the_first(monkeypatch):
    """Hand-built: every patient has grade 2 CRS on day 2 (1 unit of 3 with the default
    scores 0/0/0.5/1/1.5) and grade 3 ICANS on day 20 (2 units).  Zero logistics: the first
    cohort of 3 is infused on day 0; TITE-gBOIN suspends (3 of 3 pending).  On day 2 the
    CRS onsets make each patient non-pending with 1 unit (contract point 5); on day 20 the
    ICANS onsets raise each to 2 units."""
    seen = _recording(monkeypatch, ScoreTimeToEventPolicy)
    crs = ToxicityType.from_grades("CRS", {2: [1.0, 1.0, 1.0]}, Fixed(2.0))
    icans = ToxicityType.from_grades("ICANS", {3: [1.0, 1.0, 1.0]}, Fixed(20.0))
    m = OutcomeModel([crs, icans], rule=RULE, window_days=28.0)
    d = build("tite-gboin", target=PHI_G)
    tr = simulate_one(d, m, Conduct.zero(28.0), SEED, 0)
    assert [(now, st.y, len(st.pending)) for now, st in seen if now < 2.0] == \
        [(0.0, (0, 0, 0), 0), (0.0, (0, 0, 0), 3)]
    first_day2 = [(st.y, len(st.pending)) for now, st in seen if now == 2.0]
    assert first_day2[0] == ((1, 0, 0), 2)          # one event processed, two to come
    assert all(st.max_units == 3 for _, st in seen)
    day20 = [st for now, st in seen if now == 20.0]
    assert day20 and day20[0].y[0] == max(st.y[0] for now, st in seen if now < 20.0) + 1
    for p in tr.pats:
        if p.status == 1:
            assert p.seen == 2 and p.worst == 3


def test_score_design_needs_a_graded_truth():
    with pytest.raises(ValueError, match="graded truth"):
        simulate_des_trials(build("tite-gboin", target=PHI_G), [0.1, 0.2, 0.3], cart_conduct(),
                            SEED, range(1))


@pytest.mark.parametrize("onset_mean", [3.0, 12.0])
def test_tite_gboin_with_complete_follow_up_equals_gboin_trial_by_trial(onset_mean):
    """Monte Carlo property (300 trials): TITE-gBOIN suspending whenever anybody is pending
    at the current dose (max_pending_fraction 0) decides on complete data only -- with one
    graded type a patient's first scored event is its only one, so a non-pending patient's
    units are final -- and its trials then equal gBOIN's in the calendar engine (classic
    cohorts) decision for decision: same patients (common random numbers), same doses,
    unit sums, stops and MTD."""
    crs = ToxicityType.from_grades("CRS", {1: [0.3, 0.35, 0.4], 2: [0.1, 0.15, 0.2],
                                           3: [0.05, 0.1, 0.2], 4: [0.0, 0.02, 0.05]},
                                   make_distribution(onset_mean, 4.0, "gamma"))
    m = OutcomeModel([crs], rule=[("CRS", 3)], window_days=28.0)
    conduct = Conduct.zero(28.0)
    tg = build("tite-gboin", target=PHI_G, max_pending_fraction=0.0)
    g = build("gboin", target=PHI_G)
    a = simulate_des_trials(tg, m, conduct, SEED, range(300))
    b = simulate_des_trials(g, m, conduct, SEED, range(300))
    np.testing.assert_array_equal(a["n"], b["n"])
    np.testing.assert_array_equal(a["y"], b["y"])
    np.testing.assert_array_equal(a["mtd"], b["mtd"])
    np.testing.assert_array_equal(a["stop_code"], b["stop_code"])
    assert a["y"].sum() > 0 and len(set(a["mtd"].tolist())) > 2


def test_gboin_units_in_the_calendar_engine_follow_the_outcome_model():
    """gBOIN's y in the calendar engine is the sum of score_units[worst grade in the window]
    of OutcomeModel.outcomes for the logged patients."""
    m = graded_model()
    g = build("gboin", target=PHI_G)
    res = simulate_des_trials(g, m, cart_conduct(), SEED, range(20), record_patients=True)
    log = res["patients"]
    units = np.array(g.score_units)
    for r, trial in enumerate(res["trial"]):
        rows = log["evaluable"] & (log["trial"] == trial)
        out = m.outcomes(SEED, trial, log["evaluable_index"][rows], log["dose_level"][rows] - 1)
        for dose in range(3):
            sel = log["dose_level"][rows] == dose + 1
            assert res["y"][r, dose] == int(units[out.worst_grade[sel]].sum())
            assert res["dlt"][r, dose] == int(out.dlt[sel].sum())     # DLTs, for the OCs


def test_a_type_without_onset_law_starts_on_the_conducts_onset_day():
    """A type given without onset_days starts inside the window on the conduct's dlt_onset
    day (here fixed: day 5); the other type keeps its own law."""
    crs = ToxicityType.from_grades("CRS", {3: [0.5, 0.5, 0.5]})            # no onset law
    icans = ToxicityType.from_grades("ICANS", {3: [0.5, 0.5, 0.5]}, Fixed(40.0))
    m = OutcomeModel([crs, icans], rule=RULE, window_days=28.0)
    res = simulate_des_trials(build("boin"), m, cart_conduct(dlt_onset=5.0), SEED, range(10),
                              record_patients=True)
    log = res["patients"]
    ev = log["evaluable"]
    has = ev & (log["CRS_grade"] > 0)
    assert has.sum() > 5 and (log["CRS_onset_day"][has] == 5.0).all()
    assert np.isnan(log["CRS_onset_day"][ev & (log["CRS_grade"] == 0)]).all()
    np.testing.assert_array_equal(log["dlt"][ev], log["CRS_grade"][ev] >= 3)
    np.testing.assert_array_equal(log["dlt_day"][has], 5.0)
    np.testing.assert_array_equal(log["late"][ev], (log["CRS_grade"][ev] == 0)
                                  & (log["ICANS_grade"][ev] >= 3))


@pytest.mark.parametrize("type_name", ["boin", "tite-boin"])
def test_recording_the_log_changes_no_trial(type_name):
    """Without a patient log a binary design draws only the onsets of events meeting the DLT
    rule (all its flags need); with one, every onset.  The trials are the same."""
    m = graded_model()
    a = simulate_des_trials(build(type_name), m, cart_conduct(), SEED, range(60))
    b = simulate_des_trials(build(type_name), m, cart_conduct(), SEED, range(60),
                            record_patients=True)
    for key in ("mtd", "n", "y", "duration_days", "n_decisions"):
        np.testing.assert_array_equal(a[key], b[key])


def test_more_doses_than_mask_bits_reads_the_arrays():
    """63 doses (more than the 62 DLT-flag bits): the engine reads the flags from the arrays,
    still exactly the outcome model's."""
    from escalation_sim.engines.calendar.draws import MASK_DOSES
    K = MASK_DOSES + 1
    ramp = np.linspace(0.01, 0.3, K)
    crs = ToxicityType.from_grades("CRS", {2: list(ramp), 3: list(ramp / 2)},
                                   make_distribution(3.0, 2.0, "gamma"))
    icans = ToxicityType.from_grades("ICANS", {3: list(ramp / 2)},
                                     make_distribution(8.0, 4.0, "gamma"))
    m = OutcomeModel([crs, icans], correlation=0.3, rule=RULE, window_days=28.0)
    ctx = DesignContext(n_doses=K, target=0.3, cohort_size=3, max_n=30, start_dose=0)
    res = simulate_des_trials(build("boin", ctx), m, cart_conduct(), SEED, range(8),
                              record_patients=True)
    log = res["patients"]
    ev = log["evaluable"]
    out = m.outcomes(SEED, log["trial"][ev], log["evaluable_index"][ev],
                     log["dose_level"][ev] - 1)
    np.testing.assert_array_equal(log["dlt"][ev], out.dlt)
    assert res["y"].sum() == out.dlt.sum() > 0
    plain = simulate_des_trials(build("boin", ctx), m, cart_conduct(), SEED, range(8))
    np.testing.assert_array_equal(plain["y"], res["y"])


def test_an_unused_conduct_onset_is_noted():
    """conduct.dlt_onset only times types without onset_days: with a law for every type the
    run says it is not used (a RunNote, printed as a note by the command line)."""
    import warnings

    import yaml

    import escalation_sim as es
    from escalation_sim.run import RunNote
    from pathlib import Path
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "scenarios" /
                          "cart_crs_icans.yaml").read_text())
    raw["designs"] = [{"type": "boin"}]
    for onset, noted in ((None, False), ({"mean": 7, "sd": 3}, True)):
        if onset is not None:
            raw["conduct"]["dlt_onset"] = onset
        sc = es.load_scenario_text(yaml.safe_dump(raw), "c.yaml")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            es.simulate(sc, n_trials=5, seed=1, n_jobs=1)
        notes = [str(w.message) for w in caught if issubclass(w.category, RunNote)]
        assert any("conduct.dlt_onset is not used" in x for x in notes) is noted
