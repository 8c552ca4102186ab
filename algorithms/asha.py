"""ASHA and asynchronous Hyperband (Li et al., "A System for Massively Parallel Hyperparameter
Tuning", MLSys 2020; the ML@CMU blog post in shared/papers).

Promotion variant, the paper's rule: when a worker is free, look at the rungs from the top down for a
configuration in the top floor(|rung k| / eta) of its rung that has not been promoted, and resume it
from its checkpoint at the next rung's budget; if there is none, start a new configuration in the
bottom rung. Nothing waits for a rung to fill, so workers stay busy.

Stopping variant, the one Ray Tune, Optuna and Syne Tune ship: every configuration is started for the
full budget, and a running configuration is stopped as soon as a result at a rung's budget ranks it
outside the top ceil(n / eta) of that rung (see `halving.survives_cut` for why ceil).

Asynchronous Hyperband runs one ASHA bracket per early-stopping rate s = 0 ... s_max (bracket s starts
at budget r eta^s). Which bracket a job goes to is deterministic: a smooth weighted round robin over
the brackets, weighted by the number of configurations Hyperband's Algorithm 1 gives each bracket, so
the brackets get Hyperband's proportions without a random draw. A free worker tries the scheduled
bracket first and the others after it, so a bracket with nothing to do never leaves a worker idle.
"""

from __future__ import annotations

from typing import Any, Mapping

from .algorithm import Algorithm, Job, check_budget, check_positive_int
from .halving import (
    asha_budgets,
    floor_log,
    hyperband_brackets,
    promotion_quota,
    survives_cut,
    weighted_cycle,
)
from .space import Space
from .state import Bracket, Rung, State, Trial

VARIANTS = ("promotion", "stopping")


class ASHA(Algorithm):
    """Asynchronous Successive Halving.

    `early_stopping_rate` is the paper's s: the bottom rung trains min_budget * eta**s. `brackets`
    greater than one runs asynchronous Hyperband over s = early_stopping_rate ... (see the module
    docstring); `AsyncHyperband` is this class with every bracket on by default.
    """

    def __init__(self, space: Space | Mapping[str, Any], min_budget: float = 1,
                 max_budget: float = 81, eta: int = 3, variant: str = "promotion",
                 early_stopping_rate: int = 0, brackets: int = 1, **settings):
        super().__init__(space, **settings)
        check_budget("min_budget", min_budget)
        check_budget("max_budget", max_budget)
        if max_budget < min_budget:
            raise ValueError(f"`max_budget` is {max_budget!r}, but must be >= min_budget "
                             f"({min_budget!r})")
        check_positive_int("eta", eta, minimum=2)
        if variant not in VARIANTS:
            raise ValueError(f"`variant` is {variant!r}, but must be one of {', '.join(VARIANTS)}")
        s_max = floor_log(max_budget / min_budget, eta)
        check_positive_int("early_stopping_rate", early_stopping_rate, minimum=0)
        if early_stopping_rate > s_max:
            raise ValueError(f"`early_stopping_rate` is {early_stopping_rate}, but must be <= "
                             f"{s_max} = floor(log_eta(max_budget / min_budget))")
        check_positive_int("brackets", brackets)
        if early_stopping_rate + brackets > s_max + 1:
            raise ValueError(f"`brackets` is {brackets}, but must be <= {s_max + 1 - early_stopping_rate}"
                             f" (one per early-stopping rate from {early_stopping_rate} to {s_max})")
        self.min_budget = min_budget
        self.max_budget = max_budget
        self.eta = eta
        self.variant = variant
        self.stopping = variant == "stopping"
        rates = range(early_stopping_rate, early_stopping_rate + brackets)
        self.rung_budgets = [asha_budgets(min_budget, max_budget, eta, s) for s in rates]
        # ASHA's rate s is Hyperband's bracket s_max - s, which Hyperband lists s-th (s_max first).
        sizes = [bracket[0][0] for bracket in hyperband_brackets(min_budget, max_budget, eta)]
        self.cycle = weighted_cycle([sizes[s] for s in rates])

    def _initial_brackets(self) -> list[Bracket]:
        return [Bracket(index, list(budgets)) for index, budgets in enumerate(self.rung_budgets)]

    def _next_job(self, state: State) -> Job | None:
        first = self.cycle[state.jobs % len(self.cycle)]
        count = len(state.brackets)
        for offset in range(count):
            bracket = state.brackets[(first + offset) % count]
            job = self._bracket_job(state, bracket)
            if job is not None:
                return job
        return None

    def _bracket_job(self, state: State, bracket: Bracket) -> Job | None:
        rungs = bracket.rungs
        if self.stopping:
            return self._new_trial_job(state, rungs[-1].budget, bracket.index, len(rungs) - 1,
                                       f"new configuration in bracket {bracket.index}")
        for index in range(len(rungs) - 2, -1, -1):
            rung = rungs[index]
            best = rung.best_open()
            if best is None:
                continue
            rank = rung.rank(best)
            quota = promotion_quota(len(rung), self.eta)
            if rank < quota:
                job = self._promotion_job(
                    state, bracket, index, best,
                    f"ranked {rank + 1} of {len(rung)} in rung {index}, within the top {quota}")
                if job is not None:
                    return job
        return self._new_trial_job(state, rungs[0].budget, bracket.index, 0,
                                   f"nothing to promote; new configuration in bracket {bracket.index}")

    def _cut(self, rung: Rung, trial: Trial) -> bool:
        return self.stopping and not survives_cut(rung.rank(trial.id), len(rung), self.eta)


class AsyncHyperband(ASHA):
    """Asynchronous Hyperband: ASHA over every early-stopping rate unless `brackets` says fewer."""

    def __init__(self, space: Space | Mapping[str, Any], min_budget: float = 1,
                 max_budget: float = 81, eta: int = 3, variant: str = "promotion",
                 brackets: int | None = None, **settings):
        check_budget("min_budget", min_budget)
        check_budget("max_budget", max_budget)
        check_positive_int("eta", eta, minimum=2)
        if brackets is None and max_budget >= min_budget:
            brackets = floor_log(max_budget / min_budget, eta) + 1
        super().__init__(space, min_budget, max_budget, eta, variant, 0, brackets, **settings)
