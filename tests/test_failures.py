"""How a study tells a failure from a result: a trial that diverged, a report without the study's
metric, and a trainable whose attempts fail one after another."""

import math

import pytest

from rung.algorithms import (
    ASHA,
    PBT,
    AttemptFinished,
    FirePBT,
    RandomSearch,
    ResultReported,
    StartTrial,
    TrialStatus,
    WorkerJoined,
)
from rung.summary import best_row, trial_rows
from tests.test_scenarios import SPACE, Study, only

# Each builds a study whose first trial's first attempt trains it to its full budget of 4.
TO_THE_END = {
    "random": lambda: RandomSearch(SPACE, budget=4, max_trials=2),
    "asha": lambda: ASHA(SPACE, min_budget=4, max_budget=4, max_trials=2),
    "pbt": lambda: PBT(SPACE, population=2, ready=4, max_budget=4),
    "fire-pbt": lambda: FirePBT(SPACE, subpopulations=2, size=2, ready=4, max_budget=4),
}


@pytest.mark.parametrize("build", TO_THE_END.values(), ids=TO_THE_END.keys())
@pytest.mark.parametrize("last", [math.nan, math.inf, -math.inf])
def test_a_trial_whose_last_metric_is_not_finite_ends_diverged_not_completed(build, last):
    study = Study(build())
    start = only(study(WorkerJoined("w")), StartTrial)
    assert (start.trial, start.budget) == (0, 4)
    study(ResultReported(0, 1, 2, {"loss": 0.25}))
    study(ResultReported(0, 1, 4, {"loss": last}))
    study(AttemptFinished(0, 1))
    assert study.trial(0).status == TrialStatus.DIVERGED
    assert study.trial(0).reason == f"diverged: loss is {last} at step 4"
    assert study.trial(0).best == 0.25  # what it reached before diverging stays on record


@pytest.mark.parametrize("mode", ["min", "max"])
def test_a_diverged_trial_is_listed_after_every_trial_that_did_not_diverge(mode):
    study = Study(RandomSearch(SPACE, budget=4, max_trials=3, mode=mode))
    study(WorkerJoined("w"))
    good, excellent_then_nan = (0.5, 0.1) if mode == "min" else (0.5, 0.9)
    study.train(0, excellent_then_nan, step=2)  # ends before its budget, its last value finite
    study(ResultReported(1, 1, 2, {"loss": excellent_then_nan}))
    study(ResultReported(1, 1, 4, {"loss": math.nan}))
    study(AttemptFinished(1, 1))
    study(AttemptFinished(2, 1))  # nothing reported: failed, no value at all
    rows = trial_rows(study.state, maximise=mode == "max")
    assert [(r["trial"], r["status"], r["best"]) for r in rows] == [
        (0, "completed", excellent_then_nan), (2, "failed", None), (1, "diverged", excellent_then_nan)]
    assert best_row(rows)["trial"] == 0


def test_a_study_whose_every_trial_diverged_has_no_best():
    study = Study(RandomSearch(SPACE, budget=4, max_trials=1))
    study(WorkerJoined("w"))
    study(ResultReported(0, 1, 2, {"loss": 0.1}))
    study.train(0, math.inf)
    rows = trial_rows(study.state, maximise=False)
    assert rows[0]["status"] == "diverged" and rows[0]["best"] == 0.1
    assert best_row(rows) is None
