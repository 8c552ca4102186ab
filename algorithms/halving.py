"""The arithmetic of successive halving, in the papers' own symbols.

- Successive Halving (Jamieson & Talwalkar 2016; Li et al. 2018, the inner loop of Algorithm 1):
  n configurations at budget r; rung i holds n_i = floor(n eta^-i) configurations at r_i = r eta^i,
  and the top floor(n_i / eta) of rung i go on to rung i + 1.
- Hyperband (Li et al., JMLR 2018, Algorithm 1): with R the maximum budget in units of the minimum,
  s_max = floor(log_eta R) and B = (s_max + 1) R; bracket s runs successive halving from
  n = ceil(B / R * eta^s / (s + 1)) configurations at r = R eta^-s.
- ASHA (Li et al., MLSys 2020): rung k of the bracket with early-stopping rate s has budget
  r eta^(s + k); a configuration in rung k may be promoted when it is in the top floor(|rung k| / eta).

Budgets stay exact: a budget that is a whole number is an int, so the tables read as the papers print
them; the arithmetic runs on fractions, never on float logarithms (log(81) / log(3) is not 4 in floats).
"""

from __future__ import annotations

import math
from fractions import Fraction


def exact(value: Fraction | int | float) -> int | float:
    value = Fraction(value)
    return int(value) if value.denominator == 1 else float(value)


def floor_log(ratio: Fraction | int | float, eta: int) -> int:
    """The largest s with eta**s <= ratio, for ratio >= 1."""
    ratio = Fraction(ratio)
    s = 0
    while eta ** (s + 1) <= ratio:
        s += 1
    return s


def sha_rungs(n: int, min_budget: float, eta: int, max_budget: float | None = None) -> list[tuple]:
    """(n_i, r_i) for each rung of one successive-halving bracket, the bottom rung first.

    Rungs go on while a configuration remains (n_i >= 1) and, if `max_budget` is given, while
    r_i <= max_budget.
    """
    rungs = []
    i = 0
    while True:
        n_i = n // eta**i
        r_i = Fraction(min_budget) * eta**i
        if n_i < 1 or (max_budget is not None and r_i > Fraction(max_budget)):
            return rungs
        rungs.append((n_i, exact(r_i)))
        i += 1


def hyperband_brackets(min_budget: float, max_budget: float, eta: int) -> list[list[tuple]]:
    """Algorithm 1 of Li et al. 2018: one list of (n_i, r_i) per bracket, the largest s first."""
    R = Fraction(max_budget) / Fraction(min_budget)
    s_max = floor_log(R, eta)
    brackets = []
    for s in range(s_max, -1, -1):
        # n = ceil(B / R * eta^s / (s + 1)) with B = (s_max + 1) R, in integers.
        n = -(-(s_max + 1) * eta**s // (s + 1))
        r = Fraction(max_budget) / eta**s
        brackets.append([(n // eta**i, exact(r * eta**i)) for i in range(s + 1)])
    return brackets


def bracket_budget(bracket: list[tuple]) -> float:
    """Total budget one bracket spends when each rung trains from scratch (sum of n_i r_i)."""
    return exact(sum(Fraction(n_i) * Fraction(r_i) for n_i, r_i in bracket))


def asha_budgets(min_budget: float, max_budget: float, eta: int, s: int) -> list[int | float]:
    """Rung budgets of the ASHA bracket with early-stopping rate s: r eta^(s+k) up to R.

    Where R / r is not a power of eta, R itself is added as the top rung, so that a configuration that
    survives every rung trains to the full budget.
    """
    r = Fraction(min_budget)
    R = Fraction(max_budget)
    s_max = floor_log(R / r, eta)
    budgets = [exact(r * eta**k) for k in range(s, s_max + 1)]
    if r * eta**s_max < R:
        budgets.append(exact(R))
    return budgets


def promotion_quota(rung_size: int, eta: int) -> int:
    """How many of a rung's members the promotion rule lets go up: floor(n / eta)."""
    return rung_size // eta


def survives_cut(rank: int, rung_size: int, eta: int) -> bool:
    """The stopping variant's rule: carry on while ranked in the top ceil(n / eta).

    Stopping rather than promoting decides as each result arrives, so the first arrivals at a rung
    have few rivals; with floor(n / eta) the first eta - 1 arrivals would always be stopped. Ceil keeps
    the best one from the start, and matches the quantile cut that Ray Tune's and Syne Tune's
    stopping-type ASHA make (the 1 - 1/eta quantile of the recorded values, the new one included).
    """
    return rank < math.ceil(rung_size / eta)


def weighted_cycle(weights: list[int]) -> list[int]:
    """A deterministic interleaving in which index j appears weights[j] times (smooth weighted
    round robin), so consecutive entries spread each index evenly over the cycle."""
    if not weights or any(w < 1 for w in weights):
        raise ValueError(f"weights are {weights!r}, but must be a non-empty list of ints >= 1")
    total = sum(weights)
    current = [0] * len(weights)
    cycle = []
    for _ in range(total):
        for j, w in enumerate(weights):
            current[j] += w
        best = max(range(len(weights)), key=lambda j: (current[j], -j))
        current[best] -= total
        cycle.append(best)
    return cycle
