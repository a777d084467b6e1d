"""The patient log: one row per arrival, and the swimmer table drawn from it.

:class:`Recorder` collects what only the running trial knows about candidates (arrival and
screening days, losses, fates); :func:`patient_columns` turns finished trials into the log
(a dict of numpy columns, ``simulate_des_trials(..., record_patients=True)["patients"]``);
:func:`swimmer_table` turns one trial's log into the table
:func:`escalation_sim.plotting.plot_swimmer` draws.

Log columns (days are calendar days since the trial opened, day 0, except ``dlt_day`` and
``dropout_day``: days after infusion):

======================= ====================================================================
``trial``               trial index
``arrival_index``       arrival order within the trial
``arrival_day``         arrival (start of screening)
``screening_end_day``   end of screening (eligible or not)
``eligible``            passed screening
``lost_day``            day a waiting / paused patient was lost (NaN otherwise)
``fate``                screen_failed, not_screened_paused (``screen_while_paused:
                        false``: arrived while accrual was paused, never screened, so
                        ``eligible`` is False), lost_waiting, lost_paused, not_enrolled,
                        failed_<phase>, dropout, evaluable
``patient``             enrollment order (-1 = never enrolled)
``enrolled_day``        took a slot
``dose_level``          1-based (0 = never enrolled)
``cohort``              the decision (cohort) it was enrolled under (-1 = none)
``gate_wait_days``      gate arrival to release (NaN if never held at the gate)
``infusion_day``        infusion (NaN if never infused)
``evaluable``           completed the DLT window
``evaluable_index``     k: place among evaluable infusions = draw index of the ``dlt``
                        stream (-1 = not evaluable)
``dlt``, ``dlt_day``    DLT, and its onset in days after infusion
``dropout_day``         days after infusion of a drop-out
``window_end_day``      end of the DLT window (evaluable patients)
``<phase>_start_day``,  each phase of the conduct block (NaN when skipped or not reached)
``<phase>_end_day``
``manufacturing_wait``  ``manufacturing_wait_days``, with ``conduct.manufacturing_capacity``:
                        days queued for a manufacturing slot (NaN: never queued)
``premade_days``        with ``conduct.manufacture_before_slot``: days from screened in
                        (leukapheresis starts) to enrollment (0: enrolled when screened in;
                        the phase days above show when each phase ran; NaN: never enrolled,
                        whose run is not shown)
``backfill``            with ``conduct.backfill``: treated in a backfill slot
``dose_received``       with ``conduct.shortfall``: fraction of the assigned dose received
                        (1 = all of it; NaN when never enrolled); fate ``excluded_short``
                        for a patient excluded for it (policy ``exclude``)
======================= ====================================================================

With a graded truth (``truth.toxicities``) ``dlt_day`` is the onset of the earliest event
meeting the ``dlt`` rule inside the window, and these columns follow (evaluable patients;
0 / False / NaN for the others):

======================= ====================================================================
``late``                an event meets the rule but starts only after the window (not a DLT)
``worst_grade``         highest grade among the events starting inside the window
``<type>_grade``        worst grade of each toxicity type (0 = no event)
``<type>_onset_day``    its onset, days after infusion (NaN without an event); may exceed
                        the window (a late event)
======================= ====================================================================
"""
from __future__ import annotations

from itertools import accumulate
from typing import TYPE_CHECKING, Any, Dict, List, Sequence

import numpy as np

from .patient import DROPPED, EXCLUDED, FAILED, COMPLETE

if TYPE_CHECKING:  # pragma: no cover
    from .trial import Trial

_LOG_BOOL = frozenset({"eligible", "evaluable", "dlt", "late", "backfill"})
_LOG_INT = frozenset({"arrival_index", "patient", "dose_level", "cohort", "evaluable_index",
                      "worst_grade"})


def _graded_columns(trial, pat, evaluable: bool) -> Dict[str, Any]:
    """The graded-truth columns of one row (see the module docstring)."""
    names = trial.setup.model.type_names
    nan = float("nan")
    worst, late = trial.toxicity.worst_late(pat) if pat is not None and evaluable else (0, False)
    row: Dict[str, Any] = {"late": late, "worst_grade": worst}
    ev = ({j: (g, day) for j, g, day in trial.toxicity.events(pat)}
          if pat is not None and evaluable else {})
    for j, name in enumerate(names):
        g, day = ev.get(j, (0, nan))
        row[f"{name}_grade"] = g
        row[f"{name}_onset_day"] = day
    return row


