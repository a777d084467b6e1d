"""Monte Carlo engine: agreement with exact enumeration, reproducibility, common random numbers."""
import math

import numpy as np
import pytest

from escalation_sim import exact_oc, simulate
from escalation_sim.engines.cohort import simulate_cohort_chunk
from escalation_sim.engines.exact import exact_tally
from escalation_sim.randomness import stream_key, uniforms
from escalation_sim.inputs.scenario import load_scenario_text
from escalation_sim.types import TrialState

TRUTHS = {
    "mtd1": [0.25, 0.40, 0.55, 0.70],
    "mtd2": [0.10, 0.25, 0.40, 0.55],
    "mtd3": [0.05, 0.12, 0.25, 0.40],
    "mtd4": [0.02, 0.06, 0.12, 0.25],
    "safe": [0.02, 0.04, 0.06, 0.08],
    "toxic": [0.45, 0.55, 0.65, 0.75],
}


@pytest.mark.parametrize("name", sorted(TRUTHS))
def test_monte_carlo_within_4se_of_exact(name, scenario):
    sc = scenario(TRUTHS[name])
    mc = simulate(sc, n_trials=20000, seed=11, n_jobs=1)
    ex = exact_oc(None, sc)
    for d in sc.designs:
        a, b = mc.design_oc(d.name), ex.design_oc(d.name)
        R = 20000
        for k in range(sc.n_doses):
            p = b["p_select"][k]
            se = math.sqrt(p * (1 - p) / R)
            assert abs(a["p_select"][k] - p) <= 4 * se + 1e-12, (d.name, k, a["p_select"], b["p_select"])
        pn = b["p_no_mtd"]
        assert abs(a["p_no_mtd"] - pn) <= 4 * math.sqrt(pn * (1 - pn) / R) + 1e-12
        # means: SE from the exact distribution's variance
        w, mtd, stop, n, y = ex.designs[[x.name for x in ex.designs].index(d.name)].tally.arrays()
        tot = n.sum(axis=1)
        var = float((w * (tot - (w * tot).sum()) ** 2).sum())
        assert abs(a["mean_n_total"] - b["mean_n_total"]) <= 4 * math.sqrt(var / R) + 1e-12


def test_exact_probabilities_sum_to_one(scenario):
    sc = scenario(TRUTHS["mtd3"])
    for d in sc.designs:
        t = exact_tally(d.design, sc.p_true)
        assert abs(math.fsum(t.counts.values()) - 1.0) < 1e-12


def test_bit_identical_across_jobs_and_chunks(scenario):
    sc = scenario(TRUTHS["mtd2"])
    ref = simulate(sc, n_trials=30000, seed=5, n_jobs=1, chunk_size=30000).to_dict()
    for n_jobs, cs in [(2, 7001), (1, 4096), (2, 30000)]:
        other = simulate(sc, n_trials=30000, seed=5, n_jobs=n_jobs, chunk_size=cs).to_dict()
        assert other["designs"] == ref["designs"]
        assert ref["paired"] == other["paired"]


@pytest.mark.parametrize("workers", ["loky", "spawn"])   # the library's, the command line's
def test_shared_pool_bit_identical_whoever_computes_each_chunk(scenario, caplog, monkeypatch,
                                                               workers):
    """n_jobs 2 on loky: this process and one pool worker take chunks from one queue (issue
    16); the results equal one process's to the bit for any chunk size, whichever process
    computed which chunk.  With the worker up (started here first) it is handed two chunks
    before the parent computes its first, so both compute some (the loop's log line says
    how many)."""
    import logging
    import re
    import time
    from escalation_sim.run import pool
    sc = scenario(TRUTHS["mtd2"])
    monkeypatch.setattr(pool, "WORKERS", workers)
    pool.start_pool(1)
    deadline = time.monotonic() + 120
    while not pool.pool_up() and time.monotonic() < deadline:
        time.sleep(0.05)
    ref = simulate(sc, n_trials=20000, seed=5, backend="sequential", chunk_size=20000).to_dict()
    for cs in (997, 2500):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="escalation_sim.run.loop"):
            other = simulate(sc, n_trials=20000, seed=5, n_jobs=2, backend="loky",
                             chunk_size=cs).to_dict()
        assert other["designs"] == ref["designs"] and other["paired"] == ref["paired"]
        [line] = [r.getMessage() for r in caplog.records
                  if "chunks computed in the parent" in r.getMessage()]
        here, total = map(int, re.match(r"(\d+) of (\d+) ", line).groups())
        assert total == math.ceil(20000 / cs) and 0 < here < total, line
    pool.stop_pool()


def test_threading_and_sequential_backends_identical(scenario):
    sc = scenario(TRUTHS["mtd3"])
    a = simulate(sc, n_trials=5000, seed=3, n_jobs=2, backend="threading", chunk_size=999)
    b = simulate(sc, n_trials=5000, seed=3, backend="sequential")
    assert a.to_dict()["designs"] == b.to_dict()["designs"]


