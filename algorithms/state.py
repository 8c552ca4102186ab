"""The study state: plain data that every algorithm folds events and decisions into.

`State.to_data()` gives ints, floats, strings, lists and maps only (msgpack-able without hooks) and
`State.from_data` rebuilds an equal state, derived indexes included. Only an algorithm's `apply` writes
a state; `decide` reads it.

Rankings are kept incrementally: a `Rung` holds its members' ranking keys in a `SortedKeys`, so
inserting a member, its rank and the best promotable member cost O(log n) at any study size.
A ranking key is "smaller is better": the metric itself when minimising, its negation when maximising,
and +inf for NaN or infinite metrics, so that they rank worst; ties go to the older trial.
"""

from __future__ import annotations

import math
from collections import deque
from enum import IntEnum
from typing import Any

from .sortedkeys import SortedKeys


class TrialStatus(IntEnum):
    QUEUED = 0  # enqueued by the user, not started yet
    PENDING = 1  # its attempt was lost; waits for a worker to retry it
    RUNNING = 2
    PAUSED = 3  # trained its budget below the top rung; may be promoted
    COMPLETED = 4
    STOPPED = 5
    FAILED = 6
    DIVERGED = 7  # trained as far as it would, but its last counted metric is NaN or infinite

    @property
    def terminal(self) -> bool:
        return self >= TrialStatus.COMPLETED


def ranking_key(value: float | None, maximise: bool) -> float:
    if value is None or not math.isfinite(value):
        return math.inf
    return -value if maximise else value


class Trial:
    """One configuration and everything that happened to it."""

    __slots__ = (
        "id", "config", "status", "attempt", "worker", "budget", "bracket", "rung", "step", "value",
        "best", "checkpoint", "checkpoint_step", "lost", "history", "stale", "reason", "info",
    )

    def __init__(self, id: int, config: dict[str, Any], status: TrialStatus = TrialStatus.QUEUED):
        self.id = id
        self.config = config
        self.status = status
        self.attempt = 0  # 0: no attempt yet
        self.worker: str | None = None  # worker running the current attempt
        self.budget = 0.0  # budget the current (or last) attempt trains up to
        self.bracket = 0
        self.rung = 0  # rung that the current (or last) attempt targets
        self.step: float | None = None  # last step reported by the current attempt
        self.value: float | None = None  # metric of the last counted result
        self.best: float | None = None  # best metric of every counted result
        self.checkpoint: str | None = None
        self.checkpoint_step = 0.0
        self.lost = 0  # attempts of the current job lost with their worker
        self.history: list[list] = []  # [attempt, step, metrics] per counted result
        self.stale: list[list] = []  # [attempt, step, metrics] from superseded attempts
        self.reason = ""  # why the trial is where it is (stopped, failed, ...)
        self.info: dict[str, Any] = {}  # an algorithm's own per-trial numbers

    def to_data(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__slots__}
        # Copies of what keeps growing, so that a state built from this data never aliases this one.
        data.update(status=int(self.status), history=list(self.history), stale=list(self.stale),
                    info=dict(self.info), config=dict(self.config))
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> "Trial":
        trial = cls(data["id"], {})
        for name in cls.__slots__:
            setattr(trial, name, data[name])
        trial.config = dict(data["config"])
        trial.status = TrialStatus(data["status"])
        trial.history = [list(entry) for entry in data["history"]]
        trial.stale = [list(entry) for entry in data["stale"]]
        trial.info = dict(data["info"])
        return trial


