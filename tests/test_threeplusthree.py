"""Tests of the 3+3 design (escalation_sim/designs/threeplusthree.py).

Independent references used here:
* a history-based textbook 3+3 written in this file (walks the cohorts in order as a small
  state machine with an explicit escalation / de-escalation mode, never looks at per-dose
  totals the way the design does), from the rule as stated by Storer (1989), Korn et al.
  (1994, p. 1801) and Lin & Shih (2001, Biostatistics 2:203-215);
* brute-force enumeration of every trial path with binomial cohort probabilities;
* hand-derived values (noted beside each assertion);
* published numbers (sources beside each assertion).
"""
from __future__ import annotations

import itertools
import math
import pickle
from typing import Dict, List, Tuple

import pytest
from pydantic import ValidationError

from escalation_sim.designs import threeplusthree as tpt  # registers "3+3"
from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.registry import TrialSize, build_design, get_entry
from escalation_sim.designs.rules import StopAtN, StopWhenNAtDose
from escalation_sim.designs.threeplusthree import ThreePlusThree, lin_shih_oc
from escalation_sim.outcomes import format_outcomes, state_from_outcomes
from escalation_sim.types import StopReason, TrialState

VARIANTS = [(de, t6) for de in (True, False) for t6 in (True, False)]


# --------------------------------------------------------------------------------------
# Independent textbook 3+3, history based
# --------------------------------------------------------------------------------------
def textbook(cohorts: List[Tuple[int, str]], k: int, de_esc: bool, top6: bool):
    """Walk the cohorts in order; return ("treat", dose) or ("stop", mtd_or_None).

    Raises AssertionError if the history does not follow the rule (unreachable history).
    """
    seen: Dict[int, List[int]] = {}
    mode = "escalate"
    action: tuple = ("treat", 0)

    def too_toxic(d):
        nonlocal mode
        if d == 0:
            return ("stop", None)
        if len(seen[d - 1]) == 2:          # dose below already has 6 (and passed)
            return ("stop", d - 1)
        if de_esc:                           # dose below has 3: treat 3 more there
            mode = "de-escalate"
            return ("treat", d - 1)
        return ("stop", d - 1)             # Lin & Shih traditional: MTD with 3

    for dose, letters in cohorts:
        assert action == ("treat", dose), f"unreachable history at {dose}{letters}"
        assert len(letters) == 3
        seen.setdefault(dose, []).append(letters.count("T"))
        cs = seen[dose]
        if mode == "de-escalate":            # the second cohort at a dose we came back to
            action = ("stop", dose) if sum(cs) <= 1 else too_toxic(dose)
        elif len(cs) == 1:
            if cs[0] == 0:
                if dose == k - 1:
                    action = ("treat", dose) if top6 else ("stop", dose)
                else:
                    action = ("treat", dose + 1)
            elif cs[0] == 1:
                action = ("treat", dose)
            else:
                action = too_toxic(dose)
        else:                                # second cohort at this dose, escalation phase
            if sum(cs) <= 1:
                action = ("stop", dose) if dose == k - 1 else ("treat", dose + 1)
            else:
                action = too_toxic(dose)
    return action


def design_action(design, state):
    dec = design.decide(state)
    if dec.stop:
        return ("stop", design.select_mtd(state)), dec
    return ("treat", dec.dose), dec


def all_paths(k, de_esc, top6, letters_set):
    """Every reachable history (prefixes included) of the textbook rule."""
    out = []
    stack = [[]]
    while stack:
        hist = stack.pop()
        act = textbook(hist, k, de_esc, top6)
        out.append((hist, act))
        if act[0] == "treat":
            for letters in letters_set:
                stack.append(hist + [(act[1], letters)])
    return out


ALL_8 = ["".join(t) for t in itertools.product("NT", repeat=3)]
COUNTS_4 = ["NNN", "NNT", "NTT", "TTT"]


@pytest.mark.parametrize("de_esc,top6", VARIANTS)
@pytest.mark.parametrize("k,letters", [(1, ALL_8), (2, ALL_8), (3, COUNTS_4)])
def test_exhaustive_against_textbook(k, letters, de_esc, top6):
    design = ThreePlusThree(n_doses=k, de_escalation=de_esc, top_dose_needs_six=top6)
    paths = all_paths(k, de_esc, top6, letters)
    n_terminal = 0
    for hist, ref in paths:
        state = state_from_outcomes(format_outcomes(hist), k)
        got, dec = design_action(design, state)
        assert got == ref, (format_outcomes(hist), got, ref)
        if dec.stop:
            n_terminal += 1
            want_reason = (StopReason.LOWEST_DOSE_TOO_TOXIC if ref[1] is None
                           else StopReason.RULE_COMPLETE)
            assert dec.stop_reason == want_reason
        else:
            assert dec.cohort_size == 3
        assert all(n <= 6 for n in state.n)
    assert n_terminal > 0


