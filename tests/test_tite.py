"""Tests of the time-to-event designs (escalation_sim.designs.tite): TITE-CRM and TITE-BOIN.

References (sources beside each test):
* Cheung & Chappell (2000), Biometrics 56:1177 -- linear weights w = min(u / T, 1).
* Cheung (2011), "Dose Finding by the Continual Reassessment Method", p. 124 example as
  reproduced in the trialr vignette "Time-to-Event Continual Reassessment Method"
  (brockk/trialr, vignettes/A260-TITE-CRM.Rmd): skeleton (0.05, 0.12, 0.25, 0.40, 0.55),
  target 0.25, four DLT-free patients at dose 3 followed 73, 66, 35 and 28 of 126 days;
  dose 4 is recommended for the next patient.
* The TITE-BOIN decision table (Yuan, Lin, Li, Nie & Warren 2018, Clin Cancer Res
  24:4921) as printed for target 0.2 in Table 1 of a TITE-BOIN trial design paper in
  Contemporary Clinical Trials Communications (PMC9260438, table "tbl1").
* Posterior integrals checked against scipy.integrate.quad (independent of the grid).
"""
from __future__ import annotations

import math

import numpy as np
import pydantic
import pytest
from scipy import integrate

from escalation_sim.inputs.conduct import Conduct, Screening
from escalation_sim.engines.calendar import simulate_des_trials
from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.boin import BOIN
from escalation_sim.designs.crm import CRM
from escalation_sim.designs.registry import get_entry, is_time_to_event
from escalation_sim.designs.rules import StopAtN
from escalation_sim.designs.tite import (TITEBOIN, TITECRM, TiteState, linear_weight,
                                         tite_boin_estimate, tite_crm_fit)
from escalation_sim.inputs.distributions import DurationSpec
from escalation_sim.outcomes import state_from_outcomes
from escalation_sim.types import StopReason, TrialState

SKEL = (0.05, 0.12, 0.25, 0.40, 0.55)


def build(type_name, ctx, **kw):
    entry = get_entry(type_name)
    return entry.build(entry.spec_model(type=type_name, **kw), ctx)


# =========================================================================== weights
def test_linear_weights_cheung_chappell():
    # Cheung & Chappell (2000): w = min(follow-up / window, 1)
    assert linear_weight(73, 126) == pytest.approx(0.579365, abs=1e-6)
    assert linear_weight(28, 126) == pytest.approx(0.222222, abs=1e-6)
    assert linear_weight(0, 28) == 0.0
    assert linear_weight(14, 28) == 0.5
    assert linear_weight(40, 28) == 1.0
    with pytest.raises(ValueError):
        linear_weight(-1, 28)
    st = TiteState.from_followup((0, 0, 4, 0, 0), (0,) * 5, [(2, t) for t in (73, 66, 35, 28)],
                                 126, current=2, last_n=1)
    assert st.pending_at(2) == 4 and st.stft(2) == pytest.approx((73 + 66 + 35 + 28) / 126)
    assert st.complete_n() == (0,) * 5


def _quad_posterior_beta_mean(skeleton, terms, prior_var=1.34):
    """E[beta | data] by adaptive quadrature; terms = [(dose, dlt, weight)]."""
    def lik(b):
        v = math.exp(-b * b / (2 * prior_var))
        for d, dlt, w in terms:
            p = skeleton[d] ** math.exp(b)
            v *= p if dlt else (1 - w * p)
        return v
    z = integrate.quad(lik, -30, 30, limit=400, epsabs=0, epsrel=1e-13)[0]
    m = integrate.quad(lambda b: b * lik(b), -30, 30, limit=400, epsabs=0, epsrel=1e-13)[0]
    return m / z


def test_tite_crm_cheung_2011_p124_example():
    design = TITECRM(n_doses=5, target=0.25, skeleton=SKEL, cohort_size=1, start_dose=2)
    follow = (73, 66, 35, 28)
    st = TiteState((0, 0, 4, 0, 0), (0,) * 5, 2, 1, 0,
                   tuple((2, linear_weight(t, 126)) for t in follow))
    fit = design.fit(st)
    ref = _quad_posterior_beta_mean(SKEL, [(2, False, t / 126) for t in follow])
    assert fit.beta_mean == pytest.approx(ref, abs=1e-9)
    assert fit.p_plugin == pytest.approx(tuple(s ** math.exp(ref) for s in SKEL), abs=1e-9)
    # trialr vignette / Cheung (2011) p.124: dose level 4 is recommended next
    dec = design.decide(st)
    assert dec.dose == 3 and not dec.stop
    # the posterior mean DLT rate is also closest to 0.25 at dose 4 (what trialr reports)
    assert int(np.argmin(np.abs(np.asarray(fit.p_mean) - 0.25))) == 3


