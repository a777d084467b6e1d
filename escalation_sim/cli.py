"""Command-line interface: ``escalation-sim COMMAND ...``.

Exit codes: 0 success, 2 invalid input (scenario file, options, outcome strings), 1 an
unexpected failure (set ESCALATION_SIM_DEBUG=1 to see its traceback), 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import warnings
from typing import List, Optional

from .inputs.scenario import (MAX_DOSES, MAX_JOBS, MAX_SEED, MAX_TRIALS, ScenarioError,
                              load_scenario, printable)
from .designs.base import Outcome
from .run import RunNote
from .run.lock import OutputFolderError

#: nodes printed by ``paths`` ((cohort size + 1) ^ cohorts grows fast)
MAX_PATH_LEAVES = 100_000


class UsageError(Exception):
    """Bad input that is not a scenario file problem."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the run stops its workers and cleans up."""


def _progress(args, total: int, desc: str):
    quiet = getattr(args, "quiet", False) or getattr(args, "json", False)
    if quiet or not sys.stderr.isatty():
        return None, None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None, None
    bar = tqdm(total=total, desc=desc, unit="trial", unit_scale=True, file=sys.stderr)
    return bar.update, bar


def cmd_validate(args) -> int:
    bad = 0
    for f in args.files:
        try:
            sc = load_scenario(f)
            print(f"{f}: OK ({sc.name}: {sc.n_doses} doses, {len(sc.designs)} designs"
                  f"{', calendar-time logistics' if sc.has_logistics else ''})")
        except ScenarioError as exc:
            print(printable(str(exc)), file=sys.stderr)
            bad += 1
    return 2 if bad else 0


def cmd_schema(args) -> int:
    from .inputs.scenario import scenario_json_schema
    print(json.dumps(scenario_json_schema(), indent=2))
    return 0


def _check_positive(name, value, minimum=1, maximum=None):
    if value is not None and value < minimum:
        raise UsageError(f"--{name} must be >= {minimum} (got {value})")
    if value is not None and maximum is not None and value > maximum:
        raise UsageError(f"--{name} must be <= {maximum:,} (got {value:,})")


def _check_out_dir(out) -> None:
    """--out must be usable (a folder, or creatable, and writable) before any work starts."""
    if out:
        from .run.lock import check_output_folder
        check_output_folder(out)


def _command(args) -> str:
    return " ".join(["escalation-sim"] + list(getattr(args, "argv", None) or [args.command]))


def _check_run_options(args) -> None:
    """The numeric options of run / report / study, with the scenario file's own limits."""
    _check_positive("n-trials", getattr(args, "n_trials", None), 1, MAX_TRIALS)
    _check_positive("chunk-size", getattr(args, "chunk_size", None), 1, MAX_TRIALS)
    seed = getattr(args, "seed", None)
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be an integer from 0 to 2^63 - 1 = {MAX_SEED} "
                         f"(got {seed})")
    jobs = getattr(args, "n_jobs", None)
    if jobs is not None and (jobs == 0 or jobs < -1 or jobs > MAX_JOBS):
        raise UsageError(f"n_jobs must be -1 (every CPU) or an integer from 1 to {MAX_JOBS} "
                         f"(got --n-jobs {jobs})")


def _check_exact(sc, designs) -> None:
    """Refuse, naming the file and field, an exact enumeration too large to finish."""
    from .engines.exact import exact_size_problem, patient_cap
    problems = []
    for i, item in enumerate(sc.designs):
        if (designs and item.name not in designs) or item.time_to_event:
            continue
        msg = exact_size_problem(item.design)
        if msg is None:
            continue
        own = getattr(item.spec, "max_n", None) is not None
        where = f"designs[{i}].max_n" if own else "trial.max_n"
        problems.append(f"{where}: design {item.name!r}: {msg} "
                        f"(got {patient_cap(item.design)})")
    if problems:
        raise ScenarioError(sc.source, problems)


