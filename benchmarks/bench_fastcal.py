"""The calendar engine's fast path and compiled kernel against the simpy engine (issue 16,
item 2).

Every design of the seed scenario (scenarios/relma_cel_sle.yaml: 4 doses, N = 24, cohorts of
3, its CAR-T ``conduct`` block with sentinel spacing and a follow-up cap) plus TITE-BOIN and
TITE-CRM, on one core, through ``simulate_des_trials(..., engine="simpy" | "fast")``; "fast"
is timed twice for the classic designs and TITE-BOIN on a binary truth: the Python fast path
(``ESCALATION_SIM_CALENDAR_KERNEL=0``) and the compiled kernel (engines/calendar/kernel.py,
TITE-BOIN: engines/calendar/kernel_tite.py, numba; "-" where it does not apply or numba is
not installed; TITE-CRM is not compiled).  The engines are timed
interleaved in one process (round r: simpy, fast, kernel, for each design), so a machine
shared with other jobs slows them alike and the ratios to simpy stay meaningful; each figure
is the median over ``--rounds`` of trials per CPU second (process time) and per wall second.
Before timing, every engine runs the first 200 trials (fills the decision memo, compiles the
kernel) and their outputs are compared (the script stops if they differ).

Reference figures for R on this machine class (quoted in the README, not timed here):
TITEgBOIN about 675 trials/s for TITE-BOIN, dfcrm::titesim about 40 for TITE-CRM.

    python benchmarks/bench_fastcal.py [--scenario PATH ...] [--trials 2000] [--rounds 3]
                                       [--fresh-seeds] [--save [PATH]]

Several ``--scenario`` files are timed interleaved (round r: every design of every scenario,
simpy then fast), e.g. the seed scenario against scenarios/cart_crs_icans.yaml (the seed
trial's doses and logistics with graded CRS and ICANS, each at its own onset; its score
designs gBOIN and TITE-gBOIN included).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import same_columns as _same, add_save_option, record  # noqa: E402

from escalation_sim import load_scenario  # noqa: E402
from escalation_sim.designs.base import DesignContext  # noqa: E402
from escalation_sim.designs.registry import get_entry  # noqa: E402
from escalation_sim.engines.calendar import (calendar_truth, is_time_to_event,  # noqa: E402
                                             kernel, simulate_des_trials)

ROOT = Path(__file__).resolve().parents[1]
SEED = 2026
#: R references on this machine class, trials per second (README)
R_REFERENCE = {"tite-boin": ("TITEgBOIN", 675.0), "tite-crm": ("titesim", 40.0)}


def _run(engine, design, p, conduct, trials, seed=SEED):
    """``simulate_des_trials`` on ``engine``: simpy, fast (the Python fast path, kernel off)
    or kernel (the fast path with the compiled kernel)."""
    if engine == "fast":
        os.environ[kernel.KERNEL_ENV] = "0"
    try:
        return simulate_des_trials(design, p, conduct, seed, trials,
                                   engine="simpy" if engine == "simpy" else "fast")
    finally:
        os.environ.pop(kernel.KERNEL_ENV, None)


def _designs(sc):
    """The scenario's designs plus TITE-BOIN and TITE-CRM, built on its trial settings."""
    tr = sc.model.trial
    ctx = DesignContext(n_doses=sc.n_doses, target=sc.target, cohort_size=tr.cohort_size,
                        max_n=tr.max_n, start_dose=tr.start_dose - 1)
    designs = [(it.name, it.design) for it in sc.designs]
    for t in ("tite-boin", "tite-crm"):
        if t not in {n for n, _ in designs}:
            entry = get_entry(t)
            designs.append((t, entry.build(entry.spec_model(type=t), ctx)))
    return designs


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", nargs="+",
                    default=[str(ROOT / "scenarios" / "relma_cel_sle.yaml")],
                    help="one or more scenarios, timed interleaved (a graded truth runs on "
                         "its outcome model, e.g. scenarios/cart_crs_icans.yaml)")
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--binary-too", action="store_true",
                    help="also time each graded scenario on its derived DLT rates (binary "
                         "DLTs, same logistics and DLT curve; score designs skipped): "
                         "isolates the cost of the graded model")
    ap.add_argument("--fresh-seeds", action="store_true",
                    help="round r runs seed 2027 + r (every engine the same trials in a "
                         "round): decision memos and the kernel's tables meet new states "
                         "each round, as in a study; default: the same trials every round")
    add_save_option(ap, "fastcal.jsonl")
    args = ap.parse_args(argv)
    runs = []               # (scenario, label, truth, conduct, design name, design)
    for path in args.scenario:
        sc = load_scenario(path)
        graded = sc.model.truth.graded
        for name, design in _designs(sc):
            runs.append((sc, sc.name + (" (graded)" if graded else ""), calendar_truth(sc),
                         sc.model.conduct, name, design))
        if graded and args.binary_too:
            for name, design in _designs(sc):
                if design.outcome.name != "SCORE":
                    runs.append((sc, sc.name + " (p_dlt)", sc.p_true.tolist(),
                                 sc.model.conduct, name, design))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for sc in {id(r[0]): r[0] for r in runs}.values():   # each scenario once
        tr = sc.model.trial
        print(f"scenario {sc.name}: {sc.n_doses} doses, N = {tr.max_n}, "
              f"{'graded' if sc.model.truth.graded else 'binary'} truth")
    print(f"{args.trials:,} trials per timing, median of {args.rounds} interleaved rounds, "
          f"{'a new seed each round' if args.fresh_seeds else 'the same trials each round'}, "
          f"one core; load average {load:.1f} on {os.cpu_count()} CPUs at start")
    os.environ.pop(kernel.KERNEL_ENV, None)
    engines = {}            # (label, name) -> the engines timed
    for sc, label, p, conduct, name, design in runs:
        k = (label, name)
        engines[k] = ["simpy", "fast"]
        compiled = not is_time_to_event(design) or type(design.inner).__name__ == "TITEBOIN"
        if kernel.HAVE_NUMBA and compiled and "(graded)" not in label:
            engines[k].append("kernel")
        a = _run("simpy", design, p, conduct, range(200))
        for eng in engines[k][1:]:
            if not _same(a, _run(eng, design, p, conduct, range(200))):
                raise SystemExit(f"{label} {name}: {eng} and simpy differ")
    keys = [(label, name) for _, label, _, _, name, _ in runs]
    cpu = {(k, e): [] for k in keys for e in engines[k]}
    wall = {k: [] for k in cpu}
    for rnd in range(args.rounds):
        seed = SEED + 1 + rnd if args.fresh_seeds else SEED
        for (sc, _, p, conduct, name, design), k in zip(runs, keys, strict=True):
            for eng in engines[k]:
                t0, c0 = time.perf_counter(), time.process_time()
                _run(eng, design, p, conduct, range(args.trials), seed)
                cpu[k, eng].append(args.trials / (time.process_time() - c0))
                wall[k, eng].append(args.trials / (time.perf_counter() - t0))
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{'scenario':<26}{'design':<12}{'simpy/cpu s':>13}{'fast/cpu s':>12}"
          f"{'fast/simpy':>12}{'kernel/cpu s':>14}{'kernel/wall s':>15}{'kernel/simpy':>14}"
          f"  R reference")
    for sc, label, _, _, name, _ in runs:
        k = (label, name)

        def med(eng, table=cpu):
            return statistics.median(table[k, eng]) if (k, eng) in table else None

        def ratio(eng):
            if (k, eng) not in cpu:
                return None
            return statistics.median(x / y for x, y in zip(cpu[k, eng], cpu[k, "simpy"],
                                                             strict=True))
        s, f, kn, kw = med("simpy"), med("fast"), med("kernel"), med("kernel", wall)
        rf, rk = ratio("fast"), ratio("kernel")
        best = kn if kn is not None else f
        ref = R_REFERENCE.get(name)
        ref_txt = f"{ref[0]} ~{ref[1]:,.0f}/s: fastest {best / ref[1]:,.0f}x, simpy " \
                  f"{s / ref[1]:,.0f}x" if ref else ""

        def fmt(v, w, spec=",.0f"):
            return f"{v:>{w}{spec}}" if v is not None else f"{'-':>{w}}"
        print(f"{label:<26}{name:<12}{s:>13,.0f}{f:>12,.0f}{rf:>12.2f}{fmt(kn, 14)}"
              f"{fmt(kw, 15)}{fmt(rk, 14, '.2f')}  {ref_txt}")
        record(args.save, benchmark="calendar_fast_vs_simpy", scenario=sc.name, design=name,
               truth="graded" if label.endswith("(graded)") else "binary",
               n_trials=args.trials, rounds=args.rounds, fresh_seeds=args.fresh_seeds,
               simpy_cpu_trials_per_s=s,
               fast_cpu_trials_per_s=f, fast_wall_trials_per_s=med("fast", wall),
               fast_over_simpy=rf, kernel_cpu_trials_per_s=kn, kernel_wall_trials_per_s=kw,
               kernel_over_simpy=rk, load_average=load, load_average_end=load_end,
               r_reference=None if ref is None else {"name": ref[0], "trials_per_s": ref[1]})
    print(f"load average at the end {load_end:.1f}")


if __name__ == "__main__":
    main()
