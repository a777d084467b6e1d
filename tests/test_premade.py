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


# ------------------------------------------------------------------ with manufacturing_capacity
def _capacity_trial(slots):
    sc = _scenario({"manufacture_before_slot": True, "max_wait_days": 30, "costs": COSTS,
                    "manufacturing_capacity": {"slots": slots, "per_days": 15}})
    t = simulate_one(sc.designs[0].design, sc.model.truth.p_dlt, sc.model.conduct, 1, 0)
    assert not any(p.dlt for p in t.pats[:9])            # the precondition
    return sc, t


def test_capacity_one_slot_runs_queue_from_screening(every_ten_days):
    """One slot booked 15 days per run (manufacturing_capacity {slots: 1, per_days: 15});
    the inputs of the hand-built trials above (ready every 10 days, premade phases 22 days,
    27 to infusion, max_wait_days 30).  Each run asks for the slot on its patient's
    screened-in day, first come first served; ties on a day: the slot freed by an earlier
    booking first (it was scheduled first), then the new arrival.
      * day 10: #0 slot (to 25), enrolled: infusion 37; day 20: #1 enrolled, run queued:
        slot on 25 (to 40): its whole path starts then, infusion 52 (wait 5); day 30: #2
        enrolled, slot on 40 (to 55): infusion 67 (wait 10);
      * cohort full: #3 (40), #4 (50), #5 (60) wait on the list: their runs get the slot on
        55, 70, 85 while they wait, and they are lost on 70, 80, 90 (deadlines): three
        wasted runs, each of which used the slot;
      * windows end 65, 80, 95: BOIN escalates on day 95 and takes #6, #7, #8 (screened in
        70, 80, 90; lost 3-5 purged): their runs are still queued: slots on 100, 115, 130,
        infusions 127, 142, 157 (waits 30, 35, 40; premade_days 25, 15, 5);
      * #9 and #10 (ready 100, 110; deadlines 130, 140) leave the list before the slot
        frees on 145 (to 160): no run for them; #11 (ready 120, deadline 150) gets it on 145
        and is lost on 150: wasted."""
    sc, t = _capacity_trial(1)
    pats = t.pats[:6]
    assert [p.candidate for p in pats] == [0, 1, 2, 6, 7, 8]
    assert [p.enrolled_day for p in pats] == pytest.approx([10, 20, 30, 95, 95, 95])
    assert [p.infusion_day for p in pats] == pytest.approx([37, 52, 67, 127, 142, 157])
    assert [t.path.waits[p.j] for p in pats] == pytest.approx([0, 5, 10, 30, 35, 40])
    g = t.path.granted
    assert [g[i] for i in range(9)] == pytest.approx([10, 25, 40, 55, 70, 85, 100, 115, 130])
    assert 9 not in g and 10 not in g and g[11] == pytest.approx(145)
    rows = {r["arrival_index"]: r for r in patient_rows(t)}
    assert [rows[i]["lost_day"] for i in (3, 4, 5, 9, 10, 11)] == pytest.approx(
        [70, 80, 90, 130, 140, 150])
    # the log: each run starts on its grant day; premade_days = screened in to enrollment
    assert [rows[i]["leukapheresis_start_day"] for i in (0, 1, 2, 6, 7, 8)] == pytest.approx(
        [10, 25, 40, 100, 115, 130])
    assert [rows[i]["manufacturing_end_day"] for i in (6, 7, 8)] == pytest.approx(
        [122, 137, 152])
    assert [rows[i]["premade_days"] for i in (6, 7, 8)] == pytest.approx([25, 15, 5])
    # never two bookings at once: grants at least 15 days apart
    days = sorted(g.values())
    assert min(b - a for a, b in zip(days[:-1], days[1:], strict=True)) >= 15 - 1e-9
    # costs: a run for every granted candidate, enrolled or not (COSTS: 1 per run)
    r = simulate_des_trials(sc.designs[0].design, sc.model.truth.p_dlt, sc.model.conduct, 1,
                            range(1))
    enrolled = {p.candidate for p in t.pats}
    wasted = sum(1 for i in g if i not in enrolled)
    assert r["manufacturing_runs_wasted"][0] == wasted and wasted >= 4
    assert r["manufacturing_runs"][0] == len(g)
    assert r["cost_total"][0] == pytest.approx(len(g))
    # vein-to-vein from the start of leukapheresis (the grant): 27 days for each of the six
    inf = [p.infusion_day - g[p.candidate] for p in pats]
    assert inf == pytest.approx([27] * 6)


