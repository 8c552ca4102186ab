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

Every function that takes a curve also takes a `FittedCurve` (`fit_curve`), so that a caller comparing one
curve with many smooths it once. Points are paired by index, not by step: the paper's curves are evaluated
every `eval_every` steps, so the i-th point past a section start is the same number of steps into it on
both curves. Where the extracted text is ambiguous, the reading is written next to the code that makes
it, marked (reading); the reading guide shared/papers/fire-pbt-notes.md marks the same places.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from enum import StrEnum
from typing import Hashable, Mapping, NamedTuple, Sequence

import numpy as np
from scipy import linalg, optimize, stats
from scipy.linalg import lapack

Curve = Sequence[tuple[float, float]]  # or an array of shape (m, 2)

# The GP's hyperparameters live in normalised units: steps mapped onto [0, 1], values centred on their mean
# and divided by their standard deviation, so the bounds and the starting point hold for any curve.
MAX_LENGTH_SCALE = 10.0  # ten step ranges: beyond this the fit is a straight line anyway
INITIAL_LENGTH_SCALE = 0.25  # a quarter of the step range
# lambda = sigma_n^2 / sigma_f^2. Its floor is also the jitter that keeps the Cholesky factor sound (the
# condition number of C + lambda I stays below m / lambda); at its ceiling the fit is all noise, a constant.
NOISE_RATIO_BOUNDS = (1e-6, 1e4)
MAX_FIT_ITERATIONS = 50
# The hyperparameters are fitted on at most this many evenly spread points; the posterior mean then uses
# them all. Two hyperparameters are pinned down well by a hundred points, and the search stays in the
# milliseconds: each step factors and inverts a matrix of this order (cubic in it).
MAX_FIT_POINTS = 100


class Overlap(NamedTuple):
    """The overlapping sections y_eta[r..r+n] and y_kappa[s..s+n] (0-based, both ends included)."""

    r: int
    s: int
    n: int


class Verdict(StrEnum):
    """What an evaluator does after a check. A StrEnum, so Verdict.STOP == "stop" for callers that log it."""

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
        raise ValueError("values hold +inf, but must be finite, NaN or -inf (Q is maximised)")
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
        raise ValueError(
            f"`{name}` has steps {x.tolist()!r}, but they must be finite and strictly increasing")


# --- step 1: Gaussian-process smoothing ----------------------------------------------------------------

def matern52(d: np.ndarray, length_scale: float) -> np.ndarray:
    """The Matern 5/2 correlation (1 + sqrt5 d / l + 5 d^2 / (3 l^2)) exp(-sqrt5 d / l) (R&W eq. 4.17)."""
    u = math.sqrt(5.0) * d / length_scale
    return (1.0 + u + u * u / 3.0) * np.exp(-u)


def profile_negative_log_likelihood(log_params: np.ndarray, d: np.ndarray, z: np.ndarray):
    """-log p(z | l, lambda) with the signal variance at its maximum (up to a constant), and its gradient
    in (log l, log lambda).

    With K = sigma_f^2 (C_l + lambda I), lambda = sigma_n^2 / sigma_f^2, the log marginal likelihood (R&W
    eq. 2.30) is maximised over sigma_f^2 by z' alpha / m, alpha = A^-1 z, A = C_l + lambda I, which leaves
    f = m/2 log(z' alpha / m) + log|L| (L L' = A) and, for a parameter theta of A (R&W eq. 5.9),
    df/dtheta = -m/2 alpha' A_theta alpha / z' alpha + tr(A^-1 A_theta) / 2.
    Profiling sigma_f^2 out leaves two hyperparameters, and the posterior mean does not depend on it.
    """
    length_scale, noise_ratio = np.exp(log_params)
    m = len(z)
    u = math.sqrt(5.0) * d / length_scale
    e = np.exp(-u)
    a = (1.0 + u + u * u / 3.0) * e
    a[np.diag_indices(m)] += noise_ratio
    da_dlog_length = e * u * u * (1.0 + u) / 3.0  # zero on the diagonal
    chol, info = lapack.dpotrf(a, lower=1, clean=0)
    if info != 0:
        # Not reachable within the bounds in exact arithmetic; a large value turns the search back.
        return 1e25, np.zeros(2)
    alpha, _ = lapack.dpotrs(chol, z, lower=1)
    quad = max(float(z @ alpha), 1e-300)
    # dpotri leaves A^-1 in the lower triangle only; A_theta is symmetric with a zero diagonal, so
    # tr(A^-1 A_theta) = 2 <tril(A^-1), A_theta>.
    a_inv, _ = lapack.dpotri(chol, lower=1)
    f = 0.5 * m * math.log(quad / m) + float(np.log(np.diag(chol)).sum())
    trace_length = 2.0 * float(np.vdot(np.tril(a_inv), da_dlog_length))
    trace_noise = noise_ratio * float(np.trace(a_inv))
    gradient = np.array([
        -0.5 * m * float(alpha @ (da_dlog_length @ alpha)) / quad + 0.5 * trace_length,
        -0.5 * m * noise_ratio * float(alpha @ alpha) / quad + 0.5 * trace_noise,
    ])
    return f, gradient


