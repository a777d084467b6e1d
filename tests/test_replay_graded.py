"""Replay of graded patient logs (issue 15 item 3 with issue 12's graded outcomes):
``TYPE_grade`` / ``TYPE_onset`` columns, DLTs from the scenario's ``dlt`` rule, gBOIN and
TITE-gBOIN on the worst grade in the window, bad rows.

Hand-worked constants used below (cart_crs_icans.yaml: gBOIN / TITE-gBOIN target 0.26,
default scores 0 / 0 / 0.5 / 1 / 1.5 for grades 0-4, i.e. units 0, 0, 1, 2, 3 thirds):
phi1 = 0.6 x 0.26 = 0.156, phi2 = 1.4 x 0.26 = 0.364,
lambda_e = ln(0.844 / 0.74) / ln(0.26 x 0.844 / (0.156 x 0.74)) = 0.13150 / 0.64233 = 0.2047,
lambda_d = ln(0.74 / 0.636) / ln(0.364 x 0.74 / (0.26 x 0.636)) = 0.15145 / 0.48792 = 0.3104.
BOIN, target 0.25: lambda_e = 0.197, lambda_d = 0.298 (Liu & Yuan 2015, table 1).
"""
import datetime as dt

import pytest

import escalation_sim as es
from escalation_sim.inputs.patient_log import PatientLogError, parse_patient_log

SC = "scenarios/cart_crs_icans.yaml"
EXAMPLE = "scenarios/cart_crs_icans_log.csv"
TYPES, RULE = ("CRS", "ICANS"), (("CRS", 3), ("ICANS", 3))

# DL1: grades 1, 2, none; DL2: CRS 3 on day 2 (B1), CRS 1 then ICANS 3 on day 7 (B2), B3 no
# event and still in its window at the last date, 2023-02-20 (infused 02-14: day 6)
LOG = """id,dose,enrolled,infused,crs_grade,crs_onset,icans_grade,icans_onset,end_date
A1,1,2023-01-02,2023-01-05,1,2023-01-07,,,2023-02-02
A2,1,2023-01-03,2023-01-06,2,2023-01-08,,,2023-02-03
A3,1,2023-01-04,2023-01-07,,,,,2023-02-04
B1,2,2023-02-10,2023-02-12,3,2023-02-14,,,
B2,2,2023-02-11,2023-02-13,1,2023-02-15,3,2023-02-20,
B3,2,2023-02-12,2023-02-14,,,,,
"""


def _rows(res, design):
    return [r for r in res.rows if r["design"] == design]


@pytest.fixture
def log_file(tmp_path):
    f = tmp_path / "graded.csv"
    f.write_text(LOG)
    return f


def test_dlts_follow_the_dlt_rule():
    log = parse_patient_log(LOG, "g.csv", 4, 28, tox_types=TYPES, dlt_rule=RULE)
    dlt = {p.id: p.dlt_date for p in log.patients}
    # grade >= 3 of either type inside the window: B1 (CRS 3, 2023-02-14) and B2 (ICANS 3,
    # 2023-02-20); CRS 1 / 2 are no DLT
    assert dlt == {"A1": None, "A2": None, "A3": None, "B1": dt.date(2023, 2, 14),
                   "B2": dt.date(2023, 2, 20), "B3": None}
    assert log.types == TYPES and log.graded
    # a rule at CRS >= 2 makes A2's CRS 2 (2023-01-08) a DLT as well
    loose = parse_patient_log(LOG, "g.csv", 4, 28, tox_types=TYPES,
                              dlt_rule=[("CRS", 2), ("ICANS", 3)])
    assert loose.patients[1].dlt_date == dt.date(2023, 1, 8)


def test_late_event_is_no_dlt_and_not_scored():
    # ICANS 3 on day 32 after the infusion (2023-01-01 + 32 days): outside the 28-day window
    text = ("id,dose,enrolled,infused,ICANS_grade,ICANS_onset,end_date\n"
            "L,1,2023-01-01,2023-01-01,3,2023-02-02,2023-02-05\n")
    p = parse_patient_log(text, "l.csv", 3, 28, tox_types=TYPES).patients[0]
    assert p.dlt_date is None and p.worst_grade(dt.date(2023, 2, 5), 28) == 0
    assert p.events[0].grade == 3     # kept as an event


