"""Time-to-event designs: TITE-CRM and TITE-BOIN.

Both decide while some patients are still inside their DLT window.  They keep the pure
decision style of the other designs: ``decide(tite_state) -> Decision`` where
:class:`TiteState` is a :class:`~escalation_sim.types.TrialState` plus the follow-up of the
pending patients, and ``select_mtd(state)`` on complete data.  With no pending patient a
``TiteState`` carries exactly the information of a ``TrialState`` and both designs decide
exactly as their complete-data parents (CRM, BOIN), which they subclass: the model, the
boundaries, the elimination rule, the restrictions and the final selection are those of
:mod:`escalation_sim.designs.crm` and :mod:`escalation_sim.designs.boin` (TITE-BOIN's
elimination, guards and selection come from the interval kernel,
:mod:`escalation_sim.designs.interval`).  They run only in the discrete-event engine (their
classes declare ``time_to_event = True``, which the registry and the engines read).

TiteState
---------
``n[d]``  every patient enrolled at dose d and still in the trial (complete + pending;
          patients enrolled but not yet infused are pending with follow-up 0),
``y[d]``  DLTs observed so far,
``pending``  one ``(dose, fraction)`` per pending patient (no DLT yet, window not over):
          follow-up / window length, in [0, 1].
``max_units``  score designs (TITE-gBOIN): ``y`` is a sum of score units seen so far, at
          most ``max_units`` per non-pending patient; 1 for DLTs.
``current``, ``last_n``, ``last_y``: the dose, size and DLTs so far of the latest group.

TITE-CRM (Cheung & Chappell 2000, Biometrics 56:1177-1182)
----------------------------------------------------------
Weighted likelihood: a DLT contributes p_d(beta), a complete DLT-free patient 1 - p_d(beta)
and a pending DLT-free patient 1 - w p_d(beta) with the linear weight
w = min(follow-up / window, 1).  The posterior over beta (same prior, model, quadrature grid
as :mod:`~escalation_sim.designs.crm`, whose ``_fit`` is reused with the pending factors
folded into the quadrature weights) gives p_hat; the next dose and its restrictions (no
skipping, coherence after the latest group) are CRM's.  ``select_mtd``: CRM on complete data.

TITE-BOIN (Yuan, Lin, Li, Nie & Warren 2018, Clin Cancer Res 24:4921-4930)
--------------------------------------------------------------------------
At the current dose d with n patients, y DLTs and m pending patients of standardized total
follow-up time STFT (sum of the pending fractions):

1. dose 1 eliminated (BOIN rule on y, n) -> stop; extrasafe as BOIN;
2. no pending patient at d -> BOIN;
3. y / n >= lambda_d -> de-escalate (pending outcomes can only raise the estimate);
4. m > ``max_pending_fraction`` * n (default 1/2) -> suspend accrual (a decision with
   ``cohort_size == 0``: the engine waits for more data);
5. otherwise each pending patient's outcome is imputed: with p_hat = (y + phi/2) /
   (n - m + 1), the posterior mean of a Beta(phi/2, 1 - phi/2) prior updated with the
   complete data, the expected number of DLTs among the pending patients is
   (m - STFT) * p_hat / (1 - p_hat), and p_tilde = (y + (m - STFT) p_hat / (1 - p_hat)) / n
   is compared with lambda_e / lambda_d exactly as BOIN compares y / n (escalate if <=
   lambda_e, de-escalate if >= lambda_d, else stay), with the interval kernel's guards
   (eliminated doses, dose 1, top dose, ``n_earlystop``).  In the kernel's terms this is
   the rule on (n, effective y), effective y = n * p_tilde.

``estimator: quasi`` replaces step 5's imputation by the estimator of the R package
TITEgBOIN 0.4.0 (``next_TITE_QuasiBOIN``; docs/reference_notes/gboin_titegboin.md section 3):
p_hat = y / (n - m + STFT), the observed DLTs over the "effective sample size" (complete
patients plus each pending patient's followed fraction of the window), compared with
lambda_e / lambda_d in the same way; with no follow-up at all (n - m + STFT = 0, possible
only with ``max_pending_fraction: 1``) the decision is to stay.  Only the estimator changes:
steps 1-4 (the de-escalation whatever is pending, then the suspension) stay as above,
whereas TITEgBOIN checks the suspension first (which matters only when y / n >= lambda_d
with more than half the patients pending: it suspends where TITE-BOIN de-escalates).
TITE-gBOIN (:mod:`escalation_sim.designs.tite_gboin`) follows TITEgBOIN's order.

This reproduces the published TITE-BOIN decision table for target 0.2 (see
tests/test_tite.py): e.g. with 9 patients, 1 DLT and 3 pending, escalate iff STFT >= 0.77;
with 2 DLTs and 1..4 pending, de-escalate iff STFT <= 0.52, 1.59, 2.66, 3.73.  Elimination
uses n including pending patients (pending outcomes can only add DLTs).  Titration is not
offered.
"""
from __future__ import annotations

