"""The broker: one event loop around the pure algorithm.

Theory of operation. One thread owns a ZeroMQ ROUTER socket, the study state, the journal and the
checkpoint store. Each loop iteration:

1. waits for messages (at most one heartbeat interval) and takes what has arrived, up to a batch
   that grows with the workers connected;
2. turns each into an event, folds it with `step`, and appends the step to the journal;
3. declares lost every worker the monotonic clock has not heard from for the liveness window;
4. commits the journal (one fsync for the whole iteration);
5. only then sends what the steps decided (runs, stops, acks), without ever blocking: a slow or
   vanished worker never stalls the loop (ROUTER_MANDATORY, non-blocking sends, dropped on failure;
   the worker's liveness or its next hello reconciles what was dropped).

So an effect never leaves the broker before the decision behind it is durable, and a restarted broker
replays the journal to the same state, with no `decide` called again. Workers reconnect by themselves;
their hello lists the attempts they hold, and attempts the state expects but the worker lacks are lost
(retried), never duplicated. The broker holds no `if` about rungs or budgets: those are the
algorithm's. Embedding: `Broker(study, directory).start()` runs the loop in a thread; `wait`,
`results` and `stop` (or a `with` block) drive it from the host program.

A full disk pauses the study instead of ending it. When a commit finds no space, the steps of the
iteration are already in the state but not on disk: rather than undo them (replaying the journal,
and unwinding the seqs and assignments they advanced), the broker keeps their records buffered in
the journal and holds back their effects (acks, runs, stops), and takes no further step, so the
state stays the replay of the journal plus exactly those records. Meanwhile it only keeps its
workers: heartbeats and hellos are answered with a pong (a welcome would make a worker send its
whole outbox again for nothing), a query with the summary and why it is paused, and nothing else is
taken; unacknowledged, the workers keep their messages and send them again later. Every RETRY_FULL
seconds it tries the write again; once it succeeds, the held effects leave and the loop goes on.
No checkpoint is collected meanwhile: the journal may still name one that the state, ahead of it,
no longer needs. A checkpoint chunk that finds no space pauses the broker the same way, until a write
of its size succeeds (`CheckpointStore.has_room`). A failed fsync still stops the broker (see journal.py).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import shutil
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import zmq

from rung import protocol as p
from rung import sockets
from rung.algorithms import (
    AttemptFailed,
    AttemptFinished,
    CheckpointStored,
    CloneTrial,
    PromoteTrial,
    ResultReported,
    StartTrial,
    StopTrial,
    TrialStatus,
    WorkerJoined,
    WorkerLeft,
    WorkerLost,
    WorkerReady,
    step,
)
from rung.algorithms.records import record_from_data, record_to_data
from rung.algorithms.state import ranking_key
from rung.keys import secure_broker
from rung.protocol.codec import MAX_TEXT
from rung.study import Study
from rung.summary import schedule_rows, study_summary, trial_rows

from . import logs
from .checkpoints import CheckpointError, CheckpointIncomplete, CheckpointStore, NoSpace
from .intake import Intake, Verdict
from .reconcile import expected_of, run_lost, to_stop
from .journal import Journal, JournalError, JournalFull
from .limits import crowded, open_files_limit, raise_open_files_limit, workers_room
from .lock import StudyLock
from .registry import Registry

_FROM_WORKERS = frozenset(p.messages.WorkerMessage.__args__)
MAX_BAD_MESSAGES = 20  # a peer past this many undecodable messages is no longer answered
# Messages handled per iteration before the journal commits and the effects go out: at least
# BATCH_MIN, and BATCH_PER_WORKER per connected worker. An iteration that waited for the queue to
# empty would hold every acknowledgement and decision until the workers have nothing left to send:
# the pipe runs dry once per iteration. Bounded this way, effects leave while the rest of the queue
# waits, and an iteration covers up to 16 messages of each worker, so that acknowledgements and the
# iteration's own costs (the commit, the liveness scan) stay a small share: with 1000 workers, 16
# spends about 10% less CPU per result than 8 (scripts/bench_broker.py).
BATCH_MIN = 512
BATCH_PER_WORKER = 16
SWEEP_BYTES = 8 << 20  # a batch holds at most two checkpoint chunks of the largest size (4 MiB)
CHUNK = 1 << 20  # bytes per checkpoint chunk sent to a worker
MAX_REFUSALS = 3  # times one upload may fail its checks before its attempt fails
COLLECT_EVERY = 10.0  # seconds between checkpoint garbage collections
RETRY_FULL = 2.0  # seconds between tries of a write that found no space
REPORT_EVERY = 60.0  # seconds before a problem of the same kind is reported again


def say(text: str) -> None:
    """The broker's default log: one line on stderr."""
    print(f"rung broker: {text}", file=sys.stderr, flush=True)


