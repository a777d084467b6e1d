"""Exact operating characteristics by enumerating every cohort outcome.

Starting from the empty trial, each live state is expanded over the binomial outcomes of its
next cohort.  States are merged by value (the design's pure ``decide`` sees only the state),
so the work grows with the number of *distinct* states, not the number of paths.  The result
is an :class:`~escalation_sim.results.oc.OutcomeTally` holding probabilities; all operating
characteristics come from the same code as Monte Carlo results, with standard errors of 0.
"""
from __future__ import annotations

from math import comb
from typing import Dict, Optional, Sequence


from ..designs.base import Design
from ..designs.rules import StopAtN
from .graph import StateGraph, graph_for
from ..results.oc import OutcomeTally, terminal_key

#: exact enumeration is refused when :func:`state_count_estimate` exceeds this (a loose upper
#: bound: real graphs are 35 to 2,300 times smaller, so 6 doses at N = 48 or 60 still run;
#: the run-time cap below catches what the bound lets through)
MAX_EXACT_STATES_ESTIMATE = 10**11
#: and stopped if the design's state graph grows beyond this many states anyway
MAX_EXACT_STATES = 2_000_000
_HOW = ("use Monte Carlo instead (escalation-sim run FILE --method monte-carlo, or "
        "simulation.method: monte-carlo), or fewer patients or larger cohorts")


class ExactTooLarge(ValueError):
    """Exact enumeration would visit too many trial states."""


def state_count_estimate(n_doses: int, max_n: int, cohort_size: int,
                         limit: Optional[int] = None) -> int:
    """An upper estimate of the trial states exact enumeration may visit: the number of
    per-dose (patients, DLTs) counts reachable with up to ``max_n`` patients treated in
    cohorts of ``cohort_size`` at ``n_doses`` doses.

    After m cohorts, the counts are at most min((c+1)^m, A(m)): (c+1)^m outcome sequences,
    and A(m) = sum over the ways of spreading m cohorts over K doses (k_d cohorts at dose d)
    of prod_d (c k_d + 1) choices of DLT counts.  The generating function of one dose is
    sum_k (c k + 1) x^k = (1 + (c-1) x) / (1-x)^2, so
    A(m) = sum_j C(K, j) (c-1)^j C(m - j + 2K - 1, 2K - 1).
    Designs that merge states (BOIN, 3+3) or that cannot reach every count visit far fewer
    (measured: 1/35 to 1/2300 of it for BOIN and CRM); a design that keeps the last cohort
    in its state can visit more, which the run-time cap :data:`MAX_EXACT_STATES` catches.
    Stops counting once ``limit`` is passed (the estimate is then just above the limit).
    """
    K, c = int(n_doses), max(1, int(cohort_size))
    total = 0
    for m in range(int(max_n) // c + 1):
        spread = sum(comb(K, j) * (c - 1) ** j * comb(m - j + 2 * K - 1, 2 * K - 1)
                     for j in range(min(K, m) + 1))
        total += min((c + 1) ** m, spread)
        if limit is not None and total > limit:
            break
    return total


def patient_cap(design: Design) -> Optional[int]:
    """The most patients ``design`` treats (its ``StopAtN`` rule), or None if no rule caps
    the total (3+3 without ``max_n`` caps itself at 6 per dose)."""
    cap = getattr(design, "max_n", None)
    if isinstance(cap, int) and not isinstance(cap, bool):
        return cap
    d: Optional[Design] = design
    while d is not None:
        if isinstance(d, StopAtN):
            return int(d.n)
        d = getattr(d, "base", None)
    return None


def exact_size_problem(design: Design) -> Optional[str]:
    """Why exact enumeration of ``design`` is refused, or None when it may run."""
    cap = patient_cap(design)
    if cap is None:
        return None
    c = int(design.max_cohort_size)
    est = state_count_estimate(design.n_doses, cap, c, limit=MAX_EXACT_STATES_ESTIMATE)
    if est <= MAX_EXACT_STATES_ESTIMATE:
        return None
    return (f"exact enumeration with {design.n_doses} doses and up to {cap} patients in "
            f"cohorts of {c} could visit more than {MAX_EXACT_STATES_ESTIMATE:.0e} trial "
            f"states (the limit); {_HOW}")


def _binom_pmf(c: int, p: float):
    return [comb(c, k) * p ** k * (1 - p) ** (c - k) for k in range(c + 1)]


def exact_tally(design: Design, p_true: Sequence[float], graph: StateGraph | None = None,
                start_sid: int = 0) -> OutcomeTally:
    """Probability of each trial ending, exactly (up to floating-point rounding)."""
    p = [float(v) for v in p_true]
    if len(p) != design.n_doses:
        raise ValueError(f"p_true has {len(p)} values for {design.n_doses} doses")
    problem = exact_size_problem(design)
    if problem is not None:
        raise ExactTooLarge(problem)
    g = graph or graph_for(design)
    pmf_cache: Dict[tuple, list] = {}
    frontier: Dict[int, float] = {start_sid: 1.0}
    tally = OutcomeTally(design.n_doses, exact=True)
    while frontier:
        nxt: Dict[int, float] = {}
        if g.n_states > MAX_EXACT_STATES:
            raise ExactTooLarge(f"exact enumeration stopped: the design reached more than "
                                f"{MAX_EXACT_STATES:,} distinct trial states; {_HOW}")
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