def test_terminal_path_count_k1():
    # Hand count, K = 1, standard variant (de-escalation irrelevant, top needs 6), with the 4
    # count outcomes: 0/3 -> 3 more (4 outcomes, all terminal); 1/3 -> 3 more (4 terminal);
    # 2/3, 3/3 -> stop.  4 + 4 + 2 = 10 terminal paths.
    paths = all_paths(1, True, True, COUNTS_4)
    assert sum(1 for _, a in paths if a[0] == "stop") == 10


# --------------------------------------------------------------------------------------
# Explicit cases (1-based doses in outcome strings, 0-based in assertions)
# --------------------------------------------------------------------------------------
def run(text, k=3, **kw):
    design = ThreePlusThree(n_doses=k, **kw)
    state = state_from_outcomes(text, k)
    return design.decide(state), design.select_mtd(state), design


@pytest.mark.parametrize("de_esc,top6", VARIANTS)
def test_textbook_explicit_common(de_esc, top6):
    kw = dict(de_escalation=de_esc, top_dose_needs_six=top6)
    d, _, _ = run("", **kw)
    assert (d.dose, d.cohort_size) == (0, 3)                     # start at dose 1
    d, _, _ = run("1NNN", **kw)
    assert (d.dose, d.cohort_size) == (1, 3)                     # 0/3 -> escalate
    d, _, _ = run("1NNT", **kw)
    assert (d.dose, d.cohort_size) == (0, 3)                     # 1/3 -> 3 more
    d, _, _ = run("1NTN 1NNN", **kw)
    assert d.dose == 1                                           # 1/6 -> escalate
    d, mtd, _ = run("1TTN", **kw)
    assert d.stop and d.stop_reason == StopReason.LOWEST_DOSE_TOO_TOXIC and mtd is None
    d, mtd, _ = run("1NTN 1NTN", **kw)                           # 2/6 at dose 1
    assert d.stop and d.stop_reason == StopReason.LOWEST_DOSE_TOO_TOXIC and mtd is None
    d, mtd, _ = run("1NTN 1NNN 2TTT", **kw)                      # dose 1 has 1/6: MTD
    assert d.stop and d.stop_reason == StopReason.RULE_COMPLETE and mtd == 0
    d, mtd, _ = run("1NNN 2NNT 2TNN", **kw)                      # 2/6 at dose 2
    if de_esc:
        assert (d.dose, d.cohort_size) == (0, 3)
    else:
        assert d.stop and mtd == 0


def test_de_escalation_cases():
    # "1NNN 2TTN": with de-escalation 3 more at dose 1; without, MTD dose 1 (Lin & Shih).
    d, _, _ = run("1NNN 2TTN", de_escalation=True)
    assert (d.dose, d.cohort_size) == (0, 3)
    d, mtd, _ = run("1NNN 2TTN", de_escalation=False)
    assert d.stop and d.stop_reason == StopReason.RULE_COMPLETE and mtd == 0
    # back at dose 1: <= 1/6 -> MTD dose 1; 2/6 -> no MTD
    d, mtd, _ = run("1NNN 2TTN 1NNT", de_escalation=True)
    assert d.stop and d.stop_reason == StopReason.RULE_COMPLETE and mtd == 0
    d, mtd, _ = run("1NNN 2TTN 1NTT", de_escalation=True)
    assert d.stop and d.stop_reason == StopReason.LOWEST_DOSE_TOO_TOXIC and mtd is None
    # repeated de-escalation, K = 4: 3 toxic, 2 rejected on return, 1 accepted on return
    text = "1NNN 2NNN 3TTN 2NTT 1NNN"
    d, mtd, _ = run(text, k=4)
    assert d.stop and mtd == 0
    d, _, _ = run("1NNN 2NNN 3TTN 2NTT", k=4)
    assert (d.dose, d.cohort_size) == (0, 3)
    # return to a dose that already has 6: it is the MTD at once
    d, mtd, _ = run("1NNN 2NTN 2NNN 3TTT", k=4)
    assert d.stop and mtd == 1


