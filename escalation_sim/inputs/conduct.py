"""The ``conduct:`` block of a scenario: how the trial runs in calendar time.

A :class:`Conduct` describes everything the discrete-event engine (:mod:`escalation_sim.engines.calendar`)
needs beyond the design and the true DLT rates: accrual, screening, the waiting list, the
patient's path from enrollment to infusion (a list of *phases*, given as data), the DLT
window, drop-outs and the gating rules (sentinel spacing, a cap on patients in follow-up,
safety-review delay).  Every time is in days unless the name says otherwise; probabilities
are in [0, 1].  The defaults sketch an autologous CAR-T trial:

    accrual ~1 patient / month, screening 14 days (sd 7) with 1/3 screen failures,
    leukapheresis 5 days (sd 3) -> manufacturing 21 days (sd 5, 5% failure / out of spec)
    -> bridging therapy for 30% of patients (14 days, sd 5, 2% lost)
    -> lymphodepletion with fludarabine + cyclophosphamide (days -5 to -3) -> 2 rest days
    -> infusion on day 0 -> 28-day DLT window, DLT onset uniform within it.

Example (YAML)::

    conduct:
      accrual_per_month: 1.5
      screening: {failure_prob: 0.3, duration_days: {mean: 14, sd: 5}}
      max_wait_days: 45
      phases:
        - {name: leukapheresis, kind: leukapheresis, duration_days: 3}
        - {name: manufacturing, kind: manufacturing, duration_days: {mean: 24, sd: 6},
           failure_prob: 0.08}
        - {name: lymphodepletion, kind: lymphodepletion, duration_days: 3}
        - {name: rest, duration_days: 2}
      dlt_window_days: 28
      stagger_days: 14            # sentinel: first patient of a new dose observed 14 days

``Conduct.zero()`` removes every delay (patients are available at once, all phases take 0
days); with it the discrete-event engine reproduces the time-free cohort engine trial by trial.
"""
from __future__ import annotations

import math
from typing import List, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, ValidationInfo, field_validator,
                      model_validator)

from .distributions import Distribution, DurationSpec, as_distribution, check_days
from .limits import check_word

DAYS_PER_MONTH = 365.25 / 12.0
#: fastest accrual a scenario may give (patients per month); faster is practically
#: unlimited (null), and every arrival is an event of the calendar engine
MAX_ACCRUAL_PER_MONTH = 1000.0
#: phases between enrollment and infusion
MAX_PHASES = 50

PhaseKind = Literal["leukapheresis", "manufacturing", "bridging", "lymphodepletion", "other"]


def _check_prob(v: float) -> float:
    if v is None or not (0.0 <= float(v) <= 1.0):
        raise ValueError(f"must be a probability in [0, 1] (got {v})")
    return float(v)


class _Timed:
    """A step that takes ``duration_days``: :attr:`distribution` reads it."""

    __slots__ = ()

    @property
    def distribution(self) -> Distribution:
        return as_distribution(self.duration_days)


class Phase(_Timed, BaseModel):
    """One step of the patient's path between enrollment and infusion."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(description="label used in the patient log (columns <name>_start_day, "
                                  "<name>_end_day)")
    duration_days: DurationSpec = Field(
        default=DurationSpec(mean=0.0), description="days: a number (fixed) or {mean, sd, dist}")
    failure_prob: float = Field(
        default=0.0, description="probability the patient leaves at the end of this phase and "
                                 "is never infused (manufacturing failure or out of "
                                 "specification, progression, infection ...); replaced")
    probability: float = Field(
        default=1.0, description="probability the phase happens at all (e.g. 0.3: bridging "
                                 "therapy for 30% of patients); skipped phases take 0 days")
    kind: PhaseKind = Field(
        default="other", description="leukapheresis | manufacturing | bridging | "
                                     "lymphodepletion | other; failures of manufacturing "
                                     "phases are counted as manufacturing failures and held "
                                     "patients wait before the first lymphodepletion phase")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return check_word(v)

    @field_validator("failure_prob", "probability")
    @classmethod
    def _prob_ok(cls, v: float) -> float:
        return _check_prob(v)



class Screening(_Timed, BaseModel):
    """Screening after arrival: takes some days, and some patients fail it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    failure_prob: float = Field(default=1.0 / 3.0,
                                description="probability a screened patient is not eligible")
    duration_days: DurationSpec = Field(
        default=DurationSpec(mean=14.0, sd=7.0),
        description="days from arrival to the end of screening (number or {mean, sd, dist})")

    @field_validator("failure_prob")
    @classmethod
    def _fail_ok(cls, v: float) -> float:
        return _check_prob(v)



