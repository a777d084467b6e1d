"""The 3+3 design (Storer 1989) with its common variants as explicit options.

References
----------
* Storer BE (1989). Design and analysis of phase I clinical trials. Biometrics 45:925-937.
* Korn EL, Midthune D, Chen TT, Rubinstein LV, Christian MC, Simon RM (1994). A comparison of
  two phase I trial designs. Statistics in Medicine 13:1799-1806.  Korn et al. (p. 1801) describe
  the "more common" variant that requires 6 patients treated at the MTD (dose de-escalation).
* Lin Y, Shih WJ (2001). Statistical properties of the traditional algorithm-based designs for
  phase I cancer clinical trials. Biostatistics 2(2):203-215 (doi:10.1093/biostatistics/2.2.203).
  (Not Biometrics: the journal was checked against PubMed, PMID 12933550.)  Lin & Shih derive
  exact operating characteristics of "A+B" designs with and without dose de-escalation; the
  3+3 is A = B = 3, C = D = E = 1.

The rule (doses 1-based in this docstring)
------------------------------------------
Cohorts of 3.  At the current dose d, from the counts observed *at that dose*:

* 0/3 DLT -> escalate to d+1;
* 1/3 -> treat 3 more at d;  then <= 1/6 -> escalate;
* >= 2 DLTs (of 3 or of 6) -> d is *too toxic*:
    - if d is the lowest dose: stop, no MTD (``StopReason.LOWEST_DOSE_TOO_TOXIC``);
    - if d-1 already has 6 patients with <= 1 DLT: stop, MTD = d-1;
    - otherwise d-1 has only 3 patients (0/3):
        ``de_escalation=True``  -> treat 3 more at d-1 (Korn et al. 1994; Lin & Shih's design
        with dose de-escalation); d-1 is the MTD if it ends with <= 1/6, otherwise d-1 is too
        toxic in turn and the same rule is applied to d-2, and so on downwards;
        ``de_escalation=False`` -> stop, MTD = d-1 with its 3 patients (Lin & Shih's
        traditional design without dose de-escalation);
* the top dose (nothing left to escalate to):
    ``top_dose_needs_six=True``  -> 0/3 at the top dose is expanded to 6; the top dose is
    declared the MTD after <= 1/6;
    ``top_dose_needs_six=False`` -> the top dose is declared the MTD after 0/3 or <= 1/6.

Default variant: ``de_escalation=True, top_dose_needs_six=True``, i.e. the "standard 3+3" in
which the MTD is the highest dose with at most 1 DLT among 6 patients and is always supported
by 6 patients (Korn et al. 1994, p. 1801).  It is the variant most protocols describe.

Starting above the lowest dose (``start_dose > 0``): if a dose whose lower neighbour is untried
turns out too toxic, 3 patients are treated at the untried lower dose (both variants: an
untried dose cannot be declared the MTD); from there the rules above apply.

Counts, not history
-------------------
``decide`` is a pure function of ``TrialState`` (per-dose ``n``, ``y`` and ``current``).  The
phase of the trial is recovered from the counts: a dose is too toxic iff it has >= 2 DLTs;
when the last cohort's dose passes its rule and the next higher dose is too toxic, the trial
has come back down (de-escalation phase).  Counts that a 3+3 trial cannot produce (e.g. 2
patients at a dose, from a real trial that deviated from the plan) are handled by topping the
dose up to the next multiple of 3 patients; no other guarantee is made for them.

Recommendation (``select_mtd``)
-------------------------------
Let T be the lowest too-toxic dose (K if none).  ``select_mtd`` returns the highest dose below
T whose own counts satisfy the rule's acceptance criterion *if the trial ended now*: <= 1/6,
or 0/3 - except that 0/3 is not enough at the top dose when ``top_dose_needs_six`` and not
enough directly below a too-toxic dose when ``de_escalation`` (those doses would be expanded
to 6 first).  ``None`` if no dose qualifies.  When the design itself stops, this is exactly the
dose the rule declares (T-1, or the top dose, or ``None`` when dose 1 is too toxic).  When an
external rule cuts the trial short (``StopAtN`` from a design-level ``max_n``), it is the
highest dose the rule has cleared so far, a conservative choice.

Exact operating characteristics: :func:`lin_shih_oc` (closed form, derivation in its
docstring) serves as an independent oracle for exact enumeration and Monte Carlo.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Dict, List, Literal, Optional, Sequence, Tuple

from pydantic import Field, field_validator

from ..types import Decision, StopReason, TrialState
from .base import Design, DesignContext, DesignSpecBase
from .registry import DesignEntry, TrialSize, register
from .tables import DecisionTable, TableRequest

COHORT = 3

# status of one dose, derived from its counts (n, y)
_UNTRIED = "untried"        # n == 0
_INCOMPLETE = "incomplete"  # 0 < n < 3, y <= 1 (only after a deviation from the plan)
_PASS3 = "pass3"            # 3 <= n < 6, y == 0   (0/3)
_EXPAND = "expand"          # 3 <= n < 6, y == 1   (1/3: needs 3 more)
_PASS6 = "pass6"            # n >= 6, y <= 1       (<= 1/6)
_TOXIC = "toxic"            # y >= 2               (>= 2 of 3 or of 6)


def _status(n: int, y: int) -> str:
    if y >= 2:
        return _TOXIC
    if n == 0:
        return _UNTRIED
    if n < COHORT:
        return _INCOMPLETE
    if n < 2 * COHORT:
        return _PASS3 if y == 0 else _EXPAND
    return _PASS6


def _block(n: int) -> int:
    """Patients needed to bring a dose with ``n`` patients to the next multiple of 3."""
    r = n % COHORT
    return COHORT - r if r else COHORT


@dataclass(frozen=True)
class ThreePlusThree(Design):
    """The 3+3 design; see the module docstring for the rule and its variants."""

    n_doses: int
    start_dose: int = 0
    de_escalation: bool = True
    top_dose_needs_six: bool = True
    name: str = "3+3"
    max_n_per_dose: ClassVar[Optional[int]] = 2 * COHORT

    def __post_init__(self) -> None:
        if self.n_doses < 1:
            raise ValueError(f"n_doses must be an integer >= 1 (got {self.n_doses!r})")
        if not 0 <= self.start_dose < self.n_doses:
            raise ValueError(f"start_dose (0-based) must be in 0..{self.n_doses - 1} "
                             f"(got {self.start_dose!r})")

    @property
    def max_cohort_size(self) -> int:
        return COHORT

    @property
    def cohort_size(self) -> int:
        return COHORT

    # ------------------------------------------------------------------ helpers
    def _check(self, state: TrialState) -> None:
        if state.n_doses != self.n_doses:
            raise ValueError(f"state has {state.n_doses} doses, design has {self.n_doses}")

    @staticmethod
    def _statuses(state: TrialState) -> List[str]:
        return [_status(n, y) for n, y in zip(state.n, state.y)]

    def _lowest_too_toxic(self, state: TrialState) -> int:
        for d, y in enumerate(state.y):
            if y >= 2:
                return d
        return self.n_doses

    # ----------------------------------------------------------------- decision
    def decide(self, state: TrialState) -> Decision:
        self._check(state)
        if state.current is None:
            return Decision.treat(self.start_dose, COHORT, f"start at dose {self.start_dose + 1}")
        st = self._statuses(state)
        c = state.current
        n, y = state.n[c], state.y[c]
        s = st[c]
        tag = f"dose {c + 1}: {y}/{n}"
        if s == _TOXIC:
            return self._after_too_toxic(state, st, c)
        if s in (_UNTRIED, _INCOMPLETE):
            return Decision.treat(c, _block(n), f"{tag}; complete the cohort of 3")
        if s == _EXPAND:
            return Decision.treat(c, 2 * COHORT - n, f"{tag}; treat 3 more at dose {c + 1}")
        # s is PASS3 (0/3) or PASS6 (<= 1/6)
        if c == self.n_doses - 1:
            if s == _PASS3 and self.top_dose_needs_six:
                return Decision.treat(c, 2 * COHORT - n,
                                      f"{tag} at the top dose; it needs 6 to be the MTD")
            return Decision.halt(StopReason.RULE_COMPLETE,
                                 f"{tag} at the top dose; MTD = dose {c + 1}")
        if st[c + 1] == _TOXIC:  # we came back down from a too-toxic dose
            if s == _PASS6 or not self.de_escalation:
                return Decision.halt(StopReason.RULE_COMPLETE,
                                     f"{tag} and dose {c + 2} too toxic; MTD = dose {c + 1}")
            return Decision.treat(c, 2 * COHORT - n,
                                  f"{tag} and dose {c + 2} too toxic; treat 3 more at dose {c + 1}")
        return Decision.treat(c + 1, _block(state.n[c + 1]),
                              f"{tag}; escalate to dose {c + 2}")

    def _after_too_toxic(self, state: TrialState, st: List[str], d: int) -> Decision:
        """Dose ``d`` is too toxic: the rule looks at the dose below (repeating downwards)."""
        while True:
            tag = f"dose {d + 1} too toxic ({state.y[d]}/{state.n[d]})"
            if d == 0:
                return Decision.halt(StopReason.LOWEST_DOSE_TOO_TOXIC,
                                     f"{tag}: the lowest dose is too toxic; no MTD")
            low = d - 1
            s, n = st[low], state.n[low]
            if s == _TOXIC:  # not reachable by the rule; keep going down
                d = low
                continue
            if s == _PASS6:
                return Decision.halt(StopReason.RULE_COMPLETE,
                                     f"{tag}; dose {low + 1} has {state.y[low]}/{n}: MTD = dose {low + 1}")
            if s in (_UNTRIED, _INCOMPLETE):
                return Decision.treat(low, _block(n), f"{tag}; treat 3 at dose {low + 1}")
            if s == _EXPAND:
                return Decision.treat(low, 2 * COHORT - n, f"{tag}; treat 3 more at dose {low + 1}")
            # PASS3: dose below has only 3 patients (0/3)
            if self.de_escalation:
                return Decision.treat(low, 2 * COHORT - n,
                                      f"{tag}; de-escalate: treat 3 more at dose {low + 1}")
            return Decision.halt(StopReason.RULE_COMPLETE,
                                 f"{tag}; MTD = dose {low + 1} (0/{n}, no de-escalation)")

    # ------------------------------------------------------------- recommendation
    def _accepted(self, d: int, status: str, lowest_toxic: int) -> bool:
        if status == _PASS6:
            return True
        if status != _PASS3:
            return False
        if d == self.n_doses - 1 and self.top_dose_needs_six:
            return False
        if self.de_escalation and lowest_toxic < self.n_doses and d == lowest_toxic - 1:
            return False
        return True

    def canonical(self, state: TrialState):
        """Decisions use the per-dose counts and the current dose only."""
        return (state.n, state.y, state.current)

    def select_mtd(self, state: TrialState) -> Optional[int]:
        """The declared MTD (0-based) or ``None``; see the module docstring."""
        self._check(state)
        st = self._statuses(state)
        t = self._lowest_too_toxic(state)
        for d in range(t - 1, -1, -1):
            if self._accepted(d, st[d], t):
                return d
        return None

    def estimates(self, state: TrialState) -> Dict[str, Any]:
        """Per-dose counts for display.

        ``counts``: "y/n" per dose (DLTs / patients, the textbook "1/3"), "-" if untried;
        ``p_hat``: y/n or None; ``too_toxic``: >= 2 DLTs at the dose; ``eliminated``: the dose
        is at or above the lowest too-toxic dose; ``mtd``: ``select_mtd`` on this state.
        """
        self._check(state)
        t = self._lowest_too_toxic(state)
        return {
            "counts": [f"{y}/{n}" if n else "-" for n, y in zip(state.n, state.y)],
            "p_hat": [y / n if n else None for n, y in zip(state.n, state.y)],
            "too_toxic": [y >= 2 for y in state.y],
            "eliminated": [d >= t for d in range(self.n_doses)],
            "mtd": (None if self.select_mtd(state) is None
                    else self.select_mtd(state) + 1),  # 1-based for display
        }


# --------------------------------------------------------------------------- closed form
@dataclass(frozen=True)
class ThreePlusThreeOC:
    """Exact operating characteristics of a 3+3 design (0-based doses)."""

    p_mtd: Tuple[float, ...]          # P(dose d declared the MTD)
    p_no_mtd: float                   # P(no MTD: dose 1 too toxic)
    expected_n: Tuple[float, ...]     # E[patients treated at dose d]
    expected_dlt: Tuple[float, ...]   # E[DLTs at dose d]

    @property
    def expected_n_total(self) -> float:
        return float(sum(self.expected_n))

    @property
    def expected_dlt_total(self) -> float:
        return float(sum(self.expected_dlt))


def lin_shih_oc(p_true: Sequence[float], de_escalation: bool = True,
                top_dose_needs_six: bool = True) -> ThreePlusThreeOC:
    """Closed-form operating characteristics of the 3+3 (start at the lowest dose).

    After Lin & Shih (2001, Biostatistics 2:203-215), who give exact formulas for A+B designs
    with and without dose de-escalation.  The paper's text was not available to us; the
    formulas below were derived independently from binomial cohort probabilities and are
    checked in the tests against brute-force enumeration of ``ThreePlusThree.decide``.

    Derivation (doses j = 0..K-1, true DLT probability p_j, X ~ Bin(3, p_j)):

    a0 = P(X = 0) = (1-p)^3,  a1 = P(X = 1) = 3 p (1-p)^2,  b = P(X <= 1) = a0 + a1.

    Escalation phase at a non-top dose j, first visit: the dose *passes* (escalate) with
    0/3 (probability a0, leaving 3 patients) or 1/3 then 0/3 (probability a1 a0, leaving 6);
    pass_j = a0 + a1 a0.  Top dose: with ``top_dose_needs_six`` the first 3 are always expanded
    unless >= 2 DLTs, pass = a0 b + a1 a0 (always 6 patients); otherwise pass = a0 + a1 a0.
    fail_j = 1 - pass_j.  Dose j is reached with R_j = prod_{l<j} pass_l.

    Without de-escalation the MTD is the dose below the first failing dose:
        P(MTD = j) = R_{j+1} fail_{j+1} (j < K-1),  P(MTD = K-1) = R_K,  P(none) = fail_0.

    With de-escalation, if escalation fails at dose k the trial walks down from k-1: a dose
    that passed with 6 is the MTD; a dose that passed with 0/3 gets 3 more and is the MTD with
    probability b (<= 1 DLT among the new 3, hence <= 1/6), else it is too toxic and the walk
    continues; below dose 0 there is no MTD.  Summing over the failing dose k:
        P(MTD = i) = sum_{k=i+1}^{K-1} R_i (a1_i a0_i + a0_i b_i) D(i+1, k) fail_k  [+ R_K if i = K-1]
        P(none)    = sum_{k=0}^{K-1} D(0, k) fail_k
    with D(m, k) = prod_{l=m}^{k-1} a0_l (1 - b_l) (doses passed with 0/3 and then rejected).

    Expected patients: each visit to a dose in the escalation phase treats 3, plus 3 more
    with probability e_j (e_j = a1, or b at the top dose under ``top_dose_needs_six``):
        E[N_j] = R_j (3 + 3 e_j)  [+ 3 sum_{k=j+1}^{K-1} R_j a0_j D(j+1, k) fail_k  with de-escalation].
    Expected DLTs: E[Y_j] = p_j E[N_j] (each patient's outcome is independent of the decision
    to treat him; Wald's identity).
    """
    p = [float(v) for v in p_true]
    k_doses = len(p)
    if k_doses < 1:
        raise ValueError("p_true must have at least one dose")
    for v in p:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"DLT probabilities must be in [0, 1] (got {v})")
    top = k_doses - 1
    a0 = [(1 - v) ** 3 for v in p]
    a1 = [3 * v * (1 - v) ** 2 for v in p]
    b = [x + z for x, z in zip(a0, a1)]
    passes = [a0[j] + a1[j] * a0[j] for j in range(k_doses)]
    expand = list(a1)
    if top_dose_needs_six:
        passes[top] = a0[top] * b[top] + a1[top] * a0[top]
        expand[top] = b[top]
    fail = [1 - x for x in passes]
    reach = [1.0] * (k_doses + 1)
    for j in range(k_doses):
        reach[j + 1] = reach[j] * passes[j]

    def down(m: int, k: int) -> float:
        out = 1.0
        for ell in range(m, k):
            out *= a0[ell] * (1 - b[ell])
        return out

    p_mtd = [0.0] * k_doses
    exp_n = [reach[j] * (3 + 3 * expand[j]) for j in range(k_doses)]
    if not de_escalation:
        for j in range(top):
            p_mtd[j] = reach[j + 1] * fail[j + 1]
        p_none = fail[0]
    else:
        for i in range(top):
            accept_i = a1[i] * a0[i] + a0[i] * b[i]
            p_mtd[i] = sum(reach[i] * accept_i * down(i + 1, k) * fail[k]
                           for k in range(i + 1, k_doses))
            exp_n[i] += 3 * sum(reach[i] * a0[i] * down(i + 1, k) * fail[k]
                                for k in range(i + 1, k_doses))
        p_none = sum(down(0, k) * fail[k] for k in range(k_doses))
    p_mtd[top] = reach[k_doses]
    exp_dlt = [p[j] * exp_n[j] for j in range(k_doses)]
    return ThreePlusThreeOC(tuple(p_mtd), float(p_none), tuple(exp_n), tuple(exp_dlt))


# --------------------------------------------------------------------------- spec / registry
class Spec(DesignSpecBase):
    """YAML form of the 3+3 design."""

    type: Literal["3+3"]
    de_escalation: bool = Field(
        default=True,
        description="when a dose is too toxic and the dose below has only 3 patients, treat 3 "
                    "more there (Korn et al. 1994); false: declare it the MTD with 3 "
                    "(Lin & Shih 2001, traditional design without de-escalation)")
    top_dose_needs_six: bool = Field(
        default=True,
        description="the top dose is declared the MTD only after 6 patients with <= 1 DLT; "
                    "false: 0/3 at the top dose is enough")

    @field_validator("cohort_size")
    @classmethod
    def _cohorts_of_three(cls, v: Optional[int]) -> Optional[int]:
        if v is not None and v != COHORT:
            raise ValueError(f"the 3+3 design always uses cohorts of 3; cohort_size must be 3 "
                             f"or omitted (got {v})")
        return v


def trial_size(spec: Spec, ctx: DesignContext) -> TrialSize:
    """Cohorts of 3 whatever the trial says; the trial-level ``max_n`` is ignored (the 3+3
    sets its own sample size, at most 6 per dose) and only a ``max_n`` in the design spec
    caps it."""
    return TrialSize(cohort_size=COHORT, max_n=spec.max_n)


def make(spec: Spec, ctx: DesignContext) -> Design:
    """The 3+3 design (the registry adds ``stop_n_at_dose`` and a spec-level ``max_n``)."""
    c = spec.context(ctx)
    if not 0 <= c.start_dose < c.n_doses:
        raise ValueError(f"start_dose must be in 1..{c.n_doses} (got {c.start_dose + 1})")
    return ThreePlusThree(
        n_doses=c.n_doses, start_dose=c.start_dose, de_escalation=spec.de_escalation,
        top_dose_needs_six=spec.top_dose_needs_six, name=spec.name or spec.type)


# --------------------------------------------------------------------------- rule table
# One row per situation at the current dose d: (counts at d, when, n and DLTs at doses
# d-1, d, d+1 of a three-dose trial, index of d).  The decision printed is the design's own.
RULE_ROWS: Tuple[Tuple[str, str, Tuple[int, ...], Tuple[int, ...], int], ...] = (
    ("0/3", "dose d+1 not tried yet", (3, 3, 0), (0, 0, 0), 1),
    ("1/3", "", (3, 3, 0), (0, 1, 0), 1),
    ("<= 1/6", "dose d+1 not tried yet", (3, 6, 0), (0, 1, 0), 1),
    (">= 2 (of 3 or 6)", "dose d-1 has 0/3", (3, 3, 0), (0, 2, 0), 1),
    (">= 2 (of 3 or 6)", "dose d-1 has <= 1/6", (6, 3, 0), (1, 2, 0), 1),
    (">= 2 (of 3 or 6)", "d is the lowest dose", (3, 0, 0), (2, 0, 0), 0),
    ("0/3", "d is the top dose", (3, 3, 3), (0, 0, 0), 2),
    ("<= 1/6", "d is the top dose", (3, 3, 6), (0, 0, 1), 2),
    ("<= 1/6", "dose d+1 too toxic (came back down)", (3, 6, 3), (0, 1, 2), 1),
)


def _rel(k: int) -> str:
    """A dose named relative to the current dose d: d-1, d, d+1."""
    return "d" if k == 0 else f"d{k:+d}"


def _rule_cell(design: ThreePlusThree, state: TrialState) -> Dict[str, Any]:
    c = state.current
    dec = design.decide(state)
    if dec.stop:
        m = design.select_mtd(state)
        mtd = None if m is None else _rel(m - c)
        text = "stop: no MTD" if mtd is None else f"stop: MTD = dose {mtd}"
        return {"next": "stop", "next_dose": None, "cohort_size": None,
                "stop_reason": dec.stop_reason.value if dec.stop_reason else None,
                "mtd": mtd, "text": text}
    rel = dec.dose - c
    verb = "escalate: " if rel > 0 else "de-escalate: " if rel < 0 else ""
    more = "" if state.n[dec.dose] == 0 else " more"
    return {"next": "escalate" if rel > 0 else "de-escalate" if rel < 0 else "stay",
            "next_dose": _rel(rel), "cohort_size": dec.cohort_size, "stop_reason": None,
            "mtd": None, "text": f"{verb}{dec.cohort_size}{more} at dose {_rel(rel)}"}


def rule_table(request: TableRequest) -> DecisionTable:
    """The 3+3 rule at the current dose d, each row decided by the design (on a three-dose
    trial: the rule looks at doses d-1, d and d+1 only)."""
    k = max(3, request.n_doses or 3, request.spec.start_dose or 1)
    design, notes = request.build(n_doses=k, needs_target=False)
    notes += request.unused("target", "n_doses", "outcomes",
                            why="the 3+3 rule uses no target and no data beyond the counts "
                                "shown")
    notes += request.unused_options(("name", "de_escalation", "top_dose_needs_six",
                                     "cohort_size"),
                                    why="the rule table shows the rule at a dose, not the "
                                        "trial's start or stopping rules")
    inner = replace(design.inner, n_doses=3, start_dose=0)
    yes = {True: "yes", False: "no"}
    title = (f"{inner.name} rule at the current dose d (cohorts of 3; de_escalation: "
             f"{yes[inner.de_escalation]}, top_dose_needs_six: {yes[inner.top_dose_needs_six]})")
    lines = [title, f"{'at dose d':<19}{'when':<38}next step"]
    rows = []
    for counts, when, n, y, cur in RULE_ROWS:
        state = TrialState(n, y, cur, COHORT, min(y[cur], COHORT))
        cell = _rule_cell(inner, state)
        rows.append({"at_dose": counts, "when": when, "n": list(n), "dlt": list(y),
                     "current": cur + 1, **{k: v for k, v in cell.items() if k != "text"}})
        lines.append(f"{counts:<19}{when:<38}{cell['text']}")
    data = {"design": "3+3", "kind": "rule", "name": inner.name,
            "de_escalation": inner.de_escalation,
            "top_dose_needs_six": inner.top_dose_needs_six, "rows": rows}
    return DecisionTable("\n".join(lines), data, tuple(notes))


register(DesignEntry(
    type="3+3", spec_model=Spec, make=make, design_class=ThreePlusThree,
    trial_size=trial_size, table=rule_table,
    summary="rule-based 3+3 (Storer 1989); options de_escalation (Korn et al. 1994) and "
            "top_dose_needs_six; exact OC in closed form (Lin & Shih 2001)"))
