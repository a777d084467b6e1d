"""Keyboard (Yan, Mandrekar & Yuan 2017) against the R package Keyboard 0.1.3's algorithm,
an exact-arithmetic derivation of its table, hand-derived cases and exact enumeration.

Reference sources used below (cited again beside each block):

[KB]     R package Keyboard 0.1.3 (cran/Keyboard, commit 75de0db): ``get.boundary.kb`` (keys,
         strongest key with the compensation factor for the two incomplete keys, ties to the
         highest key), ``get.oc.kb`` (elimination with n >= 3, extrasafe at dose 1 with
         n >= 3, stop as soon as the current dose has n.earlystop patients) and
         ``select.mtd.kb`` (BOIN's select.mtd).
[NOTES]  The project's reference notes (keyboard.md §6): count-form tables for targets 0.3,
         0.25, 0.2, n = 1..30, COMPUTED by the note's author from the package algorithm; the
         paper's published boundary table could not be reached, so there is no published
         value to compare with.  The note's elimination row is get.boundary.kb's (no minimum
         n); the simulator's (and this design's default) minimum is 3.
[EXACT]  The rule re-derived with exact rational arithmetic (tests/test_mtpi2.py
         ``exact_letters`` with the compensation factor and ties to the highest key).
[RD]     select.mtd.kb help example: n = (3, 3, 15, 9, 0), y = (0, 0, 4, 4, 0), target 0.3;
         MTD 3 with isotonic estimates 0.01613, 0.01613, 0.26821, 0.44505 (computed in the
         note from the package algorithm; the help page prints no output).
"""
from __future__ import annotations

import pytest

from escalation_sim.cli import main
from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.interval import count_form, isotonic_inputs, isotonic_regression
from escalation_sim.designs.keyboard import Keyboard, strongest_key
from escalation_sim.designs.registry import get_entry
from escalation_sim.outcomes import state_from_outcomes
from escalation_sim.types import StopReason, TrialState

from reference_tables import MTPI2_KEYBOARD_COUNT_FORM

from test_mtpi2 import MC_SCENARIOS, N1_30, exact_letters, mc_within_4se_of_exact

# [NOTES] count form, n = 1..30: escalate if y <=, de-escalate if y >= (incl. DU), eliminate
# if y >= (no minimum n, as get.boundary.kb prints it)
NOTES = MTPI2_KEYBOARD_COUNT_FORM
# [NOTES] BOIN(0.3) count form differs from Keyboard's at these n (escalate; de-escalate)
BOIN_DIFF_03 = {"escalate": {21: 4, 25: 5, 29: 6}, "deescalate": {14: 6, 17: 7, 20: 8, 28: 11}}


def design(target=0.3, n_doses=5, cohort_size=3, **kw):
    return Keyboard(n_doses=n_doses, target=target, cohort_size=cohort_size, **kw)


@pytest.mark.parametrize("target", ["0.3", "0.25", "0.2"])
def test_table_equals_exact_derivation(target):
    # [EXACT] with the package's compensation factor and tie rule [KB], every (n, y)
    b = count_form(design(float(target)), N1_30)
    assert b["monotone"]
    for n, codes in zip(N1_30, b["decisions"], strict=True):
        assert codes == exact_letters(target, n, compensate=True, ties="high"), n


@pytest.mark.parametrize("target", [0.3, 0.25, 0.2])
def test_table_equals_get_boundary_kb(target):
    # [NOTES]: the design's table with get.boundary.kb's elimination (no minimum n) is the
    # note's table; with the simulator's minimum of 3 (the default) only n = 1, 2 change
    esc, dee, eli = NOTES[target]
    b1 = count_form(design(target, elimination_min_n=1), N1_30)
    assert (b1["escalate"], b1["deescalate"], b1["eliminate"]) == (esc, dee, eli)
    b = count_form(design(target), N1_30)
    assert b["eliminate"] == [None, None] + eli[2:]


def test_keyboard_and_boin_differ_where_the_notes_say():
    # [NOTES]: target 0.3, Keyboard escalates / de-escalates more readily than BOIN at these n
    from escalation_sim.designs.boin import boin_boundaries
    kb = count_form(design(0.3), N1_30)
    bo = boin_boundaries(0.3, 30)
    for row in ("escalate", "deescalate"):
        diff = {n: bo[row][n - 1] for n in N1_30 if kb[row][n - 1] != bo[row][n - 1]}
        assert diff == BOIN_DIFF_03[row]


