"""An attempt's processes, wherever they went: found by a token in their environment, killed, waited
for and reaped.

Theory of operation. The SIGKILL to an attempt's process group at its end misses a process that left
the group: a daemon forks twice and calls setsid, `setsid cmd &` in a script does the same, and such
a process can keep a GPU busy long after its trial is over. What a process does not shed with its
group is its environment: every attempt's processes start with `TOKEN` set to a value of the
attempt's own, which whatever they spawn inherits, in any session. So when an attempt ends, `sweep`
kills every process whose environment (/proc/PID/environ) holds the token, and every descendant of
those (which may have cleared its environment), waits until they are dead, and looks again, until a
look finds none. Not found: a process that dropped the token (a cleared environment, or one written
over as setproctitle does) after every ancestor that holds it has gone; only a cgroup holds those.

A dead process stays a zombie until its parent reaps it. An escaped process's parent is usually gone,
so it is adopted by its nearest ancestor that is a child subreaper, or else by init, and some inits
(a container's first process, say) never reap. So a worker makes itself a subreaper
(`become_subreaper`): the attempt's orphans become its children, `sweep` reaps those it kills, and
`reap_orphans` those that died by themselves.

Linux only: elsewhere (no /proc, no prctl) nothing is found, and `become_subreaper` says so.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Collection, Iterable

TOKEN = "RUNG_ATTEMPT_TOKEN"

_PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>
_LONGEST_PAUSE = 0.02  # seconds between two looks at processes that are dying


def new_token() -> str:
    """A value for `TOKEN` that no other attempt's processes hold."""
    return os.urandom(16).hex()


def become_subreaper() -> str | None:
    """Make this process adopt the orphans of its descendants (Linux's PR_SET_CHILD_SUBREAPER, for
    the rest of its life; its children do not inherit it). None once done, else why it cannot be
    done and what that means, for the caller to say once."""
    if not os.path.isdir("/proc/self"):
        return "no /proc: processes that leave an attempt's process group are not found, nor killed"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
            return None
        why = os.strerror(ctypes.get_errno())
    except (OSError, AttributeError) as error:
        why = str(error)
    return (f"cannot become a child subreaper ({why}): processes that leave an attempt's process "
            "group are killed, but may stay zombies")


def kill(token: str, leader: int) -> dict[int, int]:
    """SIGKILL every process whose environment holds `token`, and their descendants, except `leader`
    (the attempt's child, which its own Popen reaps) and this process; {pid: process group} of those
    signalled. Never blocks."""
    entry = f"{TOKEN}={token}".encode()
    found = [pid for pid in _pids() if _holds(pid, entry)]
    if not found:
        return {}  # as at most attempts' ends: no need to read every process's parent
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (_, parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    seen = {os.getpid()}
    while found:
        pid = found.pop()
        if pid not in seen:
            seen.add(pid)
            found += children.get(pid, [])
    victims = {pid: table[pid][2] for pid in seen - {leader, os.getpid()} if pid in table}
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return victims


def sweep(token: str, leader: int, timeout: float, killed: Iterable[int] = ()) -> set[int]:
    """Kill as `kill` does and wait for the dead, reaping those this process adopted, until a look
    finds none left (one that was forked while the last look was taken is found by the next), or
    for `timeout` seconds; `killed` are pids killed earlier, to wait for too. The pids still alive
    at the timeout (a process in uninterruptible sleep dies only when it wakes)."""
    give_up = time.monotonic() + timeout
    alive = set(killed)
    while True:
        found = kill(token, leader)
        alive = _bury(alive | found.keys(), give_up)
        if not found or alive or time.monotonic() >= give_up:
            return alive


def reap_orphans(keep: Collection[int]) -> list[int]:
    """Reap every child of this process that is a zombie, except `keep`; the pids reaped. For a
    process that knows each of its own children (a worker: its attempt's and its spare interpreter),
    and has adopted the rest: elsewhere this could take a child's exit status from its Popen."""
    me = os.getpid()
    reaped = []
    for pid, (state, parent, _) in _processes().items():
        if parent == me and state == "Z" and pid not in keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            reaped.append(pid)
    return reaped


def _bury(pids: set[int], give_up: float) -> set[int]:
    """Wait until each of `pids` is dead, up to `give_up`; the pids still alive then."""
    me = os.getpid()
    pause = 0.001
    while True:
        dying = set()
        for pid in pids:
            stat = _stat(pid)
            if stat is None:
                continue
            state, parent, _ = stat
            if state not in "ZX" or parent in pids:
                dying.add(pid)  # a zombie whose parent is dying comes to us (or init) next
            elif parent == me:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        pids = dying
        now = time.monotonic()
        if not pids or now >= give_up:
            return pids
        time.sleep(min(pause, give_up - now))
        pause = min(2 * pause, _LONGEST_PAUSE)


def _processes() -> dict[int, tuple[str, int, int]]:
    """Every process: {pid: (state, parent, process group)}."""
    return {pid: stat for pid in _pids() if (stat := _stat(pid)) is not None}


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent, process group) of `pid`, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces and parentheses: fields follow the last ")".
    state, parent, group = text.rpartition(b")")[2].split()[:3]
    return state.decode(), int(parent), int(group)


def _holds(pid: int, entry: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return entry in handle.read().split(b"\0")
    except OSError:  # gone, a zombie, or another user's
        return False
