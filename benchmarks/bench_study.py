"""Wall time of a study (issue #7): 3 designs x 6 scenarios x 10^5 trials.

Runs scenarios/studies/standard_six.yaml (3+3, BOIN and CRM on scenarios/standard_*.yaml)
with the local backend on 1 and 2 cores (joblib/loky processes), and on a 2-worker dask
LocalCluster, both started by the run (cluster start-up included, as from the command line)
and started beforehand (scheduler address given; start-up excluded).  Every figure is
measured in a fresh Python process, so worker pools and state-graph caches start cold as
they do for ``escalation-sim study``; package imports are excluded.  Checkpointing is on
(every chunk of 20000 trials written as it finishes), as in every study run.  Each figure is
printed (and with ``--save [PATH]`` appended as a JSON line, default
benchmarks/results/study.jsonl, untracked); the oc tables of all runs are checked to be
identical.

    python benchmarks/bench_study.py [--n-trials 100000] [--repeat 1] [--save [PATH]]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_save_option, record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "scenarios" / "studies" / "standard_six.yaml"

CONFIGS = [
    # name, backend, n_jobs, start a cluster beforehand
    ("local-1core", "sequential", 1, False),
    ("local-2cores", "loky", 2, False),
    ("dask-localcluster-2workers", "dask", 2, False),
    ("dask-prestarted-2workers", "dask", 2, True),
]


def one(args) -> None:
    """Child process: time one study run, print a JSON document."""
    import logging

    import escalation_sim.run.study as study_mod  # noqa: F401  (imports excluded from timing)
    from escalation_sim.run.study import load_study, run_study
    text = STUDY.read_text().replace("n_trials: 100000", f"n_trials: {args.n_trials}")
    tmp = Path(args.out)
    f = tmp / "study.yaml"
    f.write_text(text.replace('["../standard_*.yaml"]',
                              json.dumps([str(ROOT / "scenarios" / "standard_*.yaml")])))
    load_study(f)  # warm the design registry imports
    scheduler, cluster, start_s = None, None, 0.0
    if args.prestart:
        from dask.distributed import LocalCluster
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=args.n_jobs, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
        start_s = time.perf_counter() - t0
        scheduler = cluster.scheduler_address
    t0 = time.perf_counter()
    res = run_study(f, tmp / "out", n_jobs=args.n_jobs, backend=args.backend,
                    scheduler=scheduler, quiet=True)
    seconds = time.perf_counter() - t0
    if cluster is not None:
        cluster.close()
    print(json.dumps({"seconds": seconds, "cluster_start_s": start_s,
                      "n_cells": len(res.study.cells),
                      "n_designs": int(res.oc["design"].nunique()),
                      "chunk_size": res.meta["chunk_size"]}))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-trials", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=1, help="best of N fresh-process runs")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--n-jobs", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--prestart", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    add_save_option(ap, "study.jsonl")
    args = ap.parse_args(argv)
    if args.one:
        return one(args)
    import pandas as pd
    print(f"study {STUDY.name}: 3 designs x 6 scenarios x {args.n_trials:,} trials")
    print(f"{'configuration':<30}{'seconds':>9}{'design-trials/s':>17}{'cluster start s':>17}")
    tables = {}
    for name, backend, jobs, prestart in CONFIGS:
        best = None
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, __file__, "--one", "--backend", backend, "--n-jobs",
                       str(jobs), "--out", tmp, "--n-trials", str(args.n_trials)]
                if prestart:
                    cmd.append("--prestart")
                r = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if r.returncode != 0:
                    sys.exit(f"{name} failed:\n{r.stderr}")
                doc = json.loads(r.stdout.strip().splitlines()[-1])
                tables[name] = pd.read_parquet(Path(tmp) / "out" / "oc.parquet")
            if best is None or doc["seconds"] < best["seconds"]:
                best = doc
        work = best["n_cells"] * best["n_designs"] * args.n_trials
        rate = work / best["seconds"]
        print(f"{name:<30}{best['seconds']:9.2f}{rate:17,.0f}"
              f"{best['cluster_start_s']:17.2f}")
        record(args.save, benchmark="study", study="standard-six", configuration=name,
               backend=backend, n_jobs=jobs, n_cells=best["n_cells"],
               n_designs=best["n_designs"], n_trials=args.n_trials,
               chunk_size=best["chunk_size"], seconds=best["seconds"],
               design_trials_per_s=rate,
               includes_cluster_start=(backend == "dask" and not prestart),
               cluster_start_s=best["cluster_start_s"] if prestart else None,
               repeat=args.repeat)
    ref = next(iter(tables.values()))
    same = all(t.equals(ref) for t in tables.values())
    print(f"oc tables identical across configurations: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