def test_top_dose_variants():
    # K = 2; "1NNN 2NNN": top needs 6 -> 3 more at dose 2; otherwise MTD dose 2.
    d, _, _ = run("1NNN 2NNN", k=2, top_dose_needs_six=True)
    assert (d.dose, d.cohort_size) == (1, 3)
    d, mtd, _ = run("1NNN 2NNN", k=2, top_dose_needs_six=False)
    assert d.stop and d.stop_reason == StopReason.RULE_COMPLETE and mtd == 1
    d, mtd, _ = run("1NNN 2NNN 2NNT", k=2, top_dose_needs_six=True)
    assert d.stop and mtd == 1
    # 0/3 then 2/3 at the top = 2/6: too toxic; dose 1 (0/3) gets 3 more with de-escalation
    d, _, _ = run("1NNN 2NNN 2NTT", k=2, top_dose_needs_six=True, de_escalation=True)
    assert (d.dose, d.cohort_size) == (0, 3)
    d, mtd, _ = run("1NNN 2NNN 2NTT", k=2, top_dose_needs_six=True, de_escalation=False)
    assert d.stop and mtd == 0
    # 1/3 then 0/3 at the top: <= 1/6 -> MTD top in both variants
    for t6 in (True, False):
        d, mtd, _ = run("1NNN 2TNN 2NNN", k=2, top_dose_needs_six=t6)
        assert d.stop and mtd == 1
    # single dose trial
    d, _, _ = run("1NNN", k=1)
    assert (d.dose, d.cohort_size) == (0, 3)
    d, mtd, _ = run("1NNN", k=1, top_dose_needs_six=False)
    assert d.stop and mtd == 0


def test_start_dose_above_lowest():
    kw = dict(k=3, start_dose=1)
    d, _, _ = run("", **kw)
    assert (d.dose, d.cohort_size) == (1, 3)
    # start dose too toxic and dose 1 untried: treat 3 at dose 1 (both variants)
    for de in (True, False):
        d, _, _ = run("2TTN", de_escalation=de, **kw)
        assert (d.dose, d.cohort_size) == (0, 3)
        d, mtd, _ = run("2TTN 1TTN", de_escalation=de, **kw)
        assert d.stop and d.stop_reason == StopReason.LOWEST_DOSE_TOO_TOXIC and mtd is None
        d, _, _ = run("2TTN 1TNN", de_escalation=de, **kw)
        assert (d.dose, d.cohort_size) == (0, 3)
        d, mtd, _ = run("2TTN 1TNN 1NNN", de_escalation=de, **kw)
        assert d.stop and mtd == 0
    d, _, _ = run("2TTN 1NNN", de_escalation=True, **kw)
    assert (d.dose, d.cohort_size) == (0, 3)
    d, mtd, _ = run("2TTN 1NNN", de_escalation=False, **kw)
    assert d.stop and mtd == 0
    d, mtd, _ = run("2TTN 1NNN 1NNT", de_escalation=True, **kw)
    assert d.stop and mtd == 0
    d, _, _ = run("2NNN", **kw)
    assert d.dose == 2


def test_select_mtd_when_cut_short():
    # Documented rule: the highest dose below the lowest too-toxic dose whose own counts pass
    # (0/3 or <= 1/6), 0/3 not being enough at the top (top needs 6) or directly below a
    # too-toxic dose (with de-escalation).
    sel = lambda text, k=3, **kw: ThreePlusThree(n_doses=k, **kw).select_mtd(
        state_from_outcomes(text, k))
    assert sel("") is None
    assert sel("1NNN") == 0
    assert sel("1NNT") is None                     # 1/3: not cleared yet
    assert sel("1NNN 2NNN") == 1
    assert sel("1NNN 2NNT") == 0
    assert sel("1NNN 2NNN", k=2) == 0              # top dose needs 6
    assert sel("1NNN 2NNN", k=2, top_dose_needs_six=False) == 1
    assert sel("1NNN 2TTN") is None                # dose 1 must be expanded first
    assert sel("1NNN 2TTN", de_escalation=False) == 0
    # StopAtN cut-off from a design-level max_n: the wrapper forwards select_mtd
    wrapped = StopAtN(base=ThreePlusThree(n_doses=3), n=6)
    st = state_from_outcomes("1NNN 2NNN", 3)
    dec = wrapped.decide(st)
    assert dec.stop and dec.stop_reason == StopReason.MAX_N
    assert wrapped.select_mtd(st) == 1


