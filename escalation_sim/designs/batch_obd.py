"""The efficacy designs' decisions on arrays of joint states (BOIN12, Keyboard phase I/II).

The interface of :mod:`.batch`, with two more per-state arrays: ``e`` (responders per dose)
and ``b`` (patients with both a DLT and a response per dose), both (states, doses) int64:

* ``decide(n, y, cur, last_n, last_y, total, e, b)``: ``(dose, size, stop code)`` per state,
  as the design's ``decide`` gives them (dose -1 and the ``STOP_INDEX`` code for a stop);
* ``select_mtd(n, y, cur, last_n, last_y, e, b)``: the OBD per state (-1: none);
* ``key(n, y, cur, last_n, last_y, e, b)``: ``cur + 1`` (the designs' canonical keys are the
  counts and the current dose); joint rules' keys read the current dose only (the joint
  array sweep computes them once per parent);
* ``uses_both``: whether the design reads the "both" counts (its canonical key keeps them).

The wrappers' rules of :mod:`.batch` (``StopAtN``, ``stop_n_at_dose``, ``no_skip``) pass the
extra arrays through.  Every per-dose posterior quantity (the RDS, admissibility, the
Keyboard letter, the elimination flags, the isotonic inputs) is read from a table whose
cells are filled on first use **by the scalar code itself** (the same cached functions the
scalar ``decide`` calls), and the rest is the scalar code's arithmetic and comparisons in the
same order, so the decisions are the scalar ones to the bit; tests/test_batch_obd.py holds
them to ``decide`` / ``select_mtd`` on every state of whole enumerations.

The state graph (:mod:`escalation_sim.engines.graph`) decides each batch of new joint states
with these rules (Monte Carlo and the graph's exact sweep): the per-state Python call to
``decide``, which dominated the time of these designs, becomes a few array operations.
"""
from __future__ import annotations

import threading
from typing import Callable, Tuple

import numpy as np

from ..types import STOP_INDEX, StopReason
from .batch import _pava

Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray]

_NO_ADMISSIBLE = STOP_INDEX[StopReason.NO_ADMISSIBLE_DOSE]
_LOWEST = STOP_INDEX[StopReason.LOWEST_DOSE_TOO_TOXIC]
_N_AT_DOSE = STOP_INDEX[StopReason.N_AT_DOSE]

#: tables of more cells than this are not made (the RDS table has (N + 1)^4 cells): the
#: designs then use the scalar methods state by state
MAX_TABLE_CELLS = 1 << 23