def posterior_mean(d: np.ndarray, z: np.ndarray, length_scale: float, noise_ratio: float) -> np.ndarray:
    """C (C + lambda I)^-1 z = z - lambda alpha: the GP's posterior mean at the data, in normalised units."""
    a = matern52(d, length_scale)
    a[np.diag_indices_from(a)] += noise_ratio
    alpha = linalg.cho_solve(linalg.cho_factor(a, lower=True, check_finite=False), z, check_finite=False)
    return z - noise_ratio * alpha


def smooth(steps, values) -> np.ndarray:
    """The posterior mean, at `steps`, of a GP (Matern 5/2 + white noise, constant mean) fitted to the curve.

    Empirical Bayes, as the paper says: the length scale l, the signal variance sigma_f^2 and the noise
    variance sigma_n^2 maximise the log marginal likelihood. sigma_f^2 has a closed form given the other two
    (see `profile_negative_log_likelihood`), so L-BFGS-B searches (log l, log lambda), lambda the noise to
    signal ratio, with the exact gradient, for at most MAX_FIT_ITERATIONS iterations, on at most
    MAX_FIT_POINTS evenly spread points (both ends included); the posterior mean then conditions on every
    point.

    Steps are mapped onto [0, 1] and values standardised, so smooth(a x + b, c y + e) = c smooth(x, y) + e for
    a, c > 0, up to rounding and the search's tolerance. The constant mean is the mean of the values (not
    fitted), which makes the fit of y - delta the fit of y minus delta; the delta rule relies on it. The
    search starts from a point derived from the data alone: l = a quarter of the step range, sigma_n^2 =
    half the variance of successive differences (what white noise alone would give), sigma_f^2 = the rest
    of the variance. Nothing is random, so the same curve gives the same bits on one machine with one BLAS
    set-up (its thread count included: a threaded BLAS may sum in another order and change the last bits).

    Cost: the search is cubic in min(m, MAX_FIT_POINTS), the final solve cubic in m; a few hundred points
    take milliseconds.

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
    mean, scale = y.mean(), y.std()
    if not (math.isfinite(mean) and 0.0 < scale < math.inf):
        # A spread too wide for floats (|y| near 1e308) or too narrow to divide by (subnormal): no sane
        # objective looks like this, and standardising it would make NaNs, so the values stay unsmoothed.
        return y
    t = (x - x[0]) / (x[-1] - x[0])
    z = (y - mean) / scale
    d = np.abs(t[:, None] - t[None, :])
    fit = np.unique(np.round(np.linspace(0, len(t) - 1, min(len(t), MAX_FIT_POINTS))).astype(int))
    d_fit, z_fit = d[np.ix_(fit, fit)], z[fit]

    # The length scale may not fall below the mean spacing of the fitted points: shorter, the kernel cannot
    # tell neighbours apart from noise and the "fit" interpolates it.
    length_bounds = (1.0 / (len(fit) - 1), MAX_LENGTH_SCALE)
    noise0 = 0.5 * float(np.var(np.diff(z_fit)))
    ratio0 = noise0 / max(1.0 - noise0, NOISE_RATIO_BOUNDS[0])
    start = np.log([np.clip(INITIAL_LENGTH_SCALE, *length_bounds), np.clip(ratio0, *NOISE_RATIO_BOUNDS)])
    result = optimize.minimize(
        profile_negative_log_likelihood, start, args=(d_fit, z_fit), jac=True, method="L-BFGS-B",
        bounds=np.log([length_bounds, NOISE_RATIO_BOUNDS]), options={"maxiter": MAX_FIT_ITERATIONS})
    length_scale, noise_ratio = np.exp(result.x)
    return mean + scale * posterior_mean(d, z, length_scale, noise_ratio)


# --- steps 2 and 3: the overlapping sections -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FittedCurve:
    """A curve's values y (non-finite ones replaced) and its GP fit y_hat, both read-only.

    Every function below takes a FittedCurve wherever it takes a curve, so that a caller comparing one
    curve with many (fitness over Phi, a verdict at every check) smooths it once.
    """

    y: np.ndarray
    y_hat: np.ndarray


def fit_curve(curve: Curve, name: str = "curve") -> FittedCurve:
    x, y = curve_arrays(curve, name)
    y_hat = smooth(x, y).copy()
    y.setflags(write=False)
    y_hat.setflags(write=False)
    return FittedCurve(y, y_hat)


def _fitted(curve: Curve | FittedCurve, name: str) -> FittedCurve:
    return curve if isinstance(curve, FittedCurve) else fit_curve(curve, name)


def first_reaching(y_hat: np.ndarray, level: float) -> int | None:
    """The smallest index i with y_hat[i] >= level, or None if the fit never gets there."""
    reached = np.flatnonzero(y_hat >= level)
    return int(reached[0]) if reached.size else None


def overlap_of_fits(y_hat_eta: np.ndarray, y_hat_kappa: np.ndarray) -> Overlap | None:
    """Steps 2 and 3 of best_score_diff on two fitted curves; None where they do not overlap.

    The curve whose fit starts higher starts at its first point; on a tie both do, so the result does not
    depend on the order of the arguments beyond swapping r and s.

    n (reading): the paper's formula says n = max(len(x_eta) - r, len(x_kappa) - s) (1-based r, s, so those
    are the points past each start), but its own example says the curve with fewer points past its start
    "constrains the length", and y[r+n] must exist on both curves for the sections and the binomial test to
    be defined. So n is the minimum. The sections hold the start and the n points past it, as the paper's
    test compares y[r+1..r+n] with y[s+1..s+n].

    n = 0 (one of the sections would be its start alone, e.g. the other curve's fit reaches the start value
    only at its last point) counts as no overlap: there is nothing past the starts to compare, and the
    binomial test of 0 trials is undefined.
    """
    y_hat_eta, y_hat_kappa = np.asarray(y_hat_eta, dtype=float), np.asarray(y_hat_kappa, dtype=float)
    if not (y_hat_eta.size and y_hat_kappa.size):
        raise ValueError("the fits have no points, but each must have at least one")
    if y_hat_eta[0] >= y_hat_kappa[0]:
        r, s = 0, first_reaching(y_hat_kappa, y_hat_eta[0])
    else:
        r, s = first_reaching(y_hat_eta, y_hat_kappa[0]), 0
    if r is None or s is None:
        return None
    n = min(len(y_hat_eta) - 1 - r, len(y_hat_kappa) - 1 - s)
    return Overlap(r, s, n) if n >= 1 else None


def overlap(eta: Curve | FittedCurve, kappa: Curve | FittedCurve) -> Overlap | None:
    """The overlapping sections of two curves (steps 1-3): Overlap(r, s, n), or None where there is none."""
    eta_fit, kappa_fit = _fitted(eta, "eta"), _fitted(kappa, "kappa")
    return overlap_of_fits(eta_fit.y_hat, kappa_fit.y_hat)


# --- step 4: best_score_diff ---------------------------------------------------------------------------

def section_best_diff(y_eta: np.ndarray, y_kappa: np.ndarray, sections: Overlap) -> float:
    """max y_eta[r..r+n] - max y_kappa[s..s+n], on the raw values."""
    r, s, n = sections
    return float(np.max(y_eta[r:r + n + 1]) - np.max(y_kappa[s:s + n + 1]))


def delta_range(y_eta: np.ndarray, y_kappa: np.ndarray, deltas: int) -> np.ndarray:
    """`deltas` evenly spaced values over [min y_eta - max y_kappa, min y_eta - min y_kappa], ends included.

    At the low end the lowered eta just touches kappa's best; at the high end its worst sits on kappa's
    worst. The paper says only "multiple values" in that range; an even grid is deterministic and its ends
    are the two extremes the paper names.
    """
    return np.linspace(y_eta.min() - y_kappa.max(), y_eta.min() - y_kappa.min(), deltas)


def _lowered_best_score_diff(eta: FittedCurve, kappa: FittedCurve, deltas: int) -> float:
    # Lowering a curve by delta lowers its fit by exactly delta: the GP's constant mean is the data's mean,
    # and the hyperparameters see only the standardised values. So the fit is shifted, not refitted.
    best = 0.0
    for delta in delta_range(eta.y, kappa.y, deltas):
        sections = overlap_of_fits(eta.y_hat - delta, kappa.y_hat)
        if sections is not None:
            best = max(best, section_best_diff(eta.y - delta, kappa.y, sections))
    return best


def _best_score_diff(eta: FittedCurve, kappa: FittedCurve, deltas: int) -> float:
    sections = overlap_of_fits(eta.y_hat, kappa.y_hat)
    if sections is not None:
        return section_best_diff(eta.y, kappa.y, sections)
    if eta.y.min() > kappa.y.max():
        return _lowered_best_score_diff(eta, kappa, deltas)
    if kappa.y.min() > eta.y.max():
        # (reading) The paper lowers only eta, the first argument. When kappa is the higher curve, kappa is
        # lowered and the result negated: best_score_diff(eta, kappa) = -best_score_diff(kappa, eta). Raising
        # eta instead would reward the lower curve for being steeper, which Assumption 2 (concave curves)
        # says is what a lower curve does anyway; the paper's rule credits only a curve that is both higher
        # and steeper, and the negation charges that credit to the other side, so fitness stays zero-sum.
        lowered = _lowered_best_score_diff(kappa, eta, deltas)
        return -lowered if lowered else 0.0  # not -0.0
    # No overlap and neither strictly above: the fits never meet although the raw values do (noise), or
    # they meet only at a last point. The paper defines nothing here; no evidence either way is 0.
    return 0.0


def _check_deltas(deltas: int) -> None:
    if isinstance(deltas, bool) or not isinstance(deltas, numbers.Integral) or deltas < 2:
        raise ValueError(f"`deltas` is {deltas!r}, but must be an int >= 2 (both ends of the range)")


def best_score_diff(eta: Curve | FittedCurve, kappa: Curve | FittedCurve, deltas: int = 8) -> float:
    """Positive when eta is improving faster than kappa, negative when kappa is (section 3.1.1).

    With overlapping sections: max y_eta[r..r+n] - max y_kappa[s..s+n]. When eta lies strictly above kappa
    (min y_eta > max y_kappa): the highest positive best_score_diff(eta - delta, kappa) over `deltas` values
    of delta (see `delta_range`), else 0. When kappa lies strictly above eta: -best_score_diff(kappa, eta),
    so the result is <= 0. Otherwise, with no overlap: 0.

    In every case best_score_diff(eta, kappa) == -best_score_diff(kappa, eta), exactly, and
    best_score_diff(eta, eta) == 0.
    """
    _check_deltas(deltas)
    return _best_score_diff(_fitted(eta, "eta"), _fitted(kappa, "kappa"), deltas)


# --- section 3.2: the binomial test and the evaluator's verdict ----------------------------------------

def wins(y_eta: np.ndarray, y_child: np.ndarray, sections: Overlap) -> int:
    """k = #{i in 1..n : y_eta[r+i] > y_child[s+i]}: the starts are left out, as in the paper, and a tie
    is not a win (the test asks whether eta is better, so a tie is no evidence for it)."""
    r, s, n = sections
    return int(np.count_nonzero(y_eta[r + 1:r + n + 1] > y_child[s + 1:s + n + 1]))


def binomial_p_value(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2): the one-sided test that eta wins more often than chance
    (reading: the paper says "a binomial test"; only a one-sided one lets a small p mean eta is better)."""
    return float(stats.binomtest(k, n, 0.5, alternative="greater").pvalue)


