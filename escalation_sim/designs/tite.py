"""Time-to-event designs: TITE-CRM and TITE-BOIN.

Both decide while some patients are still inside their DLT window.  They keep the pure
decision style of the other designs: ``decide(tite_state) -> Decision`` where
:class:`TiteState` is a :class:`~escalation_sim.types.TrialState` plus the follow-up of the
pending patients, and ``select_mtd(state)`` on complete data.  With no pending patient a
``TiteState`` carries exactly the information of a ``TrialState`` and both designs decide
exactly as their complete-data parents (CRM, BOIN), which they subclass: the model, the
boundaries, the elimination rule, the restrictions and the final selection are those of
:mod:`escalation_sim.designs.crm` and :mod:`escalation_sim.designs.boin`.  They run only in
the discrete-event engine (registry entries have ``time_to_event=True``).

TiteState
---------
``n[d]``  every patient enrolled at dose d and still in the trial (complete + pending;
          patients enrolled but not yet infused are pending with follow-up 0),
``y[d]``  DLTs observed so far,
``pending``  one ``(dose, fraction)`` per pending patient (no DLT yet, window not over):
          follow-up / window length, in [0, 1].
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
   lambda_e, de-escalate if >= lambda_d, else stay), with BOIN's guards (eliminated doses,
   dose 1, top dose, ``n_earlystop``).

This reproduces the published TITE-BOIN decision table for target 0.2 (see
tests/test_tite.py): e.g. with 9 patients, 1 DLT and 3 pending, escalate iff STFT >= 0.77;
with 2 DLTs and 1..4 pending, de-escalate iff STFT <= 0.52, 1.59, 2.66, 3.73.  Elimination
uses n including pending patients (pending outcomes can only add DLTs).  Titration is not
offered.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Literal, Optional, Tuple

import numpy as np
from pydantic import Field, model_validator

from ..types import Decision, StopReason, TrialState
from . import boin as _boin
from . import crm as _crm
from .base import Design, DesignContext
from .registry import DesignEntry, register
from .rules import StopAtN, StopWhenNAtDose

__all__ = ["TiteState", "TITECRM", "TITEBOIN", "linear_weight", "tite_crm_fit",
           "tite_boin_estimate", "TiteCRMSpec", "TiteBOINSpec"]


# =========================================================================== state
@dataclass(frozen=True)
class TiteState(TrialState):
    """A :class:`TrialState` plus the pending patients' follow-up (see the module docs)."""

    pending: Tuple[Tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        K = len(self.n)
        counts = [0] * K
        for d, f in self.pending:
            if not 0 <= d < K:
                raise ValueError(f"pending patient at dose index {d} outside 0..{K - 1}")
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"pending follow-up fraction must be in [0, 1] (got {f})")
            counts[d] += 1
        for d in range(K):
            if counts[d] > self.n[d] - self.y[d]:
                raise ValueError(f"dose {d + 1}: {counts[d]} pending patients but only "
                                 f"{self.n[d] - self.y[d]} DLT-free patients")

    @classmethod
    def from_followup(cls, n, y, pending_days, window_days: float,
                      current: Optional[int] = None, last_n: int = 0,
                      last_y: int = 0) -> "TiteState":
        """Build from follow-up in days: ``pending_days`` = [(dose, days followed), ...]."""
        pend = tuple((int(d), linear_weight(t, window_days)) for d, t in pending_days)
        return cls(tuple(n), tuple(y), current, last_n, last_y, pend)

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


