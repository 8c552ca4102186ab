"""One trial attempt in a real child process: what the worker's loop sees from `rung.worker.attempt`.

The trainables live in tests/trainables/. Every wait goes through `collect`, which sleeps in select()
on the attempt's descriptor, as the worker's loop does, never for a fixed time.
"""

import math
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest

from rung.worker.attempt import (Attempt, AttemptSpec, Exited, Interpreter, Reported, Saved,
                                 function_environment)
from rung.worker.reaper import become_subreaper, reap_orphans

ROOT = Path(__file__).resolve().parent.parent
LINES = [sys.executable, str(ROOT / "tests" / "trainables" / "lines.py")]


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch):
    # The child imports what the worker can import; make "tests.trainables" importable however
    # pytest was started.
    monkeypatch.syspath_prepend(str(ROOT))


@pytest.fixture
def start(tmp_path):
    attempts = []

    def start(trainable, *, attempt=1, config=None, budget=3, checkpoint=None, checkpoint_step=0,
              env=None, interpreter=None):
        spec = AttemptSpec(trial=7, attempt=attempt, trainable=trainable, config=config or {},
                           budget=budget, checkpoint=checkpoint, checkpoint_step=checkpoint_step)
        running = Attempt(spec, tmp_path / f"attempt-{len(attempts) + 1}", env or {})
        attempts.append(running)
        running.start(interpreter)
        return running

    yield start
    for running in attempts:
        running.close()


def collect(attempt, until=Exited, timeout=10.0):
    """Messages from `attempt` up to and including the first of type `until`."""
    messages = []
    give_up = time.monotonic() + timeout
    while not any(isinstance(message, until) for message in messages):
        now = time.monotonic()
        assert now < give_up, f"no {until.__name__} within {timeout} s; got {messages}"
        wait = give_up - now
        if attempt.deadline is not None:
            wait = min(wait, max(0.0, attempt.deadline - now))
        select.select([attempt.fileno()], [], [], wait)
        messages += attempt.poll()
    return messages


def kinds(messages):
    return [type(message).__name__ for message in messages]


