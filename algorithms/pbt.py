"""Population Based Training (Jaderberg et al., "Population Based Training of Neural Networks", 2017).

A population of `population` members trains concurrently. A member trains in segments of `ready`
steps, each segment one attempt; at the end of a segment it is *ready*. A ready member in the bottom
`quantile` of the population, ranked by the score of each member's latest segment, *exploits*: it
copies the weights (the checkpoint) and hyperparameters of a member drawn uniformly from the top
`quantile`, then *explores*: the hyperparameters are perturbed (`explore.py`). That is one decision,
`CloneTrial`, which starts the member's next attempt from the winner's checkpoint with the new
configuration; there is no gap between a loser being dropped and its slot being refilled. Any other
ready member simply trains its next segment (`PromoteTrial`). A member that reaches `max_budget`
steps is complete; the study ends when every member is.

- `synchronous=False` (Jaderberg's asynchronous PBT): a ready member goes on at once, ranked against
  the latest scores of the others, wherever they are.
- `synchronous=True` (generations): a ready member waits until every live member has finished the
  same segment, so members are ranked on the same step.

A member that has never checkpointed is never a clone source, nor is one that has finished. Every member's schedule (from which
step it trained with which hyperparameters, and whose weights it took) is kept in
`trial.info["schedule"]` as [step, config, source, seen] entries, so the best schedule can be read off
and replayed from scratch (`lineage`). `source` and `seen` are None for a member's own segments; a clone
names its source and how many entries of the source's schedule stood when the weights were copied.
Steps alone cannot tell which entries produced the copied weights: a member's step goes back whenever it
clones a member that is behind it, so its later entries may start below the step that was copied. The
random draws (whom to copy, how to perturb) come from generators derived from (seed, purpose, member,
the member's clone count).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .algorithm import Algorithm, Job, attempt_progress, check_budget, check_positive_int
from .decisions import CloneTrial, PromoteTrial, StartTrial
from .explore import check_factors, perturb
from .rng import derive_rng
from .space import Space
from .state import Bracket, State, Trial, TrialStatus, ranking_key


def truncation(count: int, quantile: float) -> int:
    """How many members make the top (and the bottom) quantile: at least one."""
    return max(1, math.floor(count * quantile))


class PBT(Algorithm):
    def __init__(self, space: Space | Mapping[str, Any], population: int = 20, ready: float = 1,
                 max_budget: float = 100, quantile: float = 0.25, factors=(0.8, 1.2),
                 resample_probability: float = 0.0, synchronous: bool = False, **settings):
        super().__init__(space, **settings)
        check_positive_int("population", population, minimum=2)
        check_budget("ready", ready)
        check_budget("max_budget", max_budget)
        if max_budget < ready:
            raise ValueError(f"`max_budget` is {max_budget!r}, but must be >= ready ({ready!r})")
        if not 0 < quantile <= 0.5:
            raise ValueError(f"`quantile` is {quantile!r}, but must be in (0, 0.5]")
        if not 0 <= resample_probability <= 1:
            raise ValueError(f"`resample_probability` is {resample_probability!r}, but must be in [0, 1]")
        if not isinstance(synchronous, bool):
            raise ValueError(f"`synchronous` is {synchronous!r}, but must be a bool")
        self.population = population
        self._finite = True  # each member trains to max_budget
        self.ready = ready
        self.max_budget = max_budget
        self.quantile = quantile
        self.factors = check_factors(factors)
        self.resample_probability = resample_probability
        self.synchronous = synchronous

    def _initial_brackets(self) -> list[Bracket]:
        return [Bracket(0, [self.max_budget])]

    def _segment_end(self, start: float) -> float:
        return min(start + self.ready, self.max_budget)

    def _next_job(self, state: State) -> Job | None:
        if state.started < self.population:
            if self.max_trials is not None and state.started >= self.max_trials:
                return None
            return self._new_trial_job(state, self._segment_end(0), 0, 0,
                                       f"member {state.started} of {self.population}")
        member = self._next_ready(state)
        if member is None:
            return None
        return self._member_job(state, member)

    def _member_job(self, state: State, member: Trial) -> Job | None:
        """A ready member's next segment: its own, or, from the bottom quantile, a clone of a top
        member's weights with perturbed hyperparameters."""
        at = member.info["at"]
        source = self._exploit_source(state, member)
        if source is None:
            budget = self._segment_end(at)
            if not self._affordable(state, budget, member):
                return None
            return Job(member.id, member.config, budget, 0, 0, True, f"ready at {at:g}: next segment")
        start = source.checkpoint_step
        budget = self._segment_end(start)
        if not self._affordable(state, budget - start, None):
            return None
        clones = member.info.get("clones", 0)
        config = perturb(self.space, source.config, derive_rng(state.seed, "explore", member.id, clones),
                         self.factors, self.resample_probability)
        return Job(member.id, config, budget, 0, 0, False,
                   f"ready at {at:g} in the bottom {self.quantile:g}{self._population_of(member)}: "
                   f"copies member {source.id}", source=source.id)

    def _population_of(self, member: Trial) -> str:
        """Where a member competes, for reasons: the whole population here."""
        return ""

    def _next_ready(self, state: State) -> Trial | None:
        """The ready member furthest behind (the oldest on ties); in generations, only once every
        live member has finished the same segment."""
        ready, behind = None, math.inf
        for trial in state.trials:
            if trial.status.terminal or trial.status == TrialStatus.QUEUED:
                continue
            at = trial.info.get("at", 0)
            behind = min(behind, at)
            if trial.status == TrialStatus.PAUSED and (ready is None or at < ready.info["at"]):
                ready = trial
        if ready is not None and self.synchronous and behind < ready.info["at"]:
            return None
        return ready

    def _exploit_source(self, state: State, member: Trial) -> Trial | None:
        """For a member in the bottom quantile, a member of the top quantile to copy; else None."""
        ranked = sorted((t.info["score"], t.id) for t in state.trials
                        if "score" in t.info and t.status != TrialStatus.FAILED)
        cut = truncation(len(ranked), self.quantile)
        if len(ranked) < 2 or (member.info["score"], member.id) not in ranked[-cut:]:
            return None
        # A finished member is no source: a clone of its final weights would have nothing to train.
        top = [state.trials[tid] for _, tid in ranked[:cut]
               if tid != member.id and state.trials[tid].checkpoint is not None
               and state.trials[tid].checkpoint_step < self.max_budget]
        if not top:
            return None
        rng = derive_rng(state.seed, "exploit", member.id, member.info.get("clones", 0))
        return top[int(rng.integers(len(top)))]

    def apply(self, state: State, record) -> State:
        super().apply(state, record)
        match record:
            case CloneTrial(trial=tid, source=source, config=config):
                trial = state.trials[tid]
                trial.info["clones"] = trial.info.get("clones", 0) + 1
                trial.info.setdefault("schedule", []).append(
                    [trial.checkpoint_step, dict(config), source, self._entries_copied(state, record)])
            case StartTrial(trial=tid) | PromoteTrial(trial=tid):
                trial = state.trials[tid]
                schedule = trial.info.setdefault("schedule", [])
                start = trial.checkpoint_step if trial.checkpoint is not None else 0
                if not schedule or schedule[-1][1] != trial.config or schedule[-1][0] > start:
                    schedule.append([start, dict(trial.config), None, None])
        return state

    def _entries_copied(self, state: State, clone: CloneTrial) -> int:
        """How many entries of the source's schedule produced the weights `clone` takes: all of them, as
        a clone takes the source's latest checkpoint."""
        return len(state.trials[clone.source].info.get("schedule", []))

    def _attempt_ended(self, state: State, trial: Trial) -> None:
        progress = attempt_progress(trial)
        if progress is None or progress < trial.budget:
            super()._attempt_ended(state, trial)  # fails without a result, completes if it stopped early
            return
        trial.info["at"] = trial.budget
        trial.info["score"] = ranking_key(trial.value, self.maximise)
        if trial.budget >= self.max_budget:
            self._complete(state, trial, "trained its full budget")
            return
        trial.status = TrialStatus.PAUSED
        trial.reason = f"ready at step {trial.budget:g}"


def best_schedule(state: State, maximise: bool) -> list | None:
    """The schedule of the member with the best final score, following whose weights it took:
    [step, config, member] from step 0, ready to replay from scratch."""
    finished = [t for t in state.trials if "score" in t.info]
    if not finished:
        return None
    best = min(finished, key=lambda t: (t.info["score"], t.id))
    return lineage(state, best.id)


def lineage(state: State, member: int, until: float = math.inf, entries: int | None = None) -> list:
    """The hyperparameters that produced `member`'s weights before step `until`, oldest first, as
    [step, config, member whose schedule it was], reading only the first `entries` entries of its
    schedule (all by default): those that stood when the weights were copied."""
    schedule = state.trials[member].info.get("schedule", [])[:entries]
    clones = [i for i, entry in enumerate(schedule) if entry[2] is not None]
    last = clones[-1] if clones else 0
    own = [[step, config, member] for step, config, _, _ in schedule[last:] if step < until]
    if not clones:
        return own
    step, _, source, seen = schedule[last]
    # Before its last clone, the member's weights are the source's, as they stood when it copied them.
    return lineage(state, source, step, seen) + own
