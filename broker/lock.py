"""One broker per study directory.

`StudyLock` takes an exclusive, non-blocking `flock` on `<directory>/lock` and writes its pid there
for the message a second broker gets. An flock belongs to the open file description, so the kernel
drops it when the holder dies, however it dies, and a stale pid left in the file means nothing. The
file is never deleted: a broker that unlinked it could race a newcomer into locking two different
files. The descriptor is not inherited across exec, so trial processes never hold a study's lock;
a child forked without exec would share it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class LockHeld(Exception):
    """Another process holds the study directory."""


class StudyLock:
    """An exclusive lock on a study directory, taken on construction. Also a context manager."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / "lock"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise LockHeld(f"another broker holds {self.directory}"
                           + (f" (pid {holder})" if holder is not None else "")) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "StudyLock":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def broker_running(directory: str | os.PathLike) -> bool:
    """Whether a broker holds the study directory now; read-only (a shared lock, tried and let go)."""
    try:
        fd = os.open(Path(directory) / "lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing lets go of a lock this took
    return False


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