def _binomial_test(eta: FittedCurve, child: FittedCurve) -> float | None:
    sections = overlap_of_fits(eta.y_hat, child.y_hat)
    if sections is None:
        return None
    return binomial_p_value(wins(eta.y, child.y, sections), sections.n)


def binomial_test(eta: Curve | FittedCurve, child: Curve | FittedCurve) -> float | None:
    """binom_test(eta, rho_child): the p-value over the overlapping sections, None when they do not overlap.

    `child` is rho_child's curve since it last copied weights (an exploit or an evaluator's success).
    """
    return _binomial_test(_fitted(eta, "eta"), _fitted(child, "child"))


def stopping_threshold(trained_steps: float, max_eval_steps: float, p_stat: float) -> float:
    """p_stat + max(0, 1 - T / max_eval_steps): above 1 while T is 0, so a young evaluator is never stopped
    by the test, falling to p_stat at T = max_eval_steps."""
    return p_stat + max(0.0, 1.0 - trained_steps / max_eval_steps)


def evaluator_verdict(eta: Curve | FittedCurve, child: Curve | FittedCurve, trained_steps: float,
                      max_eval_steps: float, p_stat: float = 0.01, deltas: int = 8) -> Verdict:
    """The stopping and success criteria of an evaluator that has trained T = `trained_steps` steps.

    - STOP if the curves do not overlap and T > max_eval_steps;
    - STOP if they overlap and binom_test > p_stat + max(0, 1 - T / max_eval_steps);
    - SUCCESS if best_score_diff(eta, child) > 0 and binom_test < p_stat;
    - CONTINUE otherwise.

    The checks run in the paper's order, stops first, but the order cannot change a verdict: the conditions
    are disjoint. The second stop needs p > p_stat and success needs p < p_stat; the first stop needs no
    overlap and success needs a p-value, which needs an overlap. With an overlap, best_score_diff is the
    sections' difference, never the delta rule. One consequence, kept from the paper: an evaluator whose
    curve lies strictly above its target's never overlaps it, so it never succeeds, and it stops after
    max_eval_steps.

    Stopping because rho_parent or rho_child lost an evolution event is the caller's business.
    """
    if not 0 < max_eval_steps < math.inf:
        raise ValueError(f"`max_eval_steps` is {max_eval_steps!r}, but must be > 0")
    if not 0 <= trained_steps < math.inf:
        raise ValueError(f"`trained_steps` is {trained_steps!r}, but must be >= 0")
    if not 0 < p_stat < 1:
        raise ValueError(f"`p_stat` is {p_stat!r}, but must be in (0, 1)")
    _check_deltas(deltas)
    eta_fit, child_fit = _fitted(eta, "eta"), _fitted(child, "child")
    p = _binomial_test(eta_fit, child_fit)
    if p is None:
        return Verdict.STOP if trained_steps > max_eval_steps else Verdict.CONTINUE
    if p > stopping_threshold(trained_steps, max_eval_steps, p_stat):
        return Verdict.STOP
    if p < p_stat and _best_score_diff(eta_fit, child_fit, deltas) > 0:
        return Verdict.SUCCESS
    return Verdict.CONTINUE