import copy
import textwrap
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Literal, Optional, Tuple, Union

import numpy as np
from pydantic import Field, model_serializer, model_validator

from ..types import Decision, TrialState
from . import boin as _boin
from . import crm as _crm
from .base import Design, DesignContext
from .interval import DE_ESCALATE, ESCALATE, STAY, Step
from .registry import DesignEntry, register
from .tables import MODEL_BASED, DecisionTable, TableRequest, next_cohort_table

__all__ = ["TiteState", "TITECRM", "TITEBOIN", "linear_weight", "tite_crm_fit",
           "tite_boin_estimate", "quasi_estimate", "TiteCRMSpec", "TiteBOINSpec",
           "ESTIMATORS"]

#: TITE-BOIN's estimators with pending patients: Yuan et al. 2018's imputation (default)
#: and TITEgBOIN 0.4.0's y / (n - m + STFT)
ESTIMATORS = ("imputation", "quasi")


# =========================================================================== state
@dataclass(frozen=True)
class TiteState(TrialState):
    """A :class:`TrialState` plus the pending patients' follow-up (see the module docs)."""

    pending: Tuple[Tuple[int, float], ...] = ()
    #: score designs: the most units one patient can contribute (1: binary DLTs)
    max_units: int = 1

    def __post_init__(self) -> None:
        K = len(self.n)
        counts = [0] * K
        for d, f in self.pending:
            if not 0 <= d < K:
                raise ValueError(f"pending patient at dose index {d} outside 0..{K - 1}")
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"pending follow-up fraction must be in [0, 1] (got {f})")
            counts[d] += 1
        mu = self.max_units
        for d in range(K):
            # a pending patient has contributed nothing yet; the others at most max_units
            if self.y[d] > (self.n[d] - counts[d]) * mu:
                if mu == 1:
                    raise ValueError(f"dose {d + 1}: {counts[d]} pending patients but only "
                                     f"{self.n[d] - self.y[d]} DLT-free patients")
                raise ValueError(f"dose {d + 1}: {counts[d]} pending patients, so the "
                                 f"{self.n[d] - counts[d]} others cannot carry {self.y[d]} "
                                 f"score units (at most {mu} each)")

    @classmethod
    def from_followup(cls, n, y, pending_days, window_days: float,
                      current: Optional[int] = None, last_n: int = 0,
                      last_y: int = 0, max_units: int = 1) -> "TiteState":
        """Build from follow-up in days: ``pending_days`` = [(dose, days followed), ...];
        ``max_units``: a score design's unit scale (``y`` in score units)."""
        pend = tuple((int(d), linear_weight(t, window_days)) for d, t in pending_days)
        return cls(tuple(n), tuple(y), current, last_n, last_y, pend, int(max_units))

    def pending_at(self, dose: int) -> int:
        return sum(1 for d, _ in self.pending if d == dose)

    def stft(self, dose: int) -> float:
        """Standardized total follow-up time of the pending patients at ``dose``."""
        return float(sum(f for d, f in self.pending if d == dose))

    def complete_n(self) -> Tuple[int, ...]:
        """Patients with complete DLT information per dose (DLT seen or window over)."""
        c = list(self.n)
        for d, _ in self.pending:
            c[d] -= 1
        return tuple(c)

    def as_trial_state(self) -> TrialState:
        return TrialState(self.n, self.y, self.current, self.last_n, self.last_y)



