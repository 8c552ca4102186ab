"""The one step shared by the broker and the simulator.

`step` folds an event into the state, then asks the algorithm what to do, folds those decisions and
asks again until the algorithm has nothing more to say. The event and every decision of the step form
one journal record; `replay` folds records back into a state without calling `decide`, which is how a
restarted broker recovers and how the tests check that a journal reproduces the live state.
"""

from __future__ import annotations

from typing import Iterable

from .algorithm import Algorithm
from .decisions import Decision
from .state import State


def step(algorithm: Algorithm, state: State, event) -> list[Decision]:
    algorithm.apply(state, event)
    decisions = algorithm.decide(state, event)
    if not decisions:
        return decisions  # most results: nothing to do
    # Each round hands out one job, stops trials or finishes, so rounds are bounded by the workers;
    # the bound turns an algorithm that never settles into an error instead of a hang.
    new = decisions
    for _ in range(2 * len(state.workers) + 8):
        for decision in new:
            algorithm.apply(state, decision)
        new = algorithm.decide(state, event)
        if not new:
            return decisions
        decisions = decisions + new
    raise RuntimeError(f"{type(algorithm).__name__}.decide did not settle after {event!r}")


def replay(algorithm: Algorithm, state: State, records: Iterable[tuple]) -> State:
    """Fold journal records, each (event, decisions), into `state`."""
    for event, decisions in records:
        algorithm.apply(state, event)
        for decision in decisions:
            algorithm.apply(state, decision)
    return state
