"""Pre-drawn random numbers of the discrete-event engine.

Every random quantity of a simulated trial is a pure function of ``(seed, stream, trial,
draw)`` (:mod:`escalation_sim.randomness`).  The streams and their draw indices:

========== =============================================== ==================================
stream     draw index                                      use
========== =============================================== ==================================
accrual    i (i-th arrival of the trial)                   inter-arrival time, Exp(rate)
screening  2 i, 2 i + 1                                    screen failure; screening days
phase      j * 3P + 3 p + (0, 1, 2), j = enrollment order  phase p happens; its days; failure
dropout    2 j, 2 j + 1                                    drops out; day (uniform in window)
dlt        k = order of infusion among evaluable patients  DLT iff u < p_dose (shared with
                                                           the cohort engine)
onset      k                                               DLT onset day within the window
========== =============================================== ==================================

The ``dlt`` and ``onset`` streams are indexed by the evaluable-infusion order only, so
changing the logistics never changes which patients (k = 0, 1, 2, ...) have a DLT or when
in their window it starts.

With a graded truth (an :class:`~escalation_sim.inputs.truth.OutcomeModel` given to the
engine) patient k's outcomes are the model's patient k
(:meth:`~escalation_sim.inputs.truth.OutcomeModel.grades_at_every_dose`: the ``dlt`` stream
is the first type's latent, further types and onsets have their own streams, all indexed by
k), drawn for every dose because the dose is known only at treatment; the ``onset`` stream
above still gives the day of an event whose type has no onset law.

Numbers are drawn in vectorised blocks for a whole chunk of trials; a trial that needs more
(many replacements, a long waiting list) extends its own block on demand with the same
counter-based streams, so results never depend on block sizes.
"""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np

from ...inputs.conduct import Conduct
from ...randomness import stream_key, uniforms

STREAMS = ("accrual", "screening", "phase", "dropout", "dlt", "onset")

# Bounds on the work of one simulated trial.  Validation bounds every duration and rate in
# the conduct block, but their combination (a 99.99% failure rate, a trial recruiting one
# patient a century) can still make a trial practically endless; such a run stops with
# SimulationLimitError instead of growing without end.
#: arrivals (screened candidates) one trial may draw
MAX_ARRIVALS_PER_TRIAL = 1_000_000
#: a graded truth's DLT flags of patient k at every dose fit one integer up to this many doses
MASK_DOSES = 62
#: simulated days a trial may last (1000 years); the enrolled patients of one trial are
#: bounded by the engine's own guard (50 x max_n + 1000)
HORIZON_DAYS = 365_250.0


class SimulationLimitError(ValueError):
    """A simulated trial went past the per-trial work bounds."""

    field = "conduct"  # the scenario block to fix (the command line names it)


_CHECK = ("check accrual_per_month, screening.failure_prob and the phases' durations and "
          "failure_prob in the conduct block")


def past_horizon(trial: int) -> SimulationLimitError:
    return SimulationLimitError(
        f"calendar simulation: trial {trial} ran past {HORIZON_DAYS / 365.25:,.0f} years of "
        f"simulated time; {_CHECK}")


def too_many_patients(trial: int, limit: int) -> SimulationLimitError:
    return SimulationLimitError(
        f"calendar simulation: trial {trial} enrolled more than {limit:,} patients "
        f"(failures and drop-outs are replaced); {_CHECK}")


def merge_ready(d: "TrialDraws", rest: list, start: int) -> list:
    """The accrual's ready queue: ``rest`` (sorted (day screening ends, arrival) pairs) with
    the eligible arrivals of ``d`` from number ``start`` on merged in."""
    at, sf, sd = d.arrival_time, d.screen_failed, d.screen_days
    rest = rest + [(at[i] + sd[i], i) for i in range(start, len(at)) if not sf[i]]
    rest.sort()
    return rest


def patient_draws(d: "TrialDraws", j: int, limit: int) -> None:
    """Make sure patient ``j``'s draws exist in ``d`` (drawn further as needed), after
    the guard: more than ``limit`` patients is an error."""
    if j >= limit:
        raise too_many_patients(d.trial, limit)
    while j >= len(d.fail_at):
        d.more_patients()


