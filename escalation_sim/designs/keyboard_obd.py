"""Keyboard phase I/II (``keyboard-obd``): the optimal-biological-dose design of the R package
Keyboard 0.1.3 (``get.decision.obd.kb``, ``get.oc.obd.kb``, ``select.obd.kb``; its Rd says the
design is adopted from Li et al. 2017, TEPI).  **Rules only**: pure functions on per-dose
counts of patients, toxicities and responses (:class:`~escalation_sim.designs.boin12.JointCounts`;
the joint "both" count is not used); not registered as a runnable design (the engines do not
carry responses yet).

Sources: docs/reference_notes/keyboard.md, section 7 (the package's R code read, not copied).

Decision table (:func:`obd_letter`)
-----------------------------------
Toxicity is cut into four intervals at ``tox_bounds`` = (t_l, t_m, t_h) (default 0.15, 0.25,
0.35 as in the package's example), efficacy at ``eff_bounds`` = (e_l, e_m, e_h) (0.25, 0.45,
0.65).  With y toxicities and r responses among n patients and independent Beta(1 + y,
1 + n - y) and Beta(1 + r, 1 + n - r) posteriors, each of the 16 cells gets its joint unit
probability mass JUPM = P(p_T in cell) P(p_E in cell) / (cell area), **rounded to 2
decimals** as the package does; the first largest cell in row-major order (toxicity low to
unacceptable, efficacy low to superb) decides, through the fixed grid
``E E E E / E E E S / D S S S / D D D D`` (E escalate, S stay, D de-escalate).  Relabelling:
D becomes DUT ("de-escalate, unacceptable toxicity") if Pr(p_T > target_toxicity) > 0.95,
else DUE ("unacceptable efficacy") if Pr(p_E > target_efficacy) < 0.3; E becomes EUE if
Pr(p_E > target_efficacy) < 0.3.  S is never relabelled (a package quirk kept).

Next dose (:meth:`KeyboardOBD.decide`), a count-based reading of ``get.oc.obd.kb``
-------------------------------------------------------------------------------------
Eliminated doses come from the counts: safety (n >= 3 and Pr(p_T > target_toxicity) > 0.95)
removes the dose and every higher one, futility (n >= 3 and Pr(p_E > target_efficacy) < 0.3)
the dose only; the trial stops when dose 1 fails the safety rule or every dose is eliminated,
and when the current dose has ``n_early`` patients.  Then E / EUE escalate to d+1 unless it
is the top dose or eliminated (then stay), D / DUT / DUE de-escalate to d-1 unless d is the
lowest dose or d-1 is eliminated (then stay), S stays.  The package keeps its eliminations in
a history-dependent vector set from the table's letters (DUT/DUE mark the current dose, EUE
marks the dose escalated *to*, and a dose the safety rule removed can still be used when the
table says S); those quirks are not reproduced: a pure rule on the counts cannot.

OBD selection (:meth:`KeyboardOBD.select_obd`, ``select.obd.kb``)
----------------------------------------------------------------
Admissible doses: treated and not eliminated (the rules above).  p_T estimates: weighted
pool-adjacent-violators of (y + 0.05) / (n + 0.1) with weights 1 / variance (as the MTD
selection of BOIN and Keyboard) plus 1e-10 k; q_E = (r + 0.05) / (n + 0.1).  Utility 1:
f1(p_T) f2(q_E) with f1 = 1 below p1 (0.15), 0 above p2 (0.40), linear between, f2 = 0 below
q1 (0.3), 1 above q2 (0.6), linear between; utility 2: q_E - w1 p_T (w1 = 0.33); utility 3:
q_E - w1 p_T - w2 p_T 1(p_T > indicator) (w2 = 1.09, indicator = target_toxicity).  The OBD
under each utility: the admissible dose with the largest utility (the first on ties); none when
the utilities of the admissible doses **sum** to 0 (the package's test, kept: positive and
negative utilities can cancel).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

from scipy.stats import beta as beta_dist

from .boin12 import JointCounts
from .interval import isotonic_inputs, isotonic_regression

__all__ = ["GRID", "obd_letter", "obd_table", "KeyboardOBD", "ObdDecision"]

#: the package's fixed decision grid: rows toxicity low -> unacceptable, columns efficacy
#: low -> superb
GRID = ("EEEE", "EEES", "DSSS", "DDDD")


@lru_cache(maxsize=65536)
def _cdf(x: float, a: float, b: float) -> float:
    return float(beta_dist.cdf(x, a, b))


def _sf(x: float, a: float, b: float) -> float:
    return 1.0 - _cdf(x, a, b)


@lru_cache(maxsize=65536)
def obd_letter(n: int, y: int, r: int, tox_bounds: Tuple[float, float, float],
               eff_bounds: Tuple[float, float, float], target_toxicity: float,
               target_efficacy: float, cutoff_tox: float = 0.95,
               cutoff_eff: float = 0.3) -> str:
    """The table's decision for y toxicities and r responses among n: E, S, D, EUE, DUT or
    DUE (module docstring)."""
    if not (0 <= y <= n and 0 <= r <= n and n >= 1):
        raise ValueError(f"need 0 <= toxicities, responses <= n >= 1 (got n {n}, y {y}, r {r})")
    tc = (0.0, *tox_bounds, 1.0)
    ec = (0.0, *eff_bounds, 1.0)
    pt = [(_cdf(tc[i + 1], 1 + y, 1 + n - y) - _cdf(tc[i], 1 + y, 1 + n - y))
          / (tc[i + 1] - tc[i]) for i in range(4)]
    pe = [(_cdf(ec[j + 1], 1 + r, 1 + n - r) - _cdf(ec[j], 1 + r, 1 + n - r))
          / (ec[j + 1] - ec[j]) for j in range(4)]
    best, cell = None, (0, 0)
    for i in range(4):
        for j in range(4):
            v = round(pt[i] * pe[j], 2)
            if best is None or v > best:
                best, cell = v, (i, j)
    letter = GRID[cell[0]][cell[1]]
    eff_low = _sf(target_efficacy, 1 + r, 1 + n - r) < cutoff_eff
    if letter == "D":
        if _sf(target_toxicity, 1 + y, 1 + n - y) > cutoff_tox:
            return "DUT"
        if eff_low:
            return "DUE"
    if letter == "E" and eff_low:
        return "EUE"
    return letter


@dataclass(frozen=True)
class ObdDecision:
    dose: Optional[int]
    letter: Optional[str]
    reason: str

    @property
    def stop(self) -> bool:
        return self.dose is None


@dataclass(frozen=True)
class KeyboardOBD:
    """Keyboard phase I/II rules (module docstring); doses 0-based."""

    n_doses: int
    target_toxicity: float = 0.30
    target_efficacy: float = 0.40
    tox_bounds: Tuple[float, float, float] = (0.15, 0.25, 0.35)
    eff_bounds: Tuple[float, float, float] = (0.25, 0.45, 0.65)
    cutoff_tox: float = 0.95
    cutoff_eff: float = 0.3
    n_early: int = 100
    start_dose: int = 0
    p1: float = 0.15
    p2: float = 0.40
    q1: float = 0.3
    q2: float = 0.6
    w1: float = 0.33
    w2: float = 1.09
    indicator: Optional[float] = None       # None: target_toxicity

    def __post_init__(self) -> None:
        for name, b in (("tox_bounds", self.tox_bounds), ("eff_bounds", self.eff_bounds)):
            if not 0 < b[0] < b[1] < b[2] < 1:
                raise ValueError(f"{name} must be increasing inside (0, 1) (got {b})")

    # ----------------------------------------------------------------- table
    def letter(self, n: int, y: int, r: int) -> str:
        return obd_letter(n, y, r, tuple(self.tox_bounds), tuple(self.eff_bounds),
                          self.target_toxicity, self.target_efficacy, self.cutoff_tox,
                          self.cutoff_eff)

    # ----------------------------------------------------------------- eliminations
    def eliminated(self, counts: JointCounts) -> List[bool]:
        K = self.n_doses
        out = [False] * K
        for d in range(K):
            n, y, r = counts.n[d], counts.tox[d], counts.eff[d]
            if n < 3:
                continue
            if _sf(self.target_toxicity, 1 + y, 1 + n - y) > self.cutoff_tox:
                for k in range(d, K):
                    out[k] = True
            if _sf(self.target_efficacy, 1 + r, 1 + n - r) < self.cutoff_eff:
                out[d] = True
        return out

    # ----------------------------------------------------------------- decide
    def decide(self, counts: JointCounts) -> ObdDecision:
        K = self.n_doses
        d = counts.current
        if d is None:
            return ObdDecision(self.start_dose, None, "start")
        n, y, r = counts.n[d], counts.tox[d], counts.eff[d]
        if n >= self.n_early:
            return ObdDecision(None, None, f"dose {d + 1} has {n} >= n_early patients")
        elim = self.eliminated(counts)
        n1, y1 = counts.n[0], counts.tox[0]
        if n1 >= 3 and _sf(self.target_toxicity, 1 + y1, 1 + n1 - y1) > self.cutoff_tox:
            return ObdDecision(None, None, "dose 1 too toxic: stop")
        if all(elim):
            return ObdDecision(None, None, "every dose eliminated: stop")
        letter = self.letter(n, y, r)
        obs = f"dose {d + 1}: {y} toxicities, {r} responses of {n}: {letter}"
        if letter in ("E", "EUE"):
            nxt = d + 1 if d + 1 < K and not elim[d + 1] else d
        elif letter in ("D", "DUT", "DUE"):
            nxt = d - 1 if d > 0 and not elim[d - 1] else d
        else:
            nxt = d
        return ObdDecision(nxt, letter, obs)

    # ----------------------------------------------------------------- selection
    def utilities(self, counts: JointCounts) -> Dict[int, Tuple[float, float, float, float,
                                                                  float]]:
        """{dose: (p_T, q_E, U1, U2, U3)} over the admissible doses (module docstring)."""
        elim = self.eliminated(counts)
        adm = [d for d in range(self.n_doses) if counts.n[d] > 0 and not elim[d]]
        if not adm:
            return {}
        phat, w = isotonic_inputs([counts.n[d] for d in adm], [counts.tox[d] for d in adm])
        iso = isotonic_regression(phat, w)
        ind = self.target_toxicity if self.indicator is None else self.indicator
        out = {}
        for k, d in enumerate(adm):
            p = iso[k] + 1e-10 * (k + 1)
            q = (counts.eff[d] + 0.05) / (counts.n[d] + 0.1)
            f1 = 1.0 if p <= self.p1 else (0.0 if p >= self.p2 else
                                           1.0 - (p - self.p1) / (self.p2 - self.p1))
            f2 = 0.0 if q < self.q1 else (1.0 if q >= self.q2 else
                                          (q - self.q1) / (self.q2 - self.q1))
            u2 = q - self.w1 * p
            u3 = u2 - self.w2 * p * (1.0 if p > ind else 0.0)
            out[d] = (p, q, f1 * f2, u2, u3)
        return out

    def select_obd(self, counts: JointCounts, utility: int = 1) -> Optional[int]:
        """The OBD (0-based) under utility 1, 2 or 3, or None."""
        if utility not in (1, 2, 3):
            raise ValueError(f"utility must be 1, 2 or 3 (got {utility})")
        us = self.utilities(counts)
        if not us:
            return None
        vals = [(d, v[1 + utility]) for d, v in us.items()]
        if sum(u for _, u in vals) == 0:
            return None
        best = max(u for _, u in vals)
        return next(d for d, u in vals if u == best)


def obd_table(design: KeyboardOBD, n: int) -> List[str]:
    """Rows y = 0..n of the decision table at n patients; each row the letters for r = 0..n."""
    return [" ".join(design.letter(n, y, r) for r in range(n + 1)) for y in range(n + 1)]
