"""Backfill (``conduct.backfill``) and the shortfall policies ``received`` / ``exclude`` for
time-to-event designs (BackfillTitePolicy / ConductTitePolicy in
escalation_sim/engines/calendar/backfill.py).

Provenance of the expected values: every check recomputes, from the definitions in the
module docstrings and README ("Backfill and doses received below the assigned dose"), what
the engine should have done from the simulated patients' own days (enrollment, infusion,
DLT onset, end of window) -- the engine's counters are compared with these independent
recomputations, never with numbers it produced.  BOIN boundaries for target 0.25 (used by
the seed scenario): Liu & Yuan 2015, R ``BOIN::get.boundary(target = 0.25)``: n = 3:
escalate if 0 DLT, de-escalate if >= 1; n = 6: <= 1 / >= 2; n = 9: <= 1 / >= 3;
n = 12: <= 2 / >= 4.
"""
import numpy as np
import pytest

from escalation_sim.engines.calendar import simulate_des_trials, simulate_one
from escalation_sim.engines.calendar import backfill as bfmod
from escalation_sim.engines.calendar.patient import COMPLETE, EXCLUDED
from escalation_sim.engines.calendar.shortfall import level_at_or_below
from escalation_sim.inputs.scenario import ScenarioError, load_scenario, load_scenario_dict

EPS = 1e-9
AMOUNTS = [25e6, 50e6, 75e6, 100e6]          # relma_cel_sle.yaml's doses[].amount
#: BOIN target 0.25: de-escalation boundary b_d(n) (get.boundary), n = 1..12
B_D = {1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 2, 7: 3, 8: 3, 9: 3, 10: 3, 11: 4, 12: 4}


def _scenario(extra, designs, p=None):
    sc = load_scenario("scenarios/relma_cel_sle.yaml")
    raw = dict(sc.raw)
    raw["designs"] = designs
    if p is not None:
        raw["truth"] = {"p_dlt": p}
    raw["conduct"] = dict(raw["conduct"], **extra)
    return load_scenario_dict(raw, "test")


TITE_BOIN = [{"type": "tite-boin"}]
TITE_CRM = [{"type": "tite-crm", "skeleton": [0.10, 0.17, 0.25, 0.35]}]
#: fast accrual, no sentinel spacing nor follow-up cap: TITE-BOIN suspends accrual often
FAST = {"accrual_per_month": 6.0, "stagger_days": 0, "max_in_followup": None}
BF = {"backfill": {"max_per_dose": 12, "max_total": 24}}


def _seen(t, q, now):
    """Day-``now`` facts about patient ``q`` (from its own days): (in the data, evaluable,
    DLT seen)."""
    W = t.setup.window
    if q.enrolled_day > now + EPS:
        return False, False, False
    if q.status != COMPLETE and q.end_day >= 0 and q.end_day <= now + EPS:
        return False, False, False              # lost (failed, dropped, excluded) by now
    if q.status != COMPLETE or q.infusion_day < 0:
        return True, False, False
    dlt = q.dlt and q.infusion_day + t.toxicity.onset_day(q) <= now + EPS
    done = q.infusion_day + W <= now + EPS
    return True, dlt or done, dlt


