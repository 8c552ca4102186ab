"""One trial attempt in a child process, watched without ever blocking the worker's loop.

Theory of operation. `Attempt.start` spawns the child in a new session, so that it leads its own
process group: a crash, an out-of-memory kill or a hang in user code stays in that group, and a signal
sent to the group reaches whatever the trainable spawned. The worker's loop waits on `fileno()`, an
epoll descriptor watching the child's output pipes and a pidfd of the child, so it turns readable when
the child has written something or has exited. `poll()` then reads every pipe without blocking,
buffers partial frames and lines, and turns what is complete into messages: `Reported`, `Saved` and,
last and exactly once, `Exited`.

An attempt ends when its child, the group leader, exits. Before reaping it (while its pid, and so the
group's id, cannot be reused) the worker sends SIGKILL to the group, so no straggler keeps a GPU busy
after its attempt is over; then SIGKILL to every process that left the group (found by the token in
its environment, see `rung.worker.reaper`, and named in the reason); then it reads what is left in the
pipes and reports `Exited`. `close()` waits until all of them are dead, and looks again. The child's
own account wins over its exit status: a function that returned has finished even if it was stopped
on its way out.

`stop(grace)` sends SIGTERM to the group at once and records a deadline; the first `poll()` at or after
it sends SIGKILL. Nothing wakes the loop at the deadline: a loop that waits on `fileno()` should wait
no longer than until `deadline`. `poll` and `stop` read `time.monotonic()` unless given `now`, so
the timing is testable without sleeping. Where the kernel has no pidfds (before Linux 5.3), an exit
wakes the loop only when it closes the pipes; `poll()` still finds it whenever it is called.

Where the pipes lead:
- A Python function trainable ("package.module:function") runs in `python -m rung.worker.child` (see
  that module for its frames) with the worker's sys.path as PYTHONPATH and the worker's working
  directory, so whatever the worker can import, the child can. The child is usually started before
  its attempt (an `Interpreter`, which the worker starts while the previous attempt trains), so an
  attempt does not wait for an interpreter to start up; only rung's own modules are imported ahead,
  the trainable's module when the attempt begins. Its stdout and stderr go to `log_path`; the channel
  is a pipe of its own, so printing cannot corrupt it.
- A command line runs as it is, with the protocol below; rung reads its stdout and stderr, writes to
  `log_path` whatever is not protocol, and keeps the last stderr line for the failure reason.
- Every child gets the worker's environment, overlaid with the `env` given to the attempt (accelerator
  pinning such as CUDA_VISIBLE_DEVICES), and PYTHONUNBUFFERED=1 unless that is set already, so that a
  Python program's output reaches the log (and the protocol) as it is printed, and RUNG_ATTEMPT_TOKEN,
  which marks the attempt's processes.

The command-line protocol (any language)
----------------------------------------
rung runs the command in its own process group, in the worker's working directory, with stdin empty,
and these environment variables:

    RUNG_TRIAL            the trial id, an integer
    RUNG_ATTEMPT          the attempt number, an integer (1 for the first)
    RUNG_BUDGET           how far to train, in the program's own unit of steps (e.g. "27" or "0.5")
    RUNG_CONFIG           the hyperparameters, a JSON object
    RUNG_CHECKPOINT_DIR   a directory of this attempt's own, for the program's checkpoint files
    RUNG_RESUME_FROM      the checkpoint file to resume from; absent when starting afresh
    RUNG_RESUME_STEP      the step that checkpoint was taken at; "0" when starting afresh
    RUNG_ATTEMPT_TOKEN    a value of this attempt's own: when the attempt ends, every process that
                          holds it (and every descendant of one) is killed, in whatever process
                          group or session it is

The program speaks by printing lines, each a JSON object on one line, to stdout; it MUST flush
stdout after each (PYTHONUNBUFFERED is set for Python programs):

    {"step": 3, "loss": 0.41, "accuracy": 0.87}
        A report: the metrics measured at step 3. "step" MUST be a finite number. Every other key
        with a number value is a metric; NaN, Infinity and -Infinity are accepted (a diverged run is
        worth reporting); keys with other values are ignored.
    {"checkpoint": "ckpt-3.bin", "step": 3}
        A checkpoint: a file of that name inside RUNG_CHECKPOINT_DIR (a plain name, no directories),
        taken at step 3. The file MUST be complete when the line is printed (write a temporary name,
        then rename). Once announced, the file belongs to rung, which uploads it and then deletes
        it: the program MUST NOT change or delete it, and so MUST use a fresh name for each
        checkpoint. The content is the program's business: rung hands the same bytes back, as the
        file named by RUNG_RESUME_FROM, to an attempt that resumes from it.

Any other line (text, or JSON without a numeric "step") goes to the attempt's log unchanged, as does
everything on stderr. A malformed protocol line (a "checkpoint" line without a plain file name, a
finite step and an existing file; a report with a non-finite step) fails the attempt at once, with
the reason saying what was wrong, rather than losing checkpoints silently.

The program MUST exit with status 0 when it has trained to RUNG_BUDGET, and non-zero on failure: the
reason rung records is "exit code N" followed by the last line of stderr. When the study stops the
trial, the program's process group receives SIGTERM, then SIGKILL after a grace period; everything in
the group dies with it, and so does whatever is left of the group when the program exits, and
whatever the program started that left the group (setsid) but kept RUNG_ATTEMPT_TOKEN.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import msgpack

from rung.worker import reaper
from rung.worker.child import FRAME_HEADER, MAX_FRAME

FINISHED = "finished"
FAILED = "failed"

MAX_LINE = 1024 * 1024  # bytes of one stdout or stderr line; longer ones are logged in pieces
MAX_REASON = 2000  # characters of a failure reason
_CHUNK = 1 << 16  # bytes of one read
_READS_PER_POLL = 64  # reads of one pipe per poll(), so that a chatty child cannot starve the loop


@dataclass(frozen=True, slots=True)
class AttemptSpec:
    trial: int
    attempt: int
    trainable: str | list[str]  # "package.module:function", or a command line (list of arguments)
    config: dict
    budget: float
    checkpoint: Path | None  # a local file holding the checkpoint to resume from
    checkpoint_step: float  # the step that checkpoint was taken at (0 if none)


@dataclass(frozen=True, slots=True)
class Reported:
    step: float
    metrics: dict[str, float]


@dataclass(frozen=True, slots=True)
class Saved:
    """A complete checkpoint file, ready to upload; the worker deletes it after the upload."""

    step: float
    path: Path


@dataclass(frozen=True, slots=True)
class Exited:
    outcome: str  # FINISHED or FAILED
    reason: str  # "returned", "exit code 3: ...", "ValueError: ...", "stopped: killed by signal 9 ..."


Message = Reported | Saved | Exited


@dataclass(frozen=True, slots=True)
class _Announced:
    """A command's checkpoint line, before rung has checked the file."""

    step: float
    name: str


