"""Fuzzing the inputs: valid scenarios mutated into invalid ones, garbage documents, and
arbitrary outcome strings, through the command line's ``main()`` in-process.

Every bad input must give exit code 2 and lines ``FILE: field.path: message``, the mutated
field named, bounded in length, with no traceback (README, "Input limits"; issue 17).
The hypothesis runs are derandomised (the same examples on every run) and small.
"""
import copy
import re
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escalation_sim import cli
from escalation_sim.designs.registry import design_types
from escalation_sim.inputs.scenario import parse_yaml, printable
from escalation_sim.outcomes import state_from_outcomes

ROOT = Path(__file__).resolve().parents[1]
MTD2 = ROOT / "scenarios" / "standard_mtd2.yaml"
RELMA = ROOT / "scenarios" / "relma_cel_sle.yaml"

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=100,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

# the base document: the seed scenario (every design type the file format has, a conduct
# block) plus an acceptable band, so every block of the schema can be mutated
BASE = yaml.safe_load(RELMA.read_text())
BASE["oc"] = {"acceptable": [0.2, 0.3]}
BASE["doses"][1] = "DL2"  # doses may be labels or mappings
assert [d["type"] for d in BASE["designs"]] == ["3+3", "boin", "crm", "tite-crm", "tite-boin"]

nan, inf = float("nan"), float("inf")
ANY = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                st.lists(st.integers(), max_size=3),
                st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
NOT_STR_OPT = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.lists(st.integers(), max_size=3),
                        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
