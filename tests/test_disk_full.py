"""A full disk pauses the study, and nothing is lost or counted twice once space is freed.

While a write waits for space the broker takes no trial message (so acknowledges none, and its
workers keep theirs), keeps its workers with pongs, says why in `rung status` and on its log, and
tries the write again every few seconds. One story drives a fake worker through a journal whose
writes fail; the other fills a real (tmpfs) file system under a running study.
"""

import errno
import os
import subprocess
import time

import pytest

from rung import protocol as p
from rung.algorithms import grid
from rung.broker.broker import Broker
from rung.cli import load_directory
from rung.study import Study
from rung.summary import format_summary
from tests.runtime import stop, wait_for, worker
from tests.test_runtime import CURVE, FAST, _records, counted_once, hello_and_run, peer, replies


def test_a_commit_that_finds_no_space_holds_its_acks_keeps_the_worker_and_goes_on_when_freed(
        tmp_path, monkeypatch):
    study = Study(CURVE, {"x": grid([0.1, 0.2])}, "grid", {"budget": 3}, metric="loss")
    logs = []
    broker = Broker(study, tmp_path, heartbeat=0.1, liveness=30.0, log=logs.append).start()
    sock, client = peer(broker.address), peer(broker.address)
    try:
        run = hello_and_run(sock)
        real_write = os.write

        def full_disk(fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", full_disk)
        sock.send_multipart(p.encode(p.Result("w", 1, run.trial, run.attempt, 1, 1.0, {"loss": 0.5})))
        wait_for(lambda: broker.paused, 10, "the broker to pause")
        assert broker.paused.startswith(f"disk full: cannot write {tmp_path / 'journal'} (No space left "
                                        "on device), ")
        assert any(line.startswith(broker.paused) for line in logs)

        # The worker is kept: its heartbeat is answered, but its result is not acknowledged.
        sock.send_multipart(p.encode(p.Heartbeat("w", 1, [[run.trial, run.attempt]])))
        answered = replies(sock, p.Pong)
        assert not any(isinstance(m, p.Ack) for m in answered)
        client.send_multipart(p.encode(p.Query()))
        summary = replies(client, p.Report)[-1].summary
        assert summary["paused"] == broker.paused
        assert f"paused: {broker.paused}" in format_summary(summary).splitlines()

        monkeypatch.setattr(os, "write", real_write)  # space freed
        acks = [m for m in replies(sock, p.Ack) if isinstance(m, p.Ack)]
        assert acks == [p.Ack(run.trial, run.attempt, 1)]
        assert broker.paused is None and "carrying on" in logs[-1]
    finally:
        broker.stop()
        broker.wait()
        sock.close()
        client.close()
    _, state, rows = load_directory(tmp_path)
    assert rows == broker.results()
    assert [(a, s) for a, s, _ in state.trials[run.trial].history] == [(run.attempt, 1.0)]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a file system that fills up for real."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(directory):
    """Write a file in `directory` until its file system has no space left; return the file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    out.write(bytes(size))
            except OSError as error:
                assert error.errno == errno.ENOSPC
    return filler


def test_a_study_whose_disk_fills_up_pauses_and_finishes_with_nothing_lost_once_it_is_freed(small_disk):
    budget = 12
    study = Study(CURVE, {"x": grid([0.0, 0.15, 0.3, 0.45]), "sleep": 0.05}, "grid",
                  {"budget": budget}, metric="loss")
    directory = small_disk / "study"
    logs = []
    broker = Broker(study, directory, log=logs.append, **FAST).start()
    workers = [worker(broker.address, f"w{i}") for i in range(2)]
    try:
        wait_for(lambda: sum(len(t.history) for t in broker.state.trials) >= 4, 30, "four results")
        filler = fill(small_disk)
        wait_for(lambda: broker.paused, 30, "the broker to pause")
        assert any(line.startswith(broker.paused) for line in logs)
        taken = broker.results()
        # Paused for twice the liveness window: unanswered, the workers would have been lost.
        time.sleep(2 * FAST["liveness"])
        assert broker.paused is not None and broker.results() == taken
        client = peer(broker.address)
        client.send_multipart(p.encode(p.Query()))
        summary = replies(client, p.Report)[-1].summary
        client.close()
        assert summary["paused"] == broker.paused and [w[0] for w in summary["workers"]] == ["w0", "w1"]
        filler.unlink()
        assert broker.wait(60)
        for w in workers:
            assert w.wait(timeout=30) == 0
    finally:
        stop(*workers)
        broker.stop()
        broker.wait()
    assert any("carrying on" in line for line in logs)
    events = [event[0] for event, _ in _records(directory)]
    assert "worker_lost" not in events
    _, state, rows = load_directory(directory)
    assert rows == broker.results()
    assert [t.status.name for t in state.trials] == ["COMPLETED"] * 4
    counted_once(state)
    for trial in state.trials:
        assert sorted(step for _, step, _ in trial.history) == list(range(1, budget + 1))
