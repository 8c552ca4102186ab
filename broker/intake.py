"""The broker's side of the reliability protocol for trial messages, without I/O: which message of an
attempt to take, what to acknowledge, and when to ask a worker to send again. Numbers and clock
readings in, verdicts out; `Broker` does the taking (journal, checkpoint store) and the sending, and
tests/test_sessions.py drives this against the worker's side (worker/session.py) through loss,
duplication, reordering, reconnects and broker restarts.

The rules (the protocol's contract is rung/protocol's docstring):

1. An attempt's messages are taken one after another by seq. For an attempt this broker started,
   from 1 (`started`); for one inherited from the journal, which keeps no seqs, from the first
   unacknowledged seq that its worker's hello names (`inherited`), else from the first message that
   comes (after a welcome a worker sends its whole outbox, oldest first).
2. A seq past the next one is a gap (messages lost with a dropped connection): nothing is taken out
   of order, and the worker is asked to say hello and send everything again, at most once per
   liveness window per worker, or at once when the broker refused the copy it got.
3. A seq at or below the last taken is a copy, not taken again but acknowledged.
4. Acknowledgements are cumulative: per connection and attempt, the last seq taken.
"""

from __future__ import annotations

import enum
import math


class Verdict(enum.Enum):
    NEXT = "take it"
    COPY = "taken before: acknowledge it again"
    GAP = "messages before it are missing"


class Intake:
    def __init__(self, liveness: float):
        self.liveness = liveness
        self.seqs: dict[tuple[int, int], int] = {}  # attempt -> the last seq taken
        # (route, attempt) -> the seq to acknowledge, until the broker sends the acks.
        self.acks: dict[tuple[bytes, tuple[int, int]], int] = {}
        self._asked: dict[str, float] = {}  # worker -> when it was last asked to send again

    # An attempt is its (trial, attempt) pair throughout, built once per message by the caller.

    def started(self, attempt: tuple[int, int]) -> None:
        self.seqs[attempt] = 0

    def inherited(self, attempt: tuple[int, int], seq: int) -> None:
        """The first unacknowledged seq a hello names for an attempt this broker did not start; a
        baseline already set (by an earlier message or hello) stands."""
        self.seqs.setdefault(attempt, _before(seq))

    def verdict(self, attempt: tuple[int, int], seq: int) -> Verdict:
        last = self.seqs.get(attempt)
        if last is None:
            last = self.seqs[attempt] = _before(seq)
        if seq == last + 1:
            return _NEXT
        return Verdict.GAP if seq > last + 1 else Verdict.COPY

    def taken(self, route: bytes, attempt: tuple[int, int], seq: int) -> None:
        self.seqs[attempt] = seq
        self.acks[(route, attempt)] = seq

    def copy(self, route: bytes, attempt: tuple[int, int]) -> None:
        self.acks[(route, attempt)] = self.seqs[attempt]

    def ask_again(self, worker: str, now: float, at_once: bool = False) -> bool:
        """Whether to ask the worker to send its messages again now (rule 2)."""
        if at_once or now - self._asked.get(worker, -math.inf) >= self.liveness:
            self._asked[worker] = now
            return True
        return False

    def take_acks(self) -> list[tuple[bytes, int, int, int]]:
        """(route, trial, attempt, seq) to acknowledge, once each."""
        acks = [(route, trial, attempt, seq) for (route, (trial, attempt)), seq in self.acks.items()]
        self.acks.clear()
        return acks


_NEXT = Verdict.NEXT  # a module global: no enum attribute lookup on the hot path


def _before(seq: int) -> int:
    """The seq taken last when `seq` is the first of an attempt to take: seqs count from 1, so a
    peer's 0 never lowers the baseline below nothing taken."""
    return max(seq - 1, 0)
