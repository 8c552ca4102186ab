"""SIGTERM and SIGINT, as Slurm, Kubernetes and Ctrl-C send them, to every entry point: each ends
gracefully, leaves no process of its tree behind, and loses no work (a preempted attempt is lost and
resumed from its checkpoint, never failed). Also: an embedded broker's `stop` dismisses its workers,
and a worker that cannot reach a broker says why and, with --give-up, stops trying."""

import json
import signal
import subprocess
import sys
import time

import pytest

from rung.algorithms import grid
from rung.broker.broker import Broker
from rung.cli import load_directory
from rung.study import Study
from tests.runtime import ROOT, alive, descendants, environment, free_port, rung, stop, wait_for
from tests.test_runtime import CURVE, FAST, _records

STUDY = """
name = "signals"
trainable = "{trainable}"
metric = "loss"

[algorithm]
name = "grid"
budget = 12

[space]
x = ["grid", [0.1, 0.2, 0.3, 0.4]]
sleep = 0.25
log = "{log}"
"""


def study_file(tmp_path) -> str:
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(trainable=CURVE, log=tmp_path / "steps.jsonl"))
    return str(path)


def steps_trained(tmp_path) -> int:
    log = tmp_path / "steps.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def session(*args: str, **kwargs) -> subprocess.Popen:
    """`rung ARGS` as the leader of a session of its own, as a batch system starts it."""
    return subprocess.Popen([sys.executable, "-m", "rung", *args], cwd=ROOT, env=environment(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **kwargs)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_rung_run_ends_every_process_and_a_rerun_resumes_with_nothing_failed(tmp_path, signum):
    directory = tmp_path / "study"
    command = ["run", study_file(tmp_path), "--workers", "2", "--dir", str(directory)]
    run = session(*command)
    try:
        wait_for(lambda: steps_trained(tmp_path) >= 4, 60, "two attempts under way")
        tree = descendants(run.pid)
        assert len(tree) >= 4  # two workers, and at least their attempts' processes
        run.send_signal(signum)
        assert run.wait(timeout=30) == 128 + signum
        assert not alive(tree), "processes of rung run survived it"
    finally:
        stop(run)
    assert f"stopped by {signal.Signals(signum).name}" in run.stderr.read()
    left = [event for event, _ in _records(directory) if event[0] == "worker_left"]
    assert left and all("the worker left" in event[2] for event in left)
    _, state, _ = load_directory(directory)
    assert not any(t.status.name == "FAILED" for t in state.trials)

    rerun = session(*command)
    try:
        assert rerun.wait(timeout=120) == 0, rerun.stderr.read()
    finally:
        stop(rerun)
    _, state, rows = load_directory(directory)
    assert [r["status"] for r in rows] == ["completed"] * 4
    # A preempted attempt resumed from its checkpoint: no trial trained its steps from scratch twice.
    trained = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    for trial in state.trials:
        steps = [step for tid, _, step, _, _ in trained if tid == trial.id]
        assert steps.count(1) == 1, f"trial {trial.id} started over: {steps}"


def test_a_signal_to_a_worker_stops_its_command_line_attempt_and_hands_the_trial_back(tmp_path):
    trainable = tmp_path / "train.sh"
    trainable.write_text("#!/bin/sh\necho $$ > \"$RUNG_CHECKPOINT_DIR/../pid\"\n"
                         "echo '{\"step\": 1, \"loss\": 0.5}'\nexec sleep 300\n")
    trainable.chmod(0o755)
    study = Study([str(trainable)], {"x": grid([0.1])}, "grid", {"budget": 1})
    broker = Broker(study, tmp_path / "study", **FAST).start()
    workdir = tmp_path / "work"
    target = session("worker", "--connect", broker.address, "--name", "preempted", "--stop-grace", "1",
                     "--workdir", str(workdir))
    try:
        pidfile = wait_for(lambda: next(workdir.glob("*/trial-0/attempt-1/pid"), None), 30,
                           "the attempt to start")
        wait_for(lambda: pidfile.read_text().strip(), 10, "the attempt's pid")
        tree = descendants(target.pid)
        assert int(pidfile.read_text()) in tree
        target.send_signal(signal.SIGTERM)
        assert target.wait(timeout=30) == 128 + signal.SIGTERM
        assert not alive(tree)
        wait_for(lambda: broker.results()[0]["status"] == "pending", 10, "the trial handed back")
    finally:
        broker.stop()
        broker.wait(10)
        stop(target)
    left = [event for event, _ in _records(tmp_path / "study") if event[0] == "worker_left"]
    assert [event[2] for event in left] == ["the worker left: SIGTERM"]
    assert "left (SIGTERM)" in target.stderr.read()


def test_a_signal_to_a_gpus_parent_reaches_each_worker_once_and_a_killed_parent_takes_them_along(tmp_path):
    study = Study(CURVE, {"x": grid([0.1, 0.2]), "sleep": 0.5}, "grid", {"budget": 100})
    broker = Broker(study, tmp_path / "study", **FAST).start()
    parents = []
    try:
        for ending in (signal.SIGTERM, signal.SIGKILL):
            parent = session("worker", "--connect", broker.address, "--gpus", "0,1", "--stop-grace", "1")
            parents.append(parent)
            wait_for(lambda: len(descendants(parent.pid)) >= 4, 30, "two workers and their attempts")
            tree = descendants(parent.pid)
            parent.send_signal(ending)
            assert parent.wait(timeout=30) == (128 + ending if ending == signal.SIGTERM else -ending)
            wait_for(lambda: not alive(tree), 30, f"the workers to end with their parent ({ending.name})")
    finally:
        broker.stop()
        broker.wait(10)
        stop(*parents)
    assert not any(r["status"] == "failed" for r in broker.results())


def test_a_signal_to_rung_broker_commits_and_leaves_its_workers_waiting_for_its_return(tmp_path):
    directory = tmp_path / "study"
    address = f"tcp://127.0.0.1:{free_port()}"
    head = session("broker", "--study", study_file(tmp_path), "--dir", str(directory), "--bind", address)
    helper = rung("worker", "--connect", address, "--name", "patient", "--stop-grace", "1",
                  stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: steps_trained(tmp_path) >= 2, 60, "an attempt under way")
        head.send_signal(signal.SIGTERM)
        assert head.wait(timeout=30) == 128 + signal.SIGTERM
        assert helper.poll() is None  # not dismissed: a restarted broker takes it back
        again = session("broker", "--study", study_file(tmp_path), "--dir", str(directory), "--bind",
                        address)
        assert again.wait(timeout=120) == 0, again.stderr.read()
        assert helper.wait(timeout=30) == 0
    finally:
        stop(head, helper)
    _, _, rows = load_directory(directory)
    assert [r["status"] for r in rows] == ["completed"] * 4


def test_stopping_an_embedded_broker_dismisses_its_workers(tmp_path):
    study = Study(CURVE, {"x": grid([0.1]), "sleep": 0.5}, "grid", {"budget": 100})
    broker = Broker(study, tmp_path / "study", **FAST).start()
    helper = rung("worker", "--connect", broker.address, "--name", "dismissed", "--stop-grace", "1",
                  stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: broker.progress()[0].get("running"), 30, "the attempt under way")
        tree = descendants(helper.pid)
        broker.stop()
        broker.wait(10)
        assert helper.wait(timeout=30) == 0
        assert not alive(tree)
    finally:
        stop(helper)
    assert "the broker was stopped" in helper.stderr.read()


def test_a_worker_that_hears_no_broker_says_where_it_looked_and_gives_up_when_told(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    began = time.monotonic()
    lonely = rung("worker", "--connect", address, "--give-up", "8", stderr=subprocess.PIPE, text=True)
    try:
        assert lonely.wait(timeout=30) == 2
    finally:
        stop(lonely)
    assert 8 <= time.monotonic() - began < 25
    told = lonely.stderr.read()
    assert f"no word from a broker at {address}" in told and "CurveZMQ" in told
    assert told.count("reconnecting") == 1, told  # said once, not at every reconnect
    assert told.strip().splitlines()[-1].startswith("rung: worker ") and "gave up" in told


def test_a_second_signal_hurries_rung_run_but_its_workers_still_say_goodbye(tmp_path):
    # Ctrl-C twice: the attempts are killed at once instead of after their grace, and the broker
    # still journals each worker's goodbye (worker_left, which never counts towards max_attempts).
    directory = tmp_path / "study"
    path = tmp_path / "stubborn.toml"  # attempts that ignore SIGTERM: the first signal waits 10 s
    path.write_text(STUDY.format(trainable=CURVE, log=tmp_path / "steps.jsonl")
                    + "ignore_sigterm = true\n")
    run = session("run", str(path), "--workers", "2", "--dir", str(directory))
    try:
        wait_for(lambda: steps_trained(tmp_path) >= 4, 60, "two attempts under way")
        tree = descendants(run.pid)
        run.send_signal(signal.SIGINT)
        time.sleep(1.0)
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=30) == 128 + signal.SIGINT
        assert not alive(tree)
    finally:
        stop(run)
    kinds = [event[0] for event, _ in _records(directory)]
    assert kinds.count("worker_left") == 2 and "worker_lost" not in kinds


def test_a_signal_while_a_gpus_parent_starts_its_workers_reaches_every_one_of_them(tmp_path):
    study = Study(CURVE, {"x": grid([0.1, 0.2]), "sleep": 0.5}, "grid", {"budget": 100})
    broker = Broker(study, tmp_path / "study", **FAST).start()
    parent = session("worker", "--connect", broker.address, "--gpus", "0,1,2,3", "--stop-grace", "1")
    try:
        wait_for(lambda: descendants(parent.pid), 30, "the first worker process")
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 128 + signal.SIGTERM
        wait_for(lambda: not alive(descendants(parent.pid)), 10, "no worker left")
    finally:
        broker.stop()
        broker.wait(10)
        stop(parent)