# ------------------------------------------------------------------ TITE backfill
def test_tite_backfill_opens_only_at_cleared_doses_while_escalation_is_suspended():
    """Every backfill patient (recomputed at its enrollment day from the patients' days):
    rule 1: below the escalation dose; rule 2: >= 3 evaluable (window closed or DLT seen);
    rule 3: its evaluable data outside BOIN's de-escalation region, or so pooled with the
    next dose; and TITE-BOIN had suspended accrual: more than half the patients at the
    escalation dose pending (Yuan et al. 2018's rule; the only way a TITE-BOIN patient finds
    no escalation slot other than a stop)."""
    sc = _scenario(dict(FAST, **BF), TITE_BOIN)
    d = sc.designs[0].design
    seen_bf = 0
    for trial in range(40):
        t = simulate_one(d, sc.model.truth.p_dlt, sc.model.conduct, 11, trial)
        for p in t.pats:
            if not p.backfill:
                continue
            seen_bf += 1
            now = p.enrolled_day
            esc = [q for q in t.pats if not q.backfill and q.enrolled_day <= now + EPS
                   and q is not p]
            cur = esc[-1].cohort.dose                    # the latest escalation cohort
            b = p.dose
            assert b < cur, (trial, p.j)
            n_ev = y = 0
            n_ev1 = y1 = 0
            n_cur = m_cur = 0
            for q in t.pats:
                if q is p:
                    continue
                inn, ev, dlt = _seen(t, q, now)
                if q.dose == b and ev:
                    n_ev += 1
                    y += dlt
                if q.dose == b + 1 and ev:
                    n_ev1 += 1
                    y1 += dlt
                if q.dose == cur and inn:
                    n_cur += 1
                    m_cur += not (ev or dlt)
            assert n_ev >= 3, (trial, p.j)
            safe = y < B_D[n_ev] or (n_ev1 > 0 and y + y1 < B_D[min(n_ev + n_ev1, 12)])
            assert safe, (trial, p.j, n_ev, y, n_ev1, y1)
            assert m_cur > 0.5 * n_cur, (trial, p.j, m_cur, n_cur)
    assert seen_bf > 30


def test_tite_backfill_followup_counts_in_later_decisions(monkeypatch):
    """Each state the design is asked about holds every patient in the data, backfill
    patients included, at their dose: pending ones (no DLT seen, window open) with their
    follow-up fraction.  Recomputed from the patients' days at each decision (patients
    enrolled before it, in enrollment order)."""
    recorded = []
    orig = bfmod.BackfillTitePolicy.state

    def state(self):
        st = orig(self)
        recorded.append((self.trial.clock.now, st, len(self.trial.pats)))
        return st

    monkeypatch.setattr(bfmod.BackfillTitePolicy, "state", state)
    sc = _scenario(dict(FAST, **BF), TITE_BOIN)
    d = sc.designs[0].design
    with_bf_pending = 0
    for trial in range(8):
        recorded.clear()
        t = simulate_one(d, sc.model.truth.p_dlt, sc.model.conduct, 11, trial)
        W = t.setup.window
        for now, st, npats in recorded:
            n = [0] * 4
            pend = []
            for q in t.pats[:npats]:                 # enrolled before the state was taken
                inn, ev, _ = _seen(t, q, now)
                if not inn:
                    continue
                n[q.dose] += 1
                if not ev:
                    f = 0.0 if q.infusion_day < 0 or q.infusion_day > now + EPS else \
                        min((now - q.infusion_day) / W, 1.0)
                    pend.append((q.dose, f, q.backfill))
            assert list(st.n) == n, (trial, now)
            got = sorted(st.pending)
            want = sorted((dd, f) for dd, f, _ in pend)
            assert len(got) == len(want)
            for (d1, f1), (d2, f2) in zip(got, want, strict=True):
                assert d1 == d2 and f1 == pytest.approx(f2, abs=1e-9)
            with_bf_pending += any(bf and f > 0 for _, f, bf in pend)
    assert with_bf_pending > 20


def test_tite_backfill_max_n_counts_escalation_patients_and_totals_add_up():
    sc = _scenario(dict(FAST, **BF), TITE_BOIN)
    d = sc.designs[0].design
    r = simulate_des_trials(d, sc.model.truth.p_dlt, sc.model.conduct, 11, range(200))
    K = 4
    ne = np.stack([r[f"n_escalation_dose{k + 1}"] for k in range(K)], axis=1)
    nb = np.stack([r[f"n_backfill_dose{k + 1}"] for k in range(K)], axis=1)
    ye = np.stack([r[f"y_escalation_dose{k + 1}"] for k in range(K)], axis=1)
    yb = np.stack([r[f"y_backfill_dose{k + 1}"] for k in range(K)], axis=1)
    assert (ne + nb == r["n"]).all() and (ye + yb == r["y"]).all()
    assert r["n_backfill"].mean() > 1.0
    # rule 5: at most max_total backfill patients not lost (a lost one frees its place, so
    # enrollments may exceed it); rule 4: at most max_per_dose per dose, all patients
    assert (r["n_backfill"] <= 24).all()
    assert (ne + nb <= 12).all(axis=1).sum() >= 0 and (nb <= 12).all()
    # max_n (24) counts escalation patients only: never more than 24 evaluable escalation
    # patients, and the total exceeds 24 whenever a backfill patient was evaluable
    assert (r["n_escalation"] <= 24).all()
    assert (r["n"].sum(axis=1) > 24)[r["n_backfill"] > 0].all()