def _pending(state: TrialState) -> Tuple[Tuple[int, float], ...]:
    return getattr(state, "pending", ())


def linear_weight(followup_days: float, window_days: float) -> float:
    """Cheung & Chappell (2000) linear weight w = min(follow-up / window, 1)."""
    if window_days <= 0:
        raise ValueError(f"window_days must be > 0 (got {window_days})")
    if followup_days < 0:
        raise ValueError(f"follow-up must be >= 0 days (got {followup_days})")
    return min(float(followup_days) / float(window_days), 1.0)


# =========================================================================== TITE-CRM
def tite_crm_fit(design: "_crm.CRM", state: TrialState) -> "_crm.CRMFit":
    """CRM posterior with the pending patients' weighted likelihood 1 - w p_d(beta).

    The complete data enter exactly as in CRM; each pending factor multiplies the quadrature
    weights of CRM's grid, then CRM's own posterior summaries are computed."""
    g = _crm._grid(design.skeleton, design.model, float(design.intcpt),
                   float(design.prior_var), float(design.target))
    pend = _pending(state)
    if not pend:
        return _crm._fit(g, tuple(state.n), tuple(state.y))
    extra = np.zeros_like(g.log_w)
    n_c = list(state.n)
    for d, w in pend:
        n_c[d] -= 1
        if w > 0:
            extra += np.log1p(-w * g.p[d])
    g2 = copy.copy(g)
    g2.log_w = g.log_w + extra
    return _crm._fit.__wrapped__(g2, tuple(n_c), tuple(state.y))


@dataclass(frozen=True)
class TITECRM(_crm.CRM):
    """TITE-CRM: CRM whose likelihood weights pending patients (Cheung & Chappell 2000)."""

    name: str = "tite-crm"
    time_to_event: ClassVar[bool] = True

    def fit(self, state: TrialState) -> "_crm.CRMFit":
        if _pending(state):
            return tite_crm_fit(self, state)
        return super().fit(state)

    def posterior_log_weights(self, state: TrialState) -> np.ndarray:
        """CRM's node weights with each pending patient's factor 1 - w p_d(beta)."""
        pend = _pending(state)
        if not pend:
            return super().posterior_log_weights(state)
        g = _crm._grid(self.skeleton, self.model, float(self.intcpt), float(self.prior_var),
                       float(self.target))
        n_c = list(state.n)
        extra = np.zeros_like(g.log_w)
        for d, w in pend:
            n_c[d] -= 1
            if w > 0:
                extra += np.log1p(-w * g.p[d])
        nn = np.asarray(n_c, dtype=float)
        yy = np.asarray(state.y, dtype=float)
        return g.log_w + extra + yy @ g.logp + (nn - yy) @ g.log1mp

    def canonical(self, state: TrialState):
        """With pending patients the whole state matters; without, as CRM."""
        return state if _pending(state) else super().canonical(state)


# =========================================================================== TITE-BOIN
def tite_boin_estimate(target: float, n: int, y: int, m: int, stft: float) -> float:
    """p_tilde of Yuan et al. (2018): DLT rate at a dose with ``m`` pending patients whose
    standardized total follow-up time is ``stft`` (see the module docstring)."""
    if n <= 0:
        raise ValueError(f"n must be >= 1 (got {n})")
    if m == 0:
        return y / n
    p_hat = (y + target / 2.0) / (n - m + 1.0)
    return (y + (m - stft) * p_hat / (1.0 - p_hat)) / n


def quasi_estimate(n: float, y: float, m: int, stft: float) -> Optional[float]:
    """TITEgBOIN 0.4.0's time-to-event estimate ``y / (n - m + STFT)`` at a dose with ``n``
    patients (``m`` of them pending, standardized total follow-up ``stft``) and observed
    outcome sum ``y`` (DLTs, or normalized scores); ``y / n`` when nobody is pending; None
    when the effective sample size ``n - m + stft`` is 0 (no follow-up at all)."""
    if n <= 0:
        raise ValueError(f"n must be >= 1 (got {n})")
    if m == 0:
        return y / n
    ess = n - m + stft
    return None if ess <= 0 else y / ess


