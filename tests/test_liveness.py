"""Who a worker is and what it may run: one live worker per name, and a worker declared lost that
comes back (a freeze, a healed partition) runs only what the broker expects of it, never a second
attempt of a trial beside the first."""

import json
import signal
import subprocess
import time

import pytest

from rung import protocol as p
from rung.algorithms import grid
from rung.broker.broker import Broker
from rung.study import Study
from tests.runtime import rung, stop, wait_for, worker
from tests.test_runtime import CURVE, FAST, _records, hello_and_run, peer, replies


def test_a_second_worker_under_a_live_workers_name_is_refused_and_a_restarted_one_takes_over(tmp_path):
    study = Study(CURVE, {"x": grid([0.1, 0.2, 0.3, 0.4]), "sleep": 0.1}, "grid", {"budget": 6})
    said = []
    broker = Broker(study, tmp_path / "study", log=said.append, **FAST).start()
    first = worker(broker.address, "twin")
    processes = [first]
    try:
        wait_for(lambda: broker.progress()[0].get("running"), 30, "the first twin at work")
        second = rung("worker", "--connect", broker.address, "--name", "twin",
                      stderr=subprocess.PIPE, text=True)
        processes.append(second)
        assert second.wait(timeout=30) == 2
        told = second.stderr.read()
        assert "refused by the broker" in told and "a name of its own (--name)" in told, told
        assert any("refused a second worker 'twin'" in line for line in said)
        # Killed outright and started again under its name, the worker is taken back at once.
        first.kill()
        first.wait()
        third = worker(broker.address, "twin")
        processes.append(third)
        assert broker.wait(60)
        assert third.wait(timeout=30) == 0
    finally:
        stop(*processes)
    assert sum("refused" in line for line in said) == 1
    rows = broker.results()
    assert [r["status"] for r in rows] == ["completed"] * 4
    assert max(r["attempts"] for r in rows) == 2  # the killed twin's attempt, retried once


def test_a_worker_declared_lost_is_told_to_stop_what_it_still_holds_before_its_next_run(tmp_path):
    study = Study(CURVE, {"x": grid([0.1])}, "grid", {"budget": 3})
    broker = Broker(study, tmp_path, **FAST).start()
    sock = peer(broker.address)
    try:
        run = hello_and_run(sock)
        # Frozen past the liveness window: declared lost, its trial waits for a retry.
        wait_for(lambda: broker.results()[0]["status"] == "pending", 10, "the worker declared lost")
        sock.send_multipart(p.encode(p.Result("w", 1, run.trial, run.attempt, 1, 1.0, {"loss": 0.5})))
        replies(sock, p.Rejoin)
        sock.send_multipart(p.encode(p.Hello("w", 1, "cpu", "h", 1, [[run.trial, run.attempt]],
                                             [[run.trial, run.attempt, 1]])))
        got = replies(sock, p.Run)
    finally:
        broker.stop()
        broker.wait(10)
        sock.close()
    stops = [i for i, m in enumerate(got) if isinstance(m, p.Stop)]
    runs = [i for i, m in enumerate(got) if isinstance(m, p.Run)]
    assert [(got[i].trial, got[i].attempt) for i in stops] == [(run.trial, run.attempt)]
    assert stops[0] < runs[0] and got[runs[0]].attempt == run.attempt + 1


def test_a_frozen_worker_that_comes_back_stops_its_old_attempt_before_it_starts_the_retry(tmp_path):
    # SIGSTOP freezes the worker, not its attempt, which trains on. When the worker wakes, the broker
    # has declared it lost; its hello gets Stop for the old attempt and Run for the retry, and the
    # retry starts only once the old attempt has ended: the two never train at the same time, and
    # the freeze costs one attempt, not the trial's every attempt.
    steps = tmp_path / "steps.jsonl"
    study = Study(CURVE, {"x": grid([0.1]), "sleep": 0.25, "log": str(steps)}, "grid", {"budget": 16})
    broker = Broker(study, tmp_path / "study", **FAST).start()
    sleeper = rung("worker", "--connect", broker.address, "--name", "sleeper", "--stop-grace", "1",
                   stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: steps.exists() and len(steps.read_text().splitlines()) >= 2, 30,
                 "two steps trained")
        sleeper.send_signal(signal.SIGSTOP)
        wait_for(lambda: broker.results()[0]["status"] == "pending", 10, "the sleeper declared lost")
        sleeper.send_signal(signal.SIGCONT)
        assert broker.wait(60)
        assert sleeper.wait(timeout=30) == 0
    finally:
        sleeper.send_signal(signal.SIGCONT)
        stop(sleeper)
    told = sleeper.stderr.read()
    trained = [json.loads(line) for line in steps.read_text().splitlines()]
    first = [at for _, attempt, _, _, at in trained if attempt == 1]
    second = [at for _, attempt, _, _, at in trained if attempt == 2]
    assert first and second and max(first) < min(second), told
    row = broker.results()[0]
    assert row["status"] == "completed" and row["attempts"] == 2
    lost = [event for event, _ in _records(tmp_path / "study") if event[0] == "worker_lost"]
    assert len(lost) == 1


@pytest.mark.parametrize("frozen", [0.5, 3.0], ids=["shorter-than-the-window", "past-the-window"])
def test_a_frozen_workers_attempt_holds_still_and_never_trains_beside_its_retry(tmp_path, frozen):
    # A frozen worker cannot pause its attempt: the attempt stops itself (its fence sees its worker
    # stopped), so the retry that a spare worker runs meanwhile trains alone. Woken, the worker asks
    # its broker: within the window the attempt is still its own and resumes, past it it is stopped.
    steps = tmp_path / "steps.jsonl"
    study = Study(CURVE, {"x": grid([0.1]), "sleep": 0.1, "log": str(steps)}, "grid", {"budget": 60})
    broker = Broker(study, tmp_path / "study", **FAST).start()
    sleeper = rung("worker", "--connect", broker.address, "--name", "sleeper", "--stop-grace", "1",
                   stderr=subprocess.DEVNULL)
    spare = None
    try:
        wait_for(lambda: steps.exists() and len(steps.read_text().splitlines()) >= 3, 30, "steps trained")
        spare = rung("worker", "--connect", broker.address, "--name", "spare", stderr=subprocess.DEVNULL)
        wait_for(lambda: "spare" in broker.state.workers, 30, "the spare joined")
        sleeper.send_signal(signal.SIGSTOP)
        time.sleep(frozen)
        sleeper.send_signal(signal.SIGCONT)
        assert broker.wait(60)
    finally:
        sleeper.send_signal(signal.SIGCONT)
        stop(sleeper, *([spare] if spare else []))
    trained = [json.loads(line) for line in steps.read_text().splitlines()]
    spans = {}
    for _, attempt, _, _, at in trained:
        low, high = spans.get(attempt, (at, at))
        spans[attempt] = (min(low, at), max(high, at))
    ordered = sorted(spans.values())
    assert all(a[1] < b[0] for a, b in zip(ordered, ordered[1:])), spans  # never two at once
    row = broker.results()[0]
    assert row["status"] == "completed" and row["attempts"] == (1 if frozen < 1.5 else 2)
