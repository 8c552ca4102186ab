"""A worker's own folder, and the folders that killed workers left behind.

A worker keeps its attempts' files (logs, checkpoints not yet uploaded) in a fresh folder that it
removes when it ends. One killed outright cannot, so each folder names its owner (host and pid) in a
file, and a worker starting in the same place removes the folders whose owner on this host is dead.
A folder whose owner cannot be told (no such file, another host's) is left alone.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

PREFIX = "rung-worker-"
OWNER = "owner"


def make_folder(parent: str | os.PathLike | None = None) -> Path:
    """A fresh folder inside `parent` (default: the temporary folder, $TMPDIR), once the folders of
    dead workers there are removed."""
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    clear_abandoned(parent)
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    (folder / OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    return folder


def clear_abandoned(parent: Path) -> list[Path]:
    """Remove the worker folders in `parent` whose owner on this host is dead; return them."""
    removed = []
    host = socket.gethostname()
    for folder in parent.glob(PREFIX + "*"):
        try:
            owner, pid = (folder / OWNER).read_text().split()
            if owner != host or _alive(int(pid)):
                continue
        except (OSError, ValueError):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process holds the pid
    return True
