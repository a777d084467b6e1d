"""Checkpoints: chunk files round-trip exactly; resumed runs equal uninterrupted ones."""
import json
import os
import random
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import escalation_sim.run.checkpoint as ckmod
import escalation_sim.run.runner as runner
from escalation_sim import exact_oc, simulate
from escalation_sim.run.checkpoint import Checkpoint, CheckpointError
from escalation_sim.cli import main
from escalation_sim.run.runner import ChunkResult, run_chunk
from escalation_sim.inputs.scenario import load_scenario_text

ROOT = Path(__file__).resolve().parents[1]

SC = """\
name: ck-test
doses: [DL1, DL2, DL3, DL4]
truth: {{p_dlt: {p}}}
target: 0.25
trial: {{max_n: 24, cohort_size: 3, start_dose: 1}}
designs:
  - {{type: "3+3"}}
  - {{type: boin}}
  - {{type: crm, skeleton: [0.10, 0.17, 0.25, 0.35]}}
simulation: {{n_trials: 4000, seed: 7}}
"""
P3 = [0.05, 0.12, 0.25, 0.40]


def scenario(p=P3):
    return load_scenario_text(SC.format(p=p), "ck-test.yaml")


def core(res):
    """The parts of a Results document that must not depend on how it was computed."""
    d = res if isinstance(res, dict) else res.to_dict()
    return {"designs": d["designs"], "paired": d["paired"]}


# ---------------------------------------------------------------------------------------------
def test_chunk_round_trip_is_exact(tmp_path):
    sc = scenario()
    ck = Checkpoint.open(tmp_path, sc, 3000, 7, chunk_size=1000, resume=False)
    ch = run_chunk([d.design for d in sc.designs], sc.p_true, sc.target, 7, 1000, 2000)
    ck.save(ch)
    back = ck.load(1000)
    assert (back.start, back.stop) == (1000, 2000)
    for a, b in zip(ch.tallies, back.tallies, strict=True):
        assert a.counts == b.counts
        # every trial of the chunk is counted once (closed form: stop - start)
        assert sum(b.counts.values()) == 1000
        assert all(type(w) is int for w in b.counts.values())
    assert back.pair_sums == ch.pair_sums
    assert ck.done_starts() == {1000}
    # the seed key is in the file name and in the Parquet metadata
    f = tmp_path / "checkpoint" / "chunk-000000001000-000000002000.parquet"
    meta = json.loads(pq.read_schema(f).metadata[b"escalation_sim"])
    assert (meta["seed"], meta["start"], meta["stop"]) == (7, 1000, 2000)
    assert meta["scenario_hash"] == ckmod.scenario_hash(sc)
    table = pq.read_table(f)
    assert table.column_names[:3] == ["design", "mtd", "stop_code"]
    assert table.column("count").to_numpy().sum() == 3 * 1000


def test_per_trial_arrays_round_trip_with_dtypes(tmp_path):
    """DES chunks carry durations and statistics per trial: saved as Parquet columns, exactly."""
    sc = scenario()
    base = run_chunk([d.design for d in sc.designs], sc.p_true, sc.target, 7, 0, 50,
                     keep_trials=True)
    rng = np.random.default_rng(1)
    durations = [rng.gamma(2.0, 100.0, 50) for _ in sc.designs]
    stats = [{"n_screened": rng.integers(0, 40, 50), "paused": rng.random(50) < 0.3,
              "wait_days": rng.random((50, 4)), "total_cost": np.float64(3.25)}
             for _ in sc.designs]
    ch = ChunkResult(0, 50, base.tallies, base.pair_sums, durations, stats, base.trials)
    ck = Checkpoint.open(tmp_path, sc, 50, 7, chunk_size=50, resume=False, keep_trials=True)
    ck.save(ch)
    back = ck.load(0)
    for i in range(len(sc.designs)):
        assert back.durations[i].dtype == np.float64
        assert np.array_equal(back.durations[i], durations[i])
        for k, v in stats[i].items():
            assert back.des_stats[i][k].dtype == np.asarray(v).dtype, k
            assert np.array_equal(back.des_stats[i][k], v), k
        for k, v in base.trials[i].items():
            assert back.trials[i][k].dtype == v.dtype and np.array_equal(back.trials[i][k], v)


