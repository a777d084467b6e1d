"""Keyboard phase I/II (``keyboard-obd``): the optimal-biological-dose design of the R package
Keyboard 0.1.3 (``get.decision.obd.kb``, ``get.oc.obd.kb``, ``select.obd.kb``; its Rd says the
design is adopted from Li et al. 2017, TEPI).  **Rules only**: pure functions on per-dose
counts of patients, toxicities and responses (:class:`~escalation_sim.designs.boin12.JointCounts`;
the joint "both" count is not used); :class:`KeyboardObdDesign` runs them on the engines
(``Outcome.JOINT``), registered as ``type: keyboard-obd``.

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
table says S); those quirks are not reproduced: a pure rule on the counts cannot.  An
eliminated dose is never used: when the move above lands on an eliminated current dose (the
table says S, or its neighbour is eliminated), the next dose is d+1 if d was eliminated for
futility only and d+1 is not eliminated, else d-1 if not eliminated, else d+1 if not
eliminated, else the trial stops (every dose in reach eliminated).

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


from .boin12 import JointCounts
from .interval import isotonic_inputs, isotonic_regression

__all__ = ["GRID", "obd_letter", "obd_table", "KeyboardOBD", "ObdDecision"]

#: the package's fixed decision grid: rows toxicity low -> unacceptable, columns efficacy
#: low -> superb
GRID = ("EEEE", "EEES", "DSSS", "DDDD")


@lru_cache(maxsize=65536)
def _cdf(x: float, a: float, b: float) -> float:
    from scipy.stats import beta as beta_dist   # on first use: the CLI starts without it
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


@lru_cache(maxsize=1 << 16)
def _elim_flags(n: int, y: int, r: int, target_tox: float, target_eff: float,
                cutoff_tox: float, cutoff_eff: float) -> Tuple[bool, bool]:
    """(safety, futility) elimination of a dose with n patients, y DLTs, r responses."""
    return (_sf(target_tox, 1 + y, 1 + n - y) > cutoff_tox,
            _sf(target_eff, 1 + r, 1 + n - r) < cutoff_eff)


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
            n = counts.n[d]
            if n < 3:
                continue
            unsafe, futile = _elim_flags(n, counts.tox[d], counts.eff[d], self.target_toxicity,
                                         self.target_efficacy, self.cutoff_tox,
                                         self.cutoff_eff)
            if unsafe:
                for k in range(d, K):
                    out[k] = True
            if futile:
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
        if elim[nxt]:       # only the current dose can be eliminated here: never treat at it
            up = d + 1 < K and not elim[d + 1]
            down = d > 0 and not elim[d - 1]
            if up and not self._unsafe(counts, d):
                return ObdDecision(d + 1, letter, f"{obs}; dose {d + 1} eliminated for "
                                                  f"futility: dose {d + 2}")
            if down:
                return ObdDecision(d - 1, letter, f"{obs}; dose {d + 1} eliminated: dose {d}")
            if up:
                return ObdDecision(d + 1, letter, f"{obs}; dose {d + 1} eliminated: dose "
                                                  f"{d + 2}")
            return ObdDecision(None, None, f"{obs}; dose {d + 1} eliminated and no neighbour "
                                           f"left: every dose eliminated: stop")
        return ObdDecision(nxt, letter, obs)

    def _unsafe(self, counts: JointCounts, d: int) -> bool:
        """The safety rule eliminates dose ``d`` (or a lower dose, which removes it)."""
        for k in range(d + 1):
            n, y = counts.n[k], counts.tox[k]
            if n >= 3 and _sf(self.target_toxicity, 1 + y, 1 + n - y) > self.cutoff_tox:
                return True
        return False

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


# =========================================================================== runnable design
from typing import Any, Literal  # noqa: E402

from pydantic import Field, field_validator, model_validator  # noqa: E402

from ..types import StopReason, TrialState  # noqa: E402
from .base import Design, DesignContext, DesignSpecBase  # noqa: E402
from .boin12 import JointRulesDesign, ints_to_floats, joint_counts  # noqa: E402


def utility_values(p: float, q: float, utility: int, p1: float, p2: float, q1: float,
                   q2: float, w1: float, w2: float, indicator: float) -> float:
    """``select.obd.kb``'s utility ``utility`` (1, 2 or 3) of a dose with DLT rate ``p`` and
    response rate ``q`` (module docstring)."""
    if utility == 1:
        f1 = 1.0 if p <= p1 else (0.0 if p >= p2 else 1.0 - (p - p1) / (p2 - p1))
        f2 = 0.0 if q < q1 else (1.0 if q >= q2 else (q - q1) / (q2 - q1))
        return f1 * f2
    u2 = q - w1 * p
    if utility == 2:
        return u2
    return u2 - w2 * p * (1.0 if p > indicator else 0.0)


#: stop reasons: dose 1 unsafe; every dose (in reach) eliminated, for safety or futility, is
#: "no admissible dose" (``ALL_DOSES_ELIMINATED`` reads "as too toxic"); n.early reached
_STOPS = {"too toxic": StopReason.LOWEST_DOSE_TOO_TOXIC,
          "eliminated": StopReason.NO_ADMISSIBLE_DOSE,
          "n_early": StopReason.N_AT_DOSE}


@dataclass(frozen=True)
class KeyboardObdDesign(JointRulesDesign):
    """Keyboard phase I/II on the engines (``type: keyboard-obd``): ``target`` is the DLT
    target; the rules and the OBD selection (under ``utility`` 1, 2 or 3) are
    :class:`KeyboardOBD`'s.  ``select_mtd`` returns the **OBD**."""

    n_doses: int
    target: float = 0.30
    target_efficacy: float = 0.40
    tox_bounds: Tuple[float, float, float] = (0.15, 0.25, 0.35)
    eff_bounds: Tuple[float, float, float] = (0.25, 0.45, 0.65)
    cutoff_tox: float = 0.95
    cutoff_eff: float = 0.3
    n_early: int = 100
    utility: int = 1
    p1: float = 0.15
    p2: float = 0.40
    q1: float = 0.3
    q2: float = 0.6
    w1: float = 0.33
    w2: float = 1.09
    indicator: Optional[float] = None
    cohort_size: int = 3
    start_dose: int = 0
    name: str = "keyboard-obd"

    def _make_rules(self) -> KeyboardOBD:
        return KeyboardOBD(self.n_doses, self.target, self.target_efficacy,
                           tuple(self.tox_bounds), tuple(self.eff_bounds), self.cutoff_tox,
                           self.cutoff_eff, self.n_early, self.start_dose, self.p1, self.p2,
                           self.q1, self.q2, self.w1, self.w2, self.indicator)

    def __post_init__(self) -> None:
        if self.utility not in (1, 2, 3):
            raise ValueError(f"utility must be 1, 2 or 3 (got {self.utility})")
        self.rules

    def canonical(self, state: TrialState) -> Any:
        return (state.n, state.y, state.e, state.current)      # "both" is not used

    def _stop_reason(self, reason: str) -> StopReason:
        return next((r for k, r in _STOPS.items() if k in reason), StopReason.RULE_COMPLETE)

    def select_mtd(self, state: TrialState) -> Optional[int]:
        """The optimal biological dose under ``utility`` (:meth:`KeyboardOBD.select_obd`)."""
        return self.rules.select_obd(joint_counts(state), self.utility)

    select_obd = select_mtd

    def exact_rules(self, max_n: int) -> Any:
        """The rules on arrays of joint states (:class:`~.batch_obd.KeyboardObdRules`), or
        None when the tables would be too large."""
        from .batch_obd import KeyboardObdRules, cached_rules
        return cached_rules(KeyboardObdRules, self, max_n)

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        c = joint_counts(state)
        us = self.rules.utilities(c)
        return {"eliminated": self.rules.eliminated(c),
                "utility": [None if d not in us else round(us[d][1 + self.utility], 4)
                            for d in range(self.n_doses)]}

    # -- the truth's OBD --------------------------------------------------------------
    def _ind(self) -> float:
        return self.target if self.indicator is None else self.indicator

    def true_utility(self, p_tox, p_eff) -> List[float]:
        return [utility_values(float(p), float(q), self.utility, self.p1, self.p2, self.q1, self.q2,
                               self.w1, self.w2, self._ind()) for p, q in zip(p_tox, p_eff)]

    def true_admissible(self, p_tox, p_eff) -> List[bool]:
        """Doses acceptable on the truth: p_d <= the DLT target and q_d >= the efficacy
        target (the rates the package's safety and futility rules test against)."""
        return [bool(p <= self.target + 1e-12 and q >= self.target_efficacy - 1e-12)
                for p, q in zip(p_tox, p_eff)]

    @property
    def true_obd_definition(self) -> str:  # type: ignore[override]
        return (f"the dose with the largest true utility {self.utility} of select.obd.kb "
                f"among doses with true DLT rate <= {self.target:g} and response rate >= "
                f"{self.target_efficacy:g}")


