"""Keyboard phase I/II rules (escalation_sim.designs.keyboard_obd; rules only, not a
registered design).

References (docs/reference_notes/keyboard.md, section 7; R package Keyboard 0.1.3, read):
[KB-TABLE] ``get.decision.obd.kb`` on its Rd example (toxicity bounds 0.15/0.25/0.35,
           efficacy bounds 0.25/0.45/0.65, targets 0.2/0.4, cohorts of 3): the tables at
           n = 3 and n = 6 computed by the notes' author from the package's algorithm.
[KB-OBD]   ``select.obd.kb`` Rd example (npts 3/6/12/3/3, ntox 1/2/4/2/3, neff 0/0/5/1/1,
           targets 0.3/0.4): eliminated doses 1, 2 (futility) and 5 (safety); p_T 0.33471,
           0.66129, q_E 0.41736, 0.33871; U1 0.10216, 0; U2 0.30690, 0.12048; U3 -0.05793,
           -0.60032; OBD = 3 under all three utilities (values computed by the notes' author
           from the package's code).
"""
import pytest

from escalation_sim.designs.boin12 import JointCounts
from escalation_sim.designs.keyboard_obd import KeyboardOBD, obd_table
from escalation_sim.designs.registry import registry

TABLE_DESIGN = KeyboardOBD(5, target_toxicity=0.2, target_efficacy=0.4)

# [KB-TABLE] rows y = 0..n, columns r = 0..n
N3 = ["EUE E E E", "DUE S S S", "DUT DUT DUT DUT", "DUT DUT DUT DUT"]
N6 = ["EUE EUE E E E E E", "EUE EUE E E E S S", "DUE DUE S S S S S", "DUT DUT S S S S S",
      *["DUT DUT DUT DUT DUT DUT DUT"] * 3]


@pytest.mark.parametrize("n, rows", [(3, N3), (6, N6)])
def test_package_decision_table(n, rows):
    assert obd_table(TABLE_DESIGN, n) == rows


RD = JointCounts((3, 6, 12, 3, 3), (1, 2, 4, 2, 3), (0, 0, 5, 1, 1))
OBD_DESIGN = KeyboardOBD(5, target_toxicity=0.3, target_efficacy=0.4)


def test_select_obd_rd_example():
    # [KB-OBD]
    assert OBD_DESIGN.eliminated(RD) == [True, True, False, False, True]
    us = OBD_DESIGN.utilities(RD)
    assert sorted(us) == [2, 3]
    want = {2: (0.33471, 0.41736, 0.10216, 0.30690, -0.05793),
            3: (0.66129, 0.33871, 0.0, 0.12048, -0.60032)}
    for d, vals in want.items():
        for got, w in zip(us[d], vals, strict=True):
            assert round(got, 5) == w
    assert [OBD_DESIGN.select_obd(RD, u) for u in (1, 2, 3)] == [2, 2, 2]


def test_no_obd_when_utilities_sum_to_zero():
    # utility 1 is 0 at every admissible dose (toxicity estimate above p2 = 0.40 kills f1):
    # the package's sum test gives no OBD
    c = JointCounts((3,), (2,), (3,))
    assert KeyboardOBD(1, target_toxicity=0.6, target_efficacy=0.4).select_obd(c, 1) is None


def test_decide_moves_with_the_table():
    d = KeyboardOBD(4, target_toxicity=0.2, target_efficacy=0.4)
    # 0 toxicities, 1 response of 3 at dose 1: E -> dose 2
    dec = d.decide(JointCounts((3, 0, 0, 0), (0, 0, 0, 0), (1, 0, 0, 0), current=0))
    assert (dec.letter, dec.dose) == ("E", 1)
    # 1 toxicity, 2 responses of 3 at dose 2: S -> stay
    dec = d.decide(JointCounts((3, 3, 0, 0), (0, 1, 0, 0), (1, 2, 0, 0), current=1))
    assert (dec.letter, dec.dose) == ("S", 1)
    # 2 toxicities of 3 at dose 2: DUT -> dose 1
    dec = d.decide(JointCounts((3, 3, 0, 0), (0, 2, 0, 0), (1, 2, 0, 0), current=1))
    assert (dec.letter, dec.dose) == ("DUT", 0)
    # dose 1 too toxic (3/3): stop
    assert d.decide(JointCounts((3, 0, 0, 0), (3, 0, 0, 0), (0, 0, 0, 0), current=0)).stop


def test_registered_as_a_joint_design():
    """Issue 13: the design runs on the engines (it reads truth.efficacy)."""
    from escalation_sim.designs.base import Outcome
    assert registry()["keyboard-obd"].outcome is Outcome.JOINT


# ----------------------------------------------------------------------------- properties
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=12))
def test_moves_stay_within_one_level_and_avoid_eliminated_doses(cohorts):
    """Following the rule's own decisions with cohorts of 3 (toxicities, responses drawn):
    the next dose is within one level of the current one and never a newly entered
    eliminated dose."""
    design = KeyboardOBD(4, target_toxicity=0.3, target_efficacy=0.4)
    n, y, r, cur = [0] * 4, [0] * 4, [0] * 4, None
    for t, e in cohorts:
        c = JointCounts(tuple(n), tuple(y), tuple(r), current=cur)
        dec = design.decide(c)
        if dec.stop:
            return
        if cur is not None:
            assert abs(dec.dose - cur) <= 1
            if dec.dose != cur:
                assert not design.eliminated(c)[dec.dose]
        cur = dec.dose
        n[cur] += 3
        y[cur] += t
        r[cur] += e
