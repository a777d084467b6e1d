"""Toxicity grades and severity scores (core layer).

Grades follow the usual adverse-event scales: 0 = no event, 1 = mild ... 4 = life-threatening,
5 = death (CTCAE); the CAR-T toxicities CRS and ICANS are graded 1-4 by the ASTCT consensus
(Lee et al. 2019, Biol Blood Marrow Transplant 25:625).

A *severity score* maps each grade to a non-negative number, e.g. ``0 / 0 / 0.5 / 1 / 1.5`` for
grades 0-4.  gBOIN (Mu, Yuan, Xu & Liu 2019, JRSS-C 68:289) applies the score to a patient's
worst grade and divides it by the largest score, giving the *normalized equivalent toxicity
score* in [0, 1] that replaces the binary DLT indicator (quasi-binomial likelihood).

This module lives in the core layer so that both the truth model
(:mod:`escalation_sim.inputs.truth`) and graded designs (``designs/``) can validate scores
with the same function.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

#: highest grade on the scales used (CTCAE grade 5 = death)
MAX_GRADE = 5

Scores = Union[Mapping[Any, float], Sequence[float]]


def _got(v) -> str:
    try:
        s = json.dumps(v, default=str)
    except (TypeError, ValueError):  # pragma: no cover - keys json cannot write
        s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _grade_key(k) -> Optional[int]:
    """A grade given as an integer or a string of digits (JSON writes mapping keys as
    strings); ``None`` when it is neither."""
    if isinstance(k, bool):
        return None
    if isinstance(k, int):
        return k
    if isinstance(k, str) and k.strip().isdigit():
        return int(k.strip())
    return None


def check_scores(scores: Scores, max_grade: Optional[int] = None) -> Tuple[float, ...]:
    """Validate severity scores and return them as a tuple ``(s_0, s_1, ..., s_G)``.

    ``scores`` is a mapping ``{grade: score}`` (grades 0..G, integers or digit strings) or a
    list indexed by grade.  Rules: every grade from 0 to G has a score, G <= 5; scores are
    finite and >= 0; grade 0 scores 0 (a patient without toxicity); scores never decrease
    with the grade (equal neighbours are allowed, e.g. grades 0 and 1 both 0); the largest
    score is > 0 (it normalizes the others).  With ``max_grade`` (the highest grade the truth
    can produce), G must reach it.  Raises ``ValueError("message (got VALUE)")``.
    """
    if isinstance(scores, Mapping):
        items = {}
        for k, v in scores.items():
            g = _grade_key(k)
            if g is None or not 0 <= g <= MAX_GRADE:
                raise ValueError(f"grades must be integers from 0 to {MAX_GRADE} "
                                 f"(got {_got(k)})")
            if g in items:
                raise ValueError(f"grade {g} is given twice (got {_got(scores)})")
            items[g] = v
        if not items:
            raise ValueError(f"must give a score for each grade from 0 up (got {_got(scores)})")
        top = max(items)
        missing = [g for g in range(top + 1) if g not in items]
        if missing:
            raise ValueError(f"every grade from 0 to {top} needs a score; missing "
                             f"{', '.join(map(str, missing))} (got {_got(scores)})")
        values = [items[g] for g in range(top + 1)]
    elif isinstance(scores, (list, tuple)):
        values = list(scores)
        if not values or len(values) > MAX_GRADE + 1:
            raise ValueError(f"a list of scores gives grades 0, 1, ... in order: 1 to "
                             f"{MAX_GRADE + 1} values (got {_got(scores)})")
    else:
        raise ValueError(f"must map grades to scores, e.g. {{0: 0, 1: 0, 2: 0.5, 3: 1, 4: 1.5}} "
                         f"(got {_got(scores)})")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))
           or not math.isfinite(v) or v < 0]
    if bad:
        raise ValueError(f"scores must be finite numbers >= 0; bad: {_got(bad)} "
                         f"(got {_got(scores)})")
    out = tuple(float(v) for v in values)
    if out[0] != 0.0:
        raise ValueError(f"grade 0 (no toxicity) must score 0 (got {_got(scores)})")
    down = [g for g in range(1, len(out)) if out[g] < out[g - 1]]
    if down:
        g = down[0]
        raise ValueError(f"scores must not decrease with the grade: grade {g} scores "
                         f"{out[g]:g} < grade {g - 1}'s {out[g - 1]:g} (got {_got(scores)})")
    if out[-1] <= 0.0:
        raise ValueError(f"the largest score must be > 0: it normalizes the others "
                         f"(got {_got(scores)})")
    if max_grade is not None and len(out) - 1 < max_grade:
        raise ValueError(f"no score for grade {max_grade}, which the truth can produce; give "
                         f"scores for grades 0 to {max_grade} (got {_got(scores)})")
    return out


def normalized_scores(scores: Scores, max_grade: Optional[int] = None) -> np.ndarray:
    """Scores of grades 0..G divided by the largest (the equivalent toxicity score of Mu et
    al. 2019, in [0, 1]); validated by :func:`check_scores`."""
    s = np.asarray(check_scores(scores, max_grade), dtype=np.float64)
    return s / s[-1]


#: largest integer unit scale :func:`score_units_from` tries
MAX_UNIT_SCALE = 120


def score_units_from(scores: Scores) -> Tuple[Tuple[int, ...], int]:
    """Severity scores as integer *units* per worst grade 0..5, and the unit scale L.

    The scores are validated by :func:`check_scores` and normalized by the largest; L is the
    smallest integer <= :data:`MAX_UNIT_SCALE` such that every normalized score times L is an
    integer (within 1e-9).  A patient whose worst grade is g contributes ``units[g]`` units,
    i.e. the normalized score ``units[g] / L``; summing integer units keeps score sums exact
    (state merging, exact enumeration).  Grades above the highest scored one take its units
    (the scenario loader separately requires the scores to cover the truth's grades).

    ``{0: 0, 1: 0, 2: 0.5, 3: 1, 4: 1.5}`` -> ``((0, 0, 1, 2, 3, 3), 3)``.
    Raises ``ValueError("message (got VALUE)")``.
    """
    s = check_scores(scores)
    norm = [v / s[-1] for v in s]
    for L in range(1, MAX_UNIT_SCALE + 1):
        units = [round(v * L) for v in norm]
        if all(abs(v * L - u) <= 1e-9 for v, u in zip(norm, units)):
            units += [units[-1]] * (MAX_GRADE + 1 - len(units))
            return tuple(int(u) for u in units), L
    raise ValueError(f"the scores divided by the largest must be multiples of 1/L for some "
                     f"integer L <= {MAX_UNIT_SCALE} (e.g. 0, 0.5, 1, 1.5 are thirds of 1.5) "
                     f"(got {_got(scores)})")
