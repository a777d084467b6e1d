"""Backfill (``conduct.backfill``) and dose received below dose assigned (``conduct.shortfall``)
in the calendar engine.

Reference values:
* BOIN boundaries for target 0.25 (Liu & Yuan 2015; R ``BOIN::get.boundary(target = 0.25)``):
  lambda_e = 0.197, lambda_d = 0.298; n = 3: escalate if 0 DLT, de-escalate if >= 1,
  eliminate if >= 3; n = 6: <= 1, >= 2, >= 4; n = 9: <= 1, >= 3, >= 5; n = 12: <= 2, >= 4,
  >= 6.
* BF-BOIN's rules (Zhao et al. 2024) as written down in docs/reference_notes/bf_boin.md
  sections 3-4 (each case below says which rule it exercises).
* bfboin's simulated operating characteristics of the paper's Table 3 scenarios 1-2 (the
  note's section 6; 1000 trials each, Monte Carlo estimates, not the paper's numbers).
"""
import math

import numpy as np
import pytest

from escalation_sim.designs.boin import BOIN
from escalation_sim.engines.calendar import simulate_des_trials, simulate_one
from escalation_sim.engines.calendar.backfill import Rules, backfill_dose, bf_conflict
from escalation_sim.engines.calendar.shortfall import (dlt_rate_at, fractions_from_uniforms,
                                                        level_at_or_below)
from escalation_sim.inputs.conduct import Backfill, Conduct, Shortfall
from escalation_sim.inputs.scenario import ScenarioError, load_scenario, load_scenario_dict
from escalation_sim.types import TrialState

B25 = BOIN(n_doses=5, target=0.25, cohort_size=3)
R25 = Rules(B25)
BF = Backfill(max_per_dose=12, max_total=24)


def _open(cur, n, y, assigned=None, n_backfill=0, bf=BF):
    K = len(n)
    zeros = [0] * K
    return backfill_dose(R25, bf, cur, list(n), list(y), zeros, zeros,
                         assigned or list(n), n_backfill)


# ------------------------------------------------------------------ which dose is open
def test_boin_boundaries_as_published():
    # get.boundary(target = 0.25): n = 3: 0 / >= 1 / >= 3; n = 6: <= 1 / >= 2 / >= 4
    expected = {(3, 0): 1, (3, 1): -1, (3, 3): -2, (6, 1): 1, (6, 2): -1, (6, 4): -2,
                (9, 2): 0, (9, 3): -1, (12, 3): 0, (12, 4): -1}
    for (n, y), move in expected.items():
        assert R25.classify(n, y) == move, (n, y)


def test_highest_cleared_dose_below_current_is_open():
    # rule 1-2: doses below the escalation dose with >= 3 evaluable and safe data
    assert _open(2, [3, 3, 3, 0, 0], [0, 0, 0, 0, 0]) == 1
    # the current dose and above never open
    assert _open(0, [3, 0, 0, 0, 0], [0, 0, 0, 0, 0]) == -1


def test_dose_in_deescalation_region_closes_unless_pooled_with_next_is_safe():
    # rule 3: dose 2 has 1/3 (>= b_d(3) = 1: de-escalate) and dose 3 has no data -> closed;
    # dose 1 (0/3) stays open
    assert _open(2, [3, 3, 0, 0, 0], [0, 1, 0, 0, 0]) == 0
    # pooled with dose 3 (0/3): 1/6 < b_d(6) = 2 -> open (BF-BOIN's pooled check)
    assert _open(3, [3, 3, 3, 0, 0], [0, 1, 0, 0, 0]) == 2


def test_closure_is_monotone():
    # dose 1: 3/3, pooled with dose 2: 3/6 >= b_d(6) = 2 -> closed, and so is every dose above
    assert _open(3, [3, 3, 3, 0, 0], [3, 0, 0, 0, 0]) == -1


def test_caps_and_minimum_evaluable():
    # rule 4: dose 2 reached max_per_dose (12 assigned) -> dose 1
    assert _open(2, [3, 3, 3, 0, 0], [0, 0, 0, 0, 0], assigned=[3, 12, 3, 0, 0]) == 0
    # rule 2: dose 2 has only 2 evaluable -> not open, but it does not close dose 1
    assert _open(2, [3, 2, 3, 0, 0], [0, 0, 0, 0, 0]) == 0
    # rule 5: max_total backfill patients reached
    assert _open(2, [3, 3, 3, 0, 0], [0, 0, 0, 0, 0], n_backfill=24) == -1


