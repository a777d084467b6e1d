"""Designs' decisions for many trial states at once (exact enumeration's fast path).

Exact enumeration (:mod:`escalation_sim.engines.exact`) visits about a million distinct
states for BOIN or CRM at N = 48 on 6 doses; calling ``decide`` and ``select_mtd`` once per
state costs most of its time.  A design may therefore offer, through
``Design.exact_rules(max_n)``, an object with the same decisions computed on arrays:

* ``key(n, y, cur, last_n, last_y)``: a small non-negative integer per state, in
  ``0 .. key_range - 1``, such that two states with equal counts ``(n, y)`` and equal keys
  have equal ``canonical`` keys (the design's merging of states, unchanged);
* ``decide(n, y, cur, last_n, last_y, total)``: ``(dose, size, stop code)`` per state as
  ``decide`` gives them (dose -1 and the ``STOP_INDEX`` code for a stop; code 0 otherwise);
* ``select_mtd(n, y, cur, last_n, last_y)``: the MTD per state (-1: none).

``n`` and ``y`` are (states, doses) int64 arrays, the others int64 vectors, ``cur`` -1 for
"no cohort yet".  Every rule here either repeats the scalar code's floating-point operations
in the same order (so its results are those of ``decide`` / ``select_mtd`` to the bit), takes
them from tables filled by the scalar code itself, or, for CRM's posterior, decides from a
batched computation only where it is far from any tie and asks the scalar code otherwise.
``exact_rules`` returns None for a design (or an option) not covered here; exact enumeration
then calls the scalar methods state by state, as before.  The toxicity-and-efficacy designs'
rules (:mod:`.batch_obd`) take two more per-state arrays after these arguments, the
responders ``e`` and the "both" counts ``b``; the wrappers' rules here pass them through.  tests/test_exact_batch.py holds
every rule to the scalar methods on every state of whole enumerations.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..types import STOP_INDEX, StopReason, TrialState

_LOWEST = STOP_INDEX[StopReason.LOWEST_DOSE_TOO_TOXIC]
_N_AT_DOSE = STOP_INDEX[StopReason.N_AT_DOSE]
_MAX_N = STOP_INDEX[StopReason.MAX_N]

Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray]


class _Forward:
    """A wrapper's rules: key and ``select_mtd`` are the wrapped design's."""

    def __init__(self, base, n: int = 0):
        self.base = base
        self.n = int(n)
        self.key_range = base.key_range
        self.uses_both = getattr(base, "uses_both", False)   # joint rules (batch_obd)

    def key(self, n, y, cur, last_n, last_y, *more):
        return self.base.key(n, y, cur, last_n, last_y, *more)

    def select_mtd(self, n, y, cur, last_n, last_y, *more):
        return self.base.select_mtd(n, y, cur, last_n, last_y, *more)


class StopAtNRules(_Forward):
    """:class:`~escalation_sim.designs.rules.StopAtN` around the wrapped design's rules."""

    def __init__(self, base, n: int):
        super().__init__(base, n)

    def decide(self, n, y, cur, last_n, last_y, total, *more) -> Arrays:
        S = total.size
        dose = np.full(S, -1, dtype=np.int64)
        size = np.zeros(S, dtype=np.int64)
        code = np.full(S, _MAX_N, dtype=np.int64)
        go = total < self.n
        if go.any():
            idx = np.flatnonzero(go)
            d, c, k = self.base.decide(n[idx], y[idx], cur[idx], last_n[idx], last_y[idx],
                                       total[idx], *(m[idx] for m in more))
            room = self.n - total[idx]
            c = np.where((d >= 0) & (c > room), room, c)
            dose[idx], size[idx], code[idx] = d, c, k
        return dose, size, code