class DrawPlan:
    """Keys and distributions shared by all trials of one simulation call."""

    def __init__(self, conduct: Conduct, seed: int, model=None, all_onsets: bool = True):
        self.conduct = conduct
        self.seed = int(seed)
        self.model = model                      # graded OutcomeModel, or None (binary)
        #: graded truth: draw every event's onset (score designs and the patient log need
        #: them), or only those of events meeting the DLT rule (enough for DLT flags)
        self.all_onsets = all_onsets
        self.keys = {s: stream_key(int(seed), s) for s in STREAMS}
        self.rate = conduct.accrual_per_day                     # None = unlimited
        self.schedule = None
        sched = conduct.accrual_schedule                        # piecewise: unit-rate gaps
        if sched is not None:                                   # mapped to calendar days
            self.rate = 1.0
            starts = np.array([a for a, _ in sched])
            rates = np.array([r for _, r in sched])
            cum = np.concatenate([[0.0], np.cumsum(np.diff(starts) * rates[:-1])])
            self.schedule = (starts, rates, cum)
        self.screen_fail = conduct.screening.failure_prob
        self.screen_dist = conduct.screening.distribution
        self.phases = list(conduct.phases)
        self.P = len(self.phases)
        self.phase_dists = [p.distribution for p in self.phases]
        self.phase_prob = np.array([p.probability for p in self.phases], dtype=float)
        self.phase_fail = np.array([p.failure_prob for p in self.phases], dtype=float)
        self.gate = conduct.gate_index if conduct.gated else self.P
        self.window = conduct.dlt_window_days
        self.onset_dist = conduct.onset_distribution
        self.dropout = conduct.dropout_prob

    def times(self, unit: np.ndarray) -> np.ndarray:
        """Arrival days from cumulative unit-rate times (the inverse of the cumulative
        rate); the times themselves without a schedule."""
        if self.schedule is None:
            return unit
        starts, rates, cum = self.schedule
        i = np.searchsorted(cum, unit, side="right") - 1
        return starts[i] + (unit - cum[i]) / rates[i]

    def unit(self, day: float) -> float:
        """The cumulative rate at ``day`` (inverse of :meth:`times`)."""
        starts, rates, cum = self.schedule
        i = int(np.searchsorted(starts, day, side="right")) - 1
        return float(cum[i] + (day - starts[i]) * rates[i])

    # -- vectorised blocks -------------------------------------------------------------
    def arrivals(self, trials: np.ndarray, start: int, size: int):
        """(inter-arrival days, screen-failed flags, screening days), shape (m, size)."""
        t = trials[:, None]
        i = np.arange(start, start + size, dtype=np.uint64)[None, :]
        if self.rate is not None:
            gaps = -np.log(uniforms(self.keys["accrual"], t, i)) / self.rate
        else:
            gaps = np.zeros((trials.size, size))
        if self.screen_fail > 0:
            failed = uniforms(self.keys["screening"], t, 2 * i) < self.screen_fail
        else:
            failed = np.zeros((trials.size, size), dtype=bool)
        if self.screen_dist.is_fixed:
            sdays = np.full((trials.size, size), self.screen_dist.mean)
        else:
            sdays = self.screen_dist.sample_from_uniforms(
                uniforms(self.keys["screening"], t, 2 * i + np.uint64(1)))
        return gaps, failed, sdays

    def patients(self, trials: np.ndarray, start: int, size: int):
        """Per enrolled patient: phase days (m, size, P) (0 when skipped), whether each phase
        happens, index of the phase at whose end the patient fails (-1 none), drop-out flag
        and day, and the sums: days before the gate, days from the gate to infusion, days
        from enrollment to the end of the failing phase (-1 none)."""
        m, P = trials.size, self.P
        t = trials[:, None, None]
        if P:
            base = (np.arange(start, start + size, dtype=np.uint64)[:, None] * np.uint64(3 * P)
                    + np.uint64(3) * np.arange(P, dtype=np.uint64)[None, :])[None, :, :]
            key = self.keys["phase"]
            days = np.empty((m, size, P))
            for p, dist in enumerate(self.phase_dists):
                if dist.is_fixed:
                    days[:, :, p] = dist.mean
                else:
                    days[:, :, p] = dist.sample_from_uniforms(
                        uniforms(key, t[:, :, 0], base[:, :, p] + np.uint64(1)))
            # only the phases that can be skipped / can fail need their uniforms
            happens = np.ones((m, size, P), dtype=bool)
            for p in np.flatnonzero(self.phase_prob < 1):
                happens[:, :, p] = uniforms(key, t[:, :, 0], base[:, :, p]) < self.phase_prob[p]
            days = np.where(happens, days, 0.0)
            fail_at = np.full((m, size), -1, dtype=np.int64)
            for p in np.flatnonzero(self.phase_fail > 0)[::-1]:   # the first failure wins
                fails = happens[:, :, p] & (uniforms(key, t[:, :, 0], base[:, :, p] + np.uint64(2))
                                            < self.phase_fail[p])
                fail_at[fails] = p
        else:
            days = np.zeros((m, size, 0))
            happens = np.zeros((m, size, 0), dtype=bool)
            fail_at = np.full((m, size), -1)
        j = np.arange(start, start + size, dtype=np.uint64)[None, :]
        if self.dropout > 0:
            drop = uniforms(self.keys["dropout"], trials[:, None], 2 * j) < self.dropout
            drop_day = uniforms(self.keys["dropout"], trials[:, None], 2 * j + np.uint64(1)) \
                * self.window
        else:
            drop = np.zeros((m, size), dtype=bool)
            drop_day = np.zeros((m, size))
        cum = np.concatenate([np.zeros((m, size, 1)), np.cumsum(days, axis=2)], axis=2)
        pre = cum[:, :, self.gate]
        post = cum[:, :, P] - pre
        if P:
            fail_days = np.where(fail_at >= 0,
                                 np.take_along_axis(cum, np.maximum(fail_at, 0)[:, :, None] + 1,
                                                    axis=2)[:, :, 0], -1.0)
        else:
            fail_days = np.full((m, size), -1.0)
        return days, happens, fail_at, drop, drop_day, pre, post, fail_days

    def evaluable(self, trials: np.ndarray, start: int, size: int):
        """Per evaluable infused patient k: the DLT uniform and the onset day if DLT (binary
        truth), or ``(None, None, graded_block(...))`` with a graded model."""
        k = np.arange(start, start + size, dtype=np.uint64)[None, :]
        t = trials[:, None]
        graded = self.model is not None
        # a graded truth draws the dlt stream itself (its first type's latent), and needs
        # the conduct's onset only for types without an onset law
        u = None if graded else uniforms(self.keys["dlt"], t, k)
        onset = None
        if not graded or any(typ.onset is None for typ in self.model.types):
            v = uniforms(self.keys["onset"], t, k)
            if self.onset_dist is None:
                onset = v * self.window
            else:
                onset = self.onset_dist.sample_within(v, self.window)
        if not graded:
            return u, onset, None
        return None, None, self.graded_block(trials, k, onset)

    def graded_block(self, trials: np.ndarray, k: np.ndarray, onset: np.ndarray):
        """A graded truth's patients k of ``trials`` at every dose (see
        :mod:`.toxicity`): grades (m, size, K, J), each type's onset day (m, size, J; a type
        without an onset law starts on the conduct's onset day ``onset``; NaN = no event),
        and per dose the day the DLT is known (NaN: no DLT) and ``2 * worst grade in the
        window + late`` (both (m, size, K); the latter None without ``all_onsets``), and the
        DLT flags of every dose as bits of one integer (m, size) (None above MASK_DOSES)."""
        m, size = trials.size, k.shape[-1]
        tt, kk = np.broadcast_arrays(trials[:, None], k)
        grade, days = self.model.grades_at_every_dose(self.seed, tt, kk,
                                                      rule_onsets_only=not self.all_onsets)
        J, _, K = grade.shape
        grade = grade.reshape(J, m, size, K).transpose(1, 2, 3, 0)      # (m, size, K, J)
        days = days.reshape(J, m, size).transpose(1, 2, 0)               # (m, size, J)
        for j, typ in enumerate(self.model.types):
            if typ.onset is None:
                days[:, :, j] = np.where(grade[:, :, :, j].max(axis=2) > 0, onset, np.nan)
        W = self.window
        inside = (days <= W)[:, :, None, :]                             # NaN: False
        dlt_day = np.full((m, size, K), np.inf)
        late = np.zeros((m, size, K), dtype=bool)
        for j, mg in self.model.rule:
            qual = grade[:, :, :, j] >= mg
            hit = qual & inside[:, :, :, j]
            dlt_day = np.where(hit, np.minimum(dlt_day, days[:, :, None, j]), dlt_day)
            late |= qual & ~inside[:, :, :, j]
        has = np.isfinite(dlt_day)
        late &= ~has
        dlt_day[~has] = np.nan
        if self.all_onsets:
            worst = np.where(inside, grade, 0).max(axis=3).astype(np.int64)
            worst_late = 2 * worst + late
        else:
            worst_late = None
        if K <= MASK_DOSES:       # bit d set: a DLT at dose d
            mask = (has.astype(np.int64) << np.arange(K, dtype=np.int64)).sum(axis=2)
        else:
            mask = None
        return grade, days, dlt_day, worst_late, mask


