"""Scenario validation: every problem reported at once as FILE: field.path: message (got VALUE)."""
import json
import textwrap
from pathlib import Path

import pytest

from escalation_sim.inputs.scenario import ScenarioError, load_scenario, load_scenario_text

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture
def base(scenario_yaml):
    """The shared 4-dose template (conftest.py): 3+3, BOIN, CRM; target 0.25; N = 24."""
    return scenario_yaml()


def edit(text, old, new):
    """``text.replace(old, new)``, failing if ``old`` is not there (no silent no-op edits)."""
    assert old in text, f"{old!r} not in the template"
    return text.replace(old, new)


def problems(text):
    with pytest.raises(ScenarioError) as ei:
        load_scenario_text(text, "s.yaml")
    return ei.value.problems


def test_base_is_valid(base):
    sc = load_scenario_text(base, "s.yaml")
    assert [d.name for d in sc.designs] == ["3+3", "boin", "crm"]
    assert sc.n_doses == 4 and sc.target == 0.25
    assert sc.designs[2].design.n_doses == 4


def test_dose_mappings_accepted(base):
    text = edit(base, "doses: [DL1, DL2, DL3, DL4]", textwrap.dedent("""\
        doses:
          - {label: DL1, amount: 25.0e6, unit: CAR-T cells}
          - {label: DL2, amount: 50.0e6, unit: CAR-T cells}
          - {label: DL3, amount: 75.0e6, unit: CAR-T cells}
          - {label: DL4, amount: 100.0e6, unit: CAR-T cells}"""))
    sc = load_scenario_text(text, "s.yaml")
    assert sc.dose_labels == ["DL1", "DL2", "DL3", "DL4"]


def test_malformed_yaml_has_line_number(base):
    p = problems(edit(base, "target: 0.25", "target: [0.25"))
    assert len(p) == 1 and "line " in p[0] and "malformed YAML" in p[0]


def test_missing_key(base):
    p = problems(edit(base, "target: 0.25\n", ""))
    assert p == ["target: required key is missing"]


def test_wrong_type(base):
    p = problems(edit(base, "max_n: 24", "max_n: twenty"))
    assert any(x.startswith("trial.max_n:") and "(got 'twenty')" in x for x in p)


@pytest.mark.parametrize("value", ["1.2", "0", "-0.1"])
def test_probability_outside_unit_interval(value, base):
    p = problems(edit(base, "[0.05, 0.10, 0.18, 0.28]", f"[0.05, 0.10, 0.18, {value}]"))
    assert any(x.startswith("truth.p_dlt") and "(0, 1)" in x for x in p)


@pytest.mark.parametrize("value", [".nan", ".inf"])
def test_nan_inf(value, base):
    p = problems(edit(base, "[0.05, 0.10, 0.18, 0.28]", f"[0.05, 0.10, {value}, 0.28]"))
    assert any(x.startswith("truth.p_dlt") for x in p)


def test_nan_target(base):
    p = problems(edit(base, "target: 0.25", "target: .nan"))
    assert any(x.startswith("target:") for x in p)


def test_length_mismatch(base):
    p = problems(edit(base, "[0.05, 0.10, 0.18, 0.28]", "[0.05, 0.10, 0.18]"))
    assert "truth.p_dlt: has 3 values for 4 doses (got [0.05, 0.1, 0.18])" in p


def test_non_monotone_rejected_unless_allowed(base):
    text = edit(base, "[0.05, 0.10, 0.18, 0.28]", "[0.05, 0.20, 0.18, 0.28]")
    p = problems(text)
    assert any("non-decreasing" in x and "allow_non_monotone" in x for x in p)
    ok = edit(text, "p_dlt: [0.05, 0.20, 0.18, 0.28]",
                      "p_dlt: [0.05, 0.20, 0.18, 0.28], allow_non_monotone: true")
    assert load_scenario_text(ok).p_true[1] == 0.20


def test_unknown_design_type_suggests(base):
    p = problems(edit(base, "{type: boin}", "{type: bion}"))
    assert any(x.startswith("designs[1].type: unknown design type; did you mean 'boin'?")
               and "(got 'bion')" in x for x in p)


def test_skeleton_not_increasing(base):
    p = problems(edit(base, "[0.10, 0.17, 0.25, 0.35]", "[0.10, 0.27, 0.25, 0.35]"))
    assert any(x.startswith("designs[2].skeleton") and "increasing" in x for x in p)


@pytest.mark.parametrize("value", ["1.3", "0", "-1"])
def test_target_outside(value, base):
    p = problems(edit(base, "target: 0.25", f"target: {value}"))
    assert any(x.startswith("target:") and f"(got {value})" in x for x in p)