class StopWhenNAtDoseRules(_Forward):
    """:class:`~escalation_sim.designs.rules.StopWhenNAtDose`: stop when the next dose
    already has ``n`` patients."""

    def decide(self, n, y, cur, last_n, last_y, total, *more) -> Arrays:
        dose, size, code = self.base.decide(n, y, cur, last_n, last_y, total, *more)
        go = dose >= 0
        hit = go & (n[np.arange(dose.size), np.where(go, dose, 0)] >= self.n)
        return (np.where(hit, -1, dose), np.where(hit, 0, size),
                np.where(hit, _N_AT_DOSE, code))


class NoSkippingRules(_Forward):
    """:class:`~escalation_sim.designs.rules.NoSkipping`: never above the highest dose
    tried + 1."""

    def decide(self, n, y, cur, last_n, last_y, total, *more) -> Arrays:
        dose, size, code = self.base.decide(n, y, cur, last_n, last_y, total, *more)
        K = n.shape[1]
        tried = n > 0
        highest = np.where(tried.any(axis=1), K - 1 - tried[:, ::-1].argmax(axis=1), -1)
        cap = highest + 1
        return np.where((dose >= 0) & (dose > cap), cap, dose), size, code


def _lowest_eliminated(n, y, elim_at):
    """Lowest dose meeting the elimination rule per state, K when none."""
    meets = y >= elim_at[n]
    K = n.shape[1]
    return np.where(meets.any(axis=1), meets.argmax(axis=1), K)


class IntervalRules:
    """BOIN, mTPI-2, Keyboard, i3+3 (the :class:`IntervalDesign` kernel): the rule and the
    elimination boundary as tables over (n, y) filled by the design's own methods, the
    guards as array operations, and ``select_mtd``'s pool-adjacent-violators merge by merge
    with the scalar code's sums in its order."""

    key_range = None   # set in __init__

    def __init__(self, design, max_n: int):
        from .interval import TIE_OFFSET, isotonic_inputs
        self.design = design
        K = self.K = int(design.n_doses)
        N = int(max_n)
        self.key_range = K + 1
        move = np.zeros((N + 1, N + 1), dtype=np.int64)
        for n in range(1, N + 1):
            for y in range(n + 1):
                move[n, y] = design.rule(n, y).move
        self.move_tab = move
        elim = np.full(N + 1, N + 1, dtype=np.int64)     # y >= elim[n]: dose eliminated
        for n in range(N + 1):
            b = design.elimination_bound(n)
            if b is not None:
                elim[n] = b
        self.elim_at = elim
        # select.mtd's inputs per (n, y), from the scalar function (the same doubles)
        ph = np.zeros((N + 1, N + 1))
        wt = np.ones((N + 1, N + 1))
        for n in range(1, N + 1):
            p, w = isotonic_inputs([n] * (n + 1), list(range(n + 1)), design.mtd_prior)
            ph[n, : n + 1], wt[n, : n + 1] = p, w
        self.phat_tab, self.w_tab = ph, wt
        self.tie = np.array([(k + 1) * TIE_OFFSET for k in range(K)])
        cap = design.mtd_cap()
        self.cap = None if cap is None else float(cap)
        start = design.start()
        self.start = (int(start.dose), int(start.cohort_size))

    def key(self, n, y, cur, last_n, last_y):
        return cur + 1                      # canonical: (n, y, current)

    def decide(self, n, y, cur, last_n, last_y, total) -> Arrays:
        des = self.design
        K, S = self.K, cur.size
        rows = np.arange(S)
        low = _lowest_eliminated(n, y, self.elim_at)
        started = cur >= 0
        d = np.where(started, cur, 0)
        nc, yc = n[rows, d], y[rows, d]
        mv = self.move_tab[nc, yc]
        nxt = d.copy()
        up = (mv > 0) & (d < K - 1) & (d + 1 < low)
        nxt[up] += 1
        down = (mv < 0) & (d > 0)
        nxt[down] -= 1
        nxt = np.where(nxt >= low, low - 1, nxt)
        stop = np.zeros(S, dtype=bool)
        code = np.zeros(S, dtype=np.int64)
        if des.n_earlystop is not None:
            if des.n_earlystop_at == "stay":
                hit = (nxt == d) & (nc >= des.n_earlystop)
            else:
                at = d if des.n_earlystop_at == "current" else np.maximum(nxt, 0)
                hit = n[rows, at] >= des.n_earlystop
            stop |= hit
            code[hit] = _N_AT_DOSE
        safety = low == 0
        stop |= safety
        code[safety] = _LOWEST
        dose = np.where(stop, -1, nxt)
        size = np.where(stop, 0, des.cohort_size)
        code = np.where(stop, code, 0)
        fresh = ~started
        dose[fresh], size[fresh], code[fresh] = self.start[0], self.start[1], 0
        return dose, size, code

    def select_mtd(self, n, y, cur, last_n, last_y):
        K, S = self.K, n.shape[0]
        low = _lowest_eliminated(n, y, self.elim_at)
        adm = (n > 0) & (np.arange(K)[None, :] < low[:, None])
        m = adm.sum(axis=1)
        out = np.full(S, -1, dtype=np.int64)
        ok = (low > 0) & (m > 0)
        if not ok.any():
            return out
        idx = np.flatnonzero(ok)
        adm, m, nn, yy = adm[idx], m[idx], n[idx], y[idx]
        pos = np.argsort(~adm, axis=1, kind="stable")      # admissible doses first, in order
        rows = np.arange(idx.size)[:, None]
        inside = np.arange(K)[None, :] < m[:, None]
        ns, ys = nn[rows, pos], yy[rows, pos]
        vals = np.where(inside, self.phat_tab[ns, ys], np.inf)
        w = np.where(inside, self.w_tab[ns, ys], 1.0)
        vals = _pava(vals, w, m)
        est = vals + self.tie[None, :]
        cand = inside
        if self.cap is not None:
            cand = cand & (est < self.cap)
        dist = np.where(cand, np.abs(est - self.design.target), np.inf)
        best = dist.argmin(axis=1)
        has = cand.any(axis=1)
        out[idx] = np.where(has, pos[np.arange(idx.size), best], -1)
        return out


