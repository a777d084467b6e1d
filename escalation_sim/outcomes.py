"""Outcome strings in the published convention: ``"1NNN 2NTT"``.

Each whitespace-separated token is one cohort: the 1-based dose followed by one letter per
patient, ``N`` (no DLT) or ``T`` (DLT).  Letters are case-insensitive.
"""
from __future__ import annotations

import re
from typing import List, Tuple

from .types import TrialState

# ASCII only: ``\d`` would also match other scripts' digits ('١NNN' read as dose 1)
_TOKEN = re.compile(r"^([0-9]+)([NTnt]+)$")
#: digits of a dose number (more cannot name a dose; int() of a huge string is slow)
_MAX_DOSE_DIGITS = 9

Cohort = Tuple[int, str]  # (0-based dose, "NTN")


class OutcomeStringError(ValueError):
    pass


def parse_outcomes(text: str, n_doses: int | None = None) -> List[Cohort]:
    """Parse ``"1NNN 2NTN"`` into ``[(0, "NNN"), (1, "NTN")]`` (0-based doses)."""
    cohorts: List[Cohort] = []
    for pos, token in enumerate(text.split()):
        m = _TOKEN.match(token)
        if not m:
            raise OutcomeStringError(
                f"cohort {pos + 1} {_short_token(token)}: expected a dose number (digits 0-9) "
                "followed by N/T letters, e.g. '2NTN'")
        digits = m.group(1)
        dose = int(digits) if len(digits) <= _MAX_DOSE_DIGITS else None
        if dose is None or dose < 1 or (n_doses is not None and dose > n_doses):
            rng = f"1..{n_doses}" if n_doses is not None else ">= 1"
            shown = digits if dose is not None else digits[:_MAX_DOSE_DIGITS] + "..."
            raise OutcomeStringError(f"cohort {pos + 1} {_short_token(token)}: dose {shown} "
                                     f"outside {rng}")
        cohorts.append((dose - 1, m.group(2).upper()))
    return cohorts


def _short_token(token: str) -> str:
    return repr(token) if len(token) <= 40 else repr(token[:37]) + "..."


def format_outcomes(cohorts: List[Cohort]) -> str:
    return " ".join(f"{d + 1}{s}" for d, s in cohorts)


def state_from_outcomes(text: str, n_doses: int) -> TrialState:
    """The ``TrialState`` after the cohorts in ``text``."""
    state = TrialState.empty(n_doses)
    for dose, letters in parse_outcomes(text, n_doses):
        state = state.add_cohort(dose, len(letters), letters.count("T"))
    return state
