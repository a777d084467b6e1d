"""Checkpoints: chunk files round-trip exactly and are checked before use; resumed runs equal
uninterrupted ones.  (Killed processes, flipped bits and forged files: tests/test_faults.py.)"""
import json
import weakref

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import escalation_sim.run.checkpoint as ckmod
import escalation_sim.run.loop as loop
from escalation_sim import exact_oc, simulate
from escalation_sim.engines.exact import exact_tally
from escalation_sim.run.checkpoint import Checkpoint, CheckpointError, ChunkDamaged
from escalation_sim.cli import main
from escalation_sim.run.runner import ChunkResult, run_chunk
from escalation_sim.inputs.scenario import load_scenario_text

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
    assert len(meta["sha256"]) == 64  # the content checksum checked on every load
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
    """Chunks are merged as they arrive: at most a couple of ChunkResults are alive at once,
    whether computed or read back from a checkpoint."""
    sc = scenario()
    refs = []

    def alive():
        return sum(r() is not None for r in refs)
    real_run, real_load = loop.run_chunk, Checkpoint.load

    def spy_run(*a, **k):
        r = real_run(*a, **k)
        refs.append(weakref.ref(r))
        return r

    def spy_load(self, start):
        r = real_load(self, start)
        refs.append(weakref.ref(r))
        return r

    monkeypatch.setattr(loop, "run_chunk", spy_run)
    monkeypatch.setattr(Checkpoint, "load", spy_load)
    most = []
    simulate(sc, n_trials=6000, seed=7, backend="sequential", chunk_size=100,
             progress=lambda n: most.append(alive()))
    assert len(refs) == 60  # the spy saw every chunk (6000 / 100)
    assert len(most) == 60 and max(most) <= 2
    ck = Checkpoint.open(tmp_path, sc, 6000, 7, chunk_size=100, resume=True)
    simulate(sc, n_trials=6000, seed=7, backend="sequential", checkpoint=ck)
    refs.clear()
    most.clear()
    ck = Checkpoint.open(tmp_path, sc, 6000, 7, resume=True)
    real_add = loop.ChunkMerger.add

    def spy_add(self, ch):
        most.append(alive())
        return real_add(self, ch)
    monkeypatch.setattr(loop.ChunkMerger, "add", spy_add)
    simulate(sc, n_trials=6000, seed=7, backend="sequential", checkpoint=ck)
    # every chunk read twice (checked at the start, merged at the end), none computed
    assert len(refs) == 120 and len(most) == 60 and max(most) <= 2


# ---------------------------------------------------------------------------------------------
# integrity: every saved chunk is checked before it is used
def _saved_chunk(tmp_path, keep_trials=False):
    sc = scenario()
    ck = Checkpoint.open(tmp_path, sc, 1000, 7, chunk_size=500, resume=True,
                         keep_trials=keep_trials)
    simulate(sc, n_trials=1000, seed=7, backend="sequential", checkpoint=ck,
             keep_trials=keep_trials)
    return sc, ck, tmp_path / "checkpoint" / "chunk-000000000500-000000001000.parquet"


def forge(path, edit, rechecksum=True):
    """Rewrite a chunk file with ``edit(DataFrame)`` applied; with ``rechecksum`` the forger
    also recomputes the content checksum (so only the semantic checks can catch it)."""
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"escalation_sim"])
    df = edit(table.to_pandas())
    new = pa.Table.from_pandas(df, preserve_index=False, schema=table.schema.remove_metadata())
    if rechecksum:
        meta["sha256"] = ckmod.content_sha256(new, meta)
    pq.write_table(new.replace_schema_metadata({b"escalation_sim": json.dumps(meta).encode()}),
                   path)


def _move_one(df):
    """One trial moved from the most common ending to the next (the sum is unchanged)."""
    i = df["count"].idxmax()
    j = df[(df["design"] == df.loc[i, "design"]) & (df.index != i)]["count"].idxmax()
    df.loc[i, "count"] -= 1
    df.loc[j, "count"] += 1
    return df


def _at_row0(col, value):
    def edit(df):
        df.loc[0, col] = value(df.loc[0, col])
        return df
    return edit


