"""Input limits (README, "Input limits"): every oversized or hostile input is refused with an
exit-2 message naming the file and the field, before the work starts; never a traceback,
never minutes of work or gigabytes of memory.

Each test here reproduces one item of the probe of bad inputs (issue 17 items 3, 6 and 9)
and failed (or hung) before the limit existed.  The CLI is called in-process through
``main()`` with stderr captured.
"""
import os
import re
import shlex
import stat
import warnings
from html import unescape
from pathlib import Path

import pytest

from escalation_sim import cli
from escalation_sim.engines.exact import (MAX_EXACT_STATES_ESTIMATE, ExactTooLarge,
                                          exact_tally, state_count_estimate)
from escalation_sim.inputs.scenario import (MAX_DOSES, MAX_FILE_BYTES, MAX_PROBLEMS,
                                            MAX_YAML_DEPTH, MAX_YAML_VALUES, ScenarioError,
                                            _short, load_scenario, load_scenario_text)
from escalation_sim.outcomes import OutcomeStringError, parse_outcomes
from escalation_sim.run.study import MAX_CELLS, load_study

ROOT = Path(__file__).resolve().parents[1]
MTD2 = ROOT / "scenarios" / "standard_mtd2.yaml"
RELMA = ROOT / "scenarios" / "relma_cel_sle.yaml"

BASE = """\
name: test
doses: [DL1, DL2, DL3, DL4]
truth: {p_dlt: [0.05, 0.10, 0.18, 0.28]}
target: 0.25
trial: {max_n: 24, cohort_size: 3, start_dose: 1}
designs:
  - {type: "3+3"}
  - {type: boin}
  - {type: crm, skeleton: [0.10, 0.17, 0.25, 0.35]}
simulation: {n_trials: 1000, seed: 1}
"""

# "billion laughs": nine levels of nine aliases each, 9^9 = 387 million strings once expanded
LAUGHS = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'] + [
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi",
                                                                strict=True)]
BOMB_DEFS = "defs:\n" + "".join(f"  {line}\n" for line in LAUGHS)


def run_main(capsys, *args):
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def problems(text, source="s.yaml"):
    with pytest.raises(ScenarioError) as ei:
        load_scenario_text(text, source)
    return ei.value.problems


# -- item 3: YAML alias bombs -------------------------------------------------------------
@pytest.mark.parametrize("where, text", [
    ("description", BASE.replace("name: test", "name: test\ndescription: *i")),
    ("truth.p_dlt", BASE.replace("[0.05, 0.10, 0.18, 0.28]", "*i")),
    ("design option", BASE.replace("{type: boin}", "{type: boin, cutoff_eli: *i}")),
    ("unknown key", BASE + "extra: *i\n"),
])
def test_alias_bomb_refused_before_expansion(where, text):
    p = problems(BOMB_DEFS + text)
    assert len(p) == 1
    assert f"expands to more than {MAX_YAML_VALUES:,} values" in p[0]
    assert p[0].startswith("defs.")  # the field where the expansion crossed the limit
    assert "(line " in p[0]


def test_alias_bomb_in_a_study_file(tmp_path):
    f = tmp_path / "study.yaml"
    f.write_text(f"name: s\nscenarios: [{MTD2}]\n" + BOMB_DEFS + "sweep:\n  target: *i\n")
    with pytest.raises(ScenarioError) as ei:
        load_study(f)
    assert "expands to more than" in str(ei.value) and str(f) in str(ei.value)


def test_small_aliases_still_work():
    text = BASE.replace("truth: {p_dlt: [0.05, 0.10, 0.18, 0.28]}",
                        "truth: {p_dlt: &p [0.05, 0.10, 0.18, 0.28]}")
    text = text.replace("skeleton: [0.10, 0.17, 0.25, 0.35]", "skeleton: *p")
    sc = load_scenario_text(text, "s.yaml")
    assert sc.designs[2].spec.skeleton == [0.05, 0.10, 0.18, 0.28]


def test_recursive_alias_refused():
    p = problems(BASE + "extra: &r [1, *r]\n")
    assert p == ["extra[1]: alias *r is used inside the value it names (a value cannot "
                 "contain itself) (line 11, column 15)"]


