"""Events: facts from outside an algorithm, stamped by the shell.

The broker (or the simulator) turns what it sees into one of these frozen values and hands it to
`step`. The shell stamps `time` (seconds on its own clock) and every id; the algorithm never reads a
clock and never makes an id of its own beyond numbering the trials it creates.

A result is identified by (trial, attempt, step). Results of a superseded attempt are kept as stale
and never reach a ranking; a result whose (attempt, step) was already seen is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True, slots=True)
class WorkerJoined:
    """A worker connected and is free. A worker joining again under the same id has lost its attempt."""

    worker: str
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """A known worker says it is free (for example after the broker reconciled its attempts)."""

    worker: str
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkerLost:
    """A worker missed its liveness window or disconnected; its attempt, if any, is lost."""

    worker: str
    reason: str = "worker lost"
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkerLeft:
    """A worker left on purpose (its scheduler sent SIGTERM: preemption, scancel). Its attempt is
    retried like a lost one, but a departure says nothing about the trial, so it does not count
    towards `max_attempts`."""

    worker: str
    reason: str = "worker left"
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class ResultReported:
    """A trial attempt reported metrics after training up to `step` units of budget."""

    trial: int
    attempt: int
    step: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class CheckpointStored:
    """A checkpoint of a trial attempt at `step` is durable under the key `checkpoint`."""

    trial: int
    attempt: int
    step: float
    checkpoint: str
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class AttemptFinished:
    """A trial attempt ended by itself: it trained its budget, or it stopped as it was told."""

    trial: int
    attempt: int
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    """A trial attempt ended with an error in user code (an exception, a crash, a hang)."""

    trial: int
    attempt: int
    reason: str
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class ConfigEnqueued:
    """The user asked for this configuration to be tried before any the algorithm would draw."""

    config: Mapping[str, Any]
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class StopRequested:
    """The user asked the study to stop: running attempts are stopped and the study finishes."""

    reason: str = "stopped by the user"
    time: float = 0.0


Event = (
    WorkerJoined
    | WorkerReady
    | WorkerLost
    | WorkerLeft
    | ResultReported
    | CheckpointStored
    | AttemptFinished
    | AttemptFailed
    | ConfigEnqueued
    | StopRequested
)
