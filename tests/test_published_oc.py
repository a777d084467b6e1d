"""Operating characteristics published by the reference implementations vs our exact OCs.

Each reference below was produced by (or reproduces trial by trial) the implementation our
designs follow.  Our numbers are exact (state enumeration), so for a simulated reference the
only error is the reference's Monte Carlo error:

    |ours - published| <= 4 * SE + half a unit of the last printed digit,

with SE = sqrt(p (1 - p) / R) for a proportion p (ours) and SE = sd / sqrt(R) for a mean,
sd being the exact standard deviation of the per-trial quantity under our design (proportions
use the exact binomial tails equivalent to 4 SE, see check_prop).  For exact references
(closed form / dose-path enumeration) only the rounding allowance is used.

References (all settings are copied from the quoted calls)
----------------------------------------------------------
[BFBOIN]  BOIN::get.oc (BOIN 2.7.x) output printed in the bfboin vignette
          "Compare_to_original_BOIN" (openpharma/bfboin, articles/Compare_to_original_BOIN.html;
          https://openpharma.github.io/bfboin/articles/Compare_to_original_BOIN.html).
          R = 10000 simulated trials, seed 6.
[SFB]     simFastBOIN 2.0.0 vignette "Getting started with simFastBOIN" (CRAN,
          inst/doc/simFastBOIN-introduction.html).  Its engine is documented (and tested in
          tests/testthat/test-boin_reference_oc.R) to reproduce BOIN::get.oc trial by trial for a
          given seed.  sim_boin / boin_simulate default n_earlystop = 18 ("with_stay" rule =
          get.oc's), cutoff_eli 0.95, extrasafe FALSE, start dose 1.
[SFB-3+3] same vignette, oc_3p3(): exact (closed-form) 3+3 operating characteristics.
          mtd_rule "previous" = de-escalation off, 0/3 enough at the top dose;
          mtd_rule "expand" = de-escalation on, top dose needs 6 (package tests test-3p3.R).
[ESC]     escalation (K. Brock) vignette "Working with dose-paths" (CRAN escalation,
          inst/doc/A600-DosePaths.html, section "Crystallised dose-paths"): exact dose-path
          probabilities of get_dfcrm (dfcrm::crm, empiric model, prior variance 1.34,
          recommended dose = crm()$mtd with no skipping restriction, first dose 1) with
          stop_when_too_toxic(dose = 1, tox_threshold = 0.35, confidence = 0.9), 4 cohorts of 3.

The BOIN N = 36 checks enumerate the largest graphs of the suite (with titration 10-20 s on
the project's 2-core machine: about 290,000 states per graph); they carry the ``slow`` marker, run by default and in CI, and
``python -m pytest -m "not slow"`` leaves them out.  Designs are built by the ``build_design``
fixture of conftest.py, exactly as a scenario file builds them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence, Tuple

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import binom, norm

from escalation_sim.designs.base import Design
from escalation_sim.designs.crm import CRM
from escalation_sim.designs.rules import StopAtN, StopWhenNAtDose
from escalation_sim.engines.graph import STOP_CODES
from escalation_sim.engines.exact import exact_tally
from escalation_sim.types import Decision, StopReason, TrialState

slow = pytest.mark.slow  # N = 36 enumeration

Z = 4.0  # Monte Carlo tolerance in standard errors


# --------------------------------------------------------------------------------- helpers
class Exact:
    """Exact distribution of the trial outcome: weights and per-trial quantities."""

    def __init__(self, design: Design, p_true: Sequence[float]):
        w, mtd, stop, n, y = exact_tally(design, list(p_true)).arrays()
        self.w = w / w.sum()
        self.mtd, self.n, self.y = mtd, n.astype(float), y.astype(float)
        self.stop = [STOP_CODES[int(c)] for c in stop]
        self.N = self.n.sum(axis=1)
        self.K = n.shape[1]

    def prob(self, mask) -> float:
        return float(self.w[np.asarray(mask, dtype=bool)].sum())

    def mean_sd(self, x) -> Tuple[float, float]:
        x = np.asarray(x, dtype=float)
        m = float((self.w * x).sum())
        return m, math.sqrt(max(float((self.w * (x - m) ** 2).sum()), 0.0))

    def p_stop(self, reason: StopReason) -> float:
        return self.prob([r is reason for r in self.stop])

    def p_select(self, d: int) -> float:
        return self.prob(self.mtd == d)

    def p_none(self) -> float:
        return self.prob(self.mtd < 0)


@lru_cache(maxsize=None)
def _exact_cached(key) -> Exact:
    design, p = key
    return Exact(design, p)


def exact(design: Design, p_true: Sequence[float]) -> Exact:
    return _exact_cached((design, tuple(p_true)))


def check_prop(label: str, p_ours: float, published_pct: float, R: int, rounding: float) -> float:
    """A proportion of R simulated trials printed in percent by the reference.

    The published count k is binomial(R, p_ours) if the designs agree; it is accepted when
    neither binomial tail at k (widened by the printed rounding) is below the one-sided normal
    tail at Z standard errors, i.e. the exact version of |diff| <= Z * SE + rounding, valid
    also for proportions near 0 where the normal approximation fails.  Returns |diff| / SE."""
    ours = 100.0 * p_ours
    se = 100.0 * math.sqrt(p_ours * (1.0 - p_ours) / R)
    diff = abs(ours - published_pct)
    k_lo = math.ceil((published_pct - rounding) * R / 100 - 1e-6)
    k_hi = math.floor((published_pct + rounding) * R / 100 + 1e-6)
    assert k_lo <= k_hi, f"{label}: published {published_pct}% is not a count out of {R}"
    alpha = norm.sf(Z)
    low_tail = binom.cdf(k_hi, R, p_ours)       # P(K <= k_hi)
    high_tail = binom.sf(k_lo - 1, R, p_ours)   # P(K >= k_lo)
    assert min(low_tail, high_tail) >= alpha, (
        f"{label}: ours {ours:.3f}% vs published {published_pct}% of R = {R} "
        f"(|diff| {diff:.3f}, {diff / se if se else float('inf'):.1f} SE; binomial tails "
        f"{low_tail:.2e} / {high_tail:.2e} < {alpha:.1e})")
    return diff / se if se > 0 else 0.0


def check_mean(label: str, mean: float, sd: float, published: float, R: int,
               rounding: float) -> float:
    se = sd / math.sqrt(R)
    diff = abs(mean - published)
    assert diff <= Z * se + rounding + 1e-9, (
        f"{label}: ours {mean:.4f} vs published {published} "
        f"(|diff| {diff:.4f} > {Z}*SE {Z * se:.4f} + rounding {rounding})")
    return diff / se if se > 0 else 0.0


def check_exact(label: str, ours: float, published: float, rounding: float) -> None:
    assert abs(ours - published) <= rounding + 1e-9, (
        f"{label}: ours {ours!r} vs published {published!r} (rounding {rounding})")


def check_boin_table(ex: Exact, R: int, sel_pct, none_pct, sel_round, n_per_dose, n_round,
                     total_n=None, total_round=None, tag="") -> None:
    for d, pub in enumerate(sel_pct):
        check_prop(f"{tag} P(select dose {d + 1})", ex.p_select(d), pub, R, sel_round)
    check_prop(f"{tag} P(no MTD)", ex.p_none(), none_pct, R, sel_round)
    for d, pub in enumerate(n_per_dose):
        m, sd = ex.mean_sd(ex.n[:, d])
        check_mean(f"{tag} mean n at dose {d + 1}", m, sd, pub, R, n_round)
    if total_n is not None:
        m, sd = ex.mean_sd(ex.N)
        check_mean(f"{tag} mean total n", m, sd, total_n, R, total_round)


# ============================================================== BOIN: BOIN::get.oc [BFBOIN]
def test_boin_get_oc_extrasafe_earlystop_bfboin_vignette(build_design):
    """[BFBOIN] BOIN::get.oc(target = 0.25, p.true = c(0.1, 0.5), ncohort = 10, cohortsize = 3,
    n.earlystop = 9, startdose = 1, titration = FALSE, cutoff.eli = 0.95, extrasafe = TRUE,
    offset = 0.1, boundMTD = FALSE, ntrial = 10000, seed = 6)."""
    R = 10000
    pub = dict(selpercent=[77.75, 18.42], npatients=[10.7160, 7.7784], ntox=[1.0536, 3.8988],
               totaltox=4.9524, totaln=18.4944, percentstop=3.83)
    # transcription check: every trial either selects a dose or stops
    assert sum(pub["selpercent"]) + pub["percentstop"] == pytest.approx(100.0)
    design = build_design("boin", 2, 0.25, 3, 30, n_earlystop=9, extrasafe=True, offset=0.1)
    ex = exact(design, (0.1, 0.5))
    # get.oc's proportions are exact counts / R printed in full (2 decimals), the means are
    # printed to 4 decimals: the allowance is half the last printed digit
    check_boin_table(ex, R, pub["selpercent"], pub["percentstop"], 0.005,
                     pub["npatients"], 0.00005, pub["totaln"], 0.00005, tag="BFBOIN")
    for d, val in enumerate(pub["ntox"]):
        m, sd = ex.mean_sd(ex.y[:, d])
        check_mean(f"BFBOIN mean DLT at dose {d + 1}", m, sd, val, R, 0.00005)
    m, sd = ex.mean_sd(ex.y.sum(axis=1))
    check_mean("BFBOIN mean total DLT", m, sd, pub["totaltox"], R, 0.00005)


# ===================================================== BOIN: simFastBOIN 2.0.0 vignette [SFB]
P_A = (0.05, 0.15, 0.30, 0.45, 0.60)


@pytest.fixture(scope="module")
def boin30(build_design):
    # sim_boin(target = 0.30, n_cohort = 10, cohort_size = 3): N = 30, n_earlystop = 18
    return lambda **opts: build_design("boin", 5, 0.30, 3, 30, n_earlystop=18, **opts)


def test_boin_simfastboin_sim_boin_scenario(boin30):
    """[SFB] sim_boin(target = 0.30, p_true = c(0.05, 0.15, 0.30, 0.45, 0.60), n_cohort = 10,
    cohort_size = 3, n_trials = 2000, seed = 123): printed table, oc$sel_percent,
    oc$percent_no_mtd and the overdose block (doses with true rate > 0.30: DL4, DL5)."""
    R = 2000
    ex = exact(boin30(), P_A)
    sel = [1.20, 24.95, 53.15, 19.10, 1.55]        # oc$sel_percent (exact multiples of 0.05)
    assert sum(sel) + 0.05 == pytest.approx(100.0)  # + oc$percent_no_mtd
    check_boin_table(ex, R, sel, 0.05, 0.005,
                     [4.1, 8.8, 10.9, 4.5, 0.8], 0.05, 29.2, 0.05, tag="SFB-A")
    m, sd = ex.mean_sd(ex.y.sum(axis=1))
    check_mean("SFB-A mean total DLT", m, sd, 7.4, R, 0.05)
    over = ex.n[:, 3:].sum(axis=1)
    check_prop("SFB-A trials treating any patient above target", ex.prob(over > 0), 55.8, R, 0.05)
    check_prop("SFB-A trials treating > 60% of N there", ex.prob(over > 0.6 * 30), 2.1, R, 0.05)
    check_prop("SFB-A trials treating > 80% of N there", ex.prob(over > 0.8 * 30), 0.0, R, 0.05)
    check_prop("SFB-A trials selecting an MTD there",
               ex.p_select(3) + ex.p_select(4), 20.6, R, 0.05)
    # pct of all patients treated above target: ratio of means, delta-method SE
    r = float((ex.w * over).sum()) / float((ex.w * ex.N).sum())
    _, sd_z = ex.mean_sd(over - r * ex.N)
    mean_n = float((ex.w * ex.N).sum())
    check_mean("SFB-A % patients above target", 100 * r, 100 * sd_z / mean_n, 18.30761, R,
               0.000005)


def test_boin_simfastboin_boin_simulate_and_selection_rules(boin30):
    """[SFB] boin_simulate(target = 0.30, p_true = c(0.05, 0.15, 0.30, 0.45, 0.60),
    n_cohort = 10, cohort_size = 3, n_trials = 1000, seed = 123) and the cross-table of
    boin_select_mtd(...) without / with bound_mtd = TRUE on those trials."""
    R = 1000
    ex = exact(boin30(), P_A)
    for d, (pts, tox) in enumerate(zip([4.17, 8.90, 10.78, 4.49, 0.77],
                                       [0.22, 1.37, 3.21, 2.05, 0.46], strict=True)):
        m, sd = ex.mean_sd(ex.n[:, d])
        check_mean(f"SFB-E mean n at dose {d + 1}", m, sd, pts, R, 0.005)
        m, sd = ex.mean_sd(ex.y[:, d])
        check_mean(f"SFB-E mean DLT at dose {d + 1}", m, sd, tox, R, 0.005)
    # stopping reasons (%): lowest_dose_eliminated 0.1, max_sample_size 79.3, n_earlystop 20.6
    check_prop("SFB-E stop: lowest dose eliminated",
               ex.p_stop(StopReason.LOWEST_DOSE_TOO_TOXIC), 0.1, R, 0.05)
    check_prop("SFB-E stop: max sample size", ex.p_stop(StopReason.MAX_N), 79.3, R, 0.05)
    check_prop("SFB-E stop: n_earlystop", ex.p_stop(StopReason.N_AT_DOSE), 20.6, R, 0.05)
    # table(free$mtd, bounded$mtd): margins, counts out of 1000
    free = [12, 4 + 242, 92 + 449, 60 + 125, 7 + 8]
    bounded = [12 + 4, 242 + 92, 449 + 60, 125 + 7, 8]
    assert sum(free) + 1 == R and sum(bounded) + 1 == R  # one trial with no MTD
    for d in range(5):
        check_prop(f"SFB-E free selection dose {d + 1}", ex.p_select(d), free[d] / 10, R, 0)
    check_prop("SFB-E free no MTD", ex.p_none(), 0.1, R, 0)
    # bounded selection on the same trials: re-select every terminal state with boundMTD
    inner = boin30(bound_mtd=True).inner
    sel_b = np.array([-1 if (m := inner.select_mtd(TrialState(n=tuple(int(v) for v in nn),
                                                             y=tuple(int(v) for v in yy)))) is None
                      else m for nn, yy in zip(ex.n, ex.y, strict=True)])
    sel_b[[r is StopReason.LOWEST_DOSE_TOO_TOXIC for r in ex.stop]] = -1
    for d in range(5):
        check_prop(f"SFB-E bounded selection dose {d + 1}", ex.prob(sel_b == d),
                   bounded[d] / 10, R, 0)
    check_prop("SFB-E bounded no MTD", ex.prob(sel_b < 0), 0.1, R, 0)


@pytest.mark.parametrize("p_true, sel, none, npts, total", [
    # [SFB] sim_boin_multi(target = 0.30, n_cohort = 10, cohort_size = 3, n_trials = 2000,
    #       seed = 123), scenarios "MTD at dose 2", "MTD at dose 4", "All doses toxic"
    ((0.15, 0.30, 0.45, 0.60, 0.75), [23.8, 55.9, 17.2, 1.6, 0.0], 1.5,
     [9.1, 12.2, 5.4, 0.9, 0.0], 27.6),
    ((0.02, 0.06, 0.15, 0.30, 0.50), [0.0, 1.6, 23.4, 62.3, 12.7], 0.0,
     [3.2, 4.2, 8.2, 10.1, 4.0], 29.8),
    ((0.40, 0.55, 0.65, 0.75, 0.85), [57.3, 2.3, 0.0, 0.0, 0.0], 40.4,
     [13.7, 2.9, 0.3, 0.0, 0.0], 16.9),
], ids=["mtd2", "mtd4", "all_toxic"])
def test_boin_simfastboin_multi_scenarios(p_true, sel, none, npts, total, boin30):
    assert sum(sel) + none == pytest.approx(100.0, abs=0.11)  # transcription check
    ex = exact(boin30(), p_true)
    check_boin_table(ex, 2000, sel, none, 0.05, npts, 0.05, total, 0.05, tag=f"SFB {p_true}")


SAFE = (0.01, 0.02, 0.05, 0.12, 0.30)
TOXIC = (0.35, 0.45, 0.55, 0.65, 0.75)


@pytest.fixture(scope="module")
def boin36(build_design):
    # sim_boin(target = 0.30, n_cohort = 12, cohort_size = 3): N = 36, n_earlystop = 18
    return lambda **opts: build_design("boin", 5, 0.30, 3, 36, n_earlystop=18, **opts)


def test_boin_simfastboin_plain_safe_curve(boin36):
    """[SFB] sim_boin(target = 0.30, p_true = c(0.01, 0.02, 0.05, 0.12, 0.30), n_cohort = 12,
    cohort_size = 3, n_trials = 1000, seed = 1)$n_pts_dose."""
    ex = exact(boin36(), SAFE)
    for d, pub in enumerate([3.099, 3.285, 3.888, 8.136, 14.976]):
        m, sd = ex.mean_sd(ex.n[:, d])
        check_mean(f"SFB-F mean n at dose {d + 1}", m, sd, pub, 1000, 0.0005)


@slow
def test_boin_simfastboin_titration_safe_curve(boin36):
    """[SFB] same as above with titration = TRUE (seed 1, 1000 trials).  simFastBOIN and BOIN
    2.7.2 get.oc (flag ft reset per trial) give the titration dose cohort_size-1 more patients
    after titration; that is our default (titration_complete_cohort=True).  With the 2.7.1
    variant (a full cohort) dose 4 is 4.6 SE off, which the second half checks."""
    ex = exact(boin36(titration=True), SAFE)
    for d, pub in enumerate([1.063, 1.164, 1.736, 7.516, 15.997]):
        m, sd = ex.mean_sd(ex.n[:, d])
        check_mean(f"SFB-F titration mean n at dose {d + 1}", m, sd, pub, 1000, 0.0005)
    old = exact(boin36(titration=True, titration_complete_cohort=False), SAFE)
    m, sd = old.mean_sd(old.n[:, 3])
    assert abs(m - 7.516) > 4 * sd / 1000 ** 0.5  # the 2.7.1 rule is distinguishable


@pytest.mark.parametrize("extrasafe, none_pct", [
    (False, 24.5),
    pytest.param(True, 43.3, marks=slow),  # its own N = 36 graph
], ids=["plain", "extrasafe"])
def test_boin_simfastboin_toxic_curve_no_mtd(extrasafe, none_pct, boin36):
    """[SFB] sim_boin(target = 0.30, p_true = c(0.35, 0.45, 0.55, 0.65, 0.75), n_cohort = 12,
    cohort_size = 3, n_trials = 1000, [extrasafe = TRUE,] seed = 2)$percent_no_mtd."""
    ex = exact(boin36(extrasafe=extrasafe), TOXIC)
    check_prop(f"SFB-G extrasafe={extrasafe} no MTD", ex.p_none(), none_pct, 1000, 0.05)


# ============================================================ 3+3: exact, simFastBOIN [SFB-3+3]
P_33 = (0.05, 0.15, 0.25, 0.45, 0.60)


def test_33_simfastboin_exact_previous_rule(build_design):
    """[SFB-3+3] oc_3p3(p_true = c(0.05, 0.15, 0.25, 0.45, 0.60)), mtd_rule "previous"
    (the dose below the toxic one is the MTD with 3 or 6 patients; 0/3 at the top dose is
    enough).  Exact, so only the 1-decimal rounding is allowed."""
    ex = exact(build_design("3+3", 5, 0.25, 3, 30, de_escalation=False, top_dose_needs_six=False), P_33)
    sel, none = [18.1, 31.7, 36.4, 10.2, 0.9], 2.7
    for d, pub in enumerate(sel):
        check_exact(f"3+3 prev P(select {d + 1}) %", 100 * ex.p_select(d), pub, 0.05)
    check_exact("3+3 prev P(no MTD) %", 100 * ex.p_none(), none, 0.05)
    for d, (pts, tox) in enumerate(zip([3.4, 3.9, 3.4, 2.0, 0.4], [0.2, 0.6, 0.8, 0.9, 0.3],
                                       strict=True)):
        check_exact(f"3+3 prev mean n {d + 1}", ex.mean_sd(ex.n[:, d])[0], pts, 0.05)
        check_exact(f"3+3 prev mean DLT {d + 1}", ex.mean_sd(ex.y[:, d])[0], tox, 0.05)
    check_exact("3+3 prev total n", ex.mean_sd(ex.N)[0], 13.1, 0.05)
    check_exact("3+3 prev total DLT", ex.mean_sd(ex.y.sum(axis=1))[0], 2.8, 0.05)
    # doses above a true DLT rate of 1/3: DL4, DL5
    over = ex.n[:, 3:].sum(axis=1)
    check_exact("3+3 prev % patients there",
                100 * float((ex.w * over).sum() / (ex.w * ex.N).sum()), 18.6, 0.05)
    check_exact("3+3 prev % trials treating there", 100 * ex.prob(over > 0), 47.5, 0.05)
    check_exact("3+3 prev % trials selecting there",
                100 * (ex.p_select(3) + ex.p_select(4)), 11.1, 0.05)


def test_33_simfastboin_exact_expand_rule(build_design):
    """[SFB-3+3] oc_3p3(..., mtd_rule = "expand"): the MTD is the highest dose with <= 1/6,
    a dose with only 3 patients being expanded first (de-escalation; the top dose needs 6).
    Printed: round(sel_percent, 1) and round(total_n_pts, 2)."""
    ex = exact(build_design("3+3", 5, 0.25, 3, 30, de_escalation=True, top_dose_needs_six=True), P_33)
    for d, pub in enumerate([19.7, 34.4, 35.3, 7.5, 0.5]):
        check_exact(f"3+3 expand P(select {d + 1}) %", 100 * ex.p_select(d), pub, 0.05)
    check_exact("3+3 expand total n", ex.mean_sd(ex.N)[0], 15.52, 0.005)


# ======================================================== CRM: dfcrm via escalation [ESC]
SKELETON = (0.05, 0.1, 0.25, 0.4, 0.6)
PRIOR_VAR = 1.34


@lru_cache(maxsize=None)
def _dfcrm_post_mean_var(n: Tuple[int, ...], y: Tuple[int, ...]) -> Tuple[float, float]:
    """dfcrm::crm(var.est = TRUE) posterior mean and variance of beta (empiric model), by
    adaptive quadrature (independent of the package's Gauss-Legendre grid)."""

    def lik(b: float) -> float:
        if abs(b) > 40:
            return 0.0
        e = math.exp(b)
        v = math.exp(-b * b / (2 * PRIOR_VAR))
        for s, nn, yy in zip(SKELETON, n, y, strict=True):
            if nn:
                p = s ** e
                v *= p ** yy * (1 - p) ** (nn - yy)
        return v

    den = integrate.quad(lik, -math.inf, math.inf)[0]
    m1 = integrate.quad(lambda b: b * lik(b), -10, 10)[0] / den
    m2 = integrate.quad(lambda b: b * b * lik(b), -10, 10)[0] / den
    return m1, m2 - m1 * m1


@dataclass(frozen=True)
class _EscalationStopWhenTooToxic(Design):
    """escalation::stop_when_too_toxic(dose = 1, tox_threshold, confidence) for a dfcrm
    selector: stop, recommending no dose, when Pr(p_1 > threshold) > confidence, that
    probability taken from N(posterior mean, posterior variance) of beta, as escalation's
    prob_tox_exceeds.dfcrm_selector does."""

    base: Design
    tox_threshold: float = 0.35
    confidence: float = 0.9

    @property
    def n_doses(self) -> int:  # type: ignore[override]
        return self.base.n_doses

    @property
    def max_cohort_size(self) -> int:
        return self.base.max_cohort_size

    def canonical(self, state: TrialState):
        return self.base.canonical(state)

    def _too_toxic(self, state: TrialState) -> bool:
        if state.total_n == 0:
            return False
        m, v = _dfcrm_post_mean_var(tuple(state.n), tuple(state.y))
        b_star = math.log(math.log(self.tox_threshold) / math.log(SKELETON[0]))
        return norm.cdf(b_star, loc=m, scale=math.sqrt(v)) > self.confidence

    def decide(self, state: TrialState) -> Decision:
        if self._too_toxic(state):
            return Decision.halt(StopReason.LOWEST_DOSE_TOO_TOXIC, "escalation stop_when_too_toxic")
        return self.base.decide(state)

    def select_mtd(self, state: TrialState) -> Optional[int]:
        return None if self._too_toxic(state) else self.base.select_mtd(state)


def _escalation_crm(n_at_dose: Optional[int]) -> Design:
    crm = CRM(n_doses=5, target=0.25, skeleton=SKELETON, cohort_size=3, restrict=False)
    design: Design = _EscalationStopWhenTooToxic(base=crm)
    if n_at_dose is not None:  # stop_when_n_at_dose(dose = 'recommended', n = ...)
        design = StopWhenNAtDose(base=design, n=n_at_dose)
    return StopAtN(base=design, n=12)  # get_dose_paths(cohort_sizes = rep(3, 4))


ESC_CASES = {
    # true = skeleton
    "skeleton": dict(p=SKELETON, n_at_dose=None,
                     rec=[0.000127, 0.019866, 0.227135, 0.451791, 0.273014, 0.028066],
                     rec_round=5e-7, admin=[0.3172, 0.1602, 0.1867, 0.2734, 0.0626],
                     admin_round=5e-5, ess=11.99887, ess_round=5e-6, tox=2.705489,
                     tox_round=5e-7),
    # true_prob_tox <- c(0.45, 0.6, 0.68, 0.75, 0.81)
    "toxic": dict(p=(0.45, 0.6, 0.68, 0.75, 0.81), n_at_dose=None,
                  rec=[0.3027462, 0.6407708, 0.0502073, 0.0055527, 0.0006931, 0.0000299],
                  rec_round=5e-8, admin=[0.895800, 0.052921, 0.008539, 0.042028, 0.000711],
                  admin_round=5e-7, ess=10.73269, ess_round=5e-6, tox=5.102913,
                  tox_round=5e-7),
    # ... %>% stop_when_n_at_dose(dose = 'recommended', n = 9), same truth
    "toxic_n9": dict(p=(0.45, 0.6, 0.68, 0.75, 0.81), n_at_dose=9,
                     rec=[0.2103223, 0.7393498, 0.0440522, 0.0055527, 0.0006931, 0.0000299],
                     rec_round=5e-8, admin=[0.895800, 0.052921, 0.008539, 0.042028, 0.000711],
                     admin_round=5e-7, ess=9.064864,
                     ess_round=5e-7, tox=4.352391, tox_round=5e-7),
}


@pytest.mark.parametrize("case", list(ESC_CASES))
def test_crm_escalation_crystallised_dose_paths(case):
    """[ESC] calculate_probabilities(): exact probabilities of recommendation (NoDose, 1..5),
    probability of administration (expected share of the trial's patients at each dose),
    expected sample size and expected total toxicities.  Exact on both sides, so only the
    printed rounding is allowed."""
    c = ESC_CASES[case]
    assert sum(c["rec"]) == pytest.approx(1.0, abs=5e-6)  # transcription check
    ex = exact(_escalation_crm(c["n_at_dose"]), c["p"])
    check_exact(f"ESC {case} P(NoDose)", ex.p_none(), c["rec"][0], c["rec_round"])
    for d in range(5):
        check_exact(f"ESC {case} P(recommend {d + 1})", ex.p_select(d), c["rec"][d + 1],
                    c["rec_round"])
    share = ex.n / ex.N[:, None]
    for d in range(5):
        check_exact(f"ESC {case} P(administer {d + 1})", float((ex.w * share[:, d]).sum()),
                    c["admin"][d], c["admin_round"])
    check_exact(f"ESC {case} expected sample size", ex.mean_sd(ex.N)[0], c["ess"],
                c["ess_round"])
    check_exact(f"ESC {case} expected toxicities", ex.mean_sd(ex.y.sum(axis=1))[0], c["tox"],
                c["tox_round"])
