"""Benchmarks for the simulator: (config, budget) -> metric, and the seconds of work it takes.

A benchmark has a `space`, a `metric` name, `evaluate(config, step) -> float` and
`seconds(config, start, stop) -> float`, the work time to train from step `start` to `stop`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .space import Space, loguniform, uniform

# Hartmann-6 (Dixon & Szegoe 1978), the standard constants; its minimum on [0, 1]^6 is -3.32237.
_ALPHA = (1.0, 1.2, 3.0, 3.2)
_A = (
    (10.0, 3.0, 17.0, 3.5, 1.7, 8.0),
    (0.05, 10.0, 17.0, 0.1, 8.0, 14.0),
    (3.0, 3.5, 1.7, 10.0, 17.0, 8.0),
    (17.0, 8.0, 0.05, 10.0, 0.1, 14.0),
)
_P = (
    (0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886),
    (0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991),
    (0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650),
    (0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381),
)
HARTMANN6_MIN = -3.32237


def hartmann6(x: tuple[float, ...]) -> float:
    total = 0.0
    for alpha, a, p in zip(_ALPHA, _A, _P):
        total -= alpha * math.exp(-sum(a_j * (x_j - p_j) ** 2 for a_j, x_j, p_j in zip(a, x, p)))
    return total


class CrossingCurves:
    """Learning curves that cross, so that a ranking at a low budget can mislead.

    The final error e(x) is Hartmann-6 rescaled to [0.05, 0.9]; the error after budget r is
    e + (0.95 - e) (1 + r / tau)^-gamma with tau = 2^(6 x1) (how slowly it learns) and
    gamma = 0.5 + x2 (how sharply). With `varied_cost`, one unit of budget takes 2^(2 x3 - 1) seconds
    (0.5 to 2); otherwise one second, so that time is proportional to budget.
    """

    metric = "error"
    space = Space({f"x{i}": uniform(0.0, 1.0) for i in range(6)})

    def __init__(self, varied_cost: bool = True):
        self.varied_cost = varied_cost

    @staticmethod
    def final_error(config: Mapping[str, Any]) -> float:
        x = tuple(config[f"x{i}"] for i in range(6))
        return 0.05 + 0.85 * (hartmann6(x) - HARTMANN6_MIN) / -HARTMANN6_MIN

    def evaluate(self, config: Mapping[str, Any], step: float) -> float:
        e = self.final_error(config)
        tau = 2.0 ** (6.0 * config["x1"])
        gamma = 0.5 + config["x2"]
        return e + (0.95 - e) * (1.0 + step / tau) ** -gamma

    def seconds(self, config: Mapping[str, Any], start: float, stop: float) -> float:
        per_unit = 2.0 ** (2.0 * config["x3"] - 1.0) if self.varied_cost else 1.0
        return per_unit * (stop - start)


class ToyQuadratic:
    """The toy of Jaderberg et al. 2017 (section 4, figure 2): maximise Q(theta) = 1.2 - |theta|^2
    by gradient ascent on the surrogate Q_hat(theta | h) = 1.2 - (h0 theta0^2 + h1 theta1^2), from
    theta = (0.9, 0.9), with step size `lr`. A member with h = (1, 0) only ever shrinks theta0 and ends
    at Q = 1.2 - 0.81 = 0.39, and so does h = (0, 1); only by copying each other's theta, as PBT does,
    can a member shrink both. The model is theta; each step costs one second.
    """

    metric = "Q"
    space = Space({"h0": uniform(0.0, 1.0), "h1": uniform(0.0, 1.0)})

    def __init__(self, lr: float = 0.05):
        self.lr = lr

    def initial(self, config: Mapping[str, Any]) -> tuple[float, float]:
        return (0.9, 0.9)

    def train(self, config: Mapping[str, Any], model, start: float, stop: float) -> tuple[float, float]:
        theta0, theta1 = model
        for _ in range(int(round(stop - start))):
            # The gradient of Q_hat is -2 h theta, so ascent scales each coordinate by 1 - 2 lr h.
            theta0 -= self.lr * 2.0 * config["h0"] * theta0
            theta1 -= self.lr * 2.0 * config["h1"] * theta1
        return (theta0, theta1)

    def evaluate(self, config: Mapping[str, Any], model, step: float) -> float:
        return 1.2 - (model[0] ** 2 + model[1] ** 2)

    def seconds(self, config: Mapping[str, Any], start: float, stop: float) -> float:
        return stop - start


class NoisyQuadratic:
    """The noisy quadratic model of Wu et al. 2018 ("Understanding short-horizon bias in stochastic
    meta-optimization"), the task on which greedy learning-rate schedules are known to lose.

    The loss is L(theta) = 1/2 sum_i h_i theta_i^2 with curvatures h_i = 1 / i (i = 1..dimension), and
    SGD sees the gradient h_i theta_i plus noise of variance `noise` * h_i. Under SGD with learning
    rate a, the mean and variance of each coordinate evolve exactly as
        m_i <- (1 - a h_i) m_i,    v_i <- (1 - a h_i)^2 v_i + a^2 noise h_i,
    and the expected loss is 1/2 sum_i h_i (m_i^2 + v_i). A large rate makes fast progress along the
    flat directions but holds the loss at a noise floor proportional to a; a small rate lowers the
    floor now and pays for it later. So the best schedule decays the rate late, and a schedule chosen
    by looking a short horizon ahead decays it too early. The model is (m, v); from m_i = 1, v_i = 0.

    The configuration holds `lr`, and optionally `lr_late` and `switch`: the rate becomes `lr_late`
    from step `switch` on (a hand-tuned two-phase schedule). Each step costs one second.
    """

    metric = "loss"

    def __init__(self, dimension: int = 100, noise: float = 0.1):
        self.h = [1.0 / i for i in range(1, dimension + 1)]
        self.noise = noise
        self.space = Space({"lr": loguniform(1e-3, 1.9)})

    def initial(self, config: Mapping[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (tuple(1.0 for _ in self.h), tuple(0.0 for _ in self.h))

    def rate(self, config: Mapping[str, Any], step: float) -> float:
        if "switch" in config and step >= config["switch"]:
            return config["lr_late"]
        return config["lr"]

    def train(self, config: Mapping[str, Any], model, start: float, stop: float):
        import numpy as np  # vectorised over the coordinates; the model stays plain tuples

        h = np.asarray(self.h)
        m, v = np.asarray(model[0]), np.asarray(model[1])
        with np.errstate(over="ignore", invalid="ignore"):  # a rate past 2 / h_1 diverges: inf loss
            for step in range(int(round(start)), int(round(stop))):
                a = self.rate(config, step)
                shrink = 1.0 - a * h
                m = shrink * m
                v = shrink**2 * v + a * a * self.noise * h
        return (tuple(m.tolist()), tuple(v.tolist()))

    def evaluate(self, config: Mapping[str, Any], model, step: float) -> float:
        return 0.5 * sum(h * (m * m + v) for h, m, v in zip(self.h, model[0], model[1]))

    def seconds(self, config: Mapping[str, Any], start: float, stop: float) -> float:
        return stop - start