def test_given_dlt_date_must_agree():
    head = "id,dose,enrolled,infused,CRS_grade,CRS_onset,dlt_date,end_date\n"
    ok = head + "P,1,2023-01-01,2023-01-02,3,2023-01-04,2023-01-04,\n"
    assert parse_patient_log(ok, "a.csv", 3, 28, tox_types=TYPES).patients[0].dlt_date \
        == dt.date(2023, 1, 4)
    bad = head + ("P,1,2023-01-01,2023-01-02,3,2023-01-04,2023-01-05,\n"
                  "Q,1,2023-01-01,2023-01-02,2,2023-01-04,2023-01-05,\n")
    with pytest.raises(PatientLogError) as exc:
        parse_patient_log(bad, "a.csv", 3, 28, tox_types=TYPES)
    assert exc.value.problems == [
        "a.csv:2: dlt_date: disagrees with the grades: the DLT rule (CRS grade >= 3, ICANS "
        "grade >= 3, onset within 28 days) gives a DLT on 2023-01-04 (CRS grade 3) "
        "(got '2023-01-05')",
        "a.csv:3: dlt_date: disagrees with the grades: the DLT rule (CRS grade >= 3, ICANS "
        "grade >= 3, onset within 28 days) gives no DLT (got '2023-01-05')"]


BAD = """id,dose,enrolled,infused,CRS_grade,CRS_onset,ICANS_grade,ICANS_onset,end_date
P1,1,2023-01-01,2023-01-05,6,2023-01-07,,,
P2,1,2023-01-01,2023-01-05,2,2023-01-04,,,
P3,1,2023-01-01,2023-01-05,2,2023-02-10,,,2023-02-03
P4,1,2023-01-01,2023-01-05,,,2,,
P5,1,2023-01-01,2023-01-05,0,2023-01-07,,,
P6,1,2023-01-01,2023-01-05,-1,,,,
"""


def test_bad_graded_rows_cli(tmp_path, cli, root):
    f = tmp_path / "bad.csv"
    f.write_text(BAD)
    out = tmp_path / "out"
    r = cli("replay", f, "--scenario", root / SC, "--out", out)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        f"{f}:2: crs_grade: expected a grade from 0 to 5 (got '6')",
        f"{f}:3: crs_onset: onset before the infusion (2023-01-05) (got '2023-01-04')",
        f"{f}:4: crs_onset: onset after the end of follow-up (2023-02-03) (got '2023-02-10')",
        f"{f}:5: icans_onset: ICANS grade 2 needs its onset date (got '')",
        f"{f}:6: crs_grade: an onset date (2023-01-07) needs a grade from 1 to 5 (got '0')",
        f"{f}:7: crs_grade: expected a grade from 0 to 5 (got '-1')"]
    assert not out.exists()


def test_unknown_type_column(tmp_path, cli, root):
    f = tmp_path / "t.csv"
    f.write_text("id,dose,enrolled,infused,HLH_grade,HLH_onset,CRS_grade\n"
                 "P1,1,2023-01-01,2023-01-05,,,\n")
    r = cli("replay", f, "--scenario", root / SC)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        f"{f}:1: hlh_grade: unknown toxicity type 'hlh' (known types: CRS, ICANS) "
        "(got 'hlh_grade')",
        f"{f}:1: hlh_onset: unknown toxicity type 'hlh' (known types: CRS, ICANS) "
        "(got 'hlh_onset')",
        f"{f}:1: crs_onset: a crs_grade column needs a crs_onset column "
        "(got id, dose, enrolled, infused, hlh_grade, hlh_onset, crs_grade)"]
    # a scenario without graded truth and no --toxicity-types: every grade column is unknown
    r = cli("replay", f, "--design", "boin", "--target", "0.25", "--n-doses", "4",
            "--window", "28")
    assert r.returncode == 2 and "crs_grade: unknown toxicity type 'crs' (known types: " \
        "none: give the toxicity types" in r.stderr


