"""Time of exact operating characteristics by enumeration (issue #8).

For 3+3, BOIN and CRM of a 4-dose, cohort-3 scenario, and mTPI-2, Keyboard and i3+3 added
to it, prints the seconds to compute exact OCs
(cold: ``exact_tally(design, p)`` as the command line calls it, with no cached state graph;
designs with batch rules need none) and the number of distinct states, for N = 12, 18,
24, 30 and 36.  With ``--save [PATH]`` one JSON line per figure is appended to PATH (default
benchmarks/results/exact.jsonl, untracked).

    python benchmarks/bench_exact.py [--max-n 12 18 24 30 36] [--designs mtpi2 keyboard i3+3] [--save [PATH]]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_save_option, record, scenario_with_extra_designs  # noqa: E402

import escalation_sim.engines.graph as graph_mod  # noqa: E402
from escalation_sim.engines.exact import exact_tally  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "standard_mtd3.yaml"))
    ap.add_argument("--max-n", type=int, nargs="+", default=[12, 18, 24, 30, 36])
    add_save_option(ap, "exact.jsonl")
    ap.add_argument("--designs", nargs="+", metavar="NAME", help="only these designs")
    args = ap.parse_args(argv)
    print(f"{'design':<9}{'N':>5}{'seconds':>10}{'states':>10}{'endings':>10}")
    for n in args.max_n:
        sc = scenario_with_extra_designs(args.scenario, max_n=n, only=args.designs)
        for item in sc.designs:
            graph_mod._GRAPHS.clear()    # cold: no cached state graph or decisions
            t0 = time.perf_counter()
            tally = exact_tally(item.design, sc.p_true)
            dt = time.perf_counter() - t0
            # the array sweep reports the states it visited; the graph sweep built a graph
            states = getattr(tally, "n_states", None)
            if states is None:
                states = graph_mod.graph_for(item.design).n_states
            print(f"{item.name:<9}{n:>5}{dt:>10.3f}{states:>10}{len(tally.counts):>10}")
            record(args.save, benchmark="exact_oc", scenario=sc.name, design=item.name,
                   max_n=n, seconds=dt, states=states, endings=len(tally.counts))


if __name__ == "__main__":
    main()