class Recorder:
    """Per-candidate facts of one trial (only with ``record_patients=True``)."""

    __slots__ = ("arrival", "ready", "fate", "lost_day")

    def __init__(self) -> None:
        self.arrival: Dict[int, float] = {}
        self.ready: Dict[int, float] = {}
        self.fate: Dict[int, str] = {}
        self.lost_day: Dict[int, float] = {}

    def lost(self, i: int, day: float, fate: str) -> None:
        self.fate[i] = fate
        self.lost_day[i] = day


def patient_rows(trial: "Trial") -> List[Dict[str, Any]]:
    """One dict per arrival of a finished trial run with a :class:`Recorder`."""
    s, d, rec = trial.setup, trial.draws, trial.rec
    nan = float("nan")
    by_candidate = {p.candidate: p for p in trial.pats}
    g = s.gate
    waits = getattr(trial.path, "waits", None)       # conduct.manufacturing_capacity
    premade = getattr(trial.path, "premade", None)   # conduct.manufacture_before_slot
    n_pre = s.conduct.premade_phases
    m_run = getattr(trial.path, "m", None)
    bf = s.conduct.backfill is not None
    sf = s.conduct.shortfall is not None
    rows = []
    for i in range(trial.accrual.n_arrived):
        row: Dict[str, Any] = {
            "arrival_index": i,
            "arrival_day": rec.arrival.get(i, nan),
            "screening_end_day": rec.ready.get(i, nan),
            "eligible": not d.screen_failed[i],
            "lost_day": rec.lost_day.get(i, nan),
        }
        pat = by_candidate.get(i)
        if pat is None:
            if rec.fate.get(i) == "not_screened_paused":
                row["eligible"] = False
            row.update(fate=rec.fate.get(i, "not_enrolled"), patient=-1,
                       enrolled_day=nan, dose_level=0, cohort=-1, gate_wait_days=nan,
                       infusion_day=nan, evaluable=False, evaluable_index=-1, dlt=False,
                       dlt_day=nan, dropout_day=nan, window_end_day=nan)
            for name in s.phase_names:
                row[f"{name}_start_day"] = nan
                row[f"{name}_end_day"] = nan
            if s.graded is not None:
                row.update(_graded_columns(trial, None, False))
            if bf:
                row["backfill"] = False
            if sf:
                row["dose_received"] = nan
            if waits is not None:
                row["manufacturing_wait_days"] = nan
            if premade is not None:
                row["premade_days"] = nan
            rows.append(row)
            continue
        j = pat.j
        st = pat.status
        f = d.fail_at[j]
        inf = pat.infusion_day
        evaluable = st == COMPLETE
        k = pat.k
        if st == FAILED:
            fate = f"failed_{s.phase_names[f]}"
        elif st == DROPPED:
            fate = "dropout"
        elif st == EXCLUDED:
            fate = "excluded_short"
        else:
            fate = "evaluable"
        dlt = pat.dlt and evaluable
        rel, gate = pat.release_day, pat.gate_day
        row.update(
            fate=fate, patient=j, enrolled_day=pat.enrolled_day, dose_level=pat.dose + 1,
            cohort=pat.cohort.index,
            gate_wait_days=rel - gate if rel >= 0 and gate >= 0 else nan,
            infusion_day=inf if inf >= 0 and st != FAILED else nan,
            evaluable=evaluable, evaluable_index=k if evaluable else -1, dlt=dlt,
            dlt_day=trial.toxicity.onset_day(pat) if dlt else nan,
            dropout_day=d.drop_day[j] if st == DROPPED else nan,
            window_end_day=pat.end_day if evaluable else nan)
        days = d.phase_days[j].tolist()
        happens = d.phase_happens[j].tolist()
        cum = [0.0] + list(accumulate(days))
        last = f if f >= 0 else len(days) - 1
        for p, name in enumerate(s.phase_names):
            if p > last or not happens[p] or (p >= g and rel < 0):
                row[f"{name}_start_day"] = nan
                row[f"{name}_end_day"] = nan
                continue
            start = pat.enrolled_day + cum[p] if p < g else rel + sum(days[g:p])
            if waits is not None and m_run <= p < g:     # waited for a manufacturing slot
                start += waits.get(j, 0.0)
            if premade is not None and p < g:            # made before the slot opened
                waited, credit = premade.get(j, (0.0, 0.0))
                start -= waited if p < n_pre else credit
            row[f"{name}_start_day"] = start
            row[f"{name}_end_day"] = start + days[p]
        if s.graded is not None:
            row.update(_graded_columns(trial, pat, evaluable))
        if bf:
            row["backfill"] = pat.backfill
        if sf:
            row["dose_received"] = pat.received
        if waits is not None:
            row["manufacturing_wait_days"] = waits.get(j, nan)
        if premade is not None:
            row["premade_days"] = premade.get(j, (0.0, 0.0))[0]
        rows.append(row)
    return rows


