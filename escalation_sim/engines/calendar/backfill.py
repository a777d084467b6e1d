"""Backfill cohorts and short products: :class:`ConductPolicy` (classic designs),
:class:`ConductTitePolicy` and :class:`BackfillTitePolicy` (time-to-event designs: their
own docstrings say what differs: evaluable = window closed or DLT seen, backfill only while
the design suspends accrual, a short product counted where it belongs from its infusion).
With a graded truth, designs on DLTs count the DLT flags as always, and a short product's
grades come from the outcome model at the amount received
(:class:`~.shortfall.GradedShortfall`, :class:`ShortfallGradedToxicity`).

**Score designs** (gBOIN, TITE-gBOIN; ``y`` = sums of integer score units, 1 unit =
1 / ``unit_scale`` of the normalized equivalent toxicity score, nETS).  A patient
contributes the units of its worst grade in the window (a short product: its grades at the
amount received), escalation and backfill pooled, in every later decision and in the final
selection.  "Observed rate below the design's de-escalation boundary" is the design's own
quasi-Bernoulli rule: the dose's mean nETS over its evaluable patients ``s / n`` is below
``lambda_d`` (BOIN's boundary on the nETS scale, not rounded) and the dose is not
eliminated (``n >= 3`` and ``Pr(p > target | Beta(s + 1, n - s + 1)) > 0.95``, ``s`` the
real score sum): gBOIN is an interval design (:class:`Rules` uses its ``rule`` and
elimination); TITE-gBOIN is classified by its gBOIN twin (:func:`score_twin`: same target,
boundaries, scores, elimination; TITE-gBOIN decides as gBOIN when nobody is pending), with
a patient evaluable once it is no longer pending in TITE-gBOIN's sense (window closed, or a
scored event seen: :class:`_ScoreTite`), so BF-BOIN's conflict rule applies to it too, on
the evaluable data.  The DLT outputs (``y_escalation``, ``y_backfill``, per dose) count
DLTs by the ``dlt`` rule (``data_level``: where each patient is in the data), not units.

**Backfill** (``conduct.backfill``; Barnett et al. 2023, Clin Trials 20:261; BF-BOIN, Zhao,
Yuan, Korn & Freidlin 2024, Clin Cancer Res 30:673; rules as in docs/reference_notes/
bf_boin.md).  Escalation slots always come first.  An eligible patient who finds no free
escalation slot (who would otherwise wait or leave) is treated at the *highest dose open for
backfill*, if any.  A dose ``b`` is open when, at that moment:

1. ``b`` is below the current escalation dose;
2. it has at least ``min_evaluable`` (3) evaluable patients, escalation and backfill pooled;
3. it is *safe*: its completed data (escalation + backfill, windows ended) are not in the
   design's de-escalation or elimination region, or, as in BF-BOIN, the data of ``b`` pooled
   with those of ``b + 1`` are not.  The region is design-defined: interval designs use their
   own rule (``rule(n, y)`` de-escalates, or the elimination rule holds); model-based
   designs (CRM, BLRM) use the BOIN boundaries at their target (de-escalate iff
   ``y >= ceil(lambda_d n)``, ``lambda_d`` from phi2 = 1.4 target; Liu & Yuan 2015).
   Closure is monotone: once a dose is not safe, it and every higher dose are closed;
4. fewer than ``max_per_dose`` patients were assigned to it (escalation and backfill, not
   lost: a patient whose product failed or who dropped out or was excluded frees the place);
5. fewer than ``max_total`` backfill patients are in the trial (not lost).

BF-BOIN also asks for a response observed at ``b``; the calendar engine has no efficacy
outcome, so that condition is not modelled (documented difference).  A backfill patient is
observed when its own DLT window ends (draw index ``k`` of the shared ``dlt`` stream in the
order observations happen); its slot is not replaced when lost.  Backfill stops with the
escalation (patients still in their window then are not counted, as in BF-BOIN).  The
follow-up cap (``max_in_followup``) keeps its meaning for classic designs (it binds only
below the cohort size) and does not hold backfill patients; sentinel spacing applies to
them as to everyone (their dose already has patients, so they are never sentinels).

**Decisions with backfill data.**  Only a completed escalation cohort triggers a decision,
on the pooled data of every evaluable patient (escalation + completed backfill).  For
interval designs the BF-BOIN conflict rule then applies (reference note section 4): each
dose ``j <= d`` is classified by the design's rule at its own pooled ``(n_j, y_j)``; when a
lower dose disagrees with the current dose (``d`` says escalate and a lower dose does not,
or ``d`` says stay/de-escalate and a lower dose says de-escalate/eliminate), the data from
the highest disagreeing dose ``b*`` up to ``d`` are pooled and the rule applied to the pooled
counts: escalate -> ``d + 1``; de-escalate -> the highest ``k`` in ``[b*, d]`` whose
cumulative data from ``b*`` are not in the de-escalation region, else ``b* - 1`` (at dose
1: stay, or stop if dose 1 meets the elimination rule); otherwise stay.  Eliminated doses
are never treated.  Model-based designs see the pooled data directly (their model uses all
doses).  ``max_n`` counts escalation patients only (the escalation sample, as BF-BOIN's
``ncohort``); backfill adds at most ``max_total``.  The final selection uses the pooled
completed data.

**Short products** (``conduct.shortfall``, :mod:`.shortfall`): the patient's DLT is drawn at
the rate of the amount received; ``exclude`` ends the patient's path at infusion (not
evaluable, replaced); ``received`` counts the patient at the level at or below the amount
received.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ...designs.boin import _bounds_at
from ...designs.interval import DE_ESCALATE, ESCALATE, IntervalDesign
from ...designs.rules import StopAtN
from ...designs.tite import TiteState
from ...types import Decision, StopReason, TrialState
from .patient import COMPLETE, EXCLUDED, Cohort, Patient
from .policies import (CohortPolicy, ScoreTimeToEventPolicy, TimeToEventPolicy,
                       _infusion_order)
from .toxicity import Toxicity, score_steps

if TYPE_CHECKING:  # pragma: no cover
    from .trial import Trial

ELIMINATE = -2


class ShortfallToxicity(Toxicity):
    """``Toxicity`` at the rate of the amount received."""

    __slots__ = ("model",)

    def __init__(self, base: Toxicity, model):
        super().__init__(base.p, base.draws)
        self.model = model

    def observe(self, pat: Patient) -> bool:
        k = self.n
        self.n = k + 1
        d = self.draws
        while k >= len(d.dlt_u):
            d.more_evaluable()
        pat.k = k
        if d.dlt_u[k] < self.model.rate(pat.dose, pat.received):
            pat.dlt = True
            return True
        return False


class ShortfallGradedToxicity:
    """A graded truth's toxicity part (binary designs) with short products: a patient who
    received the whole product is the base part's; a short one gets its outcome at the
    amount received (:class:`~.shortfall.GradedShortfall`: its own latents and onset days,
    thresholds interpolated in log amount).  One counter k for both (the base's)."""

    __slots__ = ("base", "sf", "seed", "trial", "x", "out", "units")

    def __init__(self, base, model, seed: int, trial: int):
        self.base = base
        #: score designs: units per worst grade (``observe`` returns them); None: DLT flags
        self.units = base.g.units
        self.sf = model
        self.seed = int(seed)
        self.trial = int(trial)
        self.x = None                     # latents (J, N) of patients 0..N-1 of the trial
        self.out = {}                     # short patient -> GradedShortfall.outcome(...)

    @property
    def n(self) -> int:
        return self.base.n

    def latents(self, k: int):
        x = self.x
        if x is None or k >= x.shape[1]:
            import numpy as np
            n = max(64, 2 * (k + 1))
            lat, _ = self.sf.graded.model.patient_latents(
                self.seed, np.array([self.trial], dtype=np.uint64), n)
            x = self.x = lat[:, 0, :]
        return x[:, k]

    def observe(self, pat: Patient) -> bool:
        if pat.received >= 1.0:
            return self.base.observe(pat)
        k = self.base._next(pat)
        days = self.base.draws.type_onset[k]
        res = self.out[pat] = self.sf.graded.outcome(
            self.latents(k).tolist(), days.tolist(),
            self.sf.amounts[pat.dose] * pat.received)
        if self.units is not None:           # a score design: the units of the worst grade
            pat.dlt = res[1] is not None
            pat.worst = res[2]
            return self.units[res[2]]
        if res[1] is not None:
            pat.dlt = True
            return True
        return False

    def steps(self, pat: Patient):
        """Score designs: when a time-to-event design sees the units (``ScoreToxicity
        .steps``), from the events at the amount received."""
        g = self.base.g
        return score_steps(self.events(pat), g.units, g.window)

    def onset_day(self, pat: Patient) -> float:
        r = self.out.get(pat)
        return self.base.onset_day(pat) if r is None else r[1]

    def worst_late(self, pat: Patient):
        r = self.out.get(pat)
        return self.base.worst_late(pat) if r is None else (r[2], r[3])

    def events(self, pat: Patient):
        r = self.out.get(pat)
        if r is None:
            return self.base.events(pat)
        days = self.base.draws.type_onset[pat.k].tolist()
        return tuple((j, g, days[j]) for j, g in enumerate(r[0]) if g > 0)


def shortfall_toxicity(trial, sf):
    """The toxicity part of ``trial`` with short products (binary or graded truth)."""
    if sf.graded is not None:
        return ShortfallGradedToxicity(trial.toxicity, sf, trial.draws.plan.seed,
                                       trial.draws.trial)
    return ShortfallToxicity(trial.toxicity, sf)


# ------------------------------------------------------------------ design-defined boundaries
class Rules:
    """How a design classifies a dose's data: ESCALATE, STAY, DE_ESCALATE or ELIMINATE."""

    def __init__(self, design):
        self.design = design
        self.memo = {}
        inner = score_twin(design.inner)
        self.interval = isinstance(inner, IntervalDesign)
        self.inner = inner
        if not self.interval:
            t = getattr(inner, "target", None)
            if t is None:
                lo, hi = inner.target_interval
                t = 0.5 * (lo + hi)
            self.target = float(t)

    def classify(self, n: int, y: int) -> int:
        key = (n, y)
        v = self.memo.get(key)
        if v is None:
            v = self.memo[key] = self._classify(n, y)
        return v

    def _classify(self, n: int, y: int) -> int:
        if self.interval:
            if self.inner.meets_elimination(n, y):
                return ELIMINATE
            return self.inner.rule(n, y).move
        t = self.target
        b_e, b_d, b_elim = _bounds_at(t, 0.6 * t, 1.4 * t, 0.95, n)
        if b_elim is not None and y >= b_elim:
            return ELIMINATE
        if y >= b_d:
            return DE_ESCALATE
        return ESCALATE if y <= b_e else 0

    def too_toxic(self, n: int, y: int) -> bool:
        return self.classify(n, y) <= DE_ESCALATE


def score_twin(inner):
    """The design whose rule classifies a dose's evaluable data: ``inner`` itself, or for
    TITE-gBOIN the gBOIN with its target, boundaries, scores and elimination (TITE-gBOIN
    decides as gBOIN when nobody is pending, designs/tite_gboin.py)."""
    from ...designs.tite_gboin import TITEGBOIN
    if not isinstance(inner, TITEGBOIN):
        return inner
    from ...designs.gboin import GBOIN
    p1, p2 = inner.phis
    return GBOIN(n_doses=inner.n_doses, target=inner.target, cohort_size=inner.cohort_size,
                 start_dose=inner.start_dose, scores=inner.scores, phi1=p1, phi2=p2,
                 cutoff_eli=inner.cutoff_eli, extrasafe=inner.extrasafe, offset=inner.offset,
                 n_earlystop=inner.n_earlystop, elimination_min_n=inner.elimination_min_n,
                 name=inner.name)


def bf_conflict(rules: Rules, state: TrialState, dec: Decision) -> Decision:
    """BF-BOIN's conflict resolution (module docstring) applied to the design's decision
    ``dec`` on the pooled ``state``; returns ``dec`` when no lower dose disagrees."""
    if dec.stop or not rules.interval:
        return dec
    inner = rules.inner
    d = state.current
    n, y = state.n, state.y
    cls_d = rules.classify(n[d], y[d])
    if cls_d == ESCALATE:
        bad = [j for j in range(d) if n[j] > 0 and rules.classify(n[j], y[j]) != ESCALATE]
    else:
        bad = [j for j in range(d) if n[j] > 0 and rules.classify(n[j], y[j]) <= DE_ESCALATE]
    if not bad:
        return dec
    b = max(bad)
    low = inner.lowest_eliminated(state)
    top = state.n_doses - 1
    N = sum(n[b:d + 1])
    Y = sum(y[b:d + 1])
    verdict = rules.classify(N, Y)
    why = (f"backfill data: dose {b + 1} disagrees with dose {d + 1}; pooled doses "
           f"{b + 1}-{d + 1}: {Y}/{N} DLT")
    if verdict == ESCALATE:
        nxt = d + 1 if d < top else d
        why += ": escalate"
    elif verdict <= DE_ESCALATE:
        nxt = -1
        cn = cy = 0
        for k in range(b, d + 1):
            cn += n[k]
            cy += y[k]
            if not rules.too_toxic(cn, cy):
                nxt = k
            else:
                break
        if nxt < 0:
            nxt = b - 1
        why += f": de-escalate to dose {max(nxt, 0) + 1}"
        if nxt < 0:
            if inner.meets_elimination(n[0], y[0]):
                return Decision.halt(StopReason.LOWEST_DOSE_TOO_TOXIC, why + "; dose 1 "
                                     "eliminated")
            nxt = 0
    else:
        nxt = d
        why += ": stay"
    if low is not None and nxt >= low:
        nxt = low - 1
        why += f"; dose {low + 1} and above eliminated"
        if nxt < 0:
            return Decision.halt(StopReason.LOWEST_DOSE_TOO_TOXIC, why)
    ns = getattr(inner, "n_earlystop", None)
    if ns is not None and nxt == d and n[d] >= ns:
        return Decision.halt(StopReason.N_AT_DOSE, why + f"; {n[d]} patients at dose "
                             f"{d + 1} (n_earlystop {ns})")
    return Decision.treat(nxt, dec.cohort_size, why)


def backfill_dose(rules: Rules, bf, cur: int, n_esc, y_esc, n_bf, y_bf, assigned,
                  n_backfill: int) -> int:
    """The highest dose open for backfill (module docstring, rules 1-5), or -1.

    ``cur``: the escalation dose; ``n_esc``/``y_esc``, ``n_bf``/``y_bf``: completed
    escalation / backfill data per dose; ``assigned``: patients per dose not lost (pending
    included); ``n_backfill``: backfill patients in the trial (not lost)."""
    if n_backfill >= bf.max_total:
        return -1
    best = -1
    too_toxic = rules.too_toxic
    K = len(n_esc)
    for b in range(cur):
        n = n_esc[b] + n_bf[b]
        if n == 0:
            continue
        y = y_esc[b] + y_bf[b]
        if too_toxic(n, y):
            if b + 1 >= K:
                break
            n2 = n + n_esc[b + 1] + n_bf[b + 1]
            y2 = y + y_esc[b + 1] + y_bf[b + 1]
            if n2 == n or too_toxic(n2, y2):
                break                      # closed, and every dose above it
        if n >= bf.min_evaluable and assigned[b] < bf.max_per_dose:
            best = b
    return best


def review_delay(review, review_days: float, every, now: float, escalating: bool) -> float:
    """Days from ``now`` (a cohort's data complete) to the decision (``ConductPolicy
    .review_delay``): ``review.days`` (or ``review_days`` without ``review``), none when
    ``review.before`` is ``escalation`` and the decision is not an escalation; then, with
    ``every`` (``review_every_days``), the first meeting (days 0, E, 2E, ...) at or after
    that."""
    if review is not None and review.before == "escalation" and not escalating:
        return 0.0
    due = now + (review.days if review is not None else review_days)
    if every is not None:
        k = math.ceil(due / every - 1e-9)
        due = max(due, k * every)
    return due - now


def init_backfill(pol, s) -> "object":
    """The backfill parts both backfill policies share (``conduct.backfill``, the open
    backfill cohorts, ``max_n`` on escalation patients only); returns the design without
    its ``max_n`` wrapper."""
    pol.bf = s.conduct.backfill
    pol.bf_active = 0
    pol.side = None
    pol.bf_cohorts = [None] * s.K
    design = s.design
    pol.max_n = None
    if isinstance(design, StopAtN):      # max_n counts escalation patients only
        pol.max_n = design.n
        design = design.base
    return design


class ConductPolicy(CohortPolicy):
    """``CohortPolicy`` with backfill cohorts and / or short products (module docstring)."""

    __slots__ = ("bf", "sf", "sf_draws", "rules", "n_esc", "y_esc", "n_bf", "y_bf",
                 "assigned", "bf_active", "side", "bf_cohorts", "max_n", "base_design",
                 "n_short", "n_excluded", "n_bf_enrolled", "n_bf_treated", "last", "sizes",
                 "n_cohorts")

    def __init__(self, trial: "Trial"):
        super().__init__(trial)
        s = trial.setup
        K = s.K
        self.sf = s.shortfall
        self.sf_draws = None
        if self.sf is not None:
            self.sf_draws = self.sf.draws(trial.draws.plan.seed, trial.draws.trial)
            trial.toxicity = shortfall_toxicity(trial, self.sf)
        self.rules = s.backfill_rules
        self.n_esc = [0] * K
        self.y_esc = [0] * K
        self.n_bf = [0] * K
        self.y_bf = [0] * K
        self.assigned = [0] * K
        self.base_design = init_backfill(self, s)
        self.n_short = 0
        self.n_excluded = 0
        self.n_bf_enrolled = 0
        self.n_bf_treated = 0
        self.last = (None, 0, 0)
        self.sizes = s.conduct.cohort_sizes
        self.n_cohorts = 0

    # -- the pooled state ------------------------------------------------------------------
    def pooled(self, cur: int, last_n: int, last_y: int) -> TrialState:
        n = tuple(a + b for a, b in zip(self.n_esc, self.n_bf))
        y = tuple(a + b for a, b in zip(self.y_esc, self.y_bf))
        return TrialState(n, y, cur, last_n, last_y)

    def start(self) -> None:
        self.trial.open(self.sized(self.trial.setup.decide(self.state)))

    # -- backfill slots --------------------------------------------------------------------
    def open_dose(self) -> int:
        """The highest dose open for backfill now, or -1."""
        t = self.trial
        if self.bf is None or t.finished:
            return -1
        return backfill_dose(self.rules, self.bf, t.cohort.dose, self.n_esc, self.y_esc,
                             self.n_bf, self.y_bf, self.assigned, self.bf_active)

    def open_slot(self) -> bool:
        b = self.open_dose()
        if b < 0:
            return False
        c = self.bf_cohorts[b]
        if c is None:
            c = self.bf_cohorts[b] = Cohort(-2, b, 0, 0)
        c.size += 1
        c.free += 1
        self.side = c
        return True

    def side_cohort(self) -> Cohort:
        return self.side

    def on_enroll(self, pat: Patient) -> None:
        self.assigned[pat.dose] += 1
        if pat.cohort.index == -2:
            pat.backfill = True
            self.bf_active += 1
            self.n_bf_enrolled += 1
        if self.sf_draws is not None:
            f = self.sf_draws.fraction(pat.j)
            pat.received = f
            if f < 1.0:
                self.n_short += 1

    # -- infusion and outcomes -------------------------------------------------------------
    def infuse(self, pat: Patient, delay: float) -> None:
        if pat.received < 1.0 and self.sf.counted_dose(pat.dose, pat.received) < 0:
            t = self.trial
            pat.infusion_day = t.clock.now + delay
            t.n_treated += 1
            pat.status = EXCLUDED
            self.n_excluded += 1
            t.clock.after(delay, t.on_end, pat)
            return
        if pat.backfill:
            self.n_bf_treated += 1
        CohortPolicy.infuse(self, pat, delay)

    def counted(self, pat: Patient) -> int:
        if pat.received < 1.0:
            return self.sf.counted_dose(pat.dose, pat.received)
        return pat.dose

    def on_evaluable(self, pat: Patient) -> None:
        if not pat.backfill:                     # CohortPolicy.on_evaluable, inlined
            c = pat.cohort
            c.done.append(pat)
            if len(c.done) == c.size:
                self._complete(c)
            return
        t = self.trial
        d = self.counted(pat)
        self.n_bf[d] += 1
        self.y_bf[d] += t.toxicity.observe(pat)      # the DLT flag, or a score's units
        pat.cohort.active -= 1
        t.changed()

    def on_lost(self, pat: Patient) -> None:
        self.assigned[pat.dose] -= 1
        if pat.backfill:
            self.bf_active -= 1
            pat.cohort.size -= 1
            return
        pat.cohort.free += 1

    def _complete(self, c) -> None:
        t = self.trial
        members, c.done = c.done, []
        members.sort(key=_infusion_order)
        observe = t.toxicity.observe
        y = 0
        if self.bf is None and (self.sf is None or self.sf.policy != "received"):
            for pat in members:           # every patient counts at the cohort's dose
                y += observe(pat)         # the DLT flag, or a score design's units
            c.y = y
            self.last = None
            mu = t.setup.max_units
            if mu is None:
                self.state = self.state.add_cohort(c.dose, c.size, y)
            else:
                self.state = self.state.add_cohort(c.dose, c.size, y, max_units=mu)
        else:
            for pat in members:
                u = observe(pat)
                d = self.counted(pat)
                self.n_esc[d] += 1
                if u:
                    self.y_esc[d] += u
                    y += u
            c.y = y
            self.last = (c.dose, c.size, y)
            self.state = self.pooled(c.dose, c.size, y)
        dec = self.decide_now()
        delay = self.review_delay(t.clock.now, not dec.stop and dec.dose > c.dose)
        if delay > 0:
            t.clock.after(delay, self._decide)
        else:
            self._open(dec)

    def review_delay(self, now: float, escalating: bool) -> float:
        """Days from ``now`` (the cohort's data complete) to the decision: the review's days
        (``review.days`` or ``review_days``), skipped when ``review.before`` is
        ``escalation`` and the decision is not an escalation; then, with
        ``review_every_days``, the first meeting (days 0, E, 2E, ...) at or after that."""
        c = self.trial.setup.conduct
        return review_delay(c.review, c.review_days, c.review_every_days, now, escalating)

    def decide_now(self) -> Decision:
        st = self.state
        if self.bf is None:              # short products only: the design as it is
            return self.trial.setup.decide(st)
        esc = sum(self.n_esc)
        if self.max_n is not None and esc >= self.max_n:
            return Decision.halt(StopReason.MAX_N, f"{esc} escalation patients treated "
                                                   f"(max {self.max_n})")
        memo = self.trial.setup.conduct_memo
        dec = memo.get(st)
        if dec is None:
            dec = memo[st] = self.base_design.decide(st)
        if self.bf is not None:
            dec = bf_conflict(self.rules, st, dec)
        if self.max_n is not None and not dec.stop and dec.cohort_size > self.max_n - esc:
            dec = Decision(dec.dose, self.max_n - esc, dec.reason, None, dec.estimates)
        return dec

    def _decide(self, call=None) -> None:
        """After a review: decide on the data now (backfill windows may have closed)."""
        if self.last is not None:
            self.state = self.pooled(*self.last)
        self._open(self.decide_now())

    def _open(self, dec: Decision) -> None:
        t = self.trial
        t.decision_times.append(t.clock.now - t.first_enroll)
        t.open(self.sized(dec))
        if not t.finished:
            t.fill()

    def sized(self, dec: Decision) -> Decision:
        """``dec`` with the size of the next escalation cohort from ``cohort_sizes`` (the
        last size repeats), cut to what ``max_n`` leaves."""
        sizes = self.sizes
        if sizes is None or dec.stop:
            return dec
        size = sizes[min(self.n_cohorts, len(sizes) - 1)]
        self.n_cohorts += 1
        if self.max_n is not None:    # escalation patients so far (backfill ones excluded)
            size = min(size, self.max_n - (self.state.total_n - sum(self.n_bf)))
        if size == dec.cohort_size:
            return dec
        return Decision(dec.dose, size, dec.reason, None, dec.estimates)

    def final_state(self) -> TrialState:
        return self.state

    def data_level(self, pat: Patient) -> int:
        """The level whose final data hold ``pat`` (-1: not in them: never observed)."""
        if pat.k < 0 or pat.status != COMPLETE:
            return -1
        return self.counted(pat)


class BackfillPolicy(ConductPolicy):
    """``ConductPolicy`` with ``conduct.backfill``: an arrival may take a backfill slot, so
    accrual keeps its events running while a backfill dose is open."""

    __slots__ = ()

    @property
    def decides_on_arrival(self) -> bool:
        # arrivals matter only while a backfill dose is open; the set of open doses changes
        # only at events that refill slots (a completed window, a decision, a loss), and
        # those replay the arrivals in between first (Accrual.catch_up)
        return self.open_dose() >= 0


class ConductTitePolicy(TimeToEventPolicy):
    """``TimeToEventPolicy`` with short products and / or ``min_followup_days``.

    **Short products** (``conduct.shortfall``): the received fraction is drawn at
    enrollment but the patient counts at its assigned level until infusion, when the
    product's amount is known (as the release certificate makes it known in practice).  At
    infusion, under ``received`` the patient moves to the highest level at or below the
    amount received (from then on its follow-up and its DLT count there); under ``exclude``
    (or ``received`` below the lowest level) it leaves the data at once, not evaluable, like
    a drop-out: the design, asked again, fills the place (a time-to-event design has no
    fixed cohort to refill).  ``assigned``: the patient stays at its assigned level.

    **min_followup_days**: a decision to treat above every dose tried so far is held back
    (new patients stay at the current dose) until some patient at the current dose has been
    followed ``min_followup_days`` (a DLT counts as followed)."""

    __slots__ = ("sf", "sf_draws", "n_short", "min_fu", "n_held", "moves", "where",
                 "n_excluded")

    def __init__(self, trial: "Trial"):
        super().__init__(trial)
        self.sf = trial.setup.shortfall
        self.sf_draws = None
        if self.sf is not None:
            self.sf_draws = self.sf.draws(trial.draws.plan.seed, trial.draws.trial)
            trial.toxicity = shortfall_toxicity(trial, self.sf)
        self.n_short = 0
        self.min_fu = trial.setup.conduct.min_followup_days
        self.n_held = 0
        #: short products may count elsewhere than at the assigned level
        self.moves = self.sf is not None and self.sf.policy != "assigned"
        #: patient -> level it counts at, for those counted below their assigned level
        self.where = {}
        self.n_excluded = 0

    def at(self, pat: Patient) -> int:
        """The level ``pat`` counts at."""
        return self.where.get(pat, pat.dose)

    def on_enroll(self, pat: Patient) -> None:
        super().on_enroll(pat)
        if self.sf_draws is not None:
            f = self.sf_draws.fraction(pat.j)
            pat.received = f
            if f < 1.0:
                self.n_short += 1

    def state(self):
        if not self.where:
            return TimeToEventPolicy.state(self)
        c = self.trial.cohort
        return TiteState(tuple(self.n_active), tuple(self.y_obs),
                         c.dose if c.index >= 0 else None, c.active, c.y,
                         self.pending_follow_up(self.where.get))

    def _infused(self, call) -> None:
        pat: Patient = call.arg
        if self.moves and pat.received < 1.0:
            d = self.sf.counted_dose(pat.dose, pat.received)
            if d < 0:                        # excluded: not evaluable, leaves the data now
                t = self.trial
                pat.infusion_day = t.clock.now
                t.n_treated += 1
                pat.status = EXCLUDED
                self.n_excluded += 1
                t.on_end(call)
                return
            if d != pat.dose:                # counted at the level received from now on
                self.n_active[pat.dose] -= 1
                self.n_active[d] += 1
                self.where[pat] = d
        self.follow_up(call)

    #: what follows an infusion (the patient's DLT, or a score design's events)
    follow_up = TimeToEventPolicy._infused

    def data_level(self, pat: Patient) -> int:
        """The level whose final data hold ``pat`` (-1: not in them)."""
        return self.at(pat) if pat.status == COMPLETE else -1

    def _dlt(self, call) -> None:
        pat: Patient = call.arg
        self.y_obs[self.at(pat)] += 1
        self.pending.pop(pat, None)
        pat.cohort.y += 1
        self.trial.changed()

    def on_lost(self, pat: Patient) -> None:
        self.n_active[self.at(pat)] -= 1
        self.pending.pop(pat, None)

    def followed(self, dose: int, now: float) -> bool:
        """Some patient at ``dose`` followed ``min_followup_days`` (or with a DLT)."""
        need = self.min_fu
        tox = self.trial.toxicity
        at = self.where.get
        for p in self.trial.pats:
            if at(p, p.dose) != dose or p.infusion_day < 0 or p.status != COMPLETE:
                continue
            if p.dlt and now >= p.infusion_day + tox.onset_day(p) - 1e-9:
                return True
            if p.seen > 0:                   # a score design saw a scored event: complete
                return True
            if now - p.infusion_day >= need - 1e-9:
                return True
        return False

    def design_decision(self) -> Decision:
        """The design's decision on the data now (before the ``min_followup_days`` hold)."""
        return TimeToEventPolicy.decide(self)

    def decide(self) -> Decision:
        dec = self.design_decision()
        if self.min_fu is None or dec.stop or dec.cohort_size <= 0:
            return dec
        t = self.trial
        cur = t.cohort.dose
        if cur < 0 or dec.dose <= cur:
            return dec
        top = max(p.dose for p in t.pats) if t.pats else -1
        if dec.dose <= top or self.followed(cur, t.clock.now):
            return dec
        self.n_held += 1
        return Decision.treat(cur, dec.cohort_size,
                              dec.reason + f"; held at dose {cur + 1}: nobody there followed "
                                           f"{self.min_fu:g} days yet (min_followup_days)")


class BackfillTitePolicy(ConductTitePolicy):
    """``ConductTitePolicy`` with ``conduct.backfill`` (time-to-event designs).

    A time-to-event design is asked whenever an eligible patient finds no free slot; when it
    treats (``cohort_size > 0``) the patient goes to the escalation cohort, as always.  When
    it suspends accrual (TITE-BOIN: more than half the patients at the current dose pending)
    or holds a stop while patients are pending, the patient would wait or leave: it is then
    treated at the highest dose open for backfill, with the rules 1-5 of the module
    docstring, where a patient is **evaluable** once its window has closed or it has had a
    DLT (a DLT known by its onset; a DLT-free pending patient is not evaluable yet,
    whatever its follow-up), and the observed rate of a dose is its DLTs over its
    evaluable patients.  No backfill once the design has stopped (backfill stops with the
    escalation; patients in follow-up then are followed to the end of their window, as
    every time-to-event trial here waits for them).

    Backfill patients enter the design's data as soon as they are enrolled, at their dose,
    exactly as escalation patients do (pending with their follow-up fraction, then complete
    or with a DLT): every later decision sees them.  For interval designs (TITE-BOIN) the
    BF-BOIN conflict rule is applied to a decision that treats, on the evaluable data
    (pending patients left out), when the current dose has evaluable patients.
    ``max_n`` counts escalation patients only (enrolled and not lost)."""

    __slots__ = ("bf", "rules", "n_eval", "bf_active", "side", "bf_cohorts", "max_n",
                 "memo", "n_esc", "y_esc", "n_bf", "y_bf", "n_bf_enrolled", "n_bf_treated")

    def __init__(self, trial: "Trial"):
        super().__init__(trial)
        s = trial.setup
        K = s.K
        self.rules = s.backfill_rules
        self.n_eval = [0] * K                # evaluable: window closed, or a DLT seen
        self.design = init_backfill(self, s)
        self.memo = s.conduct_memo
        self.n_esc = [0] * K                 # per dose, filled when the trial stops
        self.y_esc = [0] * K
        self.n_bf = [0] * K
        self.y_bf = [0] * K
        self.n_bf_enrolled = 0
        self.n_bf_treated = 0

    def design_decision(self) -> Decision:
        esc = sum(self.n_active) - self.bf_active
        if self.max_n is not None and esc >= self.max_n:
            return Decision.halt(StopReason.MAX_N, f"{esc} escalation patients enrolled "
                                                   f"(max {self.max_n})")
        st = self.state()
        if st.pending:
            last, dec = self.last
            if st != last:
                dec = self.design.decide(st)
                self.last = (st, dec)
        else:
            dec = self.memo.get(st)
            if dec is None:
                dec = self.memo[st] = self.design.decide(st)
        if dec.stop or dec.cohort_size <= 0:
            return dec
        cur = st.current
        if self.rules.interval and cur is not None and self.n_eval[cur] > 0:
            ev = TrialState(tuple(self.n_eval), st.y, cur, st.last_n, st.last_y)
            dec = bf_conflict(self.rules, ev, dec)
            if dec.stop:
                return dec
        if self.max_n is not None and dec.cohort_size > self.max_n - esc:
            dec = Decision(dec.dose, self.max_n - esc, dec.reason, None, dec.estimates)
        return dec

    def suspended(self) -> bool:
        """Escalation first (``TimeToEventPolicy.open_slot``); when the design suspends
        accrual, the same backfill slot as classic designs."""
        return BackfillPolicy.open_slot(self)

    def open_dose(self) -> int:
        """The highest dose open for backfill now, or -1 (evaluable data; ``n_active``,
        pending included, against ``max_per_dose``)."""
        t = self.trial
        if t.cohort.index < 0:
            return -1
        zeros = [0] * len(self.n_eval)
        return backfill_dose(self.rules, self.bf, t.cohort.dose, self.n_eval, self.y_obs,
                             zeros, zeros, self.n_active, self.bf_active)

    def side_cohort(self) -> Cohort:
        return self.side

    def on_enroll(self, pat: Patient) -> None:
        super().on_enroll(pat)
        if pat.cohort.index == -2:
            pat.backfill = True
            self.bf_active += 1
            self.n_bf_enrolled += 1

    def _dlt(self, call) -> None:
        self.n_eval[self.at(call.arg)] += 1
        ConductTitePolicy._dlt(self, call)

    def evaluable_at_end(self, pat: Patient) -> bool:
        """``pat``'s window closed: whether it becomes evaluable only now (a DLT patient
        became evaluable at its onset)."""
        return not pat.dlt

    def now_evaluable(self, pat: Patient) -> None:
        """``pat`` stopped being pending before its window closed (score designs)."""
        self.n_eval[self.at(pat)] += 1

    def on_evaluable(self, pat: Patient) -> None:
        if self.evaluable_at_end(pat):
            self.n_eval[self.at(pat)] += 1
        if pat.backfill:
            self.n_bf_treated += 1
        ConductTitePolicy.on_evaluable(self, pat)

    def on_lost(self, pat: Patient) -> None:
        ConductTitePolicy.on_lost(self, pat)
        if pat.backfill:
            self.bf_active -= 1
            pat.cohort.size -= 1

    def final_state(self) -> TrialState:
        score = self.trial.setup.max_units is not None
        for p in self.trial.pats:            # everyone's window is over by now
            if p.status != COMPLETE:
                continue
            d = self.at(p)
            y = p.seen if score else p.dlt
            if p.backfill:
                self.n_bf[d] += 1
                self.y_bf[d] += y
            else:
                self.n_esc[d] += 1
                self.y_esc[d] += y
        return ConductTitePolicy.final_state(self)


class _ScoreTite:
    """Time-to-event designs on a score (TITE-gBOIN) under ``conduct``: what
    :class:`~.policies.ScoreTimeToEventPolicy` does (events seen at their onsets, a patient
    pending until its first scored event or the end of its window), at the level the patient
    counts at (``conduct.shortfall.policy``).  For backfill a patient is **evaluable** once
    it is no longer pending (its window closed, or a scored event seen) and the observed
    nETS of a dose is its units seen over its evaluable patients: the same definition as the
    design's own, so the backfill rules judge exactly what TITE-gBOIN would on complete
    data (its gBOIN twin, :func:`score_twin`)."""

    __slots__ = ()

    def state(self):
        t = self.trial
        c = t.cohort
        return TiteState(tuple(self.n_active), tuple(self.y_obs),
                         c.dose if c.index >= 0 else None, c.active, c.y,
                         self.pending_follow_up(self.where.get if self.where else None),
                         t.setup.max_units)

    follow_up = ScoreTimeToEventPolicy._infused

    def _event(self, call) -> None:
        pat, units = call.arg
        gain = units - pat.seen
        pat.seen = units
        self.y_obs[self.at(pat)] += gain
        pat.cohort.y += gain
        if pat in self.pending:
            del self.pending[pat]
            self.now_evaluable(pat)
        self.trial.changed()

    def now_evaluable(self, pat: Patient) -> None:
        pass

    def evaluable_at_end(self, pat: Patient) -> bool:
        return pat in self.pending


class ConductScoreTitePolicy(_ScoreTite, ConductTitePolicy):
    """``ConductTitePolicy`` for TITE-gBOIN (short products, ``min_followup_days``: a
    scored event counts as followed, as a DLT does for TITE-BOIN)."""

    __slots__ = ()


class BackfillScoreTitePolicy(_ScoreTite, BackfillTitePolicy):
    """``BackfillTitePolicy`` for TITE-gBOIN (see :class:`_ScoreTite`)."""

    __slots__ = ()

    def now_evaluable(self, pat: Patient) -> None:
        BackfillTitePolicy.now_evaluable(self, pat)


def _counts_any(design) -> bool:
    from ...designs.blrm import BLRM
    from ...designs.crm import CRM
    from ...designs.tite_gboin import TITEGBOIN
    return isinstance(design.inner, (IntervalDesign, CRM, BLRM, TITEGBOIN))


def conduct_parts(setup) -> None:
    """Choose the policy and shared parts for ``conduct.backfill`` / ``conduct.shortfall``
    (called by :class:`~.model.Setup` only when one of them is set)."""
    from .shortfall import ShortfallModel
    c = setup.conduct
    score_tte = setup.policy is ScoreTimeToEventPolicy
    if score_tte and c.backfill is None and c.shortfall is None and \
            c.min_followup_days is None:
        # TITE-gBOIN keeps its own policy: the review options and cohort_sizes concern
        # classic designs (the scenario notes them as unused)
        return
    tte = score_tte or setup.policy is TimeToEventPolicy
    graded = getattr(setup, "graded", None)
    if c.shortfall is not None:
        setup.shortfall = ShortfallModel(c.shortfall, setup.p,
                                         None if graded is None else setup.model,
                                         c.dlt_window_days)
    if c.backfill is not None:
        if tte and not _counts_any(setup.design):
            raise ValueError("conduct.backfill: needs a design that decides on any per-dose "
                             "counts (interval designs, crm, blrm and their time-to-event "
                             "versions)")
        setup.backfill_rules = Rules(setup.design)
    if score_tte:
        setup.policy = (ConductScoreTitePolicy if c.backfill is None else
                        BackfillScoreTitePolicy)
    elif tte:
        setup.policy = ConductTitePolicy if c.backfill is None else BackfillTitePolicy
    else:
        setup.policy = ConductPolicy if c.backfill is None else BackfillPolicy
    if (c.shortfall is not None and c.shortfall.policy == "received"
            and not _counts_any(setup.design)):
        raise ValueError("conduct.shortfall.policy: 'received' needs a design that decides on "
                         "any per-dose counts (got a design that decides by fixed cohorts)")
    setup.conduct_memo = {}


def conduct_columns(setup, res, mtd) -> dict:
    """Per-trial columns for ``conduct.backfill`` / ``conduct.shortfall`` (1-D arrays, so the
    runner averages them): see :func:`~escalation_sim.engines.calendar.simulate_des_trials`."""
    import numpy as np
    m, K = len(res), setup.K
    out = {}
    c = setup.conduct
    if c.backfill is not None:
        nb = np.array([t.policy.n_bf for t in res], dtype=np.int64).reshape(m, K)
        ne = np.array([t.policy.n_esc for t in res], dtype=np.int64).reshape(m, K)
        if setup.units is None:
            yb = np.array([t.policy.y_bf for t in res], dtype=np.int64).reshape(m, K)
            ye = np.array([t.policy.y_esc for t in res], dtype=np.int64).reshape(m, K)
        else:      # score designs: y_esc / y_bf sum units; the columns count DLTs
            yb = np.zeros((m, K), dtype=np.int64)
            ye = np.zeros((m, K), dtype=np.int64)
            for r, t in enumerate(res):
                level = t.policy.data_level
                for p in t.pats:
                    d = level(p)
                    if d >= 0 and p.dlt:
                        (yb if p.backfill else ye)[r, d] += 1
        out["n_escalation"] = ne.sum(axis=1)
        out["y_escalation"] = ye.sum(axis=1)
        out["n_backfill"] = nb.sum(axis=1)
        out["y_backfill"] = yb.sum(axis=1)
        out["n_backfill_enrolled"] = np.array([t.policy.n_bf_enrolled for t in res],
                                              dtype=np.int64)
        for d in range(K):
            out[f"n_escalation_dose{d + 1}"] = ne[:, d]
            out[f"y_escalation_dose{d + 1}"] = ye[:, d]
            out[f"n_backfill_dose{d + 1}"] = nb[:, d]
            out[f"y_backfill_dose{d + 1}"] = yb[:, d]
    if c.min_followup_days is not None and res and hasattr(res[0].policy, "n_held"):
        out["n_escalations_held"] = np.array([t.policy.n_held for t in res], dtype=np.int64)
    sf = setup.shortfall
    if sf is not None:
        out["n_short"] = np.array([t.policy.n_short for t in res], dtype=np.int64)
        out["n_excluded"] = np.array([getattr(t.policy, "n_excluded", 0) for t in res],
                                     dtype=np.int64)
        given = [sf.rate_as_given(d) for d in range(K)]
        nominal = np.array([0.0 if k < 0 else setup.p[k] for k in mtd.tolist()])
        as_given = np.array([0.0 if k < 0 else given[k] for k in mtd.tolist()])
        out["true_rate_selected_nominal"] = nominal
        out["true_rate_selected_as_given"] = as_given
    return out
