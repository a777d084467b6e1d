"""A real trial's patient log (CSV), read and checked row by row.

One row per patient; lines starting with ``#`` are comments (state the assumptions there).
Columns (header row required, any order; names case-insensitive):

``id``             patient identifier, unique (required)
``dose``           dose level assigned, 1-based (required)
``dose_received``  dose level actually given, if it differs (optional; blank = as assigned)
``enrolled``       enrollment date, YYYY-MM-DD (required)
``infused``        first dose / infusion date (optional; blank = not given yet); the DLT
                   window starts here
``dlt_date``       onset date of the first DLT (optional; blank = no DLT)
``end_date``       end of DLT follow-up or drop-out date (optional; blank = still followed at
                   the data cut, or the window simply ran out)
``dropout``        yes / no (optional; blank = no): the patient left before the end of the
                   window without a DLT and is not evaluable for DLT
``cohort``         cohort label (optional; default: consecutive patients at one dose form
                   a cohort)
``TYPE_grade``     graded toxicities (optional, a pair of columns per toxicity type, e.g.
``TYPE_onset``     ``CRS_grade``, ``CRS_onset``, ``ICANS_grade``, ``ICANS_onset``): the worst
                   grade of that type (0..5; blank = 0, no event) and the onset date of the
                   event.  The types are those of the scenario's ``truth.toxicities`` (or
                   given by the caller, ``tox_types``); any other ``*_grade`` / ``*_onset``
                   column is an unknown type.  One event per type and patient: its worst
                   grade, dated by its onset.

Graded logs: a patient's DLT follows the DLT rule (``dlt_rule``: ``((type, min_grade),
...)``, default every type at grade >= 3, as a scenario's default ``dlt``): an event meeting
a criterion whose onset is inside the window (day ``<= window_days`` after the infusion); its
date is the earliest such onset.  A ``dlt_date`` given as well must be that date (a blank
``dlt_date`` is derived).  An event after the window is kept (a late event: no DLT, not
scored).  A grade needs an onset date, an onset date a grade >= 1 and an infusion; an onset
may not precede the infusion nor follow ``end_date``.

With a data cut-off (``as_of``) the log is read as it was known that day: later
enrollments are left out and later infusions, DLTs and ends of follow-up have not happened
yet (every row is still checked in full).

Every problem is reported as ``FILE:LINE: column: message (got VALUE)``; all problems are
collected before anything is raised (:class:`PatientLogError`).
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

__all__ = ["PatientRecord", "PatientLog", "PatientLogError", "read_patient_log",
           "parse_patient_log", "LOG_COLUMNS", "GradedEvent", "MAX_LOG_GRADE"]

REQUIRED = ("id", "dose", "enrolled")
OPTIONAL = ("dose_received", "infused", "dlt_date", "end_date", "dropout", "cohort")
LOG_COLUMNS = REQUIRED + OPTIONAL
_YES = {"yes", "y", "true", "1"}
_NO = {"no", "n", "false", "0", ""}
MAX_LOG_ROWS = 10_000
MAX_LOG_BYTES = 5_000_000
#: the highest toxicity grade a log may record (CTCAE / ASTCT: 5 = death)
MAX_LOG_GRADE = 5
_GRADED_SUFFIXES = ("_grade", "_onset")


class PatientLogError(ValueError):
    """All the problems of one log, one line each."""

    def __init__(self, problems: List[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class GradedEvent:
    """One graded toxicity of a patient: its type, worst grade (1..5) and onset date."""

    type: str
    grade: int
    onset: dt.date


@dataclass(frozen=True)
class PatientRecord:
    """One patient; doses 1-based, dates as ``datetime.date``."""

    id: str
    line: int
    dose: int
    dose_received: int
    enrolled: dt.date
    infused: Optional[dt.date]
    dlt_date: Optional[dt.date]
    end_date: Optional[dt.date]
    dropout: bool
    cohort: Optional[str]
    #: graded toxicities (grade >= 1), in onset order; empty in a log without grade columns
    events: Tuple[GradedEvent, ...] = ()

    def worst_grade(self, day: dt.date, window_days: float) -> int:
        """The worst grade among the events started by ``day`` inside the DLT window
        (0: none), what a score design (gBOIN) scores."""
        if self.infused is None:
            return 0
        return max((e.grade for e in self.events
                    if e.onset <= day and (e.onset - self.infused).days <= window_days),
                   default=0)


@dataclass(frozen=True)
class PatientLog:
    source: str
    patients: Tuple[PatientRecord, ...]     # in enrollment order (ties: file order)
    comments: Tuple[str, ...]
    #: the toxicity types with grade columns in the log (empty: a DLT-only log)
    types: Tuple[str, ...] = ()
    #: the DLT rule applied to the grades, ``((type, min_grade), ...)``
    dlt_rule: Tuple[Tuple[str, int], ...] = ()

    @property
    def graded(self) -> bool:
        return bool(self.types)

    @property
    def last_date(self) -> dt.date:
        days = []
        for p in self.patients:
            days += [d for d in (p.enrolled, p.infused, p.dlt_date, p.end_date) if d]
            days += [e.onset for e in p.events]
        return max(days)


def _short(v: str) -> str:
    return repr(v) if len(v) <= 40 else repr(v[:37]) + "..."


def read_patient_log(path: Union[str, Path], n_doses: int, window_days: float,
                     as_of: Optional[dt.date] = None, tox_types: Sequence[str] = (),
                     dlt_rule: Optional[Sequence[Tuple[str, int]]] = None) -> PatientLog:
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise PatientLogError([f"{path}: cannot read: {exc.strerror or exc}"])
    if size > MAX_LOG_BYTES:
        raise PatientLogError([f"{path}: larger than {MAX_LOG_BYTES:,} bytes (got {size:,})"])
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PatientLogError([f"{path}: cannot read as UTF-8 text: {exc}"])
    return parse_patient_log(text, str(path), n_doses, window_days, as_of, tox_types,
                             dlt_rule)


def _graded_columns(names: List[str], tox_types: Sequence[str], where: str,
                    problems: List[str]) -> Dict[str, str]:
    """``{type: canonical name}`` of the types with grade columns; header problems added."""
    canon = {t.lower(): t for t in tox_types}
    known = ", ".join(tox_types) if tox_types else "none: give the toxicity types (a scenario "
    if not tox_types:
        known += "with truth.toxicities, or --toxicity-types)"
    found: Dict[str, str] = {}
    for h in names:
        suffix = next((x for x in _GRADED_SUFFIXES if h.endswith(x)), None)
        if suffix is None or h in LOG_COLUMNS:
            continue
        t = h[: -len(suffix)]
        if t not in canon:
            problems.append(f"{where}: {h}: unknown toxicity type {t!r} (known types: "
                            f"{known}) (got {_short(h)})")
            continue
        other = t + ("_onset" if suffix == "_grade" else "_grade")
        if other not in names:
            problems.append(f"{where}: {other}: a {h} column needs a {other} column "
                            f"(got {', '.join(names)})")
            continue
        found[t] = canon[t]
    return found


def parse_patient_log(text: str, source: str, n_doses: int, window_days: float,
                      as_of: Optional[dt.date] = None, tox_types: Sequence[str] = (),
                      dlt_rule: Optional[Sequence[Tuple[str, int]]] = None) -> PatientLog:
    """Check every row (see the module docstring) against ``n_doses`` and the DLT window.
    ``tox_types``: the toxicity types a log may grade (``TYPE_grade`` / ``TYPE_onset``
    columns); ``dlt_rule``: ``((type, min_grade), ...)`` over them (default: every type at
    grade >= 3)."""
    rule = tuple((str(t), int(g)) for t, g in (dlt_rule if dlt_rule is not None
                                                else [(t, 3) for t in tox_types]))
    bad_rule = [t for t, _ in rule if t not in tox_types]
    if bad_rule:
        raise ValueError(f"DLT rule: unknown toxicity type {bad_rule[0]!r} (types: "
                         f"{', '.join(tox_types)})")
    problems: List[str] = []
    comments: List[str] = []
    rows: List[Tuple[int, List[str]]] = []
    for lineno, raw in enumerate(io.StringIO(text), start=1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            comments.append(stripped[1:].strip())
            continue
        if not stripped:
            continue
        cells = next(csv.reader([raw]))
        rows.append((lineno, [c.strip() for c in cells]))
    if not rows:
        raise PatientLogError([f"{source}: no header row (expected columns "
                               f"{', '.join(LOG_COLUMNS)})"])
    head_line, header = rows[0]
    names = [h.lower() for h in header]
    graded = _graded_columns(names, tox_types, f"{source}:{head_line}", problems)
    unknown = [h for h in names if h not in LOG_COLUMNS
               and not any(h.endswith(x) for x in _GRADED_SUFFIXES)]
    for h in unknown:
        problems.append(f"{source}:{head_line}: {h}: unknown column (known: "
                        f"{', '.join(LOG_COLUMNS)}) (got {_short(h)})")
    for r in REQUIRED:
        if r not in names:
            problems.append(f"{source}:{head_line}: {r}: required column is missing "
                            f"(got {', '.join(names)})")
    dup = sorted({h for h in names if names.count(h) > 1})
    for h in dup:
        problems.append(f"{source}:{head_line}: {h}: column given twice (got {', '.join(names)})")
    if problems:
        raise PatientLogError(problems)
    if len(rows) - 1 > MAX_LOG_ROWS:
        raise PatientLogError([f"{source}: more than {MAX_LOG_ROWS:,} patients "
                               f"(got {len(rows) - 1:,})"])
    seen: Dict[str, int] = {}
    out: List[PatientRecord] = []
    for lineno, cells in rows[1:]:
        where = f"{source}:{lineno}"
        if len(cells) != len(names):
            problems.append(f"{where}: (row): expected {len(names)} values as in the header "
                            f"(got {len(cells)})")
            continue
        v = dict(zip(names, cells))
        bad = len(problems)

        def err(col, msg, got):
            problems.append(f"{where}: {col}: {msg} (got {_short(got)})")

        pid = v["id"]
        if not pid:
            err("id", "required", pid)
        elif pid in seen:
            err("id", f"duplicate id (also line {seen[pid]})", pid)
        else:
            seen[pid] = lineno

        def dose_of(col, required):
            t = v.get(col, "")
            if not t:
                if required:
                    err(col, "required", t)
                return None
            if not (t.isascii() and t.isdigit()) or len(t) > 6 or not 1 <= int(t) <= n_doses:
                err(col, f"unknown dose: expected a dose level from 1 to {n_doses}", t)
                return None
            return int(t)

        def date_of(col, required=False):
            t = v.get(col, "")
            if not t:
                if required:
                    err(col, "required", t)
                return None
            try:
                if len(t) != 10:
                    raise ValueError
                return dt.date.fromisoformat(t)
            except ValueError:
                err(col, "expected a date YYYY-MM-DD", t)
                return None

        dose = dose_of("dose", True)
        received = dose_of("dose_received", False)
        enrolled = date_of("enrolled", True)
        infused = date_of("infused")
        dlt = date_of("dlt_date")
        end = date_of("end_date")
        drop_text = v.get("dropout", "").lower()
        if drop_text not in _YES | _NO:
            err("dropout", "expected yes or no", v.get("dropout", ""))
        dropout = drop_text in _YES
        events: List[GradedEvent] = []
        for low, typ in graded.items():
            gt, ot = v[low + "_grade"], v[low + "_onset"]
            grade = 0
            if gt:
                if not (gt.isascii() and gt.isdigit()) or len(gt) > 2 \
                        or int(gt) > MAX_LOG_GRADE:
                    err(low + "_grade", f"expected a grade from 0 to {MAX_LOG_GRADE}", gt)
                    continue
                grade = int(gt)
            onset = date_of(low + "_onset")
            if ot and onset is None:
                continue
            if grade > 0 and onset is None:
                err(low + "_onset", f"{typ} grade {grade} needs its onset date", ot)
                continue
            if grade == 0 and onset is not None:
                err(low + "_grade", f"an onset date ({onset}) needs a grade from 1 to "
                                    f"{MAX_LOG_GRADE}", gt)
                continue
            if onset is None:
                continue
            if not infused:
                err(low + "_onset", "an event needs an infusion date (the DLT window starts "
                                    "there)", ot)
            elif onset < infused:
                err(low + "_onset", f"onset before the infusion ({infused})", ot)
            elif end and onset > end:
                err(low + "_onset", f"onset after the end of follow-up ({end})", ot)
            else:
                events.append(GradedEvent(typ, grade, onset))
        events.sort(key=lambda e: e.onset)
        if graded and len(problems) == bad:
            hits = [e for e in events if (e.onset - infused).days <= window_days
                    and any(e.type == t and e.grade >= g for t, g in rule)]
            derived = hits[0].onset if hits else None
            if dlt and dlt != derived:
                rule_text = ", ".join(f"{t} grade >= {g}" for t, g in rule)
                got = (f"a DLT on {derived} ({hits[0].type} grade {hits[0].grade})"
                       if derived else "no DLT")
                err("dlt_date", f"disagrees with the grades: the DLT rule ({rule_text}, "
                                f"onset within {window_days:g} days) gives {got}",
                    v["dlt_date"])
            elif derived:
                dlt = derived       # checked below as a given DLT date would be
        if enrolled and infused and infused < enrolled:
            err("infused", f"infusion before enrollment ({enrolled})", v["infused"])
        if dlt and not infused:
            err("dlt_date", "a DLT needs an infusion date (the DLT window starts there)",
                v["dlt_date"])
        if dlt and infused and dlt < infused:
            err("dlt_date", f"DLT before the infusion ({infused})", v["dlt_date"])
        if dlt and infused and (dlt - infused).days > window_days:
            err("dlt_date", f"DLT on day {(dlt - infused).days} after infusion, after the "
                            f"{window_days:g}-day DLT window", v["dlt_date"])
        if end and infused and end < infused:
            err("end_date", f"end of follow-up before the infusion ({infused})", v["end_date"])
        elif end and enrolled and end < enrolled:
            err("end_date", f"end of follow-up before enrollment ({enrolled})", v["end_date"])
        if dlt and end and dlt > end:
            err("dlt_date", f"DLT after the end of follow-up ({end})", v["dlt_date"])
        if dropout and not end:
            err("end_date", "a drop-out needs its date in end_date", v.get("end_date", ""))
        if dropout and dlt:
            err("dropout", "a patient with a DLT is evaluable: not a drop-out",
                v.get("dropout", ""))
        if (end and infused and not dlt and not dropout
                and (end - infused).days < window_days):
            err("end_date", f"follow-up ended on day {(end - infused).days} of the "
                            f"{window_days:g}-day window without a DLT: mark dropout yes or "
                            "correct the date", v["end_date"])
        if len(problems) > bad:
            continue
        if as_of is not None:  # the log as known on the cut-off day
            if enrolled > as_of:
                continue
            infused = infused if infused and infused <= as_of else None
            dlt = dlt if dlt and dlt <= as_of else None
            if end and end > as_of:
                end, dropout = None, False
            events = [e for e in events if e.onset <= as_of]
        out.append(PatientRecord(pid, lineno, dose, received or dose, enrolled, infused, dlt,
                                 end, dropout, v.get("cohort") or None, tuple(events)))
    if problems:
        raise PatientLogError(problems)
    if not out:
        raise PatientLogError([f"{source}: no patients" + (
            f" enrolled by the data cut-off {as_of}" if as_of else " (only a header)")])
    out.sort(key=lambda p: p.enrolled)  # stable: same-day patients keep the file order
    return PatientLog(source, tuple(out), tuple(comments), tuple(graded.values()),
                      rule if graded else ())
