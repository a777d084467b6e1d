"""What the trials of one simulation call share: :class:`Setup` (design, truth, conduct and
the parts chosen from them).

The model of a CAR-T trial, step by step (each step is a part, in its own module):

arrival (Poisson, ``accrual_per_month``) -> screening (``screening.duration_days``; fails
with ``screening.failure_prob``) -> eligible: enrolled into a free slot, else the waiting
list (``when_paused: wait``, at most ``max_wait_days``) or lost (``leave``)
[:mod:`.accrual`] -> phases in order (each skipped with probability ``1 - probability``,
each may end in failure with ``failure_prob``: never infused, the slot reopens)
[:mod:`.pathway`] -> the *gate* (before the first lymphodepletion phase by default): held
by sentinel spacing (``stagger_*``) and by the follow-up cap (``max_in_followup``, counted
from gate release to the end of the path) [:mod:`.gates`] -> remaining phases -> infusion
(day 0) -> DLT window (``dlt_window_days``); a drop-out leaves before the end of the window,
not evaluable, and the slot reopens.  DLTs: the k-th evaluable infusion has a DLT at dose d
iff ``u_dlt(k) < p_d`` [:mod:`.toxicity`].  When the design decides and on what data is the
decision policy's business [:mod:`.policies`]; :mod:`.trial` wires the parts on a clock
[:mod:`.clock`]; :mod:`.log` records the patient log.

Everything random comes from :mod:`escalation_sim.engines.calendar.draws` (counter-based
streams).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from ...designs.base import Design, Outcome
from ...designs.registry import is_time_to_event
from ...inputs.conduct import Conduct
from ...types import Decision, TrialState
from .clock import SimpyClock
from .gates import FixedReview, SentinelSpacing, SequentialSpacing, Spacing
from .policies import CohortPolicy, ScoreTimeToEventPolicy, TimeToEventPolicy
from .toxicity import GradedRule

INF = float("inf")
#: conduct options that need the policies of :mod:`.backfill`
CONDUCT_POLICY_OPTIONS = ("backfill", "shortfall", "review", "review_every_days",
                          "cohort_sizes", "min_followup_days")


def score_units(design: Design):
    """The design's integer units per worst grade when it consumes a graded toxicity score
    (``design.outcome`` is ``Outcome.SCORE``), else None."""
    if design.outcome is not Outcome.SCORE:
        return None
    return tuple(int(u) for u in design.score_units)


class Setup:
    """Everything shared by the trials of one simulation call (design, truth, conduct), and
    the parts they are built from: ``policy`` (a
    :class:`~escalation_sim.engines.calendar.policies.DecisionPolicy` class), ``clock`` (the
    clock class), ``review`` and the gate's settings."""

    def __init__(self, design: Design, p_true, conduct: Conduct, record: bool,
                 max_patients: int, clock=SimpyClock, model=None):
        self.design = design
        self.K = design.n_doses
        self.empty_state = TrialState.empty(self.K)      # immutable: shared by the trials
        self.p = [float(v) for v in p_true]
        #: the graded outcome model (None: binary truth, ``u < p_d``)
        self.model = model
        units = score_units(design)
        if units is not None and model is None:
            raise ValueError(f"design {getattr(design.inner, 'name', '?')} uses graded "
                             f"toxicity scores and needs a graded truth (truth.toxicities)")
        #: score designs: units per worst grade; ``max_units`` bounds one patient's units
        #: (None for binary designs, so that a binary setup keeps the fast path's allow-list)
        self.units = units
        self.max_units = None if units is None else max(units)
        if model is not None:
            if units is not None and len(units) <= model.max_grade:
                raise ValueError(f"the design's scores cover grades 0..{len(units) - 1} but "
                                 f"the truth has grade {model.max_grade}")
            self.graded: Optional[GradedRule] = GradedRule(model, conduct.dlt_window_days,
                                                           units)
        else:
            self.graded = None
        tte = is_time_to_event(design)
        self.policy = (ScoreTimeToEventPolicy if tte and units is not None else
                       TimeToEventPolicy if tte else CohortPolicy)
        self.clock = clock
        self.conduct = conduct
        self.shortfall = None             # conduct.shortfall / conduct.backfill parts
        self.backfill_rules = None
        if any(getattr(conduct, k, None) is not None for k in CONDUCT_POLICY_OPTIONS):
            from .backfill import conduct_parts
            conduct_parts(self)
        self.pathway = None               # None: the plain Pathway
        if getattr(conduct, "manufacturing_capacity", None) is not None:
            from .capacity import CapacityPathway
            self.pathway = CapacityPathway
        #: manufacture_before_slot with manufacturing_capacity: every eligible arrival is an
        #: event (its run queues for a slot on the day it is screened in)
        self.premade_capacity = False
        if getattr(conduct, "manufacture_before_slot", False):
            from .pathway import PremadePathway
            self.pathway = PremadePathway
            if conduct.manufacturing_capacity is not None:
                from .capacity import PremadeCapacityPathway
                self.pathway = PremadeCapacityPathway
                self.premade_capacity = True
        self.window = conduct.dlt_window_days
        self.unlimited = conduct.accrual_per_month is None
        self.leave = conduct.when_paused == "leave"
        self.max_wait = INF if conduct.max_wait_days is None else conduct.max_wait_days
        self.cap = self.policy.binding_cap(conduct.max_in_followup, design)
        self.stagger = conduct.stagger_days
        self.gated = self.stagger > 0 or self.cap is not None
        self.gate = conduct.gate_index if self.gated else len(conduct.phases)
        # sentinel spacing without a binding cap: once a group's sentinel is released, the
        # release day of the others is known at enrollment (no gate event needed)
        self.known_release = (self.gated and self.cap is None
                              and conduct.stagger_mode != "all")
        self.review = FixedReview(conduct.review_days)
        self.phase_names = [p.name for p in conduct.phases]
        self.manufacturing = [p.kind == "manufacturing" for p in conduct.phases]
        self.record = record
        self.max_patients = max_patients
        self._decisions: Dict[Any, Decision] = {}
        self._exact: Dict[TrialState, Decision] = {}
        self._mtds: Dict[Any, Optional[int]] = {}
        self._canonical = design.canonical

    def spacing(self) -> Optional[Spacing]:
        """A fresh spacing rule for one trial (None without ``stagger_days``)."""
        c = self.conduct
        if self.stagger <= 0:
            return None
        cls = SequentialSpacing if c.stagger_mode == "all" else SentinelSpacing
        return cls(self.stagger, c.stagger_scope == "every_cohort")

    def decide(self, state: TrialState) -> Decision:
        """Memoised ``design.decide`` for complete-data states, by the design's canonical key
        (states with equal keys get equal decisions; they repeat across trials)."""
        key = self._canonical(state)
        dec = self._decisions.get(key)
        if dec is None:
            dec = self._decisions[key] = self.design.decide(state)
        return dec

    def decide_exact(self, state: TrialState) -> Decision:
        """Memoised ``design.decide`` keyed by the state itself (no merging of states)."""
        dec = self._exact.get(state)
        if dec is None:
            dec = self._exact[state] = self.design.decide(state)
        return dec

    def select_mtd(self, state: TrialState) -> Optional[int]:
        key = self._canonical(state)
        try:
            return self._mtds[key]
        except KeyError:
            m = self._mtds[key] = self.design.select_mtd(state)
            return m
