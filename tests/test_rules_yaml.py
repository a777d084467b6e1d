"""Stopping and modifying rules given in YAML (``rules:`` on any design spec).

References (beside each test):
[DFCRM] dfcrm ``crm()`` recommendation for skeleton (0.05, 0.1, 0.25, 0.4, 0.6), target 0.25:
        "1NNN 2NNN" -> dose 5 (brockk/escalation's get_dfcrm documentation, as cited in
        tests/test_table.py and tests/test_crm.py).
[ESCDN] R escalation ``demand_n_at_dose`` test (tests/testthat/test_demand_n_at_dose.R,
        "Example 2"): get_dfcrm(skeleton, target 0.25) %>% stop_at_n(n = 12) %>%
        demand_n_at_dose(n = 9, dose = 'recommended'): "1TNN 1NNN 2NTN 2TNN" continues,
        "1TNN 1NNN 2NTN 2TNN 2NNN" stops and recommends dose 2.
[BOIN]  BOIN target 0.25: lambda_e = 0.1968, lambda_d = 0.2984 (Liu & Yuan 2015; the
        boundaries are tested in tests/test_boin.py): with 9 patients escalate if <= 1 DLT,
        de-escalate if >= 3; with 12, escalate if <= 2.
Binomial identities by hand: Pr(p > t | Beta(y+1, n-y+1)) = P(Binomial(n+1, t) <= y).
"""
from __future__ import annotations

import contextlib
import io
import pickle

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from escalation_sim import simulate
from escalation_sim.cli import main
from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.boin import BOIN
from escalation_sim.designs.crm import CRM
from escalation_sim.designs.registry import get_entry, registry
from escalation_sim.designs.rules import (DemandNAtDose, NoSkipping, StopAtN, StopWhenNAtDose,
                                          StopWhenTooToxic, describe_rules)
from escalation_sim.inputs.scenario import ScenarioError, load_scenario, load_scenario_text
from escalation_sim.outcomes import state_from_outcomes
from escalation_sim.types import StopReason

from test_contract import (CTX, CTX1, EXTRA, K, MAX_N, SET, Case, check_decision, draws,
                           events, pending_walk, walk)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

ALL_RULES = [{"no_skip": True},
             {"stop_when_too_toxic": {"dose": 1, "threshold": 0.3, "confidence": 0.9}},
             {"stop_n_at_dose": 9}, {"demand_n_at_dose": 6}]

SC = """\
name: rules
doses: [DL1, DL2, DL3, DL4]
truth: {{p_dlt: [0.05, 0.12, 0.25, 0.40]}}
target: 0.25
trial: {{max_n: 24, cohort_size: 3}}
designs:
{designs}
"""


def scenario(*designs):
    return load_scenario_text(SC.format(designs="\n".join(f"  - {d}" for d in designs)),
                              "rules.yaml")


def problems(*designs):
    with pytest.raises(ScenarioError) as exc:
        scenario(*designs)
    return exc.value.problems


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def build(raw, ctx=CTX):
    entry = get_entry(raw["type"])
    return entry.build(entry.spec_model.model_validate(raw), ctx)


def chain(design):
    out = [type(design)]
    while hasattr(design, "base"):
        design = design.base
        out.append(type(design))
    return out


# ----------------------------------------------------------------------------- validation
def test_unknown_rule_name_suggests_the_closest():
    assert problems("{type: boin, rules: [{no_skp: true}]}") == [
        "designs[0].rules[0].no_skp: unknown key; did you mean 'no_skip'? (got true)"]
    assert problems("{type: boin, rules: [{demand_n_at_dse: 6}]}") == [
        "designs[0].rules[0].demand_n_at_dse: unknown key; did you mean 'demand_n_at_dose'? "
        "(got 6)"]