def patient_columns(trials: np.ndarray, res: Sequence["Trial"]) -> Dict[str, np.ndarray]:
    """The patient log of finished trials as columns, one row per arrival (see the module
    docstring); ``trials``: their trial indices."""
    rows: List[Dict[str, Any]] = []
    tcol: List[int] = []
    for t_idx, t in zip(trials.tolist(), res):
        r = patient_rows(t)
        rows.extend(r)
        tcol.extend([t_idx] * len(r))
    cols: Dict[str, np.ndarray] = {"trial": np.asarray(tcol, dtype=np.int64)}
    if not rows:
        return cols
    for key in rows[0]:
        vals = [row[key] for row in rows]
        if key == "fate":
            cols[key] = np.asarray(vals, dtype=object)
        elif key in _LOG_BOOL:
            cols[key] = np.asarray(vals, dtype=bool)
        elif key in _LOG_INT or key.endswith("_grade"):
            cols[key] = np.asarray(vals, dtype=np.int64)
        else:
            cols[key] = np.asarray(vals, dtype=float)
    return cols


def swimmer_table(log, include_not_enrolled: bool = False):
    """One trial's patient log as the table :func:`~escalation_sim.plotting.plot_swimmer`
    draws (a pandas DataFrame, one row per lane).

    ``log``: the log (dict of columns or DataFrame) of ONE trial.  Conversions: only
    enrolled patients are kept (unless ``include_not_enrolled``), in enrollment order;
    ``patient`` becomes 1-based; ``dose`` = ``dose_level`` (1-based, missing when never
    enrolled); ``dlt_day`` and, with a graded truth, each ``<type>_onset_day`` (days after
    infusion in the log) become calendar days; a drop-out's follow-up ends on its drop-out day; screening (arrival to
    ``screening_end_day``) becomes a phase.  A table without ``dose_level`` is returned as
    it is (already converted).
    """
    import pandas as pd
    df = log.copy() if isinstance(log, pd.DataFrame) else pd.DataFrame(dict(log))
    if "trial" in df.columns and df["trial"].nunique() > 1:
        raise ValueError("the patient log holds several trials; select one "
                         "(e.g. log[log.trial == 0])")
    if "dose_level" not in df.columns:      # already a swimmer table
        return df
    if not include_not_enrolled:
        df = df[df["patient"] >= 0]
    df = df.sort_values(["patient", "arrival_index"] if "arrival_index" in df.columns
                        else ["patient"], kind="stable").reset_index(drop=True)
    df["patient"] = np.where(df["patient"] >= 0, df["patient"] + 1, -1)
    df["dose"] = df["dose_level"].where(df["dose_level"] > 0)
    inf = df["infusion_day"].astype(float)
    df["dlt_day"] = np.where(df["dlt"].astype(bool), inf + df["dlt_day"].astype(float), np.nan)
    for c in [c for c in df.columns if c.endswith("_onset_day")]:   # graded truth: per type
        df[c] = inf + df[c].astype(float)
    if "dropout_day" in df.columns:
        drop = inf + df["dropout_day"].astype(float)
        df["window_end_day"] = np.where(np.isfinite(drop), drop, df["window_end_day"])
    if "screening_end_day" in df.columns and "screening_start_day" not in df.columns:
        df.insert(int(df.columns.get_loc("screening_end_day")), "screening_start_day",
                  df["arrival_day"])
    return df
