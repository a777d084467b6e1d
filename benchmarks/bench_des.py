"""Throughput of the discrete-event (simpy) CAR-T trial engine (issue #5).

Runs every design of the seed scenario (scenarios/relma_cel_sle.yaml: 4 doses, N = 24, its
CAR-T ``conduct`` block with sentinel spacing and a follow-up cap) through
``escalation_sim.engines.calendar.simulate_des_trials`` and prints full simulated trials per second with
n_jobs 1 and 2 (joblib, loky processes, over chunks of trial indices), plus the two
time-to-event designs built on the same context.  With ``--save [PATH]`` each figure is also
appended as one JSON line (default benchmarks/results/des.jsonl, untracked).  Timings are warm (a first run fills the decision memo and
starts the worker pool) and are the best of ``--repeat`` runs; ``cpu_trials_per_s`` is the
single-process figure measured in process CPU time, which other load on the machine does not
distort.

    python benchmarks/bench_des.py [--trials 4000] [--jobs 1 2] [--tite-trials 1000] [--save [PATH]]

A graded scenario (``truth.toxicities``, e.g. scenarios/cart_crs_icans.yaml: the seed trial's
logistics with CRS and ICANS) runs on its outcome model, each event type at its own onset;
``--binary`` runs it on its derived DLT rates instead (one binary DLT per patient), which
isolates the cost of the graded model on equal DLT rates and logistics.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_save_option, record  # noqa: E402

from escalation_sim import load_scenario  # noqa: E402
from escalation_sim.designs.base import DesignContext  # noqa: E402
from escalation_sim.designs.registry import get_entry  # noqa: E402
from escalation_sim.engines.calendar import calendar_truth, simulate_des_trials  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 2026


def _chunk(design, p, conduct, seed, a, b):
    res = simulate_des_trials(design, p, conduct, seed, range(a, b))
    return res["duration_days"]


def run(design, p, conduct, n, jobs, chunk=500):
    """Simulate trials 0..n-1; returns the per-trial durations (order of trial index)."""
    if jobs == 1:
        return simulate_des_trials(design, p, conduct, SEED, range(n))["duration_days"]
    import joblib
    ranges = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    parts = joblib.Parallel(n_jobs=jobs, backend="loky")(
        joblib.delayed(_chunk)(design, p, conduct, SEED, a, b) for a, b in ranges)
    return np.concatenate(parts)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "relma_cel_sle.yaml"))
    ap.add_argument("--trials", type=int, default=4000)
    ap.add_argument("--tite-trials", type=int, default=1000)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings")
    ap.add_argument("--designs", nargs="+", default=None,
                    help="only these designs of the scenario (and TITE designs by type)")
    ap.add_argument("--binary", action="store_true",
                    help="a graded truth on its derived DLT rates (binary DLTs)")
    add_save_option(ap, "des.jsonl")
    args = ap.parse_args(argv)
    sc = load_scenario(args.scenario)
    conduct = sc.model.conduct
    p = sc.p_true.tolist() if args.binary else calendar_truth(sc)
    tr = sc.model.trial
    ctx = DesignContext(n_doses=sc.n_doses, target=sc.target, cohort_size=tr.cohort_size,
                        max_n=tr.max_n, start_dose=tr.start_dose - 1)
    designs = [(it.name, it.design, args.trials) for it in sc.designs
               if args.designs is None or it.name in args.designs]
    for t in ("tite-boin", "tite-crm"):
        if args.designs is not None and t not in args.designs:
            continue
        entry = get_entry(t)
        designs.append((t, entry.build(entry.spec_model(type=t), ctx), args.tite_trials))
    print(f"scenario {sc.name}: {sc.n_doses} doses, N = {tr.max_n}, conduct: "
          f"{conduct.accrual_per_month}/month, stagger {conduct.stagger_days} d, "
          f"cap {conduct.max_in_followup}")
    print(f"{'design':<10}{'trials':>8}{'jobs':>6}{'trials/s':>12}{'cpu trials/s':>14}"
          f"{'mean days':>11}")
    for name, design, n in designs:
        run(design, p, conduct, min(n, 500), 1)                         # warm the memo
        for jobs in args.jobs:
            if jobs > 1:
                run(design, p, conduct, 2 * jobs, jobs, chunk=1)          # start the pool
            best, best_cpu = float("inf"), float("inf")
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                dur = run(design, p, conduct, n, jobs)
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)
            rate = n / best
            cpu_rate = n / best_cpu if jobs == 1 else None
            cpu_txt = f"{cpu_rate:>14,.0f}" if cpu_rate else f"{'':>14}"
            print(f"{name:<10}{n:>8,}{jobs:>6}{rate:>12,.0f}{cpu_txt}{dur.mean():>11.0f}")
            rec = dict(benchmark="des_full_trials", scenario=sc.name, design=name,
                       truth="binary" if args.binary or not sc.model.truth.graded else "graded",
                       n_trials=n, n_jobs=jobs, trials_per_s=rate, seconds=best,
                       mean_duration_days=float(dur.mean()))
            if cpu_rate:
                rec["cpu_trials_per_s"] = cpu_rate
            record(args.save, **rec)


if __name__ == "__main__":
    main()
