"""ASHA driven by hypothesis as a broker would drive it, against a naive reference model.

Rules: workers join, finish attempts with any metric (NaN and infinity included), report part-way,
fail, get lost, duplicate a result; the broker restarts by replaying its journal. Every job ASHA hands
out is checked against a model that recomputes the paper's rule from scratch by sorting each rung, and
after every rule no trial is lost, none runs twice, and the journal replays to the live state.
"""

import math

import msgpack
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rung.algorithms import (
    ASHA,
    AttemptFailed,
    AttemptFinished,
    CheckpointStored,
    PromoteTrial,
    ResultReported,
    StartTrial,
    TrialStatus,
    WorkerJoined,
    WorkerLost,
    replay,
    uniform,
)
from rung.algorithms.state import ranking_key

SPACE = {"x": uniform(0.0, 1.0)}
# Mostly finite metrics, so that rungs fill and promotions happen; sometimes NaN or infinite.
metrics = st.one_of(*[st.floats(0, 1)] * 6, st.sampled_from([math.nan, math.inf, -math.inf]))


def naive_job(algorithm, state):
    """(kind, trial) of the job the paper's rule gives the next free worker, by brute force."""
    if state.retry:
        return "retry", state.retry[0]
    rungs = state.brackets[0].rungs
    for k in range(len(rungs) - 2, -1, -1):
        members = sorted((key, tid) for tid, key in rungs[k].keys.items())
        for key, tid in members[: len(members) // algorithm.eta]:
            trial = state.trials[tid]
            if (trial.status == TrialStatus.PAUSED and trial.rung == k and math.isfinite(key)
                    and tid not in rungs[k].promoted):
                return "promote", tid
    return "new", len(state.trials)


class BrokerDrivingASHA(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.algorithm = ASHA(SPACE, min_budget=1, max_budget=8, eta=2, max_attempts=2)
        self.state = self.algorithm.initial_state(seed=11)
        self.journal = []
        self.workers = 0
        self.last_result = None

    def step(self, event):
        """`step`, spelled out so that each decision is checked before it is folded."""
        algorithm, state = self.algorithm, self.state
        algorithm.apply(state, event)
        decided = []
        while new := algorithm.decide(state, event):
            for decision in new:
                if isinstance(decision, (StartTrial, PromoteTrial)):
                    kind, tid = naive_job(algorithm, state)
                    assert decision.trial == tid
                    assert isinstance(decision, PromoteTrial) == (kind == "promote")
                algorithm.apply(state, decision)
            decided += new
        self.journal.append((event, decided))

    def running(self):
        return [t for t in self.state.trials if t.status == TrialStatus.RUNNING]

    @rule()
    def join(self):
        self.workers += 1
        self.step(WorkerJoined(f"w{self.workers}"))

    @precondition(lambda self: self.running())
    @rule(data=st.data(), value=metrics)
    def train_to_budget(self, data, value):
        trial = data.draw(st.sampled_from(self.running()))
        self.last_result = ResultReported(trial.id, trial.attempt, trial.budget, {"loss": value})
        self.step(self.last_result)
        self.step(CheckpointStored(trial.id, trial.attempt, trial.budget, f"c{trial.id}.{trial.attempt}"))
        self.step(AttemptFinished(trial.id, trial.attempt))

    @precondition(lambda self: self.running())
    @rule(data=st.data(), value=metrics, fraction=st.floats(0.1, 0.9))
    def report_part_way(self, data, value, fraction):
        trial = data.draw(st.sampled_from(self.running()))
        at = (trial.step or 0) + fraction * (trial.budget - (trial.step or 0))
        self.last_result = ResultReported(trial.id, trial.attempt, at, {"loss": value})
        self.step(self.last_result)
        self.step(CheckpointStored(trial.id, trial.attempt, at, f"c{trial.id}.{trial.attempt}.{at}"))

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def fail(self, data):
        trial = data.draw(st.sampled_from(self.running()))
        self.step(AttemptFailed(trial.id, trial.attempt, "RuntimeError: diverged"))

    @precondition(lambda self: self.state.workers)
    @rule(data=st.data())
    def lose_worker(self, data):
        worker = data.draw(st.sampled_from(sorted(self.state.workers)))
        self.step(WorkerLost(worker, "missed its heartbeats"))

    @precondition(lambda self: self.last_result is not None)
    @rule()
    def duplicate_last_result(self):
        before = msgpack.packb(self.state.to_data())
        self.step(self.last_result)
        assert self.journal[-1][1] == []
        assert msgpack.packb(self.state.to_data()) == before

    @rule()
    def restart_broker(self):
        live = msgpack.packb(self.state.to_data())
        records = msgpack.unpackb(msgpack.packb([r for r in self._journal_data()]))
        from rung.algorithms.records import record_from_data

        self.state = replay(self.algorithm, self.algorithm.initial_state(seed=11),
                            [record_from_data(r) for r in records])
        assert msgpack.packb(self.state.to_data()) == live

    def _journal_data(self):
        from rung.algorithms.records import record_to_data

        return [record_to_data(event, decided) for event, decided in self.journal]

    @invariant()
    def nothing_lost_and_nothing_twice(self):
        state = self.state
        on_workers = [tid for tid in state.workers.values() if tid is not None]
        assert len(on_workers) == len(set(on_workers))
        for trial in state.trials:
            if trial.status == TrialStatus.RUNNING:
                assert state.workers[trial.worker] == trial.id
            elif trial.status == TrialStatus.PENDING:
                assert trial.id in state.retry
            elif trial.status == TrialStatus.PAUSED:
                rung = state.brackets[0].rungs[trial.rung]
                finite = math.isfinite(rung.keys.get(trial.id, math.inf))
                assert (trial.id in set(rung.open_trials())) == finite
        assert sorted(state.retry) == sorted(
            t.id for t in state.trials if t.status == TrialStatus.PENDING)

    @invariant()
    def best_is_the_best_counted_result(self):
        for trial in self.state.trials:
            keys = [ranking_key(entry[2]["loss"], False) for entry in trial.history]
            finite = [k for k in keys if math.isfinite(k)]
            assert trial.best == (min(finite) if finite else None)


BrokerDrivingASHA.TestCase.settings = settings(max_examples=300, stateful_step_count=100, deadline=None)
TestBrokerDrivingASHA = BrokerDrivingASHA.TestCase