class Backfill(BaseModel):
    """Backfill cohorts (Barnett et al. 2023; BF-BOIN, Zhao et al. 2024): while no
    escalation slot is free, an eligible patient who would otherwise wait or leave is treated
    at the highest dose open for backfill (see :mod:`escalation_sim.engines.calendar.backfill`
    for the opening rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    max_per_dose: int = Field(
        default=12, description="a dose closes for backfill once this many patients were "
                                "assigned to it (escalation and backfill, pending included)")
    max_total: int = Field(default=24, description="most backfill patients in a trial")
    doses: Literal["cleared"] = Field(
        default="cleared", description="cleared: doses below the current escalation dose with "
                                       "at least min_evaluable evaluable patients whose data "
                                       "are below the design's de-escalation boundary")
    min_evaluable: int = Field(
        default=3, description="evaluable patients (escalation and backfill) a dose needs "
                               "before it opens for backfill")

    @field_validator("max_per_dose", "max_total", "min_evaluable")
    @classmethod
    def _count_ok(cls, v: int, info: ValidationInfo) -> int:
        if not 1 <= v <= 1000:
            raise ValueError(f"must be between 1 and 1000 (got {v})")
        cap = info.data.get("max_per_dose")
        if info.field_name == "min_evaluable" and cap is not None and v > cap:
            raise ValueError(f"must be <= max_per_dose ({cap}), or no dose could ever open "
                             f"(got {v})")
        return v


class ReceivedFraction(BaseModel):
    """Fraction of the assigned dose a short product delivers, in (0, 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    mean: float = Field(description="mean fraction of the assigned dose received")
    dist: Literal["uniform", "beta", "fixed"] = Field(
        default="uniform", description="uniform on mean -/+ sd*sqrt(3); beta with this mean "
                                       "and sd; fixed (the mean)")
    sd: float = Field(default=0.0, description="standard deviation (0: always the mean)")

    @field_validator("mean")
    @classmethod
    def _mean_ok(cls, v: float) -> float:
        if not (math.isfinite(float(v)) and 0.0 < float(v) < 1.0):
            raise ValueError(f"must be a fraction in (0, 1) (got {v})")
        return float(v)

    @field_validator("sd")
    @classmethod
    def _sd_ok(cls, v: float, info: ValidationInfo) -> float:
        if not (math.isfinite(float(v)) and float(v) >= 0.0):
            raise ValueError(f"must be >= 0 (got {v})")
        s = float(v)
        m = info.data.get("mean")
        dist = info.data.get("dist", "uniform")
        if m is None:
            return s
        if dist == "uniform":
            lo, hi = m - s * math.sqrt(3.0), m + s * math.sqrt(3.0)
            if lo <= 0.0 or hi > 1.0:
                raise ValueError(f"a uniform fraction with mean {m:g} spans [{lo:.3g}, "
                                 f"{hi:.3g}], outside (0, 1] (got {s:g})")
        elif dist == "beta" and s > 0 and s * s >= m * (1.0 - m):
            raise ValueError(f"a beta fraction with mean {m:g} needs sd < "
                             f"{math.sqrt(m * (1 - m)):.3g} (got {s:g})")
        return s


class Shortfall(BaseModel):
    """Dose received below dose assigned (Devlin, Iasonos & O'Quigley 2021): with
    probability ``prob`` a product delivers only a fraction of the assigned cell dose and is
    infused anyway; the patient's true DLT probability (graded truth: its grades) is that
    of the amount received (see :mod:`escalation_sim.engines.calendar.shortfall`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    prob: float = Field(description="probability a product falls short of the assigned dose")
    received_fraction: ReceivedFraction = Field(
        description="fraction of the assigned amount a short product delivers")
    policy: Literal["assigned", "received", "exclude"] = Field(
        default="assigned", description="assigned: counted at the assigned level; received: "
                                        "counted at the highest level at or below the amount "
                                        "received; exclude: not evaluable, replaced (time-"
                                        "to-event designs: from the infusion on, when the "
                                        "amount is known)")
    dose_amounts: Optional[List[float]] = Field(
        default=None, description="dose amounts per level; filled from doses[].amount by a "
                                  "scenario (give it only when calling the engine directly)")

    @field_validator("prob")
    @classmethod
    def _prob_ok(cls, v: float) -> float:
        return _check_prob(v)

    @field_validator("dose_amounts")
    @classmethod
    def _amounts_ok(cls, v: Optional[List[float]]) -> Optional[List[float]]:
        if v is None:
            return None
        if not v or any(not (math.isfinite(float(a)) and float(a) > 0) for a in v):
            raise ValueError(f"must be positive amounts (got {v})")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"must increase with the dose level (got {v})")
        return [float(a) for a in v]


class AccrualStep(BaseModel):
    """One piece of a piecewise-constant accrual schedule (sites opening over time)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    until_day: Optional[float] = Field(
        default=None, description="this rate holds until this day (from the opening, day 0); "
                                  "the last piece has none (it holds from then on)")
    rate: float = Field(description="mean arrivals per month during the piece")


class Review(BaseModel):
    """The safety review committee between a cohort's data and the next dose decision."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    days: float = Field(default=0.0, description="days from the close of the cohort's last "
                                                 "DLT window to the review")
    before: Literal["every_decision", "escalation"] = Field(
        default="every_decision", description="every_decision: every decision waits for the "
                                              "review; escalation: only a move to a higher "
                                              "dose than the cohort's does (staying or "
                                              "de-escalating is immediate)")

    @field_validator("days")
    @classmethod
    def _days_ok(cls, v: float) -> float:
        if not math.isfinite(float(v)) or float(v) < 0:
            raise ValueError(f"must be >= 0 (got {v})")
        return check_days(v)


class ManufacturingCapacity(BaseModel):
    """Limited manufacturing: at most ``slots`` runs at once, a queue in enrollment order."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    slots: int = Field(description="manufacturing runs that can be under way at once")
    per_days: Optional[float] = Field(
        default=None, description="days a run holds its slot from its start (a booking: "
                                  "slots: 2, per_days: 30 = two runs started per 30 days); "
                                  "null: until the manufacturing phase ends")

    @field_validator("slots")
    @classmethod
    def _slots_ok(cls, v: int) -> int:
        if not 1 <= v <= 1000:
            raise ValueError(f"must be between 1 and 1000; with no slot nobody could ever be "
                             f"treated (got {v})")
        return v

    @field_validator("per_days")
    @classmethod
    def _per_ok(cls, v: Optional[float]) -> Optional[float]:
        if v is None:
            return None
        if not math.isfinite(float(v)) or float(v) <= 0:
            raise ValueError(f"must be > 0 days, or null (got {v})")
        return check_days(v)


class Costs(BaseModel):
    """Costs of a trial, in any one currency (``conduct.costs``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    screening: float = Field(default=0.0, description="per patient screened")
    manufacturing: float = Field(default=0.0, description="per manufacturing run started "
                                                          "(phases of kind manufacturing)")
    infusion: float = Field(default=0.0, description="per patient infused")
    per_month: float = Field(default=0.0, description="running costs per month, from the "
                                                      "trial's opening (day 0) to its close")

    @field_validator("screening", "manufacturing", "infusion", "per_month")
    @classmethod
    def _cost_ok(cls, v: float) -> float:
        if not (math.isfinite(float(v)) and float(v) >= 0):
            raise ValueError(f"must be a finite amount >= 0 (got {v})")
        return float(v)


def _check_schedule(steps: List[AccrualStep]) -> List[AccrualStep]:
    """A piecewise accrual schedule: rates in (0, MAX]; ``until_day`` increasing in time,
    given on every piece but the last."""
    if not steps:
        raise ValueError("a schedule needs at least one {rate} piece (got [])")
    prev = 0.0
    for i, st in enumerate(steps):
        r = float(st.rate)
        if not math.isfinite(r) or r <= 0 or r > MAX_ACCRUAL_PER_MONTH:
            raise ValueError(f"[{i}].rate: must be > 0 and <= {MAX_ACCRUAL_PER_MONTH:g} "
                             f"patients per month (got {st.rate})")
        last = i == len(steps) - 1
        if last and st.until_day is not None:
            raise ValueError(f"[{i}].until_day: the last piece holds from then on; leave "
                             f"until_day out (got {st.until_day:g})")
        if not last:
            u = st.until_day
            if u is None:
                raise ValueError(f"[{i}].until_day: required on every piece but the last "
                                 f"(got none)")
            if not math.isfinite(float(u)) or float(u) <= prev:
                raise ValueError(f"[{i}].until_day: the schedule must increase in time: "
                                 f"{u:g} is not after day {prev:g} (got {u:g})")
            check_days(u)
            prev = float(u)
    return steps


def default_phases() -> List[Phase]:
    return [
        Phase(name="leukapheresis", kind="leukapheresis",
              duration_days=DurationSpec(mean=5.0, sd=3.0)),
        Phase(name="manufacturing", kind="manufacturing",
              duration_days=DurationSpec(mean=21.0, sd=5.0), failure_prob=0.05),
        Phase(name="bridging", kind="bridging", probability=0.3,
              duration_days=DurationSpec(mean=14.0, sd=5.0), failure_prob=0.02),
        Phase(name="lymphodepletion", kind="lymphodepletion",
              duration_days=DurationSpec(mean=3.0)),
        Phase(name="rest", kind="other", duration_days=DurationSpec(mean=2.0)),
    ]


class Conduct(BaseModel):
    """How the trial runs in calendar time (the scenario's ``conduct:`` block)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    accrual_per_month: Union[float, List[AccrualStep], None] = Field(
        default=1.0, description="mean arrivals per month (Poisson process; 1 month = "
                                 "30.4375 days); null = unlimited: a screened patient is ready "
                                 "the moment a slot opens; or a piecewise schedule such as "
                                 "[{until_day: 180, rate: 0.5}, {rate: 1.5}] (a Poisson "
                                 "process whose rate steps up as sites open)")
    screening: Screening = Field(default_factory=Screening)
    max_wait_days: Optional[float] = Field(
        default=60.0, description="days an eligible patient waits for a slot before being "
                                  "lost; null = waits as long as needed")
    when_paused: Literal["wait", "leave"] = Field(
        default="wait", description="what an eligible patient does when no slot is open: "
                                    "join the waiting list (wait) or go elsewhere (leave)")
    phases: List[Phase] = Field(default_factory=default_phases, max_length=MAX_PHASES,
                                description="the steps from enrollment to infusion, in order")
    gate_before_phase: Optional[str] = Field(
        default=None, description="name of the phase before which patients held by sentinel "
                                  "spacing or the follow-up cap wait; default: the first "
                                  "lymphodepletion phase, else just before infusion")
    dlt_window_days: float = Field(default=28.0, description="DLT observation window after "
                                                             "infusion (day 0), days")
    dlt_onset: Union[Literal["uniform"], DurationSpec] = Field(
        default="uniform", description="day of DLT onset after infusion, conditioned to fall "
                                       "inside the window: 'uniform' or {mean, sd, dist}")
    dropout_prob: float = Field(
        default=0.0, description="probability an infused patient leaves before the end of the "
                                 "window without a DLT (not evaluable, replaced); the leaving "
                                 "day is uniform within the window")
    stagger_days: float = Field(
        default=0.0, description="sentinel / staggered dosing: minimum days between the "
                                 "first infusion of a group and the next ones (0 = off)")
    stagger_mode: Literal["sentinel", "all"] = Field(
        default="sentinel", description="sentinel: only the first patient of the group is "
                                        "observed alone; all: consecutive infusions in the group "
                                        "are at least stagger_days apart")
    stagger_scope: Literal["new_dose", "every_cohort"] = Field(
        default="new_dose", description="new_dose: the group is every patient at a dose, so "
                                        "only a dose's first patient is a sentinel; "
                                        "every_cohort: each cohort has its own sentinel")
    max_in_followup: Optional[int] = Field(
        default=None, description="most patients between the start of lymphodepletion (the "
                                  "gate) and the end of their DLT window at once; null = no cap")
    review_days: float = Field(
        default=0.0, description="days between the close of a cohort's last DLT window and "
                                 "its dose decision (safety review committee); classic "
                                 "designs only (time-to-event designs decide continuously)")

    backfill: Optional[Backfill] = Field(
        default=None, description="backfill cohorts at cleared lower doses (null: none); "
                                  "designs that decide on any per-dose counts, classic or "
                                  "time-to-event (these backfill while they suspend "
                                  "accrual), on DLTs (not toxicity scores)")
    shortfall: Optional[Shortfall] = Field(
        default=None, description="products delivering less than the assigned dose "
                                  "(null: every product delivers the assigned dose)")
    review: Optional[Review] = Field(
        default=None, description="safety review committee {days, before: every_decision | "
                                  "escalation}; classic designs (replaces review_days)")
    review_every_days: Optional[float] = Field(
        default=None, description="the committee meets on a calendar, every this many days "
                                  "from the opening (day 0): a review happens at the first "
                                  "meeting at or after the review is due; classic designs")
    cohort_sizes: Optional[List[int]] = Field(
        default=None, max_length=1000,
        description="sizes of the successive escalation cohorts (the last one repeats), e.g. "
                    "[3, 3, 2, 2]; overrides the design's cohort size; designs that decide on "
                    "any per-dose counts only")
    min_followup_days: Optional[float] = Field(
        default=None, description="time-to-event designs: escalation to a dose above every "
                                  "dose tried needs at least one patient at the current dose "
                                  "followed this many days (a DLT counts as followed); until "
                                  "then new patients stay at the current dose")
    screen_while_paused: bool = Field(
        default=True, description="false: while accrual is paused (no slot for a new patient) "
                                  "the site screens nobody: a patient arriving then goes "
                                  "elsewhere unscreened (classic designs; needs a finite "
                                  "accrual rate)")
    manufacturing_capacity: Optional[ManufacturingCapacity] = Field(
        default=None, description="limited manufacturing slots {slots, per_days}: patients "
                                  "queue before the first manufacturing phase (null: no "
                                  "limit)")
    manufacture_before_slot: bool = Field(
        default=False, description="true: leukapheresis and manufacturing (the phases up to "
                                   "the last of kind manufacturing) start when the patient "
                                   "is screened in, slot or not; a patient on the waiting "
                                   "list enters the trial with the product made or under "
                                   "way (needs when_paused: wait and an accrual rate; with "
                                   "manufacturing_capacity, each run books a slot for "
                                   "per_days from its start, queueing from screening)")
    costs: Optional[Costs] = Field(
        default=None, description="costs per patient screened, manufacturing run, infusion "
                                  "and month: cost outputs per trial (null: none)")

    # -- validators ---------------------------------------------------------------------
    @field_validator("accrual_per_month", mode="before")
    @classmethod
    def _accrual_kind(cls, v):
        if v is None or isinstance(v, (list, int, float)) and not isinstance(v, bool):
            return v
        raise ValueError("must be a number of patients per month, null (unlimited) or a "
                         "schedule such as [{until_day: 180, rate: 0.5}, {rate: 1.5}]")

    @field_validator("accrual_per_month")
    @classmethod
    def _accrual_ok(cls, v):
        if v is None:
            return None
        if isinstance(v, list):
            return _check_schedule(v)
        if not math.isfinite(float(v)) or float(v) <= 0:
            raise ValueError(f"must be > 0 patients per month, or null for unlimited (got {v})")
        if float(v) > MAX_ACCRUAL_PER_MONTH:
            raise ValueError(f"must be <= {MAX_ACCRUAL_PER_MONTH:g} patients per month; use "
                             f"null for unlimited accrual (got {v:g})")
        return float(v)

    @field_validator("max_wait_days")
    @classmethod
    def _wait_ok(cls, v: Optional[float]) -> Optional[float]:
        if v is None:
            return None
        if math.isnan(float(v)) or float(v) < 0:
            raise ValueError(f"must be >= 0 (got {v})")
        return float(v)

    @field_validator("dlt_window_days")
    @classmethod
    def _window_ok(cls, v: float) -> float:
        if not math.isfinite(float(v)) or float(v) <= 0:
            raise ValueError(f"must be > 0 (got {v})")
        return check_days(v)

    @field_validator("stagger_days", "review_days")
    @classmethod
    def _days_ok(cls, v: float) -> float:
        if not math.isfinite(float(v)) or float(v) < 0:
            raise ValueError(f"must be >= 0 (got {v})")
        return check_days(v)

    @field_validator("review_every_days", "min_followup_days")
    @classmethod
    def _cadence_ok(cls, v: Optional[float], info: ValidationInfo) -> Optional[float]:
        if v is None:
            return None
        if not math.isfinite(float(v)) or float(v) <= 0:
            raise ValueError(f"must be > 0 days, or null for none (got {v})")
        w = info.data.get("dlt_window_days")
        if info.field_name == "min_followup_days" and w is not None and float(v) > w:
            raise ValueError(f"must be <= dlt_window_days ({w:g}), since a patient's "
                             f"follow-up ends with the window (got {v:g})")
        return check_days(v)

    @field_validator("screen_while_paused")
    @classmethod
    def _screen_ok(cls, v: bool, info: ValidationInfo) -> bool:
        if not v and "accrual_per_month" in info.data and info.data["accrual_per_month"] is None:
            raise ValueError("with unlimited accrual (accrual_per_month: null) patients are "
                             "only screened when a slot opens, so false has no effect; remove "
                             "it or give an accrual rate (got false)")
        return v

    @field_validator("manufacturing_capacity")
    @classmethod
    def _capacity_ok(cls, v, info: ValidationInfo):
        phases = info.data.get("phases")
        if v is not None and phases is not None and not any(
                p.kind == "manufacturing" for p in phases):
            raise ValueError("needs a phase of kind manufacturing (got none)")
        return v

    @field_validator("review")
    @classmethod
    def _one_review(cls, v, info: ValidationInfo):
        rd = info.data.get("review_days")
        if v is not None and rd:
            raise ValueError(f"give the review's days once: in review.days, and leave "
                             f"review_days out (got review_days {rd:g} as well)")
        return v

    @field_validator("cohort_sizes")
    @classmethod
    def _sizes_ok(cls, v: Optional[List[int]]) -> Optional[List[int]]:
        if v is None:
            return None
        if not v:
            raise ValueError("must list at least one cohort size, or be null (got [])")
        bad = [x for x in v if not 1 <= x <= 12]
        if bad:
            raise ValueError(f"each size must be between 1 and 12 (got {bad[0]})")
        return v

    @field_validator("dropout_prob")
    @classmethod
    def _dropout_ok(cls, v: float) -> float:
        v = _check_prob(v)
        if v >= 1.0:
            raise ValueError(f"must be < 1, or no patient would ever be evaluable (got {v})")
        return v

    @field_validator("max_in_followup")
    @classmethod
    def _cap_ok(cls, v: Optional[int]) -> Optional[int]:
        if v is not None and v < 1:
            raise ValueError(f"must be >= 1, or null for no cap (got {v})")
        return v

    @model_validator(mode="after")
    def _phases_ok(self) -> "Conduct":
        names = [p.name for p in self.phases]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"phases: duplicate phase name(s) {', '.join(dup)}")
        if self.gate_before_phase is not None and self.gate_before_phase not in names:
            known = ", ".join(names) if names else "none"
            raise ValueError(f"gate_before_phase: no phase named {self.gate_before_phase!r} "
                             f"(phases: {known})")
        if any(p.failure_prob >= 1.0 and p.probability >= 1.0 for p in self.phases):
            bad = next(i for i, p in enumerate(self.phases)
                       if p.failure_prob >= 1.0 and p.probability >= 1.0)
            raise ValueError(f"phases[{bad}].failure_prob: must be < 1 for a phase every "
                             f"patient goes through (got {self.phases[bad].failure_prob})")
        if self.screening.failure_prob >= 1.0:
            raise ValueError(f"screening.failure_prob: must be < 1, or nobody is ever eligible "
                             f"(got {self.screening.failure_prob})")
        return self

    @field_validator("manufacture_before_slot")
    @classmethod
    def _premade_ok(cls, v: bool, info: ValidationInfo) -> bool:
        data = info.data
        phases = data.get("phases")
        if not v or phases is None:
            return v
        kinds = [p.kind for p in phases]
        names = [p.name for p in phases]
        if "manufacturing" not in kinds:
            raise ValueError("needs a phase of kind manufacturing (got none)")
        last = max(i for i, k in enumerate(kinds) if k == "manufacturing")
        gate = data.get("gate_before_phase")
        if gate is not None and gate in names and names.index(gate) <= last:
            raise ValueError(f"the hold point (gate_before_phase {gate!r}) must come after "
                             f"the last manufacturing phase {names[last]!r} (got true)")
        if data.get("when_paused") == "leave":
            raise ValueError("true needs when_paused: wait (a patient who leaves when no slot "
                             "is free never waits with a product) (got true with when_paused: "
                             "leave)")
        if "accrual_per_month" in data and data["accrual_per_month"] is None:
            raise ValueError("true needs an accrual rate (with accrual_per_month: null nobody "
                             "waits for a slot) (got true with accrual_per_month: null)")
        cap = data.get("manufacturing_capacity")
        if cap is not None and cap.per_days is None:
            raise ValueError("true with manufacturing_capacity needs "
                             "manufacturing_capacity.per_days: a run started for a patient "
                             "on the waiting list has no drawn length until the patient is "
                             "enrolled (and none at all if it never is), so each run books "
                             "its slot for per_days days (got true with per_days: null)")
        return v

    @property
    def premade_phases(self) -> int:
        """With ``manufacture_before_slot``: the number of phases made before a slot (up to
        the last manufacturing phase); 0 otherwise."""
        if not self.manufacture_before_slot:
            return 0
        return 1 + max(i for i, p in enumerate(self.phases) if p.kind == "manufacturing")

    # -- helpers ------------------------------------------------------------------------
    @classmethod
    def zero(cls, dlt_window_days: float = 28.0) -> "Conduct":
        """Zero-length logistics: unlimited accrual, no screening failures or delays, no
        phases, no drop-outs, no gating.  Only the DLT window itself takes time."""
        return cls(accrual_per_month=None,
                   screening=Screening(failure_prob=0.0, duration_days=DurationSpec(mean=0.0)),
                   max_wait_days=None, when_paused="wait", phases=[],
                   dlt_window_days=dlt_window_days, dropout_prob=0.0, stagger_days=0.0,
                   max_in_followup=None, review_days=0.0)

    @property
    def accrual_per_day(self) -> Optional[float]:
        """Arrivals per day (None: unlimited, or a piecewise schedule: see
        :attr:`accrual_schedule`)."""
        a = self.accrual_per_month
        return None if a is None or isinstance(a, list) else a / DAYS_PER_MONTH

    @property
    def accrual_schedule(self) -> Optional[List[tuple]]:
        """A piecewise schedule as ``[(start_day, rate_per_day), ...]`` (None otherwise)."""
        a = self.accrual_per_month
        if not isinstance(a, list):
            return None
        out, start = [], 0.0
        for step in a:
            out.append((start, step.rate / DAYS_PER_MONTH))
            start = step.until_day if step.until_day is not None else start
        return out

    @property
    def gate_index(self) -> int:
        """Index of the phase before which held patients wait (len(phases) = at infusion)."""
        names = [p.name for p in self.phases]
        if self.gate_before_phase is not None:
            return names.index(self.gate_before_phase)
        for i, p in enumerate(self.phases):
            if p.kind == "lymphodepletion":
                return i
        return len(self.phases)

    @property
    def onset_distribution(self) -> Optional[Distribution]:
        """``None`` for uniform onset within the window."""
        return None if self.dlt_onset == "uniform" else as_distribution(self.dlt_onset)

    @property
    def gated(self) -> bool:
        """True when patients may be held before infusion (spacing or follow-up cap)."""
        return self.stagger_days > 0 or self.max_in_followup is not None

    def mean_enrollment_to_infusion_days(self) -> float:
        """Expected days from enrollment to infusion without waiting, for patients who are
        infused (phases weighted by their probability)."""
        return sum(p.probability * p.distribution.mean for p in self.phases)
