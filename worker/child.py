"""The child process that runs one attempt of a Python function trainable.

Started by `rung.worker.attempt.Interpreter` as `python -m rung.worker.child FD PARENT`, in its own
process group, usually before its attempt exists: starting an interpreter and importing this module
costs tens of milliseconds, which a worker pays while the previous attempt trains. The child then waits
for its attempt on stdin: a msgpack map (the spec), then end of file. It points its stdout and stderr
at the attempt's log, named in the spec (they belong to the user's code), makes /dev/null its stdin,
and runs the trainable. FD is the write end of a pipe, the channel to the worker, on which the child
sends frames:

    frame = payload length u32 big-endian | payload (msgpack map)

    {"t": "ready"}                                    started up, waiting for the spec (the first frame)
    {"t": "report", "step": float, "metrics": {name: float}}
    {"t": "saved", "step": float, "path": str}        a complete checkpoint file, ready to upload
    {"t": "done"}                                     the function returned
    {"t": "error", "reason": "Type: message"}         it raised; the traceback is in the log

"done" and "error" are the last frames. A child that dies without sending either (os._exit, a signal,
the out-of-memory killer) is described by the worker from its exit status. A child whose stdin ends
without a spec (its worker discarded it) exits at once with status 0, having run nothing.
"""

from __future__ import annotations

import importlib
import os
import signal
import struct
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import msgpack

from rung.shutdown import die_with
from rung.worker.trial import Trial, decode_checkpoint

FRAME_HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024  # bytes of one payload; a longer length field is taken as garbage
MAX_REASON = 2000  # characters of an exception message kept in the reason
FENCE_EVERY = 0.2  # seconds between two looks at whether the worker is stopped


class Channel:
    """The child's end of the pipe. A frame is written whole even when several threads report."""

    def __init__(self, fd: int):
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        payload = msgpack.packb(message, use_bin_type=True)
        data = memoryview(FRAME_HEADER.pack(len(payload)) + payload)
        with self._lock:
            while data:
                data = data[os.write(self._fd, data):]


def load_trainable(name: str) -> Callable[[Trial], Any]:
    """The function named "package.module:function"; ImportError saying what is missing otherwise."""
    module_name, _, function_name = name.partition(":")
    if not module_name or not function_name:
        raise ImportError(f"trainable {name!r} must look like 'package.module:function'")
    module = importlib.import_module(module_name)
    function = module
    for part in function_name.split("."):  # "module:Class.method" works too
        function = getattr(function, part, None)
        if function is None:
            raise ImportError(f"module {module_name!r} has no attribute {function_name!r}")
    if not callable(function):
        raise ImportError(f"{name!r} is not callable")
    return function


def describe(error: BaseException) -> str:
    """'ZeroDivisionError: division by zero': the exception's type and the first line of its message."""
    message = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
    return text[:MAX_REASON]


def main(argv: list[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    # Keep the channel out of whatever the user's code spawns: a grandchild holding it open would
    # hide this process's exit from the worker.
    os.set_inheritable(fd, False)
    sys.argv = sys.argv[:1]  # the user's code may parse sys.argv; ours mean nothing to it
    # A worker killed with SIGKILL cannot stop its attempts; the kernel does it.
    die_with(parent, signal.SIGKILL)
    channel = Channel(fd)
    channel.send({"t": "ready"})
    spec_bytes = sys.stdin.buffer.read()
    if not spec_bytes:
        return 0
    spec = msgpack.unpackb(spec_bytes, raw=False)
    _redirect(spec["log"])
    threading.Thread(target=_fence, args=(parent,), name="rung-fence", daemon=True).start()
    try:
        trial = _make_trial(spec, channel)
        function = _load(spec["trainable"])
        function(trial)
    except SystemExit as error:
        return _exit_code(error)
    except BaseException as error:  # everything the user's code raises, KeyboardInterrupt included
        # The traceback starts at the user's function: the frame of main() is ours, not theirs.
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        sys.stderr.flush()
        channel.send({"t": "error", "reason": describe(error)})
        return 1
    channel.send({"t": "done"})
    return 0


def _redirect(log: str) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    empty = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    for source, target in ((empty, 0), (out, 1), (out, 2)):
        os.dup2(source, target)  # dup2 leaves 0, 1 and 2 inheritable: the user's subprocesses get them
    os.close(out)
    os.close(empty)


def _load(name: str) -> Callable[[Trial], Any]:
    try:
        return load_trainable(name)
    except Exception as error:
        raise ImportError(f"cannot import trainable {name!r}: {describe(error)}") from error


def _make_trial(spec: dict[str, Any], channel: Channel) -> Trial:
    checkpoint = None
    if spec["checkpoint"] is not None:
        path = spec["checkpoint"]
        try:
            _, checkpoint = decode_checkpoint(Path(path).read_bytes())
        except (OSError, ValueError) as error:
            raise RuntimeError(f"cannot resume from {path}: {error}") from error
    return Trial(trial_id=spec["trial"], attempt=spec["attempt"], config=spec["config"],
                 budget=spec["budget"], checkpoint=checkpoint, checkpoint_step=spec["checkpoint_step"],
                 directory=Path(spec["directory"]), send=channel.send)


def _exit_code(error: SystemExit) -> int:
    # sys.exit() inside a trainable means what it means for a script: 0 or None is success, an int
    # is the exit status, anything else is printed and is a failure.
    if error.code is None or isinstance(error.code, int):
        return error.code or 0
    print(error.code, file=sys.stderr)
    return 1


def _fence(parent: int) -> None:
    """Hold the attempt still while its worker is stopped (SIGSTOP, a debugger). A frozen worker
    cannot pause its attempt (the lease, worker/slot.py), and its broker, hearing nothing, retries the
    attempt elsewhere: so the attempt stops its own process group, and the worker, awake again,
    finds it stopped, asks its broker whether it is still its own, and resumes or stops it."""
    path = f"/proc/{parent}/stat"
    while True:
        time.sleep(FENCE_EVERY)
        try:
            with open(path, "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            return  # no /proc, or the worker is gone (and this process with it)
        if state in (b"T", b"t"):
            os.killpg(0, signal.SIGSTOP)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.exit(code)
