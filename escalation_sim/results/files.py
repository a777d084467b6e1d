"""Output files that are never half-written: atomic writes and a checksum manifest.

Every final output is written to a temporary file in its own folder, flushed and fsynced,
then renamed over the old file (``os.replace`` is atomic on POSIX), and the folder is
fsynced so the rename survives a crash.  A reader therefore sees either the old file or the
new one, never a truncated mix.

An output folder's files belong together, so the last file a run writes is ``manifest.json``
naming every file with its size and SHA-256.  The old manifest is removed before the first
new file is written: a folder with a manifest holds exactly the files it names, as one run
wrote them (check with :func:`verify_manifest`); a folder without one was left by a run that
did not finish writing.

Test hook: ``ESCALATION_SIM_TEST_DIE_BEFORE_RENAME=<file name>`` makes the process kill
itself (SIGKILL) after the temporary file of that output is written and fsynced, just before
the rename - the worst moment for a crash (tests/test_faults.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, IO, Iterable, List, Optional, Union

MANIFEST = "manifest.json"
#: CSV numbers: 12 significant digits, no float noise (results.display.CSV_FLOAT_FORMAT)
CSV_FLOAT_FORMAT = "%.12g"
MANIFEST_FORMAT = 1
_TMP_TAG = ".tmp-"
_DIE_ENV = "ESCALATION_SIM_TEST_DIE_BEFORE_RENAME"


def temp_name(path: Path) -> Path:
    """A fresh temporary name next to ``path`` (hidden, marked ``.tmp-``)."""
    return path.with_name(f".{path.name}{_TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_dir(folder: Path) -> None:
    """Make renames and unlinks in ``folder`` durable (no-op where directories cannot be
    opened, e.g. on Windows)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write(path: Union[str, Path], write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file in the same folder,
    which is fsynced and renamed over ``path``.  On any error the temporary file is removed
    and ``path`` is left as it was."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if os.environ.get(_DIE_ENV) == path.name:  # test hook: crash at the worst moment
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(tmp, path)
    except OSError as exc:  # e.g. a full disk: name the file meant, not the temporary one
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Union[str, Path], block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(block), b""):
            h.update(b)
    return h.hexdigest()


def remove_temporaries(folder: Union[str, Path]) -> List[Path]:
    """Delete the temporary files a killed writer left in ``folder``."""
    gone = []
    folder = Path(folder)
    if not folder.is_dir():
        return gone
    for p in folder.glob(f".*{_TMP_TAG}*"):
        try:
            p.unlink()
            gone.append(p)
        except OSError:  # pragma: no cover
            pass
    return gone


def read_manifest(folder: Union[str, Path]) -> Optional[dict]:
    p = Path(folder) / MANIFEST
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def verify_manifest(folder: Union[str, Path]) -> List[str]:
    """Problems with an output folder (empty list: every file the manifest names is present
    with its recorded size and SHA-256)."""
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        return [f"{folder}: no {MANIFEST}: the run that wrote this folder did not finish"]
    man = read_manifest(folder)
    if not isinstance(man, dict) or not isinstance(man.get("files"), dict):
        return [f"{folder / MANIFEST}: unreadable manifest"]
    problems = []
    for name, entry in man["files"].items():
        p = folder / name
        if not p.is_file():
            problems.append(f"{p}: missing")
            continue
        if p.stat().st_size != entry.get("bytes"):
            problems.append(f"{p}: {p.stat().st_size} bytes, manifest says {entry.get('bytes')}")
        elif sha256_file(p) != entry.get("sha256"):
            problems.append(f"{p}: SHA-256 differs from the manifest")
    return problems


class OutputSet:
    """The final outputs of one run in one folder, committed by a manifest written last.

    ``start()`` removes the folder's old manifest (remembering which files it named), the
    ``write_*`` methods write files atomically and record them, ``commit()`` deletes files
    the old manifest named that this run did not rewrite and writes the new manifest.
    """

    def __init__(self, folder: Union[str, Path]):
        self.folder = Path(folder)
        self.files: List[str] = []
        self._old: List[str] = []
        self._started = False

    def start(self) -> "OutputSet":
        if self._started:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_temporaries(self.folder)
        old = read_manifest(self.folder)
        if isinstance(old, dict) and isinstance(old.get("files"), dict):
            self._old = [n for n in old["files"] if "/" not in n and n != MANIFEST]
        m = self.folder / MANIFEST
        if m.exists():
            m.unlink()
            fsync_dir(self.folder)
        self._started = True
        return self

    def path(self, name: str) -> Path:
        return self.folder / name

    def add(self, path: Union[str, Path]) -> Path:
        """Record a file already written (atomically) inside the folder."""
        path = Path(path)
        name = path.relative_to(self.folder).as_posix()
        if name not in self.files:
            self.files.append(name)
        return path

    def write(self, name: str, write: Callable[[IO[bytes]], None]) -> Path:
        self.start()
        return self.add(atomic_write(self.path(name), write))

    def write_text(self, name: str, text: str) -> Path:
        return self.write(name, lambda f: f.write(text.encode("utf-8")))

    def write_frame(self, df, stem: str, formats: Iterable[str] = ("csv", "parquet")) -> List[Path]:
        """A DataFrame as ``stem.csv`` and (when pyarrow is installed) ``stem.parquet``."""
        out = []
        formats = tuple(formats)
        if "csv" in formats:
            out.append(self.write(f"{stem}.csv",
                                  lambda f: f.write(df.to_csv(
                                      index=False, float_format=CSV_FLOAT_FORMAT)
                                      .encode("utf-8"))))
        if "parquet" in formats:
            try:
                import pyarrow  # noqa: F401
            except ImportError:  # pragma: no cover
                return out
            out.append(self.write(f"{stem}.parquet", lambda f: df.to_parquet(
                f, index=False, write_page_checksum=True)))
        return out

    def commit(self, meta: Optional[Dict] = None) -> Path:
        """Write ``manifest.json`` (the last file): every recorded file, its size and SHA-256,
        as they are on disk now."""
        self.start()
        for name in self._old:
            if name not in self.files and (self.folder / name).is_file():
                (self.folder / name).unlink()
        entries = {}
        for name in self.files:
            p = self.folder / name
            entries[name] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        doc = {"format": MANIFEST_FORMAT, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "files": entries}
        if meta:
            doc.update({k: v for k, v in meta.items() if k not in doc})
        return atomic_write_text(self.folder / MANIFEST, json.dumps(doc, indent=2) + "\n")