def test_demand_above_max_n_is_a_contradiction_exit_2_with_file_and_field(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(SC.format(designs="  - {type: mtpi2, rules: [{no_skip: true}, "
                                   "{demand_n_at_dose: 30}]}"))
    rc, out, err = cli("validate", f)
    assert rc == 2 and out == "" and "Traceback" not in err
    assert err.strip() == (f"{f}: designs[0].rules[1].demand_n_at_dose: must not exceed max_n "
                           "(24): the trial ends at max_n, so the demand could never be met "
                           "(got 30)")
    # a design-level max_n is the one that counts
    assert problems("{type: boin, max_n: 12, rules: [{demand_n_at_dose: 15}]}")[0].startswith(
        "designs[0].rules[0].demand_n_at_dose: must not exceed max_n (12)")
    # equal to max_n is allowed
    scenario("{type: boin, rules: [{demand_n_at_dose: 24}]}")


@pytest.mark.parametrize("design, message", [
    ("{type: boin, rules: [{no_skip: true, stop_n_at_dose: 3}]}",
     "designs[0].rules[0]: each entry of rules is one mapping with one rule name"),
    ("{type: boin, rules: [{}]}", "this one has no rule"),
    ("{type: boin, rules: [{demand_n_at_dose: 9}, {demand_n_at_dose: 6}]}",
     "designs[0].rules: demand_n_at_dose is given twice (rules[0] and rules[1]); give it once "
     "(got [9, 6])"),
    ("{type: boin, stop_n_at_dose: 6, rules: [{stop_n_at_dose: 9}]}",
     "designs[0].rules: stop_n_at_dose is given both as a design key and in rules (rules[0]); "
     "give it once (got 6 and 9)"),
    ("{type: crm, rules: [{stop_when_too_toxic: {dose: 5, threshold: 0.3, confidence: 0.9}}]}",
     "designs[0].rules[0].stop_when_too_toxic.dose: must be between 1 and 4 (got 5)"),
    ("{type: boin, rules: [{stop_when_too_toxic: {dose: 1, threshold: 0.3}}]}",
     "designs[0].rules[0].stop_when_too_toxic.confidence: required key is missing"),
    ("{type: boin, rules: [{stop_when_too_toxic: {dose: 1, threshold: 1.3, confidence: 0.9}}]}",
     "designs[0].rules[0].stop_when_too_toxic.threshold: Input should be less than 1 (got 1.3)"),
    ("{type: boin, rules: [{demand_n_at_dose: 0}]}",
     "designs[0].rules[0].demand_n_at_dose: Input should be greater than or equal to 1 (got 0)"),
    ("{type: boin, rules: {no_skip: true}}",
     "designs[0].rules: Input should be a valid list"),
])
def test_bad_rules_are_one_clear_line_each(design, message):
    got = problems(design)
    assert len(got) == 1 and message in got[0] and got[0].startswith("designs[0].rules"), got


@pytest.mark.parametrize("design, message", [
    # a bare rule name instead of a mapping: how to write it, with the closest rule
    ("{type: boin, rules: [no_skip]}",
     "designs[0].rules[0]: each entry of rules is a mapping with one rule name, such as "
     "{no_skip: true}; did you mean {no_skip: true}? (got 'no_skip')"),
    ("{type: boin, rules: [stop_when_too_toxc]}",
     "designs[0].rules[0]: each entry of rules is a mapping with one rule name, such as "
     "{no_skip: true}; did you mean {stop_when_too_toxic: {dose: 1, threshold: 0.3, "
     "confidence: 0.9}}? (got 'stop_when_too_toxc')"),
    ("{type: boin, rules: [3]}",
     "designs[0].rules[0]: each entry of rules is a mapping with one rule name, such as "
     "{no_skip: true} (got 3)"),
    # a demand the design's own rule forbids: the 3+3 and the rolling six treat at most 6
    ("{type: \"3+3\", rules: [{demand_n_at_dose: 9}]}",
     "designs[0].rules[0].demand_n_at_dose: must not exceed 6: the 3+3 design treats at most 6 "
     "patients at a dose, so the demand would push it past its own rule (got 9)"),
    ("{type: rolling6-complete, rules: [{demand_n_at_dose: 7}]}",
     "designs[0].rules[0].demand_n_at_dose: must not exceed 6: the rolling6-complete design "
     "treats at most 6 patients"),
    # a stop that max_n always pre-empts (rule or design key)
    ("{type: boin, rules: [{stop_n_at_dose: 30}]}",
     "designs[0].rules[0].stop_n_at_dose: must not exceed max_n (24): the trial ends at max_n "
     "first, so the rule could never apply (got 30)"),
    ("{type: boin, stop_n_at_dose: 25}",
     "designs[0].stop_n_at_dose: must not exceed max_n (24): the trial ends at max_n first"),
])
def test_more_bad_rules_one_line_each(design, message):
    got = problems(design)
    assert len(got) == 1 and got[0].startswith(message), got


def test_misspelt_key_inside_a_rule():
    # the did-you-mean reaches inside a rule; the key it replaces is then missing (two lines)
    got = problems("{type: boin, rules: [{stop_when_too_toxic: {dose: 1, threshhold: 0.3, "
                   "confidence: 0.9}}]}")
    assert sorted(got) == [
        "designs[0].rules[0].stop_when_too_toxic.threshhold: unknown key; did you mean "
        "'threshold'? (got 0.3)",
        "designs[0].rules[0].stop_when_too_toxic.threshold: required key is missing"]


def test_demand_at_the_design_cap_is_allowed():
    # 6 at the MTD is what the 3+3 and the rolling six give anyway
    scenario("{type: \"3+3\", rules: [{demand_n_at_dose: 6}]}",
             "{type: rolling6-complete, rules: [{demand_n_at_dose: 6}]}")


def test_blrm_without_amounts_exit_2_one_line(tmp_path):
    # issue 13's third bad input, end to end through the command line (the loader's message
    # itself is tested in tests/test_blrm.py)
    f = tmp_path / "bad.yaml"
    f.write_text(SC.format(designs="  - {type: blrm}"))
    rc, out, err = cli("validate", f)
    assert rc == 2 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{f}: designs[0] (blrm): the blrm design "
                                                   "needs every dose's amount")
    assert lines[0].endswith("(got no amount for doses 1, 2, 3, 4)")