def _pava(vals: np.ndarray, w: np.ndarray, m: np.ndarray) -> np.ndarray:
    """:func:`~escalation_sim.designs.interval.isotonic_regression` row by row (the first
    ``m`` entries of each row; the rest are +inf and never merge): the first decreasing pair
    of adjacent blocks is merged, with the scalar code's sums (member by member, left to
    right) and division, until no pair decreases."""
    S, K = vals.shape
    vals = vals.copy()
    start = np.tile(np.arange(K), (S, 1))         # first member of each position's block
    cols = np.arange(K)[None, :]
    for _ in range(K - 1):
        # position j (1 <= j < m) starts a block whose value is below the previous block's
        is_start = start == cols
        viol = np.zeros((S, K), dtype=bool)
        viol[:, 1:] = is_start[:, 1:] & (vals[:, 1:] < vals[:, :-1]) & (cols[:, 1:] < m[:, None])
        has = viol.any(axis=1)
        if not has.any():
            break
        r = np.flatnonzero(has)
        j = viol[r].argmax(axis=1)                 # the first such block start
        v, ww, st = vals[r], w[r], start[r]
        lo = st[np.arange(r.size), j - 1]          # the merged block: lo .. hi
        nxt_start = np.where((st > j[:, None]) & (st == cols), cols, K)
        hi = nxt_start.min(axis=1) - 1
        member = (cols >= lo[:, None]) & (cols <= hi[:, None])
        num = np.zeros(r.size)
        den = np.zeros(r.size)
        for k in range(K):
            mk = member[:, k]
            num = np.where(mk, num + v[:, k] * ww[:, k], num)
            den = np.where(mk, den + ww[:, k], den)
        pooled = num / den
        v = np.where(member, pooled[:, None], v)
        st = np.where(member, lo[:, None], st)
        vals[r], start[r] = v, st
    return vals


