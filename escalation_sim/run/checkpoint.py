"""Checkpoints: every finished chunk of a run is saved, so an interrupted run can resume.

A run's trial range ``0 .. n_trials-1`` is cut into chunks of a fixed size (stored in the
manifest, so it does not depend on ``n_jobs``).  As each chunk finishes, its integer tallies
and paired sums are written to one Parquet file; ``--resume`` skips the chunks already on disk.
Because chunk results are pure functions of ``(scenario, seed, start, stop)``, a run killed at
any moment and resumed gives exactly the results of an uninterrupted run.

Layout under the output folder::

    checkpoint/manifest.json
        what the chunks belong to: the scenario's resolved hash, n_trials, seed, chunk_size,
        the designs, the engine, keep_trials and the escalation-sim version, with a SHA-256
        of its own content.  Opening the folder for a different run is refused instead of
        mixing results.
    checkpoint/chunk-<start>-<stop>.parquet
        one row per (design index, trial ending) with its ``count``; columns ``design``,
        ``mtd`` (0-based, -1 = none), ``stop_code``, ``n_1..n_K``, ``dlt_1..dlt_K``, ``count``.
        The key-value metadata ``escalation_sim`` holds the seed key (seed, start, stop,
        scenario hash), the paired sums and the SHA-256 of the file's content.
    checkpoint/trials-<start>-<stop>.parquet
        per-trial data of the chunk when the run needs it (discrete-event durations and
        statistics, or ``keep_trials``): column ``<design>:<kind>:<name>[:<j>]``, with the
        same kind of metadata and checksum.

Every file is written to a temporary name in the same folder, fsynced and renamed into place
(``os.replace`` is atomic), the per-trial file before the tally file, so a chunk file on disk
is always complete.  Leftover temporary files of a killed run are removed on open.

Integrity.  A chunk is used only after it passes every check (:meth:`Checkpoint.load`):
the Parquet page checksums (CRC-32, written and verified by pyarrow), the SHA-256 of its
content (columns and metadata) recorded when it was written, the seed key, and the counts
themselves - every design's counts sum to the chunk's trial range, no count is below 1,
every ending is possible for the design (MTD and stop code in range, 0 <= DLTs <= patients,
patients per dose and in total within the design's limits), and, when per-trial rows are
kept, the rows are the chunk's trials and re-count to the tallies.  A chunk failing any check
is reported by name, set aside as ``damaged-<name>`` and recomputed; it is never used.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..designs.threeplusthree import ThreePlusThree
from ..results.files import atomic_write, atomic_write_text, fsync_dir, remove_temporaries
from ..results.oc import OutcomeTally
from ..types import STOP_CODES
from . import RunNote
from .runner import ChunkResult, default_chunk_size

FORMAT = 2
MANIFEST = "manifest.json"
_META_KEY = b"escalation_sim"
_CHUNK_RE = re.compile(r"^chunk-(\d{12})-(\d{12})\.parquet$")
_CHECKED = ("format", "version", "scenario_hash", "n_trials", "seed", "chunk_size", "designs",
            "engine", "keep_trials")
#: a 3+3 design treats at most two cohorts of 3 at a dose (threeplusthree.py)
_THREE_PLUS_THREE_PER_DOSE = 6


class CheckpointError(ValueError):
    """An output folder's checkpoint does not belong to this run (or is damaged)."""


