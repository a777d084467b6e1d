"""Large trials (issue 16): the state graph's first build, warm Monte Carlo, exact enumeration.

Prints, for BOIN and CRM with cohorts of 3 (target 0.25; 4 doses: standard_mtd3's truth and
skeleton; 6 doses: truth 0.02 0.05 0.10 0.18 0.28 0.42, default calibrated skeleton):

* Monte Carlo at max N = 60 on 4 and 6 doses through ``escalation_sim.simulate`` (n_jobs 1):
  the first run of 10^6 trials in a fresh process (it builds the state graph), the states
  built, the first build (first run minus a warm run), and warm runs of 10^6 trials on the
  built graph (seconds and trials/s);
* exact enumeration (``exact_tally(design, p)``, as the command line calls it) at max N = 48
  on 6 doses in a fresh process: seconds (wall and the process's CPU), states, endings, and the process's peak resident
  memory (``ru_maxrss``) next to its resident memory before the enumeration (interpreter
  and imports).

Every figure is measured in ``--repeat`` fresh processes (3 by default) and the median is
printed (warm runs: the median of 3 warm runs in each process, then the median over
processes), because the machine is shared.  With ``--save [PATH]`` each figure is appended as
a JSON line (default benchmarks/results/large.jsonl, untracked) with ``--label`` (e.g. "main"
or a branch name).  The script uses only interfaces that existed before issue 16, so it can
measure an older checkout: ``PYTHONPATH=/path/to/old python benchmarks/bench_large.py``.

    python benchmarks/bench_large.py [--repeat 3] [--skip-exact] [--skip-mc]
                                     [--label NAME] [--save [PATH]]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_save_option, record  # noqa: E402

TARGET = 0.25
TRUTH = {4: [0.05, 0.12, 0.25, 0.40], 6: [0.02, 0.05, 0.10, 0.18, 0.28, 0.42]}
SKELETON = {4: [0.10, 0.17, 0.25, 0.35], 6: None}
MC_N, EXACT_N, TRIALS, SEED = 60, 48, 1_000_000, 2026


def scenario(kind: str, k: int, max_n: int):
    from escalation_sim.inputs.scenario import load_scenario_dict
    design = {"type": kind}
    if kind == "crm" and SKELETON[k] is not None:
        design["skeleton"] = SKELETON[k]
    raw = {"name": f"large-{kind}-{k}", "doses": [f"D{i + 1}" for i in range(k)],
           "truth": {"p_dlt": TRUTH[k]}, "target": TARGET,
           "trial": {"max_n": max_n, "cohort_size": 3, "start_dose": 1},
           "designs": [design], "simulation": {"n_trials": 1000, "seed": SEED}}
    return load_scenario_dict(raw, "bench_large")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child_mc(kind: str, k: int) -> dict:
    from escalation_sim import simulate
    from escalation_sim.engines.graph import graph_for
    sc = scenario(kind, k, MC_N)
    t0 = time.perf_counter()
    simulate(sc, n_trials=TRIALS, n_jobs=1, seed=SEED)
    first = time.perf_counter() - t0
    g = graph_for(sc.designs[0].design)
    stats = dict(getattr(g, "stats", {}))
    warm = []
    for _ in range(3):
        t0 = time.perf_counter()
        simulate(sc, n_trials=TRIALS, n_jobs=1, seed=SEED)
        warm.append(time.perf_counter() - t0)
    return {"first_s": first, "warm_s": statistics.median(warm), "states": g.n_states,
            "graph_build_s": stats.get("build_seconds"),
            "graph_design_s": stats.get("design_seconds")}


def child_exact(kind: str, k: int) -> dict:
    import resource
    from escalation_sim.engines.exact import exact_tally
    from escalation_sim.engines.graph import graph_for
    sc = scenario(kind, k, EXACT_N)
    design = sc.designs[0].design
    before = rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    # as the command line calls it: the array sweep where the design has batch rules (no
    # state graph), else the sweep over the process's (here fresh) state graph
    tally = exact_tally(design, sc.p_true)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # before len(counts):
    states = getattr(tally, "n_states", None)   # array sweep: the states it visited
    stats = {}
    if states is None:
        g = graph_for(design)
        states, stats = g.n_states, dict(getattr(g, "stats", {}))
    return {"seconds": seconds, "cpu_s": cpu, "states": states, "endings": len(tally.counts),
            "rss_before_mb": before, "peak_rss_mb": peak,
            "graph_design_s": stats.get("design_seconds")}


def run_child(*args) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"child {args} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def median_of(docs, key):
    vals = [d[key] for d in docs if d.get(key) is not None]
    return statistics.median(vals) if vals else None


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per figure")
    ap.add_argument("--skip-mc", action="store_true")
    ap.add_argument("--skip-exact", action="store_true")
    add_save_option(ap, "large.jsonl")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        what, kind, k = args.child
        doc = child_mc(kind, int(k)) if what == "mc" else child_exact(kind, int(k))
        print(json.dumps(doc))
        return
    import escalation_sim
    print(f"escalation_sim from {Path(escalation_sim.__file__).parent}; median of "
          f"{args.repeat} fresh processes")
    if not args.skip_mc:
        print(f"\nMonte Carlo, max N = {MC_N}, cohorts of 3, {TRIALS:,} trials, n_jobs 1")
        print(f"{'design':<7}{'doses':>6}{'first run s':>13}{'states':>10}{'build s':>9}"
              f"{'warm run s':>12}{'warm trials/s':>15}")
        for kind in ("boin", "crm"):
            for k in (4, 6):
                docs = [run_child("mc", kind, str(k)) for _ in range(args.repeat)]
                first, warm = median_of(docs, "first_s"), median_of(docs, "warm_s")
                build = first - warm
                states = docs[0]["states"]
                print(f"{kind:<7}{k:>6}{first:>13.2f}{states:>10,}{build:>9.2f}{warm:>12.2f}"
                      f"{TRIALS / warm:>15,.0f}")
                if args.save:
                    record(args.save, benchmark="large_mc", label=args.label, design=kind,
                           n_doses=k, max_n=MC_N, n_trials=TRIALS, first_run_s=first,
                           first_build_s=build, warm_run_s=warm,
                           warm_trials_per_s=TRIALS / warm, states=states,
                           graph_build_s=median_of(docs, "graph_build_s"),
                           graph_design_s=median_of(docs, "graph_design_s"),
                           repeat=args.repeat, runs=docs)
    if not args.skip_exact:
        print(f"\nExact enumeration, max N = {EXACT_N}, 6 doses, cohorts of 3")
        print(f"{'design':<7}{'seconds':>9}{'CPU s':>7}{'states':>11}{'endings':>10}"
              f"{'peak RSS MB':>13}{'RSS before MB':>15}")
        for kind in ("boin", "crm"):
            docs = [run_child("exact", kind, "6") for _ in range(args.repeat)]
            sec, peak = median_of(docs, "seconds"), median_of(docs, "peak_rss_mb")
            cpu = median_of(docs, "cpu_s")
            before = median_of(docs, "rss_before_mb")
            print(f"{kind:<7}{sec:>9.2f}{cpu:>7.2f}{docs[0]['states']:>11,}"
                  f"{docs[0]['endings']:>10,}{peak:>13.0f}{before:>15.0f}")
            if args.save:
                record(args.save, benchmark="large_exact", label=args.label, design=kind,
                       n_doses=6, max_n=EXACT_N, seconds=sec, cpu_seconds=cpu,
                       states=docs[0]["states"],
                       endings=docs[0]["endings"], peak_rss_mb=peak, rss_before_mb=before,
                       graph_design_s=median_of(docs, "graph_design_s"),
                       repeat=args.repeat, runs=docs)


if __name__ == "__main__":
    main()