def test_estimates():
    design = ThreePlusThree(n_doses=3)
    est = design.estimates(state_from_outcomes("1NNN 2NTT", 3))
    assert est["counts"] == ["0/3", "2/3", "-"]
    assert est["too_toxic"] == [False, True, False]
    assert est["eliminated"] == [False, True, True]
    assert est["p_hat"][0] == 0.0 and abs(est["p_hat"][1] - 2 / 3) < 1e-15
    assert est["p_hat"][2] is None
    assert est["mtd"] is None


def test_design_is_pure_and_hashable():
    # 1/3 at dose 2 -> 3 more at dose 2 (Storer 1989), for the design, a pickled copy (what
    # a worker process receives) and a design rebuilt from its spec
    design = ThreePlusThree(n_doses=3)
    st = state_from_outcomes("1NNN 2NTN", 3)
    spec = tpt.Spec.model_validate({"type": "3+3"})
    for d in (design, pickle.loads(pickle.dumps(design)),
              build_design(spec, DesignContext(3, 0.3, 3, 18, 0))):
        dec = d.decide(st)
        assert (dec.dose, dec.cohort_size, dec.stop) == (1, 3, False)
    assert hash(design) == hash(ThreePlusThree(n_doses=3))
    assert design.max_cohort_size == 3
    with pytest.raises(ValueError):
        ThreePlusThree(n_doses=3, start_dose=3)
    with pytest.raises(ValueError):
        ThreePlusThree(n_doses=0)


@pytest.mark.parametrize("de_esc,top6", VARIANTS)
@pytest.mark.parametrize("k", [4, 5])
def test_invariants_all_reachable_states(k, de_esc, top6):
    # Every reachable state (count outcomes): cohorts of 3, <= 6 per dose, no skipping, never
    # treat at or above the lowest too-toxic dose; terminal states recommend below it.
    design = ThreePlusThree(n_doses=k, de_escalation=de_esc, top_dose_needs_six=top6)
    stack = [TrialState.empty(k)]
    while stack:
        st = stack.pop()
        dec = design.decide(st)
        lowest_toxic = next((d for d in range(k) if st.y[d] >= 2), k)
        if dec.stop:
            mtd = design.select_mtd(st)
            assert mtd is None or mtd < lowest_toxic
            continue
        assert dec.cohort_size == 3
        assert dec.dose < lowest_toxic
        assert dec.dose <= st.highest_tried + 1
        assert st.n[dec.dose] + 3 <= 6
        for y in range(4):
            stack.append(st.add_cohort(dec.dose, 3, y))


# --------------------------------------------------------------------------------------
# Exact operating characteristics: brute force vs the closed form
# --------------------------------------------------------------------------------------
def brute_force(design, p):
    """Recursive enumeration over cohort outcomes with binomial probabilities."""
    k = design.n_doses
    p_mtd = [0.0] * k
    p_none = 0.0
    en = [0.0] * k

    def rec(state, prob):
        nonlocal p_none
        dec = design.decide(state)
        if dec.stop:
            mtd = design.select_mtd(state)
            if mtd is None:
                p_none += prob
            else:
                p_mtd[mtd] += prob
            for d in range(k):
                en[d] += prob * state.n[d]
            return
        m, d = dec.cohort_size, dec.dose
        for y in range(m + 1):
            q = math.comb(m, y) * p[d] ** y * (1 - p[d]) ** (m - y)
            if q > 0:
                rec(state.add_cohort(d, m, y), prob * q)

    rec(TrialState.empty(k), 1.0)
    return p_mtd, p_none, en


SCENARIOS = [
    [0.3],
    [0.05, 0.6],
    [0.1, 0.2, 0.35],
    [0.05, 0.1, 0.2, 0.3, 0.5],
    [0.02, 0.08, 0.15, 0.25, 0.4, 0.55],
    [0.5, 0.6, 0.7, 0.8],
    [0.0, 0.0, 1.0],
]


@pytest.mark.parametrize("de_esc,top6", VARIANTS)
@pytest.mark.parametrize("p", SCENARIOS)
def test_closed_form_matches_enumeration(p, de_esc, top6):
    design = ThreePlusThree(n_doses=len(p), de_escalation=de_esc, top_dose_needs_six=top6)
    p_mtd, p_none, en = brute_force(design, p)
    oc = lin_shih_oc(p, de_escalation=de_esc, top_dose_needs_six=top6)
    assert max(abs(a - b) for a, b in zip(p_mtd, oc.p_mtd, strict=True)) < 1e-12
    assert abs(p_none - oc.p_no_mtd) < 1e-12
    assert max(abs(a - b) for a, b in zip(en, oc.expected_n, strict=True)) < 1e-12
    assert abs(sum(oc.p_mtd) + oc.p_no_mtd - 1) < 1e-12
    for j in range(len(p)):
        assert abs(oc.expected_dlt[j] - p[j] * oc.expected_n[j]) < 1e-15