class ChunkDamaged(CheckpointError):
    """A saved chunk failed an integrity check; ``path`` names the file."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: damaged checkpoint chunk: {reason}")
        self.path = Path(path)
        self.reason = reason


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


def design_limits(design) -> Tuple[Optional[int], Optional[int]]:
    """(most patients at one dose, most patients in total) a design can treat; None = no
    bound known.  ``design.max_n`` (a ``StopAtN`` rule) bounds the total and so every dose;
    a 3+3 treats at most 6 patients at a dose (two cohorts of 3)."""
    total = design.max_n
    per_dose = total
    inner = design.inner
    if isinstance(inner, ThreePlusThree):
        per_dose = _THREE_PLUS_THREE_PER_DOSE if per_dose is None else \
            min(per_dose, _THREE_PLUS_THREE_PER_DOSE)
        cap = _THREE_PLUS_THREE_PER_DOSE * inner.n_doses
        total = cap if total is None else min(total, cap)
    return per_dose, total


def _require_pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError("checkpoints are Parquet files: pip install "
                           "'escalation-sim[parquet]' (pyarrow)") from exc


# ---------------------------------------------------------------------------------------------
# checksums and files
def _canonical(meta: Dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


def content_sha256(table, meta: Dict[str, Any]) -> str:
    """SHA-256 of a chunk table's content: its metadata (without the checksum itself) and,
    column by column, the name, type and values."""
    h = hashlib.sha256(_canonical(meta))
    for name in table.column_names:
        col = table.column(name)
        h.update(b"\0" + name.encode("utf-8") + b"\0" + str(col.type).encode("utf-8") + b"\0")
        arr = col.to_numpy(zero_copy_only=False)
        if arr.dtype == object:
            h.update(json.dumps(arr.tolist()).encode("utf-8"))
        else:
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _with_meta(table, meta: Dict[str, Any]):
    meta = dict(meta)
    meta["sha256"] = content_sha256(table, meta)
    return table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode("utf-8")})


def _write_table(path: Path, table) -> None:
    import pyarrow.parquet as pq
    atomic_write(path, lambda f: pq.write_table(table, f, compression="zstd",
                                                write_page_checksum=True))


def _read_verified(path: Path):
    """The table and metadata of a chunk file whose checksums hold (else ChunkDamaged)."""
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(path, page_checksum_verification=True)
        meta = json.loads(table.schema.metadata[_META_KEY])
    except FileNotFoundError:
        raise ChunkDamaged(path, "missing") from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure means damage
        raise ChunkDamaged(path, f"unreadable ({type(exc).__name__}: {exc})")
    if not isinstance(meta, dict) or "sha256" not in meta:
        raise ChunkDamaged(path, "no content checksum")
    if content_sha256(table, meta) != meta["sha256"]:
        raise ChunkDamaged(path, "content does not match its SHA-256")
    return table, meta


# ---------------------------------------------------------------------------------------------
# chunk <-> Parquet
def tally_table(tallies: Sequence[OutcomeTally], meta: Dict[str, Any]):
    """One row per (design index, trial ending) with its integer ``count``; the metadata
    ``meta`` and the content's SHA-256."""
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
    return _with_meta(pa.table(cols), meta)


def _int_column(table, name: str, path: Path) -> np.ndarray:
    if name not in table.column_names:
        raise ChunkDamaged(path, f"column {name!r} missing")
    arr = table.column(name).to_numpy(zero_copy_only=False)
    if arr.dtype.kind not in "iu":
        raise ChunkDamaged(path, f"column {name!r} is not integer (got {arr.dtype})")
    return arr.astype(np.int64, copy=False)


