"""Exact operating characteristics by enumerating every cohort outcome.

Starting from the empty trial, every live state is expanded over the binomial outcomes of its
next cohort.  States are merged by value (the design's pure ``decide`` sees only the state), so
the work grows with the number of *distinct* states, not the number of paths.  The result is
an :class:`~escalation_sim.results.oc.OutcomeTally` holding probabilities; all operating
characteristics come from the same code as Monte Carlo results, with standard errors of 0.

The sweep goes cohort by cohort over the design's state graph (:mod:`.graph`), one numpy pass
per cohort: the probabilities of the live states are spread over their children with array
operations, the children missing from the graph are created in one batch, and the index of
the levels the sweep has left behind is dropped (a state only leads to states with more
patients).  Floating-point sums are made in the same order as a plain loop over the states
in order of first arrival (``np.bincount`` adds its weights one after another), so the
probabilities do not depend on how the graph was built or on the batching.

Designs that offer their decisions on arrays (``Design.exact_rules``,
:mod:`escalation_sim.designs.batch`: BOIN, mTPI-2, Keyboard, i3+3, the empiric CRM, under
``StopAtN``) are swept without the graph when no graph is passed (:func:`_array_sweep`): the
states of one step live in flat int16 arrays, merged by integer keys equal exactly when the
canonical keys are, decided in batches, and dropped once the next step is built.  The order
of states, outcomes and additions is the graph sweep's, so the result is the same to the bit.
"""
from __future__ import annotations

import logging
import time
from math import comb
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..designs.base import Design, Outcome
from ..designs.rules import StopAtN
from ..results.oc import OutcomeTally
from .graph import MAX_PATIENTS, StateGraph, gc_paused, graph_for, joint_code

log = logging.getLogger(__name__)

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


#: the refusal threshold of :func:`joint_state_estimate` for toxicity-and-efficacy designs
#: (measured with BOIN12 and Keyboard phase I/II on 4 doses, cohorts of 3: real graphs are
#: 60 to 70 times smaller than the estimate, so N = 21 runs (about 0.7 M states) and N = 24,
#: about 2.4 M states, is refused at once instead of after minutes)
MAX_JOINT_STATES_ESTIMATE = 10**8
#: the same for a toxicity-and-efficacy design with batch rules, swept on arrays
#: (:func:`_joint_array_sweep`; measured on 4 doses in cohorts of 3, standard_mtd3's DLT
#: rates: N = 21 takes 0.8 / 1.5 s of CPU and 0.3 / 0.44 GB for BOIN12 / Keyboard phase
#: I/II (0.4 / 0.64 M states), N = 24 4.4 / 5.5 s and 0.93 / 1.15 GB (1.7 / 2.0 M states,
#: estimate 1.7e8); N = 27, about 6 M states and 4 GB, is refused at once)
MAX_JOINT_ARRAY_ESTIMATE = 3 * 10**8
#: and the joint array sweep is stopped beyond this many states visited
MAX_JOINT_ARRAY_STATES = 4_000_000


