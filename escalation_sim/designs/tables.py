"""Decision tables: what a design does next, shown without simulating a trial.

Every registered design type has one (``DesignEntry.table``; ``escalation-sim table``).
A :class:`TableRequest` carries the design's validated spec and the trial settings given for
the table; the design's table function builds the design from it and returns a
:class:`DecisionTable` (a text form whose first line is a title, a JSON-ready form, and one
note per input the table does not use).  Three kinds exist:

* interval designs (BOIN, TITE-BOIN): the boundary table, counts -> decision;
* rule-based designs (3+3): the rule table, each row's decision computed by the design;
* model-based designs (CRM, TITE-CRM), and the default for any design: the *next-cohort
  table* (:func:`next_cohort_table`): from the current data (an outcome string, none by
  default), the next cohort and the next step after each possible number of DLTs in it.
  A model-based design has no fixed table: its next dose depends on every outcome so far.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..outcomes import state_from_outcomes
from ..types import Decision, TrialState
from .base import Design, DesignContext, DesignSpecBase
from .registry import get_entry
from .rules import RuleConflict

__all__ = ["DecisionTable", "TableRequest", "TableInputError", "next_cohort_table",
           "DEFAULT_MAX_N", "DEFAULT_COHORT_SIZE"]

#: trial settings of a table when the request gives none
DEFAULT_MAX_N = 30
DEFAULT_COHORT_SIZE = 1

MODEL_BASED = ("{name} is model-based: its next dose depends on every outcome so far through "
               "the posterior, so it has no fixed boundary table. Below: the next step after "
               "each possible number of DLTs in the next cohort, from the data given.")


class TableInputError(ValueError):
    """An input the table cannot use.  ``field`` names it: a :class:`TableRequest` field
    (``target``, ``max_n``, ``cohort_size``, ``n_doses``, ``outcomes``), a spec option, or
    ``None`` when the design's own validation rejected the combination."""

    def __init__(self, field: Optional[str], message: str):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class DecisionTable:
    text: str                      # printed form; the first line is a title
    data: Dict[str, Any]           # JSON form
    notes: Tuple[Tuple[str, str], ...] = ()  # (field, "not used: why"), one per ignored input


@dataclass(frozen=True)
class TableRequest:
    """What the table is asked for; ``None`` = not given (defaults: max_n 30, cohorts of 1)."""

    spec: DesignSpecBase
    target: Optional[float] = None
    max_n: Optional[int] = None
    cohort_size: Optional[int] = None
    n_doses: Optional[int] = None
    outcomes: Optional[str] = None

    def unused(self, *fields: str, why: str) -> List[Tuple[str, str]]:
        """A note for each of ``fields`` (request inputs) that was given."""
        return [(f, f"not used: {why}") for f in fields if getattr(self, f) is not None]

    def unused_options(self, used: Iterable[str], why: str) -> List[Tuple[str, str]]:
        """A note for each design option set in the spec but not in ``used``."""
        skip = set(used) | {"type"}
        return [(f, f"not used: {why}") for f in sorted(self.spec.model_fields_set - skip)]

    def build_data_free(self, options: Iterable[str], table: str,
                        changes: str) -> Tuple[Design, List[Tuple[str, str]]]:
        """:meth:`build` for a table that depends on neither the number of doses nor the
        data (``table`` names it in the notes), with a note for each design option set in
        the spec but not in ``options`` (``changes``: what those options would change)."""
        design, notes = self.build()
        notes += self.unused("n_doses", "outcomes",
                             why=f"the {table} depends on neither the number of doses "
                                 f"nor the data")
        notes += self.unused_options(options, why=f"it does not change the {changes}")
        return design, notes

    def build(self, n_doses: Optional[int] = None,
              needs_target: bool = True) -> Tuple[Design, List[Tuple[str, str]]]:
        """The design as a scenario would build it (``start_dose`` 1 unless the spec says
        otherwise), and notes on the trial settings it does not take."""
        entry = get_entry(self.spec.type)
        if needs_target and self.target is None and self.spec.target is None:
            raise TableInputError("target", f"required by the {entry.type} table")
        if n_doses is None:  # enough doses for the spec's start dose unless given
            n_doses = self.n_doses or max(1, self.spec.start_dose or 1)
        start = self.spec.start_dose
        if start is not None and start > n_doses:
            raise TableInputError("start_dose", f"must be between 1 and {n_doses} "
                                                f"(got {start})")
        ctx = DesignContext(
            n_doses=n_doses,
            target=self.target,  # type: ignore[arg-type]  # None only when not needed
            cohort_size=self.cohort_size or DEFAULT_COHORT_SIZE,
            max_n=self.max_n or DEFAULT_MAX_N, start_dose=0)
        size = entry.trial_size(self.spec, ctx)
        if self.cohort_size is not None and size.cohort_size != self.cohort_size:
            raise TableInputError("cohort_size", f"the {entry.type} design uses cohorts of "
                                                 f"{size.cohort_size} (got {self.cohort_size})")
        notes: List[Tuple[str, str]] = []
        if self.max_n is not None and size.max_n is None:
            notes.append(("max_n", f"not used: the {entry.type} design sets its own sample "
                                   "size"))
        try:
            design = entry.build(self.spec, ctx)
        except RuleConflict as exc:
            raise TableInputError(exc.field, str(exc)) from None
        except (ValueError, TypeError) as exc:
            raise TableInputError(None, str(exc)) from None
        return design, notes

    def state(self, n_doses: int) -> TrialState:
        """The data given as an outcome string (none: the empty trial)."""
        try:
            return state_from_outcomes(self.outcomes or "", n_doses)
        except ValueError as exc:
            raise TableInputError("outcomes", str(exc)) from None


