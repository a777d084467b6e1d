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

# imported by _load_inputs() once the arguments are parsed (``--help`` needs none of it:
# the designs pull in pydantic and numpy); the scenario model (yaml, the truth and conduct
# models) only when a command loads a scenario (``table``/``boundaries`` without a file
# start without it)
MAX_DOSES = MAX_JOBS = MAX_SEED = MAX_TRIALS = None
ScenarioError = printable = RunNote = OutputFolderError = Outcome = None


def _load_inputs() -> None:
    global MAX_DOSES, MAX_JOBS, MAX_SEED, MAX_TRIALS, ScenarioError, printable
    global RunNote, OutputFolderError, Outcome
    from .designs.base import Outcome as _outcome
    from .inputs import limits as _lim
    from .run import RunNote as _note
    from .run.lock import OutputFolderError as _ofe
    MAX_DOSES, MAX_JOBS, MAX_SEED, MAX_TRIALS = (_lim.MAX_DOSES, _lim.MAX_JOBS, _lim.MAX_SEED,
                                                 _lim.MAX_TRIALS)
    ScenarioError, printable = _lim.ScenarioError, _lim.printable
    RunNote, OutputFolderError, Outcome = _note, _ofe, _outcome


def load_scenario(*args, **kwargs):
    """:func:`escalation_sim.inputs.scenario.load_scenario`, imported on first use."""
    from .inputs.scenario import load_scenario as load
    return load(*args, **kwargs)


#: nodes printed by ``paths`` ((cohort size + 1) ^ cohorts grows fast)
MAX_PATH_LEAVES = 100_000


class UsageError(Exception):
    """Bad input that is not a scenario file problem."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the run stops its workers and cleans up."""


#: seconds between progress lines when stderr is not a terminal (a log file, CI, nohup)
PROGRESS_LOG_INTERVAL = float(os.environ.get("ESCALATION_SIM_PROGRESS_INTERVAL", "10"))


