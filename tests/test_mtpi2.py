"""mTPI-2 (Guo et al. 2017) against the published decisions, an exact-arithmetic derivation
of its table, hand-derived cases and exact enumeration.

Reference sources used below (cited again beside each block):

[FIG3]   Guo W, Wang S-J, Yang S, Lynn H, Ji Y (2017), Contemp Clin Trials 58:23, Figure 3
         (target 0.3, epsilon1 = epsilon2 = 0.05, exclusion at 0.95), as encoded in R package
         escalation's test "mtpi_selector matches published example"
         (brockk/escalation tests/testthat/test_mtpi2.R): for outcome strings at doses 1, 2
         and 5 of a 5-dose trial, the next dose (or "stop, no dose") and which doses remain
         admissible.  The paper itself could not be read: these are PUBLISHED values taken
         through that test.
[NOTES]  The project's reference notes (mtpi2.md): count-form tables for targets 0.3, 0.25,
         0.2, n = 1..30.  COMPUTED by the note's author from the rule (no published table
         was reachable beyond [FIG3]); the note's elimination row has no minimum n, the
         design's default (FIND) is n >= 3, so only its n >= 3 cells are compared.
[EXACT]  The rule re-derived here with exact rational arithmetic (no floating point, no code
         from the module under test): the Beta(y+1, n-y+1) cdf at x is
         P(Binomial(n+1, x) >= y+1); intervals cut from the decimal target and epsilons;
         unit probability mass = probability / width; ties to the lowest interval.
[FIND]   R package FIND 0.1.1 ``run_sim_mtpi2`` (n.earlystop counted at the dose of the next
         cohort; elimination needs n >= 3) and ``select_mtd`` (BOIN's select.mtd).
[ESC]    R package escalation ``select_mtpi2_mtd``: isotonic Beta(1, 1) posterior means.
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from math import comb

import pytest

from escalation_sim import exact_oc, simulate
from escalation_sim.designs.base import DesignContext
from escalation_sim.designs.interval import count_form
from escalation_sim.designs.mtpi2 import MTPI2, equal_width_intervals
from escalation_sim.designs.registry import get_entry
from escalation_sim.inputs.scenario import load_scenario_text
from escalation_sim.outcomes import state_from_outcomes
from escalation_sim.types import StopReason, TrialState

from reference_tables import MTPI2_KEYBOARD_COUNT_FORM

N1_30 = list(range(1, 31))


# ----------------------------------------------------------------------------- exact oracle
@lru_cache(maxsize=None)
def beta_cdf(x: Fraction, n: int, y: int) -> Fraction:
    """cdf of Beta(y + 1, n - y + 1) at x = P(Binomial(n + 1, x) >= y + 1), exactly."""
    return sum((comb(n + 1, k) * x ** k * (1 - x) ** (n + 1 - k)
                for k in range(y + 1, n + 2)), Fraction(0))


def exact_cuts(target: str, e1: str, e2: str):
    t, a, b = Fraction(target), Fraction(e1), Fraction(e2)
    lo, hi, w = t - a, t + b, a + b
    below, above = [], []
    k = 1
    while lo - k * w > 0:
        below.append(lo - k * w)
        k += 1
    k = 1
    while hi + k * w < 1:
        above.append(hi + k * w)
        k += 1
    return [Fraction(0)] + below[::-1] + [lo, hi] + above + [Fraction(1)], len(below) + 1


def exact_letters(target: str, n: int, *, e1: str = "0.05", e2: str = "0.05",
                  ties: str = "low", compensate: bool = False, min_n: int = 3,
                  cutoff: Fraction = Fraction(95, 100)) -> str:
    """The decision codes (E, S, D, U = eliminate) for y = 0..n, by exact arithmetic.
    ``compensate``: Keyboard's form (plain probability of the interior keys, the two edge
    keys scaled by width / own width) instead of probability / width."""
    cuts, ei = exact_cuts(target, e1, e2)
    t = Fraction(target)
    width = Fraction(e1) + Fraction(e2)
    out = []
    for y in range(n + 1):
        if n >= min_n and 1 - beta_cdf(t, n, y) > cutoff:
            out.append("U")
            continue
        score = []
        for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
            mass = beta_cdf(b, n, y) - beta_cdf(a, n, y)
            if compensate:
                edge = i in (0, len(cuts) - 2)
                score.append(mass * width / (b - a) if edge else mass)
            else:
                score.append(mass / (b - a))
        best = max(score)
        idx = [i for i, s in enumerate(score) if s == best]
        i = idx[0] if ties == "low" else idx[-1]
        out.append("E" if i < ei else "D" if i > ei else "S")
    return "".join(out)


def count_rows_from_letters(rows):
    esc = [max((y for y, c in enumerate(r) if c == "E"), default=None) for r in rows]
    dee = [min((y for y, c in enumerate(r) if c in "DU"), default=None) for r in rows]
    eli = [min((y for y, c in enumerate(r) if c == "U"), default=None) for r in rows]
    return esc, dee, eli


def design(target=0.3, n_doses=5, cohort_size=3, **kw):
    return MTPI2(n_doses=n_doses, target=target, cohort_size=cohort_size, **kw)


# ----------------------------------------------------------------------------- [FIG3]
# (outcomes, next dose 1-based or None = stop with no dose, admissible doses) - target 0.3,
# 5 doses.  Transcribed from the escalation test reproducing Figure 3 of Guo et al. (2017).
ALL5 = (1, 1, 1, 1, 1)
FIG3 = [
    # dose 1, 3 patients
    ("1NNN", 2, ALL5), ("1NNT", 1, ALL5), ("1NTT", 1, ALL5), ("1TTT", None, (0,) * 5),
    # dose 1, 6 patients
    ("1NNN 1NNN", 2, ALL5), ("1NNN 1NNT", 2, ALL5), ("1NNN 1NTT", 1, ALL5),
    ("1NNN 1TTT", 1, ALL5), ("1NNT 1TTT", None, (0,) * 5), ("1NTT 1TTT", None, (0,) * 5),
    ("1TTT 1TTT", None, (0,) * 5),
    # dose 1, 9 patients
    ("1NNN 1NNN 1NNN", 2, ALL5), ("1NNN 1NNN 1NNT", 2, ALL5), ("1NNN 1NNN 1NTT", 2, ALL5),
    ("1NNN 1NNN 1TTT", 1, ALL5), ("1NNN 1NNT 1TTT", 1, ALL5),
    ("1NNN 1NTT 1TTT", None, (0,) * 5), ("1TTT 1TTT 1TTT", None, (0,) * 5),
    # dose 1, 10 patients
    ("1NNN 1NNN 1NNN 1N", 2, ALL5), ("1NNN 1NNN 1NNN 1T", 2, ALL5),
    ("1NNN 1NNN 1NNT 1T", 2, ALL5), ("1NNN 1NNN 1NTT 1T", 1, ALL5),
    ("1NNN 1NNN 1TTT 1T", 1, ALL5), ("1NNN 1NNT 1TTT 1T", 1, ALL5),
    ("1NNN 1NTT 1TTT 1T", None, (0,) * 5),
    # dose 2
    ("2NNN", 3, ALL5), ("2NNT", 2, ALL5), ("2NTT", 1, ALL5), ("2TTT", 1, (1, 0, 0, 0, 0)),
    ("2NNN 2NNN", 3, ALL5), ("2NNN 2NNT", 3, ALL5), ("2NNN 2NTT", 2, ALL5),
    ("2NNN 2TTT", 1, ALL5), ("2NNT 2TTT", 1, (1, 0, 0, 0, 0)),
    ("2TTT 2TTT", 1, (1, 0, 0, 0, 0)),
    ("2NNN 2NNN 2NNN", 3, ALL5), ("2NNN 2NNN 2NTT", 3, ALL5), ("2NNN 2NNN 2TTT", 2, ALL5),
    ("2NNN 2NNT 2TTT", 1, ALL5), ("2NNN 2NTT 2TTT", 1, (1, 0, 0, 0, 0)),
    ("2NNN 2NNN 2NNN 2T", 3, ALL5), ("2NNN 2NNN 2NNT 2T", 3, ALL5),
    ("2NNN 2NNN 2NTT 2T", 2, ALL5), ("2NNN 2NNN 2TTT 2T", 1, ALL5),
    ("2NNN 2NTT 2TTT 2T", 1, (1, 0, 0, 0, 0)), ("1NTT 2TTT 2TTT 2T", 1, (1, 0, 0, 0, 0)),
    # top dose (escalation impossible)
    ("5NNN", 5, ALL5), ("5NNT", 5, ALL5), ("5NTT", 4, ALL5), ("5TTT", 4, (1, 1, 1, 1, 0)),
    ("5NNN 5NNN", 5, ALL5), ("5NNN 5NNT", 5, ALL5), ("5NNN 5NTT", 5, ALL5),
    ("5NNN 5TTT", 4, ALL5), ("5NNT 5TTT", 4, (1, 1, 1, 1, 0)),
    ("5NNN 5NNN 5TTT", 5, ALL5), ("5NNN 5NNT 5TTT", 4, ALL5),
    ("5NNN 5NTT 5TTT", 4, (1, 1, 1, 1, 0)),
]


@pytest.mark.parametrize("outcomes, expected, admissible", FIG3)
def test_published_figure3_decisions(outcomes, expected, admissible):
    # [FIG3]
    d = design()
    state = state_from_outcomes(outcomes, 5)
    dec = d.decide(state)
    if expected is None:
        assert dec.stop and dec.stop_reason is StopReason.LOWEST_DOSE_TOO_TOXIC
        assert d.select_mtd(state) is None
    else:
        assert not dec.stop and dec.dose + 1 == expected, dec.reason
    elim = d.estimates(state)["eliminated"]
    assert [not e for e in elim] == [bool(a) for a in admissible]


# ----------------------------------------------------------------------------- tables
# [NOTES] count form, n = 1..30 (E if y <=, D if y >=, DU if y >=); computed, not published.
NOTES = MTPI2_KEYBOARD_COUNT_FORM


@pytest.mark.parametrize("target", ["0.3", "0.25", "0.2"])
def test_table_equals_exact_derivation(target):
    # [EXACT]: every (n, y), n = 1..30, elimination from n = 3 (the design's default)
    b = count_form(design(float(target)), N1_30)
    assert b["monotone"]
    for n, codes in zip(N1_30, b["decisions"], strict=True):
        assert codes == exact_letters(target, n), n


@pytest.mark.parametrize("target", [0.3, 0.25, 0.2])
def test_table_equals_the_notes_count_form(target):
    # [NOTES]: escalate and de-escalate rows for n >= 3, elimination rows for n >= 3 (the
    # note tabulates elimination without a minimum n); the n = 1, 2 rows with
    # elimination_min_n 1, which is how the note's table was made
    esc, dee, eli = NOTES[target]
    b = count_form(design(target), N1_30)
    assert b["escalate"] == esc
    assert b["deescalate"][2:] == dee[2:]
    assert b["eliminate"][2:] == eli[2:]
    assert b["eliminate"][:2] == [None, None]
    b1 = count_form(design(target, elimination_min_n=1), N1_30)
    assert (b1["escalate"], b1["deescalate"], b1["eliminate"]) == (esc, dee, eli)


def test_exact_derivation_reproduces_the_published_cells():
    # [FIG3] cells as (n, y) -> code at target 0.3, pinned to the oracle: n = 3: E S D U;
    # n = 6: E E S D U..; n = 9: E E E S D U..; n = 10: E E E S D D U..
    assert exact_letters("0.3", 3) == "ESDU"
    assert exact_letters("0.3", 6) == "EESDUUU"
    assert exact_letters("0.3", 9) == "EEESDUUUUU"
    assert exact_letters("0.3", 10) == "EEESDDUUUUU"


def test_intervals_target_03():
    # the partition of the note: [0,0.05) [0.05,0.15) [0.15,0.25) | [0.25,0.35] | [0.35,0.45)
    # ... [0.85,0.95) [0.95,1]
    cuts, ei = equal_width_intervals(0.3, 0.05, 0.05)
    assert cuts == (0.0, 0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 1.0)
    assert (cuts[ei], cuts[ei + 1]) == (0.25, 0.35)


def test_no_sliver_interval_at_zero():
    # target 0.25: 0.2 - 0.1 - 0.1 is 0 in exact arithmetic; no interval narrower than 1e-9
    cuts, ei = equal_width_intervals(0.25, 0.05, 0.05)
    assert cuts == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0) and ei == 2
    assert min(b - a for a, b in zip(cuts[:-1], cuts[1:], strict=True)) > 1e-9


def test_asymmetric_ei_matches_exact_derivation():
    # [EXACT] with epsilon1 = 0.05, epsilon2 = 0.1 (intervals 0.15 wide), target 0.3
    d = design(0.3, epsilon1=0.05, epsilon2=0.1)
    b = count_form(d, list(range(1, 16)))
    for n, codes in zip(range(1, 16), b["decisions"], strict=True):
        assert codes == exact_letters("0.3", n, e1="0.05", e2="0.1"), n


def test_target_025_one_of_three_de_escalates():
    # [NOTES] highlight: target 0.25, 1/3 -> D (the interval [0.3, 0.4) wins), while at
    # target 0.3 1/3 -> S
    assert exact_letters("0.25", 3)[1] == "D"
    d = design(0.25)
    assert d.decide(state_from_outcomes("1NNN 2NTN", 5)).dose == 0
    assert design(0.3).decide(state_from_outcomes("1NNN 2NTN", 5)).dose == 1


# ----------------------------------------------------------------------------- options
def test_elimination_min_n_option():
    # Pr(p > 0.3 | Beta(3, 1)) = 1 - 0.3^3 = 0.973 > 0.95: with 2/2 at dose 1 the trial stops
    # when elimination needs n >= 2 (escalation get_mtpi2), not with the default n >= 3 [FIND]
    state = state_from_outcomes("1T 1T", 5)
    assert 1 - 0.3 ** 3 > 0.95
    assert not design(cohort_size=1).decide(state).stop
    dec = design(cohort_size=1, elimination_min_n=2).decide(state)
    assert dec.stop and dec.stop_reason is StopReason.LOWEST_DOSE_TOO_TOXIC


@pytest.mark.parametrize("at, stops", [("next", True), ("current", False), ("stay", False)])
def test_n_earlystop_meanings(at, stops):
    # "1NNN 1NNN 2TTN": 2/3 at dose 2 -> de-escalate to dose 1, which has 6 patients.
    # [FIND] stops (n at the next dose reaches 6); counting the current dose (3) or requiring
    # a stay decision does not stop.
    d = design(0.3, n_earlystop=6, n_earlystop_at=at)
    dec = d.decide(state_from_outcomes("1NNN 1NNN 2TTN", 5))
    assert dec.stop is stops
    if stops:
        assert dec.stop_reason is StopReason.N_AT_DOSE
    else:
        assert dec.dose == 0


def test_n_earlystop_current_stops_whatever_the_decision():
    # 6 at dose 1 with 0 DLT: the rule escalates; "current" stops, "next" and "stay" do not
    state = state_from_outcomes("1NNN 1NNN", 5)
    assert design(n_earlystop=6, n_earlystop_at="current").decide(state).stop
    assert design(n_earlystop=6, n_earlystop_at="next").decide(state).dose == 1
    assert design(n_earlystop=6, n_earlystop_at="stay").decide(state).dose == 1


def test_default_selection_is_select_mtd():
    # [FIND] select_mtd = BOIN select.mtd; its R help example n = (3, 3, 15, 9, 0),
    # y = (0, 0, 4, 4, 0), target 0.3 -> MTD 3 (as in tests/test_boin.py)
    state = TrialState((3, 3, 15, 9, 0), (0, 0, 4, 4, 0))
    assert design(0.3).select_mtd(state) == 2


def test_mtd_prior_one_is_the_beta_posterior_mean():
    # [ESC] Beta(1, 1) posterior means; n = (3, 3), y = (0, 1), target 0.25, by hand:
    # a = 1:    1/5 = 0.2, 2/5 = 0.4         -> |.-0.25| = 0.05, 0.15  -> dose 1
    # a = 0.05: 0.05/3.1 = 0.016, 1.05/3.1 = 0.339 -> 0.234, 0.089    -> dose 2
    state = TrialState((3, 3, 0), (0, 1, 0))
    assert design(0.25, n_doses=3).select_mtd(state) == 1
    assert design(0.25, n_doses=3, mtd_prior=1.0).select_mtd(state) == 0


# ----------------------------------------------------------------------------- spec / registry
def test_spec_defaults_and_validation():
    entry = get_entry("mtpi2")
    ctx = DesignContext(n_doses=4, target=0.3, cohort_size=3, max_n=24, start_dose=0)
    d = entry.build(entry.spec_model.model_validate({"type": "mtpi2"}), ctx)
    inner = d.inner
    assert (inner.epsilon1, inner.epsilon2, inner.cutoff_eli, inner.elimination_min_n,
            inner.n_earlystop, inner.n_earlystop_at, inner.mtd_prior) == \
        (0.05, 0.05, 0.95, 3, None, "next", 0.05)
    with pytest.raises(ValueError, match="epsilon1 must be < target"):
        entry.spec_model.model_validate({"type": "mtpi2", "target": 0.1, "epsilon1": 0.2})
    with pytest.raises(ValueError, match="epsilon1 must be < target"):
        entry.build(entry.spec_model.model_validate({"type": "mtpi2", "epsilon1": 0.35}), ctx)


# ----------------------------------------------------------------------------- OCs
SC = """\
name: mc-exact
doses: {doses}
truth: {{p_dlt: {p}}}
target: {target}
trial: {{max_n: {max_n}, cohort_size: {cohort}}}
designs: [{{type: {type}}}]
"""
# target 0.3 with N = 30 reaches n = 21 at a dose, where mTPI-2/Keyboard and BOIN differ
MC_SCENARIOS = {
    "t25-mtd3": dict(doses="[A, B, C, D]", p=[0.05, 0.12, 0.25, 0.40], target=0.25,
                     max_n=24, cohort=3),
    "t30-mtd2-n30": dict(doses="[A, B, C, D, E]", p=[0.10, 0.30, 0.45, 0.55, 0.65],
                         target=0.3, max_n=30, cohort=3),
    "t30-cohorts-of-1": dict(doses="[A, B, C]", p=[0.15, 0.30, 0.50], target=0.3, max_n=12,
                             cohort=1),
    # target 0.2: i3+3 and mTPI-2 differ at n = 12 (de-escalate if >= 4 vs >= 3)
    "t20-mtd3": dict(doses="[A, B, C, D]", p=[0.05, 0.10, 0.20, 0.35], target=0.2, max_n=24,
                     cohort=3),
}


def mc_within_4se_of_exact(type_name, scenario, trials=20_000, seed=11, extra=""):
    """Monte Carlo on the cohort engine against exact enumeration: each dose's selection
    probability, P(no MTD) and the mean sample size within 4 standard errors."""
    text = SC.format(type=f'"{type_name}"' + extra, **scenario)
    sc = load_scenario_text(text, "mc.yaml")
    mc = simulate(sc, n_trials=trials, seed=seed, n_jobs=1).design_oc(sc.designs[0].name)
    ex_res = exact_oc(None, sc)
    ex = ex_res.design_oc(sc.designs[0].name)
    zs = []
    for k in range(sc.n_doses):
        p = ex["p_select"][k]
        se = math.sqrt(p * (1 - p) / trials)
        assert abs(mc["p_select"][k] - p) <= 4 * se + 1e-12, (k, mc["p_select"], ex["p_select"])
        zs.append((mc["p_select"][k] - p) / se if se else 0.0)
    pn = ex["p_no_mtd"]
    assert abs(mc["p_no_mtd"] - pn) <= 4 * math.sqrt(pn * (1 - pn) / trials) + 1e-12
    w, _, _, n, _ = ex_res.designs[0].tally.arrays()
    tot = n.sum(axis=1)
    var = float((w * (tot - (w * tot).sum()) ** 2).sum())
    assert abs(mc["mean_n_total"] - ex["mean_n_total"]) <= 4 * math.sqrt(var / trials) + 1e-12
    return zs


@pytest.mark.parametrize("name", sorted(MC_SCENARIOS))
def test_monte_carlo_within_4se_of_exact(name):
    mc_within_4se_of_exact("mtpi2", MC_SCENARIOS[name])


# ----------------------------------------------------------------------------- command line
CLI_SC = """\
name: cli
doses: [DL1, DL2, DL3, DL4, DL5]
truth: {p_dlt: [0.05, 0.15, 0.3, 0.45, 0.6]}
target: 0.3
trial: {max_n: 30, cohort_size: 3}
designs: [{type: mtpi2}]
"""


def cli(*args):
    import contextlib
    import io

    from escalation_sim.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def test_command_line_next_dose_select_mtd_paths_table(tmp_path):
    import json
    f = tmp_path / "cli.yaml"
    f.write_text(CLI_SC)
    # [FIG3]: "2NNN 2NTT" -> stay at dose 2; "1TTT" -> stop, no dose
    rc, out, _ = cli("next-dose", f, "--outcomes", "2NNN 2NTT", "--json")
    assert rc == 0 and json.loads(out)["next_dose"] == 2
    rc, out, _ = cli("next-dose", f, "--outcomes", "1TTT", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["stop"] and doc["mtd"] is None
    # select.mtd help example -> MTD 3 [FIND]
    rc, out, _ = cli("select-mtd", f, "--n", "3,3,15,9,0", "--dlt", "0,0,4,4,0", "--json")
    assert rc == 0 and json.loads(out)["mtd"] == 3
    # [FIG3] after "1NNN", the next cohort at dose 2: NNN -> 3, one DLT -> 2, two or three -> 1
    rc, out, _ = cli("paths", f, "--outcomes", "1NNN", "--cohorts", "1", "--json")
    tree = json.loads(out)
    assert rc == 0
    nxt = {c["outcome"]: c["next_dose"] for c in tree["children"]}
    assert nxt == {"2NNN": 3, "2TNN": 2, "2TTN": 1, "2TTT": 1}
    # [FIG3] cells n = 3, 6, 9, 12 in count form (cohorts of 3)
    rc, out, err = cli("table", "--design", "mtpi2", "--target", 0.3, "--cohort-size", 3,
                       "--max-n", 12)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[2].split()[-4:] == ["3", "6", "9", "12"]
    assert lines[3].split()[-4:] == ["0", "1", "2", "2"]
    assert lines[4].split()[-4:] == ["2", "3", "4", "5"]
    assert lines[5].split()[-4:] == ["3", "4", "5", "7"]
