"""Decisions: what an algorithm wants done, each with a human `reason`.

`StartTrial` and `PromoteTrial` both ask a named worker to run one attempt of a trial up to `budget`
units, resuming from `checkpoint` when one is given; a worker treats them, and `CloneTrial`, alike.
They differ in what they mean for the study: a start is a trial's first attempt or a retry at the same
budget, a promotion moves a trial to a larger budget (or, in PBT, on to its next segment), a clone
restarts a trial from another trial's checkpoint with new hyperparameters. `bracket` and `rung` say where the attempt lands, for people reading
the journal; a worker ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True, slots=True)
class StartTrial:
    trial: int
    attempt: int
    worker: str
    config: Mapping[str, Any]
    budget: float
    checkpoint: str | None
    bracket: int
    rung: int
    reason: str


@dataclass(frozen=True, slots=True)
class PromoteTrial:
    trial: int
    attempt: int
    worker: str
    config: Mapping[str, Any]
    budget: float
    checkpoint: str | None
    bracket: int
    rung: int
    reason: str


@dataclass(frozen=True, slots=True)
class CloneTrial:
    """PBT's exploit and explore in one decision: the next attempt of `trial` starts from `source`'s
    checkpoint with the new `config`, up to `budget`. The loser's old weights are dropped."""

    trial: int
    attempt: int
    worker: str
    config: Mapping[str, Any]
    budget: float
    checkpoint: str
    source: int
    reason: str


@dataclass(frozen=True, slots=True)
class StopTrial:
    """Stop a running attempt; the trial ends for good."""

    trial: int
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class FinishStudy:
    """Nothing more will be started: the study is over."""

    reason: str


Decision = StartTrial | PromoteTrial | CloneTrial | StopTrial | FinishStudy
