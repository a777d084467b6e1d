"""Discrete-event (simpy) simulation of dose-escalation trials in calendar time.

The public entry point is :func:`simulate_des_trials`: it runs one design on a chunk of trial
indices under a :class:`~escalation_sim.inputs.conduct.Conduct` and returns columnar numpy arrays,
one entry per trial, ready for the runner's tallies and tidy tables::

    from escalation_sim.inputs.conduct import Conduct
    from escalation_sim.engines.calendar import simulate_des_trials
    res = simulate_des_trials(design, [0.05, 0.1, 0.2, 0.35], Conduct(), seed=1,
                              trial_indices=range(1000))
    res["duration_days"].mean(), res["mtd"], res["n"]          # per trial

Per-trial keys (arrays of length ``len(trial_indices)`` unless said otherwise):

=============================== ===========================================================
``trial``                       trial index (int)
``mtd``                         selected dose, 0-based; -1 = no MTD (``design.select_mtd``)
``stop_code``                   index into ``[None] + list(StopReason)`` (as the cohort engine)
``stop_reason``                 the :class:`~escalation_sim.types.StopReason` value (str)
``n``, ``y``                    (trials x doses) evaluable patients and DLTs per dose (score
                                designs: ``y`` sums score units)
``dlt``                         (trials x doses) DLTs per dose (= ``y`` for binary designs)
``final_state``                 list of the terminal :class:`~escalation_sim.types.TrialState`
``duration_days``               first enrollment -> final decision
``first_enrollment_day``        day of the first enrollment (accrual starts on day 0)
``time_to_first_decision_days`` first enrollment -> first dose decision (NaN if none)
``decision_times``              list of arrays: days from first enrollment to each decision
                                (classic: after each cohort; TITE: each new group), last =
                                the final decision
``n_decisions``                 number of those decisions
``n_screened``                  arrivals screened (incl. screen failures)
``n_screen_failed``             screen failures
``n_enrolled``                  patients enrolled (took a slot)
``n_treated``                   patients infused
``n_evaluable``                 infused patients who completed the DLT window
``n_lost``                      eligible patients lost: waited longer than ``max_wait_days``
                                or left because the trial was paused (``when_paused: leave``)
``n_waiting_max``               longest waiting list
``n_waiting_at_close``          eligible patients still waiting when the trial closed
``n_manufacturing_failures``    failures in phases of kind ``manufacturing``
``n_phase_failures``            failures in any phase (manufacturing included)
``n_dropouts``                  infused patients who left before the end of the window
``n_escalation``, ``y_escalation`` with ``conduct.backfill``: evaluable patients and DLTs of
                                escalation cohorts (also ``..._dose<d>`` per dose, 1-based)
``n_backfill``, ``y_backfill``  the same for backfill patients (completed windows; also
                                per dose); ``n_backfill_enrolled``: backfill patients enrolled
``n_short``, ``n_excluded``     with ``conduct.shortfall``: products below the assigned dose;
                                patients excluded for it (policy ``exclude``)
``true_rate_selected_nominal``  true DLT rate at the selected dose as assigned / as actually
``true_rate_selected_as_given`` given (short products included); 0 when no dose is selected
                                (divide the mean by the selection probability)
``n_not_screened``              with ``screen_while_paused: false``: arrivals while accrual
                                was paused, never screened (not in ``n_screened``)
``manufacturing_runs``,         with ``conduct.costs`` (see :mod:`.costs`): runs started,
``vein_to_vein_days``,          mean leukapheresis-to-infusion days, cost of the trial and
``cost_total``,                 per evaluable patient
``cost_per_evaluable``
``manufacturing_runs_wasted``   with ``costs`` and ``manufacture_before_slot``: runs started for
                                patients who never got a slot (in ``manufacturing_runs``;
                                with ``manufacturing_capacity``, only runs granted a
                                manufacturing slot)
``patients``                    with ``record_patients=True``: a dict of columns, one row per
                                arrival (see :mod:`.log`); else ``None``
=============================== ===========================================================

Reproducibility: trial ``t`` gives the same result whatever chunk it is simulated in (all
randomness is counter-based, see :mod:`escalation_sim.engines.calendar.draws`).  For classic designs the
sequence of cohorts and the terminal state do not depend on the logistics at all (only the
calendar does) and equal, trial by trial, what looping ``design.decide`` /
``state.add_cohort`` over the shared ``dlt`` stream gives -- the time-free cohort engine's
trials (which merges states with equal ``design.canonical`` keys).  The collector is paused
while a call runs (see the comment in :func:`simulate_des_trials`).
"""
from __future__ import annotations

