"""Which attempt a worker runs, without I/O: one at a time, only the one its broker expects, and only
while the broker can be heard. Runs, stops, welcomes and silences in; what to do with the attempt out,
as (action, run) pairs that `Worker` (agent.py) carries out. tests/test_slots.py drives slots of
several workers, the real algorithm and the broker's rules through partitions, freezes, lost
messages and restarts, and checks that no two attempts of one trial ever train at once.

The rules:

1. A run for a free worker starts (START). A run that comes while another attempt is current means
   the broker no longer expects that one (it hands work only to a worker it thinks free): the
   current attempt is stopped (STOP) and the run waits (it is held, so a hello names it) until the
   current one has ended; then it starts. A newer run replaces a waiting one.
2. A stop for the current attempt stops it, once; a stop for the waiting run drops it (DROP: it
   never started, and says so).
3. The lease: an attempt trains only while the broker can be heard. After half the liveness window
   without a word from it, the current attempt is paused (PAUSE), and a hello asks whether it is
   still this worker's; the welcome names what the broker expects: named, it resumes (RESUME),
   else it is stopped. The broker retries a lost worker's attempt only after the whole window, so
   a paused attempt never trains beside its retry. A frozen worker cannot pause anything: its
   attempt stops itself (worker/child.py's fence), and the worker, awake, takes it as paused.
4. A worker that leaves stops its attempt and forgets a waiting run: its goodbye hands both back.
"""

from __future__ import annotations

import enum
from typing import Any


class Act(enum.Enum):
    START = "start the run"
    STOP = "stop the attempt (SIGTERM, SIGKILL after the grace)"
    PAUSE = "pause the attempt (SIGSTOP) and say hello"
    RESUME = "resume the attempt (SIGCONT)"
    DROP = "end the waiting run as stopped before it started"


def key(run: Any) -> tuple[int, int]:
    return (run.trial, run.attempt)


class Slot:
    def __init__(self):
        self.current: Any = None  # the run being fetched or trained
        self.pending: Any = None  # a run waiting for the current attempt to end
        self.paused = False
        self.stopping = False

    def run(self, run: Any) -> list[tuple[Act, Any]]:
        if self.current is None:
            self.current = run
            return [(Act.START, run)]
        if key(self.current) == key(run):
            return []
        self.pending = run
        return self._stop_current()

    def stop(self, trial: int, attempt: int) -> list[tuple[Act, Any]]:
        if self.pending is not None and key(self.pending) == (trial, attempt):
            run, self.pending = self.pending, None
            return [(Act.DROP, run)]
        if self.current is not None and key(self.current) == (trial, attempt):
            return self._stop_current()
        return []

    def ended(self) -> list[tuple[Act, Any]]:
        """The current attempt has ended: the waiting run, if any, starts."""
        self.current, self.stopping, self.paused = None, False, False
        if self.pending is None:
            return []
        run, self.pending = self.pending, None
        return self.run(run)

    def silent(self, seconds: float, liveness: float) -> list[tuple[Act, Any]]:
        """Nothing heard from the broker for `seconds` (rule 3)."""
        return self.fenced() if seconds > liveness / 2 else []

    def fenced(self) -> list[tuple[Act, Any]]:
        """The attempt is held still (the lease ran out, or it stopped itself while this worker was
        frozen): paused, until a welcome says whether it is still this worker's (rule 3)."""
        if self.current is None or self.paused or self.stopping:
            return []
        self.paused = True
        return [(Act.PAUSE, self.current)]

    def welcome(self, expected: list) -> list[tuple[Act, Any]]:
        """The broker's welcome names the attempts it expects of this worker (rule 3)."""
        if not self.paused:
            return []
        if list(key(self.current)) in expected:
            self.paused = False
            return [(Act.RESUME, self.current)]
        return self._stop_current()

    def leave(self) -> list[tuple[Act, Any]]:
        self.pending = None
        return self._stop_current() if self.current is not None else []

    def held(self) -> list[tuple[int, int]]:
        """The attempts a hello or a heartbeat names as held, besides those with messages waiting."""
        return [key(run) for run in (self.current, self.pending) if run is not None]

    def _stop_current(self) -> list[tuple[Act, Any]]:
        if self.stopping:
            return []
        self.stopping, self.paused = True, False
        return [(Act.STOP, self.current)]