class TitrationRules(_Forward):
    """BOIN with titration (``get.oc(titration=TRUE)``): the interval kernel's rules, except
    on the states that can be titration states (every tried dose holds exactly one patient,
    the tried doses run from the first dose up to the current one, at most one DLT in all),
    which are few (at most doses x 2 per level) and are decided by the design's own scalar
    ``decide``: so every decision is the scalar one (a titration state's decision by
    construction, any other state's by :class:`IntervalRules`)."""

    def __init__(self, design, max_n: int):
        super().__init__(IntervalRules(design, max_n))
        self.design = design
        self.first = int(design.first_dose)

    def decide(self, n, y, cur, last_n, last_y, total) -> Arrays:
        dose, size, code = self.base.decide(n, y, cur, last_n, last_y, total)
        doses = np.arange(n.shape[1])
        tried = (doses[None, :] >= self.first) & (doses[None, :] <= cur[:, None])
        maybe = (cur >= 0) & (y.sum(axis=1) <= 1) & (n == tried).all(axis=1)
        for i in np.flatnonzero(maybe):
            dec = self.design.decide(TrialState(tuple(int(v) for v in n[i]),
                                                tuple(int(v) for v in y[i]), int(cur[i]),
                                                int(last_n[i]), int(last_y[i])))
            if dec.stop:
                dose[i], size[i], code[i] = -1, 0, STOP_INDEX[dec.stop_reason]
            else:
                dose[i], size[i], code[i] = dec.dose, dec.cohort_size, 0
        return dose, size, code