# ------------------------------------------------------------------ decisions (conflicts)
def _state(n, y, cur):
    return TrialState(tuple(n), tuple(y), cur, 3, y[cur])


def test_no_conflict_keeps_the_design_decision():
    st = _state([6, 3, 3, 0, 0], [0, 0, 0, 0, 0], 2)
    dec = B25.decide(st)
    assert dec.dose == 3
    assert bf_conflict(R25, st, dec) is dec


def test_conflict_escalate_vs_lower_deescalate_pools_and_stays():
    # dose 3: 0/3 says escalate; dose 2 with backfill: 3/9 >= b_d(9) = 3 says de-escalate.
    # Conflict: pool doses 2-3: 3/12 -> b_e(12) = 2 < 3 < b_d(12) = 4 -> stay at dose 3.
    st = _state([3, 9, 3, 0, 0], [0, 3, 0, 0, 0], 2)
    dec = B25.decide(st)
    assert dec.dose == 3                           # BOIN alone escalates
    assert bf_conflict(R25, st, dec).dose == 2


def test_conflict_deescalate_goes_below_the_conflicting_dose():
    # dose 3: 1/3 (de-escalate); dose 2: 4/9 (>= 3: de-escalate, < 5: not eliminated).
    # b* = dose 2; pooled 5/12 >= 4 -> de-escalate; cumulative from dose 2: 4/9 is already
    # too toxic -> b* - 1 = dose 1.
    st = _state([3, 9, 3, 0, 0], [0, 4, 1, 0, 0], 2)
    dec = B25.decide(st)
    assert dec.dose == 1                           # BOIN alone: one level down
    assert bf_conflict(R25, st, dec).dose == 0


def test_conflict_at_dose_one_stops_when_it_meets_elimination():
    # dose 2: 1/3 de-escalate; dose 1: 3/3 eliminated (Pr(p > 0.25 | 3/3) = 0.996 > 0.95):
    # BOIN itself stops: dose 1 eliminated.
    st = _state([3, 3, 0, 0, 0], [3, 1, 0, 0, 0], 1)
    dec = bf_conflict(R25, st, B25.decide(st))
    assert dec.stop


# ------------------------------------------------------------------ in the engine
def _scenario(extra, designs=None, p=None):
    sc = load_scenario("scenarios/relma_cel_sle.yaml")
    raw = dict(sc.raw)
    raw["designs"] = designs or [{"type": "boin"}]
    if p is not None:
        raw["truth"] = {"p_dlt": p}
    raw["conduct"] = dict(raw["conduct"], **extra)
    return load_scenario_dict(raw, "test")


def test_backfill_counts_are_consistent():
    sc = _scenario({"backfill": {"max_per_dose": 9, "max_total": 10}})
    d = sc.designs[0].design
    r = simulate_des_trials(d, sc.model.truth.p_dlt, sc.model.conduct, 7, range(300))
    K = 4
    ne = np.stack([r[f"n_escalation_dose{k + 1}"] for k in range(K)], axis=1)
    nb = np.stack([r[f"n_backfill_dose{k + 1}"] for k in range(K)], axis=1)
    assert (ne + nb == r["n"]).all()
    # max_total counts backfill patients not lost (a failed product frees its place)
    assert (r["n_backfill"] <= 10).all()
    assert (r["n_backfill_enrolled"] >= r["n_backfill"]).all()
    assert (r["n_escalation"] <= 24).all()
    assert r["n_backfill"].mean() > 0
    # backfill never at the top dose (it is below the escalation dose by definition)
    assert (nb[:, K - 1] == 0).all()


def test_backfill_patients_are_below_the_escalation_dose_when_enrolled():
    sc = _scenario({"backfill": {}})
    d = sc.designs[0].design
    for trial in range(20):
        t = simulate_one(d, sc.model.truth.p_dlt, sc.model.conduct, 3, trial)
        top = -1
        for pat in t.pats:
            if pat.backfill:
                assert pat.dose < top
            else:
                top = max(top, pat.dose)


