"""The memoised state graph of a time-free design.

Each distinct ``TrialState`` gets an integer id.  For every id we store the design's decision
(dose and cohort size, or stop) and, lazily, the transition to the next state for each possible
number of DLTs in the cohort.  The vectorised engine walks thousands of trials through this
graph with array look-ups; exact enumeration walks it with probabilities.  ``decide`` is
therefore called once per distinct state, and both methods use exactly the same decisions.
"""
from __future__ import annotations

import threading
from typing import Dict, List, Optional

import numpy as np

from ..designs.base import Design
from ..types import STOP_CODES, STOP_INDEX, StopReason, TrialState



class StateGraph:
    """Growable graph of trial states for one design."""

    def __init__(self, design: Design, max_states: int = 5_000_000):
        self.design = design
        self.K = design.n_doses
        self.C = int(design.max_cohort_size)
        self.max_states = max_states
        self.states: List[TrialState] = []
        self.index: Dict[object, int] = {}  # canonical key -> id
        cap = 1024
        self.dose = np.full(cap, -1, dtype=np.int32)       # next dose, -1 = stop
        self.size = np.zeros(cap, dtype=np.int32)          # next cohort size
        self.total_n = np.zeros(cap, dtype=np.int64)
        self.stop_code = np.zeros(cap, dtype=np.int8)
        self.trans = np.full((cap, self.C + 1), -1, dtype=np.int32)
        self._mtd = np.full(cap, -2, dtype=np.int32)       # -2 unknown, -1 none
        # Growing the graph (new states, transitions, the lazily computed MTDs) happens under
        # this lock, so one graph can be shared by threads.  Readers need no lock: a state's
        # arrays are written before any transition points to it, and a transition not yet
        # visible (-1) sends the reader to the locked path, which looks again.
        self._lock = threading.RLock()
        self.add(TrialState.empty(self.K))

    # -- construction -------------------------------------------------------------------
    def _grow(self) -> None:
        cap = 2 * len(self.dose)
        if cap > self.max_states * 2:
            raise RuntimeError(f"state graph exceeds {self.max_states} states")

        def grow(a, fill):
            b = np.full((cap,) + a.shape[1:], fill, dtype=a.dtype)
            b[: len(a)] = a
            return b

        self.dose = grow(self.dose, -1)
        self.size = grow(self.size, 0)
        self.total_n = grow(self.total_n, 0)
        self.stop_code = grow(self.stop_code, 0)
        self.trans = grow(self.trans, -1)
        self._mtd = grow(self._mtd, -2)

    def add(self, state: TrialState) -> int:
        with self._lock:
            return self._add(state)

    def _add(self, state: TrialState) -> int:
        key = self.design.canonical(state)
        sid = self.index.get(key)
        if sid is not None:
            return sid
        sid = len(self.states)
        if sid >= len(self.dose):
            self._grow()
        dec = self.design.decide(state)
        if dec.stop:
            self.dose[sid] = -1
            self.size[sid] = 0
            self.stop_code[sid] = STOP_INDEX[dec.stop_reason or StopReason.RULE_COMPLETE]
        else:
            if not 0 <= dec.dose < self.K:
                raise RuntimeError(f"{self.design!r} returned dose {dec.dose} for {state}")
            if not 1 <= dec.cohort_size <= self.C:
                raise RuntimeError(f"{self.design!r} returned cohort size {dec.cohort_size} "
                                   f"(max_cohort_size {self.C}) for {state}")
            self.dose[sid] = dec.dose
            self.size[sid] = dec.cohort_size
        self.total_n[sid] = state.total_n
        self.states.append(state)
        self.index[key] = sid
        return sid

    def successor(self, sid: int, y: int) -> int:
        nxt = int(self.trans[sid, y])
        if nxt < 0:
            with self._lock:
                nxt = int(self.trans[sid, y])
                if nxt < 0:
                    st = self.states[sid]
                    nxt = self._add(st.add_cohort(int(self.dose[sid]), int(self.size[sid]),
                                                  int(y)))
                    self.trans[sid, y] = nxt
        return nxt

    def step(self, sids: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Vectorised transition of states ``sids`` after cohorts with ``ys`` DLTs."""
        nxt = self.trans[sids, ys]
        missing = nxt < 0
        if missing.any():
            pairs = np.unique(sids[missing].astype(np.int64) * (self.C + 1) + ys[missing])
            for p in pairs.tolist():
                self.successor(p // (self.C + 1), p % (self.C + 1))
            nxt = self.trans[sids, ys]
        return nxt

    # -- terminal information ---------------------------------------------------------------
    def mtd(self, sid: int) -> Optional[int]:
        m = int(self._mtd[sid])
        if m == -2:
            with self._lock:
                r = self.design.select_mtd(self.states[sid])
                m = -1 if r is None else int(r)
                self._mtd[sid] = m
        return None if m < 0 else m

    def stop_reason(self, sid: int) -> Optional[StopReason]:
        return STOP_CODES[int(self.stop_code[sid])]

    @property
    def n_states(self) -> int:
        return len(self.states)


_GRAPHS: Dict[Design, StateGraph] = {}
_GRAPHS_LOCK = threading.Lock()


def graph_for(design: Design) -> StateGraph:
    """The process-wide cached graph of ``design`` (designs are hashable values).

    Safe to call from several threads: they get the same graph, which locks its own growth.
    """
    with _GRAPHS_LOCK:
        g = _GRAPHS.get(design)
        if g is None:
            if len(_GRAPHS) > 64:
                _GRAPHS.clear()
            g = _GRAPHS[design] = StateGraph(design)
        return g