def test_seed_changes_results(scenario):
    sc = scenario(TRUTHS["mtd3"])
    a = simulate(sc, n_trials=2000, seed=1).to_dict()["designs"][1]["p_select"]
    b = simulate(sc, n_trials=2000, seed=2).to_dict()["designs"][1]["p_select"]
    assert a != b


def test_latent_uniform_contract_trial_by_trial(scenario):
    """Trial t's k-th patient has a DLT at dose d iff u(t, k) < p_d: replay by hand."""
    sc = scenario(TRUTHS["mtd2"])
    design = sc.designs[1].design
    ch = simulate_cohort_chunk(design, sc.p_true, 9, 100, 140)
    key = stream_key(9, "dlt")
    for i, t in enumerate(range(100, 140)):
        state = TrialState.empty(4)
        while True:
            dec = design.decide(state)
            if dec.stop:
                break
            u = uniforms(key, t, np.arange(state.total_n, state.total_n + dec.cohort_size))
            state = state.add_cohort(dec.dose, dec.cohort_size, int((u < sc.p_true[dec.dose]).sum()))
        end = ch.graph.states[ch.sids[i]]  # representative of the merged class
        assert (end.n, end.y, end.current) == (state.n, state.y, state.current)


def test_common_random_numbers_across_designs(scenario_yaml):
    """Two copies of a design see the same patients, so every paired difference is 0; and
    designs compared in one run are positively correlated (paired SE < unpaired SE)."""
    sc = load_scenario_text(scenario_yaml(
        TRUTHS["mtd3"], designs=["{type: boin, name: boin-copy}", "{type: boin}",
                                 "{type: crm, skeleton: [0.10, 0.17, 0.25, 0.35]}"]))
    res = simulate(sc, n_trials=4000, seed=8)
    paired = res.paired()
    same = paired[(paired.design_a == "boin-copy") & (paired.design_b == "boin")]
    assert (same["mean_difference"] == 0).all() and (same["se"] == 0).all()
    row = paired[(paired.design_a == "boin") & (paired.design_b == "crm")
                 & (paired.metric == "dlt_total")].iloc[0]
    a, b = res.design_oc("boin"), res.design_oc("crm")
    unpaired = math.hypot(a["se_mean_dlt_total"], b["se_mean_dlt_total"])
    assert row["se"] < unpaired
    assert row["mean_difference"] == pytest.approx(a["mean_dlt_total"] - b["mean_dlt_total"])


def test_uniforms_are_uniform():
    key = stream_key(123, "dlt")
    u = uniforms(key, np.arange(200000), 3)
    assert 0 < u.min() and u.max() < 1
    # mean and variance within 4 SE of 1/2 and 1/12
    assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / u.size)
    counts = np.bincount((u * 20).astype(int), minlength=20)
    chi2 = ((counts - u.size / 20) ** 2 / (u.size / 20)).sum()
    assert chi2 < 50  # 19 df: P(chi2 > 50) < 1e-4


def test_oc_standard_errors(scenario):
    sc = scenario(TRUTHS["mtd3"])
    res = simulate(sc, n_trials=5000, seed=4)
    oc = res.design_oc("boin")
    for p, se in zip(oc["p_select"], oc["se_p_select"], strict=True):
        assert se == pytest.approx(math.sqrt(p * (1 - p) / 5000))
    ex = exact_oc(None, sc).design_oc("boin")
    assert all(s == 0 for s in ex["se_p_select"])
    assert abs(sum(oc["p_select"]) + oc["p_no_mtd"] - 1) < 1e-12


# --------------------------------------------------------------------------- dispatch rules
def test_auto_n_jobs_rule():
    """auto: one process below AUTO_PARALLEL_SECONDS of estimated work, then one process
    per estimated second (at least two) up to the cap (issue 16: two jobs never slower than
    one)."""
    from escalation_sim.run.loop import AUTO_PARALLEL_SECONDS, auto_n_jobs
    assert auto_n_jobs(0.0, 2) == 1
    assert auto_n_jobs(AUTO_PARALLEL_SECONDS - 1e-9, 8) == 1
    assert auto_n_jobs(AUTO_PARALLEL_SECONDS, 8) == 2
    assert auto_n_jobs(5.5, 8) == 5
    assert auto_n_jobs(100.0, 2) == 2
    assert auto_n_jobs(100.0, 1) == 1
    assert auto_n_jobs(AUTO_PARALLEL_SECONDS + 0.5, 8) == 2


def test_pool_restarts_when_the_calendar_engine_setting_changes():
    """Workers inherit the environment when they start: the variable ``--calendar-engine``
    sets is one the pool watches (a pool started under another value is replaced)."""
    from escalation_sim.engines.calendar.fast import ENV_VAR
    from escalation_sim.run.pool import _INHERITED
    assert ENV_VAR in _INHERITED


