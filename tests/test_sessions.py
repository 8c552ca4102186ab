"""The reliability protocol without sockets: the worker's session (worker/session.py) and the broker's
intake (broker/intake.py) driven against each other through random schedules of loss, duplication,
reordering across connections, delay, reconnects and broker restarts.

The network is a list of messages in flight, each tagged with the connection it travels on. Within
one connection delivery is in order (TCP), but any message may be lost or duplicated, and messages of
different connections interleave as they will. The drivers below do what `Worker` and `Broker` do
with each message; the properties are the protocol's promises:

- no gap is passed over: the broker takes an attempt's seqs one after another; a seq is taken only
  when every seq before it was taken before (in this broker's life or an earlier one);
- nothing is counted twice by one broker: a seq taken again is a copy sent to a restarted broker
  (whose journal holds the first; the algorithm drops it as a duplicate result);
- nothing acknowledged is lost: an ack covers only seqs taken;
- every message arrives: once the network heals, every message queued is taken and the worker's
  outbox empties.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from rung.broker.intake import Intake, Verdict
from rung.worker.session import WorkerSession

LIVENESS = 1.0


@dataclass
class Packet:
    connection: int
    up: bool  # worker to broker
    kind: str
    body: tuple = ()


@dataclass
class World:
    now: float = 0.0
    network: list[Packet] = field(default_factory=list)
    connection: int = 0  # the worker's current connection
    known: int | None = None  # the connection of the latest hello the broker took
    incarnation: int = 0  # the broker's life
    attempts: list[tuple[int, int]] = field(default_factory=list)
    queued: dict[tuple[int, int], int] = field(default_factory=dict)  # attempt -> last seq queued
    taken: dict[tuple[int, int], int] = field(default_factory=dict)  # attempt -> highest seq taken
    taken_now: set = field(default_factory=set)  # (incarnation, attempt, seq) taken in each life

    def __post_init__(self):
        self.worker = WorkerSession(LIVENESS, self.now)
        self.intake = Intake(LIVENESS)
        self.hello()

    # -- the worker (what worker/agent.py does with each message)

    def send_up(self, kind: str, *body) -> None:
        self.network.append(Packet(self.connection, True, kind, body))

    def hello(self) -> None:
        """Naming what it holds: the attempts with messages unacknowledged, and those it runs (every
        attempt started here: a Run's delivery is the reconciliation's business, not modelled)."""
        self.worker.hello(self.now)
        held = self.worker.held(self.attempts)
        self.send_up("hello", tuple(map(tuple, self.worker.next_seqs(held))))

    def queue(self, attempt: tuple[int, int]) -> None:
        outgoing = self.worker.queue(*attempt, None, self.now)
        self.queued[attempt] = outgoing.seq
        if self.worker.welcomed:
            self.send_up("message", *attempt, outgoing.seq)

    def at_worker(self, packet: Packet) -> None:
        if packet.connection != self.connection:
            return  # the old socket is closed: nothing on it is read any more
        match packet.kind:
            case "welcome":
                for outgoing in self.worker.welcome(LIVENESS, self.now):
                    self.send_up("message", outgoing.trial, outgoing.attempt, outgoing.seq)
            case "rejoin":
                if self.worker.rejoin(self.now):
                    self.hello()
            case "ack":
                trial, attempt, seq = packet.body
                assert seq <= self.taken.get((trial, attempt), 0), "acknowledged before it was taken"
                self.worker.acknowledged(trial, attempt, seq, self.now)

    def tick(self, seconds: float) -> None:
        self.now += seconds
        if self.worker.hello_due(self.now, sending=False):
            self.hello()

    def reconnect(self) -> None:
        """A fresh socket: what was in flight on the old one, either way, is gone."""
        self.network = [p for p in self.network if p.connection != self.connection]
        self.connection += 1
        self.hello()

    # -- the broker (what broker/broker.py does with each message)

    def send_down(self, connection: int, kind: str, *body) -> None:
        self.network.append(Packet(connection, False, kind, body))

    def start(self) -> None:
        attempt = (len(self.attempts), 1)
        self.attempts.append(attempt)
        self.intake.started(attempt)

    def restart(self) -> None:
        """The broker is killed and started again on its journal: it knows no connection and no seq,
        and the connections it had are gone with what was in flight on them."""
        self.network = []
        self.intake = Intake(LIVENESS)
        self.known = None
        self.incarnation += 1

    def at_broker(self, packet: Packet) -> None:
        if packet.kind == "hello":
            self.known = packet.connection
            for trial, attempt, seq in packet.body[0]:
                self.intake.inherited((trial, attempt), seq)
            self.send_down(packet.connection, "welcome")
            return
        if packet.connection != self.known:  # a worker that must say hello first
            self.send_down(packet.connection, "rejoin")
            return
        trial, attempt, seq = packet.body
        verdict = self.intake.verdict((trial, attempt), seq)
        if verdict is Verdict.GAP:
            if self.intake.ask_again("w", self.now):
                self.send_down(packet.connection, "rejoin")
            return
        if verdict is Verdict.NEXT:
            highest = self.taken.get((trial, attempt), 0)
            assert seq <= highest + 1, f"seq {seq} taken with {highest + 1} never taken: a gap passed over"
            mark = (self.incarnation, trial, attempt, seq)
            assert mark not in self.taken_now, f"seq {seq} counted twice by one broker"
            self.taken_now.add(mark)
            self.taken[(trial, attempt)] = max(highest, seq)
            self.intake.taken(packet.connection, (trial, attempt), seq)
        else:
            self.intake.copy(packet.connection, (trial, attempt))
        for connection, trial, attempt, acked in self.intake.take_acks():
            self.send_down(connection, "ack", trial, attempt, acked)

    # -- the network

    def deliver(self, index: int) -> None:
        """The oldest packet in flight on the connection and direction of packet `index`."""
        chosen = self.network[index % len(self.network)]
        first = next(p for p in self.network if (p.connection, p.up) == (chosen.connection, chosen.up))
        self.network.remove(first)
        (self.at_broker if first.up else self.at_worker)(first)

    def heal(self) -> None:
        """No more faults: deliver everything, and let the clock run, until nothing is left to do."""
        for _ in range(20):
            while self.network:
                self.deliver(0)
            if not self.worker.outbox:
                return
            self.tick(LIVENESS * 1.1)


actions = st.lists(st.one_of(
    st.tuples(st.just("start")),
    st.tuples(st.just("queue"), st.integers(0, 7)),
    st.tuples(st.just("deliver"), st.integers(0, 63)),
    st.tuples(st.just("deliver"), st.integers(0, 63)),
    st.tuples(st.just("deliver"), st.integers(0, 63)),
    st.tuples(st.just("lose"), st.integers(0, 63)),
    st.tuples(st.just("duplicate"), st.integers(0, 63)),
    st.tuples(st.just("tick"), st.floats(0.05, 2.5)),
    st.tuples(st.just("reconnect")),
    st.tuples(st.just("restart")),
), max_size=120)


@settings(max_examples=1500, deadline=None)
@given(actions)
def test_through_any_faults_no_gap_is_passed_over_nothing_acknowledged_is_lost_and_all_arrives(schedule):
    world = World()
    for action, *arguments in schedule:
        match action:
            case "start" if len(world.attempts) < 3:
                world.start()
            case "queue" if world.attempts:
                world.queue(world.attempts[arguments[0] % len(world.attempts)])
            case "deliver" if world.network:
                world.deliver(arguments[0])
            case "lose" if world.network:
                world.network.pop(arguments[0] % len(world.network))
            case "duplicate" if world.network:
                index = arguments[0] % len(world.network)
                world.network.insert(index + 1, world.network[index])
            case "tick":
                world.tick(arguments[0])
            case "reconnect":
                world.reconnect()
            case "restart":
                world.restart()
    world.heal()
    assert not world.worker.outbox, f"left unacknowledged: {world.worker.outbox}"
    for attempt, last in world.queued.items():
        assert world.taken.get(attempt, 0) == last, f"attempt {attempt}: {last} queued, " \
                                                    f"{world.taken.get(attempt, 0)} taken"


def test_a_worker_says_one_hello_at_a_time_and_again_when_it_goes_unanswered():
    session = WorkerSession(LIVENESS, now=0.0)
    session.hello(now=0.0)
    assert not session.rejoin(now=0.5)  # its hello waits for a welcome: a rejoin brings no other
    assert not session.hello_due(now=0.5, sending=False)
    assert session.hello_due(now=1.5, sending=False)  # unanswered for the window: lost on the way
    session.welcome(LIVENESS, now=1.6)
    assert session.rejoin(now=1.7)


def test_a_worker_whose_messages_get_no_ack_for_two_windows_says_hello_unless_they_still_wait_to_go():
    session = WorkerSession(LIVENESS, now=0.0)
    session.hello(now=0.0)
    session.welcome(LIVENESS, now=0.1)
    session.queue(0, 1, "result", now=0.2)
    assert not session.hello_due(now=2.1, sending=False)
    assert not session.hello_due(now=2.3, sending=True)  # still on its way out: not lost
    assert session.hello_due(now=2.3, sending=False)
    session.acknowledged(0, 1, 1, now=2.4)
    assert not session.outbox and not session.hello_due(now=10.0, sending=False)


def test_a_hello_names_each_attempts_first_unacknowledged_seq_or_its_next():
    session = WorkerSession(LIVENESS, now=0.0)
    for _ in range(3):
        session.queue(0, 1, "result", now=0.0)
    session.queue(1, 1, "result", now=0.0)
    session.acknowledged(0, 1, 2, now=0.0)
    session.acknowledged(1, 1, 1, now=0.0)
    held = session.held([(2, 1)])
    assert held == [[0, 1], [2, 1]]
    assert session.next_seqs(held + [[1, 1]]) == [[0, 1, 3], [2, 1, 1], [1, 1, 2]]


def test_the_broker_takes_seqs_in_order_acknowledges_copies_and_asks_again_once_per_window():
    intake = Intake(LIVENESS)
    intake.started((0, 1))
    assert intake.verdict((0, 1), 2) is Verdict.GAP
    assert intake.ask_again("w", now=0.0) and not intake.ask_again("w", now=0.5)
    assert intake.ask_again("w", now=0.6, at_once=True) and intake.ask_again("w", now=1.7)
    assert intake.verdict((0, 1), 1) is Verdict.NEXT
    intake.taken(b"r", (0, 1), 1)
    assert intake.verdict((0, 1), 1) is Verdict.COPY
    intake.copy(b"r", (0, 1))
    assert intake.take_acks() == [(b"r", 0, 1, 1)] and intake.take_acks() == []
    # Inherited from the journal: from the seq the hello names, never below nothing taken.
    intake.inherited((5, 2), 4)
    assert intake.verdict((5, 2), 3) is Verdict.COPY and intake.verdict((5, 2), 4) is Verdict.NEXT
    intake.inherited((6, 1), 0)
    assert intake.verdict((6, 1), 1) is Verdict.NEXT
