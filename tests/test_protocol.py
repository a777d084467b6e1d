"""Protocol-ready outputs and CLI rough edges (issue 18): percentages with SEs, stop reasons,
the study report and its document formats, progress off a terminal, and the options that
used to be ignored silently."""
import io
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from escalation_sim.results.display import (cohort_size_notes, num, pct, protocol_blocks,
                                            render_latex, render_markdown)

ROOT = Path(__file__).resolve().parents[1]
MTD3 = ROOT / "scenarios" / "standard_mtd3.yaml"


def test_pct_and_num_formatting():
    # 0.4165 -> 41.65 %, rounded half-even by the format; the SE 0.011 -> 1.1
    assert pct(0.4175, 0.011) == "41.8 (1.1)"
    assert pct(0.25) == "25.0"
    assert pct(0.0, 0.0) == "0.0" and pct(1.0, 1e-12) == "100.0"   # no SE at 0 or 100 %
    assert num(-1e-9, 1) == "0.0" and num(-0.04, 1) == "0.0"       # never "-0.0"
    assert num(-0.06, 1) == "-0.1"
    assert pct(None) == "-"


def test_terminal_table_shows_percentages_with_ses_and_explains_abbreviations(cli):
    r = cli("run", MTD3, "--n-trials", 2000, "--seed", 3, "--design", "boin", "--quiet")
    assert r.returncode == 0, r.stderr
    doc = json.loads(cli("run", MTD3, "--n-trials", 2000, "--seed", 3, "--design", "boin",
                         "--json").stdout)
    oc = doc["designs"][0]
    # run --json keeps proportions under the old keys
    assert 0 < oc["pcs"] < 1 and "se_pcs" in oc
    line = next(l for l in r.stdout.splitlines()[5:] if l.startswith("boin"))
    sel = [f"{100 * p:.1f} ({100 * s:.1f})" for p, s in
           zip(oc["p_select"], oc["se_p_select"], strict=True) if 0.0005 < p < 0.9995]
    for cell in sel:
        assert cell in line
    for word in ("PCS =", "P(over) =", "% pts > MTD =", "early stop =", "SE =", "MTD ="):
        assert word in r.stdout
    assert "Why trials stopped, % (SE)" in r.stdout
    assert "maximum sample size reached" in r.stdout


def test_oc_csv_has_stop_reasons_with_ses_that_match_the_trials(cli, tmp_path):
    out = tmp_path / "o"
    r = cli("run", MTD3, "--n-trials", 1500, "--seed", 5, "--out", out, "--keep-trials",
            "--quiet")
    assert r.returncode == 0, r.stderr
    oc = pd.read_csv(out / "oc.csv")
    trials = pd.read_csv(out / "trials.csv")
    stops = [c for c in oc.columns if c.startswith("stop_")]
    assert stops
    for _, row in oc.iterrows():
        assert sum(row[c] for c in stops) == pytest.approx(1.0)
        t = trials[trials["design"] == row["design"]]
        for c in stops:
            # the per-trial table is an independent record of each trial's stop reason
            freq = (t["stop_reason"] == c.removeprefix("stop_")).mean()
            assert row[c] == pytest.approx(freq, abs=1e-12)
            assert row["se_" + c] == pytest.approx(math.sqrt(freq * (1 - freq) / 1500),
                                                   rel=1e-9, abs=1e-15)
    # no float noise in the CSV text (e.g. 0.35600000000000004): 12 significant digits
    text = (out / "oc.csv").read_text()
    assert not re.search(r"\.\d*(0{6,}[1-9]|9{6,})", text)


def test_design_names_are_case_insensitive(cli):
    a = cli("run", MTD3, "--n-trials", 500, "--design", "BOIN", "--json")
    b = cli("run", MTD3, "--n-trials", 500, "--design", "boin", "--json")
    assert a.returncode == b.returncode == 0, a.stderr
    assert json.loads(a.stdout)["designs"] == json.loads(b.stdout)["designs"]
    assert cli("table", "--design", "BOIN", "--target", 0.3).returncode == 0