@dataclass(frozen=True)
class TITEBOIN(_boin.BOIN):
    """TITE-BOIN (Yuan et al. 2018); complete data: BOIN."""

    name: str = "tite-boin"
    max_pending_fraction: float = 0.5
    time_to_event: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.titration:
            raise ValueError("titration is not available with TITE-BOIN")
        if not 0.0 <= self.max_pending_fraction <= 1.0:
            raise ValueError(f"max_pending_fraction must be in [0, 1] "
                             f"(got {self.max_pending_fraction})")

    def decide(self, state: TrialState) -> Decision:
        pend = _pending(state)
        if state.current is None or not pend:
            return super().decide(state)
        d = state.current
        m = sum(1 for dd, _ in pend if dd == d)
        if m == 0:
            return super().decide(state)
        low = self.lowest_eliminated(state)
        n_d, y_d = state.n[d], state.y[d]
        b_e, b_d, b_elim = self.bounds(n_d)
        stop = self._safety_stop(state, low, b_elim)
        if stop is not None:
            return stop
        lam_e, lam_d = self.lambdas
        s = sum(f for dd, f in pend if dd == d)
        obs = f"{y_d}/{n_d} DLT at dose {d + 1}, {m} pending (STFT {s:.2f})"
        if y_d >= b_d:
            move, why = -1, f"{obs}: de-escalate whatever the pending outcomes"
        elif m > self.max_pending_fraction * n_d:
            return Decision(d, 0, f"{obs}: more than {self.max_pending_fraction:g} of the "
                                  f"patients pending: suspend accrual", None, None)
        else:
            pt = tite_boin_estimate(self.target, n_d, y_d, m, s)
            if pt <= lam_e:
                move, why = 1, f"{obs}: p_tilde {pt:.3f} <= {lam_e:.3f}: escalate"
            elif pt >= lam_d:
                move, why = -1, f"{obs}: p_tilde {pt:.3f} >= {lam_d:.3f}: de-escalate"
            else:
                move, why = 0, f"{obs}: p_tilde {pt:.3f} between the boundaries: stay"
        return self._move(state, d, move, why, low)

    def canonical(self, state: TrialState):
        """With pending patients the whole state matters; without, as BOIN."""
        return state if _pending(state) else super().canonical(state)

    def _move(self, state: TrialState, d: int, move: int, why: str,
              low: Optional[int]) -> Decision:
        """BOIN's guards: top dose, dose 1, eliminated doses, n_earlystop."""
        top = state.n_doses - 1
        nxt = d
        if move > 0:
            if d == top:
                why += " (top dose: stay)"
            elif low is not None and d + 1 >= low:
                why += f" (dose {d + 2} eliminated: stay)"
            else:
                nxt = d + 1
        elif move < 0:
            if d == 0:
                why += " (dose 1: stay)"
            else:
                nxt = d - 1
        if low is not None and nxt >= low:
            nxt, why = low - 1, why + f"; dose {low + 1} and above eliminated"
        if self.n_earlystop is not None and nxt == d and state.n[d] >= self.n_earlystop:
            return Decision.halt(StopReason.N_AT_DOSE,
                                 f"{state.n[d]} patients at dose {d + 1} (n_earlystop "
                                 f"{self.n_earlystop}) and the rule says stay")
        return Decision.treat(nxt, self.cohort_size, why)

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        out = super().estimates(state)
        pend = _pending(state)
        if pend:
            out["pending"] = [sum(1 for dd, _ in pend if dd == d) for d in range(state.n_doses)]
            out["stft"] = [float(sum(f for dd, f in pend if dd == d))
                           for d in range(state.n_doses)]
            out["p_tilde"] = [None if state.n[d] == 0 else
                              tite_boin_estimate(self.target, state.n[d], state.y[d],
                                                 out["pending"][d], out["stft"][d])
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

    @model_validator(mode="after")
    def _no_titration(self) -> "TiteBOINSpec":
        if self.titration:
            raise ValueError("titration: not available with tite-boin (got true)")
        return self


def build_tite_crm(spec: TiteCRMSpec, ctx: DesignContext) -> Design:
    return _crm.build_with(TITECRM, spec, ctx)


def build_tite_boin(spec: TiteBOINSpec, ctx: DesignContext) -> Design:
    c = spec.context(ctx)
    p1 = 0.6 * c.target if spec.phi1 is None else spec.phi1
    p2 = 1.4 * c.target if spec.phi2 is None else spec.phi2
    design: Design = TITEBOIN(
        n_doses=c.n_doses, target=c.target, cohort_size=c.cohort_size,
        start_dose=c.start_dose, phi1=p1, phi2=p2, cutoff_eli=spec.cutoff_eli,
        extrasafe=spec.extrasafe, offset=spec.offset, n_earlystop=spec.n_earlystop,
        bound_mtd=spec.bound_mtd, name=spec.name or spec.type,
        max_pending_fraction=spec.max_pending_fraction)
    if spec.stop_n_at_dose is not None:
        design = StopWhenNAtDose(base=design, n=spec.stop_n_at_dose)
    return StopAtN(base=design, n=c.max_n)


register(DesignEntry(type="tite-crm", spec_model=TiteCRMSpec, build=build_tite_crm,
                     time_to_event=True,
                     summary="TITE-CRM: CRM with linearly weighted pending patients "
                             "(Cheung & Chappell 2000); discrete-event engine only"))
register(DesignEntry(type="tite-boin", spec_model=TiteBOINSpec, build=build_tite_boin,
                     time_to_event=True,
                     summary="TITE-BOIN: BOIN deciding with pending patients (Yuan et al. "
                             "2018); discrete-event engine only"))
