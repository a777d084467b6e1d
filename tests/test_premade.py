"""``conduct.manufacture_before_slot``: leukapheresis and manufacturing start when a patient
is screened in; a patient on the waiting list enters with the product made or under way
(PremadePathway in escalation_sim/engines/calendar/pathway.py).

The calendar tests are built by hand: arrivals are replaced by one eligible patient every 10
days (days 10, 20, 30, ...), screening takes 0 days and never fails, the phases are fixed
(leukapheresis 1 day, manufacturing 21, lymphodepletion 3, rest 2: 27 days from enrollment
to infusion, 22 of them premade), no gate, no drop-out, no failure, a 28-day window, BOIN
with cohorts of 3, and a truth so safe that the first nine patients have no DLT (checked):
every expected day below is worked out in the comments from these inputs alone.
"""
import numpy as np
import pytest

from escalation_sim.engines.calendar import simulate_des_trials, simulate_one
from escalation_sim.engines.calendar.draws import DrawPlan
from escalation_sim.engines.calendar.log import patient_rows
from escalation_sim.inputs.conduct import Conduct
from escalation_sim.inputs.scenario import ScenarioError, load_scenario, load_scenario_dict

PHASES = [{"name": "leukapheresis", "kind": "leukapheresis", "duration_days": 1},
          {"name": "manufacturing", "kind": "manufacturing", "duration_days": 21},
          {"name": "lymphodepletion", "kind": "lymphodepletion", "duration_days": 3},
          {"name": "rest", "duration_days": 2}]
COSTS = {"screening": 0, "manufacturing": 1, "infusion": 0, "per_month": 0}


def _scenario(extra, designs=None, p=None):
    sc = load_scenario("scenarios/relma_cel_sle.yaml")
    raw = dict(sc.raw)
    raw["designs"] = designs or [{"type": "boin"}]
    raw["truth"] = {"p_dlt": p or [0.001, 0.002, 0.003, 0.004]}
    base = {"screening": {"failure_prob": 0.0, "duration_days": 0}, "phases": PHASES,
            "stagger_days": 0, "max_in_followup": None, "dropout_prob": 0.0,
            "accrual_per_month": 3.0}
    raw["conduct"] = dict(raw["conduct"], **{**base, **extra})
    return load_scenario_dict(raw, "test")


@pytest.fixture
def every_ten_days(monkeypatch):
    def arrivals(self, trials, start, size):
        m = trials.size
        return (np.full((m, size), 10.0), np.zeros((m, size), dtype=bool),
                np.zeros((m, size)))
    monkeypatch.setattr(DrawPlan, "arrivals", arrivals)


def _trial(on, max_wait):
    sc = _scenario({"manufacture_before_slot": on, "max_wait_days": max_wait,
                    "costs": COSTS})
    t = simulate_one(sc.designs[0].design, sc.model.truth.p_dlt, sc.model.conduct, 1, 0)
    assert not any(p.dlt for p in t.pats[:9])            # the precondition
    return t


def test_products_made_while_waiting(every_ten_days):
    """max_wait_days 30.  Cohort 1 (dose 1): patients ready on days 10, 20, 30 take the
    three slots at once (nothing premade): infusions 37, 47, 57, windows end 65, 75, 85;
    BOIN escalates on day 85 (0/3).  On the list then: day 40 (deadline 70: lost on day
    70), 50 (lost on 80), 60, 70, 80 (deadlines 90, 100, 110).  Cohort 2 (dose 2) on day
    85 takes 60, 70, 80, screened in 25, 15 and 5 days earlier:
      * 60: its product was ready on day 82 (60 + 22): lymphodepletion on day 85, infusion 90;
      * 70: manufacturing ends on day 92: infusion 97;
      * 80: manufacturing ends on day 102: infusion 107.
    Windows end 118, 125, 135: decision on day 135 (escalate, 0/3).  On the list: 90 and 100
    lost (deadlines 120, 130), 110, 120, 130 (waited 25, 15, 5): infusions 135 + 5 = 140,
    120 + 27 = 147, 130 + 27 = 157."""
    t = _trial(True, 30)
    pats = t.pats[:9]
    assert [p.enrolled_day for p in pats] == pytest.approx(
        [10, 20, 30, 85, 85, 85, 135, 135, 135])
    assert [p.infusion_day for p in pats] == pytest.approx(
        [37, 47, 57, 90, 97, 107, 140, 147, 157])
    assert [p.dose for p in pats] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    rows = {r["patient"]: r for r in patient_rows(t) if r["patient"] >= 0}
    # the log: when each phase ran, and the days from screened in to enrollment
    assert [rows[j]["premade_days"] for j in range(9)] == pytest.approx(
        [0, 0, 0, 25, 15, 5, 25, 15, 5])
    assert [rows[j]["leukapheresis_start_day"] for j in range(3, 6)] == pytest.approx(
        [60, 70, 80])
    assert [rows[j]["manufacturing_end_day"] for j in range(3, 6)] == pytest.approx(
        [82, 92, 102])
    assert [rows[j]["lymphodepletion_start_day"] for j in range(3, 6)] == pytest.approx(
        [85, 92, 102])
    lost = {r["arrival_index"]: r for r in patient_rows(t) if r["fate"] == "lost_waiting"}
    assert [lost[i]["lost_day"] for i in (3, 4)] == pytest.approx([70, 80])   # days 40, 50


