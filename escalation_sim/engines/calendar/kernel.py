"""The calendar engine's compiled path: classic designs' lean trials as a numba kernel.

:class:`~escalation_sim.engines.calendar.fast.ClassicTrial` (the fast path's classic trial,
itself held to the simpy reference trial by trial) restated over flat arrays and compiled
with numba, a block of trials per call.  Same calls, same order, same day arithmetic (the
expressions of ``fast.py``, evaluated in IEEE double precision in the same order: numba
does not reassociate without ``fastmath``), so the same trials bit for bit; the kernel
computes no transcendental function (no ``log``/``exp``: every random number is pre-drawn
by numpy exactly as :class:`~.fast.LeanChunkDraws` draws it).

What stays outside the compiled loop:

* *Decisions.*  Classic decisions depend only on the complete-data state, so the design's
  states (merged by state, memoised per design with the fast path's memos) are kept as an
  array, each with its decision (stop / dose / cohort size) and its successor for every DLT
  count: :data:`PREBUILD` states enumerated breadth first before the first trial, more on
  demand (a trial reaching a state not enumerated yet stops; the state's successors are
  added and the trial runs again), at most :data:`MAX_NODES`.  The kernel walks the array.
* *Anything rare.*  A trial that needs more pre-drawn numbers than its block holds, or a
  state beyond :data:`MAX_NODES`, is flagged by the kernel and run again from its start on
  the Python :class:`~.fast.ClassicTrial` (which extends its draws on demand), so the kernel
  never needs a second source of numbers.  A design for which this is frequent is given up
  (:data:`DECLINE_PYTHON`).

Used by :func:`~escalation_sim.engines.calendar.simulate_des_trials` for classic designs
(binary truth, limited accrual, no patient log) on the fast path when numba is installed
(the optional extra ``fast``); otherwise the Python fast path runs, with an INFO note on the
``escalation_sim.engines.calendar`` logger.  The environment variable
``ESCALATION_SIM_CALENDAR_KERNEL=0`` turns the kernel off (benchmarks compare the two).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, Dict, List, Optional

import numpy as np

from ...types import STOP_INDEX, StopReason

_log = logging.getLogger("escalation_sim.engines.calendar")

KERNEL_ENV = "ESCALATION_SIM_CALENDAR_KERNEL"
#: states of a design enumerated before the first trial (breadth first); more on demand
PREBUILD = 2_000
#: states of one design's table at most (beyond: those trials run in Python)
MAX_NODES = 400_000
#: the kernel gives a design up for the process (its trials run on the Python fast path,
#: with an INFO note) when, in one block of at least 100 trials, more than this fraction of
#: the trials had to run in Python (long trials outgrowing their pre-drawn numbers, which the kernel then ran in
#: vain) ...
DECLINE_PYTHON = 0.25
#: ... or when its table has more than DECLINE_STATES states and still grows by more than
#: DECLINE_GROWTH states per trial (every trial a new path: each new state costs a
#: decision, the trial a run again; e.g. N = 60 in cohorts of 1, where the kernel was 3x
#: slower than the Python fast path)
DECLINE_STATES = 8_000
DECLINE_GROWTH = 2.0

try:  # pragma: no cover - depends on the environment
    import numba as _nb
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    _nb = None
    HAVE_NUMBA = False

_noted = False


def enabled() -> bool:
    """The kernel may run: numba is installed and ``ESCALATION_SIM_CALENDAR_KERNEL`` is not
    ``0``.  Without numba, one INFO note per process says the Python fast path runs."""
    global _noted
    if os.environ.get(KERNEL_ENV, "").strip() in ("0", "false", "no", "off"):
        return False
    if not HAVE_NUMBA:
        if not _noted:
            _noted = True
            _log.info("calendar engine: numba is not installed, classic designs run on the "
                      "Python fast path (pip install 'escalation-sim[fast]' for the "
                      "compiled kernel)")
        return False
    return True


# -- one process compiles at a time -----------------------------------------------------
#: the open lock file while this process compiles (or loads from numba's cache) the kernel
_turn_fd: Optional[int] = None
_turn_lock = threading.Lock()
_waiting_noted = False


def _lock_path() -> str:
    """The lock file beside numba's on-disk cache of the kernel (the folder numba writes)."""
    cache = getattr(getattr(_ENTRY, "_cache", None), "_cache_path", None)
    folder = cache if cache and os.path.isdir(cache) else None
    if folder is None:
        import tempfile
        folder = tempfile.gettempdir()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(folder, f"escalation-sim-kernel-{uid}.lock")


def _compiled() -> bool:
    """The kernel is compiled (or loaded from the disk cache) in this process."""
    return bool(getattr(_ENTRY, "signatures", None))


