"""A study that cannot succeed stops at once and says why: a trainable that cannot import, a metric
name that does not match, a study without one good trial; `rung run` exits 1 and `rung.tune` raises,
with the first failure and the end of its log. An unbounded study is warned about at its start."""

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