class Interpreter:
    """A `python -m rung.worker.child` started ahead of its attempt, in a session of its own, waiting
    for the attempt's spec on stdin. Starting one costs tens of milliseconds of interpreter start-up and
    imports, so a worker starts the next while the current attempt trains; `Attempt.start` takes it
    over. Until then its stdout and stderr go to `output` (the worker's interpreter log, where a failed
    start-up is told); once it has its spec, to the attempt's log. It holds a token of its own (see
    `rung.worker.reaper`), which becomes its attempt's."""

    def __init__(self, env: dict[str, str], output: BinaryIO):
        self.token = reaper.new_token()
        read_end, write_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rung.worker.child", str(write_end), str(os.getpid())],
                stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT,
                pass_fds=(write_end,), start_new_session=True, env={**env, reaper.TOKEN: self.token})
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # the child's copy is the only one: its exit closes the pipe
        self.env = env
        # The read end of the child's channel, readable once the child has started up (it sends
        # "ready"); None once `take_channel` has handed it over.
        self.channel: int | None = read_end

    def ready(self) -> bool:
        """Still waiting for an attempt (it has not died, nor been handed one)."""
        return self.channel is not None and self.process.poll() is None

    def take_channel(self) -> int:
        """The channel, which the caller now owns."""
        channel, self.channel = self.channel, None
        return channel

    def begin(self, spec: dict[str, Any]) -> None:
        """Hand over the attempt. A child that died meanwhile makes this a no-op: its exit tells."""
        try:
            self.process.stdin.write(msgpack.packb(spec, use_bin_type=True))
            self.process.stdin.close()
        except BrokenPipeError:
            pass

    def discard(self) -> None:
        """End an interpreter that will get no attempt: its stdin is closed, its group killed, and it
        is reaped here."""
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGKILL)
            self.process.wait()
        if self.channel is not None:
            os.close(self.channel)
            self.channel = None


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """Signal the process group `process` leads, unless it is reaped."""
    if process.returncode is not None:
        return  # reaped: the group's id may belong to someone else by now
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def function_environment(overlay: Mapping[str, str]) -> dict[str, str]:
    """The environment a function trainable's child runs in, given the worker's `overlay` (device
    pinning): what decides whether a prepared `Interpreter` fits an attempt."""
    return {**_base_environment(overlay), "PYTHONPATH": _python_path(overlay.get("PYTHONPATH"))}