@dataclass(frozen=True)
class TITEBOIN(_boin.BOIN):
    """TITE-BOIN (Yuan et al. 2018); complete data: BOIN."""

    name: str = "tite-boin"
    max_pending_fraction: float = 0.5
    #: "imputation" (Yuan et al. 2018) or "quasi" (TITEgBOIN 0.4.0's y / (n - m + STFT))
    estimator: str = "imputation"
    time_to_event: ClassVar[bool] = True

    def p_tilde(self, n: int, y: int, m: int, stft: float) -> Optional[float]:
        """The estimate compared with the boundaries (None: no follow-up at all)."""
        if self.estimator == "quasi":
            return quasi_estimate(n, y, m, stft)
        return tite_boin_estimate(self.target, n, y, m, stft)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.titration:
            raise ValueError("titration is not available with TITE-BOIN")
        if not 0.0 <= self.max_pending_fraction <= 1.0:
            raise ValueError(f"max_pending_fraction must be in [0, 1] "
                             f"(got {self.max_pending_fraction})")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)} "
                             f"(got {self.estimator!r})")

    def step(self, state: TrialState, dose: int) -> Union[Step, Decision]:
        """With pending patients at the current dose: Yuan et al.'s rule on p_tilde (module
        docstring); otherwise BOIN's.  The kernel adds elimination and the guards."""
        pend = [f for dd, f in _pending(state) if dd == dose]
        m = len(pend)
        if m == 0:
            return super().step(state, dose)
        n_d, y_d = state.n[dose], state.y[dose]
        b_d = self.bounds(n_d)[1]
        lam_e, lam_d = self.lambdas
        s = sum(pend)
        obs = f"{y_d}/{n_d} DLT at dose {dose + 1}, {m} pending (STFT {s:.2f})"
        if y_d >= b_d:
            return Step(DE_ESCALATE, f"{obs} (de-escalate if >= {b_d} whatever the pending "
                                     f"outcomes)")
        if m > self.max_pending_fraction * n_d:
            return Decision(dose, 0, f"{obs}: more than {self.max_pending_fraction:g} of the "
                                     f"patients pending: suspend accrual", None, None)
        pt = self.p_tilde(n_d, y_d, m, s)
        if pt is None:
            return Step(STAY, f"{obs}: no follow-up yet (effective sample size 0)")
        if pt <= lam_e:
            return Step(ESCALATE, f"{obs}: p_tilde {pt:.3f} <= {lam_e:.3f}")
        if pt >= lam_d:
            return Step(DE_ESCALATE, f"{obs}: p_tilde {pt:.3f} >= {lam_d:.3f}")
        return Step(STAY, f"{obs}: p_tilde {pt:.3f} between the boundaries")

    def canonical(self, state: TrialState):
        """With pending patients the whole state matters; without, as BOIN."""
        return state if _pending(state) else super().canonical(state)

    def credible_intervals(self, state: TrialState, level: float = 0.95) -> Dict[str, Any]:
        """BOIN's intervals on the complete data (patients whose DLT window is over or who
        had a DLT): pending patients are left out rather than counted as DLT-free."""
        if not _pending(state):
            return super().credible_intervals(state, level)
        from .intervals import isotonic_beta_intervals
        out = isotonic_beta_intervals(state.complete_n(), state.y, level, self.mtd_prior)
        out["method"] += ", complete data only"
        return out

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        out = super().estimates(state)
        pend = _pending(state)
        if pend:
            out["pending"] = [sum(1 for dd, _ in pend if dd == d) for d in range(state.n_doses)]
            out["stft"] = [float(sum(f for dd, f in pend if dd == d))
                           for d in range(state.n_doses)]
            out["p_tilde"] = [None if state.n[d] == 0 else
                              self.p_tilde(state.n[d], state.y[d], out["pending"][d],
                                           out["stft"][d])
                              for d in range(state.n_doses)]
        return out