# ----------------------------------------------------------------------------- semantics
def test_no_skip_caps_a_crm_jump():
    # [DFCRM] "1NNN 2NNN" -> dose 5 without restriction; no_skip caps it at dose 3
    sk = [0.05, 0.1, 0.25, 0.4, 0.6]
    ctx = DesignContext(n_doses=5, target=0.25, cohort_size=3, max_n=24, start_dose=0)
    state = state_from_outcomes("1NNN 2NNN", 5)
    free = build({"type": "crm", "skeleton": sk, "restrict": False}, ctx)
    capped = build({"type": "crm", "skeleton": sk, "restrict": False,
                    "rules": [{"no_skip": True}]}, ctx)
    assert free.decide(state).dose == 4
    assert capped.decide(state).dose == 2
    assert build({"type": "crm", "skeleton": sk, "rules": [{"no_skip": False}]}, ctx) == \
        build({"type": "crm", "skeleton": sk}, ctx)


def test_stop_when_too_toxic():
    # 2/3 at dose 1: Pr(p > 0.3) = P(Bin(4, 0.3) <= 2) = 0.2401 + 0.4116 + 0.2646 = 0.9163
    # > 0.9: stop, no MTD; 1/3: P(Bin(4, 0.3) <= 1) = 0.6517: continue
    d = build({"type": "boin", "rules": [ALL_RULES[1]]})
    dec = d.decide(state_from_outcomes("1TNT", K))
    assert dec.stop and dec.stop_reason is StopReason.LOWEST_DOSE_TOO_TOXIC
    assert d.select_mtd(state_from_outcomes("1TNT", K)) is None
    assert not d.decide(state_from_outcomes("1TNN", K)).stop
    # the plain BOIN de-escalation rule keeps dose 1 (not eliminated: 0.9163 < 0.95)
    assert build({"type": "boin"}).decide(state_from_outcomes("1TNT", K)).dose == 0


def test_stop_n_at_dose_rule_is_the_design_key():
    assert build({"type": "boin", "rules": [{"stop_n_at_dose": 9}]}) == \
        build({"type": "boin", "stop_n_at_dose": 9})


STAY_AT_9 = "1NNN 2NNN 2NNT 2NTN"   # [BOIN] 2/9 at dose 2: stay (escalate <= 1, de-escalate >= 3)


