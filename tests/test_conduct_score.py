"""Backfill, short products and ``min_followup_days`` for the score designs gBOIN and
TITE-gBOIN in the calendar engine (issue 14, last round; engines/calendar/backfill.py).

Provenance of the expected values:
* gBOIN / TITE-gBOIN's rules on the normalized equivalent toxicity score (nETS; Mu et al.
  2019, Takeda et al. 2022; designs/gboin.py and designs/tite_gboin.py docstrings):
  boundaries ``lambda_e = log((1-phi1)/(1-phi)) / log(phi(1-phi1)/(phi1(1-phi)))``,
  ``lambda_d = log((1-phi)/(1-phi2)) / log(phi2(1-phi)/(phi(1-phi2)))`` with phi1 = 0.6 phi,
  phi2 = 1.4 phi, recomputed below from the formula (phi = 0.26, cart_crs_icans.yaml:
  lambda_e = 0.2047, lambda_d = 0.3104); elimination: n >= 3 and Pr(p > phi | Beta(s + 1,
  n - s + 1)) > 0.95 with the real score sum s (scipy's Beta tail, not the engine's).
* default scores 0 / 0 / 0.5 / 1 / 1.5 for worst grades 0-4 -> units 0 / 0 / 1 / 2 / 3 of
  1/3 nETS (nETS = score / 1.5).
* "a dose is open for backfill" for a score design (README, backfill section): its
  evaluable patients' nETS mean is below lambda_d and the dose is not eliminated (or so
  pooled with the next dose), plus rules 1, 2, 4, 5 as for every design.  Each check below
  recomputes this from the patients' own days and their graded events (truth's draws), never
  from the engine's counters.
"""
import math

import pytest
from scipy.stats import beta

from escalation_sim.engines.calendar import simulate_des_trials, simulate_one
from escalation_sim.engines.calendar import backfill as bfmod
from escalation_sim.engines.calendar.backfill import Rules, score_twin
from escalation_sim.engines.calendar.patient import COMPLETE, EXCLUDED
from escalation_sim.engines.calendar.shortfall import level_at_or_below
from escalation_sim.inputs.scenario import load_scenario, load_scenario_dict

EPS = 1e-9
PHI = 0.26
UNITS = (0, 0, 1, 2, 3)          # default scores 0/0/0.5/1/1.5, in thirds of the nETS
L = 3
AMOUNTS = [25e6, 50e6, 75e6, 100e6]
GBOIN = [{"type": "gboin", "target": PHI}]
TITE_GBOIN = [{"type": "tite-gboin", "target": PHI}]
FAST = {"accrual_per_month": 6.0, "stagger_days": 0, "max_in_followup": None}
BF = {"backfill": {"max_per_dose": 12, "max_total": 24}}
SF = {"prob": 0.3, "received_fraction": {"mean": 0.6, "sd": 0.15}}


def _lambdas(phi):
    p1, p2 = 0.6 * phi, 1.4 * phi
    lam_e = math.log((1 - p1) / (1 - phi)) / math.log(phi * (1 - p1) / (p1 * (1 - phi)))
    lam_d = math.log((1 - phi) / (1 - p2)) / math.log(p2 * (1 - phi) / (phi * (1 - p2)))
    return lam_e, lam_d


LAM_E, LAM_D = _lambdas(PHI)


def _too_toxic(n, units):
    """gBOIN's de-escalation or elimination region for ``n`` patients, ``units`` / 3 nETS."""
    s = units / L
    if n >= 3 and beta.sf(PHI, s + 1, n - s + 1) > 0.95:
        return True
    return s / n >= LAM_D - 1e-12


def _graded(extra, designs):
    sc = load_scenario("scenarios/cart_crs_icans.yaml")
    raw = dict(sc.raw)
    raw["designs"] = designs
    raw["conduct"] = dict(raw["conduct"], **extra)
    return load_scenario_dict(raw, "test")


