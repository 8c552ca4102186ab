"""Helpers for the tests that run real brokers and workers on 127.0.0.1."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def rung(*args: str, **kwargs) -> subprocess.Popen:
    """`python -m rung ARGS` as a process of its own."""
    return subprocess.Popen([sys.executable, "-m", "rung", *args], cwd=ROOT, env=environment(),
                            stdin=subprocess.DEVNULL, **kwargs)


def worker(address: str, name: str, *extra: str) -> subprocess.Popen:
    return rung("worker", "--connect", address, "--name", name, "--stop-grace", "1", *extra,
                stderr=subprocess.DEVNULL)


def stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
