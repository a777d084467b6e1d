"""The fault suite: runs killed at chunk boundaries and during the final write, flipped and
forged checkpoint chunks, two runs on one folder, stale locks, unusable --out folders, a full
disk, SIGTERM/SIGINT with worker processes, and memory with --keep-trials.

Real command-line subprocesses are synchronised with the run loop's test hooks
(escalation_sim/run/loop.py): the child writes ``chunk START STOP`` to a pipe after each chunk
it saves and, after the k-th, writes ``hold`` and waits - so every kill lands at an exact chunk
boundary.  No test sleeps to synchronise, and every random choice is seeded.
"""
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from escalation_sim import simulate
from escalation_sim.inputs.scenario import load_scenario_text
from escalation_sim.results.files import verify_manifest
from escalation_sim.run import RunNote
from escalation_sim.run.checkpoint import Checkpoint
import escalation_sim.run.loop as loop
from escalation_sim.run.loop import Dispatch, plan_run, run_in_folder

ROOT = Path(__file__).resolve().parents[1]
GUARD_S = 300  # only a guard against a hung child: no test waits on time

SC = """\
name: faults
doses: [DL1, DL2, DL3, DL4]
truth: {p_dlt: [0.05, 0.12, 0.25, 0.40]}
target: 0.25
trial: {max_n: 24, cohort_size: 3, start_dose: 1}
designs:
  - {type: "3+3"}
  - {type: boin}
  - {type: crm, skeleton: [0.10, 0.17, 0.25, 0.35]}
simulation: {n_trials: 4000, seed: 11}
"""

STUDY = """\
name: fault-study
scenarios: [a.yaml, b.yaml]
simulation: {n_trials: 6000, seed: SEED, chunk_size: 500}
"""

OUTPUT_TABLES = ["oc.csv", "summary.csv", "paired.csv"]


def scenario_file(tmp_path: Path) -> Path:
    f = tmp_path / "scen.yaml"
    f.write_text(SC)
    return f


def study_file(tmp_path: Path, seed: int = 2026) -> Path:
    (tmp_path / "a.yaml").write_text(SC.replace("name: faults", "name: a"))
    (tmp_path / "b.yaml").write_text(SC.replace("name: faults", "name: b")
                                     .replace("[0.05, 0.12, 0.25, 0.40]",
                                              "[0.10, 0.25, 0.40, 0.55]"))
    f = tmp_path / f"study-{seed}.yaml"
    f.write_text(STUDY.replace("SEED", str(seed)))
    return f


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT))
    for k in ("ESCALATION_SIM_TEST_CHUNK_FD", "ESCALATION_SIM_TEST_HOLD_AFTER",
              "ESCALATION_SIM_TEST_RELEASE_FD", "ESCALATION_SIM_TEST_DIE_BEFORE_RENAME"):
        e.pop(k, None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def cli(*args, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "escalation_sim", *map(str, args)],
                          capture_output=True, text=True, env=env(**extra), timeout=GUARD_S)


def cli_here(capsys, *args) -> tuple:
    """The command line in this process, for runs that need no process of their own (no
    interpreter start-up and imports, ~0.5 CPU-s each): ``(exit code, stderr)``."""
    from escalation_sim.cli import main
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


