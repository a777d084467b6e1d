"""Parallel runs, cold (issue 16 item 1): the wall time of the whole command

    escalation-sim run scenarios/standard_mtd3.yaml --design boin --n-trials N [--n-jobs J]

(a fresh process each time: interpreter, imports, scenario, worker start-up, the run, the
printed table and the exit; the package's bytecode cached, as after ``pip install``) for N = 1e6 and 1e7 with one job, two jobs and auto (no
``--n-jobs``), and the ratios one job / two jobs and one job / auto.  Targets: two jobs at
least 1.7x one job at 1e7 and never slower than one; 1e6 trials on one job at most 1.0 s.

    python benchmarks/bench_parallel.py                 # median of 5 rounds
    python benchmarks/bench_parallel.py --rounds 9 --save
    python benchmarks/bench_parallel.py --sizes 1e7 --jobs 1 2

The commands of a round run one after the other, rounds repeat, and each figure is the median
over rounds, so a change in the machine's load spreads over every configuration.  Wall-clock
ratios need an idle machine: the load average is printed before and after (on 2 cores a load
above ~0.5 means another process shares the cores and the 2-job figures are pessimistic).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import add_save_option, record

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = str(ROOT / "scenarios" / "standard_mtd3.yaml")


def command(n: int, jobs: str) -> list:
    cmd = [sys.executable, "-m", "escalation_sim", "run", SCENARIO, "--design", "boin",
           "--n-trials", str(n)]
    return cmd if jobs == "auto" else cmd + ["--n-jobs", jobs]


def wall(cmd, env) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--sizes", nargs="+", default=["1e6", "1e7"], help="trial counts")
    ap.add_argument("--jobs", nargs="+", default=["1", "2", "auto"],
                    help="--n-jobs values ('auto': the option left out)")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="keep PYTHONDONTWRITEBYTECODE if set: every process (workers too) "
                         "then compiles the package from source, ~0.3 s of CPU each")
    add_save_option(ap, "parallel.jsonl")
    a = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if not a.no_bytecode:   # as installed: pip writes the .pyc files at install time
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    sizes = [int(float(s)) for s in a.sizes]
    print(f"cpus {os.cpu_count()}, load average before: {load()}, bytecode "
          f"{'not written' if env.get('PYTHONDONTWRITEBYTECODE') else 'cached'}")
    wall(command(10_000, "1"), env)   # warm the file cache (and write the .pyc files)
    times = {(n, j): [] for n in sizes for j in a.jobs}
    for _ in range(a.rounds):
        for n in sizes:
            for j in a.jobs:
                times[n, j].append(wall(command(n, j), env))
    print(f"load average after: {load()}")
    for n in sizes:
        med = {j: statistics.median(times[n, j]) for j in a.jobs}
        for j in a.jobs:
            ratio = f"  {med['1'] / med[j]:.2f}x one job" if "1" in med and j != "1" else ""
            print(f"{n:>11,} trials  n_jobs {j:<4}  median {med[j]:.2f} s  (min "
                  f"{min(times[n, j]):.2f}, max {max(times[n, j]):.2f}){ratio}")
            record(a.save, benchmark="parallel_cold", design="boin", n_trials=n, n_jobs=j,
                   median_s=med[j], min_s=min(times[n, j]), rounds=a.rounds,
                   ratio_vs_one=med["1"] / med[j] if "1" in med else None,
                   load_after=os.getloadavg()[0],
                   bytecode=not env.get("PYTHONDONTWRITEBYTECODE"))


if __name__ == "__main__":
    main()
