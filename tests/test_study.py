"""Study files: validation, grid expansion, tidy outputs, checkpointed resume."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from escalation_sim import exact_oc, simulate
from escalation_sim.results.files import verify_manifest
from escalation_sim.run import RunNote
from escalation_sim.run.checkpoint import CheckpointError
from escalation_sim.cli import main
from escalation_sim.inputs.scenario import ScenarioError
from escalation_sim.run.study import load_study, run_study

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
name: {name}
doses: [DL1, DL2, DL3, DL4]
truth: {{p_dlt: {p}}}
target: 0.25
trial: {{max_n: 24, cohort_size: 3, start_dose: 1}}
designs:
  - {{type: "3+3"}}
  - {{type: boin}}
  - {{type: crm, skeleton: [0.10, 0.17, 0.25, 0.35]}}
simulation: {{n_trials: 10000, seed: 2026}}
"""


def write_base(d: Path):
    (d / "scen").mkdir()
    (d / "scen" / "a.yaml").write_text(BASE.format(name="a", p=[0.05, 0.12, 0.25, 0.40]))
    (d / "scen" / "b.yaml").write_text(BASE.format(name="b", p=[0.10, 0.25, 0.40, 0.55]))


STUDY = """\
name: small
scenarios: scen
designs:
  - {type: "3+3"}
  - {type: boin}
  - {type: crm, skeleton: [0.10, 0.17, 0.25, 0.35]}
sweep:
  target: [0.25, 0.30]
  trial.max_n: [18, 24]
cases:
  - {designs.crm.skeleton: [0.10, 0.17, 0.25, 0.35]}
  - {designs.crm.skeleton: [0.05, 0.10, 0.17, 0.25]}
simulation: {n_trials: 3000, seed: 5, chunk_size: 1000}
"""


def study_file(tmp_path, text=STUDY) -> Path:
    if not (tmp_path / "scen").exists():
        write_base(tmp_path)
    f = tmp_path / "study.yaml"
    f.write_text(text)
    return f


def problems(tmp_path, text):
    with pytest.raises(ScenarioError) as ei:
        load_study(study_file(tmp_path, text))
    return str(ei.value)


# ---------------------------------------------------------------------------------------------
def test_grid_expansion_order_and_values(tmp_path):
    st = load_study(study_file(tmp_path))
    # 2 scenario files x 2 cases x (2 targets x 2 sample sizes) = 16 cells
    assert len(st.cells) == 16
    assert st.param_names == ["designs.crm.skeleton", "target", "trial.max_n"]
    c = st.cells[0]
    assert c.file == "scen/a.yaml"
    assert c.params == {"designs.crm.skeleton": [0.10, 0.17, 0.25, 0.35], "target": 0.25,
                        "trial.max_n": 18}
    # last sweep key fastest, then the other sweep keys, then cases, then files
    order = [(x.file, x.params["designs.crm.skeleton"][0], x.params["target"],
              x.params["trial.max_n"]) for x in st.cells]
    assert order[:5] == [("scen/a.yaml", 0.10, 0.25, 18), ("scen/a.yaml", 0.10, 0.25, 24),
                         ("scen/a.yaml", 0.10, 0.30, 18), ("scen/a.yaml", 0.10, 0.30, 24),
                         ("scen/a.yaml", 0.05, 0.25, 18)]
    assert order[8][0] == "scen/b.yaml"
    # the values reached the built designs: the CRM skeleton only on the CRM design
    c = st.cells[5]
    sc = c.scenario
    assert sc.target == 0.25 and sc.model.trial.max_n == 24
    crm = sc.design("crm").spec
    assert list(crm.skeleton) == [0.05, 0.10, 0.17, 0.25]
    assert "skeleton" not in sc.design("boin").spec.model_dump(exclude_none=True)
    assert len({x.hash for x in st.cells}) == 16


