"""Scenarios told one event at a time: what each algorithm decides, and why."""

import math

import pytest

from rung.algorithms import (
    ASHA,
    AsyncHyperband,
    AttemptFailed,
    AttemptFinished,
    CheckpointStored,
    ConfigEnqueued,
    FinishStudy,
    GridSearch,
    Hyperband,
    MedianStopping,
    PromoteTrial,
    RandomSearch,
    ResultReported,
    StartTrial,
    StopRequested,
    StopTrial,
    SuccessiveHalving,
    TrialStatus,
    WorkerJoined,
    WorkerLost,
    grid,
    step,
    uniform,
)

SPACE = {"x": uniform(0.0, 1.0)}


class Study:
    """An algorithm and its state, fed one event at a time as the broker would."""

    def __init__(self, algorithm, seed=0):
        self.algorithm = algorithm
        self.state = algorithm.initial_state(seed)

    def __call__(self, event):
        return step(self.algorithm, self.state, event)

    def trial(self, tid):
        return self.state.trials[tid]

    def train(self, tid, value, *, step=None, metric="loss"):
        """The running attempt of `tid` reports `value` at its budget, checkpoints and ends."""
        trial = self.trial(tid)
        at = trial.budget if step is None else step
        decided = self(ResultReported(tid, trial.attempt, at, {metric: value}))
        decided += self(CheckpointStored(tid, trial.attempt, at, f"ckpt-{tid}-{at}"))
        return decided + self(AttemptFinished(tid, trial.attempt))


def only(decisions, kind):
    assert len(decisions) == 1 and isinstance(decisions[0], kind), decisions
    return decisions[0]


def test_a_lost_worker_costs_an_attempt_that_resumes_from_its_checkpoint_elsewhere():
    study = Study(RandomSearch(SPACE, budget=10, max_trials=1))
    start = only(study(WorkerJoined("gpu0")), StartTrial)
    assert (start.trial, start.attempt, start.checkpoint) == (0, 1, None)
    study(ResultReported(0, 1, 4, {"loss": 0.5}))
    study(CheckpointStored(0, 1, 4, "ckpt-a"))
    assert study(WorkerLost("gpu0", "missed 3 heartbeats")) == []
    assert study.trial(0).status == TrialStatus.PENDING
    retry = only(study(WorkerJoined("gpu1")), StartTrial)
    assert (retry.trial, retry.attempt, retry.worker, retry.budget, retry.checkpoint) == (
        0, 2, "gpu1", 10, "ckpt-a")
    assert "missed 3 heartbeats" in retry.reason
    # The first attempt was only slow: what it still sends is kept aside and never ranked.
    study(ResultReported(0, 1, 10, {"loss": 0.01}))
    assert study.trial(0).stale == [[1, 10, {"loss": 0.01}]]
    assert study.trial(0).best == 0.5
    study(ResultReported(0, 2, 10, {"loss": 0.3}))
    assert only(study(AttemptFinished(0, 2)), FinishStudy)
    assert study.trial(0).status == TrialStatus.COMPLETED and study.trial(0).best == 0.3
    assert study.state.budget_spent == 10 + 6  # the retry trained from step 4


def test_a_worker_lost_after_the_last_checkpoint_leaves_a_retry_with_nothing_to_train():
    study = Study(RandomSearch(SPACE, budget=3, max_trials=1))
    study(WorkerJoined("a"))
    study(ResultReported(0, 1, 3, {"loss": 0.2}))
    study(CheckpointStored(0, 1, 3, "final"))
    study(WorkerLost("a"))  # gone before it could say the attempt ended
    retry = only(study(WorkerJoined("b")), StartTrial)
    assert (retry.attempt, retry.checkpoint) == (2, "final")
    assert only(study(AttemptFinished(0, 2)), FinishStudy)  # it trained nothing, and need not
    assert study.trial(0).status == TrialStatus.COMPLETED and study.trial(0).best == 0.2


def test_a_trial_whose_attempts_keep_getting_lost_fails_and_the_study_goes_on():
    study = Study(RandomSearch(SPACE, budget=1, max_trials=2, max_attempts=2))
    study(WorkerJoined("a"))
    study(WorkerLost("a", "node rebooted"))
    only(study(WorkerJoined("b")), StartTrial)
    study(WorkerLost("b", "node rebooted"))
    assert study.trial(0).status == TrialStatus.FAILED
    assert study.trial(0).reason == "lost 2 attempts in a row, the last: node rebooted"
    start = only(study(WorkerJoined("c")), StartTrial)
    assert start.trial == 1


