"""Throughput of the calendar engine with backfill and short products (issue 14).

The seed scenario (scenarios/relma_cel_sle.yaml) with its classic designs that accept
backfill (BOIN, CRM), four ways: neither block, ``conduct.backfill`` ({max_per_dose: 12,
max_total: 24}), ``conduct.shortfall`` ({prob: 0.15, received_fraction: {mean: 0.6, sd:
0.15}}), and both; each on the fast path and on the simpy engine.  Prints full simulated
trials per CPU second on one core (process time, so other load on the machine distorts it
less), the median over ``--rounds`` rounds in which every variant and engine runs once,
interleaved (so they see the same machine state), and issue 14's speed item: the seed
scenario with both blocks on the fast path against the seed scenario without them, on the
fast path and on simpy (the ratio of the per-round figures, median over rounds).  Backfill
trials treat more patients (about 33 instead of 25 enrolled here) and keep arrival events
running while a backfill dose is open, so they cost more per trial.  Before timing, both
engines run the first 200 trials of each variant (fills the decision memos) and their outputs
are compared (the script stops if they differ).

    python benchmarks/bench_backfill.py [--trials 2000] [--rounds 5] [--save [PATH]]
        [--filed-tree DIR]

``--filed-tree DIR`` adds, in every round, the seed scenario without the blocks as the code
stood when issue 14 was filed (a checkout of that commit in DIR, e.g. ``git worktree add
--detach ../filed 8bd0937``, the last commit before the second wave), timed in a child
process on the same trials with the same designs (its engine: simpy, then the only one), and
the ratio of this code's "both" on the fast path to it: the issue's "at least as many trials
per second as the seed scenario without them today".
"""
from __future__ import annotations

import argparse
import copy
import os
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import same_columns as _same, add_save_option, record  # noqa: E402

from escalation_sim import load_scenario  # noqa: E402
from escalation_sim.engines.calendar import simulate_des_trials  # noqa: E402
from escalation_sim.inputs.scenario import load_scenario_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 2026
VARIANTS = {
    "neither": {},
    "backfill": {"backfill": {"max_per_dose": 12, "max_total": 24}},
    "shortfall": {"shortfall": {"prob": 0.15,
                                "received_fraction": {"mean": 0.6, "sd": 0.15}}},
    "both": {"backfill": {"max_per_dose": 12, "max_total": 24},
             "shortfall": {"prob": 0.15, "received_fraction": {"mean": 0.6, "sd": 0.15}}},
}
ENGINES = ("fast", "simpy")
DESIGNS = [{"type": "boin"}, {"type": "crm", "skeleton": [0.10, 0.17, 0.25, 0.35]}]

#: run in the filed tree's own Python path (imports as they were then, or as they are now)
FILED = """
import copy, json, sys, time
from escalation_sim import load_scenario
try:
    from escalation_sim.engines.calendar import simulate_des_trials
    from escalation_sim.inputs.scenario import load_scenario_dict
except ImportError:
    from escalation_sim.des import simulate_des_trials
    from escalation_sim.scenario import load_scenario_dict
path, seed, n, designs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
raw = copy.deepcopy(load_scenario(path).raw)
raw["designs"] = designs
sc = load_scenario_dict(raw, "seed")
out = {}
for it in sc.designs:
    args = (it.design, sc.p_true.tolist(), sc.model.conduct, seed)
    simulate_des_trials(*args, range(200))
    t0 = time.process_time()
    simulate_des_trials(*args, range(n))
    out[it.name] = n / (time.process_time() - t0)
print(json.dumps(out))
"""


