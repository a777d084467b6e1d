"""Exact operating characteristics by enumerating every cohort outcome.

Starting from the empty trial, each live state is expanded over the binomial outcomes of its
next cohort.  States are merged by value (the design's pure ``decide`` sees only the state),
so the work grows with the number of *distinct* states, not the number of paths.  The result
is an :class:`~escalation_sim.results.oc.OutcomeTally` holding probabilities; all operating
characteristics come from the same code as Monte Carlo results, with standard errors of 0.
"""
from __future__ import annotations

from math import comb
from typing import Dict, Sequence


from ..designs.base import Design
from .graph import StateGraph, graph_for
from ..results.oc import OutcomeTally, terminal_key


def _binom_pmf(c: int, p: float):
    return [comb(c, k) * p ** k * (1 - p) ** (c - k) for k in range(c + 1)]


def exact_tally(design: Design, p_true: Sequence[float], graph: StateGraph | None = None,
                start_sid: int = 0) -> OutcomeTally:
    """Probability of each trial ending, exactly (up to floating-point rounding)."""
    p = [float(v) for v in p_true]
    if len(p) != design.n_doses:
        raise ValueError(f"p_true has {len(p)} values for {design.n_doses} doses")
    g = graph or graph_for(design)
    pmf_cache: Dict[tuple, list] = {}
    frontier: Dict[int, float] = {start_sid: 1.0}
    tally = OutcomeTally(design.n_doses, exact=True)
    while frontier:
        nxt: Dict[int, float] = {}
        for sid, pr in frontier.items():
            d = int(g.dose[sid])
            if d < 0:
                tally.add(terminal_key(g, sid), pr)
                continue
            c = int(g.size[sid])
            pmf = pmf_cache.get((c, d))
            if pmf is None:
                pmf = pmf_cache[(c, d)] = _binom_pmf(c, p[d])
            for k in range(c + 1):
                if pmf[k] == 0.0:
                    continue
                s2 = g.successor(sid, k)
                nxt[s2] = nxt.get(s2, 0.0) + pr * pmf[k]
        frontier = nxt
    return tally


def exact_oc_dict(design: Design, p_true: Sequence[float], target: float, acceptable=None):
    """Exact operating characteristics (same keys as the simulation's, SEs are 0)."""
    from ..results.oc import compute_oc
    return compute_oc(exact_tally(design, p_true), p_true, target, acceptable)
