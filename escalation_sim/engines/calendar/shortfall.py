"""Dose received below dose assigned (``conduct.shortfall``; Devlin, Iasonos & O'Quigley 2021,
JRSS-C 70:815).

An autologous product can come out below the assigned cell dose and is infused anyway.  Each
enrolled patient ``j`` of trial ``t`` draws from its own stream ``shortfall`` (so the other
streams, and every result without the block, are unchanged):

* draw ``2 j``: the product is short iff ``u < prob``;
* draw ``2 j + 1``: the fraction of the assigned amount received, by ``received_fraction``
  (``uniform`` on ``mean -/+ sd sqrt(3)``; ``beta`` with that mean and sd; ``fixed``).

**True DLT rate of an amount** (``dlt_rate_at``): the truth gives ``p_d`` at the amounts
``a_d`` of ``doses[].amount``; between two levels the rate is interpolated linearly in
``log(amount)`` (monotone when the truth is); below the lowest level the first segment is
extended in ``log(amount)`` and floored at 0 (with one level: ``p_1``, the only value known).
The patient's DLT stays ``u_dlt(k) < rate``, with the same latent ``u_dlt(k)`` as everyone.

**Counting** (``policy``): ``assigned`` counts the patient at the assigned level (most
protocols); ``received`` at the highest level whose amount is at or below the amount received
(a patient below the lowest level has no level to count at and is excluded); ``exclude``
makes the patient not evaluable and replaced, known at infusion (the slot reopens then).
"""
from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np

from ...inputs.conduct import Shortfall
from ...randomness import stream_key, uniforms

STREAM = "shortfall"
_BLOCK = 64           # patients drawn at a time


def dlt_rate_at(amount: float, amounts: Sequence[float], p: Sequence[float]) -> float:
    """True DLT probability of ``amount`` (module docstring: log-dose interpolation)."""
    K = len(amounts)
    if amount >= amounts[-1]:
        return float(p[-1])
    if K == 1:
        return float(p[0])
    x = math.log(amount)
    i = 0
    if amount >= amounts[0]:
        while amounts[i + 1] <= amount:
            i += 1
    lo, hi = math.log(amounts[i]), math.log(amounts[i + 1])
    v = p[i] + (p[i + 1] - p[i]) * (x - lo) / (hi - lo)
    return min(max(v, 0.0), 1.0)


def level_at_or_below(amount: float, amounts: Sequence[float]) -> int:
    """Highest level (0-based) whose amount is at or below ``amount``; -1 if none."""
    best = -1
    for d, a in enumerate(amounts):
        if a <= amount * (1.0 + 1e-12):
            best = d
    return best


def fractions_from_uniforms(spec: Shortfall, u: np.ndarray) -> np.ndarray:
    """Received fractions from uniforms ``u`` (inverse CDF of ``received_fraction``)."""
    f = spec.received_fraction
    if f.dist == "fixed" or f.sd == 0.0:
        return np.full(u.shape, f.mean)
    if f.dist == "uniform":
        h = f.sd * math.sqrt(3.0)
        return f.mean - h + 2.0 * h * u
    from scipy.stats import beta as _beta          # beta: moment-matched
    k = f.mean * (1.0 - f.mean) / (f.sd * f.sd) - 1.0
    return _beta.ppf(u, f.mean * k, (1.0 - f.mean) * k)


class ShortfallDraws:
    """One trial's shortfall numbers, per enrolled patient ``j``: ``fraction(j)`` is the
    fraction of the assigned amount received (1.0 when the product is not short)."""

    __slots__ = ("spec", "key", "trial", "frac")

    def __init__(self, spec: Shortfall, seed: int, trial: int, first: List[float] = None):
        self.spec = spec
        self.key = stream_key(int(seed), STREAM)
        self.trial = int(trial)
        self.frac: List[float] = [] if first is None else first

    def fraction(self, j: int) -> float:
        while j >= len(self.frac):
            self._more()
        return self.frac[j]

    def _more(self) -> None:
        start = len(self.frac)
        idx = np.arange(2 * start, 2 * (start + _BLOCK), dtype=np.uint64)
        u = uniforms(self.key, np.uint64(self.trial), idx)
        short = u[0::2] < self.spec.prob
        frac = fractions_from_uniforms(self.spec, u[1::2])
        self.frac.extend(np.where(short, frac, 1.0).tolist())


class ShortfallModel:
    """What the trials of a call share: amounts, truth and the counting policy."""

    __slots__ = ("spec", "amounts", "p", "policy", "cache")

    #: trials whose first ``_BLOCK`` patients are drawn together (vectorised)
    TRIALS_AT_ONCE = 256

    def __init__(self, spec: Shortfall, p: Sequence[float]):
        if spec.dose_amounts is None:
            raise ValueError("conduct.shortfall.dose_amounts: required (a scenario fills it "
                             "from doses[].amount)")
        if len(spec.dose_amounts) != len(p):
            raise ValueError(f"conduct.shortfall.dose_amounts: has {len(spec.dose_amounts)} "
                             f"values for {len(p)} doses")
        self.spec = spec
        self.amounts = list(spec.dose_amounts)
        self.p = [float(v) for v in p]
        self.policy = spec.policy
        self.cache = {}

    def draws(self, seed: int, trial: int) -> ShortfallDraws:
        """Trial ``trial``'s numbers; the first ``_BLOCK`` patients of the next
        ``TRIALS_AT_ONCE`` trial indices are drawn in one vectorised call (the numbers depend
        on (seed, trial, j) only, so this changes nothing but the speed)."""
        row = self.cache.pop((seed, trial), None)
        if row is None:
            key = stream_key(int(seed), STREAM)
            trials = np.arange(trial, trial + self.TRIALS_AT_ONCE, dtype=np.uint64)[:, None]
            u = uniforms(key, trials, np.arange(2 * _BLOCK, dtype=np.uint64)[None, :])
            short = u[:, 0::2] < self.spec.prob
            frac = np.where(short, fractions_from_uniforms(self.spec, u[:, 1::2]), 1.0)
            self.cache = {(seed, trial + r): frac[r].tolist()
                          for r in range(1, self.TRIALS_AT_ONCE)}
            row = frac[0].tolist()
        return ShortfallDraws(self.spec, seed, trial, row)

    def rate(self, dose: int, fraction: float) -> float:
        """True DLT probability of a patient assigned ``dose`` who received ``fraction``."""
        if fraction >= 1.0:
            return self.p[dose]
        return dlt_rate_at(self.amounts[dose] * fraction, self.amounts, self.p)

    def counted_dose(self, dose: int, fraction: float) -> int:
        """The level the patient counts at under the policy; -1: excluded."""
        if fraction >= 1.0 or self.policy == "assigned":
            return dose
        if self.policy == "exclude":
            return -1
        return level_at_or_below(self.amounts[dose] * fraction, self.amounts)

    def rate_as_given(self, dose: int, points: int = 2000) -> float:
        """Expected true DLT probability of a patient assigned ``dose``, short products
        included: ``(1 - prob) p_d + prob E[rate(a_d F)]`` (midpoint rule over the
        fraction's quantiles, ``points`` nodes)."""
        u = (np.arange(points) + 0.5) / points
        f = fractions_from_uniforms(self.spec, u)
        short = float(np.mean([self.rate(dose, float(x)) for x in f]))
        return (1.0 - self.spec.prob) * self.p[dose] + self.spec.prob * short