def test_without_the_option_the_same_calendar_waits(every_ten_days):
    """The same inputs without the option: cohort 2 (day 85: 60, 70, 80) goes through all 27
    days after enrollment: infusion on day 112 for all three."""
    t = _trial(False, 30)
    pats = t.pats[:6]
    assert [p.enrolled_day for p in pats] == pytest.approx([10, 20, 30, 85, 85, 85])
    assert [p.infusion_day for p in pats] == pytest.approx([37, 47, 57, 112, 112, 112])


def test_wasted_runs_and_vein_to_vein(every_ten_days):
    """Costs with the option: every patient screened in starts a run -- those enrolled,
    those lost from the list and those still on it at the close (wasted); vein-to-vein is
    from the start of leukapheresis (screened in) to infusion: in the hand-built trial
    above, cohort 2: 90 - 60 = 30, 97 - 70 = 27, 107 - 80 = 27 days."""
    sc = _scenario({"manufacture_before_slot": True, "max_wait_days": 30, "costs": COSTS})
    r = simulate_des_trials(sc.designs[0].design, sc.model.truth.p_dlt, sc.model.conduct, 1,
                            range(1), record_patients=True)
    log = r["patients"]
    eligible = np.asarray(log["eligible"])
    fate = np.asarray(log["fate"])
    enrolled = np.asarray(log["patient"]) >= 0
    runs = int((enrolled | (eligible & np.isin(fate, ["lost_waiting", "not_enrolled"]))).sum())
    assert r["manufacturing_runs"][0] == runs
    assert r["manufacturing_runs_wasted"][0] == runs - int(enrolled.sum())
    assert r["cost_total"][0] == pytest.approx(runs)       # 1 per run, nothing else
    inf = np.asarray(log["infusion_day"], dtype=float)
    leuk = np.asarray(log["leukapheresis_start_day"], dtype=float)
    ok = enrolled & ~np.isnan(inf)
    assert r["vein_to_vein_days"][0] == pytest.approx(float(np.mean(inf[ok] - leuk[ok])))
    t = _trial(True, 30)
    v2v = [p.infusion_day - (t.draws.arrival_time[p.candidate]) for p in t.pats[3:6]]
    assert v2v == pytest.approx([30, 27, 27])


def test_failed_run_while_waiting_leaves_at_enrollment(every_ten_days):
    """A manufacturing failure that ended before the patient's enrollment is learnt when
    the patient takes the slot: the patient leaves at once and the slot goes to the next
    patient on the list the same day; a failure still under way when the patient is
    enrolled ends with its manufacturing (screened in + 22 days)."""
    phases = [dict(p) for p in PHASES]
    phases[1]["failure_prob"] = 0.5
    sc = _scenario({"manufacture_before_slot": True, "max_wait_days": 30, "phases": phases})
    t = simulate_one(sc.designs[0].design, sc.model.truth.p_dlt, sc.model.conduct, 3, 0)
    checked = 0
    for p in t.pats:
        waited, credit = t.path.premade.get(p.j, (0.0, 0.0))
        if p.status == 2 and waited >= 22 - 1e-9:            # FAILED, product due before
            assert p.end_day == pytest.approx(p.enrolled_day)
            checked += 1
        elif p.status == 2:
            # fails when its (remaining) manufacturing ends: screened in + 22
            assert p.end_day == pytest.approx(t.draws.arrival_time[p.candidate] + 22)
    assert checked > 0