def _units_by(t, q, upto):
    """Units of ``q``'s worst grade among its events starting within ``upto`` days of its
    infusion and inside the window (from the truth's events of the patient)."""
    W = t.setup.window
    best = 0
    for _, g, day in t.toxicity.events(q):
        if day <= min(upto, W) + EPS:
            best = max(best, UNITS[g])
    return best


def _lost_by(q, now):
    return q.status != COMPLETE and 0 <= q.end_day <= now + EPS


# ------------------------------------------------------------------ the rules
def test_lambdas_from_the_formula():
    assert LAM_E == pytest.approx(0.2047, abs=1e-4)
    assert LAM_D == pytest.approx(0.3104, abs=1e-4)


def test_gboin_and_tite_gboin_classify_on_the_nets():
    """Rules (the backfill and conflict classification) on gBOIN and on TITE-gBOIN's gBOIN
    twin, against the formula: n = 3: 2 units (0.667 nETS, mean 0.222) stay, 3 units (mean
    0.333 >= 0.3104) de-escalate, 0 units escalate; n = 6: 5 units (mean 0.278) stay, 6
    (0.333) de-escalate; n = 3 and 7 units (2.333 nETS): Pr(p > 0.26) > 0.95: eliminate."""
    for spec in (GBOIN, TITE_GBOIN):
        sc = _graded({}, spec)
        rules = Rules(sc.designs[0].design)
        assert rules.interval
        for n in range(1, 13):
            for y in range(0, n * L + 1):
                assert rules.too_toxic(n, y) == _too_toxic(n, y), (spec, n, y)
        assert rules.classify(3, 0) == 1 and rules.classify(3, 2) == 0
        assert rules.classify(3, 3) == -1 and rules.classify(6, 5) == 0
        assert rules.classify(6, 6) == -1 and rules.classify(3, 7) == -2


def test_tite_gboin_twin_decides_as_tite_gboin_on_complete_data():
    """With nobody pending TITE-gBOIN is gBOIN (designs/tite_gboin.py): its twin gives the
    same move on every complete 2-dose state with n <= 6 at the current dose."""
    from escalation_sim.designs.tite import TiteState
    sc = _graded({}, TITE_GBOIN)
    tg = sc.designs[0].design.inner
    twin = score_twin(tg)
    for n in range(1, 7):
        for y in range(n * L + 1):
            st = TiteState((3, n, 0, 0), (0, y, 0, 0), 1, n, y, (), L)
            a = tg.decide(st)
            b = twin.decide(st)
            assert (a.stop, a.dose) == (b.stop, b.dose), (n, y, a.reason, b.reason)


# ------------------------------------------------------------------ gBOIN (classic)
def _classic_data(t, now, skip):
    """Per dose (n, units) in a classic trial's data at ``now``: escalation cohorts whose
    last window has closed, backfill patients whose window has closed (observed)."""
    W = t.setup.window
    K = t.setup.K
    done = {}
    for q in t.pats:
        if not q.backfill and q.status == COMPLETE:
            c = id(q.cohort)
            done[c] = max(done.get(c, -1.0), q.infusion_day + W)
    n, y = [0] * K, [0] * K
    for q in t.pats:
        if q is skip or q.status != COMPLETE or q.k < 0:
            continue
        ok = (q.infusion_day + W <= now + EPS if q.backfill
              else done[id(q.cohort)] <= now + EPS)
        if ok:
            n[q.dose] += 1
            y[q.dose] += _units_by(t, q, W)
    return n, y


def _expected_open(n, y, cur, assigned, n_bf, max_per_dose=12, max_total=24):
    if n_bf >= max_total:
        return -1
    best = -1
    for b in range(cur):
        if n[b] == 0:
            continue
        if _too_toxic(n[b], y[b]):
            if b + 1 >= len(n) or n[b + 1] == 0 or _too_toxic(n[b] + n[b + 1],
                                                                y[b] + y[b + 1]):
                break
        if n[b] >= 3 and assigned[b] < max_per_dose:
            best = b
    return best


