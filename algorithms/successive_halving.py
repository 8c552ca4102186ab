"""Synchronous Successive Halving and Hyperband.

Successive Halving (Jamieson & Talwalkar, AISTATS 2016; the inner loop of Li et al., JMLR 2018,
Algorithm 1): a bracket starts n configurations at budget r; when every configuration of rung i has
reported, the top floor(n_i / eta) are promoted to rung i + 1 at budget r eta^i, resuming from their
checkpoints. Hyperband runs Successive Halving over the brackets s = s_max ... 0 of Algorithm 1.

Rung i is *closed* when no more configurations will enter it: rung 0 once all n have started, rung
i > 0 once rung i - 1 is complete and has nothing left to promote. It is *complete* when it is closed
and every attempt that entered it has ended. A configuration that fails is ranked below every one that
reported, so a failure never blocks a bracket, and the bracket promotes from the survivors.

Brackets run one after another, as in the papers: while a bracket waits at a rung, free workers wait
too. With `overlap=True`, a worker that finds nothing to do opens the next bracket instead; that is
how Li et al. (MLSys 2020) parallelise the synchronous baselines they compare ASHA with.
"""

from __future__ import annotations

from typing import Any, Mapping

from .algorithm import Algorithm, Job, check_budget, check_positive_int
from .halving import hyperband_brackets, sha_rungs
from .space import Space
from .state import Bracket, State


def complete_rungs(bracket: Bracket) -> list[bool]:
    """Whether each rung is complete, bottom up: one pass, since a rung closes on the one below."""
    complete = []
    closed = bracket.rungs[0].entered >= bracket.sizes[0]
    for index, rung in enumerate(bracket.rungs):
        done = closed and rung.ended == rung.entered
        complete.append(done)
        closed = done and index + 1 < len(bracket.rungs) and best_promotable(bracket, index) is None
    return complete


def best_promotable(bracket: Bracket, index: int) -> int | None:
    """The best unpromoted member of rung `index` within its quota floor(n_i / eta) = n_{i+1}."""
    rung = bracket.rungs[index]
    best = rung.best_open()
    if best is None or rung.rank(best) >= bracket.sizes[index + 1]:
        return None
    return best


class _Synchronous(Algorithm):
    def __init__(self, space, *, brackets: int | None, overlap: bool, eta: int, **settings):
        super().__init__(space, **settings)
        check_positive_int("eta", eta, minimum=2)
        if brackets is not None:
            check_positive_int("brackets", brackets)
        if not isinstance(overlap, bool):
            raise ValueError(f"`overlap` is {overlap!r}, but must be a bool")
        self.eta = eta
        self.max_brackets = brackets
        self.overlap = overlap
        self._finite = brackets is not None

    def _plan(self, index: int) -> list[tuple]:
        """(n_i, r_i) of the bracket opened `index`-th."""
        raise NotImplementedError

    def _new_bracket(self, index: int) -> Bracket:
        plan = self._plan(index)
        return Bracket(index, [r for _, r in plan], [n for n, _ in plan])

    def _next_job(self, state: State) -> Job | None:
        for index in state.live_brackets:
            job = self._bracket_job(state, state.brackets[index])
            if job is not None or not self.overlap:
                return job
        index = len(state.brackets)
        if self.max_brackets is not None and index >= self.max_brackets:
            return None
        plan = self._plan(index)
        return self._new_trial_job(state, plan[0][1], index, 0, f"bracket {index} opens")

    def _bracket_job(self, state: State, bracket: Bracket) -> Job | None:
        complete = complete_rungs(bracket)
        for index in range(len(bracket.rungs) - 2, -1, -1):
            if complete[index]:
                best = best_promotable(bracket, index)
                if best is not None:
                    job = self._promotion_job(
                        state, bracket, index, best,
                        f"rung {index} complete; in its top {bracket.sizes[index + 1]}")
                    if job is not None:
                        return job
        rung = bracket.rungs[0]
        if rung.entered < bracket.sizes[0]:
            return self._new_trial_job(
                state, rung.budget, bracket.index, 0,
                f"configuration {rung.entered + 1} of {bracket.sizes[0]} in bracket {bracket.index}")
        return None

    def _bracket_changed(self, state: State, bracket: Bracket) -> None:
        if bracket.index in state.live_brackets and complete_rungs(bracket)[-1]:
            state.live_brackets.remove(bracket.index)


class SuccessiveHalving(_Synchronous):
    """One or more brackets of synchronous Successive Halving.

    `SuccessiveHalving(space, n_configs=27, min_budget=1, eta=3).rungs` is
    `[(27, 1), (9, 3), (3, 9), (1, 27)]`: rungs go on until one configuration remains, or until the
    next rung's budget would pass `max_budget`.
    """

    def __init__(self, space: Space | Mapping[str, Any], n_configs: int, min_budget: float = 1,
                 max_budget: float | None = None, eta: int = 3, brackets: int | None = 1,
                 overlap: bool = False, **settings):
        super().__init__(space, brackets=brackets, overlap=overlap, eta=eta, **settings)
        check_positive_int("n_configs", n_configs)
        check_budget("min_budget", min_budget)
        if max_budget is not None:
            check_budget("max_budget", max_budget)
            if max_budget < min_budget:
                raise ValueError(f"`max_budget` is {max_budget!r}, but must be >= min_budget "
                                 f"({min_budget!r})")
        self.rungs = sha_rungs(n_configs, min_budget, eta, max_budget)

    def _plan(self, index: int) -> list[tuple]:
        return self.rungs


class Hyperband(_Synchronous):
    """Hyperband (Li et al., JMLR 2018, Algorithm 1), each bracket synchronous Successive Halving.

    `Hyperband(space, min_budget=1, max_budget=81, eta=3).brackets` lists the brackets, largest s
    first, each as (n_i, r_i) pairs. `iterations` is how many times the whole sequence runs (None:
    until a limit or a stop).
    """

    def __init__(self, space: Space | Mapping[str, Any], min_budget: float = 1,
                 max_budget: float = 81, eta: int = 3, iterations: int | None = 1,
                 overlap: bool = False, **settings):
        check_budget("min_budget", min_budget)
        check_budget("max_budget", max_budget)
        if max_budget < min_budget:
            raise ValueError(f"`max_budget` is {max_budget!r}, but must be >= min_budget "
                             f"({min_budget!r})")
        if iterations is not None:
            check_positive_int("iterations", iterations)
        check_positive_int("eta", eta, minimum=2)
        self.brackets = hyperband_brackets(min_budget, max_budget, eta)
        total = None if iterations is None else iterations * len(self.brackets)
        super().__init__(space, brackets=total, overlap=overlap, eta=eta, **settings)
        self.iterations = iterations

    def _plan(self, index: int) -> list[tuple]:
        return self.brackets[index % len(self.brackets)]
