"""Throughput of the calendar engine with backfill and short products (issue 14).

The seed scenario (scenarios/relma_cel_sle.yaml) with its classic designs that accept
backfill (BOIN, CRM), four ways: neither block, ``conduct.backfill`` ({max_per_dose: 12,
max_total: 24}), ``conduct.shortfall`` ({prob: 0.15, received_fraction: {mean: 0.6, sd:
0.15}}), and both.  Prints full simulated trials per second on one core in process CPU time
(other load on the machine does not distort it), best of ``--repeat`` warm runs, the variants
interleaved so that they see the same machine state.  Backfill trials treat more patients
(about 31 instead of 24 here) and keep arrival events running while a backfill dose is
open, so they cost more per trial.

    python benchmarks/bench_backfill.py [--trials 2000] [--repeat 3] [--save [PATH]]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_save_option, record  # noqa: E402

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    add_save_option(ap, "backfill.jsonl")
    a = ap.parse_args(argv)
    base = load_scenario(ROOT / "scenarios" / "relma_cel_sle.yaml")
    runs = {}
    for name, extra in VARIANTS.items():
        raw = copy.deepcopy(base.raw)
        raw["designs"] = [{"type": "boin"}, {"type": "crm", "skeleton": [0.10, 0.17, 0.25, 0.35]}]
        raw["conduct"].update(extra)
        sc = load_scenario_dict(raw, f"seed+{name}")
        for it in sc.designs:
            runs[(it.name, name)] = (it.design, sc.model.truth.p_dlt, sc.model.conduct)
    best = {k: float("inf") for k in runs}
    for key, (d, p, c) in runs.items():                    # warm: fills the decision memos
        simulate_des_trials(d, p, c, SEED, range(200))
    for _ in range(a.repeat):
        for key, (d, p, c) in runs.items():
            t0 = time.process_time()
            simulate_des_trials(d, p, c, SEED, range(a.trials))
            best[key] = min(best[key], time.process_time() - t0)
    print(f"seed scenario, {a.trials} trials, best of {a.repeat}, CPU trials/s on one core")
    print(f"{'design':<8}" + "".join(f"{v:>12}" for v in VARIANTS))
    for design in dict.fromkeys(k[0] for k in runs):
        cells = []
        for v in VARIANTS:
            tps = a.trials / best[(design, v)]
            cells.append(f"{tps:12.0f}")
            record(a.save, bench="backfill", design=design, variant=v, trials=a.trials,
                   cpu_trials_per_s=tps)
        print(f"{design:<8}" + "".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