def test_short_never_serializes_a_huge_value():
    # the error formatter's input can be a value shared 9^10 times over (a bomb built in
    # memory, or handed to the API); json.dumps of it never finishes
    x = ["lol"] * 9
    for _ in range(9):
        x = [x] * 9
    s = _short(x)
    assert len(s) <= 80 and s.startswith('[[[[[[[[[["lol", "lol"') and s.endswith("...")
    # an integer too long for str() (Python refuses more than 4300 digits)
    assert _short(10 ** 5000) == "<integer of about 5001 digits>"
    # short values as before: JSON for non-strings, repr for strings
    assert _short([0.1, None, True, float("nan")]) == "[0.1, null, true, NaN]"
    assert _short({"a": 1}) == '{"a": 1}' and _short("x") == "'x'"
    assert _short(float("inf")) == "inf"


# -- item 6: bounds on work --------------------------------------------------------------
def test_nesting_depth_refused():
    deep = "[" * 3000 + "]" * 3000  # RecursionError (exit 1) before the limit
    p = problems(BASE + f"extra: {deep}\n")
    assert len(p) == 1
    assert p[0].startswith("extra[0][0]...: ")
    assert f"nested more than {MAX_YAML_DEPTH} levels deep" in p[0]


def test_file_larger_than_the_limit(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text(BASE + "description: |\n" + ("  " + "x" * 98 + "\n") * (MAX_FILE_BYTES // 100))
    with pytest.raises(ScenarioError) as ei:
        load_scenario(f)
    assert ei.value.problems == [f"file is larger than {MAX_FILE_BYTES:,} bytes, the limit "
                                 "for scenario and study files (they are a few kilobytes)"]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_device_refused_without_reading(capsys):
    rc, _, err = run_main(capsys, "validate", "/dev/zero")  # was 7.5 GB, then MemoryError
    assert rc == 2
    assert err == "/dev/zero: not a regular file (a device, pipe or socket); give a YAML file\n"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_named_pipe_refused_without_blocking(tmp_path):
    f = tmp_path / "pipe.yaml"
    os.mkfifo(f)  # opening it for reading would block until a writer comes
    assert stat.S_ISFIFO(os.stat(f).st_mode)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(f)
    assert "not a regular file" in ei.value.problems[0]


def test_folder_refused(tmp_path):
    with pytest.raises(ScenarioError) as ei:
        load_scenario(tmp_path)
    assert ei.value.problems == ["is a folder, not a file"]


@pytest.mark.parametrize("args, message", [
    (["--n-trials", 10**12], "--n-trials must be <= 1,000,000,000 (got 1,000,000,000,000)"),
    (["--seed", 2**63], f"--seed must be an integer from 0 to 2^63 - 1 = {2**63 - 1} "
                        f"(got {2**63})"),
    (["--seed", -1], "--seed must be an integer from 0"),
    (["--n-jobs", 5000], "n_jobs must be -1 (every CPU) or an integer from 1 to 1024 "
                         "(got --n-jobs 5000)"),
    (["--chunk-size", 0], "--chunk-size must be >= 1 (got 0)"),
])
def test_run_options_bounded_like_the_file(capsys, args, message):
    rc, out, err = run_main(capsys, "run", MTD2, *args)
    assert rc == 2 and out == ""
    assert err.startswith("escalation-sim run: error: ") and message in err


def test_report_options_bounded(capsys):
    rc, _, err = run_main(capsys, "report", MTD2, "--n-trials", 10**12)
    assert rc == 2 and "--n-trials must be <= 1,000,000,000" in err


def test_study_grid_size_refused_before_building_cells(tmp_path):
    n = 101
    values = ", ".join(str(3 * (i + 1)) for i in range(n))
    targets = ", ".join(f"{0.2 + i / 1000:.3f}" for i in range(100))
    f = tmp_path / "study.yaml"
    f.write_text(f"name: big\nscenarios: [{MTD2}]\nsweep:\n  target: [{targets}]\n"
                 f"  trial.max_n: [{values}]\n")
    with pytest.raises(ScenarioError) as ei:
        load_study(f)
    (p,) = ei.value.problems
    assert p.startswith(f"sweep: the grid has {100 * n:,} cells (1 scenario file x 1 case x "
                        f"{100 * n:,} sweep combinations), more than the limit of "
                        f"{MAX_CELLS:,}; split the study")


def test_too_many_doses():
    k = MAX_DOSES + 1
    labels = ", ".join(f"D{i}" for i in range(k))
    probs = ", ".join(f"{0.001 + 0.9 * i / k:.4f}" for i in range(k))
    text = BASE.replace("[DL1, DL2, DL3, DL4]", f"[{labels}]").replace(
        "[0.05, 0.10, 0.18, 0.28]", f"[{probs}]")
    p = problems(text)
    assert f"doses: at most {MAX_DOSES} dose levels (got {k})" in p
    assert f"truth.p_dlt: at most {MAX_DOSES} dose levels (got {k} values)" in p


def test_problem_list_is_capped():
    probs = ", ".join(["x"] * 80)
    with pytest.raises(ScenarioError) as ei:
        load_scenario_text(BASE.replace("[0.05, 0.10, 0.18, 0.28]", f"[{probs}]"), "s.yaml")
    lines = str(ei.value).splitlines()
    assert len(ei.value.problems) > MAX_PROBLEMS  # all kept for the API
    assert len(lines) == MAX_PROBLEMS + 1
    assert lines[-1] == f"s.yaml: ... and {len(ei.value.problems) - MAX_PROBLEMS:,} more problems"


# exact enumeration ------------------------------------------------------------------------
def _brute_force_counts(K, c, m):
    """Distinct per-dose (patients, DLTs) vectors after m cohorts of c at K doses,
    counted by walking every allocation of cohorts to doses and every DLT count."""
    from itertools import product
    seen = set()
    for doses in product(range(K), repeat=m):
        k = [doses.count(d) for d in range(K)]
        for y in product(*[range(c * kd + 1) for kd in k]):
            seen.add((tuple(k), y))
    return len(seen)


@pytest.mark.parametrize("K, c, N", [(2, 3, 9), (3, 1, 5), (3, 2, 6), (4, 3, 9)])
def test_state_count_estimate_matches_brute_force(K, c, N):
    # the closed form counts (patients, DLTs) per dose; capped by the (c + 1)^m paths
    expected = sum(min((c + 1) ** m, _brute_force_counts(K, c, m)) for m in range(N // c + 1))
    assert state_count_estimate(K, N, c) == expected


@pytest.mark.parametrize("design, K, N, c", [("boin", 4, 24, 3), ("crm", 4, 24, 3),
                                             ("boin", 3, 12, 1), ("crm", 3, 12, 1)])
def test_state_count_estimate_bounds_the_real_graph(design, K, N, c):
    from escalation_sim.engines.graph import StateGraph
    probs = ", ".join(f"{0.1 * (i + 1):.1f}" for i in range(K))
    labels = ", ".join(f"D{i}" for i in range(K))
    text = BASE.replace("[DL1, DL2, DL3, DL4]", f"[{labels}]").replace(
        "[0.05, 0.10, 0.18, 0.28]", f"[{probs}]").replace(
        "max_n: 24, cohort_size: 3", f"max_n: {N}, cohort_size: {c}").replace(
        "skeleton: [0.10, 0.17, 0.25, 0.35]", f"skeleton: [{probs}]")
    sc = load_scenario_text(text)
    d = sc.design(design).design
    g = StateGraph(d)
    exact_tally(d, sc.p_true, graph=g)
    assert g.n_states <= state_count_estimate(K, N, c)


def test_exact_refused_for_a_huge_enumeration(capsys, tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text(BASE.replace("max_n: 24, cohort_size: 3", "max_n: 999, cohort_size: 1")
                 .replace('  - {type: "3+3"}\n', ""))
    rc, out, err = run_main(capsys, "exact", f)
    assert rc == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2  # boin and crm
    assert lines[0].startswith(f"{f}: trial.max_n: design 'boin': exact enumeration with 4 "
                               "doses and up to 999 patients in cohorts of 1 could visit more "
                               f"than {MAX_EXACT_STATES_ESTIMATE:.0e} trial states")
    assert "--method monte-carlo" in lines[0] and lines[0].endswith("(got 999)")


def test_exact_tally_refuses_for_api_callers():
    text = BASE.replace("max_n: 24, cohort_size: 3", "max_n: 999, cohort_size: 1")
    sc = load_scenario_text(text)
    with pytest.raises(ExactTooLarge, match="could visit more than"):
        exact_tally(sc.design("boin").design, sc.p_true)


def test_exact_stops_when_the_graph_outgrows_the_cap(monkeypatch):
    import escalation_sim.engines.exact as ex
    from escalation_sim.engines.graph import StateGraph
    monkeypatch.setattr(ex, "MAX_EXACT_STATES", 100)
    sc = load_scenario_text(BASE)
    d = sc.design("crm").design  # 3,650 states in full (docs/design.md)
    with pytest.raises(ExactTooLarge, match="more than 100 distinct trial states"):
        exact_tally(d, sc.p_true, graph=StateGraph(d))


def test_paths_cohorts_bounded(capsys):
    rc, _, err = run_main(capsys, "paths", MTD2, "--design", "boin", "--cohorts", 10**9)
    assert rc == 2
    assert "at most 8 cohorts (100,000 paths)" in err  # 4^8 = 65,536 <= 100,000 < 4^9


# calendar time ----------------------------------------------------------------------------
def _relma(**repl):
    text = RELMA.read_text()
    for a, b in repl.items():
        assert a in text
        text = text.replace(a, b)
    return text


def test_phase_duration_bounded():
    p = problems(_relma(**{"{name: rest, duration_days: 2}":
                           "{name: rest, duration_days: 1e12}"}))
    # (a bare number of days: the field is the duration itself, not its implied mean)
    assert p == ["conduct.phases[4].duration_days: must be <= 36,525 days (100 years) "
                 "(got 1e+12)"]


def test_sd_window_and_accrual_bounded():
    p = problems(_relma(**{"{mean: 21, sd: 5}": "{mean: 21, sd: 1.0e6, dist: lognormal}",
                           "dlt_window_days: 28": "dlt_window_days: 1.0e9",
                           "accrual_per_month: 1.0": "accrual_per_month: 1.0e9"}))
    text = "\n".join(p)
    assert "conduct.phases[1].duration_days.sd: must be <= 36,525 days" in text
    assert "conduct.dlt_window_days: must be <= 36,525 days" in text
    assert ("conduct.accrual_per_month: must be <= 1000 patients per month; use null for "
            "unlimited accrual (got 1e+09)") in text


@pytest.mark.parametrize("repl, message", [
    # one patient every 166 years: the trial would run for millennia
    ({"accrual_per_month: 1.0": "accrual_per_month: 0.0005"},
     "trial 0 ran past 1,000 years of simulated time"),
    # a manufacturing failure rate of 99.999%: replacements without end (was exit 1)
    ({"failure_prob: 0.05}": "failure_prob: 0.99999}"}, "trial 0 enrolled more than 2,200 "
                                                        "patients"),
])
def test_calendar_run_bounded(capsys, tmp_path, repl, message):
    f = tmp_path / "s.yaml"
    f.write_text(_relma(**repl))
    rc, _, err = run_main(capsys, "run", f, "--design", "boin", "--n-trials", 4, "--quiet")
    assert rc == 2
    assert err.startswith(f"{f}: conduct: calendar simulation: {message}")
    assert "Traceback" not in err


# -- item 9: smaller ------------------------------------------------------------------------
def test_duplicate_keys_refused():
    p = problems(BASE.replace("trial: {max_n: 24,", "trial: {max_n: 24, max_n: 30,"))
    assert p == ["trial.max_n: duplicate key: given at line 5 and again at line 5; "
                 "give each key once"]
    p = problems(BASE + "target: 0.3\n")
    assert p == ["target: duplicate key: given at line 4 and again at line 11; "
                 "give each key once"]


def test_merge_keys_are_not_duplicates():
    text = BASE.replace("trial: {max_n: 24, cohort_size: 3, start_dose: 1}",
                        "common: &c {max_n: 24, cohort_size: 3}\n"
                        "trial: {<<: *c, start_dose: 1}").replace("name: test\n", "")
    # merge keys work; the extra top-level key is then the only problem
    p = problems("name: test\n" + text)
    assert p == ["common: unknown key (got {\"max_n\": 24, \"cohort_size\": 3})"]


def test_unicode_digits_in_outcomes(capsys):
    with pytest.raises(OutcomeStringError, match="digits 0-9"):
        parse_outcomes("\u0661NNN", 4)  # ARABIC-INDIC DIGIT ONE, was read as dose 1
    rc, out, err = run_main(capsys, "next-dose", MTD2, "--design", "boin",
                            "--outcomes", "\u0661NNN")
    assert rc == 2 and out == "" and "--outcomes: cohort 1" in err
    rc, _, err = run_main(capsys, "select-mtd", MTD2, "--design", "boin",
                          "--n", "3,\u0663,3,0", "--dlt", "0,0,0,0")
    assert rc == 2 and "comma-separated integers" in err


def test_huge_dose_number_in_outcomes():
    with pytest.raises(OutcomeStringError, match=r"dose 999999999\.\.\. outside 1\.\.4"):
        parse_outcomes("9" * 5000 + "NNN", 4)  # int() of 5000 digits raises ValueError


def test_seed_above_2_63_in_file():
    p = problems(BASE.replace("seed: 1", f"seed: {2**63}"))
    assert len(p) == 1 and p[0].startswith("simulation.seed: ")


def test_boundaries_cutoff_eli_checked(capsys):
    # (checked by the BOIN design's own option model since `boundaries` became a table alias)
    rc, _, err = run_main(capsys, "boundaries", "--target", 0.3, "--cutoff-eli", 2)
    assert rc == 2
    assert err == ("escalation-sim boundaries: error: --cutoff-eli: Input should be less than "
                   "1 (got 2.0)\n")


def test_n_jobs_zero_in_file_names_file_and_field(capsys, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(BASE.replace("seed: 1}", "seed: 1, n_jobs: 0}"))
    rc, _, err = run_main(capsys, "run", f, "--n-trials", 10)
    assert rc == 2
    assert err == (f"{f}: simulation.n_jobs: must be -1 (every CPU) or a positive integer "
                   "(got 0)\n")


def test_acceptable_band_serializes_without_warning():
    sc = load_scenario_text(BASE + "oc: {acceptable: [0.2, 0.3]}\n")
    assert sc.model.oc.acceptable == (0.2, 0.3)  # a tuple: hashable, as the engines take it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the pydantic serializer warning becomes an error
        assert sc.resolved()["oc"]["acceptable"] == [0.2, 0.3]
        sc.model.model_dump_json()


def test_control_characters_refused_in_names():
    p = problems(BASE.replace("name: test", 'name: "\\e[31mred\\e[0m"'))
    assert p == ["name: must not contain control characters such as terminal escape codes "
                 "(got '\\x1b[31mred\\x1b[0m')"]
    p = problems(BASE.replace("[DL1, DL2, DL3, DL4]", '[DL1, "D\\aL2", DL3, DL4]')
                 .replace("{type: boin}", '{type: boin, name: "b\\x9bx"}'))
    assert "doses[1]: must not contain control characters such as terminal escape codes " \
           "(got 'D\\x07L2')" in p
    assert "designs[1].name: must not contain control characters such as terminal escape " \
           "codes (got 'b\\x9bx')" in p


def test_error_output_never_carries_raw_escape_codes(capsys, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(BASE + '"\\e]0;pwned\\a": 1\n')  # an unknown key that retitles the terminal
    rc, _, err = run_main(capsys, "validate", f)
    assert rc == 2
    assert "\x1b" not in err and "\x07" not in err
    assert err.startswith(f"{f}: \\x1b]0;pwned\\x07: unknown key")


def test_report_survives_mathtext_in_names(tmp_path):
    from escalation_sim.api import simulate
    from escalation_sim.report import render_report
    text = BASE.replace("name: test", "name: 'cost $\\frac{a}{$'").replace(
        "[DL1, DL2, DL3, DL4]", "['$x^{$', DL2, DL3, '$$']").replace(
        "{type: boin}", "{type: boin, name: '$\\alpha{$'}")
    sc = load_scenario_text(text, str(tmp_path / "s.yaml"))
    res = simulate(sc, n_trials=200, seed=1)
    html = render_report(res, swimmer=False)  # was a mathtext ParseSyntaxException
    assert "$\\alpha{$" in unescape(html)


def test_report_reproduce_command_is_shell_quoted(tmp_path):
    from escalation_sim.api import simulate
    from escalation_sim.report import render_report
    f = tmp_path / "my scenario; rm -rf ~.yaml"
    f.write_text(BASE)
    res = simulate(load_scenario(f), n_trials=50, seed=3)
    cmd = re.search(r"<code>(escalation-sim run [^<]*)</code>", render_report(res, swimmer=False))
    argv = shlex.split(unescape(cmd.group(1)))
    assert argv == ["escalation-sim", "run", str(f), "--n-trials", "50", "--seed", "3"]


# -- found by the fuzz suite (tests/test_fuzz.py) ---------------------------------------------
def test_conduct_values_are_strictly_typed():
    # `true` was read as 1 patient per month, "14" as 14 days
    p = problems(_relma(**{"accrual_per_month: 1.0": "accrual_per_month: true",
                           "stagger_days: 14": "stagger_days: '14'"}))
    assert any(x.startswith("conduct.accrual_per_month: ") and "(got true)" in x for x in p)
    assert any(x.startswith("conduct.stagger_days: ") and "(got '14')" in x for x in p)


def test_design_build_errors_name_the_option():
    p = problems(BASE.replace("skeleton: [0.10, 0.17, 0.25, 0.35]", "skeleton: [0.5]"))
    assert p == ["designs[2].skeleton (crm): skeleton has 1 values but there are 4 doses "
                 "(got [0.5])"]


def test_one_line_per_problem_whatever_the_message_holds():
    with pytest.raises(ScenarioError) as ei:
        load_scenario_text(BASE.replace("skeleton: [0.10, 0.17, 0.25, 0.35]",
                                        'skeleton: {"a\\nb": 0}'), "s.yaml")
    lines = str(ei.value).splitlines()
    assert len(lines) == len(ei.value.problems) == 1
    assert lines[0].startswith("s.yaml: designs[2].skeleton: ") and "a\\x0ab" in lines[0]


def test_user_keys_named_like_pydantic_tags_are_kept():
    # "str" and "function-..." were dropped from locations as if pydantic had put them there
    p = problems(BASE + "str: 1\n" + "function-x: 2\n")
    assert p == ["str: unknown key (got 1)", "function-x: unknown key (got 2)"]
    p = problems(BASE.replace("[DL1, DL2, DL3, DL4]", "[DL1, {label: DL2, str: x}, DL3, DL4]"))
    assert p == ["doses[1].str: unknown key (got 'x')"]


def test_nul_character_is_a_yaml_error(capsys, tmp_path):
    f = tmp_path / "nul.yaml"
    f.write_bytes(b"name: a\x00b\n")
    rc, _, err = run_main(capsys, "validate", f)
    assert rc == 2
    assert err.startswith(f"{f}: malformed YAML: unacceptable character #x0000")


def test_option_values_read_within_the_yaml_limits(capsys):
    bomb = "{" + ", ".join(LAUGHS) + "}"
    rc, out, err = run_main(capsys, "table", "--design", "crm", "--target", 0.25,
                            "--n-doses", 4, "--option", f"skeleton={bomb}")
    assert rc == 2 and out == ""
    assert err.startswith("escalation-sim table: error: --option skeleton: f[0]: the document "
                          f"expands to more than {MAX_YAML_VALUES:,} values")
