"""The patient-outcome model: graded toxicities, their onsets, the DLT rule and efficacy.

A scenario's ``truth`` says, per dose, how likely each graded toxicity is; a scenario-level
``dlt`` rule says which events are dose-limiting::

    truth:
      toxicities:
        - type: CRS
          grades:                       # P(worst grade of this type = g) per dose; grade 0 = rest
            1: [0.30, 0.35, 0.40, 0.40]
            2: [0.10, 0.15, 0.20, 0.25]
            3: [0.02, 0.04, 0.07, 0.12]
            4: [0.00, 0.01, 0.02, 0.04]
          onset_days: {mean: 3, sd: 2, dist: gamma}   # optional: omitted = inside the window
        - type: ICANS
          grades: {1: [...], 2: [...], 3: [...], 4: [...]}
          onset_days: {mean: 8, sd: 4, dist: gamma}
      correlation: 0.5          # optional, default 0: between the types' latent variables
      efficacy: [0.20, 0.40, 0.55, 0.60]   # optional: P(response) per dose
      dlt_window_days: 28       # optional, only without a conduct block (default 28)
    dlt:                        # optional; default: every type at grade >= 3
      - {type: CRS, min_grade: 3}
      - {type: ICANS, min_grade: 3}

``truth: {p_dlt: [...]}`` remains the binary model: one event type (named ``DLT``) whose only
grade is 1, every event a DLT, exactly as before.

Per patient (:meth:`OutcomeModel.outcomes`; :meth:`OutcomeModel.dlt_flags` for the flags alone)
-----------------------------------------------------------------------------------------------
Patient ``k`` of trial ``t`` (``k`` = 0-based treatment order, as for the ``dlt`` stream)
carries one latent uniform per toxicity type, one onset uniform per type with an onset law and
one efficacy uniform, all pure functions of ``(seed, stream, t, k)``
(:mod:`escalation_sim.randomness`); the dose only moves the thresholds, so the same patient is
simulated in every design and engine (common random numbers) and a patient's grade never
decreases when the dose rises with the grade probabilities.

* latent of type j: ``U_j``.  The first type's is the ``dlt`` stream itself,
  ``U_1 = u(t, k)``; type j > 1 draws ``e_j`` from stream ``"toxicity:<type>"``.  With a
  correlation rho the latents are joined by a Gaussian copula: ``z = L e`` with
  ``e_1 = Phi^-1(U_1)``, ``e_j = Phi^-1(u_j)`` and ``L`` the Cholesky factor of the
  exchangeable correlation matrix (1 on the diagonal, rho elsewhere); ``U_j = Phi(z_j)``.
  For two types this is ``z_2 = rho z_1 + sqrt(1 - rho^2) e_2``.  Because ``L``'s first row
  is (1, 0, ...), ``z_1`` is the dlt stream's normal score whatever rho is.
* worst grade of type j at dose d: ``grade_j >= g  iff  U_j < S_j,g(d)``, where
  ``S_j,g(d) = P(grade_j >= g)`` is the sum of the listed probabilities of grades g and above.
  A one-type truth therefore reproduces the binary model: with ``p_d = S(min_grade)`` the
  patient has a qualifying grade iff ``u(t, k) < p_d`` -- the cohort engine's rule, bit for bit.
* onset day of type j: the type's ``onset_days`` law (:mod:`escalation_sim.inputs.distributions`,
  given by mean and sd) evaluated by its inverse CDF at a uniform of stream ``"onset:<type>"``;
  independent of the grade and of the other types.  A type without ``onset_days`` starts
  inside the DLT window (its day is not modelled: NaN).
* DLT: some criterion ``{type, min_grade}`` of the rule is met (``grade >= min_grade``) by an
  event whose onset day is ``<= dlt_window_days`` (day 0 = infusion).  ``dlt_day`` is the
  earliest such onset.  *Late* event: a criterion is met, but every qualifying event starts
  after the window (late and DLT exclude each other).
* worst grade in the window: the highest grade among all types whose onset is inside the
  window (what a graded design such as gBOIN scores).
* response: ``u < efficacy_d`` with u from stream ``"efficacy"`` (independent of toxicity).

The DLT window is the scenario's ``conduct.dlt_window_days`` when it has a conduct block, else
``truth.dlt_window_days`` (default 28 days, the usual CAR-T window).  For the time-free engine
onsets matter only through this window: an event that starts after it is not a DLT.

Exact per-dose quantities (no simulation)
-----------------------------------------
With ``q_j = P(onset_j <= window)`` (1 without an onset law) and ``a_j = Phi^-1(S_j)``:

``P(DLT) = P(union over rule types of {U_j < S_j and onset_j <= window})``.
Onsets are independent of the latents, so

* one rule type: ``q S``;
* independent latents (rho = 0): ``1 - prod_j (1 - q_j S_j)``;
* two types: ``q_1 S_1 + q_2 S_2 - q_1 q_2 Phi2(a_1, a_2; rho)``, the bivariate normal CDF
  computed as the 1-D integral ``Phi2(h, k; rho) = int_{-inf}^{h} phi(x)
  Phi((k - rho x) / sqrt(1 - rho^2)) dx`` by adaptive quadrature (absolute error ~1e-14);
* three or more types (rho >= 0 required): the exchangeable correlation has the one-factor
  form ``z_j = sqrt(rho) W + sqrt(1 - rho) e_j``, so given W the types are independent and
  ``P(DLT) = int phi(w) [1 - prod_j (1 - q_j Phi((a_j - sqrt(rho) w) / sqrt(1 - rho)))] dw``.

The same function gives ``P(worst grade in the window >= g)`` (all types, thresholds
``S_j,g``), hence the distribution of the worst grade and of any severity score, and
``P(late) = P(a criterion is met at any time) - P(DLT)`` (the first term with every q = 1).

The sampler evaluates gamma onsets through an interpolated quantile table (relative error
< 1e-5, see :class:`~escalation_sim.inputs.distributions.Gamma`); the exact rates use the exact
CDF, so an onset within ~1e-5 x window of the window's end could be classified differently
by the two -- far below any Monte Carlo resolution.
"""
from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from pydantic import (BaseModel, ConfigDict, Field, TypeAdapter, ValidationError,
                      field_validator, model_serializer, model_validator)

from ..grades import MAX_GRADE, Scores, normalized_scores
from ..randomness import counters, stream_key, uniforms, uniforms_at
from ..types import LazyModule
from .distributions import Distribution, DurationSpec
from .limits import _CONTROL_ALL, MAX_DOSES, check_word, json_like, short

#: scipy.special, imported on first use (the command line's validate, table and --help
#: start without it)
special = LazyModule("scipy.special")

#: the DLT window when the scenario has no conduct block and the truth names none (days)
DEFAULT_DLT_WINDOW_DAYS = 28.0
#: name of the single event type of a binary ``p_dlt`` truth
BINARY_TYPE = "DLT"
#: streams: the first type's latent is the ``dlt`` stream; the others are named here
LATENT_STREAM = "toxicity:{type}"
ONSET_STREAM = "onset:{type}"
EFFICACY_STREAM = "efficacy"
#: tolerance on "grade probabilities sum to at most 1" (decimal inputs such as 0.1 + 0.2)
_SUM_TOL = 1e-9

