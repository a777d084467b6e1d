"""Decisions on real data (issue 15): credible intervals, the truth-free commands, pending
follow-up from the command line, dose paths with probabilities, 1-based user objects."""
import json
import math

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import beta as beta_dist
from scipy.stats import norm

from escalation_sim.designs.intervals import isotonic_beta_intervals
from escalation_sim.engines.paths import (dose_paths, final_recommendations, leaves,
                                          paths_csv, paths_dot)
from escalation_sim.inputs.scenario import load_scenario_text
from escalation_sim.run.realdata import (build_design as rd_build, parse_pending, recommend,
                                         select_mtd, trial_state)
from escalation_sim.types import Decision, TrialState


# ------------------------------------------------------------------ credible intervals
def test_boin_intervals_without_pooling_are_the_beta_quantiles(build_design):
    # BOIN R/select.mtd.R: qbeta(0.025 / 0.975, y + 0.05, n - y + 0.05) at each tried dose,
    # then pava with weights 1 / var.  Its help example n = 3,3,15,9,0, y = 0,0,4,4,0: the
    # quantiles already increase, so pava leaves them as they are.
    n, y = (3, 3, 15, 9, 0), (0, 0, 4, 4, 0)
    iv = build_design("boin", n_doses=5, target=0.3).credible_intervals(TrialState(n, y))
    for d in range(4):
        a, b = y[d] + 0.05, n[d] - y[d] + 0.05
        assert iv["lower"][d] == pytest.approx(beta_dist.ppf(0.025, a, b), rel=1e-12)
        assert iv["upper"][d] == pytest.approx(beta_dist.ppf(0.975, a, b), rel=1e-12)
        assert iv["estimate"][d] == pytest.approx(a / (n[d] + 0.1), rel=1e-12)
    assert iv["lower"][4] is iv["upper"][4] is iv["estimate"][4] is None
    assert iv["level"] == 0.95


def test_boin_intervals_pool_like_the_estimate():
    # 1/3 then 0/3: the estimates decrease, so pava pools both doses with weights 1 / var
    # (var = (y + .05)(n - y + .05) / ((n + .1)^2 (n + 1.1)), select.mtd's phat.var), and
    # the interval bounds are pooled with the same weights.
    n, y = (3, 3), (1, 0)
    var = [(yy + .05) * (nn - yy + .05) / ((nn + .1) ** 2 * (nn + 1.1)) for nn, yy in zip(n, y, strict=True)]
    w = [1 / v for v in var]
    for p, key in ((0.025, "lower"), (0.975, "upper")):
        q = [beta_dist.ppf(p, yy + .05, nn - yy + .05) for nn, yy in zip(n, y, strict=True)]
        pooled = (q[0] * w[0] + q[1] * w[1]) / (w[0] + w[1])
        iv = isotonic_beta_intervals(n, y)
        assert iv[key] == pytest.approx([pooled, pooled], rel=1e-12)


def _dfcrm_reference(skeleton, level_idx, tox, conf):
    """dfcrm crm() (R/dfcrm.R), empiric model, method 'bayes': E[beta] and E[beta^2] by
    integrating exp(-b^2 / 2 / 1.34) * likelihood (over -30..30: the prior sd is 1.16), then beta -+ z sd through s^exp(b)."""
    s2 = 1.34

    def lik(b):
        v = 1.0
        for d, t in zip(level_idx, tox, strict=True):
            p = skeleton[d] ** math.exp(b)
            v *= p if t else 1 - p
        return v

    den = integrate.quad(lambda b: math.exp(-b * b / 2 / s2) * lik(b), -30, 30, limit=200)[0]
    m1 = integrate.quad(lambda b: b * math.exp(-b * b / 2 / s2) * lik(b), -30, 30, limit=200)[0]
    m2 = integrate.quad(lambda b: b * b * math.exp(-b * b / 2 / s2) * lik(b),
                        -30, 30, limit=200)[0]
    est, var = m1 / den, m2 / den - (m1 / den) ** 2
    crit = norm.ppf(0.5 + conf / 2)
    sk = np.asarray(skeleton)
    return sk ** math.exp(est), sk ** math.exp(est + crit * math.sqrt(var)), \
        sk ** math.exp(est - crit * math.sqrt(var))


