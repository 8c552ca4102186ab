"""Trial logs reach the study directory through the broker, bounded per attempt, and `rung logs`
shows them, also while the attempt runs and after its worker was killed."""

import signal
import subprocess

from rung.algorithms import grid
from rung.broker.broker import Broker
from rung.protocol.messages import LOG_HEAD, LOG_TAIL
from rung.study import Study
from tests.runtime import rung, stop, wait_for, worker
from tests.test_runtime import FAST

CHATTY = "tests.trainables.study:chatty"


def logs(*args: str) -> subprocess.CompletedProcess:
    process = rung("logs", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def test_a_failed_attempts_log_is_kept_and_its_reason_carries_the_logs_last_lines(tmp_path):
    study = Study(CHATTY, {"lines": grid([30]), "fail": True}, "grid", {"budget": 1})
    broker = Broker(study, tmp_path / "study", **FAST).start()
    helper = worker(broker.address, "w")
    try:
        assert broker.wait(60)
    finally:
        stop(helper)
    row = broker.results()[0]
    assert row["status"] == "failed"
    assert row["reason"].startswith("ValueError: gave up after 30 lines\n")
    assert "line 30 " in row["reason"] and "Traceback" in row["reason"]
    shown = logs(str(tmp_path / "study"), "0")
    assert shown.returncode == 0, shown.stderr
    printed = shown.stdout.splitlines()
    assert [line.split()[1] for line in printed if line.startswith("line ")] == [str(n) for n in range(1, 31)]
    assert printed[-2:] == ["ValueError: gave up after 30 lines",
                            "[rung] failed: ValueError: gave up after 30 lines"]
    # The worker's folder is gone with the worker; the log is not.
    missing = logs(str(tmp_path / "study"), "0", "--attempt", "2")
    assert missing.returncode == 2 and "no log of attempt 2" in missing.stderr


def test_a_chatty_attempt_costs_the_head_node_its_head_and_tail_only(tmp_path):
    lines = 3 * LOG_HEAD // 100  # about three times the head, in lines of 100 bytes
    study = Study(CHATTY, {"lines": grid([lines]), "width": 88}, "grid", {"budget": lines})
    broker = Broker(study, tmp_path / "study", **FAST).start()
    helper = worker(broker.address, "w")
    try:
        assert broker.wait(120)
    finally:
        stop(helper)
    kept = sorted((tmp_path / "study" / "logs" / "trial-0").iterdir())
    assert sorted(f.stat().st_size for f in kept) == [LOG_TAIL, LOG_HEAD]
    shown = logs(str(tmp_path / "study"), "0").stdout.splitlines()
    assert shown[1].startswith("line 1 ") and shown[-2].startswith(f"line {lines} ")
    assert sum("of this log were left out" in line for line in shown) == 1


def test_a_log_is_followed_while_its_attempt_runs_and_outlives_a_killed_worker(tmp_path):
    study = Study(CHATTY, {"lines": grid([4000]), "sleep": 1.0}, "grid", {"budget": 4000})
    directory = tmp_path / "study"
    broker = Broker(study, directory, **FAST).start()
    victim = worker(broker.address, "victim")
    follower = None
    try:
        wait_for(lambda: (directory / "logs" / "trial-0" / "attempt-1.log").exists(), 30, "a log")
        follower = rung("logs", str(directory), "0", "--follow", stdout=subprocess.PIPE, text=True)
        wait_for(lambda: broker.progress()[1] is not None and broker.progress()[1][1] <= 1 / 2000, 30,
                 "line 2000 reported")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        # Lost with its worker, the attempt is over for the broker: the follower ends by itself.
        spare = worker(broker.address, "spare")
        out, _ = follower.communicate(timeout=60)
        assert broker.wait(60)
        stop(spare)
    finally:
        broker.stop()
        stop(victim, *([follower] if follower else []))
    numbers = [int(line.split()[1]) for line in out.splitlines() if line.startswith("line ")]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 2000
    retried = logs(str(directory), "0")
    assert retried.stdout.splitlines()[-2:] == ["line 4000 xxxxxxxxxx", "[rung] finished: returned"]


def test_following_a_log_ends_when_no_broker_serves_the_study(tmp_path):
    # The broker and its worker are killed outright: the journal still says the attempt runs, but
    # nothing will add to its log, and --follow says what there is and ends.
    from tests.runtime import free_port

    study = tmp_path / "study.toml"
    study.write_text('name = "s"\ntrainable = "tests.trainables.study:chatty"\n[algorithm]\nname = "grid"\n'
                     'budget = 4000\n[space]\nlines = ["grid", [4000]]\nsleep = 1.0\n')
    directory, address = tmp_path / "study", f"tcp://127.0.0.1:{free_port()}"
    head = rung("broker", "--study", str(study), "--dir", str(directory), "--bind", address,
                stderr=subprocess.DEVNULL)
    victim = worker(address, "victim")
    try:
        wait_for(lambda: (directory / "logs" / "trial-0" / "attempt-1.log").exists(), 30, "a log")
        for process in (head, victim):
            process.send_signal(signal.SIGKILL)
            process.wait()
        followed = logs(str(directory), "0", "--follow")
    finally:
        stop(head, victim)
    assert followed.returncode == 0 and followed.stdout.startswith("[rung] trial 0 attempt 1")
    missing = logs(str(directory), "0", "--attempt", "5", "--follow")
    assert missing.returncode == 2 and "has had 1 attempts; there is no attempt 5" in missing.stderr
