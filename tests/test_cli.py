"""The command line end to end: run --json keys, --out tables, conduct helpers.

Commands run in-process through ``escalation_sim.cli.main`` (the ``cli`` fixture of
conftest.py); a few smoke tests at the end start a real process: ``--help``, the README
quickstart command verbatim, and exit code 2 without a traceback on a bad file.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "scenarios" / "standard_mtd3.yaml"
KEYS = {"design", "type", "n_trials", "p_select", "p_no_mtd", "mean_n", "mean_dlt", "se_p_select"}


def test_run_json_document(cli):
    r = cli("run", SEED, "--n-trials", 3000, "--json", "--seed", 7)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [d["design"] for d in doc["designs"]] == ["3+3", "boin", "crm"]
    for d in doc["designs"]:
        assert KEYS <= set(d)
        assert d["n_trials"] == 3000
        assert len(d["p_select"]) == len(d["mean_n"]) == len(d["se_p_select"]) == 4
        assert abs(sum(d["p_select"]) + d["p_no_mtd"] - 1) < 1e-9
    assert doc["seed"] == 7


def test_run_json_reproducible_across_jobs(cli):
    ra = cli("run", SEED, "--n-trials", 4000, "--json", "--n-jobs", 1)
    rb = cli("run", SEED, "--n-trials", 4000, "--json", "--n-jobs", 2, "--backend", "loky",
             "--chunk-size", 777)
    assert ra.returncode == rb.returncode == 0, ra.stderr + rb.stderr
    a, b = json.loads(ra.stdout), json.loads(rb.stdout)
    assert a["designs"] == b["designs"] and a["paired"] == b["paired"]


def test_run_out_writes_tidy_tables(cli, tmp_path):
    out = tmp_path / "res"
    r = cli("run", SEED, "--n-trials", 1000, "--out", out, "--keep-trials")
    assert r.returncode == 0, r.stderr
    oc = pd.read_csv(out / "oc.csv")
    assert list(oc["design"]) == ["3+3", "boin", "crm"]
    assert {"pcs", "se_pcs", "p_no_mtd", "mean_n_total"} <= set(oc.columns)
    summ = pd.read_csv(out / "summary.csv")
    assert len(summ) == 12 and set(summ["dose"]) == {1, 2, 3, 4}
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 3000
    # the per-trial table reproduces the summary
    for name, g in trials.groupby("design"):
        sel = (g["mtd"] == 3).mean()
        row = summ[(summ.design == name) & (summ.dose == 3)].iloc[0]
        assert sel == pytest.approx(row["p_select"])
    assert (out / "scenario.resolved.yaml").exists() and (out / "results.json").exists()


def test_exact_cli_same_keys_zero_se(cli):
    r = cli("exact", SEED, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for d in doc["designs"]:
        assert KEYS - {"n_trials"} <= set(d)
        assert all(s == 0 for s in d["se_p_select"])
        assert abs(sum(d["p_select"]) + d["p_no_mtd"] - 1) < 1e-12
    r2 = cli("run", SEED, "--method", "exact", "--json")
    assert r2.returncode == 0, r2.stderr
    assert json.loads(r2.stdout)["designs"] == doc["designs"]


def test_next_dose(cli):
    r = cli("next-dose", SEED, "--design", "boin", "--outcomes", "1NNN 2NTN")
    assert r.returncode == 0, r.stderr
    # target 0.25: 1/3 at dose 2 reaches the de-escalation boundary (lambda_d = 0.298)
    assert "next: dose 1" in r.stdout
    r = cli("next-dose", SEED, "--design", "3+3", "--outcomes", "1NNN 2TTN", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["next_dose"] == 1 and doc["cohort_size"] == 3  # de-escalation to 3 more at dose 1
    r = cli("next-dose", SEED, "--design", "3+3", "--outcomes", "1TTN")
    assert r.returncode == 0, r.stderr
    assert "STOP" in r.stdout and "MTD: none" in r.stdout


def test_next_dose_bad_outcomes(cli):
    r = cli("next-dose", SEED, "--design", "boin", "--outcomes", "1NNN 9NTN")
    assert r.returncode == 2 and "dose 9 outside 1..4" in r.stderr and "Traceback" not in r.stderr
    r = cli("next-dose", SEED, "--design", "bion", "--outcomes", "1NNN")
    assert r.returncode == 2 and "did you mean 'boin'" in r.stderr


def test_boundaries_table(cli):
    r = cli("boundaries", "--target", 0.3, "--max-n", 12, "--json")
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    # Liu & Yuan (2015) / BOIN R package, target 0.3, cohort size 1
    assert b["escalate"][:12] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert b["deescalate"][:12] == [1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5]
    r = cli("boundaries", "--target", 1.5)
    assert r.returncode == 2 and "--target must be in (0, 1) (got 1.5)" in r.stderr


def test_select_mtd(cli):
    r = cli("select-mtd", SEED, "--design", "boin", "--n", "3,6,9,6", "--dlt", "0,1,2,3", "--json")
    assert r.returncode == 0, r.stderr
    # estimates 0/3, 1/6, 2/9, 3/6 (already increasing): 2/9 = 0.22 is closest to 0.25
    assert json.loads(r.stdout)["mtd"] == 3
    r = cli("select-mtd", SEED, "--design", "boin", "--n", "3,6", "--dlt", "0,1")
    assert r.returncode == 2 and "--n and --dlt need 4 values each (got 2 and 2)" in r.stderr


def test_paths_tree(cli):
    r = cli("paths", SEED, "--design", "3+3", "--outcomes", "1NNN", "--cohorts", 1, "--json")
    assert r.returncode == 0, r.stderr
    tree = json.loads(r.stdout)
    assert tree["next_dose"] == 2
    nxt = {c["outcome"].count("T"): c["next_dose"] for c in tree["children"]}
    assert nxt == {0: 3, 1: 2, 2: 1, 3: 1}


def test_bad_numbers_on_command_line(cli):
    r = cli("run", SEED, "--n-trials", 0)
    assert r.returncode == 2 and "--n-trials must be >= 1 (got 0)" in r.stderr


@pytest.mark.parametrize("value", [0, -3])
def test_bad_n_jobs_rejected(cli, value):
    r = cli("run", SEED, "--n-trials", 100, "--n-jobs", value)
    assert r.returncode == 2 and "n_jobs must be -1" in r.stderr and "Traceback" not in r.stderr


def test_n_jobs_capped_at_cpu_count():
    import os
    from escalation_sim.run.runner import resolve_n_jobs
    cpus = os.cpu_count() or 1
    assert resolve_n_jobs(10_000, "loky") == cpus
    assert resolve_n_jobs(-1, "loky") == cpus
    assert resolve_n_jobs(1, "loky") == 1


def test_boundaries_cohorts_of_three(cli):
    # BOIN protocol template table for target 0.3, cohorts of 3 (n = 3, 6, 9, 12)
    r = cli("boundaries", "--target", 0.3, "--max-n", 12, "--cohort-size", 3, "--json")
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    assert b["n"] == [3, 6, 9, 12]
    assert b["escalate"] == [0, 1, 2, 2]
    assert b["deescalate"] == [2, 3, 4, 5]
    assert b["eliminate"] == [3, 4, 5, 7]


# -- smoke tests in a real process --------------------------------------------------------------
def _console_script():
    """The installed ``escalation-sim`` script of this interpreter, else ``python -m``."""
    exe = Path(sys.executable).parent / ("escalation-sim" + (".exe" if os.name == "nt" else ""))
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "escalation_sim"]


def _process(*args, cwd=ROOT):
    return subprocess.run([*_console_script(), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_process_help():
    r = _process("--help")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith("usage: escalation-sim")
    for command in ("validate", "schema", "run", "exact", "next-dose", "select-mtd",
                    "boundaries", "paths", "replay", "report", "study"):
        assert command in r.stdout


def test_process_readme_quickstart_command_and_table():
    """The README quickstart command, verbatim, from the repository root; its output agrees
    with the table of the seed scenario that the README prints (P(select) per dose, PCS and
    the duration columns, as rounded there)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = "escalation-sim run scenarios/relma_cel_sle.yaml"
    assert command in readme
    r = _process(*command.split()[1:])
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    rows = re.findall(r"^\| (3\+3|BOIN|CRM|TITE-CRM|TITE-BOIN) \| ([\d. /]+) \| ([\d.]+) \| "
                      r"[\d.]+ \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", readme, re.M)
    assert len(rows) == 5, "the README's seed-scenario table was not found"
    out = r.stdout.splitlines()
    for name, p_select, pcs, *days in rows:
        design = name.lower()
        # percentages with their SEs in brackets: "9.9 (0.7)"
        sel = [t for t in next(line.split() for line in out if line.split()[:1] == [design])
               if not t.startswith("(")]
        assert sel[1:5] == p_select.split(" / "), (design, sel)
        start = next(i for i, line in enumerate(out) if "PCS %" in line)
        summary = next(line.split() for line in out[start:] if line.split()[:1] == [design])
        assert summary[1] == pcs and summary[-4:] == days, (design, summary)


