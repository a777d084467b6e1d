"""One contract suite run over every registered time-free design.

Properties (hypothesis, on paths the design itself generates): a decision is a valid dose or a
stop with a reason; decisions are deterministic; no dose is skipped when escalating; an
eliminated / too-toxic dose is never used; the sample size never exceeds max_n; outcome strings
round-trip; one more DLT in the last cohort never gives a higher next dose (coherence).
"""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.registry import registry
from escalation_sim.outcomes import format_outcomes, state_from_outcomes
from escalation_sim.types import StopReason, TrialState

K = 4
CTX = DesignContext(n_doses=K, target=0.25, cohort_size=3, max_n=24, start_dose=0)
EXTRA = {"crm": {"skeleton": [0.10, 0.17, 0.25, 0.35]}}


def time_free_designs():
    out = []
    for t, entry in registry().items():
        if entry.time_to_event:
            continue
        spec = entry.spec_model.model_validate({"type": t, **EXTRA.get(t, {})})
        out.append(pytest.param(entry.build(spec, CTX), id=t))
        if t == "3+3":
            spec = entry.spec_model.model_validate({"type": t, "max_n": 24})
            out.append(pytest.param(entry.build(spec, CTX), id="3+3-maxn"))
    return out


DESIGNS = time_free_designs()


def test_every_builtin_type_is_covered():
    ids = {p.id for p in DESIGNS}
    assert {"3+3", "boin", "crm"} <= ids


def eliminated(design, state):
    est = design.estimates(state)
    for key in ("eliminated", "too_toxic"):
        if key in est and est[key] is not None:
            return [bool(x) for x in est[key]]
    return [False] * state.n_doses


def walk(design, draws):
    """Follow the design's own decisions; ``draws`` picks each cohort's DLT count."""
    state = TrialState.empty(K)
    cohorts = []
    history = [state]
    for r in draws:
        dec = design.decide(state)
        if dec.stop:
            break
        y = r % (dec.cohort_size + 1)
        letters = "T" * y + "N" * (dec.cohort_size - y)
        cohorts.append((dec.dose, letters))
        state = state.add_cohort(dec.dose, dec.cohort_size, y)
        history.append(state)
    return state, cohorts, history


draws = st.lists(st.integers(0, 11), min_size=0, max_size=14)
SET = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("design", DESIGNS)
@SET
@given(draws=draws)
def test_contract(design, draws):
    state, cohorts, history = walk(design, draws)
    for s in history:
        dec = design.decide(s)
        assert dec == design.decide(s)  # deterministic
        if dec.stop:
            assert isinstance(dec.stop_reason, StopReason) and dec.reason
            m = design.select_mtd(s)
            assert m is None or 0 <= m < K
            continue
        assert 0 <= dec.dose < K and 1 <= dec.cohort_size <= design.max_cohort_size
        assert dec.dose <= s.highest_tried + 1 or s.current is None  # no skipping
        assert not eliminated(design, s)[dec.dose], (s, dec)
        assert s.total_n + dec.cohort_size <= 24
    # outcome strings round-trip to the same state
    assert state_from_outcomes(format_outcomes(cohorts), K).n == state.n
    assert state_from_outcomes(format_outcomes(cohorts), K).y == state.y


@pytest.mark.parametrize("design", DESIGNS)
@SET
@given(draws=draws)
def test_coherence_one_more_dlt_never_raises_next_dose(design, draws):
    state, cohorts, history = walk(design, draws)
    if len(history) < 2:
        return
    prev = history[-2]
    d, c, y = state.current, state.last_n, state.last_y
    if y == c:
        return
    worse = prev.add_cohort(d, c, y + 1)
    a, b = design.decide(state), design.decide(worse)
    if a.stop or b.stop:
        return
    assert b.dose <= a.dose, (format_outcomes(cohorts), a, b)
