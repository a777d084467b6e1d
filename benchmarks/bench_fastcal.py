"""The calendar engine's fast path against the simpy engine (issue 16, item 2).

Every design of the seed scenario (scenarios/relma_cel_sle.yaml: 4 doses, N = 24, cohorts of
3, its CAR-T ``conduct`` block with sentinel spacing and a follow-up cap) plus TITE-BOIN and
TITE-CRM, on one core, through ``simulate_des_trials(..., engine="simpy" | "fast")``.  The two
engines are timed interleaved in one process (round r: simpy then fast, for each design), so
a machine shared with other jobs slows both alike and the ratio fast / simpy stays
meaningful; each figure is the median over ``--rounds`` of trials per CPU second (process
time) and per wall second.  Before timing, both engines run the first 200 trials (fills the
decision memo) and their outputs are compared (the script stops if they differ).

Reference figures for R on this machine class (quoted in the README, not timed here):
TITEgBOIN about 675 trials/s for TITE-BOIN, dfcrm::titesim about 40 for TITE-CRM.

    python benchmarks/bench_fastcal.py [--trials 2000] [--rounds 3] [--save [PATH]]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_save_option, record  # noqa: E402

from escalation_sim import load_scenario  # noqa: E402
from escalation_sim.designs.base import DesignContext  # noqa: E402
from escalation_sim.designs.registry import get_entry  # noqa: E402
from escalation_sim.engines.calendar import simulate_des_trials  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 2026
#: R references on this machine class, trials per second (README)
R_REFERENCE = {"tite-boin": ("TITEgBOIN", 675.0), "tite-crm": ("titesim", 40.0)}


def _same(a: dict, b: dict) -> bool:
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


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "relma_cel_sle.yaml"))
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    add_save_option(ap, "fastcal.jsonl")
    args = ap.parse_args(argv)
    sc = load_scenario(args.scenario)
    conduct = sc.model.conduct
    p = sc.p_true.tolist()
    tr = sc.model.trial
    ctx = DesignContext(n_doses=sc.n_doses, target=sc.target, cohort_size=tr.cohort_size,
                        max_n=tr.max_n, start_dose=tr.start_dose - 1)
    designs = [(it.name, it.design) for it in sc.designs]
    for t in ("tite-boin", "tite-crm"):
        if t not in {n for n, _ in designs}:
            entry = get_entry(t)
            designs.append((t, entry.build(entry.spec_model(type=t), ctx)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"scenario {sc.name}: {sc.n_doses} doses, N = {tr.max_n}; {args.trials:,} trials "
          f"per timing, median of {args.rounds} interleaved rounds, one core; "
          f"load average {load:.1f} on {os.cpu_count()} CPUs at start")
    for name, design in designs:
        a = simulate_des_trials(design, p, conduct, SEED, range(200), engine="simpy")
        b = simulate_des_trials(design, p, conduct, SEED, range(200), engine="fast")
        if not _same(a, b):
            raise SystemExit(f"{name}: the fast path and simpy differ")
    cpu = {(n, e): [] for n, _ in designs for e in ("simpy", "fast")}
    wall = {k: [] for k in cpu}
    for _ in range(args.rounds):
        for name, design in designs:
            for eng in ("simpy", "fast"):
                t0, c0 = time.perf_counter(), time.process_time()
                simulate_des_trials(design, p, conduct, SEED, range(args.trials), engine=eng)
                cpu[name, eng].append(args.trials / (time.process_time() - c0))
                wall[name, eng].append(args.trials / (time.perf_counter() - t0))
    print(f"{'design':<10}{'simpy/cpu s':>13}{'fast/cpu s':>12}{'fast/wall s':>13}"
          f"{'fast/simpy':>12}  R reference")
    for name, _ in designs:
        s = statistics.median(cpu[name, "simpy"])
        f = statistics.median(cpu[name, "fast"])
        fw = statistics.median(wall[name, "fast"])
        ratio = statistics.median(x / y for x, y in zip(cpu[name, "fast"], cpu[name, "simpy"],
                                                         strict=True))
        ref = R_REFERENCE.get(name)
        ref_txt = f"{ref[0]} ~{ref[1]:,.0f}/s: fast {f / ref[1]:,.0f}x, simpy " \
                  f"{s / ref[1]:,.0f}x" if ref else ""
        print(f"{name:<10}{s:>13,.0f}{f:>12,.0f}{fw:>13,.0f}{ratio:>12.2f}  {ref_txt}")
        record(args.save, benchmark="calendar_fast_vs_simpy", scenario=sc.name, design=name,
               n_trials=args.trials, rounds=args.rounds, simpy_cpu_trials_per_s=s,
               fast_cpu_trials_per_s=f, fast_wall_trials_per_s=fw, fast_over_simpy=ratio,
               load_average=load,
               r_reference=None if ref is None else {"name": ref[0], "trials_per_s": ref[1]})


if __name__ == "__main__":
    main()
