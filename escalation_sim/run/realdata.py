"""Decisions on real trial data: the next dose, the MTD, with estimates and credible
intervals, in objects whose dose levels are 1-based as users number them.

The designs' own interface (``decide`` / ``select_mtd``) uses 0-based dose indices; this
module is the user-facing layer over it (the command line's ``next-dose``, ``select-mtd`` and
``replay`` call it, and so does the Python API).  Nothing here needs a true toxicity curve.

>>> from escalation_sim.run.realdata import build_design, trial_state, recommend
>>> boin = build_design("boin", target=0.25, n_doses=4, cohort_size=3)
>>> rec = recommend(boin, trial_state(4, "1NNN 2NNN"))
>>> rec.next_dose, rec.cohort_size
(3, 3)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..designs.base import Design, DesignContext
from ..outcomes import parse_outcomes
from ..types import TrialState

__all__ = ["Recommendation", "MTDSelection", "build_design", "trial_state", "parse_pending",
           "recommend", "select_mtd"]

#: default sample-size cap of a design built from options alone (as ``table``)
DEFAULT_MAX_N = 30


@dataclass(frozen=True)
class Recommendation:
    """A design's decision on data, dose levels 1-based.

    ``next_dose``: the dose for the next patients (None when the design stops);
    ``suspend``: a time-to-event design asks to wait (no patient now, ``cohort_size`` 0);
    ``mtd``: when stopping, the recommended MTD (None: no dose); ``n``, ``dlt``,
    ``pending``: the data per dose; ``estimates``: the design's own per-dose estimates;
    ``intervals``: ``{"method", "level", "estimate", "lower", "upper"}`` or None (3+3)."""

    design: str
    stop: bool
    next_dose: Optional[int]
    cohort_size: Optional[int]
    reason: str
    stop_reason: Optional[str]
    mtd: Optional[int]
    n: List[int]
    dlt: List[int]
    pending: List[int] = field(default_factory=list)
    suspend: bool = False
    estimates: Dict[str, Any] = field(default_factory=dict)
    intervals: Optional[Dict[str, Any]] = None
    #: score designs (gBOIN): the normalized score sum per dose (``dlt`` is then None)
    score_sum: Optional[List[float]] = None
    #: efficacy designs (BOIN12, Keyboard phase I/II): responders per dose, and what the
    #: design selects at the end ("OBD", the optimal biological dose; ``mtd`` holds it)
    responders: Optional[List[int]] = None
    selects: str = "MTD"

    @property
    def action(self) -> str:
        """``"stop"``, ``"suspend"`` or ``"dose N"``."""
        if self.stop:
            return "stop"
        return "suspend" if self.suspend else f"dose {self.next_dose}"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MTDSelection:
    """The MTD a design selects from final data (``mtd`` 1-based, None: no dose)."""

    design: str
    mtd: Optional[int]
    n: List[int]
    dlt: List[int]
    estimates: Dict[str, Any] = field(default_factory=dict)
    intervals: Optional[Dict[str, Any]] = None
    score_sum: Optional[List[float]] = None
    responders: Optional[List[int]] = None
    selects: str = "MTD"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _joint(design: Design, state: TrialState) -> Dict[str, Any]:
    """``responders`` and ``selects`` of an efficacy design (``Outcome.JOINT``), else {}."""
    from ..designs.base import Outcome
    if design.outcome is not Outcome.JOINT:
        return {}
    return {"responders": list(getattr(state, "e", ())), "selects": "OBD"}


def _counts(design: Design, state: TrialState):
    """``(dlt, score_sum)``: DLT counts, or for a score design None and the normalized
    score sums (``y`` holds score units)."""
    from ..designs.base import Outcome
    if design.outcome is Outcome.SCORE:
        return None, [v / design.unit_scale for v in state.y]
    return list(state.y), None


def build_design(type_name: str, target: float, n_doses: int,
                 options: Optional[Dict[str, Any]] = None, cohort_size: Optional[int] = None,
                 max_n: Optional[int] = None, start_dose: int = 1) -> Design:
    """A design from its type and options, without a scenario file (``options``: the keys
    of the type's YAML form, e.g. ``{"skeleton": [...]}``).  Defaults: cohorts of 1 (3+3:
    3), ``max_n`` 30, start at dose 1.  Bad options raise ``ValueError`` (pydantic's
    ``ValidationError`` for the spec)."""
    from ..designs.registry import get_entry
    entry = get_entry(type_name)
    if not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1) (got {target})")
    if not 1 <= n_doses:
        raise ValueError(f"n_doses must be >= 1 (got {n_doses})")
    if not 1 <= start_dose <= n_doses:
        raise ValueError(f"start_dose must be between 1 and {n_doses} (got {start_dose})")
    spec = entry.spec_model.model_validate({"type": entry.type, **(options or {})})
    ctx = DesignContext(n_doses=n_doses, target=float(target),
                        cohort_size=cohort_size if cohort_size is not None else 1,
                        max_n=max_n if max_n is not None else DEFAULT_MAX_N,
                        start_dose=start_dose - 1)
    return entry.build(spec, ctx)


def parse_pending(text: str) -> List[Tuple[int, float]]:
    """``"3:7,3:20"`` -> ``[(3, 7.0), (3, 20.0)]``: pending patients as (1-based dose, days
    followed so far).  ``ValueError`` names the bad item."""
    out: List[Tuple[int, float]] = []
    for pos, item in enumerate(t for t in (text or "").replace(" ", "").split(",") if t):
        dose, sep, days = item.partition(":")
        try:
            if not sep or not dose.isascii() or not dose.isdigit():
                raise ValueError
            d, t = int(dose), float(days)
        except ValueError:
            raise ValueError(f"pending patient {pos + 1}: expected DOSE:DAYS such as 3:7 "
                             f"(got {item!r})")
        if not t >= 0 or t != t or t == float("inf"):
            raise ValueError(f"pending patient {pos + 1}: days followed must be a finite "
                             f"number >= 0 (got {item!r})")
        out.append((d, t))
    return out


def trial_state(n_doses: int, outcomes: str = "",
                pending: Sequence[Tuple[int, float]] = (),
                window_days: Optional[float] = None,
                score_units: Optional[Sequence[int]] = None) -> TrialState:
    """The data as a design sees it: complete cohorts from an outcome string (``"1NNN
    2NTN"``) and pending patients ``[(dose, days followed), ...]`` (1-based doses, DLT-free
    so far, followed for less than ``window_days``).  With pending patients the result is
    a :class:`~escalation_sim.designs.tite.TiteState` (its latest group: the pending
    patients at the last listed dose); without, a ``TrialState``.  ``score_units`` (a score
    design's, gBOIN, TITE-gBOIN): ``outcomes`` holds worst grades, ``"1:003 2:0104"``; pending
    patients (TITE-gBOIN) are those without a scored event yet."""
    from ..outcomes import state_from_outcomes
    if score_units is not None:
        state = state_from_outcomes(outcomes or "", n_doses, score_units)
    else:
        state = TrialState.empty(n_doses)
        for dose, letters in parse_outcomes(outcomes or "", n_doses):
            state = state.add_cohort(dose, len(letters), letters.count("T"))
    if not pending:
        return state
    from ..designs.tite import TiteState
    if window_days is None or not window_days > 0:
        raise ValueError(f"pending patients need the DLT window in days > 0 (got "
                         f"{window_days})")
    n = list(state.n)
    pend = []
    for pos, (d, t) in enumerate(pending):
        if not 1 <= d <= n_doses:
            raise ValueError(f"pending patient {pos + 1}: dose {d} outside 1..{n_doses}")
        if t >= window_days:
            raise ValueError(f"pending patient {pos + 1}: followed {t:g} days, not less than "
                             f"the {window_days:g}-day window: give a complete patient as an "
                             f"outcome instead")
        n[d - 1] += 1
        pend.append((d - 1, float(t) / float(window_days)))
    last = pending[-1][0] - 1
    return TiteState(tuple(n), tuple(state.y), last, sum(1 for d, _ in pend if d == last), 0,
                     tuple(pend), 1 if score_units is None else max(score_units))


def _pending_counts(state: TrialState) -> List[int]:
    counts = [0] * state.n_doses
    for d, _ in getattr(state, "pending", ()):
        counts[d] += 1
    return counts


def recommend(design: Design, state: TrialState, name: Optional[str] = None,
              level: float = 0.95, intervals: bool = True) -> Recommendation:
    """The design's next step on ``state`` with its estimates and ``level`` credible
    intervals (1-based doses; ``intervals=False`` skips them).  A time-free design given pending patients is refused."""
    pend = _pending_counts(state)
    if any(pend) and not design.time_to_event:
        raise ValueError(f"design {name or getattr(design, 'name', '')!r} is not "
                         "time-to-event: it decides on complete data only (no pending "
                         "patients)")
    dec = design.decide(state)
    mtd = None
    if dec.stop:
        m = design.select_mtd(state)
        mtd = None if m is None else m + 1
    dlt, score_sum = _counts(design, state)
    return Recommendation(
        design=name or str(getattr(design, "name", type(design.inner).__name__)),
        stop=dec.stop, next_dose=dec.dose_level,
        cohort_size=None if dec.stop else dec.cohort_size, reason=dec.reason,
        stop_reason=dec.stop_reason.value if dec.stop_reason else None, mtd=mtd,
        n=list(state.n), dlt=dlt, pending=pend, score_sum=score_sum,
        suspend=(not dec.stop and dec.cohort_size == 0),
        estimates=design.estimates(state),
        intervals=design.credible_intervals(state, level) if intervals else None,
        **_joint(design, state))


def select_mtd(design: Design, state: TrialState, name: Optional[str] = None,
               level: float = 0.95) -> MTDSelection:
    """The MTD (1-based, None: no dose) on final data, with estimates and intervals."""
    m = design.select_mtd(state)
    dlt, score_sum = _counts(design, state)
    return MTDSelection(
        design=name or str(getattr(design, "name", type(design.inner).__name__)),
        mtd=None if m is None else m + 1, n=list(state.n), dlt=dlt, score_sum=score_sum,
        estimates=design.estimates(state), intervals=design.credible_intervals(state, level),
        **_joint(design, state))


def as_state(n: Sequence[int], y: Sequence[int]) -> TrialState:
    """Final counts per dose as a state (no last cohort)."""
    n, y = [int(v) for v in n], [int(v) for v in y]
    if len(n) != len(y):
        raise ValueError(f"n and dlt need the same number of values (got {len(n)} and "
                         f"{len(y)})")
    if any(a < 0 or b < 0 or b > a for a, b in zip(n, y)):
        raise ValueError(f"need 0 <= dlt <= n at every dose (got n={n}, dlt={y})")
    return TrialState(tuple(n), tuple(y))


Number = Union[int, float]