def test_bfboin_published_scenarios_within_4_se():
    """bfboin's OCs (1000 trials) for Table 3 scenarios 1-2: correct selection 79.9 % and
    59.9 %, early stop 7.5 % and 0.6 %.  Settings of the note's section 6: target 0.25, 10
    cohorts of 3, n_earlystop 9, n_cap 12, 3 patients per month (turned away when no slot),
    1-month window.  Differences kept: Poisson arrivals (bfboin: uniform gaps), no response
    requirement (the calendar engine has no efficacy)."""
    cases = {1: ([0.25, 0.41, 0.45, 0.49, 0.53], 0, 0.799, 0.075),
             2: ([0.12, 0.25, 0.42, 0.49, 0.55], 1, 0.599, 0.006)}
    m = 2000
    for sc_id, (p, mtd, ref_cs, ref_stop) in cases.items():
        raw = {"name": "bf", "doses": ["d1", "d2", "d3", "d4", "d5"], "truth": {"p_dlt": p},
               "target": 0.25, "trial": {"max_n": 30, "cohort_size": 3, "start_dose": 1},
               "designs": [{"type": "boin", "n_earlystop": 9}],
               "conduct": {"accrual_per_month": 3.0,
                           "screening": {"failure_prob": 0.0, "duration_days": 0},
                           "max_wait_days": 0, "when_paused": "leave", "phases": [],
                           "dlt_window_days": 30.4375,
                           "backfill": {"max_per_dose": 12, "max_total": 1000}}}
        sc = load_scenario_dict(raw, "bf")
        r = simulate_des_trials(sc.designs[0].design, p, sc.model.conduct, 1000, range(m))
        for ours, ref in ((np.mean(r["mtd"] == mtd), ref_cs), (np.mean(r["mtd"] < 0), ref_stop)):
            pool = max(ref, 1.0 / m)
            se = math.sqrt(pool * (1 - pool) / 1000 + pool * (1 - pool) / m)
            assert abs(ours - ref) < 4 * se, (sc_id, ours, ref)


# ------------------------------------------------------------------ shortfall
def test_log_dose_interpolation():
    a, p = [25e6, 50e6, 100e6], [0.1, 0.2, 0.4]
    # at a level: its rate; halfway in log dose between 25e6 and 50e6 (35.36e6): 0.15
    assert dlt_rate_at(50e6, a, p) == pytest.approx(0.2)
    assert dlt_rate_at(math.sqrt(25e6 * 50e6), a, p) == pytest.approx(0.15)
    # below the lowest level: first segment extended in log dose (12.5e6 -> 0.0), floored
    assert dlt_rate_at(12.5e6, a, p) == pytest.approx(0.0)
    assert dlt_rate_at(5e6, a, p) == 0.0
    assert dlt_rate_at(17.68e6, a, p) == pytest.approx(0.05, abs=1e-3)
    # counting level: highest amount at or below the amount received
    assert level_at_or_below(60e6, a) == 1 and level_at_or_below(20e6, a) == -1


def test_uniform_fraction_moments():
    spec = Shortfall(prob=0.15, received_fraction={"mean": 0.6, "sd": 0.15})
    f = fractions_from_uniforms(spec, (np.arange(100000) + 0.5) / 100000)
    assert f.mean() == pytest.approx(0.6, abs=1e-9)
    assert f.std() == pytest.approx(0.15, rel=1e-3)
    assert f.min() > 0.6 - 0.15 * math.sqrt(3) - 1e-9


def test_shortfall_rate_and_counting_policies():
    base = {"prob": 0.3, "received_fraction": {"mean": 0.6, "sd": 0.15}}
    m = 2000
    out = {}
    for policy in ("assigned", "received", "exclude"):
        sc = _scenario({"shortfall": dict(base, policy=policy)})
        r = simulate_des_trials(sc.designs[0].design, sc.model.truth.p_dlt, sc.model.conduct,
                                11, range(m))
        out[policy] = r
    r = out["assigned"]
    # how often: every enrolled patient is short with probability 0.3 (binomial, 4 SE)
    enrolled = r["n_enrolled"].sum()
    rate = r["n_short"].sum() / enrolled
    assert abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / enrolled)
    assert (out["exclude"]["n_excluded"] > 0).any() and (r["n_excluded"] == 0).all()
    # excluded patients are replaced: the evaluable count still reaches max_n (24)
    assert (out["exclude"]["n"].sum(axis=1) <= 24).all()
    # as given, a short product is below the nominal rate at the selected dose
    sel = r["mtd"] >= 0
    assert (r["true_rate_selected_as_given"][sel] < r["true_rate_selected_nominal"][sel]).all()


