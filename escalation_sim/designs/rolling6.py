"""Rolling six (Skolnik et al. 2008, J Clin Oncol 26:190-195): ``rolling6`` and its
complete-data form ``rolling6-complete``.

The rule (doses 1-based in this docstring; docs/reference_notes/rolling_six.md)
------------------------------------------------------------------------------
The rolling six assigns each new patient from a table of three counts at the current dose
level: **enrolled** (n, at most 6), **DLTs** (y) and **pending** (m: enrolled, no DLT yet and
DLT window not over); evaluable = n - m.  The published grid (Skolnik et al.'s Table 1 as
re-stated in the "Rolling 6" column of JAMA Netw Open 2020;3(5):e204787, Table 2; Skolnik's
own table was not reachable) is, row by row, the rule implemented by :func:`rolling6_step`:

* y >= 2 -> **de-escalate** (no need to wait for the pending patients);
* n < 6: escalate when every enrolled patient is evaluable, none had a DLT and n >= 3
  (0/3, 0/4, 0/5 complete); otherwise enroll the next patient at the **same** level;
* n = 6: **escalate** when the outcome cannot change any more (0 DLT with >= 5 evaluable:
  one pending patient cannot reach 2/6; 1 DLT with all 6 evaluable); otherwise **hold**
  (suspend accrual until the pending patients' outcomes are in).

The cell (6 enrolled, 6 evaluable, 0 DLT) is not in the re-stated grid (its footnote: rare
cases omitted); it follows from the grid's logic and from 3+3 (0/6 -> escalate): inferred.

Moving, as the 3+3 with de-escalation (Korn et al. 1994) that the rolling six reduces to once
every patient is evaluable (reference notes, section 3; the R package RollingSix's
``determine_mtd_r6`` and stopping helpers):

* escalate from the top dose: the top dose is the MTD once it has 6 patients with <= 1 DLT
  (``top_dose_needs_six``, default) - before that, keep enrolling there; with
  ``top_dose_needs_six: false`` 0/3 complete at the top dose is enough;
* escalate into a dose with >= 2 DLTs (we came back down from it): the current dose is the
  MTD once it has 6 patients, else enroll there up to 6;
* escalate into a dose that already has 6 patients: stop (RollingSix's stop rule);
* de-escalate from dose 1: stop, no MTD; otherwise to the highest dose below that has fewer
  than 2 DLTs: if it already has 6 patients, stop (it is the MTD), else enroll there up to 6.

The MTD (``select_mtd``): the highest dose below the lowest dose with >= 2 DLTs with <= 1 DLT
among >= 6 patients, or 0 DLT among >= 3, counting every pending patient as a DLT (so 0 DLT
with 5 of 6 evaluable qualifies, as the grid's escalation there says) - except that, as in the 3+3
(:mod:`.threeplusthree`), 0/3-5 is not enough at the top dose under ``top_dose_needs_six``
nor directly below a too-toxic dose (the rule would have enrolled 6 there first).  When the
design stops by itself the dose it names is this one; after an external stop (``max_n``) it
is the highest dose the rule has cleared so far.

Two registered types
--------------------
``rolling6`` is a time-to-event design (``time_to_event = True``, like TITE-BOIN): it decides
from a :class:`~escalation_sim.designs.tite.TiteState` (only the pending *counts* matter, not
their follow-up) one patient at a time (cohorts of 1), and "hold" is a decision with
``cohort_size == 0`` (accrual suspended until the data change).  It needs calendar time, so it
runs on the calendar engine only; the time-free engines skip it as they skip TITE designs.

``rolling6-complete`` is the same rule on complete data - the rolling six when every patient's
outcome is known before the next decision, i.e. the slow-accrual limit of the calendar design.
It runs on every time-free engine (Monte Carlo, exact enumeration, ``next-dose``, ``paths``).
Its cohorts (``cohort_size``, default 1 whatever the trial's; at most 6) are the patients
enrolled between two looks at complete data: cohorts of 1 are the patient-by-patient rule
(a second DLT among the first two patients de-escalates at once); with cohorts of 3 the rule
*is* the 3+3 with de-escalation and ``top_dose_needs_six`` (0/3 escalate, 1/3 three more,
<= 1/6 escalate, >= 2 de-escalate), and its exact operating characteristics equal the 3+3's
(tests/test_rolling6.py checks this against the closed form of Lin & Shih 2001).  With
patients pending (a ``TiteState``) both classes apply the full grid; ``rolling6-complete``
never sees one from the engines.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Literal, Optional

from pydantic import Field, field_validator

from ..types import Decision, StopReason, TrialState
from .base import Design, DesignContext, DesignSpecBase
from .registry import DesignEntry, TrialSize, register
from .tables import DecisionTable, TableRequest

__all__ = ["RollingSix", "RollingSixComplete", "rolling6_step", "ESCALATE", "STAY", "HOLD",
           "DE_ESCALATE", "LEVEL_SIZE", "decision_grid"]

#: patients at most on one dose level
LEVEL_SIZE = 6
ESCALATE, STAY, HOLD, DE_ESCALATE = "escalate", "same dose level", "hold accrual", "de-escalate"


def rolling6_step(enrolled: int, dlt: int, pending: int) -> str:
    """The rolling-six grid at the current dose level: ESCALATE, STAY, HOLD or DE_ESCALATE
    (see the module docstring).  ``pending`` counts enrolled patients without a DLT whose
    window is not over (so ``dlt + pending <= enrolled``)."""
    if not (0 <= dlt and 0 <= pending and dlt + pending <= enrolled):
        raise ValueError(f"need 0 <= DLTs + pending <= enrolled (got enrolled {enrolled}, "
                         f"DLTs {dlt}, pending {pending})")
    evaluable = enrolled - pending
    if dlt >= 2:
        return DE_ESCALATE
    if enrolled < LEVEL_SIZE:
        if dlt == 0 and pending == 0 and enrolled >= 3:
            return ESCALATE
        return STAY
    if (dlt == 0 and evaluable >= LEVEL_SIZE - 1) or (dlt == 1 and pending == 0):
        return ESCALATE
    return HOLD


def _pending_counts(state: TrialState) -> List[int]:
    m = [0] * state.n_doses
    for d, _ in getattr(state, "pending", ()):
        m[d] += 1
    return m


@dataclass(frozen=True)
class RollingSixComplete(Design):
    """The rolling six on complete data (time-free engines); see the module docstring."""

    n_doses: int
    start_dose: int = 0
    cohort_size: int = 1
    top_dose_needs_six: bool = True
    name: str = "rolling6-complete"
    max_n_per_dose: ClassVar[Optional[int]] = LEVEL_SIZE

    def __post_init__(self) -> None:
        if self.n_doses < 1:
            raise ValueError(f"n_doses must be >= 1 (got {self.n_doses})")
        if not 0 <= self.start_dose < self.n_doses:
            raise ValueError(f"start_dose must be in 1..{self.n_doses} "
                             f"(got {self.start_dose + 1})")
        if not 1 <= self.cohort_size <= LEVEL_SIZE:
            raise ValueError(f"cohort_size must be from 1 to {LEVEL_SIZE} "
                             f"(got {self.cohort_size})")

    @property
    def max_cohort_size(self) -> int:
        return self.cohort_size

    # ------------------------------------------------------------------ helpers
    def _lowest_too_toxic(self, state: TrialState) -> int:
        for d in range(self.n_doses):
            if state.y[d] >= 2:
                return d
        return self.n_doses

    def _treat(self, state: TrialState, dose: int, why: str) -> Decision:
        size = min(self.cohort_size, LEVEL_SIZE - state.n[dose])
        return Decision.treat(dose, size, f"{why}; enroll {size} at dose {dose + 1}")

    def _stop(self, state: TrialState, why: str) -> Decision:
        m = self.select_mtd(state)
        mtd = "no MTD" if m is None else f"MTD = dose {m + 1}"
        return Decision.halt(StopReason.RULE_COMPLETE, f"{why}; {mtd}")

    # ------------------------------------------------------------------ decide
    def decide(self, state: TrialState) -> Decision:
        if state.n_doses != self.n_doses:
            raise ValueError(f"state has {state.n_doses} doses, design has {self.n_doses}")
        d = state.current
        if d is None:
            return self._treat(state, self.start_dose, "start")
        m = _pending_counts(state)
        n, y = state.n[d], state.y[d]
        step = rolling6_step(n, y, m[d])
        obs = f"dose {d + 1}: {n} enrolled, {y} DLT, {m[d]} pending: {step}"
        if step == STAY:
            return self._treat(state, d, obs)
        if step == HOLD:
            return Decision(d, 0, f"{obs} until the pending outcomes are in", None, None)
        if step == ESCALATE:
            return self._up(state, d, obs)
        return self._down(state, d, obs)

    def _up(self, state: TrialState, d: int, obs: str) -> Decision:
        top = self.n_doses - 1
        if d == top:
            if self.top_dose_needs_six and state.n[d] < LEVEL_SIZE:
                return self._treat(state, d, f"{obs}; the top dose needs {LEVEL_SIZE}")
            return self._stop(state, f"{obs} from the top dose")
        u = d + 1
        if state.y[u] >= 2:
            if state.n[d] < LEVEL_SIZE:
                return self._treat(state, d, f"{obs}; dose {u + 1} too toxic: "
                                             f"{LEVEL_SIZE} needed at dose {d + 1}")
            return self._stop(state, f"{obs}; dose {u + 1} too toxic")
        if state.n[u] >= LEVEL_SIZE:
            return self._stop(state, f"{obs}; dose {u + 1} already has {state.n[u]}")
        return self._treat(state, u, obs)

    def _down(self, state: TrialState, d: int, obs: str) -> Decision:
        t = min(d, self._lowest_too_toxic(state)) - 1
        while t >= 0 and state.y[t] >= 2:
            t -= 1
        if t < 0:
            return Decision.halt(StopReason.LOWEST_DOSE_TOO_TOXIC,
                                 f"{obs}: the lowest dose is too toxic; no MTD")
        if state.n[t] >= LEVEL_SIZE:
            return self._stop(state, f"{obs}; dose {t + 1} already has {state.n[t]}")
        return self._treat(state, t, obs)

    # ------------------------------------------------------------------ recommendation
    def select_mtd(self, state: TrialState) -> Optional[int]:
        """The MTD (0-based) or None; see the module docstring."""
        m = _pending_counts(state)
        t = self._lowest_too_toxic(state)
        top = self.n_doses - 1
        for d in range(t - 1, -1, -1):
            n, y = state.n[d], state.y[d] + m[d]     # the worst case for pending patients
            if n >= LEVEL_SIZE and y <= 1:
                return d
            if n >= 3 and y == 0 and not (d == top and self.top_dose_needs_six) \
                    and not (t < self.n_doses and d == t - 1):
                return d
        return None

    def canonical(self, state: TrialState):
        """Decisions use the counts, the current dose and the pending counts only."""
        pend = getattr(state, "pending", ())
        base = (state.n, state.y, state.current)
        return base + (tuple(_pending_counts(state)),) if pend else base

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        t = self._lowest_too_toxic(state)
        m = _pending_counts(state)
        mtd = self.select_mtd(state)
        out: Dict[str, Any] = {
            "counts": [f"{y}/{n}" if n else "-" for n, y in zip(state.n, state.y)]}
        if getattr(state, "pending", ()):
            out["pending"] = m
        out.update(too_toxic=[y >= 2 for y in state.y],
                   eliminated=[d >= t for d in range(self.n_doses)],
                   mtd=None if mtd is None else mtd + 1)
        return out


@dataclass(frozen=True)
class RollingSix(RollingSixComplete):
    """The rolling six with pending patients (calendar engine); see the module docstring."""

    name: str = "rolling6"
    time_to_event: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cohort_size != 1:
            raise ValueError(f"rolling6 assigns one patient at a time: cohort_size must be 1 "
                             f"(got {self.cohort_size})")


# =========================================================================== specs
class Spec(DesignSpecBase):
    """``type: rolling6`` (calendar engine; one patient at a time)."""

    type: Literal["rolling6"] = "rolling6"
    top_dose_needs_six: bool = Field(
        default=True,
        description="the top dose is declared the MTD only after 6 patients with <= 1 DLT "
                    "(false: 0/3 complete at the top dose is enough)")

    @field_validator("cohort_size")
    @classmethod
    def _one_at_a_time(cls, v: Optional[int]) -> Optional[int]:
        if v is not None and v != 1:
            raise ValueError(f"rolling6 assigns one patient at a time from its table; "
                             f"cohort_size must be 1 or omitted (got {v})")
        return v


class CompleteSpec(DesignSpecBase):
    """``type: rolling6-complete`` (time-free engines)."""

    type: Literal["rolling6-complete"] = "rolling6-complete"  # type: ignore[assignment]
    cohort_size: Optional[int] = Field(
        default=None, ge=1, le=LEVEL_SIZE,
        description="patients enrolled between two looks at complete data (default 1, "
                    "whatever the trial's; 3 gives the 3+3)")
    top_dose_needs_six: bool = Spec.model_fields["top_dose_needs_six"]


def trial_size(spec: DesignSpecBase, ctx: DesignContext) -> TrialSize:
    """Cohorts of 1 (``rolling6-complete``: its own ``cohort_size``) whatever the trial's;
    like the 3+3 it sets its own sample size (at most 6 per dose), so only a ``max_n`` in
    the design spec caps it."""
    return TrialSize(cohort_size=spec.cohort_size or 1, max_n=spec.max_n)


def _make(cls, spec, ctx: DesignContext) -> Design:
    c = spec.context(ctx)
    return cls(n_doses=c.n_doses, start_dose=c.start_dose,
               cohort_size=spec.cohort_size or 1,
               top_dose_needs_six=spec.top_dose_needs_six, name=spec.name or spec.type)


def make(spec: Spec, ctx: DesignContext) -> Design:
    return _make(RollingSix, spec, ctx)


def make_complete(spec: CompleteSpec, ctx: DesignContext) -> Design:
    return _make(RollingSixComplete, spec, ctx)


# =========================================================================== table
def decision_grid(with_pending: bool = True) -> List[Dict[str, Any]]:
    """The grid as rows ``{enrolled, evaluable_min, evaluable_max, dlt, decision}`` (DLT
    ``2`` standing for ">= 2"), consecutive evaluable counts with the same decision merged;
    ``with_pending=False``: complete data only (evaluable = enrolled)."""
    rows: List[Dict[str, Any]] = []
    for n in range(0, LEVEL_SIZE + 1):
        for y in range(0, min(n, 2) + 1):
            evals = range(y, n + 1) if with_pending else range(n, n + 1)
            run: Optional[Dict[str, Any]] = None
            for e in evals:
                dec = rolling6_step(n, y, n - e)
                if run is not None and run["decision"] == dec:
                    run["evaluable_max"] = e
                    continue
                run = {"enrolled": n, "evaluable_min": e, "evaluable_max": e, "dlt": y,
                       "decision": dec}
                rows.append(run)
    return rows


def _span(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}-{b}"


def table(request: TableRequest) -> DecisionTable:
    """The rolling-six grid (``rolling6-complete``: its complete-data rows)."""
    pending = request.spec.type == "rolling6"
    design, notes = request.build(needs_target=False)
    notes += request.unused("target", "n_doses", "outcomes",
                            why="the rolling-six table depends only on the counts at the "
                                "current dose")
    notes += request.unused_options(("name", "cohort_size"),
                                    why="the table shows the rule at a dose level, not the "
                                        "moves between levels")
    rows = decision_grid(with_pending=pending)
    title = ("rolling six (Skolnik et al. 2008): decision for the next patient at the "
             "current dose level" if pending else
             "rolling six on complete data (every enrolled patient evaluable): decision "
             "after each cohort")
    lines = [title, "(DLTs 2 = 2 or more; evaluable = enrolled - pending; at most 6 per level;",
             " escalating from the top dose or into a too-toxic dose: see the docs)",
             f"{'enrolled':>8}{'evaluable':>11}{'DLTs':>6}  decision"]
    for r in rows:
        lines.append(f"{r['enrolled']:>8}{_span(r['evaluable_min'], r['evaluable_max']):>11}"
                     f"{r['dlt']:>6}  {r['decision']}")
    inner = design.inner
    data = {"design": request.spec.type, "kind": "rule", "name": inner.name,
            "top_dose_needs_six": inner.top_dose_needs_six,
            "cohort_size": inner.cohort_size, "rows": rows}
    return DecisionTable("\n".join(lines), data, tuple(notes))


register(DesignEntry(
    type="rolling6", spec_model=Spec, make=make, design_class=RollingSix,
    trial_size=trial_size, table=table,
    summary="rolling six (Skolnik et al. 2008): 2 to 6 patients at a dose while earlier ones "
            "are in follow-up; discrete-event engine only (rolling6-complete: time-free)"))
register(DesignEntry(
    type="rolling6-complete", spec_model=CompleteSpec, make=make_complete,
    design_class=RollingSixComplete, trial_size=trial_size, table=table,
    summary="rolling six on complete data (slow-accrual limit; cohorts of 3 = the 3+3); "
            "time-free engines"))
