"""Vectorised time-free cohort engine.

Many trials advance in lockstep: at each step every live trial looks up its next decision in
the design's state graph, the cohort's outcomes are drawn in bulk, and the trials move to their
successor states.  Decisions are computed once per distinct state.

What a patient contributes (patient k of trial t, 0-based treatment order, at dose d):

* binary truth (``truth: {p_dlt}``, no outcome model given): a DLT iff u(t, k) < p_d, u from the
  counter-based ``dlt`` stream (the rule since the first release, bit for bit);
* graded truth (an :class:`~escalation_sim.inputs.truth.OutcomeModel`), binary design: the
  patient's DLT flag under the scenario's ``dlt`` rule (:meth:`OutcomeModel.dlt_flags`);
* graded truth, score design (``Outcome.SCORE``, gBOIN): ``design.score_units[g]`` with g the
  worst grade among the events starting inside the DLT window
  (``PatientOutcomes.worst_grade``);
* toxicity-and-efficacy design (``Outcome.JOINT``: BOIN12, Keyboard phase I/II): the DLT flag
  above (binary or graded truth) and a response iff v(t, k) < q_d, v from the counter-based
  ``efficacy`` stream and q = ``truth.efficacy`` (the draw of
  :meth:`OutcomeModel.outcomes`), independent of the DLT.

Every value is a pure function of ``(seed, trial, patient)`` and the dose, so the same patient
is simulated in every design (common random numbers).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..designs.base import Design, Outcome
from ..inputs.truth import EFFICACY_STREAM
from ..randomness import stream_key, uniforms
from .exact import patient_cap
from .graph import StateGraph, graph_for, joint_code

BLOCK = 16384  # trials processed together (keeps the working set in cache)
#: per-trial patient tables larger than this (patients x doses) are not precomputed
_TABLE_CELLS = 4096

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
    #: score designs only: DLTs per trial and dose (the states count score units)
    dlt: Optional[np.ndarray] = None


def _walk(g: StateGraph, m: int, cohort_y) -> np.ndarray:
    """Walk ``m`` trials through the graph from the empty state; return their terminal ids.

    At each step every live trial's next cohort (dose ``d``, size ``c``) gets its outcome
    from ``cohort_y(alive, s, d, c)``: per live trial, the DLTs (or score units) of the cohort.
    """
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
        sid[alive] = g.step(s, cohort_y(alive, s, d, g.size[s]))
        steps += 1
        if steps > 100_000:  # pragma: no cover - a design that never stops
            raise RuntimeError(f"design {g.design!r} did not stop after {steps} cohorts")
    return sid


def _patient_rows(g: StateGraph, s: np.ndarray, c: np.ndarray):
    """One row per patient of the live trials' next cohorts: the trial's position among the
    live ones and the patient's 0-based treatment index in its trial."""
    c = c.astype(np.int64)
    row = np.repeat(np.arange(c.size), c)
    k = g.total_n[s].astype(np.int64)[row] + np.arange(row.size) - np.repeat(np.cumsum(c) - c, c)
    return row, k


def _walk_block(g: StateGraph, p: np.ndarray, key: int, trials: np.ndarray) -> np.ndarray:
    """Binary truth: patient k of trial t has a DLT at dose d iff ``u(t, k) < p_d``."""
    def cohort_y(alive, s, d, c):
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
        return y
    return _walk(g, trials.shape[0], cohort_y)


def _walk_block_codes(g: StateGraph, lut: np.ndarray, dlt_lut: Optional[np.ndarray],
                      codes: np.ndarray, dlt_out: Optional[np.ndarray] = None) -> np.ndarray:
    """:func:`_walk_block_table` reading each patient's code (:meth:`OutcomeModel.
    patient_codes`, trials x patients): a patient at dose d contributes ``lut[code, d]``
    (DLT flag or score units, from :meth:`OutcomeModel.code_tables`); ``dlt_lut`` gives a
    score design's DLT flags for ``dlt_out``."""
    m, N = codes.shape
    K = g.K
    lut = lut.ravel()
    ck = codes.ravel() * np.int32(K)          # index of the patient's row of the tables
    if dlt_lut is not None:
        dlt_lut = dlt_lut.ravel()

    def cohort_y(alive, s, d, c):
        row, k = _patient_rows(g, s, c)
        r, dd = alive[row], d[row]
        idx = ck[r * N + k] + dd
        if dlt_out is not None:
            hit = np.flatnonzero(dlt_lut[idx])
            if hit.size:
                dlt_out[...] += np.bincount(r[hit] * K + dd[hit], minlength=m * K).reshape(
                    m, K).astype(np.int16)
        return np.bincount(row, weights=lut[idx], minlength=alive.size).astype(np.int32)
    return _walk(g, m, cohort_y)