class Rung:
    """Members of one rung of a bracket with their ranking keys, and which of them may be promoted."""

    __slots__ = ("budget", "keys", "promoted", "entered", "ended", "_ranked", "_open")

    def __init__(self, budget: float):
        self.budget = budget
        self.keys: dict[int, float] = {}  # trial -> ranking key recorded at this rung
        self.promoted: list[int] = []
        self.entered = 0  # attempts that were started or promoted into this rung
        self.ended = 0  # of those, how many came to an end (recorded, failed, stopped)
        self._ranked = SortedKeys()
        self._open = SortedKeys()  # recorded, paused, not promoted yet

    def __len__(self) -> int:
        return len(self.keys)

    def record(self, trial: int, key: float) -> None:
        self.keys[trial] = key
        self._ranked.add((key, trial))

    def rank(self, trial: int) -> int:
        """How many members rank strictly ahead of `trial` (0 for the best)."""
        return self._ranked.rank((self.keys[trial], trial))

    def key_at(self, rank: int) -> float:
        return self._ranked[rank][0]

    def open(self, trial: int) -> None:
        self._open.add((self.keys[trial], trial))

    def close(self, trial: int) -> None:
        self._open.remove((self.keys[trial], trial))

    def promote(self, trial: int) -> None:
        self.close(trial)
        self.promoted.append(trial)

    def best_open(self) -> int | None:
        best = self._open.first()
        return None if best is None else best[1]

    def open_trials(self):
        return (trial for _, trial in self._open)

    def to_data(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "keys": [[trial, key] for trial, key in self.keys.items()],
            "promoted": list(self.promoted),
            "open": [trial for _, trial in self._open],
            "entered": self.entered,
            "ended": self.ended,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> "Rung":
        rung = cls(data["budget"])
        rung.keys = {trial: key for trial, key in data["keys"]}
        rung._ranked = SortedKeys((key, trial) for trial, key in rung.keys.items())
        rung.promoted = list(data["promoted"])
        rung._open = SortedKeys((rung.keys[trial], trial) for trial in data["open"])
        rung.entered = data["entered"]
        rung.ended = data["ended"]
        return rung


class Bracket:
    """Rungs of increasing budget. `sizes` holds the planned n_i of a synchronous bracket."""

    __slots__ = ("index", "rungs", "sizes")

    def __init__(self, index: int, budgets: list[float], sizes: list[int] | None = None):
        self.index = index
        self.rungs = [Rung(budget) for budget in budgets]
        self.sizes = sizes

    def to_data(self) -> dict[str, Any]:
        return {"index": self.index, "rungs": [r.to_data() for r in self.rungs], "sizes": self.sizes}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> "Bracket":
        bracket = cls(data["index"], [], data["sizes"])
        bracket.rungs = [Rung.from_data(r) for r in data["rungs"]]
        return bracket


class State:
    """A study as plain data: trials, workers, brackets and counters."""

    __slots__ = (
        "seed", "trials", "workers", "idle", "retry", "queued", "brackets", "live_brackets",
        "sampled", "started", "jobs", "budget_spent", "stale_results", "failures", "first_failure",
        "stopping", "finished", "finish_reason", "failed",
    )

    def __init__(self, seed: int):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"`seed` is {seed!r}, but must be an int >= 0")
        self.seed = seed
        self.trials: list[Trial] = []  # a trial's id is its index
        self.workers: dict[str, int | None] = {}  # worker -> trial it runs, None when free
        self.idle: dict[str, None] = {}  # free workers, in the order they became free
        self.retry: deque[int] = deque()  # trials whose lost attempt waits to be retried
        self.queued: deque[int] = deque()  # trials the user enqueued, not started yet
        self.brackets: list[Bracket] = []
        self.live_brackets: list[int] = []  # brackets that may still hand out work, oldest first
        self.sampled = 0  # configurations the algorithm drew (grid position, draw counter)
        self.started = 0  # trials that had a first attempt
        self.jobs = 0  # attempts the algorithm handed out, retries excluded
        self.budget_spent = 0.0  # budget given to attempts, counted from where each resumed
        self.stale_results = 0
        self.failures = 0  # trials failed through their own attempt since an attempt last ended well
        self.first_failure = ""  # the reason of the first of those
        self.stopping = False
        self.finished = False
        self.finish_reason = ""
        self.failed = False  # the study stopped because its trials kept failing

    @property
    def busy(self) -> int:
        return len(self.workers) - len(self.idle)

    def to_data(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "trials": [t.to_data() for t in self.trials],
            "workers": [[w, t] for w, t in self.workers.items()],
            "idle": list(self.idle),
            "retry": list(self.retry),
            "queued": list(self.queued),
            "brackets": [b.to_data() for b in self.brackets],
            "live_brackets": list(self.live_brackets),
            "sampled": self.sampled,
            "started": self.started,
            "jobs": self.jobs,
            "budget_spent": self.budget_spent,
            "stale_results": self.stale_results,
            "failures": self.failures,
            "first_failure": self.first_failure,
            "stopping": self.stopping,
            "finished": self.finished,
            "finish_reason": self.finish_reason,
            "failed": self.failed,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> "State":
        state = cls(data["seed"])
        state.trials = [Trial.from_data(t) for t in data["trials"]]
        state.workers = {w: t for w, t in data["workers"]}
        state.idle = dict.fromkeys(data["idle"])
        state.retry = deque(data["retry"])
        state.queued = deque(data["queued"])
        state.brackets = [Bracket.from_data(b) for b in data["brackets"]]
        state.live_brackets = list(data["live_brackets"])
        for name in ("sampled", "started", "jobs", "budget_spent", "stale_results", "failures",
                     "first_failure", "stopping", "finished", "finish_reason", "failed"):
            setattr(state, name, data[name])
        return state
