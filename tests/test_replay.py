"""Replay of a real trial's patient log (issue 15): the seed trial, time-to-event decision
points on the day's data, bad rows, outputs."""
import datetime as dt
import json

import pandas as pd
import pytest

import escalation_sim as es
from escalation_sim.inputs.patient_log import PatientLogError, parse_patient_log
from escalation_sim.run.replay import patient_status

SEED_LOG = "scenarios/relma_cel_sle_log.csv"
SEED_SC = "scenarios/relma_cel_sle.yaml"


@pytest.fixture
def seed(root):
    return es.replay(root / SEED_LOG, scenario=root / SEED_SC)


def _rows(res, design):
    return [r for r in res.rows if r["design"] == design]


def test_seed_log_is_the_published_allocation(root):
    # Shu et al. 2025: 8 patients 2023-03-28 .. 2024-04-08, 3 / 2 / 2 / 1 at DL1..DL4, no DLT
    log = pd.read_csv(root / SEED_LOG, comment="#")
    assert log["dose"].value_counts().sort_index().tolist() == [3, 2, 2, 1]
    assert log["enrolled"].min() == "2023-03-28" and log["enrolled"].max() == "2024-04-08"
    assert log["dlt_date"].isna().all()
    assert "ASSUMPTIONS" in (root / SEED_LOG).read_text()


def test_seed_replay_classic_designs(seed):
    # BOIN, target 0.25 (lambda_e = 0.197): 0/3 and 0/2 escalate, so BOIN follows the trial
    # cohort by cohort; at the top dose it stays.  Its select.mtd on 0/3, 0/2, 0/2, 0/1:
    # isotonic estimates 0.016, 0.024, 0.024, 0.045, all below 0.25: the top dose.
    boin = _rows(seed, "boin")
    assert [r["trial_dose"] for r in boin] == [1, 2, 3, 4, None]
    assert [r["next_dose"] for r in boin] == [1, 2, 3, 4, 4]
    assert not any(r["deviation"] for r in boin)
    assert boin[-1]["mtd_if_stopped_now"] == 4
    # 3+3 needs 3 patients at a dose before escalating: the cohorts of 2 at DL2 and DL3
    # escalated early by its rule (it asks for one more patient, at the same dose)
    tpt = _rows(seed, "3+3")
    assert [r["next_dose"] for r in tpt] == [1, 2, 2, 3, 4]
    assert [r["deviation"] for r in tpt] == [False, False, True, True, False]
    assert tpt[2]["deviation_detail"] == "dose 3 above the design's dose 2"
    # every classic decision here came after the previous cohort's windows had closed
    assert all(r["pending_at_decision"] == 0 for r in boin)


def test_seed_replay_time_to_event_designs(seed, root):
    # a row per enrollment (8) plus the cut-off; as in the calendar engine, a decision for a
    # cohort of 3 opens 3 slots that the next patients at that dose fill without a new
    # decision: P02, P03 (DL1), P05 (DL2) and P07 (DL3) filled slots
    tb = _rows(seed, "tite-boin")
    assert len(tb) == 9 and [r["after_patients"] for r in tb] == list(range(9))
    assert [r["asked"] for r in tb] == [True, False, False, True, False, True, False, True,
                                        True]
    assert not any(r["deviation"] for r in tb)
    # with cohorts of 1 each enrollment is a decision: P02 enrolled 2023-04-25 while P01
    # (infused 2023-05-04) was pending: 1 of 1 patients pending > 1/2 -> TITE-BOIN suspends
    # accrual (Yuan et al. 2018, Clin Cancer Res 24:4921, pending-patient rule)
    one = es.replay(root / SEED_LOG, "tite-boin", target=0.25, n_doses=4, window_days=28)
    assert one.rows[1]["recommendation"] == "suspend" and one.rows[1]["deviation"]
    assert one.rows[1]["pending"] == 1 and one.rows[1]["asked"]


def test_patient_status_followup_fraction():
    text = ("id,dose,enrolled,infused,dlt_date,end_date\n"
            "A,1,2023-01-01,2023-01-10,,\n")
    p = parse_patient_log(text, "x.csv", 3, 28).patients[0]
    assert patient_status(p, dt.date(2023, 1, 5), 28) == ("pending", 0.0)   # not infused
    assert patient_status(p, dt.date(2023, 1, 24), 28) == ("pending", 0.5)  # 14 / 28 days
    assert patient_status(p, dt.date(2023, 2, 7), 28) == ("complete", 1.0)  # day 28


