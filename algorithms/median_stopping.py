"""The median stopping rule (Golovin et al., "Google Vizier", KDD 2017, section 3.2.2).

A trial is stopped at step t if its best metric so far is strictly worse than the median of the
other trials' running averages of the metric up to t. Here the steps where the rule is checked are
milestones every `interval` units from `grace_period` on (Vizier checks continuously): each milestone
is a rung whose keys are the running averages of the trials that reached it, so the median is read
off a sorted list rather than recomputed over every trial. Vizier compares against completed trials
only; we compare against every trial that reached the milestone, which decides sooner and is what Ray
Tune's rule does when its `min_samples_required` is met. The rule waits for `min_samples` others.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .algorithm import Algorithm, Job, check_budget, check_positive_int
from .space import Space
from .state import Bracket, Rung, State, Trial, ranking_key


def median_of_others(rung: Rung, trial: int) -> tuple[int, float]:
    """(how many others, the median of their keys) in a rung that `trial` has recorded in."""
    others = len(rung) - 1
    if others < 1:
        return 0, math.nan
    own = rung.rank(trial)

    def other(j: int) -> float:
        return rung.key_at(j if j < own else j + 1)

    if others % 2:
        return others, other(others // 2)
    return others, (other(others // 2 - 1) + other(others // 2)) / 2


class MedianStopping(Algorithm):
    """Random configurations trained to `budget`, stopped early by the median rule."""

    def __init__(self, space: Space | Mapping[str, Any], budget: float = 81,
                 grace_period: float = 1, interval: float = 1, min_samples: int = 3, **settings):
        super().__init__(space, **settings)
        check_budget("budget", budget)
        check_budget("grace_period", grace_period)
        check_budget("interval", interval)
        if grace_period >= budget:
            raise ValueError(f"`grace_period` is {grace_period!r}, but must be < budget ({budget!r})")
        check_positive_int("min_samples", min_samples)
        self.budget = budget
        self.grace_period = grace_period
        self.interval = interval
        self.min_samples = min_samples
        count = math.floor((budget - grace_period) / interval + 1e-9) + 1
        milestones = [grace_period + k * interval for k in range(count)]
        self.milestones = [m for m in milestones if m < budget] + [budget]

    def _initial_brackets(self) -> list[Bracket]:
        return [Bracket(0, list(self.milestones))]

    def _next_job(self, state: State) -> Job | None:
        return self._new_trial_job(state, self.budget, 0, len(self.milestones) - 1, "random draw")

    def _on_result(self, state: State, trial: Trial, step: float, key: float) -> None:
        # The running average counts every result, NaN included (which makes it rank worst).
        trial.info["sum"] = trial.info.get("sum", 0.0) + trial.value
        trial.info["count"] = trial.info.get("count", 0) + 1
        super()._on_result(state, trial, step, key)

    def _rung_key(self, trial: Trial, key: float) -> float:
        return ranking_key(trial.info["sum"] / trial.info["count"], self.maximise)

    def _cut(self, rung: Rung, trial: Trial) -> bool:
        others, median = median_of_others(rung, trial.id)
        if others < self.min_samples:
            return False
        return ranking_key(trial.best, self.maximise) > median

