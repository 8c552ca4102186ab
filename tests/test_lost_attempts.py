"""Messages of an attempt that is no longer live: a worker declared lost may only have been late, and
what it still sends (results, checkpoints, its end) must never change what the study counts or
resumes from."""

from hypothesis import given, settings
from hypothesis import strategies as st

from rung.algorithms import (
    ASHA,
    PBT,
    AttemptFailed,
    AttemptFinished,
    CheckpointStored,
    CloneTrial,
    FinishStudy,
    PromoteTrial,
    RandomSearch,
    ResultReported,
    StartTrial,
    StopTrial,
    TrialStatus,
    WorkerJoined,
    WorkerLeft,
    WorkerLost,
    step,
)
from tests.test_scenarios import SPACE, Study, only


def test_a_checkpoint_a_lost_attempt_stores_late_is_never_resumed_from():
    study = Study(ASHA(SPACE, min_budget=4, max_budget=4, max_trials=1))
    study(WorkerJoined("a"))
    study(ResultReported(0, 1, 1, {"loss": 1.0}))
    study(CheckpointStored(0, 1, 1, "k1"))
    study(WorkerLost("a"))
    for at in (2, 3, 4):  # the worker was only late
        study(ResultReported(0, 1, at, {"loss": 1.0 / at}))
    study(CheckpointStored(0, 1, 4, "k4"))
    retry = only(study(WorkerJoined("b")), StartTrial)
    assert (retry.attempt, retry.checkpoint) == (2, "k1")
    for at in (2, 3, 4):
        study(ResultReported(0, 2, at, {"loss": 1.0 / at}))
    assert only(study(AttemptFinished(0, 2)), FinishStudy)
    trial = study.trial(0)
    assert trial.status == TrialStatus.COMPLETED
    assert [(attempt, at) for attempt, at, _ in trial.history] == [(1, 1), (2, 2), (2, 3), (2, 4)]
    assert [(attempt, at) for attempt, at, _ in trial.stale] == [(1, 2), (1, 3), (1, 4)]


def test_a_lost_attempt_that_ends_late_changes_nothing():
    study = Study(RandomSearch(SPACE, budget=2, max_trials=1))
    study(WorkerJoined("a"))
    study(WorkerLost("a"))
    only(study(WorkerJoined("b")), StartTrial)
    assert study(AttemptFailed(0, 1, "killed by signal 9")) == []
    assert study(AttemptFinished(0, 1)) == []
    assert study.trial(0).status == TrialStatus.RUNNING and study.state.failures == 0


ALGORITHMS = {
    "random": lambda: RandomSearch(SPACE, budget=3, max_trials=6, max_attempts=3),
    "asha": lambda: ASHA(SPACE, min_budget=1, max_budget=4, eta=2, max_trials=8, max_attempts=3),
    "pbt": lambda: PBT(SPACE, population=3, ready=2, max_budget=6, max_attempts=3),
}


class Driver:
    """Workers that train one integer step at a time, report it, then maybe checkpoint it. A worker
    declared lost (or that rejoins under its name) goes on with its attempt as a straggler: it keeps
    reporting, checkpointing and finally ends, all late."""

    def __init__(self, algorithm):
        self.algorithm = algorithm
        self.state = algorithm.initial_state(seed=3)
        self.names = 0
        self.attempts = {}  # (trial, attempt) -> [step reached, budget, told to stop]
        self.stragglers = set()  # attempts of workers declared lost
        self.held = {}  # worker -> its attempt, as the driver sees it
        self.checkpoints = {}  # key -> (trial, step)

    def __call__(self, event):
        decisions = step(self.algorithm, self.state, event)
        for decision in decisions:
            match decision:
                case StartTrial() | PromoteTrial() | CloneTrial():
                    owner, at = self.checkpoints.get(decision.checkpoint, (None, 0))
                    if owner == decision.trial:  # (a clone, or its retry, starts from another's)
                        counted = max((entry[1] for entry in self.state.trials[owner].history), default=0)
                        assert at <= counted, "resumed past its counted results"
                    self.attempts[(decision.trial, decision.attempt)] = [at, decision.budget, False]
                    self.held[decision.worker] = (decision.trial, decision.attempt)
                case StopTrial(trial=tid, attempt=attempt):
                    self.attempts[(tid, attempt)][2] = True

    def lose(self, worker):
        attempt = self.held.pop(worker, None)
        if attempt is not None:
            self.stragglers.add(attempt)

    def train(self, key, loss, checkpoint):
        tid, attempt = key
        self.attempts[key][0] += 1
        at = self.attempts[key][0]
        self(ResultReported(tid, attempt, at, {"loss": loss}))
        if checkpoint:
            name = f"k{tid}.{attempt}.{at}"
            self.checkpoints[name] = (tid, at)
            self(CheckpointStored(tid, attempt, at, name))

    def end(self, key, failed):
        del self.attempts[key]
        self.stragglers.discard(key)
        for worker, held in list(self.held.items()):
            if held == key:
                del self.held[worker]
        self(AttemptFailed(*key, "RuntimeError") if failed else AttemptFinished(*key))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(ALGORITHMS)), st.data())
