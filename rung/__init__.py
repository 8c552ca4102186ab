"""rung: distributed hyperparameter tuning for expensive models.

The public face: `rung.tune`, `rung.Study`, the algorithms and the search-space helpers (which live
in `rung.algorithms`). Every name is imported on first use, so `import rung` costs nothing: a trial's
child process imports `rung.worker.child` through this package and must not pay for numpy, scipy or
the broker at each start.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "tune": "rung.tuning", "TuneResult": "rung.tuning", "Study": "rung.study",
    "StudyFailed": "rung.study",
    **{name: "rung.algorithms" for name in (
        "ASHA", "AsyncHyperband", "FirePBT", "GridSearch", "Hyperband", "MedianStopping", "PBT",
        "RandomSearch", "Space", "SuccessiveHalving", "choice", "grid", "loguniform", "randint",
        "uniform")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rung' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])
