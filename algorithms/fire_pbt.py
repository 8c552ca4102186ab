"""FIRE PBT (Dalibard & Jaderberg 2021, "Faster Improvement Rate Population Based Training").

Theory of operation. The first `subpopulations * size` trials are *members*, split in start order into
sub-populations P1 .. Pn of `size` each (`trial.info["sub"]` = i, 1-based as in the paper). The next
`evaluators` trials are *evaluators* (`trial.info["role"] == "evaluator"`). Everyone trains in segments of
`ready` steps, one attempt each, as in `pbt.py`; the curve comparisons are `fire_curves.py`.

- Inside each sub-population, plain PBT: a ready member in the bottom `quantile` by fitness copies the
  weights of a member of the top `quantile` and perturbs its hyperparameters (a `CloneTrial`); that is
  *losing an evolution event* (`info["losses"]` counts them). P1's fitness is the member's latest score,
  exactly as PBT. Pi's (i >= 2) fitness is `parent_fitnesses` over Phi, the members of Pi with an active
  evaluator, computed on the evaluators' curves. A member outside Phi has no fitness and just continues.
- An evaluator job is a `CloneTrial` from the checkpoint of the parent member (in P2 .. Pn) that has gone
  longest without being evaluated or losing an evolution event, with the hyperparameters of the best
  member of the child sub-population P(i-1), its *target*. At each segment end the evaluator's curve is
  judged against the target's (`evaluator_verdict`): SUCCESS hands the evaluator's weights to the target at
  the target's next ready point (a `CloneTrial` from the evaluator with the target's own hyperparameters,
  not an evolution event) and the evaluator picks a new parent; STOP picks a new parent; CONTINUE trains
  another segment (`PromoteTrial`).

Everything that needs the curves (verdicts, fitnesses, who exploits whom) is computed in `apply` when an
attempt ends and kept in `trial.info` as plain data, so `decide` only reads, and replaying a journal gives
the same numbers (the GP fit is deterministic on one machine and BLAS set-up).

Readings, where the paper (and shared/papers/fire-pbt-notes.md) leaves a choice:

- Curves. A trial's curve is its counted results past the step it last took weights from (an evaluator:
  its start; a member: its last clone or hand-off; else step 0), the metric negated for mode "min" (the
  curve math maximises Q), non-finite values as NaN, which `fire_curves` treats as the curve's worst. A
  retry re-reports steps of the lost attempt; the later report of a step wins. A curve of fewer than
  `MIN_CURVE_POINTS` points, or with no finite point, is not judged: its evaluator CONTINUEs (STOPs once
  it has trained more than `max_eval_steps`), and its parent is left out of Phi.
- "Gone longest": a logical clock, `state.jobs` (attempts handed out), stamped into `info["since"]` when a
  member starts, when its evaluation ends (a verdict other than CONTINUE, its evaluator abandoned, or the
  evaluator trial ended for good), and when it loses an evolution event. The smallest stamp goes first,
  then the lowest id. A member is eligible as a parent only with a checkpoint below `max_budget`, without
  an active evaluator, and when its child sub-population has a target.
- Target: in P1 the member with the best latest score; in Pi (i >= 2) the one with the highest fitness
  last computed among the members still in Phi (a member's fitness is dropped as its evaluation ends).
  Only members that have not finished.
- Fitness is recomputed for a whole sub-population whenever one of its members is ready, and the ready
  member's exploit choice (the top quantile of Phi, if it is in the bottom quantile) is fixed then. Phi
  needs at least two members for anyone to exploit (as in PBT's ranking of fewer than two).
- `min_steps_before_eval` (optional, default 0): a member of Pi is eligible as a parent only once its
  weights have trained `min_steps_before_eval[i]` steps, counted as its checkpoint step, which includes
  the steps of whoever trained the weights before it copied them. The paper's purpose is to let P(i-1)
  converge on its hyperparameters first, and the paper sets it per parent sub-population; one number
  applies to each of P2 .. Pn, a list gives one value per sub-population in that order.
- An evaluator whose parent or target loses an evolution event (or whose target ends, whether trained or
  failed) is stopped at its current segment's end rather than at once: `StopTrial` ends a trial for good
  in rung's contract, and an evaluator trial lives on to be reassigned. It leaves Phi immediately.
- A hand-off keeps the evaluator's checkpoint key and step in the target's `info["handoff"]`, since the
  evaluator may be reassigned (and take another checkpoint) before the target is ready, and for the same
  reason how many entries of the evaluator's schedule stood then (the target's `lineage` goes through the
  evaluator's parent as it was at the success, not through the one it evaluates now); a later success
  for the same target replaces an unclaimed one. Weights at `max_budget` are not handed off (nothing would
  be left to train); an evaluator at `max_budget` stops. A member with a hand-off waiting takes it at its
  next ready point instead of exploiting, whatever its rank.
- The study finishes when the members have finished; evaluators still waiting are then completed.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

from . import fire_curves
from .algorithm import Algorithm, Job, attempt_progress, check_budget, check_positive_int
from .decisions import CloneTrial, Decision, FinishStudy, StartTrial
from .fire_curves import Verdict
from .pbt import PBT, truncation
from .rng import derive_rng
from .space import Space
from .state import State, Trial, TrialStatus

MIN_CURVE_POINTS = 3  # the GP smooths nothing below three points, and the binomial test needs n >= 1


def default_evaluators(subpopulations: int, size: int) -> int:
    """Three quarters of the members of P2 .. Pn, rounded half up, at least one."""
    return max(1, math.floor(0.75 * size * (subpopulations - 1) + 0.5))


def steps_per_parent(name: str, value: Any, subpopulations: int) -> tuple[float, ...]:
    """A setting in steps for each of P2 .. Pn, given as one number for all or as a list in that order."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * (subpopulations - 1)
    if len(values) != subpopulations - 1 or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
            for v in values):
        parents = "P2" if subpopulations == 2 else f"each of P2 .. P{subpopulations}"
        raise ValueError(f"`{name}` is {value!r}, but must be a finite number >= 0, or a list of them "
                         f"with one for {parents}")
    return tuple(values)