def test_option_changes_only_waiting_patients():
    """Every enrolled patient (random accrual, the seed scenario's random phases): its
    infusion day is the one without the option minus what it had made while waiting:
    enrolled + (days to infusion) - min(waited, days of its premade phases), with no gate
    here -- the identity the pathway's shift must satisfy."""
    sc = _scenario({"manufacture_before_slot": True, "accrual_per_month": 2.0,
                    "phases": load_scenario("scenarios/relma_cel_sle.yaml").raw["conduct"]
                    ["phases"]}, p=[0.05, 0.1, 0.2, 0.3])
    n = 0
    for trial in range(10):
        t = simulate_one(sc.designs[0].design, sc.model.truth.p_dlt, sc.model.conduct, 2,
                         trial)
        d = t.draws
        for p in t.pats:
            if p.infusion_day < 0 or p.status == 2:
                continue
            j = p.j
            days = d.phase_days[j]
            waited = p.enrolled_day - (d.arrival_time[p.candidate] + d.screen_days[p.candidate])
            credit = min(max(waited, 0.0), float(days[:2].sum())) if waited > 1e-9 else 0.0
            assert p.infusion_day == pytest.approx(p.enrolled_day + float(days.sum()) - credit)
            n += credit > 0
    assert n > 20


@pytest.mark.parametrize("extra, message", [
    ({"when_paused": "leave"},
     "test: conduct.manufacture_before_slot: true needs when_paused: wait"),
    ({"accrual_per_month": None},
     "test: conduct.manufacture_before_slot: true needs an accrual rate"),
    ({"phases": [PHASES[0], PHASES[2]]},
     "test: conduct.manufacture_before_slot: needs a phase of kind manufacturing (got none)"),
    ({"gate_before_phase": "manufacturing", "stagger_days": 14},
     "test: conduct.manufacture_before_slot: the hold point (gate_before_phase "
     "'manufacturing') must come after the last manufacturing phase 'manufacturing'"),
    ({"manufacturing_capacity": {"slots": 2}},
     "test: conduct.manufacture_before_slot: not modelled together with "
     "manufacturing_capacity"),
])
def test_bad_input(extra, message):
    with pytest.raises(ScenarioError) as exc:
        _scenario(dict({"manufacture_before_slot": True}, **extra))
    assert message in str(exc.value)


def test_default_changes_nothing():
    """false (the default) is the former conduct block: not in the resolved scenario."""
    sc = _scenario({})
    assert "manufacture_before_slot" not in sc.resolved()["conduct"]
    assert Conduct().manufacture_before_slot is False and Conduct().premade_phases == 0


def test_new_options_never_run_on_the_fast_path():
    """The fast calendar path was not checked for these options: the default engine runs
    them on simpy, and asking for the fast path is an error naming them."""
    from escalation_sim.engines.calendar import clock_for
    from escalation_sim.engines.calendar.clock import SimpyClock
    cases = [
        (_scenario({"manufacture_before_slot": True}), "conduct.manufacture_before_slot"),
        (_scenario({"backfill": {}}, designs=[{"type": "tite-boin"}]),
         "conduct.backfill with a time-to-event design"),
        (_scenario({"shortfall": {"prob": 0.2, "received_fraction": {"mean": 0.5},
                                  "policy": "exclude"}}, designs=[{"type": "tite-crm",
                                                                   "skeleton": [0.1, 0.2, 0.3,
                                                                                0.4]}]),
         "conduct.shortfall.policy exclude with a time-to-event design"),
    ]
    for sc, why in cases:
        d = sc.designs[0].design
        assert clock_for(d, sc.model.conduct, None) is SimpyClock
        with pytest.raises(ValueError, match=why):
            clock_for(d, sc.model.conduct, "fast")
    sc = _scenario({"backfill": {}})
    with pytest.raises(ValueError, match="with a graded truth"):
        clock_for(sc.designs[0].design, sc.model.conduct, "fast", graded=True)