def _base_environment(overlay: Mapping[str, str]) -> dict[str, str]:
    env = {**os.environ, **overlay}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Attempt:
    """One attempt of one trial, run in a child process. Call `start`, then `poll` whenever `fileno`
    is readable (and by `deadline`) until it returns `Exited`; then `close`."""

    def __init__(self, spec: AttemptSpec, workdir: Path, env: Mapping[str, str]):
        _check_trainable(spec.trainable)
        self.spec = spec
        self.workdir = Path(workdir)
        self.log_path = self.workdir / "attempt.log"
        self._checkpoints = self.workdir / "checkpoints"
        self._env = dict(env)
        self._epoll = select.epoll()
        self._process: subprocess.Popen | None = None
        self._token = ""  # the value of reaper.TOKEN in the environment of the attempt's processes
        # {pid: process group} of the processes killed at the attempt's end; None before it.
        self._swept: dict[int, int] | None = None
        self._pidfd: int | None = None
        self._wakeup: int | None = None  # an eventfd standing in for a child that never started
        self._readers: dict[int, Callable[[bytes], list[Message]]] = {}
        self._frames = _FrameBuffer()
        self._stdout = _LineBuffer()
        self._stderr = _LineBuffer()
        self._stderr_tail = b""
        self._log: BinaryIO | None = None
        self._verdict: tuple[str, str] | None = None  # the child's own account of its end, or ours
        self._stopped = False
        self._paused = False
        self._kill_at: float | None = None
        self._killed = False
        self._ended = False
        self._last_progress = time.monotonic()

    # -- the interface used by the worker's loop

    def start(self, interpreter: Interpreter | None = None) -> None:
        """Spawn the child, or for a function trainable hand the attempt to `interpreter` (which this
        takes over: it is used if its environment matches and it is alive, else discarded). A child
        that cannot be spawned shows up as an `Exited` from `poll()`."""
        if self._process is not None or self._wakeup is not None:
            raise RuntimeError("attempt already started")
        self._checkpoints.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._note(f"trial {self.spec.trial} attempt {self.spec.attempt}: {self.spec.trainable}")
        self._last_progress = time.monotonic()
        if self._stopped:
            if interpreter is not None:
                interpreter.discard()
            return self._never_started("stopped before it started")
        try:
            if isinstance(self.spec.trainable, str):
                self._start_function(interpreter)
            else:
                self._start_command()
        except OSError as error:
            return self._never_started(f"cannot start {self.spec.trainable!r}: {error}")
        try:
            pidfd = os.pidfd_open(self._process.pid)
        except (AttributeError, OSError):
            return  # no pidfds (old kernel, seccomp): an exit is seen when the pipes close, or by poll()
        self._pidfd = pidfd
        self._epoll.register(pidfd, select.EPOLLIN)

    def fileno(self) -> int:
        """A descriptor that is readable when `poll()` has something to return (but see `deadline`)."""
        return self._epoll.fileno()

    def poll(self, now: float | None = None) -> list[Message]:
        """Every message available now, without blocking; `Exited` comes last and exactly once."""
        if self._ended:
            return []
        now = time.monotonic() if now is None else now
        if self._process is None:
            return self._end([], Exited(*self._verdict)) if self._wakeup is not None else []
        messages = self._read_all(now)
        self._enforce(now)
        if not self._leader_has_exited():
            return messages
        messages += self._read_all(now)  # what it wrote just before it ended
        self._swept = reaper.kill(self._token, self._process.pid)
        return self._end(messages, self._ending())

    def stop(self, grace: float, now: float | None = None) -> None:
        """SIGTERM to the process group now, SIGKILL from the first `poll()` after `grace` seconds."""
        now = time.monotonic() if now is None else now
        if self._ended or self._killed:
            return
        first = not self._stopped
        self._stopped = True
        if self._process is None:
            return
        kill_at = now + max(grace, 0.0)
        self._kill_at = kill_at if self._kill_at is None else min(self._kill_at, kill_at)
        if first:
            self._note(f"stopping: SIGTERM to the process group, SIGKILL after {grace:g} s")
            self._signal_group(signal.SIGTERM)
            self.resume()  # a paused group would hold the SIGTERM until its grace is over
        self._enforce(now)

    def pause(self) -> None:
        """SIGSTOP to the process group: the attempt holds still, its memory (a GPU's too) kept, until
        `resume` or `stop`."""
        if self._process is None or self._ended or self._stopped or self._paused:
            return
        self._paused = True
        self._note("paused: SIGSTOP to the process group")
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._note("resumed: SIGCONT to the process group")
            self._signal_group(signal.SIGCONT)

    @property
    def paused(self) -> bool:
        return self._paused

    def fenced(self) -> bool:
        """Whether the attempt stopped itself (its worker was frozen): stopped, and not by `pause`."""
        if self._paused or self._process is None or self._process.returncode is not None:
            return False
        try:
            with open(f"/proc/{self._process.pid}/stat", "rb") as stat:
                return stat.read().rsplit(b")", 1)[1].split()[0] == b"T"
        except (OSError, IndexError):
            return False

    @property
    def deadline(self) -> float | None:
        """When `poll()` must next be called to send a pending SIGKILL; None when none is pending."""
        return None if self._ended or self._killed else self._kill_at

    @property
    def last_progress(self) -> float:
        """time.monotonic() of the child's last report or checkpoint, or of `start`."""
        return self._last_progress

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("attempt has no process: not started, or it could not be started")
        return self._process.pid

    def close(self, timeout: float = 1.0) -> None:
        """Release the descriptors. A child still running is killed, and so is every other process
        of the attempt, and they are waited for, up to `timeout` seconds in all (after that,
        subprocess reaps the child later); the one call here that may block."""
        if self._epoll.closed:
            return
        give_up = time.monotonic() + timeout
        if self._process is not None and self._process.returncode is None:
            self._signal_group(signal.SIGKILL)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # A look at the end that found nothing needs no second one: only a process that holds the
        # token can start another that does.
        if self._process is not None and self._swept != {}:
            left = reaper.sweep(self._token, self._process.pid, give_up - time.monotonic(),
                                self._swept or ())
            if left:
                self._note(f"still alive {timeout:g} s after SIGKILL: pids {_pids(left)}")
        self._release()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._epoll.close()
        self._ended = True

    def __del__(self) -> None:
        if hasattr(self, "_epoll") and not self._epoll.closed:
            self.close()

    # -- spawning

    def _start_function(self, interpreter: Interpreter | None) -> None:
        spec = self.spec
        env = function_environment(self._env)
        if interpreter is not None and not (interpreter.env == env and interpreter.ready()):
            interpreter.discard()
            interpreter = None
        if interpreter is None:
            interpreter = Interpreter(env, self._log)
        self._process = interpreter.process
        self._token = interpreter.token
        self._watch(interpreter.take_channel(), self._on_frames)
        interpreter.begin({
            "trial": spec.trial, "attempt": spec.attempt, "trainable": spec.trainable,
            "config": spec.config, "budget": spec.budget, "checkpoint_step": spec.checkpoint_step,
            "checkpoint": None if spec.checkpoint is None else str(spec.checkpoint),
            "directory": str(self._checkpoints), "log": str(self.log_path),
        })

    def _start_command(self) -> None:
        spec = self.spec
        self._token = reaper.new_token()
        env = self._environment({
            "RUNG_TRIAL": str(spec.trial), "RUNG_ATTEMPT": str(spec.attempt),
            "RUNG_BUDGET": _number_text(spec.budget), "RUNG_CONFIG": json.dumps(spec.config),
            "RUNG_CHECKPOINT_DIR": str(self._checkpoints),
            "RUNG_RESUME_STEP": _number_text(0 if spec.checkpoint is None else spec.checkpoint_step),
            reaper.TOKEN: self._token,
        })
        env.pop("RUNG_RESUME_FROM", None)  # the worker's own environment must not make one up
        if spec.checkpoint is not None:
            env["RUNG_RESUME_FROM"] = str(spec.checkpoint)
        pipes = [os.pipe(), os.pipe()]
        try:
            self._process = subprocess.Popen(
                list(spec.trainable), stdin=subprocess.DEVNULL, stdout=pipes[0][1],
                stderr=pipes[1][1], start_new_session=True, env=env)
        except BaseException:
            for read_end, _ in pipes:
                os.close(read_end)
            raise
        finally:
            for _, write_end in pipes:
                os.close(write_end)
        self._watch(pipes[0][0], self._on_stdout)
        self._watch(pipes[1][0], self._on_stderr)

    def _environment(self, extra: dict[str, str]) -> dict[str, str]:
        return {**_base_environment(self._env), **extra}

    def _watch(self, fd: int, reader: Callable[[bytes], list[Message]]) -> None:
        os.set_blocking(fd, False)
        self._readers[fd] = reader
        self._epoll.register(fd, select.EPOLLIN)

    def _never_started(self, reason: str) -> None:
        self._verdict = (FAILED, reason)
        self._wakeup = os.eventfd(1)  # readable at once, so the loop comes to collect the Exited
        self._epoll.register(self._wakeup, select.EPOLLIN)

    # -- reading

    def _read_all(self, now: float) -> list[Message]:
        messages: list[Message] = []
        for fd, reader in list(self._readers.items()):
            for _ in range(_READS_PER_POLL):
                try:
                    data = os.read(fd, _CHUNK)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                messages += reader(data)
                if not data:
                    self._unwatch(fd)
                    break
        if messages:
            self._last_progress = now
        return messages

    def _on_frames(self, data: bytes) -> list[Message]:
        if not data:
            return []  # a partial frame left by a killed child is dropped with it
        try:
            return [m for m in map(self._from_child, self._frames.feed(data)) if m is not None]
        except ValueError as error:
            self._fail(f"garbled message from the trial process: {error}")
            return []

    def _from_child(self, frame: Any) -> Message | None:
        match frame:
            case {"t": "report", "step": float(step), "metrics": dict(metrics)} if all(
                    isinstance(k, str) and type(v) is float for k, v in metrics.items()):
                return Reported(step, metrics)
            case {"t": "saved", "step": float(step), "path": str(path)} if (
                    Path(path).parent == self._checkpoints):
                return Saved(step, Path(path))
            case {"t": "ready"}:
                pass
            case {"t": "done"}:
                self._verdict = self._verdict or (FINISHED, "returned")
            case {"t": "error", "reason": str(reason)}:
                self._verdict = self._verdict or (FAILED, reason)
            case _:
                raise ValueError(f"unexpected frame {str(frame)[:200]}")
        return None

    def _on_stdout(self, data: bytes) -> list[Message]:
        messages: list[Message] = []
        for line in self._stdout.feed(data) if data else self._stdout.rest():
            try:
                parsed = parse_line(line)
            except ValueError as error:
                self._fail(str(error))
                continue
            if parsed is None:
                self._write_log(line + b"\n")
            elif isinstance(parsed, _Announced):
                saved = self._take_checkpoint(parsed)
                if saved is not None:
                    messages.append(saved)
            else:
                messages.append(parsed)
        return messages

    def _on_stderr(self, data: bytes) -> list[Message]:
        for line in self._stderr.feed(data) if data else self._stderr.rest():
            self._write_log(line + b"\n")
            if line.strip():
                self._stderr_tail = line.strip()
        return []

    def _take_checkpoint(self, announced: _Announced) -> Saved | None:
        name = announced.name
        source = self._checkpoints / name
        if "/" in name or "\0" in name or name in ("", ".", "..") or not source.is_file():
            self._fail(f"checkpoint line names {name!r}, which is not a file in RUNG_CHECKPOINT_DIR")
            return None
        return Saved(announced.step, source)

    # -- ending

    def _enforce(self, now: float) -> None:
        if self._kill_at is not None and not self._killed and now >= self._kill_at:
            self._note("grace period over: SIGKILL to the process group")
            self._signal_group(signal.SIGKILL)
            self._killed = True

    def _fail(self, reason: str) -> None:
        """End the attempt now, as failed for `reason`, whatever its exit status will say."""
        if self._verdict is None:
            self._verdict = (FAILED, reason[:MAX_REASON])
            self._note(f"failing the attempt: {reason}")
        self._signal_group(signal.SIGKILL)
        self._killed = True

    def _leader_has_exited(self) -> bool:
        if self._process.returncode is not None:
            return True
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT  # look, but leave it a zombie for now
        try:
            if os.waitid(os.P_PID, self._process.pid, flags) is None:
                return False
        except ChildProcessError:  # reaped behind our back (SIGCHLD ignored): too late to sweep
            self._process.poll()
            return True
        # While the zombie is unreaped its pid, and so the group's id, cannot be reused: it is the
        # moment to sweep away whatever the trainable left running.
        self._signal_group(signal.SIGKILL)
        self._process.wait()
        return True

    def _ending(self) -> Exited:
        exited = self._outcome()
        escaped = [pid for pid, group in self._swept.items() if group != self._process.pid]
        if not escaped:
            return exited
        many = "es" if len(escaped) > 1 else ""
        note = (f"killed {len(escaped)} process{many} that had left the attempt's process group: "
                f"pids {_pids(escaped)}")
        return Exited(exited.outcome, f"{exited.reason}; {note}"[:MAX_REASON])

    def _outcome(self) -> Exited:
        if self._verdict is not None:
            return Exited(*self._verdict)
        code = self._process.returncode
        death = f"exit code {code}" if code >= 0 else f"killed by signal {-code} ({_signal_name(-code)})"
        if self._stopped:
            return Exited(FAILED, f"stopped: {death}")
        if code == 0:
            return Exited(FINISHED, death)
        if self._stderr_tail:
            death += ": " + self._stderr_tail.decode("utf-8", "replace")
        return Exited(FAILED, death[:MAX_REASON])

    def _end(self, messages: list[Message], exited: Exited) -> list[Message]:
        self._note(f"{exited.outcome}: {exited.reason}")
        self._ended = True
        self._release()
        return [*messages, exited]

    def _release(self) -> None:
        for fd in list(self._readers):
            self._unwatch(fd)
        for fd in (self._pidfd, self._wakeup):
            if fd is not None:
                self._epoll.unregister(fd)
                os.close(fd)
        self._pidfd = self._wakeup = None

    def _unwatch(self, fd: int) -> None:
        del self._readers[fd]
        self._epoll.unregister(fd)
        os.close(fd)

    def _signal_group(self, signum: int) -> None:
        if self._process is not None:
            _signal_group(self._process, signum)

    def _note(self, text: str) -> None:
        self._write_log(f"[rung] {text}\n".encode())

    def _write_log(self, data: bytes) -> None:
        if self._log is not None:
            self._log.write(data)
            self._log.flush()


