"""i3+3 (Liu, Wang & Ji 2020) against its rule derived by exact arithmetic, the reference
notes' tables, FIND's simulator semantics, hand-derived cases and exact enumeration.

The published i3+3 decision table (Liu, Wang & Ji 2020, J Biopharm Stat 30:294) could NOT be
reached: no value below is a published one.  The checks are against the rule itself and the
Ji group's R package FIND.

Reference sources used below (cited again beside each block):

[FIND]   R package FIND 0.1.1 (oliviazhang0416/FIND, commit 1b0198a): ``get_decision_i3plus3``
         and ``run_sim_i3plus3`` (rule; DU with n >= 3; at dose 1 "D" means stay, at the top
         dose "E" means stay; n.earlystop counted at the dose of the next cohort) and
         ``select_mtd`` (BOIN's select.mtd; ``extrasafe = TRUE``: the dose below when the
         selected dose's estimate exceeds the EI's upper end).
[NOTES]  The project's reference notes (i3plus3.md §3): full tables by (n, y) for targets 0.3
         and 0.25, n = 1..12, and count forms for 0.3, 0.25, 0.2, n = 1..30, COMPUTED by the
         note's author from the rule, elimination without a minimum n.
[EXACT]  The rule with exact rational arithmetic (Fractions; no floating point, no code from
         the module under test): escalate if y/n < a; stay if a <= y/n <= b, or y/n > b and
         (y-1)/n < a; else de-escalate; DU if n >= min_n and P(Binomial(n+1, target) <= y)
         (= Pr(p > target | Beta(y+1, n-y+1))) > 0.95.
"""
from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest

from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.i3plus3 import I3Plus3
from escalation_sim.designs.interval import count_form
from escalation_sim.designs.registry import get_entry
from escalation_sim.outcomes import state_from_outcomes
from escalation_sim.types import StopReason, TrialState

from reference_tables import NA
from test_mtpi2 import MC_SCENARIOS, N1_30, mc_within_4se_of_exact


def exact_letters(target: str, n: int, e1: str = "0.05", e2: str = "0.05",
                  min_n: int = 3) -> str:
    t = Fraction(target)
    a, b = t - Fraction(e1), t + Fraction(e2)
    out = []
    for y in range(n + 1):
        pr_above = sum((comb(n + 1, k) * t ** k * (1 - t) ** (n + 1 - k)
                        for k in range(y + 1)), Fraction(0))
        if n >= min_n and pr_above > Fraction(95, 100):
            out.append("U")
        elif Fraction(y, n) < a:
            out.append("E")
        elif Fraction(y, n) <= b or Fraction(y - 1, n) < a:
            out.append("S")
        else:
            out.append("D")
    return "".join(out)


def design(target=0.3, n_doses=5, cohort_size=3, **kw):
    return I3Plus3(n_doses=n_doses, target=target, cohort_size=cohort_size, **kw)


# [NOTES] full tables, n = 1..12 (U = DU), elimination without a minimum n
GRID = {
    0.3: ["ES", "ESU", "ESDU", "ESDUU", "EESDUU", "EESDUUU", "EESDDUUU", "EESDDUUUU",
          "EEESDUUUUU", "EEESDDUUUUU", "EEESDDUUUUUU", "EEESSDDUUUUUU"],
    0.25: ["ES", "ESU", "ESDU", "ESDUU", "ESDUUU", "EESDUUU", "EESDUUUU", "EESDUUUUU",
           "EESDDUUUUU", "EESSDUUUUUU", "EEESDDUUUUUU", "EEESDDUUUUUUU"],
}
# [NOTES] count form n = 1..30 (escalate if y <=, de-escalate incl. DU if y >=, DU if y >=)
COUNT = {
    0.3: ([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6,
           7, 7],
          [NA, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 8, 8, 8, 9, 9, 9, 10, 10,
           10, 11, 11],
          [NA, 2, 3, 3, 4, 4, 5, 5, 5, 6, 6, 7, 7, 8, 8, 8, 9, 9, 9, 10, 10, 11, 11, 11, 12, 12,
           12, 13, 13, 14]),
    0.25: ([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 5, 5,
            5, 5, 5],
           [NA, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7, 7, 8, 8, 8, 9,
            9, 9, 10],
           [NA, 2, 3, 3, 3, 4, 4, 4, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8, 9, 9, 9, 10, 10, 10, 11,
            11, 11, 12, 12]),
    0.2: ([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4, 4,
           4, 4],
          [1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8,
           8, 8],
          [1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 7, 7, 7, 7, 8, 8, 8, 8, 9, 9, 9, 9,
           10, 10]),
}


@pytest.mark.parametrize("target", ["0.3", "0.25", "0.2"])
def test_table_equals_exact_derivation(target):
    # [EXACT], elimination from n = 3 (the default, [FIND]'s simulator)
    b = count_form(design(float(target)), N1_30)
    assert b["monotone"]
    for n, codes in zip(N1_30, b["decisions"], strict=True):
        assert codes == exact_letters(target, n), n


