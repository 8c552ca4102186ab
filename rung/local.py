"""The embedded default: a broker in this process and N worker processes on this machine.

`rung run` and `rung.tune` both come here. The broker runs in a thread of this process; each worker
is a process of its own (`python -m rung worker`), so that a crash of one worker is a crash of one
worker. Rerunning on the same directory resumes the study from its journal.

However this ends (the study finished, an exception, Ctrl-C, SIGTERM turned into `Interrupted`),
no process is left: workers still running are told to leave (SIGTERM: each stops its attempt and
delivers what it sent, then says goodbye), then killed if they outstay their grace; the broker
stops last, so that what they delivered is journaled. Workers run in sessions of their own and end
with this process even if it is killed (rung/shutdown.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from rung.broker.broker import Broker
from rung.shutdown import child_environment, cleanup
from rung.study import Study

STOP_GRACE = 10.0  # seconds an attempt has to end after SIGTERM (the worker's --stop-grace)
LINGER = 2.0  # seconds workers of a finished study get to end by themselves (the broker's linger)


def worker_command(address: str, name: str, progress_timeout: float) -> list[str]:
    return [sys.executable, "-m", "rung", "worker", "--connect", address, "--name", name,
            "--progress-timeout", str(progress_timeout), "--stop-grace", str(STOP_GRACE)]


def worker_environment() -> dict[str, str]:
    # Trainables are imported by module name, as from the directory the user runs rung in.
    env = child_environment(dict(os.environ))
    paths = [os.getcwd(), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def run_local(study: Study, directory: str | Path, workers: int, *, progress: TextIO | None = None,
              heartbeat: float = 0.5, liveness: float = 5.0, progress_timeout: float = 600.0) -> Broker:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`workers` is {workers!r}, but must be an int >= 1")
    broker = Broker(study, directory, heartbeat=heartbeat, liveness=liveness).start()
    env = worker_environment()
    # A study found finished in its journal needs no worker: its results are already there.
    processes: list[subprocess.Popen] = []
    try:
        if not broker.finished:
            for i in range(workers):
                processes.append(subprocess.Popen(
                    worker_command(broker.address, f"local-{i}", progress_timeout), env=env,
                    stdin=subprocess.DEVNULL, start_new_session=True))
        shown = began = time.monotonic()
        while not broker.wait(0.2):
            now = time.monotonic()
            if progress is not None and now - shown >= (0.5 if progress.isatty() else 5.0):
                shown = now
                show_progress(progress, broker, now - began)
        if progress is not None:
            show_progress(progress, broker, time.monotonic() - began, final=True)
    finally:
        # A second Ctrl-C or SIGTERM hurries the workers (they kill their attempts at once) but never
        # skips the broker's stop: their goodbyes must reach the journal.
        with cleanup(lambda signum: _tell(processes, signal.SIGTERM)):
            end_workers(processes, finished=broker.finished, grace=STOP_GRACE + liveness)
            broker.stop()
            broker.wait()
    return broker


def end_workers(processes: list[subprocess.Popen], *, finished: bool, grace: float) -> None:
    """Wait for the workers to end, and kill what outstays `grace` seconds. Those of a study that
    is not over are told to leave (SIGTERM) at once; those of a finished one heard Shutdown and end by
    themselves, but for one whose hello came after the broker had gone (a study that ended within a
    second): told to leave after LINGER."""
    if finished:
        _wait(processes, LINGER)
    _tell(processes, signal.SIGTERM)
    _wait(processes, grace)
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def _tell(processes: list[subprocess.Popen], signum: int) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signum)


def _wait(processes: list[subprocess.Popen], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return


def show_progress(stream: TextIO, broker: Broker, elapsed: float, final: bool = False) -> None:
    """One line: trials by status and the best so far (rewritten in place on a terminal)."""
    counts, best = broker.progress()
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    line = f"{elapsed:7.1f} s  {sum(counts.values())} trials ({summary or 'none yet'})"
    if best is not None:
        line += f"  best {broker.study.metric} {best[1]:.4g} (trial {best[0]})"
    if stream.isatty():
        stream.write("\r" + line[:150].ljust(150) + ("\n" if final else ""))
    else:
        stream.write(line + "\n")
    stream.flush()
