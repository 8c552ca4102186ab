"""The curve comparisons of FIRE PBT (Dalibard & Jaderberg 2021, section 3), in the paper's own symbols.

A curve is a sequence of (x, y) points, x a training step and y the objective Q, which is MAXIMISED (callers
negate losses). eta and kappa are the curves of two evaluators (here `eta` names a curve, not the halving
rate of `halving.py`); r and s are where their overlapping sections start, n how far the sections reach.

- Smoothing (3.1.1, step 1): a Gaussian process with a Matern 5/2 kernel, a white-noise term and a constant
  mean, its three hyperparameters fitted by maximising the log marginal likelihood (empirical Bayes). The
  fit is used only to place the sections (step 2); every score reads the raw y.
- Overlap (steps 2-3): the curve whose fit starts higher starts its section at its first point; the other
  starts at the first point where its fit reaches that value. n is the number of points both curves have
  past their starts, so the sections are y[r..r+n] and y[s..s+n], n + 1 points each.
- best_score_diff (step 4): max of eta's section - max of kappa's section. When one curve lies strictly
  above the other, the higher one is lowered by a constant delta to see whether it also improves faster
  (Assumption 2, concave curves).
- binom_test (3.2): k = #{i in 1..n : y_eta[r+i] > y_child[s+i]}, and the one-sided binomial p-value of k
  successes in n trials at p = 0.5.
- The evaluator's stopping and success criteria (3.2) and the fitness of a parent member (3.1.2), the sum
  of best_score_diff against every member of Phi, the members that have an evaluator.

Points are paired by index, not by step: the paper's curves are evaluated every `eval_every` steps, so the
i-th point past a section start is the same number of steps into it on both curves. Where the extracted text
is ambiguous, the reading is written next to the code that makes it (see /work/shared/papers/fire-pbt-notes.md).
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Hashable, Mapping, NamedTuple, Sequence

import numpy as np
from scipy import linalg, optimize, stats
from scipy.linalg import lapack

Curve = Sequence[tuple[float, float]]

# Bounds of the GP hyperparameters in normalised units: steps mapped onto [0, 1], values centred on their
# mean and divided by their standard deviation. The noise floor doubles as the jitter that keeps the
# Cholesky factor well conditioned (condition number below ~1e10 at the largest signal variance).
SIGNAL_VARIANCE_BOUNDS = (1e-4, 1e4)
NOISE_VARIANCE_BOUNDS = (1e-6, 10.0)
MAX_LENGTH_SCALE = 10.0  # ten step ranges: beyond this the fit is a straight line anyway
INITIAL_LENGTH_SCALE = 0.25  # a quarter of the step range
MAX_FIT_ITERATIONS = 60
# The hyperparameters are fitted on at most this many evenly spread points; the posterior mean then uses
# them all. Each step of the search factors and inverts a matrix of this order, and three hyperparameters
# are pinned down well by a hundred points, so longer curves would cost time (cubic) without changing the fit.
MAX_FIT_POINTS = 100


class Overlap(NamedTuple):
    """The overlapping sections y_eta[r..r+n] and y_kappa[s..s+n] (0-based, both ends included)."""

    r: int
    s: int
    n: int


class Verdict(StrEnum):
    """What an evaluator does after a check. A StrEnum so that it compares equal to its name in lower case."""

    CONTINUE = "continue"
    STOP = "stop"
    SUCCESS = "success"


# --- curves in -----------------------------------------------------------------------------------------

def worst_for_non_finite(values) -> np.ndarray:
    """The values with NaN and -inf replaced by the curve's lowest finite value.

    A diverged run reports NaN (or a loss of +inf, negated to -inf); it counts as the worst the curve has
    shown, so it never wins a comparison on its own curve's merits and the GP, the maxima and the delta
    range all stay finite. It is the curve's own worst, not worse than everything: against another curve a
    NaN point weighs as much as the curve's lowest point. +inf is refused: for a maximised Q it can only be
    a bug (a loss of -inf), and no finite stand-in would be honest. So is a curve with no finite value.
    """
    values = np.array(values, dtype=float)
    if np.any(values == math.inf):
        raise ValueError(f"values hold +inf, but must be finite, NaN or -inf (Q is maximised)")
    finite = np.isfinite(values)
    if values.size and not finite.any():
        raise ValueError(f"values are {values.tolist()!r}, but at least one must be finite")
    if not finite.all():
        values[~finite] = values[finite].min()
    return values


def curve_arrays(curve: Curve, name: str = "curve") -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a curve given as (step, value) pairs, steps strictly increasing, y cleaned as above."""
    points = np.array(curve, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 1:
        raise ValueError(f"`{name}` has shape {points.shape}, but must be one or more (step, value) pairs")
    x = points[:, 0]
    _check_steps(x, name)
    return x, worst_for_non_finite(points[:, 1])


def _check_steps(x: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(x)) or np.any(np.diff(x) <= 0):
        raise ValueError(f"`{name}` has steps {x.tolist()!r}, but they must be finite and strictly increasing")


# --- step 1: Gaussian-process smoothing ----------------------------------------------------------------

def matern52(d: np.ndarray, signal_variance: float, length_scale: float) -> np.ndarray:
    """k(d) = sigma_f^2 (1 + sqrt5 d / l + 5 d^2 / (3 l^2)) exp(-sqrt5 d / l) (Rasmussen & Williams, 4.17)."""
    u = math.sqrt(5.0) * d / length_scale
    return signal_variance * (1.0 + u + u * u / 3.0) * np.exp(-u)


def negative_log_marginal_likelihood(log_params: np.ndarray, d: np.ndarray, z: np.ndarray):
    """-log p(z | sigma_f^2, l, sigma_n^2) and its gradient in (log sigma_f^2, log l, log sigma_n^2).

    R&W eq. 2.30 and 5.9: with K = K_f + sigma_n^2 I and alpha = K^-1 z,
    log p = -z'alpha/2 - log|K|/2 - m log(2 pi)/2 and d log p / d theta = tr((alpha alpha' - K^-1) dK) / 2,
    where tr(alpha alpha' dK) = alpha' dK alpha needs no outer product.
    """
    signal_variance, length_scale, noise_variance = np.exp(log_params)
    m = len(z)
    u = math.sqrt(5.0) * d / length_scale
    e = np.exp(-u)
    k_f = signal_variance * (1.0 + u + u * u / 3.0) * e
    dk_dlog_length = signal_variance * e * u * u * (1.0 + u) / 3.0
    k = k_f + noise_variance * np.eye(m)
    chol, info = lapack.dpotrf(k, lower=1, clean=0)
    if info != 0:
        # Only reachable at the edge of the bounds; a large value turns the search back.
        return 1e25, np.zeros(3)
    alpha = linalg.cho_solve((chol, True), z, check_finite=False)
    nll = 0.5 * z @ alpha + np.log(np.diag(chol)).sum() + 0.5 * m * math.log(2.0 * math.pi)
    # The lower triangle of K^-1 from the factor (dpotri), cheaper than solving against I; for symmetric B,
    # tr(K^-1 B) = 2 <tril(K^-1), B> - <diag(K^-1), diag(B)>.
    k_inv, info = lapack.dpotri(chol, lower=1)
    k_inv = np.tril(k_inv)
    diag_inv = np.diag(k_inv)

    def trace_inv_times(b):
        return 2.0 * np.vdot(k_inv, b) - diag_inv @ np.diag(b)

    gradient = -0.5 * np.array([
        alpha @ (k_f @ alpha) - trace_inv_times(k_f),
        alpha @ (dk_dlog_length @ alpha) - trace_inv_times(dk_dlog_length),
        noise_variance * (alpha @ alpha - diag_inv.sum()),
    ])
    return nll, gradient


def smooth(steps, values) -> np.ndarray:
    """The posterior mean, at `steps`, of a GP (Matern 5/2 + white noise, constant mean) fitted to the curve.

    Steps are mapped onto [0, 1] and values standardised, so the bounds and the starting point hold for any
    units and the fit commutes with them: smooth(a x + b, c y + d) = c smooth(x, y) + d for a, c > 0, up to
    rounding. The constant mean is the mean of the values (not fitted), which makes the fit of y - delta the
    fit of y minus delta; the delta rule relies on it. The search starts from a point derived from the data
    alone: l = a quarter of the step range, sigma_n^2 = half the variance of successive differences (what
    white noise alone would give), sigma_f^2 = the rest of the variance; L-BFGS-B then runs at most
    MAX_FIT_ITERATIONS iterations. No randomness, so the same curve gives the same bits.

    Curves of one or two points, and constant curves, have nothing to smooth and come back as they are.
    NaN and -inf are the curve's worst value (see `worst_for_non_finite`).
    """
    x = np.array(steps, dtype=float)
    y = worst_for_non_finite(values)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"steps have shape {x.shape} and values {y.shape}, but must be two equal 1-d arrays")
    _check_steps(x, "steps")
    if len(y) <= 2 or np.all(y == y[0]):
        return y
    t = (x - x[0]) / (x[-1] - x[0])
    mean, scale = y.mean(), y.std()
    z = (y - mean) / scale
    d = np.abs(t[:, None] - t[None, :])
    fit = np.unique(np.round(np.linspace(0, len(t) - 1, min(len(t), MAX_FIT_POINTS))).astype(int))
    d_fit, z_fit = d[np.ix_(fit, fit)], z[fit]

    # The length scale may not fall below the mean spacing of the fitted points: shorter, the kernel cannot
    # tell neighbours apart from noise and the "fit" interpolates it.
    min_length = 1.0 / (len(fit) - 1)
    noise0 = float(np.clip(0.5 * np.var(np.diff(z_fit)), *NOISE_VARIANCE_BOUNDS))
    signal0 = float(np.clip(1.0 - noise0, *SIGNAL_VARIANCE_BOUNDS))
    length0 = float(np.clip(INITIAL_LENGTH_SCALE, min_length, MAX_LENGTH_SCALE))
    bounds = np.log([SIGNAL_VARIANCE_BOUNDS, (min_length, MAX_LENGTH_SCALE), NOISE_VARIANCE_BOUNDS])
    result = optimize.minimize(
        negative_log_marginal_likelihood, np.log([signal0, length0, noise0]), args=(d_fit, z_fit), jac=True,
        method="L-BFGS-B", bounds=bounds, options={"maxiter": MAX_FIT_ITERATIONS})
    signal_variance, length_scale, noise_variance = np.exp(result.x)

    # Posterior mean at the data: K_f (K_f + sigma_n^2 I)^-1 z = z - sigma_n^2 alpha.
    k = matern52(d, signal_variance, length_scale) + noise_variance * np.eye(len(t))
    alpha = linalg.cho_solve(linalg.cho_factor(k, lower=True, check_finite=False), z, check_finite=False)
    return mean + scale * (z - noise_variance * alpha)
