"""Helpers shared by the benchmark scripts: JSON-lines output with machine facts."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def record(file: str, **fields) -> dict:
    """Append one JSON line to benchmarks/results/FILE and return the record."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    rec = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(), "machine": platform.machine(),
           "cpus": os.cpu_count(), **fields}
    with open(RESULTS / file, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")
    return rec