import gc
import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from ...inputs.conduct import Conduct
from ...inputs.truth import OutcomeModel
from ...designs.base import Design
from ...types import STOP_CODES, STOP_INDEX
from .fast import (ClassicTrial, HeapClock, TiteTrial, choose, fast_draw_plan, trial_class,
                   unsupported)
from .draws import HORIZON_DAYS, ChunkDraws, DrawPlan, block_sizes, past_horizon
from .log import patient_columns, swimmer_table
from .model import Setup, is_time_to_event
from .patient import COMPLETE
from .policies import CohortPolicy, DecisionPolicy, TimeToEventPolicy
from .swimmer import decision_table, swimmer_data
from .trial import Trial

__all__ = ["simulate_des_trials", "calendar_truth", "simulate_one", "patient_columns",
           "swimmer_table",
           "swimmer_data", "decision_table", "STOP_CODES", "is_time_to_event", "Trial",
           "Conduct", "DecisionPolicy", "CohortPolicy", "TimeToEventPolicy"]

#: stop codes, shared with the cohort engine (engine/graph.py): 0 = none

BLOCK = 256  # trials per vectorised block of random numbers

_log = logging.getLogger(__name__)


def simpy_only(conduct: Conduct, time_to_event: bool, graded: bool) -> Optional[str]:
    """Conduct options the fast path has never been checked for, whatever its allow-list
    says (issue 14, second round): backfill for time-to-event designs, the shortfall
    policies ``received`` / ``exclude`` for them, backfill / short products with a graded
    truth, ``manufacture_before_slot``.  None: nothing of these."""
    out = []
    bf = getattr(conduct, "backfill", None)
    sf = getattr(conduct, "shortfall", None)
    if time_to_event and bf is not None:
        out.append("conduct.backfill with a time-to-event design")
    if time_to_event and sf is not None and sf.policy != "assigned":
        out.append(f"conduct.shortfall.policy {sf.policy} with a time-to-event design")
    if graded and (bf is not None or sf is not None):
        out.append("conduct.backfill / conduct.shortfall with a graded truth")
    if getattr(conduct, "manufacture_before_slot", False):
        out.append("conduct.manufacture_before_slot")
    return ", ".join(out) or None


def clock_for(design: Design, conduct: Conduct, engine: Optional[str] = None,
              record_patients: bool = False, graded: bool = False) -> type:
    """The clock class to run on: the fast path's :class:`~.fast.HeapClock` when
    ``engine`` (default: the environment's, see :mod:`.fast`) allows it and the call is on
    its allow-list, else simpy's (with a log message saying why).  ``graded``: a graded
    truth (per-type onsets; on the allow-list, option ``graded_truth``)."""
    from .clock import SimpyClock
    eng = choose(engine)
    if eng == "simpy":
        return SimpyClock
    policy = TimeToEventPolicy if is_time_to_event(design) else CohortPolicy
    why = simpy_only(conduct, policy is TimeToEventPolicy, graded) or unsupported(
        design, conduct, policy, record_patients=record_patients,
        **({"graded_truth": True} if graded else {}))
    if why is None:
        return HeapClock
    if eng == "fast":
        raise ValueError(f"the fast calendar engine does not support: {why}")
    _log.info("calendar engine: simpy (the fast path does not support %s)", why)
    return SimpyClock

_INT_COLS = ("n_screened", "n_screen_failed", "n_enrolled", "n_treated", "n_evaluable",
             "n_lost", "n_waiting_max", "n_waiting_at_close", "n_manufacturing_failures",
             "n_phase_failures", "n_dropouts", "n_decisions")


