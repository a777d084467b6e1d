"""Replay a real trial from its patient log: what each design would have recommended at
each real decision point, beside what the trial did.

Decision points (the log is read by :mod:`escalation_sim.inputs.patient_log`):

* **Designs deciding on complete data** (3+3, BOIN, CRM, ...): before each cohort after the
  first, and at the data cut-off.  A cohort is the ``cohort`` column's group, or else a run
  of consecutive patients (in enrollment order) at one assigned dose.  The design sees the
  complete outcomes of the cohorts so far (a DLT, or a DLT-free window), as if the trial had
  waited for them; ``pending_at_decision`` counts the patients of those cohorts whose window
  was in fact still open on the day the next cohort started.  Patients who dropped out
  without a DLT are not evaluable and are left out; patients still followed at the cut-off
  are left out of the classic designs' data.
* **Time-to-event designs** (TITE-CRM, TITE-BOIN): a row at each enrollment and at the
  data cut-off, run as the calendar engine runs them: a decision to treat c patients at a
  dose opens c slots that the next patients enrolled at that dose fill without a new
  decision (``asked`` False); when no slot at the patient's dose is free the design is asked
  on the data of that day (DLTs with onset up to that day; patients whose window is over;
  the others pending with their follow-up fraction, not yet infused = 0).

The estimates and credible intervals (``estimates``, ``ci_lower``, ``ci_upper``) are those
of the last row, at the data cut-off.

**Graded logs** (``TYPE_grade`` / ``TYPE_onset`` columns): the DLT-counting designs see the
DLTs the scenario's ``dlt`` rule derives from the grades (:mod:`..inputs.patient_log`).  The
score designs (gBOIN, TITE-gBOIN) see each patient's worst grade among the events inside the
DLT window, as the design's severity-score units.  gBOIN (complete data) counts the
patients whose window is over by the cut-off, or who had an event with a positive score by
then, with the worst grade known at the cut-off.  TITE-gBOIN sees an event only from its onset date: a patient is pending until
the onset of its first event inside the window that carries a positive score, or the end of
its window (the calendar engine's rule,
:class:`~escalation_sim.engines.calendar.policies.ScoreTimeToEventPolicy`); from then on it
counts with the units of the worst grade started so far.  A DLT-only log cannot feed a score
design: those are skipped with a note.

Doses are analysed as received (``dose_received``), and the trial's action is the dose
assigned.  A deviation is flagged when the trial enrolled at another dose than the design
recommended, or enrolled although the design would have stopped or suspended accrual.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..designs.base import Design
from ..inputs.patient_log import PatientLog, PatientRecord
from ..types import TrialState
from .realdata import recommend

__all__ = ["ReplayResult", "replay_log", "patient_status", "swimmer_table"]


def patient_status(p: PatientRecord, day: dt.date, window_days: float
                   ) -> Tuple[str, float]:
    """``(status, follow-up fraction)`` on ``day``: ``"not_enrolled"``, ``"dlt"``,
    ``"out"`` (dropped out without a DLT: not evaluable), ``"complete"`` (DLT-free window
    over) or ``"pending"`` (in follow-up; fraction of the window followed, 0 before the
    infusion)."""
    if p.enrolled > day:
        return "not_enrolled", 0.0
    if p.dlt_date is not None and p.dlt_date <= day:
        return "dlt", 1.0
    if p.dropout and p.end_date is not None and p.end_date <= day:
        return "out", 0.0
    if p.infused is not None and (day - p.infused).days >= window_days:
        return "complete", 1.0
    if p.infused is None or day < p.infused:
        return "pending", 0.0
    return "pending", min((day - p.infused).days / float(window_days), 1.0)


def score_status(p: PatientRecord, day: dt.date, window_days: float,
                 units: Sequence[int]) -> Tuple[str, float, int]:
    """A score design's view of ``p`` on ``day``: ``(status, follow-up fraction, units)``.
    ``"scored"``: an event inside the window with a positive score has started (the
    patient is no longer pending; units of the worst grade started so far); otherwise as
    :func:`patient_status` (``"complete"``: window over, units of the worst grade, which
    scores 0 here).  A drop-out (which has no DLT) is ``"out"``, not evaluable, from its
    drop-out date, whatever lower grades it had, as for the DLT designs."""
    if p.enrolled > day:
        return "not_enrolled", 0.0, 0
    if p.dropout and p.end_date is not None and p.end_date <= day:
        return "out", 0.0, 0
    u = units[p.worst_grade(day, window_days)]
    if u > 0:
        return "scored", 1.0, u
    if p.infused is not None and (day - p.infused).days >= window_days:
        return "complete", 1.0, u
    if p.infused is None or day < p.infused:
        return "pending", 0.0, 0
    return "pending", min((day - p.infused).days / float(window_days), 1.0), 0


def _view(p: PatientRecord, day: dt.date, W: float, units: Optional[Sequence[int]]
          ) -> Tuple[str, float, int]:
    """``(status, fraction, y)``: y = DLT 0/1 (``units`` None) or score units; status
    ``"dlt"`` / ``"scored"`` / ``"complete"`` count as observed."""
    if units is None:
        st, f = patient_status(p, day, W)
        return st, f, int(st == "dlt")
    return score_status(p, day, W, units)


_OBSERVED = ("dlt", "scored", "complete")


def cohorts_of(log: PatientLog) -> List[List[PatientRecord]]:
    """The trial's cohorts: the ``cohort`` column's groups (in order of first enrollment),
    else runs of consecutive patients at one assigned dose."""
    groups: List[List[PatientRecord]] = []
    if any(p.cohort for p in log.patients):
        index: Dict[str, int] = {}
        for p in log.patients:
            key = p.cohort or f"#{p.id}"
            if key not in index:
                index[key] = len(groups)
                groups.append([])
            groups[index[key]].append(p)
        return groups
    for p in log.patients:
        if groups and groups[-1][-1].dose == p.dose:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


@dataclass
class ReplayResult:
    """``rows``: the tidy table, one row per (design, decision point); ``patients``: the
    swimmer table of the real trial; ``cohorts``: the trial's cohorts (ids)."""

    source: str
    as_of: dt.date
    window_days: float
    dose_labels: List[str]
    rows: List[Dict[str, Any]] = field(default_factory=list)
    patients: List[Dict[str, Any]] = field(default_factory=list)
    cohorts: List[List[str]] = field(default_factory=list)
    #: designs left out, with why (score designs: the log has DLTs, not grades)
    skipped: List[Tuple[str, str]] = field(default_factory=list)

    def deviations(self) -> List[Dict[str, Any]]:
        return [r for r in self.rows if r["deviation"]]

    def final(self) -> Dict[str, Dict[str, Any]]:
        """The last row (at the data cut-off) of each design."""
        out: Dict[str, Dict[str, Any]] = {}
        for r in self.rows:
            out[r["design"]] = r
        return out