def parse_line(line: bytes) -> Reported | _Announced | None:
    """What a command's stdout line says under the protocol: a report, a checkpoint, or None for a
    line that is not protocol. ValueError for a protocol line that is malformed."""
    text = line.strip()
    if not text.startswith(b"{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:  # UnicodeDecodeError included
        return None
    if not isinstance(value, dict):
        return None
    step = _number(value.get("step"))
    if "checkpoint" in value:
        name = value["checkpoint"]
        if not isinstance(name, str) or step is None or not math.isfinite(step):
            raise ValueError(f"checkpoint line needs a file name and a finite step: {_clip(text)}")
        return _Announced(step, name)
    if step is None:
        return None
    if not math.isfinite(step):
        raise ValueError(f"report line has a non-finite step: {_clip(text)}")
    metrics = {key: number for key, raw in value.items()
               if key != "step" and (number := _number(raw)) is not None}
    return Reported(step, metrics)


class _FrameBuffer:
    """Length-prefixed msgpack frames from a byte stream that arrives in arbitrary pieces."""

    def __init__(self):
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= FRAME_HEADER.size:
            (length,) = FRAME_HEADER.unpack_from(self._buffer)
            if length > MAX_FRAME:
                raise ValueError(f"a frame of {length} bytes, more than {MAX_FRAME}")
            end = FRAME_HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[FRAME_HEADER.size:end])
            del self._buffer[:end]
            try:
                frames.append(msgpack.unpackb(payload, raw=False, ext_hook=_no_ext))
            except Exception as error:  # msgpack raises several unrelated types for bad input
                raise ValueError(f"undecodable frame ({error})") from None
        return frames