def test_demand_n_at_dose_overrides_a_stop_until_the_recommended_dose_has_m():
    plain = build({"type": "boin", "rules": [{"stop_n_at_dose": 9}]})
    state = state_from_outcomes(STAY_AT_9, K)
    dec = plain.decide(state)
    assert dec.stop and dec.stop_reason is StopReason.N_AT_DOSE
    # the recommended dose is dose 2 (isotonic estimates 0.016, 2.05/9.1 = 0.225)
    assert plain.select_mtd(state) == 1
    demand = build({"type": "boin", "rules": [{"stop_n_at_dose": 9}, {"demand_n_at_dose": 12}]})
    dec = demand.decide(state)
    assert not dec.stop and (dec.dose, dec.cohort_size) == (1, 3)
    # [BOIN] 2/12 at dose 2: escalate (<= 2) to dose 3, which has no patient: no stop either
    assert demand.decide(state_from_outcomes(STAY_AT_9 + " 2NNN", K)).dose == 2
    # a demand already met lets the stop stand
    met = build({"type": "boin", "rules": [{"stop_n_at_dose": 9}, {"demand_n_at_dose": 9}]})
    assert met.decide(state).stop


def test_demand_n_at_dose_never_delays_a_safety_stop():
    d = build({"type": "boin", "rules": [{"demand_n_at_dose": 12}]})
    dec = d.decide(state_from_outcomes("1TTT", K))        # dose 1 eliminated (3/3)
    assert dec.stop and dec.stop_reason is StopReason.LOWEST_DOSE_TOO_TOXIC
    d = build({"type": "boin", "rules": [{"demand_n_at_dose": 12}, ALL_RULES[1]]})
    assert d.decide(state_from_outcomes("1TNT", K)).stop


def test_demand_n_at_dose_reproduces_escalation_example():
    # [ESCDN] composed in Python in escalation's order (demand outside stop_at_n)
    crm = CRM(n_doses=5, target=0.25, skeleton=(0.05, 0.1, 0.25, 0.4, 0.6), cohort_size=3,
              restrict=False)
    d = DemandNAtDose(base=StopAtN(base=crm, n=12), n=9)
    assert not d.decide(state_from_outcomes("1TNN 1NNN 2NTN 2TNN", 5)).stop
    fit4 = state_from_outcomes("1TNN 1NNN 2NTN 2TNN 2NNN", 5)
    assert d.decide(fit4).stop and d.select_mtd(fit4) == 1


def test_rules_wrap_in_the_documented_order_whatever_the_list_order():
    a = build({"type": "boin", "rules": ALL_RULES})
    b = build({"type": "boin", "rules": ALL_RULES[::-1]})
    assert a == b
    assert chain(a) == [StopAtN, StopWhenTooToxic, DemandNAtDose, StopWhenNAtDose, NoSkipping,
                        BOIN]
    assert describe_rules(get_entry("boin").spec_model.model_validate(
        {"type": "boin", "rules": ALL_RULES[::-1]}).rules) == (
        "no skipping when escalating; stop when the next dose has 9 patients; no stop (except "
        "for safety) before 6 patients at the recommended dose; stop if Pr(DLT rate at dose 1 "
        "> 0.3) > 0.9 (n >= 3)")


def test_wrapped_design_keeps_its_options_readable():
    d = build({"type": "boin", "rules": ALL_RULES})
    assert d.target == 0.25 and d.inner.target == 0.25 and d.max_n == MAX_N


def test_no_rules_builds_the_design_as_before():
    assert chain(build({"type": "boin"})) == [StopAtN, BOIN]
    assert build({"type": "boin", "rules": []}) == build({"type": "boin"})


# ----------------------------------------------------------------------------- contract
def rule_cases(time_to_event_only=False):
    out = []
    for t, entry in registry().items():
        if time_to_event_only and not entry.time_to_event:
            continue
        raw = {"type": t, **EXTRA.get(t, {}), "rules": ALL_RULES}
        if t == "3+3":
            raw["max_n"] = MAX_N
        out.append(pytest.param(Case(t, raw, CTX), id=t))
        if entry.time_to_event:
            out.append(pytest.param(Case(t, raw, CTX1), id=f"{t}-cohorts-of-1"))
    return out


@pytest.mark.parametrize("case", rule_cases())
@SET
@given(draws=draws)
def test_contract_with_every_rule(case, draws):
    """The contract suite's checks (tests/test_contract.py) on every design with all four
    rules: valid decisions, no skipping, eliminated doses unused, n <= max_n, the same
    decisions after pickling and rebuilding."""
    clones = [pickle.loads(pickle.dumps(case.design)), case.rebuilt()]
    state, _, history = walk(case.design, draws)
    for s in history:
        check_decision(case, s, case.design.decide(s), clones)