def test_expected_dlt_by_enumeration():
    # E[DLTs at dose j] by enumeration equals p_j E[N_j] (the closed form's Wald identity)
    p = [0.1, 0.3, 0.5]
    design = ThreePlusThree(n_doses=3)
    ey = [0.0] * 3

    def rec(state, prob):
        dec = design.decide(state)
        if dec.stop:
            for d in range(3):
                ey[d] += prob * state.y[d]
            return
        for y in range(4):
            q = math.comb(3, y) * p[dec.dose] ** y * (1 - p[dec.dose]) ** (3 - y)
            rec(state.add_cohort(dec.dose, 3, y), prob * q)

    rec(TrialState.empty(3), 1.0)
    oc = lin_shih_oc(p)
    assert max(abs(a - b) for a, b in zip(ey, oc.expected_dlt, strict=True)) < 1e-12


def test_expected_sample_size_hand_values():
    # K = 1, p = 0.5, top needs 6: 3 + 3 P(X<=1), X ~ Bin(3, .5): 3 + 3 * 0.5 = 4.5
    assert abs(lin_shih_oc([0.5]).expected_n_total - 4.5) < 1e-15
    # ... without top_dose_needs_six: 3 + 3 P(X=1) = 3 + 3 * 0.375 = 4.125
    assert abs(lin_shih_oc([0.5], top_dose_needs_six=False).expected_n_total - 4.125) < 1e-15
    # no toxicity, K = 4: 3 per dose and 6 at the top (12 + 3 = 15); without top6: 12
    oc = lin_shih_oc([0.0] * 4)
    assert oc.expected_n == (3.0, 3.0, 3.0, 6.0) and oc.p_mtd[3] == 1.0
    assert lin_shih_oc([0.0] * 4, top_dose_needs_six=False).expected_n_total == 12.0
    # certain toxicity: 3 patients, no MTD
    oc = lin_shih_oc([1.0] * 3)
    assert oc.expected_n_total == 3.0 and oc.p_no_mtd == 1.0
    # p = (0, 1): "1NNN 2TTT" then 3 more at dose 1 with de-escalation -> (6, 3), MTD dose 1
    oc = lin_shih_oc([0.0, 1.0])
    assert oc.expected_n == (6.0, 3.0) and oc.p_mtd == (1.0, 0.0)
    oc = lin_shih_oc([0.0, 1.0], de_escalation=False)
    assert oc.expected_n == (3.0, 3.0) and oc.p_mtd == (1.0, 0.0)
    # K = 2, no de-escalation, p = (0.2, 0.4), hand computation:
    #   pass(.2) = .512 + .384 * .512 = .708608 ; P(no MTD) = 1 - .708608 = .291392
    #   pass_top(.4, top needs 6) = .216 * .648 + .432 * .216 = .233280
    #   P(MTD = 2) = .708608 * .23328 ; P(MTD = 1) = .708608 * (1 - .23328)
    oc = lin_shih_oc([0.2, 0.4], de_escalation=False)
    assert abs(oc.p_no_mtd - 0.291392) < 1e-12
    assert abs(oc.p_mtd[1] - 0.708608 * 0.23328) < 1e-12
    assert abs(oc.p_mtd[0] - 0.708608 * (1 - 0.23328)) < 1e-12
    #   E[N_1] = 3 + 3 * .384 = 4.152 ; E[N_2] = .708608 * (3 + 3 * .648) = 3.50302...
    assert abs(oc.expected_n[0] - 4.152) < 1e-12
    assert abs(oc.expected_n[1] - 0.708608 * 4.944) < 1e-12


