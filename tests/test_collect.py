"""Checkpoint garbage collection never removes what a live, promotable or retrying trial needs."""

from rung.algorithms import (
    ASHA,
    AttemptFailed,
    AttemptFinished,
    CheckpointStored,
    ResultReported,
    StartTrial,
    WorkerJoined,
    WorkerLost,
    step,
    uniform,
)
from rung.broker.broker import needed_checkpoints


def test_only_superseded_and_dead_trials_checkpoints_may_go():
    asha = ASHA({"x": uniform(0, 1)}, min_budget=1, max_budget=9, eta=3, max_attempts=3)
    state = asha.initial_state(0)
    resumed = {}

    def feed(event):
        for decision in step(asha, state, event):
            if isinstance(decision, StartTrial):
                resumed[(decision.trial, decision.attempt)] = decision.checkpoint

    for worker in ("a", "b", "c", "d"):
        feed(WorkerJoined(worker))  # trials 0..3 start on a..d
    # Trial 0 trains its rung and pauses: promotable, its checkpoint stays.
    feed(ResultReported(0, 1, 1, {"loss": 0.1}))
    feed(CheckpointStored(0, 1, 1, "t0-old"))
    feed(CheckpointStored(0, 1, 1, "t0-new"))  # supersedes t0-old
    feed(AttemptFinished(0, 1))  # worker a takes trial 4
    # Trial 1 checkpoints, then its worker dies: it waits for a retry from that checkpoint.
    feed(CheckpointStored(1, 1, 0.5, "t1"))
    feed(WorkerLost("b"))
    # Trial 2 fails in user code after a checkpoint: nothing will resume it.
    feed(CheckpointStored(2, 1, 0.5, "t2"))
    feed(AttemptFailed(2, 1, "boom"))  # worker c takes the retry of trial 1, from t1
    assert resumed[(1, 2)] == "t1"
    # The retry of trial 1 stores a newer checkpoint while it runs: the one it resumed from stays
    # needed until the attempt ends (its worker may still be fetching it).
    feed(CheckpointStored(1, 2, 0.75, "t1-newer"))
    keep = needed_checkpoints(asha, state, resumed)
    assert keep == {"t0-new", "t1", "t1-newer"}