def _walk_block_table(g: StateGraph, model, units, x: np.ndarray, late: np.ndarray,
                      dlt_out: Optional[np.ndarray] = None) -> np.ndarray:
    """:func:`_walk_block_model` reading the block's precomputed latents and late flags
    (:meth:`OutcomeModel.patient_latents`, types x trials x patients) instead of drawing."""
    J, m, N = x.shape
    K = g.K
    xf = model.fold_late(x, late).reshape(J, m * N)

    def cohort_y(alive, s, d, c):
        row, k = _patient_rows(g, s, c)
        r, dd = alive[row], d[row]
        worst, dlt = model.grades_at(xf[:, r * N + k], None, dd)
        if units is None:
            v = dlt
        else:
            v = units[worst]
            if dlt_out is not None and dlt.any():
                hit = np.flatnonzero(dlt)
                dlt_out[...] += np.bincount(r[hit] * K + dd[hit], minlength=m * K).reshape(
                    m, K).astype(np.int16)
        return np.bincount(row, weights=v, minlength=alive.size).astype(np.int32)
    return _walk(g, m, cohort_y)


def _walk_block_model(g: StateGraph, model, seed: int, units, trials: np.ndarray,
                      dlt_out: Optional[np.ndarray] = None) -> np.ndarray:
    """:func:`_walk_block` with each patient's contribution from the outcome model: the DLT
    flag (``units`` None) or the score units of the worst grade in the window.  For a score
    design ``dlt_out`` (trials x doses) receives each trial's DLTs per dose (the state counts
    units, not DLTs)."""
    def cohort_y(alive, s, d, c):
        row, k = _patient_rows(g, s, c)
        t = trials[alive][row]
        k = k.astype(np.uint64)
        dd = d[row]
        if units is None:
            v = model.dlt_flags(seed, t, k, dd).astype(np.int64)
        else:
            po = model.outcomes(seed, t, k, dd)
            v = units[po.worst_grade]
            if dlt_out is not None:
                np.add.at(dlt_out, (alive[row], dd), po.dlt.astype(np.int16))
        return np.bincount(row, weights=v, minlength=alive.size).astype(np.int32)
    return _walk(g, trials.shape[0], cohort_y)


def _walk_block_joint(g: StateGraph, p: np.ndarray, q: np.ndarray, seed: int,
                      trials: np.ndarray, model=None) -> np.ndarray:
    """Joint designs: each patient's DLT (``u(t, k) < p_d`` from the ``dlt`` stream, or the
    graded model's DLT flag) and response (``v(t, k) < q_d`` from the ``efficacy`` stream);
    the cohort's outcome is the code of its DLTs, responders and patients with both."""
    key = stream_key(seed, "dlt")
    ekey = stream_key(seed, EFFICACY_STREAM)
    C = g.C

    def cohort_y(alive, s, d, c):
        base = g.total_n[s].astype(np.uint64)
        t = trials[alive]
        qd = q[d]
        pd = p[d]
        cmax = int(c.max())
        cmin = int(c.min())
        yt = np.zeros(alive.size, dtype=np.int32)
        yr = np.zeros(alive.size, dtype=np.int32)
        yb = np.zeros(alive.size, dtype=np.int32)
        for j in range(cmax):
            k = base + np.uint64(j)
            if model is None:
                tox = uniforms(key, t, k) < pd
            else:
                tox = model.dlt_flags(seed, t, k, d).astype(bool)
            eff = uniforms(ekey, t, k) < qd
            if j >= cmin:
                on = c > j
                tox &= on
                eff &= on
            yt += tox
            yr += eff
            yb += tox & eff
        return joint_code(yt, yr, yb, C)
    return _walk(g, trials.shape[0], cohort_y)