def test_graded_replay_hand_worked(log_file, root):
    res = es.replay(log_file, scenario=root / SC)
    assert res.skipped == []
    # BOIN on the derived DLTs; classic designs count complete patients at the cut-off
    # (2023-02-20): B1 and B2 had DLTs, B3 is still in its window -> dose 2: 2/2; 2/2 = 1.0
    # >= 0.298: de-escalate
    boin = _rows(res, "boin")
    assert [r["data"] for r in boin] == ["0/0 0/0 0/0 0/0", "0/3 0/0 0/0 0/0",
                                         "0/3 2/2 0/0 0/0"]
    assert boin[-1]["next_dose"] == 1
    # gBOIN: DL1 worst grades 1, 2, 0 -> 0 + 0.5 + 0 = 0.5 / 1.5 = 0.333 (nETS), mean 0.111
    # <= 0.2047: escalate.  Cut-off: B1 (CRS 3: 1/1.5 = 0.667) and B2 (ICANS 3 started on
    # the cut-off day: 0.667) scored; B3 not yet (no event, window open): 1.333 / 2 = 0.667
    # >= 0.3104: de-escalate
    g = _rows(res, "gboin")
    assert [r["data"] for r in g] == ["0/0 0/0 0/0 0/0", "0.333/3 0/0 0/0 0/0",
                                      "0.333/3 1.333/2 0/0 0/0"]
    assert [r["next_dose"] for r in g] == [1, 2, 1]
    assert all(r["outcome"] == "score" for r in g)
    # TITE-gBOIN at the cut-off: n = 3 at dose 2 (B3 pending, followed 6 of 28 days),
    # mu = 1.333 / (3 - 1 + 6/28) = 0.602 >= 0.3104: de-escalate
    tg = _rows(res, "tite-gboin")
    assert tg[-1]["data"] == "0.333/3 1.333/3 0/0 0/0" and tg[-1]["pending"] == 1
    assert tg[-1]["next_dose"] == 1 and "mu 0.6022" in tg[-1]["reason"]


def test_tite_gboin_sees_an_event_from_its_onset(log_file, root):
    # on 2023-02-19 B2's ICANS 3 (onset 02-20) has not started and its CRS 1 scores 0, so B2
    # is still pending: at dose 2 B1 scored 0.667, B2 and B3 pending -> 2 of 3 pending > 0.5
    # x 3: TITE-gBOIN suspends accrual; gBOIN (complete data) counts B1 alone: 0.667 / 1
    # >= 0.3104: de-escalate
    res = es.replay(log_file, scenario=root / SC, as_of=dt.date(2023, 2, 19))
    tg = _rows(res, "tite-gboin")[-1]
    assert tg["data"] == "0.333/3 0.667/3 0/0 0/0" and tg["pending"] == 2
    assert tg["recommendation"] == "suspend"
    g = _rows(res, "gboin")[-1]
    assert g["data"] == "0.333/3 0.667/1 0/0 0/0" and g["next_dose"] == 1
    # BOIN sees B1's DLT only (B2's has not happened yet): 1/1 >= 0.298: de-escalate
    assert _rows(res, "boin")[-1]["data"] == "0/3 1/1 0/0 0/0"


def test_command_line_types_without_a_scenario(log_file, cli):
    # gBOIN from options only, same target and default scores as the scenario: same data and
    # decisions as test_graded_replay_hand_worked
    r = cli("replay", log_file, "--design", "gboin", "--target", "0.26", "--n-doses", "4",
            "--cohort-size", "3", "--window", "28", "--toxicity-types", "CRS,ICANS", "--json")
    assert r.returncode == 0, r.stderr
    import json
    rows = json.loads(r.stdout)["rows"]
    assert [x["next_dose"] for x in rows] == [1, 2, 1]
    assert rows[-1]["data"] == "0.333/3 1.333/2 0/0 0/0"
    bad = cli("replay", log_file, "--design", "gboin", "--target", "0.26", "--n-doses", "4",
              "--window", "28", "--toxicity-types", "CRS,ICANS", "--dlt-rule", "CRS:7")
    assert bad.returncode == 2 and "--dlt-rule: expected TYPE:MIN_GRADE" in bad.stderr