def _tite_log(last_days):
    """Target 0.2, window 30: dose 1 0/3, dose 2 1/6 complete, then 3 pending at dose 2
    followed ``last_days`` days when patient 13 enrolls at dose 3 on 2023-05-11."""
    rows = ["id,dose,enrolled,infused,dlt_date,end_date"]
    for i in range(3):
        rows.append(f"A{i},1,2023-01-0{i + 1},2023-01-0{i + 1},,")
    for i in range(6):
        dlt = "2023-03-10" if i == 0 else ""
        rows.append(f"B{i},2,2023-03-0{i + 1},2023-03-0{i + 1},{dlt},")
    for i, days in enumerate(last_days):
        day = dt.date(2023, 5, 11) - dt.timedelta(days=days)
        rows.append(f"C{i},2,{day},{day},,")
    rows.append("D0,3,2023-05-11,,,")
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("days,expected", [((10, 10, 4), 3), ((10, 10, 2), 2)])
def test_tite_boin_replay_on_the_day_data(tmp_path, days, expected):
    # Yuan et al. (2018) table, target 0.2: 9 treated, 1 DLT, 3 pending: escalate iff
    # STFT >= 0.77 (24 / 30 = 0.80 escalates; 22 / 30 = 0.73 stays)
    f = tmp_path / "log.csv"
    f.write_text(_tite_log(days))
    res = es.replay(f, "tite-boin", target=0.2, n_doses=3, window_days=30)
    row = res.rows[12]
    assert row["data"] == "0/3 1/9 0/0" and row["pending"] == 3
    assert row["next_dose"] == expected and row["trial_dose"] == 3
    assert row["deviation"] == (expected != 3)


BAD = """# comment
id,dose,enrolled,infused,dlt_date,end_date,dropout
P1,5,2023-01-01,2023-01-10,,2023-02-07,
P2,1,2023-01-05,2023-01-01,,,
P2,1,2023-01-06,2023-01-10,2023-01-20,2023-01-15,
P4,1,2023-01-07,2023-01-10,,2023-01-20,
P5,1,2023-13-07,,,,maybe
P6,1,2023-01-07,2023-01-10,2023-03-01,,
"""


def test_bad_rows_name_line_and_column(tmp_path, cli, root):
    f = tmp_path / "bad.csv"
    f.write_text(BAD)
    out = tmp_path / "out"
    r = cli("replay", f, "--scenario", root / SEED_SC, "--out", out)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert f"{f}:3: dose: unknown dose: expected a dose level from 1 to 4 (got '5')" in lines
    assert f"{f}:4: infused: infusion before enrollment (2023-01-05) (got '2023-01-01')" in lines
    assert f"{f}:5: id: duplicate id (also line 4) (got 'P2')" in lines
    assert f"{f}:5: dlt_date: DLT after the end of follow-up (2023-01-15) (got '2023-01-20')" \
        in lines
    assert any(x.startswith(f"{f}:6: end_date: follow-up ended on day 10") for x in lines)
    assert f"{f}:7: enrolled: expected a date YYYY-MM-DD (got '2023-13-07')" in lines
    assert f"{f}:7: dropout: expected yes or no (got 'maybe')" in lines
    assert any(x.startswith(f"{f}:8: dlt_date: DLT on day 50 after infusion") for x in lines)
    assert not out.exists()  # nothing written


def test_bad_header(tmp_path):
    with pytest.raises(PatientLogError) as exc:
        parse_patient_log("id,dose,enroled\n", "h.csv", 4, 28)
    assert "h.csv:1: enroled: unknown column" in str(exc.value)
    assert "h.csv:1: enrolled: required column is missing" in str(exc.value)