def test_tite_crm_weighted_posterior_with_dlts_matches_quadrature():
    design = TITECRM(n_doses=5, target=0.25, skeleton=SKEL)
    st = TiteState((3, 4, 2, 0, 0), (0, 1, 1, 0, 0), 2, 2, 1, ((1, 0.25), (2, 0.6)))
    terms = ([(0, False, 1.0)] * 3 + [(1, True, 1.0)] + [(1, False, 1.0)] * 2
             + [(1, False, 0.25)] + [(2, True, 1.0)] + [(2, False, 0.6)])
    assert design.fit(st).beta_mean == pytest.approx(_quad_posterior_beta_mean(SKEL, terms),
                                                     abs=1e-9)


def test_tite_crm_weight_one_and_zero_limits():
    design = TITECRM(n_doses=5, target=0.25, skeleton=SKEL)
    base = CRM(n_doses=5, target=0.25, skeleton=SKEL)
    # a pending patient with w = 1 is a complete DLT-free patient
    st1 = TiteState((3, 3, 0, 0, 0), (0, 1, 0, 0, 0), 1, 3, 1, ((1, 1.0),))
    full = TrialState((3, 3, 0, 0, 0), (0, 1, 0, 0, 0), 1, 3, 1)
    assert design.fit(st1).beta_mean == pytest.approx(base.fit(full).beta_mean, abs=1e-12)
    # w = 0 contributes nothing: as if the patient were absent from the likelihood
    st0 = TiteState((3, 3, 0, 0, 0), (0, 1, 0, 0, 0), 1, 3, 1, ((1, 0.0),))
    absent = TrialState((3, 2, 0, 0, 0), (0, 1, 0, 0, 0), 1, 2, 1)
    assert design.fit(st0).beta_mean == pytest.approx(base.fit(absent).beta_mean, abs=1e-12)
    # more follow-up without DLT -> lower estimated DLT rates
    a = design.fit(TiteState((3, 3, 0, 0, 0), (0, 1, 0, 0, 0), 1, 3, 1, ((1, 0.2),)))
    b = design.fit(TiteState((3, 3, 0, 0, 0), (0, 1, 0, 0, 0), 1, 3, 1, ((1, 0.8),)))
    assert all(x > y for x, y in zip(a.p_plugin, b.p_plugin, strict=True))


OUTCOMES = ["", "1N", "1NNN", "1NNN 2NTN", "1NNN 2NNN 3TTN", "1NNN 2NNN 3NNN 4TNN",
            "1T", "1TTT", "1NNN 2TTT 1NTN", "1NNN 2NNN 3NNN 4NNN 5NNT", "1NNN 2NNT 2NNN 3TNN"]


@pytest.mark.parametrize("outcomes", OUTCOMES)
def test_tite_crm_without_pending_equals_crm(outcomes):
    for kw in [{}, {"estimate": "posterior_mean"}, {"model": "logistic"},
               {"safety_threshold": 0.9, "cohort_size": 3}]:
        crm = CRM(n_doses=5, target=0.25, skeleton=SKEL, **kw)
        tite = TITECRM(n_doses=5, target=0.25, skeleton=SKEL, **kw)
        st = state_from_outcomes(outcomes, 5)
        ts = TiteState(st.n, st.y, st.current, st.last_n, st.last_y, ())
        assert tite.decide(ts) == crm.decide(st)
        assert tite.decide(st) == crm.decide(st)
        assert tite.select_mtd(st) == crm.select_mtd(st)
        assert tite.canonical(ts) == crm.canonical(st)


def test_tite_crm_fit_function_and_canonical_keys():
    design = TITECRM(n_doses=5, target=0.25, skeleton=SKEL)
    st = TiteState((0, 0, 2, 0, 0), (0,) * 5, 2, 2, 0, ((2, 0.3),))
    assert tite_crm_fit(design, st) == design.fit(st)
    # with pending patients the key is the whole state (follow-up matters)
    other = TiteState((0, 0, 2, 0, 0), (0,) * 5, 2, 2, 0, ((2, 0.9),))
    assert design.canonical(st) != design.canonical(other)


# =========================================================================== TITE-BOIN
TARGET = 0.2


