"""What every algorithm shares: the trial lifecycle, workers, retries, limits and rung bookkeeping.

Theory of operation. An algorithm is an object holding only its validated settings. Its state is a
`State` (plain data). Three methods make the contract:

- `initial_state(seed)` builds an empty study;
- `apply(state, record)` folds one event or one decision into the state; it is the only writer;
- `decide(state, event)` reads the state, which already contains `event`, and returns what should be
  done now; it never writes.

`step` (in `step.py`) folds an event, then asks `decide` again and again, folding what it returns,
until it returns nothing. So `decide` may answer one thing at a time (hand one job to the first free
worker) and rely on `step` to ask again. The journal keeps the event with every decision of its step,
so recovery folds records and never calls `decide`.

Every algorithm here is a bracket-and-rung scheme: random and grid search run one bracket with one
rung at the trial budget; the halving family has several rungs; median stopping uses the rungs as its
milestones. The shared rules, for all of them:

- A free worker gets, first, the oldest lost attempt to retry (from its last checkpoint, at the same
  budget), then whatever the algorithm's `_next_job` proposes.
- A worker lost mid-attempt costs the trial that attempt; after `max_attempts` attempts the trial fails.
  A worker that left on purpose (`WorkerLeft`: preempted) costs the attempt too, but never the trial.
  An attempt that fails in user code fails the trial at once: retrying a deterministic error wastes a
  worker. So does an attempt that ends without a result, and a result without the study's metric
  (the attempt is stopped, as Ray Tune's strict metric checking does).
- Once `max_failures` trials in a row (in event order, over every worker) failed through their own
  attempt, the study stops and is marked failed: a trainable that cannot import would otherwise fail
  every configuration the algorithm has. An attempt that ends without failing its trial resets the
  count; one lost with its worker neither counts nor resets it.
- A result counts once: (trial, attempt, step) seen before is a no-op, and a result of an attempt
  that is not live (superseded, or declared lost) is kept aside as stale and never ranked; such an
  attempt's checkpoints are never resumed from and its end changes nothing (`is_live`). NaN or
  infinite metrics rank worst, and a trial ranked on one is never promoted. A trial that would
  complete with a NaN or infinite last counted metric ends diverged instead: its earlier finite
  values would otherwise pass for a usable model.
- A result reaching a rung's budget records the trial's ranking key in that rung; an attempt that ends
  at its budget leaves the trial paused (promotable) below the top rung and completed at the top.
- Limits: no new trial beyond `max_trials`, no attempt that would take the budget handed out past
  `total_budget`. When nothing runs and no job can be found, the study finishes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .decisions import CloneTrial, Decision, FinishStudy, PromoteTrial, StartTrial, StopTrial
from .events import (
    AttemptFailed,
    AttemptFinished,
    CheckpointStored,
    ConfigEnqueued,
    ResultReported,
    StopRequested,
    WorkerJoined,
    WorkerLeft,
    WorkerLost,
    WorkerReady,
)
from .rng import derive_rng
from .space import Space
from .state import Bracket, Rung, State, Trial, TrialStatus, ranking_key


@dataclass(frozen=True, slots=True)
class Job:
    """Work the algorithm proposes for a free worker: a new trial (`trial` is None or a queued
    trial) or a promotion of a paused trial."""

    trial: int | None
    config: Mapping[str, Any]
    budget: float
    bracket: int
    rung: int
    promote: bool
    reason: str
    source: int | None = None  # clone: the trial whose checkpoint the attempt starts from


def exact_str(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` is {value!r}, but must be an int >= {minimum}")


def check_budget(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"`{name}` is {value!r}, but must be a finite number > 0")


class Algorithm:
    """Base of every tuning algorithm; see the module docstring for the shared rules.

    Settings every algorithm takes: `metric` and `mode` (what to rank, "min" or "max"), `max_trials`,
    `total_budget`, `max_attempts` (attempts a trial may lose with its worker, in a row, before it
    fails) and `max_failures` (trials failing in user code in a row before the study stops, marked
    failed; 0 never stops it).
    """

    def __init__(
        self,
        space: Space | Mapping[str, Any],
        *,
        metric: str = "loss",
        mode: str = "min",
        max_trials: int | None = None,
        total_budget: float | None = None,
        max_attempts: int = 3,
        max_failures: int = 10,
    ):
        self.space = Space(space)
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"`metric` is {metric!r}, but must be a non-empty str")
        if mode not in ("min", "max"):
            raise ValueError(f"`mode` is {mode!r}, but must be 'min' or 'max'")
        if max_trials is not None:
            check_positive_int("max_trials", max_trials)
        if total_budget is not None:
            check_budget("total_budget", total_budget)
        check_positive_int("max_attempts", max_attempts)
        check_positive_int("max_failures", max_failures, minimum=0)
        self.metric = metric
        self.mode = mode
        self.maximise = mode == "max"
        self.max_trials = max_trials
        self.total_budget = total_budget
        self.max_attempts = max_attempts
        self.max_failures = max_failures

    # ----------------------------------------------------------------------------------------------
    # What each algorithm says about itself.

    @property
    def bounded(self) -> bool:
        """Whether the study ends by itself: a limit is set, or the scheme runs out of work."""
        return self.max_trials is not None or self.total_budget is not None or self._finite

    # A scheme whose own settings make its work finite (a grid, a number of brackets, a population).
    _finite = False

    def _initial_brackets(self) -> list[Bracket]:
        """Brackets that exist from the start (synchronous schemes open theirs as they go)."""
        return []

    def _new_bracket(self, index: int) -> Bracket:
        raise NotImplementedError

    def _next_job(self, state: State) -> Job | None:
        raise NotImplementedError

    def _rung_key(self, trial: Trial, key: float) -> float:
        """The key a trial records in a rung; by default its ranking key at that step."""
        return key

    def _cut(self, rung: Rung, trial: Trial) -> bool:
        """Whether a running trial that just recorded in `rung` (below its target) must stop."""
        return False

    def _bracket_changed(self, state: State, bracket: Bracket) -> None:
        """A rung of `bracket` gained an ended attempt or a promotion."""

    # ----------------------------------------------------------------------------------------------
    # The contract.

    def initial_state(self, seed: int = 0) -> State:
        state = State(seed)
        state.brackets = self._initial_brackets()
        state.live_brackets = [b.index for b in state.brackets]
        return state

    def load_state(self, data: Mapping[str, Any]) -> State:
        return State.from_data(data)

    def apply(self, state: State, record) -> State:
        match record:
            case ResultReported():
                self._fold_result(state, record)
            case CheckpointStored(trial=tid, attempt=attempt, step=step, checkpoint=key):
                trial = self._live(state, tid, attempt)
                if trial is not None and (trial.checkpoint is None or step >= trial.checkpoint_step):
                    trial.checkpoint = key
                    trial.checkpoint_step = step
            case AttemptFinished(trial=tid, attempt=attempt):
                trial = self._live(state, tid, attempt)
                if trial is not None:
                    self._release_worker(state, trial)
                    if trial.status == TrialStatus.RUNNING:
                        self._attempt_ended(state, trial)
                    if trial.status != TrialStatus.FAILED:
                        state.failures = 0
            case AttemptFailed(trial=tid, attempt=attempt, reason=reason):
                trial = self._live(state, tid, attempt)
                if trial is not None:
                    self._release_worker(state, trial)
                    if trial.status == TrialStatus.RUNNING:
                        self._fail(state, trial, reason)
            case WorkerJoined(worker=worker) | WorkerReady(worker=worker):
                if worker in state.workers:
                    self._lose_worker(state, worker, "worker came back without its attempt")
                state.workers[worker] = None
                state.idle[worker] = None
            case WorkerLost(worker=worker, reason=reason):
                if worker in state.workers:
                    self._lose_worker(state, worker, reason)
            case WorkerLeft(worker=worker, reason=reason):
                if worker in state.workers:
                    self._lose_worker(state, worker, reason, counts=False)
            case ConfigEnqueued(config=config):
                tid = len(state.trials)
                # Parameters the user left out are drawn, so that a partial configuration is enough.
                drawn = self.space.sample(derive_rng(state.seed, "enqueued", tid))
                state.trials.append(Trial(tid, {**drawn, **dict(config)}))
                state.queued.append(tid)
            case StopRequested():
                state.stopping = True
            case StartTrial() | PromoteTrial() | CloneTrial():
                self._fold_start(state, record)
            case StopTrial(trial=tid, reason=reason):
                trial = state.trials[tid]
                if trial.info.pop("unranked", None) is not None:
                    self._fail(state, trial, reason)
                else:
                    self._end_trial(state, trial, TrialStatus.STOPPED, reason)
            case FinishStudy(reason=reason):
                state.finished = True
                state.finish_reason = reason
                state.failed = self._failing(state)
            case _:
                raise TypeError(f"not an event or a decision: {record!r}")
        return state

    def decide(self, state: State, event) -> list[Decision]:
        if state.finished:
            return []
        if isinstance(event, ResultReported):
            trial = self._trial(state, event.trial)
            # `info` is empty for most trials: one test per result on the broker's hot path.
            if trial is not None and trial.info and trial.status == TrialStatus.RUNNING:
                if "unranked" in trial.info:
                    return [StopTrial(trial.id, trial.attempt,
                                      f"reported metrics {trial.info['unranked']} but the study ranks "
                                      f"{self.metric!r} (set metric in the study)")]
                if "cut" in trial.info:
                    rung = trial.info["cut"]
                    return [StopTrial(trial.id, trial.attempt, f"outside the survivors of rung {rung}")]
        if state.failures and self._failing(state):
            return self._stop_study(state, f"{state.failures} attempts in a row failed in user code; "
                                           f"the first: {state.first_failure}")
        if state.stopping:
            return self._stop_study(state, "the study was asked to stop")
        job = None
        if state.idle:
            job = self._job(state)
            if job is not None:
                return [self._assign(state, next(iter(state.idle)), job)]
        if state.busy == 0 and (state.idle or self._job(state) is None):
            return [FinishStudy(self._finish_reason(state))]
        return []

    @staticmethod
    def _stop_study(state: State, reason: str) -> list[Decision]:
        decisions: list[Decision] = [
            StopTrial(tid, state.trials[tid].attempt, reason)
            for tid in state.workers.values()
            if tid is not None and state.trials[tid].status == TrialStatus.RUNNING
        ]
        return decisions + [FinishStudy(reason)]

    def _failing(self, state: State) -> bool:
        """Whether trials failed in user code `max_failures` times in a row."""
        return 0 < self.max_failures <= state.failures

    def checkpoints_needed(self, state: State) -> set[str]:
        """Every stored checkpoint the study may still resume from: the latest of each trial that is
        not stopped or failed (running, waiting for a retry, paused and promotable, or completed: the
        user's model). The broker adds those that attempts in flight resumed from."""
        return {t.checkpoint for t in state.trials if t.checkpoint is not None
                and t.status not in (TrialStatus.STOPPED, TrialStatus.FAILED)}

    # ----------------------------------------------------------------------------------------------
    # Jobs.

    def _job(self, state: State) -> Job | None:
        if state.retry:
            trial = state.trials[state.retry[0]]
            if self._affordable(state, trial.budget, trial):
                return Job(trial.id, trial.config, trial.budget, trial.bracket, trial.rung, False,
                           f"retry after {trial.reason}")
            return None
        return self._next_job(state)

    def _assign(self, state: State, worker: str, job: Job) -> Decision:
        if job.source is not None:
            trial, source = state.trials[job.trial], state.trials[job.source]
            return CloneTrial(trial.id, trial.attempt + 1, worker, job.config, job.budget,
                              source.checkpoint, source.id, job.reason)
        if job.promote:
            trial = state.trials[job.trial]
            return PromoteTrial(trial.id, trial.attempt + 1, worker, trial.config, job.budget,
                                trial.checkpoint, job.bracket, job.rung, job.reason)
        if job.trial is None:
            return StartTrial(len(state.trials), 1, worker, job.config, job.budget, None,
                              job.bracket, job.rung, job.reason)
        trial = state.trials[job.trial]
        return StartTrial(trial.id, trial.attempt + 1, worker, trial.config, job.budget,
                          trial.checkpoint, job.bracket, job.rung, job.reason)

    def _new_trial_job(self, state: State, budget: float, bracket: int, rung: int, reason: str,
                       ) -> Job | None:
        """A job for the next configuration: the oldest enqueued one, else a fresh draw."""
        if not self._may_add_trial(state) or not self._affordable(state, budget, None):
            return None
        if state.queued:
            tid = state.queued[0]
            return Job(tid, state.trials[tid].config, budget, bracket, rung, False,
                       f"{reason} (enqueued configuration)")
        config = self._draw(state)
        if config is None:
            return None
        return Job(None, config, budget, bracket, rung, False, reason)

    def _draw(self, state: State) -> dict[str, Any] | None:
        """The next configuration the algorithm draws, or None when it has no more."""
        return self.space.sample(derive_rng(state.seed, "config", state.sampled))

    def _promotion_job(self, state: State, bracket: Bracket, rung: int, trial: int, reason: str,
                       ) -> Job | None:
        target = bracket.rungs[rung + 1].budget
        candidate = state.trials[trial]
        if not self._affordable(state, target, candidate):
            return None
        return Job(trial, candidate.config, target, bracket.index, rung + 1, True, reason)

    def _may_add_trial(self, state: State) -> bool:
        return self.max_trials is None or state.started < self.max_trials

    def _affordable(self, state: State, budget: float, trial: Trial | None) -> bool:
        if self.total_budget is None:
            return True
        return state.budget_spent + budget - self._resume_step(trial) <= self.total_budget

    @staticmethod
    def _resume_step(trial: Trial | None) -> float:
        return trial.checkpoint_step if trial is not None and trial.checkpoint is not None else 0

    def _finish_reason(self, state: State) -> str:
        if self.max_trials is not None and state.started >= self.max_trials:
            return f"max_trials ({self.max_trials}) reached and every attempt ended"
        if self.total_budget is not None:
            return (f"no work left within total_budget ({self.total_budget}; "
                    f"{exact_str(state.budget_spent)} handed out) and every attempt ended")
        return "no work left and every attempt ended"

    # ----------------------------------------------------------------------------------------------
    # Folding.

    @staticmethod
    def _trial(state: State, tid: int) -> Trial | None:
        return state.trials[tid] if 0 <= tid < len(state.trials) else None

    def _live(self, state: State, tid: int, attempt: int) -> Trial | None:
        """The trial, if `attempt` of it is live (`is_live`)."""
        trial = self._trial(state, tid)
        return trial if trial is not None and is_live(trial, attempt) else None

    def _fold_start(self, state: State, decision: StartTrial | PromoteTrial | CloneTrial) -> None:
        if isinstance(decision, CloneTrial):
            self._fold_clone(state, decision)
            return
        tid = decision.trial
        if tid == len(state.trials):
            state.trials.append(Trial(tid, dict(decision.config), TrialStatus.RUNNING))
            state.sampled += 1
        trial = state.trials[tid]
        retry = trial.status == TrialStatus.PENDING
        if retry:
            state.retry.remove(tid)
        elif trial.status == TrialStatus.QUEUED:
            state.queued.remove(tid)
        if decision.bracket == len(state.brackets):
            state.brackets.append(self._new_bracket(decision.bracket))
            state.live_brackets.append(decision.bracket)
        bracket = state.brackets[decision.bracket]
        if isinstance(decision, PromoteTrial) and tid in bracket.rungs[trial.rung].keys:
            bracket.rungs[trial.rung].promote(tid)  # (a PBT member going on holds no rung place)
        if not retry:
            bracket.rungs[decision.rung].entered += 1
            state.jobs += 1
            trial.lost = 0
        if trial.attempt == 0:
            state.started += 1
        state.budget_spent += decision.budget - self._resume_step(trial)
        trial.bracket = decision.bracket
        trial.rung = decision.rung
        self._run(state, trial, decision.attempt, decision.worker, decision.budget)
        if isinstance(decision, PromoteTrial):
            self._bracket_changed(state, bracket)

    def _fold_clone(self, state: State, decision: CloneTrial) -> None:
        """The trial takes the source's weights (its checkpoint) and the new hyperparameters."""
        trial, source = state.trials[decision.trial], state.trials[decision.source]
        trial.config = dict(decision.config)
        trial.checkpoint = decision.checkpoint
        trial.checkpoint_step = source.checkpoint_step
        trial.lost = 0
        state.jobs += 1
        state.budget_spent += decision.budget - trial.checkpoint_step
        self._run(state, trial, decision.attempt, decision.worker, decision.budget)

    def _run(self, state: State, trial: Trial, attempt: int, worker: str, budget: float) -> None:
        trial.status = TrialStatus.RUNNING
        trial.attempt = attempt
        trial.worker = worker
        trial.budget = budget
        trial.step = None
        state.workers[worker] = trial.id
        state.idle.pop(worker, None)

    def _fold_result(self, state: State, event: ResultReported) -> None:
        trial = self._trial(state, event.trial)
        if trial is None or event.attempt > trial.attempt:
            return
        live = event.attempt == trial.attempt and trial.worker is not None  # is_live, inline: per result
        if live and trial.step is not None and event.step <= trial.step:
            return  # seen already: results of one attempt arrive in order
        entry = [event.attempt, event.step, dict(event.metrics)]
        if not live:
            # A superseded attempt, or one declared lost that was only late: kept aside, once.
            if not _seen(trial, event.attempt, event.step):
                trial.stale.append(entry)
                state.stale_results += 1
            return
        value = event.metrics.get(self.metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            value = math.nan  # a non-numeric metric ranks worst, like NaN
        trial.step = event.step
        trial.value = value
        trial.history.append(entry)
        key = ranking_key(value, self.maximise)
        if math.isfinite(key) and (trial.best is None or key < ranking_key(trial.best, self.maximise)):
            trial.best = value
        if trial.status != TrialStatus.RUNNING:
            return
        if self.metric not in event.metrics:
            # Ranked as NaN, such a trial would train its whole budget to no purpose, and so would
            # every trial after it: `decide` stops it, and the stop fails it.
            trial.info["unranked"] = sorted(event.metrics)
            return
        self._on_result(state, trial, event.step, key)

    def _on_result(self, state: State, trial: Trial, step: float, key: float) -> None:
        """Record the trial in every rung up to its target whose budget this step reaches."""
        rungs = state.brackets[trial.bracket].rungs
        for index in range(trial.rung + 1):
            rung = rungs[index]
            if rung.budget > step:
                break
            if trial.id in rung.keys:
                continue
            rung.record(trial.id, self._rung_key(trial, key))
            if index < trial.rung and "cut" not in trial.info and self._cut(rung, trial):
                trial.info["cut"] = index

    def _attempt_ended(self, state: State, trial: Trial) -> None:
        progress = attempt_progress(trial)
        if progress is None:
            self._fail(state, trial, "the attempt ended without a result")
            return
        bracket = state.brackets[trial.bracket]
        rung = bracket.rungs[trial.rung]
        top = trial.rung == len(bracket.rungs) - 1
        if progress >= trial.budget:
            if top:
                self._complete(state, trial, "trained its full budget")
                return
            trial.status = TrialStatus.PAUSED
            trial.reason = f"trained to rung {trial.rung}"
            if trial.id in rung.keys and math.isfinite(rung.keys[trial.id]):
                rung.open(trial.id)
            rung.ended += 1
            self._bracket_changed(state, bracket)
            return
        # The trainable stopped before its budget: rank what it reached, never promote it.
        if trial.id not in rung.keys:
            rung.record(trial.id, self._rung_key(trial, ranking_key(trial.value, self.maximise)))
        self._complete(state, trial, "ended before its budget")

    def _complete(self, state: State, trial: Trial, reason: str) -> None:
        """End a trial that trained as far as it will: completed, or diverged if its last counted
        metric is NaN or infinite."""
        if math.isfinite(trial.value):
            self._end_trial(state, trial, TrialStatus.COMPLETED, reason)
            return
        step = exact_str(trial.history[-1][1])
        self._end_trial(state, trial, TrialStatus.DIVERGED,
                        f"diverged: {self.metric} is {trial.value} at step {step}")

    def _fail(self, state: State, trial: Trial, reason: str) -> None:
        """The trial fails through its own attempt: one more user-code failure in a row."""
        if state.failures == 0:
            # Its first line: a reason goes on with the end of the attempt's log.
            first = reason.split("\n", 1)[0]
            state.first_failure = first if len(first) <= 300 else first[:297] + "..."
        state.failures += 1
        self._end_trial(state, trial, TrialStatus.FAILED, reason)

    def _end_trial(self, state: State, trial: Trial, status: TrialStatus, reason: str) -> None:
        trial.status = status
        trial.reason = reason
        bracket = state.brackets[trial.bracket]
        bracket.rungs[trial.rung].ended += 1
        if trial.id in bracket.rungs[trial.rung].keys:
            bracket.rungs[trial.rung].close(trial.id)
        self._bracket_changed(state, bracket)

    def _release_worker(self, state: State, trial: Trial) -> None:
        worker = trial.worker
        trial.worker = None
        if state.workers.get(worker, -1) == trial.id:
            state.workers[worker] = None
            state.idle[worker] = None

    def _lose_worker(self, state: State, worker: str, reason: str, counts: bool = True) -> None:
        """The worker is gone, and its attempt with it: retried, or, once `max_attempts` in a row are
        lost (`counts`: a departure on purpose is not), failed."""
        tid = state.workers.pop(worker)
        state.idle.pop(worker, None)
        if tid is None:
            return
        trial = state.trials[tid]
        trial.worker = None
        if trial.status != TrialStatus.RUNNING:
            return
        if counts:
            trial.lost += 1
        if trial.lost >= self.max_attempts:
            self._end_trial(state, trial, TrialStatus.FAILED,
                            f"lost {trial.lost} attempts in a row, the last: {reason}")
            return
        trial.status = TrialStatus.PENDING
        trial.reason = f"attempt {trial.attempt} lost: {reason}"
        state.retry.append(tid)


def is_live(trial: Trial, attempt: int) -> bool:
    """Whether `attempt` is the trial's current attempt and a worker still holds it.

    The one rule for every message of an attempt, results, checkpoints and ends alike: one of an
    attempt that is not live (superseded, ended, or declared lost while its worker was only late)
    changes nothing the study ranks or resumes from. A lost attempt's results are kept as stale, so
    a checkpoint it stores late is past every counted result: resuming from it would skip steps
    the study never saw.
    """
    return attempt == trial.attempt and trial.worker is not None


def attempt_progress(trial: Trial) -> float | None:
    """How far the trial's last attempt got: its last step, or, for an attempt that resumed from a
    checkpoint already at its budget (its worker was lost between the last checkpoint and the end),
    that checkpoint's step; None for an attempt that got nowhere."""
    if trial.step is not None:
        return trial.step
    if trial.checkpoint is not None and trial.value is not None and trial.checkpoint_step >= trial.budget:
        return trial.checkpoint_step
    return None


def _seen(trial: Trial, attempt: int, step: float) -> bool:
    """Whether a result of an earlier attempt was counted or kept as stale already."""
    for entry in reversed(trial.history):
        if entry[0] < attempt:
            break  # the history runs in attempt order
        if entry[0] == attempt and entry[1] == step:
            return True
    return any(entry[0] == attempt and entry[1] == step for entry in trial.stale)