def test_tite_backfill_without_open_dose_changes_nothing():
    """min_evaluable above any dose's reach: no dose ever opens; TITE-BOIN then decides as
    without the block except for BF-BOIN's conflict rule, which needs a DLT at a lower dose:
    every trial without a DLT is the trial without backfill (the rule's cases are
    tests/test_backfill.py's)."""
    p = [0.01, 0.01, 0.01, 0.01]
    a_sc = _scenario(FAST, TITE_BOIN, p=p)
    b_sc = _scenario(dict(FAST, backfill={"max_per_dose": 40, "max_total": 24,
                                          "min_evaluable": 40}), TITE_BOIN, p=p)
    a = simulate_des_trials(a_sc.designs[0].design, p, a_sc.model.conduct, 3, range(100))
    b = simulate_des_trials(b_sc.designs[0].design, p, b_sc.model.conduct, 3, range(100))
    clean = a["y"].sum(axis=1) == 0
    assert clean.sum() > 50
    for k in ("mtd", "n", "y", "n_lost", "n_screened", "n_enrolled"):
        assert np.array_equal(a[k][clean], b[k][clean]), k
    # the same days up to rounding (one trial's close differs by 6e-14 days)
    assert np.allclose(a["duration_days"][clean], b["duration_days"][clean], rtol=0,
                       atol=1e-9)
    assert (b["n_backfill_enrolled"] == 0).all()


def test_tite_crm_backfill_runs():
    """TITE-CRM never suspends accrual, so every arrival goes to escalation: backfill never
    opens, and the trials are those without the block (BF-BOIN's conflict rule is for
    interval designs; CRM's model sees every dose)."""
    a_sc = _scenario(FAST, TITE_CRM)
    b_sc = _scenario(dict(FAST, **BF), TITE_CRM)
    p = a_sc.model.truth.p_dlt
    a = simulate_des_trials(a_sc.designs[0].design, p, a_sc.model.conduct, 3, range(100))
    b = simulate_des_trials(b_sc.designs[0].design, p, b_sc.model.conduct, 3, range(100))
    for k in ("mtd", "n", "y", "duration_days"):
        assert np.array_equal(a[k], b[k]), k
    assert (b["n_backfill_enrolled"] == 0).all()


# ------------------------------------------------------------------ TITE shortfall
SHORT = {"prob": 0.3, "received_fraction": {"mean": 0.6, "sd": 0.15, "dist": "uniform"}}


@pytest.mark.parametrize("designs", [TITE_BOIN, TITE_CRM])
def test_tite_shortfall_received_counts_at_the_level_received(designs):
    """policy received: the final data (n, y per dose) are the complete patients counted at
    the highest level whose amount is at or below the amount received (doses[].amount of
    the seed scenario); a short product below the lowest level is excluded at infusion."""
    sc = _scenario(dict(FAST, shortfall=dict(SHORT, policy="received")), designs)
    d = sc.designs[0].design
    moved = excluded = 0
    for trial in range(30):
        t = simulate_one(d, sc.model.truth.p_dlt, sc.model.conduct, 5, trial)
        n = [0] * 4
        y = [0] * 4
        for q in t.pats:
            lvl = q.dose if q.received >= 1.0 else \
                level_at_or_below(AMOUNTS[q.dose] * q.received, AMOUNTS)
            if q.status == EXCLUDED:
                assert q.received < 1.0 and lvl < 0
                assert q.k < 0 and q.end_day == q.infusion_day       # never observed
                excluded += 1
                continue
            if q.status != COMPLETE:
                continue
            assert lvl >= 0
            moved += lvl != q.dose
            n[lvl] += 1
            y[lvl] += q.dlt
        assert list(t.final_state.n) == n and list(t.final_state.y) == y, trial
    assert moved > 10 and excluded > 5


