"""Issue 13's speed targets for the efficacy designs (BOIN12, Keyboard phase I/II).

* Time-free Monte Carlo on one core (``n_jobs=1``), 4 doses, N = 24 in cohorts of 3
  (scenarios/standard_mtd3.yaml with ``truth.efficacy`` [0.20, 0.40, 0.55, 0.60] and the two
  designs added in memory): trials per CPU second at ``--trials`` (default 1e6), each round
  from a fresh state graph after a first run of 20,000 trials (another seed), median of
  ``--repeat`` rounds; and "graph complete", the same trials again once every state they
  reach is in the graph (the array work alone).  Target >= 2e5 trials/s.  These designs'
  states count responders as well as DLTs: a run of 1e6 trials reaches 250,000 to 310,000
  distinct states, decided in batches (designs/batch_obd.py).
* Exact operating characteristics (the joint array sweep) at N = 12 to 27: CPU seconds,
  states, endings, peak traced memory, |1 - total probability|.  N = 27 is refused at once
  (about 6 million states).  Target < 1 s at N = 24.

    python benchmarks/bench_efficacy.py [--trials 1000000] [--repeat 3] [--save [PATH]]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_save_option, record  # noqa: E402

from escalation_sim import simulate  # noqa: E402
from escalation_sim.designs.rules import with_stopping_rules  # noqa: E402
from escalation_sim.engines.exact import ExactTooLarge, exact_tally  # noqa: E402
from escalation_sim.inputs.scenario import load_scenario, load_scenario_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EFFICACY = [0.20, 0.40, 0.55, 0.60]
DESIGNS = [{"type": "boin12"}, {"type": "keyboard-obd"}]
MC_TARGET = 2e5
EXACT_TARGET_S = 1.0


def scenario():
    base = load_scenario(ROOT / "scenarios" / "standard_mtd3.yaml")
    raw = dict(base.raw, designs=DESIGNS)
    raw["truth"] = dict(raw["truth"], efficacy=EFFICACY)
    return load_scenario_dict(raw, base.source)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="rounds (the median is shown)")
    add_save_option(ap, "efficacy.jsonl")
    args = ap.parse_args(argv)
    sc = scenario()
    print(f"scenario {sc.name} + efficacy {EFFICACY}: {sc.n_doses} doses, "
          f"N = {sc.model.trial.max_n}, load average {os.getloadavg()[0]:.2f}")
    print(f"\nMonte Carlo, one core, {args.trials:,} trials; each round from a fresh state "
          f"graph (after a 20,000-trial run with another seed; the batch rules' tables are "
          f"cached per process); median of {args.repeat} round(s)")
    print(f"{'design':<16}{'trials/s':>12}{'per CPU s':>12}{'states':>10}"
          f"{'graph complete':>16}{'target':>10}  met")
    from escalation_sim.engines import graph as graph_mod
    for item in sc.designs:
        name = item.name
        walls, cpus, loads = [], [], []
        for _ in range(args.repeat):
            graph_mod._GRAPHS.clear()
            simulate(sc, n_trials=20_000, designs=[name], n_jobs=1, seed=1)
            loads.append(os.getloadavg()[0])
            t0, c0 = time.perf_counter(), time.process_time()
            simulate(sc, n_trials=args.trials, designs=[name], n_jobs=1, seed=2026)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        c0 = time.process_time()
        simulate(sc, n_trials=args.trials, designs=[name], n_jobs=1, seed=2026)
        warm = args.trials / (time.process_time() - c0)
        states = graph_mod.graph_for(item.design).n_states
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        rate, cpu_rate = args.trials / wall, args.trials / cpu
        met = "yes" if cpu_rate >= MC_TARGET else "NO"
        print(f"{name:<16}{rate:>12,.0f}{cpu_rate:>12,.0f}{states:>10,}{warm:>16,.0f}"
              f"{MC_TARGET:>10,.0f}  {met}   (CPU s per round: "
              f"{', '.join(f'{c:.2f}' for c in cpus)}; load {', '.join(f'{x:.2f}' for x in loads)})")
        record(args.save, benchmark="efficacy_monte_carlo", design=name,
               n_trials=args.trials, seconds=wall, cpu_seconds=cpu, trials_per_s=rate,
               trials_per_cpu_s=cpu_rate, graph_complete_trials_per_cpu_s=warm, states=states,
               rounds=args.repeat, cpu_seconds_rounds=cpus, load_average=loads)

    print(f"\nExact OCs (the joint array sweep; the batch rules' tables, cached per process, "
          f"are filled in the first round); "
          f"target < {EXACT_TARGET_S:g} s at N = 24; CPU seconds, median of {args.repeat}; "
          f"peak traced memory (a separate run under tracemalloc)")
    print(f"{'design':<16}{'N':>4}{'CPU s':>8}{'wall s':>8}{'states':>11}{'endings':>9}"
          f"{'peak MB':>9}{'|1 - total|':>13}")
    import math
    import tracemalloc
    for item in sc.designs:
        for n in (12, 15, 18, 21, 24, 27):
            d = with_stopping_rules(item.design.inner, max_n=n)
            cpus, walls = [], []
            try:
                for _ in range(args.repeat):
                    t0, c0 = time.perf_counter(), time.process_time()
                    tally = exact_tally(d, sc.p_true, efficacy=EFFICACY)
                    walls.append(time.perf_counter() - t0)
                    cpus.append(time.process_time() - c0)
            except ExactTooLarge:
                print(f"{item.name:<16}{n:>4}   refused at once (too many states; Monte Carlo)")
                continue
            tracemalloc.start()
            exact_tally(d, sc.p_true, efficacy=EFFICACY)
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            cpu, wall = statistics.median(cpus), statistics.median(walls)
            err = abs(math.fsum(tally.arrays()[0].tolist()) - 1)
            states = getattr(tally, "n_states", 0)
            print(f"{item.name:<16}{n:>4}{cpu:>8.2f}{wall:>8.2f}{states:>11,}"
                  f"{tally.arrays()[0].size:>9,}{peak:>9.0f}{err:>13.1e}")
            record(args.save, benchmark="efficacy_exact", design=item.name, max_n=n,
                   seconds=wall, cpu_seconds=cpu, states=states,
                   endings=int(tally.arrays()[0].size), peak_mb=peak,
                   load_average=os.getloadavg()[0])

if __name__ == "__main__":
    main()
