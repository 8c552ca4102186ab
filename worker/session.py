"""The worker's side of the reliability protocol, without I/O: which trial messages wait for an
acknowledgement, when they go (again), and when to say hello. Values and clock readings in, what to
send out; no socket, no clock of its own, so the rules are tested under any schedule of loss and
delay (tests/test_sessions.py). `Worker` (agent.py) moves the bytes.

The rules (the protocol's contract is rung/protocol's docstring):

1. Every trial message of an attempt takes the attempt's next seq, from 1, and stays in the outbox
   until an ack of that attempt covers its seq (acks are cumulative).
2. A hello opens every connection. Until its welcome comes, nothing of the outbox goes; with the
   welcome the whole outbox goes, oldest first, so that a broker (perhaps restarted, holding no seqs)
   takes each attempt's messages in order. A message queued while welcomed goes at once.
3. One hello at a time: a rejoin while a hello waits for its welcome is not answered by another, or
   each rejoin of one stalled stretch would bring a welcome, and each welcome the outbox again; but a
   hello unanswered for the liveness window is said again (it, or its welcome, was lost).
4. An outbox that has had no ack for two liveness windows, while nothing waited to go out, was lost
   on the way (or the broker's rejoin was): a hello brings a welcome, and the outbox goes again.
5. A hello names each attempt the worker holds and the seq of its first unacknowledged message (or
   of its next one), so a restarted broker takes that attempt's messages from there on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Outgoing:
    """A trial message kept until acknowledged: `message` is the worker's own (the session reads only
    the numbers here)."""

    trial: int
    attempt: int
    seq: int
    message: Any


class WorkerSession:
    def __init__(self, liveness: float, now: float):
        self.liveness = liveness
        self.outbox: list[Outgoing] = []
        self.seqs: dict[tuple[int, int], int] = {}  # attempt -> the last seq it took
        self.welcomed = False
        self._hello_at = now  # when the latest hello was said
        self._acked_at = now  # when an ack last came, or the outbox last went from empty to not

    def queue(self, trial: int, attempt: int, message: Any, now: float) -> Outgoing:
        """Keep a new trial message under the attempt's next seq (the outgoing's); the caller sends it
        at once if `welcomed` (rule 2)."""
        seq = self.seqs.get((trial, attempt), 0) + 1
        self.seqs[(trial, attempt)] = seq
        if not self.outbox:
            self._acked_at = now  # the wait for an ack starts with the first unacknowledged
        outgoing = Outgoing(trial, attempt, seq, message)
        self.outbox.append(outgoing)
        return outgoing

    def hello(self, now: float) -> None:
        """A hello is being said (rules 2 and 3)."""
        self.welcomed = False
        self._hello_at = now

    def welcome(self, liveness: float, now: float) -> list[Outgoing]:
        """The broker welcomed the hello: everything to send again, oldest first."""
        self.liveness = liveness
        self.welcomed = True
        self._acked_at = now
        return list(self.outbox)

    def rejoin(self, now: float) -> bool:
        """The broker asked for a hello: whether to say one now (rule 3)."""
        return self.welcomed or now - self._hello_at > self.liveness

    def hello_due(self, now: float, sending: bool) -> bool:
        """Whether a hello is due by the clock (rules 3 and 4); `sending`: messages still wait to go."""
        if not self.welcomed:
            return now - self._hello_at > self.liveness
        return bool(self.outbox) and not sending and now - self._acked_at > 2 * self.liveness

    def acknowledged(self, trial: int, attempt: int, seq: int, now: float) -> list[Outgoing]:
        """An ack came: the messages it covers, which leave the outbox."""
        self._acked_at = now
        done, keep = [], []
        for outgoing in self.outbox:
            covered = (outgoing.trial, outgoing.attempt) == (trial, attempt) and outgoing.seq <= seq
            (done if covered else keep).append(outgoing)
        self.outbox = keep
        return done

    def next_seqs(self, held: list[list[int]]) -> list[list[int]]:
        """[trial, attempt, seq] for a hello: each held attempt's first unacknowledged seq (rule 5)."""
        first: dict[tuple[int, int], int] = {}
        for outgoing in self.outbox:
            first.setdefault((outgoing.trial, outgoing.attempt), outgoing.seq)
        return [[t, a, first.get((t, a), self.seqs.get((t, a), 0) + 1)] for t, a in held]

    def held(self, running: list[tuple[int, int]]) -> list[list[int]]:
        """The attempts a hello or heartbeat names: with unacknowledged messages, or `running`."""
        pairs = {(o.trial, o.attempt) for o in self.outbox} | set(running)
        return [list(pair) for pair in sorted(pairs)]
