"""Outcome strings in the published convention: ``"1NNN 2NTT"``.

Each whitespace-separated token is one cohort: the 1-based dose followed by one letter per
patient, ``N`` (no DLT) or ``T`` (DLT).  Letters are case-insensitive.
"""
from __future__ import annotations

import re
from typing import List, Tuple

from .types import TrialState

_TOKEN = re.compile(r"^(\d+)([NTnt]+)$")

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
                f"cohort {pos + 1} {token!r}: expected a dose number followed by N/T letters, "
                "e.g. '2NTN'")
        dose = int(m.group(1))
        if dose < 1 or (n_doses is not None and dose > n_doses):
            rng = f"1..{n_doses}" if n_doses is not None else ">= 1"
            raise OutcomeStringError(f"cohort {pos + 1} {token!r}: dose {dose} outside {rng}")
        cohorts.append((dose - 1, m.group(2).upper()))
    return cohorts


def format_outcomes(cohorts: List[Cohort]) -> str:
    return " ".join(f"{d + 1}{s}" for d, s in cohorts)


def state_from_outcomes(text: str, n_doses: int) -> TrialState:
    """The ``TrialState`` after the cohorts in ``text``."""
    state = TrialState.empty(n_doses)
    for dose, letters in parse_outcomes(text, n_doses):
        state = state.add_cohort(dose, len(letters), letters.count("T"))
    return state