NOT_STR = st.one_of(st.none(), NOT_STR_OPT)
NOT_NUM = st.one_of(st.text(max_size=8), st.lists(st.floats(), max_size=3),
                    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
NOT_BOOL = st.one_of(st.integers(), st.floats(), st.text(max_size=8), st.none())


def _maybe_none(strategy, optional):
    return strategy if optional else st.one_of(st.none(), strategy)


def bad_int(lo, hi=None, optional=False):
    """Integers outside [lo, hi], floats, booleans, text ...; None too unless optional."""
    out = [NOT_NUM, st.booleans(), st.floats(), st.integers(max_value=lo - 1)]
    if hi is not None:
        out.append(st.integers(min_value=hi + 1))
    return _maybe_none(st.one_of(*out), optional)


def bad_real(lo, hi, lo_ok, hi_ok, optional=False):
    """Numbers outside the valid range from ``lo`` to ``hi`` (``lo_ok``: ``lo`` itself is
    valid, likewise ``hi_ok``), NaN, booleans, text; None too unless optional."""
    out = [NOT_NUM, st.booleans(), st.just(nan), st.floats(max_value=lo, exclude_max=lo_ok)]
    if hi != inf:
        out.append(st.floats(min_value=hi, exclude_min=hi_ok))
    return _maybe_none(st.one_of(*out), optional)


def bad_days(zero_ok=True):
    return bad_real(0.0, 36_525.0, lo_ok=zero_ok, hi_ok=True)


PROB_LIST_BAD = st.one_of(
    NOT_NUM, st.none(),
    st.lists(st.floats(0.01, 0.99), min_size=0, max_size=3),            # too few values
    st.lists(st.floats(0.01, 0.99), min_size=5, max_size=6),            # too many values
    st.lists(st.one_of(st.floats(min_value=1.0), st.floats(max_value=0.0), st.text(max_size=3),
                       st.just(nan), st.none()), min_size=4, max_size=4),
)


def _reads_back(key: str) -> bool:
    """PyYAML's dumper leaves 25e6 unquoted (read here as a number) and writes a NEL inside
    quotes (read as a line break, folded to a space): such keys do not survive the file."""
    return list(parse_yaml(yaml.safe_dump({key: 0}, allow_unicode=True), "k")) == [key]


def unknown_key(known):
    return st.text(min_size=1, max_size=10).filter(
        lambda k: k not in known and k.strip() and _reads_back(k))


def not_a_design_type():
    return st.one_of(NOT_STR, st.text(max_size=10).filter(
        lambda t: t.strip().lower() not in design_types()))


# (path into the document, strategy of values that make it invalid)
MUTATIONS = [
    (("name",), NOT_STR),
    (("description",), NOT_STR),
    (("target",), bad_real(0.0, 1.0, lo_ok=False, hi_ok=False)),
    (("truth", "p_dlt"), PROB_LIST_BAD),
    (("truth", "allow_non_monotone"), NOT_BOOL),
    (("doses",), st.one_of(NOT_NUM.filter(lambda v: not isinstance(v, list)), st.just([]))),
    (("doses", 0, "amount"), bad_real(0.0, inf, lo_ok=False, hi_ok=True, optional=True)),
    (("doses", 0, "unit"), NOT_STR_OPT),
    (("trial", "max_n"), bad_int(1, 1000)),
    (("trial", "cohort_size"), bad_int(1, 12)),
    (("trial", "start_dose"), bad_int(1, 4)),
    (("simulation", "n_trials"), bad_int(1, 10**9)),
    (("simulation", "seed"), bad_int(0, 2**63 - 1)),
    (("simulation", "n_jobs"), st.one_of(bad_int(-1, 1024), st.just(0))),
    (("simulation", "method"), st.text(max_size=10).filter(
        lambda t: t not in ("monte-carlo", "exact"))),
    (("oc", "acceptable"), st.one_of(
        NOT_NUM.filter(lambda v: not isinstance(v, list)), st.lists(st.floats(0, 1), min_size=3, max_size=4),
        st.tuples(st.floats(0.5, 1.0, exclude_min=True), st.floats(0.0, 0.5)).map(list),
        st.tuples(st.floats(max_value=-0.01), st.floats(0, 1)).map(list))),
    (("designs",), st.one_of(NOT_NUM.filter(lambda v: not isinstance(v, list)), st.just([]))),
    (("designs", 1, "type"), not_a_design_type()),
    (("designs", 1, "cutoff_eli"), bad_real(0.5, 1.0, lo_ok=True, hi_ok=False)),
    (("designs", 1, "n_earlystop"), bad_int(1, optional=True)),
    # (an empty mapping is the default calibration: valid)
    (("designs", 2, "skeleton"), PROB_LIST_BAD.filter(lambda v: v is not None and v != {})),
    (("designs", 2, "prior_var"), bad_real(0.0, 100.0, lo_ok=False, hi_ok=True)),
    (("designs", 0, "name"), NOT_STR_OPT),
    (("conduct", "accrual_per_month"), bad_real(0.0, 1000.0, lo_ok=False, hi_ok=True,
                                                optional=True)),
    (("conduct", "dlt_window_days"), bad_days(zero_ok=False)),
    (("conduct", "stagger_days"), bad_days()),
    (("conduct", "review_days"), bad_days()),
    (("conduct", "max_in_followup"), bad_int(1, optional=True)),
    (("conduct", "when_paused"), st.text(max_size=8).filter(lambda t: t not in ("wait", "leave"))),
    (("conduct", "screening", "failure_prob"), bad_real(0.0, 1.0, lo_ok=True, hi_ok=False)),
    (("conduct", "screening", "duration_days"), bad_days()),
    (("conduct", "phases", 1, "duration_days"), bad_days()),
    (("conduct", "phases", 1, "duration_days"), st.fixed_dictionaries(
        {"mean": st.floats(1, 30), "sd": st.one_of(bad_days(), st.floats(100, 1000))})),
    (("conduct", "phases", 1, "failure_prob"), bad_real(0.0, 1.0, lo_ok=True, hi_ok=False)),
    (("conduct", "phases", 2, "probability"), bad_real(0.0, 1.0, lo_ok=True, hi_ok=True)),
    (("conduct", "phases", 0, "name"), st.one_of(NOT_STR, st.just(""), st.just("a b"))),
]
# unknown keys in every mapping
for where, model_keys in [((), BASE), (("trial",), BASE["trial"]),
                          (("simulation",), BASE["simulation"] | {"n_jobs": 1}),
                          (("designs", 1), {"type", "name", "target", "cohort_size", "max_n",
                                            "start_dose", "stop_n_at_dose", "phi1", "phi2",
                                            "cutoff_eli", "extrasafe", "offset", "n_earlystop",
                                            "titration", "bound_mtd", "titration_from_start_dose",
                                            "titration_step_down", "titration_complete_cohort"}),
                          (("conduct",), BASE["conduct"] | {"dlt_onset": 0, "dropout_prob": 0,
                                                            "stagger_mode": 0,
                                                            "stagger_scope": 0,
                                                            "review_days": 0,
                                                            "gate_before_phase": 0}),
                          (("conduct", "phases", 0), {"name", "duration_days", "failure_prob",
                                                      "probability", "kind"})]:
    MUTATIONS.append((where + (None,), st.tuples(unknown_key(set(model_keys)), ANY)))


def _field(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
    return out


def _apply(doc, path, value):
    """Set ``path`` in ``doc``; a path ending in None adds the (key, value) pair ``value``.
    Returns the path as the messages write it (mapping keys as text: ``grades.3``, list
    indices as numbers: ``phases[1]``)."""
    cur, named = doc, []
    for p in path[:-1]:
        named.append(str(p) if isinstance(cur, dict) else p)
        cur = cur[p]
    last = path[-1]
    if last is None:
        last, value = value
    elif isinstance(cur, list) and last >= len(cur):
        raise IndexError(path)
    cur[last] = value
    named.append(str(last) if isinstance(cur, dict) else last)
    return tuple(named)


def check_bad_input(rc, out, err, f, field=None):
    """Exit 2, every line ``FILE: field: message`` (bounded), no traceback; and when
    ``field`` (a path) is given, a line names it (see :func:`names`)."""
    assert rc == 2, (rc, out, err)
    assert out == ""
    assert "Traceback" not in err and "unexpected error" not in err, err
    lines = err.splitlines()
    assert lines and all(line.startswith(f"{f}: ") for line in lines), err
    assert all(len(line) < 2000 for line in lines), max(map(len, lines))
    assert "\x1b" not in err and "\x07" not in err
    if field is not None:
        assert any(names(line, f, field) for line in lines), (field, err)


def names(line: str, f, path) -> bool:
    """``line`` is about the field at ``path``: located at it, inside it ("field.x",
    "field[0]"), at it with a design name ("designs[1] (boin)"), or at a parent whose
    message names the field's key ("truth: give either p_dlt or ...")."""
    field = _field(path)
    head = f"{f}: {printable(field, keep_newlines=False)}"
    if line.startswith(head) and line[len(head):len(head) + 1] in ":.[ ":
        return True
    for k in range(len(path) - 1, 0, -1):
        parent = f"{f}: {printable(_field(path[:k]), keep_newlines=False)}: "
        if line.startswith(parent) and str(path[-1]) in line[len(parent):]:
            return True
    return False


@settings(FUZZ, max_examples=300)
@given(mutation=st.sampled_from(MUTATIONS).flatmap(
    lambda m: st.tuples(st.just(m[0]), m[1])))
def test_mutated_scenario_names_file_and_field(mutation, tmp_path_factory, capsys):
    path, value = mutation
    doc = copy.deepcopy(BASE)
    named = _apply(doc, path, value)
    f = tmp_path_factory.mktemp("fuzz") / "scenario.yaml"
    f.write_text(yaml.safe_dump(doc, allow_unicode=True))
    rc = cli.main(["validate", str(f)])
    out, err = capsys.readouterr()
    check_bad_input(rc, out, err, f, named)


# the graded-toxicity truth (truth.toxicities and the scenario's dlt rule)
GRADED = yaml.safe_load((ROOT / "scenarios" / "cart_crs_icans.yaml").read_text())
assert [t["type"] for t in GRADED["truth"]["toxicities"]] == ["CRS", "ICANS"]
GRADED_MUTATIONS = [
    (("truth", "toxicities", 0, "type"), st.one_of(NOT_STR, st.just(""), st.just("a b"))),
    (("truth", "toxicities", 0, "grades"), st.one_of(
        NOT_NUM.filter(lambda v: v != {}), st.none(), st.just({}),
        st.dictionaries(st.integers(6, 99) | st.integers(-5, 0), st.just([0.1] * 4),
                        min_size=1, max_size=2))),
    (("truth", "toxicities", 0, "grades", 3), PROB_LIST_BAD),
    (("truth", "toxicities", 0, "grades", 1), st.lists(st.floats(0.7, 1.0), min_size=4,
                                                       max_size=4)),  # sums above 1
    (("truth", "toxicities", 1, "onset_days"), bad_days(zero_ok=True).filter(
        lambda v: v is not None)),
    (("truth", "correlation"), bad_real(-1.0, 1.0, lo_ok=False, hi_ok=False, optional=True)),
    (("truth", "efficacy"), st.one_of(
        NOT_NUM, st.lists(st.floats(0, 1), min_size=1, max_size=3),
        st.lists(st.one_of(st.floats(min_value=1.0, exclude_min=True),
                           st.floats(max_value=0.0, exclude_max=True)), min_size=4, max_size=4))),
    (("dlt", 0, "min_grade"), bad_int(1, 5)),
    (("dlt", 0, "type"), st.one_of(NOT_STR, st.text(max_size=8).filter(
        lambda t: t.strip() not in ("CRS", "ICANS")))),
    (("dlt",), st.one_of(NOT_NUM.filter(lambda v: not isinstance(v, list)), st.just([]))),
    (("truth", "toxicities", 0, None), st.tuples(unknown_key({"type", "grades", "onset_days"}),
                                                 ANY)),
]


@FUZZ
@given(mutation=st.sampled_from(GRADED_MUTATIONS).flatmap(
    lambda m: st.tuples(st.just(m[0]), m[1])))
def test_mutated_graded_truth_names_file_and_field(mutation, tmp_path_factory, capsys):
    path, value = mutation
    doc = copy.deepcopy(GRADED)
    named = _apply(doc, path, value)
    f = tmp_path_factory.mktemp("fuzz") / "graded.yaml"
    f.write_text(yaml.safe_dump(doc, allow_unicode=True))
    rc = cli.main(["validate", str(f)])
    out, err = capsys.readouterr()
    check_bad_input(rc, out, err, f, named)


YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20)


@FUZZ
@given(doc=YAML_VALUES)
def test_garbage_documents(doc, tmp_path_factory, capsys):
    f = tmp_path_factory.mktemp("fuzz") / "garbage.yaml"
    f.write_text(yaml.safe_dump(doc, allow_unicode=True))
    rc = cli.main(["validate", str(f)])
    check_bad_input(rc, *capsys.readouterr(), f)


@settings(FUZZ, max_examples=100)
@given(data=st.binary(max_size=200))
def test_garbage_bytes(data, tmp_path_factory, capsys):
    f = tmp_path_factory.mktemp("fuzz") / "bytes.yaml"
    f.write_bytes(data)
    rc = cli.main(["validate", str(f)])
    check_bad_input(rc, *capsys.readouterr(), f)


# -- outcome strings -------------------------------------------------------------------------
COHORTS = st.lists(st.tuples(st.integers(1, 4), st.lists(st.booleans(), min_size=1,
                                                         max_size=6)), max_size=8)


@FUZZ
@given(cohorts=COHORTS, seps=st.lists(st.sampled_from([" ", "  ", "\t", "\n", " \t "]),
                                      min_size=9, max_size=9),
       lower=st.lists(st.booleans(), min_size=48, max_size=48))
def test_outcome_strings_round_trip(cohorts, seps, lower):
    letters = iter(lower)
    tokens = [f"{d}" + "".join(("t" if dlt else "n") if next(letters) else ("T" if dlt else "N")
                               for dlt in pts) for d, pts in cohorts]
    text = seps[0] + "".join(t + s for t, s in zip(tokens, seps[1:], strict=False))
    state = state_from_outcomes(text, 4)
    for dose in range(4):  # the counts of the generated cohorts, summed independently
        at = [pts for d, pts in cohorts if d == dose + 1]
        assert state.n[dose] == sum(len(p) for p in at)
        assert state.y[dose] == sum(sum(p) for p in at)


TOKEN = re.compile(r"[0-9]+[NTnt]+")


def _valid(text: str) -> bool:
    """Oracle: ASCII tokens, doses 1..4 (written without reference to the parser)."""
    for tok in text.split():
        if not TOKEN.fullmatch(tok) or not tok.isascii():
            return False
        digits = tok.rstrip("NTnt")
        if not 1 <= int(digits) <= 4:
            return False
    return True


NEAR_VALID = st.tuples(COHORTS, st.integers(0, 40), st.characters()).map(
    lambda t: (lambda s: s[:t[1]] + t[2] + s[t[1]:])(
        " ".join(f"{d}" + "".join("T" if x else "N" for x in p) for d, p in t[0])))


@FUZZ
@given(text=st.one_of(st.text(max_size=20), NEAR_VALID))
def test_outcome_strings_on_the_command_line(text, capsys):
    if "\x00" in text:  # an argv string cannot hold NUL
        text = text.replace("\x00", "")
    # (--outcomes=TEXT: as a separate word, a TEXT starting with '-' is an option to argparse)
    rc = cli.main(["next-dose", str(MTD2), "--design", "boin", f"--outcomes={text}"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "unexpected error" not in err
    if _valid(text):
        assert rc == 0 and err == "", err
        assert out.startswith("boin after ")
    else:
        assert rc == 2 and out == ""
        assert err.startswith("escalation-sim next-dose: error: --outcomes: cohort "), err
        assert "\x1b" not in err and len(err) < 500

