"""FIRE PBT's curve comparisons (Dalibard & Jaderberg 2021, section 3), on curves computed by hand.

Most curves here are straight lines sampled every 200 steps, as the paper's evaluators are. A GP fits a
clean line to within ~1e-5, so every crossing below is placed with a margin of at least 0.01 and the
expected sections can be read off the lines: a line a + g i first reaches v at i = ceil((v - a) / g).
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from rung.algorithms.fire_curves import (
    Overlap, Verdict, best_score_diff, binomial_p_value, binomial_test, curve_arrays, delta_range,
    evaluator_verdict, fit_curve, matern52, overlap, overlap_of_fits, parent_fitness, parent_fitnesses,
    profile_negative_log_likelihood, smooth, stopping_threshold,
)

EVAL_EVERY = 200


def line(a, g, length):
    """The curve a + g i at steps 0, 200, 400, ..."""
    return [(EVAL_EVERY * i, a + g * i) for i in range(length)]


def curve(values):
    return [(EVAL_EVERY * i, y) for i, y in enumerate(values)]


# --- steps 2 and 3: where the sections start and how far they reach ------------------------------------

@pytest.mark.parametrize("eta, kappa, expected", [
    # kappa = 0.3 + 0.03 i first reaches eta's start 0.5 at i = 7 (0.51; 0.48 at i = 6); n = min(19, 12).
    (line(0.5, 0.01, 20), line(0.3, 0.03, 20), Overlap(0, 7, 12)),
    (line(0.3, 0.03, 20), line(0.5, 0.01, 20), Overlap(7, 0, 12)),
    # The curve with fewer points past its start constrains n: min(9, 22), then min(29, 2).
    (line(0.5, 0.01, 10), line(0.3, 0.03, 30), Overlap(0, 7, 9)),
    (line(0.5, 0.01, 30), line(0.3, 0.03, 10), Overlap(0, 7, 2)),
    # The same start: both sections start at their first point. (Two lines from the same value would tie
    # only up to the fits' rounding; constant curves are left unsmoothed, so they tie exactly.)
    (curve([0.5] * 12), curve([0.5] * 20), Overlap(0, 0, 11)),
    # Parallel lines, one 0.25 higher: the lower reaches 0.25 at i = ceil(0.25 / 0.1) = 3.
    (line(0.25, 0.1, 10), line(0.0, 0.1, 10), Overlap(0, 3, 6)),
    # kappa reaches eta's start only at its last point (i = 7 of 8): nothing past the starts, n = 0.
    (line(0.5, 0.01, 20), line(0.3, 0.03, 8), None),
    # A flat curve below never reaches the other's start.
    (line(0.5, 0.01, 20), curve([0.2] * 20), None),
    # A single point has nothing past its start.
    (curve([0.5]), curve([0.5]), None),
], ids=["eta-leads", "kappa-leads", "eta-shorter", "kappa-shorter", "same-start", "parallel",
        "reaches-at-last-point", "never-reaches", "one-point"])
def test_overlapping_sections_of_lines(eta, kappa, expected):
    assert overlap(eta, kappa) == expected


@pytest.mark.parametrize("y_hat_eta, y_hat_kappa, expected", [
    ([0.5, 0.6, 0.7, 0.8], [0.3, 0.4, 0.5, 0.6, 0.7], Overlap(0, 2, 2)),  # reaching means >=, not >
    ([0.3, 0.4, 0.5, 0.6, 0.7], [0.5, 0.6, 0.7, 0.8], Overlap(2, 0, 2)),
    ([0.5, 0.6, 0.7], [0.5, 0.9, 1.0], Overlap(0, 0, 2)),  # a tie: both start at their first point
    ([0.5, 0.4, 0.6, 0.7], [0.3, 0.5, 0.4, 0.9], Overlap(0, 1, 2)),  # the FIRST point reaching counts
    ([0.5, 0.6], [0.1, 0.2], None),
], ids=["reach-equal", "swapped", "tie", "first-reach", "never"])
def test_overlap_of_fits_reads_the_fits_only(y_hat_eta, y_hat_kappa, expected):
    assert overlap_of_fits(np.array(y_hat_eta), np.array(y_hat_kappa)) == expected


# --- step 4: best_score_diff -----------------------------------------------------------------------------

A, B, C = line(0.5, 0.01, 20), line(0.3, 0.03, 20), line(0.41, 0.02, 20)


@pytest.mark.parametrize("eta, kappa, expected", [
    # Sections A[0..12] and B[7..19]: max 0.62 - max 0.87.
    (A, B, -0.25),
    (B, A, 0.25),
    # C = 0.41 + 0.02 i reaches 0.5 at i = 5: A[0..14], C[5..19]: 0.64 - 0.79.
    (A, C, -0.15),
    # B reaches C's start 0.41 at i = 4: B[4..19], C[0..15]: 0.87 - 0.71.
    (B, C, 0.16),
    (A, A, 0.0),
    # A flat curve strictly above a rising one: lowering it never makes it win, so 0.
    (curve([0.9] * 10), line(0.1, 0.02, 10), 0.0),
    (line(0.1, 0.02, 10), curve([0.9] * 10), 0.0),
    # No overlap (the lower curve's fit reaches 0.5 only at its last point) and neither strictly
    # above (0.525 > 0.5): no evidence either way.
    (curve([0.5] * 10), line(0.125, 0.05, 9), 0.0),
], ids=["A-B", "B-A", "A-C", "B-C", "A-A", "flat-above", "flat-above-swapped", "no-overlap-otherwise"])
def test_best_score_diff_of_lines(eta, kappa, expected):
    assert best_score_diff(eta, kappa) == pytest.approx(expected, abs=1e-12)


def test_a_curve_strictly_above_that_also_rises_faster_wins_by_the_slope_difference():
    # eta = 0.6 + 0.02 i (10 points) lies above kappa = 0.1 + 0.001 i (30 points). Lowered by delta in
    # [0.471, 0.5], eta starts at c = 0.6 - delta in [0.1, 0.129], and kappa reaches c at
    # s = ceil((c - 0.1) / 0.001). Where s <= 20 (c <= 0.12, five of the eight deltas), n = 9 and the
    # difference is (c + 9 * 0.02) - (0.1 + 0.001 (s + 9)) = 9 * (0.02 - 0.001) - (0.001 s - (c - 0.1)),
    # the last term in [0, 0.001): about 0.171, however a tie at the start falls. Higher c leave kappa
    # fewer points past s, so a shorter n and a smaller difference.
    eta, kappa = line(0.6, 0.02, 10), line(0.1, 0.001, 30)
    assert overlap(eta, kappa) is None
    assert best_score_diff(eta, kappa) == pytest.approx(0.171, abs=0.0015)
    # (reading) When kappa is the higher curve, kappa is lowered and the result negated.
    assert best_score_diff(kappa, eta) == -best_score_diff(eta, kappa)


def test_the_delta_grid_spans_the_papers_range_ends_included():
    y_eta, y_kappa = np.array([0.6, 0.7, 0.8]), np.array([0.1, 0.2, 0.3])
    # [min eta - max kappa, min eta - min kappa] = [0.3, 0.5]
    assert delta_range(y_eta, y_kappa, 5) == pytest.approx([0.3, 0.35, 0.4, 0.45, 0.5])


# --- the binomial test -----------------------------------------------------------------------------------

def hand_p_value(k, n):
    return sum(math.comb(n, j) for j in range(k, n + 1)) / 2**n


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (0, 10), (4, 10), (7, 10), (10, 10), (10, 20), (15, 20),
                                  (20, 20), (12, 12), (0, 36), (30, 36)])
def test_binomial_p_value_is_the_upper_tail_at_one_half(k, n):
    assert binomial_p_value(k, n) == pytest.approx(hand_p_value(k, n), rel=1e-12)
    assert binomial_p_value(k, n) == stats.binomtest(k, n, 0.5, alternative="greater").pvalue


def test_an_evaluator_above_its_target_on_all_20_overlapping_points_is_significant():
    eta, child = line(0.3, 0.03, 28), line(0.5, 0.005, 21)
    # eta reaches 0.5 at r = 7; n = min(27 - 7, 20) = 20; and past the starts
    # eta[7 + i] = 0.51 + 0.03 i > child[i] = 0.5 + 0.005 i, so k = n.
    assert overlap(eta, child) == Overlap(7, 0, 20)
    assert binomial_test(eta, child) == pytest.approx(2.0**-20)
    assert binomial_test(eta, child) < 0.01


def test_identical_curves_give_no_win_and_p_one():
    # A tie is not a win: k = 0 of n, p = P(X >= 0) = 1.
    assert binomial_test(A, A) == 1.0


def test_binomial_test_is_none_without_overlap():
    assert binomial_test(line(0.5, 0.01, 20), curve([0.2] * 20)) is None


# A slightly worse evaluator: it climbs steeply to its target's start (its fit first reaches 0.5 at
# index 4, from 0.47 to 0.53), then tracks the target 0.003 above or below, winning 4 of the 10 points
# past the starts. p = P(X >= 4 | n = 10) = 848 / 1024 = 0.828125, and max 0.597 - max 0.6 < 0.
SLIGHTLY_WORSE_SIGNS = [+1, -1, -1, +1, -1, +1, -1, +1, -1, -1]
SLIGHTLY_WORSE = curve([0.20, 0.30, 0.40, 0.47, 0.53]
                       + [0.5 + 0.01 * i + 0.003 * sign for i, sign in enumerate(SLIGHTLY_WORSE_SIGNS, 1)])
TARGET = line(0.5, 0.01, 11)


def test_the_slightly_worse_evaluator_by_hand():
    assert overlap(SLIGHTLY_WORSE, TARGET) == Overlap(4, 0, 10)
    assert binomial_test(SLIGHTLY_WORSE, TARGET) == pytest.approx(0.828125)
    assert best_score_diff(SLIGHTLY_WORSE, TARGET) == pytest.approx(-0.003)


# --- the evaluator's verdict -----------------------------------------------------------------------------

MAX_EVAL_STEPS = 7200  # the image task's


@pytest.mark.parametrize("trained_steps", [0, 2400, 7200, 9600])
def test_an_evaluator_improving_clearly_faster_succeeds(trained_steps):
    eta, child = line(0.31, 0.02, 30), line(0.5, 0.005, 30)
    # r = 10, n = 19, k = 19: p = 2^-19; best_score_diff = 0.89 - 0.595 > 0.
    assert evaluator_verdict(eta, child, trained_steps, MAX_EVAL_STEPS) is Verdict.SUCCESS


@pytest.mark.parametrize("trained_steps, verdict", [
    (2400, Verdict.CONTINUE),
    (7200, Verdict.CONTINUE),  # "T is greater than max_eval_steps": at 7200 it is not yet
    (7400, Verdict.STOP),
])
def test_an_evaluator_that_never_overlaps_stops_after_max_eval_steps(trained_steps, verdict):
    eta, child = curve([0.1] * 30), line(0.5, 0.005, 30)
    assert evaluator_verdict(eta, child, trained_steps, MAX_EVAL_STEPS) is verdict


@pytest.mark.parametrize("trained_steps, verdict", [
    (0, Verdict.CONTINUE),
    (720, Verdict.CONTINUE),
    # Stop once 0.828125 > 0.01 + 1 - T / 7200, i.e. T > 7200 * 0.181875 = 1309.5.
    (1309, Verdict.CONTINUE),
    (1310, Verdict.STOP),
    (2400, Verdict.STOP),
    (7200, Verdict.STOP),
])
def test_a_slightly_worse_evaluator_continues_while_young_and_stops_as_it_ages(trained_steps, verdict):
    assert evaluator_verdict(SLIGHTLY_WORSE, TARGET, trained_steps, MAX_EVAL_STEPS) is verdict


def test_an_evaluator_strictly_above_its_target_never_succeeds():
    # Kept from the paper: success needs the binomial test, which needs an overlap.
    eta, child = line(0.8, 0.01, 30), line(0.1, 0.001, 30)
    assert best_score_diff(eta, child) > 0
    assert evaluator_verdict(eta, child, 2400, MAX_EVAL_STEPS) is Verdict.CONTINUE
    assert evaluator_verdict(eta, child, 7400, MAX_EVAL_STEPS) is Verdict.STOP


def test_verdicts_compare_equal_to_their_names():
    assert [Verdict.STOP, Verdict.SUCCESS, Verdict.CONTINUE] == ["stop", "success", "continue"]


@pytest.mark.parametrize("T, expected", [(0, 1.01), (3600, 0.51), (7200, 0.01), (14400, 0.01)])
def test_stopping_threshold_falls_to_p_stat(T, expected):
    assert stopping_threshold(T, 7200, 0.01) == pytest.approx(expected)


# --- the fitness of parent members -----------------------------------------------------------------------

def test_fitness_sums_best_score_diff_over_the_members_with_an_evaluator():
    # From the table above: A-B -0.25, A-C -0.15, B-C 0.16.
    curves = {"A": A, "B": B, "C": C}
    expected = {"A": -0.40, "B": 0.41, "C": -0.01}
    assert parent_fitnesses(curves) == pytest.approx(expected)
    for member, fitness in expected.items():
        assert parent_fitness(curves, member) == pytest.approx(fitness)
    # A member without an evaluator is not in Phi and has no fitness.
    assert parent_fitness(curves, "D") is None
    assert parent_fitness({"A": A}, "A") == 0.0
    assert parent_fitnesses({}) == {}


# --- smoothing -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("length_scale", [0.05, 0.25, 3.0])
def test_matern52_is_its_closed_form(length_scale):
    # (1 + sqrt5 d / l + 5 d^2 / (3 l^2)) exp(-sqrt5 d / l): 1 at d = 0, (1 + sqrt5 + 5/3) e^-sqrt5 at d = l.
    at_l = (1 + math.sqrt(5) + 5 / 3) * math.exp(-math.sqrt(5))
    assert matern52(np.array([0.0, length_scale]), length_scale) == pytest.approx([1.0, at_l], rel=1e-14)


@pytest.mark.parametrize("length_scale, noise_ratio", [(0.25, 0.1), (0.05, 1e-4), (2.0, 10.0)],
                         ids=["start", "short-and-clean", "long-and-noisy"])
def test_the_likelihoods_gradient_matches_finite_differences(length_scale, noise_ratio):
    # The fit's search follows this gradient: a wrong one would stop it short of the maximum.
    rng = np.random.default_rng(11)
    t = np.linspace(0.0, 1.0, 30)
    y = np.sin(4 * t) + rng.normal(0.0, 0.2, size=30)
    z, d = (y - y.mean()) / y.std(), np.abs(t[:, None] - t[None, :])
    log_params = np.log([length_scale, noise_ratio])
    gradient = profile_negative_log_likelihood(log_params, d, z)[1]
    error = optimize.check_grad(lambda p: profile_negative_log_likelihood(p, d, z)[0],
                                lambda p: profile_negative_log_likelihood(p, d, z)[1], log_params)
    assert error <= 1e-5 * max(1.0, float(np.linalg.norm(gradient)))


def test_smoothing_a_noisy_line_recovers_the_line():
    rng = np.random.default_rng(7)
    steps = EVAL_EVERY * np.arange(100)
    truth = 0.2 + 0.5 * steps / steps[-1]
    noisy = truth + rng.normal(0.0, 0.05, size=100)
    error = np.sqrt(np.mean((smooth(steps, noisy) - truth) ** 2))
    assert error < 0.3 * 0.05


def test_smoothing_a_noisy_saturating_curve_recovers_it():
    rng = np.random.default_rng(8)
    steps = EVAL_EVERY * np.arange(300)
    truth = 0.8 - 0.6 * np.exp(-steps / 8000)
    noisy = truth + rng.normal(0.0, 0.02, size=300)
    error = np.sqrt(np.mean((smooth(steps, noisy) - truth) ** 2))
    assert error < 0.3 * 0.02


@pytest.mark.parametrize("values", [[0.7], [0.3, 0.9], [0.5] * 40], ids=["one", "two", "constant"])
def test_too_short_or_constant_curves_come_back_as_they_are(values):
    steps = EVAL_EVERY * np.arange(len(values))
    assert smooth(steps, values).tolist() == values


def test_smoothing_is_deterministic_to_the_bit():
    rng = np.random.default_rng(9)
    steps, values = np.arange(150) * 7.0, rng.normal(size=150).cumsum()
    assert smooth(steps, values).tobytes() == smooth(steps, values).tobytes()


def test_smoothing_ignores_units_and_commutes_with_shifts():
    rng = np.random.default_rng(10)
    steps = EVAL_EVERY * np.arange(60)
    values = np.log1p(np.arange(60)) + rng.normal(0.0, 0.1, size=60)
    fit = smooth(steps, values)
    assert smooth(steps / 200 + 5, values) == pytest.approx(fit, abs=1e-6)
    assert smooth(steps, 3 * values - 0.4) == pytest.approx(3 * fit - 0.4, abs=1e-6)


def test_nan_and_minus_inf_count_as_the_curves_worst_value():
    values = [0.3, 0.5, float("nan"), 0.6, float("-inf"), 0.7]
    cleaned = [0.3, 0.5, 0.3, 0.6, 0.3, 0.7]
    steps = EVAL_EVERY * np.arange(6)
    assert smooth(steps, values).tolist() == smooth(steps, cleaned).tolist()
    assert curve_arrays(curve(values))[1].tolist() == cleaned
    assert best_score_diff(curve(values), B) == best_score_diff(curve(cleaned), B)


@pytest.mark.parametrize("bad, message", [
    ([], "must be one or more"),
    ([(0, 0.5), (0, 0.6)], "strictly increasing"),
    ([(200, 0.5), (0, 0.6)], "strictly increasing"),
    ([(0, 0.5), (float("nan"), 0.6)], "strictly increasing"),
    ([(0, 0.5), (200, float("inf"))], r"\+inf"),
    ([(0, float("nan")), (200, float("nan"))], "at least one must be finite"),
    ([0.5, 0.6], "must be one or more"),
], ids=["empty", "repeated-step", "decreasing", "nan-step", "plus-inf", "all-nan", "no-steps"])
def test_bad_curves_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        best_score_diff(bad, A)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_eval_steps": 0}, "`max_eval_steps` is 0, but must be > 0"),
    ({"trained_steps": -1}, "`trained_steps` is -1, but must be >= 0"),
    ({"p_stat": 0.0}, "`p_stat` is 0.0, but must be in"),
    ({"p_stat": 1.0}, "`p_stat` is 1.0, but must be in"),
    ({"deltas": 1}, "`deltas` is 1, but must be an int >= 2"),
])
def test_bad_verdict_settings_are_refused(kwargs, message):
    settings_ = {"trained_steps": 2400, "max_eval_steps": 7200, **kwargs}
    with pytest.raises(ValueError, match=message):
        evaluator_verdict(A, B, **settings_)


# --- fitted curves ---------------------------------------------------------------------------------------

def test_a_fitted_curve_stands_for_its_curve_everywhere():
    fitted = {name: fit_curve(points) for name, points in (("A", A), ("B", B), ("C", C))}
    assert fitted["A"].y_hat == pytest.approx(smooth(*curve_arrays(A)))
    assert overlap(fitted["A"], fitted["B"]) == overlap(A, B)
    assert best_score_diff(fitted["B"], C) == best_score_diff(B, C)
    assert binomial_test(fitted["B"], fitted["A"]) == binomial_test(B, A)
    assert evaluator_verdict(fitted["B"], A, 2400, 7200) is evaluator_verdict(B, A, 2400, 7200)
    assert parent_fitnesses(fitted) == parent_fitnesses({"A": A, "B": B, "C": C})
    with pytest.raises(ValueError):
        fitted["A"].y[0] = 1.0  # read-only, so a fit cannot drift from its curve


# --- properties ----------------------------------------------------------------------------------------
# Each example fits its curves once (fit_curve) and compares the fits, as a caller comparing one curve with
# many would; the examples above go through the raw curves.

# Finite values three times in four, the rest NaN or -inf (each the curve's worst value).
values_ = st.one_of(st.floats(-10, 10), st.floats(-10, 10), st.floats(-10, 10),
                    st.sampled_from([float("nan"), float("-inf")]))
curves = st.lists(values_, min_size=1, max_size=25).filter(
    lambda ys: any(math.isfinite(y) for y in ys)).map(curve)
fitted_curves = curves.map(fit_curve)
SETTINGS = settings(max_examples=50, deadline=None)


@SETTINGS
@given(fitted_curves)
def test_a_curve_against_itself_scores_zero(eta):
    assert best_score_diff(eta, eta) == 0.0


@SETTINGS
@given(fitted_curves, fitted_curves)
def test_best_score_diff_is_antisymmetric(eta, kappa):
    # It holds exactly: the sections do not depend on the order of the arguments, and the strictly-above
    # case is defined by negation (the reading for kappa above eta).
    assert best_score_diff(eta, kappa) == -best_score_diff(kappa, eta)


@SETTINGS
@given(fitted_curves, fitted_curves)
def test_overlap_stays_within_both_curves(eta, kappa):
    sections = overlap(eta, kappa)
    if sections is not None:
        r, s, n = sections
        assert n >= 1 and 0 in (r, s)
        assert 0 <= r and r + n < len(eta.y)
        assert 0 <= s and s + n < len(kappa.y)
        assert (s, r, n) == overlap(kappa, eta)


@SETTINGS
@given(fitted_curves, fitted_curves)
def test_binomial_p_is_a_probability_or_none_exactly_without_overlap(eta, child):
    p = binomial_test(eta, child)
    assert (p is None) == (overlap(eta, child) is None)
    assert p is None or 0.0 <= p <= 1.0


@SETTINGS
@given(fitted_curves, fitted_curves, st.integers(0, 3 * MAX_EVAL_STEPS))
def test_the_stop_and_success_conditions_never_hold_together(eta, child, trained_steps):
    p = binomial_test(eta, child)
    stop = ((p is None and trained_steps > MAX_EVAL_STEPS)
            or (p is not None and p > stopping_threshold(trained_steps, MAX_EVAL_STEPS, 0.01)))
    success = p is not None and p < 0.01 and best_score_diff(eta, child) > 0
    assert not (stop and success)
    expected = Verdict.STOP if stop else Verdict.SUCCESS if success else Verdict.CONTINUE
    assert evaluator_verdict(eta, child, trained_steps, MAX_EVAL_STEPS) is expected


@settings(max_examples=25, deadline=None)
@given(st.lists(fitted_curves, min_size=1, max_size=4))
def test_fitness_is_zero_sum_and_agrees_member_by_member(members):
    curves_of_evaluators = dict(enumerate(members))
    fitnesses = parent_fitnesses(curves_of_evaluators)
    assert math.fsum(fitnesses.values()) == pytest.approx(0.0, abs=1e-9)
    for member, fitness in fitnesses.items():
        assert parent_fitness(curves_of_evaluators, member) == fitness


@SETTINGS
@given(fitted_curves)
def test_smoothing_returns_a_finite_value_per_point(fitted):
    assert fitted.y_hat.shape == fitted.y.shape and np.all(np.isfinite(fitted.y_hat))
