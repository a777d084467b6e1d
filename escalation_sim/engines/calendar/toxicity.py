"""Who has a DLT, and when.

The k-th evaluable infusion of a trial (k = 0, 1, ...; drop-outs excluded) has a DLT at dose
d iff ``u_dlt(k) < p_d``; its onset is ``onset(k)`` days after the infusion, inside the
window.  Both numbers come from streams indexed by k alone, so logistics never change who
has a DLT.  The decision policy chooses *when* a patient is observed (classic designs: when
the cohort completes, in infusion order; time-to-event designs: at infusion).
"""
from __future__ import annotations

from typing import List

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
