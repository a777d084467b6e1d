"""One run at a time per output folder.

A run that writes into a folder (``run --out``, ``study --out``) first takes the folder's lock,
``DIR/.escalation-sim.lock``: an exclusive ``flock`` on that file, which the kernel releases
when the process ends however it ends, plus the holder's pid, host, start time and command
written inside for messages.  A second run on the folder is refused before it writes
anything, with a message naming the holder.  A lock file left by a process that is gone (a
``kill -9``, a crash) is taken over with a note.  Where ``flock`` is not available the
recorded pid decides: a live process on this host, or any process on another host, holds the
folder; a dead pid on this host is a stale lock.
"""
from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Union

from . import RunNote

LOCK_NAME = ".escalation-sim.lock"

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class OutputFolderError(Exception):
    """The output folder cannot be used: not a folder, not writable, or in use."""


class FolderInUse(OutputFolderError):
    def __init__(self, message: str, holder: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.holder = holder or {}


def check_output_folder(path: Union[str, Path], option: str = "--out") -> Path:
    """Raise :class:`OutputFolderError` unless ``path`` is, or can be created as, a writable
    folder.  Checked before any work starts."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputFolderError(f"{option} {p}: exists and is not a folder")
    anc = p
    while not anc.exists():
        if anc.parent == anc:  # pragma: no cover
            break
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise OutputFolderError(f"{option} {p}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputFolderError(f"{option} {p}: cannot write in {anc} (permission denied or "
                                "read-only file system)")
    return p


def check_output_file(path: Union[str, Path], option: str = "-o") -> Path:
    """Raise :class:`OutputFolderError` unless a file can be written at ``path``."""
    p = Path(path)
    if p.is_dir():
        raise OutputFolderError(f"{option} {p}: is a folder; give a file name")
    check_output_folder(p.parent, option=f"{option} {p}:")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputFolderError(f"{option} {p}: not writable")
    return p


def _proc_start(pid: int) -> Optional[str]:
    """The start time of process ``pid`` (clock ticks since boot, from /proc) - tells a
    reused pid from the original; None where /proc is not available."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
        return data.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:  # pragma: no cover
        return True
    now = _proc_start(pid)
    return not (start and now and now != start)


def _describe(holder: Dict[str, Any]) -> str:
    cmd = holder.get("command")
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since "
            f"{holder.get('started', '?')}" + (f" ({cmd})" if cmd else ""))


class FolderLock:
    """The lock of an output folder, as a context manager::

        with FolderLock(out, command="escalation-sim study ..."):
            ...  # the only run writing into ``out``
    """

    def __init__(self, folder: Union[str, Path], command: Optional[str] = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command
        self._fd: Optional[int] = None
        self._info: Optional[Dict[str, Any]] = None

    def _read(self) -> Optional[Dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def acquire(self) -> "FolderLock":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputFolderError(f"--out {self.folder}: cannot create the folder "
                                    f"({exc.strerror or exc})") from None
        host = socket.gethostname()
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputFolderError(f"--out {self.folder}: cannot write there "
                                        f"({exc.strerror or exc})") from None
            held_by_flock = False
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held_by_flock = True
                except BlockingIOError:
                    os.close(fd)
                    holder = self._read() or {}
                    raise FolderInUse(self._busy(holder), holder) from None
                except OSError:  # no flock on this file system: decide by the pid
                    pass
                if held_by_flock:
                    try:  # the file may have been removed by its holder meanwhile
                        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                    except FileNotFoundError:
                        same = False
                    if not same:
                        os.close(fd)
                        continue
            old = self._read()
            if old and not held_by_flock:
                mine = old.get("pid") == os.getpid() and old.get("host") == host
                if not mine and (old.get("host") != host or
                                 _alive(int(old.get("pid", -1)), old.get("proc_start"))):
                    os.close(fd)
                    raise FolderInUse(self._busy(old), old)
            if old and old.get("pid") != os.getpid():
                warnings.warn(RunNote(f"{self.folder}: took over the lock left by "
                                      f"{_describe(old)}, which is no longer running"),
                              stacklevel=3)
            info = {"pid": os.getpid(), "host": host, "proc_start": _proc_start(os.getpid()),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": self.command}
            data = (json.dumps(info) + "\n").encode("utf-8")
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, data)
            os.fsync(fd)
            self._fd, self._info = fd, info
            return self
        raise OutputFolderError(f"{self.path}: could not take the lock")  # pragma: no cover

    def _busy(self, holder: Dict[str, Any]) -> str:
        who = _describe(holder) if holder else "another process (its lock file is unreadable)"
        return (f"--out {self.folder}: in use by another escalation-sim run ({who}); wait for "
                f"it to finish or use another folder (lock file {self.path})")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if self._read() == self._info:
                self.path.unlink()
        except OSError:  # pragma: no cover
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