def test_no_shortfall_draws_change_nothing_else():
    """prob 0: identical to the run without the block (a new stream; the others unchanged)."""
    sc0 = _scenario({})
    sc1 = _scenario({"shortfall": {"prob": 0.0, "received_fraction": {"mean": 0.5}}})
    d = sc0.designs[0].design
    a = simulate_des_trials(d, sc0.model.truth.p_dlt, sc0.model.conduct, 5, range(200))
    b = simulate_des_trials(d, sc1.model.truth.p_dlt, sc1.model.conduct, 5, range(200))
    for k in ("mtd", "n", "y", "duration_days", "n_lost"):
        assert np.array_equal(a[k], b[k]), k


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("extra, message", [
    ({"backfill": {"max_per_dose": 0}}, "conduct.backfill.max_per_dose: must be between 1 and 1000 (got 0)"),
    ({"backfill": {"max_per_dose": 2, "min_evaluable": 3}},
     "conduct.backfill.min_evaluable: must be <= max_per_dose (2), or no dose could ever open "
     "(got 3)"),
    ({"shortfall": {"prob": 1.5, "received_fraction": {"mean": 0.6}}},
     "conduct.shortfall.prob: must be a probability in [0, 1] (got 1.5)"),
    ({"shortfall": {"prob": 0.1, "received_fraction": {"mean": 0.9, "sd": 0.2}}},
     "conduct.shortfall.received_fraction.sd: a uniform fraction with mean 0.9 spans"),
])
def test_bad_conduct_blocks(extra, message):
    with pytest.raises(ScenarioError) as exc:
        _scenario(extra)
    assert message in str(exc.value)


def test_shortfall_needs_dose_amounts_and_backfill_needs_a_count_design():
    sc = load_scenario("scenarios/relma_cel_sle.yaml")
    raw = dict(sc.raw)
    raw["doses"] = ["DL1", "DL2", "DL3", "DL4"]
    raw["conduct"] = dict(raw["conduct"], shortfall={"prob": 0.1,
                                                     "received_fraction": {"mean": 0.6}})
    with pytest.raises(ScenarioError) as exc:
        load_scenario_dict(raw, "f.yaml")
    assert "f.yaml: conduct.shortfall: needs doses[].amount for every dose" in str(exc.value)
    with pytest.raises(ScenarioError) as exc:
        _scenario({"backfill": {}}, designs=[{"type": "3+3"}, {"type": "tite-boin"},
                                             {"type": "rolling6"}])
    text = str(exc.value)
    assert "designs[0] (3+3): conduct.backfill needs a design" in text
    assert "designs[2] (rolling6): conduct.backfill needs a design" in text
    assert "designs[1]" not in text          # TITE-BOIN backfills (BackfillTitePolicy)


def test_bad_conduct_exit_code_2(cli, tmp_path):
    f = tmp_path / "bad.yaml"
    text = open("scenarios/relma_cel_sle.yaml").read()
    f.write_text(text + "  backfill: {max_per_dose: 0}\n")
    r = cli("validate", f)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "conduct.backfill.max_per_dose: must be between 1 and 1000 (got 0)" in r.stderr


def test_conduct_without_new_blocks_dumps_as_before():
    # the resolved scenario (checkpoint hash input) lists the new options only when set
    sc = load_scenario("scenarios/relma_cel_sle.yaml")
    assert "backfill" not in sc.resolved()["conduct"]
    assert Conduct().backfill is None and Conduct().shortfall is None


def test_exclude_policy_keeps_the_cohort_sequence():
    """Excluded patients are replaced and never observed, so the k-th evaluable patient
    still carries u_dlt(k): the selections and counts equal the run without short products
    (only the calendar moves), trial by trial (the module docstring of toxicity.py)."""
    sc0 = _scenario({})
    sc1 = _scenario({"shortfall": {"prob": 0.3, "received_fraction": {"mean": 0.6},
                                   "policy": "exclude"}})
    d = sc0.designs[0].design
    a = simulate_des_trials(d, sc0.model.truth.p_dlt, sc0.model.conduct, 5, range(300))
    b = simulate_des_trials(d, sc1.model.truth.p_dlt, sc1.model.conduct, 5, range(300))
    for k in ("mtd", "n", "y"):
        assert np.array_equal(a[k], b[k]), k
    assert b["n_excluded"].sum() > 0
    assert (b["duration_days"] >= a["duration_days"] - 1e-9).mean() > 0.9


