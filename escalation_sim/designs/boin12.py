"""BOIN12 (Lin, Zhou, Yan, Li & Yuan 2020, JCO Precis Oncol 4:1393): toxicity and efficacy,
rank-based desirability, optimal biological dose.  The rules are pure functions on per-dose
counts of patients, toxicities, responses and patients with both (:class:`BOIN12`);
:class:`Boin12Design` runs them on the engines' ``TrialState`` (``Outcome.JOINT``) and is
registered as ``type: boin12`` (the spec, the true OBD and the decision table below).

Sources (docs/reference_notes/boin12.md; the paper itself was not reachable): the rule as the
R package escalation 0.x implements it (``boin12_logic.R``, written by M. Sweeting and edited
"to get concordance with the published paper and software"; read, not copied) and the
published decisions it reproduces (the paper's example on p. 1396 and Section 6 / Figure S2
of its Data Supplement; MD Anderson's BOIN12 Shiny app).

Outcomes and utilities
----------------------
Each patient has a binary toxicity and a binary efficacy outcome; their four combinations have
utilities u1 (efficacy, no toxicity; 100), u2 (neither; 40), u3 (both; 60) and u4 (toxicity,
no efficacy; 0).  At dose d with n patients, the quasi-binomial utility data are
x = (u1 n01 + u2 n00 + u3 n11 + u4 n10) / 100 "successes" out of n.  The benchmark utility is
u_b = u_bar + (100 - u_bar) / 2 with u_bar = u1 phi_e (1 - phi_t) + u2 (1 - phi_t)(1 - phi_e)
+ u3 phi_t phi_e + u4 phi_t (1 - phi_e) (the utility of the highest undesirable dose, phi_t =
``target_toxicity``, phi_e = ``min_efficacy``); the rank-based desirability score is
RDS_d = 100 Pr(utility > u_b / 100 | Beta(1 + x, 1 + n - x)) (29.5 for an untried dose at the
defaults with phi_t = 0.35, phi_e = 0.25, where u_b = 70.5).

Admissibility: dose d is not admissible if Pr(p_T > phi_t | Beta(1 + y_T, 1 + n - y_T)) >= c_t
(0.95) or Pr(p_E < phi_e | Beta(1 + y_E, 1 + n - y_E)) >= c_e (0.90); only the doses d-1, d,
d+1 around the current dose d are checked, as in the reference implementation.

Next dose (current dose d, p_hat = toxicities / patients at d; lambda_e, lambda_d: BOIN's
boundaries for phi_t with phi1 = 0.6 phi_t, phi2 = 1.4 phi_t), in this order:

1. exploration: n_d >= ``explore_n`` (9), p_hat < lambda_d, d not the top dose and d+1
   untried -> d+1;
2. p_hat >= lambda_d -> d-1 (dose 1 stays at 1: the reference implementation notes that the
   paper and its software de-escalate whether or not d-1 is admissible);
3. lambda_e < p_hat < lambda_d and n_d >= ``n_star`` (6) -> d-1 or d: the one with the larger
   RDS if both are admissible (a tie goes to d-1), else whichever is admissible, else dose 1;
4. no admissible dose among d-1, d, d+1 -> stop, no dose;
5. otherwise the admissible dose among d-1, d, d+1 with the largest RDS, ties to the
   **highest** (the Shiny app's choice).

``stop_n_at_dose`` (None by default; 12 in the published example) stops the trial when the
next dose already has that many patients, and ``max_n`` when the total reaches it.

OBD selection (:meth:`BOIN12.select_obd`): the two implementations read differ and the paper's
text was not reachable; implemented here is the simpler one of R escalation's
``select_boin12_obd``: unweighted pool-adjacent-violators of the empirical toxicity rates of
the treated doses, the MTD the treated dose whose estimate is closest to phi_t (ties to the
higher), the OBD the treated, admissible dose at or below the MTD with the largest RDS (ties
to the lower).  The MD Anderson-style selection (unimodal isotonic model averaging of the
efficacy rates) is not implemented.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Tuple


from .boin import boin_lambdas
from .interval import isotonic_regression

__all__ = ["JointCounts", "joint_counts_from_outcomes", "BOIN12", "Boin12Decision"]

_TOKEN = re.compile(r"(\d+)([NETB]+)")
#: outcome letters: (toxicity, efficacy)
LETTERS = {"N": (0, 0), "E": (0, 1), "T": (1, 0), "B": (1, 1)}


@dataclass(frozen=True)
class JointCounts:
    """Per-dose counts of a toxicity-and-efficacy trial (0-based doses): ``n`` patients,
    ``tox`` with a toxicity, ``eff`` with a response, ``both`` with both (None: not known;
    BOIN12's utilities need it, Keyboard phase I/II does not); ``current`` the dose of the
    latest cohort (None before any)."""

    n: Tuple[int, ...]
    tox: Tuple[int, ...]
    eff: Tuple[int, ...]
    both: Optional[Tuple[int, ...]] = None
    current: Optional[int] = None

    def __post_init__(self) -> None:
        k = len(self.n)
        both = self.both
        if not (len(self.tox) == len(self.eff) == k) or k < 1 or \
                (both is not None and len(both) != k):
            raise ValueError("n, tox, eff (and both, when given) need one count per dose")
        for d in range(k):
            n, t, e = self.n[d], self.tox[d], self.eff[d]
            b = max(0, t + e - n) if both is None else both[d]
            if not (0 <= t <= n and 0 <= e <= n and max(0, t + e - n) <= b <= min(t, e)):
                raise ValueError(f"dose {d + 1}: inconsistent counts (n {n}, tox {t}, eff {e}, "
                                 f"both {b})")
        if self.current is not None and not 0 <= self.current < k:
            raise ValueError(f"current dose index {self.current} outside 0..{k - 1}")

    @property
    def n_doses(self) -> int:
        return len(self.n)

    @classmethod
    def trusted(cls, n, tox, eff, both, current) -> "JointCounts":
        """Counts already checked (an engine's ``JointState``): no validation (speed)."""
        obj = object.__new__(cls)
        object.__setattr__(obj, "n", n)
        object.__setattr__(obj, "tox", tox)
        object.__setattr__(obj, "eff", eff)
        object.__setattr__(obj, "both", both)
        object.__setattr__(obj, "current", current)
        return obj

    @classmethod
    def empty(cls, n_doses: int) -> "JointCounts":
        z = (0,) * n_doses
        return cls(z, z, z, z)

    def add(self, dose: int, letters: str) -> "JointCounts":
        """The counts after a cohort at ``dose`` (0-based) with outcome letters N / E / T / B
        (neither, efficacy only, toxicity only, both)."""
        if self.both is None:
            raise ValueError("these counts have no joint (both) count to add to")
        lists = [list(v) for v in (self.n, self.tox, self.eff, self.both)]
        for ch in letters:
            if ch not in LETTERS:
                raise ValueError(f"outcome letters are N, E, T, B (got {ch!r})")
            t, e = LETTERS[ch]
            lists[0][dose] += 1
            lists[1][dose] += t
            lists[2][dose] += e
            lists[3][dose] += t * e
        n, t, e, b = (tuple(v) for v in lists)
        return JointCounts(n, t, e, b, current=dose)

    def utility_data(self, dose: int, u: Tuple[float, float, float, float]) -> float:
        """x = (u1 n01 + u2 n00 + u3 n11 + u4 n10) / 100 at ``dose``."""
        if self.both is None:
            raise ValueError("the utility needs the joint (both) count per dose")
        n, t, e, b = self.n[dose], self.tox[dose], self.eff[dose], self.both[dose]
        n01, n11, n10 = e - b, b, t - b
        n00 = n - n01 - n11 - n10
        u1, u2, u3, u4 = u
        return (u1 * n01 + u2 * n00 + u3 * n11 + u4 * n10) / 100.0


def joint_counts_from_outcomes(text: str, n_doses: int) -> JointCounts:
    """``"1NNN 2ENT"``: cohort 1 at dose 1, three patients with neither outcome; cohort 2 at
    dose 2: efficacy only, neither, toxicity only (letters N, E, T, B; 1-based doses)."""
    state = JointCounts.empty(n_doses)
    for token in text.split():
        m = _TOKEN.fullmatch(token)
        if not m:
            raise ValueError(f"bad cohort {token!r}: a dose number then letters N, E, T, B")
        dose = int(m.group(1))
        if not 1 <= dose <= n_doses:
            raise ValueError(f"dose {dose} outside 1..{n_doses} in {token!r}")
        state = state.add(dose - 1, m.group(2))
    return state


@dataclass(frozen=True)
class Boin12Decision:
    """``dose`` (0-based) of the next cohort, or None to stop; ``rds`` per dose; ``admissible``
    the 0-based doses checked and admissible."""

    dose: Optional[int]
    reason: str
    rds: Tuple[float, ...]
    admissible: Tuple[int, ...]

    @property
    def stop(self) -> bool:
        return self.dose is None


@lru_cache(maxsize=65536)
def _sf(x: float, a: float, b: float) -> float:
    from scipy.stats import beta as beta_dist   # on first use: the CLI starts without it
    return float(beta_dist.sf(x, a, b))


@lru_cache(maxsize=65536)
def _cdf(x: float, a: float, b: float) -> float:
    from scipy.stats import beta as beta_dist   # on first use: the CLI starts without it
    return float(beta_dist.cdf(x, a, b))


@lru_cache(maxsize=1 << 18)
def _rds_cell(n: int, t: int, e: int, b: int, u: Tuple[float, float, float, float],
              u_b: float) -> float:
    """RDS of a dose with n patients, t DLTs, e responders, b with both (cached)."""
    n01, n11, n10 = e - b, b, t - b
    n00 = n - n01 - n11 - n10
    x = (u[0] * n01 + u[1] * n00 + u[2] * n11 + u[3] * n10) / 100.0
    return 100.0 * _sf(u_b / 100.0, 1.0 + x, 1.0 + n - x)


@dataclass(frozen=True)
class BOIN12:
    """BOIN12's rules (module docstring); ``u`` = (u1, u2, u3, u4)."""

    n_doses: int
    target_toxicity: float = 0.35
    min_efficacy: float = 0.25
    u: Tuple[float, float, float, float] = (100.0, 40.0, 60.0, 0.0)
    n_star: int = 6
    explore_n: int = 9
    c_t: float = 0.95
    c_e: float = 0.90
    start_dose: int = 0
    stop_n_at_dose: Optional[int] = None
    max_n: Optional[int] = None

    def __post_init__(self) -> None:
        u1, u2, u3, u4 = self.u
        if not (u4 <= u2 and u3 <= u1):
            raise ValueError(f"utilities need u4 <= u2 and u3 <= u1 (got {self.u})")
        for name in ("target_toxicity", "min_efficacy", "c_t", "c_e"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"{name} must be in (0, 1) (got {v})")
        object.__setattr__(self, "_lam", boin_lambdas(self.target_toxicity))
        object.__setattr__(self, "u", tuple(float(x) for x in self.u))
        ub = self.u_bar + (100.0 - self.u_bar) / 2.0
        object.__setattr__(self, "_ub", ub)

    # ----------------------------------------------------------------- quantities
    @property
    def lambdas(self) -> Tuple[float, float]:
        return self._lam

    @property
    def u_bar(self) -> float:
        u1, u2, u3, u4 = self.u
        pt, pe = self.target_toxicity, self.min_efficacy
        return u1 * pe * (1 - pt) + u2 * (1 - pt) * (1 - pe) + u3 * pt * pe + u4 * pt * (1 - pe)

    @property
    def u_b(self) -> float:
        return self._ub

    def rds(self, counts: JointCounts, dose: int) -> float:
        """Rank-based desirability score of ``dose`` (0-100)."""
        if counts.both is None:
            raise ValueError("the utility needs the joint (both) count per dose")
        return _rds_cell(counts.n[dose], counts.tox[dose], counts.eff[dose], counts.both[dose],
                         self.u, self._ub)

    def admissible(self, counts: JointCounts, dose: int) -> bool:
        n, t, e = counts.n[dose], counts.tox[dose], counts.eff[dose]
        if _sf(self.target_toxicity, 1.0 + t, 1.0 + n - t) >= self.c_t:
            return False
        return _cdf(self.min_efficacy, 1.0 + e, 1.0 + n - e) < self.c_e

    # ----------------------------------------------------------------- decide
    def decide(self, counts: JointCounts) -> Boin12Decision:
        K = self.n_doses
        if counts.n_doses != K:
            raise ValueError(f"counts have {counts.n_doses} doses, the design {K}")
        rds = tuple(self.rds(counts, d) for d in range(K))
        d = counts.current
        if d is None:
            return Boin12Decision(self.start_dose, "start", rds, ())
        if self.max_n is not None and sum(counts.n) >= self.max_n:
            return Boin12Decision(None, f"max_n {self.max_n} reached", rds, ())
        near = sorted({max(0, d - 1), d, min(K - 1, d + 1)})
        adm = tuple(j for j in near if self.admissible(counts, j))
        lam_e, lam_d = self.lambdas
        n = counts.n[d]
        p = counts.tox[d] / n
        obs = f"dose {d + 1}: {counts.tox[d]}/{n} toxicities"
        if n >= self.explore_n and p < lam_d and d < K - 1 and counts.n[d + 1] == 0:
            nxt, why = d + 1, f"{obs} < lambda_d, n >= {self.explore_n}: explore dose {d + 2}"
        elif p >= lam_d:
            nxt, why = max(d - 1, 0), f"{obs} >= lambda_d {lam_d:.3f}: de-escalate"
        elif lam_e < p < lam_d and n >= self.n_star:
            lo = d - 1
            if lo >= 0 and lo in adm and d in adm:
                nxt = lo if rds[lo] >= rds[d] else d
            else:
                nxt = lo if (lo >= 0 and lo in adm) else (d if d in adm else 0)
            why = f"{obs} between the boundaries with n >= {self.n_star}: d-1 or d by RDS"
        elif not adm:
            return Boin12Decision(None, f"{obs}: no admissible dose among d-1, d, d+1", rds,
                                  adm)
        else:
            best = max(rds[j] for j in adm)
            nxt = max(j for j in adm if rds[j] == best)
            why = f"{obs}: the largest RDS among admissible d-1, d, d+1"
        if self.stop_n_at_dose is not None and counts.n[nxt] >= self.stop_n_at_dose:
            return Boin12Decision(None, f"{why}; dose {nxt + 1} already has "
                                        f"{counts.n[nxt]} patients: stop", rds, adm)
        return Boin12Decision(nxt, why, rds, adm)

    # ----------------------------------------------------------------- selection
    def select_obd(self, counts: JointCounts) -> Optional[int]:
        """The OBD (0-based) or None (module docstring: R escalation's selection)."""
        treated = [d for d in range(self.n_doses) if counts.n[d] > 0]
        if not treated:
            return None
        rates = [counts.tox[d] / counts.n[d] for d in treated]
        iso = isotonic_regression(rates, [1.0] * len(rates))
        best_k, best_dist = 0, None
        for k, v in enumerate(iso):
            dist = abs(v - self.target_toxicity)
            if best_dist is None or dist <= best_dist:     # ties to the higher dose
                best_k, best_dist = k, dist
        mtd = treated[best_k]
        cands = [d for d in treated if d <= mtd and self.admissible(counts, d)]
        if not cands:
            return None
        top = max(self.rds(counts, d) for d in cands)
        return min(d for d in cands if self.rds(counts, d) == top)

    def rds_table(self, counts: JointCounts) -> List[float]:
        return [self.rds(counts, d) for d in range(self.n_doses)]


# =========================================================================== runnable design
# (the engines' interface: TrialState with responses, Decision, registry entry, table)
from typing import Any, ClassVar, Dict, Literal  # noqa: E402

from pydantic import Field, field_validator  # noqa: E402

from ..types import Decision, StopReason, TrialState  # noqa: E402
from .base import Design, DesignContext, DesignSpecBase, Outcome  # noqa: E402


def joint_counts(state: TrialState) -> JointCounts:
    """The :class:`JointCounts` of a :class:`~escalation_sim.types.JointState`."""
    if getattr(state, "e", None) is None or getattr(state, "b", None) is None:
        raise ValueError("this design uses responses: it needs a joint trial state "
                         "(responders and patients with both per dose)")
    return JointCounts.trusted(state.n, state.y, state.e, state.b, state.current)


class JointRulesDesign(Design):
    """The engine side shared by the toxicity-and-efficacy designs that run a pure rules
    object on :class:`JointCounts` (BOIN12, Keyboard phase I/II): the rules built once from
    the design's fields by ``_make_rules`` and left out of pickles, cohorts of
    ``cohort_size``, the rules' decision on the joint counts (a stop maps to a reason through
    ``_stop_reason``) and the true OBD from ``true_utility`` and ``true_admissible``."""

    outcome: ClassVar[Outcome] = Outcome.JOINT
    selects: ClassVar[str] = "OBD"

    def _make_rules(self) -> Any:
        raise NotImplementedError

    def _stop_reason(self, reason: str) -> StopReason:
        return StopReason.NO_ADMISSIBLE_DOSE

    @property
    def rules(self) -> Any:
        r = self.__dict__.get("_rules")
        if r is None:
            r = self._make_rules()
            object.__setattr__(self, "_rules", r)
        return r

    def __post_init__(self) -> None:
        self.rules  # validates the options

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_rules"}

    def __setstate__(self, d):
        self.__dict__.update(d)

    @property
    def max_cohort_size(self) -> int:
        return self.cohort_size

    def decide(self, state: TrialState) -> Decision:
        dec = self.rules.decide(joint_counts(state))
        if dec.stop:
            return Decision.halt(self._stop_reason(dec.reason), dec.reason)
        return Decision.treat(dec.dose, self.cohort_size, dec.reason)

    def true_obd(self, p_tox, p_eff) -> Optional[int]:
        """The true OBD: the admissible dose with the largest true utility (ties to the
        lower dose), None when no dose is admissible."""
        return best_admissible(self.true_utility(p_tox, p_eff),
                               self.true_admissible(p_tox, p_eff))


def ints_to_floats(v):
    """A pydantic before-validator body: whole numbers in a list become floats."""
    if isinstance(v, list):
        return [float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
    return v


def true_utility_boin12(p_tox, p_eff, u=(100.0, 40.0, 60.0, 0.0)) -> List[float]:
    """The mean utility per patient of each dose (0-100) on the truth: u1 q(1-p) + u2 (1-p)
    (1-q) + u3 p q + u4 p (1-q), toxicity and response independent (as the truth draws
    them; BOIN12's u-bar formula)."""
    u1, u2, u3, u4 = u
    return [u1 * q * (1 - p) + u2 * (1 - p) * (1 - q) + u3 * p * q + u4 * p * (1 - q)
            for p, q in zip(p_tox, p_eff)]


@dataclass(frozen=True)
class Boin12Design(JointRulesDesign):
    """BOIN12 on the engines (``type: boin12``): ``target`` is phi_t (the highest acceptable
    DLT rate), ``min_efficacy`` phi_e (the lowest acceptable response rate); the rules and
    the OBD selection are :class:`BOIN12`'s.  ``select_mtd`` returns the **OBD**."""

    n_doses: int
    target: float = 0.35
    min_efficacy: float = 0.25
    u: Tuple[float, float, float, float] = (100.0, 40.0, 60.0, 0.0)
    n_star: int = 6
    explore_n: int = 9
    c_t: float = 0.95
    c_e: float = 0.90
    cohort_size: int = 3
    start_dose: int = 0
    name: str = "boin12"

    def _make_rules(self) -> BOIN12:
        return BOIN12(self.n_doses, self.target, self.min_efficacy, tuple(self.u),
                      self.n_star, self.explore_n, self.c_t, self.c_e, self.start_dose)

    def canonical(self, state: TrialState) -> Any:
        """The counts the rules read; the "both" counts only when the utilities need them:
        x = (u1 e + u2 (n - y - e) + u4 y + (u3 + u2 - u1 - u4) b) / 100, so with
        u1 + u4 = u2 + u3 (the paper's 100, 40, 60, 0) b drops out."""
        u1, u2, u3, u4 = self.u
        if u1 + u4 == u2 + u3:
            return (state.n, state.y, state.e, state.current)
        return (state.n, state.y, state.e, state.b, state.current)

    def select_mtd(self, state: TrialState) -> Optional[int]:
        """The optimal biological dose (:meth:`BOIN12.select_obd`), or None."""
        return self.rules.select_obd(joint_counts(state))

    select_obd = select_mtd

    def exact_rules(self, max_n: int) -> Any:
        """The rules on arrays of joint states (:class:`~.batch_obd.Boin12Rules`), or None
        when the tables would be too large."""
        from .batch_obd import Boin12Rules, cached_rules
        return cached_rules(Boin12Rules, self, max_n)

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        c = joint_counts(state)
        return {"rds": [round(v, 3) for v in self.rules.rds_table(c)],
                "admissible": [self.rules.admissible(c, d) for d in range(self.n_doses)]}

    # -- the truth's OBD (operating characteristics) --------------------------------------
    def true_utility(self, p_tox, p_eff) -> List[float]:
        return true_utility_boin12([float(p) for p in p_tox], [float(q) for q in p_eff],
                                   tuple(self.u))

    def true_admissible(self, p_tox, p_eff) -> List[bool]:
        """Doses acceptable on the truth: p_d <= phi_t and q_d >= phi_e."""
        return [bool(p <= self.target + 1e-12 and q >= self.min_efficacy - 1e-12)
                for p, q in zip(p_tox, p_eff)]

    true_obd_definition: ClassVar[str] = (
        "the dose with the largest true utility u1 q(1-p) + u2 (1-p)(1-q) + u3 pq + u4 p(1-q) "
        "among doses with true DLT rate p <= phi_t and response rate q >= phi_e")


def best_admissible(util: List[float], ok: List[bool]) -> Optional[int]:
    """The index of the largest of ``util`` among ``ok`` (ties, to 12 decimals, to the
    lower), None when none is ok."""
    cands = [d for d in range(len(util)) if ok[d]]
    if not cands:
        return None
    top = max(round(util[d], 12) for d in cands)
    return min(d for d in cands if round(util[d], 12) == top)


# --------------------------------------------------------------------------- spec
class Spec(DesignSpecBase):
    """BOIN12 in the scenario file (``type: boin12``).  ``target`` (else the scenario's) is
    phi_t, the highest acceptable DLT rate (0.35 in the paper's example)."""

    type: Literal["boin12"] = "boin12"
    min_efficacy: float = Field(default=0.25, gt=0, lt=1,
                                description="phi_e, the lowest acceptable response rate")
    utility: List[float] = Field(
        default_factory=lambda: [100.0, 40.0, 60.0, 0.0],
        description="utilities of (response, no DLT), (neither), (both), (DLT, no response) "
                    "on 0-100: u1, u2, u3, u4 (paper: 100, 40, 60, 0)")
    n_star: int = Field(default=6, ge=1, le=1000,
                        description="N*: with lambda_e < p-hat < lambda_d and n >= N*, choose "
                                    "between d-1 and d")
    explore_n: int = Field(default=9, ge=1, le=1000,
                           description="with n >= this at d and p-hat < lambda_d, explore an "
                                       "untried d+1")
    c_t: float = Field(default=0.95, gt=0, lt=1,
                       description="not admissible if Pr(p_T > phi_t | data) >= c_t")
    c_e: float = Field(default=0.90, gt=0, lt=1,
                       description="not admissible if Pr(p_E < phi_e | data) >= c_e")

    @field_validator("utility", mode="before")
    @classmethod
    def _floats(cls, v):
        return ints_to_floats(v)

    @field_validator("utility")
    @classmethod
    def _utility(cls, v: List[float]) -> List[float]:
        if len(v) != 4:
            raise ValueError(f"utility needs 4 values u1, u2, u3, u4 (got {v})")
        if not all(0 <= x <= 100 for x in v):
            raise ValueError(f"utilities must lie in [0, 100] (got {v})")
        u1, u2, u3, u4 = v
        if not (u4 <= u2 and u3 <= u1 and u4 < u1):
            raise ValueError(f"utilities need u4 <= u2, u3 <= u1 and u4 < u1 (got {v})")
        return v


def make(spec: Spec, ctx: DesignContext) -> Design:
    c = spec.context(ctx)
    return Boin12Design(n_doses=c.n_doses, target=c.target, min_efficacy=spec.min_efficacy,
                        u=tuple(spec.utility), n_star=spec.n_star, explore_n=spec.explore_n,
                        c_t=spec.c_t, c_e=spec.c_e, cohort_size=c.cohort_size,
                        start_dose=c.start_dose, name=spec.name or spec.type)


def boin12_table(request):
    """BOIN12's decision table: for each n, the toxicity boundaries (escalate-side
    p-hat <= lambda_e, de-escalate p-hat >= lambda_d as counts), the DLT count making a dose
    not admissible and the response count at or below which it is not admissible (futility),
    then the RDS of each (DLTs, responses) combination is data-dependent (the utility needs
    the joint count): printed for the first cohort."""
    from .tables import DecisionTable
    design, notes = request.build_data_free(
        ("target", "cohort_size", "max_n", "min_efficacy", "utility", "n_star", "explore_n",
         "c_t", "c_e", "name"), "decision table", "decision table")
    inner: Boin12Design = design.inner
    r = inner.rules
    lam_e, lam_d = r.lambdas
    c = inner.cohort_size
    cap = design.max_n or 30
    ns = [n for n in range(1, cap + 1) if c == 1 or n % c == 0]
    rows = []
    for n in ns:
        esc = max((y for y in range(n + 1) if y / n <= lam_e), default=-1)
        de = min((y for y in range(n + 1) if y / n >= lam_d), default=None)
        tox_out = min((y for y in range(n + 1) if _sf(r.target_toxicity, 1.0 + y, 1.0 + n - y)
                       >= r.c_t), default=None)
        eff_out = max((e for e in range(n + 1) if _cdf(r.min_efficacy, 1.0 + e, 1.0 + n - e)
                       >= r.c_e), default=None)
        rows.append({"n": n, "escalate_max_dlt": esc, "deescalate_min_dlt": de,
                     "inadmissible_min_dlt": tox_out, "inadmissible_max_responses": eff_out})
    def cell(v):
        return "-" if v is None or v < 0 else str(v)
    lines = [f"BOIN12 decision table, phi_t {inner.target:g}, phi_e {inner.min_efficacy:g}, "
             f"utilities {', '.join(f'{x:g}' for x in inner.u)}",
             f"lambda_e {lam_e:.4f}, lambda_d {lam_d:.4f}; u_b {r.u_b:.2f}; an untried dose "
             f"has RDS {100 * _sf(r.u_b / 100, 1.0, 1.0):.1f}",
             "Between the boundaries the admissible dose among d-1, d, d+1 with the largest "
             "RDS is chosen (the RDS needs the joint DLT/response counts; next-dose shows it).",
             f"{'n':>4} {'esc if DLT <=':>14} {'de-esc if DLT >=':>17} "
             f"{'not adm. DLT >=':>16} {'not adm. resp <=':>17}"]
    for row in rows:
        lines.append(f"{row['n']:>4} {cell(row['escalate_max_dlt']):>14} "
                     f"{cell(row['deescalate_min_dlt']):>17} "
                     f"{cell(row['inadmissible_min_dlt']):>16} "
                     f"{cell(row['inadmissible_max_responses']):>17}")
    data = {"design": "boin12", "kind": "boin12", "phi_t": inner.target,
            "phi_e": inner.min_efficacy, "utility": list(inner.u), "lambda_e": lam_e,
            "lambda_d": lam_d, "u_b": r.u_b, "rows": rows}
    return DecisionTable("\n".join(lines), data, tuple(notes))


from .registry import DesignEntry, register  # noqa: E402

register(DesignEntry(
    type="boin12", spec_model=Spec, make=make, design_class=Boin12Design, table=boin12_table,
    summary="BOIN12 phase I/II optimal biological dose (Lin et al. 2020; toxicity and "
            "efficacy, utility-based RDS; needs truth.efficacy)",
    # one core's time per trial on the cohort engine, state graph included: a million trials
    # (4 doses, N = 24) took 2.2-2.5 s of CPU (benchmarks/bench_efficacy.py, README)
    seconds_per_trial=2.3e-6))
