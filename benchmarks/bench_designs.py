"""Issue 13's speed targets for the second-wave designs, in one script.

* Time-free Monte Carlo on one core (``n_jobs=1``), 4 doses, N = 24 in cohorts of 3
  (scenarios/standard_mtd3.yaml with the designs added in memory; the BLRM gets the dose
  amounts 10, 20, 40, 80): trials per second at ``--trials`` (default 1e6), warm (a first
  run of 20,000 trials builds the state graph), best of ``--repeat``, by the wall clock and
  per CPU second of the process (the machine is often shared: CPU time is the steadier
  figure).  Targets: >= 1e6/s for
  mTPI-2, Keyboard and i3+3; >= 2e5/s for BLRM.  The rolling six on complete data is timed too
  (no target in the issue).
* Exact operating characteristics at N = 24, cold (a fresh state graph: every decision
  computed), for every countable design: 3+3, BOIN, CRM, mTPI-2, Keyboard, i3+3, BLRM and the
  rolling six on complete data (cohorts of 1 and of 3).  Target: < 1 s each.

The time-to-event designs (TITE-CRM, TITE-BOIN, rolling6) need the calendar engine:
benchmarks/bench_des.py.  ``--save [PATH]`` appends one JSON line per figure (default
benchmarks/results/designs.jsonl, untracked).

    python benchmarks/bench_designs.py [--trials 1000000] [--repeat 3] [--save [PATH]]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_save_option, record  # noqa: E402

from escalation_sim import simulate  # noqa: E402
from escalation_sim.engines.exact import exact_tally  # noqa: E402
from escalation_sim.engines.graph import StateGraph  # noqa: E402
from escalation_sim.inputs.scenario import load_scenario, load_scenario_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AMOUNTS = [10, 20, 40, 80]
DESIGNS = [{"type": "3+3"}, {"type": "boin"},
           {"type": "crm", "skeleton": [0.10, 0.17, 0.25, 0.35]},
           {"type": "mtpi2"}, {"type": "keyboard"}, {"type": "i3+3"},
           {"type": "blrm", "dose_amounts": AMOUNTS},
           {"type": "rolling6-complete"},
           {"type": "rolling6-complete", "name": "rolling6-complete-c3", "cohort_size": 3}]
#: trials per second the issue asks for (one core)
MC_TARGETS = {"mtpi2": 1e6, "keyboard": 1e6, "i3+3": 1e6, "blrm": 2e5,
              "rolling6-complete": None}
EXACT_TARGET_S = 1.0


def scenario():
    base = load_scenario(ROOT / "scenarios" / "standard_mtd3.yaml")
    raw = dict(base.raw, designs=DESIGNS)
    return load_scenario_dict(raw, base.source)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings")
    add_save_option(ap, "designs.jsonl")
    args = ap.parse_args(argv)
    sc = scenario()
    print(f"scenario {sc.name}: {sc.n_doses} doses, N = {sc.model.trial.max_n}, "
          f"truth {[float(p) for p in sc.p_true]}")

    print(f"\nMonte Carlo, one core, {args.trials:,} trials (warm, best of {args.repeat})")
    print(f"{'design':<22}{'trials/s':>14}{'per CPU s':>14}{'target':>12}  met (wall clock)")
    for name, target in MC_TARGETS.items():
        simulate(sc, n_trials=20_000, designs=[name], n_jobs=1)  # builds the graph
        best = cpu = float("inf")
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            simulate(sc, n_trials=args.trials, designs=[name], n_jobs=1, seed=2026)
            best = min(best, time.perf_counter() - t0)
            cpu = min(cpu, time.process_time() - c0)
        rate, cpu_rate = args.trials / best, args.trials / cpu
        met = "-" if target is None else ("yes" if rate >= target else "NO")
        tgt = "-" if target is None else f"{target:,.0f}"
        print(f"{name:<22}{rate:>14,.0f}{cpu_rate:>14,.0f}{tgt:>12}  {met}")
        record(args.save, benchmark="designs_monte_carlo", design=name, n_trials=args.trials,
               n_jobs=1, seconds=best, cpu_seconds=cpu, trials_per_s=rate,
               trials_per_cpu_s=cpu_rate, target=target)

    print("\nExact OCs, N = 24, cold (fresh state graph)")
    print(f"{'design':<22}{'seconds':>10}{'states':>10}{'endings':>10}  met (< {EXACT_TARGET_S:g} s)")
    for item in sc.designs:
        t0 = time.perf_counter()
        g = StateGraph(item.design)
        tally = exact_tally(item.design, sc.p_true, graph=g)
        dt = time.perf_counter() - t0
        met = "yes" if dt < EXACT_TARGET_S else "NO"
        print(f"{item.name:<22}{dt:>10.3f}{g.n_states:>10}{len(tally.counts):>10}  {met}")
        record(args.save, benchmark="designs_exact", design=item.name, max_n=24, seconds=dt,
               states=g.n_states, endings=len(tally.counts))


if __name__ == "__main__":
    main()