# ------------------------------------------------------------------ costs
def test_costs_and_vein_to_vein():
    """Fixed phases, no gate, no failures: vein-to-vein = 1 + 21 + 3 + 2 = 27 days for every
    infused patient; every enrolled patient starts one manufacturing run and is infused (a
    classic trial never stops mid-window); cost = 5000 per screening + 150000 per run +
    50000 per infusion + 40000 per month from day 0 to the close (30.4375-day months)."""
    phases = [{"name": "leukapheresis", "kind": "leukapheresis", "duration_days": 1},
              {"name": "manufacturing", "kind": "manufacturing", "duration_days": 21},
              {"name": "lymphodepletion", "kind": "lymphodepletion", "duration_days": 3},
              {"name": "rest", "duration_days": 2}]
    sc = _scenario({"phases": phases, "stagger_days": 0, "max_in_followup": None,
                    "costs": {"screening": 5000, "manufacturing": 150000, "infusion": 50000,
                              "per_month": 40000}})
    d = sc.designs[0].design
    r = simulate_des_trials(d, sc.model.truth.p_dlt, sc.model.conduct, 3, range(50))
    assert np.allclose(r["vein_to_vein_days"], 27.0)
    assert (r["manufacturing_runs"] == r["n_enrolled"]).all()
    assert (r["n_treated"] == r["n_enrolled"]).all()
    close = r["first_enrollment_day"] + r["duration_days"]
    expected = (5000 * r["n_screened"] + 150000 * r["n_enrolled"] + 50000 * r["n_treated"]
                + 40000 * close / 30.4375)
    assert np.allclose(r["cost_total"], expected)
    assert np.allclose(r["cost_per_evaluable"], expected / r["n_evaluable"])


# ------------------------------------------------------------------ conduct rules
def _run(extra, designs, m=200, seed=1):
    sc = _scenario(extra, designs=designs)
    return sc, [simulate_des_trials(it.design, sc.model.truth.p_dlt, sc.model.conduct, seed,
                                    range(m)) for it in sc.designs]


def test_review_block_equals_review_days():
    """review: {days: 7} (every decision) is the former review_days: 7, trial by trial."""
    _, (a,) = _run({"review_days": 7}, [{"type": "boin"}])
    _, (b,) = _run({"review": {"days": 7}}, [{"type": "boin"}])
    for k in ("mtd", "n", "y", "duration_days", "n_lost", "n_screened"):
        assert np.array_equal(a[k], b[k]), k


def _cohorts(t):
    """(index, dose, size, completion day) of each escalation cohort of a finished trial."""
    out = {}
    for p in t.pats:
        c = p.cohort
        if c.index < 0:
            continue
        end = p.end_day if p.status == 1 else -1.0
        i, d, s, e = out.get(c.index, (c.index, c.dose, c.size, -1.0))
        out[c.index] = (i, d, s, max(e, end))
    return [out[k] for k in sorted(out)]


def test_review_before_escalation_only_delays_escalations():
    sc = _scenario({"review": {"days": 7, "before": "escalation"}})
    d = sc.designs[0].design
    checked = 0
    for trial in range(15):
        t = simulate_one(d, sc.model.truth.p_dlt, sc.model.conduct, 2, trial)
        cs = _cohorts(t)
        days = [t.first_enroll + x for x in t.decision_times]
        for (i, dose, size, done), nxt in zip(cs[:-1], cs[1:], strict=True):
            wait = days[i] - done
            expected = 7.0 if nxt[1] > dose else 0.0
            assert wait == pytest.approx(expected), (trial, i)
            checked += 1
    assert checked > 50


def test_review_on_a_calendar():
    """The committee meets on days 0, 14, 28, ...: every decision falls on a meeting day."""
    sc = _scenario({"review_every_days": 14})
    d = sc.designs[0].design
    for trial in range(10):
        t = simulate_one(d, sc.model.truth.p_dlt, sc.model.conduct, 4, trial)
        for x in t.decision_times:
            day = t.first_enroll + x
            assert abs(day / 14 - round(day / 14)) < 1e-6


