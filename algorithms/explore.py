"""PBT's explore step: perturb a configuration within its search space (Jaderberg et al. 2017).

Each numeric parameter is multiplied by a factor drawn from `factors` (PBT's {0.8, 1.2}; FIRE PBT
uses {0.5, 0.8, 1.25, 2.0}) and clipped to its bounds, integers rounded and quantised values kept on
their grid; a categorical parameter moves to a neighbouring value. With `resample_probability`, a
parameter is drawn afresh from its domain instead. Fixed parameters never change. The draws come from
the generator handed in, one parameter after another in the space's order, so a perturbation is a pure
function of (configuration, generator).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from .space import Choice, Fixed, Grid, IntUniform, LogUniform, Space, Uniform, _quantise


def check_factors(factors) -> tuple[float, ...]:
    factors = tuple(factors)
    if not factors or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < math.inf
                          for f in factors):
        raise ValueError(f"`factors` is {factors!r}, but must be a non-empty list of numbers > 0")
    return factors


def perturb(space: Space, config: Mapping[str, Any], rng: np.random.Generator,
            factors: tuple[float, ...], resample_probability: float) -> dict[str, Any]:
    new = dict(config)
    for name, domain in space.params.items():
        if isinstance(domain, Fixed):
            continue
        resample = rng.random() < resample_probability
        factor = factors[int(rng.integers(len(factors)))]
        direction = -1 if rng.random() < 0.5 else 1
        value = config.get(name)
        match domain:
            case _ if resample:
                new[name] = domain.sample(rng)
            case Uniform(low, high, q) | LogUniform(low, high, q):
                moved = min(max(float(value) * factor, low), high)
                new[name] = _quantise(moved, q, low, high)
            case IntUniform(low, high, _):
                new[name] = int(min(max(round(value * factor), low), high))
            case Choice(values) | Grid(values):
                if value in values:
                    index = min(max(values.index(value) + direction, 0), len(values) - 1)
                    new[name] = values[index]
                else:
                    new[name] = domain.sample(rng)
    return new