def _as_conduct(conduct: Union[Conduct, Mapping[str, Any], None]) -> Conduct:
    if isinstance(conduct, Conduct):
        return conduct
    if isinstance(conduct, Mapping):
        return Conduct.model_validate(dict(conduct))
    raise TypeError(f"conduct must be a Conduct or a mapping (got {type(conduct).__name__}); "
                    f"use Conduct.zero() for zero-length logistics")


def _truth(truth, n_doses: int, conduct: Conduct):
    """``(p, model)``: the DLT rate per dose and the graded outcome model (None for a binary
    truth, given as rates or as :meth:`OutcomeModel.binary`)."""
    if not isinstance(truth, OutcomeModel):
        return _check_p(truth, n_doses), None
    if truth.n_doses != n_doses:
        raise ValueError(f"the truth has {truth.n_doses} doses, the design {n_doses}")
    p = [float(v) for v in truth.dlt_rates()]
    if truth.is_binary:
        return p, None
    if truth.window_days != float(conduct.dlt_window_days):
        raise ValueError(f"the truth's DLT window ({truth.window_days:g} days) differs from "
                         f"conduct.dlt_window_days ({conduct.dlt_window_days:g})")
    return p, truth


def calendar_truth(scenario):
    """What :func:`simulate_des_trials` takes for a scenario: its outcome model when the
    truth is graded (each event type at its own onset), else its DLT rates."""
    if scenario.model.truth.graded:
        return scenario.outcome_model
    return scenario.p_true


def _check_p(p_true, n_doses: int) -> List[float]:
    p = [float(v) for v in p_true]
    if len(p) != n_doses:
        raise ValueError(f"p_true has {len(p)} values for {n_doses} doses")
    bad = [v for v in p if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"p_true values must lie in [0, 1] (got {p})")
    return p


