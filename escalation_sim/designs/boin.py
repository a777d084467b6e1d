"""BOIN: the Bayesian optimal interval design (Liu & Yuan 2015).

Sources
-------
* Liu S., Yuan Y. (2015). Bayesian optimal interval designs for phase I clinical trials.
  JRSS-C 64:507-523 (the boundaries and the local design).
* Yuan Y., Hess K.R., Hilsenbeck S.G., Gilbert M.R. (2016). Bayesian optimal interval design:
  a simple and well-performing design for phase I oncology trials. Clin Cancer Res 22:4291.
* The R package BOIN (Yuan & Liu; CRAN, versions 2.7.0-2.7.2), functions ``get.boundary``,
  ``get.oc`` and ``select.mtd``: their behaviour (read from the 2.7.1 sources and the help
  pages) is what the defaults below reproduce.  No code was taken from it; the rules were
  re-derived from the papers and that behaviour.

Validation is looser than the R package in two ways that change no decision: targets outside
[0.05, 0.6] and phi1/phi2 closer than 10% of the target are accepted (R refuses them), and
``cutoff_eli`` must lie in [0.5, 1) (R accepts any value).

Rules (0-based doses inside the library, 1-based in the text below)
-------------------------------------------------------------------
Target ``phi``; ``phi1`` (default ``0.6 * phi``) and ``phi2`` (default ``1.4 * phi``)::

    lambda_e = log((1 - phi1) / (1 - phi)) / log(phi (1 - phi1) / (phi1 (1 - phi)))
    lambda_d = log((1 - phi) / (1 - phi2)) / log(phi2 (1 - phi) / (phi (1 - phi2)))

(``phi = 0.3`` gives 0.23649 and 0.35852, quoted as 0.236 / 0.358 in the papers; R prints
0.2364907 / 0.3585195.)  With ``n`` patients and ``y`` DLTs at the current dose:

* escalate   iff ``y <= b_e(n) = floor(lambda_e * n)``   (i.e. y/n <= lambda_e);
* de-escalate iff ``y >= b_d(n) = ceil(lambda_d * n)``   (i.e. y/n >= lambda_d), with ``b_d``
  capped at the elimination boundary;
* otherwise stay.

An exact product ``lambda_d * n`` that is an integer k gives ``b_d = k``: y/n = lambda_d
*is* a de-escalation, as in the paper (``p_hat >= lambda_d``) and in ``get.boundary``
(``ceiling``).  (The project primer says "an exact integer counts as not reached"; the paper
and the R package disagree with it, and the paper wins.  With the default phi1/phi2 the
product is never an integer, so the published tables are the same either way.)

Elimination (safety): with a Beta(1, 1) prior, dose ``j`` and all higher doses are eliminated
when ``n_j >= 3`` and ``Pr(p_j > phi | y_j, n_j) > cutoff_eli`` (0.95).  The elimination
boundary ``b_elim(n)`` is the smallest ``y >= 1`` meeting the rule (``None`` for n < 3 or when
no y qualifies).  Here eliminated doses are *derived from the counts*: the lowest dose meeting
the rule and everything above it.  This equals the R simulation's sticky flags, because a
dose's counts only change while it is the current dose, where ``get.oc`` checks the rule, and
no patient is ever treated at an eliminated dose.

``decide`` after a cohort at dose ``d``:

1. dose 1 eliminated -> stop (``StopReason.LOWEST_DOSE_TOO_TOXIC``); the MTD is ``None``.
2. ``extrasafe``: when ``d`` is dose 1, ``n_1 >= 3`` and
   ``Pr(p_1 > phi | data) > cutoff_eli - offset`` -> stop, no MTD.  As in ``get.oc`` the check
   is only made when an elimination boundary exists at ``n_1`` (``b_elim(n_1)`` not NA).
3. ``y <= b_e`` and ``d`` is not the top dose: escalate unless ``d + 1`` is eliminated (then
   stay).  At the top dose: stay.
4. otherwise ``y >= b_d`` and ``d`` is not dose 1: de-escalate.  At dose 1: stay.
5. otherwise stay.
6. ``n_earlystop``: stop (``StopReason.N_AT_DOSE``) when the decision is to stay at ``d`` and
   ``n_d >= n_earlystop``.  This is ``get.oc``'s rule: it looks only at the current dose and
   only when the design would stay there (the generic ``StopWhenNAtDose`` wrapper instead
   stops whenever the *next* dose already has n patients, whichever dose that is).

A guard that the published settings never reach: if some configuration (an elimination
boundary at or below the escalation boundary) would keep or move a cohort into an eliminated
dose, the cohort goes to the highest non-eliminated dose instead; ``get.oc`` would stay.
Maximum sample size is not the design's job: the registry wraps it in ``StopAtN``
(``get.oc`` also cuts the last cohort to fit ``ncohort*cohortsize``).

Elimination, the guards of steps 1, 3-6, ``extrasafe`` and the MTD selection below are the
interval-design kernel's (:mod:`escalation_sim.designs.interval`); this module supplies the
boundaries (the rule of steps 3-5), titration and ``bound_mtd``.

Titration (``titration=True``, ``get.oc(titration=TRUE)``), only when ``cohort_size > 1``
(``get.oc`` switches it off for cohorts of 1): one patient per dose, escalating from dose 1
while no DLT is seen.  At the first DLT (dose ``d``), or when the top dose has had its
patient without DLT, titration ends and the next cohort is a full cohort at that dose; the
BOIN rules then apply to the cumulative counts.  The titration states are recognised from the
counts (every treated dose has exactly one patient), so no hidden state is needed.
What ``get.oc`` 2.7.1 does, and the named options for the alternatives:

* ``get.oc``'s code titrates from dose 1 whatever ``startdose`` is (its documentation says
  "starting from startdose").  Default: from dose 1, as the code;
  ``titration_from_start_dose=True`` starts at ``start_dose`` instead.
* ``get.oc`` has a flag (``ft``) initialised once per *call* rather than once per simulated
  trial, so only the first simulated trial of each call steps down one dose after titration
  (not below dose 1) and adds ``cohortsize - 1`` patients there; every later trial does what
  is described above, which is therefore the default.  ``titration_step_down=True`` gives the
  first-trial behaviour to every trial.

MTD selection (``select_mtd``, = ``select.mtd``): among doses that were tried and are not
eliminated (with ``extrasafe``, dose 1 meeting the lowered cut-off eliminates everything),
the pool-adjacent-violators isotonic regression of ``(y + 0.05) / (n + 0.1)`` with weights
``1 / var``, ``var = (y + 0.05)(n - y + 0.05) / ((n + 0.1)^2 (n + 1.1))``; then
``k * 1e-10`` is added to the k-th admissible estimate (k = 1, 2, ...) and the dose with the
smallest ``|estimate - phi|`` is chosen, the first (lowest) on an exact tie.  The offset is
the published tie rule: within a pooled block whose estimate is below ``phi`` the highest
dose wins, above ``phi`` the lowest; it also breaks a tie between a block at ``phi - e`` and
one at ``phi + e`` in favour of the lower dose.  ``bound_mtd`` (``boundMTD=TRUE``): only
doses whose (offset) estimate is below ``lambda_d`` are candidates; if none is, no MTD.
``None`` is returned when dose 1 is eliminated or no admissible dose was tried.
Numerical note: R's ``sum`` accumulates in long double; the pooled means here use ordinary
double sums, so a pooled value may differ from R in the last bit.  Selection can differ only
if two block estimates tie to within ~1e-16, which the 1e-10 offsets make irrelevant in
practice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, Literal, Optional, Tuple, Union

from pydantic import Field, model_validator

from ..types import Decision, TrialState
from .base import Design, DesignContext, DesignSpecBase
from .interval import (DE_ESCALATE, ESCALATE, STAY, IntervalDesign, Step, count_rows,
                       elimination_boundary, extrasafe_field, isotonic_regression,
                       offset_field)
from .registry import DesignEntry, register
from .tables import DecisionTable, TableRequest

__all__ = ["boin_lambdas", "boin_boundaries", "elimination_boundary", "isotonic_regression",
           "BOIN", "Spec", "make", "boundary_table"]


# --------------------------------------------------------------------------- boundaries
def _resolve_phis(target: float, phi1: Optional[float], phi2: Optional[float]
                  ) -> Tuple[float, float]:
    p1 = 0.6 * target if phi1 is None else float(phi1)
    p2 = 1.4 * target if phi2 is None else float(phi2)
    return p1, p2


def _check_phis(target: float, phi1: float, phi2: float) -> None:
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1) (got {target})")
    if not 0.0 < phi1 < target:
        raise ValueError(f"phi1 must satisfy 0 < phi1 < target={target} (got phi1={phi1})")
    if not target < phi2 < 1.0:
        raise ValueError(f"phi2 must satisfy target={target} < phi2 < 1 (got phi2={phi2})")


def boin_lambdas(target: float, phi1: Optional[float] = None,
                 phi2: Optional[float] = None) -> Tuple[float, float]:
    """``(lambda_e, lambda_d)`` of the local BOIN design (Liu & Yuan 2015, eq. for the
    non-informative prior).  ``phi1``/``phi2`` default to 0.6 and 1.4 times the target."""
    p1, p2 = _resolve_phis(target, phi1, phi2)
    _check_phis(target, p1, p2)
    # same operation order as the published formula / get.boundary, so the doubles agree
    lam_e = math.log((1 - p1) / (1 - target)) / math.log(target * (1 - p1) / (p1 * (1 - target)))
    lam_d = math.log((1 - target) / (1 - p2)) / math.log(p2 * (1 - target) / (target * (1 - p2)))
    return lam_e, lam_d


@lru_cache(maxsize=None)
def _bounds_at(target: float, phi1: float, phi2: float, cutoff_eli: float, n: int
               ) -> Tuple[int, int, Optional[int]]:
    """(b_e, b_d capped at b_elim, b_elim) for n patients at a dose."""
    lam_e, lam_d = boin_lambdas(target, phi1, phi2)
    b_e = math.floor(lam_e * n)
    b_d = math.ceil(lam_d * n)
    b_elim = elimination_boundary(target, n, cutoff_eli)
    if b_elim is not None and b_d > b_elim:
        b_d = b_elim
    return b_e, b_d, b_elim


def boin_boundaries(target: float, max_n: int, cohort_size: int = 1,
                    phi1: Optional[float] = None, phi2: Optional[float] = None,
                    cutoff_eli: float = 0.95, *, full: bool = True,
                    extrasafe: bool = False, offset: float = 0.05) -> Dict[str, Any]:
    """The BOIN decision table, as ``get.boundary`` prints it.

    Returns a dict with ``lambda_e``, ``lambda_d`` and parallel lists ``n``, ``escalate``
    (escalate if # DLT <= value), ``deescalate`` (de-escalate if # DLT >= value, capped at the
    elimination boundary) and ``eliminate`` (eliminate if # DLT >= value; ``None`` for n < 3
    or when no count qualifies).  ``full=True`` (default) gives every n = 1..max_n
    (``$full_boundary_tab``, what the simulation uses); ``full=False`` gives only multiples
    of ``cohort_size`` (``$boundary_tab``, what the package prints for cohorts > 1).
    With ``extrasafe=True`` a ``stop_lowest`` list is added: stop the trial if # DLT at
    dose 1 >= value (cut-off ``cutoff_eli - offset``; ``$stop_boundary``).
    """
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1 (got {max_n})")
    if cohort_size < 1:
        raise ValueError(f"cohort_size must be >= 1 (got {cohort_size})")
    p1, p2 = _resolve_phis(target, phi1, phi2)
    lam_e, lam_d = boin_lambdas(target, p1, p2)
    ns = [n for n in range(1, max_n + 1) if full or n % cohort_size == 0]
    rows = [_bounds_at(target, p1, p2, cutoff_eli, n) for n in ns]
    out: Dict[str, Any] = {
        "target": target, "phi1": p1, "phi2": p2, "cutoff_eli": cutoff_eli,
        "lambda_e": lam_e, "lambda_d": lam_d,
        "n": ns,
        "escalate": [r[0] for r in rows],
        "deescalate": [r[1] for r in rows],
        "eliminate": [r[2] for r in rows],
    }
    if extrasafe:
        out["stop_lowest"] = [elimination_boundary(target, n, cutoff_eli - offset) for n in ns]
    return out


# --------------------------------------------------------------------------- design
@dataclass(frozen=True)
class BOIN(IntervalDesign):
    """The BOIN design; defaults reproduce R ``BOIN`` ``get.oc``/``select.mtd``."""

    phi1: Optional[float] = None  # resolved to 0.6 * target
    phi2: Optional[float] = None  # resolved to 1.4 * target
    titration: bool = False
    bound_mtd: bool = False
    name: str = "boin"
    titration_from_start_dose: bool = False
    titration_step_down: bool = False
    titration_complete_cohort: bool = True

    def __post_init__(self) -> None:
        p1, p2 = _resolve_phis(self.target, self.phi1, self.phi2)
        _check_phis(self.target, p1, p2)
        object.__setattr__(self, "phi1", p1)
        object.__setattr__(self, "phi2", p2)
        super().__post_init__()

    # -- the boundaries ------------------------------------------------------------------
    @property
    def lambdas(self) -> Tuple[float, float]:
        return boin_lambdas(self.target, self.phi1, self.phi2)

    def bounds(self, n: int) -> Tuple[int, int, Optional[int]]:
        """``(b_e, b_d, b_elim)`` for n patients at a dose."""
        return _bounds_at(self.target, self.phi1, self.phi2, self.cutoff_eli, n)

    def rule(self, n: int, y: int) -> Step:
        """Escalate iff y <= b_e(n), else de-escalate iff y >= b_d(n), else stay."""
        b_e, b_d, _ = self.bounds(n)
        if y <= b_e:
            return Step(ESCALATE, f"(escalate if <= {b_e})")
        if y >= b_d:
            return Step(DE_ESCALATE, f"(de-escalate if >= {b_d})")
        return Step(STAY, f"(escalate <= {b_e} < y < {b_d} <= de-escalate)")

    def mtd_cap(self) -> Optional[float]:
        return self.lambdas[1] if self.bound_mtd else None

    # -- titration -----------------------------------------------------------------------
    @property
    def _titrating(self) -> bool:
        return self.titration and self.cohort_size > 1

    @property
    def first_dose(self) -> int:
        """The dose of the first patient (titration starts at dose 1 unless told otherwise)."""
        if self._titrating and not self.titration_from_start_dose:
            return 0
        return self.start_dose

    def start(self) -> Decision:
        size = 1 if self._titrating else self.cohort_size
        return Decision.treat(self.first_dose, size, "start")

    def _end_titration(self, cur: int, why: str) -> Decision:
        if self.titration_step_down:
            dose = max(cur - 1, 0)
            return Decision.treat(dose, self.cohort_size - 1,
                                  why + f"; step down to dose {dose + 1} and complete a cohort")
        if self.titration_complete_cohort:
            return Decision.treat(cur, self.cohort_size - 1,
                                  why + f"; add {self.cohort_size - 1} to complete a cohort")
        return Decision.treat(cur, self.cohort_size, why)

    def _titration_step(self, state: TrialState) -> Optional[Decision]:
        """The titration decision if ``state`` is a titration state, else None."""
        tried = [d for d in range(state.n_doses) if state.n[d] > 0]
        cur = state.current
        if (not tried or any(state.n[d] != 1 for d in tried)
                or tried != list(range(self.first_dose, cur + 1))):
            return None
        if state.total_y == 0:
            if cur < state.n_doses - 1:
                return Decision.treat(cur + 1, 1, f"titration: no DLT at dose {cur + 1}; "
                                                  f"escalate with 1 patient")
            return self._end_titration(cur, "titration complete at the top dose without DLT")
        if state.total_y == 1 and state.y[cur] == 1:
            return self._end_titration(cur, f"titration complete: first DLT at dose {cur + 1}")
        return None

    def step(self, state: TrialState, dose: int) -> Union[Step, Decision]:
        if self._titrating:
            titration = self._titration_step(state)
            if titration is not None:
                return titration
        return super().step(state, dose)

    def exact_rules(self, max_n: int) -> Any:
        # step is the kernel's, but for the titration states (decided by the scalar code)
        if type(self).step is not BOIN.step:
            return None
        rules = self._interval_rules(max_n, own_step=True)
        if rules is None or not self._titrating:
            return rules
        from .batch import TitrationRules
        return TitrationRules(self, max_n)

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        """The kernel's estimates (isotonic p_hat, eliminated flags, Pr(p > target)) plus
        the lambdas and the boundaries at the current dose's n."""
        out = super().estimates(state)
        lam_e, lam_d = self.lambdas
        out.update({"lambda_e": lam_e, "lambda_d": lam_d,
                    "n_current": None, "escalate_if_dlt_le": None,
                    "deescalate_if_dlt_ge": None, "eliminate_if_dlt_ge": None})
        if state.current is not None:
            n_c = state.n[state.current]
            b_e, b_d, b_elim = self.bounds(n_c)
            out.update(n_current=n_c, escalate_if_dlt_le=b_e, deescalate_if_dlt_ge=b_d,
                       eliminate_if_dlt_ge=b_elim)
        return out


