"""Core value types shared by every part of escalation-sim.

Doses are 0-based inside the library and 1-based in files, on the command line and in every
table or JSON document the tool writes.  ``TrialState`` is the complete information a
time-free design may use; it is immutable and hashable so decisions can be memoised.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional, Tuple


class StopReason(str, Enum):
    """Why a trial stopped.  The values appear in tables and JSON output."""

    MAX_N = "max_n_reached"
    N_AT_DOSE = "n_at_dose_reached"
    LOWEST_DOSE_TOO_TOXIC = "lowest_dose_too_toxic"
    RULE_COMPLETE = "rule_complete"          # e.g. 3+3 identified its MTD
    ALL_DOSES_ELIMINATED = "all_doses_eliminated"
    NO_ADMISSIBLE_DOSE = "no_admissible_dose"


# Integer codes of stop reasons in the engines' arrays and the tallies: 0 = not stopped.
STOP_CODES: Tuple[Optional[StopReason], ...] = (None,) + tuple(StopReason)
STOP_INDEX = {r: i for i, r in enumerate(STOP_CODES)}

@dataclass(frozen=True)
class TrialState:
    """Per-dose counts plus the last cohort (0-based doses).

    ``current`` is the dose given to the most recent cohort (``None`` before any patient),
    ``last_n`` / ``last_y`` that cohort's size and DLT count.  For a score design
    (``Outcome.SCORE``, gBOIN) ``y`` and ``last_y`` are sums of integer score units instead
    of DLT counts (a patient's normalized score is its units / the design's ``unit_scale``).  Designs must derive everything
    else (eliminated doses, stages, tried doses) from these fields so that identical trial
    states merge in the memoised engine and in exact enumeration.
    """

    n: Tuple[int, ...]
    y: Tuple[int, ...]
    current: Optional[int] = None
    last_n: int = 0
    last_y: int = 0

    @classmethod
    def empty(cls, n_doses: int) -> "TrialState":
        if n_doses < 1:
            raise ValueError(f"n_doses must be >= 1 (got {n_doses})")
        return cls(n=(0,) * n_doses, y=(0,) * n_doses)

    @property
    def n_doses(self) -> int:
        return len(self.n)

    @property
    def total_n(self) -> int:
        return sum(self.n)

    @property
    def total_y(self) -> int:
        return sum(self.y)

    @property
    def highest_tried(self) -> int:
        """Highest dose with at least one patient, or -1 if none."""
        for d in range(self.n_doses - 1, -1, -1):
            if self.n[d] > 0:
                return d
        return -1

    def add_cohort(self, dose: int, n: int, y: int, max_units: int = 1) -> "TrialState":
        """Return the state after a cohort of ``n`` patients at ``dose`` with ``y`` DLTs.

        For a score design (``Outcome.SCORE``) ``y`` is the cohort's sum of score units and
        ``max_units`` the design's ``unit_scale`` (each patient contributes 0..max_units)."""
        if not 0 <= dose < self.n_doses:
            raise ValueError(f"dose index {dose} outside 0..{self.n_doses - 1}")
        if n < 1 or not 0 <= y <= n * max_units:
            raise ValueError(f"invalid cohort: n={n}, y={y}")
        nn = list(self.n)
        yy = list(self.y)
        nn[dose] += n
        yy[dose] += y
        return TrialState(tuple(nn), tuple(yy), dose, n, y)


@dataclass(frozen=True)
class JointState(TrialState):
    """The state of a toxicity-and-efficacy design (``Outcome.JOINT``: BOIN12, Keyboard
    phase I/II): a :class:`TrialState` (``y`` counts DLTs, ``last_y`` the last cohort's)
    plus ``e``, the responders, and ``b``, the patients with both a DLT and a response, per
    dose.  A subclass, so that every other design's states are unchanged."""

    e: Tuple[int, ...] = ()
    b: Tuple[int, ...] = ()

    @classmethod
    def empty(cls, n_doses: int) -> "JointState":
        if n_doses < 1:
            raise ValueError(f"n_doses must be >= 1 (got {n_doses})")
        z = (0,) * n_doses
        return cls(n=z, y=z, e=z, b=z)

    def add_cohort(self, dose: int, n: int, y: int, max_units: int = 1,
                   e: Optional[int] = None, b: Optional[int] = None) -> "JointState":
        """The state after a cohort of ``n`` at ``dose`` with ``y`` DLTs, ``e`` responders
        and ``b`` patients with both."""
        if e is None or b is None:
            raise ValueError("a joint state needs the cohort's responders e and both b")
        if not 0 <= dose < self.n_doses:
            raise ValueError(f"dose index {dose} outside 0..{self.n_doses - 1}")
        if n < 1 or not (0 <= y <= n and 0 <= e <= n and max(0, y + e - n) <= b <= min(y, e)):
            raise ValueError(f"invalid cohort: n={n}, y={y}, e={e}, b={b}")
        nn, yy, ee, bb = (list(v) for v in (self.n, self.y, self.e, self.b))
        nn[dose] += n
        yy[dose] += y
        ee[dose] += e
        bb[dose] += b
        return JointState(tuple(nn), tuple(yy), dose, n, y, tuple(ee), tuple(bb))


@dataclass(frozen=True)
class Decision:
    """What to do next: treat ``cohort_size`` patients at ``dose`` (0-based), or stop."""

    dose: Optional[int]
    cohort_size: int = 0
    reason: str = ""
    stop_reason: Optional[StopReason] = None
    estimates: Optional[Tuple[float, ...]] = field(default=None, compare=False)

    @property
    def stop(self) -> bool:
        return self.dose is None

    @property
    def dose_level(self) -> Optional[int]:
        """The dose as users number it (1-based; ``dose`` is the library's 0-based index),
        None when stopping."""
        return None if self.dose is None else self.dose + 1

    @classmethod
    def treat(cls, dose: int, cohort_size: int, reason: str = "") -> "Decision":
        return cls(dose=dose, cohort_size=cohort_size, reason=reason)

    @classmethod
    def halt(cls, stop_reason: StopReason, reason: str = "") -> "Decision":
        return cls(dose=None, cohort_size=0, reason=reason or stop_reason.value,
                   stop_reason=stop_reason)


class LazyModule:
    """A module imported on first attribute access (``special = LazyModule("scipy.special")``
    then ``special.ndtr(x)``): scipy takes most of a second to import, and the command
    line's ``validate``, ``table`` and ``--help`` should start in a fraction of that."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        import importlib
        return getattr(importlib.import_module(self._name), attr)
