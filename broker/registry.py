"""The broker's view of connected workers: routing ids and liveness.

Every method takes `now` from the broker's monotonic clock, the only clock that decides liveness, so
the registry is tested without sleeping. A worker is named by its own id and incarnation from the
payload; its ZeroMQ routing id is only where to send, and changes on every reconnect.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Entry:
    worker: str
    incarnation: int
    route: bytes | None  # None: known from the journal, not heard from since the broker started
    last_seen: float
    accelerator: str = ""
    host: str = ""
    pid: int = 0
    sent: dict[tuple[int, int], float] = field(default_factory=dict)  # (trial, attempt) -> Run sent
    stopped: set[tuple[int, int]] = field(default_factory=set)  # attempts told to stop on this connection


class Registry:
    def __init__(self, liveness: float):
        if not liveness > 0:
            raise ValueError(f"`liveness` is {liveness!r}, but must be > 0")
        self.liveness = liveness
        self.entries: dict[str, Entry] = {}

    def expect(self, worker: str, now: float) -> None:
        """A worker the journal says was connected: it has one liveness window to say hello."""
        self.entries[worker] = Entry(worker, -1, None, now)

    def hello(self, worker: str, incarnation: int, route: bytes, now: float, accelerator: str = "",
              host: str = "", pid: int = 0) -> Entry:
        entry = Entry(worker, incarnation, route, now, accelerator, host, pid)
        old = self.entries.get(worker)
        if old is not None and old.incarnation == incarnation:
            entry.sent = old.sent
        self.entries[worker] = entry
        return entry

    def holder(self, worker: str, incarnation: int, now: float) -> Entry | None:
        """Another incarnation that holds the name `worker` and may still be alive: heard from within
        the liveness window over a connection of its own. None if the name is free to take."""
        entry = self.entries.get(worker)
        if entry is None or entry.incarnation == incarnation or entry.route is None:
            return None
        return entry if now - entry.last_seen <= self.liveness else None

    def touch(self, worker: str, incarnation: int, route: bytes, now: float) -> Entry | None:
        """The entry of a worker heard from now, or None if it must say hello first: also when the
        message came over another connection than its latest hello (a dying one, whose late bytes
        must not take the worker's route; or a new one, which ZeroMQ opened by itself)."""
        entry = self.entries.get(worker)
        if entry is None or entry.incarnation != incarnation or entry.route != route:
            return None
        entry.last_seen = now
        return entry

    def expired(self, now: float) -> list[str]:
        return [w for w, e in self.entries.items() if now - e.last_seen > self.liveness]

    def remove(self, worker: str) -> None:
        self.entries.pop(worker, None)

    def route(self, worker: str) -> bytes | None:
        entry = self.entries.get(worker)
        return None if entry is None else entry.route