def take_compile_turn(compiled=None) -> bool:
    """May this process call the compiled kernel now?

    Yes once the kernel is compiled (or loaded from numba's disk cache) in this process.
    Before that, the first use compiles it, about 7 s of one core in a fresh install, and
    every process starting at the same time (the workers of ``--n-jobs 2``, test workers)
    would compile the same code at once.  So the first use takes a lock file beside numba's
    cache, without waiting: the process that gets it compiles (and numba writes the cache),
    a process that does not runs this call's trials on the Python fast path, the same trials
    bit for bit, and asks again at its next call, when the cache is there to load.  Without
    file locks (no ``fcntl``) or a writable lock folder, every process compiles, as before.
    :func:`simulate` gives the lock back when its call ends.  ``compiled``: whether the
    caller's kernel is compiled in this process (default: this module's; kernel_tite.py
    passes its own and shares the lock)."""
    global _turn_fd, _waiting_noted
    if (_compiled if compiled is None else compiled)():
        return True
    with _turn_lock:
        if _turn_fd is not None:                 # this process holds it (another thread)
            return True
        try:
            import fcntl
        except ImportError:                      # pragma: no cover - not POSIX
            return True
        try:
            fd = os.open(_lock_path(), os.O_CREAT | os.O_RDWR, 0o644)
        except OSError:                          # pragma: no cover - no writable folder
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            if not _waiting_noted:
                _waiting_noted = True
                _log.info("calendar kernel: another process is compiling the kernel; this "
                          "call runs on the Python fast path (the same trials)")
            return False
        _turn_fd = fd
        return True


def _end_compile_turn() -> None:
    global _turn_fd
    with _turn_lock:
        if _turn_fd is not None:
            os.close(_turn_fd)                   # closing the file releases the lock
            _turn_fd = None


def kernel_unsupported(setup) -> Optional[str]:
    """Why the kernel cannot run ``setup`` (already on the fast path's lean classic trial)."""
    from .policies import CohortPolicy
    c = setup.conduct
    why = []
    if setup.policy is not CohortPolicy:
        why.append("a time-to-event design")
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
        table = design_memo(setup).get("kernel_table")
        if table is not None and table.declined:
            why.append("a design the kernel gave up (long trials or a growing table)")
    return ", ".join(why) or None


# ---------------------------------------------------------------- the decision table
class Table:
    """The design's complete-data states as arrays (see the module docstring): row k of
    ``T`` is state k's decision (stop, dose, cohort size) and its successor per DLT count
    (-1: not enumerated yet).  Built breadth first from the empty state up to
    :data:`PREBUILD` states, then grown on demand (:meth:`expand`), up to :data:`MAX_NODES`."""

    def __init__(self, setup, prebuild: Optional[int] = None):
        self._setup = setup
        self._lock = threading.Lock()
        self.states: List[Any] = []
        self.decs: List[Any] = []
        self.reason: List[Any] = []
        self._index: Dict[Any, int] = {}
        self.full = False
        #: the kernel gave this design up (see DECLINE_PYTHON)
        self.declined = False
        K = setup.K
        self.T = np.full((0, T_SUCC + 1), -1, dtype=np.int64)
        self._n = np.zeros((0, K), dtype=np.int64)
        self._y = np.zeros((0, K), dtype=np.int64)
        self._stop_code = np.zeros(0, dtype=np.int64)
        self._mtd = np.zeros(0, dtype=np.int64)
        self._add(setup.empty_state)
        limit = PREBUILD if prebuild is None else prebuild
        i = 0
        while i < len(self.states) and len(self.states) < limit:   # breadth first
            self._expand(i)
            i += 1

    def __len__(self) -> int:
        return len(self.states)

    def _grow(self, rows: int, width: int) -> None:
        cap, w = self.T.shape
        if rows <= cap and width <= w:
            return
        new_cap = max(cap, 64)
        while new_cap < rows:
            new_cap *= 2
        width = max(w, width)
        T = np.full((new_cap, width), -1, dtype=np.int64)
        T[:cap, :w] = self.T
        self.T = T
        K = self._n.shape[1]

        def more(a, shape, fill):
            b = np.full(shape, fill, dtype=np.int64)
            b[:a.shape[0]] = a
            return b
        self._n = more(self._n, (new_cap, K), 0)
        self._y = more(self._y, (new_cap, K), 0)
        self._stop_code = more(self._stop_code, (new_cap,), 0)
        self._mtd = more(self._mtd, (new_cap,), -2)           # -2: not computed yet

    def _add(self, st) -> int:
        """Index of a new state ``st`` (-1: the table is full)."""
        k = len(self.states)
        if k >= MAX_NODES:
            self.full = True
            return -1
        dec = self._setup.decide(st)
        size = 0 if dec.stop else int(dec.cohort_size)
        self._grow(k + 1, T_SUCC + size + 1)
        self.T[k, T_STOP] = int(bool(dec.stop))
        self.T[k, T_DOSE] = -1 if dec.stop else int(dec.dose)
        self.T[k, T_SIZE] = size
        self._n[k] = st.n
        self._y[k] = st.y
        reason = (dec.stop_reason or StopReason.RULE_COMPLETE) if dec.stop else None
        self._stop_code[k] = 0 if reason is None else STOP_INDEX[reason]
        self.states.append(st)
        self.decs.append(dec)
        self.reason.append(reason)
        self._index[st] = k
        return k

    def _expand(self, k: int) -> bool:
        dec = self.decs[k]
        if dec.stop:
            return True
        st = self.states[k]
        ok = True
        for y in range(dec.cohort_size + 1):
            if self.T[k, T_SUCC + y] >= 0:
                continue
            nxt = st.add_cohort(dec.dose, dec.cohort_size, y)
            j = self._index.get(nxt)
            if j is None:
                j = self._add(nxt)
                if j < 0:
                    ok = False
                    continue
            self.T[k, T_SUCC + y] = j
        return ok

    def expand(self, k: int) -> bool:
        """Enumerate the successors of state ``k``; False if the table is full."""
        with self._lock:
            return self._expand(k)

    @property
    def n(self) -> np.ndarray:
        return self._n

    @property
    def y(self) -> np.ndarray:
        return self._y

    @property
    def stop_code(self) -> np.ndarray:
        return self._stop_code

    def mtd(self, nodes: np.ndarray) -> np.ndarray:
        """The selected dose (-1: none) of each final state ``nodes``."""
        m = self._mtd
        for k in np.unique(nodes[m[nodes] == -2]).tolist():
            sel = self._setup.select_mtd(self.states[k])
            m[k] = -1 if sel is None else sel
        return m[nodes]