def _counts_row(state: TrialState, scale: Optional[int] = None) -> str:
    """``DLTs/n`` per dose, or for a score design ``score sum/n`` (normalized)."""
    if scale is None:
        return " ".join(f"{y}/{n}" for n, y in zip(state.n, state.y))
    return " ".join(f"{round(y / scale, 3):g}/{n}" for n, y in zip(state.n, state.y))


def _compare(rec, dose: Optional[int]) -> Tuple[bool, str]:
    """Did the trial (enrolling at ``dose``, None: nobody enrolled) follow the design?"""
    if dose is None:
        return False, ""
    if rec.stop:
        return True, "enrolled although the design would have stopped"
    if rec.suspend:
        return True, "enrolled although the design would have suspended accrual"
    if dose > rec.next_dose:
        return True, f"dose {dose} above the design's dose {rec.next_dose}"
    if dose < rec.next_dose:
        return True, f"dose {dose} below the design's dose {rec.next_dose}"
    return False, ""


def _row(name, point, day, after, rec, design, complete_state, trial_dose, trial_n,
         pending_at_decision, new_cohort=True) -> Dict[str, Any]:
    """One row of the tidy table (``asked``: the design was asked here; classic designs
    always are, time-to-event designs not while filling a cohort's slots)."""
    dev, why = _compare(rec, trial_dose)
    m = design.select_mtd(complete_state) if complete_state.total_n else None
    iv = rec.intervals
    scale = _scale(design)
    y = rec.dlt if scale is None else [round(v * scale) for v in rec.score_sum]
    return {
        "design": name, "outcome": "dlt" if scale is None else "score",
        "point": point, "date": day.isoformat(), "after_patients": after,
        "asked": True,
        "data": _counts_row(TrialState(tuple(rec.n), tuple(y)), scale),
        "pending": sum(rec.pending), "pending_at_decision": pending_at_decision,
        "recommendation": rec.action, "next_dose": rec.next_dose,
        "cohort_size": rec.cohort_size, "stop_reason": rec.stop_reason,
        "mtd_if_stopped_now": None if m is None else m + 1,
        "reason": rec.reason,
        "trial_action": "end of log" if trial_dose is None else f"dose {trial_dose}",
        "trial_dose": trial_dose, "trial_cohort_size": trial_n,
        "trial_new_cohort": None if trial_dose is None else new_cohort,
        "deviation": dev, "deviation_detail": why,
        "estimates": None if not iv else " ".join("-" if e is None else f"{e:.3f}"
                                                  for e in iv["estimate"]),
        "ci_lower": None if not iv else " ".join("-" if e is None else f"{e:.3f}"
                                                 for e in iv["lower"]),
        "ci_upper": None if not iv else " ".join("-" if e is None else f"{e:.3f}"
                                                 for e in iv["upper"]),
    }


