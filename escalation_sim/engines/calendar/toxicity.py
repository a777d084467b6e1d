"""Who has a DLT, and when.

Binary truth (``truth: {p_dlt}``, :class:`Toxicity`): the k-th evaluable infusion of a trial
(k = 0, 1, ...; drop-outs excluded) has a DLT at dose d iff ``u_dlt(k) < p_d``; its onset is
``onset(k)`` days after the infusion, inside the window.  Both numbers come from streams
indexed by k alone, so logistics never change who has a DLT.

Graded truth (:class:`GradedToxicity`): patient k is the outcome model's patient k
(:class:`~escalation_sim.inputs.truth.OutcomeModel`, common random numbers with every other
engine): at dose d it has, per toxicity type, a worst grade and (grade > 0) an event whose
onset day is the type's onset law at the patient's own uniform; a type without an onset law
starts on the day ``onset(k)`` above (conduct's ``dlt_onset``, inside the window).  Then

* DLT: some criterion ``{type, min_grade}`` of the scenario's ``dlt`` rule is met by an
  event starting inside the window (day <= ``dlt_window_days``); it is *known* at the
  earliest such onset (``dlt_day``), which is when a time-to-event design sees it;
* late event: a criterion is met, but only by events starting after the window: logged,
  not a DLT, never seen by a design;
* score designs (gBOIN, TITE-gBOIN): the patient's units are ``score_units[g]`` of the
  worst grade g among the events inside the window; at time t a time-to-event design sees
  the units of the worst grade among the events that have started (``steps``).

The decision policy chooses *when* a patient is observed (classic designs: when the cohort
completes, in infusion order; time-to-event designs: at infusion, then each event at its
onset).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from .draws import TrialDraws
from .patient import Patient


class Toxicity:
    """Binary DLTs with one onset law (the ``dlt`` and ``onset`` streams)."""

    __slots__ = ("p", "draws", "n")

    def __init__(self, p: List[float], draws: TrialDraws):
        self.p = p
        self.draws = draws
        self.n = 0                   # evaluable infusions observed so far (next k)

    def observe(self, pat: Patient) -> bool:
        """Give ``pat`` the next k; set and return whether it has a DLT."""
        k = self.n
        self.n = k + 1
        d = self.draws
        while k >= len(d.dlt_u):
            d.more_evaluable()
        pat.k = k
        if d.dlt_u[k] < self.p[pat.dose]:
            pat.dlt = True
            return True
        return False

    def onset_day(self, pat: Patient) -> float:
        """Days from infusion to the DLT of an observed patient with a DLT."""
        return self.draws.onset_day[pat.k]


class GradedRule:
    """What a graded truth needs per patient, shared by the trials of a call."""

    __slots__ = ("window", "units")

    def __init__(self, model, window: float, units: Optional[Sequence[int]]):
        self.window = float(window)
        #: score units per worst grade (score designs), or None (the DLT flag counts)
        self.units = None if units is None else tuple(int(u) for u in units)


class GradedToxicity(Toxicity):
    """Graded events per type, the DLT rule and late events (see the module docstring).

    ``observe`` returns what the patient contributes to the design's ``y``: the DLT flag
    (binary designs) or the units of the worst grade in the window (score designs)."""

    __slots__ = ("g", "mask")

    def __init__(self, p: List[float], draws: TrialDraws, g: GradedRule):
        super().__init__(p, draws)
        self.g = g
        #: the DLT flags of every dose, one integer per k (extended in place by the draws)
        self.mask = draws.dlt_mask

    @staticmethod
    def make(p: List[float], draws: TrialDraws, g: GradedRule) -> "GradedToxicity":
        """The toxicity part for a graded truth: binary designs with few doses read the DLT
        flags as bits; score designs and more doses read the arrays."""
        if g.units is not None:
            return ScoreToxicity(p, draws, g)
        if draws.dlt_mask is None:
            return WideGradedToxicity(p, draws, g)
        return GradedToxicity(p, draws, g)

    def _next(self, pat: Patient) -> int:
        k = self.n
        self.n = k + 1
        d = self.draws
        while k >= d.dlt_known.shape[0]:
            d.more_evaluable()
        pat.k = k
        return k

    def observe(self, pat: Patient):
        k = self.n
        self.n = k + 1
        mask = self.mask
        while k >= len(mask):
            self.draws.more_evaluable()
        pat.k = k
        if mask[k] >> pat.dose & 1:
            pat.dlt = True
            return True
        return False

    def worst_late(self, pat: Patient) -> Tuple[int, bool]:
        """An observed patient's worst grade in the window and whether it has a late event."""
        code = self.draws.worst_late.item(pat.k, pat.dose)
        return code >> 1, bool(code & 1)

    def events(self, pat: Patient) -> Tuple[Tuple[int, int, float], ...]:
        """``((type index, grade, onset day after infusion), ...)`` of an observed patient's
        events (grade > 0), in type order."""
        d = self.draws
        grades = d.grades[pat.k, pat.dose].tolist()
        days = d.type_onset[pat.k].tolist()
        return tuple((j, g, days[j]) for j, g in enumerate(grades) if g > 0)

    def onset_day(self, pat: Patient) -> float:
        """Days from infusion to the onset of the earliest qualifying event in the window
        (the day the DLT is known) of an observed patient with a DLT."""
        return self.draws.dlt_known.item(pat.k, pat.dose)

    def steps(self, pat: Patient) -> List[Tuple[float, int]]:  # pragma: no cover - score
        raise NotImplementedError


class WideGradedToxicity(GradedToxicity):
    """Binary designs on a graded truth with more doses than one integer's bits."""

    __slots__ = ()

    def observe(self, pat: Patient):
        k = self._next(pat)
        day = self.draws.dlt_known.item(k, pat.dose)
        if day == day:                      # not NaN: a DLT, known on that day
            pat.dlt = True
            return True
        return False


class ScoreToxicity(GradedToxicity):
    """Score designs (gBOIN, TITE-gBOIN): ``observe`` returns the units of the worst grade
    in the window; ``steps`` when a time-to-event design sees them."""

    __slots__ = ()

    def observe(self, pat: Patient):
        k = self._next(pat)
        day = self.draws.dlt_known.item(k, pat.dose)
        if day == day:
            pat.dlt = True
        worst = self.worst_late(pat)[0]
        pat.worst = worst
        return self.g.units[worst]

    def steps(self, pat: Patient) -> List[Tuple[float, int]]:
        """Score designs, for an observed patient: ``(day, units)`` at each event inside the
        window that raises the units seen so far (units of the worst grade among the events
        started by that day), in time order; the last units are the patient's total."""
        return score_steps(self.events(pat), self.g.units, self.g.window)


def score_steps(events, units: Sequence[int], W: float) -> List[Tuple[float, int]]:
    """``(day, units)`` at each of ``events`` (``(type, grade, onset day)``) inside the
    window ``W`` that raises the units seen so far (``units[grade]`` of the worst grade
    started by that day), in time order (:meth:`ScoreToxicity.steps`)."""
    out: List[Tuple[float, int]] = []
    best = 0
    for _, gr, day in sorted(events, key=lambda e: e[2]):
        u = units[gr]
        if day <= W and u > best:
            best = u
            out.append((day, u))
    return out