def cmd_run(args) -> int:
    from .run.loop import dispatch_for, plan_run, run_in_folder, run_plan
    _check_run_options(args)
    sc = load_scenario(args.file)
    _check_out_dir(args.out)
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR (the checkpoint is kept there)")
    if args.keep_trials and not args.out:
        raise UsageError("--keep-trials needs --out DIR (the per-trial tables are written "
                         "there)")
    method = args.method or sc.model.simulation.method
    if method == "exact":
        _check_exact(sc, args.design or None)
    plan = plan_run(sc, method=method, n_trials=args.n_trials, seed=args.seed,
                    chunk_size=args.chunk_size, designs=args.design or None,
                    logistics=False if args.no_logistics else None,
                    keep_trials=bool(args.keep_trials))
    if getattr(args, "calendar_engine", None) and plan.engine != "des":
        warnings.warn(RunNote(f"{args.file}: --calendar-engine is ignored: this run has no "
                              f"calendar time (engine {plan.engine})"), stacklevel=1)
    dispatch = None if method == "exact" else \
        dispatch_for(sc, args.n_jobs, args.backend, args.scheduler)
    upd, bar = (None, None) if method == "exact" else _progress(args, plan.n_trials, sc.name)
    try:
        if args.out:
            res = run_in_folder(plan, args.out, dispatch, resume=bool(args.resume),
                                progress=upd, command=_command(args))
        else:
            res = run_plan(plan, dispatch, progress=upd)
    except KeyboardInterrupt:
        if args.resume:
            print("finished chunks are saved; rerun the same command to continue",
                  file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(res.to_json(indent=None if args.compact else 2))
    else:
        print(res.table())
        if args.out:
            print(f"\ntables written to {args.out}/")
    return 0


def cmd_exact(args) -> int:
    args.method = "exact"
    for k in ("n_trials", "seed", "n_jobs", "chunk_size", "backend", "resume", "scheduler"):
        setattr(args, k, None)
    args.keep_trials = False
    args.no_logistics = True
    return cmd_run(args)


def _design_for(args):
    sc = load_scenario(args.file)
    if args.design is None:
        if len(sc.designs) == 1:
            return sc, sc.designs[0]
        raise UsageError(f"{args.file} has several designs "
                         f"({', '.join(d.name for d in sc.designs)}): choose one with --design")
    try:
        return sc, sc.design(args.design)
    except KeyError as exc:
        raise UsageError(exc.args[0])


def _state(sc, text: str, design=None):
    """The state after ``--outcomes``: N/T letters for binary designs, ``dose:grades`` for
    score designs (gBOIN), whose ``y`` are then sums of score units."""
    from .designs.base import Outcome
    from .outcomes import OutcomeStringError, state_from_outcomes
    units = (design.score_units if design is not None and design.outcome is Outcome.SCORE
             else None)
    try:
        return state_from_outcomes(text or "", sc.n_doses, units)
    except (OutcomeStringError, ValueError) as exc:
        raise UsageError(f"--outcomes: {exc}")


def _fmt_est(est: dict) -> List[str]:
    out = []
    for k, v in est.items():
        if isinstance(v, (list, tuple)):
            cells = ", ".join("-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))
                              for x in v)
            out.append(f"  {k}: [{cells}]")
        elif isinstance(v, float):
            out.append(f"  {k}: {v:.4f}")
        else:
            out.append(f"  {k}: {v}")
    return out


def cmd_next_dose(args) -> int:
    sc, item = _design_for(args)
    if item.time_to_event:
        raise UsageError(f"design {item.name!r} is time-to-event: next-dose needs complete "
                         "follow-up data; use the Python API with follow-up times")
    state = _state(sc, args.outcomes, item.design)
    dec = item.design.decide(state)
    est = item.design.estimates(state)
    labels = sc.dose_labels
    score = item.design.outcome is Outcome.SCORE
    sums = ([v / item.design.unit_scale for v in state.y] if score else None)
    doc = {"design": item.name, "outcomes": args.outcomes, "n": list(state.n),
           "dlt": None if score else list(state.y), "stop": dec.stop,
           "next_dose": None if dec.stop else dec.dose + 1,
           "cohort_size": None if dec.stop else dec.cohort_size, "reason": dec.reason,
           "stop_reason": dec.stop_reason.value if dec.stop_reason else None,
           "estimates": est}
    if score:
        doc["score_sum"] = sums
    if dec.stop:
        m = item.design.select_mtd(state)
        doc["mtd"] = None if m is None else m + 1
    if args.json:
        print(json.dumps(doc, default=str, indent=2))
        return 0
    if score:
        print(f"{item.name} after {args.outcomes!r} (normalized score sum / patients): "
              + ", ".join(f"{labels[d]} {sums[d]:.4g}/{state.n[d]}"
                          for d in range(sc.n_doses) if state.n[d]))
    else:
        print(f"{item.name} after {args.outcomes!r}: " + ", ".join(
            f"{labels[d]} {state.y[d]}/{state.n[d]}" for d in range(sc.n_doses) if state.n[d]))
    if dec.stop:
        m = doc["mtd"]
        print(f"STOP ({doc['stop_reason']}): {dec.reason}")
        print(f"recommended MTD: {'none' if m is None else f'dose {m} ({labels[m - 1]})'}")
    else:
        print(f"next: dose {dec.dose + 1} ({labels[dec.dose]}), cohort of {dec.cohort_size}"
              f" -- {dec.reason}")
    lines = _fmt_est(est)
    if lines:
        print("estimates:")
        print("\n".join(lines))
    return 0


def cmd_select_mtd(args) -> int:
    sc, item = _design_for(args)
    if args.outcomes is not None:
        state = _state(sc, args.outcomes, item.design)
    elif item.design.outcome is Outcome.SCORE:
        raise UsageError(f"design {item.name!r} scores graded toxicities: give --outcomes "
                         f"with one worst grade per patient, e.g. \"1:003 2:0104\" "
                         f"(--n/--dlt count DLTs)")
    else:
        from .types import TrialState
        try:
            n = [_ascii_int(x) for x in args.n.split(",")]
            y = [_ascii_int(x) for x in args.dlt.split(",")]
        except (AttributeError, ValueError):
            raise UsageError("give --outcomes, or --n and --dlt as comma-separated integers "
                             f"(got --n {args.n!r} --dlt {args.dlt!r})")
        if len(n) != sc.n_doses or len(y) != sc.n_doses:
            raise UsageError(f"--n and --dlt need {sc.n_doses} values each "
                             f"(got {len(n)} and {len(y)})")
        if any(a < 0 or b < 0 or b > a for a, b in zip(n, y)):
            raise UsageError(f"need 0 <= dlt <= n at every dose (got n={n}, dlt={y})")
        state = TrialState(tuple(n), tuple(y))
    m = item.design.select_mtd(state)
    if args.json:
        score = item.design.outcome is Outcome.SCORE
        extra = ({"score_sum": [v / item.design.unit_scale for v in state.y]} if score else {})
        print(json.dumps({"design": item.name, "n": list(state.n),
                          "dlt": None if score else list(state.y), **extra,
                          "mtd": None if m is None else m + 1,
                          "estimates": item.design.estimates(state)}, default=str, indent=2))
    else:
        print(f"{item.name}: MTD = " + ("none" if m is None else
                                       f"dose {m + 1} ({sc.dose_labels[m]})"))
        lines = _fmt_est(item.design.estimates(state))
        if lines:
            print("\n".join(lines))
    return 0


def _ascii_int(text: str) -> int:
    """A count written with the digits 0-9 (``int`` would also take '١')."""
    t = text.strip()
    if not (t.isascii() and t.lstrip("-").isdigit()) or len(t) > 9:
        raise ValueError(text)
    return int(t)


#: command-line flags of the table request's fields (design options: --option NAME=VALUE)
_TABLE_FLAGS = {"target": "--target", "max_n": "--max-n", "cohort_size": "--cohort-size",
                "n_doses": "--n-doses", "outcomes": "--outcomes"}


def _option_value(text: str, key: str = "option"):
    """A --option value: JSON first (numbers such as 1e-3, true, [0.1, 0.2]), else YAML
    (bare words, {halfwidth: 0.05}), else the text itself."""
    from .inputs.scenario import parse_yaml
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:  # within the input limits: an alias bomb here costs as much as in a file
        return parse_yaml(text, "--option")
    except ScenarioError as exc:
        if "malformed YAML" in exc.problems[0]:
            return text
        raise UsageError(f"--option {key}: {exc.problems[0]}")


def _parse_options(pairs) -> dict:
    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--option: expected NAME=VALUE, e.g. phi1=0.18 (got {pair!r})")
        if key == "type":
            raise UsageError(f"--option type: give the design type with --design (got {pair!r})")
        if key in out:
            raise UsageError(f"--option {key}: given twice (got {pair!r})")
        out[key] = _option_value(value, key)
    return out


def _flag(field, option_flags) -> str:
    if field in option_flags:
        return option_flags[field]
    return _TABLE_FLAGS.get(field, f"--option {field}")


def _table_spec(entry, options: dict, option_flags: dict):
    """The design's spec from the options; every problem on its own line, naming the flag."""
    import difflib
    from pydantic import ValidationError
    try:
        return entry.spec_model.model_validate({"type": entry.type, **options})
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = [str(p) for p in e["loc"] if not str(p).startswith("function-")]
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                close = difflib.get_close_matches(loc[-1], list(entry.spec_model.model_fields),
                                                  n=1)
                msg = f"not an option of {entry.type}" + (
                    f"; did you mean {close[0]!r}?" if close else "")
            where = (_flag(loc[0], option_flags) + "".join(f".{p}" for p in loc[1:])
                     if loc else "design options")
            got = "" if "(got " in msg else f" (got {e.get('input')!r})"
            problems.append(f"{where}: {msg}{got}")
        raise UsageError("\n".join(problems))


def _print_table(args, type_name: str, options: dict, option_flags: dict) -> int:
    """Build the table request, ask the design's registry entry for its table, print it."""
    from .designs.registry import get_entry
    from .designs.tables import TableInputError, TableRequest
    if args.target is not None and not 0 < args.target < 1:
        raise UsageError(f"--target must be in (0, 1) (got {args.target})")
    _check_positive("max-n", args.max_n)
    _check_positive("cohort-size", args.cohort_size)
    _check_positive("n-doses", getattr(args, "n_doses", None), 1, MAX_DOSES)
    if args.max_n is not None and args.max_n > 1000:
        raise UsageError(f"--max-n must be <= 1000 (got {args.max_n})")
    try:
        entry = get_entry(type_name)
    except KeyError as exc:
        raise UsageError(f"--design: {exc.args[0]} (got {type_name!r})")
    request = TableRequest(spec=_table_spec(entry, options, option_flags), target=args.target,
                           max_n=args.max_n, cohort_size=args.cohort_size,
                           n_doses=getattr(args, "n_doses", None),
                           outcomes=getattr(args, "outcomes", None))
    try:
        table = entry.decision_table(request)
    except TableInputError as exc:
        where = "" if exc.field is None else f"{_flag(exc.field, option_flags)}: "
        raise UsageError(f"{where}{exc}")
    for field, note in table.notes:
        print(f"escalation-sim {args.command}: note: {_flag(field, option_flags)}: {note}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(table.data, default=str, indent=2))
    else:
        print(table.text)
    return 0


def cmd_table(args) -> int:
    return _print_table(args, args.design, _parse_options(args.option), {})


#: the boundaries command's own flags for BOIN options
_BOUNDARY_FLAGS = {"phi1": "--phi1", "phi2": "--phi2", "cutoff_eli": "--cutoff-eli"}


def cmd_boundaries(args) -> int:
    """``table --design boin`` with BOIN's options as flags (kept for compatibility)."""
    options = {k: getattr(args, k) for k in _BOUNDARY_FLAGS if getattr(args, k) is not None}
    return _print_table(args, "boin", options, _BOUNDARY_FLAGS)


def cmd_paths(args) -> int:
    from .engines.paths import dose_paths, format_paths
    sc, item = _design_for(args)
    if item.time_to_event:
        raise UsageError(f"design {item.name!r} is time-to-event; dose paths need a time-free design")
    _check_positive("cohorts", args.cohorts)
    c = int(item.design.max_cohort_size)
    most = 0  # the most cohorts whose (c + 1)^cohorts paths stay within the limit
    while (c + 1) ** (most + 1) <= MAX_PATH_LEAVES:
        most += 1
    if args.cohorts > most:
        raise UsageError(f"--cohorts {args.cohorts} would print up to {c + 1}^{args.cohorts} "
                         f"paths with cohorts of {c}; at most {most} cohorts "
                         f"({MAX_PATH_LEAVES:,} paths) (got {args.cohorts})")
    if item.design.outcome is Outcome.SCORE:
        raise UsageError(f"design {item.name!r} scores graded toxicities: dose paths "
                         "enumerate DLT counts, so they are for binary designs only")
    state = _state(sc, args.outcomes or "")
    tree = dose_paths(item.design, state, args.cohorts)
    if args.json:
        print(json.dumps(tree, indent=2))
    else:
        print(format_paths(tree, sc.dose_labels, args.outcomes or ""))
    return 0


def cmd_report(args) -> int:
    from .report import write_report
    from .api import simulate
    from .run.lock import check_output_file
    _check_run_options(args)
    sc = load_scenario(args.file)
    check_output_file(args.output)
    n = args.n_trials or sc.model.simulation.n_trials
    upd, bar = _progress(args, n, f"{sc.name}")
    try:
        res = simulate(sc, n_trials=n, seed=args.seed, n_jobs=args.n_jobs,
                       designs=args.design or None,
                       logistics=False if args.no_logistics else None, progress=upd)
    finally:
        if bar is not None:
            bar.close()
    path = write_report(res, args.output)
    print(f"report written to {path}")
    return 0


def cmd_study(args) -> int:
    from .run.study import load_study, run_study
    _check_run_options(args)
    study = load_study(args.file)
    _check_out_dir(args.out)
    upd, bar = _progress(args, len(study.cells) * study.n_trials, study.name)
    try:
        res = run_study(study, args.out, n_jobs=args.n_jobs, backend=args.backend,
                        scheduler=args.scheduler, resume=args.resume, progress=upd,
                        command=_command(args))
    except KeyboardInterrupt:
        print("finished chunks are saved; rerun with --resume to continue", file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        print(res.table())
        print(f"\n{len(study.cells)} cells x {res.oc['design'].nunique()} designs in "
              f"{res.meta['elapsed_s']:.1f} s; tables written to {args.out}/ (oc, summary, "
              "paired, cells; manifest.json lists every file with its SHA-256)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    p = argparse.ArgumentParser(prog="escalation-sim",
                                description="Simulate phase I dose-escalation trials.")
    p.add_argument("--version", action="version", version=f"escalation-sim {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("validate", help="check scenario files")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("schema", help="print the JSON Schema of scenario files")
    s.set_defaults(func=cmd_schema)

    def run_opts(s, exact_only=False):
        s.add_argument("file", metavar="FILE")
        s.add_argument("--design", action="append", metavar="NAME",
                       help="only this design (repeatable)")
        s.add_argument("--out", metavar="DIR", help="write tidy tables and metadata here")
        s.add_argument("--json", action="store_true", help="print one JSON document")
        s.add_argument("--compact", action="store_true", help="JSON on one line")
        s.add_argument("--quiet", action="store_true", help="no progress bar")
        if exact_only:
            return
        s.add_argument("--n-trials", type=int, metavar="N")
        s.add_argument("--seed", type=int, metavar="S")
        s.add_argument("--n-jobs", type=int, metavar="J",
                       help="worker processes; -1 = every CPU (default: the scenario's "
                            "simulation.n_jobs, else auto: one process unless the run is "
                            "long enough for more to pay off)")
        s.add_argument("--chunk-size", type=int, metavar="C")
        s.add_argument("--backend", choices=["loky", "multiprocessing", "threading",
                                             "sequential", "dask"])
        s.add_argument("--scheduler", metavar="ADDRESS",
                       help="with --backend dask: scheduler address (default: a LocalCluster "
                            "of --n-jobs workers)")
        s.add_argument("--method", choices=["monte-carlo", "exact"])
        s.add_argument("--keep-trials", action="store_true",
                       help="also write per-trial tables (with --out)")
        s.add_argument("--no-logistics", action="store_true",
                       help="ignore the conduct block (time-free cohort engine)")
        s.add_argument("--resume", action="store_true", default=None,
                       help="with --out: checkpoint chunks and skip finished ones")
        s.add_argument("--calendar-engine", choices=["auto", "simpy"],
                       help="calendar-time engine: auto (the fast path where it applies, "
                            "the default) or simpy (the reference); same trials either way")

    s = sub.add_parser("run", help="simulate operating characteristics")
    run_opts(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("exact", help="exact operating characteristics by enumeration")
    run_opts(s, exact_only=True)
    s.set_defaults(func=cmd_exact)

    s = sub.add_parser("next-dose", help="the next dose on real trial data")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--design", metavar="NAME")
    s.add_argument("--outcomes", required=True, help='e.g. "1NNN 2NTN"')
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_next_dose)

    s = sub.add_parser("select-mtd", help="the MTD from final data")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--design", metavar="NAME")
    s.add_argument("--outcomes")
    s.add_argument("--n", help="patients per dose, e.g. 3,6,9,6")
    s.add_argument("--dlt", help="DLTs per dose, e.g. 0,1,2,3")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_select_mtd)

    s = sub.add_parser("table", help="print a design's decision table")
    s.add_argument("--design", required=True, metavar="TYPE",
                   help="design type, e.g. boin, 3+3, crm, tite-boin")
    s.add_argument("--target", type=float, help="target DLT rate")
    s.add_argument("--max-n", type=int, help="maximum sample size (default 30)")
    s.add_argument("--cohort-size", type=int, help="cohort size (default 1; 3+3: 3)")
    s.add_argument("--n-doses", type=int, help="number of doses (model-based designs)")
    s.add_argument("--outcomes", help='data so far for model-based designs, e.g. "1NNN 2NTN"')
    s.add_argument("--option", action="append", metavar="NAME=VALUE",
                   help="a design option as in the scenario file, e.g. phi1=0.18 or "
                        "skeleton=[0.1,0.2,0.3,0.45] (repeatable)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_table)

    s = sub.add_parser("boundaries", help="print the BOIN decision table "
                                          "(= table --design boin)")
    s.add_argument("--target", type=float, required=True)
    s.add_argument("--max-n", type=int, default=30)
    s.add_argument("--cohort-size", type=int, default=1)
    s.add_argument("--phi1", type=float)
    s.add_argument("--phi2", type=float)
    s.add_argument("--cutoff-eli", type=float, default=0.95)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_boundaries)

    s = sub.add_parser("paths", help="dose paths for the next cohorts")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--design", metavar="NAME")
    s.add_argument("--outcomes", default="")
    s.add_argument("--cohorts", type=int, default=2)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_paths)

    s = sub.add_parser("report", help="self-contained HTML report")
    s.add_argument("file", metavar="FILE")
    s.add_argument("-o", "--output", default="report.html")
    s.add_argument("--design", action="append", metavar="NAME", help="only this design")
    s.add_argument("--no-logistics", action="store_true", help="ignore the conduct block")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--n-trials", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--n-jobs", type=int)
    s.add_argument("--calendar-engine", choices=["auto", "simpy"],
                   help="calendar-time engine: auto (the fast path where it applies, "
                        "the default) or simpy (the reference); same trials either way")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("study", help="run a study grid (designs x scenarios x settings)")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--n-jobs", type=int, metavar="J",
                   help="worker processes; -1 = every CPU (default: auto)")
    s.add_argument("--backend",
                   choices=["loky", "multiprocessing", "threading", "sequential", "dask"],
                   help="where chunks run (default: loky processes)")
    s.add_argument("--scheduler", metavar="ADDRESS")
    s.add_argument("--resume", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--calendar-engine", choices=["auto", "simpy"],
                   help="calendar-time engine: auto (the fast path where it applies, "
                        "the default) or simpy (the reference); same trials either way")
    s.set_defaults(func=cmd_study)
    return p


