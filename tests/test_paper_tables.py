"""The rung tables of the documents in shared/papers, reproduced from the algorithms' own arithmetic."""

import pytest

from rung.algorithms import ASHA, Hyperband, SuccessiveHalving, uniform
from rung.algorithms.halving import asha_budgets, bracket_budget, weighted_cycle

SPACE = {"x": uniform(0.0, 1.0)}


def test_sha_eta3_over_27_configurations_matches_blog_table_1():
    # asha-blog.txt, Table 1: 27 configurations at 1 epoch, 9 at 3, 3 at 9, 1 at 27.
    assert SuccessiveHalving(SPACE, n_configs=27, min_budget=1, eta=3).rungs == [
        (27, 1), (9, 3), (3, 9), (1, 27)]


@pytest.mark.parametrize("R", [256, 512, 1024], ids=lambda R: f"R={R}")
def test_sha_eta4_over_256_configurations_matches_blog_table_2(R):
    # asha-blog.txt, Table 2: 256 at R/256, 64 at R/64, 16 at R/16, 4 at R/4, 1 at R.
    sha = SuccessiveHalving(SPACE, n_configs=256, min_budget=R // 256, max_budget=R, eta=4)
    assert sha.rungs == [(256, R // 256), (64, R // 64), (16, R // 16), (4, R // 4), (1, R)]


def test_sha_stops_at_max_budget():
    assert SuccessiveHalving(SPACE, 27, 1, max_budget=9, eta=3).rungs == [(27, 1), (9, 3), (3, 9)]


# Algorithm 1 of Li et al. 2018 for R = 81, eta = 3. The table printed in hyperband-talk.txt gives
# 27/9/3/1, 9/3/1 and 6/2 for brackets s = 3, 2, 1: transcription errors. Algorithm 1, printed on the
# same page, gives n = ceil(5 * 3^s / (s + 1)) = 34, 15 and 8 for those brackets, as the JMLR paper's
# own table does; the code follows the algorithm.
HYPERBAND_R81_ETA3 = [
    [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
    [(34, 3), (11, 9), (3, 27), (1, 81)],
    [(15, 9), (5, 27), (1, 81)],
    [(8, 27), (2, 81)],
    [(5, 81)],
]


def test_hyperband_brackets_follow_algorithm_1():
    assert Hyperband(SPACE, min_budget=1, max_budget=81, eta=3).brackets == HYPERBAND_R81_ETA3


@pytest.mark.parametrize(
    "s, budget",
    [(4, 405), (3, 363), (2, 351), (1, 378), (0, 405)],
    ids=[f"s={s}" for s in (4, 3, 2, 1, 0)],
)
def test_hyperband_bracket_budgets(s, budget):
    # sum over rungs of n_i r_i, each configuration trained from scratch at every rung.
    assert bracket_budget(HYPERBAND_R81_ETA3[4 - s]) == budget


def test_one_hyperband_iteration_spends_1902_units():
    # (s_max + 1) R = 405 per bracket is the budget B that Algorithm 1 targets; rounding n up
    # and down makes the exact total 1902 rather than 5 B = 2025.
    assert sum(bracket_budget(b) for b in HYPERBAND_R81_ETA3) == 1902


def test_hyperband_with_min_budget_scales_the_brackets():
    brackets = Hyperband(SPACE, min_budget=2, max_budget=162, eta=3).brackets
    assert [[(n, r / 2) for n, r in b] for b in brackets] == HYPERBAND_R81_ETA3


def test_hyperband_keeps_fractional_budgets_exact():
    brackets = Hyperband(SPACE, min_budget=0.25, max_budget=1, eta=2).brackets
    assert brackets == [[(4, 0.25), (2, 0.5), (1, 1)], [(3, 0.5), (1, 1)], [(3, 1)]]


@pytest.mark.parametrize(
    "min_budget, max_budget, eta, s, budgets",
    [
        (1, 81, 3, 0, [1, 3, 9, 27, 81]),
        (1, 81, 3, 2, [9, 27, 81]),
        (1, 256, 4, 0, [1, 4, 16, 64, 256]),
        (1, 100, 3, 0, [1, 3, 9, 27, 81, 100]),  # R is not a power of eta: R is the top rung
    ],
    ids=["eta3", "eta3-s2", "eta4", "R-not-a-power"],
)
def test_asha_rung_budgets(min_budget, max_budget, eta, s, budgets):
    assert asha_budgets(min_budget, max_budget, eta, s) == budgets
    assert ASHA(SPACE, min_budget, max_budget, eta, early_stopping_rate=s).rung_budgets == [budgets]


def test_async_hyperband_cycle_keeps_hyperbands_proportions():
    # Brackets s = 0..4 get 81, 34, 15, 8 and 5 of every 143 jobs, spread evenly.
    cycle = weighted_cycle([81, 34, 15, 8, 5])
    assert [cycle.count(s) for s in range(5)] == [81, 34, 15, 8, 5]
    weights, total = [81, 34, 15, 8, 5], 143
    for length in range(1, total + 1):
        for s in range(5):
            # Smooth weighted round robin: every prefix holds each bracket's share within one job.
            assert abs(cycle[:length].count(s) - length * weights[s] / total) < 1