def test_gboin_backfill_dose_recomputed_at_each_enrolment():
    """Every backfill patient of 30 gBOIN trials: its dose is the highest dose open at its
    enrolment day, recomputed from the patients' days and graded events: below the current
    escalation dose, >= 3 evaluable, pooled nETS mean below lambda_d and not eliminated (or
    so pooled with the next dose), monotone closure, fewer than 12 patients there and fewer
    than 24 backfill patients in the trial."""
    sc = _graded(dict(FAST, **BF), GBOIN)
    d = sc.designs[0].design
    m = sc.outcome_model
    seen = 0
    for trial in range(30):
        t = simulate_one(d, m, sc.model.conduct, 11, trial)
        K = t.setup.K
        for p in t.pats:
            if not p.backfill:
                continue
            seen += 1
            now = p.enrolled_day
            others = [q for q in t.pats if q is not p and q.enrolled_day <= now + EPS]
            cur = [q for q in others if not q.backfill][-1].cohort.dose
            n, y = _classic_data(t, now, p)
            assigned = [0] * K
            n_bf = 0
            for q in others:
                if not _lost_by(q, now):
                    assigned[q.dose] += 1
                    n_bf += q.backfill
            assert p.dose == _expected_open(n, y, cur, assigned, n_bf), (trial, p.j)
    assert seen > 100


def test_gboin_decisions_and_selection_use_backfill_scores(monkeypatch):
    """Each state gBOIN decides on (ConductPolicy.decide_now) holds every escalation cohort
    completed and every backfill patient whose window closed by then, with the units of the
    worst grade in the window; the final state, from which the MTD is selected, holds every
    observed patient (escalation + backfill) at its dose."""
    recorded = []
    orig = bfmod.ConductPolicy.decide_now

    def decide_now(self):
        recorded.append((self.trial.clock.now, self.state))
        return orig(self)

    monkeypatch.setattr(bfmod.ConductPolicy, "decide_now", decide_now)
    sc = _graded(dict(FAST, **BF), GBOIN)
    d = sc.designs[0].design
    with_bf = 0
    for trial in range(12):
        recorded.clear()
        t = simulate_one(d, sc.outcome_model, sc.model.conduct, 5, trial)
        for now, st in recorded:
            n, y = _classic_data(t, now, None)
            assert list(st.n) == n and list(st.y) == y, (trial, now)
            with_bf += any(q.backfill and q.infusion_day + t.setup.window <= now + EPS
                           for q in t.pats if q.k >= 0)
        n, y = _classic_data(t, math.inf, None)
        assert list(t.final_state.n) == n and list(t.final_state.y) == y
        assert t.final_state.total_n == sum(1 for q in t.pats if q.k >= 0)
    assert with_bf > 20


def test_gboin_backfill_columns_count_dlts_not_units():
    """The per-trial columns: escalation + backfill = every patient in the data, and the
    y_* columns count DLTs (the dlt rule, from each patient's flag), not score units."""
    sc = _graded(dict(FAST, **BF), GBOIN)
    for it in sc.designs:
        r = simulate_des_trials(it.design, sc.outcome_model, sc.model.conduct, 3, range(80))
        assert (r["n_escalation"] + r["n_backfill"] == r["n"].sum(axis=1)).all()
        assert (r["y_escalation"] + r["y_backfill"] == r["dlt"].sum(axis=1)).all()
        assert r["n_backfill"].mean() > 3
        assert (r["y"].sum(axis=1) >= r["dlt"].sum(axis=1)).all()   # a DLT scores >= 1