# --------------------------------------------------------------------------- spec
class Spec(DesignSpecBase):
    """BOIN in the scenario file (``type: boin``)."""

    type: Literal["boin"] = "boin"
    phi1: Optional[float] = Field(
        default=None, gt=0, lt=1,
        description="highest DLT rate deemed sub-therapeutic (escalate); default 0.6*target")
    phi2: Optional[float] = Field(
        default=None, gt=0, lt=1,
        description="lowest DLT rate deemed overly toxic (de-escalate); default 1.4*target")
    cutoff_eli: float = Field(
        default=0.95, ge=0.5, lt=1,
        description="eliminate a dose (and all above) when Pr(p > target | data) exceeds this "
                    "and n >= 3")
    extrasafe: bool = extrasafe_field()
    offset: float = offset_field()
    n_earlystop: Optional[int] = Field(
        default=None, ge=1,
        description="stop when the current dose has this many patients and the rule says stay "
                    "(get.oc n.earlystop)")
    titration: bool = Field(
        default=False,
        description="accelerated start: 1 patient per dose until the first DLT, then full "
                    "cohorts (get.oc titration=TRUE; ignored for cohort_size 1)")
    bound_mtd: bool = Field(
        default=False,
        description="the selected MTD's isotonic estimate must be below lambda_d "
                    "(select.mtd boundMTD=TRUE)")
    titration_from_start_dose: bool = Field(
        default=False,
        description="titrate from start_dose (get.oc's code always titrates from dose 1)")
    titration_step_down: bool = Field(
        default=False,
        description="after titration step down one dose and add cohort_size-1 patients "
                    "(what get.oc does in the first simulated trial of a call only)")
    titration_complete_cohort: bool = Field(
        default=True,
        description="after titration add cohort_size-1 patients at the titration dose so it has "
                    "one full cohort (BOIN 2.7.2 get.oc, as reproduced by simFastBOIN); false: a "
                    "full cohort (BOIN 2.7.1 for every simulated trial but the first)")

    @model_validator(mode="after")
    def _check(self) -> "Spec":
        if self.phi1 is not None and self.phi2 is not None and not self.phi1 < self.phi2:
            raise ValueError(f"phi1 must be < phi2 (got phi1={self.phi1}, phi2={self.phi2})")
        if self.target is not None:
            p1, p2 = _resolve_phis(self.target, self.phi1, self.phi2)
            _check_phis(self.target, p1, p2)
        return self