def check_bind(address: str, insecure: bool, curve: str | Path | None = None) -> None:
    """Binding beyond the loopback needs CurveZMQ keys or an explicit insecure flag (DESIGN.md)."""
    parsed = urllib.parse.urlsplit(address)
    if parsed.scheme in ("ipc", "inproc"):
        return
    if parsed.scheme != "tcp" or not parsed.hostname:
        raise ValueError(f"`bind` is {address!r}, but must look like tcp://HOST:PORT")
    host = parsed.hostname
    loopback = host == "localhost"
    try:
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not loopback and not insecure and curve is None:
        raise ValueError(f"binding to {host} exposes the broker to the network: give CurveZMQ keys "
                         "(--curve DIR, made by `rung keys DIR`) or accept anyone with --insecure")


class Broker:
    def __init__(self, study: Study, directory: str | Path, *, bind: str = "tcp://127.0.0.1:0",
                 heartbeat: float = 0.5, liveness: float = 5.0, insecure: bool = False,
                 curve: str | Path | None = None, linger: float = 2.0,
                 log: Callable[[str], None] = say):
        check_bind(bind, insecure, curve)
        if not 0 < heartbeat < liveness:
            raise ValueError(f"`heartbeat` is {heartbeat!r}, but must be > 0 and < liveness ({liveness!r})")
        self.study = study
        self.directory = Path(directory)
        self.bind = bind
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.linger = linger
        self.curve = curve
        self.log = log
        self.algorithm = study.build()
        self.address: str | None = None
        self._lock = threading.Lock()  # guards the state against readers in other threads
        self._ready = threading.Event()
        self._done = threading.Event()
        self._stopping = False
        self._dismiss: str | None = None  # why workers are told to leave when the loop stops
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.state = self.algorithm.initial_state(study.seed)
        self._full: str | None = None  # why the broker waits for disk space, while it does
        self._reported: dict[str, float] = {}  # kind of problem -> when it was last reported

    # ----------------------------------------------------------------------------------------------
    # The host program's side.

    def start(self) -> "Broker":
        """Run the loop in a background thread; return once it is bound (or raise its error)."""
        self._thread = threading.Thread(target=self._run_recording, name="rung-broker", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def run(self) -> None:
        """Run the loop in this thread until the study finishes or `stop` is called."""
        try:
            self._serve()
        finally:
            self._ready.set()
            self._done.set()

    def _run_recording(self) -> None:
        try:
            self.run()
        except BaseException as error:  # handed to the host thread by start() and wait()
            self._error = error

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the loop to end; True if it did. Raises the loop's error, if it had one."""
        done = self._done.wait(timeout)
        if self._error is not None:
            raise self._error
        return done

    def stop(self, dismiss: str | None = "the broker was stopped") -> None:
        """End the loop. Its workers hear Shutdown with `dismiss` as the reason and exit; with None
        they keep reconnecting until a broker serves the study again (`rung broker` under SIGTERM:
        the head node's broker may be restarting)."""
        self._dismiss = dismiss
        self._stopping = True

    @property
    def finished(self) -> bool:
        return self.state.finished

    @property
    def paused(self) -> str | None:
        """Why the broker takes no trial message now (a write waits for disk space), or None."""
        return self._full

    def progress(self) -> tuple[dict[str, int], Any]:
        """(trials per status, the best trial or None): cheap enough to show twice a second."""
        with self._lock:
            counts: dict[str, int] = {}
            best, best_key = None, math.inf
            for trial in self.state.trials:
                name = trial.status.name.lower()
                counts[name] = counts.get(name, 0) + 1
                key = ranking_key(trial.best, self.algorithm.maximise)
                if key < best_key and trial.status != TrialStatus.DIVERGED:
                    best, best_key = trial, key
            return counts, None if best is None else (best.id, best.best)

    def results(self) -> list[dict[str, Any]]:
        """Every trial as a plain row, the best first."""
        with self._lock:
            return trial_rows(self.state, self.algorithm.maximise)

    def schedule(self) -> list[dict[str, Any]] | None:
        """The best member's hyperparameter schedule in a population-based study, else None."""
        with self._lock:
            return schedule_rows(self.state, self.algorithm.maximise)

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.wait()

    # ----------------------------------------------------------------------------------------------
    # The loop.

    def _serve(self) -> None:
        raised = raise_open_files_limit()
        if raised is not None:
            self.log(f"raised the limit on open files from {raised[0]} to {raised[1]}")
        self._open_files = open_files_limit()
        self.directory.mkdir(parents=True, exist_ok=True)
        with StudyLock(self.directory):
            self.journal = Journal.open(self.directory / "journal", self.study.id)
            try:
                self.store = CheckpointStore(self.directory / "checkpoints")
                try:
                    self._recover()
                    if not self.state.finished and not self.algorithm.bounded:
                        self.log(f"study {self.study.name!r} has no limit ({self.study.algorithm} without "
                                 "max_trials or total_budget): it runs until it is stopped (Ctrl-C, "
                                 "SIGTERM, Broker.stop()); set one in its [algorithm] table to bound it")
                    self._loop()
                finally:
                    self.store.close()
            finally:
                self.journal.close()

    def _recover(self) -> None:
        self.registry = Registry(self.liveness)
        self.assigned: dict[tuple[int, int], tuple[str, str | None]] = {}  # attempt -> worker, resumed from
        self.intake = Intake(self.liveness)  # which trial messages to take and acknowledge
        self.outbox: list[tuple[bytes, list[bytes]]] = []
        self.bad: dict[bytes, int] = {}
        self.refusals: dict[str, int] = {}  # upload -> times its end failed the store's checks
        # Uploads told that a chunk was refused: one error an upload, not one a chunk (a begin lost
        # with a dropped connection refuses every chunk after it; the end asks for it all again).
        self.chunks_refused: set[str] = set()
        self._collected_at = time.monotonic()
        records = self.journal.records
        if not records:
            self.journal.append({"study": self.study.to_data()})
            self.journal.commit()
        elif records[0] != {"study": self.study.to_data()}:
            raise JournalError(f"{self.directory} holds another study; pick another directory")
        for data in records[1:]:
            event, decisions = record_from_data(data)
            self.algorithm.apply(self.state, event)
            for decision in decisions:
                self.algorithm.apply(self.state, decision)
                self._remember(decision)
        records.clear()  # replayed: the state holds what matters, and a long journal is large
        now = time.monotonic()
        for worker in self.state.workers:
            self.registry.expect(worker, now)

    def _loop(self) -> None:
        context = zmq.Context()
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.LINGER, int(self.linger * 1000))
        authenticator = None
        try:
            if self.curve is not None:
                authenticator = secure_broker(sock, self.curve)
            sock.bind(self.bind)
            self._sock = sock
            self.address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self._ready.set()
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            finished_at = None
            while not self._stopping:
                poller.poll(int(self.heartbeat * 1000))
                now = time.monotonic()
                batch = self._take(sock)
                with self._lock:
                    if self._full is None:
                        for route, *frames in batch:
                            self._handle(route, frames, now)
                        for worker in self.registry.expired(now):
                            self._lose(worker, f"no message for {self.liveness:g} s", now)
                        self._commit(now)
                    else:
                        for route, *frames in batch:
                            self._while_full(route, frames, now)
                        if now - self._full_tried >= RETRY_FULL:
                            self._retry_full(now)
                if self._full is not None:
                    self._deliver(sock)
                    continue
                self._flush(sock)
                if self.state.finished:
                    # Linger so that workers still heartbeating hear Shutdown in reply.
                    finished_at = finished_at or now
                    if now - finished_at >= self.linger or not self.registry.entries:
                        break
            if self._dismiss is not None and not self.state.finished:
                for entry in self.registry.entries.values():
                    self._send(entry.route, p.Shutdown(self._dismiss))
                self._flush(sock)
        finally:
            sock.close(linger=int(self.linger * 1000))
            if authenticator is not None:
                authenticator.stop()
            context.term()

    # ----------------------------------------------------------------------------------------------
    # Messages in.

    def _take(self, sock: zmq.Socket) -> list[tuple[bytes, ...]]:
        """The iteration's messages, off the socket in one sweep before any is handled: ZeroMQ's code
        and data stay warm through it (about 6% less CPU per result with 1000 workers), and readers
        of the state wait only for the handling. At most the batch, and no more once SWEEP_BYTES of
        payload have come: checkpoint chunks are large, and each is written out once handled."""
        batch, held = [], 0
        for _ in range(max(BATCH_MIN, BATCH_PER_WORKER * len(self.registry.entries))):
            try:
                message = sockets.receive(sock)
            except zmq.Again:
                break
            batch.append(message)
            held += len(message[-1])
            if held >= SWEEP_BYTES:
                break
        return batch

    def _handle(self, route: bytes, frames: list[bytes], now: float) -> None:
        if route in self.bad and self.bad[route] > MAX_BAD_MESSAGES:
            return
        try:
            message = p.decode(frames)
        except p.ProtocolError as error:
            self.bad[route] = self.bad.get(route, 0) + 1
            self._send(route, p.Error(str(error)))
            return
        kind = type(message)
        if kind not in _FROM_WORKERS:
            if kind is p.Query:
                self._send(route, p.Report(study_summary(self.study, self.state)))
            else:
                self._send(route, p.Error(f"{kind.__name__} is a broker's message"))
            return
        if kind is p.Hello:
            self._hello(route, message, now)
            return
        if self.state.finished:
            self._send(route, p.Shutdown(self.state.finish_reason))
            self.registry.remove(message.worker)
            return
        if self.registry.touch(message.worker, message.incarnation, route, now) is None:
            self._send(route, p.Rejoin(f"the broker does not know worker {message.worker!r}"))
            return
        if kind in p.SEQUENCED:
            self._trial_message(route, message, now)
            return
        match message:
            case p.Heartbeat(running=running):
                self._reconcile(message.worker, running, now)
                self._send(route, p.Pong(message.worker))
            case p.CheckpointBegin():
                if self._owns(route, message):
                    self.chunks_refused.discard(_upload(message))
                    self._store(route, self.store.begin, _upload(message), message.trial,
                                message.attempt, message.step, message.size, message.digest)
            case p.CheckpointChunk():
                upload = _upload(message)
                try:
                    self.store.chunk(upload, message.offset, message.data)
                except CheckpointError as error:
                    if upload not in self.chunks_refused:
                        self.chunks_refused.add(upload)
                        self._send(route, p.Error(str(error)))
            case p.Fetch(key=key, offset=offset, length=length):
                data = self._store(route, self.store.read, key, offset, min(length, CHUNK))
                if data is not None:
                    self._send(route, p.Chunk(key, offset, data))
            case p.Goodbye(reason=reason):
                self.registry.remove(message.worker)
                if message.worker in self.state.workers:
                    self._step(WorkerLeft(message.worker, f"the worker left: {reason}", time=time.time()),
                               now)

    def _hello(self, route: bytes, hello: p.Hello, now: float) -> None:
        if self.state.finished:
            self._send(route, p.Shutdown(self.state.finish_reason))
            return
        holder = self.registry.holder(hello.worker, hello.incarnation, now)
        if holder is not None and self._connected(holder):
            reason = (f"the name {hello.worker!r} belongs to a live worker on {holder.host or '?'} "
                      f"(pid {holder.pid}); give each worker a name of its own (--name)")
            self.log(f"refused a second worker {hello.worker!r} on {hello.host or '?'} (pid {hello.pid}): "
                      f"{reason}")
            self._send(route, p.Refused(reason))
            return
        self.registry.hello(hello.worker, hello.incarnation, route, now, hello.accelerator, hello.host,
                            hello.pid)
        for trial, attempt, seq in hello.next_seqs:
            if self._holder(trial, attempt) == hello.worker:
                self.intake.inherited((trial, attempt), seq)
        expected = expected_of(self.state, hello.worker)
        self._send(route, p.Welcome(hello.worker, self.heartbeat, self.liveness,
                                    [] if expected is None else [list(expected)]))
        if hello.worker not in self.state.workers:
            # New, or declared lost and back (a freeze, a healed partition): whatever it still runs
            # was retried or given up, and is stopped before it takes new work.
            self._stop_unexpected(hello.worker, hello.running, None)
            self._step(WorkerJoined(hello.worker, time=time.time()), now)
        else:
            self._reconcile(hello.worker, hello.running, now)

    def _connected(self, entry) -> bool:
        """Whether ZeroMQ still has a connection to the registered worker. A peer whose process died
        has none (its kernel closed the socket), so a worker restarted under its name takes it over at
        once; a live one only hears a Pong, which it ignores."""
        try:
            sockets.send(self._sock, [entry.route, *p.encode(p.Pong(entry.worker))])
        except zmq.ZMQError as error:
            return error.errno != zmq.EHOSTUNREACH
        return True

    def _stop_unexpected(self, worker: str, running: list, expected: tuple[int, int] | None) -> None:
        entry = self.registry.entries.get(worker)
        for trial, attempt in to_stop(running, expected, lambda held: self._holder(*held) == worker):
            self._stop_once(entry, trial, attempt)

    def _stop_once(self, entry, trial: int, attempt: int) -> None:
        """Stop, said once per connection: a stale attempt's every message would otherwise bring one."""
        if entry is not None and (trial, attempt) not in entry.stopped:
            entry.stopped.add((trial, attempt))
            self._send(entry.route, p.Stop(trial, attempt, "the broker no longer expects this attempt"))

    def _reconcile(self, worker: str, running: list, now: float) -> None:
        """Square what a known worker holds with what the state expects of it (broker/reconcile.py)."""
        expected = expected_of(self.state, worker)
        self._stop_unexpected(worker, running, expected)
        sent = self.registry.entries[worker].sent.get(expected)
        if run_lost(running, expected, sent, now, self.liveness):
            self._step(WorkerReady(worker, time=time.time()), now)

    def _holder(self, trial: int, attempt: int) -> str | None:
        """The worker the attempt was given to, or None if it never was."""
        given = self.assigned.get((trial, attempt))
        return None if given is None else given[0]

    def _owns(self, route: bytes, message) -> bool:
        if self._holder(message.trial, message.attempt) != message.worker:
            self._send(route, p.Error(f"trial {message.trial} attempt {message.attempt} was never "
                                      f"given to worker {message.worker!r}"))
            return False
        return True

    def _trial_message(self, route: bytes, message, now: float) -> None:
        key = (message.trial, message.attempt)
        given = self.assigned.get(key)  # _owns, inline: this runs per result
        if given is None or given[0] != message.worker:
            self._owns(route, message)  # says why
            return
        tid = self.state.workers.get(message.worker)  # expected_of, inline
        if tid != message.trial or self.state.trials[tid].attempt != message.attempt:
            # A worker streaming results never heartbeats: its messages are where an attempt that
            # should not run any more shows.
            self._stop_unexpected(message.worker, [key], None)
        intake = self.intake
        verdict = intake.verdict(key, message.seq)
        if verdict is Verdict.GAP:
            self._ask_resend(route, message.worker, now)
            return
        if verdict is Verdict.NEXT:
            try:
                event = self._event(route, message)
            except CheckpointIncomplete as error:
                # Chunks lost with a dropped connection: the worker sends the upload again, and this
                # seq is taken then.
                self._send(route, p.Error(str(error)))
                self._ask_resend(route, message.worker, now)
                return
            except CheckpointError as error:
                event = self._refused(route, message, error, now)
                if event is None:
                    return
            if event is not None:  # else a log, stored and not journaled
                self._step(event, now)
            intake.taken(route, key, message.seq)
        else:
            intake.copy(route, key)

    def _ask_resend(self, route: bytes, worker: str, now: float, again: bool = False) -> None:
        """Ask the worker to say hello and send everything not acknowledged again (`again`: at once,
        its copy was refused)."""
        if self.intake.ask_again(worker, now, again):
            self._send(route, p.Rejoin(f"messages of worker {worker!r} are missing: send them again"))

    def _refused(self, route: bytes, end: p.CheckpointEnd, error: CheckpointError, now: float):
        """An upload that failed the store's checks is never acknowledged: the worker keeps its copy
        and sends it again. One refused MAX_REFUSALS times fails its attempt (the event returned)."""
        upload = _upload(end)
        refusals = self.refusals[upload] = self.refusals.get(upload, 0) + 1
        if refusals < MAX_REFUSALS:
            self._send(route, p.Error(f"{error}; send the checkpoint again"))
            self._ask_resend(route, end.worker, now, again=True)
            return None
        del self.refusals[upload]
        reason = f"its checkpoint at step {end.step:g} was refused {refusals} times: {error}"
        self._send(route, p.Stop(end.trial, end.attempt, reason))
        return AttemptFailed(end.trial, end.attempt, reason, time=time.time())

    def _event(self, route: bytes, message):
        stamp = time.time()
        match message:
            case p.Result(trial=t, attempt=a, step=at, metrics=metrics):
                return ResultReported(t, a, at, metrics, time=stamp)
            case p.CheckpointEnd(trial=t, attempt=a, step=at):
                self.chunks_refused.discard(_upload(message))
                key = self.store.finish(_upload(message))
                if self.refusals:
                    self.refusals.pop(_upload(message), None)
                return CheckpointStored(t, a, at, key, time=stamp)
            case p.Log(trial=t, attempt=a, offset=offset, data=data):
                try:
                    logs.write(self.directory, t, a, offset, data)
                except OSError as error:  # a log is for people: the study goes on without it
                    self._report("logs", f"cannot keep trial logs in {self.directory / 'logs'}: "
                                         f"{error.strerror}", time.monotonic())
                return None
            case p.Ended(trial=t, attempt=a, outcome="finished"):
                return AttemptFinished(t, a, time=stamp)
            case p.Ended(trial=t, attempt=a, reason=reason):
                return AttemptFailed(t, a, reason, time=stamp)

    def _store(self, route: bytes, operation, *args):
        try:
            return operation(*args)
        except CheckpointError as error:
            self._send(route, p.Error(str(error)))
            return None

    def _lose(self, worker: str, reason: str, now: float) -> None:
        self.registry.remove(worker)
        if worker in self.state.workers:
            self._step(WorkerLost(worker, reason, time=time.time()), now)

    # ----------------------------------------------------------------------------------------------
    # Steps and messages out.

    def _step(self, event, now: float) -> None:
        decisions = step(self.algorithm, self.state, event)
        self.journal.append(record_to_data(event, decisions))
        for decision in decisions:
            self._remember(decision)
            match decision:
                case StartTrial() | PromoteTrial() | CloneTrial():
                    self.registry.entries[decision.worker].sent[
                        (decision.trial, decision.attempt)] = now
                    self.intake.started((decision.trial, decision.attempt))
                    self._send(self.registry.route(decision.worker), self._run_message(decision))
                case StopTrial(trial=tid, attempt=attempt, reason=reason):
                    worker = self.assigned[(tid, attempt)][0]
                    self._send(self.registry.route(worker), p.Stop(tid, attempt, reason))

    def _remember(self, decision) -> None:
        if isinstance(decision, (StartTrial, PromoteTrial, CloneTrial)):
            self.assigned[(decision.trial, decision.attempt)] = (decision.worker, decision.checkpoint)

    def _run_message(self, decision: StartTrial | PromoteTrial | CloneTrial) -> p.Run:
        trial = self.state.trials[decision.trial]
        key = decision.checkpoint
        size = self.store.size(key) if key is not None and self.store.exists(key) else 0
        return p.Run(decision.trial, decision.attempt, self.study.trainable, dict(decision.config),
                     decision.budget, key, trial.checkpoint_step if key else 0.0, size, decision.reason)

    def _send(self, route: bytes | None, message) -> None:
        if route is None:
            return
        try:
            frames = p.encode(message)
        except p.ProtocolError:
            # A reason past the wire's bound (one quoting what a trial reported, say): clipped, as
            # the journal keeps it whole.
            message.reason = message.reason[:MAX_TEXT - 3] + "..."
            frames = p.encode(message)
        self.outbox.append((route, frames))

    def _flush(self, sock: zmq.Socket) -> None:
        for route, trial, attempt, seq in self.intake.take_acks():
            self.outbox.append((route, p.encode(p.Ack(trial, attempt, seq))))
        if self.state.finished:
            for entry in self.registry.entries.values():
                if entry.route is not None:
                    self.outbox.append((entry.route, p.encode(p.Shutdown(self.state.finish_reason))))
            self.registry.entries.clear()
        self._deliver(sock)
        self._collect()

    def _deliver(self, sock: zmq.Socket) -> None:
        for route, frames in self.outbox:
            try:
                sockets.send(sock, [route, *frames])
            except zmq.ZMQError:
                pass  # gone or full: liveness and the next hello reconcile
        self.outbox.clear()

    def _collect(self) -> None:
        """Every COLLECT_EVERY seconds: warn if the workers connected come near the limit on open
        files, and remove the checkpoints nothing can need. An OSError (no descriptor left, a folder
        that cannot be read) is reported, and the collection tried again next time."""
        now = time.monotonic()
        if now - self._collected_at < COLLECT_EVERY:
            return
        self._collected_at = now
        workers = len(self.registry.entries)
        if crowded(workers, self._open_files):
            self._report("open files", f"{workers} workers connected, and the limit on open files "
                         f"({self._open_files}) leaves room for about {workers_room(self._open_files)}: "
                         "raise it (ulimit -n) before more connect, or their connections will hang", now)
        resumed = {attempt: source for attempt, (_, source) in self.assigned.items()}
        try:
            self.store.collect(needed_checkpoints(self.algorithm, self.state, resumed))
        except OSError as error:
            self._report(f"collect {error.errno}", f"cannot collect checkpoints ({error.strerror}: "
                         f"{error.filename}); trying again every {COLLECT_EVERY:g} s", now)

    def _report(self, kind: str, text: str, now: float) -> None:
        if now - self._reported.get(kind, -math.inf) >= REPORT_EVERY:
            self._reported[kind] = now
            self.log(text)

    # ----------------------------------------------------------------------------------------------
    # Waiting for disk space (see the module docstring).

    def _commit(self, now: float) -> None:
        try:
            self.journal.commit()
        except JournalFull as full:
            self._pause(full, now)
            return
        if self.store.full is not None:
            self._pause(self.store.full, now)

    def _pause(self, full: JournalFull | NoSpace, now: float) -> None:
        self._held = (self.outbox, self.intake.acks)
        self.outbox, self.intake.acks = [], {}
        self._full_since = self._full_tried = now
        self._full = (f"disk full: cannot write {full.path} ({full.reason}), {_free_bytes(full.path)} "
                      "bytes free there")
        self.log(f"{self._full}; taking no trial messages until it can be written (trying again "
                 f"every {RETRY_FULL:g} s; workers keep theirs)")

    def _retry_full(self, now: float) -> None:
        self._full_tried = now
        try:
            self.journal.commit()
        except JournalFull:
            return
        if not self.store.has_room():
            return
        held, self.intake.acks = self._held
        self.outbox[:0] = held
        # Runs held back leave only now: a worker gets the liveness window to list them.
        for entry in self.registry.entries.values():
            entry.sent = dict.fromkeys(entry.sent, now)
        self.log(f"the write that waited for disk space for {now - self._full_since:.0f} s succeeded; "
                 "carrying on")
        self._full = None

    def _while_full(self, route: bytes, frames: list[bytes], now: float) -> None:
        """A message while the broker waits for disk space: only its workers are kept."""
        try:
            message = p.decode(frames)
        except p.ProtocolError:
            return
        match message:
            case p.Query():
                self._send(route, p.Report({**study_summary(self.study, self.state), "paused": self._full}))
            case p.Hello(worker=worker) if worker in self.registry.entries:
                self.registry.hello(worker, message.incarnation, route, now, message.accelerator,
                                    message.host)
                self._send(route, p.Pong(worker))
            case p.Heartbeat(worker=worker) if self.registry.touch(worker, message.incarnation, route,
                                                                   now) is not None:
                self._send(route, p.Pong(worker))
            case _ if type(message) in _FROM_WORKERS:  # taken later, sent again
                self.registry.touch(message.worker, message.incarnation, route, now)


def needed_checkpoints(algorithm, state, resumed: dict[tuple[int, int], str | None]) -> set[str]:
    """What the algorithm says the study may resume from, and the checkpoint each attempt in flight
    resumed from, which its worker may still be fetching. `resumed` maps (trial, attempt) to the
    checkpoint that attempt started from."""
    keep = set(algorithm.checkpoints_needed(state))
    for tid in state.workers.values():
        if tid is not None:
            keep.add(resumed.get((tid, state.trials[tid].attempt)))
    return keep - {None}


def _free_bytes(path: Path) -> int | str:
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return "unknown"


def _upload(message) -> str:
    """A file-safe upload name, unique per worker incarnation."""
    name = f"{message.worker}\0{message.incarnation}\0{message.upload}"
    return hashlib.sha256(name.encode()).hexdigest()[:32]
