"""BOIN12 (Lin, Zhou, Yan, Li & Yuan 2020, JCO Precis Oncol 4:1393): toxicity and efficacy,
rank-based desirability, optimal biological dose.  **Rules only**: pure functions on per-dose
counts of patients, toxicities, responses and patients with both; not registered as a
runnable design (the engines do not carry responses yet).

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

from scipy.stats import beta as beta_dist

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
    return float(beta_dist.sf(x, a, b))


@lru_cache(maxsize=65536)
def _cdf(x: float, a: float, b: float) -> float:
    return float(beta_dist.cdf(x, a, b))


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

    # ----------------------------------------------------------------- quantities
    @property
    def lambdas(self) -> Tuple[float, float]:
        return boin_lambdas(self.target_toxicity)

    @property
    def u_bar(self) -> float:
        u1, u2, u3, u4 = self.u
        pt, pe = self.target_toxicity, self.min_efficacy
        return u1 * pe * (1 - pt) + u2 * (1 - pt) * (1 - pe) + u3 * pt * pe + u4 * pt * (1 - pe)

    @property
    def u_b(self) -> float:
        return self.u_bar + (100.0 - self.u_bar) / 2.0

    def rds(self, counts: JointCounts, dose: int) -> float:
        """Rank-based desirability score of ``dose`` (0-100)."""
        n = counts.n[dose]
        x = counts.utility_data(dose, self.u)
        return 100.0 * _sf(self.u_b / 100.0, 1.0 + x, 1.0 + n - x)

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