def table_for(setup) -> Table:
    """The decision table of ``setup.design``, kept with the fast path's memos."""
    from .fast import design_memo
    memo = design_memo(setup)
    t = memo.get("kernel_table")
    if t is None:
        t = memo["kernel_table"] = Table(setup)
    return t


# ---------------------------------------------------------------- the compiled kernel
# Every helper takes the same five arrays (a call passing many arrays costs a reference
# count and a few words per array): T, the decision table (node: stop, dose, cohort size,
# successor by DLT count); A / B, the trial's pre-drawn floats / integers (one row each);
# X / Q, the float / integer scratch (one row each: the heap, patients, cohorts, state).
# event kinds
_READY, _END, _ARRIVE, _RELEASE, _DECIDE, _STOPM = 0, 1, 2, 3, 4, 5
# patient states
_PIPELINE, _COMPLETE, _FAILED, _DROPPED = 0, 1, 2, 3
# T columns
T_STOP, T_DOSE, T_SIZE, T_SUCC = 0, 1, 2, 3
# A rows (the trial's floats)
A_READY, A_AT, A_DROPDAY, A_PRE, A_POST, A_FAILDAYS, A_U = range(7)
N_A = 7
# B rows (the trial's integers)
B_FAILED, B_FAILAT, B_DROP = range(3)
N_B = 3
# X rows (float scratch)
X_HDAY, X_PINF, X_PREL, X_SEENV, X_WDL, X_DTS, X_F, X_PF, X_P = range(9)
N_X = 9
# Q rows (integer scratch)
(Q_HSEQ, Q_HKIND, Q_HARG, Q_PCO, Q_PDOSE, Q_PST, Q_CFREE, Q_CACT, Q_CDONE, Q_CSIZE,
 Q_CDOSE, Q_SEENH, Q_GQ, Q_S, Q_PI, Q_MANUF) = range(16)
N_Q = 16
# integer state (row Q_S)
(S_SEQ, S_FIN, S_NODE, S_CUR, S_NPAT, S_INFL, S_TREAT, S_MANUF, S_PHASE, S_DROP, S_RQPOS,
 S_ARMED, S_NTOX, S_QH, S_QT, S_WH, S_WT, S_INFU, S_LOST, S_WMAX, S_WCLOSE, S_HN, S_NDT,
 S_HASFIRST, S_STATUS, S_NELIG, S_NSCR, S_NSF, S_NEEDY) = range(29)
N_S = 29
# float state (row X_F)
F_NOW, F_FIRST, F_TEND, F_ATLAST = range(4)
# integer parameters (row Q_PI)
(P_GATE, P_GATED, P_BYCOH, P_SEQ, P_KNOWN, P_CAP, P_LEAVE, P_NP, P_NA, P_NE, P_K, P_HCAP,
 P_NC, P_DCAP) = range(14)
N_PI = 14
# float parameters (row X_PF)
PF_WINDOW, PF_STAGGER, PF_MAXWAIT, PF_REVIEW = range(4)
# status
ST_OK, ST_MORE, ST_NODE = 0, 1, 2


def _jit(fn):
    """``numba.njit`` for the kernel's helpers, without numba's reference counting
    (``_nrt=False``): they allocate nothing, and counting the references of the five arrays
    at every call made the kernel 6x slower (30 against 4.7 microseconds per seed-scenario
    trial; ``inline="always"`` instead took minutes to compile and ran at 19).  Without
    numba the plain function (never called: :func:`enabled` is False)."""
    if not HAVE_NUMBA:
        return fn
    try:
        return _nb.njit(nogil=True, _nrt=False)(fn)
    except (KeyError, TypeError, ValueError):     # pragma: no cover - a numba without it
        return _nb.njit(nogil=True)(fn)


def _jit_entry(fn):
    """``numba.njit`` for the kernel's entry point, compiled on first use, cached on disk."""
    if not HAVE_NUMBA:
        return fn
    return _nb.njit(cache=True, nogil=True)(fn)


@_jit
def _heap_set(X, Q, i, day, seq, kind, arg):
    """Heap slot ``i`` := the call (day, seq, kind, arg)."""
    X[X_HDAY, i] = day
    Q[Q_HSEQ, i] = seq
    Q[Q_HKIND, i] = kind
    Q[Q_HARG, i] = arg


