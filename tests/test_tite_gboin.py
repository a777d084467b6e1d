"""TITE-BOIN's ``estimator: quasi`` and TITE-gBOIN (issue 12).

References: docs/reference_notes/gboin_titegboin.md, the rules of the R package TITEgBOIN
0.4.0 (``next_TITE_QuasiBOIN``, ``select_mtd_TITE_QuasiBOIN``) with values computed from
them (section 8, marked [COMPUTED] there: the package's Rd examples print nothing), and
closed forms stated in each test.
"""
from __future__ import annotations


import numpy as np
import pytest

from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.registry import get_entry
from escalation_sim.designs.tite import TiteState, pending_rows, quasi_estimate
from escalation_sim.types import TrialState

CTX6 = DesignContext(n_doses=6, target=0.3, cohort_size=3, max_n=30, start_dose=0)
# notes section 8.1: n = (3,3,4,4,4,0), current dose 5, n.earlystop = 10; pending: one at
# dose 4 followed 14 of 28 days, two at dose 5 followed 28 days in total (here 28 and 0)
N81 = (3, 3, 4, 4, 4, 0)
PENDING81 = [(3, 14.0), (4, 28.0), (4, 0.0)]


def build(type_name, ctx=CTX6, **kw):
    entry = get_entry(type_name)
    if type_name.endswith("gboin"):
        kw.setdefault("target", ctx.target)
    return entry.build(entry.spec_model(type=type_name, **kw), ctx)


# ------------------------------------------------------------------ TITE-BOIN, quasi
def test_quasi_estimate_closed_form():
    # y / (n - m + STFT); y / n without pending; None without any follow-up
    assert quasi_estimate(4, 1, 2, 1.0) == pytest.approx(1 / 3)
    assert quasi_estimate(4, 1, 1, 0.5) == pytest.approx(1 / 3.5)
    assert quasi_estimate(4, 1, 0, 0.0) == 0.25
    assert quasi_estimate(3, 0, 3, 0.0) is None


def test_tite_boin_quasi_reference_example_8_1():
    """Notes section 8.1, TITE-BOIN row (target 0.3, y = (0,0,1,1,1,0)): ESS (3,3,4,3.5,3),
    p_hat (0, 0, 0.25, 0.285714, 0.333333), lambda 0.236491 / 0.358519, next dose 5 (stay:
    not suspended since 2 > 0.5 x 4 is false)."""
    d = build("tite-boin", estimator="quasi", n_earlystop=10)
    st = TiteState.from_followup(N81, (0, 0, 1, 1, 1, 0), PENDING81, 28.0, current=4,
                                 last_n=4, last_y=1)
    est = d.inner.estimates(st)
    np.testing.assert_allclose(est["p_tilde"][:5], [0, 0, 0.25, 0.285714, 0.333333],
                               atol=1e-6)
    assert est["lambda_e"] == pytest.approx(0.236491, abs=1e-6)
    assert est["lambda_d"] == pytest.approx(0.358519, abs=1e-6)
    assert not any(est["eliminated"])
    dec = d.decide(st)
    assert dec.dose == 4 and dec.cohort_size == 3


def test_tite_boin_default_estimator_unchanged():
    """The default is still Yuan et al.'s imputation: at dose 5 above, p_hat = (1 + 0.15) /
    (4 - 2 + 1) = 0.383333, p_tilde = (1 + (2 - 1) 0.383333 / 0.616667) / 4 = 0.405405."""
    d = build("tite-boin", n_earlystop=10)
    assert d.inner.estimator == "imputation"
    st = TiteState.from_followup(N81, (0, 0, 1, 1, 1, 0), PENDING81, 28.0, current=4,
                                 last_n=4, last_y=1)
    assert d.inner.estimates(st)["p_tilde"][4] == pytest.approx(0.405405, abs=1e-6)
    assert "estimator" not in get_entry("tite-boin").spec_model(type="tite-boin").model_dump()


def test_quasi_pending_table_matches_the_decisions():
    """Each row of the pending table (cut-offs in STFT) agrees with decide() on both sides of
    every cut-off (target 0.2, Yuan et al.'s published table layout)."""
    ctx = DesignContext(n_doses=3, target=0.2, cohort_size=3, max_n=30, start_dose=1)
    d = build("tite-boin", ctx, estimator="quasi")
    inner = d.inner
    rows = pending_rows(inner, range(3, 13))
    checked = 0
    for r in rows:
        if "STFT" not in r["decision"] or r["dlt_min"] != r["dlt_max"]:
            continue
        n, y = r["n"], r["dlt_min"]
        for m in range(r["pending_min"], r["pending_max"] + 1):
            for s in np.linspace(0, m, 23):
                pend = [(1, min(s / m, 1.0))] * m
                st = TiteState((0, n, 0), (0, y, 0), 1, 3, 0, tuple(pend))
                dec = d.decide(st)
                want = 1
                if r["stft_deescalate_max"] is not None and s <= r["stft_deescalate_max"] - 1e-9:
                    want = 0
                elif r["stft_escalate_min"] is not None and s >= r["stft_escalate_min"] + 1e-9:
                    want = 2
                elif (r["stft_deescalate_max"] is not None
                      and abs(s - r["stft_deescalate_max"]) < 1e-9) or (
                        r["stft_escalate_min"] is not None
                        and abs(s - r["stft_escalate_min"]) < 1e-9):
                    continue
                assert dec.dose == want, (n, y, m, s, r["decision"], dec.reason)
                checked += 1
    assert checked > 100