def test_study_file_errors_name_file_field_and_value(tmp_path):
    f = str(tmp_path / "study.yaml")
    msg = problems(tmp_path, STUDY.replace("sweep:", "sweeps:"))
    assert f"{f}: sweeps: unknown key; did you mean 'sweep'?" in msg
    msg = problems(tmp_path, STUDY.replace("n_trials: 3000", "n_trials: 0"))
    assert f"{f}: simulation.n_trials: Input should be greater than or equal to 1 (got 0)" in msg
    msg = problems(tmp_path, STUDY.replace("trial.max_n: [18, 24]", "trial.max_n: []"))
    assert "sweep: every sweep needs at least one value" in msg
    msg = problems(tmp_path, STUDY.replace("trial.max_n:", "trail.max_n:"))
    assert "sweep.trail.max_n: unknown scenario key 'trail'; did you mean 'trial'?" in msg
    msg = problems(tmp_path, STUDY.replace("designs.crm.skeleton", "designs.crn.skeleton"))
    assert "no design named 'crn'; did you mean 'crm'?" in msg
    msg = problems(tmp_path, STUDY.replace("scenarios: scen", "scenarios: [scen, nope.yaml]"))
    assert f"{f}: scenarios[1]: file not found (got 'nope.yaml')" in msg
    msg = problems(tmp_path, STUDY.replace("scenarios: scen", "scenarios: ['scen/*.yml']"))
    assert "scenarios[0]: pattern matches no files" in msg


def test_cell_errors_are_reported_once_with_the_cell(tmp_path):
    # target 1.2 is invalid in every one of the 8 cells that use it: reported once
    msg = problems(tmp_path, STUDY.replace("target: [0.25, 0.30]", "target: [0.25, 1.2]"))
    lines = [ln for ln in msg.splitlines() if "target:" in ln]
    assert len(lines) == 1, msg
    assert "cells[2] (a, designs.crm.skeleton=[0.1, 0.17, 0.25, 0.35], target=1.2, " \
           "trial.max_n=18): target: Input should be less than 1 (got 1.2) " \
           "(and 7 more cells)" in lines[0]
    # max_n not a multiple of the cohort size: found by the scenario validation of each cell
    msg = problems(tmp_path, STUDY.replace("trial.max_n: [18, 24]", "trial.max_n: [20]"))
    assert "max_n must be a multiple of the cohort size 3 (got 20)" in msg
    msg = problems(tmp_path, STUDY.replace("cases:", "cases_:"))
    assert "cases_: unknown key" in msg


def test_run_study_tables_match_direct_simulation_and_exact(tmp_path):
    f = study_file(tmp_path, STUDY.replace("target: [0.25, 0.30]", "target: [0.25]")
                   .replace("trial.max_n: [18, 24]", "trial.max_n: [24]"))
    out = tmp_path / "out"
    res = run_study(f, out, backend="sequential")
    st = res.study
    assert len(st.cells) == 4
    oc = pd.read_csv(out / "oc.csv")
    assert len(oc) == 4 * 3  # rows = cell x design
    for col in ["cell", "scenario_file", "scenario", "designs.crm.skeleton", "target",
                "trial.max_n", "design", "pcs", "se_pcs"]:
        assert col in oc.columns
    pq = pd.read_parquet(out / "oc.parquet")
    # CSV: 12 significant digits, no float noise (issue 18); Parquet: the exact doubles
    assert oc["pcs"].tolist() == pytest.approx(pq["pcs"].tolist(), rel=1e-11)
    assert len(pd.read_csv(out / "summary.csv")) == 4 * 3 * 4  # cell x design x dose
    cells = pd.read_parquet(out / "cells.parquet")
    assert cells["cell"].tolist() == [0, 1, 2, 3]
    assert len(json.loads((out / "cells.json").read_text())) == 4
    meta = json.loads((out / "study.json").read_text())
    assert meta["n_cells"] == 4 and meta["n_trials"] == 3000
    for c in st.cells:
        # bit-identical to simulating the expanded scenario on its own
        direct = simulate(c.scenario, n_trials=3000, seed=5, backend="sequential")
        rows = res.oc[res.oc["cell"] == c.index].set_index("design")
        for d in direct.to_dict()["designs"]:
            assert rows.loc[d["design"], "pcs"] == d["pcs"]
            assert rows.loc[d["design"], "mean_n_total"] == d["mean_n_total"]
        # and within 4 SE of exact enumeration (the independent reference)
        # (an SE of 0 -- every trial alike -- is floored at 1/sqrt(R))
        ex = exact_oc(scenario=c.scenario)
        floor = 1 / math.sqrt(3000)
        for name, row in rows.iterrows():
            e = ex.design_oc(name)
            assert abs(row["pcs"] - e["pcs"]) < 4 * max(row["se_pcs"], floor)
            assert abs(row["mean_n_total"] - e["mean_n_total"]) < \
                4 * max(row["se_mean_n_total"], floor)