def _units(design: Design) -> Optional[Tuple[int, ...]]:
    """A score design's units per worst grade 0..5 (None: the design counts DLTs)."""
    from ..designs.base import Outcome
    return tuple(design.score_units) if design.outcome is Outcome.SCORE else None


def _scale(design: Design) -> Optional[int]:
    return None if _units(design) is None else int(design.unit_scale)


def _add(state: TrialState, patients: Sequence[PatientRecord], day: dt.date, W: float,
         units: Optional[Sequence[int]] = None) -> TrialState:
    """The cohort's evaluable, complete patients on ``day`` added (grouped by dose)."""
    by_dose: Dict[int, List[int]] = {}
    for p in patients:
        st, _, y = _view(p, day, W, units)
        if st in _OBSERVED:
            by_dose.setdefault(p.dose_received - 1, []).append(y)
    for d, ys in by_dose.items():
        state = state.add_cohort(d, len(ys), sum(ys), 1 if units is None else max(units))
    return state


def _replay_classic(name: str, design: Design, cohorts, as_of, W, level) -> List[Dict]:
    rows = []
    K = design.n_doses
    state = TrialState.empty(K)
    done: List[PatientRecord] = []
    for k in range(len(cohorts) + 1):
        if k < len(cohorts):
            nxt = cohorts[k]
            day, trial_dose, trial_n = nxt[0].enrolled, nxt[0].dose, len(nxt)
        else:
            day, trial_dose, trial_n = as_of, None, None
        pend_then = sum(1 for p in done if _view(p, day, W, _units(design))[0] == "pending")
        rec = recommend(design, state, name, level, intervals=k == len(cohorts))
        rows.append(_row(name, k, day, len(done), rec, design, state, trial_dose, trial_n,
                         pend_then))
        if k < len(cohorts):
            state = _add(state, cohorts[k], as_of, W, _units(design))
            done.extend(cohorts[k])
    return rows


def _tite_state(patients: Sequence[PatientRecord], day: dt.date, W: float, K: int,
                latest: Sequence[PatientRecord], units: Optional[Sequence[int]] = None):
    from ..designs.tite import TiteState
    n, y, pend = [0] * K, [0] * K, []
    for p in patients:
        st, f, v = _view(p, day, W, units)
        d = p.dose_received - 1
        if st in ("not_enrolled", "out"):
            continue
        n[d] += 1
        y[d] += v
        if st == "pending":
            pend.append((d, f))
    if not latest:
        return TrialState.empty(K)
    cur = latest[-1].dose_received - 1
    grp = [p for p in latest if p.dose_received - 1 == cur]
    views = [_view(p, day, W, units) for p in grp]
    last_n = sum(1 for s, _, _ in views if s not in ("out", "not_enrolled"))
    last_y = sum(v for _, _, v in views)
    if not pend:
        return TrialState(tuple(n), tuple(y), cur, last_n, last_y)
    return TiteState(tuple(n), tuple(y), cur, last_n, last_y, tuple(pend),
                     1 if units is None else max(units))


def _complete_state(patients, day, W, K, units: Optional[Sequence[int]] = None
                    ) -> TrialState:
    n, y = [0] * K, [0] * K
    for p in patients:
        st, _, v = _view(p, day, W, units)
        if st in _OBSERVED:
            n[p.dose_received - 1] += 1
            y[p.dose_received - 1] += v
    return TrialState(tuple(n), tuple(y))


