"""Graded outcomes, time-free side (issue 12): score units, score states, the engines on the
outcome model and gBOIN.  Reference values say where they come from."""
from __future__ import annotations

import pytest

from escalation_sim.designs.base import Outcome
from escalation_sim.grades import score_units_from
from escalation_sim.types import TrialState


# -- score units (contract point 1) -------------------------------------------------------
@pytest.mark.parametrize("scores, units, scale", [
    # the gBOIN default of Mu et al. 2019 / TITEgBOIN: 0, 0.5, 1, 1.5 for grades 0-1, 2, 3, 4;
    # normalized 0, 1/3, 2/3, 1 -> thirds; grade 5 (not scored) takes grade 4's units
    ({0: 0, 1: 0, 2: 0.5, 3: 1.0, 4: 1.5}, (0, 0, 1, 2, 3, 3), 3),
    # binary BOIN as a score design: grade >= 1 scores 1
    ({0: 0, 1: 1}, (0, 1, 1, 1, 1, 1), 1),
    # quarters: 0, 0.25, 0.5, 1 -> L = 4
    ([0, 0.5, 1, 2], (0, 1, 2, 4, 4, 4), 4),
    # tenths: 0.1 / 1 -> L = 10
    ([0, 0.1, 0.3, 1, 1, 1], (0, 1, 3, 10, 10, 10), 10),
])
def test_score_units(scores, units, scale):
    assert score_units_from(scores) == (units, scale)


def test_score_units_rejects_irrational_ratios():
    with pytest.raises(ValueError, match=r"multiples of 1/L .*\(got \[0, 1, 3.14159"):
        score_units_from([0, 1, 3.14159])


@pytest.mark.parametrize("scores, msg", [
    ({0: 0, 1: 1, 2: 0.5}, "must not decrease"),
    ([0, -1, 1], ">= 0"),
    ([0, 0], "largest score must be > 0"),
])
def test_score_units_validates(scores, msg):
    with pytest.raises(ValueError, match=msg):
        score_units_from(scores)


# -- TrialState with score units (contract point 2) ---------------------------------------
def test_add_cohort_accepts_units_up_to_n_times_max_units():
    s = TrialState.empty(2).add_cohort(1, 3, 9, max_units=3)
    assert (s.n, s.y, s.last_y) == ((0, 3), (0, 9), 9)
    with pytest.raises(ValueError, match="invalid cohort"):
        TrialState.empty(2).add_cohort(1, 3, 10, max_units=3)
    with pytest.raises(ValueError, match="invalid cohort"):  # binary default unchanged
        TrialState.empty(2).add_cohort(1, 3, 4)


def test_outcome_kinds():
    assert Outcome.SCORE.value == "graded toxicity score"
    assert Outcome.BINARY_DLT.value == "binary DLT"


# -- engines on the outcome model (contract point 3) --------------------------------------
def _one_type_model(p):
    from escalation_sim.inputs.truth import OutcomeModel, ToxicityType
    # one type without an onset law, DLT = grade >= 3: P(DLT) = P(grade >= 3) = p
    grades = {1: [0.2] * len(p), 3: [x * 0.5 for x in p], 4: [x * 0.5 for x in p]}
    return OutcomeModel([ToxicityType.from_grades("CRS", grades)], rule=[("CRS", 3)])


def test_cohort_engine_one_type_truth_equals_binary_truth():
    """The module docstring of inputs/truth.py: a one-type truth reproduces the binary model
    (the first type's latent is the dlt stream, grade >= g iff u < P(grade >= g)), so a binary
    design sees the same patients whether given the DLT rates or the outcome model."""
    import numpy as np
    from escalation_sim.designs.boin import BOIN
    from escalation_sim.designs.rules import with_stopping_rules
    from escalation_sim.engines.cohort import simulate_cohort_chunk
    p = [0.05, 0.12, 0.25, 0.4]
    model = _one_type_model(p)
    assert np.allclose(model.dlt_rates(), p, atol=1e-15)
    design = with_stopping_rules(BOIN(n_doses=4, target=0.25, cohort_size=3), max_n=24)
    a = simulate_cohort_chunk(design, model.dlt_rates(), 7, 0, 3000)
    b = simulate_cohort_chunk(design, model.dlt_rates(), 7, 0, 3000, model=model)
    assert np.array_equal(a.sids, b.sids)