# =========================================================================== specs
class TiteCRMSpec(_crm.Spec):
    """TITE-CRM in the scenario file (``type: tite-crm``); options as ``crm``."""

    type: Literal["tite-crm"] = "tite-crm"  # type: ignore[assignment]


class TiteBOINSpec(_boin.Spec):
    """TITE-BOIN in the scenario file (``type: tite-boin``); options as ``boin`` (no
    titration) plus ``max_pending_fraction``."""

    type: Literal["tite-boin"] = "tite-boin"  # type: ignore[assignment]
    max_pending_fraction: float = Field(
        default=0.5, ge=0, le=1,
        description="suspend accrual when more than this fraction of the patients at the "
                    "current dose are pending (Yuan et al. 2018: 0.5)")
    estimator: Literal["imputation", "quasi"] = Field(
        default="imputation",
        description="estimate with pending patients: imputation (Yuan et al. 2018, the "
                    "default) or quasi (TITEgBOIN 0.4.0: DLTs / (n - pending + STFT))")

    @model_serializer(mode="wrap")
    def _default_estimator_unwritten(self, handler):
        # the resolved form (and the checkpoint key made from it) of a TITE-BOIN that keeps
        # the default estimator stays what it was before the option existed
        d = handler(self)
        if d.get("estimator") == "imputation" and "estimator" not in self.model_fields_set:
            d.pop("estimator", None)
        return d

    @model_validator(mode="after")
    def _no_titration(self) -> "TiteBOINSpec":
        if self.titration:
            raise ValueError("titration: not available with tite-boin (got true)")
        ignored = sorted(k for k in self.model_fields_set if k.startswith("titration_"))
        if ignored:
            raise ValueError(f"{ignored[0]}: a titration option, and tite-boin has no "
                             f"titration (got {getattr(self, ignored[0])})")
        return self


def make_tite_crm(spec: TiteCRMSpec, ctx: DesignContext) -> Design:
    return _crm.make_with(TITECRM, spec, ctx)


def make_tite_boin(spec: TiteBOINSpec, ctx: DesignContext) -> Design:
    return _boin.make_with(TITEBOIN, spec, ctx, max_pending_fraction=spec.max_pending_fraction,
                           estimator=spec.estimator)


PENDING_NOTE = ("With patients pending at the current dose the decision also depends on their "
                "follow-up; this table is for complete data.")


def tite_crm_table(request: TableRequest) -> DecisionTable:
    """CRM's next-cohort table (complete data), with the statement that pending patients'
    follow-up also counts."""
    n_doses = _crm.table_n_doses(request)
    name = request.spec.name or request.spec.type
    return next_cohort_table(request, n_doses=n_doses,
                             statement=MODEL_BASED.format(name=name) + " "
                             + PENDING_NOTE)


def _pending_decision(design: "TITEBOIN", n: int, y: int, m: int
                      ) -> Tuple[str, Optional[float], Optional[float]]:
    """TITE-BOIN's decision at a dose with n patients (m pending), y DLTs and y below the
    de-escalation boundary, as a function of the pending patients' STFT in [0, m]: the text
    and the cut-offs (de-escalate iff STFT <= s_d, escalate iff STFT >= s_e; None when the
    region is empty).  p_tilde decreases in STFT, so solving p_tilde = lambda gives them:
    s = m - (n lambda - y) (1 - p_hat) / p_hat with p_hat = (y + target/2) / (n - m + 1)."""
    lam_e, lam_d = design.lambdas
    if m == 0:
        b_e = design.bounds(n)[0]
        return ("escalate" if y <= b_e else "stay"), None, None
    if m > design.max_pending_fraction * n:
        return "suspend accrual", None, None
    if design.estimator == "quasi":
        # y / (n - m + s) <= lambda  iff  s >= y / lambda - (n - m)
        if y == 0 and m == n:       # p_hat = 0 once any follow-up has accrued
            return "escalate if STFT > 0, else stay", None, None
        s_d = y / lam_d - (n - m)
        s_e = y / lam_e - (n - m)
    else:
        p_hat = (y + design.target / 2.0) / (n - m + 1.0)
        odds = p_hat / (1.0 - p_hat)
        s_d = m - (n * lam_d - y) / odds
        s_e = m - (n * lam_e - y) / odds
    if s_e <= 0:
        return "escalate", None, 0.0
    parts = []
    if s_d >= 0:
        parts.append(f"de-escalate if STFT <= {s_d:.2f}")
    if s_e <= m:
        parts.append(f"escalate if STFT >= {s_e:.2f}")
    text = "; ".join(parts + ["else stay"]) if parts else "stay"
    return text, (s_d if s_d >= 0 else None), (s_e if s_e <= m else None)


