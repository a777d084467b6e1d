"""Duration distributions given by their mean and standard deviation.

Every random duration in the discrete-event engine (screening, leukapheresis, manufacturing,
bridging, DLT onset, ...) is a :class:`Distribution`.  Distributions never own a random
generator: ``sample_from_uniforms(u)`` maps uniforms in (0, 1) through the inverse CDF, so
the engine can feed them the counter-based streams of :mod:`escalation_sim.randomness` and
every draw stays a pure function of ``(seed, stream, trial, draw)``.

In a scenario file a duration is either a number (a fixed number of days) or a mapping::

    duration_days: 21                                   # fixed
    duration_days: {mean: 21, sd: 5}                    # gamma (the default shape)
    duration_days: {mean: 21, sd: 5, dist: lognormal}   # or normal | uniform | fixed

Parametrisations (all in days, all non-negative):

- ``gamma``: shape ``(mean/sd)**2``, scale ``sd**2/mean``; sd at most 3 x mean.
- ``lognormal``: ``sigma**2 = log(1 + sd**2/mean**2)``, ``mu = log(mean) - sigma**2/2``.
- ``normal``: Normal(mean, sd) truncated to ``[0, inf)`` (``mean`` reports the mean after
  truncation, which differs from the given mean only when ``sd`` is large next to ``mean``).
- ``uniform``: Uniform(mean - sqrt(3) sd, mean + sqrt(3) sd); the lower end must be >= 0.
- ``fixed``: always ``mean`` (``sd`` must be 0 or omitted).

A distribution with ``sd = 0`` (or below 1e-9 x mean) is fixed whatever its ``dist``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..types import LazyModule

#: scipy.special, imported on first use (the command line starts without it)
special = LazyModule("scipy.special")

DistName = Literal["gamma", "lognormal", "normal", "fixed", "uniform"]
_SQRT3 = math.sqrt(3.0)
#: largest sd / mean of a gamma duration (shape >= 1/9): the tabulated quantiles stay
#: within 2e-5 of the exact ones
_MAX_GAMMA_CV = 3.0
#: longest duration (mean or sd) a scenario may give: 100 years.  Longer ones are typing
#: errors, and they make the calendar engine replay every arrival in between.
MAX_DAYS = 36_525.0


class Distribution:
    """A non-negative duration distribution (days)."""

    name: str = "distribution"

    @property
    def mean(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def ppf(self, q: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def cdf(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def is_fixed(self) -> bool:
        return False

    def sample_from_uniforms(self, u) -> np.ndarray:
        """Durations for uniforms ``u`` in (0, 1), by the inverse CDF (same shape as ``u``)."""
        return self.ppf(np.asarray(u, dtype=np.float64))

    def sample_within(self, u, upper: float) -> np.ndarray:
        """Durations conditioned to fall in ``[0, upper]`` (inverse CDF of the truncated law)."""
        u = np.asarray(u, dtype=np.float64)
        if self.is_fixed:
            return np.minimum(self.ppf(u), upper)
        top = float(self.cdf(np.asarray(upper, dtype=np.float64)))
        if top <= 0.0:  # pragma: no cover - all mass above upper
            return np.full(u.shape, float(upper))
        return np.minimum(self.sample_from_uniforms(u * top), upper)

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class Fixed(Distribution):
    value: float
    name: str = "fixed"

    @property
    def mean(self) -> float:
        return float(self.value)

    @property
    def is_fixed(self) -> bool:
        return True

    def ppf(self, q):
        return np.full(np.shape(q), float(self.value))

    def cdf(self, x):
        return (np.asarray(x, dtype=np.float64) >= self.value).astype(np.float64)

    def describe(self) -> str:
        return f"{self.value:g} days"


#: normal scores at which gamma quantiles are tabulated (uniforms from the counter-based
#: streams lie in [2**-54, 1 - 2**-54], i.e. |z| < 8.3)
_Z_GRID = np.linspace(-8.5, 8.5, 4097)


@lru_cache(maxsize=256)
def _gamma_log_quantiles(shape: float) -> np.ndarray:
    q = special.gammaincinv(shape, special.ndtr(_Z_GRID))
    return np.log(np.maximum(q, 1e-300))


@dataclass(frozen=True)
class Gamma(Distribution):
    mu: float
    sd: float
    name: str = "gamma"

    @property
    def shape(self) -> float:
        return (self.mu / self.sd) ** 2

    @property
    def scale(self) -> float:
        return self.sd ** 2 / self.mu

    @property
    def mean(self) -> float:
        return float(self.mu)

    def ppf(self, q):
        return special.gammaincinv(self.shape, q) * self.scale

    def sample_from_uniforms(self, u) -> np.ndarray:
        """Inverse CDF through a table of log-quantiles on a normal-score grid, linearly
        interpolated (about 50 times faster than ``gammaincinv``; relative error below
        1e-5 for shapes >= 0.3, below 1e-7 for the shapes of typical durations, sd < mean).
        Always used, whatever the array size, so results never depend on block sizes."""
        z = special.ndtri(np.asarray(u, dtype=np.float64))
        return np.exp(np.interp(z, _Z_GRID, _gamma_log_quantiles(self.shape))) * self.scale

    def cdf(self, x):
        return special.gammainc(self.shape, np.maximum(x, 0.0) / self.scale)

    def describe(self) -> str:
        return f"gamma(mean {self.mu:g}, sd {self.sd:g}) days"


@dataclass(frozen=True)
class LogNormal(Distribution):
    mu: float
    sd: float
    name: str = "lognormal"

    @property
    def sigma(self) -> float:
        return math.sqrt(math.log1p((self.sd / self.mu) ** 2))

    @property
    def log_mean(self) -> float:
        return math.log(self.mu) - 0.5 * self.sigma ** 2

    @property
    def mean(self) -> float:
        return float(self.mu)

    def ppf(self, q):
        return np.exp(self.log_mean + self.sigma * special.ndtri(q))

    def cdf(self, x):
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(divide="ignore"):
            z = (np.log(np.maximum(x, 1e-300)) - self.log_mean) / self.sigma
        return np.where(x > 0, special.ndtr(z), 0.0)

    def describe(self) -> str:
        return f"lognormal(mean {self.mu:g}, sd {self.sd:g}) days"


@dataclass(frozen=True)
class TruncNormal(Distribution):
    """Normal(mu, sd) truncated to [0, inf)."""

    mu: float
    sd: float
    name: str = "normal"

    @property
    def _p0(self) -> float:
        return float(special.ndtr(-self.mu / self.sd))

    @property
    def mean(self) -> float:
        a = -self.mu / self.sd
        # E[X | X >= 0] = mu + sd * phi(a) / (1 - Phi(a))
        phi = math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
        return float(self.mu + self.sd * phi / (1.0 - self._p0))

    def ppf(self, q):
        p0 = self._p0
        return np.maximum(self.mu + self.sd * special.ndtri(p0 + q * (1.0 - p0)), 0.0)

    def cdf(self, x):
        p0 = self._p0
        x = np.asarray(x, dtype=np.float64)
        return np.where(x >= 0, (special.ndtr((x - self.mu) / self.sd) - p0) / (1.0 - p0), 0.0)

    def describe(self) -> str:
        return f"normal(mean {self.mu:g}, sd {self.sd:g}, >= 0) days"


@dataclass(frozen=True)
class Uniform(Distribution):
    low: float
    high: float
    name: str = "uniform"

    @property
    def mean(self) -> float:
        return 0.5 * (self.low + self.high)

    @property
    def is_fixed(self) -> bool:
        return self.high <= self.low

    def ppf(self, q):
        return self.low + np.asarray(q, dtype=np.float64) * (self.high - self.low)

    def cdf(self, x):
        x = np.asarray(x, dtype=np.float64)
        if self.high <= self.low:
            return (x >= self.low).astype(np.float64)
        return np.clip((x - self.low) / (self.high - self.low), 0.0, 1.0)

    def describe(self) -> str:
        return f"uniform({self.low:g}, {self.high:g}) days"


def check_days(v: float) -> float:
    """``v`` as a float if it is at most :data:`MAX_DAYS`; ValueError otherwise."""
    if float(v) > MAX_DAYS:
        raise ValueError(f"must be <= {MAX_DAYS:,.0f} days (100 years) (got {v:g})")
    return float(v)


def make_distribution(mean: float, sd: float = 0.0, dist: str = "gamma") -> Distribution:
    """Build a distribution from its mean and sd (days); validates like :class:`DurationSpec`."""
    spec = DurationSpec(mean=mean, sd=sd, dist=dist)  # type: ignore[arg-type]
    return spec.to_distribution()


class DurationSpec(BaseModel):
    """A duration in days: ``{mean, sd, dist}`` (``dist`` defaults to gamma), or a bare number
    of days (a fixed duration)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    mean: float = Field(description="mean duration in days (>= 0)")
    sd: float = Field(default=0.0, description="standard deviation in days (>= 0); 0 = fixed")
    dist: DistName = Field(default="gamma",
                           description="shape: gamma | lognormal | normal | uniform | fixed")

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, data):
        # a bare number of days is a fixed duration
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"mean": data, "sd": 0.0, "dist": "fixed"}
        return data

    @field_validator("mean")
    @classmethod
    def _mean_ok(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"must be >= 0 (got {v})")
        return check_days(v)

    @field_validator("sd")
    @classmethod
    def _sd_ok(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"must be >= 0 (got {v})")
        return check_days(v)

    @model_validator(mode="after")
    def _consistent(self) -> "DurationSpec":
        if self.dist == "fixed" and self.sd > 0:
            raise ValueError(f"a fixed duration has no spread: sd must be 0 (got {self.sd})")
        if self.sd > 0 and self.mean == 0:
            raise ValueError(f"mean must be > 0 when sd > 0 (got mean {self.mean}, sd {self.sd})")
        if self.dist == "gamma" and self.sd > _MAX_GAMMA_CV * self.mean:
            raise ValueError(
                f"a gamma duration needs sd <= {_MAX_GAMMA_CV:g} x mean (got mean {self.mean}, "
                f"sd {self.sd}); use dist: lognormal for a more skewed duration")
        if self.dist == "uniform" and self.mean - _SQRT3 * self.sd < -1e-12:
            raise ValueError(
                f"uniform with mean {self.mean} and sd {self.sd} would reach below 0 days "
                f"(lower end mean - sqrt(3)*sd = {self.mean - _SQRT3 * self.sd:.3g}); "
                f"use sd <= {self.mean / _SQRT3:.3g}")
        return self

    def to_distribution(self) -> Distribution:
        if self.sd <= 1e-9 * self.mean or self.dist == "fixed":
            return Fixed(self.mean)
        if self.dist == "gamma":
            return Gamma(self.mean, self.sd)
        if self.dist == "lognormal":
            return LogNormal(self.mean, self.sd)
        if self.dist == "normal":
            return TruncNormal(self.mean, self.sd)
        half = _SQRT3 * self.sd
        return Uniform(max(self.mean - half, 0.0), self.mean + half)


#: what a scenario may write for a duration: a number of days or {mean, sd, dist}
DurationLike = Union[float, DurationSpec]


def as_distribution(value: Optional[DurationLike]) -> Distribution:
    """Number of days, :class:`DurationSpec` or ``None`` (= 0 days) -> :class:`Distribution`."""
    if value is None:
        return Fixed(0.0)
    if isinstance(value, DurationSpec):
        return value.to_distribution()
    if isinstance(value, Distribution):
        return value
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"must be >= 0 (got {value})")
    return Fixed(check_days(v))