def _tite_boin_decision(n, y, m, stft, design=None):
    """Decision at the middle of 3 doses with n patients, y DLTs, m pending of total
    standardized follow-up stft (spread evenly)."""
    design = design or TITEBOIN(n_doses=3, target=TARGET, cohort_size=3)
    pend = tuple((1, stft / m) for _ in range(m)) if m else ()
    dec = design.decide(TiteState((3, n, 0), (0, y, 0), 1, 3, 0, pend))
    if dec.stop:
        return "stop"
    if dec.cohort_size == 0:
        return "suspend"
    return {2: "escalate", 1: "stay", 0: "de-escalate"}[dec.dose]


# Published TITE-BOIN table (target 0.2, cohorts of 3; PMC9260438 Table 1):
# (number treated, DLTs, pending) -> decision, with the STFT cut-offs where they matter.
TABLE = [
    (3, 0, 0, "escalate"), (3, 0, 1, "escalate"),
    (3, 0, 2, "suspend"), (3, 0, 3, "suspend"),
    (3, 1, 0, "de-escalate"), (3, 1, 1, "de-escalate"), (3, 1, 2, "de-escalate"),
    (6, 0, 0, "escalate"), (6, 0, 3, "escalate"), (6, 0, 4, "suspend"), (6, 0, 6, "suspend"),
    (6, 1, 0, "stay"), (6, 1, 1, "stay"), (6, 1, 4, "suspend"),
    (6, 2, 0, "de-escalate"), (6, 2, 4, "de-escalate"),
    (9, 0, 0, "escalate"), (9, 0, 4, "escalate"), (9, 0, 5, "suspend"),
    (9, 1, 0, "escalate"), (9, 1, 2, "escalate"), (9, 1, 5, "suspend"),
    (9, 2, 0, "stay"), (9, 2, 5, "suspend"),
    (9, 3, 0, "de-escalate"), (9, 3, 6, "de-escalate"),
]


@pytest.mark.parametrize("n,y,m,expected", TABLE)
def test_tite_boin_published_table_rows(n, y, m, expected):
    # whatever the follow-up of the pending patients (STFT from 0 to almost m)
    for stft in (0.0, 0.5 * m, 0.999 * m):
        assert _tite_boin_decision(n, y, m, stft) == expected, (n, y, m, stft)


# STFT cut-offs printed in the table: (n, y, m, cut-off, below, at-or-above)
CUTOFFS = [
    (9, 1, 3, 0.77, "stay", "escalate"),
    (9, 1, 4, 2.15, "stay", "escalate"),
    (9, 2, 1, 0.52, "de-escalate", "stay"),
    (9, 2, 2, 1.59, "de-escalate", "stay"),
    (9, 2, 3, 2.66, "de-escalate", "stay"),
    (9, 2, 4, 3.73, "de-escalate", "stay"),
]


@pytest.mark.parametrize("n,y,m,cut,below,above", CUTOFFS)
def test_tite_boin_published_stft_cutoffs(n, y, m, cut, below, above):
    # the table rounds the cut-offs to 2 decimals
    assert _tite_boin_decision(n, y, m, cut - 0.01) == below
    assert _tite_boin_decision(n, y, m, cut + 0.01) == above
    # and the exact cut-off solves p_tilde = lambda
    lam_e, lam_d = BOIN(n_doses=3, target=TARGET).lambdas
    lam = lam_e if above == "escalate" else lam_d
    exact = m - (n * lam - y) * (1 - (y + TARGET / 2) / (n - m + 1)) / ((y + TARGET / 2)
                                                                       / (n - m + 1))
    assert exact == pytest.approx(cut, abs=0.005)
    assert tite_boin_estimate(TARGET, n, y, m, exact) == pytest.approx(lam, abs=1e-12)


def test_tite_boin_table_row_6_1_3_depends_on_followup():
    """The published table lists (6 treated, 1 DLT, <= 3 pending) as 'stay' without an STFT
    cut-off; the rule it is generated from (the other rows, reproduced above) gives a cut-off
    at m = 2 and 3: de-escalate while the pending follow-up is short.  We follow the rule."""
    assert _tite_boin_decision(6, 1, 3, 2.5) == "stay"
    assert _tite_boin_decision(6, 1, 3, 0.0) == "de-escalate"
    assert _tite_boin_decision(6, 1, 2, 1.0) == "stay"


