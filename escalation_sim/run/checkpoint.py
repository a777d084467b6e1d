"""Checkpoints: every finished chunk of a run is saved, so an interrupted run can resume.

A run's trial range ``0 .. n_trials-1`` is cut into chunks of a fixed size (stored in the
manifest, so it does not depend on ``n_jobs``).  As each chunk finishes, its integer tallies
and paired sums are written to one Parquet file; ``--resume`` skips the chunks already on disk.
Because chunk results are pure functions of ``(scenario, seed, start, stop)``, a run killed at
any moment and resumed gives exactly the results of an uninterrupted run.

Layout under the output folder::

    checkpoint/manifest.json
        what the chunks belong to: the scenario's resolved hash, n_trials, seed, chunk_size,
        the designs, the engine, keep_trials and the escalation-sim version.  Opening the
        folder for a different run is refused instead of mixing results.
    checkpoint/chunk-<start>-<stop>.parquet
        one row per (design index, trial ending) with its ``count``; columns ``design``,
        ``mtd`` (0-based, -1 = none), ``stop_code``, ``n_1..n_K``, ``dlt_1..dlt_K``, ``count``.
        The key-value metadata ``escalation_sim`` holds the seed key (seed, start, stop,
        scenario hash) and the paired sums.
    checkpoint/trials-<start>-<stop>.parquet
        per-trial data of the chunk when the run needs it (discrete-event durations and
        statistics, or ``keep_trials``): column ``<design>:<kind>:<name>[:<j>]``.

Every file is written to a temporary name in the same folder and renamed into place
(``os.replace`` is atomic), the per-trial file before the tally file, so a chunk file on disk
is always complete.  Leftover temporary files of a killed run are removed on open.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set

import numpy as np

from ..results.oc import OutcomeTally

FORMAT = 1
MANIFEST = "manifest.json"
DEFAULT_CHUNK_COHORT = 20_000
DEFAULT_CHUNK_DES = 500
_META_KEY = b"escalation_sim"
_CHUNK_RE = re.compile(r"^chunk-(\d{12})-(\d{12})\.parquet$")
_CHECKED = ("format", "version", "scenario_hash", "n_trials", "seed", "chunk_size", "designs",
            "engine", "keep_trials")


class CheckpointError(ValueError):
    """An output folder's checkpoint does not belong to this run (or is damaged)."""


def package_version() -> str:
    from .._version import __version__
    return str(__version__)


def scenario_hash(scenario) -> str:
    """SHA-256 of the resolved scenario (every default filled in), without the ``simulation``
    block (n_trials, seed and chunk size are checked separately; n_jobs and backend do not
    change results) and the free-text description."""
    d = scenario.resolved()
    d.pop("simulation", None)
    d.pop("description", None)
    text = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_chunk_size(des: bool) -> int:
    """Checkpoint chunk size: small enough to lose little work, large enough to stay fast."""
    return DEFAULT_CHUNK_DES if des else DEFAULT_CHUNK_COHORT


def _engine(scenario, logistics: Optional[bool]) -> str:
    use_des = scenario.has_logistics if logistics is None else bool(logistics)
    return "des" if use_des else "cohort"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_write_table(path: Path, table) -> None:
    import pyarrow.parquet as pq
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _require_pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError("checkpoints are Parquet files: pip install "
                           "'escalation-sim[parquet]' (pyarrow)") from exc


# ---------------------------------------------------------------------------------------------
# chunk <-> Parquet
def tally_table(tallies: Sequence[OutcomeTally], meta: Dict[str, Any]):
    """One row per (design index, trial ending) with its integer ``count``."""
    import pyarrow as pa
    K = tallies[0].n_doses
    rows = []
    for i, t in enumerate(tallies):
        for key in sorted(t.counts):
            rows.append((i, key, t.counts[key]))
    m = len(rows)
    design = np.fromiter((r[0] for r in rows), dtype=np.int32, count=m)
    mtd = np.fromiter((r[1][0] for r in rows), dtype=np.int32, count=m)
    stop = np.fromiter((r[1][1] for r in rows), dtype=np.int32, count=m)
    n = np.array([r[1][2] for r in rows], dtype=np.int32).reshape(m, K)
    y = np.array([r[1][3] for r in rows], dtype=np.int32).reshape(m, K)
    count = np.array([r[2] for r in rows], dtype=np.int64)
    if m and not np.array_equal(count, [r[2] for r in rows]):  # pragma: no cover
        raise CheckpointError("checkpoints hold integer trial counts only")
    cols = {"design": design, "mtd": mtd, "stop_code": stop}
    for d in range(K):
        cols[f"n_{d + 1}"] = n[:, d]
    for d in range(K):
        cols[f"dlt_{d + 1}"] = y[:, d]
    cols["count"] = count
    table = pa.table(cols)
    return table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode("utf-8")})