@pytest.mark.parametrize("designs", [TITE_BOIN, TITE_CRM])
def test_tite_shortfall_exclude(designs):
    """policy exclude: every infused short product is excluded at infusion (not observed,
    not in the data); the others are counted at their assigned dose."""
    sc = _scenario(dict(FAST, shortfall=dict(SHORT, policy="exclude")), designs)
    d = sc.designs[0].design
    excluded = 0
    for trial in range(30):
        t = simulate_one(d, sc.model.truth.p_dlt, sc.model.conduct, 5, trial)
        n = [0] * 4
        for q in t.pats:
            if q.infusion_day >= 0 and q.received < 1.0:
                assert q.status == EXCLUDED and q.k < 0
                excluded += 1
            elif q.status == COMPLETE:
                n[q.dose] += 1
        assert list(t.final_state.n) == n, trial
        assert t.policy.n_excluded == sum(q.status == EXCLUDED for q in t.pats)
    assert excluded > 20


def test_tite_shortfall_received_without_short_products_changes_nothing():
    """prob 0: the received and exclude policies give the trials without the block."""
    a_sc = _scenario(FAST, TITE_BOIN)
    p = a_sc.model.truth.p_dlt
    a = simulate_des_trials(a_sc.designs[0].design, p, a_sc.model.conduct, 9, range(100))
    for pol in ("received", "exclude"):
        sc = _scenario(dict(FAST, shortfall={"prob": 0.0, "received_fraction": {"mean": 0.5},
                                             "policy": pol}), TITE_BOIN)
        b = simulate_des_trials(sc.designs[0].design, p, sc.model.conduct, 9, range(100))
        for k in ("mtd", "n", "y", "duration_days"):
            assert np.array_equal(a[k], b[k]), (pol, k)


def test_tite_received_needs_a_count_design():
    with pytest.raises(ScenarioError) as exc:
        _scenario({"shortfall": dict(SHORT, policy="received")}, [{"type": "rolling6"}])
    assert ("designs[0] (rolling6): conduct.shortfall.policy: 'received' needs a design"
            in str(exc.value))


# ------------------------------------------------------------------ graded truths
from escalation_sim.engines.calendar.shortfall import GradedShortfall  # noqa: E402
from escalation_sim.inputs.truth import OutcomeModel, ToxicityType  # noqa: E402


def _graded(extra, designs):
    sc = load_scenario("scenarios/cart_crs_icans.yaml")
    raw = dict(sc.raw)
    raw["designs"] = designs
    raw["conduct"] = dict(raw["conduct"], **extra)
    return load_scenario_dict(raw, "test")


def test_graded_shortfall_rate_between_levels_by_hand():
    """One type, grades 1..4 per dose, no onset law (every event inside the window), DLT =
    grade >= 3: P(DLT) at DL2 = 0.04 + 0.01 = 0.05, at DL3 0.07 + 0.02 = 0.09 (the CRS row
    of cart_crs_icans.yaml).  At 60e6 cells, between 50e6 and 75e6: weight
    ln(60/50) / ln(75/50) = 0.182322 / 0.405465 = 0.449660, so 0.05 + 0.04 * 0.449660 =
    0.0679864; below the lowest level, 20e6: weight ln(20/25) / ln(50/25) = -0.321928,
    P(>= 3) = 0.02 + 0.03 * -0.321928 = 0.0103422."""
    t = ToxicityType.from_grades("CRS", {1: [0.30, 0.35, 0.40, 0.40],
                                         2: [0.10, 0.15, 0.20, 0.25],
                                         3: [0.02, 0.04, 0.07, 0.12],
                                         4: [0.00, 0.01, 0.02, 0.04]})
    m = OutcomeModel([t], rule=[("CRS", 3)])
    g = GradedShortfall(m, AMOUNTS, 28.0)
    assert g.rate(60e6) == pytest.approx(0.0679864, abs=1e-6)
    assert g.rate(20e6) == pytest.approx(0.0103422, abs=1e-6)
    for d, a in enumerate(AMOUNTS):               # at a level: the truth's own rate
        assert g.rate(a) == pytest.approx(m.dlt_rates()[d], abs=1e-12)