# --------------------------------------------------------------------------- spec
def _bounds_field(default, what):
    return Field(default_factory=lambda: list(default),
                 description=f"the three cut points of the {what} intervals (increasing, "
                             f"inside (0, 1))")


class Spec(DesignSpecBase):
    """Keyboard phase I/II in the scenario file (``type: keyboard-obd``); ``target`` (else
    the scenario's) is the DLT target (``target.toxicity``)."""

    type: Literal["keyboard-obd"] = "keyboard-obd"
    target_efficacy: float = Field(default=0.40, gt=0, lt=1,
                                   description="target.efficacy (futility: Pr(p_E > it) < "
                                               "cutoff_eff)")
    tox_bounds: List[float] = _bounds_field((0.15, 0.25, 0.35), "toxicity")
    eff_bounds: List[float] = _bounds_field((0.25, 0.45, 0.65), "efficacy")
    cutoff_tox: float = Field(default=0.95, ge=0.5, lt=1,
                              description="cutoff.eli.toxicity")
    cutoff_eff: float = Field(default=0.3, gt=0, lt=1, description="cutoff.eli.efficacy")
    n_early: int = Field(default=100, ge=1, le=1000,
                         description="n.early: stop when the current dose has this many")
    utility: int = Field(default=1, ge=1, le=3,
                         description="which of select.obd.kb's utilities selects the OBD")
    p1: float = Field(default=0.15, ge=0, le=1)
    p2: float = Field(default=0.40, ge=0, le=1)
    q1: float = Field(default=0.3, ge=0, le=1)
    q2: float = Field(default=0.6, ge=0, le=1)
    w1: float = Field(default=0.33, ge=0, description="w1.toxicity")
    w2: float = Field(default=1.09, ge=0, description="w2.toxicity")
    indicator: Optional[float] = Field(default=None, gt=0, lt=1,
                                       description="utility 3's DLT-rate threshold "
                                                   "(default: the DLT target)")

    @field_validator("tox_bounds", "eff_bounds", mode="before")
    @classmethod
    def _floats(cls, v):
        return ints_to_floats(v)

    @field_validator("tox_bounds", "eff_bounds")
    @classmethod
    def _bounds(cls, v: List[float]) -> List[float]:
        if len(v) != 3 or not 0 < v[0] < v[1] < v[2] < 1:
            raise ValueError(f"needs three increasing cut points inside (0, 1) (got {v})")
        return v

    @model_validator(mode="after")
    def _pq(self) -> "Spec":
        if not self.p1 < self.p2:
            raise ValueError(f"p1 must be below p2 (got p1 {self.p1}, p2 {self.p2})")
        if not self.q1 < self.q2:
            raise ValueError(f"q1 must be below q2 (got q1 {self.q1}, q2 {self.q2})")
        return self