@_jit
def _heap_move(X, Q, i, j):
    """Heap slot ``i`` := slot ``j``."""
    X[X_HDAY, i] = X[X_HDAY, j]
    Q[Q_HSEQ, i] = Q[Q_HSEQ, j]
    Q[Q_HKIND, i] = Q[Q_HKIND, j]
    Q[Q_HARG, i] = Q[Q_HARG, j]


@_jit
def _push(X, Q, day, kind, arg):
    n = Q[Q_S, S_HN]
    if n >= Q[Q_PI, P_HCAP]:
        Q[Q_S, S_STATUS] = ST_MORE
        return
    seq = Q[Q_S, S_SEQ] + 1
    Q[Q_S, S_SEQ] = seq
    i = n
    while i > 0:                                  # sift up
        p = (i - 1) >> 1
        dp = X[X_HDAY, p]
        if dp < day or (dp == day and Q[Q_HSEQ, p] < seq):
            break
        _heap_move(X, Q, i, p)
        i = p
    _heap_set(X, Q, i, day, seq, kind, arg)
    Q[Q_S, S_HN] = n + 1


@_jit
def _pop(X, Q):
    """Pop the first call: sets now, returns (kind, arg)."""
    n = Q[Q_S, S_HN] - 1
    X[X_F, F_NOW] = X[X_HDAY, 0]
    kind0 = Q[Q_HKIND, 0]
    arg0 = Q[Q_HARG, 0]
    Q[Q_S, S_HN] = n
    if n > 0:
        day = X[X_HDAY, n]
        seq = Q[Q_HSEQ, n]
        kind = Q[Q_HKIND, n]
        arg = Q[Q_HARG, n]
        i = 0
        while True:                               # sift down
            c = 2 * i + 1
            if c >= n:
                break
            r = c + 1
            if r < n:
                dr, dc = X[X_HDAY, r], X[X_HDAY, c]
                if dr < dc or (dr == dc and Q[Q_HSEQ, r] < Q[Q_HSEQ, c]):
                    c = r
            dc = X[X_HDAY, c]
            if day < dc or (day == dc and seq < Q[Q_HSEQ, c]):
                break
            _heap_move(X, Q, i, c)
            i = c
        _heap_set(X, Q, i, day, seq, kind, arg)
    return kind0, arg0


@_jit
def _pmax(a, b):
    """Python's ``max(a, b)``: ``a`` unless ``b > a``."""
    return b if b > a else a


# ---------------------------------------------------------------- accrual
@_jit
def _peek(A, X, Q):
    pos = Q[Q_S, S_RQPOS]
    if pos >= Q[Q_S, S_NELIG] or A[A_READY, pos] > X[X_F, F_ATLAST]:
        Q[Q_S, S_STATUS] = ST_MORE                # the trial needs more arrivals
        return 0.0
    return A[A_READY, pos]


@_jit
def _arm(A, X, Q):
    if Q[Q_S, S_ARMED] != 0 or Q[Q_S, S_FIN] != 0 or Q[Q_CFREE, Q[Q_S, S_CUR]] <= 0:
        return
    r = _peek(A, X, Q)
    if Q[Q_S, S_STATUS] != ST_OK:
        return
    Q[Q_S, S_RQPOS] += 1
    Q[Q_S, S_ARMED] = 1
    now = X[X_F, F_NOW]
    _push(X, Q, now + (r - now), _READY, 0)


@_jit
def _purge(X, Q, now):
    while Q[Q_S, S_WH] < Q[Q_S, S_WT] and X[X_WDL, Q[Q_S, S_WH]] < now:
        Q[Q_S, S_WH] += 1
        Q[Q_S, S_LOST] += 1


@_jit
def _wait_or_leave(X, Q, t):
    if Q[Q_PI, P_LEAVE] != 0:
        Q[Q_S, S_LOST] += 1
        return
    _purge(X, Q, t)
    k = Q[Q_S, S_WT]
    if k >= Q[Q_PI, P_NA]:
        Q[Q_S, S_STATUS] = ST_MORE
        return
    X[X_WDL, k] = t + X[X_PF, PF_MAXWAIT]
    Q[Q_S, S_WT] = k + 1
    if k + 1 - Q[Q_S, S_WH] > Q[Q_S, S_WMAX]:
        Q[Q_S, S_WMAX] = k + 1 - Q[Q_S, S_WH]


@_jit
def _catch_up(A, X, Q, until):
    if Q[Q_S, S_ARMED] != 0:
        return
    while True:
        r = _peek(A, X, Q)
        if Q[Q_S, S_STATUS] != ST_OK or r > until:
            return
        Q[Q_S, S_RQPOS] += 1
        _wait_or_leave(X, Q, r)
        if Q[Q_S, S_STATUS] != ST_OK:
            return