def test_graded_shortfall_at_a_level_is_the_outcome_model():
    """At a level's amount, a patient's outcome from its latents and onsets equals the
    outcome model's own patient k at that dose (OutcomeModel.outcomes, the engines' common
    random numbers), for the correlated two-type truth of cart_crs_icans.yaml."""
    sc = _graded({}, [{"type": "boin"}])
    m = sc.outcome_model
    g = GradedShortfall(m, AMOUNTS, 28.0)
    seed, trial, N = 7, 3, 400
    x, _ = m.patient_latents(seed, np.array([trial], dtype=np.uint64), N)
    for d in range(4):
        o = m.outcomes(seed, np.full(N, trial), np.arange(N), np.full(N, d))
        for k in range(N):
            days = [o.onset_day[k, j] if o.grade[k, j] > 0 else np.nan for j in range(2)]
            grades, dlt_day, worst, late = g.outcome(x[:, 0, k].tolist(), days, AMOUNTS[d])
            assert list(grades) == o.grade[k].tolist(), (d, k)
            assert (dlt_day is not None) == bool(o.dlt[k]), (d, k)
            assert worst == int(o.worst_grade[k]) and late == bool(o.late[k]), (d, k)


def test_graded_short_products_dlt_frequency_matches_the_interpolated_rate():
    """Monte Carlo: over the short products of 300 trials (BOIN, policy assigned), the
    number of DLTs is the sum of the true rates of the amounts received
    (GradedShortfall.rates, the outcome model's formula at interpolated thresholds) within
    4 SE (SE from the Bernoulli variances)."""
    sc = _graded({"accrual_per_month": 3.0,
                  "shortfall": {"prob": 0.5, "received_fraction": {"mean": 0.6, "sd": 0.15},
                                "policy": "assigned"}}, [{"type": "boin"}])
    m = sc.outcome_model
    g = GradedShortfall(m, AMOUNTS, 28.0)
    d = sc.designs[0].design
    obs = 0
    rates = []
    for trial in range(300):
        t = simulate_one(d, m, sc.model.conduct, 5, trial, record_patients=False)
        for q in t.pats:
            if q.status == COMPLETE and q.received < 1.0:
                obs += q.dlt
                rates.append(AMOUNTS[q.dose] * q.received)
    p = g.rates(rates)
    se = float(np.sqrt((p * (1 - p)).sum()))
    assert len(rates) > 1000
    assert abs(obs - p.sum()) < 4 * se, (obs, p.sum(), se)


@pytest.mark.parametrize("designs", [[{"type": "boin"}], [{"type": "tite-boin"}]])
def test_graded_backfill_outcomes_are_the_outcome_models(designs):
    """Backfill on a graded truth (no short products): every evaluable patient's DLT flag
    is the outcome model's patient k at its dose (OutcomeModel.outcomes); the escalation
    and backfill counts add up to the design's data."""
    sc = _graded({"accrual_per_month": 3.0, "stagger_days": 0, "max_in_followup": None,
                  "backfill": {"max_per_dose": 12, "max_total": 24}}, designs)
    m = sc.outcome_model
    d = sc.designs[0].design
    n_bf = 0
    for trial in range(20):
        t = simulate_one(d, m, sc.model.conduct, 2, trial, record_patients=False)
        # evaluable: window over by the close (a classic trial stops when its last
        # escalation cohort completes; backfill patients still in follow-up do not count)
        ev = [q for q in t.pats if q.status == COMPLETE and 0 <= q.end_day <= t.t_end]
        o = m.outcomes(2, np.full(len(ev), trial), [q.k for q in ev], [q.dose for q in ev])
        assert [q.dlt for q in ev] == o.dlt.tolist()
        n_bf += sum(q.backfill for q in ev)
        n = [0] * 4
        for q in ev:
            n[q.dose] += 1
        assert list(t.final_state.n) == n
    assert n_bf > 20