# ------------------------------------------------------------------ TITE-gBOIN rules
PHI_G = 0.47 / 1.5          # the package's example target (notes section 1)
CTXG = DesignContext(n_doses=6, target=PHI_G, cohort_size=3, max_n=30, start_dose=0)


def gstate(n, nets_units, pending=(), current=4, L=3):
    """A TITE-gBOIN state from units (1 unit = 1/L of the normalized score)."""
    return TiteState.from_followup(n, nets_units, pending, 28.0, current=current,
                                   last_n=3, last_y=0, max_units=L)


@pytest.mark.parametrize("target,lam_e,lam_d", [
    (0.20, 0.157242, 0.238462), (0.25, 0.196801, 0.298392), (0.30, 0.236491, 0.358519),
    (PHI_G, 0.247100, 0.374594), (1 / 3, 0.263034, 0.398744)])
def test_boundaries_unrounded(target, lam_e, lam_d):
    """Notes section 2 table (BOIN closed form with phi1 = 0.6 phi, phi2 = 1.4 phi)."""
    ctx = DesignContext(n_doses=4, target=target, cohort_size=3, max_n=30, start_dose=0)
    le, ld = build("tite-gboin", ctx).inner.lambdas
    assert le == pytest.approx(lam_e, abs=5e-7) and ld == pytest.approx(lam_d, abs=5e-7)


def test_default_scores_give_thirds():
    d = build("tite-gboin", CTXG).inner
    assert d.score_units == (0, 0, 1, 2, 3, 3) and d.unit_scale == 3


def test_elimination_thresholds_real_valued():
    """Notes section 5, first row: y*(n) solving Pr(Beta(y*+1, n-y*+1) > phi) = 0.95."""
    from escalation_sim.designs.tite_gboin import elimination_score
    ref = {3: 2.3322, 4: 2.8293, 5: 3.3086, 6: 3.7742, 7: 4.2291, 8: 4.6753, 9: 5.1141,
           10: 5.5466, 12: 6.3962, 15: 7.6401, 18: 8.8562, 21: 10.0509, 24: 11.2286,
           27: 12.3923, 30: 13.5442}
    for n, v in ref.items():
        assert elimination_score(PHI_G, n) == pytest.approx(v, abs=5e-5)


def test_grades_4_4_2_eliminate_dose_1():
    """Notes section 5: three patients with grades 4, 4, 2 -> (1.5 + 1.5 + 0.5) / 1.5 =
    2.3333 > 2.3322: dose 1 eliminated under TITEgBOIN (not under the integer rule)."""
    d = build("tite-gboin", CTXG)
    st = gstate((3, 0, 0, 0, 0, 0), (3 + 3 + 1, 0, 0, 0, 0, 0), current=0)
    dec = d.decide(st)
    assert dec.stop and dec.stop_reason.value == "lowest_dose_too_toxic"
    # one unit less (grades 4, 4, 1: 2.0 < 2.3322) is not eliminated
    st = gstate((3, 0, 0, 0, 0, 0), (6, 0, 0, 0, 0, 0), current=0)
    assert not d.inner.estimates(st)["eliminated"][0]