# quadrature settings: the integrands are bounded by phi, which is below 1e-300 beyond 37
_LO, _HI = -40.0, 40.0
_EPSABS, _EPSREL = 1e-15, 1e-13
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _got(v) -> str:
    """``v`` as JSON, at most 80 characters, built without serializing a huge value."""
    s = json_like(v, 81)
    return s if len(s) <= 80 else s[:77] + "..."


def _is_prob(x) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            and 0.0 <= x <= 1.0)


# ======================================================================================
# File format
# ======================================================================================
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ToxicitySpec(_Strict):
    """One graded toxicity type of ``truth.toxicities``."""

    type: str = Field(description="name of the event type, e.g. CRS or ICANS")
    grades: Dict[int, List[float]] = Field(
        description="grade (1..5) -> P(worst grade of this type = grade) at each dose; the "
                    "remainder is grade 0 (no event)")
    onset_days: Optional[DurationSpec] = Field(
        default=None, description="day of onset after infusion: a number (fixed) or "
                                  "{mean, sd, dist}; omitted = the event starts inside the DLT "
                                  "window")

    @field_validator("type")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return check_word(v, shown=v)

    @field_validator("grades", mode="before")
    @classmethod
    def _grades_ok(cls, v):
        if not isinstance(v, dict) or not v:
            raise ValueError(f"must map grades to per-dose probabilities, e.g. "
                             f"{{3: [0.02, 0.05]}} (got {_got(v)})")
        out: Dict[int, Any] = {}
        for k, probs in v.items():
            g = k if isinstance(k, int) and not isinstance(k, bool) else (
                int(k) if isinstance(k, str) and k.strip().isdigit() else None)
            if g is None or not 1 <= g <= MAX_GRADE:
                extra = " (grade 0 is the remainder: do not list it)" if g == 0 else ""
                raise ValueError(f"grades must be integers from 1 to {MAX_GRADE}{extra} "
                                 f"(got {_got(k)})")
            if g in out:
                raise ValueError(f"grade {g} is given twice (got {_got(list(v))})")
            if not isinstance(probs, list) or not probs:
                raise ValueError(f"grade {g}: must be a list of probabilities, one per dose "
                                 f"(got {_got(probs)})")
            bad = [x for x in probs if not _is_prob(x)]
            if bad:
                raise ValueError(f"grade {g}: every probability must be a finite number in "
                                 f"[0, 1]; bad: {_got(bad)} (got {_got(probs)})")
            out[g] = [float(x) for x in probs]
        n = min(len(p) for p in out.values())
        for d in range(n):
            tot = math.fsum(p[d] for p in out.values())
            if tot > 1.0 + _SUM_TOL:
                per = {g: out[g][d] for g in sorted(out)}
                raise ValueError(f"the grade probabilities at dose {d + 1} sum to {tot:.6g} > 1 "
                                 f"(got {_got(per)})")
        return {g: out[g] for g in sorted(out)}

    @property
    def max_grade(self) -> int:
        return max(self.grades)


class DltCriterion(_Strict):
    """One line of the scenario's ``dlt`` rule: an event of ``type`` at ``min_grade`` or
    above, starting inside the DLT window, is a DLT."""

    type: str = Field(description="a type of truth.toxicities")
    min_grade: int = Field(ge=1, le=MAX_GRADE, description="lowest qualifying grade (1..5)")


DltRuleSpec = List[DltCriterion]
_RULE_ADAPTER = TypeAdapter(DltRuleSpec)

#: keys of TruthSpec written only when set (the resolved form of a binary truth is unchanged)
_OPTIONAL_KEYS = ("p_dlt", "toxicities", "correlation", "efficacy", "dlt_window_days")


class TruthSpec(_Strict):
    """The scenario's ``truth``: a binary DLT curve (``p_dlt``) or graded toxicities."""

    p_dlt: Optional[List[float]] = Field(
        default=None, description="true DLT probability at each dose, in (0, 1) (binary "
                                  "model: one event type, every event a DLT)")
    toxicities: Optional[List[ToxicitySpec]] = Field(
        default=None, min_length=1,
        description="graded event types, each with per-dose grade probabilities and an onset "
                    "law; the scenario's dlt rule says which events are DLTs")
    correlation: Optional[float] = Field(
        default=None, description="correlation of the types' latent variables (Gaussian "
                                  "copula, exchangeable), in (-1, 1); default 0")
    efficacy: Optional[List[float]] = Field(
        default=None, description="probability of response at each dose, in [0, 1]")
    dlt_window_days: Optional[float] = Field(
        default=None, description="DLT window (days after infusion) of a graded truth when "
                                  "the scenario has no conduct block; default 28")
    allow_non_monotone: bool = Field(default=False,
                                     description="accept a truth that decreases somewhere")
    label: Optional[str] = None

    @field_validator("p_dlt", mode="before")
    @classmethod
    def _not_too_many(cls, v):
        if isinstance(v, list) and len(v) > MAX_DOSES:
            raise ValueError(f"at most {MAX_DOSES} dose levels (got {len(v):,} values)")
        return v

    @field_validator("p_dlt")
    @classmethod
    def _probs(cls, v):
        if v is None:
            return v
        bad = [x for x in v if not (isinstance(x, (int, float)) and math.isfinite(x) and 0 < x < 1)]
        if bad:
            raise ValueError(f"every probability must be a finite number in (0, 1); "
                             f"bad: {short(bad)}")
        return v

    @field_validator("label")
    @classmethod
    def _printable(cls, v):
        if isinstance(v, str) and _CONTROL_ALL.search(v):
            raise ValueError(f"must not contain control characters such as terminal escape "
                             f"codes (got {short(v)})")
        return v

    @field_validator("efficacy")
    @classmethod
    def _eff(cls, v):
        if v is None:
            return v
        bad = [x for x in v if not _is_prob(x)]
        if bad:
            raise ValueError(f"every probability must be a finite number in [0, 1]; bad: "
                             f"{_got(bad)} (got {_got(v)})")
        return [float(x) for x in v]

    @field_validator("correlation")
    @classmethod
    def _rho(cls, v):
        if v is not None and not (math.isfinite(v) and -1.0 < v < 1.0):
            raise ValueError(f"must be in (-1, 1) (got {v})")
        return None if v is None else float(v)

    @field_validator("dlt_window_days")
    @classmethod
    def _window(cls, v):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"must be > 0 days (got {v})")
        return None if v is None else float(v)

    @model_validator(mode="after")
    def _one_kind(self) -> "TruthSpec":
        if (self.p_dlt is None) == (self.toxicities is None):
            both = "both" if self.p_dlt is not None else "neither"
            raise ValueError(f"give either p_dlt (one binary DLT per patient) or toxicities "
                             f"(graded event types with a dlt rule), not {both}")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler, info):
        d = handler(self)
        for k in _OPTIONAL_KEYS:
            if d.get(k, 0) is None:
                del d[k]
        return d

    @property
    def graded(self) -> bool:
        return self.toxicities is not None