def test_graded_backfill_and_shortfall_columns():
    """Both blocks on the graded truth, BOIN and TITE-BOIN: per-trial columns are
    consistent (escalation + backfill = all; exclusions only of short products), and the
    true rate at the selected dose as given is below the nominal one (short products
    deliver less, the truth increases with the amount)."""
    sc = _graded({"accrual_per_month": 3.0,
                  "backfill": {"max_per_dose": 12, "max_total": 24},
                  "shortfall": {"prob": 0.3, "received_fraction": {"mean": 0.6, "sd": 0.15},
                                "policy": "exclude"}}, [{"type": "boin"}, {"type": "tite-boin"}])
    m = sc.outcome_model
    for it in sc.designs:
        r = simulate_des_trials(it.design, m, sc.model.conduct, 4, range(60))
        assert (r["n_escalation"] + r["n_backfill"] == r["n"].sum(axis=1)).all()
        assert (r["n_excluded"] <= r["n_short"]).all() and r["n_excluded"].sum() > 0
        sel = r["mtd"] >= 0
        assert (r["true_rate_selected_as_given"][sel]
                < r["true_rate_selected_nominal"][sel]).all()


def test_score_designs_take_backfill_and_shortfall():
    """No longer refused (tests/test_conduct_score.py checks what they do): a run with a
    binary and a score design under both blocks loads, and the score designs get their
    conduct policies."""
    from escalation_sim.engines.calendar.model import Setup
    sc = _graded({"backfill": {}, "shortfall": {"prob": 0.2, "received_fraction":
                                                {"mean": 0.6, "sd": 0.1}}},
                 [{"type": "boin"}, {"type": "gboin", "target": 0.26},
                  {"type": "tite-gboin", "target": 0.26}])
    assert [it.name for it in sc.designs] == ["boin", "gboin", "tite-gboin"]
    want = [bfmod.BackfillPolicy, bfmod.BackfillPolicy, bfmod.BackfillScoreTitePolicy]
    for it, cls in zip(sc.designs, want, strict=True):
        s = Setup(it.design, sc.outcome_model.dlt_rates(), sc.model.conduct, False, 1000,
                  model=sc.outcome_model)
        assert s.policy is cls, it.name