def test_a_trial_never_resumes_past_its_counted_results(name, data):
    """Joins, rejoins, losses, results, checkpoints, ends and failures, of live attempts and of lost
    ones that were only late, in any order. Workers report every integer step before they may
    checkpoint it. Then:

    - a start or promotion that resumes a trial from its own checkpoint resumes from a step no later
      than the last step counted in the trial's history (checked in `Driver.__call__`);
    - a completed trial that never took another trial's weights has a counted result at every
      integer step from 1 to its final budget: each attempt that counted resumed where the counted
      results of the attempts before it had reached, and reported every step from there on.
    """
    driver = Driver(ALGORITHMS[name]())
    for _ in range(data.draw(st.integers(10, 200), label="events")):
        if driver.state.finished:
            break
        moves = ["join"] if len(driver.state.workers) < 4 else []
        if driver.held:
            moves += ["lose", "rejoin"]
        training = sorted(k for k, (at, budget, _) in driver.attempts.items() if at < budget)
        ending = sorted(k for k, (at, budget, stopped) in driver.attempts.items()
                        if at >= budget or stopped or k in driver.stragglers)
        moves += ["train"] * 6 * bool(training) + ["end"] * 3 * bool(ending)
        if not moves:
            break
        move = data.draw(st.sampled_from(moves), label="move")
        if move == "join":
            driver.names += 1
            driver(WorkerJoined(f"w{driver.names}"))
        elif move in ("lose", "rejoin"):
            worker = data.draw(st.sampled_from(sorted(driver.held)), label="worker")
            driver.lose(worker)
            driver(WorkerLost(worker) if move == "lose" else WorkerJoined(worker))
        elif move == "train":
            key = data.draw(st.sampled_from(training), label="attempt")
            driver.train(key, data.draw(st.floats(0, 1), label="loss"),
                         data.draw(st.booleans(), label="checkpoint"))
        else:
            key = data.draw(st.sampled_from(ending), label="ending")
            driver.end(key, failed=key in driver.stragglers and data.draw(st.booleans()))
    for trial in driver.state.trials:
        if trial.status == TrialStatus.COMPLETED and not trial.info.get("clones"):
            counted = {at for _, at, _ in trial.history}
            assert set(range(1, int(trial.budget) + 1)) <= counted, trial.history


def test_a_trial_whose_workers_leave_again_and_again_is_retried_each_time_but_one_lost_as_often_fails():
    # Preemption (a worker's goodbye on SIGTERM) says nothing about the trial; a crash might.
    for event, fails in ((WorkerLeft, False), (WorkerLost, True)):
        study = Study(RandomSearch(SPACE, budget=4, max_trials=1, max_attempts=3))
        study(WorkerJoined("w0"))
        for n in range(1, 6):
            study(ResultReported(0, n, n, {"loss": 1.0 / n}))
            study(CheckpointStored(0, n, n, f"k{n}"))
            study(event(f"w{n - 1}"))
            decided = study(WorkerJoined(f"w{n}"))
            if fails and n == 3:
                assert study.state.trials[0].status == TrialStatus.FAILED
                assert study.state.trials[0].reason.startswith("lost 3 attempts in a row")
                break
            retry = only(decided, StartTrial)
            assert (retry.trial, retry.attempt, retry.checkpoint) == (0, n + 1, f"k{n}")
        else:
            assert not fails and study.state.trials[0].status == TrialStatus.RUNNING