@pytest.mark.parametrize("extra", [["--n-trials", "100"], ["--seed", "3"],
                                   ["--n-jobs", "2"], ["--chunk-size", "10"]])
def test_options_exact_ignores_are_usage_errors(cli, extra):
    r = cli("run", MTD3, "--method", "exact", *extra)
    assert r.returncode == 2
    assert extra[0] in r.stderr and "exact enumeration" in r.stderr
    assert "Traceback" not in r.stderr


def test_boundaries_max_n_must_be_a_multiple_of_the_cohort_size(cli):
    r = cli("boundaries", "--target", 0.3, "--max-n", 31, "--cohort-size", 3)
    assert r.returncode == 2 and "multiple of --cohort-size 3" in r.stderr
    assert cli("boundaries", "--target", 0.3, "--max-n", 30, "--cohort-size", 3).returncode == 0


def test_run_out_into_a_study_folder_is_refused(cli, tmp_path):
    d = tmp_path / "study-out"
    d.mkdir()
    (d / "study.json").write_text("{}")
    r = cli("run", MTD3, "--n-trials", 100, "--out", d)
    assert r.returncode == 2 and "study" in r.stderr
    assert sorted(p.name for p in d.iterdir()) == ["study.json"]     # nothing written


def test_compact_without_json_is_a_usage_error(cli):
    r = cli("run", MTD3, "--n-trials", 100, "--compact")
    assert r.returncode == 2 and "--json" in r.stderr


def test_run_resume_with_more_trials_extends_the_run(cli, tmp_path):
    """Trials n..m have their own streams: 700 trials then 1000 on the same folder equal one
    run of 1000 (chunks of 300: the old last chunk 600..699 is recomputed)."""
    out = tmp_path / "ext"
    base = ("run", MTD3, "--seed", 11, "--chunk-size", 300, "--out", out, "--resume",
            "--json")
    r1 = cli(*base, "--n-trials", 700)
    assert r1.returncode == 0, r1.stderr
    r2 = cli(*base, "--n-trials", 1000)
    assert r2.returncode == 0, r2.stderr
    assert "extending the run from 700 to 1,000 trials" in r2.stderr
    fresh = cli("run", MTD3, "--seed", 11, "--n-trials", 1000, "--json")
    a, b = json.loads(r2.stdout), json.loads(fresh.stdout)
    assert a["designs"] == b["designs"] and a["paired"] == b["paired"]
    # fewer trials than the checkpoint is still refused
    r3 = cli(*base, "--n-trials", 400)
    assert r3.returncode == 2 and "n_trials was 1000, now 400" in r3.stderr


def test_interrupt_message_says_how_to_resume(cli, monkeypatch):
    import escalation_sim.run.loop as loop

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "run_plan", boom)
    r = cli("run", MTD3, "--n-trials", 100)
    assert r.returncode == 130
    assert "nothing was kept" in r.stderr and "--out DIR --resume" in r.stderr


def test_log_progress_lines_when_not_a_terminal():
    from escalation_sim.cli import _LogProgress
    buf = io.StringIO()
    log = _LogProgress(1000, "demo", interval=0.0, stream=buf)
    log.update(250)
    log.update(750)
    log.close()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("demo: 250/1,000 trials (25%)") and "left" in lines[0]
    assert lines[-1].startswith("demo: 1,000/1,000 trials (100%)") and "done in" in lines[-1]


def test_quiet_prints_no_progress(cli, monkeypatch):
    import escalation_sim.cli as c
    monkeypatch.setattr(c, "PROGRESS_LOG_INTERVAL", 0.0)
    monkeypatch.setattr(c._LogProgress.__init__, "__defaults__", (0.0, None))
    r = cli("run", MTD3, "--n-trials", 2000, "--chunk-size", 500, "--design", "boin")
    assert "trials/s" in r.stderr                      # log lines off a terminal
    r = cli("run", MTD3, "--n-trials", 2000, "--chunk-size", 500, "--design", "boin",
            "--quiet")
    assert "trials/s" not in r.stderr


