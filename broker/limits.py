"""The broker's limit on open files: raised as far as it may go, and how many workers it leaves room for.

A worker's connection costs the broker one file descriptor: measured with libzmq 4.3.5, 100 and 300
DEALER sockets connecting over TCP added exactly 100 and 300 descriptors to the ROUTER's process
(ZeroMQ's I/O thread polls them all through one epoll descriptor). Past the limit, connections are
accepted by the kernel but never by ZeroMQ: those workers wait without a word, and anything else the
broker opens (a checkpoint, the checkpoint folder to collect it) fails with EMFILE.
"""

from __future__ import annotations

import resource

FDS_PER_WORKER = 1
# Descriptors the broker needs besides its workers: stdio, the journal, the lock, ZeroMQ's context
# and bound ROUTER (7 measured), the CurveZMQ authenticator's, up to 64 uploads in progress
# (checkpoints.DEFAULT_MAX_UPLOADS), a checkpoint being read, a folder being fsynced or scanned, and
# some for a host program that embeds the broker.
RESERVED_FDS = 128
CROWDED = 0.8  # the share of the room for workers past which the broker warns


def raise_open_files_limit() -> tuple[int, int] | None:
    """Raise the soft limit on open files to the hard limit; (old, new) if it changed, else None."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return None  # an infinite hard limit names no number that every kernel takes
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return None
    return soft, hard


def open_files_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft


def workers_room(limit: int) -> int:
    """How many workers a limit of `limit` open files leaves room for."""
    return max(0, (limit - RESERVED_FDS) // FDS_PER_WORKER)


def crowded(workers: int, limit: int) -> bool:
    """Whether `workers` connections come near what the limit on open files leaves room for."""
    return workers > CROWDED * workers_room(limit)
