"""Throughput of the vectorised Monte Carlo engine (issue #4).

For 3+3, BOIN and CRM of the 4-dose, N = 24 scenario scenarios/standard_mtd3.yaml, and
mTPI-2, Keyboard, i3+3 and BLRM added to it with their defaults (BLRM needs dose amounts: the
benchmark gives the doses 10, 20, 40, ... in memory; the bundled file stays as it is), prints
simulated trials per second at 1e4, 1e5 and 1e6 trials with n_jobs 1 and 2, and the peak
memory of the parent process (tracemalloc: Python and numpy allocations).  With
``--save [PATH]`` each figure is also appended as a JSON line (default
benchmarks/results/oc.jsonl, untracked).  Timings are warm: a first small run builds each
design's state graph and starts the worker pool.

    python benchmarks/bench_oc.py [--sizes 10000 100000 1000000] [--jobs 1 2]
                                  [--designs mtpi2 keyboard i3+3 blrm] [--save [PATH]]
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_save_option, record, scenario_with_extra_designs  # noqa: E402

from escalation_sim import simulate  # noqa: E402
from escalation_sim.inputs.scenario import load_scenario_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def with_blrm(sc):
    """The scenario with doubling dose amounts and a default BLRM added (if it has none)."""
    raw = dict(sc.raw)
    if any(d.get("type") == "blrm" for d in raw["designs"]):
        return sc
    raw["doses"] = [{"label": lab, "amount": 10.0 * 2 ** k}
                    for k, lab in enumerate(sc.dose_labels)]
    raw["designs"] = list(raw["designs"]) + [{"type": "blrm"}]
    return load_scenario_dict(raw, sc.source)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "standard_mtd3.yaml"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings")
    add_save_option(ap, "oc.jsonl")
    ap.add_argument("--designs", nargs="+", metavar="NAME", help="only these designs")
    args = ap.parse_args(argv)
    sc = scenario_with_extra_designs(args.scenario)
    sc = with_blrm(sc)
    if args.designs:
        raw = dict(sc.raw)
        raw["designs"] = [d for d in raw["designs"] if (d.get("name") or d["type"]) in args.designs]
        sc = load_scenario_dict(raw, sc.source)
    print(f"scenario {sc.name}: {sc.n_doses} doses, N = {sc.model.trial.max_n}")
    print(f"{'design':<9}{'trials':>10}{'jobs':>6}{'trials/s':>14}{'peak MB':>10}")
    for item in sc.designs:
        if args.designs and item.name not in args.designs:
            continue
        for jobs in args.jobs:
            simulate(sc, n_trials=20_000, designs=[item.name], n_jobs=jobs)  # warm-up
            for n in args.sizes:
                best = float("inf")
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    simulate(sc, n_trials=n, designs=[item.name], n_jobs=jobs, seed=2026)
                    best = min(best, time.perf_counter() - t0)
                # memory in a separate run: tracemalloc slows allocation-heavy code down
                tracemalloc.start()
                simulate(sc, n_trials=n, designs=[item.name], n_jobs=jobs, seed=2026)
                peak = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
                rate = n / best
                print(f"{item.name:<9}{n:>10,}{jobs:>6}{rate:>14,.0f}{peak:>10.1f}")
                record(args.save, benchmark="monte_carlo_oc", scenario=sc.name,
                       design=item.name, n_trials=n, n_jobs=jobs, seconds=best,
                       trials_per_s=rate, peak_mem_mb_parent=peak)


if __name__ == "__main__":
    main()