@_jit
def _on_ready(T, A, B, X, Q):
    Q[Q_S, S_ARMED] = 0
    if Q[Q_S, S_FIN] != 0:
        return
    now = X[X_F, F_NOW]
    if Q[Q_S, S_WH] < Q[Q_S, S_WT] and X[X_WDL, Q[Q_S, S_WH]] < now:
        _purge(X, Q, now)
    if Q[Q_S, S_WH] == Q[Q_S, S_WT] and Q[Q_CFREE, Q[Q_S, S_CUR]] > 0:
        _enroll(A, B, X, Q)
    elif Q[Q_S, S_FIN] == 0:
        _wait_or_leave(X, Q, now)
    if Q[Q_S, S_STATUS] != ST_OK:
        return
    _arm(A, X, Q)


@_jit
def _close(A, X, Q, t_end):
    _catch_up(A, X, Q, t_end)
    if Q[Q_S, S_STATUS] != ST_OK:
        return
    _purge(X, Q, t_end)
    Q[Q_S, S_WCLOSE] = Q[Q_S, S_WT] - Q[Q_S, S_WH]
    Q[Q_S, S_WH] = Q[Q_S, S_WT]


# ---------------------------------------------------------------- the trial
@_jit
def _fill(A, B, X, Q):
    now = X[X_F, F_NOW]
    if Q[Q_S, S_ARMED] == 0:
        _catch_up(A, X, Q, now)
        if Q[Q_S, S_STATUS] != ST_OK:
            return
    while Q[Q_S, S_FIN] == 0:
        if Q[Q_S, S_WH] < Q[Q_S, S_WT] and X[X_WDL, Q[Q_S, S_WH]] < now:
            _purge(X, Q, now)
        if Q[Q_S, S_WH] == Q[Q_S, S_WT]:
            break
        if not Q[Q_CFREE, Q[Q_S, S_CUR]] > 0:
            break
        Q[Q_S, S_WH] += 1                         # w.popleft()
        _enroll(A, B, X, Q)
        if Q[Q_S, S_STATUS] != ST_OK:
            return
    if Q[Q_S, S_ARMED] == 0:
        _arm(A, X, Q)


@_jit
def _open(T, A, X, Q):
    node = Q[Q_S, S_NODE]
    if T[node, T_STOP] != 0:                      # _finish
        Q[Q_S, S_FIN] = 1
        X[X_F, F_TEND] = X[X_F, F_NOW]
        _close(A, X, Q, X[X_F, F_TEND])
        if Q[Q_S, S_STATUS] != ST_OK:
            return
        _push(X, Q, X[X_F, F_NOW], _STOPM, 0)
        return
    c = Q[Q_S, S_CUR] + 1
    if c >= Q[Q_PI, P_NC]:
        Q[Q_S, S_STATUS] = ST_MORE
        return
    Q[Q_S, S_CUR] = c
    Q[Q_CDOSE, c] = T[node, T_DOSE]
    Q[Q_CSIZE, c] = T[node, T_SIZE]
    Q[Q_CFREE, c] = T[node, T_SIZE]
    Q[Q_CACT, c] = 0
    Q[Q_CDONE, c] = 0


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
    Q[Q_PCO, j] = c
    Q[Q_PDOSE, j] = Q[Q_CDOSE, c]
    X[X_PINF, j] = -1.0
    Q[Q_PST, j] = _PIPELINE
    X[X_PREL, j] = -1.0
    Q[Q_S, S_NPAT] = j + 1
    Q[Q_S, S_INFL] += 1
    f = B[B_FAILAT, j]
    if 0 <= f and f < Q[Q_PI, P_GATE]:
        Q[Q_PST, j] = _FAILED
        _push(X, Q, now + A[A_FAILDAYS, j], _END, j)
    elif Q[Q_PI, P_GATED] == 0:
        _infuse(A, B, X, Q, j, A[A_PRE, j] + A[A_POST, j])
    else:
        _gate_enter(A, B, X, Q, j)


@_jit
def _infuse(A, B, X, Q, j, delay):
    now = X[X_F, F_NOW]
    X[X_PINF, j] = now + delay
    Q[Q_S, S_TREAT] += 1
    if B[B_DROP, j] != 0:
        Q[Q_PST, j] = _DROPPED
        _push(X, Q, now + (delay + A[A_DROPDAY, j]), _END, j)
    else:
        Q[Q_PST, j] = _COMPLETE
        _push(X, Q, now + (delay + X[X_PF, PF_WINDOW]), _END, j)


@_jit
def _after_gate(A, B, X, Q, j, wait):
    if B[B_FAILAT, j] >= Q[Q_PI, P_GATE]:
        Q[Q_PST, j] = _FAILED
        now = X[X_F, F_NOW]
        _push(X, Q, now + (wait + A[A_FAILDAYS, j] - A[A_PRE, j]), _END, j)
        return
    _infuse(A, B, X, Q, j, wait + A[A_POST, j])


# ---------------------------------------------------------------- the gate
@_jit
def _group(Q, j):
    """The spacing group of patient j: its cohort (``stagger_scope: every_cohort``) or dose."""
    if Q[Q_PI, P_BYCOH] != 0:
        return Q[Q_PCO, j] + Q[Q_PI, P_K]
    return Q[Q_PDOSE, j]


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


