"""One contract suite run over every registered design (a new design is covered by registering it).

Properties (hypothesis, derandomized, on paths the design itself generates):

* a decision is a valid dose and cohort size, or a stop with a reason;
* no dose is skipped when escalating; an eliminated / too-toxic dose is never used;
  the sample size never exceeds max_n;
* coherence: one more DLT never gives a higher next dose;
* decisions are reproducible where they are used: a design sent to a worker process (a pickle
  round trip, as the loky / multiprocessing / dask backends do) and a design rebuilt from its
  spec decide exactly as the original on every state of the path;
* outcome strings round-trip.

Every design runs on complete data (``TrialState``).  Time-to-event designs (registry entries
with ``time_to_event``) also run on paths with pending patients (``TiteState``): patients are
enrolled when the design says so, followed up, and have DLTs or complete their window in an
order hypothesis chooses; with pending patients, turning one pending patient at the current
dose into a DLT must never raise the next dose.
"""
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escalation_sim.designs.base import DesignContext, Outcome
from escalation_sim.designs.registry import registry
from escalation_sim.designs.tite import TiteState
from escalation_sim.outcomes import (format_outcomes, joint_state_from_outcomes,
                                     state_from_outcomes)
from escalation_sim.types import JointState, StopReason, TrialState

K = 4
MAX_N = 24
CTX = DesignContext(n_doses=K, target=0.25, cohort_size=3, max_n=MAX_N, start_dose=0)
CTX1 = DesignContext(n_doses=K, target=0.25, cohort_size=1, max_n=MAX_N, start_dose=0)
EXTRA = {"crm": {"skeleton": [0.10, 0.17, 0.25, 0.35]},
         "tite-crm": {"skeleton": [0.10, 0.17, 0.25, 0.35]},
         "blrm": {"dose_amounts": [10, 20, 40, 80]},
         # gBOIN's target is on the normalized score scale (TITEgBOIN's example 0.47 / 1.5)
         "gboin": {"target": 0.47 / 1.5}, "tite-gboin": {"target": 0.47 / 1.5}}


class Case:
    """A built design with what it takes to rebuild it independently."""

    def __init__(self, type_name, raw, ctx):
        self.entry = registry()[type_name]
        self.raw, self.ctx = raw, ctx
        self.design = self.entry.build(self.entry.spec_model.model_validate(raw), ctx)

    def rebuilt(self):
        return self.entry.build(self.entry.spec_model.model_validate(dict(self.raw)), self.ctx)


def cases(time_to_event_only=False):
    out = []
    for t, entry in registry().items():
        if time_to_event_only and not entry.time_to_event:
            continue
        raw = {"type": t, **EXTRA.get(t, {})}
        out.append(pytest.param(Case(t, raw, CTX), id=t))
        if t == "3+3" and not time_to_event_only:
            out.append(pytest.param(Case(t, {**raw, "max_n": MAX_N}, CTX), id="3+3-maxn"))
        if entry.time_to_event:
            out.append(pytest.param(Case(t, raw, CTX1), id=f"{t}-cohorts-of-1"))
    return out


ALL = cases()
TTE = cases(time_to_event_only=True)


def test_every_builtin_type_is_covered():
    assert {"3+3", "boin", "crm", "tite-crm", "tite-boin", "blrm", "rolling6",
            "rolling6-complete", "gboin", "tite-gboin"} <= {p.id for p in ALL}
    assert {"tite-crm", "tite-boin", "rolling6", "tite-gboin"} <= {p.id for p in TTE}


def eliminated(design, state):
    est = design.estimates(state)
    for key in ("eliminated", "too_toxic"):
        if key in est and est[key] is not None:
            return [bool(x) for x in est[key]]
    return [False] * state.n_doses


def same(a, b):
    return (a.dose, a.cohort_size, a.stop_reason, a.reason) == \
        (b.dose, b.cohort_size, b.stop_reason, b.reason)


def check_decision(case, state, dec, clones):
    """The per-state contract (shared by complete-data and pending-patient paths)."""
    design = case.design
    for other in clones:
        assert same(other.decide(state), dec), (state, dec)
    if dec.stop:
        assert isinstance(dec.stop_reason, StopReason) and dec.reason
        m = design.select_mtd(state)
        assert m is None or 0 <= m < K
        for other in clones:
            assert other.select_mtd(state) == m
        return
    # a time-to-event design may ask to wait (cohort of 0) while patients are pending
    smallest = 0 if getattr(state, "pending", ()) else 1
    assert 0 <= dec.dose < K and smallest <= dec.cohort_size <= design.max_cohort_size
    assert dec.dose <= state.highest_tried + 1 or state.current is None  # no skipping
    assert not eliminated(design, state)[dec.dose], (state, dec)
    assert state.total_n + dec.cohort_size <= MAX_N


