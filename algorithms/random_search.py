"""Random search and grid search (Bergstra & Bengio, JMLR 2012): every trial trains to one budget.

Both run one bracket with a single rung at `budget`, so their trials are ranked like any other.
"""

from __future__ import annotations

from typing import Any, Mapping

from .algorithm import Algorithm, Job, check_budget
from .rng import derive_rng
from .space import Space
from .state import Bracket, State


class RandomSearch(Algorithm):
    """Each new trial is an independent draw from the space; run until a limit or a stop."""

    def __init__(self, space: Space | Mapping[str, Any], budget: float = 1, **settings):
        super().__init__(space, **settings)
        check_budget("budget", budget)
        self.budget = budget

    def _initial_brackets(self) -> list[Bracket]:
        return [Bracket(0, [self.budget])]

    def _next_job(self, state: State) -> Job | None:
        return self._new_trial_job(state, self.budget, 0, 0, "random draw")


class GridSearch(RandomSearch):
    """Every combination of the grid and choice parameters, in order, the last varying fastest.

    Other parameters of the space are drawn at random for each grid point. The study finishes when
    the grid is exhausted (or at `max_trials`, whichever comes first).
    """

    _finite = True

    def _next_job(self, state: State) -> Job | None:
        return self._new_trial_job(state, self.budget, 0, 0, f"grid point {state.sampled}")

    def _draw(self, state: State) -> dict[str, Any] | None:
        if state.sampled >= self.space.grid_size():
            return None
        drawn = self.space.sample(derive_rng(state.seed, "config", state.sampled))
        return {**drawn, **self.space.grid_point(state.sampled)}
