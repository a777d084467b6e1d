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


class GradedShortfall:
    """A graded truth (:class:`~escalation_sim.inputs.truth.OutcomeModel`) at an amount
    between the levels.

    The outcome model gives, per type j and grade g, the thresholds ``P(grade_j >= g)`` at
    each level; at an amount received they are interpolated exactly as ``dlt_rate_at``
    interpolates a DLT rate (linear in log amount between the levels, the first segment
    extended below the lowest and floored at 0), then made non-increasing in g (a running
    minimum; needed only below the lowest level, where extrapolating each grade on its own
    could cross).  The patient keeps its own latents and onset days (the outcome model's
    patient k, the same numbers as at any level): its grade of type j at the amount is the
    number of thresholds its latent is below, exactly as at a level; a DLT is the ``dlt``
    rule met by an event starting inside the window, known at the earliest such onset; a
    qualifying event after the window is a late event.  The true DLT rate of an amount is
    the outcome model's formula (``p_any_event``) at the interpolated thresholds, which at
    a level is the truth's DLT rate there."""

    __slots__ = ("model", "amounts", "window", "normal", "memo", "_fingerprint")

    def __init__(self, model, amounts: Sequence[float], window: float):
        self.model = model
        self._fingerprint = None
        self.amounts = list(amounts)
        self.window = float(window)
        #: types whose latent is a normal score (the copula): thresholds on that scale
        self.normal = [j > 0 and model.correlation != 0.0 for j in range(len(model.types))]
        self.memo = {}

    def at_least(self, amount: float) -> List[np.ndarray]:
        """Per type, ``P(grade >= g)`` for g = 0..max_grade at ``amount``."""
        out = self.memo.get(amount)
        if out is None:
            out = []
            for typ in self.model.types:
                a = np.array([dlt_rate_at(amount, self.amounts, typ.at_least[g])
                              for g in range(typ.max_grade + 1)])
                out.append(np.minimum.accumulate(a))
            if len(self.memo) < 10000:
                self.memo[amount] = out
        return out

    def fingerprint(self) -> tuple:
        """(SHA-256 of the pickled outcome model, window): equal for equal truths, in any
        process (a worker's unpickled copy included)."""
        if self._fingerprint is None:
            import hashlib
            import pickle
            self._fingerprint = (hashlib.sha256(pickle.dumps(self.model, protocol=4))
                                 .hexdigest(), self.window)
        return self._fingerprint

    def rates(self, amounts: Sequence[float]) -> np.ndarray:
        """True DLT probability at each of ``amounts`` (the outcome model's formula)."""
        from ...inputs.truth import p_any_event
        m = self.model
        als = [self.at_least(a) for a in amounts]
        S = np.array([[al[j][g] if g <= m.types[j].max_grade else 0.0 for al in als]
                      for j, g in m.rule])
        q = np.array([m.p_onset_within(m.types[j].name) for j, _ in m.rule])
        return np.asarray(p_any_event(S, q, m.correlation), dtype=np.float64)

    def rate(self, amount: float) -> float:
        return float(self.rates([amount])[0])

    def outcome(self, x: Sequence[float], days: Sequence[float], amount: float):
        """``(grades per type, DLT day or None, worst grade in the window, late)`` of a
        patient with latents ``x`` and onset days ``days`` (per type; NaN: no event) who
        received ``amount``."""
        from scipy.special import ndtri
        al = self.at_least(amount)
        grades = []
        for j, typ in enumerate(self.model.types):
            thr = al[j]
            if self.normal[j]:
                thr = ndtri(thr)
            grades.append(int(sum(1 for g in range(1, typ.max_grade + 1) if x[j] < thr[g])))
        W = self.window
        inside = [g > 0 and days[j] == days[j] and days[j] <= W for j, g in enumerate(grades)]
        dlt_day = None
        late = False
        for j, mg in self.model.rule:
            if grades[j] >= mg:
                if inside[j]:
                    dlt_day = days[j] if dlt_day is None else min(dlt_day, days[j])
                else:
                    late = True
        worst = max([g if inside[j] else 0 for j, g in enumerate(grades)] + [0])
        return tuple(grades), dlt_day, worst, late and dlt_day is None


class ShortfallModel:
    """What the trials of a call share: amounts, truth and the counting policy (``graded``:
    a :class:`GradedShortfall` when the truth is graded)."""

    __slots__ = ("spec", "amounts", "p", "policy", "cache", "graded")

    #: trials whose first ``_BLOCK`` patients are drawn together (vectorised)
    TRIALS_AT_ONCE = 256

    def __init__(self, spec: Shortfall, p: Sequence[float], model=None,
                 window: float = 28.0):
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
        self.graded = None if model is None else GradedShortfall(model, self.amounts, window)

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
        if self.graded is not None:
            return self.graded.rate(self.amounts[dose] * fraction)
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
        fraction's quantiles, ``points`` nodes).  Kept for the process per value of its
        inputs (on a graded truth, with the outcome model object): a few milliseconds per
        dose on a binary truth, about 3 s on a graded one, asked once per chunk."""
        key = (self.spec.prob, self.spec.received_fraction, tuple(self.amounts),
               tuple(self.p), dose, points)
        if self.graded is None:
            memo = _AS_GIVEN
        else:   # by the outcome model's pickled bytes (the same in every worker's copy):
            # 2,000 bivariate normal probabilities cost about 3 s per dose
            memo = _AS_GIVEN_GRADED.setdefault(self.graded.fingerprint(), {})
        v = memo.get(key)
        if v is not None:
            return v
        u = (np.arange(points) + 0.5) / points
        f = fractions_from_uniforms(self.spec, u)
        if self.graded is not None:
            short = float(np.mean(self.graded.rates([self.amounts[dose] * float(x)
                                                     for x in f])))
        else:
            short = float(np.mean([self.rate(dose, float(x)) for x in f]))
        v = (1.0 - self.spec.prob) * self.p[dose] + self.spec.prob * short
        if len(memo) >= 4096:
            memo.clear()
        memo[key] = v
        return v


#: ShortfallModel.rate_as_given's values on a binary truth, by their inputs
_AS_GIVEN: dict = {}
#: ... on a graded truth: per outcome model and window (GradedShortfall.fingerprint)
_AS_GIVEN_GRADED: dict = {}
