"""Study files: scenarios x design variants x parameter sweeps, run as one checkpointed job.

A study file expands into a grid of *cells*; each cell is an ordinary scenario (validated like
a scenario file) on which every design is simulated with the same patients.  Example::

    name: standard-grid
    description: six standard truths, three target levels, two sample sizes
    scenarios: ["../standard_*.yaml"]    # files, folders (their *.yaml) or glob patterns,
                                         # relative to the study file
    designs:                             # optional: replaces the designs of every scenario
      - {type: "3+3"}
      - {type: boin}
      - {type: crm, skeleton: [0.10, 0.17, 0.25, 0.35]}
    sweep:                               # every combination of these values
      target: [0.20, 0.25, 0.30]
      trial.max_n: [24, 30]
    cases:                               # optional: listed combinations, crossed with sweep
      - {designs.crm.skeleton: [0.05, 0.10, 0.20, 0.30]}
      - {designs.crm.skeleton: [0.10, 0.17, 0.25, 0.35]}
    logistics: false                     # optional: drop conduct blocks (time-free engine)
    simulation: {n_trials: 100000, seed: 2026}

A parameter is a dotted path into the scenario: ``target``, ``trial.cohort_size``,
``trial.max_n``, ``truth.p_dlt``, ``conduct.accrual_per_month``, ``oc.acceptable``; design
options are addressed by design name (``designs.crm.skeleton``, ``designs.boin.cutoff_eli``;
``designs.*.cohort_size`` sets every design).  Cells are ordered scenario file, then case,
then sweep (the last sweep key varies fastest).  Every cell uses the study's seed, so all
cells see the same latent patient uniforms (common random numbers across the grid).

Output (``escalation-sim study FILE --out DIR``): ``oc`` (one row per cell x design with the
parameters as columns), ``summary`` (cell x design x dose), ``paired`` and ``cells`` (the
expanded grid) as CSV and Parquet, ``cells.json`` (each cell's resolved scenario) and
``study.json`` (metadata), every file written atomically and ``manifest.json`` (each file's
SHA-256) last.  Each cell x chunk is checkpointed under ``DIR/checkpoint``; ``--resume``
continues an interrupted study.  The folder is locked while the study runs.
"""
from __future__ import annotations

import copy
import difflib
import glob
import itertools
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml
from pydantic import Field, ValidationError, field_validator

from ..inputs.scenario import (MAX_TRIALS, MAX_SEED, Scenario, ScenarioError, ScenarioModel,
                               _pydantic_problems, _short, _Strict, load_scenario_dict,
                               load_yaml_file)

_SWEEPABLE = [k for k in ScenarioModel.model_fields if k not in ("simulation",)]
#: cells in a study grid (scenario files x cases x sweep combinations)
MAX_CELLS = 10_000


class StudySimulation(_Strict):
    n_trials: int = Field(default=10000, ge=1, le=MAX_TRIALS, description="trials per cell")
    seed: int = Field(default=2026, ge=0, le=MAX_SEED,
                      description="one seed for every cell (common random numbers)")
    chunk_size: Optional[int] = Field(
        default=None, ge=1, description="trials per checkpointed chunk (default: an eighth "
                                        "of n_trials, at most 20000; at most 500 for "
                                        "scenarios with a conduct block)")