def test_reference_example_8_1_gboin_and_tite_gboin():
    """Notes section 8.1: y = (0, 0, 1/3, 2/3, 1, 0), n = (3,3,4,4,4,0), dose 5,
    n.earlystop 10.  gBOIN (complete): mu = (0, 0, 0.083333, 0.166667, 0.25), next 5 (0.25 >
    lambda_e 0.247100 by 0.0029).  TITE-gBOIN (pending (0,0,0,1,2,0), follow-up 14 and 28
    days in total, window 28): ESS (3,3,4,3.5,3), mu (0,0,0.083333,0.190476,0.333333),
    next 5.  No dose eliminated; Pr(p > phi) at dose 5 = 0.5010 (complete data)."""
    d = build("tite-gboin", CTXG, n_earlystop=10)
    units = (0, 0, 1, 2, 3, 0)
    full = gstate((3, 3, 4, 4, 4, 0), units)
    est = d.inner.estimates(full)
    np.testing.assert_allclose(est["mu"][:5], [0, 0, 0.083333, 0.166667, 0.25], atol=1e-6)
    assert est["pr_above_target"][4] == pytest.approx(0.5010, abs=5e-5)
    assert not any(est["eliminated"])
    dec = d.decide(full)
    assert (dec.dose, dec.cohort_size) == (4, 3)
    tite = gstate((3, 3, 4, 4, 4, 0), units, PENDING81)
    est = d.inner.estimates(tite)
    np.testing.assert_allclose(est["ess"][:5], [3, 3, 4, 3.5, 3], atol=1e-12)
    np.testing.assert_allclose(est["mu"][:5], [0, 0, 0.083333, 0.190476, 0.333333], atol=1e-6)
    dec = d.decide(tite)
    assert (dec.dose, dec.cohort_size) == (4, 3)
    # the sharp boundary: one unit less at dose 5 (2/3 of 4 = 0.1667 <= lambda_e) escalates
    dec = d.decide(gstate((3, 3, 4, 4, 4, 0), (0, 0, 1, 2, 2, 0)))
    assert dec.dose == 5


@pytest.mark.parametrize("scores,units,mtd,iso", [
    # notes 8.2, BOIN / TITE-BOIN row: binary scores, phi 0.3
    ({0: 0, 1: 1}, (0, 0, 1, 2, 3, 0), 4, [0.0017, 0.0017, 0.1672, 0.2225, 0.3335]),
    # gBOIN / TITE-gBOIN row: y = (0, 0, 2, 3.5, 5.5) / 1.5 = units (0, 0, 4, 7, 11) / 3
    (None, (0, 0, 4, 7, 11, 0), 3, [0.0017, 0.0017, 0.2227, 0.2595, 0.4075])])
def test_reference_example_8_2_selection(scores, units, mtd, iso):
    """Notes section 8.2 (n = (3,3,6,9,9,0)): isotonic estimates with the 0.005 prior and the
    selected MTD (0-based)."""
    target = 0.3 if scores else PHI_G
    ctx = DesignContext(n_doses=6, target=target, cohort_size=3, max_n=30, start_dose=0)
    kw = {"scores": scores} if scores else {}
    d = build("tite-gboin", ctx, **kw)
    st = TrialState((3, 3, 6, 9, 9, 0), units, 4, 9, 0)
    est = d.inner.mtd_estimates(st)
    assert sorted(est) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([est[j] for j in range(5)], iso, atol=5e-5)
    assert d.select_mtd(st) == mtd


def test_suspension_is_strictly_more_than_half_pending():
    d = build("tite-gboin", CTXG)
    # 2 of 4 pending: not suspended (section 8.1); 3 of 4: suspended (cohort size 0)
    st = gstate((3, 3, 4, 4, 4, 0), (0, 0, 1, 2, 1, 0),
                [(4, 10.0), (4, 3.0), (4, 1.0)])
    assert d.decide(st).cohort_size == 0
    st = gstate((3, 3, 4, 4, 4, 0), (0, 0, 1, 2, 1, 0), [(4, 10.0), (4, 3.0)])
    assert d.decide(st).cohort_size == 3


def test_dose_1_rules():
    """At dose 1 with mu >= lambda_d: stay without pending patients, suspend with."""
    d = build("tite-gboin", CTXG)
    # 4 patients, nETS 1.667 (5 units) < y*(4) = 2.8293: not eliminated; mu 0.417 >= 0.3746
    full = gstate((4, 0, 0, 0, 0, 0), (5, 0, 0, 0, 0, 0), current=0)
    est = d.inner.estimates(full)
    assert not est["eliminated"][0] and est["mu"][0] >= 0.374594
    dec = d.decide(full)
    assert (dec.dose, dec.cohort_size) == (0, 3)
    # 5 patients, 1 pending (27 of 28 days), nETS 2.0: mu = 2 / 4.964 = 0.403 >= lambda_d
    pend = gstate((5, 0, 0, 0, 0, 0), (6, 0, 0, 0, 0, 0), [(0, 27.0)], current=0)
    est = d.inner.estimates(pend)
    assert est["mu"][0] == pytest.approx(2.0 / (4 + 27 / 28)) and est["mu"][0] >= 0.374594
    assert not est["eliminated"][0]
    dec = d.decide(pend)
    assert (dec.dose, dec.cohort_size) == (0, 0)


def test_elimination_counts_pending_patients_in_n_and_observed_scores_only():
    """Dose 2: 6 patients, 2 pending, observed nETS 3.0 (9 units).  With n = 6 (pending
    included, TITEgBOIN) y* = 3.7742 > 3: not eliminated; with n = 4 it would be (y*(4) =
    2.8293 < 3)."""
    d = build("tite-gboin", CTXG)
    st = gstate((3, 6, 0, 0, 0, 0), (0, 9, 0, 0, 0, 0), [(1, 5.0), (1, 2.0)], current=1)
    assert d.inner.estimates(st)["eliminated"] == [False] * 6