def make(spec: Spec, ctx: DesignContext) -> Design:
    c = spec.context(ctx)
    return KeyboardObdDesign(
        n_doses=c.n_doses, target=c.target, target_efficacy=spec.target_efficacy,
        tox_bounds=tuple(spec.tox_bounds), eff_bounds=tuple(spec.eff_bounds),
        cutoff_tox=spec.cutoff_tox, cutoff_eff=spec.cutoff_eff, n_early=spec.n_early,
        utility=spec.utility, p1=spec.p1, p2=spec.p2, q1=spec.q1, q2=spec.q2, w1=spec.w1,
        w2=spec.w2, indicator=spec.indicator, cohort_size=c.cohort_size,
        start_dose=c.start_dose, name=spec.name or spec.type)


def keyboard_obd_table(request):
    """``get.decision.obd.kb``'s table: for each n (multiples of the cohort size up to
    max_n), rows y = DLTs 0..n, columns r = responses 0..n."""
    from .tables import DecisionTable
    design, notes = request.build_data_free(
        ("target", "cohort_size", "max_n", "target_efficacy", "tox_bounds", "eff_bounds",
         "cutoff_tox", "cutoff_eff", "name"), "decision table", "decision table")
    inner: KeyboardObdDesign = design.inner
    c = inner.cohort_size
    cap = design.max_n or 30
    ns = [n for n in range(c, cap + 1, c)]
    lines = [f"Keyboard phase I/II decision table, DLT target {inner.target:g}, efficacy "
             f"target {inner.target_efficacy:g}",
             f"toxicity cut points {', '.join(f'{b:g}' for b in inner.tox_bounds)}; efficacy "
             f"cut points {', '.join(f'{b:g}' for b in inner.eff_bounds)}",
             "E escalate, S stay, D de-escalate; DUT / DUE de-escalate for unacceptable "
             "toxicity / efficacy, EUE escalate with unacceptable efficacy",
             "rows: DLTs y; columns: responses r = 0..n"]
    tables = {}
    for n in ns:
        rows = [design.inner.rules.letter(n, y, r).ljust(3) for y in range(n + 1)
                for r in range(n + 1)]
        grid = [rows[y * (n + 1):(y + 1) * (n + 1)] for y in range(n + 1)]
        tables[str(n)] = [[x.strip() for x in row] for row in grid]
        lines.append(f"n = {n}")
        lines.append("  y\\r " + " ".join(f"{r:>3}" for r in range(n + 1)))
        for y, row in enumerate(grid):
            lines.append(f"  {y:>3} " + " ".join(f"{x:>3}" for x in row))
    data = {"design": "keyboard-obd", "kind": "keyboard_obd", "target": inner.target,
            "target_efficacy": inner.target_efficacy, "tox_bounds": list(inner.tox_bounds),
            "eff_bounds": list(inner.eff_bounds), "tables": tables}
    return DecisionTable("\n".join(lines), data, tuple(notes))


from .registry import DesignEntry, register  # noqa: E402

register(DesignEntry(
    type="keyboard-obd", spec_model=Spec, make=make, design_class=KeyboardObdDesign,
    table=keyboard_obd_table,
    summary="Keyboard phase I/II optimal biological dose (R Keyboard 0.1.3 get.oc.obd.kb / "
            "select.obd.kb; needs truth.efficacy)",
    # one core's time per trial on the cohort engine, state graph included: a million trials
    # (4 doses, N = 24) took 2.6-2.9 s of CPU (benchmarks/bench_efficacy.py, README)
    seconds_per_trial=2.8e-6))
