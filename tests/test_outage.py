"""A broker outage with attempts in flight: the worker keeps its messages (in bounded memory: past
--max-outbox its trial's reports wait), nothing it reported is lost, nothing is counted twice, and the
progress watchdog does not take the broker's silence for the trial's."""

import os
import signal
import subprocess
import time

from tests.runtime import free_port, rung, stop, wait_for
from rung.cli import load_directory

STUDY = """
name = "outage"
trainable = "tests.trainables.study:counter"
[algorithm]
name = "grid"
budget = {budget}
[space]
log = "{log}"
"""


def reported(log) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_a_fast_reporter_through_a_broker_outage_waits_in_bounded_memory_and_loses_nothing(tmp_path):
    budget, cap = 20_000, 200
    log = tmp_path / "steps"
    study = tmp_path / "study.toml"
    study.write_text(STUDY.format(budget=budget, log=log))
    directory, address = tmp_path / "study", f"tcp://127.0.0.1:{free_port()}"
    # A liveness window longer than the outage: the worker's lease (half the window) holds, so its
    # trial runs on and what holds it back is the outbox's bound alone.
    command = ["broker", "--study", str(study), "--dir", str(directory), "--bind", address,
               "--heartbeat", "0.1", "--liveness", "30"]
    head = rung(*command, stderr=subprocess.DEVNULL)
    helper = rung("worker", "--connect", address, "--name", "w", "--max-outbox", str(cap),
                  "--progress-timeout", "2", stderr=subprocess.DEVNULL)
    again = None
    try:
        wait_for(lambda: reported(log) >= 500, 60, "the first reports")
        head.send_signal(signal.SIGKILL)
        head.wait()
        wait_for(lambda: _still(log), 30, "the reports to wait")
        busy = _cpu(helper.pid)
        time.sleep(2)
        assert _cpu(helper.pid) - busy < 0.2  # waits on its socket: 0.01 s (0.07 when woken each ms)
        held = reported(log)
        assert held < budget // 2  # it waits: the trial did not run on into a growing outbox
        again = rung(*command, stderr=subprocess.DEVNULL)  # 4 s later: past the watchdog's 2 s
        assert again.wait(timeout=120) == 0
        assert helper.wait(timeout=30) == 0
    finally:
        stop(head, helper, *([again] if again else []))
    _, state, rows = load_directory(directory)
    assert rows[0]["status"] == "completed" and rows[0]["attempts"] == 1
    steps = [step for _, step, _ in state.trials[0].history]
    assert steps == list(range(1, budget + 1))  # each once, none lost


def _cpu(pid: int) -> float:
    """Seconds of CPU the process has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _still(log, seconds: float = 4.0) -> bool:
    """Whether the log stays as it is for `seconds` (the trial's reports wait)."""
    before = reported(log)
    time.sleep(seconds)
    return reported(log) == before


def test_a_broker_down_for_four_liveness_windows_costs_no_attempt_and_no_step(tmp_path):
    # The broker is killed and kept down for four of its liveness windows while three attempts run.
    # The workers pause them (the lease), wait on their sockets (no sleep that would make them miss
    # the restarted broker's window), and the restarted broker, which expects them from its journal,
    # welcomes them back with their attempts: the study ends as a fault-free one would, one attempt a
    # trial and every step counted once.
    budget = 60
    log = tmp_path / "steps"
    study = tmp_path / "study.toml"
    study.write_text(f'name = "o"\ntrainable = "tests.trainables.study:curve"\n[algorithm]\n'
                     f'name = "grid"\nbudget = {budget}\n[space]\nx = ["grid", [0.1, 0.2, 0.3]]\n'
                     f'sleep = 0.05\nlog = "{log}"\n')
    directory, address = tmp_path / "study", f"tcp://127.0.0.1:{free_port()}"
    command = ["broker", "--study", str(study), "--dir", str(directory), "--bind", address,
               "--heartbeat", "0.1", "--liveness", "1.5"]
    head = rung(*command, stderr=subprocess.DEVNULL)
    helpers = [rung("worker", "--connect", address, "--name", f"w{i}", stderr=subprocess.DEVNULL)
               for i in range(3)]
    again = None
    try:
        wait_for(lambda: reported(log) >= 30, 60, "three attempts under way")
        head.send_signal(signal.SIGKILL)
        head.wait()
        time.sleep(4 * 1.5)
        again = rung(*command, stderr=subprocess.DEVNULL)
        assert again.wait(timeout=120) == 0
        assert all(helper.wait(timeout=30) == 0 for helper in helpers)
    finally:
        stop(head, *helpers, *([again] if again else []))
    _, state, rows = load_directory(directory)
    assert [(r["status"], r["attempts"]) for r in rows] == [("completed", 1)] * 3
    for trial in state.trials:
        assert [step for _, step, _ in trial.history] == list(range(1, budget + 1))