# --------------------------------------------------------------------------- next cohort
def _step(design: Design, state: TrialState, dec: Decision) -> Dict[str, Any]:
    if dec.stop:
        m = design.select_mtd(state)
        return {"next_dose": None, "cohort_size": None,
                "stop_reason": dec.stop_reason.value if dec.stop_reason else None,
                "mtd": None if m is None else m + 1, "reason": dec.reason}
    return {"next_dose": dec.dose + 1, "cohort_size": dec.cohort_size, "stop_reason": None,
            "mtd": None, "reason": dec.reason}


def _step_text(step: Dict[str, Any]) -> str:
    if step["next_dose"] is None:
        mtd = "none" if step["mtd"] is None else f"dose {step['mtd']}"
        return f"stop ({step['stop_reason']}), MTD {mtd}"
    if step["cohort_size"] == 0:
        return f"wait at dose {step['next_dose']} (accrual suspended)"
    return f"dose {step['next_dose']}, cohort of {step['cohort_size']}"


def next_cohort_table(request: TableRequest, n_doses: Optional[int] = None,
                      title: Optional[str] = None,
                      statement: Optional[str] = None) -> DecisionTable:
    """The next-cohort table of any design (see the module docstring).  ``n_doses`` defaults
    to the request's; the design must know its number of doses."""
    entry = get_entry(request.spec.type)
    k = n_doses if n_doses is not None else request.n_doses
    if k is None:
        raise TableInputError("n_doses", f"required by the {entry.type} table")
    design, notes = request.build(n_doses=k)
    state = request.state(k)
    name = request.spec.name or entry.type
    statement = statement or MODEL_BASED.format(name=name)
    title = title or f"{name}: next step after the next cohort"
    now = _step(design, state, design.decide(state))
    data: Dict[str, Any] = {"design": entry.type, "kind": "next_cohort",
                            "statement": statement, "outcomes": request.outcomes or "",
                            "n": list(state.n), "dlt": list(state.y), **now, "rows": []}
    seen = ", ".join(f"dose {d + 1} {state.y[d]}/{state.n[d]}"
                     for d in range(k) if state.n[d]) or "no patient treated yet"
    lines = [title, *textwrap.wrap(statement, 90), f"data: {seen}"]
    if now["next_dose"] is None or now["cohort_size"] == 0:
        lines.append(f"next: {_step_text(now)} -- {now['reason']}")
        return DecisionTable("\n".join(lines), data, tuple(notes))
    dose, c = now["next_dose"] - 1, now["cohort_size"]
    lines.append(f"next cohort: {c} at dose {dose + 1}")
    lines.append(f"{'DLTs in that cohort':<22}next step")
    for y in range(c + 1):
        after = state.add_cohort(dose, c, y)
        row = {"dlt": y, **_step(design, after, design.decide(after))}
        data["rows"].append(row)
        lines.append(f"{f'{y} of {c}':<22}{_step_text(row)}")
    return DecisionTable("\n".join(lines), data, tuple(notes))