def tallies_from_table(table, n_designs: int, n_doses: int) -> List[OutcomeTally]:
    cols = {name: table.column(name).to_numpy() for name in table.column_names}
    K = n_doses
    out = [OutcomeTally(K) for _ in range(n_designs)]
    n = np.stack([cols[f"n_{d + 1}"] for d in range(K)], axis=1).tolist() if K else []
    y = np.stack([cols[f"dlt_{d + 1}"] for d in range(K)], axis=1).tolist() if K else []
    for i, m, s, nn, yy, c in zip(cols["design"].tolist(), cols["mtd"].tolist(),
                                  cols["stop_code"].tolist(), n, y, cols["count"].tolist()):
        out[i].add((m, s, tuple(nn), tuple(yy)), c)
    return out


def _enc(v):
    if isinstance(v, Fraction):  # exact sums of real-valued metrics
        return {"num": v.numerator, "den": v.denominator}
    return v


def _dec(v):
    if isinstance(v, dict):
        return Fraction(int(v["num"]), int(v["den"]))
    return v


def _encode_pairs(pair_sums) -> list:
    return [[a, b, {m: [_enc(s), _enc(ss)] for m, (s, ss) in sums.items()}]
            for (a, b), sums in sorted(pair_sums.items())]


def _decode_pairs(data) -> dict:
    return {(int(a), int(b)): {m: [_dec(s), _dec(ss)] for m, (s, ss) in sums.items()}
            for a, b, sums in data}


def per_trial_table(chunk, m: int):
    """Per-trial arrays of a chunk (durations, DES statistics, kept trials) as one table."""
    import pyarrow as pa
    cols: Dict[str, Any] = {}
    spec: List[Dict[str, Any]] = []

    def put(i, kind, name, value):
        arr = np.asarray(value)
        entry = {"design": i, "kind": kind, "name": name, "dtype": arr.dtype.str,
                 "shape": list(arr.shape)}
        if arr.ndim >= 1 and arr.shape[0] == m and arr.dtype != object:
            flat = arr.reshape(m, -1)
            entry["columns"] = []
            for j in range(flat.shape[1]):
                col = f"{i}:{kind}:{name}" + (f":{j}" if arr.ndim > 1 else "")
                cols[col] = np.ascontiguousarray(flat[:, j])
                entry["columns"].append(col)
        elif arr.ndim == 1 and arr.shape[0] == m:  # e.g. strings
            col = f"{i}:{kind}:{name}"
            cols[col] = pa.array(arr.tolist())
            entry["columns"] = [col]
        else:  # scalars and odd shapes: kept in the metadata
            entry["value"] = arr.tolist()
        spec.append(entry)

    n_designs = len(chunk.tallies)
    for i in range(n_designs):
        if chunk.durations is not None and chunk.durations[i] is not None:
            put(i, "duration", "duration_days", chunk.durations[i])
        if chunk.des_stats is not None and chunk.des_stats[i] is not None:
            for k, v in chunk.des_stats[i].items():
                put(i, "stat", k, v)
        if chunk.trials is not None:
            for k, v in chunk.trials[i].items():
                put(i, "trial", k, v)
    table = pa.table(cols) if cols else pa.table({"_rows": np.zeros(m, dtype=np.int8)})
    meta = {"format": FORMAT, "start": chunk.start, "stop": chunk.stop, "arrays": spec,
            "has_durations": chunk.durations is not None,
            "has_des_stats": chunk.des_stats is not None, "has_trials": chunk.trials is not None}
    return table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode("utf-8")})


def per_trial_from_table(table, n_designs: int):
    meta = json.loads(table.schema.metadata[_META_KEY])
    durations = [None] * n_designs if meta["has_durations"] else None
    stats = [dict() for _ in range(n_designs)] if meta["has_des_stats"] else None
    trials = [dict() for _ in range(n_designs)] if meta["has_trials"] else None
    for e in meta["arrays"]:
        dtype = np.dtype(e["dtype"])
        shape = tuple(e["shape"])
        if "columns" in e:
            parts = [table.column(c).to_numpy(zero_copy_only=False) for c in e["columns"]]
            if dtype == object:
                arr = np.array(parts[0].tolist(), dtype=object)
            else:
                arr = np.stack(parts, axis=1).astype(dtype, copy=False).reshape(shape) \
                    if len(shape) > 1 else parts[0].astype(dtype, copy=False)
        else:
            arr = np.array(e["value"], dtype=dtype).reshape(shape)
        i, kind, name = e["design"], e["kind"], e["name"]
        if kind == "duration":
            durations[i] = arr
        elif kind == "stat":
            stats[i][name] = arr
        else:
            trials[i][name] = arr
    return durations, stats, trials