@pytest.mark.parametrize("case", rule_cases(time_to_event_only=True))
@SET
@given(evts=events)
def test_contract_with_every_rule_and_pending_patients(case, evts):
    clones = [pickle.loads(pickle.dumps(case.design)), case.rebuilt()]
    for _, state, dec in pending_walk(case.design, evts):
        check_decision(case, state, dec, clones)


@SET
@given(draws=st.lists(st.integers(0, 11), min_size=0, max_size=14))
def test_too_toxic_dose_one_is_never_treated_after_the_rule_fires(draws):
    case = Case("crm", {"type": "crm", **EXTRA["crm"], "rules": [ALL_RULES[1]]}, CTX)
    rule = case.design.base
    _, _, history = walk(case.design, draws)
    for s in history:
        if rule.too_toxic(s):
            assert case.design.decide(s).stop


# ----------------------------------------------------------------------------- files, report
def test_resolved_scenario_keeps_rules_and_omits_them_when_absent():
    sc = scenario("{type: boin, rules: [{no_skip: true}, {demand_n_at_dose: 6}]}",
                  "{type: crm, skeleton: [0.1, 0.17, 0.25, 0.35]}")
    res = sc.resolved()
    assert res["designs"][0]["rules"] == [{"no_skip": True}, {"demand_n_at_dose": 6}]
    assert "rules" not in res["designs"][1]
    again = load_scenario_text(yaml.safe_dump(res), "resolved.yaml")
    assert [d.design for d in again.designs] == [d.design for d in sc.designs]


def test_report_describes_the_rules(tmp_path):
    from escalation_sim.report import render_report
    sc = scenario("{type: boin, rules: [{demand_n_at_dose: 6}, {no_skip: true}]}")
    html = render_report(simulate(sc, n_trials=200, seed=1, n_jobs=1))
    assert ("rules: no skipping when escalating; no stop (except for safety) before 6 "
            "patients at the recommended dose") in html


def test_crm_safety_stop_scenario():
    # the bundled example: CRM with a safety stop at dose 1 (golden snapshot in
    # tests/golden/golden.json); the rule is the outermost wrapper below max_n
    sc = load_scenario(ROOT / "scenarios" / "crm_safety_stop.yaml")
    item = sc.design("crm-safety")
    assert chain(item.design)[:2] == [StopAtN, StopWhenTooToxic]
    assert item.design.base.confidence == 0.9 and item.design.base.dose == 0


def test_table_command_names_the_conflicting_rule():
    rc, out, err = cli("table", "--design", "boin", "--target", 0.3, "--option",
                       "rules=[{demand_n_at_dose: 50}]")
    assert rc == 2 and out == ""
    assert err.strip() == ("escalation-sim table: error: --option rules[0].demand_n_at_dose: "
                           "must not exceed max_n (30): the trial ends at max_n, so the demand "
                           "could never be met (got 50)")


def test_table_command_notes_rules_a_boundary_table_does_not_use():
    rc, out, err = cli("table", "--design", "mtpi2", "--target", 0.3, "--option",
                       "rules=[{no_skip: true}]")
    assert rc == 0 and "--option rules: not used" in err


@pytest.mark.parametrize("type_name, outcomes, next_dose", [
    # target 0.25, "1NNN 2NTN": 1/3 at dose 2.  Keyboard de-escalates (its table for 0.25:
    # de-escalate if >= 1 of 3; tests/test_keyboard.py [NOTES]); i3+3 stays (1/3 is above the
    # EI [0.2, 0.3] but 0/3 is below it; tests/test_i3plus3.py)
    ("keyboard", "1NNN 2NTN", 1), ("i3+3", "1NNN 2NTN", 2),
])
def test_next_dose_command_for_the_interval_designs(tmp_path, type_name, outcomes, next_dose):
    import json
    f = tmp_path / "s.yaml"
    f.write_text(SC.format(designs=f'  - {{type: "{type_name}"}}'))
    rc, out, err = cli("next-dose", f, "--outcomes", outcomes, "--json")
    assert rc == 0 and json.loads(out)["next_dose"] == next_dose