# ---------------------------------------------------------------- end of a path
@_jit
def _on_end(T, A, B, X, Q, j):
    Q[Q_S, S_INFL] -= 1
    if X[X_PREL, j] >= 0:
        Q[Q_S, S_INFU] -= 1
        if Q[Q_S, S_QH] < Q[Q_S, S_QT]:
            _admit(A, B, X, Q)
            if Q[Q_S, S_STATUS] != ST_OK:
                return
    st = Q[Q_PST, j]
    c = Q[Q_PCO, j]
    if st == _COMPLETE:
        Q[Q_CDONE, c] += 1
        if Q[Q_CDONE, c] == Q[Q_CSIZE, c]:
            _complete(T, A, B, X, Q, c)
        return
    if st == _FAILED:
        Q[Q_S, S_PHASE] += 1
        if Q[Q_MANUF, B[B_FAILAT, j]] != 0:
            Q[Q_S, S_MANUF] += 1
    else:
        Q[Q_S, S_DROP] += 1
    Q[Q_CACT, c] -= 1
    Q[Q_CFREE, c] += 1
    if Q[Q_S, S_FIN] == 0:
        _fill(A, B, X, Q)


@_jit
def _complete(T, A, B, X, Q, c):
    Q[Q_CDONE, c] = 0
    pd = X[X_P, Q[Q_CDOSE, c]]
    k = Q[Q_S, S_NTOX]
    ne = Q[Q_PI, P_NE]
    y = 0
    for _ in range(Q[Q_CSIZE, c]):
        if k >= ne:
            Q[Q_S, S_STATUS] = ST_MORE            # more evaluable patients than pre-drawn
            return
        if A[A_U, k] < pd:
            y += 1
        k += 1
    Q[Q_S, S_NTOX] = k
    nxt = T[Q[Q_S, S_NODE], T_SUCC + y]
    if nxt < 0:
        Q[Q_S, S_STATUS] = ST_NODE                # a state beyond the table
        Q[Q_S, S_NEEDY] = y
        return
    Q[Q_S, S_NODE] = nxt
    delay = X[X_PF, PF_REVIEW]
    if delay > 0:
        _push(X, Q, X[X_F, F_NOW] + delay, _DECIDE, 0)
    else:
        _decide(T, A, B, X, Q)


@_jit
def _decide(T, A, B, X, Q):
    k = Q[Q_S, S_NDT]
    if k >= Q[Q_PI, P_DCAP]:
        Q[Q_S, S_STATUS] = ST_MORE
        return
    X[X_DTS, k] = X[X_F, F_NOW] - X[X_F, F_FIRST]
    Q[Q_S, S_NDT] = k + 1
    _open(T, A, X, Q)
    if Q[Q_S, S_STATUS] != ST_OK:
        return
    if Q[Q_S, S_FIN] == 0:
        _fill(A, B, X, Q)


@_jit
def _run_trial(T, A, B, X, Q):
    for k in range(N_S):
        if k != S_NELIG:
            Q[Q_S, k] = 0
    for k in range(Q.shape[1]):
        Q[Q_SEENH, k] = 0
    X[X_F, F_NOW] = 0.0
    X[X_F, F_FIRST] = 0.0
    X[X_F, F_TEND] = 0.0
    X[X_F, F_ATLAST] = A[A_AT, Q[Q_PI, P_NA] - 1]
    Q[Q_S, S_CUR] = -1
    Q[Q_S, S_NODE] = 0                            # _start: the root; _open(its decision)
    _open(T, A, X, Q)
    if Q[Q_S, S_STATUS] != ST_OK:
        return
    _arm(A, X, Q)
    if Q[Q_S, S_STATUS] != ST_OK:
        return
    if Q[Q_S, S_FIN] == 0:
        while True:
            if Q[Q_S, S_HN] == 0:
                Q[Q_S, S_STATUS] = ST_MORE        # (the Python path raises: let it)
                return
            kind, arg = _pop(X, Q)
            if kind == _STOPM:
                break
            if kind == _END:
                _on_end(T, A, B, X, Q, arg)
            elif kind == _READY:
                _on_ready(T, A, B, X, Q)
            elif kind == _ARRIVE:
                t = Q[Q_S, S_QT]
                Q[Q_GQ, t] = arg
                Q[Q_S, S_QT] = t + 1
                _admit(A, B, X, Q)
            elif kind == _RELEASE:
                _after_gate(A, B, X, Q, arg, 0.0)
            else:                                  # _DECIDE
                _decide(T, A, B, X, Q)
            if Q[Q_S, S_STATUS] != ST_OK:
                return
    # _count_arrivals(t_end): the arrivals up to t_end, all within the drawn ones
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
def run_block(T, PI, PF, manuf, p, ready, n_elig, at, failed, fail_at, drop, drop_day, pre,
              post, fail_days, u, o_int, o_float, o_dts):
    """Run the block's trials (rows of the pre-drawn arrays); per trial ``o_int``: status,
    final node, then the counts (see ``simulate``), ``o_float``: end day, first enrollment
    day, ``o_dts``: the decision days."""
    m = ready.shape[0]
    NP = PI[P_NP]
    NA = PI[P_NA]
    NE = PI[P_NE]
    K = PI[P_K]
    W = max(NA, NP, NE, PI[P_HCAP], PI[P_NC] + K, PI[P_DCAP], N_S, N_PI, 8, manuf.size,
            p.size)
    A = np.zeros((N_A, W))
    B = np.zeros((N_B, W), dtype=np.int64)
    X = np.zeros((N_X, W))
    Q = np.zeros((N_Q, W), dtype=np.int64)
    for k in range(PI.size):
        Q[Q_PI, k] = PI[k]
    for k in range(PF.size):
        X[X_PF, k] = PF[k]
    for k in range(p.size):
        X[X_P, k] = p[k]
    for k in range(manuf.size):
        Q[Q_MANUF, k] = manuf[k]
    for r in range(m):
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
            B[B_DROP, k] = drop[r, k]
        for k in range(NE):
            A[A_U, k] = u[r, k]
        Q[Q_S, S_NELIG] = n_elig[r]
        _run_trial(T, A, B, X, Q)
        o_int[r, 0] = Q[Q_S, S_STATUS]
        if Q[Q_S, S_STATUS] == ST_NODE:           # (the state to enumerate next)
            o_int[r, 1] = Q[Q_S, S_NODE]
            o_int[r, 2] = Q[Q_S, S_NEEDY]
        if Q[Q_S, S_STATUS] != ST_OK:
            continue
        o_int[r, 1] = Q[Q_S, S_NODE]
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
        o_float[r, 0] = X[X_F, F_TEND]
        o_float[r, 1] = X[X_F, F_FIRST]
        for k in range(Q[Q_S, S_NDT]):
            o_dts[r, k] = X[X_DTS, k]