class Child:
    """A command-line run in its own session, reporting chunk boundaries through a pipe."""

    def __init__(self, *args, hold_after=None, release=False, **extra):
        self.sig_r, sig_w = os.pipe()
        fds = [sig_w]
        hooks = {"ESCALATION_SIM_TEST_CHUNK_FD": sig_w}
        if hold_after is not None:
            hooks["ESCALATION_SIM_TEST_HOLD_AFTER"] = hold_after
        self.release_w = None
        if release:
            rel_r, self.release_w = os.pipe()
            fds.append(rel_r)
            hooks["ESCALATION_SIM_TEST_RELEASE_FD"] = rel_r
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "escalation_sim", *map(str, args)], env=env(**hooks, **extra),
            pass_fds=fds, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        for fd in fds:
            os.close(fd)
        self.lines = []
        self._buf = b""

    @property
    def chunks(self) -> int:
        return sum(1 for ln in self.lines if ln.startswith("chunk "))

    def wait_for(self, word: str) -> None:
        """Read the child's signals until ``word`` (EOF - the child ended - fails)."""
        while word not in self.lines:
            ready, _, _ = select.select([self.sig_r], [], [], GUARD_S)
            assert ready, f"no signal from the run; got {self.lines}"
            data = os.read(self.sig_r, 4096)
            assert data, f"the run ended before {word!r}: {self.lines}; " \
                         f"{self.proc.communicate()[1][-2000:]}"
            self._buf += data
            *done, self._buf = self._buf.split(b"\n")
            self.lines += [d.decode() for d in done]

    def release(self) -> None:
        os.write(self.release_w, b"go\n")

    def finish(self):
        out, err = self.proc.communicate(timeout=GUARD_S)
        while self.sig_r is not None:  # the child has ended: read its last signals to EOF
            data = os.read(self.sig_r, 4096)
            if not data:
                break
            self._buf += data
        self.lines += [d.decode() for d in self._buf.split(b"\n") if d]
        self._buf = b""
        self.close()
        return self.proc.returncode, out, err

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:  # nothing can clean up after kill -9: its workers, orphaned,
            self.proc.wait()       # would live on, so end the session the test started
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.finish()

    def close(self):
        for fd in (self.sig_r, self.release_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.sig_r = self.release_w = None
        if self.proc.poll() is None:  # a failed test: leave nothing behind
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes (what a refused run must not change)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def tables(folder: Path) -> dict:
    return {n: (folder / n).read_bytes() for n in OUTPUT_TABLES}


# ---------------------------------------------------------------------------------------------
# kills
RUN = ["--n-trials", 40000, "--chunk-size", 400, "--seed", 11, "--quiet"]


def test_sigkill_at_chunk_boundaries_then_resume_is_bit_identical(tmp_path, capsys):
    """kill -9 after a (seeded) random number of saved chunks, twice; resume on two workers;
    the tables equal an uninterrupted run's byte for byte (CSV floats are written in full)."""
    scen = scenario_file(tmp_path)
    out, clean = tmp_path / "out", tmp_path / "clean"
    rng = random.Random(17)
    saved = 0
    for _ in range(2):
        k = rng.randint(3, 25)
        child = Child("run", scen, "--out", out, "--resume", *RUN, hold_after=k)
        try:
            child.wait_for("hold")
            rc, _, _ = child.kill()
        finally:
            child.close()
        assert rc == -signal.SIGKILL and child.chunks == k
        saved += k
        ck = sorted((out / "checkpoint").glob("chunk-*.parquet"))
        assert len(ck) == saved  # exactly the chunks saved before each kill
        assert not (out / "manifest.json").exists() and not (out / "oc.csv").exists()
    r = cli("run", scen, "--out", out, "--resume", *RUN, "--n-jobs", 2, "--backend", "loky")
    assert r.returncode == 0, r.stderr
    assert "damaged" not in r.stderr
    assert len(list((out / "checkpoint").glob("chunk-*.parquet"))) == 100
    assert not list((out / "checkpoint").glob(".*.tmp-*"))
    rc, err = cli_here(capsys, "run", scen, "--out", clean, *RUN)   # the uninterrupted run
    assert rc == 0, err
    assert tables(out) == tables(clean)
    assert verify_manifest(out) == [] and verify_manifest(clean) == []


def test_study_killed_on_two_workers_then_resumed_is_bit_identical(tmp_path, capsys):
    f = study_file(tmp_path)
    out, clean = tmp_path / "out", tmp_path / "clean"
    child = Child("study", f, "--out", out, "--n-jobs", 2, "--backend", "loky", "--quiet",
                  hold_after=5)
    try:
        child.wait_for("hold")
        rc, _, _ = child.kill()
    finally:
        child.close()
    assert rc == -signal.SIGKILL
    assert len(list((out / "checkpoint" / "cells").glob("*/chunk-*.parquet"))) == 5
    r = cli("study", f, "--out", out, "--resume", "--n-jobs", 2, "--backend", "loky",
            "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "study.json").read_text())["resumed_trials"] == 5 * 500
    rc, err = cli_here(capsys, "study", f, "--out", clean, "--backend", "sequential",
                       "--quiet")
    assert rc == 0, err
    assert tables(out) == tables(clean)
    assert verify_manifest(out) == []


def _descendants(pid: int) -> list:
    kids = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                stat = Path(f"/proc/{e}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            kids.setdefault(int(stat[1]), []).append(int(e))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_stop_every_worker(tmp_path, sig, code):
    """study --n-jobs 2 stopped at a chunk boundary: the command exits with 128 + signal and
    none of its worker processes (nor joblib's resource trackers) outlives it."""
    f = study_file(tmp_path)
    child = Child("study", f, "--out", tmp_path / "out", "--n-jobs", 2, "--backend", "loky",
                  "--quiet", hold_after=1)
    try:
        child.wait_for("hold")
        kids = _descendants(child.proc.pid)
        assert len(kids) >= 2, "the workers should be running"
        rc, _, err = child.kill(sig)
    finally:
        child.close()
    assert rc == code, err
    assert "rerun with --resume to continue" in err and "Traceback" not in err
    # the command waited for its workers: the moment it has exited, none is running
    assert [p for p in kids if _running(p)] == []


def test_kill_between_temp_write_and_rename(tmp_path, capsys):
    """A run killed during its final write never leaves a truncated file: every output is
    the old one or the new one, whole; the manifest is gone, so the folder reads as
    unfinished; the next run cleans up and completes."""
    scen = scenario_file(tmp_path)
    out = tmp_path / "out"
    # a fresh folder: killed while writing oc.csv -> no oc.csv at all, no manifest
    r = cli("run", scen, "--out", out, "--n-trials", 2000, "--quiet",
            ESCALATION_SIM_TEST_DIE_BEFORE_RENAME="oc.csv")
    assert r.returncode == -signal.SIGKILL
    assert not (out / "oc.csv").exists() and not (out / "manifest.json").exists()
    assert len(list(out.glob(".oc.csv.tmp-*"))) == 1
    assert verify_manifest(out)[0].endswith("did not finish")
    # a finished folder, rewritten by a different run killed at summary.csv
    assert cli_here(capsys, "run", scen, "--out", out, "--n-trials", 2000, "--quiet")[0] == 0
    old = snapshot(out)
    r = cli("run", scen, "--out", out, "--n-trials", 3000, "--quiet",
            ESCALATION_SIM_TEST_DIE_BEFORE_RENAME="summary.csv")
    assert r.returncode == -signal.SIGKILL
    now = snapshot(out)
    assert "manifest.json" not in now
    assert now["summary.csv"] == old["summary.csv"]          # the old file, whole
    assert now["oc.csv"] != old["oc.csv"]                    # already the new one, whole
    assert pd.read_csv(out / "oc.csv")["n_trials"].eq(3000).all()
    rc, err = cli_here(capsys, "run", scen, "--out", out, "--n-trials", 3000, "--quiet")
    assert rc == 0, err
    assert verify_manifest(out) == [] and not list(out.glob(".*.tmp-*"))


def test_study_killed_during_final_write_keeps_a_good_oc(tmp_path, capsys):
    f = study_file(tmp_path)
    out = tmp_path / "out"
    assert cli_here(capsys, "study", f, "--out", out, "--quiet")[0] == 0
    old = snapshot(out)
    r = cli("study", f, "--out", out, "--resume", "--quiet",
            ESCALATION_SIM_TEST_DIE_BEFORE_RENAME="oc.csv")
    assert r.returncode == -signal.SIGKILL
    now = snapshot(out)
    assert now["oc.csv"] == old["oc.csv"] and now["study.json"] == old["study.json"]
    assert "manifest.json" not in now  # the folder says it is unfinished
    assert cli_here(capsys, "study", f, "--out", out, "--resume", "--quiet")[0] == 0
    assert verify_manifest(out) == []
    assert snapshot(out)["oc.csv"] == old["oc.csv"]


# ---------------------------------------------------------------------------------------------
# damaged checkpoint files
def test_24_single_bit_flips_never_change_results(tmp_path):
    """Each of 24 seeded single-bit flips in a saved chunk (tally or per-trial file) is caught
    (page CRC, content SHA-256, or the count checks) and the chunk recomputed, or it touched
    bytes that are not part of the content; either way the results are the uninterrupted
    run's, to the bit."""
    sc = load_scenario_text(SC, "faults.yaml")
    pristine = tmp_path / "pristine"
    ck = Checkpoint.open(pristine, sc, 2000, 11, chunk_size=500, resume=True, keep_trials=True)
    simulate(sc, n_trials=2000, seed=11, backend="sequential", checkpoint=ck, keep_trials=True)
    ref = simulate(sc, n_trials=2000, seed=11, backend="sequential", keep_trials=True)
    rng = random.Random(2026)
    caught = 0
    for k in range(24):
        work = tmp_path / f"flip{k}"
        shutil.copytree(pristine, work)
        kind = "chunk" if k % 2 == 0 else "trials"
        target = work / "checkpoint" / f"{kind}-000000000500-000000001000.parquet"
        data = bytearray(target.read_bytes())
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        target.write_bytes(bytes(data))
        ck = Checkpoint.open(work, sc, 2000, 11, resume=True, keep_trials=True)
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always")
            res = simulate(sc, n_trials=2000, seed=11, backend="sequential", checkpoint=ck,
                           keep_trials=True)
        caught += any(issubclass(w.category, RunNote) and "damaged" in str(w.message)
                      for w in notes)
        assert res.to_dict()["designs"] == ref.to_dict()["designs"], (kind, bit)
        assert res.to_dict()["paired"] == ref.to_dict()["paired"], (kind, bit)
        assert res.trials().equals(ref.trials()), (kind, bit)
    assert caught >= 12, f"only {caught} of 24 flips were noticed"


def test_damaged_chunk_through_the_command_line(tmp_path, capsys):
    """The note names the file; the run exits 0 with the uninterrupted run's tables."""
    scen = scenario_file(tmp_path)
    out, clean = tmp_path / "out", tmp_path / "clean"
    args = ["--n-trials", 4000, "--chunk-size", 1000, "--quiet"]
    assert cli_here(capsys, "run", scen, "--out", out, "--resume", *args)[0] == 0
    f = out / "checkpoint" / "chunk-000000001000-000000002000.parquet"
    data = bytearray(f.read_bytes())
    data[len(data) // 3] ^= 0x10
    f.write_bytes(bytes(data))
    rc, err = cli_here(capsys, "run", scen, "--out", out, "--resume", *args)
    assert rc == 0, err
    assert f"note: {f}: damaged checkpoint chunk" in err
    assert "trials 1000..1999 are recomputed" in err
    assert cli_here(capsys, "run", scen, "--out", clean, *args)[0] == 0
    assert tables(out) == tables(clean)


# ---------------------------------------------------------------------------------------------
# one folder, one run
def test_second_run_on_a_busy_folder_is_refused_and_writes_nothing(tmp_path, capsys):
    scen = scenario_file(tmp_path)
    out = tmp_path / "out"
    first = Child("run", scen, "--out", out, "--resume", *RUN, hold_after=2, release=True)
    try:
        first.wait_for("hold")
        before = snapshot(out)
        # the second runs in this process: the lock names another live process either way
        for args in (("run", scen, "--out", out, "--resume", *RUN),
                     ("run", scen, "--out", out, "--n-trials", 100),
                     ("study", study_file(tmp_path), "--out", out)):
            rc, err = cli_here(capsys, *args)
            assert rc == 2, err
            assert (f"in use by another escalation-sim run (pid {first.proc.pid} on "
                    f"{socket.gethostname()} since") in err
            assert "Traceback" not in err
        assert snapshot(out) == before
        first.release()
        rc, _, err = first.finish()
    finally:
        first.close()
    assert rc == 0, err
    assert verify_manifest(out) == [] and not (out / ".escalation-sim.lock").exists()


def test_stale_lock_is_taken_over_with_a_note(tmp_path, capsys):
    scen = scenario_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    dead = int(gone.stdout)
    (out / ".escalation-sim.lock").write_text(json.dumps(
        {"pid": dead, "host": socket.gethostname(), "started": "2026-01-01T00:00:00+0000",
         "command": "escalation-sim run killed"}))
    rc, err = cli_here(capsys, "run", scen, "--out", out, "--n-trials", 500, "--quiet")
    assert rc == 0, err
    assert f"took over the lock left by pid {dead} on {socket.gethostname()}" in err
    assert not (out / ".escalation-sim.lock").exists()


def test_refused_runs_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_here(capsys, "study", study_file(tmp_path), "--out", out, "--quiet")[0] == 0
    before = snapshot(out)
    rc, err = cli_here(capsys, "study", study_file(tmp_path, seed=7), "--out", out,
                       "--resume", "--quiet")
    assert rc == 2
    assert "seed was 2026, now 7" in err and "Traceback" not in err
    assert snapshot(out) == before  # cells.json, cells.csv and the rest untouched
    scen = scenario_file(tmp_path)
    run_out = tmp_path / "run"
    assert cli_here(capsys, "run", scen, "--out", run_out, "--resume", "--n-trials",
                    1000)[0] == 0
    before = snapshot(run_out)
    rc, err = cli_here(capsys, "run", scen, "--out", run_out, "--resume", "--n-trials", 1000,
                       "--seed", 7)
    assert rc == 2 and "seed was 11, now 7" in err
    assert snapshot(run_out) == before


def test_unusable_out_is_refused_before_any_work(tmp_path):
    scen = scenario_file(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for args in (["run", scen, "--out", afile], ["run", scen, "--out", afile / "sub"],
                 ["study", study_file(tmp_path), "--out", afile],
                 ["report", scen, "-o", tmp_path]):
        child = Child(*args)
        rc, _, err = child.finish()
        assert rc == 2, err
        assert child.lines == []  # refused before a single chunk ran
        assert "Traceback" not in err and ("not a folder" in err or "is a file" in err
                                            or "is a folder" in err), err
    assert afile.read_text() == "not a folder"


@pytest.fixture
def small_fs(tmp_path):
    """A 3 MB tmpfs (mounting needs root; skipped otherwise)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("a small file system needs root (mount -t tmpfs)")
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_full_disk_leaves_nothing_half_written(small_fs, tmp_path):
    scen = scenario_file(tmp_path)
    out = small_fs / "out"
    assert cli("run", scen, "--out", out, "--n-trials", 500, "--keep-trials",
               "--quiet").returncode == 0
    before = snapshot(out)
    r = cli("run", scen, "--out", out, "--n-trials", 40000, "--keep-trials", "--quiet")
    assert r.returncode == 1, r.stderr
    assert "No space left on device" in r.stderr and "Traceback" not in r.stderr
    now = snapshot(out)
    # every file is the old one, whole; only the manifest may be gone (the write had started)
    assert {k: v for k, v in before.items() if k != "manifest.json"} == \
        {k: v for k, v in now.items() if k != "manifest.json"}
    if "manifest.json" in now:
        assert verify_manifest(out) == []
    assert not list(out.glob(".*tmp-*")) and not (out / ".trials-spool").exists()
    ro = small_fs / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                       capture_output=True, text=True)
    if r.returncode == 0:
        try:
            r = cli("run", scen, "--out", ro / "x", "--n-trials", 500)
            assert r.returncode == 2 and "cannot write in" in r.stderr, r.stderr
        finally:
            subprocess.run(["umount", "-l", str(ro)], capture_output=True)


# ---------------------------------------------------------------------------------------------
# per-trial rows stream to disk
def test_streamed_trial_tables_equal_the_in_memory_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "_SLICE", 300)  # chunks of 700 written in slices of 300
    sc = load_scenario_text(SC, "faults.yaml")
    mem = simulate(sc, n_trials=3000, seed=11, backend="sequential", keep_trials=True)
    plan = plan_run(sc, n_trials=3000, seed=11, chunk_size=700, keep_trials=True)
    res = run_in_folder(plan, tmp_path / "out", Dispatch(1, "sequential"))
    assert res.designs[0].trials is None  # on disk, not in memory
    out = tmp_path / "out"
    assert (out / "trials.csv").read_text() == mem.trials().to_csv(index=False)
    assert (out / "trial_doses.csv").read_text() == mem.doses_long().to_csv(index=False)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "trials.parquet"),
                                  pd.read_parquet(_parquet_of(mem.trials(), tmp_path / "t")))
    assert verify_manifest(out) == [] and not (out / ".trials-spool").exists()
    # resumed from a checkpoint (some chunks lost): the same bytes
    plan = plan_run(sc, n_trials=3000, seed=11, chunk_size=700, keep_trials=True)
    run_in_folder(plan, tmp_path / "ck", Dispatch(1, "sequential"), resume=True)
    for p in sorted((tmp_path / "ck" / "checkpoint").glob("chunk-*"))[::2]:
        p.unlink()
    run_in_folder(plan, tmp_path / "ck", Dispatch(2, "loky"), resume=True)
    assert (tmp_path / "ck" / "trials.csv").read_bytes() == (out / "trials.csv").read_bytes()


def _parquet_of(df, path):
    df.to_parquet(path, index=False)
    return path


def _peak_rss_mb(*args) -> float:
    """Peak resident memory of one command-line run (its own process: os.wait4's rusage)."""
    proc = subprocess.Popen([sys.executable, "-m", "escalation_sim", *map(str, args)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == 0, err
    return usage.ru_maxrss / 1024  # kB on Linux


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in kB on Linux")
def test_keep_trials_memory_does_not_grow_with_trials(tmp_path):
    """--keep-trials streams per-trial rows to disk chunk by chunk: ten times the trials adds
    less than 40 MB of peak memory (holding them would add about 150 MB at 5 x 10^4 trials:
    3 designs x 5 x 10^4 trials x 11 columns x 8 bytes = 13 MB, several times over as tables
    are built)."""
    scen = scenario_file(tmp_path)
    # one chunk against ten (5,000 trials per chunk): per-chunk overhead adds nothing here
    small = _peak_rss_mb("run", scen, "--out", tmp_path / "a", "--n-trials", 5_000,
                         "--chunk-size", 5000, "--keep-trials", "--quiet")
    large = _peak_rss_mb("run", scen, "--out", tmp_path / "b", "--n-trials", 50_000,
                         "--chunk-size", 5000, "--keep-trials", "--quiet")
    assert large - small < 40, (small, large)
    assert len(pd.read_parquet(tmp_path / "b" / "trials.parquet", columns=["trial"])) == 150_000
