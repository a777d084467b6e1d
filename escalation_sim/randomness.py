"""Reproducible randomness: one counter-based stream per (seed, stream name, trial).

Every random number in a simulation is a pure function of
``(seed, stream name, trial index, draw index)``::

    key    = SeedSequence(entropy=seed, spawn_key=(crc32(stream),)).generate_state(1, uint64)
    state  = key + (trial << 20 | draw) * 0x9E3779B97F4A7C15        (mod 2**64)
    u      = (splitmix64_finalizer(state) >> 11 + 0.5) * 2**-53     in (0, 1)

This is the SplitMix64 generator (Steele, Lea & Flood 2014) evaluated at an arbitrary position
of its sequence, so each trial owns a disjoint window of 2**20 draws per stream.  It gives the
properties a SeedSequence per trial would give -- results independent of chunking, number of
workers and backend; common random numbers across designs; a stream per purpose so that
changing logistics never changes who has a DLT -- while costing a few vectorised integer
operations per draw instead of ~10 microseconds per trial to build a ``Generator``
(docs/design.md explains the choice).

Conventions used across the package:
- stream ``"dlt"``: draw ``k`` is the latent uniform of the k-th *treated* patient of the
  trial (0-based treatment order); that patient has a DLT at dose d iff ``u < p_d``.
- other streams (accrual, screening, manufacturing, ...) are owned by the discrete-event engine.
"""
from __future__ import annotations

import zlib
from functools import lru_cache

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_DRAW_BITS = 20
MAX_DRAWS_PER_TRIAL = 1 << _DRAW_BITS
MAX_TRIALS = 1 << (64 - _DRAW_BITS)
_TO_UNIT = 2.0 ** -53


def stream_id(stream: str) -> int:
    """Stable integer id of a named stream."""
    return zlib.crc32(stream.encode("utf-8"))


@lru_cache(maxsize=4096)
def stream_key(seed: int, stream: str) -> int:
    """64-bit key of ``stream`` under ``seed`` (via numpy's SeedSequence hashing)."""
    if seed is None or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer (got {seed!r})")
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(stream_id(stream),))
    return int(ss.generate_state(1, dtype=np.uint64)[0])


def counters(trial, draw) -> np.ndarray:
    """The stream-independent part of :func:`uniforms`: ``(trial << 20 | draw + 1) * gamma``
    (mod 2**64), for broadcastable integer arrays.  Several streams drawn at the same
    ``(trial, draw)`` positions share it (:func:`uniforms_at`)."""
    t = np.asarray(trial, dtype=np.uint64)
    d = np.asarray(draw, dtype=np.uint64)
    z = (t << np.uint64(_DRAW_BITS)) | d
    z = z + np.uint64(1)
    z *= _GAMMA
    return z


def uniforms_at(key: int, counter: np.ndarray) -> np.ndarray:
    """:func:`uniforms` of stream ``key`` at the positions whose :func:`counters` are given
    (the same values, bit for bit)."""
    z = counter + np.uint64(key)
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    z >>= _S11
    u = z.astype(np.float64)
    u += 0.5
    u *= _TO_UNIT
    return u


def uniforms(key: int, trial, draw) -> np.ndarray:
    """Uniforms in (0, 1) for broadcastable integer arrays ``trial`` and ``draw``."""
    return uniforms_at(key, counters(trial, draw))