def _replay_tite(name: str, design: Design, log: PatientLog, cohorts, as_of, W, level
                 ) -> List[Dict]:
    """At each enrollment, as the calendar engine runs a time-to-event design: a decision
    to treat c patients at dose d opens c slots, and the next patients enrolled at d fill
    them without a new decision (``asked`` False); when no slot at the patient's dose is
    free the design is asked on that day's data."""
    rows = []
    K = design.n_doses
    units = _units(design)
    pts = list(log.patients)
    group_of = {p.id: i for i, c in enumerate(cohorts) for p in c}
    slots: Optional[List[Any]] = None       # [dose, free, size, opened on]
    for j in range(len(pts) + 1):
        before = pts[:j]
        if j < len(pts):
            day, trial_dose = pts[j].enrolled, pts[j].dose
        else:
            day, trial_dose = as_of, None
        latest = ([p for p in before if group_of[p.id] == group_of[before[-1].id]]
                  if before else [])
        state = _tite_state(before, day, W, K, latest, units)
        rec = recommend(design, state, name, level, intervals=j == len(pts))
        pend_then = sum(1 for p in before if _view(p, day, W, units)[0] == "pending")
        new = j < len(pts) and (not before or group_of[pts[j].id] != group_of[before[-1].id])
        size = len(cohorts[group_of[pts[j].id]]) if new else None
        row = _row(name, j, day, len(before), rec, design,
                   _complete_state(before, day, W, K, units),
                   trial_dose, size, pend_then, new)
        if trial_dose is not None and slots and slots[1] > 0 and trial_dose == slots[0]:
            slots[1] -= 1
            row.update(recommendation=f"dose {slots[0]}", next_dose=slots[0], cohort_size=None,
                       stop_reason=None, deviation=False, deviation_detail="", asked=False,
                       reason=f"slot {slots[2] - slots[1]} of the cohort of {slots[2]} the "
                              f"design opened on {slots[3]}")
        else:
            row["asked"] = True
            slots = None
            if trial_dose is not None and not rec.stop and not rec.suspend:
                free = rec.cohort_size - (1 if trial_dose == rec.next_dose else 0)
                slots = [rec.next_dose, free, rec.cohort_size, day.isoformat()]
        rows.append(row)
    return rows


def swimmer_table(log: PatientLog, as_of: dt.date, window_days: float) -> List[Dict]:
    """The real trial in :func:`escalation_sim.plotting.plot_swimmer`'s form (days since
    the first enrollment)."""
    t0 = log.patients[0].enrolled
    rows = []
    for p in log.patients:
        def day(d):
            return None if d is None else float((d - t0).days)
        st, _ = patient_status(p, as_of, window_days)
        if p.end_date is not None:
            end = p.end_date
        elif p.infused is not None:
            end = min(p.infused + dt.timedelta(days=window_days), as_of)
        else:
            end = as_of
        rows.append({"patient": p.id, "dose": p.dose_received, "dose_assigned": p.dose,
                     "arrival_day": day(p.enrolled),
                     "infusion_day": float("nan") if p.infused is None else day(p.infused),
                     "dlt": p.dlt_date is not None,
                     "dlt_day": float("nan") if p.dlt_date is None else day(p.dlt_date),
                     "window_end_day": day(end), "evaluable": st in ("dlt", "complete"),
                     "status": st, "enrolled": p.enrolled.isoformat(),
                     "infused": None if p.infused is None else p.infused.isoformat(),
                     "dlt_date": None if p.dlt_date is None else p.dlt_date.isoformat(),
                     "end_date": None if p.end_date is None else p.end_date.isoformat(),
                     "worst_grade": (p.worst_grade(as_of, window_days) if log.graded
                                     else None),
                     "events": " ".join(f"{e.type}{e.grade}@{e.onset}" for e in p.events)
                     or None})
    return rows


def replay_log(log: PatientLog, designs: Sequence[Tuple[str, Design]], window_days: float,
               dose_labels: Sequence[str], as_of: Optional[dt.date] = None,
               level: float = 0.95) -> ReplayResult:
    """Every design's recommendation at each real decision point (module docstring)."""
    as_of = as_of or log.last_date
    cohorts = cohorts_of(log)
    res = ReplayResult(log.source, as_of, float(window_days), list(dose_labels),
                       cohorts=[[p.id for p in c] for c in cohorts],
                       patients=swimmer_table(log, as_of, window_days))
    from ..designs.base import Outcome
    for name, design in designs:
        if design.outcome is Outcome.SCORE and not log.graded:
            res.skipped.append((name, f"it scores {design.outcome.value}s and the patient log "
                                      "records DLTs only (no TYPE_grade / TYPE_onset columns)"))
            continue
        if design.outcome not in (Outcome.BINARY_DLT, Outcome.SCORE):
            res.skipped.append((name, f"it needs {design.outcome.value} outcomes, which the "
                                      "patient log does not record"))
            continue
        if design.time_to_event:
            res.rows.extend(_replay_tite(name, design, log, cohorts, as_of, window_days,
                                         level))
        else:
            res.rows.extend(_replay_classic(name, design, cohorts, as_of, window_days,
                                            level))
    return res