# ------------------------------------------------------------------ TITE-gBOIN
def test_tite_gboin_backfill_dose_recomputed_at_each_enrolment():
    """Every TITE-gBOIN backfill patient (30 trials): at its enrolment day, recomputed
    from the patients' days and events: evaluable = window closed or a scored event seen
    (TITE-gBOIN's own end of pending); its dose is the highest open one by the rules above
    (patients in the data, pending included, against max_per_dose); and TITE-gBOIN had
    suspended accrual: more than half the patients at the escalation dose pending, or the
    de-escalation asked at dose 1 with patients pending there."""
    sc = _graded(dict(FAST, **BF), TITE_GBOIN)
    d = sc.designs[0].design
    seen = 0
    for trial in range(30):
        t = simulate_one(d, sc.outcome_model, sc.model.conduct, 11, trial)
        K, W = t.setup.K, t.setup.window
        for p in t.pats:
            if not p.backfill:
                continue
            seen += 1
            now = p.enrolled_day
            others = [q for q in t.pats if q is not p and q.enrolled_day <= now + EPS]
            cur = [q for q in others if not q.backfill][-1].cohort.dose
            n, y = [0] * K, [0] * K
            inn = [0] * K
            pend = [0] * K
            n_bf = 0
            for q in others:
                if _lost_by(q, now):
                    continue
                inn[q.dose] += 1
                n_bf += q.backfill
                infused = q.status == COMPLETE and 0 <= q.infusion_day <= now + EPS
                u = _units_by(t, q, now - q.infusion_day) if infused else 0
                if infused and (q.infusion_day + W <= now + EPS or u > 0):
                    n[q.dose] += 1
                    y[q.dose] += u
                else:
                    pend[q.dose] += 1
            assert p.dose == _expected_open(n, y, cur, inn, n_bf), (trial, p.j, n, y)
            assert pend[cur] > 0.5 * inn[cur] or (cur == 0 and pend[0] > 0), (trial, p.j)
    assert seen > 30


def test_tite_gboin_final_state_holds_backfill_units():
    """The final state (selection) holds every patient followed to the end of its window,
    backfill ones included, with the units of its worst grade in the window."""
    sc = _graded(dict(FAST, **BF), TITE_GBOIN)
    d = sc.designs[0].design
    n_bf = 0
    for trial in range(15):
        t = simulate_one(d, sc.outcome_model, sc.model.conduct, 2, trial)
        K = t.setup.K
        n, y = [0] * K, [0] * K
        for q in t.pats:
            if q.status == COMPLETE:
                n[q.dose] += 1
                y[q.dose] += _units_by(t, q, t.setup.window)
                n_bf += q.backfill
        assert list(t.final_state.n) == n and list(t.final_state.y) == y
    assert n_bf > 20


def test_tite_gboin_min_followup_before_escalating():
    """TITE-gBOIN with min_followup_days 28: the first patient at a new highest dose is
    enrolled only once somebody at the dose below had been followed 28 days or had a scored
    event seen (its data complete, as a DLT for TITE-BOIN); and the hold binds in some
    trials (TITE-gBOIN alone escalates faster: more patients reach DL3-DL4).  With the default
    max_pending_fraction 0.5 the hold can never bind (TITE-gBOIN escalates only with more
    than half the patients at the dose no longer pending, i.e. followed in this sense), so
    the design here may decide with every patient pending (max_pending_fraction 1)."""
    designs = [dict(TITE_GBOIN[0], max_pending_fraction=1.0)]
    sc = _graded(dict(FAST, min_followup_days=28), designs)
    d = sc.designs[0].design
    escalations = 0
    for trial in range(20):
        t = simulate_one(d, sc.outcome_model, sc.model.conduct, 4, trial)
        top = -1
        for p in t.pats:
            if p.dose > top and top >= 0:
                now = p.enrolled_day
                ok = any(q.dose == p.dose - 1 and q.status == COMPLETE and q.infusion_day >= 0
                         and (now - q.infusion_day >= 28 - 1e-9
                              or _units_by(t, q, now - q.infusion_day) > 0)
                         for q in t.pats if q.enrolled_day <= now)
                assert ok, (trial, p.j)
                escalations += 1
            top = max(top, p.dose)
    assert escalations > 10
    r = simulate_des_trials(d, sc.outcome_model, sc.model.conduct, 4, range(100))
    assert r["n_escalations_held"].sum() > 0
    plain = _graded(FAST, designs)
    r0 = simulate_des_trials(plain.designs[0].design, plain.outcome_model,
                             plain.model.conduct, 4, range(100))
    # accrual-limited (duration unchanged), but escalation is slower: fewer patients at
    # DL3-DL4 over the 100 trials than without the hold
    assert r["n"][:, 2:].sum() < r0["n"][:, 2:].sum()