def test_tite_open_dose_cases():
    """BackfillTitePolicy.open_dose, case by case, on a TITE-BOIN trial's policy with its
    counters set by hand (target 0.25: b_d(3) = 1, b_d(6) = 2): evaluable counts decide
    rules 2-3, patients in the data (pending included) rule 4."""
    from escalation_sim.engines.calendar.patient import Cohort
    sc = _scenario(dict(FAST, **BF), TITE_BOIN)
    t = simulate_one(sc.designs[0].design, sc.model.truth.p_dlt, sc.model.conduct, 1, 0)
    pol = t.policy

    def case(cur, n_eval, y, n_active=None, bf_active=0):
        t.cohort = Cohort(7, cur, 3, 0)
        pol.n_eval, pol.y_obs = list(n_eval), list(y)
        pol.n_active = list(n_active or n_eval)
        pol.bf_active = bf_active
        return pol.open_dose()

    assert case(2, [3, 3, 0, 0], [0, 0, 0, 0]) == 1          # highest cleared below dose 3
    # dose 2: 6 in the data but only 2 evaluable (4 pending, DLT-free): not open; dose 1 is
    assert case(2, [3, 2, 0, 0], [0, 0, 0, 0], n_active=[3, 6, 3, 0]) == 0
    # dose 2: a DLT seen among 3 evaluable (1 >= b_d(3)): closed (dose 3 has no evaluable
    # patient to pool with); dose 1 open
    assert case(2, [3, 3, 0, 0], [0, 1, 0, 0], n_active=[3, 4, 3, 0]) == 0
    # pooled with dose 3 (0/3): 1/6 < b_d(6) = 2: open (dose 3 itself is full: 12)
    assert case(3, [3, 3, 3, 0], [0, 1, 0, 0], n_active=[3, 3, 12, 3]) == 1
    # ... and without the pooled check dose 2 would be closed: with dose 3 at 2/3, pooled
    # 3/6 >= 2: closed, and so is every dose above; dose 1 stays open
    assert case(3, [3, 3, 3, 0], [0, 1, 2, 0]) == 0
    # rule 4: dose 2 has 12 patients in the data (max_per_dose 12)
    assert case(2, [3, 3, 0, 0], [0, 0, 0, 0], n_active=[3, 12, 3, 0]) == 0
    # rule 5: 24 backfill patients in the trial
    assert case(2, [3, 3, 0, 0], [0, 0, 0, 0], bf_active=24) == -1


def test_tite_decision_cases():
    """BackfillTitePolicy.design_decision with nobody pending (TITE-BOIN = BOIN, target
    0.25; get.boundary: n = 3: escalate if 0; n = 6: de-escalate if >= 2; n = 9: escalate if
    <= 1, de-escalate if >= 3), counters set by hand:
    * dose 3 at 0/3 says escalate, dose 2 at 2/6 says de-escalate: BF-BOIN's conflict rule
      (reference note section 4) pools doses 2-3: 2/9, between the boundaries: stay at 3;
    * the same data with dose 2 at 1/6 (escalate): no conflict, escalate to 4;
    * max_n counts escalation patients: 30 in the data of which 6 backfill = 24: stop."""
    from escalation_sim.engines.calendar.patient import Cohort
    sc = _scenario(dict(FAST, **BF), TITE_BOIN)
    t = simulate_one(sc.designs[0].design, sc.model.truth.p_dlt, sc.model.conduct, 1, 0)
    pol = t.policy
    pol.pending = {}
    pol.last = (None, None)

    def case(n, y, bf_active=0):
        t.cohort = Cohort(7, 2, 3, 0, active=3)
        pol.n_eval, pol.n_active, pol.y_obs = list(n), list(n), list(y)
        pol.bf_active = bf_active
        return pol.design_decision()

    dec = case([3, 6, 3, 0], [0, 2, 0, 0])
    assert not dec.stop and dec.dose == 2 and "disagrees" in dec.reason
    dec = case([3, 6, 3, 0], [0, 1, 0, 0])
    assert not dec.stop and dec.dose == 3
    dec = case([9, 9, 9, 3], [0, 1, 1, 0], bf_active=6)
    assert dec.stop and "24 escalation patients" in dec.reason


def test_tite_gboin_keeps_its_own_policy_under_classic_conduct_options():
    """The review options and cohort_sizes concern classic designs (the scenario notes them as
    unused by time-to-event designs), so TITE-gBOIN must run the same trials with or without
    them (before this fix it silently ran as a classic complete-cohort design)."""
    d = [{"type": "tite-gboin", "target": 0.26}]
    plain = _graded({}, d)
    review = _graded({"review": {"days": 7, "before": "escalation"},
                      "cohort_sizes": [3, 2]}, d)
    a = simulate_des_trials(plain.designs[0].design, plain.outcome_model,
                            plain.model.conduct, 5, range(60), engine="simpy")
    b = simulate_des_trials(review.designs[0].design, review.outcome_model,
                            review.model.conduct, 5, range(60), engine="simpy")
    for key in ("mtd", "n", "y", "duration_days", "n_decisions", "n_enrolled"):
        assert np.array_equal(a[key], b[key]), key
