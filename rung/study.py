"""A study: what to train, over which space, with which algorithm, towards which metric.

A study is plain data, so that it can live in a TOML file, in the first record of the journal (a
restarted broker checks it is resuming the same study), and be built in Python alike:

    name = "digits"
    trainable = "examples.digits_mlp:train"     # or a command line: ["./train.sh", "--fast"]
    metric = "accuracy"
    mode = "max"
    seed = 0

    [algorithm]
    name = "asha"                                # random, grid, sha, hyperband, asha, async-hyperband, median, pbt, fire-pbt
    min_budget = 1                               # every other key is a setting of that algorithm
    max_budget = 27
    max_trials = 60

    [space]
    lr = ["loguniform", 1e-3, 1.0]
    hidden = ["randint", 16, 256, true]          # true: on a log scale
    momentum = ["uniform", 0.0, 0.99]
    activation = ["choice", ["relu", "tanh"]]
    epochs_per_report = 1                        # a plain value is fixed

Domains are written as `Space.to_data` writes them: [kind, arguments...], trailing optional ones
left out.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import msgpack

from rung.protocol.codec import MAX_ENTRIES, MAX_NAME, MAX_TEXT

from rung import algorithms
from rung.algorithms import Algorithm, Space

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class StudyFailed(Exception):
    """A study ended failed: it stopped at `max_failures`, or without one good trial. `rung run` exits
    with status 1 saying why; `rung.tune` raises this, with what it would have returned as `result`."""

    def __init__(self, why: str, result: Any = None):
        super().__init__(why)
        self.result = result


# Each name to its class in rung.algorithms, looked up when a study is built: FIRE PBT's scipy (0.75 s
# of imports, in every rung process) is imported only for a study that uses it.
ALGORITHMS: dict[str, str] = {
    "random": "RandomSearch",
    "grid": "GridSearch",
    "sha": "SuccessiveHalving",
    "hyperband": "Hyperband",
    "asha": "ASHA",
    "async-hyperband": "AsyncHyperband",
    "median": "MedianStopping",
    "pbt": "PBT",
    "fire-pbt": "FirePBT",
}


def build_algorithm(name: str, space: Space | Mapping[str, Any], settings: Mapping[str, Any]) -> Algorithm:
    """The algorithm called `name` with its settings; every error is a one-line ValueError."""
    if name not in ALGORITHMS:
        raise ValueError(f"algorithm `{name}` is unknown; choose one of {', '.join(ALGORITHMS)}")
    try:
        return getattr(algorithms, ALGORITHMS[name])(space, **settings)
    except TypeError as error:  # an unknown or missing setting
        message = str(error).split(") ", 1)[-1] if ") " in str(error) else str(error)
        raise ValueError(f"algorithm `{name}`: {message}") from None


def _check_wire_bounds(study: "Study") -> None:
    """What a Run and a Result carry of the study must fit the wire protocol's bounds
    (rung/protocol/codec.py): refused here, in one line, rather than by the broker at its first Run."""
    arguments = [study.trainable] if isinstance(study.trainable, str) else study.trainable
    if len(arguments) > MAX_ENTRIES or any(len(a) > MAX_TEXT for a in arguments):
        raise ValueError(f"`trainable` must be at most {MAX_TEXT} characters, or a command line of at "
                         f"most {MAX_ENTRIES} such arguments")
    names = list(study.space.to_data())
    if len(names) > MAX_ENTRIES:
        raise ValueError(f"the space has {len(names)} parameters, but may have at most {MAX_ENTRIES}")
    for what, name in [*(("parameter", n) for n in names), ("metric", study.metric)]:
        if not (isinstance(name, str) and 0 < len(name) <= MAX_NAME and name.isprintable()):
            raise ValueError(f"{what} name {name!r:.80} must be 1 to {MAX_NAME} printable characters")


@dataclass(frozen=True)
class Study:
    trainable: str | list[str]
    space: Space
    algorithm: str = "asha"
    settings: dict[str, Any] = field(default_factory=dict)
    metric: str = "loss"
    mode: str = "min"
    seed: int = 0
    name: str = "study"

    def __post_init__(self):
        if isinstance(self.trainable, str):
            if ":" not in self.trainable:
                raise ValueError(f"`trainable` is {self.trainable!r}, but must be 'module:function' "
                                 "or a command line (a list of str)")
        elif not (isinstance(self.trainable, list) and self.trainable
                  and all(isinstance(a, str) for a in self.trainable)):
            raise ValueError(f"`trainable` is {self.trainable!r}, but must be 'module:function' or "
                             "a command line (a list of str)")
        object.__setattr__(self, "space", Space(self.space))
        _check_wire_bounds(self)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"`seed` is {self.seed!r}, but must be an int >= 0")
        self.build()  # validates the algorithm and its settings now, not when the broker starts

    def build(self) -> Algorithm:
        return build_algorithm(self.algorithm, self.space,
                               {**self.settings, "metric": self.metric, "mode": self.mode})

    def to_data(self) -> dict[str, Any]:
        return {
            "name": self.name, "trainable": self.trainable, "metric": self.metric,
            "mode": self.mode, "seed": self.seed,
            "algorithm": {"name": self.algorithm, **self.settings},
            "space": self.space.to_data(),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> "Study":
        if not isinstance(data, Mapping):
            raise ValueError("a study must be a table of settings")
        known = {"name", "trainable", "metric", "mode", "seed", "algorithm", "space"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown study setting `{unknown[0]}`; known: {', '.join(sorted(known))}")
        for required in ("trainable", "space"):
            if required not in data:
                raise ValueError(f"the study lacks `{required}`")
        algorithm = dict(data.get("algorithm", {"name": "asha"}))
        if "name" not in algorithm:
            raise ValueError("the [algorithm] table lacks `name`")
        name = algorithm.pop("name")
        if not isinstance(data["space"], Mapping):
            raise ValueError("`space` must be a table of parameters")
        return cls(
            trainable=data["trainable"], space=Space.from_data(data["space"]), algorithm=name,
            settings=algorithm, metric=data.get("metric", "loss"), mode=data.get("mode", "min"),
            seed=data.get("seed", 0), name=data.get("name", "study"),
        )

    @classmethod
    def load(cls, path: str | Path) -> "Study":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as error:
            raise ValueError(f"cannot read study file {path}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"study file {path}: {error}") from None
        try:
            return cls.from_data(data)
        except ValueError as error:
            raise ValueError(f"study file {path}: {error}") from None

    @property
    def id(self) -> str:
        """A digest of the study's data: a restarted broker refuses a directory of another study."""
        return hashlib.sha256(msgpack.packb(self.to_data())).hexdigest()[:16]
