"""Command-line start-up time (issue 18: at most 0.3 s for --help, validate, table and
boundaries), measured as the wall time of a fresh ``python -m escalation_sim ...`` process.

    python benchmarks/bench_startup.py            # median of 7 runs per command
    python benchmarks/bench_startup.py --runs 15 --save

Start-up is mostly imports: the command line imports the scenario model (pydantic, numpy,
the designs) only after the arguments are parsed, scipy.stats and scipy.integrate on first
use, and pandas / matplotlib / joblib only in the commands that need them.  The figure also
holds Python's own start-up (``python -c pass``, printed first) and depends on the machine
and its load: compare medians taken on an idle machine.
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
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "--help": ["-m", "escalation_sim", "--help"],
    "validate": ["-m", "escalation_sim", "validate", SCENARIO],
    "boundaries": ["-m", "escalation_sim", "boundaries", "--target", "0.3"],
    "table 3+3": ["-m", "escalation_sim", "table", "--design", "3+3"],
    "table boin": ["-m", "escalation_sim", "table", "--design", "boin", "--target", "0.3"],
}


def wall(args, env) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per command (default 7)")
    add_save_option(ap, "startup.jsonl")
    a = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for name, args in COMMANDS.items():
        wall(args, env)  # warm the file cache
        times = [wall(args, env) for _ in range(a.runs)]
        med = statistics.median(times)
        print(f"{name:<16} median {med:.3f} s  (min {min(times):.3f}, max {max(times):.3f}, "
              f"{a.runs} runs)")
        record(a.save, benchmark="startup", command=name, median_s=med, min_s=min(times),
               runs=a.runs)


if __name__ == "__main__":
    main()
