"""``escalation-sim table --design TYPE``: every design's decision table.

References (beside each test):
[MDA]   MD Anderson BOIN protocol template, Table 1 (target 0.3, cohorts of 3), the same rows as
        R ``BOIN::get.boundary(target = 0.3, ncohort = 10, cohortsize = 3)`` printed on RPubs
        (both cited in tests/test_boin.py).
[3+3]   Storer (1989) Biometrics 45:925 and Korn et al. (1994) Stat Med 13:1799, the rule as
        the project primer states it: 0/3 escalate; 1/3 three more; <= 1/6 escalate; >= 2
        DLTs: the dose is too toxic, the MTD is the dose below if it has 6 patients, with
        de-escalation 3 more are treated at the dose below when it has only 3; "no MTD" when
        the lowest dose is too toxic; the top dose needs 6 when ``top_dose_needs_six``.
        Without de-escalation (Lin & Shih 2001): the dose below is the MTD with 3 patients.
[DFCRM] Recommendations of R dfcrm's ``crm()`` for skeleton (0.05, 0.1, 0.25, 0.4, 0.6),
        target 0.25 (brockk/escalation's get_dfcrm documentation and tests, cited in
        tests/test_crm.py): "1NNN 2NTN" -> 2, "1NNN 2NTT" -> 1, "1NNN 2NNN" -> 5, and dfcrm
        ``crmsim``'s restriction (escalate at most one level; no escalation after a cohort
        whose DLT rate reaches the target).
[TITE]  The TITE-BOIN decision table for target 0.2, cohorts of 3 (Yuan et al. 2018 rules;
        PMC9260438 Table 1), as in tests/test_tite.py.
"""
from __future__ import annotations

import contextlib
import io
import json

import pytest

from escalation_sim.cli import main
from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.registry import get_entry, registry
from escalation_sim.designs.tables import TableRequest
from escalation_sim.designs.tite import TiteState
from escalation_sim.engines.paths import dose_paths
from escalation_sim.outcomes import state_from_outcomes


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------- BOIN
MDA_ROWS = {"n": [3, 6, 9, 12], "escalate": [0, 1, 2, 2], "deescalate": [2, 3, 4, 5],
            "eliminate": [3, 4, 5, 7]}


def test_boin_table_is_the_published_boundary_table():
    # [MDA]: the printed table, n = 3..12, target 0.3, cohorts of 3
    rc, out, err = cli("table", "--design", "boin", "--target", 0.3, "--max-n", 12,
                       "--cohort-size", 3)
    assert rc == 0 and err == ""
    expected = ["BOIN boundaries, target 0.3",
                "Number of patients treated" + "  " + "".join(f"{v:>4}" for v in MDA_ROWS["n"]),
                "Escalate if # of DLT <=" + " " * 5
                + "".join(f"{v:>4}" for v in MDA_ROWS["escalate"]),
                "De-escalate if # of DLT >=" + "  "
                + "".join(f"{v:>4}" for v in MDA_ROWS["deescalate"]),
                "Eliminate if # of DLT >=" + " " * 4
                + "".join(f"{v:>4}" for v in MDA_ROWS["eliminate"])]
    assert out.splitlines() == expected
    doc = json.loads(cli("table", "--design", "boin", "--target", 0.3, "--max-n", 12,
                         "--cohort-size", 3, "--json")[1])
    assert {k: doc[k] for k in MDA_ROWS} == MDA_ROWS


@pytest.mark.parametrize("args", [
    ("--target", 0.3, "--max-n", 12, "--cohort-size", 3),
    ("--target", 0.25, "--max-n", 30),
    ("--target", 0.2, "--max-n", 10, "--cohort-size", 2, "--json"),
])
def test_boundaries_is_the_boin_table(args):
    assert cli("boundaries", *args) == cli("table", "--design", "boin", *args)


def test_boundaries_options_are_the_boin_options():
    a = cli("boundaries", "--target", 0.3, "--max-n", 9, "--phi1", 0.2, "--phi2", 0.45,
            "--cutoff-eli", 0.9, "--json")
    b = cli("table", "--design", "boin", "--target", 0.3, "--max-n", 9, "--option", "phi1=0.2",
            "--option", "phi2=0.45", "--option", "cutoff_eli=0.9", "--json")
    assert a == b and a[0] == 0
    assert json.loads(a[1])["phi1"] == 0.2 and json.loads(a[1])["cutoff_eli"] == 0.9


