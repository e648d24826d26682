"""The run directory (``--out``): one run at a time, checked before any work, no stale leftovers.

`RunDirectory.open(path)` creates the directory, takes its lock and removes the temporary files
an earlier run left when it was killed while writing. The lock is the file ``run.lock``, held
with ``flock`` for the run's life: the kernel drops it when the process ends however it ends
(even kill -9), so a lock file whose lock nobody holds is stale and is taken over, with a note.
The file records who holds it (pid, host, start time, command), which the refusal names.
Creating it is also the check that the directory can be written at all.

`writing(path)` turns an OSError of a write (a full disk, a directory removed under the run)
into `WriteFailed`, which the loop reports as a clear error, keeping the last good files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # (not on Windows: there the lock is only the pid check below)
    fcntl = None

__all__ = ["LOCK", "TrainingError", "WriteFailed", "RunDirectory", "writing"]

LOCK = "run.lock"


class TrainingError(RuntimeError):
    """A run cannot start: an existing checkpoint in the way, nothing to resume, no GPU…"""


class WriteFailed(Exception):
    """A file of the run could not be written (disk full, permissions, directory gone)."""


@contextlib.contextmanager
def writing(path):
    """Within the block, an OSError becomes `WriteFailed` naming ``path`` and the reason."""
    try:
        yield
    except OSError as error:
        reason = error.strerror or str(error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            reason += ": the disk is full"
        raise WriteFailed(f"could not write {path} ({reason})") from error


def _holder_text(info: dict) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return (f"process {info.get('pid', '?')} on {info.get('host', '?')}, started {when}: "
            f"{info.get('command') or '?'}")


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RunDirectory:
    """A run directory whose lock this process holds; `close` releases it."""

    def __init__(self, path: Path, fd: int, created: bool, notes: list[str]):
        self.path, self.fd, self.created, self.notes = path, fd, created, notes

    @classmethod
    def open(cls, path, owned_names=()) -> RunDirectory:
        """Create ``path`` if needed, lock it, and delete stale temporary files of ``owned_names``
        (``NAME.*.tmp`` and ``.NAME.*.tmp``, the two patterns of the atomic writers). Raises
        `TrainingError` naming the problem: another run holds it, it cannot be created or written."""
        path = Path(path)
        try:
            if path.exists() and not path.is_dir():
                raise TrainingError(f"--out {path} is a file, not a directory")
            created = not path.exists()
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a file on the way, a name too long, no permission, a read-only disk
            raise TrainingError(f"cannot create the run directory {path} ({error.strerror or error})") from error
        try:
            fd, notes = cls._lock(path / LOCK)
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise
        run_dir = cls(path, fd, created, notes)
        run_dir._remove_stale_temporaries(owned_names)
        return run_dir

    @staticmethod
    def _lock(lock_path: Path) -> tuple[int, list[str]]:
        while True:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise TrainingError(f"cannot write in the run directory {lock_path.parent} "
                                    f"({error.strerror or error})") from error
            try:
                previous = _read_info(fd)
                if not _try_flock(fd, previous):
                    raise TrainingError(f"{lock_path.parent} is in use by another run ({_holder_text(previous)}); "
                                        "wait for it to end, stop it, or choose another --out")
                # A holder releasing the lock unlinks the file: make sure ours is still the one there.
                if os.fstat(fd).st_ino != os.stat(lock_path).st_ino:
                    os.close(fd)
                    continue
                notes = []
                if previous:
                    notes.append(f"took over a stale lock {lock_path} of {_holder_text(previous)}, which is no "
                                 "longer running")
                _write_info(fd, lock_path)
                return fd, notes
            except FileNotFoundError:  # unlinked between open and stat: try again
                os.close(fd)
            except BaseException:
                os.close(fd)
                raise

    def _remove_stale_temporaries(self, owned_names):
        """No other minirec run writes here (we hold the lock): every temporary file of ours is
        a leftover of a process killed while writing."""
        removed, size = [], 0
        for name in owned_names:
            for pattern in (f"{name}.*.tmp", f".{name}.*.tmp"):
                for stale in self.path.glob(pattern):
                    with contextlib.suppress(OSError):
                        size += stale.stat().st_size
                        stale.unlink()
                        removed.append(stale.name)
        if removed:
            self.notes.append(f"removed {len(removed)} temporary file(s) ({size / 1e6:.1f} MB) left by an "
                              f"interrupted write: {', '.join(sorted(removed))}")

    def close(self):
        """Release the lock and remove its file; remove the directory too if this run created it
        and left nothing in it (a run that could not start)."""
        if self.fd is None:
            return
        lock_path = self.path / LOCK
        with contextlib.suppress(OSError):
            if os.fstat(self.fd).st_ino == os.stat(lock_path).st_ino:
                lock_path.unlink()
        os.close(self.fd)
        self.fd = None
        if self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only succeeds when empty


def _try_flock(fd: int, previous: dict) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError:  # a file system without flock (some network mounts): fall back to the pid
            pass
    same_host = previous.get("host") == socket.gethostname()
    return not (previous and same_host and previous.get("pid") != os.getpid() and _pid_alive(previous.get("pid")))


def _read_info(fd: int) -> dict:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 65536).decode("utf-8", "replace")
        info = json.loads(text) if text.strip() else {}
        return info if isinstance(info, dict) else {}
    return {}


def _write_info(fd: int, lock_path: Path):
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": " ".join(sys.argv)}
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(info) + "\n").encode())
    except OSError as error:
        raise TrainingError(f"cannot write in the run directory {lock_path.parent} ({error.strerror or error})") \
            from error