class StudyModel(_Strict):
    name: str
    description: str = ""
    scenarios: Union[str, List[str]] = Field(
        description="scenario files, folders of them or glob patterns, relative to the study")
    designs: Optional[List[Dict[str, Any]]] = Field(
        default=None, description="design variants replacing each scenario's designs")
    sweep: Dict[str, List[Any]] = Field(
        default_factory=dict, description="parameter path -> values; every combination")
    cases: List[Dict[str, Any]] = Field(
        default_factory=list, description="listed parameter combinations, crossed with sweep")
    logistics: bool = Field(
        default=True, description="false: drop the scenarios' conduct blocks and run the "
                                  "time-free cohort engine")
    simulation: StudySimulation = Field(default_factory=StudySimulation)

    @field_validator("scenarios")
    @classmethod
    def _some(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("list at least one scenario file, folder or pattern")
        return v

    @field_validator("sweep")
    @classmethod
    def _values(cls, v):
        empty = [k for k, vals in v.items() if not vals]
        if empty:
            raise ValueError(f"every sweep needs at least one value; empty: {empty}")
        return v

    @field_validator("designs")
    @classmethod
    def _designs(cls, v):
        if v is not None and not v:
            raise ValueError("list at least one design (or leave designs out to keep each "
                             "scenario's own)")
        return v


@dataclass
class Cell:
    """One scenario of the grid."""

    index: int
    file: str
    params: Dict[str, Any]
    scenario: Scenario
    hash: str
    label: str


@dataclass
class Study:
    model: StudyModel
    source: str
    cells: List[Cell]
    param_names: List[str]

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def n_trials(self) -> int:
        return self.model.simulation.n_trials

    @property
    def seed(self) -> int:
        return self.model.simulation.seed

    def cells_table(self):
        """One row per cell: its parameters and the resolved truth and trial settings."""
        import pandas as pd
        from .loop import choose_engine
        rows = []
        for c in self.cells:
            sc = c.scenario
            row = {"cell": c.index, "scenario_file": c.file, "scenario": sc.name}
            for k in self.param_names:
                row[k] = _param_value(c.params.get(k))
            row.update({"label": c.label, "n_doses": sc.n_doses, "target": sc.target,
                        "p_true": json.dumps([float(x) for x in sc.p_true]),
                        "max_n": sc.model.trial.max_n,
                        "cohort_size": sc.model.trial.cohort_size,
                        "designs": ", ".join(d.name for d in sc.designs),
                        "engine": choose_engine(sc),
                        "scenario_hash": c.hash})
            rows.append(row)
        return _tidy_params(pd.DataFrame(rows), self.param_names)


# ---------------------------------------------------------------------------------------------
# loading and expansion
def load_study(path: Union[str, Path], n_trials: Optional[int] = None,
               seed: Optional[int] = None) -> Study:
    """Read, validate and expand a study file (raises ScenarioError listing every problem).
    ``n_trials`` / ``seed`` replace the file's ``simulation`` values (e.g. from the command
    line)."""
    path = Path(path)
    source, raw = load_yaml_file(path)
    if isinstance(raw, dict) and (n_trials is not None or seed is not None):
        sim = raw.get("simulation")
        sim = dict(sim) if isinstance(sim, dict) else {}
        if n_trials is not None:
            sim["n_trials"] = n_trials
        if seed is not None:
            sim["seed"] = seed
        raw = dict(raw, simulation=sim)
    return load_study_dict(raw, source, path.parent, self_path=path)


def is_study_file(path: Union[str, Path]) -> bool:
    """Whether a YAML file is a study (a ``scenarios`` key, no ``doses``), not a scenario."""
    try:
        _, raw = load_yaml_file(Path(path))
    except ScenarioError:
        return False
    return isinstance(raw, dict) and "scenarios" in raw and "doses" not in raw


def load_study_dict(raw: Any, source: str = "<study>", base_dir: Union[str, Path] = ".",
                    self_path: Optional[Path] = None) -> Study:
    if not isinstance(raw, dict):
        raise ScenarioError(source, ["(top level): expected a mapping of keys "
                                     f"(got {_short(raw)})"])
    problems: List[str] = []
    model = None
    try:
        model = StudyModel.model_validate(raw)
    except ValidationError as err:
        problems.extend(_pydantic_problems(err, model=StudyModel, data=raw))
    base_dir = Path(base_dir)

    # parameter paths (checked on the raw mapping, so they are reported with other problems)
    sweep = raw.get("sweep") if isinstance(raw.get("sweep"), dict) else {}
    cases = [c for c in raw.get("cases") or [] if isinstance(c, dict)] \
        if isinstance(raw.get("cases"), list) else []
    for where, keys in [("sweep", list(sweep))] + [
            (f"cases[{i}]", list(c)) for i, c in enumerate(cases)]:
        for k in keys:
            msg = _check_path(str(k))
            if msg:
                problems.append(f"{where}.{k}: {msg} (got {_short(k)})")
    if raw.get("logistics") is False:
        for k in list(sweep) + [k for c in cases for k in c]:
            if str(k).split(".")[0] == "conduct":
                problems.append(f"logistics: false drops the conduct block, so {k} cannot be "
                                "swept (got false)")
    overlap = sorted(set(sweep) & {k for c in cases for k in c})
    if overlap:
        problems.append(f"cases: {overlap} also in sweep; give each parameter in one place "
                        f"(got {_short(overlap)})")

    # scenario files
    scen = raw.get("scenarios")
    entries = [scen] if isinstance(scen, str) else [e for e in scen if isinstance(e, str)] \
        if isinstance(scen, list) else []
    files: List[Tuple[str, Path]] = []
    for i, entry in enumerate(entries):
        where = "scenarios" if isinstance(scen, str) else f"scenarios[{i}]"
        found = _expand_entry(entry, base_dir, self_path)
        if isinstance(found, str):
            problems.append(f"{where}: {found} (got {_short(entry)})")
            continue
        files.extend(found)
    # the grid size, before any scenario file is read or any cell is built
    n_files = len(files)
    n_cases = len(cases) or 1
    n_combos = 1
    for vals in sweep.values():
        n_combos *= len(vals) if isinstance(vals, list) and vals else 1
    n_cells = n_files * n_cases * n_combos
    if n_cells > MAX_CELLS:
        problems.append(f"sweep: the grid has {n_cells:,} cells ({n_files} scenario "
                        f"file{'s' if n_files != 1 else ''} x {n_cases} case"
                        f"{'s' if n_cases != 1 else ''} x {n_combos:,} sweep combinations), "
                        f"more than the limit of {MAX_CELLS:,}; split the study into "
                        f"several files (got {_short(sweep)})")
        raise ScenarioError(source, problems)
    bases: List[Tuple[str, Path, Dict[str, Any]]] = []
    for shown, p in files:
        try:
            _, data = load_yaml_file(p)
        except ScenarioError as exc:
            problems.extend(f"scenarios: {shown}: {e}" for e in exc.problems)
            continue
        if not isinstance(data, dict):
            problems.append(f"scenarios: {shown}: expected a scenario mapping "
                            f"(got {_short(data)})")
            continue
        bases.append((shown, p, data))
    if problems:
        raise ScenarioError(source, problems)
    assert model is not None

    # the grid
    sweep_keys = list(model.sweep)
    case_keys: List[str] = []
    for c in model.cases:
        case_keys.extend(k for k in c if k not in case_keys)
    param_names = case_keys + sweep_keys
    combos = list(itertools.product(*[model.sweep[k] for k in sweep_keys]))
    cases = model.cases or [{}]
    cells: List[Cell] = []
    cell_problems: Dict[str, List[int]] = {}
    labels: Dict[int, str] = {}
    seen: Dict[str, int] = {}
    index = 0
    from .checkpoint import scenario_hash
    for shown, p, data in bases:
        for case in cases:
            for combo in combos:
                params = dict(case)
                params.update(zip(sweep_keys, combo))
                base = data.get("name") if isinstance(data.get("name"), str) else p.stem
                label = base + "".join(f", {k}={_short(v)}" for k, v in params.items())
                labels[index] = label
                cell_raw = copy.deepcopy(data)
                if model.designs is not None:
                    cell_raw["designs"] = copy.deepcopy(model.designs)
                if not model.logistics:
                    cell_raw.pop("conduct", None)
                cell_raw["simulation"] = {"n_trials": model.simulation.n_trials,
                                          "seed": model.simulation.seed}
                errs = []
                for k, v in params.items():
                    err = _apply(cell_raw, k, copy.deepcopy(v))
                    if err:
                        errs.append(err)
                sc = None
                try:
                    sc = load_scenario_dict(cell_raw, f"{source} cells[{index}]")
                except ScenarioError as exc:
                    errs.extend(exc.problems)
                if sc is not None:
                    tte = [d.name for d in sc.designs if d.time_to_event]
                    if tte and not sc.has_logistics:
                        errs.append(f"designs: time-to-event designs {tte} need calendar time: "
                                    "add a conduct block")
                if sc is not None and not errs:
                    h = scenario_hash(sc)
                    if h in seen:
                        errs.append(f"same scenario as cells[{seen[h]}] ({labels[seen[h]]}); "
                                    "remove the repeat")
                    else:
                        seen[h] = index
                        cells.append(Cell(index, shown, params, sc, h, label))
                for e in errs:
                    cell_problems.setdefault(e, []).append(index)
                index += 1
    for e, idx in cell_problems.items():
        more = (f" (and {len(idx) - 1} more cell{'s' if len(idx) > 2 else ''})"
                if len(idx) > 1 else "")
        problems.append(f"cells[{idx[0]}] ({labels[idx[0]]}): {e}{more}")
    if problems:
        raise ScenarioError(source, problems)
    return Study(model, source, cells, param_names)


def _check_path(path: str) -> Optional[str]:
    parts = path.split(".")
    if any(not p for p in parts):
        return "a parameter is a dotted path like trial.max_n or designs.crm.skeleton"
    head = parts[0]
    if head == "simulation":
        return "set n_trials and seed in the study's own simulation block"
    if head not in _SWEEPABLE:
        close = difflib.get_close_matches(head, _SWEEPABLE, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown scenario key {head!r}{hint}"
    if head == "designs" and len(parts) == 2:
        return ("address a design option as designs.<design name>.<option>, e.g. "
                "designs.crm.skeleton (designs.*.<option> sets every design)")
    return None


def _apply(raw: Dict[str, Any], path: str, value) -> Optional[str]:
    """Set ``path`` in the raw scenario mapping; a message if it cannot be set."""
    parts = path.split(".")
    if parts[0] == "designs" and len(parts) >= 3:
        designs = raw.get("designs")
        if not isinstance(designs, list):
            return f"{path}: the scenario has no designs list"
        name = parts[1]
        names = [d.get("name") or d.get("type") if isinstance(d, dict) else None
                 for d in designs]
        targets = [d for d, n in zip(designs, names) if isinstance(d, dict)
                   and (name == "*" or str(n) == name)]
        if not targets:
            close = difflib.get_close_matches(name, [str(n) for n in names if n], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return (f"{path}: no design named {name!r}{hint} (designs: "
                    f"{', '.join(str(n) for n in names)})")
        for d in targets:
            err = _set(d, parts[2:], copy.deepcopy(value), path, f"designs.{name}")
            if err:
                return err
        return None
    return _set(raw, parts, value, path, "")


def _set(obj: Dict[str, Any], parts: List[str], value, path: str, prefix: str) -> Optional[str]:
    cur = obj
    for i, p in enumerate(parts[:-1]):
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            where = ".".join(([prefix] if prefix else []) + parts[:i + 1])
            return f"{path}: {where} is not a mapping in the scenario (got {_short(nxt)})"
        cur = nxt
    cur[parts[-1]] = value
    return None


def _expand_entry(entry: str, base_dir: Path, self_path: Optional[Path]):
    """The scenario files an entry names, as (shown name, path); a message if none."""
    p = Path(entry)
    full = p if p.is_absolute() else base_dir / p
    if any(ch in entry for ch in "*?["):
        paths = [Path(x) for x in sorted(glob.glob(str(full)))]
        paths = [x for x in paths if x.is_file()]
        what = "pattern matches no files"
    elif full.is_dir():
        paths = sorted([x for x in full.iterdir()
                        if x.is_file() and x.suffix in (".yaml", ".yml")])
        what = "folder holds no .yaml files"
    elif full.is_file():
        paths = [full]
        what = ""
    else:
        return "file not found"
    if self_path is not None:
        paths = [x for x in paths if x.resolve() != self_path.resolve()]
    if not paths:
        return what
    out = []
    for x in paths:
        try:
            shown = str(x.relative_to(base_dir))
        except ValueError:
            shown = str(x)
        out.append((shown, x))
    return out


def _param_value(v):
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return json.dumps(v)


def _tidy_params(df, names):
    """Parameter columns with one type each (mixed columns become strings)."""
    for k in names:
        if k not in df:
            continue
        vals = [v for v in df[k].tolist() if v is not None]
        kinds = {("num" if isinstance(v, (int, float)) and not isinstance(v, bool)
                  else type(v).__name__) for v in vals}
        if len(kinds) > 1:
            df[k] = [None if v is None else str(v) for v in df[k].tolist()]
    return df


# ---------------------------------------------------------------------------------------------
# running
@dataclass
class StudyResults:
    study: Study
    out_dir: Path
    oc: Any
    summary: Any
    paired: Any
    cells: Any
    meta: Dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """PCS (and mean duration on the discrete-event engine) of every design in every cell,
        one row per cell with its parameters first."""
        cells = self.cells.set_index("cell")
        front = (["scenario"] if cells["scenario"].nunique() > 1 else []) + \
            list(self.study.param_names)
        order = list(dict.fromkeys(self.oc["design"]))
        out = [f"{self.study.name}: {len(self.cells)} cells, {self.study.n_trials:,} trials "
               f"each, seed {self.study.seed}"]
        from ..results.display import pct
        oc = self.oc.copy()
        oc["pcs_text"] = [pct(p, s) for p, s in zip(oc["pcs"], oc["se_pcs"])]
        figures = [("pcs_text", "PCS % (SE): percentage of correct selection, Monte Carlo "
                                "SE in brackets", "{}")]
        if "duration_mean" in oc and oc["duration_mean"].notna().any():
            figures.append(("duration_mean", "mean trial duration (days)", "{:.0f}"))
        for col, title, fmt in figures:
            pv = oc.pivot(index="cell", columns="design", values=col)[order]
            pv = pv.apply(lambda c: [("-" if v != v else fmt.format(v)) for v in c])
            if front:
                left = cells.loc[pv.index, front].apply(
                    lambda c: [_fmt_param(v) for v in c])
                pv = left.join(pv)
            out.append(title)
            out.append(pv.to_string(index=not front))
        return "\n".join(out)


def _fmt_param(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def study_plans(study: Study) -> list:
    """One :class:`~escalation_sim.run.loop.RunPlan` per cell (keyed by the cell index)."""
    from .loop import plan_run
    return [plan_run(c.scenario, n_trials=study.n_trials, seed=study.seed,
                     chunk_size=study.model.simulation.chunk_size, key=c.index)
            for c in study.cells]


def run_study(file, out, n_jobs: Optional[int] = None, backend: Optional[str] = None,
              scheduler: Optional[str] = None, resume: bool = False,
              quiet: Optional[bool] = None, progress=None,
              command: Optional[str] = None) -> StudyResults:
    """Run every cell of a study file; write the tidy tables into ``out``.

    Chunks of every cell are dispatched together by the run loop
    (:func:`escalation_sim.run.loop.execute`: local processes by default, or a
    dask.distributed cluster with ``backend="dask"``), each checkpointed under
    ``out/checkpoint/cells`` as it finishes; ``resume=True`` reuses the chunks an interrupted
    run saved (each checked first), without it the study starts over.  The folder is locked
    for the run; every cell's checkpoint is checked before anything is written, so a refused
    run changes nothing.  Outputs are written atomically, ``manifest.json`` last.  Results
    are bit-identical for any backend, ``n_jobs`` or interruption.

    ``progress(n)`` is called with the number of trials each finished (or reused) chunk adds;
    the total is ``len(study.cells) * study.n_trials``.  Nothing is printed: ``quiet`` is
    accepted for older callers and has no effect (the command line prints the table).
    """
    import pandas as pd
    from ..results.files import OutputSet
    from ..results.tables import versions
    from .checkpoint import Checkpoint
    from .lock import FolderLock, check_output_folder
    from .loop import RunStats, dispatch_for, execute

    study = file if isinstance(file, Study) else load_study(file)
    dispatch = dispatch_for(None, n_jobs, backend,
                            scheduler)
    out = check_output_folder(out)
    plans = study_plans(study)
    by_index = {c.index: c for c in study.cells}
    n, seed = study.n_trials, study.seed
    with FolderLock(out, command=command):
        # every cell's checkpoint is checked before anything is written
        cks = {p.key: Checkpoint.prepare(out, p, resume=resume,
                                         subdir=f"checkpoint/cells/{by_index[p.key].hash[:16]}")
               for p in plans}
        cells_dir = out / "checkpoint" / "cells"
        if not resume and cells_dir.exists():
            shutil.rmtree(cells_dir)
        for ck in cks.values():
            ck.create()
        t0 = time.perf_counter()
        frames: Dict[str, Dict[int, Any]] = {"oc": {}, "summary": {}, "paired": {},
                                             "oc_file": {}}
        stats = RunStats()
        for plan, res in execute(plans, dispatch, checkpoints=cks, progress=progress,
                                 stats=stats):
            c = by_index[plan.key]
            for name, df in (("oc", res.oc()), ("summary", res.summary()),
                             ("paired", res.paired()), ("oc_file", res.oc_file())):
                frames[name][c.index] = _with_cell_columns(df, c, study.param_names)
        elapsed = time.perf_counter() - t0

        tables = {}
        for name, parts in frames.items():
            tables[name] = pd.concat([parts[i] for i in sorted(parts)], ignore_index=True)
            tables[name] = _tidy_params(tables[name], study.param_names)
        # oc.csv: the oc table plus every stop reason (0 where a cell never stopped so)
        stops = [c for c in tables["oc_file"].columns if c.startswith(("stop_", "se_stop_"))]
        tables["oc_file"][stops] = tables["oc_file"][stops].fillna(0.0)
        cells_df = study.cells_table()
        meta = {"study": study.name, "description": study.model.description,
                "source": study.source, "n_cells": len(study.cells), "n_trials": n,
                "seed": seed, "chunk_size": sorted(set(stats.chunk_sizes.values())),
                "parameters": study.param_names,
                "n_jobs": "auto" if dispatch.auto else dispatch.n_jobs,
                "backend": dispatch.backend, "scheduler": scheduler,
                "resumed_trials": stats.resumed_trials, "elapsed_s": elapsed,
                "versions": versions()}
        outputs = OutputSet(out).start()
        outputs.write_frame(cells_df, "cells")
        outputs.write_text("cells.json", json.dumps(
            [{"cell": c.index, "label": c.label, "scenario_file": c.file, "params": c.params,
              "scenario_hash": c.hash, "scenario": c.scenario.resolved()}
             for c in study.cells], indent=1, default=str))
        for name in ("oc", "summary", "paired"):
            outputs.write_frame(tables["oc_file" if name == "oc" else name], name)
        outputs.write_text("study.json", json.dumps(meta, indent=2, default=str))
        outputs.write_text("study.resolved.yaml", yaml.safe_dump(
            study.model.model_dump(mode="json"), sort_keys=False))
        outputs.commit({"study": study.name, "n_cells": len(study.cells), "n_trials": n,
                        "seed": seed})
    return StudyResults(study, out, tables["oc"], tables["summary"], tables["paired"],
                        cells_df, meta)


def _with_cell_columns(df, cell: Cell, names: List[str]):
    df = df.copy()
    pos = list(df.columns).index("scenario") if "scenario" in df.columns else 0
    df.insert(pos, "scenario_file", cell.file)
    df.insert(pos, "cell", cell.index)
    at = list(df.columns).index("scenario") + 1 if "scenario" in df.columns else pos + 2
    for j, k in enumerate(names):
        df.insert(at + j, k, [_param_value(cell.params.get(k))] * len(df))
    return df