# --- section 3.1.2: the fitness of a parent member -----------------------------------------------------

def parent_fitnesses(curves_of_evaluators: Mapping[Hashable, Curve | FittedCurve],
                     deltas: int = 8) -> dict[Hashable, float]:
    """fitness(rho_j) = sum over rho_k in Phi of best_score_diff(eta_rho_j, eta_rho_k), for every rho_j in
    Phi, the keys of `curves_of_evaluators` (the members of one parent sub-population with an evaluator).

    The k = j term is left out: best_score_diff of a curve against itself is exactly 0, so including it
    would change nothing but the work. Each curve is smoothed once and each pair compared once, the other
    direction being the negation; the sums are exact (math.fsum), so they do not depend on Phi's order, and
    they add up to 0 over Phi up to the rounding of each sum.
    """
    _check_deltas(deltas)
    fitted = {member: _fitted(curve, f"curve of {member!r}")
              for member, curve in curves_of_evaluators.items()}
    members = list(fitted)
    diffs: dict[Hashable, list[float]] = {member: [] for member in members}
    for a, j in enumerate(members):
        for k in members[a + 1:]:
            diff = _best_score_diff(fitted[j], fitted[k], deltas)
            diffs[j].append(diff)
            diffs[k].append(-diff)
    return {member: math.fsum(diffs[member]) for member in members}


def parent_fitness(curves_of_evaluators: Mapping[Hashable, Curve | FittedCurve], member: Hashable,
                   deltas: int = 8) -> float | None:
    """fitness(`member`), as in `parent_fitnesses`; None for a member without an evaluator (not in Phi),
    which has no fitness and takes no part in evolution."""
    _check_deltas(deltas)
    if member not in curves_of_evaluators:
        return None
    own = _fitted(curves_of_evaluators[member], f"curve of {member!r}")
    return math.fsum(
        _best_score_diff(own, _fitted(curve, f"curve of {other!r}"), deltas)
        for other, curve in curves_of_evaluators.items() if other != member)