def test_boin_extrasafe_adds_the_stopping_row():
    # the stop row is the elimination rule at cut-off 0.95 - 0.05 = 0.90: with n = 3 the
    # smallest y with Pr(p > 0.3 | Beta(1 + y, 4 - y)) > 0.90 is y = 2
    # (P(Binomial(4, 0.3) <= 2) = 0.9163 > 0.90 while P(Bin(4, 0.3) <= 1) = 0.6517)
    rc, out, _ = cli("table", "--design", "boin", "--target", 0.3, "--max-n", 3,
                     "--cohort-size", 3, "--option", "extrasafe=true")
    assert rc == 0
    assert out.splitlines()[-1].split() == ["Stop", "if", "#", "DLT", "at", "dose", "1", ">=",
                                            "2"]


def test_options_the_boundary_table_ignores_are_noted():
    rc, out, err = cli("table", "--design", "boin", "--target", 0.3, "--max-n", 6,
                       "--n-doses", 4, "--option", "n_earlystop=9")
    assert rc == 0 and out.startswith("BOIN boundaries")
    notes = err.splitlines()
    assert any(line.startswith("escalation-sim table: note: --n-doses: not used") for line in notes)
    assert any(line.startswith("escalation-sim table: note: --option n_earlystop: not used")
               for line in notes)


# ----------------------------------------------------------------------------- 3+3
def rule_rows(*options):
    rc, out, err = cli("table", "--design", "3+3", "--json", *options)
    assert rc == 0, err
    return {(r["at_dose"], r["when"]): (r["next"], r["next_dose"], r["cohort_size"], r["mtd"])
            for r in json.loads(out)["rows"]}


def test_three_plus_three_rule_table_is_the_textbook_rule():
    rows = rule_rows()  # [3+3], default variant (de-escalation, top dose needs 6)
    assert rows[("0/3", "dose d+1 not tried yet")] == ("escalate", "d+1", 3, None)
    assert rows[("1/3", "")] == ("stay", "d", 3, None)
    assert rows[("<= 1/6", "dose d+1 not tried yet")] == ("escalate", "d+1", 3, None)
    assert rows[(">= 2 (of 3 or 6)", "dose d-1 has 0/3")] == ("de-escalate", "d-1", 3, None)
    assert rows[(">= 2 (of 3 or 6)", "dose d-1 has <= 1/6")] == ("stop", None, None, "d-1")
    assert rows[(">= 2 (of 3 or 6)", "d is the lowest dose")] == ("stop", None, None, None)
    assert rows[("0/3", "d is the top dose")] == ("stay", "d", 3, None)
    assert rows[("<= 1/6", "d is the top dose")] == ("stop", None, None, "d")
    assert rows[("<= 1/6", "dose d+1 too toxic (came back down)")] == ("stop", None, None, "d")


def test_three_plus_three_variants_change_their_rows():
    # [3+3] without de-escalation the dose below is the MTD with its 3 patients; without
    # top_dose_needs_six 0/3 at the top dose makes it the MTD
    rows = rule_rows("--option", "de_escalation=false", "--option", "top_dose_needs_six=false")
    assert rows[(">= 2 (of 3 or 6)", "dose d-1 has 0/3")] == ("stop", None, None, "d-1")
    assert rows[("0/3", "d is the top dose")] == ("stop", None, None, "d")
    assert rows[("0/3", "dose d+1 not tried yet")] == ("escalate", "d+1", 3, None)


def test_three_plus_three_table_notes_and_errors():
    rc, out, err = cli("table", "--design", "3+3", "--target", 0.3, "--max-n", 12)
    assert rc == 0 and out.startswith("3+3 rule at the current dose d")
    assert "note: --target: not used" in err and "note: --max-n: not used" in err
    rc, out, err = cli("table", "--design", "3+3", "--cohort-size", 2)
    assert rc == 2 and out == ""
    assert err.strip() == ("escalation-sim table: error: --cohort-size: the 3+3 design uses "
                           "cohorts of 3 (got 2)")