class FirePBT(PBT):
    def __init__(self, space: Space | Mapping[str, Any], subpopulations: int = 2, size: int = 8,
                 evaluators: int | None = None, ready: float = 1, max_budget: float = 100,
                 max_eval_steps: float | None = None, p_stat: float = 0.01,
                 min_steps_before_eval: float | list[float] = 0, quantile: float = 0.25,
                 factors=(0.5, 0.8, 1.25, 2.0), resample_probability: float = 0.0, **settings):
        check_positive_int("subpopulations", subpopulations, minimum=2)
        check_positive_int("size", size, minimum=2)
        super().__init__(space, population=subpopulations * size, ready=ready, max_budget=max_budget,
                         quantile=quantile, factors=factors, resample_probability=resample_probability,
                         synchronous=False, **settings)
        if evaluators is None:
            evaluators = default_evaluators(subpopulations, size)
        check_positive_int("evaluators", evaluators)
        if max_eval_steps is None:
            max_eval_steps = 3 * ready  # the paper's image task: 7200 = 3 x 2400
        check_budget("max_eval_steps", max_eval_steps)
        if isinstance(p_stat, bool) or not isinstance(p_stat, (int, float)) or not 0 < p_stat < 1:
            raise ValueError(f"`p_stat` is {p_stat!r}, but must be in (0, 1)")
        self.subpopulations = subpopulations
        self.size = size
        self.evaluators = evaluators
        self.max_eval_steps = max_eval_steps
        self.p_stat = p_stat
        self.min_steps_before_eval = steps_per_parent("min_steps_before_eval", min_steps_before_eval,
                                                      subpopulations)

    # ----------------------------------------------------------------------------------------------
    # Jobs (read-only).

    def checkpoints_needed(self, state: State) -> set[str]:
        # A hand-off waits on the target until its next ready point, while the evaluator that made it
        # may already train from another parent's weights: its checkpoint must outlive the evaluator's.
        handoffs = {t.info["handoff"][1] for t in state.trials if t.info.get("handoff")}
        return super().checkpoints_needed(state) | handoffs

    def _next_job(self, state: State) -> Job | None:
        members = [t for t in state.trials if t.info.get("role") == "member"]
        if len(members) < self.population:
            if self.max_trials is not None and state.started >= self.max_trials:
                return None
            return self._new_trial_job(state, self._segment_end(0), 0, 0,
                                       f"member {len(members)} of {self.population}")
        job = self._ready_member_job(state, members)
        if job is None:
            job = self._evaluator_job(state, members)
        return job

    def _ready_member_job(self, state: State, members: list[Trial]) -> Job | None:
        """The job of the ready member furthest behind: a pending hand-off first, else PBT's."""
        ready = [t for t in members if t.status == TrialStatus.PAUSED]
        if not ready:
            return None
        member = min(ready, key=lambda t: (t.info["at"], t.id))
        at = member.info["at"]
        handoff = member.info.get("handoff")
        if handoff is not None:
            evaluator, _, start, _ = handoff
            budget = self._segment_end(start)
            if not self._affordable(state, budget - start, None):
                return None
            return Job(member.id, member.config, budget, 0, 0, False,
                       f"ready at {at:g}: takes the weights of evaluator {evaluator}, which beat it",
                       source=evaluator)
        return self._member_job(state, member)

    def _population_of(self, member: Trial) -> str:
        return f" of P{member.info['sub']}"

    def _exploit_source(self, state: State, member: Trial) -> Trial | None:
        """A member of the top quantile fixed when `member` became ready, drawn uniformly; else None."""
        top = [state.trials[tid] for tid in member.info.get("exploit", [])]
        top = [t for t in top if t.checkpoint is not None and t.checkpoint_step < self.max_budget
               and t.status != TrialStatus.FAILED]
        if not top:
            return None
        rng = derive_rng(state.seed, "exploit", member.id, member.info.get("clones", 0))
        return top[int(rng.integers(len(top)))]

    def _evaluator_job(self, state: State, members: list[Trial]) -> Job | None:
        evaluators = [t for t in state.trials if t.info.get("role") == "evaluator"]
        waiting = [t for t in evaluators if t.status == TrialStatus.PAUSED]
        going_on = [t for t in waiting if t.info.get("active")]
        if going_on:
            evaluator = min(going_on, key=lambda t: (t.info["at"], t.id))
            at = evaluator.info["at"]
            budget = self._segment_end(at)
            if not self._affordable(state, budget, evaluator):
                return None
            return Job(evaluator.id, evaluator.config, budget, 0, 0, True,
                       f"evaluator ready at {at:g}: the verdict is continue")
        idle = [t for t in waiting if not t.info.get("active")]
        # A failed evaluator (its code raised, its workers were lost too often) is replaced: the
        # evaluator count is what the study keeps evaluating with, not how many it ever started.
        serving = [t for t in evaluators if t.status != TrialStatus.FAILED]
        if not idle and len(serving) >= self.evaluators:
            return None
        if not idle and not self._may_add_trial(state):
            return None
        pick = self._pick_parent(state, members, evaluators)
        if pick is None:
            return None
        parent, target = pick
        start = parent.checkpoint_step
        budget = self._segment_end(start)
        if not self._affordable(state, budget - start, None):
            return None
        trial = min(idle, key=lambda t: t.id).id if idle else None
        return Job(trial, target.config, budget, 0, 0, False,
                   f"evaluates member {parent.id} of P{parent.info['sub']} with the hyperparameters "
                   f"of member {target.id}, the best of P{target.info['sub']}", source=parent.id)

    def _pick_parent(self, state: State, members: list[Trial], evaluators: list[Trial],
                     ) -> tuple[Trial, Trial] | None:
        """The eligible parent that has gone longest unevaluated, and its target."""
        assigned = {t.info["parent"] for t in evaluators if t.info.get("active")}
        targets = {sub: self._target(members, sub) for sub in range(1, self.subpopulations)}
        eligible = [t for t in members
                    if t.info["sub"] >= 2 and t.id not in assigned and not t.status.terminal
                    and t.checkpoint is not None and t.checkpoint_step < self.max_budget
                    and t.checkpoint_step >= self.min_steps_before_eval[t.info["sub"] - 2]
                    and targets[t.info["sub"] - 1] is not None]
        if not eligible:
            return None
        parent = min(eligible, key=lambda t: (t.info["since"], t.id))
        return parent, targets[parent.info["sub"] - 1]

    @staticmethod
    def _target(members: list[Trial], sub: int) -> Trial | None:
        """The best unfinished member of P`sub`: by latest score in P1, by fitness elsewhere."""
        live = [t for t in members if t.info["sub"] == sub and not t.status.terminal
                and t.checkpoint is not None]
        if sub == 1:
            ranked = [(t.info["score"], t.id, t) for t in live if "score" in t.info]
        else:
            ranked = [(-t.info["fitness"], t.id, t) for t in live if "fitness" in t.info]
        return min(ranked, key=lambda r: r[:2])[2] if ranked else None

    def _assign(self, state: State, worker: str, job: Job) -> Decision:
        if job.source is None:
            return super()._assign(state, worker, job)
        source = state.trials[job.source]
        if job.trial is None:  # a new evaluator: its first attempt is already a clone of its parent
            return CloneTrial(len(state.trials), 1, worker, job.config, job.budget, source.checkpoint,
                              source.id, job.reason)
        trial = state.trials[job.trial]
        handoff = trial.info.get("handoff")
        checkpoint = handoff[1] if handoff is not None and handoff[0] == source.id else source.checkpoint
        return CloneTrial(trial.id, trial.attempt + 1, worker, job.config, job.budget, checkpoint,
                          source.id, job.reason)

    # ----------------------------------------------------------------------------------------------
    # Folding (the only writer).

    def apply(self, state: State, record) -> State:
        match record:
            case CloneTrial(trial=tid, source=source, config=config):
                if tid == len(state.trials):
                    state.trials.append(Trial(tid, dict(config), TrialStatus.RUNNING))
                    state.started += 1
                    state.trials[tid].info.update(role="evaluator", parent=source, active=False)
                trial = state.trials[tid]
                is_handoff = _is_handoff(trial, record)
                super().apply(state, record)
                if is_handoff:
                    del trial.info["handoff"]
                    trial.info["handoffs"] = trial.info.get("handoffs", 0) + 1
                trial.info["from"] = [record.attempt, trial.checkpoint_step]
                if trial.info["role"] == "evaluator":
                    self._assign_evaluator(state, trial, source)
                elif not is_handoff:
                    self._lose_evolution_event(state, trial)
            case FinishStudy():
                super().apply(state, record)
                for trial in state.trials:
                    if trial.info.get("role") == "evaluator" and trial.status == TrialStatus.PAUSED:
                        trial.info["active"] = False
                        self._complete(state, trial, "the population finished")
            case StartTrial(trial=tid):
                super().apply(state, record)
                if "role" not in state.trials[tid].info:
                    self._enrol_member(state, state.trials[tid])
            case _:
                super().apply(state, record)
        return state

    def _entries_copied(self, state: State, clone: CloneTrial) -> int:
        # A hand-off takes the evaluator's weights as they stood at its success, not its latest ones.
        trial = state.trials[clone.trial]
        if _is_handoff(trial, clone):
            return trial.info["handoff"][3]
        return super()._entries_copied(state, clone)

    def _fold_clone(self, state: State, decision: CloneTrial) -> None:
        # As the base class, but a hand-off starts from the step the evaluator's weights were kept at:
        # the evaluator itself may have been reassigned (and hold other weights) since.
        trial, source = state.trials[decision.trial], state.trials[decision.source]
        start = trial.info["handoff"][2] if _is_handoff(trial, decision) else source.checkpoint_step
        trial.config = dict(decision.config)
        trial.checkpoint = decision.checkpoint
        trial.checkpoint_step = start
        trial.lost = 0
        state.jobs += 1
        state.budget_spent += decision.budget - start
        self._run(state, trial, decision.attempt, decision.worker, decision.budget)

    def _enrol_member(self, state: State, trial: Trial) -> None:
        index = sum(1 for t in state.trials if t.info.get("role") == "member")
        trial.info.update(role="member", sub=index // self.size + 1, since=state.jobs, losses=0,
                          **{"from": [1, 0]})

    def _assign_evaluator(self, state: State, evaluator: Trial, parent_id: int) -> None:
        parent = state.trials[parent_id]
        members = [t for t in state.trials if t.info.get("role") == "member"]
        target = self._target(members, parent.info["sub"] - 1)
        evaluator.info.update(parent=parent_id, target=target.id, start=evaluator.checkpoint_step,
                              active=True, evaluations=evaluator.info.get("evaluations", 0) + 1)
        evaluator.info.pop("verdict", None)

    def _lose_evolution_event(self, state: State, member: Trial) -> None:
        member.info["losses"] = member.info.get("losses", 0) + 1
        member.info["since"] = state.jobs
        member.info.pop("exploit", None)
        for evaluator in state.trials:
            if evaluator.info.get("role") == "evaluator" and evaluator.info.get("active") and (
                    member.id in (evaluator.info["parent"], evaluator.info["target"])):
                evaluator.info["verdict"] = "abandoned"
                self._end_evaluation(state, evaluator)

    def _end_evaluation(self, state: State, evaluator: Trial) -> None:
        """The evaluator lets go of its parent, which leaves Phi."""
        evaluator.info["active"] = False
        parent = state.trials[evaluator.info["parent"]]
        # Stamped here, not at the assignment: a parent evaluated until just now has not gone long
        # without evaluation, however early its evaluation began.
        parent.info["since"] = state.jobs
        # Outside Phi a member has no fitness; a stale one would still make it its sub-population's
        # best, and so a target.
        parent.info.pop("fitness", None)

    def _end_trial(self, state: State, trial: Trial, status: TrialStatus, reason: str) -> None:
        # Every way a trial ends for good passes here: its budget, an error, its workers lost.
        super()._end_trial(state, trial, status, reason)
        for evaluator in state.trials:
            if evaluator.info.get("role") == "evaluator" and evaluator.info.get("active"):
                if evaluator.id == trial.id:
                    self._end_evaluation(state, evaluator)
                elif evaluator.info["target"] == trial.id:
                    evaluator.info["verdict"] = "target finished"
                    self._end_evaluation(state, evaluator)

    def _attempt_ended(self, state: State, trial: Trial) -> None:
        progress = attempt_progress(trial)
        if progress is None or progress < trial.budget:
            Algorithm._attempt_ended(self, state, trial)
            return
        if trial.info.get("role") == "evaluator":
            trial.info["at"] = trial.budget
            trial.status = TrialStatus.PAUSED
            trial.reason = f"evaluator ready at step {trial.budget:g}"
            if trial.info.get("active"):
                self._judge(state, trial)
            return
        super()._attempt_ended(state, trial)  # a member: score, at, paused or completed
        self._rank_subpopulation(state, trial)

    def _judge(self, state: State, evaluator: Trial) -> None:
        """Evaluator_verdict at a segment end, and what follows from it."""
        target = state.trials[evaluator.info["target"]]
        trained = evaluator.checkpoint_step - evaluator.info["start"]
        eta = self._curve(evaluator)
        child = self._curve(target)
        if eta is None or child is None:
            verdict = Verdict.STOP if trained > self.max_eval_steps else Verdict.CONTINUE
        else:
            verdict = fire_curves.evaluator_verdict(eta, child, trained, self.max_eval_steps, self.p_stat)
        if verdict == Verdict.SUCCESS and evaluator.checkpoint_step < self.max_budget \
                and not target.status.terminal and evaluator.checkpoint is not None:
            target.info["handoff"] = [evaluator.id, evaluator.checkpoint, evaluator.checkpoint_step,
                                      len(evaluator.info["schedule"])]
        elif verdict == Verdict.CONTINUE and evaluator.checkpoint_step >= self.max_budget:
            verdict = Verdict.STOP  # nothing left to train
        evaluator.info["verdict"] = str(verdict)
        counts = evaluator.info.setdefault("verdicts", {})
        counts[str(verdict)] = counts.get(str(verdict), 0) + 1
        if verdict != Verdict.CONTINUE:
            self._end_evaluation(state, evaluator)

    def _rank_subpopulation(self, state: State, ready: Trial) -> None:
        """Refresh the fitness of `ready`'s sub-population and fix whom `ready` would copy."""
        sub = ready.info["sub"]
        members = [t for t in state.trials if t.info.get("role") == "member" and t.info["sub"] == sub]
        ready.info.pop("exploit", None)
        if sub == 1:
            ranked = sorted((t.info["score"], t.id) for t in members
                            if "score" in t.info and t.status != TrialStatus.FAILED)
        else:
            fitness = self._fitnesses(state, members)
            for member in members:
                if member.id in fitness:
                    member.info["fitness"] = fitness[member.id]
                else:
                    member.info.pop("fitness", None)
            ranked = sorted((-value, tid) for tid, value in fitness.items())
        if ready.status != TrialStatus.PAUSED or len(ranked) < 2:
            return
        cut = truncation(len(ranked), self.quantile)
        if ready.id in [tid for _, tid in ranked[-cut:]]:
            ready.info["exploit"] = [tid for _, tid in ranked[:cut] if tid != ready.id]

    def _fitnesses(self, state: State, members: list[Trial]) -> dict[int, float]:
        """parent_fitnesses over Phi: the members with an active evaluator whose curve can be judged."""
        curves = {}
        for evaluator in state.trials:
            if evaluator.info.get("role") == "evaluator" and evaluator.info.get("active"):
                parent = state.trials[evaluator.info["parent"]]
                if parent in members and parent.status != TrialStatus.FAILED:
                    curve = self._curve(evaluator)
                    if curve is not None:
                        curves[parent.id] = curve
        if len(curves) < 2:
            return {tid: 0.0 for tid in curves}
        return {int(tid): float(value) for tid, value in fire_curves.parent_fitnesses(curves).items()}

    def _curve(self, trial: Trial) -> list[tuple[float, float]] | None:
        """The trial's curve since it last took weights, in maximised terms; None if too short."""
        attempt, start = trial.info["from"]
        points: dict[float, float] = {}
        for entry_attempt, step, metrics in trial.history:
            if entry_attempt >= attempt and step > start:
                value = metrics.get(self.metric)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    value = math.nan
                value = float(value) if self.maximise else -float(value)
                points[float(step)] = value if math.isfinite(value) else math.nan
        if len(points) < MIN_CURVE_POINTS or not any(math.isfinite(v) for v in points.values()):
            return None
        return sorted(points.items())


def _is_handoff(trial: Trial, clone: CloneTrial) -> bool:
    handoff = trial.info.get("handoff")
    return handoff is not None and handoff[0] == clone.source and handoff[1] == clone.checkpoint


def verdict_counts(state: State) -> dict[str, int]:
    """Every verdict the evaluators reached so far, counted: verdict -> how often."""
    counts: dict[str, int] = {}
    for trial in state.trials:
        for verdict, count in trial.info.get("verdicts", {}).items():
            counts[verdict] = counts.get(verdict, 0) + count
    return counts
