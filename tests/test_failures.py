"""How a study tells a failure from a result: a trial that diverged, a report without the study's
metric, and a trainable whose attempts fail one after another."""

import math

import msgpack
import pytest

from rung.algorithms import (
    ASHA,
    PBT,
    AttemptFailed,
    AttemptFinished,
    FinishStudy,
    FirePBT,
    MedianStopping,
    RandomSearch,
    ResultReported,
    StartTrial,
    StopTrial,
    TrialStatus,
    WorkerJoined,
    WorkerLost,
)
from rung.study import ALGORITHMS, Study as StudyFile
from rung.summary import best_row, format_summary, study_summary, trial_rows
from tests.test_fire_pbt import first_segments, fire, line, segment
from tests.test_scenarios import SPACE, Study, only

# Each builds a study whose first trial's first attempt trains it to its full budget of 4.
TO_THE_END = {
    "random": lambda: RandomSearch(SPACE, budget=4, max_trials=2),
    "asha": lambda: ASHA(SPACE, min_budget=4, max_budget=4, max_trials=2),
    "pbt": lambda: PBT(SPACE, population=2, ready=4, max_budget=4),
    "fire-pbt": lambda: FirePBT(SPACE, subpopulations=2, size=2, ready=4, max_budget=4),
    "median": lambda: MedianStopping(SPACE, budget=4, grace_period=1, max_trials=2),
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


def test_a_fire_pbt_evaluator_whose_last_metric_is_nan_when_the_population_finishes_diverged():
    algorithm = fire(max_budget=20)
    state, _ = first_segments(algorithm)  # and trial 4 evaluates member 2
    for member in range(4):
        segment(algorithm, state, member, line(0.1, 0.01))
    assert segment(algorithm, state, 4, line(0.1, 0.01)[:-1] + [math.nan]) == [
        FinishStudy("no work left and every attempt ended")]
    assert (state.trials[4].status, state.trials[4].reason) == (
        TrialStatus.DIVERGED, "diverged: Q is nan at step 20")


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


IMPORT_ERROR = "ModuleNotFoundError: No module named 'trainer'"


def test_a_study_whose_attempts_keep_failing_in_user_code_stops_and_says_it_failed():
    study = Study(RandomSearch(SPACE, budget=1, max_failures=3))
    study(WorkerJoined("a"))
    study(WorkerJoined("b"))  # trials 0 and 1 run
    assert only(study(AttemptFailed(0, 1, IMPORT_ERROR)), StartTrial).trial == 2
    assert only(study(AttemptFailed(1, 1, IMPORT_ERROR)), StartTrial).trial == 3
    reason = f"3 attempts in a row failed in user code; the first: {IMPORT_ERROR}"
    assert study(AttemptFailed(2, 1, IMPORT_ERROR)) == [StopTrial(3, 1, reason), FinishStudy(reason)]
    assert study.state.finished and study.state.failed and study.state.finish_reason == reason
    copy = study.algorithm.load_state(msgpack.unpackb(msgpack.packb(study.state.to_data())))
    assert copy.failed and copy.to_data() == study.state.to_data()


def test_a_finished_attempt_resets_the_count_and_a_lost_one_leaves_it_alone():
    study = Study(RandomSearch(SPACE, budget=1, max_failures=3))
    study(WorkerJoined("a"))
    study(AttemptFailed(0, 1, "ValueError: bad lr"))
    study(AttemptFailed(1, 1, "ValueError: bad lr"))
    study.train(2, 0.5)  # a good attempt: the failures before it were not the code's fault
    study(AttemptFailed(3, 1, "ValueError: bad lr"))
    study(AttemptFailed(4, 1, "ValueError: bad lr"))
    study(WorkerLost("a"))  # neither a failure nor a success
    study(WorkerJoined("b"))  # retries trial 5
    assert not study.state.finished
    decided = study(AttemptFailed(5, 2, "ValueError: lr is 7"))
    assert decided == [FinishStudy("3 attempts in a row failed in user code; the first: ValueError: bad lr")]
    assert study.state.failed


def test_an_attempt_that_ends_without_a_result_counts_as_a_failure():
    study = Study(RandomSearch(SPACE, budget=1, max_failures=2))
    study(WorkerJoined("a"))
    study(AttemptFinished(0, 1))
    assert only(study(AttemptFinished(1, 1)), FinishStudy).reason == (
        "2 attempts in a row failed in user code; the first: the attempt ended without a result")


def test_max_failures_0_never_stops_the_study():
    study = Study(RandomSearch(SPACE, budget=1, max_failures=0))
    study(WorkerJoined("a"))
    for tid in range(50):
        assert only(study(AttemptFailed(tid, 1, IMPORT_ERROR)), StartTrial).trial == tid + 1
    assert not study.state.failed


@pytest.mark.parametrize("reason, named", [
    ("RuntimeError: " + "x" * 1000, "RuntimeError: " + "x" * 283 + "..."),
    ("RuntimeError: boom\nTraceback (most recent call last):\n  ...", "RuntimeError: boom"),
], ids=["long", "with-its-log"])
def test_the_first_failure_is_named_by_its_first_line_in_at_most_300_characters(reason, named):
    study = Study(RandomSearch(SPACE, budget=1, max_failures=1))
    study(WorkerJoined("a"))
    finish = only(study(AttemptFailed(0, 1, reason)), FinishStudy)
    assert finish.reason.split("the first: ")[1] == named


@pytest.mark.parametrize("value", [-1, 1.5, True, "10"])
def test_max_failures_must_be_an_int_of_at_least_0(value):
    with pytest.raises(ValueError, match=f"^`max_failures` is {value!r}, but must be an int >= 0$"):
        RandomSearch(SPACE, max_failures=value)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_takes_max_failures_from_the_study_file(name):
    table = {"name": name, "max_failures": 4, **({"n_configs": 9} if name == "sha" else {})}
    study = StudyFile.from_data({"trainable": "m:f", "space": {"x": ["uniform", 0.0, 1.0]},
                                 "algorithm": table})
    assert study.build().max_failures == 4


def test_rung_status_says_the_study_failed():
    study = StudyFile("m:f", SPACE, "random", {"budget": 1, "max_failures": 2}, name="broken")
    stepped = Study(study.build())
    stepped(WorkerJoined("a"))
    stepped(AttemptFailed(0, 1, IMPORT_ERROR))
    stepped(AttemptFailed(1, 1, IMPORT_ERROR))
    summary = study_summary(study, stepped.state)
    assert summary["failed"] and summary["finished"]
    assert format_summary(summary).splitlines()[0] == (
        f"study 'broken': random, loss (min), failed: 2 attempts in a row failed in user code; "
        f"the first: {IMPORT_ERROR}")


UNRANKED = "reported metrics ['acc', 'val_loss'] but the study ranks 'loss' (set metric in the study)"


@pytest.mark.parametrize("build", TO_THE_END.values(), ids=TO_THE_END.keys())
def test_a_report_without_the_studys_metric_stops_the_attempt_and_fails_the_trial(build):
    study = Study(build())
    study(WorkerJoined("w"))
    assert study(ResultReported(0, 1, 1, {"val_loss": 0.3, "acc": 0.9})) == [StopTrial(0, 1, UNRANKED)]
    assert (study.trial(0).status, study.trial(0).reason) == (TrialStatus.FAILED, UNRANKED)
    assert study.trial(0).history == [[1, 1, {"val_loss": 0.3, "acc": 0.9}]]  # shown in its row
    assert all(0 not in rung.keys for bracket in study.state.brackets for rung in bracket.rungs)
    assert study(ResultReported(0, 1, 1, {"val_loss": 0.3, "acc": 0.9})) == []  # a duplicate
    assert study(ResultReported(0, 1, 2, {"val_loss": 0.2, "acc": 0.9})) == []  # sent before the stop came
    assert only(study(AttemptFinished(0, 1)), StartTrial).trial == 1


def test_reports_without_the_metric_count_towards_max_failures():
    study = Study(RandomSearch(SPACE, budget=4, max_failures=2))
    study(WorkerJoined("w"))
    study(ResultReported(0, 1, 1, {"val_loss": 0.3, "acc": 0.9}))
    study(AttemptFinished(0, 1))  # it stopped as told: the trial has failed all the same
    decided = study(ResultReported(1, 1, 1, {"val_loss": 0.3, "acc": 0.9}))
    assert decided == [StopTrial(1, 1, UNRANKED),
                       FinishStudy(f"2 attempts in a row failed in user code; the first: {UNRANKED}")]
    assert study.state.failed
