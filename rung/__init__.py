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

__all__ = [
    "ASHA", "AsyncHyperband", "GridSearch", "Hyperband", "MedianStopping", "RandomSearch", "Space",
    "SuccessiveHalving", "choice", "grid", "loguniform", "randint", "uniform",
]