class CRMRules:
    """The one-parameter empiric CRM (dfcrm's model; plug-in or posterior-mean estimates):
    the posterior of every distinct count vector computed in one batch on the design's own
    quadrature grid, and the dose decided from it where the closest-to-target choice (and
    the safety threshold) is clear by more than :attr:`MARGIN`; the few states nearer a tie
    are decided by the scalar posterior (``crm._fit``), so decisions are the scalar ones."""

    #: a choice is taken from the batch only when it wins by more than this (the batch
    #: posterior differs from the scalar one by rounding, about 1e-15)
    MARGIN = 1e-9
    #: count vectors per batch (bounds the (vectors x nodes) temporaries)
    BLOCK = 64
    CHUNK = 4096
    _GEMM_MNK = 262_144
    _GEMM_ROWS = 128
    #: the posterior's search: every _STRIDE-th node, and the nodes within _CUT of the top
    _STRIDE = 8
    _CUT = 45.0

    def __init__(self, design):
        from .crm import _grid
        self.design = design
        self.K = int(design.n_doses)
        self.key_range = 2 * (self.K + 1)
        self.grid = _grid(design.skeleton, design.model, float(design.intcpt),
                          float(design.prior_var), float(design.target))
        self.skel = np.asarray(design.skeleton, dtype=float)
        g = self.grid
        self._coarse = np.arange(0, g.nodes.size, self._STRIDE)
        self._logp_c = np.ascontiguousarray(g.logp[:, self._coarse])
        self._log1mp_c = np.ascontiguousarray(g.log1mp[:, self._coarse])
        self._prior_c = -0.5 * g.nodes[self._coarse] ** 2 / float(design.prior_var)
        self._GEMM_ROWS = max(1, self._GEMM_MNK // (self.K * self._coarse.size))
        self.fallbacks = 0

    def key(self, n, y, cur, last_n, last_y):
        des = self.design
        if des.restrict is True:
            safe_n = np.maximum(last_n, 1)
            toxic = (last_n > 0) & (last_y / safe_n >= des.target)
        else:
            toxic = np.zeros(cur.size, dtype=bool)
        return (cur + 1) * 2 + toxic

    # -- the posterior in batches ---------------------------------------------------------
    def _windows(self, n, y):
        """Per row, the range [a, b) of grid nodes outside which every node's posterior
        weight is below e^-45 times the largest (relative to the posterior's mass, under
        1e-15): the log posterior is concave in beta for the empiric model (each patient's
        log likelihood is, and so is the normal prior), so the nodes within ``_CUT`` of the
        maximum form one interval, located from every ``_STRIDE``-th node and widened by one
        coarse step on each side (the quadrature weights, which are not smooth in beta, are
        left out of this search; they only scale the error bound)."""
        g = self.grid
        c = self._coarse
        yy = y.astype(float)
        mm = n.astype(float) - yy
        h = np.empty((n.shape[0], c.size))
        for i in range(0, n.shape[0], self._GEMM_ROWS):
            sl = slice(i, i + self._GEMM_ROWS)
            np.matmul(yy[sl], self._logp_c, out=h[sl])
            h[sl] += mm[sl] @ self._log1mp_c
        h += self._prior_c
        inside = h >= h.max(axis=1, keepdims=True) - self._CUT
        first = inside.argmax(axis=1)
        last = c.size - 1 - inside[:, ::-1].argmax(axis=1)
        a = c[np.maximum(first - 1, 0)]
        b = np.where(last + 1 < c.size, c[np.minimum(last + 1, c.size - 1)] + 1, g.nodes.size)
        return a, b

    def _batch_fit(self, n, y):
        """(p_hat per dose, Pr(p_1 > target)) per row by the scalar code's formulas, on the
        nodes of each row's window (:meth:`_windows`).  Matrix products are kept under
        OpenBLAS's threading threshold (m n k <= 262,144): threads would only contend for
        the cores on so small products."""
        S = n.shape[0]
        out_p = np.empty((S, self.K))
        out_pr = np.empty(S)
        for j in range(0, S, self.CHUNK):   # bounded temporaries
            self._fit_chunk(n[j:j + self.CHUNK], y[j:j + self.CHUNK],
                            out_p[j:j + self.CHUNK], out_pr[j:j + self.CHUNK])
        return out_p, out_pr

    def _fit_chunk(self, n, y, out_p, out_pr):
        g = self.grid
        a, b = self._windows(n, y)
        order = np.argsort(a, kind="stable")   # rows with nearby windows together
        K, S = self.K, n.shape[0]
        i = 0
        while i < S:
            rows = order[i:i + self.BLOCK]
            lo, hi = int(a[rows].min()), int(b[rows].max())
            fit = max(1, self._GEMM_MNK // (K * (hi - lo)))
            if fit < rows.size:
                rows = rows[:fit]
                lo, hi = int(a[rows].min()), int(b[rows].max())
            i += rows.size
            yy = y[rows].astype(float)
            mm = n[rows].astype(float) - yy
            lw = g.log_w[None, lo:hi] + yy @ g.logp[:, lo:hi] + mm @ g.log1mp[:, lo:hi]
            lw -= lw.max(axis=1, keepdims=True)
            np.exp(lw, out=lw)
            z = lw.sum(axis=1)
            if self.design.estimate == "plugin":
                beta = (lw @ g.nodes[lo:hi, None])[:, 0] / z
                p = self.skel[None, :] ** np.exp(beta)[:, None]
            else:
                p = (lw @ g.p[:, lo:hi].T) / z[:, None]
            out_p[rows] = p
            cut = min(max(g.split - lo, 0), hi - lo)
            out_pr[rows] = lw[:, :cut].sum(axis=1) / z

    def _choices(self, n, y):
        """Per distinct row of (n, y): (closest dose, too toxic) as the scalar fit gives."""
        from .base import closest_to_target
        from .crm import _fit
        des = self.design
        p, pr = self._batch_fit(n, y)
        dist = np.abs(p - des.target)
        rec = dist.argmin(axis=1)
        srt = np.sort(dist, axis=1)
        unsure = (srt[:, 1] - srt[:, 0]) <= self.MARGIN if self.K > 1 else \
            np.zeros(n.shape[0], dtype=bool)
        thr = des.safety_threshold
        toxic = np.zeros(n.shape[0], dtype=bool)
        if thr is not None:
            toxic = np.minimum(np.maximum(pr, 0.0), 1.0) > thr
            unsure |= np.abs(pr - thr) <= self.MARGIN
        for i in np.flatnonzero(unsure).tolist():
            fit = _fit(self.grid, tuple(n[i].tolist()), tuple(y[i].tolist()))
            rec[i] = closest_to_target(des.p_hat(fit), des.target)
            toxic[i] = des._too_toxic(fit)
            self.fallbacks += 1
        return rec, toxic

    def _per_state(self, n, y, rows):
        """The choices of ``rows`` of (n, y), each distinct count vector fitted once."""
        nn, yy = n[rows], y[rows]
        both = np.ascontiguousarray(np.concatenate([nn, yy], axis=1).astype(np.int16))
        _, first, inv = np.unique(both.view(np.dtype((np.void, both.shape[1] * 2))).ravel(),
                                  return_index=True, return_inverse=True)
        rec, toxic = self._choices(nn[first], yy[first])
        inv = inv.ravel()
        return rec[inv], toxic[inv]

    def decide(self, n, y, cur, last_n, last_y, total) -> Arrays:
        des = self.design
        S = cur.size
        dose = np.full(S, des.start_dose, dtype=np.int64)
        size = np.full(S, des.cohort_size, dtype=np.int64)
        code = np.zeros(S, dtype=np.int64)
        go = np.flatnonzero((cur >= 0) & (total > 0))
        if go.size:
            rec, toxic = self._per_state(n, y, go)
            c = cur[go]
            if des.restrict is True:
                coh = (last_n[go] > 0) & (last_y[go] / np.maximum(last_n[go], 1) >= des.target)
                rec = np.where(coh & (rec > c), c, rec)
                rec = np.where(~coh & (rec > c + 1), c + 1, rec)
            elif des.restrict == "no_skip_only":
                rec = np.where(rec > c + 1, c + 1, rec)
            dose[go] = np.where(toxic, -1, rec)
            size[go] = np.where(toxic, 0, des.cohort_size)
            code[go] = np.where(toxic, _LOWEST, 0)
        return dose, size, code

    def select_mtd(self, n, y, cur, last_n, last_y):
        S = n.shape[0]
        out = np.full(S, -1, dtype=np.int64)
        go = np.flatnonzero(n.sum(axis=1) > 0)
        if go.size:
            rec, toxic = self._per_state(n, y, go)
            out[go] = np.where(toxic, -1, rec)
        return out


def check_against_scalar(design, rules, states) -> Optional[str]:
    """First disagreement between ``rules`` and the design's scalar methods on ``states``
    (TrialStates), or None (for tests and debugging)."""
    codes = STOP_INDEX
    n = np.array([s.n for s in states], dtype=np.int64)
    y = np.array([s.y for s in states], dtype=np.int64)
    cur = np.array([-1 if s.current is None else s.current for s in states], dtype=np.int64)
    ln = np.array([s.last_n for s in states], dtype=np.int64)
    ly = np.array([s.last_y for s in states], dtype=np.int64)
    more = ()
    if states and getattr(states[0], "e", ()):      # joint states: responders, both
        more = (np.array([s.e for s in states], dtype=np.int64),
                np.array([s.b for s in states], dtype=np.int64))
    d, c, k = rules.decide(n, y, cur, ln, ly, n.sum(axis=1), *more)
    m = rules.select_mtd(n, y, cur, ln, ly, *more)
    for i, s in enumerate(states):
        dec = design.decide(s)
        want = (-1, 0, codes[dec.stop_reason]) if dec.stop else (dec.dose, dec.cohort_size, 0)
        if (int(d[i]), int(c[i]), int(k[i])) != want:
            return f"decide{s}: batch {(int(d[i]), int(c[i]), int(k[i]))}, scalar {want}"
        mt = design.select_mtd(s)
        if int(m[i]) != (-1 if mt is None else mt):
            return f"select_mtd{s}: batch {int(m[i])}, scalar {mt}"
    return None


__all__ = ["StopAtNRules", "StopWhenNAtDoseRules", "NoSkippingRules", "IntervalRules", "TitrationRules", "CRMRules", "check_against_scalar"]
