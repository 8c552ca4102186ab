"""Search spaces: named parameters, each a domain to draw from, a grid to walk, or a fixed value.

A `Space` is validated when it is built, and every error names the parameter. Domains are plain frozen
values; they draw from a generator they are handed (see `rng.py`) and never from a global one. Values
come out as plain Python numbers and strings so that a configuration is msgpack-able as it is.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

_PLAIN_VALUE_TYPES = (str, int, float, bool, type(None))


def _check_number(name: str, field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"parameter `{name}`: {field} is {value!r}, but must be a finite number")


def _check_bounds(name: str, low: float, high: float, log: bool) -> None:
    _check_number(name, "low", low)
    _check_number(name, "high", high)
    if not low < high:
        raise ValueError(f"parameter `{name}`: low is {low!r}, but must be < high ({high!r})")
    if log and low <= 0:
        raise ValueError(f"parameter `{name}`: low is {low!r}, but must be > 0 on a log scale")


def _check_q(name: str, q: float | None, low: float, high: float) -> None:
    if q is None:
        return
    _check_number(name, "q", q)
    if not 0 < q <= high - low:
        raise ValueError(f"parameter `{name}`: q is {q!r}, but must be in (0, high - low]")


def _quantise(value: float, q: float | None, low: float, high: float) -> float:
    if q is None:
        return value
    # Round to the grid low + k q, then keep inside the bounds (the top grid point may lie past high).
    steps = round((value - low) / q)
    quantised = low + steps * q
    while quantised > high + 1e-12 * abs(high):
        quantised -= q
    return float(round(quantised, 12))


def _check_values(name: str, kind: str, values: tuple) -> None:
    if not values:
        raise ValueError(f"parameter `{name}`: {kind} has no values")
    for value in values:
        if not isinstance(value, _PLAIN_VALUE_TYPES):
            raise ValueError(
                f"parameter `{name}`: {kind} value {value!r} is a {type(value).__name__}, "
                "but must be a str, int, float, bool or None"
            )


@dataclass(frozen=True, slots=True)
class Uniform:
    low: float
    high: float
    q: float | None = None

    def validate(self, name: str) -> None:
        _check_bounds(name, self.low, self.high, log=False)
        _check_q(name, self.q, self.low, self.high)

    def sample(self, rng: np.random.Generator) -> float:
        return _quantise(float(rng.uniform(self.low, self.high)), self.q, self.low, self.high)


@dataclass(frozen=True, slots=True)
class LogUniform:
    low: float
    high: float
    q: float | None = None

    def validate(self, name: str) -> None:
        _check_bounds(name, self.low, self.high, log=True)
        _check_q(name, self.q, self.low, self.high)

    def sample(self, rng: np.random.Generator) -> float:
        value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return _quantise(min(max(value, self.low), self.high), self.q, self.low, self.high)


@dataclass(frozen=True, slots=True)
class IntUniform:
    """Integers from low to high, both included; `log` draws uniformly in log space."""

    low: int
    high: int
    log: bool = False

    def validate(self, name: str) -> None:
        for field, value in (("low", self.low), ("high", self.high)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"parameter `{name}`: {field} is {value!r}, but must be an int")
        _check_bounds(name, self.low, self.high, log=self.log)

    def sample(self, rng: np.random.Generator) -> int:
        if not self.log:
            return int(rng.integers(self.low, self.high, endpoint=True))
        # Widen by half a unit each side so that the end points get their fair share after rounding.
        # (low >= 1 here, as validated.)
        value = math.exp(rng.uniform(math.log(self.low - 0.5), math.log(self.high + 0.5)))
        return int(min(max(round(value), self.low), self.high))


@dataclass(frozen=True, slots=True)
class Choice:
    values: tuple

    def validate(self, name: str) -> None:
        _check_values(name, "choice", self.values)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]


@dataclass(frozen=True, slots=True)
class Grid:
    """Values that grid search walks in order; other algorithms draw from them uniformly."""

    values: tuple

    def validate(self, name: str) -> None:
        _check_values(name, "grid", self.values)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]


@dataclass(frozen=True, slots=True)
class Fixed:
    value: Any

    def validate(self, name: str) -> None:
        _check_values(name, "fixed", (self.value,))

    def sample(self, rng: np.random.Generator) -> Any:
        return self.value


Domain = Uniform | LogUniform | IntUniform | Choice | Grid | Fixed
_DOMAIN_TYPES = (Uniform, LogUniform, IntUniform, Choice, Grid, Fixed)


def uniform(low: float, high: float, q: float | None = None) -> Uniform:
    """Real values drawn uniformly in [low, high]; with `q`, rounded to low + k q."""
    return Uniform(low, high, q)


def loguniform(low: float, high: float, q: float | None = None) -> LogUniform:
    """Real values drawn uniformly in log space between low > 0 and high; with `q`, rounded."""
    return LogUniform(low, high, q)


def randint(low: int, high: int, log: bool = False) -> IntUniform:
    """Integers in [low, high], both ends included; `log=True` for a log scale."""
    return IntUniform(low, high, log)


def choice(values) -> Choice:
    return Choice(tuple(values))


def grid(values) -> Grid:
    return Grid(tuple(values))


class Space:
    """Named parameters in a fixed order. Plain values in the mapping are fixed parameters."""

    __slots__ = ("params",)

    def __init__(self, params: Mapping[str, Any]):
        if isinstance(params, Space):
            params = params.params
        if not isinstance(params, Mapping) or not params:
            raise ValueError("a search space must be a non-empty mapping of parameter names to domains")
        checked: dict[str, Domain] = {}
        for name, domain in params.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"parameter name {name!r} must be a non-empty str")
            if not isinstance(domain, _DOMAIN_TYPES):
                domain = Fixed(domain)
            domain.validate(name)
            checked[name] = domain
        self.params = checked

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.params == other.params

    def __repr__(self) -> str:
        return f"Space({self.params!r})"

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {name: domain.sample(rng) for name, domain in self.params.items()}

    def grid_size(self) -> int:
        return math.prod(len(d.values) for d in self.params.values() if isinstance(d, (Grid, Choice)))

    def grid_points(self) -> Iterator[dict[str, Any]]:
        """Every combination of the grid and choice parameters, the last parameter varying fastest."""
        names = [n for n, d in self.params.items() if isinstance(d, (Grid, Choice))]
        for values in itertools.product(*(self.params[n].values for n in names)):
            yield dict(zip(names, values))

    def grid_point(self, index: int) -> dict[str, Any]:
        """The `index`-th element of `grid_points()`, computed directly."""
        point = {}
        for name in reversed([n for n, d in self.params.items() if isinstance(d, (Grid, Choice))]):
            values = self.params[name].values
            index, position = divmod(index, len(values))
            point[name] = values[position]
        return point

    def to_data(self) -> dict[str, list]:
        """Plain data (msgpack-able) that `Space.from_data` turns back into an equal space."""
        data = {}
        for name, domain in self.params.items():
            match domain:
                case Uniform(low, high, q):
                    data[name] = ["uniform", low, high, q]
                case LogUniform(low, high, q):
                    data[name] = ["loguniform", low, high, q]
                case IntUniform(low, high, log):
                    data[name] = ["randint", low, high, log]
                case Choice(values):
                    data[name] = ["choice", list(values)]
                case Grid(values):
                    data[name] = ["grid", list(values)]
                case Fixed(value):
                    data[name] = ["fixed", value]
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> "Space":
        """The inverse of `to_data`; trailing optional arguments may be left out, and a value that
        is not a list is a fixed parameter (as a study file writes them)."""
        builders = {
            "uniform": lambda low, high, q=None: Uniform(low, high, q),
            "loguniform": lambda low, high, q=None: LogUniform(low, high, q),
            "randint": lambda low, high, log=False: IntUniform(low, high, log),
            "choice": lambda values: Choice(tuple(values)),
            "grid": lambda values: Grid(tuple(values)),
            "fixed": lambda value: Fixed(value),
        }
        params = {}
        for name, spec in data.items():
            if not isinstance(spec, (list, tuple)):
                params[name] = Fixed(spec)
                continue
            if not spec or spec[0] not in builders:
                raise ValueError(f"parameter `{name}`: unknown domain {spec!r}")
            try:
                params[name] = builders[spec[0]](*spec[1:])
            except TypeError:
                raise ValueError(f"parameter `{name}`: malformed domain {spec!r}") from None
        return cls(params)