class LazyTable:
    """An array over small integer coordinates whose cells are computed on first use by
    ``fill(*coords)`` (a scalar function of Python ints)."""

    def __init__(self, shape: Tuple[int, ...], fill: Callable, dtype=np.float64,
                 missing=np.nan):
        self.shape = shape
        self.fill = fill
        self.flat = np.full(int(np.prod(shape)), missing, dtype=dtype)
        self.missing = missing
        self.strides = np.array([int(np.prod(shape[i + 1:])) for i in range(len(shape))],
                                dtype=np.int64)

    def _unfilled(self, vals):
        if isinstance(self.missing, float) and np.isnan(self.missing):
            return np.isnan(vals)
        return vals == self.missing

    def __call__(self, *coords: np.ndarray) -> np.ndarray:
        idx = coords[0] * self.strides[0]
        for c, s in zip(coords[1:], self.strides[1:]):
            idx = idx + c * s
        vals = self.flat[idx]
        todo = self._unfilled(vals)
        if todo.any():
            for i in np.unique(idx[todo]).tolist():
                cell, rest = [], i
                for s in self.strides.tolist():
                    cell.append(rest // s)
                    rest %= s
                self.flat[i] = self.fill(*cell)
            vals = self.flat[idx]
        return vals


def _last_max(vals: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per row the highest column among ``ok`` holding the row's largest ``vals`` there."""
    K = vals.shape[1]
    v = np.where(ok, vals, -np.inf)
    best = v.max(axis=1)
    hit = ok & (v == best[:, None])
    return K - 1 - hit[:, ::-1].argmax(axis=1)


def _first_max(vals: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per row the lowest column among ``ok`` holding the row's largest ``vals`` there."""
    v = np.where(ok, vals, -np.inf)
    best = v.max(axis=1)
    return (ok & (v == best[:, None])).argmax(axis=1)


def _packed(ok: np.ndarray):
    """Columns with ``ok`` first, in order (stable), their count per row, and the mask of
    the packed positions that hold them."""
    K = ok.shape[1]
    pos = np.argsort(~ok, axis=1, kind="stable")
    m = ok.sum(axis=1)
    inside = np.arange(K)[None, :] < m[:, None]
    return pos, m, inside


_RULES: dict = {}
_RULES_LOCK = threading.Lock()
#: rules kept per process (their lazily filled tables are reused by later runs of the same
#: design, e.g. a study's truths)
_MAX_RULES = 16


def cached_rules(cls, design, max_n: int):
    """``cls(design, max_n)``, or None when ``cls.supports`` refuses, built once per
    (design, max_n) in a process (designs are hashable values)."""
    if not cls.supports(design, max_n):
        return None
    key = (cls, design, int(max_n))
    with _RULES_LOCK:
        rules = _RULES.get(key)
        if rules is None:
            if len(_RULES) >= _MAX_RULES:
                _RULES.clear()
            rules = _RULES[key] = cls(design, max_n)
        return rules


class _JointRules:
    """What both designs' rules share: the start, and ``key``."""

    key_range = None

    def __init__(self, K: int, max_n: int, start: int, cohort_size: int):
        self.K = int(K)
        self.N = int(max_n)
        self.key_range = self.K + 1
        self.start = (int(start), int(cohort_size))

    def key(self, n, y, cur, last_n, last_y, e=None, b=None):
        return cur + 1

    def _fresh(self, S: int):
        dose = np.full(S, self.start[0], dtype=np.int64)
        size = np.full(S, self.start[1], dtype=np.int64)
        code = np.zeros(S, dtype=np.int64)
        return dose, size, code


class Boin12Rules(_JointRules):
    """:class:`~escalation_sim.designs.boin12.Boin12Design` on arrays (its module docstring
    gives the rules)."""

    def __init__(self, design, max_n: int):
        from .boin12 import _cdf, _rds_cell, _sf
        r = design.rules
        super().__init__(design.n_doses, max_n, design.start_dose, design.cohort_size)
        self.cohort_size = int(design.cohort_size)
        N1 = self.N + 1
        u, ub = r.u, r.u_b
        self.rds = LazyTable((N1, N1, N1, N1), lambda n, t, e, b: _rds_cell(n, t, e, b, u, ub))
        pt, pe, ct, ce = r.target_toxicity, r.min_efficacy, r.c_t, r.c_e
        # admissible: not (Pr(p_T > phi_t) >= c_t), and Pr(p_E < phi_e) < c_e (BOIN12.admissible)
        self.tox_ok = LazyTable((N1, N1), lambda n, t: float(not _sf(pt, 1.0 + t, 1.0 + n - t)
                                                             >= ct))
        self.eff_ok = LazyTable((N1, N1), lambda n, e: float(_cdf(pe, 1.0 + e, 1.0 + n - e)
                                                             < ce))
        self.lam_e, self.lam_d = r.lambdas
        self.n_star, self.explore_n = int(r.n_star), int(r.explore_n)
        self.phi_t = r.target_toxicity
        u1, u2, u3, u4 = r.u
        #: the "both" counts enter the utility (Boin12Design.canonical keeps them)
        self.uses_both = u1 + u4 != u2 + u3

    @staticmethod
    def supports(design, max_n: int) -> bool:
        r = design.rules
        return (r.stop_n_at_dose is None and r.max_n is None
                and (int(max_n) + 1) ** 4 <= MAX_TABLE_CELLS)

    def _admissible(self, n, y, e):
        return (self.tox_ok(n, y) > 0) & (self.eff_ok(n, e) > 0)

    def decide(self, n, y, cur, last_n, last_y, total, e, b) -> Arrays:
        S, K = cur.size, self.K
        dose, size, code = self._fresh(S)
        go = np.flatnonzero(cur >= 0)
        if not go.size:
            return dose, size, code
        n, y, e, b, d = n[go], y[go], e[go], b[go], cur[go]
        rows = np.arange(go.size)
        cols = np.arange(K)[None, :]
        adm_all = self._admissible(n, y, e)
        adm = adm_all & (np.abs(cols - d[:, None]) <= 1)          # among d-1, d, d+1
        rds = self.rds(n, y, e, b)
        nd, yd = n[rows, d], y[rows, d]
        p = yd / nd
        up = np.minimum(d + 1, K - 1)
        lo = d - 1
        lo_c = np.maximum(lo, 0)
        explore = (nd >= self.explore_n) & (p < self.lam_d) & (d < K - 1) & (n[rows, up] == 0)
        deesc = ~explore & (p >= self.lam_d)
        mid = ~explore & ~deesc & (self.lam_e < p) & (p < self.lam_d) & (nd >= self.n_star)
        rest = ~(explore | deesc | mid)
        lo_ok = (lo >= 0) & adm[rows, lo_c]
        d_ok = adm[rows, d]
        pick_mid = np.where(lo_ok & d_ok, np.where(rds[rows, lo_c] >= rds[rows, d], lo, d),
                            np.where(lo_ok, lo, np.where(d_ok, d, 0)))
        none = rest & ~adm.any(axis=1)
        nxt = np.where(explore, d + 1, np.where(deesc, lo_c, np.where(mid, pick_mid,
                                                                      _last_max(rds, adm))))
        dose[go] = np.where(none, -1, nxt)
        size[go] = np.where(none, 0, self.cohort_size)
        code[go] = np.where(none, _NO_ADMISSIBLE, 0)
        return dose, size, code

    def select_mtd(self, n, y, cur, last_n, last_y, e, b):
        S, K = n.shape[0], self.K
        out = np.full(S, -1, dtype=np.int64)
        treated = n > 0
        pos, m, inside = _packed(treated)
        ok = np.flatnonzero(m > 0)
        if not ok.size:
            return out
        n, y, e, b, pos, m, inside = n[ok], y[ok], e[ok], b[ok], pos[ok], m[ok], inside[ok]
        rows = np.arange(ok.size)[:, None]
        ns, ys = n[rows, pos], y[rows, pos]
        rates = np.where(inside, ys / np.where(inside, ns, 1), np.inf)
        iso = _pava(rates, np.ones_like(rates), m)
        dist = np.where(inside, np.abs(iso - self.phi_t), np.inf)
        best_k = K - 1 - dist[:, ::-1].argmin(axis=1)       # the last of the closest (ties up)
        mtd = pos[np.arange(ok.size), best_k]
        cand = treated[ok] & (np.arange(K)[None, :] <= mtd[:, None]) & \
            self._admissible(n, y, e)
        rds = self.rds(n, y, e, b)
        out[ok] = np.where(cand.any(axis=1), _first_max(rds, cand), -1)
        return out


#: Keyboard phase I/II letters as small integers
LETTERS = ("E", "EUE", "S", "D", "DUT", "DUE")
_CODE = {x: i for i, x in enumerate(LETTERS)}


class KeyboardObdRules(_JointRules):
    """:class:`~escalation_sim.designs.keyboard_obd.KeyboardObdDesign` on arrays (its module
    docstring gives the rules)."""

    uses_both = False            # the "both" counts are never read

    def __init__(self, design, max_n: int):
        from .interval import isotonic_inputs
        from .keyboard_obd import _elim_flags
        r = design.rules
        super().__init__(design.n_doses, max_n, design.start_dose, design.cohort_size)
        self.cohort_size = int(design.cohort_size)
        self.utility = int(design.utility)
        self.r = r
        N1 = self.N + 1
        self.letter = LazyTable((N1, N1, N1), lambda n, y, e: _CODE[r.letter(n, y, e)],
                                dtype=np.int8, missing=-1)
        args = (r.target_toxicity, r.target_efficacy, r.cutoff_tox, r.cutoff_eff)
        # the elimination flags of KeyboardOBD.eliminated (n >= 3 only)
        self.unsafe = LazyTable((N1, N1), lambda n, y: int(n >= 3 and
                                                           _elim_flags(n, y, 0, *args)[0]),
                                dtype=np.int8, missing=-1)
        self.futile = LazyTable((N1, N1), lambda n, e: int(n >= 3 and
                                                           _elim_flags(n, 0, e, *args)[1]),
                                dtype=np.int8, missing=-1)
        ph = np.zeros((N1, N1))
        wt = np.ones((N1, N1))
        for nn in range(1, N1):
            p, w = isotonic_inputs([nn] * (nn + 1), list(range(nn + 1)))
            ph[nn, : nn + 1], wt[nn, : nn + 1] = p, w
        self.phat_tab, self.w_tab = ph, wt
        self.tie = np.array([1e-10 * (k + 1) for k in range(self.K)])
        self.ind = r.target_toxicity if r.indicator is None else r.indicator

    @staticmethod
    def supports(design, max_n: int) -> bool:
        return (int(max_n) + 1) ** 3 <= MAX_TABLE_CELLS

    def _flags(self, n, y, e):
        unsafe = self.unsafe(n, y) > 0
        below = np.logical_or.accumulate(unsafe, axis=1)   # a dose unsafe removes the higher
        return below, below | (self.futile(n, e) > 0)

    def decide(self, n, y, cur, last_n, last_y, total, e, b=None) -> Arrays:
        S, K = cur.size, self.K
        dose, size, code = self._fresh(S)
        go = np.flatnonzero(cur >= 0)
        if not go.size:
            return dose, size, code
        n, y, e, d = n[go], y[go], e[go], cur[go]
        rows = np.arange(go.size)
        nd, yd, rd = n[rows, d], y[rows, d], e[rows, d]
        unsafe_below, elim = self._flags(n, y, e)
        early = nd >= self.r.n_early
        first = ~early & unsafe_below[:, 0]
        every = ~early & ~first & elim.all(axis=1)
        letter = self.letter(nd, yd, rd)
        up_ok = (d + 1 < K) & ~elim[rows, np.minimum(d + 1, K - 1)]
        down_ok = (d > 0) & ~elim[rows, np.maximum(d - 1, 0)]
        move_up = letter <= _CODE["EUE"]
        move_down = letter >= _CODE["D"]
        nxt = np.where(move_up & up_ok, d + 1, np.where(move_down & down_ok, d - 1, d))
        on_elim = elim[rows, nxt]
        alt = np.where(up_ok & ~unsafe_below[rows, d], d + 1,
                       np.where(down_ok, d - 1, np.where(up_ok, d + 1, -1)))
        nxt = np.where(on_elim, alt, nxt)
        stop_code = np.where(early, _N_AT_DOSE, np.where(first, _LOWEST, _NO_ADMISSIBLE))
        stop = early | first | every | (nxt < 0)
        dose[go] = np.where(stop, -1, nxt)
        size[go] = np.where(stop, 0, self.cohort_size)
        code[go] = np.where(stop, stop_code, 0)
        return dose, size, code

    def utilities(self, n, y, e):
        """``(adm, pos, m, inside, U)``: the admissible doses packed first (``pos``, ``m``
        of them per row) and the chosen utility of each packed position."""
        r = self.r
        _, elim = self._flags(n, y, e)
        adm = (n > 0) & ~elim
        pos, m, inside = _packed(adm)
        rows = np.arange(n.shape[0])[:, None]
        ns, ys, es = n[rows, pos], y[rows, pos], e[rows, pos]
        vals = np.where(inside, self.phat_tab[ns, ys], np.inf)
        w = np.where(inside, self.w_tab[ns, ys], 1.0)
        p = _pava(vals, w, m) + self.tie[None, :]
        q = (es + 0.05) / (ns + 0.1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.utility == 1:
                f1 = np.where(p <= r.p1, 1.0, np.where(p >= r.p2, 0.0,
                                                       1.0 - (p - r.p1) / (r.p2 - r.p1)))
                f2 = np.where(q < r.q1, 0.0, np.where(q >= r.q2, 1.0,
                                                      (q - r.q1) / (r.q2 - r.q1)))
                u = f1 * f2
            else:
                u = q - r.w1 * p
                if self.utility == 3:
                    u = u - r.w2 * p * np.where(p > self.ind, 1.0, 0.0)
        return adm, pos, m, inside, u

    def select_mtd(self, n, y, cur, last_n, last_y, e, b=None):
        S, K = n.shape[0], self.K
        _, pos, m, inside, u = self.utilities(n, y, e)
        total = np.zeros(S)
        for k in range(K):          # the scalar sum, left to right
            total = np.where(k < m, total + u[:, k], total)
        best = _first_max(u, inside)
        ok = (m > 0) & (total != 0)
        return np.where(ok, pos[np.arange(S), best], -1)


__all__ = ["Boin12Rules", "KeyboardObdRules", "LazyTable", "LETTERS", "cached_rules"]