SET = settings(max_examples=150, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- complete data
def is_score(design):
    return design.outcome is Outcome.SCORE


def is_joint(design):
    return design.outcome is Outcome.JOINT


def walk(design, draws):
    """Follow the design's own decisions; ``draws`` picks each cohort's DLT count (score
    designs: each patient's worst grade, and the cohort's score units; joint designs: each
    patient's letter N, E, T or B)."""
    state = JointState.empty(K) if is_joint(design) else TrialState.empty(K)
    cohorts = []
    history = [state]
    for r in draws:
        dec = design.decide(state)
        if dec.stop:
            break
        if is_score(design):
            grades = [(r * (i + 1) + i) % 5 for i in range(dec.cohort_size)]
            letters = "".join(map(str, grades))
            y = sum(design.score_units[g] for g in grades)
            state = state.add_cohort(dec.dose, dec.cohort_size, y, design.unit_scale)
        elif is_joint(design):
            letters = "".join("NETB"[(r * (i + 1) + i) % 4] for i in range(dec.cohort_size))
            t = sum(ch in "TB" for ch in letters)
            e = sum(ch in "EB" for ch in letters)
            state = state.add_cohort(dec.dose, dec.cohort_size, t, e=e, b=letters.count("B"))
        else:
            y = r % (dec.cohort_size + 1)
            letters = "T" * y + "N" * (dec.cohort_size - y)
            state = state.add_cohort(dec.dose, dec.cohort_size, y)
        cohorts.append((dec.dose, letters))
        history.append(state)
    return state, cohorts, history


draws = st.lists(st.integers(0, 11), min_size=0, max_size=14)


@pytest.mark.parametrize("case", ALL)
@SET
@given(draws=draws)
def test_contract(case, draws):
    clones = [pickle.loads(pickle.dumps(case.design)), case.rebuilt()]
    state, cohorts, history = walk(case.design, draws)
    for s in history:
        check_decision(case, s, case.design.decide(s), clones)
    # outcome strings round-trip to the same state
    units = case.design.score_units if is_score(case.design) else None
    if is_joint(case.design):
        again = joint_state_from_outcomes(format_outcomes(cohorts), K)
        assert (again.n, again.y, again.e, again.b) == (state.n, state.y, state.e, state.b)
        return
    again = state_from_outcomes(format_outcomes(cohorts), K, units)
    assert (again.n, again.y) == (state.n, state.y)


@pytest.mark.parametrize("case", ALL)
@SET
@given(draws=draws)
def test_coherence_one_more_dlt_never_raises_next_dose(case, draws):
    design = case.design
    if is_joint(design):
        pytest.skip("BOIN12 and Keyboard phase I/II trade toxicity against efficacy: one more "
                    "DLT at the current dose can make a neighbouring dose the more desirable, "
                    "a higher one included (their papers claim no such coherence)")
    state, cohorts, history = walk(design, draws)
    if len(history) < 2:
        return
    prev = history[-2]
    d, c, y = state.current, state.last_n, state.last_y
    L = design.unit_scale if is_score(design) else 1   # score designs: one more unit
    if y == c * L:
        return
    worse = prev.add_cohort(d, c, y + 1, L)
    a, b = design.decide(state), design.decide(worse)
    if a.stop or b.stop:
        return
    assert b.dose <= a.dose, (format_outcomes(cohorts), a, b)


# ----------------------------------------------------------------------------- pending patients
class PendingTrial:
    """A trial of a time-to-event design: enrolled patients are pending (follow-up fraction
    in [0, 1)) until they have a DLT or complete the window."""

    def __init__(self):
        self.n, self.y = [0] * K, [0] * K
        self.pending = []           # [dose, fraction, group]
        self.current, self.last_n, self.last_y, self.group = None, 0, 0, -1

    def state(self, pending=None, y=None, last_y=None) -> TiteState:
        pend = self.pending if pending is None else pending
        return TiteState(tuple(self.n), tuple(self.y if y is None else y), self.current,
                         self.last_n, self.last_y if last_y is None else last_y,
                         tuple((d, f) for d, f, _ in pend), 6)  # up to 6 units a patient

    def enroll(self, dose, size):
        self.group += 1
        self.n[dose] += size
        self.pending += [[dose, 0.0, self.group] for _ in range(size)]
        self.current, self.last_n, self.last_y = dose, size, 0

    def follow(self, step):
        """Everyone pending is followed for ``step`` of the window; who reaches it completes."""
        for p in self.pending:
            p[1] += step
        self.pending = [p for p in self.pending if p[1] < 1.0]

    def dlt(self, i):
        dose, _, group = self.pending.pop(i)
        self.y[dose] += 1
        if group == self.group:
            self.last_y += 1

    def one_more_dlt(self, units=1):
        """The state in which the first pending patient at the current dose had a DLT
        (score designs: ``units`` = the largest score; see the coherence test)."""
        for i, (dose, _, group) in enumerate(self.pending):
            if dose == self.current:
                y = list(self.y)
                y[dose] += units
                last_y = self.last_y + units * (group == self.group)
                return self.state(self.pending[:i] + self.pending[i + 1:], y, last_y)
        return None


events = st.lists(st.tuples(st.sampled_from(["enroll", "follow", "dlt"]), st.integers(0, 7)),
                  min_size=20, max_size=90)


def pending_walk(design, evts):
    """Visit the states of a trial driven by ``evts``; yields (trial, state, decision)."""
    trial = PendingTrial()
    for kind, k in evts:
        state = trial.state()
        dec = design.decide(state)
        yield trial, state, dec
        if dec.stop:
            return
        if kind == "dlt" and trial.pending:
            trial.dlt(k % len(trial.pending))
        elif kind == "enroll" and dec.cohort_size > 0:
            trial.enroll(dec.dose, dec.cohort_size)
        elif trial.pending:
            trial.follow(0.125 * (k + 1))
        elif dec.cohort_size > 0:
            trial.enroll(dec.dose, dec.cohort_size)


@pytest.mark.parametrize("case", TTE)
@SET
@given(evts=events)
def test_contract_with_pending_patients(case, evts):
    clones = [pickle.loads(pickle.dumps(case.design)), case.rebuilt()]
    for _, state, dec in pending_walk(case.design, evts):
        check_decision(case, state, dec, clones)


@pytest.mark.parametrize("case", TTE)
@SET
@given(evts=events)
def test_coherence_with_pending_patients(case, evts):
    """A pending patient at the current dose having a DLT never raises the next dose.  For a
    score design the DLT carries the largest score: a *mild* event may lower TITEgBOIN's
    estimate y / (n - c + STFT) (the patient's score below the current mean, its full weight
    replacing its followed fraction), so only the worst outcome is monotone there."""
    design = case.design
    L = design.unit_scale if is_score(design) else 1
    for trial, state, dec in pending_walk(design, evts):
        worse = trial.one_more_dlt(L)
        if dec.stop or worse is None:
            continue
        b = design.decide(worse)
        if b.stop:
            continue
        assert b.dose <= dec.dose, (state, worse, dec, b)


# ----------------------------------------------------------------------------- metadata
def test_registry_metadata_is_consistent():
    """Each entry's metadata comes from its design class and survives the wrappers."""
    for case in (p.values[0] for p in ALL):
        entry, design = case.entry, case.design
        assert isinstance(design.inner, entry.design_class)
        assert design.time_to_event is entry.time_to_event
        assert design.outcome is entry.outcome
        size = entry.trial_size(entry.spec_model.model_validate(case.raw), case.ctx)
        assert design.max_n == size.max_n
        assert design.max_cohort_size == size.cohort_size


def test_loader_rejects_a_design_whose_outcome_the_truth_lacks(monkeypatch):
    from escalation_sim.inputs import scenario as sc
    text = """
name: t
doses: [DL1, DL2]
truth: {p_dlt: [0.1, 0.3]}
target: 0.25
trial: {max_n: 12}
designs: [{type: boin}]
"""
    assert sc.load_scenario_text(text).designs[0].type == "boin"
    monkeypatch.setattr(sc, "TRUTH_OUTCOMES", ())
    with pytest.raises(sc.ScenarioError, match=r"designs\[0\] \(boin\): the design needs "
                                               r"binary DLT outcomes"):
        sc.load_scenario_text(text)
