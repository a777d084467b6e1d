"""Vectorised time-free cohort engine.

Many trials advance in lockstep: at each step every live trial looks up its next decision in
the design's state graph, the cohort's outcomes are drawn in bulk from the counter-based
``dlt`` stream (patient k of trial t has a DLT at dose d iff u(t, k) < p_d), and the trials
move to their successor states.  Decisions are computed once per distinct state.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..designs.base import Design
from ..randomness import stream_key, uniforms
from .graph import StateGraph, graph_for

BLOCK = 16384  # trials processed together (keeps the working set in cache)

log = logging.getLogger(__name__)


@dataclass
class ChunkTrials:
    """Terminal state id of each trial of a chunk, with the graph that gives them meaning."""

    graph: StateGraph
    trial_start: int
    sids: np.ndarray  # int32, one per trial
    new_states: int = 0          # states this chunk added to the graph (0 once it is built)
    build_seconds: float = 0.0   # time this chunk spent growing the graph (design calls
    #                              included); the rest of the chunk is array work
    seconds: float = 0.0         # the whole chunk


def _walk_block(g: StateGraph, p: np.ndarray, key: int, trials: np.ndarray) -> np.ndarray:
    m = trials.shape[0]
    sid = np.zeros(m, dtype=np.int32)
    alive = np.arange(m)
    steps = 0
    while alive.size:
        s = sid[alive]
        d = g.dose[s]
        keep = d >= 0
        if not keep.all():
            alive, s, d = alive[keep], s[keep], d[keep]
            if not alive.size:
                break
        c = g.size[s]
        base = g.total_n[s].astype(np.uint64)  # patients so far: index of the next draw
        t = trials[alive]
        pd = p[d]
        cmax = int(c.max())
        cmin = int(c.min())
        y = np.zeros(alive.size, dtype=np.int32)
        for j in range(cmax):
            hit = uniforms(key, t, base + np.uint64(j)) < pd
            if j >= cmin:
                hit &= c > j
            y += hit
        sid[alive] = g.step(s, y)
        steps += 1
        if steps > 100_000:  # pragma: no cover - a design that never stops
            raise RuntimeError(f"design {g.design!r} did not stop after {steps} cohorts")
    return sid


def simulate_cohort_chunk(design: Design, p_true: Sequence[float], seed: int,
                          start: int, stop: int) -> ChunkTrials:
    """Simulate trials ``start .. stop-1`` of ``design`` under true DLT rates ``p_true``."""
    p = np.asarray(p_true, dtype=np.float64)
    if p.shape != (design.n_doses,):
        raise ValueError(f"p_true has {p.size} values for {design.n_doses} doses")
    t0 = time.perf_counter()
    g = graph_for(design)
    states0, build0 = g.n_states, g.stats["build_seconds"]
    key = stream_key(seed, "dlt")
    out = np.empty(stop - start, dtype=np.int32)
    for b in range(start, stop, BLOCK):
        e = min(b + BLOCK, stop)
        trials = np.arange(b, e, dtype=np.uint64)
        out[b - start:e - start] = _walk_block(g, p, key, trials)
    # under the threading backend other chunks may grow the same graph meanwhile: the
    # figures are then the graph's growth during this chunk, whoever caused it
    new = g.n_states - states0
    build = g.stats["build_seconds"] - build0
    seconds = time.perf_counter() - t0
    if new:
        log.log(logging.INFO if build >= 1.0 else logging.DEBUG,
                "state graph of %r: %d new states (%d in all) in %.2f s, trials %d..%d",
                design, new, g.n_states, build, start, stop - 1)
    return ChunkTrials(g, start, out, new, build, seconds)