@pytest.mark.parametrize("conf", [0.90, 0.95])
def test_crm_intervals_as_dfcrm(build_design, conf):
    # dfcrm's crm.Rd example: skeleton 0.05 .. 0.70, target 0.2, ten patients
    skeleton = [0.05, 0.10, 0.20, 0.35, 0.50, 0.70]
    level = [3, 4, 4, 3, 3, 4, 3, 2, 2, 2]
    tox = [0, 0, 1, 0, 0, 1, 1, 0, 0, 0]
    n, y = [0] * 6, [0] * 6
    for d, t in zip(level, tox, strict=True):
        n[d - 1] += 1
        y[d - 1] += t
    crm = build_design("crm", n_doses=6, target=0.2, cohort_size=1, skeleton=skeleton)
    iv = crm.credible_intervals(TrialState(tuple(n), tuple(y)), conf)
    ptox, lo, hi = _dfcrm_reference(skeleton, [d - 1 for d in level], tox, conf)
    assert iv["estimate"] == pytest.approx(list(ptox), abs=1e-6)
    assert iv["lower"] == pytest.approx(list(lo), abs=1e-6)
    assert iv["upper"] == pytest.approx(list(hi), abs=1e-6)


def test_blrm_interval_covers_the_prior_quantiles(build_design):
    # no data: the interval is the prior's 2.5% / 97.5% quantiles of p_d; Monte Carlo from
    # the bivariate normal prior (fixed seed): Pr(p_d < lower) = 0.025 within 4 SE
    blrm = build_design("blrm", n_doses=4, target=0.25, dose_amounts=[10, 20, 40, 80])
    iv = blrm.credible_intervals(TrialState.empty(4))
    pr = blrm.prior
    rng = np.random.default_rng(20261127)
    N = 200_000
    cov = [[pr.sd1 ** 2, pr.corr * pr.sd1 * pr.sd2], [pr.corr * pr.sd1 * pr.sd2, pr.sd2 ** 2]]
    th = rng.multivariate_normal([pr.mean1, pr.mean2], cov, size=N)
    se = math.sqrt(0.025 * 0.975 / N)
    for d, x in enumerate(blrm.log_dose_ratio):
        p = 1 / (1 + np.exp(-(th[:, 0] + np.exp(th[:, 1]) * x)))
        assert abs((p < iv["lower"][d]).mean() - 0.025) < 4 * se + 2e-3, d
        assert abs((p > iv["upper"][d]).mean() - 0.025) < 4 * se + 2e-3, d


def test_three_plus_three_has_no_model_intervals(build_design):
    assert build_design("3+3").credible_intervals(TrialState((3, 0, 0, 0), (0,) * 4)) is None


# ------------------------------------------------------------------ 1-based user objects
def test_decision_dose_level_is_one_based():
    assert Decision.treat(0, 3).dose_level == 1
    assert Decision.halt(next(iter(__import__("escalation_sim.types").types.StopReason))) \
        .dose_level is None


def test_recommendation_is_one_based():
    boin = rd_build("boin", target=0.25, n_doses=4, cohort_size=3)
    # BOIN target 0.25: 0/3 escalates (lambda_e = 0.197), 1/3 de-escalates (lambda_d = 0.298)
    rec = recommend(boin, trial_state(4, "1NNN"))
    assert rec.next_dose == 2 and rec.cohort_size == 3 and not rec.stop
    rec = recommend(boin, trial_state(4, "1NNN 2NTN"))
    assert rec.next_dose == 1
    sel = select_mtd(boin, TrialState((3, 6, 9, 6), (0, 1, 2, 3)))
    assert sel.mtd == 3  # 2/9 = 0.22 closest to 0.25 (test_cli.py's example)


def test_parse_pending():
    assert parse_pending("3:7, 3:20") == [(3, 7.0), (3, 20.0)]
    for bad in ("3", "x:2", "3:-1", "3:nan"):
        with pytest.raises(ValueError, match="pending patient 1"):
            parse_pending(bad)


# ------------------------------------------------------------------ truth-free commands
NO_TRUTH = """
name: no truth
doses: [A, B, C, D]
target: 0.25
trial: {max_n: 24, cohort_size: 3}
designs:
  - {type: boin}
  - {type: tite-boin}
"""