def test_scenario_types_refuse_command_line_types(log_file, cli, root):
    r = cli("replay", log_file, "--scenario", root / SC, "--toxicity-types", "CRS")
    assert r.returncode == 2 and "come from" in r.stderr


def test_dlt_only_log_still_skips_score_designs(root, cli):
    r = cli("replay", root / "scenarios/relma_cel_sle_log.csv", "--scenario", root / SC)
    assert r.returncode == 0
    assert "design 'gboin' skipped" in r.stderr and "design 'tite-gboin' skipped" in r.stderr


def test_bundled_graded_example(root):
    # the example's header comment: one DLT (E07, CRS 3 on 2025-07-30); E09's ICANS 3 is a
    # late event.  gBOIN: DL2 worst grades 2, 2, 0 -> (0.5 + 0.5) / 1.5 = 0.667 / 3, mean
    # 0.222 between 0.2047 and 0.3104: stay at DL2 where the trial escalated (a deviation);
    # BOIN: 0/3 escalates.  At the cut-off DL3: E07 grade 3 (0.667), E08 grade 1 (0), E09
    # late (0): mean 0.222 -> gBOIN stays; BOIN 1/3 = 0.333 >= 0.298 -> de-escalates
    res = es.replay(root / EXAMPLE, scenario=root / SC)
    assert [p["patient"] for p in res.patients if p["dlt"]] == ["E07"]
    g, b = _rows(res, "gboin"), _rows(res, "boin")
    assert [r["next_dose"] for r in g] == [1, 2, 2, 3]
    assert [r["deviation"] for r in g] == [False, False, True, False]
    assert [r["next_dose"] for r in b] == [1, 2, 3, 2]
    assert "INVENTED FOR ILLUSTRATION" in (root / EXAMPLE).read_text()


def test_drop_out_with_a_low_grade_is_not_evaluable(tmp_path, root):
    # D1 had CRS 2 (0.5 / 1.5 = 0.333) on 2023-01-04, then dropped out on 2023-01-10 (day 8)
    # without a DLT: scored (no longer pending) from its onset until the drop-out, then not
    # evaluable, as a drop-out of a DLT design.  gBOIN on D2 alone (window over, grade 0): 0/1
    text = ("id,dose,enrolled,infused,CRS_grade,CRS_onset,end_date,dropout\n"
            "D1,1,2023-01-01,2023-01-02,2,2023-01-04,2023-01-10,yes\n"
            "D2,1,2023-01-01,2023-01-02,,,2023-01-30,\n")
    f = tmp_path / "d.csv"
    f.write_text(text)
    before = es.replay(f, scenario=root / SC, design="tite-gboin", as_of=dt.date(2023, 1, 9))
    assert before.rows[-1]["data"] == "0.333/2 0/0 0/0 0/0" and before.rows[-1]["pending"] == 1
    after = es.replay(f, scenario=root / SC, design="gboin")
    assert after.rows[-1]["data"] == "0/1 0/0 0/0 0/0"


def test_command_line_types_with_a_binary_scenario(root, cli):
    # relma_cel_sle.yaml has a binary truth, so the types come from --toxicity-types; its
    # BOIN (target 0.25) sees the example's one derived DLT: 1/3 at DL3 at the cut-off
    r = cli("replay", root / EXAMPLE, "--scenario", root / "scenarios/relma_cel_sle.yaml",
            "--design", "boin", "--toxicity-types", "CRS,ICANS", "--json")
    assert r.returncode == 0, r.stderr
    import json
    rows = json.loads(r.stdout)["rows"]
    assert rows[-1]["data"] == "0/3 0/3 1/3 0/0" and rows[-1]["next_dose"] == 2