def test_an_error_in_user_code_fails_the_trial_without_retrying_it():
    study = Study(RandomSearch(SPACE, budget=1, max_trials=2))
    study(WorkerJoined("w"))
    start = only(study(AttemptFailed(0, 1, "ZeroDivisionError: division by zero")), StartTrial)
    assert start.trial == 1
    assert study.trial(0).status == TrialStatus.FAILED
    assert study.trial(0).reason == "ZeroDivisionError: division by zero"


def test_an_attempt_that_ends_without_a_result_fails():
    study = Study(RandomSearch(SPACE, budget=1, max_trials=1))
    study(WorkerJoined("w"))
    assert only(study(AttemptFinished(0, 1)), FinishStudy)
    assert study.trial(0).status == TrialStatus.FAILED
    assert study.trial(0).reason == "the attempt ended without a result"


def test_asha_promotes_from_the_top_rung_down_once_a_rung_holds_eta_configurations():
    study = Study(ASHA(SPACE, min_budget=1, max_budget=9, eta=3))
    only(study(WorkerJoined("w")), StartTrial)
    # Fewer than eta configurations in rung 0: floor(n / 3) = 0, so the worker grows rung 0.
    assert only(study.train(0, 0.5), StartTrial).trial == 1
    assert only(study.train(1, 0.2), StartTrial).trial == 2
    promote = only(study.train(2, 0.9), PromoteTrial)
    assert (promote.trial, promote.budget, promote.rung, promote.checkpoint) == (1, 3, 1, "ckpt-1-1")
    assert promote.reason == "ranked 1 of 3 in rung 0, within the top 1"
    # Trial 0 is second of three: outside the top floor(3 / 3) = 1, so a new configuration.
    assert only(study.train(1, 0.15), StartTrial).trial == 3


def test_asha_ranks_nan_and_infinite_metrics_worst_in_a_fixed_order():
    study = Study(ASHA(SPACE, min_budget=1, max_budget=9, eta=2))
    study(WorkerJoined("w"))
    study.train(0, math.nan)
    promote = only(study.train(1, math.inf), StartTrial)  # NaN and inf: nothing to promote
    assert promote.trial == 2
    promote = only(study.train(2, 1e9), PromoteTrial)
    assert promote.trial == 2
    rung = study.state.brackets[0].rungs[0]
    assert [rung.rank(t) for t in (2, 0, 1)] == [0, 1, 2]  # non-finite ties go to the older trial


def test_maximising_promotes_the_largest_metric():
    study = Study(ASHA(SPACE, min_budget=1, max_budget=4, eta=2, metric="acc", mode="max"))
    study(WorkerJoined("w"))
    study.train(0, 0.7, metric="acc")
    assert only(study.train(1, 0.9, metric="acc"), PromoteTrial).trial == 1


def test_stopping_asha_stops_a_running_trial_outside_the_top_of_a_rung():
    study = Study(ASHA(SPACE, min_budget=1, max_budget=9, eta=3, variant="stopping"))
    study(WorkerJoined("a"))
    study(WorkerJoined("b"))
    assert [t.budget for t in study.state.trials] == [9, 9]  # started for the full budget
    assert study(ResultReported(0, 1, 1, {"loss": 0.3})) == []  # alone in rung 0: it carries on
    stop = only(study(ResultReported(1, 1, 1, {"loss": 0.4})), StopTrial)
    assert (stop.trial, stop.reason) == (1, "outside the survivors of rung 0")
    assert only(study(AttemptFinished(1, 1)), StartTrial).trial == 2
    assert study.trial(1).status == TrialStatus.STOPPED


def test_synchronous_sha_waits_for_its_rung_before_promoting():
    study = Study(SuccessiveHalving(SPACE, n_configs=3, min_budget=1, eta=3))
    for worker in "abcd":
        study(WorkerJoined(worker))
    assert [t.worker for t in study.state.trials] == ["a", "b", "c"]
    assert "d" in study.state.idle  # rung 0 is full: the fourth worker waits
    assert study.train(0, 0.5) == []
    assert study.train(1, 0.1) == []
    promote = only(study.train(2, 0.3), PromoteTrial)
    assert (promote.trial, promote.worker, promote.budget) == (1, "d", 3)
    assert only(study.train(1, 0.05), FinishStudy).reason == "no work left and every attempt ended"


