"""The broker's side of reconciliation, without I/O: what a worker holds, squared with what the study
expects of it. Pure functions of the state, what the worker says it holds and clock readings;
`Broker` sends what they decide, and tests/test_slots.py drives them, with the workers' slots
(worker/slot.py) and the real algorithm, through partitions and lost messages.

The rules:

1. The study expects of a worker at most one attempt: the current attempt of the trial the state
   assigns to it.
2. An attempt a worker holds that was given to it and is not the one expected of it now is stopped
   (its worker was declared lost and the attempt retried, or the trial was stopped). The broker says
   so once per connection: a stale attempt's every message would otherwise bring a stop.
3. The expected attempt missing from what a known worker holds was lost on the way when its run left
   longer ago than the liveness window, or by another broker (after a restart): the worker is then
   ready for work, and the algorithm retries the attempt. A younger run may still be on its way, or
   have crossed a hello.
4. A welcome names the attempt expected of the worker (none for a worker the study does not count
   as joined): the lease (worker/slot.py) resumes a paused attempt only if named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rung.algorithms import State

Attempt = tuple[int, int]


def expected_of(state: State, worker: str) -> Attempt | None:
    """Rules 1 and 4."""
    tid = state.workers.get(worker)
    return None if tid is None else (tid, state.trials[tid].attempt)


def to_stop(held: Iterable, expected: Attempt | None, given_here: Callable[[Attempt], bool]) -> list[Attempt]:
    """Rule 2: the attempts held, given to this worker, that are not the one expected of it."""
    return [(t, a) for t, a in held if (t, a) != expected and given_here((t, a))]


def run_lost(held: Iterable, expected: Attempt | None, sent_at: float | None, now: float,
             liveness: float) -> bool:
    """Rule 3: whether the expected attempt's run never reached the worker."""
    if expected is None or expected in {(t, a) for t, a in held}:
        return False
    return sent_at is None or now - sent_at >= liveness
