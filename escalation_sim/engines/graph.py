"""The memoised state graph of a time-free design.

Each distinct trial state (distinct by ``design.canonical``) gets an integer id.  For every id
the graph stores, in numpy arrays, the state itself (patients and DLTs per dose, the current
dose, the last cohort), the design's decision (dose and cohort size, or stop code), the MTD of
a stopped trial and, as they are needed, the transitions ``trans[id, y]`` to the next state
after a cohort with ``y`` DLTs (for a score design such as gBOIN, ``y`` is the cohort's sum of
integer score units, 0 .. cohort size x ``unit_scale``; for a toxicity-and-efficacy design,
``Outcome.JOINT``, ``y`` is the code of the cohort's (DLTs, responders, patients with both),
a dense index of the C(c + 3, 3) possible outcomes of cohorts of up to c patients, and the
graph also stores the responders ``e`` and the "both" counts ``b`` per dose; :func:`joint_code`).  The vectorised engine walks thousands of trials through this
graph with array look-ups; exact enumeration walks it with probabilities.  ``decide`` and
``select_mtd`` are therefore called once per distinct state, and both methods use exactly the
same decisions.

Growth is batched: the transitions a walk finds missing are created together, so the Python
work per new state is one ``TrialState``, one ``canonical`` key, one ``decide`` (and one
``select_mtd`` if the trial stops there).  New states are decided in the order of their counts,
so designs that cache per-count work (CRM's posterior fits) find states with equal counts one
after the other.

A toxicity-and-efficacy design with batch rules (``Design.exact_rules``,
:mod:`escalation_sim.designs.batch_obd`) grows faster: its children are looked up by integer
keys computed on arrays (equal exactly when the canonical keys are) and its new states are
decided in one batch, with no ``JointState`` built (:attr:`StateGraph.batch_rules`); the
graph is the same, state for state.

Memory: the states live in the arrays (about 60 bytes per state for 6 doses), not as Python
objects; ``graph.states[sid]`` rebuilds a ``TrialState`` on demand.  The only Python objects per
state are the canonical keys of the look-up index, kept per *level* (total patients).  A state
can only lead to states with more patients, so once every state below a level has all its
transitions, that level's index is never consulted again and can be dropped
(:meth:`StateGraph.release_index`; exact enumeration does so as it sweeps).  A dropped level
is rebuilt from the arrays if it is ever needed, so dropping changes speed, never results.

Sharing: graphs are cached per design for the process (:func:`graph_for`).  A graph pickles
compactly (arrays only, trimmed to the used states; the index is rebuilt lazily on the other
side), so a parent can hand the graph it built to worker processes, which install it with
:func:`install_graph` and then find it through :func:`graph_for` for every chunk and design.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..designs.base import Design, Outcome
from ..types import STOP_CODES, STOP_INDEX, JointState, StopReason, TrialState

log = logging.getLogger(__name__)

#: counts are stored as int16 (55 bytes per state with 6 doses and cohorts of 3): a trial may
#: have at most this many patients
MAX_PATIENTS = int(np.iinfo(np.int16).max)

#: ``graph.states[sid]`` keeps at most this many rebuilt states (those of stopped trials,
#: which tallies ask for again and again)
_STATE_CACHE = 1 << 18

#: transitions created per pass of the Python loop (bounds its temporary objects)
_SLICE = 1 << 15

_STATE_ARRAYS = ("n", "y", "e", "b", "cur", "last_n", "last_y", "dose", "size", "total_n",
                 "stop_code", "trans", "_mtd")


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while a graph grows.

    Growth allocates millions of short-lived acyclic objects (states, keys); each burst of
    allocations made the collector rescan every live container, which cost a third of the
    build time.  Nothing allocated here forms a cycle, so reference counting frees it all.
    The collector is switched back on only if it was on.
    """
    was = gc.isenabled()
    if was:
        gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def unit_scale_of(design: Design) -> int:
    """Units one patient can add to ``y``: 1 for a binary design (a DLT), the design's
    ``unit_scale`` for a score design (``Outcome.SCORE``)."""
    if design.outcome is Outcome.SCORE:
        L = int(design.unit_scale)
        if L < 1:
            raise ValueError(f"{design!r}: unit_scale must be >= 1 (got {L})")
        return L
    return 1