def is_gone(pid, timeout=2.0):
    """Whether process `pid` has died within `timeout` (a zombie waiting for a reaper counts)."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rpartition(")")[2].split()[0] == "Z":
                    return True  # this container's init may never reap it
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.01)
    return False


# -- Python function trainables

def test_a_function_reports_and_checkpoints_each_step_then_finishes(start):
    messages = collect(start("tests.trainables.toy:counts", budget=3))

    assert kinds(messages) == ["Reported", "Saved"] * 3 + ["Exited"]
    assert [m.step for m in messages[:-1]] == [1, 1, 2, 2, 3, 3]
    assert messages[4] == Reported(3.0, {"counter": 3.0, "loss": 1 / 3})
    assert messages[-1] == Exited("finished", "returned")
    saved = messages[5]
    assert msgpack.unpackb(saved.path.read_bytes(), raw=False) == {
        "step": 3.0, "state": {"counter": 3, "blob": b"\x00\x01", "nested": [1.5, None, True, "x"]}}
    assert len({m.path for m in messages if isinstance(m, Saved)}) == 3  # one file per save


def test_a_second_attempt_resumes_from_the_first_attempts_checkpoint(start):
    first = collect(start("tests.trainables.toy:counts", budget=2))
    checkpoint = first[-2]
    assert isinstance(checkpoint, Saved) and checkpoint.step == 2

    second = collect(start("tests.trainables.toy:counts", attempt=2, budget=4,
                           checkpoint=checkpoint.path, checkpoint_step=checkpoint.step))

    reports = [m for m in second if isinstance(m, Reported)]
    assert [(r.step, r.metrics["counter"]) for r in reports] == [(3, 3), (4, 4)]
    assert second[-1].outcome == "finished"


def test_a_function_that_raises_fails_with_the_exception_and_logs_the_traceback(start):
    attempt = start("tests.trainables.toy:raises")
    messages = collect(attempt)

    assert messages == [Reported(1.0, {"loss": 1.0}), Exited("failed", "ZeroDivisionError: division by zero")]
    log = attempt.log_path.read_text()
    assert "Traceback (most recent call last)" in log and "return 1 / 0" in log


def test_a_function_that_returns_without_reporting_has_finished(start):
    assert collect(start("tests.trainables.toy:returns")) == [Exited("finished", "returned")]


def test_a_child_that_exits_without_a_word_is_described_by_its_exit_status(start):
    assert collect(start("tests.trainables.toy:exits_3")) == [Exited("failed", "exit code 3")]


def test_a_trainable_that_cannot_be_imported_fails_saying_so(start):
    [exited] = collect(start("tests.trainables.nowhere:train"))

    assert exited.outcome == "failed"
    assert "cannot import trainable 'tests.trainables.nowhere:train'" in exited.reason
    assert "No module named 'tests.trainables.nowhere'" in exited.reason


def test_the_child_imports_from_the_workers_sys_path(start, tmp_path, monkeypatch):
    (tmp_path / "only_on_sys_path.py").write_text("def train(trial):\n    trial.report(1, x=2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    assert collect(start("only_on_sys_path:train"))[0] == Reported(1.0, {"x": 2.0})


def test_printing_does_not_corrupt_the_protocol_and_goes_to_the_log(start):
    attempt = start("tests.trainables.toy:prints")
    messages = collect(attempt)

    assert kinds(messages) == ["Reported", "Reported", "Exited"]
    assert messages[0] == Reported(1.0, {"loss": 0.5})
    assert math.isnan(messages[1].metrics["loss"])  # NaN says "diverged"; it is not an error
    assert messages[2] == Exited("finished", "returned")
    log = attempt.log_path.read_bytes()
    assert b"text on stdout" in log and b"text on stderr" in log and b"\xa4done" in log


def test_saving_a_numpy_array_fails_with_a_message_saying_what_to_pass(start):
    messages = collect(start("tests.trainables.toy:saves_array"))

    exited = messages[-1]
    assert kinds(messages) == ["Reported", "Exited"]
    assert exited.outcome == "failed"
    assert exited.reason.startswith("TypeError: trial.save: state['weights'] has type numpy.ndarray")
    assert "arr.tobytes()" in exited.reason


def test_the_accelerator_pinned_in_env_is_what_the_trainable_sees(start):
    messages = collect(start("tests.trainables.toy:reports_env", env={"CUDA_VISIBLE_DEVICES": "3"}))

    assert messages[0] == Reported(1.0, {"cuda": 3.0})


def test_the_descriptor_turns_readable_when_the_child_reports(start):
    attempt = start("tests.trainables.toy:reports_then_waits")

    readable, _, _ = select.select([attempt.fileno()], [], [], 5.0)

    assert readable == [attempt.fileno()]
    messages = attempt.poll()
    while not messages:  # readable means something is there, though perhaps not a whole frame yet
        select.select([attempt.fileno()], [], [], 1.0)
        messages = attempt.poll()
    assert messages == [Reported(1.0, {"loss": 0.5})]
    assert attempt.last_progress <= time.monotonic()


# -- stopping

def test_stop_kills_a_trainable_that_ignores_sigterm_once_the_grace_period_is_over(start):
    attempt = start("tests.trainables.toy:ignores_sigterm")
    collect(attempt, until=Reported)  # its SIGTERM handler is in place

    stopped_at = time.monotonic()
    attempt.stop(grace=0.5)
    assert attempt.deadline == pytest.approx(stopped_at + 0.5, abs=0.05)
    assert attempt.poll(now=stopped_at + 0.1) == []  # SIGTERM ignored, grace not over
    messages = collect(attempt)

    assert time.monotonic() - stopped_at >= 0.5
    assert messages == [Exited("failed", "stopped: killed by signal 9 (SIGKILL)")]
    assert attempt.deadline is None
    assert "SIGKILL" in attempt.log_path.read_text()


def test_stop_reaches_the_processes_that_a_function_spawned(start):
    attempt = start("tests.trainables.toy:spawns_sleep")
    [report] = collect(attempt, until=Reported)
    sleeper = int(report.metrics["pid"])

    attempt.stop(grace=0.5)
    [exited] = collect(attempt)

    assert exited == Exited("failed", "stopped: killed by signal 15 (SIGTERM)")
    assert is_gone(sleeper)


def test_stop_reaches_the_children_of_a_shell_command(start):
    script = (f'{sys.executable} -c "import time; time.sleep(1000)" & '
              'echo "{\\"step\\": 0, \\"pid\\": $!}"; wait')
    attempt = start(["sh", "-c", script])
    [report] = collect(attempt, until=Reported)
    grandchild = int(report.metrics["pid"])

    attempt.stop(grace=0.5)
    [exited] = collect(attempt)

    assert exited.outcome == "failed" and exited.reason.startswith("stopped: killed by signal")
    assert is_gone(attempt.pid) and is_gone(grandchild)


def test_what_a_finished_trainable_left_running_is_killed_with_its_group(start):
    messages = collect(start("tests.trainables.toy:leaves_sleep_behind"))

    assert messages[-1] == Exited("finished", "returned")
    assert is_gone(int(messages[0].metrics["pid"]))


def test_the_exit_is_seen_even_when_a_fork_holds_the_channel_open(start):
    attempt = start("tests.trainables.toy:forks_and_returns")

    messages = collect(attempt, timeout=2.0)

    assert messages[-1] == Exited("finished", "returned")
    assert is_gone(int(messages[0].metrics["pid"]))


# -- command-line trainables

def test_a_command_reports_and_announces_checkpoints_on_stdout(start):
    attempt = start(LINES, config={"lr": 0.1}, budget=2)
    messages = collect(attempt)

    assert kinds(messages) == ["Reported", "Saved", "Reported", "Saved", "Exited"]
    assert messages[0] == Reported(1.0, {"counter": 1.0, "lr": 0.1, "trial": 7.0, "attempt": 1.0})
    assert messages[3].step == 2 and messages[3].path.read_text() == "2"
    assert messages[4] == Exited("finished", "exit code 0")
    log = attempt.log_path.read_text()
    assert "this line is not protocol" in log and '"note": "nor is this' in log
    assert '"counter"' not in log  # protocol lines are consumed, not logged


def test_a_command_resumes_from_the_file_named_in_rung_resume_from(start):
    checkpoint = collect(start(LINES, config={"lr": 0.1}, budget=2))[3]

    messages = collect(start(LINES, attempt=2, config={"lr": 0.1}, budget=3,
                             checkpoint=checkpoint.path, checkpoint_step=checkpoint.step))

    assert kinds(messages) == ["Reported", "Saved", "Exited"]
    assert messages[0] == Reported(3.0, {"counter": 3.0, "lr": 0.1, "trial": 7.0, "attempt": 2.0})


def test_a_failing_command_reports_its_exit_code_and_last_stderr_line(start):
    attempt = start(LINES, config={"lr": 0.1, "fail": True}, budget=1)
    messages = collect(attempt)

    assert messages[-1] == Exited("failed", "exit code 2: boom: the last stderr line")
    assert "something went wrong" in attempt.log_path.read_text()


def test_a_report_line_split_across_writes_is_read_whole(start):
    script = 'printf "{\\"st"; sleep 0.1; printf "ep\\": 1, \\"loss\\": 0.25}\\nplain text\\n"'
    attempt = start(["sh", "-c", script])

    assert collect(attempt) == [Reported(1.0, {"loss": 0.25}), Exited("finished", "exit code 0")]
    assert "plain text" in attempt.log_path.read_text()


def test_a_checkpoint_line_naming_no_file_fails_the_attempt_at_once(start):
    attempt = start(["sh", "-c", 'echo "{\\"checkpoint\\": \\"missing.bin\\", \\"step\\": 1}"; sleep 1000'])

    [exited] = collect(attempt, timeout=5.0)

    assert exited.outcome == "failed"
    assert "'missing.bin', which is not a file in RUNG_CHECKPOINT_DIR" in exited.reason


def test_a_command_that_cannot_be_run_fails_instead_of_raising(start):
    attempt = start(["/nonexistent/trainer", "--epochs", "3"])

    [exited] = collect(attempt, timeout=1.0)

    assert exited.outcome == "failed" and "cannot start" in exited.reason
    assert "No such file or directory" in exited.reason


def test_a_trainable_that_is_neither_a_function_name_nor_a_command_line_is_refused(tmp_path):
    spec = AttemptSpec(trial=1, attempt=1, trainable="train.py", config={}, budget=1.0,
                       checkpoint=None, checkpoint_step=0)

    with pytest.raises(ValueError, match="must be 'package.module:function' or a command line"):
        Attempt(spec, tmp_path, {})


def prepared(tmp_path, env=None):
    """An interpreter started ahead, as a worker keeps one, once it has started up."""
    interpreter = Interpreter(function_environment(env or {}), open(tmp_path / "interpreters.log", "ab"))
    readable, _, _ = select.select([interpreter.channel], [], [], 10)  # its "ready" frame
    assert readable, "the interpreter never started up"
    return interpreter


def test_an_interpreter_started_ahead_runs_the_attempt_and_starts_it_within_milliseconds(start, tmp_path):
    interpreter = prepared(tmp_path)
    began = time.monotonic()
    attempt = start("tests.trainables.toy:counts", budget=1, interpreter=interpreter)
    messages = collect(attempt, until=Reported)
    first_report = time.monotonic() - began

    assert attempt.pid == interpreter.process.pid
    assert messages[0] == Reported(1.0, {"counter": 1.0, "loss": 1.0})
    # A fresh interpreter takes tens of milliseconds to import rung; one started ahead is already past
    # that. Generous, as the machine is shared: the point is that no start-up is paid here.
    assert first_report < 0.5
    assert collect(attempt)[-1] == Exited("finished", "returned")
    assert b"toy:counts" in attempt.log_path.read_bytes()


def test_an_interpreter_with_another_environment_is_discarded_and_the_attempt_pinned_as_asked(start, tmp_path):
    interpreter = prepared(tmp_path, env={"CUDA_VISIBLE_DEVICES": "1"})
    attempt = start("tests.trainables.toy:reports_env", env={"CUDA_VISIBLE_DEVICES": "3"},
                    interpreter=interpreter)

    assert collect(attempt)[0] == Reported(1.0, {"cuda": 3.0})
    assert attempt.pid != interpreter.process.pid
    assert interpreter.process.returncode is not None  # reaped, not left behind


def test_an_interpreter_that_died_waiting_is_replaced(start, tmp_path):
    interpreter = prepared(tmp_path)
    os.kill(interpreter.process.pid, 9)
    interpreter.process.wait()
    attempt = start("tests.trainables.toy:returns", interpreter=interpreter)

    assert collect(attempt)[-1] == Exited("finished", "returned")
    assert attempt.pid != interpreter.process.pid


def test_a_discarded_interpreter_exits_and_runs_nothing(tmp_path):
    interpreter = prepared(tmp_path)
    pid = interpreter.process.pid
    interpreter.discard()

    assert is_gone(pid) and interpreter.process.returncode is not None
    assert b"Traceback" not in (tmp_path / "interpreters.log").read_bytes()


# -- processes that leave the attempt's process group

@pytest.fixture
def subreaper():
    # As a worker does, so that this process adopts (and reaps) what an attempt orphans; this
    # container's init never reaps. It lasts for the rest of the test session, which only means
    # that orphans of later tests come to pytest rather than to init.
    assert become_subreaper() is None


def escaping_script(tmp_path, then="exit 0", escaped="echo $$ > $F.tmp && mv $F.tmp $F && exec sleep 300"):
    """A command that runs `escaped` in a session of its own (so outside the attempt's process
    group), where it writes the pid to report to the file $F; reports that pid, then does `then`."""
    pid_file = tmp_path / "escaped.pid"
    script = tmp_path / "escapes.sh"
    script.write_text(
        f"F={pid_file} setsid sh -c '{escaped}' </dev/null >/dev/null 2>&1 &\n"
        f"while [ ! -s {pid_file} ]; do sleep 0.01; done\n"
        f'echo "{{\\"step\\": 1, \\"pid\\": $(cat {pid_file})}}"\n'
        f"{then}\n")
    return ["sh", str(script)]


def is_dead_and_reaped(pid):
    return not os.path.exists(f"/proc/{pid}")


def test_a_process_that_left_the_group_of_a_finished_command_is_killed_and_reaped(start, tmp_path,
                                                                                   subreaper):
    attempt = start(escaping_script(tmp_path))
    report, exited = collect(attempt)
    escaped = int(report.metrics["pid"])
    attempt.close()

    assert exited == Exited("finished", "exit code 0; killed 1 process that had left the attempt's "
                                        f"process group: pids {escaped}")
    assert is_dead_and_reaped(escaped)


def test_a_descendant_that_cleared_its_environment_dies_with_the_process_that_left_the_group(
        start, tmp_path, subreaper):
    attempt = start(escaping_script(
        tmp_path, escaped="env -i sleep 300 & echo $! > $F.tmp && mv $F.tmp $F; wait"))
    report, exited = collect(attempt)
    attempt.close()

    assert "killed 2 processes that had left" in exited.reason
    assert is_dead_and_reaped(int(report.metrics["pid"]))


def test_closing_a_running_attempt_kills_what_left_its_group_too(start, tmp_path, subreaper):
    attempt = start(escaping_script(tmp_path, then="sleep 300"))
    [report] = collect(attempt, until=Reported)

    attempt.close()

    assert is_dead_and_reaped(attempt.pid) and is_dead_and_reaped(int(report.metrics["pid"]))


DAEMON = '''
import os, time

def train(trial):
    # Daemonise as the textbook says: fork, setsid, fork again, and the first child exits.
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(write_end, str(os.getpid()).encode())
            time.sleep(300)
        os._exit(0)
    os.waitpid(first, 0)
    os.close(write_end)
    trial.report(1, pid=int(os.read(read_end, 32)))
'''


def test_a_daemon_started_by_a_function_dies_with_its_attempt_and_nothing_else_does(
        start, tmp_path, monkeypatch, subreaper):
    (tmp_path / "daemonises.py").write_text(DAEMON)
    monkeypatch.syspath_prepend(str(tmp_path))
    spare = prepared(tmp_path)  # the worker's next interpreter, a child of this process
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        attempt = start("daemonises:train")
        report, exited = collect(attempt)
        daemon = int(report.metrics["pid"])
        attempt.close()

        assert exited.reason.startswith("returned; killed 1 process that had left")
        assert is_dead_and_reaped(daemon)
        assert spare.ready() and bystander.poll() is None
    finally:
        spare.discard()
        bystander.kill()
        bystander.wait()


def test_a_process_that_left_the_group_and_exited_by_itself_is_reaped_as_an_orphan(start, tmp_path,
                                                                                    subreaper):
    # A subshell starts it and exits at once, so it is orphaned; it exits in turn, leaving a zombie.
    pid_file = tmp_path / "orphan.pid"
    script = tmp_path / "short.sh"
    script.write_text(
        f"( setsid sh -c 'echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}' </dev/null & )\n"
        f"while [ ! -s {pid_file} ]; do sleep 0.01; done\n"
        f"pid=$(cat {pid_file})\n"
        "while [ \"$(cut -d' ' -f3 /proc/$pid/stat)\" != Z ]; do sleep 0.01; done\n"
        'echo "{\\"step\\": 1, \\"pid\\": $pid}"\n')
    spare = prepared(tmp_path)
    try:
        attempt = start(["sh", str(script)])
        report, exited = collect(attempt)
        attempt.close()
        orphan = int(report.metrics["pid"])
        assert exited == Exited("finished", "exit code 0")
        assert not is_dead_and_reaped(orphan)  # a zombie, adopted by this process

        assert orphan in reap_orphans(keep={spare.process.pid})

        assert is_dead_and_reaped(orphan) and spare.ready()
    finally:
        spare.discard()
