"""The calendar engine's compiled path for TITE-BOIN: its lean trials as a numba kernel.

:class:`~escalation_sim.engines.calendar.fast.TiteTrial` (the fast path's time-to-event
trial, itself held to the simpy reference trial by trial) restated over flat arrays and
compiled with numba, on the helpers and array layout of :mod:`.kernel` (the heap, the
accrual queue, the waiting list and the arrival count are :mod:`.kernel`'s functions; the
trial's own steps -- decide at an arrival finding no free slot and when the last patient in
flight finishes, infusion and DLT onset as events -- are restated here).  Same calls, same
order, same day arithmetic, so the same trials bit for bit.

Decisions.  TITE-BOIN's decision with pending patients depends on the pending patients only
through the verdict of its step at the current dose (:meth:`~.tite.TITEBOIN.step`): no
pending patient at the current dose (BOIN on complete data), escalate, stay, de-escalate or
suspend accrual.  Everything else (start, elimination, safety stop, the movement guards,
the wrappers of ``rules:`` and ``max_n``) reads only the complete-data state (per-dose
counts, current dose, size and DLTs of the latest cohort).  So:

* the kernel computes the verdict itself, the scalar arithmetic of ``TITEBOIN.step`` in the
  same IEEE operations and order (the standardized total follow-up time is a left-to-right
  sum over the pending patients in enrollment order, as Python's ``sum``; numba neither
  reassociates nor contracts to FMA without ``fastmath``), for both estimators
  (``imputation``, ``quasi``);
* a table keeps, per complete-data state, the design's decision for each of the five
  verdicts, computed in Python by the design itself (``design.decide`` without pending
  patients; with a pending patient at the current dose, ``design.decide`` on a copy of the
  design whose inner step returns the verdict: every wrapper and guard is the design's own
  code).  A state is n and y per dose and the current dose, plus the latest cohort's size
  and DLTs unless the design's canonical key leaves them out (interval designs do); it is
  found through an open-addressing hash over these integers.  A state not in the table yet,
  or a verdict whose decision is not computed yet, stops the trial; Python adds it and the
  trial runs again from its start (all such trials of a block together, as :mod:`.kernel`
  does).  Unlike the classic designs' tables the states are not enumerated ahead (pending
  patients make far more of them): on the seed scenario a table meets about 5,000 states
  in its first 2,000 trials and then 0.5-1.4 new ones per trial of a new seed, so repeated
  trials run about 4x faster than new ones.

Anything rare (more pre-drawn numbers than the block holds, a table beyond
:data:`MAX_ROWS`) runs on the Python :class:`~.fast.TiteTrial` from the trial's start, as
in :mod:`.kernel`; a design for which that is frequent is given up for the process.

Used by :func:`~escalation_sim.engines.calendar.simulate_des_trials` for TITE-BOIN under
the conditions of :mod:`.kernel` (binary truth, limited accrual, no patient log, numba
installed, ``ESCALATION_SIM_CALENDAR_KERNEL`` not 0, none of the conduct options the
kernel lacks).  TITE-CRM is not compiled (its posterior uses BLAS and numpy's
transcendental functions): it runs on the Python fast path.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import threading
from typing import Any, Dict, List, Optional

import numpy as np

from ...types import STOP_INDEX, StopReason
from . import kernel as _k
from .kernel import (A_AT, A_DROPDAY, A_FAILDAYS, A_POST, A_PRE, A_READY, A_U, B_DROP,
                     B_FAILAT, B_FAILED, F_ATLAST, F_FIRST, F_NOW, F_TEND, N_A, N_B, N_PI,
                     N_Q, N_S, N_X, P_CAP, P_DCAP, P_GATE, P_GATED, P_HCAP, P_K,
                     P_KNOWN, P_NA, P_NC, P_NE, P_NP, P_SEQ, PF_STAGGER, PF_WINDOW, Q_CACT,
                     Q_CDOSE, Q_CFREE, Q_CSIZE, Q_GQ, Q_MANUF, Q_PCO, Q_PDOSE, Q_PI,
                     Q_PST, Q_S, Q_SEENH, S_ARMED, S_CUR, S_DROP, S_FIN, S_HASFIRST, S_HN,
                     S_INFL, S_INFU, S_LOST, S_MANUF, S_NDT, S_NELIG, S_NPAT, S_NSCR,
                     S_NSF, S_NTOX, S_PHASE, S_QH, S_QT, S_RQPOS, S_STATUS, S_TREAT,
                     S_WCLOSE, S_WH, S_WMAX, S_WT, ST_MORE, ST_NODE, ST_OK, X_DTS, X_F,
                     X_P, X_PF, X_PINF, X_PREL, X_SEENV, _ARRIVE, _COMPLETE, _DROPPED, _END,
                     _FAILED, _PIPELINE, _READY, _RELEASE, _STOPM, _catch_up, _close,
                     _group, _jit, _jit_entry, _peek, _pmax, _pop, _purge, _push,
                     _wait_or_leave)

_log = logging.getLogger("escalation_sim.engines.calendar")

#: rows (complete-data states) of one design's table at most (beyond: Python); about 1.5 kB
#: each (the seed scenario meets about 0.5-1.4 new states per trial of a new seed)
MAX_ROWS = 100_000

# event kinds beyond kernel.py's
_INFUSED, _DLT = 6, 7
# extra A rows (floats per evaluable patient): the DLT onset day
A_ONSET = N_A
N_AT = N_A + 1
# extra X row: the TITE-BOIN parameters
X_TF = N_X
N_XT = N_X + 1
TF_LAME, TF_LAMD, TF_TARGET, TF_FRAC = range(4)
# extra Q rows
# (Q_BD: BOIN's de-escalation boundary b_d(n) by n)
Q_CY, Q_PPEND, Q_NACT, Q_YOBS, Q_KEY, Q_T2, Q_BD = range(N_Q, N_Q + 7)
N_QT = N_Q + 7
# row Q_T2: the trial's TITE integers
(T2_LO, T2_ROW, T2_CLS, T2_STOP, T2_DOSE, T2_SIZE, T2_CODE, T2_FROW, T2_FCODE, T2_QUASI,
 T2_KLEN, T2_FLN, T2_FLY) = range(13)
# verdict classes (the table's decision per class)
C_NONE, C_ESC, C_STAY, C_DE, C_SUSP = range(5)
N_CLS = 5
# table columns: the state's current dose (-1: none), n and y there, b_d(n); then per
# class: stop (-1: unreachable), dose, cohort size, stop code
R_CUR, R_ND, R_YD, R_BD = range(4)
R_DEC = 4
R_W = R_DEC + 4 * N_CLS
#: a class's decision not computed yet (the trial stops; Python computes it)
_TODO = -2
_HMASK = 0xFFFFFFF


def kernel_unsupported(setup) -> Optional[str]:
    """Why this kernel cannot run ``setup`` (already on the fast path's lean TITE trial)."""
    from ...designs.tite import TITEBOIN
    from .policies import TimeToEventPolicy
    c = setup.conduct
    why = []
    if setup.policy is not TimeToEventPolicy:
        why.append("not a binary time-to-event design")
    elif type(setup.design.inner) is not TITEBOIN:
        why.append(f"design {type(setup.design.inner).__name__} (only TITE-BOIN is compiled)")
    if setup.graded is not None or setup.model is not None:
        why.append("a graded truth")
    if setup.unlimited:
        why.append("unlimited accrual")
    if setup.record:
        why.append("the patient log")
    for name in ("backfill", "shortfall", "min_followup_days", "manufacturing_capacity",
                 "costs"):
        if getattr(c, name, None) is not None:
            why.append(f"conduct.{name}")
    if not getattr(c, "screen_while_paused", True):
        why.append("conduct.screen_while_paused")
    if not why:
        from .fast import design_memo
        table = design_memo(setup).get("kernel_tite_table")
        if table is not None and table.declined:
            why.append("a design the kernel gave up (long trials or a growing table)")
    return ", ".join(why) or None


def _hash(key) -> int:
    h = 0
    for v in key:
        h = (h * 31 + int(v) + 1) & _HMASK
    return h


def _forced(design, verdict):
    """A copy of ``design`` (wrappers rebuilt around it) whose inner ``step`` returns
    ``verdict`` whatever the state."""
    if design.inner is design:
        c = copy.copy(design)
        object.__setattr__(c, "step", lambda state, dose: verdict)
        return c
    return dataclasses.replace(design, base=_forced(design.base, verdict))


class TiteTable:
    """Complete-data states of a TITE-BOIN design with their decisions per verdict (module
    docstring), as arrays for the kernel: ``T`` (rows) and ``H`` (the hash: the state's
    integers, then its row; -1: empty slot)."""

    def __init__(self, setup):
        from ...designs.interval import DE_ESCALATE, ESCALATE, STAY, Step
        from ...types import Decision
        self._setup = setup
        self._lock = threading.Lock()
        K = setup.K
        from ...designs.tite import TiteState
        probe = TiteState(tuple(range(1, K + 1)), (0,) * K, 0, 2, 1, ())
        #: the design declares the latest cohort's size and DLTs irrelevant to its decisions
        #: (its canonical key is (n, y, current)): the table's states leave them out
        self.reduced = setup.design.canonical(probe) == (probe.n, probe.y, probe.current)
        self.klen = 2 * K + (1 if self.reduced else 3)
        self.states: List[Any] = []
        self.decs: List[Any] = []
        self.declined = False
        self.full = False
        self.T = np.full((64, R_W), -1, dtype=np.int64)
        self.H = np.full((1024, self.klen + 1), -1, dtype=np.int64)
        self._n = np.zeros((64, K), dtype=np.int64)
        self._y = np.zeros((64, K), dtype=np.int64)
        inner = setup.design.inner
        self.inner = inner
        self.TF = np.array([inner.lambdas[0], inner.lambdas[1], float(inner.target),
                            float(inner.max_pending_fraction)])
        self.quasi = int(inner.estimator == "quasi")
        self._forced: Dict[int, Any] = {}
        design = setup.design
        verdicts = {C_ESC: Step(ESCALATE, ""), C_STAY: Step(STAY, ""),
                    C_DE: Step(DE_ESCALATE, "")}
        for cls, v in verdicts.items():
            self._forced[cls] = _forced(design, v)
        self._verdicts = verdicts
        self._suspend: Dict[int, Any] = {}
        self._mtd = np.zeros(0, dtype=np.int64)
        self._bd = np.zeros(0, dtype=np.int64)
        self._decision = Decision

    def __len__(self) -> int:
        return len(self.states)

    def _grow(self) -> None:
        k = len(self.states)
        if k < self.T.shape[0]:
            return
        cap = 2 * self.T.shape[0]

        def more(a):
            b = np.full((cap,) + a.shape[1:], -1, dtype=np.int64)
            b[:a.shape[0]] = a
            return b
        self.T, self._n, self._y = more(self.T), more(self._n), more(self._y)

    def _insert(self, key, row: int) -> None:
        H = self.H
        mask = H.shape[0] - 1
        s = _hash(key) & mask
        while H[s, self.klen] >= 0:
            s = (s + 1) & mask
        H[s, :self.klen] = key
        H[s, self.klen] = row

    def add(self, key, cls: int = C_NONE) -> bool:
        """Add the state of integers ``key`` (n, y, current or -1, then last n, last y unless
        the table is ``reduced``) if new, and its decision for verdict class ``cls`` (the
        other classes are computed when a trial needs them); False if the table is full."""
        with self._lock:
            key = tuple(int(v) for v in key)
            k = self.lookup(key)
            if k < 0:
                k = self._new_row(key)
                if k < 0:
                    return False
            if self.T[k, R_DEC + 4 * cls] == _TODO:
                self._decide(k, cls)
            return True

    def _new_row(self, key) -> int:
        from ...designs.tite import TiteState
        K = self._setup.K
        k = len(self.states)
        if k >= MAX_ROWS:
            self.full = True
            return -1
        n, y = key[:K], key[K:2 * K]
        cur = None if key[2 * K] < 0 else key[2 * K]
        last_n, last_y = (0, 0) if self.reduced else (key[2 * K + 1], key[2 * K + 2])
        st = TiteState(n, y, cur, last_n, last_y, ())
        self._grow()
        T = self.T
        T[k, :] = -1
        T[k, R_CUR] = key[2 * K]
        if cur is not None:
            T[k, R_ND] = n[cur]
            T[k, R_YD] = y[cur]
            T[k, R_BD] = self.inner.bounds(n[cur])[1] if n[cur] > 0 else 1 << 40
        T[k, R_DEC] = _TODO
        if cur is not None and n[cur] - y[cur] >= 1:   # (else nobody can be pending there)
            for cls in range(1, N_CLS):
                T[k, R_DEC + 4 * cls] = _TODO
        self._n[k] = n
        self._y[k] = y
        self.states.append(st.as_trial_state())
        self.decs.append([None] * N_CLS)
        if 2 * (k + 1) > self.H.shape[0]:
            H = self.H
            self.H = np.full((2 * H.shape[0], self.klen + 1), -1, dtype=np.int64)
            for s in np.flatnonzero(H[:, self.klen] >= 0).tolist():
                self._insert(tuple(H[s, :self.klen].tolist()), int(H[s, self.klen]))
        self._insert(key, k)
        return k

    def _decide(self, k: int, cls: int) -> None:
        """The design's decision at state ``k`` for verdict class ``cls``."""
        from ...designs.tite import TiteState
        st = self.states[k]
        if cls == C_NONE:
            # (the design itself: each state is decided once here, no memo needed)
            dec = self._setup.design.decide(TiteState(st.n, st.y, st.current, st.last_n,
                                                      st.last_y, ()))
        else:
            cur = st.current
            st1 = TiteState(st.n, st.y, cur, st.last_n, st.last_y, ((cur, 0.0),))
            if cls == C_SUSP:
                design = self._suspend.get(cur)
                if design is None:
                    design = self._suspend[cur] = _forced(
                        self._setup.design, self._decision(cur, 0, "suspend", None, None))
            else:
                design = self._forced[cls]
            dec = design.decide(st1)
        b = R_DEC + 4 * cls
        T = self.T
        T[k, b + 1] = -1 if dec.stop else int(dec.dose)
        T[k, b + 2] = 0 if dec.stop else int(dec.cohort_size)
        reason = (dec.stop_reason or StopReason.RULE_COMPLETE) if dec.stop else None
        T[k, b + 3] = 0 if reason is None else STOP_INDEX[reason]
        T[k, b] = int(bool(dec.stop))
        self.decs[k][cls] = dec

    def b_d(self, npat: int) -> np.ndarray:
        """BOIN's de-escalation boundary b_d(n) for n = 0..npat (n = 0: never)."""
        b = self._bd
        if b.size <= npat:
            b = self._bd = np.array([1 << 40] + [self.inner.bounds(n)[1]
                                                 for n in range(1, npat + 1)], dtype=np.int64)
        return b

    def lookup(self, key) -> int:
        H = self.H
        mask = H.shape[0] - 1
        s = _hash(key) & mask
        while H[s, self.klen] >= 0:
            if tuple(H[s, :self.klen].tolist()) == tuple(key):
                return int(H[s, self.klen])
            s = (s + 1) & mask
        return -1

    def finals(self, codes: np.ndarray) -> "_Finals":
        """A view for :func:`.kernel._columns` of the final nodes ``codes`` (row * N_CLS +
        class, distinct): node i of the view is ``codes[i]``."""
        return _Finals(self, codes)

    def mtd_of(self, rows) -> np.ndarray:
        """The selected dose (-1: none) of the states ``rows`` (kept with the table)."""
        m = self._mtd
        if m.size < len(self.states):
            m = self._mtd = np.concatenate([m, np.full(len(self.states) - m.size, -2,
                                                       dtype=np.int64)])
        for k in np.unique(rows[m[rows] == -2]).tolist():
            sel = self._setup.select_mtd(self.states[k])
            m[k] = -1 if sel is None else sel
        return m[rows]


class _Finals:
    """The table as :func:`.kernel._columns` reads it, for the final nodes ``codes`` only."""

    def __init__(self, t: TiteTable, codes: np.ndarray):
        rows, cls = codes // N_CLS, codes % N_CLS
        self._t = t
        self._rows = rows
        self.n = t._n[rows]
        self.y = t._y[rows]
        self.stop_code = np.maximum(t.T[rows, R_DEC + 4 * cls + 3], 0)
        self.reason = []
        self.states = []
        for k, c in zip(rows.tolist(), cls.tolist()):
            dec = t.decs[k][c]
            self.reason.append(None if dec is None or not dec.stop else
                               (dec.stop_reason or StopReason.RULE_COMPLETE))
            self.states.append(t.states[k])

    def mtd(self, nodes: np.ndarray) -> np.ndarray:
        return self._t.mtd_of(self._rows[nodes])


def table_for(setup) -> TiteTable:
    from .fast import design_memo
    memo = design_memo(setup)
    t = memo.get("kernel_tite_table")
    if t is None:
        t = memo["kernel_tite_table"] = TiteTable(setup)
    return t


# ---------------------------------------------------------------- the compiled trial
@_jit
def _cfree(Q):
    c = Q[Q_S, S_CUR]
    if c < 0:
        return 0
    return Q[Q_CFREE, c]


@_jit
def _arm(A, X, Q):
    # (decides on arrival: armed whatever the free slots)
    if Q[Q_S, S_ARMED] != 0 or Q[Q_S, S_FIN] != 0:
        return
    r = _peek(A, X, Q)
    if Q[Q_S, S_STATUS] != ST_OK:
        return
    Q[Q_S, S_RQPOS] += 1
    Q[Q_S, S_ARMED] = 1
    now = X[X_F, F_NOW]
    _push(X, Q, now + (r - now), _READY, 0)


@_jit
def _lookup(T, H, Q):
    """Row of the current complete-data state (-1: not in the table; ST_NODE set)."""
    K = Q[Q_PI, P_K]
    L = Q[Q_T2, T2_KLEN]
    c = Q[Q_S, S_CUR]
    for d in range(K):
        Q[Q_KEY, d] = Q[Q_NACT, d]
        Q[Q_KEY, K + d] = Q[Q_YOBS, d]
    if c >= 0:
        Q[Q_KEY, 2 * K] = Q[Q_CDOSE, c]
        Q[Q_KEY, 2 * K + 1] = Q[Q_CACT, c]
        Q[Q_KEY, 2 * K + 2] = Q[Q_CY, c]
    else:
        Q[Q_KEY, 2 * K] = -1
        Q[Q_KEY, 2 * K + 1] = 0
        Q[Q_KEY, 2 * K + 2] = 0
    h = 0
    for i in range(L):
        h = (h * 31 + Q[Q_KEY, i] + 1) & _HMASK
    mask = H.shape[0] - 1
    s = h & mask
    while H[s, L] >= 0:
        same = True
        for i in range(L):
            if H[s, i] != Q[Q_KEY, i]:
                same = False
                break
        if same:
            return H[s, L]
        s = (s + 1) & mask
    Q[Q_S, S_STATUS] = ST_NODE
    return -1


@_jit
def _decide_now(T, H, X, Q):
    """TiteTrial._decide_now: sets T2_STOP / DOSE / SIZE / CODE (and ROW, CLS).  The
    verdict first (it needs the counts at the current dose only), then the state's row."""
    cls = C_NONE
    c = Q[Q_S, S_CUR]
    cur = Q[Q_CDOSE, c] if c >= 0 else -1
    if cur >= 0:
        now = X[X_F, F_NOW]
        W = X[X_PF, PF_WINDOW]
        lo = Q[Q_T2, T2_LO]
        npat = Q[Q_S, S_NPAT]
        while lo < npat and Q[Q_PPEND, lo] == 0:
            lo += 1
        Q[Q_T2, T2_LO] = lo
        m = 0
        s = 0.0
        for j in range(lo, npat):
            if Q[Q_PPEND, j] != 0 and Q[Q_PDOSE, j] == cur:
                m += 1
                inf = X[X_PINF, j]
                if inf < 0:
                    f = 0.0
                else:
                    f = (now - inf) / W
                    if 1.0 < f:
                        f = 1.0
                s += f
        if m > 0:
            n_d = Q[Q_NACT, cur]
            y_d = Q[Q_YOBS, cur]
            if y_d >= Q[Q_BD, n_d]:
                cls = C_DE
            elif m > X[X_TF, TF_FRAC] * n_d:
                cls = C_SUSP
            else:
                lam_e = X[X_TF, TF_LAME]
                lam_d = X[X_TF, TF_LAMD]
                if Q[Q_T2, T2_QUASI] != 0:
                    ess = (n_d - m) + s
                    if ess <= 0:
                        cls = C_STAY
                        pt = 0.0
                    else:
                        pt = y_d / ess
                else:
                    p_hat = (y_d + X[X_TF, TF_TARGET] / 2.0) / ((n_d - m) + 1.0)
                    pt = (y_d + (m - s) * p_hat / (1.0 - p_hat)) / n_d
                if cls == C_NONE:
                    if pt <= lam_e:
                        cls = C_ESC
                    elif pt >= lam_d:
                        cls = C_DE
                    else:
                        cls = C_STAY
    row = _lookup(T, H, Q)
    if row < 0:
        Q[Q_KEY, Q[Q_T2, T2_KLEN]] = cls
        return
    b = R_DEC + 4 * cls
    if T[row, b] < 0:
        if T[row, b] == _TODO:                    # (Python computes it, the trial reruns)
            Q[Q_S, S_STATUS] = ST_NODE
            Q[Q_KEY, Q[Q_T2, T2_KLEN]] = cls
        else:
            Q[Q_S, S_STATUS] = ST_MORE            # (unreachable: Python)
        return
    Q[Q_T2, T2_ROW] = row
    Q[Q_T2, T2_CLS] = cls
    Q[Q_T2, T2_STOP] = T[row, b]
    Q[Q_T2, T2_DOSE] = T[row, b + 1]
    Q[Q_T2, T2_SIZE] = T[row, b + 2]
    Q[Q_T2, T2_CODE] = T[row, b + 3]


@_jit
def _finish(A, X, Q):
    Q[Q_S, S_FIN] = 1
    t_end = X[X_F, F_NOW]
    X[X_F, F_TEND] = t_end
    Q[Q_T2, T2_FROW] = Q[Q_T2, T2_ROW]
    Q[Q_T2, T2_FCODE] = Q[Q_T2, T2_CLS]
    K = Q[Q_PI, P_K]
    Q[Q_T2, T2_FLN] = Q[Q_KEY, 2 * K + 1]                # the final state's latest cohort
    Q[Q_T2, T2_FLY] = Q[Q_KEY, 2 * K + 2]
    if Q[Q_S, S_HASFIRST] != 0:
        k = Q[Q_S, S_NDT]
        if k >= Q[Q_PI, P_DCAP]:
            Q[Q_S, S_STATUS] = ST_MORE
            return
        X[X_DTS, k] = t_end - X[X_F, F_FIRST]
        Q[Q_S, S_NDT] = k + 1
    _close(A, X, Q, t_end)
    if Q[Q_S, S_STATUS] != ST_OK:
        return
    _push(X, Q, X[X_F, F_NOW], _STOPM, 0)


@_jit
def _open_slot(T, H, A, X, Q):
    """TiteTrial._open_slot: 1 if a cohort was opened."""
    if Q[Q_S, S_FIN] != 0:
        return 0
    _decide_now(T, H, X, Q)
    if Q[Q_S, S_STATUS] != ST_OK:
        return 0
    if Q[Q_T2, T2_STOP] != 0:
        if Q[Q_S, S_INFL] == 0:
            _finish(A, X, Q)
        return 0
    size = Q[Q_T2, T2_SIZE]
    if size <= 0:
        return 0
    if Q[Q_S, S_HASFIRST] != 0:
        k = Q[Q_S, S_NDT]
        if k >= Q[Q_PI, P_DCAP]:
            Q[Q_S, S_STATUS] = ST_MORE
            return 0
        X[X_DTS, k] = X[X_F, F_NOW] - X[X_F, F_FIRST]
        Q[Q_S, S_NDT] = k + 1
    c = Q[Q_S, S_CUR] + 1
    if c >= Q[Q_PI, P_NC]:
        Q[Q_S, S_STATUS] = ST_MORE
        return 0
    Q[Q_S, S_CUR] = c
    Q[Q_CDOSE, c] = Q[Q_T2, T2_DOSE]
    Q[Q_CSIZE, c] = size
    Q[Q_CFREE, c] = size
    Q[Q_CACT, c] = 0
    Q[Q_CY, c] = 0
    return 1


@_jit
def _on_ready(T, H, A, B, X, Q):
    Q[Q_S, S_ARMED] = 0
    if Q[Q_S, S_FIN] != 0:
        return
    now = X[X_F, F_NOW]
    if Q[Q_S, S_WH] < Q[Q_S, S_WT] and X[_k.X_WDL, Q[Q_S, S_WH]] < now:
        _purge(X, Q, now)
    if Q[Q_S, S_WH] == Q[Q_S, S_WT] and (_cfree(Q) > 0 or _open_slot(T, H, A, X, Q) != 0):
        _enroll(A, B, X, Q)
    elif Q[Q_S, S_STATUS] == ST_OK and Q[Q_S, S_FIN] == 0:
        _wait_or_leave(X, Q, now)
    if Q[Q_S, S_STATUS] != ST_OK:
        return
    _arm(A, X, Q)


@_jit
def _fill(T, H, A, B, X, Q):
    now = X[X_F, F_NOW]
    if Q[Q_S, S_ARMED] == 0:
        _catch_up(A, X, Q, now)
        if Q[Q_S, S_STATUS] != ST_OK:
            return
    while Q[Q_S, S_FIN] == 0:
        if Q[Q_S, S_WH] < Q[Q_S, S_WT] and X[_k.X_WDL, Q[Q_S, S_WH]] < now:
            _purge(X, Q, now)
        if Q[Q_S, S_WH] == Q[Q_S, S_WT]:
            break
        if not (_cfree(Q) > 0 or _open_slot(T, H, A, X, Q) != 0):
            break
        Q[Q_S, S_WH] += 1                         # w.popleft()
        _enroll(A, B, X, Q)
        if Q[Q_S, S_STATUS] != ST_OK:
            return
    if Q[Q_S, S_STATUS] != ST_OK:
        return
    if Q[Q_S, S_ARMED] == 0:
        _arm(A, X, Q)


@_jit
def _enroll(A, B, X, Q):
    j = Q[Q_S, S_NPAT]
    if j >= Q[Q_PI, P_NP]:
        Q[Q_S, S_STATUS] = ST_MORE                # more patients than pre-drawn
        return
    now = X[X_F, F_NOW]
    if Q[Q_S, S_HASFIRST] == 0:
        Q[Q_S, S_HASFIRST] = 1
        X[X_F, F_FIRST] = now
    c = Q[Q_S, S_CUR]
    Q[Q_CFREE, c] -= 1
    Q[Q_CACT, c] += 1
    dose = Q[Q_CDOSE, c]
    Q[Q_PCO, j] = c
    Q[Q_PDOSE, j] = dose
    X[X_PINF, j] = -1.0
    Q[Q_PST, j] = _PIPELINE
    X[X_PREL, j] = -1.0
    Q[Q_S, S_NPAT] = j + 1
    Q[Q_S, S_INFL] += 1
    Q[Q_NACT, dose] += 1
    Q[Q_PPEND, j] = 1
    f = B[B_FAILAT, j]
    if 0 <= f and f < Q[Q_PI, P_GATE]:
        Q[Q_PST, j] = _FAILED
        _push(X, Q, now + A[A_FAILDAYS, j], _END, j)
    elif Q[Q_PI, P_GATED] == 0:
        _push(X, Q, now + (A[A_PRE, j] + A[A_POST, j]), _INFUSED, j)
    else:
        _gate_enter(A, B, X, Q, j)


@_jit
def _after_gate(A, B, X, Q, j, wait):
    now = X[X_F, F_NOW]
    if B[B_FAILAT, j] >= Q[Q_PI, P_GATE]:
        Q[Q_PST, j] = _FAILED
        _push(X, Q, now + (wait + A[A_FAILDAYS, j] - A[A_PRE, j]), _END, j)
    else:
        _push(X, Q, now + (wait + A[A_POST, j]), _INFUSED, j)


@_jit
def _gate_enter(A, B, X, Q, j):
    if Q[Q_PI, P_KNOWN] != 0:
        key = _group(Q, j)
        if Q[Q_SEENH, key] != 0:
            first = X[X_SEENV, key]
            now = X[X_F, F_NOW]
            gate = now + A[A_PRE, j]
            release = _pmax(gate, first + X[X_PF, PF_STAGGER] - A[A_POST, j])
            X[X_PREL, j] = release
            Q[Q_S, S_INFU] += 1
            _after_gate(A, B, X, Q, j, release - now)
            return
    _push(X, Q, X[X_F, F_NOW] + A[A_PRE, j], _ARRIVE, j)


@_jit
def _admit(A, B, X, Q):
    cap = Q[Q_PI, P_CAP]
    stagger = X[X_PF, PF_STAGGER]
    while Q[Q_S, S_QH] < Q[Q_S, S_QT] and (cap < 0 or Q[Q_S, S_INFU] < cap):
        j = Q[Q_GQ, Q[Q_S, S_QH]]
        Q[Q_S, S_QH] += 1
        Q[Q_S, S_INFU] += 1
        now = X[X_F, F_NOW]
        release = now
        if stagger > 0:
            pp = A[A_POST, j]
            key = _group(Q, j)
            if Q[Q_SEENH, key] == 0:
                Q[Q_SEENH, key] = 1
                X[X_SEENV, key] = now + pp
            else:
                release = _pmax(now, X[X_SEENV, key] + stagger - pp)
                if Q[Q_PI, P_SEQ] != 0:
                    X[X_SEENV, key] = release + pp
        X[X_PREL, j] = release
        if release > now:
            _push(X, Q, now + (release - now), _RELEASE, j)
        else:
            _after_gate(A, B, X, Q, j, 0.0)
        if Q[Q_S, S_STATUS] != ST_OK:
            return


@_jit
def _infused(A, B, X, Q, j):
    now = X[X_F, F_NOW]
    X[X_PINF, j] = now
    Q[Q_S, S_TREAT] += 1
    if B[B_DROP, j] != 0:
        Q[Q_PST, j] = _DROPPED
        _push(X, Q, now + A[A_DROPDAY, j], _END, j)
        return
    Q[Q_PST, j] = _COMPLETE
    k = Q[Q_S, S_NTOX]
    Q[Q_S, S_NTOX] = k + 1
    if k >= Q[Q_PI, P_NE]:
        Q[Q_S, S_STATUS] = ST_MORE                # more evaluable patients than pre-drawn
        return
    if A[A_U, k] < X[X_P, Q[Q_PDOSE, j]]:
        _push(X, Q, now + A[A_ONSET, k], _DLT, j)
        if Q[Q_S, S_STATUS] != ST_OK:
            return
    _push(X, Q, now + X[X_PF, PF_WINDOW], _END, j)


@_jit
def _changed(T, H, A, B, X, Q):
    if Q[Q_S, S_FIN] != 0:
        return
    _fill(T, H, A, B, X, Q)
    if Q[Q_S, S_STATUS] != ST_OK:
        return
    if Q[Q_S, S_FIN] == 0 and Q[Q_S, S_INFL] == 0 and _cfree(Q) == 0:
        _decide_now(T, H, X, Q)
        if Q[Q_S, S_STATUS] != ST_OK:
            return
        if Q[Q_T2, T2_STOP] != 0:
            _finish(A, X, Q)


@_jit
def _dlt(T, H, A, B, X, Q, j):
    Q[Q_YOBS, Q[Q_PDOSE, j]] += 1
    Q[Q_PPEND, j] = 0
    Q[Q_CY, Q[Q_PCO, j]] += 1
    _changed(T, H, A, B, X, Q)


@_jit
def _on_end(T, H, A, B, X, Q, j):
    Q[Q_S, S_INFL] -= 1
    if X[X_PREL, j] >= 0:
        Q[Q_S, S_INFU] -= 1
        if Q[Q_S, S_QH] < Q[Q_S, S_QT]:
            _admit(A, B, X, Q)
            if Q[Q_S, S_STATUS] != ST_OK:
                return
    st = Q[Q_PST, j]
    if st == _COMPLETE:
        Q[Q_PPEND, j] = 0
        _changed(T, H, A, B, X, Q)
        return
    if st == _FAILED:
        Q[Q_S, S_PHASE] += 1
        if Q[Q_MANUF, B[B_FAILAT, j]] != 0:
            Q[Q_S, S_MANUF] += 1
    else:
        Q[Q_S, S_DROP] += 1
    Q[Q_CACT, Q[Q_PCO, j]] -= 1
    Q[Q_NACT, Q[Q_PDOSE, j]] -= 1
    Q[Q_PPEND, j] = 0
    _changed(T, H, A, B, X, Q)


@_jit
def _run_trial(T, H, A, B, X, Q):
    for k in range(N_S):
        if k != S_NELIG:
            Q[Q_S, k] = 0
    for k in range(Q.shape[1]):
        Q[Q_SEENH, k] = 0
        Q[Q_PPEND, k] = 0
        Q[Q_NACT, k] = 0
        Q[Q_YOBS, k] = 0
    Q[Q_T2, T2_LO] = 0
    X[X_F, F_NOW] = 0.0
    X[X_F, F_FIRST] = 0.0
    X[X_F, F_TEND] = 0.0
    X[X_F, F_ATLAST] = A[A_AT, Q[Q_PI, P_NA] - 1]
    Q[Q_S, S_CUR] = -1
    _arm(A, X, Q)
    if Q[Q_S, S_STATUS] != ST_OK:
        return
    while True:
        if Q[Q_S, S_HN] == 0:
            Q[Q_S, S_STATUS] = ST_MORE            # (the Python path raises: let it)
            return
        kind, arg = _pop(X, Q)
        if kind == _STOPM:
            break
        if kind == _END:
            _on_end(T, H, A, B, X, Q, arg)
        elif kind == _READY:
            _on_ready(T, H, A, B, X, Q)
        elif kind == _INFUSED:
            _infused(A, B, X, Q, arg)
        elif kind == _DLT:
            _dlt(T, H, A, B, X, Q, arg)
        elif kind == _ARRIVE:
            t = Q[Q_S, S_QT]
            Q[Q_GQ, t] = arg
            Q[Q_S, S_QT] = t + 1
            _admit(A, B, X, Q)
        else:                                      # _RELEASE
            _after_gate(A, B, X, Q, arg, 0.0)
        if Q[Q_S, S_STATUS] != ST_OK:
            return
    t_end = X[X_F, F_TEND]
    if not X[X_F, F_ATLAST] > t_end:
        Q[Q_S, S_STATUS] = ST_MORE
        return
    na = Q[Q_PI, P_NA]
    n = 0
    nf = 0
    while n < na and A[A_AT, n] <= t_end:        # searchsorted(at, t_end, "right")
        if B[B_FAILED, n] != 0:
            nf += 1
        n += 1
    Q[Q_S, S_NSCR] = n
    Q[Q_S, S_NSF] = nf


@_jit_entry
def run_block(T, H, TF, quasi, bd, PI, PF, manuf, p, ready, n_elig, at, failed, fail_at, drop,
              drop_day, pre, post, fail_days, u, onset, sel, o_int, o_float, o_dts, o_key):
    """Run the block's trials ``sel`` (rows of the pre-drawn and output arrays); per trial
    ``o_int``: status, final node (row * N_CLS + class), then the counts (as
    :func:`.kernel.run_block`); ``o_key``: the state (and verdict class) to add (status
    ST_NODE)."""
    NP = PI[P_NP]
    NA = PI[P_NA]
    NE = PI[P_NE]
    K = PI[P_K]
    L = o_key.shape[1] - 1
    W = max(NA, NP, NE, PI[P_HCAP], PI[P_NC] + K, PI[P_DCAP], N_S, N_PI, 16, manuf.size,
            p.size, 2 * K + 4, bd.size)
    A = np.zeros((N_AT, W))
    B = np.zeros((N_B, W), dtype=np.int64)
    X = np.zeros((N_XT, W))
    Q = np.zeros((N_QT, W), dtype=np.int64)
    for k in range(PI.size):
        Q[Q_PI, k] = PI[k]
    for k in range(PF.size):
        X[X_PF, k] = PF[k]
    for k in range(TF.size):
        X[X_TF, k] = TF[k]
    for k in range(p.size):
        X[X_P, k] = p[k]
    for k in range(manuf.size):
        Q[Q_MANUF, k] = manuf[k]
    Q[Q_T2, T2_QUASI] = quasi
    for k in range(bd.size):
        Q[Q_BD, k] = bd[k]
    Q[Q_T2, T2_KLEN] = L
    for i in range(sel.size):
        r = sel[i]
        for k in range(NA):
            A[A_READY, k] = ready[r, k]
            A[A_AT, k] = at[r, k]
            B[B_FAILED, k] = failed[r, k]
        for k in range(NP):
            A[A_DROPDAY, k] = drop_day[r, k]
            A[A_PRE, k] = pre[r, k]
            A[A_POST, k] = post[r, k]
            A[A_FAILDAYS, k] = fail_days[r, k]
            B[B_FAILAT, k] = fail_at[r, k]
            B[_k.B_DROP, k] = drop[r, k]
        for k in range(NE):
            A[A_U, k] = u[r, k]
            A[A_ONSET, k] = onset[r, k]
        Q[Q_S, S_NELIG] = n_elig[r]
        _run_trial(T, H, A, B, X, Q)
        o_int[r, 0] = Q[Q_S, S_STATUS]
        if Q[Q_S, S_STATUS] == ST_NODE:
            for i in range(L + 1):
                o_key[r, i] = Q[Q_KEY, i]
        if Q[Q_S, S_STATUS] != ST_OK:
            continue
        o_int[r, 1] = Q[Q_T2, T2_FROW] * N_CLS + Q[Q_T2, T2_FCODE]
        o_int[r, 2] = Q[Q_S, S_NPAT]
        o_int[r, 3] = Q[Q_S, S_TREAT]
        o_int[r, 4] = Q[Q_S, S_MANUF]
        o_int[r, 5] = Q[Q_S, S_PHASE]
        o_int[r, 6] = Q[Q_S, S_DROP]
        o_int[r, 7] = Q[Q_S, S_LOST]
        o_int[r, 8] = Q[Q_S, S_WMAX]
        o_int[r, 9] = Q[Q_S, S_WCLOSE]
        o_int[r, 10] = Q[Q_S, S_NSCR]
        o_int[r, 11] = Q[Q_S, S_NSF]
        o_int[r, 12] = Q[Q_S, S_NDT]
        o_int[r, 13] = Q[Q_S, S_HASFIRST]
        o_int[r, 14] = Q[Q_T2, T2_FLN]
        o_int[r, 15] = Q[Q_T2, T2_FLY]
        o_float[r, 0] = X[X_F, F_TEND]
        o_float[r, 1] = X[X_F, F_FIRST]
        for k in range(Q[Q_S, S_NDT]):
            o_dts[r, k] = X[X_DTS, k]


#: the compiled entry point (``run_block`` may be wrapped by tests counting calls)
_KERNEL = run_block


# ---------------------------------------------------------------- the driver
class _Block(_k._Block):
    """One block's pre-drawn numbers (those of :class:`~.fast.LeanChunkDraws`)."""

    def python_trial(self, setup, r: int):
        """The r-th trial on the Python fast path (as LeanChunkDraws.trial feeds it)."""
        from .draws import TrialDraws
        from .fast import TiteTrial
        fail_at, drop, drop_day, pre, post, fail_days = [a[r].tolist() for a in self.pat]
        d = TrialDraws(self.plan, int(self.trials[r]), None, None, None, self.days[r],
                       self.happens[r], fail_at, drop, drop_day, pre, post, fail_days,
                       self.u[r].tolist(), self.onset[r].tolist())
        ne = int(self.n_elig[r])
        rq = list(zip(self.ready[r, :ne].tolist(), self.order[r, :ne].tolist()))
        t = TiteTrial(setup, d, (rq, self.at[r], self.failed[r], self.sdays[r])).run()
        t.release()
        return t


#: kernel.py's output columns, then the final state's latest cohort size and DLTs
_N_OUT_INT = _k._N_OUT_INT + 2


def _growing(table: TiteTable, n0: int, trials: int) -> bool:
    return (len(table) > _k.DECLINE_STATES
            and len(table) - n0 > _k.DECLINE_GROWTH * trials)


def simulate(setup, plan, trials: np.ndarray, na: int, npat: int, ne: int, block: int,
             int_cols) -> Dict[str, Any]:
    """The per-trial columns of ``simulate_des_trials`` for ``trials`` (module docstring)."""
    import gc
    gc_on = gc.isenabled()
    gc.disable()             # (as the Python path: the growing table would be rescanned)
    try:
        return _simulate(setup, plan, trials, na, npat, ne, block, int_cols)
    finally:
        _k._end_compile_turn()                   # (taken by simulate_des_trials)
        if gc_on:
            gc.enable()


def _compiled() -> bool:
    """This module's kernel is compiled (or loaded from the disk cache) in this process (the
    dispatcher itself, even while a test wraps ``run_block``)."""
    return bool(getattr(_KERNEL, "signatures", None))


def _simulate(setup, plan, trials, na, npat, ne, block, int_cols):
    from .draws import HORIZON_DAYS, past_horizon
    table = table_for(setup)
    PI, PF, manuf, p = _k._params(setup, na, npat, ne)
    m = trials.size
    L = table.klen
    bd = table.b_d(npat)
    o_int = np.zeros((m, _N_OUT_INT), dtype=np.int64)
    o_float = np.zeros((m, 2))
    o_dts = np.zeros((m, npat + 2))
    py: Dict[int, Any] = {}
    for b in range(0, m, block):
        rows = slice(b, min(m, b + block))
        tr = trials[rows].astype(np.uint64)
        blk = _Block(plan, tr, na, npat, ne)
        fa, dr, dd, pre, post, fd = blk.pat
        ins = (blk.ready, blk.n_elig, blk.at, blk.failed, fa, dr, dd, pre, post, fd, blk.u,
               blk.onset)
        n0 = len(table)
        o_key = np.zeros((tr.size, L + 1), dtype=np.int64)
        if table.declined:
            o_int[rows, 0] = ST_MORE
            again = np.zeros(0, dtype=np.int64)
        else:
            run_block(table.T, table.H, table.TF, table.quasi, bd, PI, PF, manuf, p, *ins,
                      np.arange(tr.size), o_int[rows], o_float[rows], o_dts[rows], o_key)
            again = np.flatnonzero(o_int[rows, 0] == ST_NODE)
        while again.size:
            if _growing(table, n0, tr.size):
                break
            keys = {tuple(k) for k in o_key[again].tolist()}
            ok = {k: table.add(k[:L], k[L]) for k in keys}
            again = again[np.array([ok[tuple(k)] for k in o_key[again].tolist()], dtype=bool)]
            if not again.size:
                break
            run_block(table.T, table.H, table.TF, table.quasi, bd, PI, PF, manuf, p, *ins,
                      again,
                      o_int[rows], o_float[rows], o_dts[rows], o_key)
            again = again[o_int[b + again, 0] == ST_NODE]
        n_py = 0
        for r in range(tr.size):
            if o_int[b + r, 0] != ST_OK:
                n_py += 1
                t = blk.python_trial(setup, r)
                if t.t_end > HORIZON_DAYS:
                    raise past_horizon(int(tr[r]))
                py[b + r] = t
            elif o_float[b + r, 0] > HORIZON_DAYS:
                raise past_horizon(int(tr[r]))
        if not table.declined and ((tr.size >= 100 and n_py > _k.DECLINE_PYTHON * tr.size)
                                   or _growing(table, n0, tr.size)):
            table.declined = True
            _log.info("calendar kernel: %d of %d trials needed more pre-drawn numbers, and "
                      "the design's table grew by %d states to %d; this design's trials run "
                      "on the Python fast path from now on", n_py, tr.size, len(table) - n0,
                      len(table))
    ok = o_int[:, 0] == ST_OK
    codes = o_int[ok, 1]
    if not codes.size:
        codes = np.zeros(1, dtype=np.int64)
    codes, inv = np.unique(codes, return_inverse=True)
    final = o_int[:, 1].copy()                   # (row * N_CLS + class)
    o_int[ok, 1] = inv.reshape(-1)[:int(ok.sum())]
    out = _k._columns(setup, table.finals(codes), trials, o_int, o_float, o_dts, py,
                      int_cols)
    if table.reduced:             # the final states with their latest cohort's size and DLTs
        from ...types import TrialState
        states = out["final_state"]
        made: Dict[Any, Any] = {}
        for r in np.flatnonzero(ok).tolist():
            k = (int(final[r]) // N_CLS, int(o_int[r, 14]), int(o_int[r, 15]))
            st = made.get(k)
            if st is None:
                base = table.states[k[0]]
                st = made[k] = TrialState(base.n, base.y, base.current, k[1], k[2])
            states[r] = st
    return out