class ChunkDraws:
    """Blocks for a chunk of trials; ``trial(r)`` gives the r-th trial's :class:`TrialDraws`.

    Each block is turned into Python lists once (one ``tolist`` per block, not per trial)."""

    def __init__(self, plan: DrawPlan, trials: np.ndarray, n_arrivals: int, n_patients: int,
                 n_evaluable: int):
        self.plan = plan
        self.trials = np.asarray(trials, dtype=np.uint64)
        self.na, self.np_, self.ne = n_arrivals, n_patients, n_evaluable
        gaps, failed, sdays = plan.arrivals(self.trials, 0, n_arrivals)
        days, happens, *pat = plan.patients(self.trials, 0, n_patients)
        u, onset, graded = plan.evaluable(self.trials, 0, n_evaluable)
        self.days, self.happens = days, happens
        none = [[] for _ in range(self.trials.size)]
        self.lists = [plan.times(np.cumsum(gaps, axis=1)).tolist(), failed.tolist(), sdays.tolist()] + \
            [a.tolist() for a in pat] + [none if u is None else u.tolist(),
                                         none if onset is None else onset.tolist()]
        # graded truth: kept as arrays (a trial reads a few entries with ``.item``; turning
        # every dose's entries into lists would cost more than the trial itself), except the
        # DLT flags of every dose as one integer per patient
        self.graded = graded
        self.mask = None if graded is None or graded[4] is None else graded[4].tolist()

    def trial(self, r: int) -> "TrialDraws":
        """The r-th trial's numbers (fresh lists: a trial extends its own)."""
        (at, failed, sdays, fail_at, drop, drop_day, pre, post, fail_days, u,
         onset) = [c[r][:] for c in self.lists]
        td = TrialDraws(self.plan, int(self.trials[r]), at, failed, sdays, self.days[r],
                        self.happens[r], fail_at, drop, drop_day, pre, post, fail_days, u,
                        onset)
        if self.graded is not None:
            td.grades, td.type_onset, td.dlt_known, td.worst_late = [
                None if a is None else a[r] for a in self.graded[:4]]
            td.dlt_mask = None if self.mask is None else self.mask[r][:]
        return td