# -- 3+3 and the cohort size --------------------------------------------------------------------
def test_three_plus_three_cohort_note(cli, tmp_path, scenario_yaml):
    f = tmp_path / "c1.yaml"
    f.write_text(scenario_yaml(cohort_size=1, designs=['{type: "3+3"}', "{type: boin}"]))
    out = tmp_path / "o"
    r = cli("run", f, "--n-trials", 200, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "'3+3' uses cohorts of 3" in r.stderr and "trial.cohort_size 1" in r.stderr
    assert (out / "scenario.resolved.yaml").read_text().startswith("# note: design '3+3'")
    rep = tmp_path / "r.html"
    assert cli("report", f, "-o", rep, "--n-trials", 200, "--quiet",
               "--compact").returncode == 0
    assert "uses cohorts of 3" in rep.read_text()
    f3 = tmp_path / "c3.yaml"
    f3.write_text(scenario_yaml(cohort_size=3))
    from escalation_sim.inputs.scenario import load_scenario
    assert cohort_size_notes(load_scenario(f3)) == []


# -- the multi-scenario table and the study report ----------------------------------------------
STUDY = """
name: mini
scenarios: ["{root}/scenarios/standard_mtd2.yaml", "{root}/scenarios/standard_all_toxic.yaml"]
designs:
  - {{type: "3+3"}}
  - {{type: boin}}
simulation: {{n_trials: 5000, seed: 1}}
"""


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    from escalation_sim.run.study import load_study, run_study
    d = tmp_path_factory.mktemp("study")
    f = d / "mini.yaml"
    f.write_text(STUDY.format(root=ROOT))
    res = run_study(load_study(f, n_trials=600, seed=4), d / "out", backend="sequential")
    return f, res


def test_study_cli_n_trials_and_seed(cli, study_run, tmp_path):
    f, res = study_run
    r = cli("study", f, "--out", tmp_path / "s", "--n-trials", 600, "--seed", 4,
            "--backend", "sequential", "--quiet")
    assert r.returncode == 0, r.stderr
    oc = pd.read_csv(tmp_path / "s" / "oc.csv")
    assert (oc["n_trials"] == 600).all()
    assert oc["pcs"].tolist() == pytest.approx(res.oc["pcs"].tolist(), rel=1e-11)


def test_protocol_blocks_from_study_tables(study_run):
    _, res = study_run
    blocks = protocol_blocks(res.oc, res.summary)
    assert len(blocks) == 2
    for b in blocks:
        assert [r[0] for r in b.rows] == ["3+3", "boin"]
        assert len(b.head) == 4 + 4 + 4 + 5           # sel %, patients, DLTs, 5 summaries
    # the mtd2 truth: DL2 is the true MTD, starred; all_toxic has none
    assert blocks[0].head[1] == "DL2*" and "*" not in "".join(blocks[1].head)
    sm = res.summary
    boin = sm[(sm["cell"] == 0) & (sm["design"] == "boin")].sort_values("dose")
    row = blocks[0].rows[1]
    for cell, p, s in zip(row[1:5], boin["p_select"], boin["se_p_select"], strict=True):
        assert cell == pct(p, s)
    compact = protocol_blocks(res.oc, res.summary, compact=True)
    assert len(compact[0].head) == 4 + 3


def test_markdown_and_latex_render_every_row(study_run):
    _, res = study_run
    blocks = protocol_blocks(res.oc, res.summary)
    md = render_markdown(blocks, "T", "note")
    assert md.count("| 3+3 |") == 2 and md.count("| boin |") == 2
    tex = render_latex(blocks, "T", "50% & more")
    assert tex.count(r"\begin{tabular}") == 2 and r"50\% \& more" in tex
    assert r"Sel \%" in tex and r"\toprule" in tex


@pytest.mark.parametrize("fmt", ["html", "md", "tex"])
def test_report_of_a_study_file(cli, study_run, tmp_path, fmt):
    f, res = study_run
    out = tmp_path / f"appendix.{fmt}"
    r = cli("report", f, "-o", out, "--n-trials", 600, "--seed", 4, "--quiet")
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    # the same numbers as the study run with the same seed and trials
    pcs = res.oc[(res.oc["cell"] == 0) & (res.oc["design"] == "boin")].iloc[0]
    assert pct(pcs["pcs"], pcs["se_pcs"]) in text
    if fmt == "html":
        assert 'id="scenario-0"' in text and 'href="#scenario-1"' in text
        assert "data:image/png;base64," in text and "<script" not in text
        assert "Selection by scenario" in text


def test_compact_study_report_is_shorter(cli, study_run, tmp_path):
    f, _ = study_run
    full, small = tmp_path / "full.html", tmp_path / "small.html"
    assert cli("report", f, "-o", full, "--n-trials", 300, "--quiet").returncode == 0
    assert cli("report", f, "-o", small, "--n-trials", 300, "--quiet",
               "--compact").returncode == 0
    assert "<details" in full.read_text() and "<details" not in small.read_text()
    assert len(small.read_text()) < len(full.read_text())


def test_report_options_a_study_does_not_use_are_errors(cli, study_run, tmp_path):
    f, _ = study_run
    r = cli("report", f, "-o", tmp_path / "x.html", "--design", "boin")
    assert r.returncode == 2 and "study file" in r.stderr
    r = cli("report", MTD3, "-o", tmp_path / "x.html", "--out", tmp_path / "d")
    assert r.returncode == 2 and "study file" in r.stderr


def test_docx_format(cli, tmp_path):
    from escalation_sim.results.display import docx_available
    out = tmp_path / "t.docx"
    r = cli("report", MTD3, "-o", out, "--n-trials", 300, "--quiet")
    if not docx_available():
        assert r.returncode == 2 and "pip install 'escalation-sim[docx]'" in r.stderr
        assert not out.exists()
        return
    assert r.returncode == 0, r.stderr
    import docx
    doc = docx.Document(str(out))
    assert doc.tables and doc.tables[0].cell(1, 0).text == "3+3"


def test_single_scenario_markdown_report(cli, tmp_path):
    out = tmp_path / "one.md"
    r = cli("report", MTD3, "-o", out, "--n-trials", 400, "--seed", 2, "--quiet")
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "| 3+3 |" in text and "PCS = percentage of correct selection" in text


def test_help_shows_defaults(cli):
    for cmd in ("run", "study", "report", "boundaries", "table"):
        r = cli(cmd, "--help")
        assert r.returncode == 0
        opts = re.findall(r"^\s+(--[a-z-]+)", r.stdout, re.M)
        assert opts
        assert "default" in r.stdout


def test_study_oc_csv_has_stop_reasons(study_run):
    _, res = study_run
    oc = pd.read_csv(res.out_dir / "oc.csv")
    stops = [c for c in oc.columns if c.startswith("stop_")]
    assert stops and {"se_" + c for c in stops} <= set(oc.columns)
    assert oc[stops].sum(axis=1).tolist() == pytest.approx([1.0] * len(oc))
    # a trial that selects no dose stopped early: for the 3+3 (whose rule always ends with
    # an MTD unless dose 1 is too toxic) P(no MTD) is P(stop: lowest dose too toxic)
    t = oc[oc["design"] == "3+3"]
    assert t["stop_lowest_dose_too_toxic"].tolist() == pytest.approx(t["p_no_mtd"].tolist())


def test_study_terminal_table_in_percent(cli, study_run, tmp_path):
    f, res = study_run
    r = cli("study", f, "--out", tmp_path / "t", "--n-trials", 600, "--seed", 4,
            "--backend", "sequential")
    assert r.returncode == 0, r.stderr
    row = res.oc[(res.oc["cell"] == 0) & (res.oc["design"] == "boin")].iloc[0]
    assert "PCS % (SE)" in r.stdout and pct(row["pcs"], row["se_pcs"]) in r.stdout