def is_joint(design: Design) -> bool:
    """True for a toxicity-and-efficacy design (``Outcome.JOINT``)."""
    return design.outcome is Outcome.JOINT


_JOINT_TABLES: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}


def _joint_tables(max_cohort: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(index, outcomes)``: ``index[t, r, b]`` is the dense code of a cohort outcome (-1 if
    impossible) and ``outcomes[code]`` its ``(t, r, b)``; codes list the C(C + 3, 3) outcomes
    of cohorts of up to C = ``max_cohort`` patients (b <= min(t, r), t + r - b <= C)."""
    tab = _JOINT_TABLES.get(max_cohort)
    if tab is None:
        C = max_cohort
        index = np.full((C + 1, C + 1, C + 1), -1, dtype=np.int64)
        outs = []
        for b in range(C + 1):
            for t in range(b, C + 1):
                for r in range(b, C + 1 + b - t):
                    index[t, r, b] = len(outs)
                    outs.append((t, r, b))
        tab = _JOINT_TABLES[max_cohort] = (index, np.array(outs, dtype=np.int64))
    return tab


def joint_code_count(max_cohort: int) -> int:
    """The number of transition codes of a joint design: C(C + 3, 3) (20 for C = 3)."""
    return len(_joint_tables(max_cohort)[1])


def joint_code(t, r, b, max_cohort: int):
    """The transition code of a cohort with ``t`` DLTs, ``r`` responders and ``b`` patients
    with both (arrays or ints; a dense index of the possible outcomes, :func:`_joint_tables`)."""
    return _joint_tables(max_cohort)[0][t, r, b]


def joint_decode(code, max_cohort: int):
    """``(t, r, b)`` of a transition code (:func:`joint_code`)."""
    o = _joint_tables(max_cohort)[1][code]
    return o[..., 0], o[..., 1], o[..., 2]


class _StateView(Sequence):
    """``graph.states[sid]``: the representative ``TrialState`` of a state id (rebuilt)."""

    def __init__(self, graph: "StateGraph"):
        self._g = graph

    def __len__(self) -> int:
        return self._g.n_states

    def __getitem__(self, sid):  # type: ignore[override]
        try:  # fast path: stopped trials, which tallies look up chunk after chunk
            return self._g._state_cache[sid]
        except (KeyError, TypeError):
            pass
        if isinstance(sid, slice):
            return [self._g.state(i) for i in range(*sid.indices(len(self)))]
        sid = int(sid)
        if sid < 0:
            sid += len(self)
        if not 0 <= sid < len(self):
            raise IndexError(f"state id {sid} outside 0..{len(self) - 1}")
        return self._g._cached_state(sid)

    def __iter__(self) -> Iterator[TrialState]:
        for i in range(len(self)):
            yield self._g.state(i)


class StateGraph:
    """Growable graph of trial states for one design (see the module docstring)."""

    #: decide new states of a toxicity-and-efficacy design in batches with the design's
    #: ``exact_rules`` when it has them (:attr:`batch_rules`); False: one ``decide`` call per
    #: state (the reference, for tests)
    batch_decisions = True

    def __init__(self, design: Design, max_states: int = 50_000_000):
        self.design = design
        self.K = int(design.n_doses)
        self.C = int(design.max_cohort_size)
        #: units per patient: 1 for binary designs (y counts DLTs), the design's unit_scale
        #: for score designs (y sums score units); a cohort adds 0..W = C * L to y
        self.L = unit_scale_of(design)
        self._set_joint()
        self.max_states = max_states
        self._alloc(1024)
        self._n = 0
        # canonical key -> id, one dictionary per level (total patients); levels whose
        # dictionary was dropped are rebuilt from the arrays on demand
        self._levels: Dict[int, Dict[Any, int]] = {}
        self._released: Set[int] = set()
        self._state_cache: Dict[int, TrialState] = {}
        self._tuples: Dict[tuple, tuple] = {}   # interned count vectors of the live levels
        #: ``states[sid]``: the representative ``TrialState`` of a state id (rebuilt on demand)
        self.states = _StateView(self)
        # build_seconds: time spent growing the graph, of which design_seconds in the
        # design's decide / select_mtd; transitions: (state, DLT count) pairs created
        self.stats: Dict[str, float] = {"build_seconds": 0.0, "design_seconds": 0.0,
                                        "transitions": 0, "index_rebuilds": 0}
        # Growing the graph (new states, transitions, index levels) happens under this lock,
        # so one graph can be shared by threads.  Readers need no lock: a state's arrays are
        # written before any transition points to it, the arrays are swapped for larger ones
        # with ``trans`` last, and a transition not yet visible (-1) sends the reader to the
        # locked path, which looks again.
        self._lock = threading.RLock()
        self._set_keys()
        self.add(JointState.empty(self.K) if self.joint else TrialState.empty(self.K))

    def _set_joint(self) -> None:
        """``W`` (the largest transition code) and ``KE`` (doses with response counts: K for
        a joint design, 0 otherwise, so other designs store nothing more)."""
        self.joint = is_joint(self.design)
        if self.joint:
            self.W = joint_code_count(self.C) - 1
            self.KE = self.K
        else:
            self.W = self.C * self.L
            self.KE = 0

    # -- storage ------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        # np.empty: the pages of unused capacity are not touched, so they cost no memory;
        # every field of a state is written when the state is added (``_write``)
        K = self.K
        self.n = np.empty((cap, K), dtype=np.int16)       # patients per dose
        self.y = np.empty((cap, K), dtype=np.int16)       # DLTs per dose
        self.e = np.empty((cap, self.KE), dtype=np.int16)  # joint designs: responders
        self.b = np.empty((cap, self.KE), dtype=np.int16)  # joint designs: DLT and response
        self.cur = np.empty(cap, dtype=np.int16)          # current dose, -1 = none yet
        self.last_n = np.empty(cap, dtype=np.int16)       # last cohort: patients
        self.last_y = np.empty(cap, dtype=np.int16)       # last cohort: DLTs
        self.dose = np.empty(cap, dtype=np.int16)         # next dose, -1 = stop
        self.size = np.empty(cap, dtype=np.int16)         # next cohort size
        self.total_n = np.empty(cap, dtype=np.int16)      # patients so far
        self.stop_code = np.empty(cap, dtype=np.int8)
        self._mtd = np.empty(cap, dtype=np.int16)         # -2 unknown, -1 none
        self.trans = np.empty((cap, self.W + 1), dtype=np.int32)  # -1: not created yet

    def _grow(self, need: int) -> None:
        cap = len(self.dose)
        if need <= cap:
            return
        if need > self.max_states:
            raise RuntimeError(f"state graph of {self.design!r} exceeds {self.max_states} states")
        while cap < need:
            cap *= 2
        n = self._n
        for name in _STATE_ARRAYS:  # trans comes after every array a reader looks up by id
            a = getattr(self, name)
            b = np.empty((cap,) + a.shape[1:], dtype=a.dtype)
            b[:n] = a[:n]
            setattr(self, name, b)

    @property
    def n_states(self) -> int:
        return self._n

    def state(self, sid: int) -> TrialState:
        """The representative ``TrialState`` of ``sid`` (a new object each call)."""
        c = int(self.cur[sid])
        if self.joint:
            return JointState(tuple(self.n[sid].tolist()), tuple(self.y[sid].tolist()),
                              None if c < 0 else c, int(self.last_n[sid]),
                              int(self.last_y[sid]), tuple(self.e[sid].tolist()),
                              tuple(self.b[sid].tolist()))
        return TrialState(tuple(self.n[sid].tolist()), tuple(self.y[sid].tolist()),
                          None if c < 0 else c, int(self.last_n[sid]), int(self.last_y[sid]))

    def _cached_state(self, sid: int) -> TrialState:
        st = self._state_cache.get(sid)
        if st is None:
            st = self.state(sid)
            if self.dose[sid] < 0:  # stopped trials are the ones tallies look up repeatedly
                if len(self._state_cache) >= _STATE_CACHE:
                    self._state_cache.clear()
                self._state_cache[sid] = st
        return st


    # -- the index ------------------------------------------------------------------------
    def _level(self, total: int) -> Dict[Any, int]:
        lvl = self._levels.get(total)
        if lvl is None:
            lvl = self._levels[total] = {}
            if total in self._released:
                self._released.discard(total)
                sids = np.flatnonzero(self.total_n[: self._n] == total)
                if self._key_scale is not None:
                    lvl.update(zip(self._int_keys(self.n[sids], self.y[sids], self.e[sids],
                                                  self.b[sids], self.cur[sids],
                                                  self.last_n[sids], self.last_y[sids]).tolist(),
                                   sids.tolist()))
                else:
                    canonical = self.design.canonical
                    for sid in sids.tolist():
                        lvl[canonical(self.state(sid))] = sid
                self.stats["index_rebuilds"] += 1
        return lvl

    def release_index(self, below: int) -> int:
        """Drop the look-up index of every level with at most ``below`` patients.

        Safe at any time (a dropped level is rebuilt if a new transition ever leads into it);
        worth it once every state with fewer than ``below`` patients has all its transitions.
        Returns the number of levels dropped.
        """
        with self._lock:
            gone = [t for t in self._levels if t <= below]
            for t in gone:
                del self._levels[t]
                self._released.add(t)
            if gone:
                self._tuples = {}   # keys still hold theirs; new ones are interned afresh
            return len(gone)

    # -- construction -------------------------------------------------------------------
    def add(self, state: TrialState) -> int:
        """Id of ``state`` (of its canonical class), adding it if it is new."""
        with self._lock:
            t = int(state.total_n)
            if self._key_scale is not None:
                key = int(self._int_keys(
                    np.array([state.n]), np.array([state.y]), np.array([state.e]),
                    np.array([state.b]), np.array([-1 if state.current is None
                                                   else state.current]),
                    np.array([state.last_n]), np.array([state.last_y]))[0])
            else:
                key = self.design.canonical(state)
            lvl = self._level(t)
            sid = lvl.get(key)
            if sid is None:
                sid = self._n
                if self.joint and not isinstance(state, JointState):
                    raise ValueError(f"{self.design!r} counts responses: give it a JointState")
                ee = (np.array([state.e]), np.array([state.b])) if self.joint else (
                    np.empty((1, 0)), np.empty((1, 0)))
                self._write(np.array([state.n]), np.array([state.y]), *ee,
                            np.array([-1 if state.current is None else state.current]),
                            np.array([state.last_n]), np.array([state.last_y]),
                            np.array([t]), np.array([self._decision(state)]))
                lvl[key] = sid
            return sid

    @property
    def batch_rules(self):
        """The design's rules on arrays (:mod:`escalation_sim.designs.batch_obd`) that decide
        the new states of a toxicity-and-efficacy design in batches, or None (another
        design, no patient cap, a rule without batch form, or :attr:`batch_decisions`
        off): the decisions are the scalar ones to the bit either way."""
        if "_batch" not in self.__dict__:
            rules = None
            cap = self.design.max_n
            if self.joint and self.batch_decisions and cap is not None:
                rules = self.design.exact_rules(int(cap))
            self._batch = rules
        return self._batch

    def _set_keys(self) -> None:
        """Integer index keys for a joint design with batch rules (``_key_scale``, else
        None: the design's canonical keys).  A key encodes n per dose in base N + 1, then
        DLTs, responders and (when the design reads them, ``rules.uses_both``) the "both"
        counts per dose each in mixed radix n_d + 1, then the rules' ``key`` (the current
        dose): two states get equal keys exactly when their canonical keys are equal, and
        no ``JointState`` need be built to look a child up."""
        self._key_scale = None
        rules = self.batch_rules
        if rules is None:
            return
        K, cap = self.K, int(self.design.max_n)
        counts = 3 if rules.uses_both else 2
        y_range = int((cap / K + 1) ** K) + 1
        if (cap + 1) ** K * y_range ** counts * rules.key_range < 1 << 62:
            self._key_scale = (cap, y_range, counts)

    def _int_keys(self, n, y, e, b, cur, last_n, last_y) -> np.ndarray:
        """The integer keys (:meth:`_set_keys`) of states given as arrays."""
        cap, y_range, counts = self._key_scale
        i64 = np.int64
        n, y, e, b = (a.astype(i64) for a in (n, y, e, b))
        cur, last_n, last_y = (a.astype(i64) for a in (cur, last_n, last_y))
        radix = np.ones_like(n)
        np.cumprod(n[:, :-1] + 1, axis=1, out=radix[:, 1:])
        key = (n @ ((cap + 1) ** np.arange(self.K, dtype=i64))) * y_range \
            + (y * radix).sum(axis=1)
        key = key * y_range + (e * radix).sum(axis=1)
        if counts == 3:
            key = key * y_range + (b * radix).sum(axis=1)
        return key * self._batch.key_range + self._batch.key(n, y, cur, last_n, last_y, e, b)

    def _batch_decisions(self, cn, cy, ce, cb, d, c, last_t, tot) -> np.ndarray:
        """``(dose, size, stop code, mtd)`` rows of new joint states, from
        :attr:`batch_rules` (what :meth:`_decision` gives state by state), checked."""
        i64 = np.int64
        n, y, e, b = (a.astype(i64) for a in (cn, cy, ce, cb))
        cur, ln, ly = d.astype(i64), c.astype(i64), last_t.astype(i64)
        rules = self._batch
        dose, size, code = rules.decide(n, y, cur, ln, ly, tot.astype(i64), e, b)
        mtd = np.full(dose.size, -2, dtype=i64)
        stop = dose < 0
        if stop.any():
            mtd[stop] = rules.select_mtd(n[stop], y[stop], cur[stop], ln[stop], ly[stop],
                                         e[stop], b[stop])
        go = ~stop
        if ((dose[go] >= self.K).any() or (size[go] < 1).any() or (size[go] > self.C).any()
                or (code[stop] <= 0).any()):
            raise RuntimeError(f"{self.design!r}: batch rules returned an invalid decision")
        return np.column_stack([dose, size, code, mtd])

    def _decision(self, state: TrialState) -> Tuple[int, int, int, int]:
        """``(dose, size, stop code, mtd)`` of a new state, checked; the MTD of a stopped
        trial is computed at once (-2 for a trial that goes on)."""
        dec = self.design.decide(state)
        if dec.stop:
            code = STOP_INDEX[dec.stop_reason or StopReason.RULE_COMPLETE]
            m = self.design.select_mtd(state)
            return -1, 0, code, (-1 if m is None else int(m))
        if not 0 <= dec.dose < self.K:
            raise RuntimeError(f"{self.design!r} returned dose {dec.dose} for {state}")
        if not 1 <= dec.cohort_size <= self.C:
            raise RuntimeError(f"{self.design!r} returned cohort size {dec.cohort_size} "
                               f"(max_cohort_size {self.C}) for {state}")
        return dec.dose, dec.cohort_size, 0, -2

    def _write(self, n, y, e, b, cur, last_n, last_y, total, dec) -> None:
        """Append states (arrays, one row each; ``dec`` rows from :meth:`_decision`)."""
        base = self._n
        k = len(total)
        self._grow(base + k)
        sl = slice(base, base + k)
        self.n[sl] = n
        self.y[sl] = y
        self.e[sl] = e
        self.b[sl] = b
        self.cur[sl] = cur
        self.last_n[sl] = last_n
        self.last_y[sl] = last_y
        self.total_n[sl] = total
        self.dose[sl] = dec[:, 0]
        self.size[sl] = dec[:, 1]
        self.stop_code[sl] = dec[:, 2]
        self._mtd[sl] = dec[:, 3]
        self.trans[sl] = -1
        self._n = base + k

    def _children(self, sids: np.ndarray, ys: np.ndarray):
        """Dose, cohort size, counts (int16) and total of the child of each ``(sid, y)``."""
        d = self.dose[sids].astype(np.int64)
        if (d < 0).any():
            raise RuntimeError(f"state graph of {self.design!r}: a transition was asked from a "
                               "stopped trial")
        c = self.size[sids].astype(np.int64)
        tot = self.total_n[sids].astype(np.int64) + c
        if int(tot.max()) > MAX_PATIENTS:
            raise RuntimeError(f"state graph of {self.design!r}: more than {MAX_PATIENTS} "
                               "patients in a trial")
        rows = np.arange(sids.size)
        cn = self.n[sids]                       # int16 copies (fancy indexing copies)
        cy = self.y[sids]
        ce = self.e[sids]
        cb = self.b[sids]
        cn[rows, d] += c.astype(np.int16)
        if self.joint:
            t, r, bb = joint_decode(ys.astype(np.int64), self.C)
            cy[rows, d] += t.astype(np.int16)
            ce[rows, d] += r.astype(np.int16)
            cb[rows, d] += bb.astype(np.int16)
        else:
            cy[rows, d] += ys.astype(np.int16)
        return d, c, cn, cy, ce, cb, tot

    def _expand(self, sids: np.ndarray, ys: np.ndarray) -> None:
        """Create the transitions ``(sids[i], ys[i])`` still missing (under the lock)."""
        t0 = time.perf_counter()
        todo = self.trans[sids, ys] < 0
        if not todo.all():
            sids, ys = sids[todo], ys[todo]
        del todo
        m = sids.size
        if not m:
            return
        for a in range(0, m, _SLICE):  # slice by slice: bounds the temporary objects
            s, y = sids[a:a + _SLICE], ys[a:a + _SLICE]
            self._expand_slice(s, y, *self._children(s, y))
        self.stats["transitions"] += m
        self.stats["build_seconds"] += time.perf_counter() - t0

    def _expand_slice(self, sids, ys, d, c, cn, cy, ce, cb, tot) -> None:
        if self._key_scale is not None:
            return self._expand_slice_keys(sids, ys, d, c, cn, cy, ce, cb, tot)
        canonical = self.design.canonical
        tuples = self._tuples
        n_t = list(map(tuple, cn.tolist()))
        n_t = list(map(tuples.setdefault, n_t, n_t))   # one tuple object per count vector
        y_t = list(map(tuple, cy.tolist()))
        y_t = list(map(tuples.setdefault, y_t, y_t))
        if self.joint:
            e_t = list(map(tuple, ce.tolist()))
            e_t = list(map(tuples.setdefault, e_t, e_t))
            b_t = list(map(tuple, cb.tolist()))
            b_t = list(map(tuples.setdefault, b_t, b_t))
            last_t = joint_decode(ys.astype(np.int64), self.C)[0]
        else:
            e_t = b_t = [None] * len(n_t)
            last_t = ys
        levels: Dict[int, Dict[Any, int]] = {}
        child: List[int] = []
        new_rows: List[int] = []
        new_states: List[TrialState] = []
        added: List[tuple] = []          # (level dict, key): undone if a design call fails
        nxt = self._n
        try:
            for i, (nt, yt, dd, cc, kk, t, et, bt) in enumerate(zip(
                    n_t, y_t, d.tolist(), c.tolist(), last_t.tolist(), tot.tolist(), e_t, b_t)):
                st = (JointState(nt, yt, dd, cc, kk, et, bt) if et is not None
                      else TrialState(nt, yt, dd, cc, kk))
                key = canonical(st)
                lvl = levels.get(t)
                if lvl is None:
                    lvl = levels[t] = self._level(t)
                sid = lvl.get(key)
                if sid is None:
                    sid = lvl[key] = nxt
                    nxt += 1
                    new_rows.append(i)
                    new_states.append(st)
                    added.append((lvl, key))
                child.append(sid)
            if new_rows:
                t0 = time.perf_counter()
                r = np.array(new_rows, dtype=np.int64)
                if self.batch_rules is not None:
                    dec = self._batch_decisions(cn[r], cy[r], ce[r], cb[r], d[r], c[r],
                                                last_t[r], tot[r])
                else:
                    dec = np.array([self._decision(st) for st in new_states], dtype=np.int64)
                self.stats["design_seconds"] += time.perf_counter() - t0
                self._write(cn[r], cy[r], ce[r], cb[r], d[r], c[r], last_t[r], tot[r], dec)
        except BaseException:
            for lvl, key in added:
                del lvl[key]
            raise
        self.trans[sids, ys] = child

    def _expand_slice_keys(self, sids, ys, d, c, cn, cy, ce, cb, tot) -> None:
        """:meth:`_expand_slice` for a joint design with batch rules: the children are
        looked up by integer keys (:meth:`_set_keys`) computed on arrays, and the new ones
        decided in one batch; the ids come in the same order (first arrival)."""
        last_t = joint_decode(ys.astype(np.int64), self.C)[0]
        keys = self._int_keys(cn, cy, ce, cb, d, c, last_t).tolist()
        levels: Dict[int, Dict[Any, int]] = {}
        child: List[int] = []
        new_rows: List[int] = []
        added: List[tuple] = []
        nxt = self._n
        try:
            for i, (key, t) in enumerate(zip(keys, tot.tolist())):
                lvl = levels.get(t)
                if lvl is None:
                    lvl = levels[t] = self._level(t)
                sid = lvl.get(key)
                if sid is None:
                    sid = lvl[key] = nxt
                    nxt += 1
                    new_rows.append(i)
                    added.append((lvl, key))
                child.append(sid)
            if new_rows:
                t0 = time.perf_counter()
                r = np.array(new_rows, dtype=np.int64)
                dec = self._batch_decisions(cn[r], cy[r], ce[r], cb[r], d[r], c[r],
                                            last_t[r], tot[r])
                self.stats["design_seconds"] += time.perf_counter() - t0
                self._write(cn[r], cy[r], ce[r], cb[r], d[r], c[r], last_t[r], tot[r], dec)
        except BaseException:
            for lvl, key in added:
                del lvl[key]
            raise
        self.trans[sids, ys] = child

    def successor(self, sid: int, y: int) -> int:
        nxt = int(self.trans[sid, y])
        if nxt < 0:
            with self._lock, gc_paused():
                self._expand(np.array([sid], dtype=np.int64), np.array([y], dtype=np.int64))
                nxt = int(self.trans[sid, y])
        return nxt

    def step(self, sids: np.ndarray, ys: np.ndarray, distinct: bool = False) -> np.ndarray:
        """Vectorised transition of states ``sids`` after cohorts with ``ys`` DLTs.

        ``distinct=True`` promises that no ``(sid, y)`` pair repeats (it saves a sort)."""
        nxt = self.trans[sids, ys]
        missing = nxt < 0
        if missing.any():
            s, y = sids, ys
            if not missing.all():
                s, y = s[missing], y[missing]
            if not distinct:
                pairs = np.unique(s.astype(np.int64) * (self.W + 1) + y)
                s, y = pairs // (self.W + 1), pairs % (self.W + 1)
            with self._lock, gc_paused():
                self._expand(s, y)
            nxt = self.trans[sids, ys]
        return nxt

    # -- terminal information ---------------------------------------------------------------
    def mtd(self, sid: int) -> Optional[int]:
        m = int(self._mtd[sid])
        if m == -2:
            with self._lock:
                r = self.design.select_mtd(self.state(sid))
                m = -1 if r is None else int(r)
                self._mtd[sid] = m
        return None if m < 0 else m

    def endings(self, sids: np.ndarray):
        """``(mtd, stop code, n, y)`` of states ``sids`` as int64 arrays (MTD -1: none), the
        vectorised form of ``results.oc.terminal_key`` for per-trial tables."""
        sids = np.asarray(sids, dtype=np.int64)
        mtd = self._mtd[sids].astype(np.int64)
        for j in np.flatnonzero(mtd == -2).tolist():   # trials that did not stop, if asked
            m = self.mtd(int(sids[j]))
            mtd[j] = -1 if m is None else m
        return (mtd, self.stop_code[sids].astype(np.int64), self.n[sids].astype(np.int64),
                self.y[sids].astype(np.int64))

    def stop_reason(self, sid: int) -> Optional[StopReason]:
        return STOP_CODES[int(self.stop_code[sid])]

    # -- sharing ----------------------------------------------------------------------------
    def __getstate__(self) -> Dict[str, Any]:
        """Compact form: the design and the used part of each array; no index, no lock."""
        with self._lock:
            n = self._n
            arrays = {name: getattr(self, name)[:n].copy() for name in _STATE_ARRAYS}
            return {"design": self.design, "max_states": self.max_states, "n_states": n,
                    "arrays": arrays, "stats": dict(self.stats)}

    def __setstate__(self, data: Dict[str, Any]) -> None:
        self.design = data["design"]
        self.K = int(self.design.n_doses)
        self.C = int(self.design.max_cohort_size)
        self.L = unit_scale_of(self.design)
        self._set_joint()
        self.max_states = data["max_states"]
        n = int(data["n_states"])
        self._alloc(max(1024, n))
        self._n = n
        for name, a in data["arrays"].items():
            getattr(self, name)[:n] = a
        self._levels = {}
        self._released = set(np.unique(self.total_n[:n]).tolist())
        self._state_cache = {}
        self._tuples = {}
        self.states = _StateView(self)
        self.stats = dict(data["stats"])
        self._lock = threading.RLock()
        self._set_keys()

    def __repr__(self) -> str:
        return f"<StateGraph of {self.design!r}: {self._n} states>"


_GRAPHS: Dict[Design, StateGraph] = {}
_GRAPHS_LOCK = threading.Lock()
_MAX_GRAPHS = 64


def graph_for(design: Design) -> StateGraph:
    """The process-wide cached graph of ``design`` (designs are hashable values).

    Safe to call from several threads: they get the same graph, which locks its own growth.
    """
    with _GRAPHS_LOCK:
        g = _GRAPHS.get(design)
        if g is None:
            if len(_GRAPHS) > _MAX_GRAPHS:
                _GRAPHS.clear()
            g = _GRAPHS[design] = StateGraph(design)
        return g


def install_graph(graph: StateGraph) -> StateGraph:
    """Make ``graph`` (e.g. unpickled from a parent process) the cached graph of its design.

    A cached graph with at least as many states is kept instead.  Returns the graph
    :func:`graph_for` now gives for that design.
    """
    with _GRAPHS_LOCK:
        have = _GRAPHS.get(graph.design)
        if have is not None and have.n_states >= graph.n_states:
            return have
        if have is None and len(_GRAPHS) > _MAX_GRAPHS:
            _GRAPHS.clear()
        _GRAPHS[graph.design] = graph
        return graph