class _LineBuffer:
    """Lines, without their newline, from a byte stream that arrives in arbitrary pieces."""

    def __init__(self):
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        while len(self._buffer) > MAX_LINE:  # no newline in sight: log it in pieces, as text
            lines.append(bytes(self._buffer[:MAX_LINE]))
            del self._buffer[:MAX_LINE]
        return [bytes(line) for line in lines]

    def rest(self) -> list[bytes]:
        """The unterminated last line, at the end of the stream."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        return [rest] if rest else []


def _check_trainable(trainable: Any) -> None:
    if isinstance(trainable, str):
        module, _, function = trainable.partition(":")
        if module and function:
            return
    elif isinstance(trainable, Sequence) and trainable and all(isinstance(a, str) for a in trainable):
        return
    raise ValueError(f"trainable is {trainable!r}, but must be 'package.module:function' or a "
                     "command line (a non-empty list of strings)")


def _python_path(extra: str | None) -> str:
    # The child must import what the worker imports: its sys.path, with "" (the working directory,
    # which the child shares) made explicit.
    paths = [extra] if extra else []
    paths += [path or os.getcwd() for path in sys.path]
    return os.pathsep.join(dict.fromkeys(paths))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # a JSON integer beyond float range
        return math.copysign(math.inf, value)


def _number_text(value: float) -> str:
    # "27" rather than "27.0", so that shell arithmetic on RUNG_BUDGET works for integral budgets.
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _pids(pids: Iterable[int]) -> str:
    pids = sorted(pids)
    return ", ".join(map(str, pids[:10])) + (", ..." if len(pids) > 10 else "")


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown signal"


def _clip(text: bytes) -> str:
    return text[:200].decode("utf-8", "replace")


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack ext type {code}")
