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

CTX6 = DesignContext(n_doses=6, target=0.3, cohort_size=3, max_n=30, start_dose=0)
# notes section 8.1: n = (3,3,4,4,4,0), current dose 5, n.earlystop = 10; pending: one at
# dose 4 followed 14 of 28 days, two at dose 5 followed 28 days in total (here 28 and 0)
N81 = (3, 3, 4, 4, 4, 0)
PENDING81 = [(3, 14.0), (4, 28.0), (4, 0.0)]


def build(type_name, ctx=CTX6, **kw):
    entry = get_entry(type_name)
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
