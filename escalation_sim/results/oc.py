"""Operating characteristics from the distribution of trial end-states.

Both the Monte Carlo engines and exact enumeration produce an :class:`OutcomeTally`: the
weight (a count of simulated trials, or an exact probability) of each distinct trial ending
``(mtd, stop reason, patients per dose, DLTs per dose)``.  Integer counts merge exactly, so
results do not depend on chunking or the number of workers; every operating characteristic
and its Monte Carlo standard error is computed from the tally by one function.

Definitions (doses 1-based in output):
- true MTD: the dose whose true DLT rate is closest to the target; a tie goes to the lower
  dose.  With ``acceptable=(lo, hi)`` every dose with lo <= p_d <= hi counts as correct.
  When even dose 1 is too toxic (p_1 > 1.4 x target, BOIN's phi2, or above the band) there is
  no true MTD: stopping is correct, PCS = P(no MTD) and every dose is an overdose.
- overdose: a dose above the true MTD (above every acceptable dose when a band is given).
- PCS: P(select a correct dose).  P(no MTD): the trial recommends no dose.
- pct_patients_at_mtd / above: E[patients at (above) the MTD] / E[patients] (ratio of means,
  as the BOIN package reports it) with a delta-method SE.
- p_over60 / p_over80: P(more than 60% / 80% of a trial's patients above the MTD).
SE of a proportion p over R trials is sqrt(p(1-p)/R); of a mean, sd/sqrt(R); exact results have
SE 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..types import STOP_CODES

Key = Tuple[int, int, Tuple[int, ...], Tuple[int, ...]]


@dataclass
class OutcomeTally:
    n_doses: int
    exact: bool = False
    counts: Dict[Key, float] = field(default_factory=dict)

    def add(self, key: Key, weight) -> None:
        self.counts[key] = self.counts.get(key, 0) + weight

    def merge(self, other: "OutcomeTally") -> "OutcomeTally":
        for k, w in other.counts.items():
            self.add(k, w)
        return self

    @property
    def total(self):
        return sum(self.counts.values())

    def arrays(self):
        keys = sorted(self.counts)
        w = np.array([self.counts[k] for k in keys], dtype=np.float64)
        mtd = np.array([k[0] for k in keys], dtype=np.int64)
        stop = np.array([k[1] for k in keys], dtype=np.int64)
        n = np.array([k[2] for k in keys], dtype=np.int64).reshape(len(keys), self.n_doses)
        y = np.array([k[3] for k in keys], dtype=np.int64).reshape(len(keys), self.n_doses)
        return w, mtd, stop, n, y

    @classmethod
    def from_graph_sids(cls, graph, sids: np.ndarray) -> "OutcomeTally":
        """The tally of the trials ending in states ``sids``: the keys of
        :func:`terminal_key`, read in one pass from the graph's arrays (``graph.endings``;
        a run of an efficacy design ends in a hundred thousand distinct states per chunk)."""
        t = cls(graph.K, exact=False)
        ids, cnt = np.unique(sids, return_counts=True)
        mtd, stop, n, y = graph.endings(ids)
        for m, sc, nr, yr, c in zip(mtd.tolist(), stop.tolist(), n.tolist(), y.tolist(),
                                    cnt.tolist()):
            t.add((m, sc, tuple(nr), tuple(yr)), int(c))
        return t


def terminal_key(graph, sid: int) -> Key:
    st = graph.states[sid]
    m = graph.mtd(sid)
    return (-1 if m is None else m, int(graph.stop_code[sid]), st.n, st.y)


def true_mtd(p_true: Sequence[float], target: float) -> int:
    """Dose (0-based) whose true DLT rate is closest to the target; ties to the lower dose.

    Distances are rounded to 12 decimals first so that ties such as 0.15 / 0.35 around
    0.25 are recognised despite floating-point representation.
    """
    p = np.asarray(p_true, dtype=float)
    return int(np.argmin(np.round(np.abs(p - target), 12)))  # first (lower) on ties


TOXIC_FACTOR = 1.4  # BOIN's phi2 = 1.4 x target: a rate "deemed toxic"


def truth_sets(p_true, target: float, acceptable: Optional[Tuple[float, float]] = None):
    """``(correct, overdose)`` boolean arrays over doses.

    ``correct``: the true MTD (closest to the target), or every dose in the ``acceptable``
    band.  When even the lowest dose is too toxic (above the band's upper limit, or above
    1.4 x target without a band) no dose is correct: stopping with no MTD is the right
    answer, PCS = P(no MTD), and every dose counts as an overdose.
    ``overdose``: doses above the highest correct dose.
    """
    p = np.asarray(p_true, dtype=float)
    hi = acceptable[1] if acceptable is not None else TOXIC_FACTOR * target
    if p[0] > hi + 1e-12:
        return np.zeros(p.size, dtype=bool), np.ones(p.size, dtype=bool)
    ok = np.zeros(p.size, dtype=bool)
    if acceptable is not None:
        lo, hi = acceptable
        ok = (p >= lo - 1e-12) & (p <= hi + 1e-12)
    if not ok.any():
        ok[true_mtd(p, target)] = True
    top = int(np.max(np.nonzero(ok)[0]))
    return ok, np.arange(p.size) > top


def _prop(p, R, exact):
    return 0.0 if exact else float(np.sqrt(max(p * (1 - p), 0.0) / R))


def compute_oc(tally: OutcomeTally, p_true: Sequence[float], target: float,
               acceptable: Optional[Tuple[float, float]] = None,
               sets: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Dict[str, object]:
    """Every operating characteristic with its standard error (0 for exact tallies).

    ``sets``: the ``(correct, overdose)`` arrays to use instead of :func:`truth_sets` (a
    design selecting an OBD: :func:`obd_truth_sets`); ``true_mtd`` is then the correct
    dose."""
    K = tally.n_doses
    w, mtd, stop, n, y = tally.arrays()
    R = float(w.sum())
    exact = tally.exact
    if R <= 0:
        raise ValueError("empty tally")
    f = w / R  # weights as probabilities
    ok, over = truth_sets(p_true, target, acceptable) if sets is None else sets
    at = ok

    p_select = np.array([f[mtd == d].sum() for d in range(K)])
    p_none = float(f[mtd < 0].sum())
    pcs = float(p_select[ok].sum()) if ok.any() else p_none
    p_over_sel = float(p_select[over].sum())

    def mean_se(x):
        m = float((f * x).sum())
        if exact:
            return m, 0.0
        var = float((w * (x - m) ** 2).sum() / max(R - 1, 1))
        return m, float(np.sqrt(var / R))

    ntot = n.sum(axis=1).astype(float)
    ytot = y.sum(axis=1).astype(float)
    mean_n = [mean_se(n[:, d].astype(float)) for d in range(K)]
    mean_y = [mean_se(y[:, d].astype(float)) for d in range(K)]
    mn, mn_se = mean_se(ntot)
    my, my_se = mean_se(ytot)

    def ratio_se(a):
        # ratio of means E[a]/E[ntot] with delta-method SE
        ea = float((f * a).sum())
        r = ea / mn if mn > 0 else 0.0
        if exact or mn <= 0:
            return r, 0.0
        z = a - r * ntot
        var = float((w * (z - (f * z).sum()) ** 2).sum() / max(R - 1, 1))
        return r, float(np.sqrt(var / R) / mn)

    n_at = n[:, at].sum(axis=1).astype(float)
    n_over = n[:, over].sum(axis=1).astype(float)
    pct_at, pct_at_se = ratio_se(n_at)
    pct_over, pct_over_se = ratio_se(n_over)
    frac_over = np.divide(n_over, ntot, out=np.zeros_like(ntot), where=ntot > 0)
    p60 = float(f[frac_over > 0.6].sum())
    p80 = float(f[frac_over > 0.8].sum())

    stop_dist = {}
    for code in np.unique(stop):
        r = STOP_CODES[int(code)]
        stop_dist[r.value if r is not None else "none"] = float(f[stop == code].sum())

    return {
        "n_trials": int(round(R)) if not exact else None,
        "exact": exact,
        "true_mtd": (((true_mtd(p_true, target) if sets is None
                       else int(np.flatnonzero(ok)[0])) + 1) if ok.any() else None),
        "p_select": p_select.tolist(),
        "se_p_select": [_prop(p, R, exact) for p in p_select],
        "p_no_mtd": p_none,
        "se_p_no_mtd": _prop(p_none, R, exact),
        "pcs": pcs,
        "se_pcs": _prop(pcs, R, exact),
        "p_select_overdose": p_over_sel,
        "se_p_select_overdose": _prop(p_over_sel, R, exact),
        "mean_n": [m for m, _ in mean_n],
        "se_mean_n": [s for _, s in mean_n],
        "mean_dlt": [m for m, _ in mean_y],
        "se_mean_dlt": [s for _, s in mean_y],
        "mean_n_total": mn,
        "se_mean_n_total": mn_se,
        "mean_dlt_total": my,
        "se_mean_dlt_total": my_se,
        "pct_patients_at_mtd": pct_at,
        "se_pct_patients_at_mtd": pct_at_se,
        "pct_patients_above_mtd": pct_over,
        "se_pct_patients_above_mtd": pct_over_se,
        "p_over60_above_mtd": p60,
        "se_p_over60_above_mtd": _prop(p60, R, exact),
        "p_over80_above_mtd": p80,
        "se_p_over80_above_mtd": _prop(p80, R, exact),
        "stop_reasons": stop_dist,
    }


# ---------------------------------------------------------------------------------------------
# graded truths and score designs (issue 12)
def _mean_se_of(tally: OutcomeTally, x_of) -> Tuple[float, float]:
    """Mean and SE of a per-ending quantity ``x_of(n, y)`` (arrays, one row per ending)."""
    w, _, _, n, y = tally.arrays()
    R = float(w.sum())
    f = w / R
    x = np.asarray(x_of(n, y), dtype=float)
    m = float((f * x).sum())
    if tally.exact:
        return m, 0.0
    var = float((w * (x - m) ** 2).sum() / max(R - 1, 1))
    return m, float(np.sqrt(var / R))


def expected_events(tally: OutcomeTally, p: Sequence[float]) -> Dict[str, list]:
    """Mean number of events per trial at each dose when each patient at dose d has the event
    with probability ``p[d]``, independently of how the trial went: E[n_d] p_d (Wald's
    identity: a patient's own outcome is independent of the dose the design gave it, which
    depended on earlier patients only).  Returns per-dose means and SEs (the SE is
    p_d x SE(n_d)) and the total with its SE."""
    p = np.asarray(p, dtype=float)
    per = [_mean_se_of(tally, lambda n, y, d=d: n[:, d] * p[d]) for d in range(len(p))]
    tot = _mean_se_of(tally, lambda n, y: n @ p)
    return {"mean": [m for m, _ in per], "se": [s for _, s in per],
            "total": tot[0], "se_total": tot[1]}


def score_design_oc(oc: Dict[str, object], tally: OutcomeTally, unit_scale: int,
                    p_dlt: Sequence[float]) -> Dict[str, object]:
    """Adjust a score design's OCs (its tally's ``y`` are score units, not DLTs):
    ``mean_score`` / ``mean_score_total`` = mean normalized score sum per dose / per trial,
    and ``mean_dlt`` / ``mean_dlt_total`` = E[n_d] x P(DLT at d) (:func:`expected_events`),
    the expected DLTs under the scenario's DLT rule (the same definition for Monte Carlo and
    exact results)."""
    K = tally.n_doses
    L = float(unit_scale)
    sc = [_mean_se_of(tally, lambda n, y, d=d: y[:, d] / L) for d in range(K)]
    tot = _mean_se_of(tally, lambda n, y: y.sum(axis=1) / L)
    oc["mean_score"] = [m for m, _ in sc]
    oc["se_mean_score"] = [s for _, s in sc]
    oc["mean_score_total"], oc["se_mean_score_total"] = tot
    ev = expected_events(tally, p_dlt)
    oc["mean_dlt"], oc["se_mean_dlt"] = ev["mean"], ev["se"]
    oc["mean_dlt_total"], oc["se_mean_dlt_total"] = ev["total"], ev["se_total"]
    oc["mean_dlt_definition"] = "E[patients at the dose] x P(DLT) (Wald's identity)"
    return oc


#: the grade whose events the graded OCs count
SEVERE_GRADE = 3


def graded_truth_oc(oc: Dict[str, object], tally: OutcomeTally, model) -> Dict[str, object]:
    """Add the per-type OCs of a graded truth (``model``: an OutcomeModel): per toxicity type
    and dose, ``p_grade3`` = P(worst grade >= 3) per patient (truth, whatever the onset) and
    ``mean_grade3_events`` = the mean number of patients with a grade >= 3 event per trial
    (E[n_d] x P, :func:`expected_events`); ``mean_late_events`` per dose (qualifying events
    that start after the DLT window) and, with efficacy, ``mean_responders`` per dose."""
    by_type = {}
    for name in model.type_names:
        p = model.grade_at_least(name, SEVERE_GRADE)
        ev = expected_events(tally, p)
        by_type[name] = {"p_grade3": p.tolist(), "mean_grade3_events": ev["mean"],
                         "se_mean_grade3_events": ev["se"],
                         "mean_grade3_events_total": ev["total"],
                         "se_mean_grade3_events_total": ev["se_total"]}
    oc["toxicity_types"] = by_type
    late = model.late_rates()
    ev = expected_events(tally, late)
    oc["p_late"] = late.tolist()
    oc["mean_late_events"], oc["se_mean_late_events"] = ev["mean"], ev["se"]
    resp = model.response_rates()
    if resp is not None:
        ev = expected_events(tally, resp)
        oc["p_response"] = resp.tolist()
        oc["mean_responders"], oc["se_mean_responders"] = ev["mean"], ev["se"]
    return oc


# ---------------------------------------------------------------------------------------------
# toxicity-and-efficacy designs (BOIN12, Keyboard phase I/II; issue 13)
def obd_truth_sets(design, p_tox: Sequence[float], p_eff: Sequence[float]):
    """``(correct, overdose)`` boolean arrays over doses for a design that selects an optimal
    biological dose: correct = the true OBD (``design.inner.true_obd``: the largest true
    utility among the truly admissible doses; none admissible -> no dose is correct and
    stopping without a selection is the right answer, as :func:`truth_sets`); overdose =
    the doses above the true OBD (every dose when there is none)."""
    inner = design.inner
    K = len(p_tox)
    obd = inner.true_obd(list(p_tox), list(p_eff))
    ok = np.zeros(K, dtype=bool)
    if obd is None:
        return ok, np.ones(K, dtype=bool)
    ok[obd] = True
    return ok, np.arange(K) > obd


def efficacy_design_oc(oc: Dict[str, object], tally: OutcomeTally, design,
                       p_tox: Sequence[float], p_eff: Sequence[float]) -> Dict[str, object]:
    """Add the OBD operating characteristics of a toxicity-and-efficacy design to ``oc``
    (computed by :func:`compute_oc` with the true OBD as the correct dose, so ``pcs``,
    ``p_select_overdose`` and the patients-at/above figures refer to the OBD):

    * ``true_obd`` (1-based, None when no dose is truly admissible), ``true_utility`` per dose
      and ``true_admissible``, with ``true_obd_definition``;
    * ``p_select_obd`` (= ``pcs``): P(select the true OBD; P(no selection) when none);
    * ``mean_utility_selected``: E[true utility of the selected dose], a trial selecting no
      dose counting 0 (the utility's own scale: 0-100 for BOIN12);
    * ``mean_responders`` per dose and ``mean_responders_total``: E[n_d] q_d (Wald's
      identity, :func:`expected_events`: the same definition for Monte Carlo and exact);
    * ``p_response``: the truth's response rates."""
    inner = design.inner
    p_tox, p_eff = list(map(float, p_tox)), list(map(float, p_eff))
    util = inner.true_utility(p_tox, p_eff)
    obd = inner.true_obd(p_tox, p_eff)
    w, mtd, _, _, _ = tally.arrays()
    R = float(w.sum())
    f = w / R
    u_sel = np.array([util[m] if m >= 0 else 0.0 for m in mtd.tolist()], dtype=float)
    mu = float((f * u_sel).sum())
    if tally.exact:
        se_mu = 0.0
    else:
        var = float((w * (u_sel - mu) ** 2).sum() / max(R - 1, 1))
        se_mu = float(np.sqrt(var / R))
    oc["selects"] = "OBD"
    oc["true_obd"] = None if obd is None else obd + 1
    oc["true_obd_definition"] = inner.true_obd_definition
    oc["true_target_definition"] = "the true OBD: " + inner.true_obd_definition
    oc["true_utility"] = util
    oc["true_admissible"] = inner.true_admissible(p_tox, p_eff)
    oc["p_select_obd"] = oc["pcs"]
    oc["se_p_select_obd"] = oc["se_pcs"]
    oc["mean_utility_selected"] = mu
    oc["se_mean_utility_selected"] = se_mu
    ev = expected_events(tally, p_eff)
    oc["p_response"] = p_eff
    oc["mean_responders"], oc["se_mean_responders"] = ev["mean"], ev["se"]
    oc["mean_responders_total"], oc["se_mean_responders_total"] = ev["total"], ev["se_total"]
    return oc