def test_keys_and_tie_rule():
    # [KB] keys for target 0.3: 0, 0.05, 0.15, ..., 0.95, 1 (the incomplete edge keys are
    # 0.05 wide); the target key is [0.25, 0.35]
    d = design(0.3)
    assert d.keys == (0.0, 0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 1.0)
    best, tk, ends = strongest_key(0.3, 0.05, 0.05, 3, 1)
    assert (tk, ends) == (3, (0.25, 0.35)) and best == tk  # 1/3 -> stay [NOTES]


def test_compensation_factor_matters_at_the_edge():
    # 0/1 at target 0.3: the posterior Beta(1, 2) has density 2(1 - p); the edge key
    # [0, 0.05] has probability 0.0975 (scaled x 2: 0.195), the key [0.05, 0.15] 0.18.
    # With the factor the edge key is strongest; either way the decision is to escalate.
    best, tk, ends = strongest_key(0.3, 0.05, 0.05, 1, 0)
    assert ends == (0.0, 0.05) and best < tk


def test_select_mtd_help_example():
    # [RD]
    state = TrialState((3, 3, 15, 9, 0), (0, 0, 4, 4, 0))
    d = design(0.3)
    assert d.select_mtd(state) == 2
    ph, w = isotonic_inputs([3, 3, 15, 9], [0, 0, 4, 4])
    assert isotonic_regression(ph, w) == pytest.approx([0.01613, 0.01613, 0.26821, 0.44505],
                                                       abs=5e-6)
    assert d.estimates(state)["p_hat"][:4] == pytest.approx([0.01613, 0.01613, 0.26821,
                                                             0.44505], abs=5e-6)


def test_n_earlystop_counts_the_current_dose():
    # [KB] get.oc.kb stops once the current dose has n.earlystop patients, whatever the
    # decision: 0/6 at dose 1 would escalate, but n.earlystop = 6 stops the trial
    state = state_from_outcomes("1NNN 1NNN", 5)
    assert design(0.3).decide(state).dose == 1
    dec = design(0.3, n_earlystop=6).decide(state)
    assert dec.stop and dec.stop_reason is StopReason.N_AT_DOSE


def test_extrasafe():
    # [KB] extrasafe: at dose 1 with n >= 3, stop if Pr(p_1 > 0.3) > 0.95 - 0.05.
    # 2/3: Pr(p > 0.3 | Beta(3, 2)) = P(Bin(4, 0.3) <= 2) = 0.2401 + 0.4116 + 0.2646 = 0.9163
    # (> 0.90, < 0.95): extrasafe stops, the default de-escalation rule keeps dose 1
    state = state_from_outcomes("1TNT", 5)
    assert design(0.3).decide(state).dose == 0
    dec = design(0.3, extrasafe=True).decide(state)
    assert dec.stop and dec.stop_reason is StopReason.LOWEST_DOSE_TOO_TOXIC
    assert design(0.3, extrasafe=True).select_mtd(state) is None


def test_table_command_prints_the_count_form(capsys):
    # [NOTES] rows at n = 3, 6, ..., 30 for cohorts of 3 (target 0.3)
    rc = main(["table", "--design", "keyboard", "--target", "0.3", "--cohort-size", "3"])
    out = capsys.readouterr().out.splitlines()
    esc, dee, eli = NOTES[0.3]
    idx = [n - 1 for n in range(3, 31, 3)]
    assert rc == 0 and out[0] == "Keyboard decision table, target 0.3"
    assert out[3].split()[-10:] == [str(esc[i]) for i in idx]
    assert out[4].split()[-10:] == [str(dee[i]) for i in idx]
    assert out[5].split()[-10:] == [str(eli[i]) for i in idx]


def test_spec_defaults():
    entry = get_entry("keyboard")
    ctx = DesignContext(n_doses=4, target=0.3, cohort_size=3, max_n=24, start_dose=0)
    inner = entry.build(entry.spec_model.model_validate({"type": "keyboard"}), ctx).inner
    assert (inner.margin_left, inner.margin_right, inner.cutoff_eli, inner.extrasafe,
            inner.offset, inner.elimination_min_n, inner.n_earlystop, inner.n_earlystop_at,
            inner.mtd_prior) == (0.05, 0.05, 0.95, False, 0.05, 3, None, "current", 0.05)


@pytest.mark.parametrize("name", sorted(MC_SCENARIOS))
def test_monte_carlo_within_4se_of_exact(name):
    mc_within_4se_of_exact("keyboard", MC_SCENARIOS[name])