class TrialDraws:
    """One trial's numbers as Python lists (fast scalar access), extended on demand.

    ``phase_days`` and ``phase_happens`` (patients x phases) are read only by the patient
    log, so they stay numpy arrays (rows: ``.tolist()`` when needed)."""

    __slots__ = ("plan", "trial", "arrival_time", "screen_failed", "screen_days",
                 "phase_days", "phase_happens", "fail_at", "drop", "drop_day", "pre_days",
                 "post_days", "fail_days", "dlt_u", "onset_day", "grades", "type_onset",
                 "dlt_known", "worst_late", "dlt_mask")

    def __init__(self, plan: DrawPlan, trial: int, arrival_time: List[float],
                 failed: List[bool], sdays: List[float], days: np.ndarray,
                 happens: np.ndarray, fail_at: List[int], drop: List[bool],
                 drop_day: List[float], pre: List[float], post: List[float],
                 fail_days: List[float], u: List[float], onset: List[float]):
        self.plan = plan
        self.trial = trial
        self.arrival_time = arrival_time          # cumulative: days of arrival
        self.screen_failed = failed
        self.screen_days = sdays
        self.phase_days = days
        self.phase_happens = happens
        self.fail_at = fail_at
        self.drop = drop
        self.drop_day = drop_day
        self.pre_days = pre
        self.post_days = post
        self.fail_days = fail_days
        self.dlt_u = u
        self.onset_day = onset
        #: graded truth only (:meth:`DrawPlan.graded_block`, numpy arrays indexed by k
        #: first): per k, per dose, the grade of each type; per k each type's onset day; per
        #: k, per dose, the day the DLT is known (NaN: none) and 2 * worst grade in the
        #: window + late
        self.grades: Optional[np.ndarray] = None
        self.type_onset: Optional[np.ndarray] = None
        self.dlt_known: Optional[np.ndarray] = None
        self.worst_late: Optional[np.ndarray] = None
        #: per k, bit d set iff a DLT at dose d (up to MASK_DOSES doses, else None)
        self.dlt_mask: Optional[List[int]] = None

    # -- on-demand extension (same streams, next draw indices) -------------------------
    def more_arrivals(self) -> None:
        n = len(self.arrival_time)
        if n >= MAX_ARRIVALS_PER_TRIAL:
            raise SimulationLimitError(
                f"calendar simulation: trial {self.trial} needed more than "
                f"{MAX_ARRIVALS_PER_TRIAL:,} arriving patients; {_CHECK}")
        if n and self.arrival_time[-1] > HORIZON_DAYS:
            raise past_horizon(self.trial)
        size = max(16, n)
        gaps, failed, sdays = self.plan.arrivals(np.array([self.trial], dtype=np.uint64), n, size)
        last = self.arrival_time[-1] if n else 0.0
        if self.plan.schedule is None:
            self.arrival_time.extend((last + np.cumsum(gaps[0])).tolist())
        else:
            u = self.plan.unit(last) + np.cumsum(gaps[0])
            self.arrival_time.extend(self.plan.times(u).tolist())
        self.screen_failed.extend(failed[0].tolist())
        self.screen_days.extend(sdays[0].tolist())

    def more_patients(self) -> None:
        n = len(self.fail_at)
        size = max(16, n)
        days, happens, fail_at, drop, drop_day, pre, post, fail_days = self.plan.patients(
            np.array([self.trial], dtype=np.uint64), n, size)
        self.phase_days = np.concatenate([self.phase_days, days[0]])
        self.phase_happens = np.concatenate([self.phase_happens, happens[0]])
        self.fail_at.extend(fail_at[0].tolist())
        self.drop.extend(drop[0].tolist())
        self.drop_day.extend(drop_day[0].tolist())
        self.pre_days.extend(pre[0].tolist())
        self.post_days.extend(post[0].tolist())
        self.fail_days.extend(fail_days[0].tolist())

    def more_evaluable(self) -> None:
        n = len(self.dlt_u)
        size = max(16, n)
        if self.dlt_known is not None:
            n = self.dlt_known.shape[0]
            size = max(16, n)
        u, onset, graded = self.plan.evaluable(np.array([self.trial], dtype=np.uint64), n,
                                               size)
        if graded is None:
            self.dlt_u.extend(u[0].tolist())
            self.onset_day.extend(onset[0].tolist())
        else:
            self.grades, self.type_onset, self.dlt_known, self.worst_late = [
                None if have is None else np.concatenate([have, new[0]])
                for have, new in zip((self.grades, self.type_onset, self.dlt_known,
                                      self.worst_late), graded)]
            if self.dlt_mask is not None:
                self.dlt_mask.extend(graded[4][0].tolist())


def block_sizes(conduct: Conduct, max_n: Optional[int]) -> tuple:
    """Initial block sizes (arrivals, patients, evaluable) for a trial of at most ``max_n``
    evaluable patients: enough for most trials, the rest extend themselves."""
    n = max_n if max_n is not None else 30
    if conduct.backfill is not None:       # backfill patients come on top of max_n
        n += min(conduct.backfill.max_total, n)
    pass_rate = max(1e-3, 1.0 - conduct.screening.failure_prob)
    loss = 1.0
    for p in conduct.phases:
        loss *= 1.0 - p.probability * p.failure_prob
    loss *= 1.0 - conduct.dropout_prob
    patients = int(math.ceil((n + 2) / max(loss, 0.05))) + 2
    arrivals = int(math.ceil(patients * 1.3 / pass_rate)) + 4
    if conduct.accrual_per_month is None:
        arrivals = int(math.ceil(patients / pass_rate)) + 4
    return arrivals, patients, n + 2