# ---------------------------------------------------------------------------------------------
class Checkpoint:
    """The checkpoint folder of one run (one scenario, one seed, fixed chunks).

    Use :meth:`open`; pass the object to :func:`escalation_sim.simulate` as ``checkpoint=``.
    """

    def __init__(self, root: Path, manifest: Dict[str, Any]):
        self.root = Path(root)
        self.manifest = manifest
        self.chunk_size = int(manifest["chunk_size"])
        self.n_trials = int(manifest["n_trials"])
        self.seed = int(manifest["seed"])
        self.scenario_hash = manifest["scenario_hash"]
        self.n_designs = len(manifest["designs"])
        self.n_doses = int(manifest["n_doses"])
        self.per_trial = manifest["engine"] == "des" or bool(manifest["keep_trials"])

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, out_dir, scenario, n_trials: int, seed: int, chunk_size: Optional[int] = None,
             resume: bool = True, keep_trials: bool = False,
             designs: Optional[Sequence[str]] = None, logistics: Optional[bool] = None,
             subdir: str = "checkpoint") -> "Checkpoint":
        """Open (``resume=True``) or start afresh (``resume=False``) the checkpoint in
        ``out_dir/subdir``.

        ``chunk_size`` None: the size stored by an earlier run, else the scenario's
        ``simulation.chunk_size``, else 20000 trials (500 on the discrete-event engine).
        Raises :class:`CheckpointError` if the folder holds chunks of a different run.
        """
        _require_pyarrow()
        root = Path(out_dir) / subdir
        engine = _engine(scenario, logistics)
        names = list(designs) if designs else [d.name for d in scenario.designs]
        path = root / MANIFEST
        old = None
        if path.exists():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"{path}: unreadable checkpoint manifest ({exc}); "
                                      f"delete {root} to start over")
        if chunk_size is None:
            chunk_size = scenario.model.simulation.chunk_size
        if chunk_size is None and resume and old is not None and "chunk_size" in old:
            chunk_size = old["chunk_size"]
        if chunk_size is None:
            chunk_size = default_chunk_size(engine == "des")
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
        manifest = {"format": FORMAT, "package": "escalation-sim",
                    "version": package_version(), "scenario": scenario.name,
                    "source": scenario.source, "scenario_hash": scenario_hash(scenario),
                    "n_trials": int(n_trials), "seed": int(seed), "chunk_size": int(chunk_size),
                    "n_doses": scenario.n_doses, "designs": names, "engine": engine,
                    "keep_trials": bool(keep_trials), "created": time.strftime(
                        "%Y-%m-%dT%H:%M:%S%z")}
        if resume and old is not None:
            diffs = [_describe_diff(k, old.get(k), manifest[k]) for k in _CHECKED
                     if old.get(k) != manifest[k]]
            if diffs:
                raise CheckpointError(
                    f"{root}: the checkpoint in this output folder belongs to a different run: "
                    + "; ".join(diffs) + f". Use another --out folder, or delete {root} to "
                    "start over")
            ck = cls(root, old)
        else:
            if root.exists():
                if resume and any(root.glob("chunk-*.parquet")):
                    raise CheckpointError(f"{root}: chunk files without a {MANIFEST}; "
                                          f"delete {root} to start over")
                for p in root.iterdir():
                    if p.name == MANIFEST or p.name.endswith(".parquet") or ".tmp-" in p.name:
                        p.unlink()
            root.mkdir(parents=True, exist_ok=True)
            _atomic_write_bytes(path, json.dumps(manifest, indent=2).encode("utf-8"))
            ck = cls(root, manifest)
        ck._clean_temporaries()
        return ck

    def _clean_temporaries(self) -> None:
        for p in self.root.glob(".*.tmp-*"):
            try:
                p.unlink()
            except OSError:  # pragma: no cover
                pass

    def verify(self, n_trials: int, seed: int, designs: Sequence[str], engine: str,
               keep_trials: bool) -> None:
        """Refuse a run whose settings differ from the checkpoint's."""
        now = {"n_trials": int(n_trials), "seed": int(seed), "designs": list(designs),
               "engine": engine, "keep_trials": bool(keep_trials)}
        diffs = [_describe_diff(k, self.manifest.get(k), v) for k, v in now.items()
                 if self.manifest.get(k) != v]
        if diffs:
            raise CheckpointError(f"{self.root}: this run does not match its checkpoint: "
                                  + "; ".join(diffs))

    # -- chunks -------------------------------------------------------------------------------
    def _names(self, start: int, stop: int):
        tag = f"{start:012d}-{stop:012d}"
        return self.root / f"chunk-{tag}.parquet", self.root / f"trials-{tag}.parquet"

    def _check_range(self, start: int, stop: int) -> None:
        if start % self.chunk_size or stop != min(start + self.chunk_size, self.n_trials) \
                or not 0 <= start < self.n_trials:
            raise CheckpointError(f"{self.root}: chunk {start}..{stop} is not on this run's grid "
                                  f"(chunk_size {self.chunk_size}, n_trials {self.n_trials})")

    def done_starts(self) -> Set[int]:
        """Starts of the chunks already saved (complete on disk)."""
        out = set()
        if not self.root.exists():
            return out
        for p in self.root.iterdir():
            m = _CHUNK_RE.match(p.name)
            if not m:
                continue
            start, stop = int(m.group(1)), int(m.group(2))
            self._check_range(start, stop)
            if self.per_trial and not self._names(start, stop)[1].exists():
                continue
            out.add(start)
        return out

    def save(self, chunk) -> None:
        """Write one finished chunk (per-trial data first, then the tallies)."""
        self._check_range(chunk.start, chunk.stop)
        if len(chunk.tallies) != self.n_designs:
            raise CheckpointError(f"{self.root}: chunk has {len(chunk.tallies)} designs, the "
                                  f"checkpoint {self.n_designs}")
        tally_path, trial_path = self._names(chunk.start, chunk.stop)
        if self.per_trial:
            _atomic_write_table(trial_path, per_trial_table(chunk, chunk.stop - chunk.start))
        meta = {"format": FORMAT, "version": package_version(), "seed": self.seed,
                "start": chunk.start, "stop": chunk.stop, "scenario_hash": self.scenario_hash,
                "n_designs": self.n_designs, "n_doses": self.n_doses,
                "pair_sums": _encode_pairs(chunk.pair_sums)}
        _atomic_write_table(tally_path, tally_table(chunk.tallies, meta))

    def load(self, start: int):
        """The saved chunk starting at ``start`` as a ``ChunkResult``."""
        import pyarrow.parquet as pq
        from .runner import ChunkResult
        stop = min(start + self.chunk_size, self.n_trials)
        tally_path, trial_path = self._names(start, stop)
        try:
            table = pq.read_table(tally_path)
            meta = json.loads(table.schema.metadata[_META_KEY])
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{tally_path}: unreadable checkpoint chunk ({exc}); delete "
                                  "it and resume to recompute it")
        want = {"seed": self.seed, "start": start, "stop": stop,
                "scenario_hash": self.scenario_hash, "n_designs": self.n_designs}
        bad = {k: meta.get(k) for k, v in want.items() if meta.get(k) != v}
        if bad:
            raise CheckpointError(f"{tally_path}: chunk belongs to a different run ({bad})")
        tallies = tallies_from_table(table, self.n_designs, self.n_doses)
        durations = stats = trials = None
        if self.per_trial:
            durations, stats, trials = per_trial_from_table(pq.read_table(trial_path),
                                                            self.n_designs)
        return ChunkResult(start, stop, tallies, _decode_pairs(meta["pair_sums"]),
                           durations, stats, trials)

    def iter_chunks(self, starts: Optional[Iterable[int]] = None) -> Iterator:
        """Saved chunks (all, or those starting at ``starts``), in trial order, one at a time."""
        for s in sorted(self.done_starts() if starts is None else starts):
            yield self.load(s)

    def load_all(self) -> list:
        """Every saved chunk (this run's and earlier runs'), in trial order."""
        return list(self.iter_chunks())

    @property
    def complete(self) -> bool:
        return len(self.done_starts()) == -(-self.n_trials // self.chunk_size)

    def remove(self) -> None:
        """Delete the checkpoint folder."""
        shutil.rmtree(self.root, ignore_errors=True)

    def __repr__(self) -> str:
        return (f"Checkpoint({str(self.root)!r}, {len(self.done_starts())} of "
                f"{-(-self.n_trials // self.chunk_size)} chunks of {self.chunk_size})")


def _describe_diff(key: str, old, new) -> str:
    if key == "version":
        return f"it was written by escalation-sim {old}, this is {new}"
    if key == "scenario_hash":
        return "the scenario changed (resolved hash " + f"{str(old)[:12]} -> {str(new)[:12]})"
    if key == "format":
        return f"checkpoint format {old} -> {new}"
    return f"{key} was {json.dumps(old)}, now {json.dumps(new)}"