def test_n_earlystop_only_when_staying():
    d = build("tite-gboin", CTXG, n_earlystop=6)
    # 6 patients, mu = 1.667 / 6 = 0.278: stay -> stop
    dec = d.decide(gstate((3, 6, 0, 0, 0, 0), (0, 5, 0, 0, 0, 0), current=1))
    assert dec.stop and dec.stop_reason.value == "n_at_dose_reached"
    # 6 patients, mu = 0: escalate -> no stop
    dec = d.decide(gstate((3, 6, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0), current=1))
    assert not dec.stop and dec.dose == 2


def test_spec_validation():
    entry = get_entry("tite-gboin")
    with pytest.raises(Exception, match="never decrease|not increasing|decrease"):
        entry.spec_model(type="tite-gboin", scores={0: 0, 1: 1, 2: 0.5})
    assert entry.time_to_event and entry.outcome.name == "SCORE"


# ------------------------------------------------------------------ complete data = gBOIN
def _random_states(rng, K, L, count):
    for _ in range(count):
        n = rng.integers(0, 10, size=K)
        n[0] = max(n[0], 1)
        y = [int(rng.integers(0, n[d] * L + 1)) if n[d] else 0 for d in range(K)]
        tried = [d for d in range(K) if n[d] > 0]
        cur = int(rng.choice(tried))
        yield TrialState(tuple(int(v) for v in n), tuple(y), cur, 3, 0)


@pytest.mark.parametrize("kw", [{}, {"extrasafe": True}, {"n_earlystop": 6},
                                {"scores": {0: 0, 1: 0.5, 2: 1, 3: 2}},
                                {"p_saf": 0.15, "p_tox": 0.45, "cutoff_eli": 0.9}])
def test_complete_data_decisions_and_mtd_equal_gboin(kw):
    """Property (2000 random complete-data states per option set): TITE-gBOIN without
    pending patients decides exactly as gBOIN (the independent time-free implementation of
    the same TITEgBOIN rules, escalation_sim.designs.gboin) and selects the same MTD."""
    rng = np.random.default_rng(12)
    ctx = DesignContext(n_doses=5, target=PHI_G, cohort_size=3, max_n=60, start_dose=0)
    tg = build("tite-gboin", ctx, **kw)
    g = build("gboin", ctx, **kw)
    assert tg.inner.score_units == g.inner.score_units
    L = g.inner.unit_scale
    for st in _random_states(rng, 5, L, 2000):
        a, b = tg.decide(st), g.decide(st)
        assert (a.dose, a.cohort_size, a.stop_reason) == (b.dose, b.cohort_size,
                                                          b.stop_reason), (st, a, b)
        assert tg.select_mtd(st) == g.select_mtd(st), st


def test_table_cli(cli):
    """``table --design tite-gboin``: the unrounded boundaries times n and the real
    elimination thresholds of notes section 5 (n = 3: 2.3322 at phi = 0.47/1.5)."""
    import json
    out = cli("table", "--design", "tite-gboin", "--target", PHI_G, "--max-n", 6, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["lambda_e"] == pytest.approx(0.247100, abs=5e-7)
    assert data["eliminate_if_sum_gt"][2] == pytest.approx(2.3322, abs=5e-5)
    assert data["eliminate_if_sum_gt"][:2] == [None, None]
    assert data["deescalate_if_sum_ge"][3] == pytest.approx(4 * 0.374594, abs=5e-6)


def test_no_patient_left_at_the_current_dose_treats_there_again():
    d = build("tite-gboin", CTXG)
    dec = d.decide(gstate((3, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0), current=1))
    assert (dec.dose, dec.cohort_size) == (1, 3)


def test_next_dose_with_pending_follow_up_on_the_command_line(cli):
    """``next-dose --pending`` for TITE-gBOIN (cart scenario, target 0.26: lambda_e = 0.2047):
    DL2 has 3 complete patients with worst grades 0, 0, 3 (nETS 2/3) and 2 pending followed 7
    and 20 of 28 days: mu = (2/3) / (5 - 2 + 27/28) = 0.1682 <= lambda_e: escalate to DL3."""
    import json
    from pathlib import Path
    scen = Path(__file__).resolve().parents[1] / "scenarios" / "cart_crs_icans.yaml"
    out = cli("next-dose", scen, "--design", "tite-gboin", "--outcomes", "1:000 2:003",
              "--pending", "2:7,2:20", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["next_dose"] == 3
    mu = doc["estimates"]["mu"][1]
    assert mu == pytest.approx((2 / 3) / (3 + 27 / 28), abs=1e-12)