def joint_state_estimate(n_doses: int, max_n: int, cohort_size: int,
                         limit: Optional[int] = None) -> int:
    """:func:`state_count_estimate` for a design that also counts responses: after m cohorts
    at most min(B^m, sum over spreads of prod_d (c k_d + 1)^2) per-dose (patients, DLTs,
    responders) counts, B = C(c + 3, 3) joint outcomes of a cohort of c."""
    K, c = int(n_doses), max(1, int(cohort_size))
    B = comb(c + 3, 3)
    total = 0
    for m in range(int(max_n) // c + 1):
        poly = [1] + [0] * m
        for _ in range(K):
            new = [0] * (m + 1)
            for i, v in enumerate(poly):
                if v:
                    for k in range(m + 1 - i):
                        new[i + k] += v * (c * k + 1) ** 2
            poly = new
        total += min(B ** m, poly[m])
        if limit is not None and total > limit:
            break
    return total


def exact_size_problem(design: Design) -> Optional[str]:
    """Why exact enumeration of ``design`` is refused, or None when it may run."""
    cap = patient_cap(design)
    if cap is None:
        return None
    c = int(design.max_cohort_size)
    if design.outcome is Outcome.JOINT:
        limit = (MAX_JOINT_ARRAY_ESTIMATE if joint_array_rules(design) is not None
                 else MAX_JOINT_STATES_ESTIMATE)
        est = joint_state_estimate(design.n_doses, cap, c, limit=limit)
        if est <= limit:
            return None
        return (f"exact enumeration of a toxicity-and-efficacy design with {design.n_doses} "
                f"doses and up to {cap} patients in cohorts of {c} would visit millions of "
                f"trial states (estimate {est:.1e} > {limit:.0e}); {_HOW}")
    est = state_count_estimate(design.n_doses, cap, c, limit=MAX_EXACT_STATES_ESTIMATE)
    if est <= MAX_EXACT_STATES_ESTIMATE:
        return None
    return (f"exact enumeration with {design.n_doses} doses and up to {cap} patients in "
            f"cohorts of {c} could visit more than {MAX_EXACT_STATES_ESTIMATE:.0e} trial "
            f"states (the limit); {_HOW}")

_PARENTS = 1 << 14   # live states expanded per pass of a sweep step


def _binom_pmf(c: int, p: float):
    return [comb(c, k) * p ** k * (1 - p) ** (c - k) for k in range(c + 1)]


def _pmf_table(p: Sequence[float], max_c: int) -> np.ndarray:
    """``pmf[d, c, k]``: P(k DLTs in a cohort of c at dose d) (0 for k > c)."""
    out = np.zeros((len(p), max_c + 1, max_c + 1), dtype=np.float64)
    for d, pd in enumerate(p):
        for c in range(1, max_c + 1):
            out[d, c, : c + 1] = _binom_pmf(c, pd)
    return out


def unit_pmf(model, score_units: Sequence[int]) -> np.ndarray:
    """``q[d, u]``: P(one patient at dose d contributes ``u`` score units), from the exact
    distribution of the worst grade in the DLT window (:meth:`OutcomeModel.worst_grade_probs`)
    and the design's units per grade."""
    pw = model.worst_grade_probs()            # (max_grade + 1, K)
    units = list(score_units)
    L = max(units)
    q = np.zeros((model.n_doses, L + 1))
    for g in range(pw.shape[0]):
        q[:, units[min(g, len(units) - 1)]] += pw[g]
    return q


def _score_pmf_table(q: np.ndarray, max_c: int) -> np.ndarray:
    """``pmf[d, c, u]``: P(a cohort of c at dose d sums to u units): the c-fold convolution
    of the per-patient pmf ``q[d]`` (patients are independent given the dose: the
    multinomial over the outcome categories, collapsed to the unit sum)."""
    K, L1 = q.shape
    L = L1 - 1
    out = np.zeros((K, max_c + 1, max_c * L + 1), dtype=np.float64)
    for d in range(K):
        cur = np.array([1.0])
        for c in range(1, max_c + 1):
            cur = np.convolve(cur, q[d])
            out[d, c, : cur.size] = cur
    return out


def joint_pmf_table(p: Sequence[float], q: Sequence[float], max_c: int) -> np.ndarray:
    """``pmf[d, c, code]``: P(a cohort of c at dose d has the outcome ``code``) for a joint
    design (:func:`~escalation_sim.engines.graph.joint_code` of its DLTs, responders and
    patients with both).  Each patient independently has a DLT with probability p_d and a
    response with probability q_d (the truth draws them from independent streams), so the
    cohort's counts of (no DLT, no response), (DLT only), (response only), (both) are
    multinomial(c; (1-p)(1-q), p(1-q), (1-p)q, pq)."""
    from .graph import joint_code_count
    out = np.zeros((len(p), max_c + 1, joint_code_count(max_c)), dtype=np.float64)
    for d, (pd, qd) in enumerate(zip(p, q)):
        cat = ((1 - pd) * (1 - qd), pd * (1 - qd), (1 - pd) * qd, pd * qd)
        for c in range(1, max_c + 1):
            for n10 in range(c + 1):
                for n01 in range(c + 1 - n10):
                    for n11 in range(c + 1 - n10 - n01):
                        n00 = c - n10 - n01 - n11
                        w = (comb(c, n10) * comb(c - n10, n01) * comb(c - n10 - n01, n11)
                             * cat[0] ** n00 * cat[1] ** n10 * cat[2] ** n01 * cat[3] ** n11)
                        out[d, c, joint_code(n10 + n11, n01 + n11, n11, max_c)] += w
    return out


def _first_order(ids: np.ndarray):
    """Distinct values of ``ids`` in order of first occurrence, each entry's rank among them,
    and the position of each distinct value's first occurrence."""
    uniq, first, inv = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return uniq[order], rank[inv.ravel()], first[order]


def _first_order_quick(ids: np.ndarray):
    """:func:`_first_order` (the same three arrays) from one unstable argsort: each group's
    first occurrence is the smallest position in it (``np.minimum.reduceat``), which spares
    the stable merge sort ``np.unique`` needs for ``return_index`` (half the time on the
    joint sweep's 8 to 10 million keys a step)."""
    if not ids.size:
        e = np.empty(0, dtype=np.int64)
        return ids[:0], e, e
    perm = ids.argsort()
    srt = ids[perm]
    flag = np.empty(srt.size, dtype=bool)
    flag[0] = True
    np.not_equal(srt[1:], srt[:-1], out=flag[1:])
    starts = np.flatnonzero(flag)
    first = np.minimum.reduceat(perm, starts)
    group = np.cumsum(flag) - 1
    order = np.argsort(first)
    rank_of_group = np.empty(order.size, dtype=np.int64)
    rank_of_group[order] = np.arange(order.size)
    rank = np.empty(ids.size, dtype=np.int64)
    rank[perm] = rank_of_group[group]
    return srt[starts][order], rank, first[order]


def _sweep(g: StateGraph, pmf: np.ndarray, start_sid: int) -> Tuple[np.ndarray, np.ndarray]:
    """Probability of each stopped trial, as ``(state ids, probabilities)`` in order of
    arrival (a state reached after different numbers of cohorts appears once per number)."""
    sid = np.array([start_sid], dtype=np.int32)   # int32 ids and counts: less to hold
    pr = np.array([1.0])
    ends_sid: List[np.ndarray] = []
    ends_pr: List[np.ndarray] = []
    while sid.size:
        if g.n_states > MAX_EXACT_STATES:
            raise ExactTooLarge(f"exact enumeration stopped: the design reached more than "
                                f"{MAX_EXACT_STATES:,} distinct trial states; {_HOW}")
        d = g.dose[sid]
        stop = d < 0
        if stop.any():
            ends_sid.append(sid[stop])
            ends_pr.append(pr[stop])
            live = ~stop
            sid, pr, d = sid[live], pr[live], d[live]
            if not sid.size:
                break
        c = g.size[sid]
        children: List[np.ndarray] = []
        contribs: List[np.ndarray] = []
        for a in range(0, sid.size, _PARENTS):      # bounded temporaries, same order
            s, p_, d_, c_ = sid[a:a + _PARENTS], pr[a:a + _PARENTS], d[a:a + _PARENTS], \
                c[a:a + _PARENTS]
            if g.joint:       # every outcome code; the pmf is 0 for the impossible ones
                reps = np.full(c_.shape, g.W + 1, dtype=c_.dtype)
            else:
                reps = c_ * g.L + 1 if g.L != 1 else c_ + 1
            par = np.repeat(np.arange(s.size, dtype=np.int32), reps)     # parent of each child
            k = (np.arange(par.size, dtype=np.int32)
                 - np.repeat((np.cumsum(reps) - reps).astype(np.int32), reps))  # its DLTs
            #                                                  (score units: 0..c L)
            w = pmf[d_[par], c_[par], k]
            keep = w != 0.0
            if not keep.all():
                par, k, w = par[keep], k[keep], w[keep]
            contribs.append(p_[par] * w)
            children.append(g.step(s[par], k, distinct=True))
        child = np.concatenate(children)
        contrib = np.concatenate(contribs)
        del children, contribs
        sid, idx, _ = _first_order(child)
        sid = sid.astype(np.int32, copy=False)
        pr = np.bincount(idx, weights=contrib, minlength=sid.size)
        if sid.size:
            g.release_index(int(g.total_n[sid].min()))
    g.release_index(MAX_PATIENTS)      # the sweep is done: every level is finished
    if not ends_sid:
        return np.empty(0, dtype=np.int64), np.empty(0)
    return np.concatenate(ends_sid), np.concatenate(ends_pr)


def _key_scales(K: int, cap: int, L: int, extra: int) -> Optional[Tuple[int, int]]:
    """Radices of the integer state keys of :func:`_array_sweep`, or None when a key could
    pass 2^62: n encoded in base cap + 1 per dose, y in base n_d L + 1 per dose (the
    product of those is at most (cap L / K + 1)^K), and the design's extra key."""
    n_range = (cap + 1) ** K
    y_range = int((cap * L / K + 1) ** K) + 1
    if n_range * y_range * extra >= 1 << 62:
        return None
    return y_range, extra


_ROWS = 1 << 14   # states decided, or parents expanded, per pass of the array sweep


def _array_sweep(rules, K: int, cap: int, pmf: np.ndarray, L: int = 1):
    """The sweep of :func:`_sweep` without the state graph: the live states of one step in
    flat int16 arrays (counts, current dose, last cohort) and their probabilities, merged
    by integer keys that are equal exactly when the design's canonical keys are, and
    decided in batches by the design's ``exact_rules``; each step replaces the previous
    one.  The states come in the same order (first arrival), each cohort's outcomes in the
    same order, and the sums are made in the same order as in :func:`_sweep`, so the
    endings and their probabilities are the same to the bit.  Returns the endings as rows
    ``(mtd, stop code, n..., y...)`` (int16), their probabilities, and the number of states
    visited."""
    scales = _key_scales(K, cap, L, rules.key_range)
    assert scales is not None
    y_range, extra = scales
    i64, i16 = np.int64, np.int16
    # a step's states: columns n (K), y (K), current dose, last cohort's size and DLTs
    st = np.zeros((1, 2 * K + 3), dtype=i16)
    st[0, 2 * K] = -1
    pr = np.array([1.0])
    ends_rows: List[np.ndarray] = []
    ends_pr: List[np.ndarray] = []
    visited = 0
    n_pow = (cap + 1) ** np.arange(K, dtype=i64)
    cols = np.arange(K)
    while pr.size:
        visited += pr.size
        if visited > MAX_EXACT_STATES:
            raise ExactTooLarge(f"exact enumeration stopped: the design reached more than "
                                f"{MAX_EXACT_STATES:,} distinct trial states; {_HOW}")
        keys: List[np.ndarray] = []
        kids: List[np.ndarray] = []
        contribs: List[np.ndarray] = []
        for a in range(0, pr.size, _ROWS):
            part = st[a:a + _ROWS].astype(i64)
            p_ = pr[a:a + _ROWS]
            n, y = part[:, :K], part[:, K:2 * K]
            cur, last_n, last_y = part[:, 2 * K], part[:, 2 * K + 1], part[:, 2 * K + 2]
            dose, size, code = rules.decide(n, y, cur, last_n, last_y, n.sum(axis=1))
            stop = dose < 0
            if stop.any():
                mtd = rules.select_mtd(n[stop], y[stop], cur[stop], last_n[stop],
                                       last_y[stop])
                ends_rows.append(np.column_stack([mtd, code[stop], n[stop], y[stop]])
                                 .astype(i16))
                ends_pr.append(p_[stop])
                live = ~stop
                n, y, p_, dose, size = n[live], y[live], p_[live], dose[live], size[live]
                if not p_.size:
                    continue
            reps = size * L + 1
            par = np.repeat(np.arange(p_.size), reps)                 # parent of each child
            k = np.arange(par.size) - np.repeat(np.cumsum(reps) - reps, reps)   # its DLTs
            d, c = dose[par], size[par]
            w = pmf[d, c, k]
            keep = w != 0.0
            if not keep.all():
                par, k, w, d, c = par[keep], k[keep], w[keep], d[keep], c[keep]
            contribs.append(p_[par] * w)
            hit = cols[None, :] == d[:, None]
            cn = n[par] + hit * c[:, None]
            cy = y[par] + hit * k[:, None]
            radix = np.ones_like(cn)
            np.cumprod(cn[:, :-1] * L + 1, axis=1, out=radix[:, 1:])
            keys.append(((cn @ n_pow) * y_range + (cy * radix).sum(axis=1)) * extra
                        + rules.key(cn, cy, d, c, k))
            kids.append(np.column_stack([cn, cy, d, c, k]).astype(i16))
            del part, n, y, cn, cy, radix, hit
        if not keys:
            break
        key = np.concatenate(keys)
        contrib = np.concatenate(contribs)
        del keys, contribs
        _, idx, first = _first_order(key)
        del key
        st = np.concatenate(kids)[first] if len(kids) > 1 else kids[0][first]
        del kids
        pr = np.bincount(idx, weights=contrib, minlength=first.size)
    if not ends_rows:
        return np.empty((0, 2 + 2 * K), dtype=np.int16), np.empty(0), visited
    return np.concatenate(ends_rows), np.concatenate(ends_pr), visited


def _joint_key_scales(K: int, cap: int, counts: int, extra: int) -> Optional[int]:
    """:func:`_key_scales` for a joint state: ``counts`` per-dose count vectors besides n
    (y, e and, when the design reads it, b), each in mixed radix n_d + 1; the radix of each
    such vector, or None when a key could pass 2^62."""
    n_range = (cap + 1) ** K
    y_range = int((cap / K + 1) ** K) + 1
    if n_range * y_range ** counts * extra >= 1 << 62:
        return None
    return y_range


def _joint_array_sweep(rules, K: int, cap: int, pmf: np.ndarray, C: int):
    """:func:`_array_sweep` for a toxicity-and-efficacy design (``Outcome.JOINT``): a
    step's states are rows ``(n, y, e, b, current dose, last cohort's size and DLTs)``, every
    cohort has the C(C + 3, 3) joint outcome codes of :func:`~.graph.joint_code` (those of
    probability 0 dropped, as the graph sweep does), and states merge by integer keys of
    ``(n, y, e, current)``, with ``b`` as well when the design reads it
    (``rules.uses_both``): the design's canonical keys.  A merged state keeps the counts of
    its first arrival, as the graph does.  The states, outcomes and sums come in the graph
    sweep's order, so the endings and their probabilities are its own to the bit.  Returns
    the endings as rows ``(mtd, stop code, n..., y...)`` (int16), their probabilities and
    the number of states visited."""
    from .graph import _joint_tables
    counts = 3 if rules.uses_both else 2
    y_range = _joint_key_scales(K, cap, counts, rules.key_range)
    assert y_range is not None
    extra = rules.key_range
    i64, i16 = np.int64, np.int16
    outs = _joint_tables(C)[1]                    # (t, r, b) of each code
    W1 = outs.shape[0]
    st = np.zeros((1, 4 * K + 3), dtype=i16)
    st[0, 4 * K] = -1
    pr = np.array([1.0])
    ends_rows: List[np.ndarray] = []
    ends_pr: List[np.ndarray] = []
    visited = 0
    n_pow = (cap + 1) ** np.arange(K, dtype=i64)
    cols = np.arange(K)
    rows_per_pass = max(1, _ROWS // 4)
    # additive keys when they fit: every count in base cap + 1, so that a child's key is its
    # parent's plus a table entry per (dose, cohort size, outcome) (the joint rules' ``key``
    # reads the current dose only, batch_obd's docstring); else the mixed-radix keys below
    fields = 2 + counts
    additive = (cap + 1) ** (fields * K) * extra < 1 << 62
    if additive:
        pows = ((cap + 1) ** np.arange(fields * K, dtype=i64)).reshape(fields, K)
        delta = np.zeros((K, C + 1, W1), dtype=i64)
        for dd in range(K):
            for cc in range(1, C + 1):
                delta[dd, cc] = cc * pows[0, dd] + outs[:, 0] * pows[1, dd] \
                    + outs[:, 1] * pows[2, dd]
                if counts == 3:
                    delta[dd, cc] += outs[:, 2] * pows[3, dd]
    while pr.size:
        visited += pr.size
        if visited > MAX_JOINT_ARRAY_STATES:
            raise ExactTooLarge(f"exact enumeration stopped: the design reached more than "
                                f"{MAX_JOINT_ARRAY_STATES:,} distinct trial states; {_HOW}")
        # each child is kept as (parent row, outcome code) until the merge; only the
        # distinct children's rows are built (a step's children are 10 to 20 times its states)
        keys: List[np.ndarray] = []
        srcs: List[np.ndarray] = []
        codes: List[np.ndarray] = []
        contribs: List[np.ndarray] = []
        step_dose = np.full(pr.size, -1, dtype=i64)
        step_size = np.zeros(pr.size, dtype=i64)
        for a in range(0, pr.size, rows_per_pass):
            part = st[a:a + rows_per_pass].astype(i64)
            p_ = pr[a:a + rows_per_pass]
            n, y, e, b = (part[:, j * K:(j + 1) * K] for j in range(4))
            cur, last_n, last_y = part[:, 4 * K], part[:, 4 * K + 1], part[:, 4 * K + 2]
            dose, size, code = rules.decide(n, y, cur, last_n, last_y, n.sum(axis=1), e, b)
            step_dose[a:a + dose.size], step_size[a:a + dose.size] = dose, size
            stop = dose < 0
            src = np.arange(a, a + dose.size)
            if stop.any():
                mtd = rules.select_mtd(n[stop], y[stop], cur[stop], last_n[stop],
                                       last_y[stop], e[stop], b[stop])
                ends_rows.append(np.column_stack([mtd, code[stop], n[stop], y[stop]])
                                 .astype(i16))
                ends_pr.append(p_[stop])
                live = ~stop
                n, y, e, b = n[live], y[live], e[live], b[live]
                p_, dose, size, src = p_[live], dose[live], size[live], src[live]
                if not p_.size:
                    continue
            par = np.repeat(np.arange(p_.size), W1)              # parent of each child
            k = np.tile(np.arange(W1), p_.size)                  # its outcome code
            d, c = dose[par], size[par]
            w = pmf[d, c, k]
            keep = w != 0.0
            if not keep.all():
                par, k, w, d, c = par[keep], k[keep], w[keep], d[keep], c[keep]
            contribs.append(p_[par] * w)
            srcs.append(src[par].astype(np.int32))
            codes.append(k.astype(np.int8))
            if additive:
                base = n @ pows[0] + y @ pows[1] + e @ pows[2]
                if counts == 3:
                    base += b @ pows[3]
                zero = np.zeros_like(dose)
                kpar = rules.key(n, y, dose, size, zero, e, b)
                keys.append((base[par] + delta[d, c, k]) * extra + kpar[par])
                del part, n, y, e, b, base, kpar
                continue
            o = outs[k]
            hit = cols[None, :] == d[:, None]
            cn = n[par] + hit * c[:, None]
            radix = np.ones_like(cn)
            np.cumprod(cn[:, :-1] + 1, axis=1, out=radix[:, 1:])
            cy = y[par] + hit * o[:, 0:1]
            ce = e[par] + hit * o[:, 1:2]
            cb = b[par] + hit * o[:, 2:3]
            key = (cn @ n_pow) * y_range + (cy * radix).sum(axis=1)
            key = key * y_range + (ce * radix).sum(axis=1)
            if counts == 3:
                key = key * y_range + (cb * radix).sum(axis=1)
            keys.append(key * extra + rules.key(cn, cy, d, c, o[:, 0], ce, cb))
            del part, n, y, e, b, cn, cy, ce, cb, radix, hit, o, key
        if not keys:
            break
        key = np.concatenate(keys)
        contrib = np.concatenate(contribs)
        del keys, contribs
        _, idx, first = _first_order_quick(key)
        del key
        src = np.concatenate(srcs)[first]
        k = np.concatenate(codes)[first].astype(i64)
        del srcs, codes
        pr = np.bincount(idx, weights=contrib, minlength=first.size)
        del idx, contrib
        # the distinct children: the parent's row plus the cohort at its dose
        d, c, o = step_dose[src], step_size[src], outs[k]
        new = st[src]
        rows = np.arange(src.size)
        new[rows, d] += c.astype(i16)
        new[rows, K + d] += o[:, 0].astype(i16)
        new[rows, 2 * K + d] += o[:, 1].astype(i16)
        new[rows, 3 * K + d] += o[:, 2].astype(i16)
        new[:, 4 * K], new[:, 4 * K + 1], new[:, 4 * K + 2] = d, c, o[:, 0]
        st = new
        del src, k, d, c, o, rows
    if not ends_rows:
        return np.empty((0, 2 + 2 * K), dtype=np.int16), np.empty(0), visited
    return np.concatenate(ends_rows), np.concatenate(ends_pr), visited


def joint_array_rules(design: Design):
    """The design's ``exact_rules`` when the joint array sweep can run it (a
    toxicity-and-efficacy design with batch rules, a patient cap, keys in 63 bits), else
    None."""
    if design.outcome is not Outcome.JOINT:
        return None
    cap = patient_cap(design)
    if cap is None:
        return None
    rules = design.exact_rules(cap)
    if rules is None:
        return None
    counts = 3 if rules.uses_both else 2
    if _joint_key_scales(design.n_doses, cap, counts, rules.key_range) is None:
        return None
    return rules


def _tally_rows(K: int, rows: np.ndarray, probs: np.ndarray) -> "ExactTally":
    """Sum the probabilities by ending row ``(MTD, stop code, n..., y...)`` in order of
    arrival (as :func:`_tally` does by state)."""
    if not rows.size:
        e = np.empty(0, dtype=np.int16)
        return ExactTally(K, e, e, np.empty((0, K), np.int16), np.empty((0, K), np.int16),
                          np.empty(0))
    rows = np.ascontiguousarray(rows, dtype=np.int16)
    _, key_of_row = np.unique(rows.view(np.dtype((np.void, rows.shape[1] * 2))).ravel(),
                              return_inverse=True)
    order, rank, first = _first_order(key_of_row.ravel())
    weights = np.bincount(rank, weights=probs, minlength=order.size)
    r = rows[first]
    return ExactTally(K, r[:, 0].copy(), r[:, 1].copy(), r[:, 2:2 + K].copy(),
                      r[:, 2 + K:].copy(), weights)


def array_rules(design: Design):
    """The design's ``exact_rules`` when the array sweep can run it (binary outcome, a
    patient cap, keys that fit in 63 bits), else None."""
    if design.outcome is not Outcome.BINARY_DLT:
        return None
    cap = patient_cap(design)
    if cap is None:
        return None
    rules = design.exact_rules(cap)
    if rules is None or _key_scales(design.n_doses, cap, 1, rules.key_range) is None:
        return None
    return rules


class ExactTally(OutcomeTally):
    """An exact :class:`OutcomeTally` that keeps its endings in arrays.

    A large enumeration has hundreds of thousands of endings; as a dictionary of Python
    tuples they would take more memory than the state graph.  ``arrays()`` (all that
    :func:`~escalation_sim.results.oc.compute_oc` needs) is answered from the arrays, in the
    order and with the values the dictionary would give; ``counts`` builds the dictionary the
    first time it is asked for (in order of first arrival, as a loop over the trials would
    have filled it), and from then on the dictionary is the tally.
    """

    def __init__(self, n_doses: int, mtd: np.ndarray, stop: np.ndarray, n: np.ndarray,
                 y: np.ndarray, w: np.ndarray):
        self.n_doses = n_doses
        self.exact = True
        self._cols: Optional[tuple] = (mtd, stop, n, y, w)
        self._counts: Optional[Dict[tuple, float]] = None

    @property  # type: ignore[override]
    def counts(self) -> Dict[tuple, float]:
        if self._counts is None:
            mtd, stop, n, y, w = self._cols
            counts: Dict[tuple, float] = {}
            tuples: Dict[tuple, tuple] = {}       # one tuple object per distinct count vector
            step = 1 << 15                        # rows turned into Python objects at a time
            for a in range(0, w.size, step):
                b = a + step
                for m, sc, nr, yr, wt in zip(mtd[a:b].tolist(), stop[a:b].tolist(),
                                             n[a:b].tolist(), y[a:b].tolist(),
                                             w[a:b].tolist()):
                    nt, yt = tuple(nr), tuple(yr)
                    counts[(m, sc, tuples.setdefault(nt, nt), tuples.setdefault(yt, yt))] = wt
            self._counts = counts
            self._cols = None
        return self._counts

    @counts.setter
    def counts(self, value: Dict[tuple, float]) -> None:
        self._counts = value
        self._cols = None

    @property
    def total(self):
        if self._cols is None:
            return super().total
        return sum(self._cols[4].tolist())     # the dictionary's order and additions

    def arrays(self):
        if self._cols is None:
            return super().arrays()
        mtd, stop, n, y, w = self._cols
        # the dictionary's sorted(keys): by MTD, stop code, then n and y as tuples
        cols = [y[:, j] for j in range(self.n_doses - 1, -1, -1)]
        cols += [n[:, j] for j in range(self.n_doses - 1, -1, -1)]
        o = np.lexsort(cols + [stop, mtd])
        i64 = np.int64
        return (w[o], mtd[o].astype(i64), stop[o].astype(i64), n[o].astype(i64),
                y[o].astype(i64))

    def __reduce__(self):
        if self._cols is None:
            return (_plain_tally, (self.n_doses, self._counts))
        return (ExactTally, (self.n_doses, *self._cols))


def _plain_tally(n_doses: int, counts: Dict[tuple, float]) -> "ExactTally":
    t = ExactTally.__new__(ExactTally)
    t.n_doses, t.exact, t._cols, t._counts = n_doses, True, None, counts
    return t


def _tally(g: StateGraph, ends: np.ndarray, probs: np.ndarray) -> ExactTally:
    """Sum the probabilities by trial ending ``(MTD, stop code, n per dose, y per dose)``."""
    K = g.K
    if not ends.size:
        e = np.empty(0, dtype=np.int16)
        return ExactTally(K, e, e, np.empty((0, K), np.int16), np.empty((0, K), np.int16),
                          np.empty(0))
    sids, sid_idx, _ = _first_order(ends)
    rows = np.ascontiguousarray(np.column_stack(g.endings(sids)), dtype=np.int16)
    # group equal rows: unique over the raw bytes of each row (exact, and fast)
    _, key_of_sid = np.unique(rows.view(np.dtype((np.void, rows.shape[1] * 2))).ravel(),
                              return_inverse=True)
    key_idx = key_of_sid.ravel()[sid_idx]
    order, rank, first = _first_order(key_idx)
    # sums in order of arrival, as a dictionary filled trial ending by trial ending
    weights = np.bincount(rank, weights=probs, minlength=order.size)
    r = rows[sid_idx[first]]
    return ExactTally(K, r[:, 0].copy(), r[:, 1].copy(), r[:, 2:2 + K].copy(),
                      r[:, 2 + K:].copy(), weights)


def exact_tally(design: Design, p_true: Sequence[float], graph: StateGraph | None = None,
                start_sid: int = 0, model=None,
                efficacy: Optional[Sequence[float]] = None) -> OutcomeTally:
    """Probability of each trial ending, exactly (up to floating-point rounding).

    A binary design needs only the DLT rates ``p_true`` (patients are independent given
    their doses: binomial cohorts), whatever the truth.  A score design (``Outcome.SCORE``)
    needs the graded truth's ``model`` (an OutcomeModel): its cohorts sum score units, with
    the convolution of the per-patient unit distribution (:func:`unit_pmf`).  A joint design
    (``Outcome.JOINT``) needs the response rates ``efficacy`` (else the model's):
    :func:`joint_pmf_table`."""
    p = [float(v) for v in p_true]
    if len(p) != design.n_doses:
        raise ValueError(f"p_true has {len(p)} values for {design.n_doses} doses")
    score = design.outcome is Outcome.SCORE
    if score and model is None:
        raise ValueError(f"{design!r} scores graded toxicities: exact enumeration needs the "
                         "graded truth (an OutcomeModel)")
    joint = design.outcome is Outcome.JOINT
    if joint:
        if efficacy is None and model is not None:
            efficacy = model.response_rates()
        if efficacy is None:
            raise ValueError(f"{design!r} uses responses: exact enumeration needs the "
                             "response rate of each dose (truth.efficacy)")
        q = [float(v) for v in efficacy]
        if len(q) != design.n_doses:
            raise ValueError(f"efficacy has {len(q)} values for {design.n_doses} doses")
    problem = exact_size_problem(design)
    if problem is not None:
        raise ExactTooLarge(problem)
    jrules = joint_array_rules(design) if joint and graph is None and start_sid == 0 else None
    if jrules is not None:
        t0 = time.perf_counter()
        with gc_paused():
            rows, probs, visited = _joint_array_sweep(
                jrules, design.n_doses, patient_cap(design),
                joint_pmf_table(p, q, int(design.max_cohort_size)),
                int(design.max_cohort_size))
            tally = _tally_rows(design.n_doses, rows, probs)
        tally.n_states = visited
        log.info("exact enumeration of %r (joint array sweep): %d states, %d endings in "
                 "%.2f s", design, visited, probs.size, time.perf_counter() - t0)
        return tally
    rules = array_rules(design) if graph is None and start_sid == 0 and not score else None
    if rules is not None:
        t0 = time.perf_counter()
        with gc_paused():
            rows, probs, visited = _array_sweep(rules, design.n_doses, patient_cap(design),
                                                _pmf_table(p, int(design.max_cohort_size)))
            tally = _tally_rows(design.n_doses, rows, probs)
        tally.n_states = visited
        log.info("exact enumeration of %r (array sweep): %d states, %d endings in %.2f s",
                 design, visited, probs.size, time.perf_counter() - t0)
        return tally
    g = graph if graph is not None else graph_for(design)
    t0 = time.perf_counter()
    before = g.n_states
    with gc_paused():
        pmf = (_score_pmf_table(unit_pmf(model, design.score_units), g.C) if score
               else joint_pmf_table(p, q, g.C) if joint else _pmf_table(p, g.C))
        ends, probs = _sweep(g, pmf, start_sid)
        tally = _tally(g, ends, probs)
    log.info("exact enumeration of %r: %d states (%d new), %d endings in %.2f s",
             design, g.n_states, g.n_states - before, len(tally.counts),
             time.perf_counter() - t0)
    return tally


def exact_oc_dict(design: Design, p_true: Sequence[float], target: float, acceptable=None):
    """Exact operating characteristics (same keys as the simulation's, SEs are 0)."""
    from ..results.oc import compute_oc
    return compute_oc(exact_tally(design, p_true), p_true, target, acceptable)