def test_cohort_sizes_sequence():
    sc = _scenario({"cohort_sizes": [3, 3, 2, 2]})
    d = sc.designs[0].design
    for trial in range(10):
        t = simulate_one(d, sc.model.truth.p_dlt, sc.model.conduct, 4, trial)
        sizes = [s for _, _, s, _ in _cohorts(t)]
        # 3, 3, then 2s up to max_n = 24: 3 + 3 + 9 x 2 = 24
        assert sizes == [3, 3] + [2] * 9, sizes


def test_min_followup_before_escalating_tite():
    """TITE-CRM with min_followup_days 28: the first patient at a new highest dose is
    enrolled only once somebody at the dose below was followed 28 days (or had a DLT)."""
    sc = _scenario({"min_followup_days": 28},
                   designs=[{"type": "tite-crm", "skeleton": [0.10, 0.17, 0.25, 0.35]}])
    d = sc.designs[0].design
    escalations = 0
    for trial in range(15):
        t = simulate_one(d, sc.model.truth.p_dlt, sc.model.conduct, 4, trial)
        top = -1
        for p in t.pats:
            if p.dose > top and top >= 0:
                now = p.enrolled_day
                ok = any(q.dose == p.dose - 1 and q.infusion_day >= 0 and q.status == 1
                         and (now - q.infusion_day >= 28 - 1e-9
                              or (q.dlt and now >= q.infusion_day
                                  + t.toxicity.onset_day(q) - 1e-9))
                         for q in t.pats if q.enrolled_day <= now)
                assert ok, (trial, p.j)
                escalations += 1
            top = max(top, p.dose)
    assert escalations > 10


@pytest.mark.parametrize("extra, message", [
    ({"review_every_days": 0}, "conduct.review_every_days: must be > 0 days, or null for none "
                               "(got 0"),
    ({"review": {"days": 7}, "review_days": 3}, "conduct.review: give the review's days once"),
    ({"cohort_sizes": [3, 0]}, "conduct.cohort_sizes: each size must be between 1 and 12 (got 0)"),
    ({"min_followup_days": 40}, "conduct.min_followup_days: must be <= dlt_window_days (28)"),
    ({"backfill": {"max_per_dose": 100, "max_total": 10}},
     "conduct.backfill.max_per_dose: a dose can never have more than trial.max_n + max_total "
     "= 34 patients"),
    ({"costs": {"screening": -1}}, "conduct.costs.screening: must be a finite amount >= 0"),
])
def test_bad_conduct_rules(extra, message):
    with pytest.raises(ScenarioError) as exc:
        _scenario(extra)
    assert message in str(exc.value)


# ------------------------------------------------------------------ piecewise accrual
def test_piecewise_accrual_counts():
    """Arrivals of a Poisson process with 0.5 / month until day 180, then 1.5 / month:
    mean counts 180 x 0.5 / 30.4375 = 2.957 in [0, 180) and 180 x 1.5 / 30.4375 = 8.871
    in [180, 360) (Poisson: variance = mean), 4000 trials, within 4 SE."""
    from escalation_sim.engines.calendar.draws import ChunkDraws, DrawPlan
    c = Conduct(accrual_per_month=[{"until_day": 180, "rate": 0.5}, {"rate": 1.5}])
    plan = DrawPlan(c, 9)
    m = 4000
    chunk = ChunkDraws(plan, np.arange(m, dtype=np.uint64), 8, 4, 4)
    first, second = [], []
    for r in range(m):
        d = chunk.trial(r)
        while d.arrival_time[-1] < 360:
            d.more_arrivals()
        at = np.asarray(d.arrival_time)
        first.append(np.sum(at < 180))
        second.append(np.sum((at >= 180) & (at < 360)))
    for counts, mean in ((first, 180 * 0.5 / 30.4375), (second, 180 * 1.5 / 30.4375)):
        assert abs(np.mean(counts) - mean) < 4 * math.sqrt(mean / m), (np.mean(counts), mean)