@pytest.mark.parametrize("edit, rechecksum, reason", [
    (_move_one, False, "content does not match its SHA-256"),
    (_at_row0("count", lambda c: c + 100_000), True, r"design 0 counts 1005\d\d trials, the "
                                                     "chunk has 500"),
    (_at_row0("n_1", lambda v: 99), True, "more than 6 patients at a dose for design 0"),
    (lambda df: df.assign(dlt_2=df["n_2"] + 1), True, "more DLTs than patients at a dose"),
    (_at_row0("mtd", lambda v: 7), True, r"MTD outside -1\.\.3"),
    (_at_row0("count", lambda v: 0), True, "a count below 1"),
])
def test_forged_chunk_is_refused_with_its_reason(tmp_path, edit, rechecksum, reason):
    """Design limits: the 3+3 (design 0) treats at most 6 patients at a dose (two cohorts of
    3, threeplusthree.py); the chunk holds trials 500..999, so each design counts 500."""
    sc, ck, path = _saved_chunk(tmp_path)
    forge(path, edit, rechecksum)
    with pytest.raises(ChunkDamaged, match=reason) as ei:
        ck.load(500)
    assert ei.value.path == path
    assert ck.done_starts() == {0, 500}  # on disk, but not usable:
    with pytest.warns(loop.RunNote, match=r"chunk-000000000500-000000001000\.parquet: damaged"):
        assert ck.verified_starts() == {0}
    assert (path.parent / f"damaged-{path.name}").exists() and not path.exists()
    # the run recomputes the chunk and gives the uninterrupted run's numbers
    res = simulate(sc, n_trials=1000, seed=7, backend="sequential", checkpoint=ck)
    assert core(res) == core(simulate(sc, n_trials=1000, seed=7, backend="sequential"))


def test_per_trial_rows_must_add_up_to_the_tallies(tmp_path):
    sc, ck, path = _saved_chunk(tmp_path, keep_trials=True)
    trials = path.with_name(path.name.replace("chunk-", "trials-"))
    pristine = trials.read_bytes()
    forge(trials, lambda df: df.assign(**{"1:trial:n_1": df["1:trial:n_1"] + 1}))
    with pytest.raises(ChunkDamaged, match="design 1: per-trial rows do not add up"):
        ck.load(500)
    trials.write_bytes(pristine)
    forge(trials, lambda df: df.assign(**{"0:trial:trial": df["0:trial:trial"][::-1].values}))
    with pytest.raises(ChunkDamaged, match=r"not trials 500\.\.999 in order"):
        ck.load(500)


def test_off_grid_chunk_and_damaged_manifest_are_refused(tmp_path):
    sc, ck, path = _saved_chunk(tmp_path)
    path.rename(path.with_name("chunk-000000000100-000000000600.parquet"))
    with pytest.warns(loop.RunNote, match="are not a chunk of this run"):
        assert ck.verified_starts() == {0}
    man = tmp_path / "checkpoint" / "manifest.json"
    man.write_text(man.read_text().replace('"seed": 7', '"seed": 8'))
    with pytest.raises(CheckpointError, match="damaged checkpoint manifest"):
        Checkpoint.open(tmp_path, sc, 1000, 8, resume=True)


def test_design_limits_hold_for_every_exact_ending():
    """The limits used to check chunks bound every possible trial ending, and are tight: the
    3+3 reaches 6 at a dose (two cohorts of 3), BOIN and CRM their max_n of 24."""
    sc = scenario()
    for it in sc.designs:
        per_dose, total = ckmod.design_limits(it.design)
        keys = exact_tally(it.design, sc.p_true).counts
        most_at_dose = max(max(k[2]) for k in keys)
        most_total = max(sum(k[2]) for k in keys)
        assert most_at_dose <= per_dose and most_total <= total
        if it.type == "3+3":
            assert (per_dose, most_at_dose) == (6, 6)
        else:
            assert (total, most_total) == (24, 24)


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
    assert ck.chunk_size == 30  # the default: at least 8 chunks (240 / 8), at most 500
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
