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

import math
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

    __slots__ = ("rule", "window", "units", "no_law")

    def __init__(self, model, window: float, units: Optional[Sequence[int]]):
        self.rule: Tuple[Tuple[int, int], ...] = tuple(model.rule)
        self.window = float(window)
        #: score units per worst grade (score designs), or None (the DLT flag counts)
        self.units = None if units is None else tuple(int(u) for u in units)
        #: types without an onset law (their event starts on the conduct's onset day)
        self.no_law = tuple(j for j, t in enumerate(model.types) if t.onset is None)


class GradedToxicity(Toxicity):
    """Graded events per type, the DLT rule and late events (see the module docstring).

    ``observe`` returns what the patient contributes to the design's ``y``: the DLT flag
    (binary designs) or the units of the worst grade in the window (score designs)."""

    __slots__ = ("g",)

    def __init__(self, p: List[float], draws: TrialDraws, g: GradedRule):
        super().__init__(p, draws)
        self.g = g

    def observe(self, pat: Patient):
        k = self.n
        self.n = k + 1
        d = self.draws
        while k >= len(d.dlt_u):
            d.more_evaluable()
        pat.k = k
        g = self.g
        W = g.window
        grades = d.grades[k][pat.dose]
        days = d.type_onset[k]
        if g.no_law:
            days = list(days)
            for j in g.no_law:
                days[j] = d.onset_day[k]
        events = tuple((j, gr, days[j]) for j, gr in enumerate(grades) if gr > 0)
        pat.events = events
        dlt_day = math.inf
        late = False
        for j, mg in g.rule:
            if grades[j] >= mg:
                if days[j] <= W:
                    if days[j] < dlt_day:
                        dlt_day = days[j]
                else:
                    late = True
        if dlt_day < math.inf:
            pat.dlt = True
            pat.dlt_day = dlt_day
        else:
            pat.late = late
        worst = 0
        for _, gr, day in events:
            if gr > worst and day <= W:
                worst = gr
        pat.worst = worst
        if g.units is None:
            return pat.dlt
        return g.units[worst]

    def onset_day(self, pat: Patient) -> float:
        return pat.dlt_day

    def steps(self, pat: Patient) -> List[Tuple[float, int]]:
        """Score designs, for an observed patient: ``(day, units)`` at each event inside the
        window that raises the units seen so far (units of the worst grade among the events
        started by that day), in time order; the last units are the patient's total."""
        units, W = self.g.units, self.g.window
        out: List[Tuple[float, int]] = []
        best = 0
        for _, gr, day in sorted(pat.events, key=lambda e: e[2]):
            u = units[gr]
            if day <= W and u > best:
                best = u
                out.append((day, u))
        return out