def simulate_des_trials(design: Design, p_true: Union[Sequence[float], OutcomeModel],
                        conduct: Union[Conduct, Mapping[str, Any]], seed: int,
                        trial_indices: Iterable[int], record_patients: bool = False,
                        engine: Optional[str] = None) -> Dict[str, Any]:
    """Simulate the trials ``trial_indices`` of ``design`` in calendar time.

    Returns a dict of per-trial columns (see the module docstring).  ``design`` is any
    built design (wrappers included); time-to-event designs (``design.inner.time_to_event``)
    decide with pending patients, classic designs wait for each cohort's DLT windows.
    ``p_true``: the true DLT rate per dose (binary truth), or the scenario's
    :class:`~escalation_sim.inputs.truth.OutcomeModel` (graded toxicities, each event at its
    own onset, see :mod:`.toxicity`; its DLT window must be ``conduct.dlt_window_days``; a
    binary model runs exactly as its rates).
    ``engine``: ``"auto"`` (the fast path when supported), ``"fast"`` or ``"simpy"`` (the
    reference); default: the environment variable ``ESCALATION_SIM_CALENDAR_ENGINE`` or
    ``auto`` (see :mod:`.fast`).  Both engines give the same trials bit for bit.
    """
    from ...designs.base import Outcome
    if design.outcome is Outcome.JOINT:
        raise ValueError(f"design {getattr(design, 'name', type(design.inner).__name__)!r} "
                         f"chooses a dose on toxicity and efficacy; the calendar engine does "
                         f"not observe responses (no efficacy window): run it on the "
                         f"time-free engine")
    conduct = _as_conduct(conduct)
    p, model = _truth(p_true, design.n_doses, conduct)
    trials = np.asarray(list(trial_indices) if not isinstance(trial_indices, np.ndarray)
                        else trial_indices, dtype=np.int64).ravel()
    if trials.size and trials.min() < 0:
        raise ValueError(f"trial indices must be >= 0 (got {int(trials.min())})")
    max_n = design.max_n
    guard = 50 * (max_n or 100) + 1000
    clock = clock_for(design, conduct, engine, bool(record_patients), model is not None)
    setup = Setup(design, p, conduct, bool(record_patients), guard, clock=clock, model=model)
    plan = DrawPlan(conduct, seed, model,
                    all_onsets=bool(record_patients) or setup.units is not None)
    na, npat, ne = block_sizes(conduct, max_n)
    results: List[Trial] = []
    # A trial allocates thousands of small objects, so automatic collections would run
    # often and rescan the growing decision memo each time.  Finished trials hold no
    # reference cycle (Trial.release empties the simpy queue), so reference counting frees
    # them; the collector is paused for the call and restored afterwards.
    make, lean = trial_class(setup)
    if make is not Trial:                        # the fast path's lean trials
        plan = fast_draw_plan(plan)
        if make is ClassicTrial and lean is not None:
            from . import kernel                 # compiled classic trials (numba), if any
            if (kernel.enabled() and kernel.kernel_unsupported(setup) is None
                    and kernel.take_compile_turn()):
                return kernel.simulate(setup, plan, trials, na, npat, ne, BLOCK, _INT_COLS)
        if make is TiteTrial and lean is not None:
            from . import kernel, kernel_tite    # compiled TITE-BOIN trials (numba), if any
            if (kernel.enabled() and kernel_tite.kernel_unsupported(setup) is None
                    and kernel.take_compile_turn(kernel_tite._compiled)):
                return kernel_tite.simulate(setup, plan, trials, na, npat, ne, BLOCK,
                                            _INT_COLS)
        if hasattr(lean, "block_sizes"):         # (its own block sizes: same numbers)
            na, npat, ne = lean.block_sizes(conduct, max_n, (na, npat, ne))
    gc_on = gc.isenabled()
    gc.disable()
    try:
        for b in range(0, trials.size, BLOCK):
            block = trials[b:b + BLOCK]
            if lean is not None:                 # the fast path's lean classic trials
                chunk = lean(plan, block.astype(np.uint64), na, npat, ne)
                for r in range(block.size):
                    t = make(setup, *chunk.trial(r)).run()
                    if t.t_end > HORIZON_DAYS:
                        raise past_horizon(int(block[r]))
                    t.release()
                    results.append(t)
                continue
            chunk = ChunkDraws(plan, block.astype(np.uint64), na, npat, ne)
            for r in range(block.size):
                t = make(setup, chunk.trial(r)).run()
                if t.t_end > HORIZON_DAYS:
                    raise past_horizon(int(block[r]))
                t.release()
                results.append(t)
        return _collect(setup, trials, results, bool(record_patients))
    finally:
        if gc_on:
            gc.enable()


def simulate_one(design: Design, p_true: Sequence[float], conduct, seed: int,
                 trial: int, record_patients: bool = True,
                 engine: Optional[str] = None) -> Trial:
    """One trial as a :class:`~.trial.Trial` object, run (for inspection)."""
    conduct = _as_conduct(conduct)
    p, model = _truth(p_true, design.n_doses, conduct)
    max_n = design.max_n
    setup = Setup(design, p, conduct, bool(record_patients), 50 * (max_n or 100) + 1000,
                  clock=clock_for(design, conduct, engine, bool(record_patients),
                                  model is not None), model=model)
    trial_class(setup)                  # (moves an unsupported setup to simpy's clock)
    plan = DrawPlan(conduct, seed, model,
                    all_onsets=bool(record_patients) or setup.units is not None)
    na, npat, ne = block_sizes(conduct, max_n)
    chunk = ChunkDraws(plan, np.array([trial], dtype=np.uint64), na, npat, ne)
    return Trial(setup, chunk.trial(0)).run()