def tallies_from_table(table, n_designs: int, n_doses: int, path: Path = Path("<table>"),
                       n_trials: Optional[int] = None,
                       limits: Optional[Sequence[Tuple[Optional[int], Optional[int]]]] = None
                       ) -> List[OutcomeTally]:
    """The tallies of a chunk table, checked: every count >= 1, every ending possible for
    its design (``limits``: per design, most patients at a dose and in total), each design's
    counts summing to ``n_trials``.  Raises :class:`ChunkDamaged` naming ``path``."""
    K = n_doses
    design = _int_column(table, "design", path)
    mtd = _int_column(table, "mtd", path)
    stop = _int_column(table, "stop_code", path)
    count = _int_column(table, "count", path)
    n = np.stack([_int_column(table, f"n_{d + 1}", path) for d in range(K)], axis=1) \
        if K else np.zeros((design.size, 0), np.int64)
    y = np.stack([_int_column(table, f"dlt_{d + 1}", path) for d in range(K)], axis=1) \
        if K else np.zeros((design.size, 0), np.int64)

    def bad(mask, what):
        if mask.any():
            r = int(np.flatnonzero(mask)[0])
            row = {"design": int(design[r]), "mtd": int(mtd[r]), "stop_code": int(stop[r]),
                   "n": n[r].tolist(), "dlt": y[r].tolist(), "count": int(count[r])}
            raise ChunkDamaged(path, f"{what} (row {r}: {row})")

    bad((design < 0) | (design >= n_designs), f"design index outside 0..{n_designs - 1}")
    bad(count < 1, "a count below 1")
    bad((mtd < -1) | (mtd >= K), f"MTD outside -1..{K - 1}")
    # (0: not stopped - a calendar-time trial still running at the simulation horizon)
    bad((stop < 0) | (stop >= len(STOP_CODES)), f"stop code outside 0..{len(STOP_CODES) - 1}")
    bad((n < 0).any(axis=1) | (y < 0).any(axis=1), "a negative count of patients or DLTs")
    bad((y > n).any(axis=1), "more DLTs than patients at a dose")
    if limits is not None:
        for i, (per_dose, total) in enumerate(limits):
            mine = design == i
            if per_dose is not None:
                bad(mine & (n > per_dose).any(axis=1),
                    f"more than {per_dose} patients at a dose for design {i}")
            if total is not None:
                bad(mine & (n.sum(axis=1) > total),
                    f"more than {total} patients in total for design {i}")
    if n_trials is not None:
        for i in range(n_designs):
            s = sum(count[design == i].tolist())  # Python ints: no overflow on forged counts
            if s != n_trials:
                raise ChunkDamaged(path, f"design {i} counts {s} trials, the chunk has "
                                         f"{n_trials}")
    out = [OutcomeTally(K) for _ in range(n_designs)]
    nl, yl = n.tolist(), y.tolist()
    for r, (i, m, s, c) in enumerate(zip(design.tolist(), mtd.tolist(), stop.tolist(),
                                         count.tolist())):
        key = (m, s, tuple(nl[r]), tuple(yl[r]))
        if key in out[i].counts:
            raise ChunkDamaged(path, f"trial ending {key} of design {i} listed twice")
        out[i].add(key, c)
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
    return _with_meta(table, meta)


def per_trial_from_table(table, n_designs: int, meta: Optional[Dict[str, Any]] = None):
    meta = json.loads(table.schema.metadata[_META_KEY]) if meta is None else meta
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


def read_per_trial(path: Path, n_designs: int, start: int, stop: int):
    """The per-trial arrays of a chunk file, after its checksums and trial range are checked
    (raises :class:`ChunkDamaged`)."""
    table, meta = _read_verified(path)
    if (meta.get("start"), meta.get("stop")) != (start, stop):
        raise ChunkDamaged(path, f"holds trials {meta.get('start')}..{meta.get('stop')}, "
                                 f"expected {start}..{stop}")
    if table.num_rows != stop - start:
        raise ChunkDamaged(path, f"{table.num_rows} rows for {stop - start} trials")
    try:
        durations, stats, trials = per_trial_from_table(table, n_designs, meta)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ChunkDamaged(path, f"malformed per-trial arrays ({exc})")
    m = stop - start
    for i in range(n_designs):
        if durations is not None:
            d = durations[i]
            if d is None or d.shape != (m,) or not np.all(np.isfinite(d)) or (d < 0).any():
                raise ChunkDamaged(path, f"design {i}: trial durations missing, non-finite "
                                         "or negative")
        if trials is not None:
            t = trials[i]
            if "trial" not in t or not np.array_equal(t["trial"], np.arange(start, stop)):
                raise ChunkDamaged(path, f"design {i}: per-trial rows are not trials "
                                         f"{start}..{stop - 1} in order")
    return durations, stats, trials


