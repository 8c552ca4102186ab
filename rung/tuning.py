"""`rung.tune`: one call, a broker in this process and local worker processes, a result back."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from rung.local import run_local
from rung.study import Study, StudyFailed
from rung.summary import best_row, study_failure


@dataclass(frozen=True)
class TuneResult:
    best: dict[str, Any] | None  # the best trial as a row: trial, status, best, config, metrics, ...
    trials: list[dict[str, Any]]  # every trial, the best first
    directory: Path  # the study directory: its journal, checkpoints; `rung results DIR` reads it
    finished: bool
    reason: str
    # PBT and FIRE PBT: the best member's schedule, [{"from_step", "config", "member"}], else None
    schedule: list[dict[str, Any]] | None = None


def trainable_name(trainable: str | list[str] | Callable) -> str | list[str]:
    """What a worker imports: 'module:function' for a function, as given otherwise.

    A function of the script being run (module `__main__`) is imported by the script's file name, as
    multiprocessing's spawn does: keep the call to `tune` under `if __name__ == "__main__":`.
    """
    if isinstance(trainable, (str, list)):
        return trainable
    if not callable(trainable) or "<locals>" in getattr(trainable, "__qualname__", "<locals>"):
        raise ValueError("`trainable` must be a module-level function, 'module:function' or a "
                         "command line (a list of str)")
    module = trainable.__module__
    if module == "__main__":
        script = getattr(sys.modules["__main__"], "__file__", None)
        if script is None:
            raise ValueError("a trainable defined interactively cannot be imported by a worker; "
                             "put it in a module and pass 'module:function'")
        module = Path(script).stem
    return f"{module}:{trainable.__qualname__}"


def tune(trainable: str | list[str] | Callable, space: Mapping[str, Any], algorithm: str = "asha", *,
         metric: str = "loss", mode: str = "min", workers: int = 1, directory: str | Path | None = None,
         seed: int = 0, name: str = "study", progress: bool = True, **settings) -> TuneResult:
    """Tune `trainable` over `space` with `algorithm` (a name: random, grid, sha, hyperband, asha,
    async-hyperband, median, pbt, fire-pbt; `settings` are its settings) on `workers` local worker
    processes.

    The study lives in `directory` (default runs/NAME): calling again with the same arguments
    resumes it from its journal. Raises `StudyFailed` (its `result` is what would have been returned)
    when the study stopped at `max_failures` or ended without one good trial.
    """
    study = Study(trainable_name(trainable), dict(space), algorithm, settings, metric, mode, seed, name)
    directory = Path(directory) if directory is not None else Path("runs") / name
    if trainable_name(trainable) != trainable and getattr(trainable, "__module__", "") == "__main__":
        sys.path.insert(0, str(Path(sys.modules["__main__"].__file__).resolve().parent))
    broker = run_local(study, directory, workers, progress=sys.stderr if progress else None)
    rows = broker.results()
    result = TuneResult(best_row(rows), rows, directory, broker.finished, broker.state.finish_reason,
                        broker.schedule())
    failure = study_failure(broker.state, rows)
    if failure is not None:
        raise StudyFailed(failure, result)
    return result
