"""Outcome strings in the published convention: ``"1NNN 2NTT"``, and graded ``"1:003 2:0104"``.

Binary designs: each whitespace-separated token is one cohort: the 1-based dose followed by
one letter per patient, ``N`` (no DLT) or ``T`` (DLT).  Letters are case-insensitive.

Score designs (gBOIN): each token is the 1-based dose, a colon, then one digit per patient:
the patient's worst toxicity grade (0-5) in the DLT window, e.g. ``"1:003 2:0104"`` = three
patients at dose 1 with worst grades 0, 0, 3, then four at dose 2 with grades 0, 1, 0, 4.
The design's ``score_units`` turn each grade into units (:func:`state_from_outcomes`).  A
binary design refuses grade tokens and a score design refuses N/T letters: which grades make
a DLT is the scenario's ``dlt`` rule, not something a string should guess.

Toxicity-and-efficacy designs (BOIN12, Keyboard phase I/II): one letter per patient among
``N`` (neither DLT nor response), ``E`` (response, no DLT), ``T`` (DLT, no response) and ``B``
(both), e.g. ``"1NNE 2TEB"`` (:func:`joint_state_from_outcomes`).
"""
from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

from .types import JointState, TrialState

# ASCII only: ``\d`` would also match other scripts' digits ('١NNN' read as dose 1)
_TOKEN = re.compile(r"^([0-9]+)([NTnt]+)$")
_GRADED = re.compile(r"^([0-9]+):([0-5]+)$")
_JOINT = re.compile(r"^([0-9]+)([NETBnetb]+)$")
#: highest grade a graded token may give (CTCAE grade 5 = death)
_TOP_GRADE = 5
#: digits of a dose number (more cannot name a dose; int() of a huge string is slow)
_MAX_DOSE_DIGITS = 9

Cohort = Tuple[int, str]  # (0-based dose, "NTN")


class OutcomeStringError(ValueError):
    pass


def parse_outcomes(text: str, n_doses: int | None = None, graded: bool = False
                   ) -> List[Cohort]:
    """Parse ``"1NNN 2NTN"`` into ``[(0, "NNN"), (1, "NTN")]`` (0-based doses); with
    ``graded`` parse ``"1:003 2:0104"`` into ``[(0, "003"), (1, "0104")]`` (grade digits)."""
    cohorts: List[Cohort] = []
    for pos, token in enumerate(text.split()):
        m = (_GRADED if graded else _TOKEN).match(token)
        if not m:
            if graded:
                if _TOKEN.match(token):
                    why = ("N/T letters are for binary designs; this design scores graded "
                           "toxicities: give the dose, a colon and one worst grade (0-5) per "
                           "patient, e.g. '2:013'")
                else:
                    why = ("expected a dose number (digits 0-9), a colon and one worst grade "
                           "(digits 0-5) per patient, e.g. '2:013'")
            elif _GRADED.match(token):
                why = ("grades (dose:digits) are for score designs such as gboin; this design "
                       "takes N/T letters (N no DLT, T DLT), e.g. '2NTN'")
            else:
                why = "expected a dose number (digits 0-9) followed by N/T letters, e.g. '2NTN'"
            raise OutcomeStringError(f"cohort {pos + 1} {_short_token(token)}: {why}")
        digits = m.group(1)
        dose = int(digits) if len(digits) <= _MAX_DOSE_DIGITS else None
        if dose is None or dose < 1 or (n_doses is not None and dose > n_doses):
            rng = f"1..{n_doses}" if n_doses is not None else ">= 1"
            shown = digits if dose is not None else digits[:_MAX_DOSE_DIGITS] + "..."
            raise OutcomeStringError(f"cohort {pos + 1} {_short_token(token)}: dose {shown} "
                                     f"outside {rng}")
        cohorts.append((dose - 1, m.group(2).upper()))
    return cohorts


def is_graded(cohorts: List[Cohort]) -> bool:
    return bool(cohorts) and cohorts[0][1][:1].isdigit()


def _short_token(token: str) -> str:
    return repr(token) if len(token) <= 40 else repr(token[:37]) + "..."


def format_outcomes(cohorts: List[Cohort]) -> str:
    """The string of ``cohorts``; grade cohorts (digits) get the ``dose:grades`` form."""
    return " ".join(f"{d + 1}:{s}" if s[:1].isdigit() else f"{d + 1}{s}" for d, s in cohorts)


def state_from_outcomes(text: str, n_doses: int,
                        score_units: Optional[Sequence[int]] = None) -> TrialState:
    """The ``TrialState`` after the cohorts in ``text``.

    ``score_units`` (a score design's units per worst grade 0..5): ``text`` is in the graded
    form and each cohort adds the sum of its patients' units (``y`` = unit sums)."""
    if score_units is None:
        state = TrialState.empty(n_doses)
        for dose, letters in parse_outcomes(text, n_doses):
            state = state.add_cohort(dose, len(letters), letters.count("T"))
        return state
    units = list(score_units)
    if len(units) < _TOP_GRADE + 1:
        units += [units[-1]] * (_TOP_GRADE + 1 - len(units))
    scale = max(units)
    state = TrialState.empty(n_doses)
    for dose, grades in parse_outcomes(text, n_doses, graded=True):
        y = sum(units[int(g)] for g in grades)
        state = state.add_cohort(dose, len(grades), y, max_units=scale)
    return state


def joint_state_from_outcomes(text: str, n_doses: int) -> JointState:
    """The :class:`~escalation_sim.types.JointState` after the cohorts in ``text``, one letter
    per patient: N (neither), E (response only), T (DLT only), B (both)."""
    state = JointState.empty(n_doses)
    for pos, token in enumerate(text.split()):
        m = _JOINT.match(token)
        if not m:
            raise OutcomeStringError(
                f"cohort {pos + 1} {_short_token(token)}: expected a dose number (digits 0-9) "
                f"followed by one letter per patient: N (neither), E (response), T (DLT), "
                f"B (both), e.g. '2NEB'")
        digits = m.group(1)
        dose = int(digits) if len(digits) <= _MAX_DOSE_DIGITS else None
        if dose is None or not 1 <= dose <= n_doses:
            shown = digits if dose is not None else digits[:_MAX_DOSE_DIGITS] + "..."
            raise OutcomeStringError(f"cohort {pos + 1} {_short_token(token)}: dose {shown} "
                                     f"outside 1..{n_doses}")
        letters = m.group(2).upper()
        t = sum(ch in "TB" for ch in letters)
        e = sum(ch in "EB" for ch in letters)
        b = letters.count("B")
        state = state.add_cohort(dose - 1, len(letters), t, e=e, b=b)
    return state