# ----------------------------------------------------------------------------- CRM
DFCRM = ["--target", 0.25, "--cohort-size", 3, "--option", "skeleton=[0.05,0.1,0.25,0.4,0.6]"]


def test_crm_table_after_one_cohort_matches_dfcrm():
    # [DFCRM] from "1NNN" the next cohort goes to dose 2.  Model choices after it: 0 DLT ->
    # 5, restricted to one level up = 3; 1 DLT -> 2 (rate 1/3 >= 0.25: no escalation, and 2
    # is not above 2); 2 DLT -> 1; 3 DLT -> at most the dose of the 2-DLT case (coherence)
    # and at least dose 1: 1.
    rc, out, err = cli("table", "--design", "crm", *DFCRM, "--outcomes", "1NNN", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "next_cohort" and "model-based" in doc["statement"]
    assert (doc["next_dose"], doc["cohort_size"]) == (2, 3)
    assert [r["next_dose"] for r in doc["rows"]] == [3, 2, 1, 1]
    assert [r["dlt"] for r in doc["rows"]] == [0, 1, 2, 3]


def test_next_cohort_table_agrees_with_dose_paths():
    # the table and the paths engine are two views of the same decisions
    req = TableRequest(spec=get_entry("crm").spec_model.model_validate(
        {"type": "crm", "skeleton": [0.05, 0.1, 0.25, 0.4, 0.6]}), target=0.25, cohort_size=3,
        outcomes="1NNN 2NTN")
    tab = get_entry("crm").decision_table(req)
    design = get_entry("crm").build(req.spec, DesignContext(5, 0.25, 3, 30, 0))
    tree = dose_paths(design, state_from_outcomes("1NNN 2NTN", 5), 1)
    assert tab.data["next_dose"] == tree["next_dose"]
    got = [(r["next_dose"], r["stop_reason"]) for r in tab.data["rows"]]
    want = [(c["next_dose"], c["stop_reason"]) for c in tree["children"]]
    assert got == want


def test_crm_table_needs_the_number_of_doses():
    rc, out, err = cli("table", "--design", "crm", "--target", 0.25)
    assert rc == 2 and "--n-doses: required by the crm table" in err and "Traceback" not in err
    rc, out, err = cli("table", "--design", "crm", "--target", 0.25, "--n-doses", 4)
    assert rc == 0 and "no patient treated yet" in out


# ----------------------------------------------------------------------------- TITE
def pending_decision(rows, n, y, m, stft):
    """The decision the TITE-BOIN table gives for (n, y, m pending, STFT)."""
    for r in rows:
        if r["n"] == n and r["dlt_min"] <= y <= r["dlt_max"] and (
                r["dlt_min"] != r["dlt_max"] or r["pending_min"] <= m <= r["pending_max"]):
            if r["decision"].startswith("de-escalate whatever"):
                return "de-escalate"
            if r["decision"] in ("escalate", "stay", "suspend accrual"):
                return r["decision"].split()[0]
            s_d, s_e = r["stft_deescalate_max"], r["stft_escalate_min"]
            if s_d is not None and stft <= s_d:
                return "de-escalate"
            if s_e is not None and stft >= s_e:
                return "escalate"
            return "stay"
    raise AssertionError(f"no row for n={n} y={y} m={m}")


# [TITE] published rows (n, y, m) -> decision whatever the follow-up, and STFT cut-offs
PUBLISHED = [
    (3, 0, 0, "escalate"), (3, 0, 1, "escalate"), (3, 0, 2, "suspend"), (3, 0, 3, "suspend"),
    (3, 1, 0, "de-escalate"), (3, 1, 2, "de-escalate"),
    (6, 0, 0, "escalate"), (6, 0, 3, "escalate"), (6, 0, 4, "suspend"), (6, 1, 0, "stay"),
    (6, 1, 1, "stay"), (6, 1, 4, "suspend"), (6, 2, 4, "de-escalate"),
    (9, 0, 4, "escalate"), (9, 0, 5, "suspend"), (9, 1, 2, "escalate"), (9, 1, 5, "suspend"),
    (9, 2, 0, "stay"), (9, 2, 5, "suspend"), (9, 3, 6, "de-escalate"),
]
CUTOFFS = [(9, 1, 3, "escalate if STFT >= 0.77; else stay"),
           (9, 1, 4, "escalate if STFT >= 2.15; else stay"),
           (9, 2, 1, "de-escalate if STFT <= 0.52; else stay"),
           (9, 2, 2, "de-escalate if STFT <= 1.59; else stay"),
           (9, 2, 3, "de-escalate if STFT <= 2.66; else stay"),
           (9, 2, 4, "de-escalate if STFT <= 3.73; else stay")]


def tite_rows():
    rc, out, err = cli("table", "--design", "tite-boin", "--target", 0.2, "--max-n", 9,
                       "--cohort-size", 3, "--json")
    assert rc == 0, err
    return json.loads(out)["pending"]


def test_tite_boin_table_reproduces_the_published_table():
    rows = tite_rows()
    for n, y, m, expected in PUBLISHED:
        for stft in (0.0, 0.5 * m, 0.999 * m):
            assert pending_decision(rows, n, y, m, stft) == expected, (n, y, m, stft)
    for n, y, m, text in CUTOFFS:
        [row] = [r for r in rows if (r["n"], r["dlt_min"], r["pending_min"]) == (n, y, m)]
        assert row["decision"] == text


def test_tite_boin_table_agrees_with_decide():
    """The table's cut-offs are solved analytically; the design decides numerically."""
    design = get_entry("tite-boin").make(
        get_entry("tite-boin").spec_model(type="tite-boin"), DesignContext(3, 0.2, 3, 9, 0))
    rows = tite_rows()
    moves = {2: "escalate", 1: "stay", 0: "de-escalate"}
    for n in (3, 6, 9):
        for y in range(n + 1):
            for m in range(n - y + 1):
                for stft in sorted({0.0, 0.25 * m, 0.5 * m, 0.9 * m, 0.999 * m}):
                    pend = tuple((1, stft / m) for _ in range(m)) if m else ()
                    dec = design.decide(TiteState((3, n, 0), (0, y, 0), 1, 3, 0, pend))
                    got = "suspend" if dec.cohort_size == 0 else moves[dec.dose]
                    assert pending_decision(rows, n, y, m, stft) == got, (n, y, m, stft)


def test_tite_crm_table_says_what_it_shows():
    rc, out, err = cli("table", "--design", "tite-crm", "--target", 0.25, "--n-doses", 4)
    text = " ".join(out.split())
    assert rc == 0 and "this table is for complete data" in text and "model-based" in text


# ----------------------------------------------------------------------------- every design
#: options a design's table cannot do without (the BLRM's model is on the dose scale)
REQUIRED = {"blrm": ("--option", "dose_amounts=[10,20,40,80]")}


@pytest.mark.parametrize("type_name", sorted(registry()))
def test_every_design_has_a_table(type_name):
    rc, out, err = cli("table", "--design", type_name, "--target", 0.3, "--n-doses", 4,
                       *REQUIRED.get(type_name, ()), "--json")
    assert rc == 0, err
    assert isinstance(json.loads(out), dict)


@pytest.mark.parametrize("args, message", [
    (("--design", "bion", "--target", 0.3), "did you mean 'boin'"),
    (("--design", "boin", "--target", 0.3, "--option", "cutof_eli=0.9"),
     "--option cutof_eli: not an option of boin; did you mean 'cutoff_eli'? (got 0.9)"),
    (("--design", "boin", "--target", 0.3, "--option", "cutoff_eli=1.2"),
     "--option cutoff_eli: "),
    (("--design", "boin", "--target", 0.3, "--option", "phi1"), "expected NAME=VALUE"),
    (("--design", "boin"), "--target: required by the boin table"),
    (("--design", "crm", "--target", 0.3, "--n-doses", 4, "--outcomes", "1NNN 9T"),
     "--outcomes: cohort 2 '9T': dose 9 outside 1..4"),
    (("--design", "boin", "--target", 0.3, "--max-n", 0), "--max-n must be >= 1 (got 0)"),
])
def test_bad_input_is_one_clear_line(args, message):
    rc, out, err = cli("table", *args)
    assert rc == 2 and out == "" and "Traceback" not in err
    assert message in err
    assert all(line.startswith("escalation-sim table: error: ") for line in err.splitlines())