class _LogProgress:
    """Progress for a non-terminal stderr: a line every few seconds with the trials done,
    the rate and the time left, and a last line when the run ends."""

    def __init__(self, total: int, desc: str, interval: float = PROGRESS_LOG_INTERVAL,
                 stream=None):
        import time
        self.total, self.desc, self.interval = int(total), desc, interval
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.lines = 0
        self._clock = time.monotonic
        self.t0 = self._last = self._clock()

    def update(self, n) -> None:
        self.done += int(n)
        now = self._clock()
        if now - self._last >= self.interval and self.done < self.total:
            self._last = now
            self.lines += 1
            self._line(now)

    def _line(self, now, final: bool = False) -> None:
        el = max(now - self.t0, 1e-9)
        rate = self.done / el
        frac = self.done / self.total if self.total else 1.0
        if final:
            tail = f"done in {_secs(el)}"
        else:
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            tail = f"about {_secs(left)} left"
        print(f"{self.desc}: {self.done:,}/{self.total:,} trials ({100 * frac:.0f}%), "
              f"{rate:,.0f} trials/s, {tail}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.lines:  # runs shorter than one interval stay silent
            self._line(self._clock(), final=self.done >= self.total)


def _secs(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _progress(args, total: int, desc: str):
    """(callback, closer): a tqdm bar on a terminal, a log line every few seconds
    otherwise, nothing with --quiet."""
    if getattr(args, "quiet", False):
        return None, None
    if not sys.stderr.isatty():
        log = _LogProgress(total, desc)
        return log.update, log
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        log = _LogProgress(total, desc)
        return log.update, log
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


#: run options that exact enumeration does not use (flag -> attribute)
_EXACT_IGNORES = {"--n-trials": "n_trials", "--seed": "seed", "--n-jobs": "n_jobs",
                  "--chunk-size": "chunk_size", "--backend": "backend",
                  "--scheduler": "scheduler", "--keep-trials": "keep_trials",
                  "--resume": "resume"}


def _check_exact_options(args) -> None:
    """Options that exact enumeration ignores are usage errors, never silently dropped."""
    given = [f for f, a in _EXACT_IGNORES.items() if getattr(args, a, None) not in (None, False)]
    if given:
        raise UsageError(f"exact enumeration computes every possible trial: {', '.join(given)} "
                         "do not apply (they are Monte Carlo settings); leave them out, or use "
                         f"--method monte-carlo (got {' '.join(given)})")


def _check_not_study_folder(out) -> None:
    """``run --out`` into a study's output folder would mix a run's tables with a study's."""
    if not out:
        return
    from pathlib import Path
    folder = Path(out)
    if (folder / "study.json").exists() or (folder / "checkpoint" / "cells").is_dir():
        raise UsageError(f"--out {out}: this folder holds a study's outputs (study.json); "
                         "write the run into another folder (got --out {out})".replace(
                             "{out}", str(out)))


def _cohort_notes(sc, designs=None) -> None:
    """Say (never silently) when the 3+3 ignores the trial's cohort size."""
    from .results.display import cohort_size_notes
    for note in cohort_size_notes(sc, designs):
        print(printable(f"note: {sc.source}: {note}"), file=sys.stderr)


def _interrupted(out, resume: bool, command: str) -> None:
    if out and resume:
        print(f"interrupted: the finished chunks are kept in {out}/checkpoint; run the same "
              f"command again to continue ({command})", file=sys.stderr)
    elif out:
        print("interrupted: nothing was kept (checkpoints need --resume); to be able to "
              f"continue next time, run with --out {out} --resume", file=sys.stderr)
    else:
        print("interrupted: nothing was kept; run with --out DIR --resume to checkpoint "
              "finished chunks and continue after an interruption", file=sys.stderr)


def cmd_run(args) -> int:
    from .run.loop import dispatch_for, plan_run, run_in_folder, run_plan
    _check_run_options(args)
    sc = load_scenario(args.file)
    _check_out_dir(args.out)
    _check_not_study_folder(args.out)
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR (the checkpoint is kept there)")
    if args.keep_trials and not args.out:
        raise UsageError("--keep-trials needs --out DIR (the per-trial tables are written "
                         "there)")
    if getattr(args, "compact", False) and not args.json:
        raise UsageError("--compact prints the JSON document on one line: use it with --json")
    method = args.method or sc.model.simulation.method
    designs = _design_names(sc, args.design)
    if method == "exact":
        _check_exact_options(args)
        _check_exact(sc, designs)
    plan = plan_run(sc, method=method, n_trials=args.n_trials, seed=args.seed,
                    chunk_size=args.chunk_size, designs=designs,
                    logistics=False if args.no_logistics else None,
                    keep_trials=bool(args.keep_trials))
    if getattr(args, "calendar_engine", None) and plan.engine != "des":
        warnings.warn(RunNote(f"{args.file}: --calendar-engine is ignored: this run has no "
                              f"calendar time (engine {plan.engine})"), stacklevel=1)
    _cohort_notes(sc, designs)
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
        if bar is not None:
            bar.close()
            bar = None
        _interrupted(args.out, bool(args.resume), _command(args))
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


def _design_names(sc, names):
    """The scenario's names of the designs asked for (case-insensitive), or None for all."""
    if not names:
        return None
    out = []
    for n in names:
        try:
            out.append(sc.design(n).name)
        except KeyError as exc:
            raise UsageError(f"--design: {exc.args[0]}")
    return out


def cmd_exact(args) -> int:
    args.method = "exact"
    for k in ("n_trials", "seed", "n_jobs", "chunk_size", "backend", "resume", "scheduler"):
        setattr(args, k, None)
    args.keep_trials = False
    args.no_logistics = True
    return cmd_run(args)


# ---------------------------------------------------------------- real data (issue 15)
# next-dose, select-mtd and paths decide on real data: from a scenario file (its truth is
# optional) or from --design TYPE --target T --n-doses K [--option NAME=VALUE ...].

#: the flags that describe a design without a scenario file
_FREE_FLAGS = ("target", "n_doses", "option", "cohort_size", "max_n", "start_dose")


class _RealData:
    """The design a real-data command decides with, and what it needs around it."""

    def __init__(self, name, design, n_doses, labels, window_days, source):
        self.name, self.design, self.n_doses = name, design, n_doses
        self.labels, self.window_days, self.source = labels, window_days, source


def _design_for(args):
    sc = load_scenario(args.file, require_truth=False)
    if args.design is None:
        if len(sc.designs) == 1:
            return sc, sc.designs[0]
        raise UsageError(f"{args.file} has several designs "
                         f"({', '.join(d.name for d in sc.designs)}): choose one with --design")
    try:
        return sc, sc.design(args.design)
    except KeyError as exc:
        raise UsageError(exc.args[0])


def _real_data(args) -> _RealData:
    """From FILE (``--design NAME``) or from ``--design TYPE --target --n-doses``."""
    given = [f for f in _FREE_FLAGS if getattr(args, f, None) not in (None, [])]
    if getattr(args, "file", None):
        if given:
            flags = ", ".join("--" + f.replace("_", "-") for f in given)
            raise UsageError(f"{flags}: describe the design in {args.file} (these options "
                             "are for use without a scenario file)")
        sc, item = _design_for(args)
        window = getattr(args, "window", None) or sc.dlt_window_days
        return _RealData(item.name, item.design, sc.n_doses, sc.dose_labels, window,
                         args.file)
    from .designs.base import DesignContext
    from .designs.registry import get_entry
    missing = [flag for flag, v in (("--design TYPE", args.design), ("--target", args.target),
                                    ("--n-doses", args.n_doses)) if v is None]
    if missing:
        raise UsageError(f"give a scenario FILE, or describe the design with --design TYPE "
                         f"--target T --n-doses K (missing: {', '.join(missing)})")
    if not 0 < args.target < 1:
        raise UsageError(f"--target must be in (0, 1) (got {args.target})")
    _check_positive("n-doses", args.n_doses, 1, MAX_DOSES)
    _check_positive("cohort-size", args.cohort_size, 1, 12)
    _check_positive("max-n", args.max_n, 1, 1000)
    _check_positive("start-dose", args.start_dose, 1, args.n_doses)
    try:
        entry = get_entry(args.design)
    except KeyError as exc:
        raise UsageError(f"--design: {exc.args[0]} (got {args.design!r})")
    spec = _table_spec(entry, _parse_options(args.option), {})
    from .run.realdata import DEFAULT_MAX_N
    ctx = DesignContext(n_doses=args.n_doses, target=float(args.target),
                        cohort_size=args.cohort_size or 1, max_n=args.max_n or DEFAULT_MAX_N,
                        start_dose=(args.start_dose or 1) - 1)
    try:
        design = entry.build(spec, ctx)
    except ValueError as exc:
        raise UsageError(f"--design {entry.type}: {exc}")
    labels = [f"DL{i + 1}" for i in range(args.n_doses)]
    return _RealData(spec.name or entry.type, design, args.n_doses, labels,
                     getattr(args, "window", None), None)


def _state(sc, text: str, design=None):
    """The state after ``--outcomes``: N/T letters for binary designs, ``dose:grades`` for
    score designs (gBOIN), whose ``y`` are then sums of score units."""
    from .outcomes import OutcomeStringError, state_from_outcomes
    units = (design.score_units if design is not None and design.outcome is Outcome.SCORE
             else None)
    try:
        return state_from_outcomes(text or "", sc.n_doses, units)
    except (OutcomeStringError, ValueError) as exc:
        raise UsageError(f"--outcomes: {exc}")


def _real_state(rd: _RealData, args):
    """The data: --outcomes (complete patients) and --pending DOSE:DAYS with --window."""
    from .outcomes import OutcomeStringError
    from .run.realdata import parse_pending, trial_state
    text = getattr(args, "pending", None)
    if getattr(args, "window", None) is not None and not 0 < args.window < float("inf"):
        raise UsageError(f"--window must be a number of days > 0 (got {args.window})")
    try:
        pending = parse_pending(text) if text else []
    except ValueError as exc:
        raise UsageError(f"--pending: {exc}")
    if pending and not rd.design.time_to_event:
        raise UsageError(f"--pending: design {rd.name!r} decides on complete data only; "
                         "pending patients need a time-to-event design such as tite-crm or "
                         f"tite-boin (got {text!r})")
    if pending and rd.window_days is None:
        raise UsageError(f"--pending needs --window DAYS, the DLT window (got {text!r})")
    if args.window is not None and not pending:
        raise UsageError(f"--window is used only with --pending (got {args.window:g})")
    if rd.design.outcome is Outcome.JOINT:
        from .outcomes import joint_state_from_outcomes
        try:
            return joint_state_from_outcomes(args.outcomes or "", rd.n_doses)
        except (OutcomeStringError, ValueError) as exc:
            raise UsageError(f"--outcomes: {exc}")
    score = rd.design.outcome is Outcome.SCORE
    try:
        from .outcomes import parse_outcomes
        parse_outcomes(args.outcomes or "", rd.n_doses, graded=score)
    except (OutcomeStringError, ValueError) as exc:
        raise UsageError(f"--outcomes: {exc}")
    try:
        return trial_state(rd.n_doses, args.outcomes or "", pending, rd.window_days,
                           score_units=rd.design.score_units if score else None)
    except ValueError as exc:
        raise UsageError(f"--pending: {exc}")


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


def _fmt_intervals(rd: _RealData, n, y, pending, iv, score_sum=None) -> List[str]:
    """The per-dose table: data, estimate and credible interval (a score design: the
    normalized score sum in place of the DLT count)."""
    pend = any(pending)
    if score_sum is not None:
        y = [f"{v:.4g}" for v in score_sum]
    wy = 5 if score_sum is None else 8
    head = (f"  {'dose':<12}{'n':>4}{'DLT' if score_sum is None else 'score':>{wy}}"
            + (f"{'pend':>6}" if pend else "")
            + (f"{'estimate':>10}  {round(100 * iv['level'], 4):g}% CrI" if iv else ""))
    lines = [head]
    for d in range(rd.n_doses):
        row = f"  {f'{d + 1} ({rd.labels[d]})':<12}{n[d]:>4}{y[d]:>{wy}}"
        if pend:
            row += f"{pending[d]:>6}"
        if iv:
            e, lo, hi = iv["estimate"][d], iv["lower"][d], iv["upper"][d]
            row += f"{'-' if e is None else f'{e:.3f}':>10}"
            row += "  -" if lo is None else f"  {lo:.3f} - {hi:.3f}"
        lines.append(row)
    if iv:
        lines.append(f"  ({iv['method']})")
    return lines


def _level(args) -> float:
    level = getattr(args, "level", None)
    if level is None:
        return 0.95
    if not 0 < level < 1:
        raise UsageError(f"--level must be in (0, 1) (got {level})")
    return float(level)


def cmd_next_dose(args) -> int:
    from .run.realdata import recommend
    rd = _real_data(args)
    state = _real_state(rd, args)  # a time-to-event design without pending: complete data
    rec = recommend(rd.design, state, rd.name, _level(args))
    labels = rd.labels
    if args.json:
        doc = {"design": rec.design, "outcomes": args.outcomes,
               "pending_followup": getattr(args, "pending", None) or None, **rec.to_dict()}
        print(json.dumps(doc, default=str, indent=2))
        return 0
    if rec.score_sum is not None:
        what = ", ".join(f"{labels[d]} {rec.score_sum[d]:.4g}/{state.n[d]}"
                         for d in range(rd.n_doses) if state.n[d])
        print(f"{rec.design} after {args.outcomes!r} (normalized score sum / patients): "
              f"{what or 'no patients'}")
    elif rec.responders is not None:
        what = ", ".join(f"{labels[d]} {state.y[d]}/{state.n[d]} DLT, "
                         f"{rec.responders[d]}/{state.n[d]} responses"
                         for d in range(rd.n_doses) if state.n[d])
        print(f"{rec.design} after {args.outcomes!r}: {what or 'no patients'}")
    else:
        what = ", ".join(f"{labels[d]} {state.y[d]}/{state.n[d]}"
                         + (f" ({rec.pending[d]} pending)" if rec.pending[d] else "")
                         for d in range(rd.n_doses) if state.n[d])
        print(f"{rec.design} after {args.outcomes!r}: {what or 'no patients'}")
    if rec.stop:
        m = rec.mtd
        print(f"STOP ({rec.stop_reason}): {rec.reason}")
        what = ("OBD (optimal biological dose, on toxicity and efficacy)"
                if rec.selects == "OBD" else "MTD")
        print(f"recommended {what}: {'none' if m is None else f'dose {m} ({labels[m - 1]})'}")
    elif rec.suspend:
        print(f"next: suspend accrual (no patient now) at dose {rec.next_dose} "
              f"({labels[rec.next_dose - 1]}) -- {rec.reason}")
    else:
        print(f"next: dose {rec.next_dose} ({labels[rec.next_dose - 1]}), cohort of "
              f"{rec.cohort_size} -- {rec.reason}")
    print("data and estimates:")
    print("\n".join(_fmt_intervals(rd, rec.n, rec.dlt, rec.pending, rec.intervals,
                                   rec.score_sum)))
    lines = _fmt_est(rec.estimates)
    if lines:
        print("design estimates:")
        print("\n".join(lines))
    return 0


def cmd_select_mtd(args) -> int:
    from .run.realdata import as_state
    from .run.realdata import select_mtd as _select
    rd = _real_data(args)
    if args.pending or args.window is not None:
        raise UsageError("--pending / --window: the MTD is selected on complete data; give "
                         "the final outcomes with --outcomes or --n and --dlt")
    if args.outcomes is not None:
        if args.n is not None or args.dlt is not None:
            raise UsageError("give either --outcomes or --n and --dlt, not both")
        state = _real_state(rd, args)
    elif rd.design.outcome is Outcome.JOINT:
        raise UsageError(f"design {rd.name!r} selects on toxicity and efficacy: give "
                         f"--outcomes with one letter per patient, N (neither), E (response), "
                         f"T (DLT), B (both), e.g. \"1NNE 2ETN\" (--n/--dlt count DLTs only)")
    elif rd.design.outcome is Outcome.SCORE:
        raise UsageError(f"design {rd.name!r} scores graded toxicities: give --outcomes "
                         f"with one worst grade per patient, e.g. \"1:003 2:0104\" "
                         f"(--n/--dlt count DLTs)")
    else:
        try:
            n = [_ascii_int(x) for x in args.n.split(",")]
            y = [_ascii_int(x) for x in args.dlt.split(",")]
        except (AttributeError, ValueError):
            raise UsageError("give --outcomes, or --n and --dlt as comma-separated integers "
                             f"(got --n {args.n!r} --dlt {args.dlt!r})")
        if len(n) != rd.n_doses or len(y) != rd.n_doses:
            raise UsageError(f"--n and --dlt need {rd.n_doses} values each "
                             f"(got {len(n)} and {len(y)})")
        try:
            state = as_state(n, y)
        except ValueError as exc:
            raise UsageError(str(exc))
    sel = _select(rd.design, state, rd.name, _level(args))
    if args.json:
        print(json.dumps(sel.to_dict(), default=str, indent=2))
        return 0
    m = sel.mtd
    if sel.selects == "OBD":
        print(f"{sel.design} selects the optimal biological dose (OBD) on toxicity and "
              f"efficacy, not an MTD:")
        print(f"{sel.design}: OBD = " + ("none" if m is None
                                         else f"dose {m} ({rd.labels[m - 1]})"))
        print("  responders per dose: " + ", ".join(
            f"{rd.labels[d]} {sel.responders[d]}/{sel.n[d]}" for d in range(rd.n_doses)))
    else:
        print(f"{sel.design}: MTD = " + ("none" if m is None
                                         else f"dose {m} ({rd.labels[m - 1]})"))
    print("\n".join(_fmt_intervals(rd, sel.n, sel.dlt, [0] * rd.n_doses, sel.intervals,
                                   sel.score_sum)))
    lines = _fmt_est(sel.estimates)
    if lines:
        print("design estimates:")
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


def _print_table(args, type_name: str, options: dict, option_flags: dict, spec=None) -> int:
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
    if spec is None:
        spec = _table_spec(entry, options, option_flags)
    request = TableRequest(spec=spec, target=args.target,
                           max_n=args.max_n, cohort_size=args.cohort_size,
                           n_doses=getattr(args, "n_doses", None),
                           outcomes=getattr(args, "outcomes", None))
    try:
        table = entry.decision_table(request)
    except TableInputError as exc:
        where = "" if exc.field is None else f"{_flag(exc.field, option_flags)}: "
        raise UsageError(f"{where}{exc}")
    implied = getattr(args, "implied_fields", ())  # set from a scenario file, not by the user
    for field, note in table.notes:
        if field in implied:
            continue
        print(f"escalation-sim {args.command}: note: {_flag(field, option_flags)}: {note}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(table.data, default=str, indent=2))
    else:
        print(table.text)
    return 0


def cmd_table(args) -> int:
    if getattr(args, "file", None):
        return _table_from_file(args)
    if args.design is None:
        raise UsageError("give --design TYPE, or a scenario FILE (and --design NAME)")
    return _print_table(args, args.design, _parse_options(args.option), {})


def _table_from_file(args) -> int:
    """``table FILE [--design NAME]``: the table of a scenario's design, with the file's
    target, doses, cohort size and sample size (its truth is optional)."""
    given = [f for f in ("target", "max_n", "cohort_size", "n_doses", "option")
             if getattr(args, f, None) not in (None, [])]
    if given:
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise UsageError(f"{flags}: the design's settings come from {args.file} (these "
                         "options are for use without a scenario file)")
    sc, item = _design_for(args)
    trial = sc.model.trial
    args.target, args.max_n = sc.model.target, trial.max_n
    args.cohort_size, args.n_doses = trial.cohort_size, sc.n_doses
    args.implied_fields = ("target", "max_n", "cohort_size", "n_doses")
    return _print_table(args, item.type, {}, {}, spec=item.spec)


#: the boundaries command's own flags for BOIN options
_BOUNDARY_FLAGS = {"phi1": "--phi1", "phi2": "--phi2", "cutoff_eli": "--cutoff-eli"}


def cmd_boundaries(args) -> int:
    """``table --design boin`` with BOIN's options as flags (kept for compatibility)."""
    if (args.max_n is not None and args.cohort_size and args.cohort_size > 0
            and args.max_n % args.cohort_size):
        raise UsageError(f"--max-n must be a multiple of --cohort-size {args.cohort_size}: "
                         "the trial treats whole cohorts (got --max-n "
                         f"{args.max_n})")
    options = {k: getattr(args, k) for k in _BOUNDARY_FLAGS if getattr(args, k) is not None}
    return _print_table(args, "boin", options, _BOUNDARY_FLAGS)


def cmd_paths(args) -> int:
    from .engines.paths import (dose_paths, final_recommendations, format_paths, leaves,
                                paths_csv, paths_dot)
    rd = _real_data(args)
    if rd.design.time_to_event:
        raise UsageError(f"design {rd.name!r} is time-to-event; dose paths need a time-free "
                         "design")
    if rd.design.outcome is Outcome.SCORE:
        raise UsageError(f"design {rd.name!r} scores graded toxicities: dose paths "
                         "enumerate DLT counts, so they are for binary designs only")
    joint = rd.design.outcome is Outcome.JOINT
    efficacy = None
    if args.efficacy is not None:
        if not joint:
            raise UsageError(f"--efficacy: design {rd.name!r} does not use responses (got "
                             f"{args.efficacy!r})")
        try:
            efficacy = [float(x) for x in args.efficacy.split(",")]
        except ValueError:
            efficacy = None
        if efficacy is None or len(efficacy) != rd.n_doses or not all(
                0 <= q <= 1 for q in efficacy):
            raise UsageError(f"--efficacy: {rd.n_doses} comma-separated probabilities in "
                             f"[0, 1], one per dose (got {args.efficacy!r})")
        if args.truth is None:
            raise UsageError(f"--efficacy is used with --truth (path probabilities) (got "
                             f"{args.efficacy!r})")
    if joint and args.truth is not None and efficacy is None:
        raise UsageError(f"--truth: design {rd.name!r} selects on toxicity and efficacy: "
                         f"give the response rates too with --efficacy Q1,Q2,... (got "
                         f"--truth {args.truth!r})")
    if args.level is not None:
        raise UsageError(f"--level: paths show decisions, not estimates (got {args.level:g}); "
                         "next-dose and select-mtd print credible intervals")
    if args.json and args.format not in (None, "json"):
        raise UsageError(f"--json and --format {args.format}: give one")
    args.cohorts_given = args.cohorts is not None
    if args.cohorts is None:
        args.cohorts = 2
    _check_positive("cohorts", args.cohorts)
    sizes = None
    if args.cohort_sizes is not None:
        try:
            sizes = [_ascii_int(x) for x in args.cohort_sizes.split(",")]
        except ValueError:
            sizes = None
        if not sizes or any(c < 1 or c > 12 for c in sizes):
            raise UsageError("--cohort-sizes: comma-separated integers from 1 to 12, one per "
                             f"cohort, e.g. 3,3,1 (got {args.cohort_sizes!r})")
        if args.cohorts_given:
            raise UsageError(f"--cohorts and --cohort-sizes: give one (--cohort-sizes sets "
                             f"{len(sizes)} cohorts) (got --cohorts {args.cohorts})")
    truth = None
    if args.truth is not None:
        try:
            truth = [float(x) for x in args.truth.split(",")]
        except ValueError:
            truth = None
        if truth is None or len(truth) != rd.n_doses or not all(0 <= p <= 1 for p in truth):
            raise UsageError(f"--truth: {rd.n_doses} comma-separated probabilities in [0, 1], "
                             f"one per dose (got {args.truth!r})")
    c = int(rd.design.max_cohort_size)
    import math as _math

    def branches(k):        # outcomes per cohort of k: DLT counts, or joint counts
        return _math.comb(k + 3, 3) if joint else k + 1
    if sizes is not None:
        leaves_bound = 1
        for k in sizes:
            leaves_bound *= branches(k)
        if leaves_bound > MAX_PATH_LEAVES:
            raise UsageError(f"--cohort-sizes {args.cohort_sizes} would print up to "
                             f"{leaves_bound:,} paths; at most {MAX_PATH_LEAVES:,} "
                             f"(got {args.cohort_sizes})")
    else:
        most = 0  # the most cohorts whose (c + 1)^cohorts paths stay within the limit
        while branches(c) ** (most + 1) <= MAX_PATH_LEAVES:
            most += 1
        if args.cohorts > most:
            raise UsageError(f"--cohorts {args.cohorts} would print up to {branches(c)}^"
                             f"{args.cohorts} "
                             f"paths with cohorts of {c}; at most {most} cohorts "
                             f"({MAX_PATH_LEAVES:,} paths) (got {args.cohorts})")
    state = _real_state(rd, args)
    tree = dose_paths(rd.design, state, args.cohorts, truth=truth, cohort_sizes=sizes,
                      efficacy=efficacy)
    fmt = "json" if args.json else (args.format or "text")
    prefix = args.outcomes or ""
    if fmt == "json":
        doc = tree if truth is None else {
            "tree": tree, "truth": truth, "final_recommendations": final_recommendations(tree),
            **({"efficacy": efficacy} if efficacy is not None else {})}
        print(json.dumps(doc, indent=2))
    elif fmt == "csv":
        sys.stdout.write(paths_csv(tree, prefix))
    elif fmt == "dot":
        sys.stdout.write(paths_dot(tree, rd.labels, prefix))
    else:
        print(format_paths(tree, rd.labels, prefix))
        if truth is not None:
            n_leaves = len(leaves(tree))
            print(f"\nfinal recommendations over {n_leaves:,} paths (truth "
                  f"{', '.join(f'{p:g}' for p in truth)}):")
            for k, v in final_recommendations(tree).items():
                print(f"  {k:<24}{v:.4f}")
    return 0


# ---------------------------------------------------------------- replay (issue 15)
def _replay_designs(args):
    """``[(name, design)]``, dose labels, DLT window: from --scenario FILE (its truth is
    optional; --design NAME picks designs) or --design TYPE --target --n-doses."""
    if args.scenario:
        given = [f for f in _FREE_FLAGS if getattr(args, f, None) not in (None, [])]
        if given:
            flags = ", ".join("--" + f.replace("_", "-") for f in given)
            raise UsageError(f"{flags}: describe the designs in {args.scenario} (these "
                             "options are for use without --scenario)")
        sc = load_scenario(args.scenario, require_truth=False)
        try:
            items = [sc.design(n) for n in args.design] if args.design else list(sc.designs)
        except KeyError as exc:
            raise UsageError(exc.args[0])
        window = args.window if args.window is not None else sc.dlt_window_days
        graded = sc.has_truth and sc.model.truth.graded
        if graded and (args.toxicity_types or args.dlt_rule):
            raise UsageError(f"--toxicity-types / --dlt-rule: the toxicity types and the DLT "
                             f"rule come from {args.scenario}'s truth and dlt rule")
        tox = ((sc.outcome_model.type_names, sc.outcome_model.rule_names) if graded
               else _replay_tox(args))
        return [(it.name, it.design) for it in items], sc.dose_labels, window, tox
    if not args.design or len(args.design) != 1:
        raise UsageError("give --scenario FILE, or one design as --design TYPE --target T "
                         f"--n-doses K (got --design {args.design})")
    ns = argparse.Namespace(**vars(args))
    ns.file, ns.design, ns.window = None, args.design[0], None
    rd = _real_data(ns)
    window = args.window
    if window is None:
        window = 28.0
        print(f"escalation-sim replay: note: --window not given: a {window:g}-day DLT window",
              file=sys.stderr)
    return [(rd.name, rd.design)], rd.labels, window, _replay_tox(args)


def _replay_tox(args):
    """``(types, dlt rule)`` of a graded log from --toxicity-types CRS,ICANS and --dlt-rule
    CRS:3,ICANS:3 (default: every type at grade >= 3); ``((), None)`` without them."""
    import re
    if not args.toxicity_types:
        if args.dlt_rule:
            raise UsageError(f"--dlt-rule needs --toxicity-types (got --dlt-rule "
                             f"{args.dlt_rule!r})")
        return (), None
    types = [t.strip() for t in args.toxicity_types.split(",")]
    for t in types:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,31}", t):
            raise UsageError(f"--toxicity-types: each type a name of letters, digits and - "
                             f"starting with a letter, such as CRS (got {t!r})")
    if len({t.lower() for t in types}) != len(types):
        raise UsageError(f"--toxicity-types: a type given twice (got "
                         f"{args.toxicity_types!r})")
    if not args.dlt_rule:
        return tuple(types), None
    rule = []
    for item in args.dlt_rule.split(","):
        name, _, g = item.strip().partition(":")
        match = next((t for t in types if t.lower() == name.lower()), None)
        if match is None or not (g.isascii() and g.isdigit()) or not 1 <= int(g) <= 5 \
                or any(t == match for t, _ in rule):
            raise UsageError(f"--dlt-rule: expected TYPE:MIN_GRADE items, each type of "
                             f"--toxicity-types ({', '.join(types)}) at most once, grade 1..5 "
                             f"(got {item.strip()!r})")
        rule.append((match, int(g)))
    return tuple(types), tuple(rule)


def _replay_text(res) -> str:
    lines = [f"replay of {res.source}: {len(res.patients)} patients in {len(res.cohorts)} "
             f"cohorts; data cut-off {res.as_of}; {res.window_days:g}-day DLT window",
             "time-to-event designs: '(slot)' = the patient filled a cohort the design had "
             "opened (no new decision)",
             "trial: " + ", ".join(
                 f"{res.dose_labels[p['dose_assigned'] - 1]} x{n}" for p, n in
                 ((next(q for q in res.patients if q['patient'] == c[0]), len(c))
                  for c in res.cohorts))]
    by_design: dict = {}
    for r in res.rows:
        by_design.setdefault(r["design"], []).append(r)
    for name, rows in by_design.items():
        w = max([22] + [len(r["data"]) + 2 for r in rows])
        head = "score/n per dose" if rows[0].get("outcome") == "score" else "DLT/n per dose"
        lines += ["", f"{name}:",
                  f"  {'#':>3}  {'date':<10}  {'n':>3}  {head:<{w}}{'pend':>5}  "
                  f"{'design':<16}{'trial':<12}flag"]
        for r in rows:
            design = r["recommendation"] + (f" x{r['cohort_size']}" if r["cohort_size"] else "")
            if not r.get("asked", True):
                design += " (slot)"
            trial = r["trial_action"] + (f" x{r['trial_cohort_size']}"
                                         if r["trial_cohort_size"] and r["trial_new_cohort"]
                                         else "")
            flag = ("DEVIATION: " + r["deviation_detail"]) if r["deviation"] else ""
            lines.append(f"  {r['point']:>3}  {r['date']:<10}  {r['after_patients']:>3}  "
                         f"{r['data']:<{w}}{r['pending']:>5}  {design:<16}{trial:<12}{flag}")
        last = rows[-1]
        m = last["mtd_if_stopped_now"]
        n_dev = sum(1 for r in rows if r["deviation"])
        lines.append(f"  at the cut-off: {last['recommendation']} ({last['reason']}); MTD if "
                     f"the trial stopped now: "
                     f"{'none' if m is None else f'dose {m} ({res.dose_labels[m - 1]})'}; "
                     f"{n_dev} deviation{'s' if n_dev != 1 else ''}")
    return "\n".join(x.rstrip() for x in lines)


def _replay_files(res) -> dict:
    """Every output file's bytes, built before anything is written."""
    import io
    import pandas as pd
    from .plotting import plot_swimmer
    files = {}
    files["replay.csv"] = pd.DataFrame(res.rows).to_csv(index=False).encode()
    files["patients.csv"] = pd.DataFrame(res.patients).to_csv(index=False).encode()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = pd.DataFrame(res.patients)
    t0 = pd.Timestamp(res.patients[0]["enrolled"])
    cuts = []
    for c in res.cohorts[1:]:
        first = next(q for q in res.patients if q["patient"] == c[0])
        cuts.append(((pd.Timestamp(first["enrolled"]) - t0).days,
                     f"{res.dose_labels[first['dose_assigned'] - 1]}"))
    ax = plot_swimmer(pts, decisions=cuts, dose_labels=res.dose_labels,
                      title=f"{res.source} (real trial, cut-off {res.as_of})")
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(ax.figure)
    files["swimmer.png"] = buf.getvalue()
    return files


def cmd_replay(args) -> int:
    import datetime as dt
    from .inputs.patient_log import PatientLogError, read_patient_log
    from .run.replay import replay_log
    designs, labels, window, (tox_types, dlt_rule) = _replay_designs(args)
    if not 0 < window < float("inf"):
        raise UsageError(f"--window must be a number of days > 0 (got {window})")
    as_of = None
    if args.as_of is not None:
        try:
            if len(args.as_of) != 10:
                raise ValueError
            as_of = dt.date.fromisoformat(args.as_of)
        except ValueError:
            raise UsageError(f"--as-of: expected a date YYYY-MM-DD (got {args.as_of!r})")
    _check_out_dir(args.out)
    try:
        log = read_patient_log(args.log, len(labels), window, as_of, tox_types, dlt_rule)
    except PatientLogError as exc:
        for line in exc.problems:
            print(printable(line), file=sys.stderr)
        return 2
    res = replay_log(log, designs, window, labels, as_of, _level(args))
    for name, why in res.skipped:
        print(printable(f"escalation-sim replay: note: design {name!r} skipped: {why}"),
              file=sys.stderr)
    if not res.rows:
        raise UsageError("no design to replay (every design was skipped)")
    files = _replay_files(res) if args.out else {}
    if args.out:
        from pathlib import Path
        from .results.files import atomic_write_bytes
        Path(args.out).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            atomic_write_bytes(Path(args.out) / name, data)
    if args.json:
        print(json.dumps({"source": res.source, "as_of": res.as_of.isoformat(),
                          "window_days": res.window_days, "dose_labels": res.dose_labels,
                          "cohorts": res.cohorts, "rows": res.rows,
                          "patients": res.patients}, default=str, indent=2))
    else:
        print(_replay_text(res))
        if args.out:
            print(f"\nwritten to {args.out}/: {', '.join(files)}")
    return 0


def _report_format(args) -> str:
    """--format, else the output file's extension, else html."""
    from pathlib import Path
    fmt = args.format
    if fmt is None and args.output:
        ext = Path(args.output).suffix.lower().lstrip(".")
        fmt = {"htm": "html", "markdown": "md", "latex": "tex"}.get(ext, ext)
        if fmt not in ("html", "md", "tex", "docx"):
            fmt = "html"
    fmt = fmt or "html"
    if fmt == "docx":
        from .results.display import docx_available
        if not docx_available():
            raise UsageError("--format docx needs python-docx, which is not installed: "
                             "pip install 'escalation-sim[docx]' (got --format docx)")
    return fmt


def cmd_report(args) -> int:
    from .run.lock import check_output_file
    from .run.study import is_study_file
    _check_run_options(args)
    fmt = _report_format(args)
    if args.output is None:
        args.output = f"report.{fmt}"
    if is_study_file(args.file):
        return _report_study(args, fmt)
    if args.out:
        raise UsageError("--out keeps a study's tables: it applies to a study file, not to a "
                         f"scenario (got --out {args.out})")
    from .api import simulate
    from .report import write_report, write_results_tables
    sc = load_scenario(args.file)
    check_output_file(args.output)
    if getattr(args, "replay", None) and fmt != "html":
        raise UsageError(f"--replay adds a section to the HTML report; --format {fmt} writes "
                         f"the OC tables only (got --replay {args.replay})")
    replayed = _report_replay(args, sc)
    designs = _design_names(sc, args.design)
    _cohort_notes(sc, designs)
    n = args.n_trials or sc.model.simulation.n_trials
    upd, bar = _progress(args, n, f"{sc.name}")
    try:
        res = simulate(sc, n_trials=n, seed=args.seed, n_jobs=args.n_jobs,
                       designs=designs,
                       logistics=False if args.no_logistics else None, progress=upd)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
            bar = None
        print("interrupted: the report keeps no partial results; for a long run use "
              "`escalation-sim run FILE --out DIR --resume`", file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
    if fmt == "html":
        path = write_report(res, args.output, compact=args.compact, replay=replayed)
    else:
        path = write_results_tables(res, args.output, fmt=fmt, compact=args.compact)
    print(f"report written to {path}")
    return 0


def _report_study(args, fmt: str) -> int:
    import tempfile
    from .report import write_study_report
    from .run.lock import check_output_file
    from .run.study import load_study, run_study
    if args.design:
        raise UsageError("--design: a study's designs are set in the study file "
                         f"(got --design {' '.join(args.design)})")
    if args.no_logistics:
        raise UsageError("--no-logistics: set logistics: false in the study file "
                         "(got --no-logistics)")
    study = load_study(args.file, n_trials=args.n_trials, seed=args.seed)
    check_output_file(args.output)
    if args.out:
        _check_out_dir(args.out)
    upd, bar = _progress(args, len(study.cells) * study.n_trials, study.name)
    try:
        with tempfile.TemporaryDirectory(prefix="escalation-sim-report-") as tmp:
            res = run_study(study, args.out or tmp, n_jobs=args.n_jobs,
                            resume=bool(args.out), progress=upd, command=_command(args))
            if bar is not None:
                bar.close()
                bar = None
            path = write_study_report(res, args.output, fmt=fmt, compact=args.compact)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
            bar = None
        if args.out:
            print(f"interrupted: the finished chunks are kept in {args.out}/checkpoint; run "
                  f"the same command again to continue ({_command(args)})", file=sys.stderr)
        else:
            print("interrupted: nothing was kept; give --out DIR to keep the study's tables "
                  "and checkpoints and continue after an interruption", file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
    print(f"report written to {path}")
    return 0


def _report_replay(args, sc):
    """``report --replay LOG``: the log replayed with the scenario's designs (checked before
    the simulation starts; bad rows end the command with exit 2, nothing written)."""
    if not getattr(args, "replay", None):
        return None
    from .inputs.patient_log import PatientLogError, read_patient_log
    from .run.replay import replay_log
    items = [sc.design(n) for n in args.design] if args.design else list(sc.designs)
    try:
        graded = sc.has_truth and sc.model.truth.graded
        log = read_patient_log(args.replay, sc.n_doses, sc.dlt_window_days, None,
                               sc.outcome_model.type_names if graded else (),
                               sc.outcome_model.rule_names if graded else None)
    except PatientLogError as exc:
        raise UsageError("\n".join(f"--replay: {p}" for p in exc.problems))
    return replay_log(log, [(it.name, it.design) for it in items], sc.dlt_window_days,
                      sc.dose_labels)


def cmd_study(args) -> int:
    from .run.study import load_study, run_study
    _check_run_options(args)
    study = load_study(args.file, n_trials=args.n_trials, seed=args.seed)
    _check_out_dir(args.out)
    notes = sorted({n for c in study.cells for n in _cohort_list(c.scenario)})
    for n in notes:
        print(printable(f"note: {study.source}: {n}"), file=sys.stderr)
    upd, bar = _progress(args, len(study.cells) * study.n_trials, study.name)
    try:
        res = run_study(study, args.out, n_jobs=args.n_jobs, backend=args.backend,
                        scheduler=args.scheduler, resume=args.resume, progress=upd,
                        command=_command(args))
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
            bar = None
        print(f"interrupted: the finished chunks are kept in {args.out}/checkpoint; "
              "rerun with --resume to continue (the same command, plus --resume)",
              file=sys.stderr)
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


def _cohort_list(sc):
    from .results.display import cohort_size_notes
    return cohort_size_notes(sc)


_FROM_FILE = "default: the scenario file's simulation block"
_BACKENDS = ["loky", "multiprocessing", "threading", "sequential", "dask"]


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    p = argparse.ArgumentParser(prog="escalation-sim",
                                description="Simulate phase I dose-escalation trials.",
                                epilog="Exit codes: 0 success, 2 invalid input, 1 unexpected "
                                       "failure, 130 interrupted.")
    p.add_argument("--version", action="version", version=f"escalation-sim {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("validate", help="check scenario files",
                       description="Check scenario files; every problem is reported as "
                                   "FILE: field.path: message (exit code 2).")
    s.add_argument("files", nargs="+", metavar="FILE", help="scenario YAML files")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("schema", help="print the JSON Schema of scenario files")
    s.set_defaults(func=cmd_schema)

    def run_opts(s, exact_only=False):
        s.add_argument("file", metavar="FILE", help="scenario YAML file")
        s.add_argument("--design", action="append", metavar="NAME",
                       help="only this design, by name, case-insensitive (repeatable; "
                            "default: every design of the scenario)")
        s.add_argument("--out", metavar="DIR", help="write tidy tables (oc, summary, paired), "
                                                    "the resolved scenario and metadata here "
                                                    "(default: print only)")
        s.add_argument("--json", action="store_true", help="print one JSON document "
                                                           "(proportions, not percentages)")
        s.add_argument("--compact", action="store_true", help="with --json: on one line")
        s.add_argument("--quiet", action="store_true",
                       help="no progress (default: a bar on a terminal, a log line every "
                            f"{PROGRESS_LOG_INTERVAL:g} s otherwise)")
        if exact_only:
            return
        s.add_argument("--n-trials", type=int, metavar="N", help=f"simulated trials ({_FROM_FILE}"
                       ", else 10000); with --out DIR --resume on a finished run, more trials "
                       "extend it")
        s.add_argument("--seed", type=int, metavar="S", help=f"random seed ({_FROM_FILE}, else "
                                                             "2026)")
        s.add_argument("--n-jobs", type=int, metavar="J",
                       help="worker processes; -1 = every CPU (default: the scenario's "
                            "simulation.n_jobs, else auto: one process unless the run is "
                            "long enough for more to pay off)")
        s.add_argument("--chunk-size", type=int, metavar="C",
                       help="trials per checkpointed chunk (default: chosen from the number "
                            "of trials and the engine; results do not depend on it)")
        s.add_argument("--backend", choices=_BACKENDS,
                       help=f"parallel backend ({_FROM_FILE}, else loky)")
        s.add_argument("--scheduler", metavar="ADDRESS",
                       help="with --backend dask: scheduler address (default: a LocalCluster "
                            "of --n-jobs workers)")
        s.add_argument("--method", choices=["monte-carlo", "exact"],
                       help=f"simulation or exact enumeration ({_FROM_FILE}, else "
                            "monte-carlo)")
        s.add_argument("--keep-trials", action="store_true",
                       help="also write per-trial tables (needs --out)")
        s.add_argument("--no-logistics", action="store_true",
                       help="ignore the conduct block (time-free cohort engine; default: use "
                            "it when the scenario has one)")
        s.add_argument("--resume", action="store_true", default=None,
                       help="with --out: checkpoint chunks, skip finished ones, and extend a "
                            "finished run when --n-trials is larger (default: start over)")
        s.add_argument("--calendar-engine", choices=["auto", "simpy"],
                       help="calendar-time engine: auto (the fast path where it applies, "
                            "the default) or simpy (the reference); same trials either way")

    s = sub.add_parser("run", help="simulate operating characteristics")
    run_opts(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("exact", help="exact operating characteristics by enumeration")
    run_opts(s, exact_only=True)
    s.set_defaults(func=cmd_exact)

    def real_data_opts(s, outcomes_required=False):
        """A scenario FILE, or the design from flags (issue 15: no truth needed)."""
        s.add_argument("file", metavar="FILE", nargs="?",
                       help="scenario file (its truth is optional); or describe the design "
                            "with --design TYPE --target T --n-doses K")
        s.add_argument("--design", metavar="NAME|TYPE",
                       help="a design of FILE; without FILE a design type (boin, crm, ...)")
        s.add_argument("--target", type=float, help="target DLT rate (without FILE)")
        s.add_argument("--n-doses", type=int, help="number of doses (without FILE)")
        s.add_argument("--cohort-size", type=int, help="cohort size (without FILE; default 1, "
                                                       "3+3: 3)")
        s.add_argument("--max-n", type=int, help="sample-size cap (without FILE; default 30)")
        s.add_argument("--start-dose", type=int, help="1-based start dose (without FILE)")
        s.add_argument("--option", action="append", metavar="NAME=VALUE",
                       help="a design option without FILE, e.g. skeleton=[0.1,0.2,0.3]")
        s.add_argument("--outcomes", required=outcomes_required, default=None,
                       help='complete patients, e.g. "1NNN 2NTN" (score designs such as '
                            'gboin: worst grades, "1:003 2:0104")')
        s.add_argument("--pending", metavar="DOSE:DAYS,...",
                       help="time-to-event designs: patients still in follow-up without a "
                            "DLT, e.g. 3:7,3:20 (dose: days followed)")
        s.add_argument("--window", type=float, metavar="DAYS",
                       help="DLT window in days for --pending (default: the scenario's)")
        s.add_argument("--level", type=float, metavar="L",
                       help="credible-interval level (default 0.95)")
        s.add_argument("--json", action="store_true")

    s = sub.add_parser("next-dose", help="the next dose on real trial data")
    real_data_opts(s)
    s.set_defaults(func=cmd_next_dose)

    s = sub.add_parser("select-mtd", help="the MTD from final data")
    real_data_opts(s)
    s.add_argument("--n", help="patients per dose, e.g. 3,6,9,6")
    s.add_argument("--dlt", help="DLTs per dose, e.g. 0,1,2,3")
    s.set_defaults(func=cmd_select_mtd)

    s = sub.add_parser("table", help="print a design's decision table")
    s.add_argument("file", metavar="FILE", nargs="?",
                   help="scenario file (optional; its truth is optional): the table of its "
                        "design --design NAME with its settings")
    s.add_argument("--design", metavar="TYPE|NAME",
                   help="design type, e.g. boin, 3+3, crm, tite-boin; with FILE a design name")
    s.add_argument("--target", type=float, help="target DLT rate")
    s.add_argument("--max-n", type=int, help="maximum sample size (default 30)")
    s.add_argument("--cohort-size", type=int, help="cohort size (default 1; 3+3: 3)")
    s.add_argument("--n-doses", type=int, help="number of doses (model-based designs; "
                                               "default: the skeleton's length)")
    s.add_argument("--outcomes", help='data so far for model-based designs, e.g. "1NNN 2NTN"')
    s.add_argument("--option", action="append", metavar="NAME=VALUE",
                   help="a design option as in the scenario file, e.g. phi1=0.18 or "
                        "skeleton=[0.1,0.2,0.3,0.45] (repeatable)")
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.set_defaults(func=cmd_table)

    s = sub.add_parser("boundaries", help="print the BOIN decision table "
                                          "(= table --design boin)")
    s.add_argument("--target", type=float, required=True, help="target DLT rate")
    s.add_argument("--max-n", type=int, default=30,
                   help="maximum sample size, a multiple of --cohort-size (default 30)")
    s.add_argument("--cohort-size", type=int, default=1, help="cohort size (default 1)")
    s.add_argument("--phi1", type=float, help="highest rate deemed sub-therapeutic "
                                              "(default 0.6 x target)")
    s.add_argument("--phi2", type=float, help="lowest rate deemed overly toxic "
                                              "(default 1.4 x target)")
    s.add_argument("--cutoff-eli", type=float, default=0.95,
                   help="posterior probability above which a dose is eliminated "
                        "(default 0.95)")
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.set_defaults(func=cmd_boundaries)

    s = sub.add_parser("paths", help="dose paths for the next cohorts")
    real_data_opts(s)
    s.add_argument("--cohorts", type=int, default=None, help="cohorts ahead (default 2)")
    s.add_argument("--cohort-sizes", metavar="C1,C2,...",
                   help="the size of each next cohort, e.g. 3,3,1 (instead of --cohorts)")
    s.add_argument("--truth", metavar="P1,P2,...",
                   help="true DLT rates: adds each path's probability and the probability "
                        "of each final recommendation")
    s.add_argument("--efficacy", metavar="Q1,Q2,...",
                   help="true response rates, with --truth, for the designs that use "
                        "responses (boin12, keyboard-obd)")
    s.add_argument("--format", choices=["text", "json", "csv", "dot"],
                   help="output format (default text; --json = --format json)")
    s.set_defaults(func=cmd_paths)

    s = sub.add_parser("replay", help="replay a real trial's patient log: every design's "
                                          "recommendation at each decision point")
    s.add_argument("log", metavar="LOG.csv", help="patient log (see the README)")
    s.add_argument("--scenario", metavar="FILE", help="scenario file with the designs (its "
                                                      "truth is optional)")
    s.add_argument("--design", action="append", metavar="NAME|TYPE",
                   help="a design of --scenario (repeatable); without it a design type")
    s.add_argument("--target", type=float, help="target DLT rate (without --scenario)")
    s.add_argument("--n-doses", type=int, help="number of doses (without --scenario)")
    s.add_argument("--cohort-size", type=int, help="cohort size (without --scenario)")
    s.add_argument("--max-n", type=int, help="sample-size cap (without --scenario)")
    s.add_argument("--start-dose", type=int, help="1-based start dose (without --scenario)")
    s.add_argument("--option", action="append", metavar="NAME=VALUE",
                   help="a design option (without --scenario)")
    s.add_argument("--window", type=float, metavar="DAYS",
                   help="DLT window in days (default: the scenario's, else 28)")
    s.add_argument("--toxicity-types", metavar="T1,T2",
                   help="graded logs without a graded scenario: the types of the TYPE_grade / "
                        "TYPE_onset columns, e.g. CRS,ICANS")
    s.add_argument("--dlt-rule", metavar="T1:G,T2:G",
                   help="with --toxicity-types: the DLT rule, e.g. CRS:3,ICANS:3 (default: "
                        "every type at grade >= 3)")
    s.add_argument("--as-of", metavar="YYYY-MM-DD",
                   help="data cut-off (default: the latest date in the log)")
    s.add_argument("--level", type=float, metavar="L",
                   help="credible-interval level (default 0.95)")
    s.add_argument("--out", metavar="DIR",
                   help="write replay.csv, patients.csv and swimmer.png here")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("report", help="self-contained HTML report (or md / tex / docx "
                                      "tables) of a scenario or a study",
                       description="Simulate a scenario, or every scenario of a study file, "
                                   "and write a report: HTML (plots inline, no external "
                                   "files), or the operating-characteristics tables as "
                                   "Markdown, LaTeX or Word for a protocol appendix.")
    s.add_argument("file", metavar="FILE", help="scenario or study YAML file")
    s.add_argument("-o", "--output", default=None,
                   help="output file (default: report.FORMAT)")
    s.add_argument("--format", choices=["html", "md", "tex", "docx"], default=None,
                   help="html (default, or from the output's extension), md, tex, or docx "
                        "(needs the docx extra: pip install 'escalation-sim[docx]')")
    s.add_argument("--compact", action="store_true",
                   help="for an appendix: the key tables and one figure per scenario")
    s.add_argument("--design", action="append", metavar="NAME",
                   help="only this design (scenario files; repeatable; default: every design)")
    s.add_argument("--no-logistics", action="store_true",
                   help="ignore the conduct block (scenario files)")
    s.add_argument("--out", metavar="DIR", help="study files: keep the study's tables and "
                                                "checkpoints here (and resume from them)")
    s.add_argument("--quiet", action="store_true", help="no progress")
    s.add_argument("--n-trials", type=int, metavar="N",
                   help="trials (per scenario) (default: the file's simulation block)")
    s.add_argument("--seed", type=int, metavar="S",
                   help="random seed (default: the file's simulation block)")
    s.add_argument("--n-jobs", type=int, metavar="J",
                   help="worker processes; -1 = every CPU (default: auto)")
    s.add_argument("--replay", metavar="LOG.csv",
                   help="HTML reports of a scenario: add a section replaying this patient "
                        "log with the scenario's designs (see the replay command)")
    s.add_argument("--calendar-engine", choices=["auto", "simpy"],
                   help="calendar-time engine: auto (the fast path where it applies, "
                        "the default) or simpy (the reference); same trials either way")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("study", help="run a study grid (designs x scenarios x settings)")
    s.add_argument("file", metavar="FILE", help="study YAML file")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder (required)")
    s.add_argument("--n-trials", type=int, metavar="N",
                   help="trials per cell (default: the study's simulation block, else 10000)")
    s.add_argument("--seed", type=int, metavar="S",
                   help="seed of every cell (default: the study's simulation block, else 2026)")
    s.add_argument("--n-jobs", type=int, metavar="J",
                   help="worker processes; -1 = every CPU (default: auto)")
    s.add_argument("--backend", choices=_BACKENDS,
                   help="where chunks run (default: loky processes)")
    s.add_argument("--scheduler", metavar="ADDRESS",
                   help="with --backend dask: scheduler address")
    s.add_argument("--resume", action="store_true",
                   help="reuse the finished chunks of an interrupted study (default: start "
                        "over)")
    s.add_argument("--quiet", action="store_true", help="no progress and no table")
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
    if not engine:  # nothing to set: the calendar engine (scipy, numba) stays unimported
        yield
        return
    from .engines.calendar.fast import ENV_VAR
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
    # commands that may start worker processes: remember the children that are not theirs
    before = set(_descendants(os.getpid())) if args.command in ("run", "study", "report") \
        else set()
    workers = None
    if args.command in ("run", "study", "report"):
        # this process's __main__ (escalation_sim.__main__ or the entry-point script) is
        # guarded: spawned workers, which import it again, can be used (they start faster)
        from .run import pool
        workers, pool.WORKERS = pool.WORKERS, "spawn"
    try:
        _start_pool_early(args)
    except KeyboardInterrupt:   # a Ctrl-C this early: nothing to keep
        _stop_pool(collect=True)
        if workers is not None:
            sys.modules["escalation_sim.run.pool"].WORKERS = workers
        print("interrupted", file=sys.stderr)
        return 130
    _load_inputs()
    args.argv = list(sys.argv[1:] if argv is None else argv)
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
        _stop_pool(collect=True)
        _stop_children(before)
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        _stop_pool(collect=True)
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
        _stop_pool()   # the command is over: end idle workers
        if workers is not None:
            sys.modules["escalation_sim.run.pool"].WORKERS = workers


def _stop_pool(collect: bool = False) -> None:
    """End the worker pool if the command started one (before ``_stop_children`` after an
    interrupt: the pool's semaphores are released while their resource tracker runs)."""
    if "escalation_sim.run.pool" in sys.modules:
        sys.modules["escalation_sim.run.pool"].stop_pool(collect)


def _start_pool_early(args) -> None:
    """``run --n-trials N`` with N large enough that the run will use worker processes
    whatever the scenario says (the work is at least N trials of one design on the fastest
    engine): start the worker pool now, before the package is imported and the scenario read
    here, so that the workers' own start-up (interpreter and imports, ~0.3 s) overlaps
    this process's.  The run then finds the pool started (it resizes it if it wants
    another number of workers; a pool it does not use ends with the command)."""
    cpus = os.cpu_count() or 1
    jobs = args.n_jobs if args.command == "run" else None
    if (args.command != "run" or cpus < 2 or args.n_trials is None or args.resume
            or args.method == "exact" or getattr(args, "calendar_engine", None)
            or args.backend not in (None, "loky") or args.scheduler
            or jobs is not None and not (jobs == -1 or 2 <= jobs <= 1024)
            or not 1 <= args.n_trials <= 10 ** 9):
        return   # (bad values are reported by the command)
    from .run import pool
    work = args.n_trials * min(pool.SECONDS_PER_TRIAL.values())
    if jobs is None:   # auto, unless the scenario file sets n_jobs (the pool is then unused)
        n = pool.auto_n_jobs(work, cpus)
    else:
        n = min(cpus if jobs == -1 else jobs, cpus) if work >= pool.MIN_PARALLEL_SECONDS else 1
    if n > 1:
        pool.start_pool(n - 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
