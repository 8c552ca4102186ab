"""rung's algorithmic core: pure, deterministic tuning algorithms and the simulator that drives them.

Nothing here reads a clock, opens a socket or file, starts a thread or touches a global random
generator; the broker and the simulator drive the same `step`.
"""

from .algorithm import Algorithm
from .asha import ASHA, AsyncHyperband
from .decisions import CloneTrial, Decision, FinishStudy, PromoteTrial, StartTrial, StopTrial
from .events import (
    AttemptFailed,
    AttemptFinished,
    CheckpointStored,
    ConfigEnqueued,
    Event,
    ResultReported,
    StopRequested,
    WorkerJoined,
    WorkerLeft,
    WorkerLost,
    WorkerReady,
)
from .halving import hyperband_brackets, sha_rungs
from .median_stopping import MedianStopping
from .pbt import PBT
from .random_search import GridSearch, RandomSearch
from .space import Space, choice, grid, loguniform, randint, uniform
from .state import State, Trial, TrialStatus
from .step import replay, step
from .successive_halving import Hyperband, SuccessiveHalving


def __getattr__(name: str):
    # FIRE PBT fits its learning curves with scipy, 0.75 s of imports: it is imported on first use,
    # since a trainable's module that imports the space helpers (`from rung import choice`) is
    # imported again in every trial process, at every dispatch.
    if name == "FirePBT":
        from .fire_pbt import FirePBT

        globals()[name] = FirePBT
        return FirePBT
    raise AttributeError(f"module 'rung.algorithms' has no attribute {name!r}")


__all__ = [
    "ASHA", "Algorithm", "AsyncHyperband", "AttemptFailed", "AttemptFinished", "CheckpointStored",
    "CloneTrial", "ConfigEnqueued", "Decision", "Event", "FinishStudy", "FirePBT", "GridSearch", "Hyperband",
    "MedianStopping", "PBT", "PromoteTrial", "RandomSearch", "ResultReported", "Space",
    "StartTrial", "State", "StopRequested", "StopTrial", "SuccessiveHalving", "Trial",
    "TrialStatus", "WorkerJoined", "WorkerLeft", "WorkerLost", "WorkerReady", "choice", "grid",
    "hyperband_brackets", "loguniform", "randint", "replay", "sha_rungs", "step", "uniform",
]
