"""Regenerate the golden snapshot (tests/golden/golden.json) of every bundled scenario and study.

Run only in a commit that deliberately changes a number, and say in that commit which bug
the change fixes:  python tests/golden/make_golden.py
The snapshot records, for every bundled scenario: Monte Carlo on the time-free engine at a fixed
seed, exact enumeration, and (for scenarios with a conduct block) a calendar-time run; for every
bundled study: its oc table at a reduced number of trials.  Per-trial tables are recorded by
their SHA-256 (values written with full float precision).
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden.json"

MC_TRIALS, MC_SEED = 20_000, 2026
DES_TRIALS, DES_SEED = 200, 2026
KEEP_TRIALS = 300          # per-trial tables hashed
STUDY_TRIALS = {"relma_accrual.yaml": 60, "relma_sensitivity.yaml": 2_000,
                "standard_six.yaml": 3_000}
VOLATILE = ("elapsed_s", "versions", "source", "n_jobs", "backend", "chunk_size")


def _clean(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in VOLATILE}


def _hash_frame(df) -> str:
    text = df.to_csv(index=False, float_format="%r")
    return hashlib.sha256(text.encode()).hexdigest()


def scenario_records(path: Path) -> dict:
    from escalation_sim import exact_oc, simulate
    from escalation_sim.inputs.scenario import load_scenario
    sc = load_scenario(path)
    rec = {}
    mc = simulate(sc, n_trials=MC_TRIALS, seed=MC_SEED, logistics=False, n_jobs=1)
    rec["monte_carlo"] = _clean(mc.to_dict())
    rec["exact"] = _clean(exact_oc(sc).to_dict())
    kt = simulate(sc, n_trials=KEEP_TRIALS, seed=MC_SEED, logistics=False, keep_trials=True)
    rec["monte_carlo_trials_sha256"] = _hash_frame(kt.trials())
    if sc.has_logistics:
        des = simulate(sc, n_trials=DES_TRIALS, seed=DES_SEED, keep_trials=True, n_jobs=1)
        rec["calendar"] = _clean(des.to_dict())
        rec["calendar_trials_sha256"] = _hash_frame(des.trials())
        rec["patient_log_sha256"] = patient_log_hashes(sc)
    return rec


def patient_log_hashes(sc) -> dict:
    """The calendar engine's patient log (swimmer data) of the first trials, per design."""
    import numpy as np
    import pandas as pd
    from escalation_sim.engines.calendar import calendar_truth, simulate_des_trials
    out = {}
    for item in sc.designs:
        res = simulate_des_trials(item.design, calendar_truth(sc), sc.model.conduct, DES_SEED,
                                  np.arange(20), record_patients=True)
        out[item.name] = _hash_frame(pd.DataFrame(res["patients"]))
    return out


def study_records(path: Path) -> dict:
    import yaml
    from escalation_sim.run.study import load_study_dict, run_study
    raw = yaml.safe_load(path.read_text())
    raw.setdefault("simulation", {})["n_trials"] = STUDY_TRIALS[path.name]
    study = load_study_dict(raw, str(path.name), path.parent, self_path=path)
    with tempfile.TemporaryDirectory() as tmp:
        res = run_study(study, Path(tmp) / "out", n_jobs=1, backend="sequential", quiet=True)
        oc = res.oc.sort_values(["cell", "design"]).reset_index(drop=True)
        records = json.loads(oc.to_json(orient="records", double_precision=15))
        return {"oc_sha256": _hash_frame(oc), "n_rows": len(oc),
                "pcs": [r.get("pcs") for r in records]}


def build() -> dict:
    out = {"scenarios": {}, "studies": {}}
    for p in sorted((ROOT / "scenarios").glob("*.yaml")):
        out["scenarios"][p.name] = scenario_records(p)
    for p in sorted((ROOT / "scenarios" / "studies").glob("*.yaml")):
        out["studies"][p.name] = study_records(p)
    return out


def normalise(obj):
    """JSON round trip: the form in which the snapshot is stored and compared."""
    return json.loads(json.dumps(obj, default=_default, sort_keys=True))


def _default(o):
    import numpy as np
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    GOLDEN.write_text(json.dumps(normalise(build()), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
