"""How rung's processes end when a scheduler or a user asks: SIGTERM (Slurm's scancel, Kubernetes,
systemd) and SIGINT (Ctrl-C) are a graceful shutdown, never a silent death that leaves processes
behind.

- `rung run` and `rung broker` turn either signal into `Interrupted`, raised in the main thread
  where it waits for the study; their cleanup (workers told to leave, the journal committed) runs
  in `finally` blocks on the way out.
- `rung worker` turns it into `Worker.leave`: the worker's loop finishes what it is doing, stops its
  attempt, delivers its messages and says goodbye (see worker/agent.py).
- Processes that rung starts for itself (local workers, the workers of `--gpus all`) run in a
  session of their own, so that a Ctrl-C in the terminal reaches them once, through their parent,
  not twice; and they end when that parent dies, even by SIGKILL, because the parent hands them
  its pid in RUNG_PARENT_PID and they ask the kernel for SIGTERM at its death (Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
from collections.abc import Callable, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)
PARENT = "RUNG_PARENT_PID"
_PR_SET_PDEATHSIG = 1


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived; a BaseException like KeyboardInterrupt, so that no `except
    Exception` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def on_signals(action: Callable[[int], None]) -> Iterator[None]:
    """Run `action(signum)` on SIGTERM and SIGINT while inside; the old handlers after."""
    previous = {signum: signal.signal(signum, lambda signum, _: action(signum)) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def interrupt(signum: int) -> None:
    """An `on_signals` action: raise `Interrupted` where the main thread is."""
    raise Interrupted(signum)


def cleanup(action: Callable[[int], None] = lambda signum: None):
    """While inside, SIGTERM and SIGINT run `action` (by default nothing) instead of interrupting:
    for the clean-up a first signal started (workers leaving, the journal's last commit), which a
    second Ctrl-C may hurry but must not cut short. Outside the main thread, where no handler can be
    set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()
    return on_signals(action)


def child_environment(env: dict[str, str]) -> dict[str, str]:
    """`env` for a process that must end with this one (see `end_with_parent`)."""
    return {**env, PARENT: str(os.getpid())}


def end_with_parent() -> None:
    """In a process started with `child_environment`: receive SIGTERM when the parent dies."""
    parent = os.environ.pop(PARENT, None)
    if parent is not None and parent.isdigit():
        die_with(int(parent), signal.SIGTERM)


def die_with(parent: int, signum: int) -> None:
    """Receive `signum` when the process `parent` (this one's parent) dies, however it dies; at once
    if it is gone already. Linux only: elsewhere the parent's own clean-up must do."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signum)