# ======================================================================================
# The model
# ======================================================================================
@dataclass(frozen=True, eq=False)
class ToxicityType:
    """One event type of an :class:`OutcomeModel` (arrays indexed ``[grade, dose]``)."""

    name: str
    #: P(worst grade = g) for g = 0..max_grade; row 0 is the remainder
    p_grade: np.ndarray
    #: P(worst grade >= g) for g = 0..max_grade; row 0 is 1
    at_least: np.ndarray
    #: onset law (days after infusion); None = inside the DLT window
    onset: Optional[Distribution] = None

    @property
    def max_grade(self) -> int:
        return self.p_grade.shape[0] - 1

    @classmethod
    def from_grades(cls, name: str, grades: Dict[int, Sequence[float]],
                    onset: Optional[Distribution] = None) -> "ToxicityType":
        """``grades``: grade (1..5) -> per-dose P(worst grade = grade); missing grades are 0."""
        if not grades:
            raise ValueError(f"{name}: no grades given")
        top = max(grades)
        if min(grades) < 1 or top > MAX_GRADE:
            raise ValueError(f"{name}: grades must be 1..{MAX_GRADE} (got {sorted(grades)})")
        lens = {len(v) for v in grades.values()}
        if len(lens) != 1:
            raise ValueError(f"{name}: every grade needs one probability per dose "
                             f"(got lengths {sorted(lens)})")
        K = lens.pop()
        p = np.zeros((top + 1, K))
        for g, v in grades.items():
            p[g] = np.asarray(v, dtype=np.float64)
        if (p < 0).any() or (p > 1).any():
            raise ValueError(f"{name}: grade probabilities must lie in [0, 1]")
        # P(grade >= g), summed from the top grade down: S_g = S_{g+1} + p_g never decreases
        # as g falls, so "grade >= g iff U < S_g" counts grades consistently
        at = np.zeros((top + 2, K))
        for g in range(top, 0, -1):
            at[g] = at[g + 1] + p[g]
        if (at[1] > 1.0 + _SUM_TOL).any():
            raise ValueError(f"{name}: grade probabilities sum above 1 at some dose")
        at = np.minimum(at[: top + 1], 1.0)
        at[0] = 1.0
        p[0] = 1.0 - at[1]
        p[0][p[0] < 0] = 0.0
        return cls(name, p, at, onset)

    def p_onset_within(self, window_days: float) -> float:
        """P(onset day <= window); 1 without an onset law."""
        if self.onset is None:
            return 1.0
        return float(np.clip(self.onset.cdf(np.asarray(float(window_days))), 0.0, 1.0))


@dataclass
class PatientOutcomes:
    """Outcomes of a batch of patients (arrays aligned with the inputs, shape ``(n,)`` or
    ``(n, n_types)``)."""

    type_names: Tuple[str, ...]
    #: worst grade of each type, int8 (n, J)
    grade: np.ndarray
    #: onset day of each type's event (n, J); NaN when the grade is 0 or the type has no
    #: onset law
    onset_day: np.ndarray
    #: False only for an event that starts after the DLT window (n, J); True for types
    #: without an onset law and for patients without an event of the type
    within_window: np.ndarray
    #: the patient has a DLT under the rule (n,)
    dlt: np.ndarray
    #: onset day of the earliest qualifying event inside the window (n,); NaN if no DLT or
    #: its day is not modelled
    dlt_day: np.ndarray
    #: a qualifying event, but only after the window (n,); never together with ``dlt``
    late: np.ndarray
    #: highest grade among all types whose event starts inside the window, int8 (n,)
    worst_grade: np.ndarray
    #: response (n,), or None when the truth has no efficacy
    response: Optional[np.ndarray]
    #: highest grade the truth can produce (scores must cover it)
    max_grade: int

    def normalized_score(self, scores: Scores) -> np.ndarray:
        """Each patient's normalized severity score of ``worst_grade`` (gBOIN's equivalent
        toxicity score, Mu et al. 2019)."""
        return normalized_scores(scores, self.max_grade)[self.worst_grade]


