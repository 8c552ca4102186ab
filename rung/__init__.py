"""rung: distributed hyperparameter tuning for expensive models.

The public face. Search-space helpers and algorithms live in `rung.algorithms` and are re-exported
here; the runtime (broker, worker) is imported lazily so that importing `rung` stays light.
"""

from rung.algorithms import (
    ASHA,
    AsyncHyperband,
    GridSearch,
    Hyperband,
    MedianStopping,
    PBT,
    RandomSearch,
    Space,
    SuccessiveHalving,
    choice,
    grid,
    loguniform,
    randint,
    uniform,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # The runtime (broker, workers, ZeroMQ) loads on first use, never on `import rung`.
    if name in ("tune", "TuneResult"):
        from rung import tuning

        return getattr(tuning, name)
    if name == "Study":
        from rung.study import Study

        return Study
    raise AttributeError(f"module 'rung' has no attribute {name!r}")


__all__ = [
    "tune", "TuneResult", "Study", "ASHA", "AsyncHyperband", "GridSearch", "Hyperband",
    "MedianStopping", "PBT", "RandomSearch", "Space", "SuccessiveHalving", "choice", "grid",
    "loguniform", "randint", "uniform",
]