def test_tite_boin_elimination_rows():
    # table: (3, >=2, <=1) and (6, >=3, <=3) and (9, >=4, <=5) -> de-escalate and eliminate
    design = TITEBOIN(n_doses=3, target=TARGET, cohort_size=3)
    for n, y, m in [(3, 2, 1), (6, 3, 3), (9, 4, 5)]:
        st = TiteState((3, n, 0), (0, y, 0), 1, 3, 0, tuple((1, 0.4) for _ in range(m)))
        assert design.eliminated(st) == [False, True, True]
        assert _tite_boin_decision(n, y, m, 0.4 * m) == "de-escalate"
    # at dose 1, elimination stops the trial even with patients pending
    st = TiteState((3, 0, 0), (2, 0, 0), 0, 3, 2, ((0, 0.5),))
    dec = design.decide(st)
    assert dec.stop and dec.stop_reason == StopReason.LOWEST_DOSE_TOO_TOXIC


def test_tite_boin_guards_and_options():
    d = TITEBOIN(n_doses=3, target=TARGET, cohort_size=3)
    top = TiteState((3, 3, 3), (0, 0, 0), 2, 3, 0, ((2, 0.9),))
    assert d.decide(top).dose == 2                                   # top dose: stay
    low = TiteState((3, 0, 0), (1, 0, 0), 0, 3, 1, ((0, 0.9),))
    assert d.decide(low).dose == 0                                   # dose 1: stay
    strict = TITEBOIN(n_doses=3, target=TARGET, cohort_size=3, max_pending_fraction=0.3)
    assert _tite_boin_decision(9, 0, 3, 1.0, strict) == "suspend"
    assert _tite_boin_decision(9, 0, 3, 1.0) == "escalate"
    early = TITEBOIN(n_doses=3, target=TARGET, cohort_size=3, n_earlystop=9)
    assert _tite_boin_decision(9, 2, 1, 0.9, early) == "stop"
    est = d.estimates(TiteState((3, 9, 0), (0, 2, 0), 1, 3, 0, ((1, 0.5),)))
    assert est["pending"] == [0, 1, 0] and est["stft"] == [0.0, 0.5, 0.0]
    assert est["p_tilde"][1] == pytest.approx(tite_boin_estimate(TARGET, 9, 2, 1, 0.5))
    with pytest.raises(ValueError, match="titration"):
        TITEBOIN(n_doses=3, target=TARGET, titration=True)


def _reachable_states(design, n_cohorts):
    """All states reachable in n_cohorts cohorts following ``design``'s own decisions."""
    frontier, seen = [TrialState.empty(design.n_doses)], []
    for _ in range(n_cohorts):
        nxt = []
        for st in frontier:
            dec = design.decide(st)
            if dec.stop:
                continue
            for y in range(dec.cohort_size + 1):
                nxt.append(st.add_cohort(dec.dose, dec.cohort_size, y))
        seen.extend(nxt)
        frontier = nxt
    return seen


@pytest.mark.parametrize("target,kw", [(0.2, {}), (0.3, {"extrasafe": True}),
                                       (0.25, {"n_earlystop": 6, "bound_mtd": True})])
def test_tite_boin_without_pending_equals_boin(target, kw):
    boin = BOIN(n_doses=4, target=target, cohort_size=3, **kw)
    tite = TITEBOIN(n_doses=4, target=target, cohort_size=3, **kw)
    states = _reachable_states(boin, 5)
    assert len(states) > 200
    for st in states:
        ts = TiteState(st.n, st.y, st.current, st.last_n, st.last_y, ())
        assert tite.decide(ts) == boin.decide(st)
        assert tite.select_mtd(st) == boin.select_mtd(st)
    # pending patients at other doses only: still BOIN at the current dose
    ts = TiteState((3, 3, 0, 0), (0, 1, 0, 0), 1, 3, 1, ((0, 0.5),))
    st = TrialState((3, 3, 0, 0), (0, 1, 0, 0), 1, 3, 1)
    assert tite.decide(ts) == boin.decide(st)


def test_tite_state_validation():
    with pytest.raises(ValueError, match="pending follow-up fraction"):
        TiteState((3, 0), (0, 0), 0, 3, 0, ((0, 1.5),))
    with pytest.raises(ValueError, match="pending patients but only"):
        TiteState((3, 0), (2, 0), 0, 3, 2, ((0, 0.1), (0, 0.2)))
    with pytest.raises(ValueError, match="outside"):
        TiteState((3, 0), (0, 0), 0, 3, 0, ((2, 0.1),))