class OutcomeModel:
    """Per-patient outcomes and exact per-dose rates of a truth (see the module docstring).

    Build it with :meth:`binary` (a ``p_dlt`` curve), :meth:`from_spec` (a validated scenario
    truth) or directly from :class:`ToxicityType` objects.
    """

    def __init__(self, types: Sequence[ToxicityType], *, correlation: float = 0.0,
                 rule: Optional[Sequence[Tuple[str, int]]] = None,
                 window_days: float = DEFAULT_DLT_WINDOW_DAYS,
                 efficacy: Optional[Sequence[float]] = None):
        self.types: Tuple[ToxicityType, ...] = tuple(types)
        if not self.types:
            raise ValueError("an outcome model needs at least one toxicity type")
        names = [t.name for t in self.types]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate toxicity type names (got {names})")
        K = {t.p_grade.shape[1] for t in self.types}
        if len(K) != 1:
            raise ValueError(f"toxicity types disagree on the number of doses (got {sorted(K)})")
        self.n_doses = K.pop()
        rho = float(correlation)
        if not -1.0 < rho < 1.0:
            raise ValueError(f"correlation must be in (-1, 1) (got {rho})")
        if len(self.types) == 1 and rho != 0.0:
            raise ValueError(f"a correlation needs at least two toxicity types (got {rho})")
        if len(self.types) >= 3 and rho < 0.0:
            raise ValueError(f"with three or more toxicity types the correlation must be >= 0 "
                             f"(got {rho})")
        self.correlation = rho
        if not (math.isfinite(window_days) and window_days > 0):
            raise ValueError(f"window_days must be > 0 (got {window_days})")
        self.window_days = float(window_days)
        if rule is None:
            rule = [(t.name, 3) for t in self.types]
        idx = {n: i for i, n in enumerate(names)}
        crit = []
        for name, g in rule:
            if name not in idx:
                raise ValueError(f"DLT rule: unknown toxicity type {name!r} (types: {names})")
            if not 1 <= int(g) <= MAX_GRADE:
                raise ValueError(f"DLT rule: min_grade must be 1..{MAX_GRADE} (got {g})")
            crit.append((idx[name], int(g)))
        if not crit or len({j for j, _ in crit}) != len(crit):
            raise ValueError(f"DLT rule: list each type at most once, at least one (got {rule})")
        self.rule: Tuple[Tuple[int, int], ...] = tuple(crit)
        if efficacy is not None:
            eff = np.asarray(efficacy, dtype=np.float64)
            if eff.shape != (self.n_doses,) or (eff < 0).any() or (eff > 1).any():
                raise ValueError(f"efficacy must be {self.n_doses} probabilities in [0, 1] "
                                 f"(got {list(efficacy)})")
            self.efficacy: Optional[np.ndarray] = eff
        else:
            self.efficacy = None
        J = len(self.types)
        R = np.full((J, J), rho)
        np.fill_diagonal(R, 1.0)
        self._chol = np.linalg.cholesky(R)
        # thresholds compared with _latents(): P(grade >= g) on the uniform scale, or its
        # normal score for the copula's z_j (j > 0 with a correlation)
        self._thr = [t.at_least if j == 0 or rho == 0.0 else special.ndtri(t.at_least)
                     for j, t in enumerate(self.types)]
        self._q = np.array([t.p_onset_within(self.window_days) for t in self.types])
        self._cache: Dict[Any, np.ndarray] = {}

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def binary(cls, p_dlt: Sequence[float], efficacy: Optional[Sequence[float]] = None,
               window_days: float = DEFAULT_DLT_WINDOW_DAYS) -> "OutcomeModel":
        """The binary model of ``truth: {p_dlt: [...]}``: one type ``DLT`` with grade 1 only,
        rule ``DLT >= 1``, no onset law; its DLT flag is ``u(t, k) < p_d``."""
        t = ToxicityType.from_grades(BINARY_TYPE, {1: [float(x) for x in p_dlt]})
        return cls([t], rule=[(BINARY_TYPE, 1)], window_days=window_days, efficacy=efficacy)

    @classmethod
    def from_spec(cls, truth: TruthSpec, dlt: Optional[Sequence[DltCriterion]] = None,
                  window_days: Optional[float] = None) -> "OutcomeModel":
        """The model of a validated truth and ``dlt`` rule.  ``window_days``: the scenario's
        DLT window (its ``conduct.dlt_window_days``); ``None`` = ``truth.dlt_window_days``,
        else 28 days."""
        if window_days is None:
            window_days = (truth.dlt_window_days if truth.dlt_window_days is not None
                           else DEFAULT_DLT_WINDOW_DAYS)
        if not truth.graded:
            if dlt:
                raise ValueError("a dlt rule needs a graded truth (truth.toxicities)")
            return cls.binary(truth.p_dlt, truth.efficacy, window_days)
        types = [ToxicityType.from_grades(
            t.type, t.grades, None if t.onset_days is None else t.onset_days.to_distribution())
            for t in truth.toxicities]
        rule = None if dlt is None else [(c.type, c.min_grade) for c in dlt]
        return cls(types, correlation=truth.correlation or 0.0, rule=rule,
                   window_days=window_days, efficacy=truth.efficacy)

    # -- description ----------------------------------------------------------------------
    @property
    def type_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.types)

    @property
    def is_binary(self) -> bool:
        """True for the model of a ``p_dlt`` truth (:meth:`binary`): one type, grade 1 only,
        no onset law -- every event a DLT, ``u(t, k) < p_d``."""
        return (len(self.types) == 1 and self.types[0].onset is None
                and self.types[0].max_grade == 1)

    @property
    def rule_names(self) -> Tuple[Tuple[str, int], ...]:
        """The DLT rule as ``((type, min_grade), ...)``."""
        return tuple((self.types[j].name, g) for j, g in self.rule)

    @property
    def max_grade(self) -> int:
        return max(t.max_grade for t in self.types)

    def _type_index(self, name: str) -> int:
        for j, t in enumerate(self.types):
            if t.name == name:
                return j
        raise KeyError(f"no toxicity type {name!r} (types: {', '.join(self.type_names)})")

    def _at_least(self, j: int, g: int) -> np.ndarray:
        t = self.types[j]
        return t.at_least[g] if g <= t.max_grade else np.zeros(self.n_doses)

    # -- exact per-dose rates -------------------------------------------------------------
    def _memo(self, key, fn) -> np.ndarray:
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = fn()
        return v.copy()

    def p_onset_within(self, type_name: str) -> float:
        """P(onset day <= window) of a type (1 without an onset law)."""
        return float(self._q[self._type_index(type_name)])

    def grade_at_least(self, type_name: str, grade: int) -> np.ndarray:
        """P(worst grade of the type >= grade) per dose, whatever the onset."""
        return self._at_least(self._type_index(type_name), int(grade)).copy()

    def dlt_rates(self) -> np.ndarray:
        """P(DLT) per dose: some rule criterion met by an event starting inside the window."""
        def f():
            S = np.array([self._at_least(j, g) for j, g in self.rule])
            q = np.array([self._q[j] for j, _ in self.rule])
            return p_any_event(S, q, self.correlation)
        return self._memo("dlt", f)

    def any_time_rates(self) -> np.ndarray:
        """P(some rule criterion is met, whenever the event starts) per dose."""
        def f():
            S = np.array([self._at_least(j, g) for j, g in self.rule])
            return p_any_event(S, np.ones(len(self.rule)), self.correlation)
        return self._memo("any", f)

    def late_rates(self) -> np.ndarray:
        """P(late event) per dose: a criterion is met but only by events starting after the
        window, i.e. ``any_time_rates() - dlt_rates()``."""
        return self._memo("late", lambda: np.maximum(self.any_time_rates() - self.dlt_rates(),
                                                     0.0))

    def worst_grade_probs(self) -> np.ndarray:
        """P(worst grade in the window = g), shape ``(max_grade + 1, n_doses)``: the highest
        grade among all types whose event starts inside the window."""
        def f():
            G = self.max_grade
            tail = np.ones((G + 2, self.n_doses))
            tail[G + 1] = 0.0
            J = len(self.types)
            for g in range(1, G + 1):
                S = np.array([self._at_least(j, g) for j in range(J)])
                tail[g] = p_any_event(S, self._q, self.correlation)
            # P(>= g) cannot rise with g; enforce against quadrature round-off
            tail = np.minimum.accumulate(tail, axis=0)
            return np.maximum(tail[:-1] - tail[1:], 0.0)
        return self._memo("worst", f)

    def score_distribution(self, scores: Scores) -> Tuple[np.ndarray, np.ndarray]:
        """``(values, probs)``: the distinct normalized scores of the worst grade in the window
        (ascending) and their probabilities per dose, shape ``(len(values), n_doses)``."""
        s = normalized_scores(scores, self.max_grade)
        pw = self.worst_grade_probs()
        values = np.unique(s[: self.max_grade + 1])
        probs = np.array([pw[s[: self.max_grade + 1] == v].sum(axis=0) for v in values])
        return values, probs

    def mean_score(self, scores: Scores) -> np.ndarray:
        """True mean normalized score per dose (the quantity gBOIN's target refers to)."""
        values, probs = self.score_distribution(scores)
        return values @ probs

    def grade_probs(self) -> Dict[str, np.ndarray]:
        """Per type, P(worst grade of the type = g) per dose, shape ``(max_grade + 1,
        n_doses)`` (row 0: no event), whatever the onset."""
        return {t.name: t.p_grade.copy() for t in self.types}

    def onset_cdfs(self, days) -> Dict[str, Optional[np.ndarray]]:
        """Per type, P(onset day <= x) at the ``days`` given (None: no onset law, the event
        starts inside the DLT window)."""
        x = np.asarray(days, dtype=np.float64)
        return {t.name: None if t.onset is None else
                np.clip(np.asarray(t.onset.cdf(x), dtype=np.float64), 0.0, 1.0)
                for t in self.types}

    def response_rates(self) -> Optional[np.ndarray]:
        """P(response) per dose, or None when the truth has no efficacy."""
        return None if self.efficacy is None else self.efficacy.copy()

    # -- simulation -----------------------------------------------------------------------
    def _indices(self, trials, patients, doses):
        t, k, d = np.broadcast_arrays(np.asarray(trials), np.asarray(patients),
                                      np.asarray(doses))
        t = t.ravel().astype(np.uint64)
        k = k.ravel().astype(np.uint64)
        d = d.ravel().astype(np.intp)
        if d.size and (d.min() < 0 or d.max() >= self.n_doses):
            raise ValueError(f"doses must be 0-based indices below {self.n_doses}")
        return t, k, d

    def _latents(self, seed: int, t, k, needed) -> Dict[int, np.ndarray]:
        """Per needed type j: the value compared with the thresholds ``self._thr[j]`` -- the
        uniform ``U_j`` itself (first type, or independent types) or the copula's normal
        score ``z_j = sum_{i <= j} L[j, i] Phi^-1(u_i)``."""
        def u(j):
            name = "dlt" if j == 0 else LATENT_STREAM.format(type=self.types[j].name)
            return uniforms(stream_key(seed, name), t, k)
        if self.correlation == 0.0:
            return {j: u(j) for j in needed}
        top = max(needed)
        e = [special.ndtri(u(i)) for i in range(1, top + 1)]
        u0 = u(0)                       # drawn once (the same values as drawing it again)
        e0 = special.ndtri(u0) if top > 0 else None
        out = {}
        for j in needed:
            if j == 0:
                out[0] = u0
            else:
                z = self._chol[j, 0] * e0
                for i in range(1, j + 1):
                    z += self._chol[j, i] * e[i - 1]
                out[j] = z
        return out

    def _onset_days(self, seed: int, j: int, t, k) -> np.ndarray:
        w = uniforms(stream_key(seed, ONSET_STREAM.format(type=self.types[j].name)), t, k)
        return self.types[j].onset.sample_from_uniforms(w)

    def outcomes(self, seed: int, trials, patients, doses) -> PatientOutcomes:
        """Outcomes of patients ``patients`` (0-based treatment order) of trials ``trials`` at
        0-based ``doses`` (three broadcastable integer arrays, flattened to 1-D).  Each number
        is a pure function of ``(seed, stream, trial, patient)``, so any subset or batching of
        patients gives the same values; see the module docstring."""
        t, k, d = self._indices(trials, patients, doses)
        n, J = d.size, len(self.types)
        W = self.window_days
        x = self._latents(seed, t, k, range(J))
        grade = np.zeros((J, n), dtype=np.int8)
        for j in range(J):
            thr = self._thr[j]
            for g in range(1, self.types[j].max_grade + 1):
                grade[j] += x[j] < thr[g][d]
        # onset days only for patients with an event (the others have none)
        onset = np.full((J, n), np.nan)
        within = np.ones((J, n), dtype=bool)
        for j, typ in enumerate(self.types):
            if typ.onset is None:
                continue
            ev = np.flatnonzero(grade[j] > 0)
            day = self._onset_days(seed, j, t[ev], k[ev])
            onset[j, ev] = day
            within[j, ev] = day <= W

        dlt = np.zeros(n, dtype=bool)
        late_any = np.zeros(n, dtype=bool)
        dlt_day = np.full(n, np.nan)
        for j, g in self.rule:
            qual = grade[j] >= g
            hit = qual & within[j]
            dlt |= hit
            late_any |= qual & ~within[j]
            dlt_day = np.fmin(dlt_day, np.where(hit, onset[j], np.nan))
        late = late_any & ~dlt
        worst = np.where(within, grade, 0).max(axis=0).astype(np.int8)

        response = None
        if self.efficacy is not None:
            response = uniforms(stream_key(seed, EFFICACY_STREAM), t, k) < self.efficacy[d]
        return PatientOutcomes(self.type_names, grade.T, onset.T, within.T, dlt, dlt_day, late,
                               worst, response, self.max_grade)

    def grades_at_every_dose(self, seed: int, trials, patients, rule_onsets_only: bool = False
                             ) -> Tuple[np.ndarray, np.ndarray]:
        """``(grade, onset)`` of patients ``patients`` of trials ``trials`` (broadcastable,
        flattened to 1-D, n patients) for the calendar engine, which learns a patient's dose
        only when the patient is treated: ``grade[j, i, d]`` (int8, shape (J, n, K)) is the
        worst grade of type j at dose d and ``onset[j, i]`` (J, n) the day of type j's
        event (NaN when the type has no onset law, or no event at any dose).  Column d is
        exactly :meth:`outcomes` at dose d (same latents, thresholds and onset uniforms).
        ``rule_onsets_only``: onset days only of events meeting a criterion of the DLT rule
        at some dose (all the DLT flags need; the other onsets are NaN)."""
        t, k, _ = self._indices(trials, patients, 0)
        J, K, n = len(self.types), self.n_doses, t.size
        x = self._latents(seed, t, k, range(J))
        grade = np.zeros((J, n, K), dtype=np.int8)
        for j in range(J):
            thr, xj = self._thr[j], x[j][:, None]
            for g in range(1, self.types[j].max_grade + 1):
                grade[j] += xj < thr[g][None, :]
        onset = np.full((J, n), np.nan)
        low = dict(self.rule) if rule_onsets_only else {}
        for j, typ in enumerate(self.types):
            if typ.onset is None or (rule_onsets_only and j not in low):
                continue
            ev = np.flatnonzero(grade[j].max(axis=1) >= low.get(j, 1))
            onset[j, ev] = self._onset_days(seed, j, t[ev], k[ev])
        return grade, onset

    def _window_uniform(self, j: int) -> Tuple[float, float]:
        """``(lo, hi)``: onset uniforms <= lo give an onset inside the DLT window, uniforms
        > hi one after it (type j's sampler is non-decreasing in its uniform); in between
        (a band of about 2e-12) the sampler decides.  Found by bisection, cached."""
        key = ("window_u", j)
        if key not in self._cache:
            onset, W = self.types[j].onset, self.window_days

            def inside(u: float) -> bool:
                return bool(onset.sample_from_uniforms(np.array([u]))[0] <= W)

            a, b = 2.0 ** -60, 1.0 - 2.0 ** -53
            if not inside(a):
                lo = hi = -1.0          # every onset after the window
            elif inside(b):
                lo = hi = 2.0           # every onset inside it
            else:
                for _ in range(200):
                    mid = 0.5 * (a + b)
                    if mid in (a, b):
                        break
                    if inside(mid):
                        a = mid
                    else:
                        b = mid
                lo, hi = a - 1e-12, b + 1e-12
            self._cache[key] = np.array([lo, hi])
        lo, hi = self._cache[key]
        return float(lo), float(hi)

    def patient_latents(self, seed: int, trials, n_patients: int
                        ) -> Tuple[np.ndarray, np.ndarray]:
        """What does not depend on the dose, for patients ``0 .. n_patients-1`` of each trial
        of ``trials``: ``(x, late)`` of shape ``(n_types, len(trials), n_patients)``: the
        value compared with the grade thresholds (see :meth:`outcomes`) and whether the type's
        event, if any, starts after the DLT window.  :meth:`grades_at` turns them into the
        worst grade and the DLT flag at any dose, equal to :meth:`outcomes`' values; the
        cohort engine computes one block of trials at once and then looks values up."""
        tr = np.asarray(trials, dtype=np.uint64).ravel()
        m, N, J = tr.size, int(n_patients), len(self.types)
        t = np.repeat(tr, N)
        k = np.tile(np.arange(N, dtype=np.uint64), m)
        xs = self._latents(seed, t, k, range(J))
        x = np.empty((J, m * N))
        late = np.zeros((J, m * N), dtype=bool)
        for j, typ in enumerate(self.types):
            x[j] = xs[j]
            if typ.onset is None:
                continue
            # onset day > W iff the onset uniform is above the window's threshold (the
            # sampler is a non-decreasing function of it); uniforms within 1e-12 of the
            # threshold are decided by the sampler itself, so the flags equal outcomes()
            w = uniforms(stream_key(seed, ONSET_STREAM.format(type=typ.name)), t, k)
            lo, hi = self._window_uniform(j)
            late[j] = w > hi
            band = np.flatnonzero((w > lo) & (w <= hi))
            if band.size:
                late[j, band] = typ.onset.sample_from_uniforms(w[band]) > self.window_days
        return x.reshape(J, m, N), late.reshape(J, m, N)

    #: most cells (codes x doses) of the :meth:`code_tables`; beyond it they are not built
    MAX_CODE_CELLS = 1 << 16

    def _code_thresholds(self) -> Optional[List[np.ndarray]]:
        """Per type, its distinct grade thresholds ``self._thr[j][g][d]`` (g >= 1, every
        dose), ascending; None when the code tables would exceed :data:`MAX_CODE_CELLS`."""
        if "code_thr" not in self._cache:
            T = [np.unique(np.asarray(self._thr[j][1:typ.max_grade + 1]).ravel())
                 for j, typ in enumerate(self.types)]
            cells = self.n_doses
            for t in T:
                cells *= t.size + 1
            self._cache["code_thr"] = T if cells <= self.MAX_CODE_CELLS else None
        return self._cache["code_thr"]

    def code_tables(self) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """``(worst, dlt)``, shape ``(n_codes, n_doses)``: the worst grade in the window
        (int8) and the DLT flag at each dose of a patient with code c
        (:meth:`patient_codes`), or None when the truth has too many thresholds for tables.

        Type j's part of the code is ``b_j``, the number of its distinct thresholds ``T_j``
        (:meth:`_code_thresholds`, ascending) above its latent ``x_j`` (0 for an event that
        starts after the window).  Thresholds above ``x_j`` are exactly the top ``b_j`` of
        ``T_j``, so ``x_j < thr[g][d]`` iff ``b_j > 0`` and ``thr[g][d] >= T_j[-b_j]``:
        the grade of type j at dose d is a function of ``b_j`` alone, and these tables give
        :meth:`grades_at`'s values (same comparisons of the same numbers)."""
        T = self._code_thresholds()
        if T is None:
            return None
        if "code_tab" not in self._cache:
            K = self.n_doses
            sizes = [t.size + 1 for t in T]
            n_codes = int(np.prod(sizes))
            worst = np.zeros((n_codes, K), dtype=np.int8)
            dlt = np.zeros((n_codes, K), dtype=bool)
            rule = dict(self.rule)
            codes = np.arange(n_codes)
            stride = n_codes
            for j, typ in enumerate(self.types):
                stride //= sizes[j]
                b = (codes // stride) % sizes[j]
                # grade of type j at each dose per b (b = 0: no threshold above x: grade 0)
                tab = np.zeros((sizes[j], K), dtype=np.int8)
                for bb in range(1, sizes[j]):
                    low = T[j][-bb]
                    for gr in range(1, typ.max_grade + 1):
                        tab[bb] += self._thr[j][gr] >= low
                g = tab[b]
                np.maximum(worst, g, out=worst)
                if j in rule:
                    dlt |= g >= rule[j]
            self._cache["code_tab"] = (worst, dlt)
        return self._cache["code_tab"]

    def patient_codes(self, seed: int, trials, n_patients: int) -> np.ndarray:
        """One integer per patient ``0 .. n_patients-1`` of each trial of ``trials``, shape
        ``(len(trials), n_patients)``, from which :meth:`code_tables` give the worst grade in
        the window and the DLT flag at every dose: the same values as :meth:`patient_latents`
        and :meth:`grades_at` (the same draws and comparisons), in one small integer.  The
        code is ``sum_j b_j * prod_{i > j} (|T_i| + 1)`` (see :meth:`code_tables`).  Needs
        :meth:`code_tables` not None."""
        T = self._code_thresholds()
        if T is None:
            raise ValueError("this truth has too many grade thresholds for code tables")
        tr = np.asarray(trials, dtype=np.uint64).ravel()
        m, N = tr.size, int(n_patients)
        code = np.empty(m * N, dtype=np.int32)
        # in slices of whole trials of about _CODE_SLICE patients: the temporaries stay in
        # the processor's cache (about twice as fast as whole blocks of trials)
        step = max(1, self._CODE_SLICE // max(N, 1))
        keys = self._code_keys(seed)
        k = np.arange(N, dtype=np.uint64)
        for a in range(0, m, step):
            tt = tr[a:a + step]
            self._codes_into(code[a * N:(a + tt.size) * N], T, keys,
                             counters(tt[:, None], k[None, :]).ravel())
        return code.reshape(m, N)

    #: patients per slice of :meth:`patient_codes`
    _CODE_SLICE = 8192

    def _code_keys(self, seed: int) -> List[Tuple[int, Optional[int]]]:
        """Per type: the stream keys of its latent and of its onset (None: no onset law)."""
        return [(stream_key(seed, "dlt" if j == 0 else LATENT_STREAM.format(type=typ.name)),
                 None if typ.onset is None
                 else stream_key(seed, ONSET_STREAM.format(type=typ.name)))
                for j, typ in enumerate(self.types)]

    def _codes_into(self, code: np.ndarray, T: List[np.ndarray], keys, base: np.ndarray
                    ) -> None:
        """:meth:`patient_codes` of the patients whose :func:`counters` are ``base``."""
        rho = self.correlation
        n = base.size
        hit = np.empty(n, dtype=bool)
        b = np.empty(n, dtype=np.int32)
        code[...] = 0
        bracket = self._bracket_table() if rho != 0.0 and len(self.types) == 2 else None
        u0 = e0 = None
        e = []
        for j, typ in enumerate(self.types):
            key, onset_key = keys[j]
            u = uniforms_at(key, base)
            if j == 0 or rho == 0.0:
                u0 = u if j == 0 else u0
                b[...] = 0
                for thr in T[j]:
                    np.less(u, thr, out=hit)
                    b += hit
            elif bracket is not None:
                self._bracket_count(b, bracket, T[j], u0, u)
            else:
                # z_j = L[j, 0] e_0 + sum_{i=1..j} L[j, i] e_i, in _latents' order
                if e0 is None:
                    e0 = special.ndtri(u0)
                e.append(special.ndtri(u))
                x = self._chol[j, 0] * e0
                for i in range(1, j + 1):
                    x += self._chol[j, i] * e[i - 1]
                b[...] = 0
                for thr in T[j]:
                    np.less(x, thr, out=hit)
                    b += hit
            if onset_key is not None:
                w = uniforms_at(onset_key, base)
                lo, hi = self._window_uniform(j)
                late = w > hi
                band = np.flatnonzero((w > lo) & (w <= hi))
                if band.size:
                    late[band] = typ.onset.sample_from_uniforms(w[band]) > self.window_days
                b[late] = 0
            code *= T[j].size + 1
            code += b

    #: uniform bins per axis of :meth:`_bracket_table` (a power of two: u * bins is exact)
    _BRACKET_BINS = 512
    #: margin around the bounds of :meth:`_bracket_table` (the bounds and z are computed
    #: in floating point with errors of about 1e-14; see there)
    _BRACKET_EPS = 1e-9

    def _bracket_table(self) -> np.ndarray:
        """Two correlated types: the second type's count ``b`` (thresholds above its latent
        ``z = L10 Phi^-1(u0) + L11 Phi^-1(u1)``) for each pair of bins ``[i/B, (i+1)/B)`` of
        ``(u0, u1)``, or -1 where the bin pair does not decide it.

        ``Phi^-1`` is increasing, so in a bin pair z lies between the bounds computed from
        the bins' ends ``E[i] = ndtri(i / B)`` (L10 < 0 swaps the first type's ends); the
        count is decided when it is the same at both bounds widened by 1e-9 (far above the
        floating-point errors of ndtri and of the sums, ~1e-14 for |z| < 9).  Most patients
        then need no normal quantile; the others get z computed as :meth:`_latents` does,
        so every count is that of the same comparisons."""
        if "bracket" not in self._cache:
            B = self._BRACKET_BINS
            E = special.ndtri(np.arange(B + 1) / B)         # E[0] = -inf, E[B] = +inf
            L0, L1 = float(self._chol[1, 0]), float(self._chol[1, 1])
            lo0, hi0 = (E[:-1], E[1:]) if L0 > 0 else (E[1:], E[:-1])
            lo = L0 * lo0[:, None] + L1 * E[None, :-1]
            hi = L0 * hi0[:, None] + L1 * E[None, 1:]
            T = self._code_thresholds()[1]
            c_lo = T.size - np.searchsorted(T, lo - self._BRACKET_EPS, side="right")
            c_hi = T.size - np.searchsorted(T, hi + self._BRACKET_EPS, side="right")
            tab = np.where(c_lo == c_hi, c_lo, -1)
            self._cache["bracket"] = tab.astype(np.int8 if T.size < 127 else np.int16).ravel()
        return self._cache["bracket"]

    def _bracket_count(self, b: np.ndarray, tab: np.ndarray, T: np.ndarray, u0: np.ndarray,
                       u1: np.ndarray) -> None:
        """``b`` = the second type's counts from :meth:`_bracket_table`, the undecided ones
        from z itself."""
        B = self._BRACKET_BINS
        i0 = (u0 * B).astype(np.intp)
        i0 *= B
        i0 += (u1 * B).astype(np.intp)
        b[...] = tab[i0]
        todo = np.flatnonzero(b < 0)
        if todo.size:
            z = self._chol[1, 0] * special.ndtri(u0[todo])
            z += self._chol[1, 1] * special.ndtri(u1[todo])
            b[todo] = T.size - np.searchsorted(T, z, side="right")

    @staticmethod
    def fold_late(x: np.ndarray, late: np.ndarray) -> np.ndarray:
        """``x`` with +inf where the event starts after the window: no threshold is above
        +inf, so :meth:`grades_at` then gives grade 0 there without the late flags (the same
        values: a late event counts for neither the worst grade in the window nor a DLT)."""
        return np.where(late, np.inf, x)

    def grades_at(self, x: np.ndarray, late: Optional[np.ndarray], doses
                  ) -> Tuple[np.ndarray, np.ndarray]:
        """``(worst grade in the window, DLT flag)`` of patients with latents ``x`` and late
        flags ``late`` (both ``(n_types, n)``, from :meth:`patient_latents`; ``late`` None
        when folded into ``x`` by :meth:`fold_late`) at 0-based ``doses`` (n,)."""
        d = np.asarray(doses, dtype=np.intp)
        worst = np.zeros(d.size, dtype=np.int8)
        dlt = np.zeros(d.size, dtype=bool)
        rule = dict(self.rule)
        for j, typ in enumerate(self.types):
            thr = self._thr[j]
            g = np.zeros(d.size, dtype=np.int8)
            xj = x[j]
            for gr in range(1, typ.max_grade + 1):
                g += xj < thr[gr][d]
            if typ.onset is not None and late is not None:
                g[late[j]] = 0
            np.maximum(worst, g, out=worst)
            if j in rule:
                dlt |= g >= rule[j]
        return worst, dlt

    def dlt_flags(self, seed: int, trials, patients, doses) -> np.ndarray:
        """Only the DLT flags of :meth:`outcomes` (identical values), computing no more than
        they need: the latents of the rule's types (and, with a correlation, of the types
        listed before them) and onset days only for patients with a qualifying grade.  For a
        binary truth this is ``u(t, k) < p_d``."""
        t, k, d = self._indices(trials, patients, doses)
        x = self._latents(seed, t, k, sorted({j for j, _ in self.rule}))
        dlt = np.zeros(d.size, dtype=bool)
        for j, g in self.rule:
            qual = x[j] < self._thr[j][g][d]
            if self.types[j].onset is None:
                dlt |= qual
                continue
            idx = np.flatnonzero(qual & ~dlt)
            day = self._onset_days(seed, j, t[idx], k[idx])
            dlt[idx[day <= self.window_days]] = True
        return dlt


# ======================================================================================
# Exact probabilities
# ======================================================================================
def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / _SQRT_2PI


def _quad(f, lo: float, hi: float, points: Sequence[float]) -> float:
    from scipy import integrate  # imported on first use: the command line starts faster
    pts = sorted({float(p) for p in points if lo < p < hi})
    with warnings.catch_warnings():
        # the requested tolerance is below double round-off on some intervals; the achieved
        # accuracy (~1e-14 absolute) is checked by tests/test_truth.py against Owen's T
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        val, _ = integrate.quad(f, lo, hi, points=pts or None, epsabs=_EPSABS,
                                epsrel=_EPSREL, limit=500)
    return val


def bivariate_normal_cdf(h: float, k: float, rho: float) -> float:
    """``Phi2(h, k; rho) = P(Z_1 <= h, Z_2 <= k)`` for standard normals with correlation rho,
    as ``int_{-inf}^{min(h,k)} phi(x) Phi((max(h,k) - rho x) / sqrt(1 - rho^2)) dx`` by
    adaptive Gauss-Kronrod quadrature (absolute error about 1e-14)."""
    h, k, rho = float(h), float(k), float(rho)
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must be in (-1, 1) (got {rho})")
    if math.isnan(h) or math.isnan(k):
        raise ValueError("h and k must be numbers")
    if h == -math.inf or k == -math.inf:
        return 0.0
    if h == math.inf:
        return float(special.ndtr(k))
    if k == math.inf:
        return float(special.ndtr(h))
    if rho == 0.0:
        return float(special.ndtr(h) * special.ndtr(k))
    if h > k:
        h, k = k, h
    if h <= _LO:
        return 0.0
    s = math.sqrt((1.0 - rho) * (1.0 + rho))

    def f(x):
        return _phi(x) * special.ndtr((k - rho * x) / s)

    return _quad(f, _LO, h, (-8.0, 0.0, k / rho))


def _p_any_factor(S: np.ndarray, q: np.ndarray, rho: float) -> float:
    """One dose, >= 3 types, rho > 0: ``int phi(w) [1 - prod_j (1 - q_j c_j(w))] dw``."""
    a = special.ndtri(S)
    r, s = math.sqrt(rho), math.sqrt(1.0 - rho)

    def f(w):
        c = special.ndtr((a - r * w) / s)
        return _phi(w) * (1.0 - float(np.prod(1.0 - q * c)))

    pts = [-8.0, 0.0, 8.0] + [float(x) / r for x in a if math.isfinite(x)]
    return _quad(f, _LO, _HI, pts)


def p_any_event(S, q, rho: float) -> np.ndarray:
    """P(at least one j has ``U_j < S_j`` and its onset inside the window) per dose.

    ``S``: (J, K) thresholds P(grade_j >= g_j); ``q``: (J,) P(onset_j inside the window);
    the latents are exchangeably correlated (Gaussian copula, correlation ``rho``), onsets
    independent of everything.  See the module docstring for the formulas."""
    S = np.atleast_2d(np.asarray(S, dtype=np.float64))
    q = np.asarray(q, dtype=np.float64)
    J, K = S.shape
    if q.shape != (J,):
        raise ValueError(f"q must have one value per type (got {q.shape} for {J} types)")
    if J == 1:
        return q[0] * S[0]
    if rho == 0.0:
        return 1.0 - np.prod(1.0 - q[:, None] * S, axis=0)
    if J >= 3 and rho < 0.0:
        raise ValueError(f"negative correlation needs exactly two types (got {J}, rho {rho})")
    out = np.empty(K)
    for d in range(K):
        m = q * S[:, d]
        live = m > 0.0
        n_live = int(live.sum())
        if n_live == 0:
            out[d] = 0.0
        elif n_live == 1:
            out[d] = float(m[live][0])
        elif n_live == 2:
            (i, j) = np.flatnonzero(live)
            both = bivariate_normal_cdf(special.ndtri(S[i, d]), special.ndtri(S[j, d]), rho)
            out[d] = m[i] + m[j] - q[i] * q[j] * both
        else:
            out[d] = _p_any_factor(S[live, d], q[live], rho)
    return np.clip(out, 0.0, 1.0)


# ======================================================================================
# Scenario-level checks (everything that needs the number of doses, the rule or conduct)
# ======================================================================================
def conduct_window_days(conduct_raw) -> Optional[float]:
    """The DLT window a raw ``conduct`` block sets (its default when the key is absent);
    ``None`` without a conduct block or when the value is not a number."""
    if not isinstance(conduct_raw, dict):
        return None
    from .conduct import Conduct
    v = conduct_raw.get("dlt_window_days", Conduct.model_fields["dlt_window_days"].default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def scenario_window_days(truth: TruthSpec, conduct) -> float:
    """The DLT window of a scenario: ``conduct.dlt_window_days`` with a conduct block, else
    ``truth.dlt_window_days``, else :data:`DEFAULT_DLT_WINDOW_DAYS`."""
    if conduct is not None:
        return float(conduct.dlt_window_days)
    if truth.dlt_window_days is not None:
        return float(truth.dlt_window_days)
    return DEFAULT_DLT_WINDOW_DAYS


def truth_problems(raw: Dict[str, Any], n_doses: Optional[int]) -> List[str]:
    """Cross-field problems of a raw scenario's ``truth`` and ``dlt`` blocks, one line each
    as ``field.path: message (got VALUE)``.  Problems inside either block (types, ranges) are
    reported by the scenario model's own validation and not repeated here."""
    truth_raw = raw.get("truth")
    if not isinstance(truth_raw, dict):
        return []
    try:
        spec = TruthSpec.model_validate(truth_raw)
    except ValidationError:
        return []
    problems: List[str] = []
    K = n_doses
    dlt_raw = raw.get("dlt")
    rule: Optional[List[DltCriterion]] = None
    rule_ok = True
    if dlt_raw is not None:
        try:
            rule = _RULE_ADAPTER.validate_python(dlt_raw)
        except ValidationError:
            rule_ok = False
    if K and spec.efficacy is not None and len(spec.efficacy) != K:
        problems.append(f"truth.efficacy: has {len(spec.efficacy)} values for {K} doses "
                        f"(got {_got(spec.efficacy)})")

    if not spec.graded:
        if dlt_raw is not None:
            problems.append(f"dlt: a DLT rule needs a graded truth (truth.toxicities); with "
                            f"truth.p_dlt every event is a DLT (got {_got(dlt_raw)})")
        if spec.correlation is not None:
            problems.append(f"truth.correlation: needs at least two toxicity types in "
                            f"truth.toxicities (got {spec.correlation})")
        if spec.dlt_window_days is not None:
            problems.append(f"truth.dlt_window_days: only a graded truth (truth.toxicities) "
                            f"uses a DLT window (got {spec.dlt_window_days})")
        return problems

    tox = spec.toxicities
    J = len(tox)
    first: Dict[str, int] = {}
    for i, t in enumerate(tox):
        key = t.type.lower()
        if key in first:
            problems.append(f"truth.toxicities[{i}].type: duplicate type name {t.type!r} (also "
                            f"truth.toxicities[{first[key]}]) (got {t.type!r})")
        else:
            first[key] = i
    if K:
        for i, t in enumerate(tox):
            for g, v in t.grades.items():
                if len(v) != K:
                    problems.append(f"truth.toxicities[{i}].grades.{g}: has {len(v)} values "
                                    f"for {K} doses (got {_got(v)})")
    rho = spec.correlation
    if rho is not None and J == 1 and rho != 0.0:
        problems.append(f"truth.correlation: needs at least two toxicity types (got {rho})")
    if rho is not None and J >= 3 and rho < 0.0:
        problems.append(f"truth.correlation: must be >= 0 with three or more toxicity types "
                        f"(an exchangeable correlation below 0 is supported for two types "
                        f"only) (got {rho})")
    if isinstance(dlt_raw, list) and rule is not None:
        names = [t.type for t in tox]
        seen: Dict[str, int] = {}
        for i, c in enumerate(rule):
            if c.type not in names:
                close = difflib.get_close_matches(c.type, names, n=1, cutoff=0.3)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(f"dlt[{i}].type: unknown toxicity type{hint} (types in "
                                f"truth.toxicities: {', '.join(names)}) (got {c.type!r})")
                continue
            if c.type in seen:
                problems.append(f"dlt[{i}].type: {c.type} is already in dlt[{seen[c.type]}]; "
                                f"list each type once (got {c.type!r})")
                continue
            seen[c.type] = i
            top = tox[names.index(c.type)].max_grade
            if c.min_grade > top:
                problems.append(f"dlt[{i}].min_grade: {c.type} lists grades up to {top}, so "
                                f"this criterion can never be met (got {c.min_grade})")
    conduct_raw = raw.get("conduct")
    cw = conduct_window_days(conduct_raw)
    if spec.dlt_window_days is not None and conduct_raw is not None and cw is not None \
            and cw != spec.dlt_window_days:
        problems.append(f"truth.dlt_window_days: with a conduct block the DLT window is "
                        f"conduct.dlt_window_days ({cw:g}); remove truth.dlt_window_days or "
                        f"make them equal (got {spec.dlt_window_days:g})")

    if problems or not rule_ok or not K:
        return problems
    window = cw if conduct_raw is not None and cw is not None else (
        spec.dlt_window_days if spec.dlt_window_days is not None else DEFAULT_DLT_WINDOW_DAYS)
    try:
        model = OutcomeModel.from_spec(spec, rule, window)
    except ValueError as exc:  # pragma: no cover - every cause is reported above
        return [f"truth: {exc}"]
    p = model.dlt_rates()
    if not spec.allow_non_monotone and (np.diff(p) < 0).any():
        shown = [round(float(x), 4) for x in p]
        problems.append(f"truth: the DLT rate derived from the toxicities and the dlt rule must "
                        f"be non-decreasing in dose; set truth.allow_non_monotone: true to "
                        f"allow it (got {_got(shown)})")
    return problems
