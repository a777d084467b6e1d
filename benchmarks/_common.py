"""Helpers shared by the benchmark scripts: optional JSON-lines output with machine facts.

The scripts print their figures.  They write nothing unless asked: ``--save PATH`` appends one
JSON line per figure to PATH; ``--save`` alone appends to ``benchmarks/results/NAME``, a
folder that git ignores (the figures quoted in the README are the reference).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Optional

RESULTS = Path(__file__).resolve().parent / "results"


def add_save_option(ap: argparse.ArgumentParser, name: str) -> None:
    """``--save [PATH]``: append the figures as JSON lines (default benchmarks/results/NAME)."""
    ap.add_argument("--save", nargs="?", const=str(RESULTS / name), default=None,
                    metavar="PATH",
                    help=f"append one JSON line per figure to PATH (without PATH: "
                         f"benchmarks/results/{name}, not tracked by git)")


def record(path: Optional[str], **fields) -> dict:
    """The record with the date and machine facts; appended to ``path`` when one is given."""
    rec = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(), "machine": platform.machine(),
           "cpus": os.cpu_count(), **fields}
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
    return rec


#: designs the benchmarks add to a scenario that lacks them (the scenario files stay as they
#: are: they are part of the golden snapshot)
EXTRA_DESIGNS = ({"type": "mtpi2"}, {"type": "keyboard"}, {"type": "i3+3"})


def scenario_with_extra_designs(path, max_n=None, only=None):
    """The scenario at ``path`` plus :data:`EXTRA_DESIGNS` (those whose type it lacks), with
    ``trial.max_n`` replaced when given; ``only``: keep these design names."""
    from escalation_sim.inputs.scenario import load_scenario, load_scenario_dict
    base = load_scenario(path)
    raw = dict(base.raw)
    have = {d.type for d in base.designs}
    raw["designs"] = list(raw["designs"]) + [d for d in EXTRA_DESIGNS if d["type"] not in have]
    if max_n is not None:
        raw["trial"] = dict(raw["trial"], max_n=max_n)
    if only:
        raw["designs"] = [d for d in raw["designs"] if (d.get("name") or d["type"]) in only]
    return load_scenario_dict(raw, str(path))


def same_columns(a: dict, b: dict) -> bool:
    """Two ``simulate_des_trials`` outputs equal column by column (NaN equal to NaN; the
    per-trial decision-time arrays one by one)."""
    import numpy as np
    for k, v in a.items():
        w = b[k]
        if isinstance(v, np.ndarray):
            if not np.array_equal(v, w, equal_nan=v.dtype.kind == "f"):
                return False
        elif k == "decision_times":
            if any(not np.array_equal(x, y) for x, y in zip(v, w, strict=True)):
                return False
        elif v != w:
            return False
    return True