@pytest.mark.parametrize("target", [0.3, 0.25])
def test_full_table_equals_the_notes(target):
    # [NOTES] grids (elimination without a minimum n: elimination_min_n 1)
    b = count_form(design(target, elimination_min_n=1), list(range(1, 13)))
    assert b["decisions"] == GRID[target]


@pytest.mark.parametrize("target", [0.3, 0.25, 0.2])
def test_count_form_equals_the_notes(target):
    # [NOTES]; with the default minimum of 3 the elimination row has no value at n = 1, 2
    esc, dee, eli = COUNT[target]
    b1 = count_form(design(target, elimination_min_n=1), N1_30)
    assert (b1["escalate"], b1["deescalate"], b1["eliminate"]) == (esc, dee, eli)
    assert count_form(design(target), N1_30)["eliminate"] == [None, None] + eli[2:]


@pytest.mark.parametrize("n, y, code", [
    # [NOTES] "key contrasts", target 0.3, EI [0.25, 0.35]
    (3, 1, "S"),    # 1/3 above the EI, 0/3 below it: stay (the 3+3 would add 3 more)
    (3, 2, "D"), (3, 3, "U"),
    (5, 2, "S"),    # 2/5 = 0.4 above the EI, but 1/5 = 0.2 below it
    (6, 3, "D"), (6, 2, "S"),
    (12, 4, "S"),   # 4/12 = 0.333 inside the EI
    (5, 1, "E"),    # 0.2 < 0.25
    (4, 1, "S"),    # 1/4 = 0.25 on the lower bound counts as inside ([FIND]: R's 0.25 >= 0.25)
    (20, 7, "S"),   # 7/20 = 0.35 on the upper bound counts as inside
])
def test_cells_target_03(n, y, code):
    assert count_form(design(0.3), [n])["decisions"][0][y] == code


def test_edges_follow_find():
    # [FIND]: "D" at dose 1 stays; "E" at the top dose stays; DU at dose 1 stops (no MTD)
    d = design(0.3, n_doses=3)
    assert d.decide(state_from_outcomes("1TTN", 3)).dose == 0
    assert d.decide(state_from_outcomes("3NNN", 3)).dose == 2
    dec = d.decide(state_from_outcomes("1TTT", 3))
    assert dec.stop and dec.stop_reason is StopReason.LOWEST_DOSE_TOO_TOXIC


def test_n_earlystop_counts_the_next_dose():
    # [FIND] run_sim_i3plus3: after the decision, stop if the dose of the next cohort has
    # n.earlystop patients.  "1NNN 1NNN 2TTN": 2/3 at dose 2 -> back to dose 1 (6 patients)
    state = state_from_outcomes("1NNN 1NNN 2TTN", 5)
    assert design(0.3).decide(state).dose == 0
    dec = design(0.3, n_earlystop=6).decide(state)
    assert dec.stop and dec.stop_reason is StopReason.N_AT_DOSE


def test_extrasafe_mtd():
    # [FIND] select_mtd(extrasafe = TRUE), hand-computed: target 0.3, n = (3, 10), y = (0, 4):
    # estimates 0.05/3.1 = 0.016 and 4.05/10.1 = 0.401 (already increasing); dose 2 is closest
    # to 0.3 (0.101 < 0.284) but 0.401 > 0.35 (EI upper end): the dose below, dose 1.
    # Dose 2 is not eliminated: P(Bin(11, 0.3) <= 4) = 0.790 < 0.95.
    state = TrialState((3, 10, 0), (0, 4, 0))
    assert design(0.3, n_doses=3).select_mtd(state) == 1
    assert design(0.3, n_doses=3, extrasafe_mtd=True).select_mtd(state) == 0
    # at dose 1 it means no MTD: n = (10,), y = (4,)
    one = TrialState((10, 0, 0), (4, 0, 0))
    assert design(0.3, n_doses=3).select_mtd(one) == 0
    assert design(0.3, n_doses=3, extrasafe_mtd=True).select_mtd(one) is None


def test_spec_defaults_and_type_name():
    entry = get_entry("I3+3")
    assert entry.type == "i3+3"
    ctx = DesignContext(n_doses=4, target=0.3, cohort_size=3, max_n=24, start_dose=0)
    inner = entry.build(entry.spec_model.model_validate({"type": "i3+3"}), ctx).inner
    assert (inner.epsilon1, inner.epsilon2, inner.cutoff_eli, inner.elimination_min_n,
            inner.n_earlystop, inner.n_earlystop_at, inner.extrasafe_mtd, inner.mtd_prior) == \
        (0.05, 0.05, 0.95, 3, None, "next", False, 0.05)


@pytest.mark.parametrize("name", sorted(MC_SCENARIOS))
def test_monte_carlo_within_4se_of_exact(name):
    mc_within_4se_of_exact("i3+3", MC_SCENARIOS[name])