# ------------------------------------------------------------------ short products
@pytest.mark.parametrize("designs", [GBOIN, TITE_GBOIN])
def test_short_products_grades_at_the_amount_received(designs):
    """Short products (policy assigned) with a score design: each short patient's grade of
    each type is at most the grade its latent gives at the assigned level (P(grade >= g)
    rises with the amount), its units are those of its worst grade in the window, and the
    DLTs among short products agree with the sum of their true rates at the amount
    received (GradedShortfall.rate: the outcome model's formula at the interpolated
    thresholds) within 4 SE (Poisson-binomial variance)."""
    sc = _graded(dict(shortfall=dict(SF, policy="assigned")), designs)
    d = sc.designs[0].design
    dlts, mean, var = 0, 0.0, 0.0
    lower = 0
    for trial in range(300):
        t = simulate_one(d, sc.outcome_model, sc.model.conduct, 9, trial)
        tox = t.toxicity
        sf = t.setup.shortfall
        for q in t.pats:
            if q.received >= 1.0 or q.k < 0 or q.status != COMPLETE:
                continue
            full = t.draws.grades[q.k, q.dose].tolist()
            got = [0] * len(full)
            for j, g, _ in tox.events(q):
                got[j] = g
            assert all(a <= b for a, b in zip(got, full, strict=True)), (trial, q.j)
            lower += got != full
            assert q.worst == max([g for _, g, day in tox.events(q)
                                   if day <= t.setup.window] + [0])
            rate = sf.graded.rate(AMOUNTS[q.dose] * q.received)
            dlts += q.dlt
            mean += rate
            var += rate * (1 - rate)
    assert lower > 0
    z = (dlts - mean) / math.sqrt(var)
    assert abs(z) < 4, (dlts, mean, z)


@pytest.mark.parametrize("designs", [GBOIN, TITE_GBOIN])
def test_short_products_received_and_exclude(designs):
    """``received``: each short patient counts at the highest level at or below the amount
    received (level_at_or_below; below DL1: excluded), the final state holds every complete
    patient there with its units; ``exclude``: no short patient is in the data, each one
    ends excluded at its infusion, and (classic) every cohort still completes with its
    size."""
    for policy in ("received", "exclude"):
        sc = _graded(dict(shortfall=dict(SF, policy=policy)), designs)
        d = sc.designs[0].design
        n_moved = n_exc = 0
        for trial in range(25):
            t = simulate_one(d, sc.outcome_model, sc.model.conduct, 6, trial)
            K = t.setup.K
            n, y = [0] * K, [0] * K
            for q in t.pats:
                lvl = q.dose
                if q.received < 1.0 and q.infusion_day >= 0:
                    lvl = (level_at_or_below(AMOUNTS[q.dose] * q.received, AMOUNTS)
                           if policy == "received" else -1)
                    if lvl < 0:
                        assert q.status == EXCLUDED and q.end_day == q.infusion_day
                        n_exc += 1
                        continue
                    n_moved += lvl != q.dose
                if q.status == COMPLETE and (q.k >= 0):
                    n[lvl] += 1
                    y[lvl] += _units_by(t, q, t.setup.window)
            assert list(t.final_state.n) == n and list(t.final_state.y) == y, (policy, trial)
        if policy == "received":
            assert n_moved > 10
        else:
            assert n_exc > 10