def test_design_target_outside(base):
    p = problems(edit(base, "{type: boin}", "{type: boin, target: 1.3}"))
    assert any(x.startswith("designs[1].target:") and "(got 1.3)" in x for x in p)


def test_max_n_not_multiple_of_cohort(base):
    p = problems(edit(base, "max_n: 24", "max_n: 25"))
    assert any("designs[1] (boin): trial.max_n must be a multiple of the cohort size 3 (got 25)"
               == x for x in p)
    # 3+3 sets its own sample size, so it does not complain
    assert not any(x.startswith("designs[0]") for x in p)


def test_start_dose_out_of_range(base):
    p = problems(edit(base, "start_dose: 1", "start_dose: 5"))
    assert "trial.start_dose: must be between 1 and 4 (got 5)" in p


def test_empty_design_list(base):
    p = problems(base.split("designs:")[0] + "designs: []\n")
    assert "designs: must list at least one design (got [])" in p


def test_duplicate_design_names(base):
    p = problems(edit(base, "  - {type: boin}\n", "  - {type: boin}\n  - {type: boin}\n"))
    assert any("designs[2].name: duplicate design name 'boin'" in x for x in p)


def test_unknown_key_suggests(base):
    p = problems(edit(base, "max_n: 24", "maxn: 24"))
    assert any(x.startswith("trial.maxn: unknown key; did you mean 'max_n'?") for x in p)


def test_every_problem_at_once(base):
    text = edit(base, "target: 0.25", "target: 2")
    text = edit(text, "{type: boin}", "{type: bion}")
    text = edit(text, "start_dose: 1", "start_dose: 9")
    p = problems(text)
    assert len(p) >= 3
    assert {x.split(":")[0] for x in p} >= {"target", "designs[1].type", "trial.start_dose"}


def test_cli_validate_bad_file_exit_2_no_traceback(cli, tmp_path, base):
    f = tmp_path / "bad.yaml"
    f.write_text(edit(base, "target: 0.25", "target: 1.3"))
    r = cli("validate", f)
    assert r.returncode == 2 and r.stdout == ""
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"{f}: target: Input should be less than 1 (got 1.3)"]


def test_cli_missing_file(cli, tmp_path):
    r = cli("run", tmp_path / "nope.yaml")
    assert r.returncode == 2 and "file not found" in r.stderr and "Traceback" not in r.stderr


def test_cli_validate_bundled_scenarios(cli):
    files = sorted((ROOT / "scenarios").glob("*.yaml"))
    assert len(files) >= 7
    r = cli("validate", *files)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == len(files)
    assert all(line.startswith(f"{f}: OK (") for f, line in zip(files, r.stdout.splitlines(),
                                                                    strict=True))


def test_cli_schema_is_json_schema(cli):
    r = cli("schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert schema["type"] == "object"
    assert {"doses", "truth", "target", "trial", "designs"} <= set(schema["properties"])
    types = {v["properties"]["type"]["const"]
             for v in schema["properties"]["designs"]["items"]["oneOf"]}
    # the design types the README documents, one schema branch each
    assert {"3+3", "boin", "crm", "tite-crm", "tite-boin"} <= types


def test_design_type_not_a_string(base):
    p = problems(edit(base, "{type: boin}", "{type: [boin]}"))
    assert 'designs[1].type: must be a design type name such as boin (got ["boin"])' in p


def test_duplicate_dose_labels(base):
    p = problems(edit(base, "[DL1, DL2, DL3, DL4]", "[DL1, DL1, DL3, DL4]"))
    assert any(x.startswith("doses: labels must be distinct") for x in p)


def test_design_options_are_strictly_typed(base):
    p = problems(edit(base, "{type: boin}", '{type: boin, extrasafe: "yes", n_earlystop: 6.0}'))
    assert any(x.startswith("designs[1].extrasafe:") for x in p)
    assert any(x.startswith("designs[1].n_earlystop:") for x in p)


def test_bad_start_dose_reported_once_and_1_based(base):
    p = problems(edit(base, "start_dose: 1", "start_dose: 5"))
    assert p == ["trial.start_dose: must be between 1 and 4 (got 5)"]


def test_seed_scenario_without_logistics_skips_tite_designs():
    from escalation_sim import simulate
    sc = load_scenario(ROOT / "scenarios" / "relma_cel_sle.yaml")
    res = simulate(sc, n_trials=300, logistics=False)
    assert [d.name for d in res.designs] == ["3+3", "boin", "crm"]
    with pytest.raises(ValueError, match="need calendar time"):
        simulate(sc, n_trials=300, logistics=False, designs=["tite-crm"])