def _recount(trials: Dict[str, np.ndarray], K: int) -> Dict[Any, int]:
    cols = [trials["mtd"], trials["stop_code"]] + [trials[f"n_{d + 1}"] for d in range(K)] + \
        [trials[f"dlt_{d + 1}"] for d in range(K)]
    rows, counts = np.unique(np.stack([np.asarray(c, dtype=np.int64) for c in cols], axis=1),
                             axis=0, return_counts=True)
    return {(int(r[0]), int(r[1]), tuple(int(v) for v in r[2:2 + K]),
             tuple(int(v) for v in r[2 + K:])): int(c) for r, c in zip(rows, counts)}


# ---------------------------------------------------------------------------------------------
class Checkpoint:
    """The checkpoint folder of one run (one scenario, one seed, fixed chunks).

    Open it with :meth:`open` (or :meth:`for_plan`); pass it to
    :func:`escalation_sim.simulate` as ``checkpoint=``.
    """

    def __init__(self, root: Path, manifest: Dict[str, Any],
                 limits: Optional[Sequence[Tuple[Optional[int], Optional[int]]]] = None,
                 fresh: bool = False):
        self.root = Path(root)
        self.manifest = manifest
        self.chunk_size = int(manifest["chunk_size"])
        self.n_trials = int(manifest["n_trials"])
        self.seed = int(manifest["seed"])
        self.scenario_hash = manifest["scenario_hash"]
        self.n_designs = len(manifest["designs"])
        self.n_doses = int(manifest["n_doses"])
        self.per_trial = manifest["engine"] == "des" or bool(manifest["keep_trials"])
        self.keep_trials = bool(manifest["keep_trials"])
        self.limits = list(limits) if limits is not None else None
        self._fresh = fresh
        self._created = False
        self._extend_from: Optional[int] = None

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, out_dir, scenario, n_trials: int, seed: int, chunk_size: Optional[int] = None,
             resume: bool = True, keep_trials: bool = False,
             designs: Optional[Sequence[str]] = None, logistics: Optional[bool] = None,
             subdir: str = "checkpoint") -> "Checkpoint":
        """Open (``resume=True``) or start afresh (``resume=False``) the checkpoint in
        ``out_dir/subdir`` for a run of ``scenario`` (the designs and engine chosen as
        :func:`escalation_sim.simulate` chooses them).

        ``chunk_size`` None: the scenario's ``simulation.chunk_size``, else the size stored by
        an earlier run, else the default of :func:`escalation_sim.run.runner.default_chunk_size`.
        Raises :class:`CheckpointError` if the folder holds chunks of a different run.
        """
        from .loop import plan_run
        with warnings.catch_warnings():  # notes about the plan come from the run itself
            warnings.simplefilter("ignore")
            plan = plan_run(scenario, n_trials=n_trials, seed=seed, chunk_size=chunk_size,
                            designs=designs, logistics=logistics, keep_trials=keep_trials)
        return cls.for_plan(out_dir, plan, resume=resume, subdir=subdir)

    @classmethod
    def for_plan(cls, out_dir, plan, resume: bool = True,
                 subdir: str = "checkpoint", extend: bool = False) -> "Checkpoint":
        """:meth:`prepare` then :meth:`create`."""
        return cls.prepare(out_dir, plan, resume=resume, subdir=subdir,
                           extend=extend).create()

    @classmethod
    def prepare(cls, out_dir, plan, resume: bool = True,
                subdir: str = "checkpoint", extend: bool = False) -> "Checkpoint":
        """Check the folder against ``plan`` (a :class:`escalation_sim.run.loop.RunPlan`)
        without writing anything; :meth:`create` then writes.  Raises
        :class:`CheckpointError` when ``resume`` and the folder holds a different run.
        ``extend``: a run that differs only by more trials extends the saved one (trials
        n..m have their own counter-based streams, so the saved chunks 0..n stay valid)."""
        _require_pyarrow()
        root = Path(out_dir) / subdir
        path = root / MANIFEST
        old = None
        if resume and path.exists():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(old, dict):
                    raise ValueError("not a mapping")
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"{path}: unreadable checkpoint manifest ({exc}); "
                                      f"delete {root} to start over")
            if "sha256" in old and hashlib.sha256(_canonical(old)).hexdigest() != old["sha256"]:
                raise CheckpointError(f"{path}: damaged checkpoint manifest (its content does "
                                      f"not match its SHA-256); delete {root} to start over")
        chunk_size = plan.chunk_size
        if chunk_size is None and old is not None and "chunk_size" in old:
            chunk_size = old["chunk_size"]
        if chunk_size is None:
            chunk_size = default_chunk_size(plan.n_trials, plan.engine)
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
        sc = plan.scenario
        manifest = {"format": FORMAT, "package": "escalation-sim",
                    "version": package_version(), "scenario": sc.name,
                    "source": sc.source, "scenario_hash": scenario_hash(sc),
                    "n_trials": int(plan.n_trials), "seed": int(plan.seed),
                    "chunk_size": int(chunk_size), "n_doses": sc.n_doses,
                    "designs": [it.name for it in plan.items], "engine": plan.engine,
                    "keep_trials": bool(plan.keep_trials),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        limits = [design_limits(it.design) for it in plan.items]
        if old is not None:
            diffs = [_describe_diff(k, old.get(k), manifest[k]) for k in _CHECKED
                     if old.get(k) != manifest[k]]
            if (extend and len(diffs) == 1 and old.get("n_trials") != manifest["n_trials"]
                    and isinstance(old.get("n_trials"), int)
                    and manifest["n_trials"] > old["n_trials"]):
                # more trials on the same run: trials n..m use their own counter-based
                # streams, independent of 0..n-1, so the finished chunks stay valid
                ext = dict(old)
                ext["n_trials"] = manifest["n_trials"]
                ext.pop("sha256", None)
                ck = cls(root, ext, limits)
                ck._extend_from = int(old["n_trials"])
                return ck
            if diffs:
                raise CheckpointError(
                    f"{root}: the checkpoint in this output folder belongs to a different run: "
                    + "; ".join(diffs) + f". Use another --out folder, or delete {root} to "
                    "start over")
            return cls(root, old, limits)
        if resume and root.exists() and any(root.glob("chunk-*.parquet")):
            raise CheckpointError(f"{root}: chunk files without a {MANIFEST}; "
                                  f"delete {root} to start over")
        return cls(root, manifest, limits, fresh=True)

    def create(self) -> "Checkpoint":
        """Write what :meth:`prepare` decided: a fresh manifest (earlier chunks deleted) or
        nothing but the removal of temporary files left by a killed run."""
        if self._created:
            return self
        if self._fresh:
            if self.root.exists():
                for p in self.root.iterdir():
                    if p.is_file() and (p.name == MANIFEST or p.name.endswith(".parquet")
                                        or ".tmp-" in p.name):
                        p.unlink()
            self.root.mkdir(parents=True, exist_ok=True)
            man = dict(self.manifest)
            man["sha256"] = hashlib.sha256(_canonical(man)).hexdigest()
            atomic_write_text(self.root / MANIFEST, json.dumps(man, indent=2))
            self.manifest = man
        elif self._extend_from is not None:
            self._extend()
        remove_temporaries(self.root)
        self._created = True
        return self

    def _extend(self) -> None:
        """Extend a run to more trials: the last chunk of the old grid, when it was cut short
        by the old ``n_trials``, is removed (recomputed on the new grid); the manifest is
        rewritten with the new ``n_trials``."""
        old_n = self._extend_from
        start = (old_n // self.chunk_size) * self.chunk_size
        if start < old_n:
            for p in self.paths(start, old_n):
                if p.exists():
                    p.unlink()
        man = dict(self.manifest)
        man["sha256"] = hashlib.sha256(_canonical(man)).hexdigest()
        atomic_write_text(self.root / MANIFEST, json.dumps(man, indent=2))
        self.manifest = man
        warnings.warn(RunNote(f"{self.root.parent}: extending the run from {old_n:,} to "
                              f"{self.n_trials:,} trials; trials {old_n:,}..{self.n_trials - 1:,}"
                              " are new (each trial's random numbers depend only on the seed "
                              "and its index, so the finished chunks are kept)"), stacklevel=2)

    def check_plan(self, plan) -> None:
        """Refuse a run whose settings differ from the checkpoint's."""
        now = {"n_trials": int(plan.n_trials), "seed": int(plan.seed),
               "designs": [it.name for it in plan.items], "engine": plan.engine,
               "keep_trials": bool(plan.keep_trials), "scenario_hash": scenario_hash(
                   plan.scenario)}
        if plan.chunk_size is not None:
            now["chunk_size"] = int(plan.chunk_size)
        diffs = [_describe_diff(k, self.manifest.get(k), v) for k, v in now.items()
                 if self.manifest.get(k) != v]
        if diffs:
            raise CheckpointError(f"{self.root}: this run does not match its checkpoint: "
                                  + "; ".join(diffs))
        if self.limits is None:
            self.limits = [design_limits(it.design) for it in plan.items]

    # -- chunks -------------------------------------------------------------------------------
    def paths(self, start: int, stop: int) -> Tuple[Path, Path]:
        """The tally file and the per-trial file of a chunk."""
        tag = f"{start:012d}-{stop:012d}"
        return self.root / f"chunk-{tag}.parquet", self.root / f"trials-{tag}.parquet"

    def _on_grid(self, start: int, stop: int) -> bool:
        return (start % self.chunk_size == 0 and 0 <= start < self.n_trials
                and stop == min(start + self.chunk_size, self.n_trials))

    def done_starts(self) -> Set[int]:
        """Starts of the chunks whose files are all on disk (not yet checked)."""
        out = set()
        if not self.root.exists():
            return out
        for p in self.root.iterdir():
            m = _CHUNK_RE.match(p.name)
            if not m:
                continue
            start, stop = int(m.group(1)), int(m.group(2))
            if not self._on_grid(start, stop):
                continue
            if self.per_trial and not self.paths(start, stop)[1].exists():
                continue
            out.add(start)
        return out

    def verified_starts(self) -> Set[int]:
        """Starts of the saved chunks that pass every integrity check (each is read once).

        A chunk that fails is reported (a :class:`RunNote` warning naming the file
        and the reason), set aside as ``damaged-<name>`` and left to be recomputed.
        """
        good = set()
        if not self.root.exists():
            return good
        for p in sorted(self.root.iterdir()):
            m = _CHUNK_RE.match(p.name)
            if not m:
                continue
            start, stop = int(m.group(1)), int(m.group(2))
            if not self._on_grid(start, stop):
                self._set_aside(ChunkDamaged(p, f"trials {start}..{stop} are not a chunk of "
                                                f"this run (chunk_size {self.chunk_size}, "
                                                f"n_trials {self.n_trials})"), start, stop)
                continue
            if self.per_trial and not self.paths(start, stop)[1].exists():
                continue  # killed between its two files: simply recomputed
            try:
                self.load(start)
            except ChunkDamaged as exc:
                self._set_aside(exc, start, stop)
                continue
            good.add(start)
        return good

    def _set_aside(self, exc: ChunkDamaged, start: int, stop: int) -> None:
        warnings.warn(RunNote(f"{exc.path}: damaged checkpoint chunk ({exc.reason}); "
                                     f"set aside as damaged-{exc.path.name}, trials "
                                     f"{start}..{stop - 1} are recomputed"), stacklevel=2)
        for p in {exc.path, *self.paths(start, stop)}:
            if p.exists():
                p.replace(p.with_name(f"damaged-{p.name}"))
        fsync_dir(self.root)

    def save(self, chunk) -> None:
        """Write one finished chunk (per-trial data first, then the tallies)."""
        if not self._on_grid(chunk.start, chunk.stop):
            raise CheckpointError(f"{self.root}: chunk {chunk.start}..{chunk.stop} is not on "
                                  f"this run's grid (chunk_size {self.chunk_size}, n_trials "
                                  f"{self.n_trials})")
        if len(chunk.tallies) != self.n_designs:
            raise CheckpointError(f"{self.root}: chunk has {len(chunk.tallies)} designs, the "
                                  f"checkpoint {self.n_designs}")
        tally_path, trial_path = self.paths(chunk.start, chunk.stop)
        if self.per_trial:
            _write_table(trial_path, per_trial_table(chunk, chunk.stop - chunk.start))
        meta = {"format": FORMAT, "version": package_version(), "seed": self.seed,
                "start": chunk.start, "stop": chunk.stop, "scenario_hash": self.scenario_hash,
                "n_designs": self.n_designs, "n_doses": self.n_doses,
                "pair_sums": _encode_pairs(chunk.pair_sums)}
        _write_table(tally_path, tally_table(chunk.tallies, meta))

    def load(self, start: int) -> ChunkResult:
        """The saved chunk starting at ``start``, after every integrity check (raises
        :class:`ChunkDamaged` naming the file that fails one)."""
        stop = min(start + self.chunk_size, self.n_trials)
        tally_path, trial_path = self.paths(start, stop)
        table, meta = _read_verified(tally_path)
        want = {"format": FORMAT, "seed": self.seed, "start": start, "stop": stop,
                "scenario_hash": self.scenario_hash, "n_designs": self.n_designs,
                "n_doses": self.n_doses}
        diff = {k: meta.get(k) for k, v in want.items() if meta.get(k) != v}
        if diff:
            raise ChunkDamaged(tally_path, f"belongs to a different run or range ({diff})")
        tallies = tallies_from_table(table, self.n_designs, self.n_doses, tally_path,
                                     n_trials=stop - start, limits=self.limits)
        try:
            pair_sums = _decode_pairs(meta["pair_sums"])
        except (KeyError, ValueError, TypeError, ZeroDivisionError) as exc:
            raise ChunkDamaged(tally_path, f"malformed paired sums ({exc})")
        bad_pairs = [p for p in pair_sums if not 0 <= p[0] < p[1] < self.n_designs]
        if bad_pairs:
            raise ChunkDamaged(tally_path, f"paired sums for designs {bad_pairs}")
        durations = stats = trials = None
        if self.per_trial:
            durations, stats, trials = read_per_trial(trial_path, self.n_designs, start, stop)
            if self.keep_trials and trials is None:
                raise ChunkDamaged(trial_path, "per-trial rows missing")
            if trials is not None:
                for i, t in enumerate(trials):
                    try:
                        counts = _recount(t, self.n_doses)
                    except KeyError as exc:
                        raise ChunkDamaged(trial_path, f"design {i}: column {exc} missing")
                    if counts != tallies[i].counts:
                        raise ChunkDamaged(trial_path, f"design {i}: per-trial rows do not "
                                                       f"add up to the chunk's tallies")
        return ChunkResult(start, stop, tallies, pair_sums, durations, stats, trials)


def _describe_diff(key: str, old, new) -> str:
    if key == "version":
        return f"it was written by escalation-sim {old}, this is {new}"
    if key == "scenario_hash":
        return "the scenario changed (resolved hash " + f"{str(old)[:12]} -> {str(new)[:12]})"
    if key == "format":
        return f"checkpoint format {old} -> {new}"
    return f"{key} was {json.dumps(old)}, now {json.dumps(new)}"