def test_resume_after_lost_chunks_equals_uninterrupted(tmp_path):
    sc = scenario()
    ref = simulate(sc, n_trials=4000, seed=7, backend="sequential")
    ck = Checkpoint.open(tmp_path, sc, 4000, 7, chunk_size=700, resume=True)
    first = simulate(sc, n_trials=4000, seed=7, backend="sequential", checkpoint=ck)
    assert core(first) == core(ref)
    files = sorted((tmp_path / "checkpoint").glob("chunk-*.parquet"))
    assert len(files) == 6  # ceil(4000 / 700)
    for f in files[1::2]:
        f.unlink()
    # a half-written temporary file of a killed run is ignored and cleaned up
    junk = tmp_path / "checkpoint" / ".chunk-000000000700-000000001400.parquet.tmp-1-abc"
    junk.write_bytes(b"PAR1 truncated")
    ck = Checkpoint.open(tmp_path, sc, 4000, 7, chunk_size=None, resume=True)
    assert ck.chunk_size == 700 and not junk.exists()
    assert ck.done_starts() == {0, 1400, 2800}
    computed = []
    again = simulate(sc, n_trials=4000, seed=7, backend="sequential", checkpoint=ck,
                     progress=computed.append)
    assert core(again) == core(ref)
    assert sum(computed) == 4000  # resumed chunks reported first, then the three recomputed
    # and the Monte Carlo answer agrees with exact enumeration (within 4 SE)
    ex = exact_oc(scenario=sc)
    for d in again.to_dict()["designs"]:
        e = ex.design_oc(d["design"])
        assert abs(d["pcs"] - e["pcs"]) < 4 * d["se_pcs"]


def test_keep_trials_with_checkpoint(tmp_path):
    sc = scenario()
    ref = simulate(sc, n_trials=900, seed=3, backend="sequential", keep_trials=True)
    ck = Checkpoint.open(tmp_path, sc, 900, 3, chunk_size=200, resume=True, keep_trials=True)
    simulate(sc, n_trials=900, seed=3, backend="sequential", keep_trials=True, checkpoint=ck)
    (tmp_path / "checkpoint" / "chunk-000000000400-000000000600.parquet").unlink()
    ck = Checkpoint.open(tmp_path, sc, 900, 3, resume=True, keep_trials=True)
    res = simulate(sc, n_trials=900, seed=3, backend="sequential", keep_trials=True,
                   checkpoint=ck)
    assert res.trials().equals(ref.trials())
    assert core(res) == core(ref)


def test_changed_run_is_refused(tmp_path, monkeypatch):
    sc = scenario()
    ck = Checkpoint.open(tmp_path, sc, 1000, 7, chunk_size=500, resume=True)
    simulate(sc, n_trials=1000, seed=7, backend="sequential", checkpoint=ck)
    with pytest.raises(CheckpointError, match="scenario changed"):
        Checkpoint.open(tmp_path, scenario([0.10, 0.25, 0.40, 0.55]), 1000, 7, resume=True)
    with pytest.raises(CheckpointError, match="n_trials was 1000, now 2000"):
        Checkpoint.open(tmp_path, sc, 2000, 7, resume=True)
    with pytest.raises(CheckpointError, match="seed was 7, now 8"):
        Checkpoint.open(tmp_path, sc, 1000, 8, resume=True)
    with pytest.raises(CheckpointError, match="chunk_size was 500, now 100"):
        Checkpoint.open(tmp_path, sc, 1000, 7, chunk_size=100, resume=True)
    with pytest.raises(CheckpointError, match="designs was"):
        Checkpoint.open(tmp_path, sc, 1000, 7, resume=True, designs=["boin"])
    monkeypatch.setattr(ckmod, "package_version", lambda: "9.9.9")
    with pytest.raises(CheckpointError, match="written by escalation-sim 0.1.0, this is 9.9.9"):
        Checkpoint.open(tmp_path, sc, 1000, 7, resume=True)
    monkeypatch.undo()
    # a matching run's simulate() call with other settings is refused too
    ck = Checkpoint.open(tmp_path, sc, 1000, 7, resume=True)
    with pytest.raises(CheckpointError, match="does not match"):
        simulate(sc, n_trials=1000, seed=7, checkpoint=ck, keep_trials=True)
    # resume=False starts over
    ck = Checkpoint.open(tmp_path, scenario([0.10, 0.25, 0.40, 0.55]), 1000, 7, resume=False)
    assert ck.done_starts() == set()