def make_with(cls, spec: Spec, ctx: DesignContext, **extra) -> Design:
    """``cls`` (BOIN or a subclass taking its options) from a BOIN-style spec."""
    c = spec.context(ctx)
    p1, p2 = _resolve_phis(c.target, spec.phi1, spec.phi2)
    try:
        _check_phis(c.target, p1, p2)
    except ValueError as exc:
        raise ValueError(f"design {spec.name or spec.type!r}: {exc}") from None
    return cls(
        n_doses=c.n_doses, target=c.target, cohort_size=c.cohort_size,
        start_dose=c.start_dose, phi1=p1, phi2=p2, cutoff_eli=spec.cutoff_eli,
        extrasafe=spec.extrasafe, offset=spec.offset, n_earlystop=spec.n_earlystop,
        titration=spec.titration, bound_mtd=spec.bound_mtd, name=spec.name or spec.type,
        titration_from_start_dose=spec.titration_from_start_dose,
        titration_step_down=spec.titration_step_down,
        titration_complete_cohort=spec.titration_complete_cohort, **extra)


def make(spec: Spec, ctx: DesignContext) -> Design:
    """BOIN from its spec (the registry adds the stopping rules)."""
    return make_with(BOIN, spec, ctx)


# --------------------------------------------------------------------------- table
#: spec options that change the boundary table
TABLE_OPTIONS = ("target", "cohort_size", "max_n", "phi1", "phi2", "cutoff_eli", "extrasafe",
                 "offset", "name")


def boundary_table(request: TableRequest, title: str = "BOIN",
                   options: Tuple[str, ...] = TABLE_OPTIONS) -> DecisionTable:
    """BOIN's boundary table as ``get.boundary`` prints it: every n = 1..max_n for cohorts
    of 1, the multiples of the cohort size otherwise; with ``extrasafe`` the stopping row."""
    design, notes = request.build_data_free(options, "boundary table", "boundaries")
    inner = design.inner
    b = boin_boundaries(inner.target, design.max_n, cohort_size=inner.cohort_size,
                        phi1=inner.phi1, phi2=inner.phi2, cutoff_eli=inner.cutoff_eli,
                        full=inner.cohort_size == 1, extrasafe=inner.extrasafe,
                        offset=inner.offset)
    lines = [f"{title} boundaries, target {inner.target:g}", *count_rows(b)]
    return DecisionTable("\n".join(lines), b, tuple(notes))


register(DesignEntry(
    type="boin", spec_model=Spec, make=make, design_class=BOIN, table=boundary_table,
    summary="Bayesian optimal interval design (Liu & Yuan 2015; R BOIN get.oc/select.mtd)"))