#: the compiled entry itself (what take_compile_turn asks about, even where tests wrap
#: ``run_block`` to count its calls)
_ENTRY = run_block


# ---------------------------------------------------------------- the driver
_N_OUT_INT = 14


def _params(setup, na: int, npat: int, ne: int):
    c = setup.conduct
    PI = np.array([setup.gate, int(setup.gated), int(c.stagger_scope == "every_cohort"),
                   int(c.stagger_mode == "all"), int(setup.known_release),
                   -1 if setup.cap is None else int(setup.cap), int(setup.leave), npat, na,
                   ne, setup.K, 2 * npat + 16, npat + 2, npat + 2], dtype=np.int64)
    PF = np.array([float(setup.window), float(setup.stagger), float(setup.max_wait),
                   float(setup.review.days)])
    manuf = np.array(list(setup.manufacturing) + [False], dtype=np.bool_)
    p = np.array(setup.p, dtype=np.float64)
    return PI, PF, manuf, p


class _Block:
    """One block's pre-drawn numbers as arrays: the streams, draw indices and block sizes
    of :class:`~.fast.LeanChunkDraws` (so the same numbers), without per-trial lists."""

    def __init__(self, plan, trials, na, npat, ne):
        self.plan = plan
        self.trials = trials
        gaps, failed, sdays = plan.arrivals(trials, 0, na)
        at = plan.times(np.cumsum(gaps, axis=1))
        days, happens, fail_at, drop, drop_day, pre, post, fail_days = plan.patients(
            trials, 0, npat)
        u, onset, _ = plan.evaluable(trials, 0, ne)
        ready = at + sdays
        order = np.argsort(np.where(failed, np.inf, ready), axis=1, kind="stable")
        self.ready = np.take_along_axis(ready, order, axis=1)
        self.order = order
        self.n_elig = (~failed).sum(axis=1)
        self.at, self.failed, self.sdays = at, failed, sdays
        self.days, self.happens = days, happens
        self.pat = (fail_at.astype(np.int64, copy=False), drop, drop_day, pre, post,
                    fail_days)
        self.u, self.onset = u, onset

    def python_trial(self, setup, r: int):
        """The r-th trial on the Python fast path (as LeanChunkDraws.trial feeds it)."""
        from .draws import TrialDraws
        from .fast import ClassicTrial
        fail_at, drop, drop_day, pre, post, fail_days = [a[r].tolist() for a in self.pat]
        d = TrialDraws(self.plan, int(self.trials[r]), None, None, None, self.days[r],
                       self.happens[r], fail_at, drop, drop_day, pre, post, fail_days,
                       self.u[r].tolist(), self.onset[r].tolist())
        ne = int(self.n_elig[r])
        rq = list(zip(self.ready[r, :ne].tolist(), self.order[r, :ne].tolist()))
        t = ClassicTrial(setup, d, (rq, self.at[r], self.failed[r], self.sdays[r])).run()
        t.release()                      # (drops its heap and bound handlers: no cycle)
        return t


def _growing(table: Table, n0: int, trials: int) -> bool:
    """The table is large and grew by more than DECLINE_GROWTH states per trial of the block
    since it had ``n0`` states."""
    return len(table) > DECLINE_STATES and len(table) - n0 > DECLINE_GROWTH * trials


def simulate(setup, plan, trials: np.ndarray, na: int, npat: int, ne: int, block: int,
             int_cols) -> Dict[str, Any]:
    """The per-trial columns of ``simulate_des_trials`` for ``trials`` (see the module
    docstring); ``plan``: the fast path's draw plan; ``block``: trials per block."""
    try:
        return _simulate(setup, plan, trials, na, npat, ne, block, int_cols)
    finally:
        _end_compile_turn()