def test_process_bad_file_exit_2_without_traceback(tmp_path, scenario_yaml):
    f = tmp_path / "bad.yaml"
    f.write_text(scenario_yaml().replace("target: 0.25", "target: 1.3"))
    r = _process("validate", f, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert "Traceback" not in r.stderr
    assert r.stderr.strip() == f"{f}: target: Input should be less than 1 (got 1.3)"


#: modules whose import alone costs 0.1-0.5 s; issue 18 asks `table`, `boundaries` and
#: `--help` to start in at most 0.3 s (benchmarks/bench_startup.py measures it; this test
#: only guards against a module-level import creeping back, as scipy.stats did when the
#: efficacy designs were registered)
HEAVY = ("scipy.stats", "scipy.special", "scipy.integrate", "pandas", "simpy", "numba",
         "matplotlib", "yaml")


@pytest.mark.parametrize("argv", [["table", "--design", "boin", "--target", "0.3"],
                                  ["boundaries", "--target", "0.25"],
                                  ["table", "--design", "3+3"]])
def test_quick_commands_import_no_heavy_module(argv):
    code = ("import contextlib, io, sys\n"
            "from escalation_sim.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    rc = main({argv!r})\n"
            f"print(rc, sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split("\n")[-2]
    assert out == "0 []", out


def test_type_modules_name_the_module_that_registers_each_type():
    """registry.TYPE_MODULES (a scenario imports only its designs' modules) must list every
    built-in type, in the registry's order, with the module that defines it."""
    from escalation_sim.designs.registry import TYPE_MODULES, registry
    reg = registry()
    assert list(reg) == list(TYPE_MODULES)
    for t, entry in reg.items():
        assert entry.make.__module__ == f"escalation_sim.designs.{TYPE_MODULES[t]}", t


def test_validate_imports_only_the_scenarios_design_modules():
    code = ("import contextlib, io, sys\n"
            "from escalation_sim.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    rc = main(['validate', {str(ROOT / 'scenarios' / 'relma_cel_sle.yaml')!r}])\n"
            "print(rc, sorted(m.rsplit('.', 1)[1] for m in sys.modules\n"
            "                 if m.startswith('escalation_sim.designs.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split("\n")[-2]
    rc, mods = out.split(" ", 1)
    assert rc == "0"
    for absent in ("boin12", "keyboard_obd", "blrm", "gboin", "tite_gboin", "rolling6"):
        assert f"'{absent}'" not in mods, mods
