"""BOIN12 rules (escalation_sim.designs.boin12; rules only, not a registered design).

References (docs/reference_notes/boin12.md):
[PAPER] Lin et al. 2020 (JCO Precis Oncol 4:1393), the worked example on p. 1396 and the trial
        path of Section 6 / Figure S2 of its Data Supplement, as R escalation's test "BOIN12
        matches published example" records them (tests/testthat/test_boin12.R; the RDS values
        there were re-derived by the notes' author with the stated rule and agree).
[SHINY] decisions of MD Anderson's BOIN12 Shiny app recorded in the same test file.
[NOTES] u_bar = 41.0, u_b = 70.5 for u = (100, 40, 60, 0), phi_t = 0.35, phi_e = 0.25
        (notes section 5, computed from the formula); BOIN lambdas for 0.35 (section 3).
Settings of all: 5 doses, phi_t = 0.35, phi_e = 0.25, N* = 6, c_t = 0.95, c_e = 0.9.
"""
import pytest

from escalation_sim.designs.boin12 import BOIN12, JointCounts, joint_counts_from_outcomes
from escalation_sim.designs.registry import registry

DESIGN = BOIN12(5, target_toxicity=0.35, min_efficacy=0.25, stop_n_at_dose=12)


def test_benchmark_utility_and_boundaries():
    # [NOTES]
    assert DESIGN.u_bar == pytest.approx(41.0, abs=1e-12)
    assert DESIGN.u_b == pytest.approx(70.5, abs=1e-12)
    lam_e, lam_d = DESIGN.lambdas
    assert round(lam_e, 6) == 0.276334 and round(lam_d, 6) == 0.418908
    # an untried dose: 100 (1 - 0.705) = 29.5
    assert DESIGN.rds(JointCounts.empty(5), 0) == pytest.approx(29.5, abs=1e-9)


def test_paper_worked_example_p1396():
    # [PAPER] 1NNN 2ENT 3ETT 2EEN -> dose 2, with RDS 11.340, 28.620, 7.997, 29.5, 29.5
    c = joint_counts_from_outcomes("1NNN 2ENT 3ETT 2EEN", 5)
    dec = DESIGN.decide(c)
    assert dec.dose == 1
    for got, want in zip(dec.rds, (11.340, 28.620, 7.997, 29.5, 29.5), strict=True):
        assert round(got, 3) == want


# [PAPER] Supplement Section 6 / Figure S2: the trial path and each next dose (1-based;
# None = stop) with the RDS the notes list for the deciding doses
PATH = "1NNN 2NNB 3NEE 3NTN 4ETE 4NBE 4BNN 5BEN 5NBT 4NEN".split()
NEXT = [2, 3, 3, 4, 4, 4, 5, 5, 4, None]
RDS = [{1: 11.34}, {2: 15.575}, {3: 50.087}, {3: 15.264}, {4: 33.949}, {4: 34.161}, {},
       {5: 33.949}, {}, {4: 18.402}]


@pytest.mark.parametrize("k", range(len(PATH)))
def test_supplement_trial_path(k):
    c = joint_counts_from_outcomes(" ".join(PATH[:k + 1]), 5)
    dec = DESIGN.decide(c)
    assert (None if dec.dose is None else dec.dose + 1) == NEXT[k], dec.reason
    for dose, want in RDS[k].items():
        assert round(dec.rds[dose - 1], 3) == want


def test_path_reasons_follow_the_rule_order():
    # 4BNN: n = 9 at dose 4, 3/9 < lambda_d and dose 5 untried: the exploration rule
    c = joint_counts_from_outcomes(" ".join(PATH[:7]), 5)
    assert "explore" in DESIGN.decide(c).reason
    # 5NBT: 3/6 >= lambda_d: de-escalate
    c = joint_counts_from_outcomes(" ".join(PATH[:9]), 5)
    assert "de-escalate" in DESIGN.decide(c).reason


@pytest.mark.parametrize("outcomes, expected", [
    ("2EEB", 2), ("2ETB", 1), ("2NET", 3), ("5EEB", 5), ("5NNN", 4)])
def test_shiny_app_decisions(outcomes, expected):
    # [SHINY] one cohort at the dose given
    dec = BOIN12(5, 0.35, 0.25).decide(joint_counts_from_outcomes(outcomes, 5))
    assert dec.dose + 1 == expected


def test_no_admissible_dose_stops():
    # 0 responses among 9 at dose 1 of a 1-dose trial: Pr(p_E < 0.25 | Beta(1, 10)) = 0.94
    # >= 0.9 (futile), and no other dose: stop
    c = JointCounts((9,), (0,), (0,), (0,), current=0)
    dec = BOIN12(1, 0.35, 0.25).decide(c)
    assert dec.stop and "no admissible dose" in dec.reason


def test_counts_validation():
    with pytest.raises(ValueError, match="inconsistent counts"):
        JointCounts((3,), (2,), (2,), (0,))            # 2 + 2 - 0 > 3
    with pytest.raises(ValueError, match="letters"):
        joint_counts_from_outcomes("1NNX", 2)
    with pytest.raises(ValueError, match="u4 <= u2"):
        BOIN12(3, u=(100, 40, 60, 50))


def test_obd_selection_escalation_style():
    # Worked by hand from the rule (R escalation's select_boin12_obd, notes section 7): the
    # path ends with rates 0/3, 1/3, 1/6, 3/12, 3/6; unweighted PAVA pools 1/3 and 1/6 into
    # 0.25, giving 0, 0.25, 0.25, 0.25, 0.5; closest to 0.35 are doses 2-4 (0.10 away; dose 5
    # is 0.15 away), ties to the higher: MTD = dose 4; among the admissible doses 1-4 the
    # largest RDS is dose 4's 18.402 (11.34, 15.575, 15.264, 18.402: the path test above)
    c = joint_counts_from_outcomes(" ".join(PATH), 5)
    assert DESIGN.select_obd(c) == 3


def test_registered_as_a_joint_design():
    """Issue 13: the design runs on the engines (it reads truth.efficacy)."""
    from escalation_sim.designs.base import Outcome
    assert registry()["boin12"].outcome is Outcome.JOINT


# ----------------------------------------------------------------------------- properties
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.lists(st.sampled_from("NETB"), min_size=1, max_size=3), max_size=12))
def test_moves_stay_within_one_level_of_the_current_dose(cohorts):
    """Following the rule's own decisions: the next dose is d-1, d or d+1 of the current
    dose, never an untried dose two levels up, and a stop only for no admissible dose or the
    per-dose cap."""
    design = BOIN12(5, 0.35, 0.25, stop_n_at_dose=12)
    c = JointCounts.empty(5)
    for letters in cohorts:
        dec = design.decide(c)
        if dec.stop:
            assert "no admissible dose" in dec.reason or "already has" in dec.reason
            return
        if c.current is not None:
            assert abs(dec.dose - c.current) <= 1
        assert dec.dose <= max([d for d in range(5) if c.n[d]] or [-1]) + 1
        c = c.add(dec.dose, "".join(letters))