def test_cli_refuses_changed_scenario(tmp_path, capsys):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(SC.format(p=P3))
    b.write_text(SC.format(p=[0.10, 0.25, 0.40, 0.55]))
    out = tmp_path / "out"
    assert main(["run", str(a), "--out", str(out), "--resume", "--n-trials", "600",
                 "--chunk-size", "200", "--json", "--design", "boin"]) == 0
    capsys.readouterr()
    assert main(["run", str(b), "--out", str(out), "--resume", "--n-trials", "600",
                 "--design", "boin", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "belongs to a different run" in err and "scenario changed" in err
    assert main(["run", str(a), "--resume", "--n-trials", "600"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err


def test_memory_does_not_grow_with_chunks(tmp_path, monkeypatch):
    """Chunks are merged as they arrive: at most a couple of ChunkResults are alive at once."""
    sc = scenario()
    refs = []

    def alive():
        return sum(r() is not None for r in refs)
    real_run, real_load = runner.run_chunk, Checkpoint.load

    def spy_run(*a, **k):
        r = real_run(*a, **k)
        refs.append(weakref.ref(r))
        return r

    def spy_load(self, start):
        r = real_load(self, start)
        refs.append(weakref.ref(r))
        return r

    monkeypatch.setattr(runner, "run_chunk", spy_run)
    monkeypatch.setattr(Checkpoint, "load", spy_load)
    most = []
    simulate(sc, n_trials=6000, seed=7, backend="sequential", chunk_size=100,
             progress=lambda n: most.append(alive()))
    assert len(most) == 60 and max(most) <= 2
    ck = Checkpoint.open(tmp_path, sc, 6000, 7, chunk_size=100, resume=True)
    simulate(sc, n_trials=6000, seed=7, backend="sequential", checkpoint=ck)
    most.clear()
    ck = Checkpoint.open(tmp_path, sc, 6000, 7, resume=True)
    for ch in ck.iter_chunks():
        most.append(alive())
        del ch
    assert len(most) == 60 and max(most) <= 2


# ---------------------------------------------------------------------------------------------
def _count_chunks(d: Path) -> int:
    try:
        return sum(1 for p in d.iterdir() if p.name.startswith("chunk-"))
    except FileNotFoundError:
        return 0


def test_sigkill_then_resume_gives_uninterrupted_results(tmp_path):
    """kill -9 a real run at a random moment (twice), resume, compare with a clean run."""
    scen = tmp_path / "scen.yaml"
    scen.write_text(SC.format(p=P3))
    out = tmp_path / "out"
    n, cs = 40000, 400
    cmd = [sys.executable, "-m", "escalation_sim", "run", str(scen), "--out", str(out),
           "--resume", "--n-trials", str(n), "--chunk-size", str(cs), "--seed", "11",
           "--json", "--compact", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rng = random.Random()
    n_chunks = -(-n // cs)
    seen = []
    for round_ in range(2):
        # a random number of chunks, then a random extra delay (possibly mid-write)
        want = _count_chunks(out / "checkpoint") + rng.randint(3, 25)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.time() + 60
        while _count_chunks(out / "checkpoint") < want and proc.poll() is None:
            assert time.time() < deadline, "run made no progress"
            time.sleep(0.002)
        time.sleep(rng.random() * 0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run finished before it was killed"
        done = _count_chunks(out / "checkpoint")
        seen.append(done)
        assert 0 < done < n_chunks
        assert not (out / "results.json").exists()
    assert seen[1] >= seen[0]
    # resume to the end, this time with two worker processes
    r = subprocess.run(cmd + ["--n-jobs", "2"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    resumed = json.loads(r.stdout)
    assert _count_chunks(out / "checkpoint") == n_chunks
    assert not list((out / "checkpoint").glob(".*.tmp-*"))
    clean = simulate(load_scenario_text(SC.format(p=P3), str(scen)), n_trials=n, seed=11,
                     backend="sequential")
    assert core(resumed) == core(json.loads(clean.to_json())), f"killed after {seen} chunks"
    assert resumed["n_trials"] == n and resumed["seed"] == 11


DES_SC = """\
name: ck-des
doses: [DL1, DL2, DL3, DL4]
truth: {p_dlt: [0.05, 0.10, 0.18, 0.28]}
target: 0.25
trial: {max_n: 12, cohort_size: 3, start_dose: 1}
designs:
  - {type: "3+3"}
  - {type: boin}
simulation: {n_trials: 240, seed: 4}
conduct:
  accrual_per_month: 2.0
  dlt_window_days: 28
  stagger_days: 7
"""


def test_discrete_event_run_resumes_exactly(tmp_path):
    """DES chunks also save durations and per-trial statistics; the resumed run equals an
    uninterrupted run with a different chunking, durations and paired differences included."""
    sc = load_scenario_text(DES_SC, "ck-des.yaml")
    ref = simulate(sc, backend="sequential", chunk_size=240)
    ck = Checkpoint.open(tmp_path, sc, 240, 4, resume=True)
    assert ck.chunk_size == ckmod.DEFAULT_CHUNK_DES
    ck = Checkpoint.open(tmp_path, sc, 240, 4, chunk_size=50, resume=False)
    simulate(sc, backend="sequential", checkpoint=ck)
    d = tmp_path / "checkpoint"
    assert len(list(d.glob("trials-*.parquet"))) == 5
    (d / "chunk-000000000100-000000000150.parquet").unlink()
    (d / "trials-000000000200-000000000240.parquet").unlink()  # chunk incomplete without it
    ck = Checkpoint.open(tmp_path, sc, 240, 4, resume=True)
    assert ck.done_starts() == {0, 50, 150}
    res = simulate(sc, backend="sequential", checkpoint=ck)
    assert core(res) == core(ref)
    for a, b in zip(res.designs, ref.designs, strict=True):
        assert np.array_equal(a.durations, b.durations)
        assert a.des_totals == b.des_totals
    assert "duration_days" in {r["metric"] for r in res.to_dict()["paired"]}