def test_study_resume_and_refusal(tmp_path):
    f = study_file(tmp_path, STUDY.replace("target: [0.25, 0.30]", "target: [0.25]"))
    out = tmp_path / "out"
    ref = run_study(f, out, backend="sequential").oc
    chunks = sorted((out / "checkpoint" / "cells").glob("*/chunk-*.parquet"))
    assert len(chunks) == 8 * 3  # 8 cells x 3 chunks of 1000
    for p in chunks[::4]:  # lose some chunks, as a killed run would
        p.unlink()
    again = run_study(f, out, backend="sequential", resume=True)
    assert again.meta["resumed_trials"] == (24 - 6) * 1000
    pd.testing.assert_frame_equal(again.oc, ref)
    # same folder, different n_trials: refused
    g = study_file(tmp_path, STUDY.replace("target: [0.25, 0.30]", "target: [0.25]")
                   .replace("n_trials: 3000", "n_trials: 4000"))
    with pytest.raises(CheckpointError, match="n_trials was 3000, now 4000"):
        run_study(g, out, backend="sequential", resume=True)
    # without --resume the study starts over
    fresh = run_study(g, out, backend="sequential")
    assert fresh.meta["resumed_trials"] == 0 and (fresh.oc["n_trials"] == 4000).all()


def test_cli_study_and_bundled_examples(tmp_path, capsys):
    f = study_file(tmp_path, STUDY.replace("target: [0.25, 0.30]", "target: [0.25]")
                   .replace("trial.max_n: [18, 24]", "trial.max_n: [24]")
                   .replace("n_trials: 3000", "n_trials: 500"))
    assert main(["study", str(f), "--out", str(tmp_path / "o"), "--backend",
                 "sequential"]) == 0
    text = capsys.readouterr().out
    assert "PCS" in text and "tables written" in text
    bad = study_file(tmp_path, STUDY.replace("sweep:", "sweeps:"))
    assert main(["study", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "sweeps: unknown key" in capsys.readouterr().err
    # every bundled example study file is valid
    for p in sorted((ROOT / "scenarios" / "studies").glob("*.yaml")):
        st = load_study(p)
        assert st.cells, p
    six = load_study(ROOT / "scenarios" / "studies" / "standard_six.yaml")
    assert [c.scenario.name for c in six.cells] == [
        "standard-all_safe", "standard-all_toxic", "standard-mtd1", "standard-mtd2",
        "standard-mtd3", "standard-mtd4"]


def test_logistics_false_drops_conduct(tmp_path):
    write_base(tmp_path)
    (tmp_path / "scen" / "a.yaml").write_text(
        BASE.format(name="a", p=[0.05, 0.12, 0.25, 0.40]) + "conduct: {accrual_per_month: 1}\n")
    text = "name: l\nscenarios: scen/a.yaml\nsimulation: {n_trials: 100}\n"
    assert load_study(study_file(tmp_path, text)).cells[0].scenario.has_logistics
    st = load_study(study_file(tmp_path, text + "logistics: false\n"))
    assert not st.cells[0].scenario.has_logistics
    msg = problems(tmp_path, text + "logistics: false\nsweep: {conduct.accrual_per_month: [1]}\n")
    assert "logistics: false drops the conduct block, so conduct.accrual_per_month" in msg


def test_library_never_prints_it_reports(tmp_path, capsys):
    """run_study reports progress through its callback (every trial of every cell once, the
    reused chunks of a resumed study included) and prints nothing; its folder ends with a
    manifest.  simulate's notes are warnings (the command line prints them)."""
    f = study_file(tmp_path, STUDY.replace("target: [0.25, 0.30]", "target: [0.25]")
                   .replace("trial.max_n: [18, 24]", "trial.max_n: [24]"))
    out = tmp_path / "out"
    seen = []
    res = run_study(f, out, backend="sequential", progress=seen.append)
    assert capsys.readouterr() == ("", "")
    assert sum(seen) == len(res.study.cells) * 3000 and set(seen) == {1000}
    assert verify_manifest(out) == []
    for p in sorted((out / "checkpoint" / "cells").glob("*/chunk-*.parquet"))[::3]:
        p.unlink()
    seen.clear()
    run_study(f, out, backend="sequential", resume=True, progress=seen.append)
    assert sum(seen) == len(res.study.cells) * 3000
    assert capsys.readouterr() == ("", "")
    relma = ROOT / "scenarios" / "relma_cel_sle.yaml"
    with pytest.warns(RunNote, match="time-to-event designs tite-crm, tite-boin skipped"):
        simulate(relma, n_trials=200, logistics=False, backend="sequential")
    assert capsys.readouterr() == ("", "")
