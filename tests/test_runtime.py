"""The runtime for real: brokers and workers as processes on 127.0.0.1, and the damage they survive.

Each test tells one story: a study runs to the end; a worker is killed with SIGKILL mid-trial; the
broker is killed with SIGKILL and restarted on its directory; the journal is cut short or corrupted;
garbage reaches the broker; user code raises, stays silent or hangs. After each, nothing is lost and
nothing is counted twice.
"""

import json
import os
import signal
import time
import subprocess

import msgpack
import pytest
import zmq

from rung import protocol as p
from rung.algorithms import grid, uniform
from rung.broker.broker import Broker
from rung.broker.journal import JournalCorrupt, read_records
from rung.cli import load_directory
from rung.local import run_local
from rung.study import Study
from tests.runtime import free_port, rung, stop, wait_for, worker

FAST = dict(heartbeat=0.1, liveness=1.5)
CURVE = "tests.trainables.study:curve"


def counted_once(state):
    """Within each attempt, every step of a trial was counted at most once, in order."""
    for trial in state.trials:
        seen = set()
        for attempt, step, _ in trial.history:
            assert (attempt, step) not in seen, f"trial {trial.id} counted step {step} twice"
            seen.add((attempt, step))


def test_a_study_runs_to_the_end_with_local_workers(tmp_path):
    study = Study(CURVE, {"x": uniform(0.0, 1.0)}, "asha",
                  {"min_budget": 1, "max_budget": 9, "eta": 3, "max_trials": 9}, metric="loss")
    broker = run_local(study, tmp_path, workers=2, **FAST)
    assert broker.finished
    rows = broker.results()
    assert len(rows) == 9 and all(r["status"] in ("paused", "completed") for r in rows)
    assert rows[0]["best"] == pytest.approx(min((r["config"]["x"] - 0.3) ** 2 + 1 / r["step"] for r in rows))
    # The journal on disk replays to what the broker held.
    _, state, replayed = load_directory(tmp_path)
    assert replayed == rows
    counted_once(state)


def test_a_worker_killed_mid_trial_is_retried_from_its_checkpoint_elsewhere(tmp_path):
    study = Study(CURVE, {"x": grid([0.1, 0.5]), "sleep": 0.3}, "grid", {"budget": 8},
                  metric="loss")
    broker = Broker(study, tmp_path, **FAST).start()
    scratch = tmp_path / "scratch"
    workers = [worker(broker.address, name, "--workdir", str(scratch)) for name in ("victim", "spare")]
    try:
        # Wait until the victim's trial has a checkpoint past step 2, then kill it outright.
        def victim_trial():
            with broker._lock:
                tid = broker.state.workers.get("victim")
                trial = None if tid is None else broker.state.trials[tid]
                return trial if trial is not None and trial.checkpoint_step >= 2 else None

        trial = wait_for(victim_trial, 30, "a checkpoint from the victim")
        workers[0].send_signal(signal.SIGKILL)
        assert broker.wait(60)
        assert workers[1].wait(timeout=30) == 0  # told that the study is over
    finally:
        stop(*workers)
    state = broker.state
    assert [t.status.name for t in state.trials] == ["COMPLETED", "COMPLETED"]
    victim = state.trials[trial.id]
    assert victim.attempt == 2
    retry = [d for e, ds in _records(tmp_path) for d in ds if d[0] == "start" and d[1] == trial.id and d[2] == 2]
    assert retry and retry[0][3] == "spare" and retry[0][6] is not None  # resumed from a checkpoint
    resumed_at = min(step for attempt, step, _ in victim.history if attempt == 2)
    assert resumed_at > 2  # it did not train from scratch
    assert max(step for _, step, _ in victim.history) == 8
    counted_once(state)
    # Each worker ran in a folder of its own inside --workdir; the spare, told the study was over,
    # removed its own; the victim could not.
    left = list(scratch.iterdir())
    assert len(left) == 1 and left[0].name.startswith("rung-worker-")
    assert list(left[0].glob("trial-*/attempt-1/attempt.log"))
    # The next worker started there removes the folder of the killed one (its owner is dead).
    later = worker(broker.address, "later", "--workdir", str(scratch), "--give-up", "0.5")
    assert later.wait(timeout=30) == 2  # no broker any more: it gave up, and removed its own
    assert list(scratch.iterdir()) == []


def replies(sock, *kinds):
    """What the broker says to `sock` until it has said each of `kinds`."""
    got = []
    while not all(any(isinstance(m, kind) for m in got) for kind in kinds):
        assert sock.poll(10_000), f"no {[k.__name__ for k in kinds]} from the broker; got {got}"
        got.append(p.decode(sock.recv_multipart()))
    return got