@pytest.mark.parametrize("schedule, message", [
    ([{"until_day": 180, "rate": 0.5}, {"until_day": 90, "rate": 1.0}, {"rate": 2}],
     "[1].until_day: the schedule must increase in time: 90 is not after day 180"),
    ([{"until_day": 180, "rate": 0.5}, {"until_day": 200, "rate": 1.0}],
     "[1].until_day: the last piece holds from then on"),
    ([{"rate": 0}], "[0].rate: must be > 0"),
])
def test_bad_accrual_schedule(schedule, message):
    with pytest.raises(ScenarioError) as exc:
        _scenario({"accrual_per_month": schedule})
    assert "conduct.accrual_per_month" in str(exc.value) and message in str(exc.value)


# ------------------------------------------------------------------ manufacturing capacity
def _log_runs(extra, trials=8):
    import escalation_sim as es
    sc = _scenario(extra)
    log = es.patient_log(sc, "boin", trials)
    return sc, log


def test_capacity_never_binding_changes_nothing():
    _, (a,) = _run({}, [{"type": "boin"}], m=150)
    _, (b,) = _run({"manufacturing_capacity": {"slots": 100}}, [{"type": "boin"}], m=150)
    for k in ("mtd", "n", "y", "duration_days", "n_lost"):
        assert np.array_equal(a[k], b[k]), k
    assert (b["manufacturing_queue_max"] == 0).all()


@pytest.mark.parametrize("per_days", [None, 30.0])
def test_one_slot_runs_never_overlap(per_days):
    cap = {"slots": 1} if per_days is None else {"slots": 1, "per_days": per_days}
    _, log = _log_runs({"manufacturing_capacity": cap})
    log = log[np.isfinite(log["manufacturing_start_day"])]
    waited = 0
    for _, g in log.groupby("trial"):
        s = g["manufacturing_start_day"].to_numpy()
        e = g["manufacturing_end_day"].to_numpy()
        order = np.argsort(s, kind="stable")
        s, e = s[order], e[order]
        busy_until = e if per_days is None else s + per_days
        assert (s[1:] >= busy_until[:-1] - 1e-9).all()
        waited += int((g["manufacturing_wait_days"] > 0).sum())
    assert waited > 0


def test_capacity_bad_input():
    with pytest.raises(ScenarioError) as exc:
        _scenario({"manufacturing_capacity": {"slots": 0}})
    assert ("conduct.manufacturing_capacity.slots: must be between 1 and 1000; with no slot "
            "nobody could ever be treated (got 0)") in str(exc.value)
    with pytest.raises(ScenarioError) as exc:
        _scenario({"manufacturing_capacity": {"slots": 2},
                   "phases": [{"name": "rest", "duration_days": 2}]})
    assert "needs a phase of kind manufacturing" in str(exc.value)


# ------------------------------------------------------------------ screen_while_paused
def test_screen_while_paused_false_counts():
    """Arrivals while accrual is paused are not screened: screened + not screened = every
    arrival up to the close; the log marks each unscreened arrival, never eligible, never
    enrolled; and no candidate is screened then lost for want of a slot more often than
    with screening during pauses (the pool of screened patients shrinks)."""
    import escalation_sim as es
    sc = _scenario({"screen_while_paused": False})
    d = sc.designs[0].design
    r = simulate_des_trials(d, sc.model.truth.p_dlt, sc.model.conduct, 6, range(10),
                            record_patients=True)
    log = r["patients"]
    for k, t in enumerate(range(10)):
        rows = log["trial"] == t
        close = r["first_enrollment_day"][k] + r["duration_days"][k]
        arrived = np.sum(log["arrival_day"][rows] <= close)
        assert r["n_screened"][k] + r["n_not_screened"][k] == arrived
        unscreened = rows & (log["fate"] == "not_screened_paused")
        assert unscreened.sum() == r["n_not_screened"][k]
        assert not log["eligible"][unscreened].any()
        assert (log["patient"][unscreened] == -1).all()
    assert r["n_not_screened"].sum() > 0
    base = _scenario({})
    a = simulate_des_trials(d, base.model.truth.p_dlt, base.model.conduct, 6, range(300))
    b = simulate_des_trials(d, sc.model.truth.p_dlt, sc.model.conduct, 6, range(300))
    assert b["n_waiting_max"].mean() < a["n_waiting_max"].mean()
    _ = es


def test_screen_while_paused_needs_finite_accrual():
    with pytest.raises(ScenarioError) as exc:
        _scenario({"screen_while_paused": False, "accrual_per_month": None})
    assert "conduct.screen_while_paused: with unlimited accrual" in str(exc.value)