def test_published_escalation_probabilities():
    # Probability that a dose "passes" the 3+3 (0/3, or 1/3 then 0/3), i.e. P(MTD = dose 1)
    # in a one-dose trial whose top dose does not need 6.  Published (2 decimals) in the
    # protocol table "Probability of Dose Escalation to the Next Cohort", Table 4, scenario 2
    # (escalate with 0 or 1 AE in 3-6), studylib.net/doc/11248533: true rate .50 .40 .20 .10
    # .03 -> .17 .31 .71 .91 .99.
    published = {0.50: 0.17, 0.40: 0.31, 0.20: 0.71, 0.10: 0.91, 0.03: 0.99}
    for rate, value in published.items():
        oc = lin_shih_oc([rate], top_dose_needs_six=False)
        assert round(oc.p_mtd[0], 2) == value
        # the same through the design itself
        p_mtd, _, _ = brute_force(ThreePlusThree(n_doses=1, top_dose_needs_six=False), [rate])
        assert round(p_mtd[0], 2) == value


def test_published_chow_shao_wang_example():
    # Chow, Shao & Wang, "Sample Size Calculation in Clinical Research" (2003/2008), examples
    # 11.6.1 / 11.6.2 as documented in the CRAN package TrialSize (functions
    # AB.withoutDescalation / AB.withDescalation with A=B=3, C=D=E=1): DLT rates
    # (0.01, 0.014, 0.025, 0.056, 0.177, 0.594, 0.963); the help pages report
    # "Example.11.6.1[1] = 3.1" (expected patients at dose 1, without de-escalation) and
    # "Example.11.6.2[7] = 0.2" (expected patients at dose 7, with de-escalation).
    dlt = [0.01, 0.014, 0.025, 0.056, 0.177, 0.594, 0.963]
    for top6 in (True, False):
        assert round(lin_shih_oc(dlt, False, top6).expected_n[0], 1) == 3.1
        assert round(lin_shih_oc(dlt, True, top6).expected_n[6], 1) == 0.2


# --------------------------------------------------------------------------------------
# Spec / registry
# --------------------------------------------------------------------------------------
CTX = DesignContext(n_doses=4, target=0.3, cohort_size=3, max_n=12, start_dose=0)


def test_registry_round_trip():
    entry = get_entry("3+3")
    assert entry.spec_model is tpt.Spec
    spec = entry.spec_model.model_validate({"type": "3+3"})
    design = build_design(spec, CTX)
    # the trial max_n (12) is ignored by the 3+3: the design is not wrapped
    assert isinstance(design, ThreePlusThree) and design.max_n is None
    assert entry.trial_size(spec, CTX) == TrialSize(cohort_size=3, max_n=None)
    assert not entry.time_to_event and not design.time_to_event
    assert design == ThreePlusThree(n_doses=4, start_dose=0, de_escalation=True,
                                    top_dose_needs_six=True, name="3+3")
    spec = entry.spec_model.model_validate(
        {"type": "3+3", "de_escalation": False, "top_dose_needs_six": False,
         "name": "traditional", "start_dose": 2})
    design = build_design(spec, CTX)
    assert design == ThreePlusThree(n_doses=4, start_dose=1, de_escalation=False,
                                    top_dose_needs_six=False, name="traditional")
    assert spec.model_dump()["de_escalation"] is False


def test_build_wrappers():
    spec = tpt.Spec.model_validate({"type": "3+3", "max_n": 9, "stop_n_at_dose": 6})
    design = build_design(spec, CTX)
    assert isinstance(design, StopAtN) and design.n == 9
    assert isinstance(design.base, StopWhenNAtDose) and design.base.n == 6
    assert isinstance(design.inner, ThreePlusThree)
    # the cap the engines read, and the trial size the scenario loader checks
    assert design.max_n == 9
    assert get_entry("3+3").trial_size(spec, CTX) == TrialSize(cohort_size=3, max_n=9)
    assert design.max_cohort_size == 3
    st = state_from_outcomes("1NNN 2NNN 3NNN", 4)
    assert design.decide(st).stop_reason == StopReason.MAX_N
    assert design.select_mtd(st) == 2


def test_spec_validation():
    with pytest.raises(ValidationError, match="cohort_size"):
        tpt.Spec.model_validate({"type": "3+3", "cohort_size": 2})
    assert tpt.Spec.model_validate({"type": "3+3", "cohort_size": 3}).cohort_size == 3
    with pytest.raises(ValidationError):
        tpt.Spec.model_validate({"type": "3+3", "de_escalate": True})  # unknown key
    with pytest.raises(ValidationError):
        tpt.Spec.model_validate({"type": "boin"})
    spec = tpt.Spec.model_validate({"type": "3+3", "start_dose": 5})
    with pytest.raises(ValueError, match="start_dose"):
        build_design(spec, CTX)