def _show_note(message, category, filename, lineno, file=None, line=None,
               _default=warnings.showwarning):
    if isinstance(category, type) and issubclass(category, RunNote):
        print(f"note: {message}", file=sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


def _on_sigterm(signum, frame):
    raise Terminated()


def _descendants(pid: int) -> List[int]:
    """Pids of every live descendant of ``pid`` (from /proc; empty where there is none)."""
    children: dict = {}
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - not Linux
        return []
    for e in entries:
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat", "rb") as f:
                ppid = int(f.read().decode("ascii", "replace").rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(e))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _stop_children(before: set) -> None:
    """After an interrupt: end the worker processes this command started (joblib stops its
    own; this catches whatever is left, e.g. a resource tracker), never older children."""
    import time
    pids = [p for p in _descendants(os.getpid()) if p not in before]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        deadline = time.monotonic() + 3.0
        while pids and time.monotonic() < deadline:
            for p in list(pids):
                try:
                    done, _ = os.waitpid(p, os.WNOHANG)
                except ChildProcessError:  # not our child: gone once /proc forgets it
                    done = p if not os.path.exists(f"/proc/{p}") else 0
                if done:
                    pids.remove(p)
            if pids:
                time.sleep(0.05)
        if not pids:
            return


@contextlib.contextmanager
def _calendar_engine(engine: Optional[str]):
    """``--calendar-engine``: set for the command (and the worker processes it starts)
    through the environment variable the calendar engine reads, restored afterwards."""
    from .engines.calendar.fast import ENV_VAR
    if not engine:
        yield
        return
    old = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = engine
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = old


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # commands that may start worker processes: remember the children that are not theirs
    before = set(_descendants(os.getpid())) if args.command in ("run", "study", "report") \
        else set()
    old_term = None
    try:
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", RunNote)
            warnings.showwarning = _show_note
            with _calendar_engine(getattr(args, "calendar_engine", None)):
                return int(args.func(args) or 0)
    except Terminated:
        if old_term is not None:  # a second SIGTERM must not cut the cleanup short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_children(before)
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        _stop_children(before)
        print("interrupted", file=sys.stderr)
        return 130
    except ScenarioError as exc:
        print(printable(str(exc)), file=sys.stderr)
        return 2
    except UsageError as exc:
        for line in str(exc).splitlines():
            print(printable(f"escalation-sim {args.command}: error: {line}"), file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:  # pragma: no cover
            pass
        return 0
    except (ValueError, KeyError, OutputFolderError) as exc:
        if os.environ.get("ESCALATION_SIM_DEBUG"):
            raise
        msg = exc.args[0] if exc.args else str(exc)
        field = getattr(exc, "field", None)  # a run-time limit of a scenario's block
        if field and getattr(args, "file", None):
            print(printable(f"{args.file}: {field}: {msg}"), file=sys.stderr)
        else:
            print(printable(f"escalation-sim {args.command}: error: {msg}"), file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a full disk while writing outputs: nothing half-written
        if os.environ.get("ESCALATION_SIM_DEBUG"):
            raise
        where = f"cannot write {exc.filename}: " if exc.filename else ""
        print(f"escalation-sim {args.command}: error: {where}{exc.strerror or exc}",
              file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("ESCALATION_SIM_DEBUG"):
            raise
        print(printable(f"escalation-sim {args.command}: unexpected error: "
                        f"{type(exc).__name__}: {exc} (set ESCALATION_SIM_DEBUG=1 for details)"),
              file=sys.stderr)
        return 1
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