# =========================================================================== registry
def test_registry_entries_and_specs():
    ctx = DesignContext(n_doses=4, target=0.3, cohort_size=3, max_n=24, start_dose=0)
    for name, cls in [("tite-crm", TITECRM), ("tite-boin", TITEBOIN)]:
        entry = get_entry(name)
        assert entry.time_to_event
        design = build(name, ctx)
        assert isinstance(design, StopAtN) and design.n == 24
        assert isinstance(design.inner, cls) and design.inner.time_to_event
        # the metadata is the class's, read through the wrappers by the engines
        assert entry.design_class is cls and design.time_to_event and design.max_n == 24
        assert is_time_to_event(design) and is_time_to_event(design.inner)
        assert design.name == name
    d = build("tite-boin", ctx, max_pending_fraction=0.4, cohort_size=1, stop_n_at_dose=9)
    assert d.inner.max_pending_fraction == 0.4 and d.inner.cohort_size == 1
    d = build("tite-crm", ctx, skeleton=[0.1, 0.2, 0.3, 0.45], cohort_size=1)
    assert d.inner.skeleton == (0.1, 0.2, 0.3, 0.45)
    spec = get_entry("tite-boin").spec_model
    with pytest.raises(pydantic.ValidationError, match="titration"):
        spec(type="tite-boin", titration=True)
    # options that only matter with titration are refused, not silently ignored
    with pytest.raises(pydantic.ValidationError, match="titration_step_down: a titration option"):
        spec(type="tite-boin", titration_step_down=True)
    with pytest.raises(pydantic.ValidationError):
        spec(type="tite-boin", max_pending_fraction=1.5)
    with pytest.raises(pydantic.ValidationError):
        get_entry("tite-crm").spec_model(type="tite-crm", skeleton=[0.3, 0.2])
    assert not get_entry("boin").time_to_event and not get_entry("crm").time_to_event
    assert not is_time_to_event(build("boin", ctx)) and not is_time_to_event(build("crm", ctx))


# =========================================================================== in the DES
CTX = DesignContext(n_doses=4, target=0.3, cohort_size=3, max_n=24, start_dose=0)
P_TRUE = [0.05, 0.12, 0.25, 0.40]


@pytest.mark.parametrize("tite_name,base_name", [("tite-boin", "boin"), ("tite-crm", "crm")])
def test_tite_with_complete_data_equals_classic_design_in_des(tite_name, base_name):
    """A DLT window far shorter than the gaps between arrivals: every patient is complete
    when the next one arrives, so the TITE design must run the same trials as its parent."""
    conduct = Conduct(accrual_per_month=2, screening=Screening(failure_prob=0.2,
                                                               duration_days=DurationSpec(mean=0)),
                      phases=[], dlt_window_days=1e-6, max_wait_days=None)
    tite = simulate_des_trials(build(tite_name, CTX), P_TRUE, conduct, 7, range(60))
    base = simulate_des_trials(build(base_name, CTX), P_TRUE, conduct, 7, range(60))
    inner = build(base_name, CTX)
    for a, b in zip(tite["final_state"], base["final_state"], strict=True):
        assert inner.canonical(a) == inner.canonical(b)
    assert (tite["mtd"] == base["mtd"]).all()
    assert (tite["stop_code"] == base["stop_code"]).all()


@pytest.mark.parametrize("tite_name,base_name", [("tite-boin", "boin"), ("tite-crm", "crm")])
def test_tite_designs_shorten_trials(tite_name, base_name):
    conduct = Conduct(accrual_per_month=4, max_wait_days=None)
    tite = simulate_des_trials(build(tite_name, CTX), P_TRUE, conduct, 11, range(40))
    base = simulate_des_trials(build(base_name, CTX), P_TRUE, conduct, 11, range(40))
    assert tite["duration_days"].mean() < 0.85 * base["duration_days"].mean()
    assert (tite["n"].sum(axis=1) <= 24).all()
    assert (tite["n_evaluable"] == tite["n"].sum(axis=1)).all()
    # decisions happen while patients are pending: more decisions than cohorts of 3
    assert tite["n_decisions"].mean() >= base["n_decisions"].mean()


def test_tite_boin_suspends_accrual_in_des():
    """Unlimited accrual: the first cohort fills at once, the next patients must wait for
    data (more than half pending), so the trial cannot finish in one window."""
    conduct = Conduct(accrual_per_month=None, phases=[], screening=Screening(failure_prob=0))
    res = simulate_des_trials(build("tite-boin", CTX), P_TRUE, conduct, 3, range(20),
                              record_patients=True)
    log = res["patients"]
    assert (res["duration_days"] > 28).all()
    for t in range(20):
        rows = (log["trial"] == t) & (log["patient"] >= 0)
        first = np.sort(log["enrolled_day"][rows])[:4]
        assert (first[:3] == 0).all() and first[3] > 0     # the 4th patient waited