def test_capacity_two_slots_made_while_waiting(every_ten_days):
    """Two slots booked 15 days: every run gets a slot on its screened-in day (runs start
    every 10 days, each slot is busy 15 of every 20), so the calendar is exactly
    test_products_made_while_waiting's: cohort 2 (#5, #6, #7 screened in 60, 70, 80,
    enrolled on day 85) infused 90, 97, 107 (their products made since screening: credits
    22, 15, 5); the runs of #3, #4 (lost 70, 80) are wasted."""
    _, t = _capacity_trial(2)
    pats = t.pats[:6]
    assert [p.enrolled_day for p in pats] == pytest.approx([10, 20, 30, 85, 85, 85])
    assert [p.infusion_day for p in pats] == pytest.approx([37, 47, 57, 90, 97, 107])
    assert [t.path.granted[p.candidate] for p in pats] == pytest.approx(
        [10, 20, 30, 60, 70, 80])
    assert all(t.path.waits[p.j] == 0 for p in pats)
    assert t.path.granted[3] == pytest.approx(40) and t.path.granted[4] == pytest.approx(50)
    rows = {r["arrival_index"]: r for r in patient_rows(t)}
    assert [rows[i]["lymphodepletion_start_day"] for i in (5, 6, 7)] == pytest.approx(
        [85, 92, 102])


def test_capacity_random_accrual_identities():
    """Random accrual and the seed scenario's random phases, 2 slots booked 30 days: at
    every grant fewer than 2 other bookings are running (grants in the 30 days before it);
    each infused patient's day follows from its grant day g and enrollment day e alone:
    g <= e: e + (days to infusion) - min(e - g, days of its premade phases); g > e: g +
    (days to infusion) (no gate here)."""
    sc = _scenario({"manufacture_before_slot": True, "accrual_per_month": 3.0,
                    "manufacturing_capacity": {"slots": 2, "per_days": 30},
                    "phases": load_scenario("scenarios/relma_cel_sle.yaml").raw["conduct"]
                    ["phases"]}, p=[0.05, 0.1, 0.2, 0.3])
    late = early = 0
    for trial in range(10):
        t = simulate_one(sc.designs[0].design, sc.model.truth.p_dlt, sc.model.conduct, 2,
                         trial)
        days = sorted(t.path.granted.values())
        for k, g in enumerate(days):
            assert sum(1 for h in days[:k] if h > g - 30 + 1e-9) < 2
        d = t.draws
        for p in t.pats:
            if p.infusion_day < 0 or p.status == 2:
                continue
            g = t.path.granted[p.candidate]
            e = p.enrolled_day
            total = float(d.phase_days[p.j].sum())
            if g <= e + 1e-9:
                want = e + total - min(e - g, float(d.phase_days[p.j][:2].sum()))
                early += e - g > 1e-9
            else:
                want = g + total
                late += 1
            assert p.infusion_day == pytest.approx(want)
    assert late > 5 and early > 5


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
     "test: conduct.manufacture_before_slot: true with manufacturing_capacity needs "
     "manufacturing_capacity.per_days: a run started for a patient on the waiting list has "
     "no drawn length until the patient is enrolled (and none at all if it never is), so "
     "each run books its slot for per_days days (got true with per_days: null)"),
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


def test_capacity_without_per_days_exit_code_2(cli, tmp_path):
    """The one combination still refused: manufacture_before_slot with a capacity whose runs
    hold their slot until they end (per_days: null): one line, exit 2, no traceback."""
    f = tmp_path / "bad.yaml"
    text = open("scenarios/relma_cel_sle.yaml").read()
    f.write_text(text + "  manufacture_before_slot: true\n"
                        "  manufacturing_capacity: {slots: 2}\n")
    r = cli("validate", f)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (f"{f}: conduct.manufacture_before_slot: true with manufacturing_capacity needs "
            "manufacturing_capacity.per_days") in r.stderr
    assert r.stderr.rstrip().endswith("(got true with per_days: null)")