def hello_and_run(sock):
    """Say hello as worker "w" and return the Run the broker answers with."""
    sock.send_multipart(p.encode(p.Hello("w", 1, "cpu", "h", 1, [], [])))
    return next(m for m in replies(sock, p.Run) if isinstance(m, p.Run))


def report_and_end(sock, run):
    """As worker "w": one result of `run` at step 1, then its end."""
    sock.send_multipart(p.encode(p.Result("w", 1, run.trial, run.attempt, 1, 1.0, {"loss": 0.5})))
    sock.send_multipart(p.encode(p.Ended("w", 1, run.trial, run.attempt, 2, "finished", "returned")))


def peer(address):
    """A bare DEALER connected to the broker: a worker whose every byte the test writes."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    return sock


def _records(directory):
    return read_records(directory / "journal")[1:]


def test_a_broker_killed_mid_study_resumes_and_ends_as_an_uninterrupted_run(tmp_path):
    study_file = tmp_path / "study.toml"
    study_file.write_text(
        f'trainable = "{CURVE}"\nmetric = "loss"\n[algorithm]\nname = "grid"\nbudget = 3\n'
        '[space]\nx = ["grid", [0.0, 0.15, 0.3, 0.45, 0.6, 0.75]]\nsleep = 0.05\n')
    address = f"tcp://127.0.0.1:{free_port()}"
    directory = tmp_path / "interrupted"

    def start_broker():
        return rung("broker", "--study", str(study_file), "--dir", str(directory), "--bind", address,
                    "--heartbeat", "0.1", "--liveness", "1.5", stderr=subprocess.DEVNULL)

    broker = start_broker()
    workers = [worker(address, f"w{i}") for i in range(2)]
    try:
        wait_for(lambda: (directory / "journal").exists() and sum(
            1 for r in _records(directory) if r[0][0] == "result") >= 4, 30, "four results")
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        before = _records(directory)
        assert not any(d[0] == "finish" for _, ds in before for d in ds), "killed too late"
        broker = start_broker()
        assert broker.wait(timeout=60) == 0
        for w in workers:
            assert w.wait(timeout=30) == 0  # told by the restarted broker that the study is over
    finally:
        stop(broker, *workers)
    _, state, rows = load_directory(directory)
    assert state.finished and [t.status.name for t in state.trials] == ["COMPLETED"] * 6
    counted_once(state)
    table = rung("results", str(directory), "--format", "csv", "--top", "2", stdout=subprocess.PIPE,
                 text=True).communicate(timeout=30)[0].splitlines()
    assert table[0].startswith("trial,status,best_loss,budget,attempts") and len(table) == 3
    refused = rung("results", str(directory), "--schedule", stderr=subprocess.PIPE, text=True)
    assert refused.wait(timeout=30) == 2
    assert refused.stderr.read().strip().endswith("only pbt and fire-pbt do, once a member has finished "
                                                  "a segment")
    reference = run_local(Study.load(study_file), tmp_path / "reference", workers=2, **FAST)
    strip = lambda rs: sorted((r["config"]["x"], r["best"], r["status"]) for r in rs)  # noqa: E731
    assert strip(rows) == strip(reference.results())


def test_a_torn_last_record_is_recovered_and_a_corrupt_middle_is_refused(tmp_path):
    study = Study(CURVE, {"x": grid([0.2, 0.4])}, "grid", {"budget": 2})
    run_local(study, tmp_path, workers=1, **FAST)
    journal = tmp_path / "journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-3])  # the last record cut short, as by a crash mid-write
    with Broker(study, tmp_path, **FAST) as broker:
        assert broker.finished is False or broker.finished  # it opened
    assert list(tmp_path.glob("journal.torn-*"))
    # Now damage a record in the middle: the broker must refuse, naming the offset.
    data = bytearray(journal.read_bytes())
    data[len(data) // 2] ^= 0xFF
    journal.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match=r"record at byte \d+ is corrupt"):
        Broker(study, tmp_path, **FAST).start()
    # status and results say so too, rather than show the valid prefix as if it were the study.
    for command in ("status", "results"):
        cli = rung(command, str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = cli.communicate(timeout=30)
        assert cli.returncode == 2 and not out
        assert "is corrupt and valid records follow it" in err and err.count("\n") == 1
    assert journal.read_bytes() == bytes(data)  # and change nothing


def test_garbage_and_impostors_get_errors_and_the_study_goes_on(tmp_path):
    study = Study(CURVE, {"x": grid([0.1, 0.2, 0.3])}, "grid", {"budget": 2})
    broker = Broker(study, tmp_path, **FAST).start()
    rogue = peer(broker.address)
    good = None
    try:
        attacks = [
            [b"garbage"],
            [b"\x00" * 10, b"\xff" * 10],
            [b"RUNG\x09", msgpack.packb({"t": "hello"})],
            [p.HEADER, b"\x00" * (p.codec.MAX_PAYLOAD + 1)],
            p.encode(p.Result("rogue", 1, 0, 1, 1, 1.0, {"loss": -1e9})),
        ]
        replies = []
        for frames in attacks:
            rogue.send_multipart(frames)
            assert rogue.poll(5000), f"no reply to {frames[:1]!r}"
            replies.append(p.decode(rogue.recv_multipart()))
        assert [type(r) for r in replies] == [p.Error, p.Error, p.Error, p.Error, p.Rejoin]
        assert "2 or 3 frames" in replies[0].reason and "bad magic" in replies[1].reason
        assert "major version 9" in replies[2].reason and "exceeds" in replies[3].reason
        # A registered worker speaking for an attempt that was never its own.
        rogue.send_multipart(p.encode(p.Hello("rogue", 1, "cpu", "h", 1, [])))
        wait_for(lambda: rogue.poll(100) and isinstance(p.decode(rogue.recv_multipart()), p.Welcome),
                 10, "welcome")
        rogue.send_multipart(p.encode(p.Result("rogue", 1, 0, 7, 1, 1.0, {"loss": -1e9})))
        error = wait_for(lambda: _next_error(rogue), 10, "an error about the attempt")
        assert "never given to worker 'rogue'" in error.reason
        rogue.send_multipart(p.encode(p.Goodbye("rogue", 1, "done")))
        good = worker(broker.address, "honest")
        assert broker.wait(60)
    finally:
        rogue.close()
        stop(*(w for w in [good] if w is not None))
    rows = broker.results()
    assert len(rows) == 3 and all(r["best"] > 0 for r in rows)  # the -1e9 never entered
    assert broker.state.stale_results == 0


def _next_error(sock):
    while sock.poll(100):
        message = p.decode(sock.recv_multipart())
        if isinstance(message, p.Error):
            return message
    return None


def test_user_code_that_raises_stays_silent_or_hangs_fails_and_the_study_goes_on(tmp_path):
    study = Study(CURVE, {"mode": grid(["raise", "silent", "hang", "ok"]), "x": 0.3}, "grid",
                  {"budget": 2})
    broker = Broker(study, tmp_path, **FAST).start()
    process = worker(broker.address, "w", "--progress-timeout", "1")
    try:
        assert broker.wait(60)
    finally:
        stop(process)
    reasons = {t.config["mode"]: (t.status.name, t.reason) for t in broker.state.trials}
    status, reason = reasons["raise"]  # the error, then the end of its log: here the traceback
    assert status == "FAILED" and reason.startswith("RuntimeError: the model diverged\nTraceback")
    assert reason.endswith('raise RuntimeError("the model diverged")\nRuntimeError: the model diverged')
    assert reasons["silent"] == ("FAILED", "the attempt ended without a result")
    assert reasons["hang"][0] == "FAILED" and "progress watchdog" in reasons["hang"][1]
    assert reasons["ok"][0] == "COMPLETED"


@pytest.mark.parametrize("flags, devices", [(["--gpu", "3"], {3.0}), (["--gpus", "5,6"], {5.0, 6.0})],
                         ids=["gpu", "gpus-list"])
def test_a_trial_sees_only_the_accelerator_its_worker_pins(tmp_path, flags, devices):
    # Trials wait for the gate until every worker has joined: a worker whose hello came after the
    # study ended would never hear Shutdown (the broker is gone) and would keep its command running.
    gate = tmp_path / "gate"
    study = Study("tests.trainables.toy:reports_env", {"n": grid([1, 2, 3, 4]), "gate": grid([str(gate)])},
                  "grid", {"budget": 1}, metric="cuda")
    broker = Broker(study, tmp_path / "study", **FAST).start()
    process = rung("worker", "--connect", broker.address, *flags, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(broker.state.workers) == len(devices), 30, "every worker to join")
        gate.touch()
        assert broker.wait(60)
        assert process.wait(timeout=30) == 0
    finally:
        stop(process)
    assert {row["best"] for row in broker.results()} <= devices


def test_curve_keys_let_authorized_workers_in_and_keep_others_out(tmp_path):
    from rung.keys import create_keys

    keys = create_keys(tmp_path / "keys")
    stranger = create_keys(tmp_path / "stranger")  # a pair the broker never authorized
    (stranger / "broker.key").write_bytes((keys / "broker.key").read_bytes())
    study = Study(CURVE, {"x": grid([0.1, 0.2])}, "grid", {"budget": 1})
    with pytest.raises(ValueError, match="give CurveZMQ keys"):
        Broker(study, tmp_path / "open", bind="tcp://0.0.0.0:0")
    broker = Broker(study, tmp_path / "study", curve=keys, **FAST).start()
    intruder = worker(broker.address, "intruder", "--curve", str(stranger))
    try:
        with pytest.raises(AssertionError):
            wait_for(lambda: broker.state.workers, 2, "the intruder to get in")
        honest = worker(broker.address, "honest", "--curve", str(keys))
        assert broker.wait(60)
    finally:
        stop(intruder, honest)
    assert set(broker.state.workers) == {"honest"}


def test_status_asks_a_live_broker_or_reads_a_directory(tmp_path):
    study = Study(CURVE, {"x": grid([0.1, 0.2])}, "grid", {"budget": 1}, name="probe")
    broker = Broker(study, tmp_path, **FAST).start()
    try:
        live = rung("status", broker.address, stdout=subprocess.PIPE, text=True)
        out, _ = live.communicate(timeout=30)
        assert live.returncode == 0
        assert out.startswith("study 'probe': grid, loss (min), in progress")
        assert "trials: none" in out  # no worker has joined yet
    finally:
        broker.stop()
        broker.wait()
    offline = rung("status", str(tmp_path), stdout=subprocess.PIPE, text=True)
    assert offline.communicate(timeout=30)[0].startswith("study 'probe'")


def test_pbt_clones_between_workers_and_survives_a_killed_worker(tmp_path):
    study = Study(CURVE, {"x": uniform(0.0, 1.0), "sleep": 0.05}, "pbt",
                  {"population": 4, "ready": 2, "max_budget": 12, "factors": [0.5, 2.0]})
    broker = Broker(study, tmp_path, **FAST).start()
    workers = [worker(broker.address, f"w{i}") for i in range(3)]
    try:
        def cloned():
            with broker._lock:
                return any(t.info.get("clones") for t in broker.state.trials)

        wait_for(cloned, 60, "a first clone")
        workers[0].send_signal(signal.SIGKILL)
        assert broker.wait(90)
    finally:
        stop(*workers)
    state = broker.state
    assert [t.status.name for t in state.trials] == ["COMPLETED"] * 4
    assert all(max(step for _, step, _ in t.history) == 12 for t in state.trials)
    counted_once(state)
    clones = [d for _, ds in _records(tmp_path) for d in ds if d[0] == "clone"]
    assert clones and all(d[6] is not None for d in clones)  # every clone resumed a stored checkpoint
    # The best member's schedule, as `rung results --schedule` shows it: from step 0, in order, and
    # through at least one clone (whose weights came from another member).
    shown = rung("results", str(tmp_path), "--schedule", "--format", "json", stdout=subprocess.PIPE)
    schedule = json.loads(shown.communicate(timeout=30)[0])
    assert schedule == broker.schedule()
    steps = [row["from_step"] for row in schedule]
    assert steps[0] == 0 and steps == sorted(steps) and steps[-1] < 12
    best = broker.results()[0]["trial"]
    assert schedule[-1]["member"] == best and schedule[-1]["config"] == broker.results()[0]["config"]


def test_a_peer_that_keeps_sending_garbage_is_no_longer_answered(tmp_path):
    from rung.broker.broker import MAX_BAD_MESSAGES

    study = Study(CURVE, {"x": grid([0.1])}, "grid", {"budget": 1})
    broker = Broker(study, tmp_path, **FAST).start()
    rogue = peer(broker.address)
    try:
        answered = 0
        for _ in range(MAX_BAD_MESSAGES + 10):
            rogue.send_multipart([b"junk", b"junk"])
            if rogue.poll(1000):
                rogue.recv_multipart()
                answered += 1
        assert answered == MAX_BAD_MESSAGES + 1
    finally:
        rogue.close()
        broker.stop()
        broker.wait()


def test_a_failed_fsync_stops_the_broker_and_is_never_retried(tmp_path, monkeypatch):
    import os

    from rung.broker.journal import JournalFailed

    study = Study(CURVE, {"x": grid([0.1, 0.2])}, "grid", {"budget": 1})
    broker = Broker(study, tmp_path, **FAST).start()

    def failing(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    process = worker(broker.address, "w")  # its hello makes a record: the commit must fail
    try:
        with pytest.raises(JournalFailed):
            broker.wait(30)
    finally:
        stop(process)


def test_a_worker_outpacing_a_stalled_broker_loses_nothing(tmp_path):
    # The broker is frozen while its worker floods it with results and a checkpoint larger than the
    # queues between them. The worker's socket refuses messages once its queue is full; every one
    # of them must still arrive, in order, once the broker thaws, with no reconnect to make up for
    # them (liveness is longer than the freeze).
    budget = 40_000
    study_file = tmp_path / "study.toml"
    study_file.write_text(
        f'trainable = "tests.trainables.study:flood"\nmetric = "loss"\n[algorithm]\nname = "grid"\n'
        f'budget = {budget}\n[space]\nkib = 8192\n')
    address = f"tcp://127.0.0.1:{free_port()}"
    directory = tmp_path / "study"
    broker = rung("broker", "--study", str(study_file), "--dir", str(directory), "--bind", address,
                  "--heartbeat", "0.5", "--liveness", "20", stderr=subprocess.DEVNULL)
    flooder = worker(address, "w0")
    try:
        wait_for(lambda: (directory / "journal").exists() and any(
            r[0][0] == "start" or any(d[0] == "start" for d in r[1]) for r in _records(directory)),
            30, "the trial to start")
        broker.send_signal(signal.SIGSTOP)
        try:
            time.sleep(4)  # the flood fills every queue meanwhile
        finally:
            broker.send_signal(signal.SIGCONT)
        assert broker.wait(timeout=60) == 0
        assert flooder.wait(timeout=30) == 0
    finally:
        stop(broker, flooder)
    records = _records(directory)
    steps = [event[3] for event, _ in records if event[0] == "result"]
    assert steps == [float(step) for step in range(1, budget + 1)]
    # Both checkpoints at that step, each with its own bytes (they once shared the worker's file; a
    # key names its content's digest).
    stored = [event for event, _ in records if event[0] == "checkpoint"]
    assert [event[1:4] for event in stored] == [[0, 1, budget // 2]] * 2
    assert len({event[4] for event in stored}) == 2
    assert not any(event[0] == "worker_lost" for event, _ in records)


def test_a_gap_in_an_attempts_messages_is_never_passed_over(tmp_path):
    # Messages queued on a connection that drops are lost with it, and ZeroMQ reconnects underneath:
    # the broker then sees seq 3 after seq 1. It must not take 3 (a cumulative ack would then cover
    # the missing 2 for good); it asks the worker to say hello, and takes the resent 2 and 3 in order.
    study = Study(CURVE, {"x": grid([0.1])}, "grid", {"budget": 3})
    broker = Broker(study, tmp_path, **FAST).start()
    sock = peer(broker.address)

    def result(seq, step):
        sock.send_multipart(p.encode(p.Result("w", 1, 0, 1, seq, float(step), {"loss": 1.0 / step})))

    try:
        sock.send_multipart(p.encode(p.Hello("w", 1, "cpu", "h", 1, [])))
        assert any(isinstance(m, p.Run) for m in replies(sock, p.Run))
        result(1, 1)
        result(3, 3)  # seq 2 was lost on the way
        got = replies(sock, p.Rejoin, p.Ack)
        assert [m.seq for m in got if isinstance(m, p.Ack)] == [1]
        assert "missing" in next(m for m in got if isinstance(m, p.Rejoin)).reason
        sock.send_multipart(p.encode(p.Hello("w", 1, "cpu", "h", 1, [[0, 1]])))
        replies(sock, p.Welcome)
        for seq in (1, 2, 3):  # the whole outbox again, oldest first
            result(seq, seq)
        sock.send_multipart(p.encode(p.Ended("w", 1, 0, 1, 4, "finished", "returned")))
        assert broker.wait(30)
    finally:
        sock.close()
    steps = [event[3] for event, _ in _records(tmp_path) if event[0] == "result"]
    assert steps == [1.0, 2.0, 3.0]
    assert broker.results()[0]["status"] == "completed"


def test_a_worker_whose_hello_went_unanswered_says_it_again(tmp_path):
    # A hello lost on the way, while heartbeats (answered) keep the connection looking alive, must not
    # hold the worker's outbox back forever: without a welcome for the liveness window, it says hello
    # again.
    import threading

    from rung.worker.agent import Worker

    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    agent = Worker(f"tcp://127.0.0.1:{port}", name="w", workdir=tmp_path / "w", log=open(os.devnull, "w"))
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    hellos = []
    try:
        give_up = time.monotonic() + 3 * agent.liveness
        while len(hellos) < 2 and time.monotonic() < give_up:
            if not router.poll(100):
                continue
            route, *frames = router.recv_multipart()
            message = p.decode(frames)
            if isinstance(message, p.Hello):
                hellos.append(time.monotonic())  # never welcomed
            elif isinstance(message, p.Heartbeat):
                router.send_multipart([route, *p.encode(p.Pong("w"))])
    finally:
        agent.stop()
        thread.join(10)
        router.close()
    assert len(hellos) == 2 and hellos[1] - hellos[0] >= agent.liveness * 0.9


def test_a_checkpoint_whose_chunks_were_lost_is_asked_for_again_not_passed_over(tmp_path):
    # Chunks carry no seq: lost with a dropped connection, they show only when the upload ends short.
    # The end is then not taken (nor acknowledged); the worker is asked to say hello and send the
    # upload again, and the checkpoint counts once it has all its bytes.
    import hashlib

    study = Study(CURVE, {"x": grid([0.1])}, "grid", {"budget": 3})
    broker = Broker(study, tmp_path, **FAST).start()
    sock = peer(broker.address)
    data = b"weights!" * 1000
    digest = hashlib.sha256(data).hexdigest()
    begin = p.CheckpointBegin("w", 1, 0, 1, "up-1", 1.0, len(data), digest)
    end = p.CheckpointEnd("w", 1, 0, 1, 1, "up-1", 1.0)

    try:
        sock.send_multipart(p.encode(p.Hello("w", 1, "cpu", "h", 1, [])))
        replies(sock, p.Run)
        sock.send_multipart(p.encode(begin))
        sock.send_multipart(p.encode(p.CheckpointChunk("w", 1, "up-1", 0, data[:3000])))
        sock.send_multipart(p.encode(end))  # the chunk with the other 5000 bytes was lost
        got = replies(sock, p.Rejoin)
        assert any(isinstance(m, p.Error) and "3000 bytes written" in m.reason for m in got)
        assert not any(isinstance(m, p.Ack) for m in got)
        sock.send_multipart(p.encode(p.Hello("w", 1, "cpu", "h", 1, [[0, 1]])))
        replies(sock, p.Welcome)
        for message in (begin, p.CheckpointChunk("w", 1, "up-1", 0, data[:4000]),
                        p.CheckpointChunk("w", 1, "up-1", 4000, data[4000:]), end):
            sock.send_multipart(p.encode(message))
        assert [m.seq for m in replies(sock, p.Ack) if isinstance(m, p.Ack)] == [1]
    finally:
        broker.stop()
        broker.wait(10)
        sock.close()
    stored = [event for event, _ in _records(tmp_path) if event[0] == "checkpoint"]
    assert len(stored) == 1 and stored[0][1:4] == [0, 1, 1.0]
    assert (tmp_path / "checkpoints" / stored[0][4]).read_bytes() == data


def test_a_hello_that_crosses_its_run_does_not_lose_the_attempt(tmp_path):
    # A worker says hello again (a rejoin came) while the broker's Run is on its way: the hello cannot
    # list the attempt yet. The attempt is not declared lost for it, and the study carries on.
    study = Study(CURVE, {"x": grid([0.1])}, "grid", {"budget": 1})
    broker = Broker(study, tmp_path, **FAST).start()
    sock = peer(broker.address)
    try:
        run = hello_and_run(sock)
        sock.send_multipart(p.encode(p.Hello("w", 1, "cpu", "h", 1, [])))
        replies(sock, p.Welcome)
        report_and_end(sock, run)
        assert broker.wait(30)
    finally:
        sock.close()
    assert not any(event[0] == "worker_ready" for event, _ in _records(tmp_path))
    assert broker.results()[0]["status"] == "completed" and broker.results()[0]["attempts"] == 1


def test_a_restarted_broker_takes_an_inherited_attempt_from_the_seq_its_worker_names(tmp_path):
    # The journal keeps no seqs. After a restart, the worker's hello names its first unacknowledged
    # seq (3); the broker takes the attempt's messages from there, so 4 arriving alone (3 lost on the
    # way) is a gap, asked for again, not a baseline that would pass 3 over.
    study = Study(CURVE, {"x": grid([0.1])}, "grid", {"budget": 5})
    address = f"tcp://127.0.0.1:{free_port()}"
    sock = peer(address)

    def result(seq):
        sock.send_multipart(p.encode(p.Result("w", 1, 0, 1, seq, float(seq), {"loss": 1.0 / seq})))

    broker = Broker(study, tmp_path, bind=address, **FAST).start()
    try:
        sock.send_multipart(p.encode(p.Hello("w", 1, "cpu", "h", 1, [], [])))
        replies(sock, p.Run)
        result(1)
        result(2)
        acked = 0
        while acked < 2:  # both journaled before the broker goes
            acked = max(acked, *(m.seq for m in replies(sock, p.Ack) if isinstance(m, p.Ack)))
        broker.stop()
        broker.wait(10)
        broker = Broker(study, tmp_path, bind=address, **FAST).start()
        wait_for(lambda: sum(e[0] == "result" for e, _ in _records(tmp_path)) == 2, 10, "two results")
        sock.send_multipart(p.encode(p.Hello("w", 1, "cpu", "h", 1, [[0, 1]], [[0, 1, 3]])))
        replies(sock, p.Welcome)
        result(4)  # 3 was lost on the way
        got = replies(sock, p.Rejoin)
        assert not any(isinstance(m, p.Ack) and m.seq >= 3 for m in got)
        sock.send_multipart(p.encode(p.Hello("w", 1, "cpu", "h", 1, [[0, 1]], [[0, 1, 3]])))
        replies(sock, p.Welcome)
        for seq in (3, 4, 5):
            result(seq)
        sock.send_multipart(p.encode(p.Ended("w", 1, 0, 1, 6, "finished", "returned")))
        assert broker.wait(30)
    finally:
        broker.stop()
        broker.wait(10)
        sock.close()
    steps = [event[3] for event, _ in _records(tmp_path) if event[0] == "result"]
    assert steps == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_message_over_another_connection_than_the_hellos_does_not_take_the_workers_route(tmp_path):
    # Late bytes of a connection the worker has given up on (or a connection ZeroMQ opened by itself)
    # must say hello first: they neither take the worker's route nor speak for its attempt.
    study = Study(CURVE, {"x": grid([0.1])}, "grid", {"budget": 1})
    broker = Broker(study, tmp_path, **FAST).start()
    current, stale = peer(broker.address), peer(broker.address)
    try:
        run = hello_and_run(current)
        stale.send_multipart(p.encode(p.Heartbeat("w", 1, [])))
        replies(stale, p.Rejoin)
        current.send_multipart(p.encode(p.Heartbeat("w", 1, [[run.trial, run.attempt]])))
        replies(current, p.Pong)
        report_and_end(current, run)
        assert broker.wait(30)
    finally:
        current.close()
        stale.close()
    assert broker.results()[0]["status"] == "completed" and broker.results()[0]["attempts"] == 1


def test_a_sweep_stops_at_its_byte_bound_so_checkpoint_chunks_never_pile_up(tmp_path, monkeypatch):
    # An upload's chunks queue up while the broker is busy; one sweep must not take them all into
    # memory at once (an iteration's batch is otherwise hundreds of messages).
    import hashlib

    from rung.broker.broker import SWEEP_BYTES

    held = []
    take = Broker._take

    def recording(self, sock):
        batch = take(self, sock)
        held.append(sum(len(message[-1]) for message in batch))
        return batch

    monkeypatch.setattr(Broker, "_take", recording)
    study = Study(CURVE, {"x": grid([0.1])}, "grid", {"budget": 3})
    broker = Broker(study, tmp_path, **FAST).start()
    sock = peer(broker.address)
    chunk = p.codec.MAX_DATA
    data = os.urandom(10 * chunk)
    messages = [p.CheckpointBegin("w", 1, 0, 1, "up-1", 1.0, len(data), hashlib.sha256(data).hexdigest())]
    messages += [p.CheckpointChunk("w", 1, "up-1", offset, data[offset:offset + chunk])
                 for offset in range(0, len(data), chunk)]
    messages.append(p.CheckpointEnd("w", 1, 0, 1, 1, "up-1", 1.0))
    try:
        sock.send_multipart(p.encode(p.Hello("w", 1, "cpu", "h", 1, [])))
        replies(sock, p.Run)
        with broker._lock:  # the loop stalls after one sweep: the rest of the upload queues
            for message in messages:
                sock.send_multipart(p.encode(message))
            time.sleep(1.0)
        assert [m.seq for m in replies(sock, p.Ack) if isinstance(m, p.Ack)] == [1]
    finally:
        broker.stop()
        broker.wait(10)
        sock.close()
    assert SWEEP_BYTES <= max(held) < SWEEP_BYTES + chunk
    stored = [event for event, _ in _records(tmp_path) if event[0] == "checkpoint"]
    assert (tmp_path / "checkpoints" / stored[0][4]).read_bytes() == data


def test_a_checkpoint_failing_its_digest_is_never_acknowledged_and_fails_its_attempt_if_it_keeps_failing(tmp_path):
    # The worker deletes its copy of a checkpoint once acknowledged, so a refused upload must never
    # be: it is asked for again, counts once it passes, and an upload refused again and again fails
    # its attempt with the store's reason instead of vanishing.
    import hashlib

    study = Study(CURVE, {"x": grid([0.1, 0.2])}, "grid", {"budget": 3})
    broker = Broker(study, tmp_path, **FAST).start()
    sock = peer(broker.address)
    data = b"weights!" * 1000

    def upload(run, name, digest):
        sock.send_multipart(p.encode(p.CheckpointBegin("w", 1, run.trial, run.attempt, name, 1.0,
                                                       len(data), digest)))
        sock.send_multipart(p.encode(p.CheckpointChunk("w", 1, name, 0, data)))
        sock.send_multipart(p.encode(p.CheckpointEnd("w", 1, run.trial, run.attempt, 1, name, 1.0)))

    def hello_again(run):
        sock.send_multipart(p.encode(p.Hello("w", 1, "cpu", "h", 1, [[run.trial, run.attempt]])))
        replies(sock, p.Welcome)

    try:
        run = hello_and_run(sock)
        upload(run, "up-1", "0" * 64)  # the bytes do not match the digest (a flipped bit on the way)
        got = replies(sock, p.Rejoin)
        assert any(isinstance(m, p.Error) and "SHA-256" in m.reason for m in got)
        assert not any(isinstance(m, p.Ack) for m in got)
        hello_again(run)
        upload(run, "up-1", hashlib.sha256(data).hexdigest())
        assert [m.seq for m in replies(sock, p.Ack) if isinstance(m, p.Ack)] == [1]
        sock.send_multipart(p.encode(p.Ended("w", 1, run.trial, run.attempt, 2, "finished", "returned")))

        second = next(m for m in replies(sock, p.Run) if isinstance(m, p.Run))
        for refusal in range(3):
            upload(second, "up-2", "0" * 64)
            got = replies(sock, p.Rejoin) if refusal < 2 else replies(sock, p.Stop)
            assert not any(isinstance(m, p.Ack) and m.trial == second.trial for m in got)
            if refusal < 2:
                hello_again(second)
        assert any(isinstance(m, p.Stop) and m.trial == second.trial and "refused 3 times" in m.reason
                   for m in got)
    finally:
        broker.stop()
        broker.wait(10)
        sock.close()
    stored = [event for event, _ in _records(tmp_path) if event[0] == "checkpoint"]
    assert len(stored) == 1 and stored[0][1] == run.trial
    failed = broker.results()
    trial = next(r for r in failed if r["trial"] == second.trial)
    assert trial["status"] == "failed" and "refused 3 times" in trial["reason"]
    assert "SHA-256" in trial["reason"]


def test_chunks_of_an_upload_whose_begin_was_lost_get_one_error_and_the_upload_goes_again(tmp_path):
    # After a partition heals, the chunks of an upload whose begin went down with the old connection
    # arrive first: one error for the upload (not one per chunk: a flood in the worker's log), then
    # its end asks for it all again.
    import hashlib

    study = Study(CURVE, {"x": grid([0.1])}, "grid", {"budget": 3})
    broker = Broker(study, tmp_path, **FAST).start()
    sock = peer(broker.address)
    data = bytes(range(256)) * 400
    chunks = [data[i:i + 1024] for i in range(0, len(data), 1024)]
    try:
        run = hello_and_run(sock)
        for index, chunk in enumerate(chunks):
            sock.send_multipart(p.encode(p.CheckpointChunk("w", 1, "up-1", index * 1024, chunk)))
        sock.send_multipart(p.encode(p.CheckpointEnd("w", 1, run.trial, run.attempt, 1, "up-1", 1.0)))
        got = replies(sock, p.Rejoin)
        errors = [m for m in got if isinstance(m, p.Error)]
        assert len(chunks) == 100 and len(errors) == 2, errors  # one for the chunks, one for the end
        assert "no upload" in errors[0].reason and "no upload" in errors[1].reason
        sock.send_multipart(p.encode(p.Hello("w", 1, "cpu", "h", 1, [[run.trial, run.attempt]])))
        replies(sock, p.Welcome)
        sock.send_multipart(p.encode(p.CheckpointBegin("w", 1, run.trial, run.attempt, "up-1", 1.0,
                                                       len(data), hashlib.sha256(data).hexdigest())))
        for index, chunk in enumerate(chunks):
            sock.send_multipart(p.encode(p.CheckpointChunk("w", 1, "up-1", index * 1024, chunk)))
        sock.send_multipart(p.encode(p.CheckpointEnd("w", 1, run.trial, run.attempt, 1, "up-1", 1.0)))
        got = replies(sock, p.Ack)
        assert not any(isinstance(m, p.Error) for m in got)
    finally:
        broker.stop()
        broker.wait(10)
        sock.close()
    stored = [event for event, _ in _records(tmp_path) if event[0] == "checkpoint"]
    assert len(stored) == 1 and (tmp_path / "checkpoints" / stored[0][4]).read_bytes() == data
