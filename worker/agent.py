"""The worker: one per accelerator, connected to the broker, running one trial attempt at a time.

Theory of operation. One loop polls the DEALER socket and the running attempt's descriptor together:

- Broker messages: `welcome` (resend every message not yet acknowledged), `run` (fetch the checkpoint
  if there is one, then start the attempt in a child process with the accelerator pinned; for a
  Python function, in the interpreter started while the previous attempt trained), `stop`,
  `ack` (forget what the broker has journaled), `rejoin` (say hello again), `shutdown`.
- Attempt messages: each report becomes a `result`, each checkpoint an upload, the end an `ended`.
  Every one of them carries the attempt's next seq and stays in the outbox until acknowledged, so a
  broker that restarts (or a message lost on the way) costs nothing: after the next welcome the
  outbox goes out again, in order, and the broker drops what it has already seen. What the socket
  refuses (its queue to the broker is full) waits on the wire, in order, never dropped; a checkpoint
  is read from its file a chunk at a time as the socket takes it.
- Time: a heartbeat (listing the attempts held) every heartbeat interval, from this loop, so a stuck
  worker looks stuck; a progress watchdog that fails an attempt silent for `progress_timeout`; and
  when nothing is heard from the broker for its liveness window, a fresh socket and hello, after an
  exponential back-off with jitter, waited for on the socket (never in a bare sleep, so a broker
  that comes back is answered at once); `give_up` bounds how long a silent broker is waited for.
- One attempt at a time, and only the one the broker expects: a `run` that comes while another
  attempt still runs (the broker declared this worker lost and retried that attempt elsewhere, or
  stopped it) stops that attempt first, and starts once it has ended.
- Leaving (`leave`, called from a SIGTERM or SIGINT handler): the attempt is stopped (SIGTERM to its
  group, SIGKILL after `stop_grace`), what it sent is delivered, and a `goodbye` makes the broker
  retry the attempt elsewhere at once, from its last checkpoint: preemption costs the steps since
  that checkpoint, and counts as a lost attempt, never as a failure.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from rung import protocol as p
from rung.protocol.codec import MAX_NAME, MAX_TEXT
from rung import sockets
from rung.keys import secure_worker

from .attempt import Attempt, AttemptSpec, Exited, Interpreter, Reported, Saved, function_environment
from .folders import make_folder
from .logtail import LogTail
from .reaper import become_subreaper, reap_orphans
from .session import Outgoing, WorkerSession
from .slot import Act, Slot, key

CHUNK = 1 << 20
LOG_EVERY = 1.0  # seconds between two reads of a running attempt's log


@dataclass
class _Upload:
    path: Path
    step: float
    name: str
    size: int
    digest: str


@dataclass
class _Fetch:
    run: p.Run
    path: Path
    offset: int = 0
    handle: object = field(default=None, repr=False)


class Worker:
    def __init__(self, connect: str, *, name: str | None = None, accelerator: str = "cpu",
                 env: dict[str, str] | None = None, workdir: str | Path | None = None,
                 progress_timeout: float = 600.0, stop_grace: float = 10.0,
                 max_backoff: float = 5.0, curve: str | Path | None = None,
                 give_up: float | None = None, subreaper: bool = False, max_outbox: int = 10_000,
                 log=sys.stderr):
        if give_up is not None and not give_up > 0:
            raise ValueError(f"`give_up` is {give_up!r}, but must be > 0 seconds")
        if isinstance(max_outbox, bool) or not isinstance(max_outbox, int) or max_outbox < 1:
            raise ValueError(f"`max_outbox` is {max_outbox!r}, but must be an int >= 1")
        self.connect = connect
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{accelerator}"
        if not 0 < len(self.name) <= MAX_NAME or not self.name.isprintable():
            raise ValueError(f"`name` is {self.name!r:.80}, but must be 1 to {MAX_NAME} printable "
                             "characters")
        self.incarnation = int.from_bytes(os.urandom(4), "big")
        self.accelerator = accelerator
        self.env = dict(env or {})
        self.workdir = Path(workdir) if workdir else make_folder()
        self.progress_timeout = progress_timeout
        self.stop_grace = stop_grace
        self.max_backoff = max_backoff
        self.curve = curve
        self.give_up = give_up
        self.max_outbox = max_outbox  # trial messages kept unacknowledged before reports wait
        self._held_back_at = -math.inf  # when reports were last left unread for a full outbox
        # A worker process of its own (`rung worker`) adopts what its attempts leave behind and reaps
        # it; not one embedded in a host program, whose other children it would reap too.
        self.subreaper = subreaper
        self.log = log
        self.heartbeat = 0.5  # until the broker's welcome says otherwise
        self.liveness = 5.0
        # What waits for an acknowledgement, and when to say hello: the protocol's rules, sans I/O.
        # An upload waits as its _Upload (its begin, chunks and end go together), others as messages.
        self.session = WorkerSession(self.liveness, time.monotonic())
        self.attempt: Attempt | None = None
        self.logtail: LogTail | None = None  # the running attempt's log, as far as it was shipped
        self._log_read_at = 0.0
        self.spare: Interpreter | None = None  # the next function attempt's interpreter, started early
        self.slot = Slot()  # which run is current, which waits, whether paused: the rules, sans I/O
        self.failure: str | None = None  # why this worker is ending the attempt itself
        self.fetch: _Fetch | None = None
        self.done = False
        self.shutdown_reason = ""
        self.refused: str | None = None  # why the broker would not take this worker
        self.gave_up: str | None = None  # why this worker stopped waiting for a broker
        self.leaving: str | None = None  # why this worker is leaving, once it is
        self._leave_asked: str | None = None  # set by `leave`, which may run in a signal handler
        self._leave_by: float | None = None  # when to say goodbye, delivered or not
        # `leave` writes a byte here so that a signal wakes the loop's poll at once.
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._context = zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        # Encoded messages not yet taken by the socket, oldest first; an upload is a generator.
        self._wire: deque[list[bytes] | Iterator[list[bytes]]] = deque()
        self._last_sent = 0.0  # time.monotonic() when the socket last took a message
        self._backoff = 0.1
        self._reconnect_at: float | None = None  # a reconnect waiting out its back-off
        self._heard_at = time.monotonic()  # when the broker was last heard from (or the worker began)
        self._silence_told = -math.inf  # when the worker last said it cannot hear the broker

    # ----------------------------------------------------------------------------------------------

    def run(self) -> str:
        """Serve until the broker says the study is over (or `stop`); return its reason."""
        if self.subreaper and (why := become_subreaper()) is not None:
            self._say(why)
        self._reconnect()
        try:
            while not self.done:
                self._iterate()
        finally:
            if self.attempt is not None:
                self.attempt.close()
            if self.spare is not None:
                self.spare.discard()
            if self._sock is not None:
                self._sock.close(linger=500)
            os.close(self._wake_read)
            os.close(self._wake_write)
        return self.shutdown_reason

    def stop(self) -> None:
        self.done = True

    def leave(self, reason: str) -> None:
        """Leave gracefully (see the module's docstring); safe to call from a signal handler. Asked
        again while leaving, the attempt is killed at once."""
        self._leave_asked = reason
        try:
            os.write(self._wake_write, b"!")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the loop is woken already

    def _iterate(self) -> None:
        now = time.monotonic()
        poller = zmq.Poller()
        # While the wire is stalled, wake when the socket takes more, not to heartbeat: what waits
        # on the wire will tell the broker this worker is alive.
        poller.register(self._sock, zmq.POLLIN | (zmq.POLLOUT if self._wire else 0))
        poller.register(self._wake_read, zmq.POLLIN)
        if self._reading(now):
            poller.register(self.attempt.fileno(), zmq.POLLIN)
        wake = self._last_heard + self.liveness if self._reconnect_at is None else self._reconnect_at
        if not self._wire:
            wake = min(wake, self._last_sent + self.heartbeat)
        # Only what the loop would act on: a wake-up in the past that is acted on by nothing spins.
        if self.attempt is not None:
            if not self._full():
                wake = min(wake, self._log_read_at + LOG_EVERY)
            if self._leased():
                wake = min(wake, self._heard_at + self.liveness / 2)
            if self.attempt.deadline is not None:
                wake = min(wake, self.attempt.deadline)
        if self.give_up is not None:
            wake = min(wake, self._heard_at + self.give_up)
        if self._leave_by is not None:
            wake = min(wake, self._leave_by)
        poller.poll(max(0, int((wake - now) * 1000)) + 1)
        now = time.monotonic()
        self._take_signals(now)
        while True:
            try:
                frames = sockets.receive(self._sock)
            except zmq.Again:
                break
            self._last_heard = self._heard_at = now
            self._reconnect_at = None
            self._backoff = 0.1
            try:
                self._handle(p.decode(frames))
            except p.ProtocolError as error:
                self._say(f"bad message from the broker: {error}")
        if self._reading(now):
            for message in self.attempt.poll(now):
                self._from_attempt(message)
        if self._leased():
            self._carry_out(self.slot.silent(now - self._heard_at, self.liveness))
        if self._leased() and self.attempt is not None and self.attempt.fenced():
            self._carry_out(self.slot.fenced())
        if self.attempt is not None:
            self._watch(now)
            if now - self._log_read_at >= LOG_EVERY and not self._full():
                self._ship_log(self.current)
        self._drain()
        if self.session.hello_due(now, sending=bool(self._wire)):
            self._clear_wire()  # what waits there goes again, in order, after the welcome
            self._hello()
        if not self._wire and now - self._last_sent >= self.heartbeat:
            self._send(p.Heartbeat(self.name, self.incarnation, self._held()))
        if self.leaving is not None:
            self._leave_when_delivered(now)
        if self.done:
            return
        if self.give_up is not None and now - self._heard_at >= self.give_up:
            self.gave_up = (f"no word from a broker at {self.connect} for {now - self._heard_at:.0f} s "
                            f"(--give-up {self.give_up:g}); {_UNREACHABLE}")
            self.done = True
        elif self._reconnect_at is not None:
            if now >= self._reconnect_at:
                self._reconnect_at = None
                self._reconnect()
        elif now - self._last_heard > self.liveness:
            self._tell_silence(now)
            # Waited out on the socket, not in a sleep: a broker that answers meanwhile is heard.
            self._reconnect_at = now + self._backoff * (1 + random.random())
            self._backoff = min(self._backoff * 2, self.max_backoff)

    def _tell_silence(self, now: float) -> None:
        """Say the broker cannot be heard: at once, then once a minute, not at every reconnect."""
        if now - self._silence_told < 60:
            return
        self._silence_told = now
        silent = now - self._heard_at
        self._say(f"no word from a broker at {self.connect} for {silent:.0f} s; reconnecting until one "
                  f"answers{'' if self.give_up is None else f' (or for {self.give_up:g} s)'}. "
                  f"{_UNREACHABLE[0].upper()}{_UNREACHABLE[1:]}")

    # ----------------------------------------------------------------------------------------------
    # Leaving.

    def _take_signals(self, now: float) -> None:
        try:
            os.read(self._wake_read, 4096)
        except BlockingIOError:
            pass
        reason, self._leave_asked = self._leave_asked, None
        if reason is None:
            return
        if self.leaving is not None:  # asked twice: no more grace
            if self.attempt is not None:
                self.attempt.stop(0, now)
            self._leave_by = now
            return
        self.leaving = reason
        running = self.current
        self._say(f"leaving ({reason})" + ("" if running is None else
                  f": stopping trial {running.trial} attempt {running.attempt}, which the broker "
                  "resumes from its last checkpoint elsewhere"))
        if self.spare is not None:
            self.spare.discard()
            self.spare = None
        self._carry_out(self.slot.leave())

    def _leave_when_delivered(self, now: float) -> None:
        """Once the attempt is gone, wait up to one liveness window for the broker to acknowledge
        what it sent, then say goodbye (the broker retries the attempt at once) and end."""
        if self.attempt is not None:
            return
        if self._leave_by is None:
            self._leave_by = now + self.liveness
        if (self.session.outbox or self._wire) and now < self._leave_by:
            return
        self._clear_wire()
        self._send(p.Goodbye(self.name, self.incarnation, self.leaving))
        self.done = True

    # ----------------------------------------------------------------------------------------------
    # The broker's side.

    def _reconnect(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
        self._clear_wire()  # the welcome on the new connection sends the outbox again
        self._sock = self._context.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            secure_worker(self._sock, self.curve)
        self._sock.connect(self.connect)
        now = time.monotonic()
        self._last_heard = now
        self._hello()

    def _hello(self) -> None:
        self.session.hello(time.monotonic())
        held = self._held()
        self._send(p.Hello(self.name, self.incarnation, self.accelerator, socket.gethostname(),
                           os.getpid(), held, self.session.next_seqs(held)))

    def _held(self) -> list[list[int]]:
        return self.session.held(self.slot.held())

    @property
    def current(self) -> p.Run | None:
        """The run being fetched or trained."""
        return self.slot.current

    def _handle(self, message) -> None:
        match message:
            case p.Welcome(heartbeat=heartbeat, liveness=liveness, expected=expected):
                self.heartbeat, self.liveness = heartbeat, liveness
                self._clear_wire()  # a copy from an earlier welcome would go twice
                for outgoing in self.session.welcome(liveness, time.monotonic()):
                    self._transmit(outgoing)
                self._carry_out(self.slot.welcome(expected))
                if self.fetch is not None:  # a fetch cut off by the reconnect starts again where it was
                    self._send(p.Fetch(self.name, self.incarnation, self.fetch.run.checkpoint,
                                       self.fetch.offset, CHUNK))
            case p.Rejoin():
                if self.session.rejoin(time.monotonic()):
                    self._clear_wire()  # what waits there goes again, in order, after the welcome
                    self._hello()
            case p.Run():
                self._start(message)
            case p.Stop(trial=trial, attempt=attempt):
                self._stop(trial, attempt)
            case p.Ack(trial=trial, attempt=attempt, seq=seq):
                self._acknowledged(trial, attempt, seq)
            case p.Chunk():
                self._fetched(message)
            case p.Shutdown(reason=reason):
                self.shutdown_reason = reason
                self.done = True
                if self.attempt is not None:
                    self.attempt.stop(0)
            case p.Refused(reason=reason):
                self.refused = reason
                self.done = True
            case p.Error(reason=reason):
                self._say(f"the broker refused a message: {reason}")
                if self.fetch is not None and self.fetch.run.checkpoint in reason:
                    # The checkpoint to resume from cannot be had: the attempt fails, never hangs.
                    self._abandon_fetch(Exited("failed", f"cannot fetch its checkpoint: {reason}"))
            case p.Pong():
                pass

    def _start(self, run: p.Run) -> None:
        current = self.current
        if self.leaving is not None:
            return
        if current is not None and key(current) != key(run) and not self.slot.stopping:
            self._say(f"stopping trial {current.trial} attempt {current.attempt}: the broker gave "
                      f"this worker trial {run.trial} attempt {run.attempt}")
        self._carry_out(self.slot.run(run))

    def _carry_out(self, actions: list) -> None:
        for act, run in actions:
            match act:
                case Act.START:
                    self._begin(run)
                case Act.STOP if self.attempt is not None:
                    self.attempt.stop(self.stop_grace)
                case Act.STOP:  # still fetching its checkpoint
                    self._abandon_fetch(Exited("finished", "stopped before it started"))
                case Act.PAUSE:
                    self._say(f"no word from the broker for {time.monotonic() - self._heard_at:.1f} s: "
                              f"trial {run.trial} attempt {run.attempt} paused until the broker says "
                              "it is still this worker's")
                    if self.attempt is not None:
                        self.attempt.pause()
                    self._clear_wire()  # what waits there goes again, in order, after the welcome
                    self._hello()
                case Act.RESUME:
                    self._say(f"trial {run.trial} attempt {run.attempt} resumed: the broker still "
                              "expects it")
                    if self.attempt is not None:
                        self.attempt.resume()
                case Act.DROP:
                    self._queue(run, p.Ended(self.name, self.incarnation, run.trial, run.attempt, 0,
                                             "finished", "stopped before it started"))

    def _begin(self, run: p.Run) -> None:
        self.failure = None
        folder = self._folder(run.trial, run.attempt)
        if run.checkpoint is None:
            self._launch(run, None)
            return
        self.fetch = _Fetch(run, folder / "resume.ckpt")
        self.fetch.handle = open(self.fetch.path, "wb")
        self._send(p.Fetch(self.name, self.incarnation, run.checkpoint, 0, CHUNK))

    def _fetched(self, chunk: p.Chunk) -> None:
        fetch = self.fetch
        if fetch is None or chunk.key != fetch.run.checkpoint or chunk.offset != fetch.offset:
            return
        fetch.handle.write(chunk.data)
        fetch.offset += len(chunk.data)
        if chunk.data and fetch.offset < fetch.run.checkpoint_size:
            self._send(p.Fetch(self.name, self.incarnation, chunk.key, fetch.offset, CHUNK))
            return
        fetch.handle.close()
        self.fetch = None
        self._launch(fetch.run, fetch.path)

    def _launch(self, run: p.Run, checkpoint: Path | None) -> None:
        spec = AttemptSpec(run.trial, run.attempt, run.trainable, dict(run.config), run.budget,
                           checkpoint, run.checkpoint_step)
        self.attempt = Attempt(spec, self._folder(run.trial, run.attempt), self.env)
        self.logtail = LogTail(self.attempt.log_path)
        self._log_read_at = time.monotonic()
        if not isinstance(run.trainable, str):
            self.attempt.start()
            return
        spare, self.spare = self.spare, None
        self.attempt.start(spare)
        try:
            with open(self.workdir / "interpreters.log", "ab") as output:
                self.spare = Interpreter(function_environment(self.env), output)
        except OSError as error:  # the next attempt will start its own, and say why if it cannot
            self._say(f"cannot start an interpreter ahead of the next attempt: {error}")

    def _stop(self, trial: int, attempt: int) -> None:
        self._carry_out(self.slot.stop(trial, attempt))

    def _abandon_fetch(self, exited: Exited) -> None:
        self.fetch.handle.close()
        self.fetch = None
        self._ended(exited)

    def _acknowledged(self, trial: int, attempt: int, seq: int) -> None:
        for outgoing in self.session.acknowledged(trial, attempt, seq, time.monotonic()):
            if isinstance(outgoing.message, _Upload):
                outgoing.message.path.unlink(missing_ok=True)

    # ----------------------------------------------------------------------------------------------
    # The attempt's side.

    def _from_attempt(self, message) -> None:
        run = self.current
        match message:
            case Reported(step=at, metrics=metrics):
                self._queue(run, p.Result(self.name, self.incarnation, run.trial, run.attempt, 0, at,
                                          dict(metrics)))
            case Saved(step=at, path=path):
                self._queue(run, self._upload(run, at, Path(path)))
            case Exited():
                self._ended(message)

    def _ended(self, exited: Exited) -> None:
        run = self.current
        outcome, reason = exited.outcome, exited.reason
        if self.failure is not None:
            outcome, reason = "failed", self.failure
        if self.attempt is not None:
            self.attempt.close()
            if self.subreaper:
                reap_orphans({self.spare.process.pid} if self.spare is not None else ())
        if self.logtail is not None:
            self._ship_log(run, final=True)
            if outcome == "failed" and (tail := self.logtail.last_lines()):
                reason = f"{reason}\n{tail}"
        if self.leaving is None:
            # A worker that leaves tells no end: its goodbye makes the attempt lost, and retried.
            self._queue(run, p.Ended(self.name, self.incarnation, run.trial, run.attempt, 0, outcome,
                                     reason[:MAX_TEXT]))
        self.attempt = None
        self.logtail = None
        self._carry_out(self.slot.ended())

    def _ship_log(self, run: p.Run, final: bool = False) -> None:
        self._log_read_at = time.monotonic()
        for offset, data in self.logtail.new(final):
            self._queue(run, p.Log(self.name, self.incarnation, run.trial, run.attempt, 0, offset, data))

    # ----------------------------------------------------------------------------------------------
    # The lease: an attempt trains only while its broker can be heard.

    def _leased(self) -> bool:
        """Whether an attempt trains under the lease (worker/slot.py, rule 3): current, neither
        paused nor being stopped, the worker staying."""
        return (self.current is not None and not self.slot.paused and not self.slot.stopping
                and self.leaving is None)

    def _full(self) -> bool:
        return len(self.session.outbox) >= self.max_outbox

    def _reading(self, now: float) -> bool:
        """Whether to read the attempt's reports now. Not while the outbox is full (the broker cannot
        be reached, or keeps up with nothing): the attempt's pipe fills and its next report waits,
        so a fast reporter through a long outage costs bounded memory and loses nothing. An attempt
        being stopped is read regardless, so its end is seen."""
        if self.attempt is None:
            return False
        if self._full() and self.attempt.deadline is None:
            self._held_back_at = now
            return False
        return True

    def _watch(self, now: float) -> None:
        attempt = self.attempt
        if attempt is None or self.failure is not None:
            return
        if attempt.paused:
            self._held_back_at = now
        # Reports held back by a full outbox or a lease are the broker's silence, not the trial's.
        if now - max(attempt.last_progress, self._held_back_at) > self.progress_timeout:
            self.failure = f"no report or checkpoint for {self.progress_timeout:g} s (progress watchdog)"
            self._stop(*key(self.current))

    def _upload(self, run: p.Run, at: float, path: Path) -> _Upload:
        # Hold the file under a name of ours, the upload's own, until the broker has it: the attempt
        # may write the next, even at the same step.
        name = f"{run.trial}-{run.attempt}-{len(self.session.outbox)}-{time.monotonic_ns()}"
        kept = path.with_name(f"upload-{name}.ckpt")
        os.replace(path, kept)
        digest = hashlib.sha256()
        with open(kept, "rb") as handle:
            for block in iter(lambda: handle.read(CHUNK), b""):
                digest.update(block)
        return _Upload(kept, at, name, kept.stat().st_size, digest.hexdigest())

    def _queue(self, run: p.Run, message) -> None:
        """Keep a trial message (its seq 0 is replaced by the attempt's next), or an upload. A report
        the wire would refuse (a metric name past its bound) fails the attempt instead: it takes no
        seq, so the attempt's other messages still go."""
        if not isinstance(message, _Upload):
            try:
                p.encode(message)
            except p.ProtocolError as error:
                if self.failure is None and self.attempt is not None:
                    self.failure = f"a report cannot be sent: {error}"
                    self._stop(*key(self.current))
                return
        outgoing = self.session.queue(run.trial, run.attempt, message, time.monotonic())
        if not isinstance(message, _Upload):
            outgoing.message = _with_seq(message, outgoing.seq)
        if self.session.welcomed:
            self._transmit(outgoing)

    def _transmit(self, outgoing: Outgoing) -> None:
        if isinstance(outgoing.message, _Upload):
            self._wire.append(self._upload_frames(outgoing))
            self._drain()
        else:
            self._send(outgoing.message)

    def _upload_frames(self, outgoing: Outgoing) -> Iterator[list[bytes]]:
        """An upload's messages, each read from the file only when the socket can take it, so that a
        checkpoint of any size costs one chunk of memory."""
        upload = outgoing.message
        try:
            handle = open(upload.path, "rb")
        except FileNotFoundError:
            return  # acknowledged (and deleted) while this copy of it waited on the wire
        with handle:
            yield p.encode(p.CheckpointBegin(self.name, self.incarnation, outgoing.trial,
                                             outgoing.attempt, upload.name, upload.step, upload.size,
                                             upload.digest))
            offset = 0
            for block in iter(lambda: handle.read(CHUNK), b""):
                yield p.encode(p.CheckpointChunk(self.name, self.incarnation, upload.name, offset, block))
                offset += len(block)
        yield p.encode(p.CheckpointEnd(self.name, self.incarnation, outgoing.trial, outgoing.attempt,
                                       outgoing.seq, upload.name, upload.step))

    # ----------------------------------------------------------------------------------------------

    def _send(self, message) -> None:
        self._wire.append(p.encode(message))
        self._drain()

    def _drain(self) -> None:
        """Send what waits on the wire, in order, until the socket takes no more. A message the
        socket refuses (its queue to the broker is full, or there is no broker) waits, and so does
        everything after it: dropping one would leave a gap in an attempt's seqs that a later,
        cumulative ack would cover, losing it for good."""
        wire = self._wire
        while wire:
            head = wire[0]
            if not isinstance(head, list):  # an upload: its next message, read now
                frames = next(head, None)
                if frames is None:
                    wire.popleft()
                    continue
                wire.appendleft(frames)
                head = frames
            try:
                sockets.send(self._sock, head)
            except zmq.Again:
                return
            wire.popleft()
            self._last_sent = time.monotonic()

    def _clear_wire(self) -> None:
        for item in self._wire:
            if not isinstance(item, list):
                item.close()
        self._wire.clear()

    def _folder(self, trial: int, attempt: int) -> Path:
        folder = self.workdir / f"trial-{trial}" / f"attempt-{attempt}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _say(self, text: str) -> None:
        print(f"rung worker {self.name}: {text}", file=self.log, flush=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


_UNREACHABLE = ("is a broker running there, reachable from this host? A broker that requires CurveZMQ "
                "keys never answers a worker without them (--curve)")


def _with_seq(message, seq: int):
    fields = {name: getattr(message, name) for name in message.__slots__}
    fields["seq"] = seq
    return type(message)(**fields)