def _filed(tree: Path, trials: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    r = subprocess.run([sys.executable, "-c", FILED, str(tree / "scenarios" / "relma_cel_sle.yaml"),
                        str(SEED), str(trials), json.dumps(DESIGNS)], cwd=tree, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"--filed-tree {tree}: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--filed-tree", type=Path, default=None,
                    help="a checkout of the commit issue 14 was filed at (see above)")
    add_save_option(ap, "backfill.jsonl")
    a = ap.parse_args(argv)
    base = load_scenario(ROOT / "scenarios" / "relma_cel_sle.yaml")
    runs = {}
    for name, extra in VARIANTS.items():
        raw = copy.deepcopy(base.raw)
        raw["designs"] = copy.deepcopy(DESIGNS)
        raw["conduct"].update(extra)
        sc = load_scenario_dict(raw, f"seed+{name}")
        for it in sc.designs:
            runs[(it.name, name)] = (it.design, sc.model.truth.p_dlt, sc.model.conduct)
    for key, (d, p, c) in runs.items():        # warm (decision memos) and compare
        ref = simulate_des_trials(d, p, c, SEED, range(200), engine="simpy")
        got = simulate_des_trials(d, p, c, SEED, range(200), engine="fast")
        if not _same(ref, got):
            raise SystemExit(f"{key}: the fast path and simpy differ")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    tps = {(k, e): [] for k in runs for e in ENGINES}
    filed = []
    for _ in range(a.rounds):
        if a.filed_tree is not None:
            filed.append(_filed(a.filed_tree.resolve(), a.trials))
        for key, (d, p, c) in runs.items():
            for eng in ENGINES:
                t0 = time.process_time()
                simulate_des_trials(d, p, c, SEED, range(a.trials), engine=eng)
                tps[key, eng].append(a.trials / (time.process_time() - t0))
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"seed scenario, {a.trials:,} trials per timing, median of {a.rounds} interleaved "
          f"rounds, trials per CPU second on one core; load average {load:.1f} at start, "
          f"{load_end:.1f} at the end, {os.cpu_count()} CPUs")
    print(f"{'design':<8}{'engine':<7}" + "".join(f"{v:>11}" for v in VARIANTS))
    designs = list(dict.fromkeys(k[0] for k in runs))
    for design in designs:
        for eng in ENGINES:
            cells = []
            for v in VARIANTS:
                m = statistics.median(tps[(design, v), eng])
                cells.append(f"{m:11,.0f}")
                record(a.save, bench="backfill", design=design, variant=v, engine=eng,
                       trials=a.trials, rounds=a.rounds, cpu_trials_per_s=m,
                       load_average=load, load_average_end=load_end)
            print(f"{design:<8}{eng:<7}" + "".join(cells))
    print("issue 14 speed item: seed + backfill + shortfall on the fast path, against the "
          "seed scenario without them")
    for design in designs:
        both = tps[(design, "both"), "fast"]
        for eng in ENGINES:
            seed = tps[(design, "neither"), eng]
            ratio = statistics.median(x / y for x, y in zip(both, seed, strict=True))
            print(f"  {design:<6} both (fast) {statistics.median(both):7,.0f}/s  vs  seed "
                  f"({eng}) {statistics.median(seed):7,.0f}/s:  ratio {ratio:.2f}")
            record(a.save, bench="backfill_vs_seed", design=design, seed_engine=eng,
                   trials=a.trials, rounds=a.rounds, ratio=ratio)
    if filed:
        print(f"against the code when issue 14 was filed ({a.filed_tree}): the seed scenario "
              "without the blocks there, same trials, same rounds")
        for design in designs:
            both = tps[(design, "both"), "fast"]
            then = [f[design] for f in filed]
            ratio = statistics.median(x / y for x, y in zip(both, then, strict=True))
            print(f"  {design:<6} both (fast) {statistics.median(both):7,.0f}/s  vs  seed "
                  f"then {statistics.median(then):7,.0f}/s:  ratio {ratio:.2f}")
            record(a.save, bench="backfill_vs_filed", design=design, trials=a.trials,
                   rounds=a.rounds, ratio=ratio, filed_trials_per_s=statistics.median(then))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