def trial_row(setup: Setup, t, r: int, cols: Dict[str, np.ndarray],
              ints: Dict[str, np.ndarray]) -> tuple:
    """Write trial ``t``'s values (a run trial of any engine) in row ``r`` of the per-trial
    columns ``cols`` (mtd, stop_code, stop_reason, n, y, duration_days,
    first_enrollment_day, time_to_first_decision_days) and ``ints`` (``_INT_COLS``);
    return its final state and decision times."""
    nan = float("nan")
    st = t.final_state
    sel = setup.select_mtd(st)
    cols["mtd"][r] = -1 if sel is None else sel
    cols["stop_code"][r] = STOP_INDEX[t.stop_reason]
    cols["stop_reason"][r] = t.stop_reason.value
    cols["n"][r] = st.n
    cols["y"][r] = st.y
    fe = t.first_enroll
    cols["duration_days"][r] = 0.0 if fe is None else t.t_end - fe
    cols["first_enrollment_day"][r] = nan if fe is None else fe
    dt = np.asarray(t.decision_times, dtype=float)
    cols["time_to_first_decision_days"][r] = dt[0] if dt.size else nan
    acc = t.accrual
    ints["n_screened"][r] = acc.n_screened
    ints["n_screen_failed"][r] = acc.n_screen_failed
    ints["n_enrolled"][r] = len(t.pats)
    ints["n_treated"][r] = t.n_treated
    ints["n_evaluable"][r] = st.total_n
    ints["n_lost"][r] = acc.n_lost
    ints["n_waiting_max"][r] = acc.n_wait_max
    ints["n_waiting_at_close"][r] = acc.n_waiting_at_close
    ints["n_manufacturing_failures"][r] = t.n_manuf_fail
    ints["n_phase_failures"][r] = t.n_phase_fail
    ints["n_dropouts"][r] = t.n_dropout
    ints["n_decisions"][r] = dt.size
    return st, dt


def _collect(setup: Setup, trials: np.ndarray, res: List[Trial], record: bool
             ) -> Dict[str, Any]:
    m, K = trials.size, setup.K
    out: Dict[str, Any] = {"trial": trials.copy()}
    mtd = np.empty(m, dtype=np.int64)
    stop_code = np.empty(m, dtype=np.int64)
    stop_reason = np.empty(m, dtype=object)
    n = np.zeros((m, K), dtype=np.int64)
    y = np.zeros((m, K), dtype=np.int64)
    duration = np.empty(m)
    first = np.empty(m)
    ttfd = np.empty(m)
    cols = {"mtd": mtd, "stop_code": stop_code, "stop_reason": stop_reason, "n": n, "y": y,
            "duration_days": duration, "first_enrollment_day": first,
            "time_to_first_decision_days": ttfd}
    ints = {c: np.zeros(m, dtype=np.int64) for c in _INT_COLS}
    states, dtimes = [], []
    for r, t in enumerate(res):
        st, dt = trial_row(setup, t, r, cols, ints)
        states.append(st)
        dtimes.append(dt)
    if setup.units is None:
        dlt = y.copy()
    else:   # score designs: y sums units; count the DLTs of the patients in the final state
        dlt = np.zeros((m, K), dtype=np.int64)
        for r, t in enumerate(res):
            # conduct policies: the level a patient is counted at (-1: not in the data)
            level = getattr(getattr(t, "policy", None), "data_level", None)
            for p in t.pats:
                if level is not None:
                    d = level(p)
                    if d >= 0 and p.dlt:
                        dlt[r, d] += 1
                elif p.dlt and p.status == COMPLETE:
                    dlt[r, p.dose] += 1
    out.update(mtd=mtd, stop_code=stop_code, stop_reason=stop_reason, n=n, y=y, dlt=dlt,
               duration_days=duration, first_enrollment_day=first,
               time_to_first_decision_days=ttfd, **ints)
    c = setup.conduct
    if (c.backfill is not None or c.shortfall is not None
            or c.min_followup_days is not None):
        from .backfill import conduct_columns
        out.update(conduct_columns(setup, res, mtd))
    if not c.screen_while_paused:
        out["n_not_screened"] = np.array([t.accrual.n_not_screened for t in res],
                                         dtype=np.int64)
    if c.manufacturing_capacity is not None:
        from .capacity import capacity_columns
        out.update(capacity_columns(res))
    if setup.conduct.costs is not None:
        from .costs import cost_columns
        out.update(cost_columns(setup, res))
    out["decision_times"] = dtimes
    out["final_state"] = states
    out["patients"] = patient_columns(trials, res) if record else None
    return out