def test_replay_command_outputs(tmp_path, cli, root):
    out = tmp_path / "out"
    r = cli("replay", root / SEED_LOG, "--scenario", root / SEED_SC, "--design", "boin",
            "--design", "3+3", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "DEVIATION: dose 3 above the design's dose 2" in r.stdout
    tab = pd.read_csv(out / "replay.csv")
    assert set(tab["design"]) == {"boin", "3+3"} and len(tab) == 10
    assert len(pd.read_csv(out / "patients.csv")) == 8
    assert (out / "swimmer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = cli("replay", root / SEED_LOG, "--design", "boin", "--target", 0.25, "--n-doses", 4,
            "--cohort-size", 3, "--window", 28, "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["cohorts"][0] == ["P01", "P02", "P03"]
    r = cli("replay", root / SEED_LOG, "--scenario", root / SEED_SC, "--target", 0.3)
    assert r.returncode == 2 and "--target: describe the designs in" in r.stderr
    r = cli("replay", root / SEED_LOG, "--scenario", root / SEED_SC, "--as-of", "2024-13-01")
    assert r.returncode == 2 and "--as-of: expected a date" in r.stderr
    # a cut-off: the log as known that day (P08 not enrolled yet, P07 not infused yet)
    r = cli("replay", root / SEED_LOG, "--scenario", root / SEED_SC, "--design", "boin",
            "--as-of", "2024-01-01", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and len(doc["patients"]) == 7
    p07 = doc["patients"][-1]
    assert p07["patient"] == "P07" and p07["infused"] is None and p07["status"] == "pending"
    # BOIN's last decision: P06's window (infused 2023-12-05) closes on 2024-01-02, so DL3
    # has no complete patient yet; the last complete data are 0/2 at DL2: escalate to DL3
    last = doc["rows"][-1]
    assert last["data"] == "0/3 0/2 0/0 0/0" and last["next_dose"] == 3
    assert last["pending_at_decision"] == 2
    r = cli("replay", root / SEED_LOG, "--scenario", root / SEED_SC, "--as-of", "2020-01-01")
    assert r.returncode == 2 and "no patients enrolled by the data cut-off" in r.stderr


def test_report_section(root, tmp_path, cli):
    from escalation_sim.report import SECTION_IDS, render_report
    res = es.exact_oc("boin", root / SEED_SC)
    rp = es.replay(root / SEED_LOG, "boin", scenario=root / SEED_SC)
    page = render_report(res, replay=rp)
    assert '<section id="real-trial-replay">' in page and 'href="#real-trial-replay"' in page
    assert "swimmer plot of the real trial" in page
    assert "real-trial-replay" not in render_report(res)
    assert "real-trial-replay" not in SECTION_IDS  # the sections every report has
    f = tmp_path / "bad.csv"
    f.write_text(BAD)
    out = tmp_path / "r.html"
    r = cli("report", root / SEED_SC, "--design", "boin", "--replay", f, "-o", out,
            "--n-trials", 10, "--no-logistics")
    assert r.returncode == 2 and f"--replay: {f}:3: dose: unknown dose" in r.stderr
    assert not out.exists()


def test_readme_shows_the_seed_replay_as_printed(root, cli, monkeypatch):
    # the README's replay of the seed trial is the command's output, verbatim
    monkeypatch.chdir(root)
    cmd = "$ escalation-sim replay scenarios/relma_cel_sle_log.csv --scenario " \
          "scenarios/relma_cel_sle.yaml\n"
    readme = (root / "README.md").read_text(encoding="utf-8")
    shown = readme.split(cmd, 1)[1].split("```", 1)[0]
    r = cli("replay", SEED_LOG, "--scenario", SEED_SC)
    assert r.returncode == 0, r.stderr
    assert [x.rstrip() for x in shown.strip("\n").splitlines()] == \
        [x.rstrip() for x in r.stdout.strip("\n").splitlines()]


def test_dropout_and_dose_received(tmp_path):
    # a drop-out without a DLT is not evaluable (left out); a patient is analysed at the dose
    # received; the explicit cohort column groups patients
    f = tmp_path / "log.csv"
    f.write_text("id,dose,dose_received,enrolled,infused,dlt_date,end_date,dropout,cohort\n"
                 "A,1,,2023-01-01,2023-01-02,,2023-01-10,yes,c1\n"
                 "B,1,,2023-01-01,2023-01-02,,,,c1\n"
                 "C,1,,2023-01-01,2023-01-02,2023-01-20,,,c1\n"
                 "D,2,1,2023-03-01,2023-03-02,,,,c2\n")
    res = es.replay(f, "3+3", target=0.25, n_doses=3, window_days=28,
                    as_of=dt.date(2023, 6, 1))
    assert res.cohorts == [["A", "B", "C"], ["D"]]
    # before cohort 2: B (0) and C (DLT) evaluable at dose 1, A dropped out: 1/2
    assert res.rows[1]["data"] == "1/2 0/0 0/0"
    # D was assigned dose 2 but received dose 1: counted at dose 1; the trial's action is
    # the dose assigned
    assert res.rows[1]["trial_dose"] == 2
    assert res.rows[2]["data"] == "1/3 0/0 0/0"
