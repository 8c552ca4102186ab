"""A study that cannot succeed stops at once and says why: a trainable that cannot import, a metric
name that does not match, a study without one good trial; `rung run` exits 1 and `rung.tune` raises,
with the first failure and the end of its log. An unbounded study is warned about at its start."""

import re
import subprocess

import pytest

import rung
from rung.algorithms import grid, uniform
from rung.broker.broker import Broker
from rung.study import Study
from tests.runtime import rung as rung_process

STUDY = """
name = "doomed"
trainable = "{trainable}"
metric = "{metric}"

[algorithm]
name = "asha"
min_budget = 1
max_budget = 9

[space]
x = ["uniform", 0.0, 1.0]
"""


@pytest.mark.parametrize("trainable, metric, first", [
    ("tests.trainables.no_such_module:train", "loss",
     "ImportError: cannot import trainable 'tests.trainables.no_such_module:train': "
     "ModuleNotFoundError: No module named 'tests.trainables.no_such_module'"),
    ("tests.trainables.study:curve", "los",
     "reported metrics ['loss'] but the study ranks 'los' (set metric in the study)"),
], ids=["cannot-import", "metric-typo"])
def test_a_study_whose_every_attempt_fails_stops_at_max_failures_and_rung_run_says_why(tmp_path, trainable,
                                                                                      metric, first):
    path = tmp_path / "doomed.toml"
    path.write_text(STUDY.format(trainable=trainable, metric=metric))
    run = rung_process("run", str(path), "--workers", "2", "--dir", str(tmp_path / "runs"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1, err
    assert "rung: the study failed: 10 attempts in a row failed in user code; the first: " in err
    assert f"trial 0 failed: {first}" in err
    assert f"rung logs {tmp_path / 'runs'} TRIAL" in err
    assert "has no limit" in err  # ASHA without max_trials: warned at the start
    assert "failed" in out and first[:40] in out  # the table's reason column
    table = rung_process("results", str(tmp_path / "runs"), "--format", "csv", stdout=subprocess.PIPE,
                         text=True).communicate(timeout=30)[0]
    assert table.splitlines()[0].endswith(",reason") and first in table


def test_rung_tune_raises_when_the_study_ends_without_one_good_trial(tmp_path):
    with pytest.raises(rung.StudyFailed) as failed:
        rung.tune("tests.trainables.study:curve", {"mode": grid(["raise", "silent"]), "x": 0.3}, "grid",
                  directory=tmp_path, progress=False, budget=1)
    assert str(failed.value).startswith("the study ended without one good trial (2 failed); trial 0 "
                                        "failed: RuntimeError: the model diverged\nTraceback")
    assert [row["status"] for row in failed.value.result.trials] == ["failed", "failed"]


@pytest.mark.parametrize("settings, warned", [({}, True), ({"max_trials": 5}, False),
                                              ({"total_budget": 50}, False)],
                         ids=["no-limit", "max_trials", "total_budget"])
def test_a_study_without_a_limit_is_warned_about_when_its_broker_starts(tmp_path, settings, warned):
    said = []
    study = Study("tests.trainables.study:curve", {"x": uniform(0.0, 1.0)}, "asha",
                  {"min_budget": 1, "max_budget": 9, **settings})
    with Broker(study, tmp_path, log=said.append):
        pass
    assert any("has no limit" in line for line in said) == warned


def test_a_report_the_wire_refuses_fails_its_attempt_at_the_worker_and_the_study_goes_on(tmp_path):
    study = Study("tests.trainables.study:long_metric", {"x": grid([0.1, 0.2])}, "grid", {"budget": 1})
    broker = Broker(study, tmp_path, heartbeat=0.1, liveness=1.5).start()
    helper = rung_process("worker", "--connect", broker.address, "--name", "w", stderr=subprocess.DEVNULL)
    try:
        assert broker.wait(60)
    finally:
        helper.kill()
        helper.wait()
    for row in broker.results():
        assert row["status"] == "failed"
        assert row["reason"].startswith("a report cannot be sent: `metrics key` must be 1 to 128 printable "
                                        "characters, got str of length 200")


@pytest.mark.parametrize("change, error", [
    (dict(space={"x" * 200: uniform(0.0, 1.0)}), "parameter name 'xxxxx"),
    (dict(metric="lo\nss"), "metric name 'lo\\nss' must be 1 to 128 printable characters"),
    (dict(trainable=["./train.sh"] * 300), "`trainable` must be at most 4096 characters, or a command line"),
], ids=["parameter-name", "metric-name", "command-line"])
def test_a_study_the_wire_cannot_carry_is_refused_when_it_is_made(change, error):
    settings = dict(trainable="tests.trainables.study:curve", space={"x": uniform(0.0, 1.0)}, metric="loss")
    with pytest.raises(ValueError, match="^" + re.escape(error)):
        Study(**{**settings, **change}, algorithm="random", settings={"budget": 1})


def test_a_worker_name_the_wire_cannot_carry_is_refused_at_once():
    named = rung_process("worker", "--connect", "tcp://127.0.0.1:9", "--name", "w" * 129,
                         stderr=subprocess.PIPE, text=True)
    assert named.wait(timeout=30) == 2
    assert "`name` is 'wwww" in named.stderr.read()


def test_a_stop_whose_reason_is_past_the_wires_bound_goes_out_clipped(tmp_path):
    # The trial is stopped for reporting 256 metrics none of which the study ranks: the reason names
    # them all (33 KB), more than the wire carries; the broker sends it clipped and goes on.
    study = Study("tests.trainables.study:many_metrics", {"x": grid([0.1])}, "grid", {"budget": 1})
    broker = Broker(study, tmp_path, heartbeat=0.1, liveness=1.5).start()
    helper = rung_process("worker", "--connect", broker.address, "--name", "w", "--stop-grace", "1",
                          stderr=subprocess.DEVNULL)
    try:
        assert broker.wait(60)
        assert helper.wait(timeout=30) == 0
    finally:
        helper.kill()
        helper.wait()
    row = broker.results()[0]
    assert row["status"] == "failed" and row["reason"].startswith("reported metrics ['000mmm")
    assert len(row["reason"]) > 33000  # whole in the journal