@pytest.mark.parametrize("argv, workers", [
    (["--n-trials", "10000000", "--n-jobs", "2"], 1),
    (["--n-trials", "10000000"], 1),                       # auto: 3.5 s estimated at least
    (["--n-trials", "10000000", "--n-jobs", "-1"], 1),
    (["--n-trials", "10000000", "--backend", "loky", "--n-jobs", "2"], 1),
    (["--n-trials", "10000000", "--n-jobs", "1"], None),
    (["--n-trials", "1000000"], None),                     # auto: 0.35 s, one process
    (["--n-trials", "1000000", "--n-jobs", "2"], None),    # under MIN_PARALLEL_SECONDS
    (["--n-jobs", "2"], None),                             # trial count from the file
    (["--n-trials", "10000000", "--backend", "threading", "--n-jobs", "2"], None),
    (["--n-trials", "10000000", "--method", "exact"], None),
    (["--n-trials", "10000000", "--resume", "--out", "x"], None),
    (["--n-trials", "10000000", "--n-jobs", "0"], None),   # reported by the command
])
def test_cli_starts_the_pool_early_only_for_a_certain_parallel_run(monkeypatch, argv, workers):
    """The command line starts the worker pool before its imports only when its arguments
    make a parallel run certain (2 CPUs here at most matter: the pool has one worker)."""
    from escalation_sim import cli
    from escalation_sim.run import pool
    calls = []
    monkeypatch.setattr(pool, "start_pool", calls.append)
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 2)
    cli._start_pool_early(cli.build_parser().parse_args(["run", "s.yaml", *argv]))
    assert calls == ([] if workers is None else [workers])


def test_auto_n_jobs_estimate_knows_the_efficacy_designs():
    """The planner's estimate uses a design type's own cost per trial when its registry
    entry gives one (issue 13: BOIN12 and Keyboard phase I/II build state graphs of 250,000
    to 310,000 states per million trials, benchmarks/bench_efficacy.py): a million trials of
    BOIN12 alone is worth two workers, of BOIN alone one (0.35 s at the engine's default)."""
    from escalation_sim.designs.registry import get_entry
    from escalation_sim.inputs.scenario import load_scenario_dict
    from escalation_sim.run.loop import (SECONDS_PER_TRIAL, auto_n_jobs, estimated_seconds,
                                         plan_run)
    raw = {"name": "x", "doses": [1, 2, 3, 4], "target": 0.3,
           "truth": {"p_dlt": [0.05, 0.1, 0.25, 0.4], "efficacy": [0.2, 0.4, 0.5, 0.5]},
           "trial": {"max_n": 24}, "designs": [{"type": "boin"}, {"type": "boin12"},
                                               {"type": "keyboard-obd"}],
           "simulation": {"n_trials": 1_000_000}}
    sc = load_scenario_dict(raw, "x.yaml")
    todo = {0: [(0, 1_000_000)]}
    est = {}
    for name in ("boin", "boin12", "keyboard-obd"):
        plan = plan_run(sc, designs=[name])
        est[name] = estimated_seconds([plan], todo)
    assert est["boin"] == pytest.approx(SECONDS_PER_TRIAL["cohort"] * 1e6)
    assert get_entry("boin").seconds_per_trial is None
    for name in ("boin12", "keyboard-obd"):
        hint = get_entry(name).seconds_per_trial
        assert hint is not None and hint > 2 * SECONDS_PER_TRIAL["cohort"]
        assert est[name] == pytest.approx(hint * 1e6)
        assert auto_n_jobs(est[name], 2) == 2
    assert auto_n_jobs(est["boin"], 2) == 1
    both = estimated_seconds([plan_run(sc)], todo)
    assert both == pytest.approx(sum(est.values()))


def test_explicit_jobs_on_a_tiny_run_run_in_one_process_with_a_note(scenario_yaml):
    """--n-jobs 2 on a run far below MIN_PARALLEL_SECONDS: one process and a note saying so;
    naming the backend starts the workers anyway; results identical either way."""
    from escalation_sim import simulate
    from escalation_sim.run import RunNote
    path = load_scenario_text(scenario_yaml())
    with pytest.warns(RunNote, match="ran in one process"):
        a = simulate(path, n_trials=3000, seed=5, n_jobs=2)
    assert a.meta["n_jobs"] == 1
    b = simulate(path, n_trials=3000, seed=5, n_jobs=2, backend="loky")
    assert b.meta["n_jobs"] == 2
    assert [r.tally.counts for r in a.designs] == [r.tally.counts for r in b.designs]


def test_auto_is_the_default_and_reports_the_workers_used(scenario_yaml):
    from escalation_sim import simulate
    res = simulate(load_scenario_text(scenario_yaml()), n_trials=2000, seed=5)
    assert res.meta["n_jobs"] == 1   # 2,000 trials: far below AUTO_PARALLEL_SECONDS