def simulate_cohort_chunk(design: Design, p_true: Sequence[float], seed: int,
                          start: int, stop: int, model=None,
                          efficacy: Optional[Sequence[float]] = None) -> ChunkTrials:
    """Simulate trials ``start .. stop-1`` of ``design`` under true DLT rates ``p_true``.

    ``model``: the scenario's :class:`~escalation_sim.inputs.truth.OutcomeModel` for a graded
    truth (each patient's contribution then comes from it, see the module docstring); None
    for a binary truth (``u(t, k) < p_d``).  A score design needs a model.  A joint design
    (``Outcome.JOINT``) needs the response rates: ``efficacy``, else the model's."""
    p = np.asarray(p_true, dtype=np.float64)
    if p.shape != (design.n_doses,):
        raise ValueError(f"p_true has {p.size} values for {design.n_doses} doses")
    score = design.outcome is Outcome.SCORE
    if score and model is None:
        raise ValueError(f"{design!r} scores graded toxicities: it needs a graded truth "
                         "(an OutcomeModel), not DLT rates only")
    if model is not None and model.n_doses != design.n_doses:
        raise ValueError(f"the outcome model has {model.n_doses} doses for {design.n_doses}")
    if design.outcome is Outcome.JOINT:
        if efficacy is None and model is not None:
            efficacy = model.response_rates()
        if efficacy is None:
            raise ValueError(f"{design!r} uses responses: it needs the response rate of each "
                             "dose (truth.efficacy)")
        q = np.asarray(efficacy, dtype=np.float64)
        if q.shape != (design.n_doses,):
            raise ValueError(f"efficacy has {q.size} values for {design.n_doses} doses")
        t0 = time.perf_counter()
        g = graph_for(design)
        states0, build0 = g.n_states, g.stats["build_seconds"]
        out = np.empty(stop - start, dtype=np.int32)
        for b in range(start, stop, BLOCK):
            e = min(b + BLOCK, stop)
            trials = np.arange(b, e, dtype=np.uint64)
            out[b - start:e - start] = _walk_block_joint(g, p, q, seed, trials, model)
        return ChunkTrials(g, start, out, g.n_states - states0,
                           g.stats["build_seconds"] - build0, time.perf_counter() - t0)
    units = np.asarray(design.score_units, dtype=np.int64) if score else None
    # with a cap on the patients of a trial, each block's patients' latents and onsets are
    # drawn in one pass (:meth:`OutcomeModel.patient_latents`): the same values, looked up
    cap = patient_cap(design) if model is not None else None
    if cap is not None and cap * design.n_doses > _TABLE_CELLS:
        cap = None
    # faster still: one small integer per patient (:meth:`OutcomeModel.patient_codes`) and
    # tables of its contribution at each dose, when the truth's thresholds are few enough
    tabs = model.code_tables() if cap is not None else None
    if tabs is not None:
        worst_t, dlt_t = tabs
        lut = units[worst_t] if score else dlt_t.astype(np.int64)
        dlt_lut = dlt_t if score else None
    t0 = time.perf_counter()
    g = graph_for(design)
    states0, build0 = g.n_states, g.stats["build_seconds"]
    key = stream_key(seed, "dlt")
    out = np.empty(stop - start, dtype=np.int32)
    dlt = np.zeros((stop - start, design.n_doses), dtype=np.int16) if score else None
    for b in range(start, stop, BLOCK):
        e = min(b + BLOCK, stop)
        trials = np.arange(b, e, dtype=np.uint64)
        if model is None:
            out[b - start:e - start] = _walk_block(g, p, key, trials)
        elif tabs is not None:
            codes = model.patient_codes(seed, trials, cap)
            out[b - start:e - start] = _walk_block_codes(
                g, lut, dlt_lut, codes, None if dlt is None else dlt[b - start:e - start])
        elif cap is not None:
            x, late = model.patient_latents(seed, trials, cap)
            out[b - start:e - start] = _walk_block_table(
                g, model, units, x, late, None if dlt is None else dlt[b - start:e - start])
        else:
            out[b - start:e - start] = _walk_block_model(
                g, model, seed, units, trials, None if dlt is None else dlt[b - start:e - start])
    # under the threading backend other chunks may grow the same graph meanwhile: the
    # figures are then the graph's growth during this chunk, whoever caused it
    new = g.n_states - states0
    build = g.stats["build_seconds"] - build0
    seconds = time.perf_counter() - t0
    if new:
        log.log(logging.INFO if build >= 1.0 else logging.DEBUG,
                "state graph of %r: %d new states (%d in all) in %.2f s, trials %d..%d",
                design, new, g.n_states, build, start, stop - 1)
    return ChunkTrials(g, start, out, new, build, seconds, dlt)