def test_scenario_without_truth_for_real_data_commands(tmp_path, cli):
    f = tmp_path / "s.yaml"
    f.write_text(NO_TRUTH)
    r = cli("next-dose", f, "--design", "boin", "--outcomes", "1NNN", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["next_dose"] == 2 and doc["intervals"]["level"] == 0.95
    r = cli("select-mtd", f, "--design", "boin", "--n", "3,3,0,0", "--dlt", "0,1,0,0")
    assert r.returncode == 0 and "MTD = " in r.stdout and "95% CrI" in r.stdout
    r = cli("paths", f, "--design", "boin", "--cohorts", "1")
    assert r.returncode == 0, r.stderr
    # simulation still needs the truth, and says so
    r = cli("run", f, "--n-trials", "10")
    assert r.returncode == 2 and "truth" in r.stderr and "Traceback" not in r.stderr


def test_next_dose_from_flags_without_file(cli):
    r = cli("next-dose", "--design", "crm", "--target", 0.25, "--n-doses", 4,
            "--option", "skeleton=[0.1,0.17,0.25,0.35]", "--outcomes", "1NNN", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["next_dose"] == 2 and doc["intervals"]["method"].endswith("(dfcrm crm)")
    r = cli("next-dose", "--design", "crm", "--target", 0.25)
    assert r.returncode == 2 and "missing: --n-doses" in r.stderr
    r = cli("next-dose", "--design", "boin", "--target", 0.25, "--n-doses", 4,
            "--option", "phi=0.3")
    assert r.returncode == 2 and "--option phi: not an option of boin" in r.stderr


def test_file_and_design_flags_are_exclusive(cli, root):
    r = cli("next-dose", root / "scenarios" / "standard_mtd3.yaml", "--design", "boin",
            "--target", 0.3)
    assert r.returncode == 2 and "--target: describe the design in" in r.stderr


# ------------------------------------------------------------------ pending follow-up
@pytest.mark.parametrize("days,expected", [("2:10,2:10,2:4", 3), ("2:10,2:10,2:2", 2)])
def test_tite_boin_pending_from_the_command_line(cli, days, expected):
    # Yuan et al. (2018) TITE-BOIN table, target 0.2: 9 patients at the dose, 1 DLT, 3
    # pending: escalate iff STFT >= 0.77.  Window 30 days: 24 days -> 0.80, 22 -> 0.73.
    r = cli("next-dose", "--design", "tite-boin", "--target", 0.2, "--n-doses", 3,
            "--outcomes", "1NNN 2NNT 2NNN", "--pending", days, "--window", 30, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["next_dose"] == expected and doc["pending"] == [0, 3, 0]


def test_pending_errors(cli):
    base = ("next-dose", "--design", "tite-crm", "--target", 0.25, "--n-doses", 4,
            "--option", "skeleton=[0.1,0.17,0.25,0.35]", "--outcomes", "1NNN")
    r = cli(*base, "--pending", "2:7")
    assert r.returncode == 2 and "--pending needs --window" in r.stderr
    r = cli(*base, "--pending", "2:40", "--window", 28)
    assert r.returncode == 2 and "not less than the 28-day window" in r.stderr
    r = cli(*base, "--pending", "9:4", "--window", 28)
    assert r.returncode == 2 and "dose 9 outside 1..4" in r.stderr
    r = cli("next-dose", "--design", "boin", "--target", 0.25, "--n-doses", 4,
            "--pending", "2:7", "--window", 28)
    assert r.returncode == 2 and "decides on complete data only" in r.stderr


def test_tite_crm_pending_weights_the_likelihood():
    # Cheung & Chappell (2000): a pending DLT-free patient followed for a fraction w of the
    # window contributes 1 - w p; fully followed (w -> 1) it equals a complete patient and
    # with w = 0 it contributes nothing.
    crm = rd_build("tite-crm", target=0.25, n_doses=4,
                   options={"skeleton": [0.1, 0.17, 0.25, 0.35]})
    full = crm.credible_intervals(trial_state(4, "1NNN 2N"))
    almost = crm.credible_intervals(trial_state(4, "1NNN", [(2, 27.999)], 28))
    none = crm.credible_intervals(trial_state(4, "1NNN", [(2, 0)], 28))
    nothing = crm.credible_intervals(trial_state(4, "1NNN"))
    assert almost["estimate"] == pytest.approx(full["estimate"], rel=1e-3)
    assert none["estimate"] == pytest.approx(nothing["estimate"], rel=1e-12)


# ------------------------------------------------------------------ dose paths
SMALL = """
name: paths
doses: [A, B, C]
truth: {p_dlt: [0.05, 0.2, 0.4]}
target: 0.25
trial: {max_n: 9, cohort_size: 3}
designs:
  - {type: boin}
  - {type: "3+3"}
  - {type: crm, skeleton: [0.1, 0.25, 0.4]}
"""


@pytest.mark.parametrize("name", ["boin", "3+3", "crm"])
def test_path_probabilities_equal_exact_oc(name):
    # from no data with enough cohorts for every path to stop, the final recommendations'
    # probabilities are the exact operating characteristics (an independent computation:
    # exact enumeration sweeps the state graph, paths recurse on the design)
    from escalation_sim.api import exact_oc
    sc = load_scenario_text(SMALL)
    truth = [0.05, 0.2, 0.4]
    tree = dose_paths(sc.design(name).design, TrialState.empty(3), 10, truth=truth)
    assert all(node["next_dose"] is None for _, node in leaves(tree))
    fin = final_recommendations(tree)
    oc = exact_oc(name, sc).design_oc(name)
    for d in range(3):
        assert fin.get(f"MTD {d + 1}", 0.0) == pytest.approx(oc["p_select"][d], abs=1e-12)
    assert fin.get("no MTD", 0.0) == pytest.approx(oc["p_no_mtd"], abs=1e-12)


def test_path_probabilities_sum_to_one_and_cohort_sizes(build_design):
    boin = build_design("boin", n_doses=3)
    tree = dose_paths(boin, TrialState.empty(3), 0, truth=[0.1, 0.2, 0.3],
                      cohort_sizes=[3, 3, 1])
    lv = leaves(tree)
    assert sum(n["probability"] for _, n in lv) == pytest.approx(1.0, abs=1e-12)
    # cohorts of 3, 3 then 1: a leaf is a stop (e.g. 1TTT eliminates dose 1) or the end of
    # the three cohorts, whose last outcome has one letter
    for path, node in lv:
        cohorts = path.split()
        assert node["next_dose"] is None or (len(cohorts) == 3 and len(cohorts[-1]) == 2)
        assert [len(c) - 1 for c in cohorts] == [3, 3, 1][:len(cohorts)]
    assert sum(1 for p, n in lv if len(p.split()) == 3) > 0
    # the first cohort's outcome probabilities are binomial(3, 0.1)
    probs = [c["p_outcome"] for c in tree["children"]]
    assert probs == pytest.approx([math.comb(3, k) * 0.1 ** k * 0.9 ** (3 - k)
                                   for k in range(4)], rel=1e-12)

    def count(node):
        return 1 + sum(count(c) for c in node["children"])
    csv_text = paths_csv(tree)
    assert csv_text.splitlines()[0].endswith("probability")
    assert len(csv_text.splitlines()) == 1 + count(tree)
    dot = paths_dot(tree, ["A", "B", "C"])
    assert dot.startswith("digraph dose_paths {") and dot.count("->") == count(tree) - 1


def test_paths_command_with_truth_formats(cli, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(SMALL)
    r = cli("paths", f, "--design", "boin", "--truth", "0.05,0.2,0.4", "--cohorts", 3)
    assert r.returncode == 0, r.stderr
    assert "final recommendations over" in r.stdout and "[p = " in r.stdout
    r = cli("paths", f, "--design", "boin", "--truth", "0.05,0.2,0.4", "--cohorts", 3,
            "--json")
    doc = json.loads(r.stdout)
    assert sum(doc["final_recommendations"].values()) == pytest.approx(1.0, abs=1e-12)
    r = cli("paths", f, "--design", "boin", "--cohort-sizes", "3,3,1", "--format", "csv")
    assert r.returncode == 0 and r.stdout.startswith("path,depth,")
    r = cli("paths", f, "--design", "boin", "--format", "dot")
    assert r.returncode == 0 and r.stdout.startswith("digraph")
    r = cli("paths", f, "--design", "boin", "--truth", "0.1,2")
    assert r.returncode == 2 and "--truth: 3 comma-separated probabilities" in r.stderr
    r = cli("paths", f, "--design", "boin", "--cohorts", 2, "--cohort-sizes", "3,1")
    assert r.returncode == 2 and "give one" in r.stderr


def test_table_from_a_scenario_file(cli, tmp_path):
    # the file's design with its settings is the table of the same design from flags
    f = tmp_path / "s.yaml"
    f.write_text(NO_TRUTH)
    a = cli("table", f, "--design", "boin", "--json")
    b = cli("table", "--design", "boin", "--target", 0.25, "--max-n", 24, "--cohort-size", 3,
            "--json")
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout) and a.stderr == ""
    r = cli("table", f, "--design", "boin", "--target", 0.3)
    assert r.returncode == 2 and "--target: the design's settings come from" in r.stderr


def test_options_a_command_does_not_use_are_errors(cli):
    base = ("--design", "boin", "--target", 0.25, "--n-doses", 4)
    r = cli("select-mtd", *base, "--n", "3,3,0,0", "--dlt", "0,0,0,0", "--pending", "2:3")
    assert r.returncode == 2 and "selected on complete data" in r.stderr
    r = cli("paths", *base, "--level", 0.9)
    assert r.returncode == 2 and "--level: paths show decisions" in r.stderr
    r = cli("next-dose", *base, "--outcomes", "1NNN", "--window", 28)
    assert r.returncode == 2 and "--window is used only with --pending" in r.stderr


def test_crm_logistic2_interval_covers_the_prior_quantiles(build_design):
    # two-parameter CRM, no data: intercept ~ N(intcpt, intcpt_var), log slope ~ N(0,
    # prior_var), p_d = logistic(a + exp(b) x_d) with x_d = logit(s_d) - intcpt (backward
    # substitution at the prior means).  Monte Carlo from that prior (fixed seed):
    # Pr(p_d < lower) = Pr(p_d > upper) = 0.025 within 4 SE
    sk = [0.1, 0.17, 0.25, 0.35]
    crm = build_design("crm", skeleton=sk, model="logistic2")
    iv = crm.credible_intervals(TrialState.empty(4))
    rng = np.random.default_rng(15)
    N = 200_000
    a = rng.normal(crm.intcpt, math.sqrt(crm.intcpt_var), N)
    b = rng.normal(0.0, math.sqrt(crm.prior_var), N)
    se = math.sqrt(0.025 * 0.975 / N)
    for d, s in enumerate(sk):
        x = math.log(s / (1 - s)) - crm.intcpt
        with np.errstate(over="ignore"):
            p = 1 / (1 + np.exp(-(a + np.exp(b) * x)))
        assert abs((p < iv["lower"][d]).mean() - 0.025) < 4 * se + 2e-3, d
        assert abs((p > iv["upper"][d]).mean() - 0.025) < 4 * se + 2e-3, d


def test_python_api_real_data(root):
    import escalation_sim as es
    sc = es.load_scenario(root / "scenarios" / "relma_cel_sle.yaml")
    # BOIN target 0.25 (lambda_d = 0.298): 1/3 at dose 2 de-escalates to dose 1
    rec = es.next_dose("boin", "1NNN 2NTN", scenario=sc)
    assert rec.next_dose == 1 and rec.action == "dose 1" and rec.intervals["level"] == 0.95
    # a Design object works too, and dose paths from the API carry probabilities
    rec2 = es.next_dose(sc.design("boin").design, "1NNN 2NTN")
    assert rec2.next_dose == rec.next_dose
    tree = es.dose_paths("boin", "", 1, target=0.25, n_doses=4, cohort_size=3,
                         truth=[0.05, 0.1, 0.2, 0.3])
    assert tree["children"][0]["probability"] == pytest.approx(0.95 ** 3, rel=1e-12)
    assert es.select_mtd("boin", scenario=sc, n=[3, 6, 9, 6], dlt=[0, 1, 2, 3]).mtd == 3


def test_rolling_six_pending_from_the_command_line(cli):
    # Skolnik et al. (2008) rolling six: 6 enrolled at the dose, no DLT, 4 still pending ->
    # accrual is held (suspend) until outcomes are in; 2 enrolled, 2 pending -> enroll at the
    # same dose
    base = ("next-dose", "--design", "rolling6", "--target", 0.25, "--n-doses", 4,
            "--window", 28, "--json")
    r = cli(*base, "--outcomes", "1NNN 2NN", "--pending", "2:7,2:20,2:3,2:1")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["suspend"] and doc["next_dose"] == 2 and doc["pending"] == [0, 4, 0, 0]
    r = cli(*base, "--outcomes", "1NNN", "--pending", "2:7,2:20")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and not doc["suspend"] and doc["next_dose"] == 2


def test_score_design_on_real_data(cli):
    # gBOIN scores graded toxicities: outcomes are worst grades ("1:003"), the document
    # gives score sums instead of DLT counts, no Beta interval is claimed for scores, and
    # the commands that count DLTs refuse it
    base = ("--design", "gboin", "--target", 0.47, "--n-doses", 4)
    r = cli("next-dose", *base, "--outcomes", "1:003 2:0104", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["dlt"] is None and doc["intervals"] is None
    # the sums are per dose (untried doses 0), the patients counted from the grade digits
    assert doc["score_sum"][2:] == [0.0, 0.0] and doc["score_sum"][1] > 0
    assert doc["n"] == [3, 4, 0, 0]
    r = cli("next-dose", *base, "--outcomes", "1NNN")
    assert r.returncode == 2 and "N/T letters are for binary designs" in r.stderr
    r = cli("paths", *base)
    assert r.returncode == 2 and "for binary designs only" in r.stderr
    r = cli("select-mtd", *base, "--n", "3,3,0,0", "--dlt", "0,0,0,0")
    assert r.returncode == 2 and "scores graded toxicities" in r.stderr
