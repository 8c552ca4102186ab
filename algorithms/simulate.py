"""A discrete-event simulator: N virtual workers, a simulated clock and a benchmark.

Theory of operation. Pending happenings sit in a heap keyed by (time, counter), so happenings at the
same instant come out first in, first out. Each one becomes an event for the algorithm, fed through
the same `step` as the broker uses; the decisions that come back start, promote or stop work on the
virtual workers. A running attempt reports a result every `report_every` units of budget (and at its
budget), each followed by a checkpoint, and its time comes from the benchmark's `seconds`.

Faults, each drawn from a generator derived from (seed, purpose, trial, attempt) so that a run is a
pure function of its settings: a straggler attempt runs `straggler_slowdown` times slower, and a
dropped attempt loses its worker at a uniformly drawn point of its work; the worker comes back
`rejoin_after` seconds later (never, if None).

Every busy interval of every worker is kept as a `Span`, so utilisation (busy time / (workers x
makespan)) and the best-so-far curve over simulated time can be read off the result.

Benchmarks come in two kinds. A stateless one maps (config, step) to a metric: `evaluate(config,
step)`. A stateful one has a model that training advances and a checkpoint copies, for algorithms that
move weights between trials (PBT): `initial(config) -> model`, `train(config, model, start, stop) ->
model` (a new model; the old one may be a checkpoint) and `evaluate(config, model, step)`. Both have
`seconds(config, start, stop)`. Every checkpoint key maps to the model it holds, so a promotion, a
retry or a clone resumes exactly the weights it names.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .algorithm import Algorithm
from .decisions import CloneTrial, FinishStudy, PromoteTrial, StartTrial, StopTrial
from .events import (
    AttemptFinished,
    CheckpointStored,
    ConfigEnqueued,
    ResultReported,
    WorkerJoined,
    WorkerLost,
)
from .rng import derive_rng
from .state import State, ranking_key
from .step import step


@dataclass(slots=True)
class Span:
    """One attempt on one worker: when it ran, which budget it covered and how it ended."""

    worker: str
    trial: int
    attempt: int
    start: float
    start_step: float
    budget: float
    end: float = math.nan
    outcome: str = "running"  # finished, stopped, lost, or running when the simulation ended


@dataclass
class SimulationResult:
    workers: int
    makespan: float
    spans: list[Span]
    best_curve: list[tuple[float, float]]  # (time, best metric so far) at each improvement
    time_to_target: float | None
    events: int
    finished: bool
    state: State
    records: list[tuple] = field(default_factory=list)  # (event, decisions) when asked to record

    @property
    def busy_time(self) -> float:
        return sum(min(s.end, self.makespan) - s.start for s in self.spans if s.start < self.makespan)

    @property
    def utilisation(self) -> float:
        if self.makespan <= 0:
            return 0.0
        return self.busy_time / (self.workers * self.makespan)

    def best_at(self, time: float) -> float | None:
        best = None
        for when, value in self.best_curve:
            if when > time:
                break
            best = value
        return best


@dataclass(slots=True)
class _Running:
    span: Span
    config: dict
    step: float
    generation: int
    slowdown: float
    model: Any


class _Stateless:
    """A stateless benchmark seen through the stateful interface: the model is nothing."""

    def __init__(self, benchmark: Any):
        self.benchmark = benchmark

    def initial(self, config):
        return None

    def train(self, config, model, start, stop):
        return None

    def evaluate(self, config, model, step):
        return self.benchmark.evaluate(config, step)

    def seconds(self, config, start, stop):
        return self.benchmark.seconds(config, start, stop)


class Simulator:
    def __init__(self, algorithm: Algorithm, benchmark: Any, workers: int, *, seed: int = 0,
                 report_every: float | None = 1.0, straggler_rate: float = 0.0,
                 straggler_slowdown: float = 3.0, drop_rate: float = 0.0,
                 rejoin_after: float | None = None, record: bool = False,
                 stepper: Callable = step, enqueue=()):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"`workers` is {workers!r}, but must be an int >= 1")
        if report_every is not None and not report_every > 0:
            raise ValueError(f"`report_every` is {report_every!r}, but must be > 0 or None")
        for name, rate in (("straggler_rate", straggler_rate), ("drop_rate", drop_rate)):
            if not 0 <= rate <= 1:
                raise ValueError(f"`{name}` is {rate!r}, but must be in [0, 1]")
        if not straggler_slowdown >= 1:
            raise ValueError(f"`straggler_slowdown` is {straggler_slowdown!r}, but must be >= 1")
        if rejoin_after is not None and not rejoin_after >= 0:
            raise ValueError(f"`rejoin_after` is {rejoin_after!r}, but must be >= 0 or None")
        self.algorithm = algorithm
        self.benchmark = benchmark if hasattr(benchmark, "train") else _Stateless(benchmark)
        self.enqueue = [dict(config) for config in enqueue]  # configurations the user enqueues first
        self.workers = workers
        self.seed = seed
        self.report_every = report_every
        self.straggler_rate = straggler_rate
        self.straggler_slowdown = straggler_slowdown
        self.drop_rate = drop_rate
        self.rejoin_after = rejoin_after
        self.record = record
        # A benchmark may pass a wrapper of `step` that times it: nothing in here reads a clock.
        self.stepper = stepper

    def run(self, *, until: float | None = None, target: float | None = None,
            max_events: int | None = None) -> SimulationResult:
        """Simulate a fresh study until it finishes, the clock passes `until`, the best metric
        reaches `target`, or `max_events` events were stepped, whichever comes first (a happening
        under way completes: a report steps its result, checkpoint and end together)."""
        return _Run(self, until, target, max_events).result()


class _Run:
    def __init__(self, sim: Simulator, until: float | None, target: float | None,
                 max_events: int | None):
        self.sim = sim
        self.algorithm = sim.algorithm
        self.state = sim.algorithm.initial_state(sim.seed)
        self.maximise = sim.algorithm.maximise
        self.target_key = None if target is None else ranking_key(target, self.maximise)
        self.heap: list[tuple] = []
        self.counter = 0
        self.now = 0.0
        self.running: dict[str, _Running] = {}
        self.generation = 0
        self.checkpoints: dict[str, tuple[float, Any]] = {}  # key -> (step, model)
        self.spans: list[Span] = []
        self.best_curve: list[tuple[float, float]] = []
        self.best_key = math.inf
        self.time_to_target: float | None = None
        self.events = 0
        self.records: list[tuple] = []
        for config in sim.enqueue:
            self.push(0.0, self.feed, ConfigEnqueued(config, time=0.0))
        for index in range(sim.workers):
            self.push(0.0, self.feed, WorkerJoined(f"w{index}", time=0.0))
        self.loop(until, max_events)

    def push(self, when: float, action: Callable, *args) -> None:
        self.counter += 1
        heapq.heappush(self.heap, (when, self.counter, action, args))

    def loop(self, until: float | None, max_events: int | None) -> None:
        while self.heap and not self.state.finished and self.time_to_target is None:
            if max_events is not None and self.events >= max_events:
                break
            when, _, action, args = self.heap[0]
            if until is not None and when > until:
                self.now = until
                return
            heapq.heappop(self.heap)
            self.now = when
            action(*args)
        if until is not None and not self.state.finished and self.time_to_target is None and not self.heap:
            self.now = until

    def result(self) -> SimulationResult:
        for span in self.spans:
            if span.outcome == "running":
                span.end = self.now
        return SimulationResult(self.sim.workers, self.now, self.spans, self.best_curve,
                                self.time_to_target, self.events, self.state.finished, self.state,
                                self.records)

    # ----------------------------------------------------------------------------------------------

    def feed(self, event) -> None:
        self.events += 1
        decisions = self.sim.stepper(self.algorithm, self.state, event)
        if self.sim.record:
            self.records.append((event, decisions))
        for decision in decisions:
            match decision:
                case StartTrial() | PromoteTrial() | CloneTrial():
                    self.start(decision)
                case StopTrial(trial=tid, attempt=attempt):
                    self.stop(tid, attempt)
                case FinishStudy():
                    pass

    def start(self, decision: StartTrial | PromoteTrial | CloneTrial) -> None:
        sim = self.sim
        if decision.checkpoint is not None:
            start_step, model = self.checkpoints[decision.checkpoint]
        else:
            start_step, model = 0.0, sim.benchmark.initial(dict(decision.config))
        span = Span(decision.worker, decision.trial, decision.attempt, self.now, start_step,
                    decision.budget)
        self.spans.append(span)
        rng = derive_rng(sim.seed, "simulated faults", decision.trial, decision.attempt)
        straggles, drops, where = rng.random(3)
        slowdown = sim.straggler_slowdown if straggles < sim.straggler_rate else 1.0
        self.generation += 1
        job = _Running(span, dict(decision.config), start_step, self.generation, slowdown, model)
        self.running[decision.worker] = job
        if drops < sim.drop_rate:
            seconds = sim.benchmark.seconds(job.config, start_step, decision.budget) * slowdown
            self.push(self.now + where * seconds, self.lose, decision.worker, job.generation)
        self.schedule_report(decision.worker, job)

    def schedule_report(self, worker: str, job: _Running) -> None:
        budget = job.span.budget
        every = self.sim.report_every
        next_step = budget if every is None else min(budget, job.step + every)
        seconds = self.sim.benchmark.seconds(job.config, job.step, next_step) * job.slowdown
        self.push(self.now + seconds, self.report, worker, job.generation, next_step)

    def report(self, worker: str, generation: int, at: float) -> None:
        job = self.running.get(worker)
        if job is None or job.generation != generation:
            return
        span = job.span
        job.model = self.sim.benchmark.train(job.config, job.model, job.step, at)
        job.step = at
        value = self.sim.benchmark.evaluate(job.config, job.model, at)
        self.feed(ResultReported(span.trial, span.attempt, at, {self.algorithm.metric: value},
                                 time=self.now))
        key = ranking_key(value, self.maximise)
        if key < self.best_key:
            self.best_key = key
            self.best_curve.append((self.now, value))
            if self.target_key is not None and key <= self.target_key:
                self.time_to_target = self.now
        if self.running.get(worker) is not job:
            return  # the result got the attempt stopped
        checkpoint = f"{span.trial}/{span.attempt}/{at!r}"
        self.checkpoints[checkpoint] = (at, job.model)
        self.feed(CheckpointStored(span.trial, span.attempt, at, checkpoint, time=self.now))
        if self.running.get(worker) is not job:
            return
        if at >= span.budget:
            self.end(worker, "finished")
            self.feed(AttemptFinished(span.trial, span.attempt, time=self.now))
        else:
            self.schedule_report(worker, job)

    def stop(self, tid: int, attempt: int) -> None:
        for worker, job in self.running.items():
            if job.span.trial == tid and job.span.attempt == attempt:
                self.end(worker, "stopped")
                self.push(self.now, self.feed, AttemptFinished(tid, attempt, time=self.now))
                return

    def lose(self, worker: str, generation: int) -> None:
        job = self.running.get(worker)
        if job is None or job.generation != generation:
            return
        self.end(worker, "lost")
        self.feed(WorkerLost(worker, "simulated worker loss", time=self.now))
        if self.sim.rejoin_after is not None:
            back = self.now + self.sim.rejoin_after
            self.push(back, self.feed, WorkerJoined(worker, time=back))

    def end(self, worker: str, outcome: str) -> None:
        job = self.running.pop(worker)
        job.span.end = self.now
        job.span.outcome = outcome