def test_a_failure_never_blocks_a_synchronous_rung():
    study = Study(SuccessiveHalving(SPACE, n_configs=3, min_budget=1, eta=3))
    for worker in "abc":
        study(WorkerJoined(worker))
    study.train(0, 0.5)
    study(AttemptFailed(1, 1, "CUDA out of memory"))
    assert only(study.train(2, 0.7), PromoteTrial).trial == 0


def test_a_trainable_that_stops_before_its_budget_is_ranked_but_never_promoted():
    study = Study(ASHA(SPACE, min_budget=2, max_budget=8, eta=2))
    study(WorkerJoined("w"))
    only(study.train(0, 0.1, step=1), StartTrial)  # converged early, by its own choice
    assert study.trial(0).status == TrialStatus.COMPLETED
    assert study.trial(0).reason == "ended before its budget"
    assert only(study.train(1, 0.5), StartTrial).trial == 2  # trial 0 holds the one promotion slot


def test_hyperband_runs_its_brackets_one_after_another():
    study = Study(Hyperband(SPACE, min_budget=1, max_budget=4, eta=2))
    assert study.algorithm.brackets == [[(4, 1), (2, 2), (1, 4)], [(3, 2), (1, 4)], [(3, 4)]]
    study(WorkerJoined("w"))
    for tid, value in enumerate([0.4, 0.3, 0.2, 0.1]):
        study.train(tid, value)
    assert [(t.id, t.status) for t in study.state.trials if t.status == TrialStatus.RUNNING] == [(3, 2)]
    assert study.trial(3).budget == 2 and study.trial(3).bracket == 0


def test_overlapping_brackets_keep_idle_workers_busy():
    study = Study(SuccessiveHalving(SPACE, n_configs=2, min_budget=1, eta=2, brackets=None,
                                    overlap=True))
    for worker in "abc":
        study(WorkerJoined(worker))
    assert [(t.id, t.bracket) for t in study.state.trials] == [(0, 0), (1, 0), (2, 1)]


def test_async_hyperband_spreads_new_configurations_over_its_brackets():
    study = Study(AsyncHyperband(SPACE, min_budget=1, max_budget=9, eta=3))
    for index in range(13):
        study(WorkerJoined(f"w{index}"))
    # Weights 9, 5, 3 from Hyperband's n per bracket (Algorithm 1 for R = 9, eta = 3).
    brackets = [t.bracket for t in study.state.trials]
    assert [brackets.count(b) for b in range(3)] == [7, 4, 2]
    assert {t.budget for t in study.state.trials if t.bracket == 2} == {9}


def test_median_stopping_stops_a_trial_worse_than_the_median_of_running_averages():
    study = Study(MedianStopping(SPACE, budget=4, grace_period=2, min_samples=2))
    for worker in "abc":
        study(WorkerJoined(worker))
    for tid, values in enumerate([(0.5, 0.4), (0.6, 0.3)]):
        for at, value in enumerate(values, start=1):
            study(ResultReported(tid, 1, at, {"loss": value}))
    assert study(ResultReported(2, 1, 1, {"loss": 0.5})) == []  # before the grace period
    # Running averages at step 2: 0.45 and 0.45; trial 2's best so far 0.5 is worse.
    stop = only(study(ResultReported(2, 1, 2, {"loss": 0.55})), StopTrial)
    assert stop.trial == 2


def test_enqueued_configurations_run_first_and_partial_ones_are_completed():
    space = {"x": uniform(0.0, 1.0), "y": uniform(5.0, 6.0)}
    study = Study(RandomSearch(space, budget=1))
    study(ConfigEnqueued({"x": 0.25}))
    study(ConfigEnqueued({"x": 0.75, "y": 5.5}))
    first = only(study(WorkerJoined("w")), StartTrial)
    assert first.config["x"] == 0.25 and 5.0 <= first.config["y"] <= 6.0
    assert "enqueued" in first.reason
    assert only(study.train(0, 1.0), StartTrial).config == {"x": 0.75, "y": 5.5}
    assert only(study.train(1, 1.0), StartTrial).reason == "random draw"