def pending_rows(design: "TITEBOIN", ns) -> list:
    """TITE-BOIN's decision table with pending patients (the published form, Yuan et al.
    2018, e.g. PMC9260438 Table 1): one row per n treated at the current dose (pending
    included), y DLTs and a range of pending patients m with the same decision."""
    rows = []
    for n in ns:
        b_d, b_elim = design.bounds(n)[1:]
        for y in range(0, min(b_d, n + 1)):
            m = 0
            while m <= n - y:
                text, s_d, s_e = _pending_decision(design, n, y, m)
                m_hi = m
                while (m_hi + 1 <= n - y and "STFT" not in text
                       and _pending_decision(design, n, y, m_hi + 1)[0] == text):
                    m_hi += 1
                rows.append({"n": n, "dlt_min": y, "dlt_max": y, "pending_min": m,
                             "pending_max": m_hi, "decision": text,
                             "stft_deescalate_max": s_d, "stft_escalate_min": s_e})
                m = m_hi + 1
        if b_d <= n:
            elim = ("" if b_elim is None else
                    f" (and eliminate the dose if >= {b_elim})")
            rows.append({"n": n, "dlt_min": b_d, "dlt_max": n, "pending_min": 0,
                         "pending_max": n - b_d,  # the most there can be (y = b_d)
                         "decision": f"de-escalate whatever is pending{elim}",
                         "stft_deescalate_max": None, "stft_escalate_min": None})
    return rows


def _span(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _pending_span(row) -> str:
    if row["dlt_min"] != row["dlt_max"]:
        return "any"
    return _span(row["pending_min"], row["pending_max"])


def tite_boin_table(request: TableRequest) -> DecisionTable:
    """BOIN's boundary table (complete data), then the decisions with pending patients."""
    tab = _boin.boundary_table(request, title="TITE-BOIN",
                                options=_boin.TABLE_OPTIONS + ("max_pending_fraction",
                                                               "estimator"))
    design, _ = request.build()
    inner = design.inner
    rows = pending_rows(inner, tab.data["n"])
    lines = [tab.text, "", *textwrap.wrap(
        f"With patients pending at the current dose (n treated including the m pending, "
        f"y DLTs; STFT = the pending patients' total follow-up / window; suspend when "
        f"m > {inner.max_pending_fraction:g} n):", 90),
        f"{'n':>4}{'DLTs':>6}  {'pending':<9}decision"]
    for r in rows:
        lines.append(f"{r['n']:>4}{_span(r['dlt_min'], r['dlt_max']):>6}  "
                     f"{_pending_span(r):<9}{r['decision']}")
    data = dict(tab.data, max_pending_fraction=inner.max_pending_fraction, pending=rows)
    return DecisionTable("\n".join(lines), data, tab.notes)


register(DesignEntry(type="tite-crm", spec_model=TiteCRMSpec, make=make_tite_crm,
                     design_class=TITECRM, table=tite_crm_table,
                     summary="TITE-CRM: CRM with linearly weighted pending patients "
                             "(Cheung & Chappell 2000); discrete-event engine only"))
register(DesignEntry(type="tite-boin", spec_model=TiteBOINSpec, make=make_tite_boin,
                     design_class=TITEBOIN, table=tite_boin_table,
                     summary="TITE-BOIN: BOIN deciding with pending patients (Yuan et al. "
                             "2018); discrete-event engine only"))
