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
from typing import Dict, List, Optional, Tuple, Union

__all__ = ["PatientRecord", "PatientLog", "PatientLogError", "read_patient_log",
           "parse_patient_log", "LOG_COLUMNS"]

REQUIRED = ("id", "dose", "enrolled")
OPTIONAL = ("dose_received", "infused", "dlt_date", "end_date", "dropout", "cohort")
LOG_COLUMNS = REQUIRED + OPTIONAL
_YES = {"yes", "y", "true", "1"}
_NO = {"no", "n", "false", "0", ""}
MAX_LOG_ROWS = 10_000
MAX_LOG_BYTES = 5_000_000


class PatientLogError(ValueError):
    """All the problems of one log, one line each."""

    def __init__(self, problems: List[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


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


@dataclass(frozen=True)
class PatientLog:
    source: str
    patients: Tuple[PatientRecord, ...]     # in enrollment order (ties: file order)
    comments: Tuple[str, ...]

    @property
    def last_date(self) -> dt.date:
        days = []
        for p in self.patients:
            days += [d for d in (p.enrolled, p.infused, p.dlt_date, p.end_date) if d]
        return max(days)


def _short(v: str) -> str:
    return repr(v) if len(v) <= 40 else repr(v[:37]) + "..."


def read_patient_log(path: Union[str, Path], n_doses: int, window_days: float,
                     as_of: Optional[dt.date] = None) -> PatientLog:
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
    return parse_patient_log(text, str(path), n_doses, window_days, as_of)


def parse_patient_log(text: str, source: str, n_doses: int, window_days: float,
                      as_of: Optional[dt.date] = None) -> PatientLog:
    """Check every row (see the module docstring) against ``n_doses`` and the DLT window."""
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
    unknown = [h for h in names if h not in LOG_COLUMNS]
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
        out.append(PatientRecord(pid, lineno, dose, received or dose, enrolled, infused, dlt,
                                 end, dropout, v.get("cohort") or None))
    if problems:
        raise PatientLogError(problems)
    if not out:
        raise PatientLogError([f"{source}: no patients" + (
            f" enrolled by the data cut-off {as_of}" if as_of else " (only a header)")])
    out.sort(key=lambda p: p.enrolled)  # stable: same-day patients keep the file order
    return PatientLog(source, tuple(out), tuple(comments))
