"""Trial logs in the study directory: what each attempt printed, as its worker shipped it.

Layout: `logs/trial-<T>/attempt-<A>.log` holds the first LOG_HEAD bytes of an attempt's output (its
stdout and stderr, in the order its log file got them); an attempt that printed more also leaves
`attempt-<A>.from-<OFFSET>.log`, its last LOG_TAIL bytes, which started at byte OFFSET of its output.
A chatty trial so costs the head node at most LOG_HEAD + LOG_TAIL bytes an attempt, and the lines
that explain a failure (the end) are kept with those that explain the set-up (the start).

Writes are idempotent: a chunk lands at its own offset (a copy resent after a reconnect rewrites the
same bytes), and a tail replaces any earlier tail of its attempt. Nothing here is journaled: a log is
for people, and the study's state never depends on it. Reading (`read`, `attempts`) takes no lock and
works while the broker writes, as `rung logs` does.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rung.protocol.messages import LOG_HEAD

_TAIL = re.compile(r"attempt-(\d+)\.from-(\d+)\.log")
_HEAD = re.compile(r"attempt-(\d+)\.log")


def folder(directory: str | os.PathLike, trial: int) -> Path:
    return Path(directory) / "logs" / f"trial-{trial}"


def write(directory: str | os.PathLike, trial: int, attempt: int, offset: int, data: bytes) -> None:
    """Store bytes `offset`.. of the attempt's output (see the module's docstring); OSError if the
    disk will not take them."""
    where = folder(directory, trial)
    where.mkdir(parents=True, exist_ok=True)
    if offset < LOG_HEAD:
        fd = os.open(where / f"attempt-{attempt}.log", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.pwrite(fd, data[:LOG_HEAD - offset], offset)
        finally:
            os.close(fd)
        return
    for old in _tails(where, attempt):
        old.unlink(missing_ok=True)
    (where / f"attempt-{attempt}.from-{offset}.log").write_bytes(data)


def attempts(directory: str | os.PathLike, trial: int) -> list[int]:
    """The attempts of `trial` that left a log, in order."""
    where = folder(directory, trial)
    if not where.is_dir():
        return []
    found = {int(match.group(1)) for name in os.listdir(where) if (match := _HEAD.fullmatch(name))}
    return sorted(found)


def read(directory: str | os.PathLike, trial: int, attempt: int) -> bytes:
    """The attempt's log as kept: its head, and where bytes were left out a line saying how many,
    then its tail. b"" if it left none."""
    where = folder(directory, trial)
    try:
        head = (where / f"attempt-{attempt}.log").read_bytes()
    except FileNotFoundError:
        return b""
    for tail in _tails(where, attempt):
        start = int(_TAIL.fullmatch(tail.name).group(2))
        try:
            data = tail.read_bytes()
        except FileNotFoundError:  # replaced by a newer tail while this read
            continue
        gap = f"\n[rung: bytes {len(head)} to {start} of this log were left out]\n".encode()
        return head + gap + data
    return head


def _tails(where: Path, attempt: int) -> list[Path]:
    try:
        names = os.listdir(where)
    except FileNotFoundError:
        return []
    return [where / name for name in names
            if (match := _TAIL.fullmatch(name)) and int(match.group(1)) == attempt]
