"""Throughput of the time-free cohort engine on graded outcomes (issue 12).

Prints simulated trials per second on one core (the engine's own chunk function, no worker
pool) for

* ``boin-binary``: BOIN on the binary truth of scenarios/standard_mtd3.yaml (4 doses, N = 24):
  the ``u < p_d`` path, to compare before / after the outcome model (this part runs on any
  version of the package: ``--only binary``);
* ``boin-graded``: BOIN on a graded truth (CRS and ICANS with onsets and a latent correlation,
  the truth of issue 12 / scenarios/cart_crs_icans.yaml): DLT flags from the outcome model;
* ``gboin``: gBOIN (default scores, target 0.47/1.5) on the same graded truth, 4 doses,
  N = 24 in cohorts of 3: score units of the worst grade in the window;
* ``gboin-1type``: the same gBOIN on a one-type graded truth without onsets (doses 2-5 of the
  TITEgBOIN example, docs/reference_notes/gboin_titegboin.md §8.3): one latent per patient.

Timings are warm (a first run builds the state graph) and the best of ``--repeat``;
``cpu`` is process CPU time, which other load on the machine distorts less than wall time.

    python benchmarks/bench_graded.py [--trials 200000] [--only binary graded gboin]
                                      [--save [PATH]]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_save_option, record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 2026

GRADED = """
name: graded-bench
doses: [DL1, DL2, DL3, DL4]
truth:
  toxicities:
    - type: CRS
      grades:
        1: [0.30, 0.35, 0.40, 0.40]
        2: [0.10, 0.15, 0.20, 0.25]
        3: [0.02, 0.04, 0.07, 0.12]
        4: [0.00, 0.01, 0.02, 0.04]
      onset_days: {mean: 3, sd: 2, dist: gamma}
    - type: ICANS
      grades:
        1: [0.10, 0.15, 0.20, 0.20]
        2: [0.04, 0.06, 0.08, 0.10]
        3: [0.02, 0.05, 0.11, 0.20]
        4: [0.00, 0.01, 0.04, 0.08]
      onset_days: {mean: 8, sd: 4, dist: gamma}
  correlation: 0.5
target: 0.25
trial: {max_n: 24, cohort_size: 3}
designs:
  - {type: boin}
  - {type: gboin, target: 0.31333333333333335}
"""


ONE_TYPE = """
name: one-type-bench
doses: [DL1, DL2, DL3, DL4]
truth:
  toxicities:
    - type: TOX
      grades:
        2: [0.15, 0.18, 0.19, 0.16]
        3: [0.07, 0.11, 0.14, 0.15]
        4: [0.03, 0.09, 0.16, 0.35]
target: 0.3
trial: {max_n: 24, cohort_size: 3}
designs:
  - {type: gboin, target: 0.31333333333333335}
"""


def timed(fn, repeat):
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings")
    ap.add_argument("--only", nargs="+", choices=["binary", "graded", "gboin", "gboin-1type"],
                    default=["binary", "graded", "gboin", "gboin-1type"])
    add_save_option(ap, "graded.jsonl")
    args = ap.parse_args(argv)

    from escalation_sim.engines.cohort import simulate_cohort_chunk
    from escalation_sim.inputs.scenario import load_scenario
    cases = []
    if "binary" in args.only:
        sc = load_scenario(ROOT / "scenarios" / "standard_mtd3.yaml")
        item = next(d for d in sc.designs if d.type == "boin")
        cases.append(("boin-binary", item.design, sc.p_true, {}))
    if "graded" in args.only or "gboin" in args.only:
        from escalation_sim.inputs.scenario import load_scenario_text
        g = load_scenario_text(GRADED, "bench_graded.py")
        model = g.outcome_model
        if "graded" in args.only:
            cases.append(("boin-graded", g.design("boin").design, g.p_true, {"model": model}))
        if "gboin" in args.only:
            cases.append(("gboin", g.design("gboin").design, g.p_true, {"model": model}))
    if "gboin-1type" in args.only:
        from escalation_sim.inputs.scenario import load_scenario_text
        one = load_scenario_text(ONE_TYPE, "bench_graded.py")
        cases.append(("gboin-1type", one.design("gboin").design, one.p_true,
                      {"model": one.outcome_model}))
    n = args.trials
    for name, design, p, kw in cases:
        simulate_cohort_chunk(design, p, SEED, 0, 20_000, **kw)    # warm: builds the graph
        wall, cpu = timed(lambda: simulate_cohort_chunk(design, p, SEED, 0, n, **kw),
                          args.repeat)
        print(f"{name:<12} {n:>9,} trials: {n / wall:>12,.0f} trials/s wall, "
              f"{n / cpu:>12,.0f} trials/s cpu (one core)")
        record(args.save, bench="graded", case=name, trials=n, trials_per_s=n / wall,
               cpu_trials_per_s=n / cpu)


if __name__ == "__main__":
    main()