def _simulate(setup, plan, trials, na, npat, ne, block, int_cols):
    from .draws import HORIZON_DAYS, past_horizon
    table = table_for(setup)
    PI, PF, manuf, p = _params(setup, na, npat, ne)
    m = trials.size
    o_int = np.zeros((m, _N_OUT_INT), dtype=np.int64)
    o_float = np.zeros((m, 2))
    o_dts = np.zeros((m, npat + 2))
    py: Dict[int, Any] = {}                  # row -> Python trial (the kernel's fallbacks)
    for b in range(0, m, block):
        rows = slice(b, min(m, b + block))
        tr = trials[rows].astype(np.uint64)
        blk = _Block(plan, tr, na, npat, ne)
        fa, dr, dd, pre, post, fd = blk.pat
        ins = (blk.ready, blk.n_elig, blk.at, blk.failed, fa, dr, dd, pre, post, fd, blk.u)
        n0 = len(table)
        if table.declined:                       # (the rest of this call: Python)
            o_int[rows, 0] = ST_MORE
            again = np.zeros(0, dtype=np.int64)
        else:
            run_block(table.T, PI, PF, manuf, p, *ins, o_int[rows], o_float[rows],
                      o_dts[rows])
            # trials reaching a state beyond the table: enumerate its successors, run them
            # again (all such trials of the block in one call, until none is left or the
            # table is full)
            again = np.flatnonzero(o_int[rows, 0] == ST_NODE)
        while again.size:
            if _growing(table, n0, tr.size):
                break                            # (left to Python; the design declined)
            grown = np.array([table.expand(int(k)) for k in o_int[b + again, 1]], dtype=bool)
            again = again[grown]
            if not again.size:
                break
            sub_int = np.zeros((again.size, _N_OUT_INT), dtype=np.int64)
            sub_float = np.zeros((again.size, 2))
            sub_dts = np.zeros((again.size, o_dts.shape[1]))
            run_block(table.T, PI, PF, manuf, p, *[a[again] for a in ins], sub_int,
                      sub_float, sub_dts)
            o_int[b + again], o_float[b + again], o_dts[b + again] = sub_int, sub_float, \
                sub_dts
            again = again[sub_int[:, 0] == ST_NODE]
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
        if not table.declined and ((tr.size >= 100 and n_py > DECLINE_PYTHON * tr.size)
                                   or _growing(table, n0, tr.size)):
            table.declined = True
            _log.info("calendar kernel: %d of %d trials needed more pre-drawn numbers, and "
                      "the design's table grew by %d states to %d; this design's trials run "
                      "on the Python fast path from now on", n_py, tr.size, len(table) - n0,
                      len(table))
    return _columns(setup, table, trials, o_int, o_float, o_dts, py, int_cols)


def _columns(setup, table: Table, trials, o_int, o_float, o_dts, py, int_cols):
    """The columns of ``_collect`` (same keys, dtypes and values)."""
    m = trials.size
    nan = float("nan")
    node = o_int[:, 1].copy()
    ok = o_int[:, 0] == ST_OK
    node[~ok] = 0
    mtd = table.mtd(node)
    stop_code = table.stop_code[node]
    n = table.n[node]
    y = table.y[node]
    t_end, fe = o_float[:, 0], o_float[:, 1]
    has_first = o_int[:, 13] != 0
    duration = np.where(has_first, t_end - fe, 0.0)
    first = np.where(has_first, fe, nan)
    ndt = o_int[:, 12]
    ttfd = np.where(ndt > 0, o_dts[:, 0], nan)
    ints = {c: np.zeros(m, dtype=np.int64) for c in int_cols}
    cols = {"n_enrolled": 2, "n_treated": 3, "n_manufacturing_failures": 4,
            "n_phase_failures": 5, "n_dropouts": 6, "n_lost": 7, "n_waiting_max": 8,
            "n_waiting_at_close": 9, "n_screened": 10, "n_screen_failed": 11,
            "n_decisions": 12}
    for name, k in cols.items():
        ints[name][:] = o_int[:, k]
    ints["n_evaluable"][:] = n.sum(axis=1)
    reasons = table.reason
    states = [table.states[k] for k in node.tolist()]
    stop_reason = np.empty(m, dtype=object)
    stop_reason[:] = [None if reasons[k] is None else reasons[k].value
                      for k in node.tolist()]
    dtimes = [o_dts[r, :k].copy() for r, k in enumerate(ndt.tolist())]
    if py:
        from . import trial_row             # (the package imports this module lazily)
        cols = {"mtd": mtd, "stop_code": stop_code, "stop_reason": stop_reason, "n": n,
                "y": y, "duration_days": duration, "first_enrollment_day": first,
                "time_to_first_decision_days": ttfd}
    for r, t in py.items():                 # the trials run on the Python fast path
        states[r], dtimes[r] = trial_row(setup, t, r, cols, ints)
    out: Dict[str, Any] = {"trial": trials.copy()}
    out.update(mtd=mtd, stop_code=stop_code, stop_reason=stop_reason, n=n, y=y,
               dlt=y.copy(), duration_days=duration, first_enrollment_day=first,
               time_to_first_decision_days=ttfd, **ints)
    out["decision_times"] = dtimes
    out["final_state"] = states
    out["patients"] = None
    return out