def test_max_trials_ends_the_study_once_every_attempt_ended():
    study = Study(RandomSearch(SPACE, budget=1, max_trials=2))
    study(WorkerJoined("a"))
    assert study(WorkerJoined("b"))[0].trial == 1
    assert study(WorkerJoined("c")) == []
    assert study.train(0, 0.1) == []
    finish = only(study.train(1, 0.2), FinishStudy)
    assert finish.reason == "max_trials (2) reached and every attempt ended"
    assert study(WorkerJoined("d")) == []  # a finished study starts nothing


def test_total_budget_caps_the_budget_handed_out():
    study = Study(ASHA(SPACE, min_budget=1, max_budget=9, eta=3, total_budget=5))
    study(WorkerJoined("w"))
    for tid in range(3):
        study.train(tid, 0.1 * tid)
    # 3 units spent; promoting trial 0 to 3 costs 2 more from its checkpoint at 1: exactly 5.
    assert study.state.trials[0].status == TrialStatus.RUNNING
    finish = only(study.train(0, 0.01), FinishStudy)
    assert finish.reason.startswith("no work left within total_budget (5; 5 handed out)")


def test_a_stop_request_stops_every_running_attempt_and_finishes():
    study = Study(RandomSearch(SPACE, budget=5))
    study(WorkerJoined("a"))
    study(WorkerJoined("b"))
    decisions = study(StopRequested())
    assert [type(d) for d in decisions] == [StopTrial, StopTrial, FinishStudy]
    assert {t.status for t in study.state.trials} == {TrialStatus.STOPPED}


def test_grid_search_walks_its_grid_then_finishes():
    study = Study(GridSearch({"a": grid([1, 2]), "b": grid(["x", "y"]), "c": uniform(0, 1)}))
    study(WorkerJoined("w"))
    for tid in range(3):
        study.train(tid, 0.0)
    assert only(study.train(3, 0.0), FinishStudy)
    assert [(t.config["a"], t.config["b"]) for t in study.state.trials] == [
        (1, "x"), (1, "y"), (2, "x"), (2, "y")]


def test_workers_rejoining_under_their_id_lose_the_attempt_they_held():
    study = Study(RandomSearch(SPACE, budget=3, max_trials=1))
    study(WorkerJoined("w"))
    retry = only(study(WorkerJoined("w")), StartTrial)
    assert (retry.trial, retry.attempt) == (0, 2)
    assert study.trial(0).reason == "attempt 1 lost: worker came back without its attempt"


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ASHA(SPACE, eta=1), "`eta` is 1, but must be an int >= 2"),
        (lambda: ASHA(SPACE, min_budget=0), "`min_budget` is 0, but must be a finite number > 0"),
        (lambda: ASHA(SPACE, min_budget=10, max_budget=5), "`max_budget` is 5, but must be >= min_budget (10)"),
        (lambda: ASHA(SPACE, variant="greedy"), "`variant` is 'greedy', but must be one of promotion, stopping"),
        (lambda: ASHA(SPACE, 1, 9, 3, early_stopping_rate=3), "`early_stopping_rate` is 3, but must be <= 2"),
        (lambda: RandomSearch(SPACE, mode="maximum"), "`mode` is 'maximum', but must be 'min' or 'max'"),
        (lambda: RandomSearch(SPACE, max_trials=0), "`max_trials` is 0, but must be an int >= 1"),
        (lambda: RandomSearch(SPACE, metric=""), "`metric` is '', but must be a non-empty str"),
        (lambda: SuccessiveHalving(SPACE, n_configs=0), "`n_configs` is 0, but must be an int >= 1"),
        (lambda: Hyperband(SPACE, iterations=0), "`iterations` is 0, but must be an int >= 1"),
        (lambda: MedianStopping(SPACE, budget=5, grace_period=5), "`grace_period` is 5, but must be < budget (5)"),
        (lambda: RandomSearch({"lr": uniform(1, 0)}), "parameter `lr`: low is 1, but must be < high (0)"),
    ],
    ids=["eta", "min-budget", "budgets", "variant", "rate", "mode", "max-trials", "metric",
         "n-configs", "iterations", "grace", "space"],
)
def test_bad_settings_are_refused_with_one_clear_line(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert str(error.value).startswith(message)
