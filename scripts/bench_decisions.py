"""Decision cost: wall time of one `step` (fold an event, decide, fold the decisions) as a study grows.

What is measured. ASHA (promotion variant, min_budget=1, max_budget=81, eta=3) and Hyperband
(min_budget=1, max_budget=81, eta=3, iterations=None, overlap=True) run on the CrossingCurves
benchmark with 64 simulated workers and one result per attempt (report_every=None). For each study
size N (10^3, 10^4, 10^5 trials), the window is the WINDOW steps that follow the step after which the
study first held N trials; the table gives the median, 99th percentile and maximum of their wall
times in microseconds. Every kind of event is in a window (results, checkpoints, finished attempts,
which are the steps that hand out work) in the proportions the study produces them.

How. The core reads no clock, so the simulator takes a `stepper`: this script hands it a wrapper of
`rung.algorithms.step` that times the call with `perf_counter_ns` and, outside the timed span, notes
how many trials the study holds. One run per algorithm therefore gives both the time of every step
and the step at which the study reached each N, while the study is in flight. (Running with
max_trials=N would show a study that drains and finishes instead; and `Simulator.run(state=...)` is no
continuation: a fresh run restarts the clock, re-joins every worker, which loses the attempts in
flight, and forgets the checkpoints.) Once the last window is full the wrapper ends the run.

Python's garbage collector stays on, as in a live broker, so a step that triggers a collection is
timed with it; that shows in the maximum far more than in the 99th percentile. Each algorithm runs
REPEATS times (the same steps each time, since a run is a pure function of its settings); the windows
of the runs are pooled, and the p99 of each run is printed too, so that the machine's noise shows.

Target: p99 under 100 microseconds at 10^5 trials (printed as met / NOT met, never tuned to pass).
"""

from __future__ import annotations

import time

import numpy as np

from benchlib import environment, parse_args, table, verdict, write_json
from rung.algorithms import ASHA, Hyperband, step
from rung.algorithms.benchmarks import CrossingCurves
from rung.algorithms.simulate import Simulator

SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)
WINDOW = 5_000
QUICK_WINDOW = 2_000
REPEATS = 3
QUICK_REPEATS = 1
WORKERS = 64
SEED = 0
TARGET_TRIALS = 100_000
TARGET_P99_US = 100.0


class _Enough(Exception):
    """Raised by the stepper to end a run once every window is full."""


class TimedStep:
    """A `stepper` for the simulator: `step`, timed, with the trial count after each step."""

    def __init__(self, largest: int, window: int):
        self.largest = largest
        self.window = window
        self.ns: list[int] = []
        self.trials: list[int] = []
        self.remaining: int | None = None  # steps still wanted once `largest` trials are reached

    def __call__(self, algorithm, state, event):
        began = time.perf_counter_ns()
        decisions = step(algorithm, state, event)
        self.ns.append(time.perf_counter_ns() - began)
        self.trials.append(len(state.trials))
        if self.remaining is None and len(state.trials) >= self.largest:
            self.remaining = self.window
        elif self.remaining is not None:
            self.remaining -= 1
            if self.remaining == 0:
                raise _Enough
        return decisions


def algorithms(benchmark: CrossingCurves) -> dict:
    settings = dict(min_budget=1, max_budget=81, eta=3, metric=benchmark.metric)
    return {
        "ASHA": ASHA(benchmark.space, variant="promotion", **settings),
        "Hyperband": Hyperband(benchmark.space, iterations=None, overlap=True, **settings),
    }


def timed_run(algorithm, benchmark, largest: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Nanoseconds of every step and trials after every step, up to `window` steps past `largest`."""
    timer = TimedStep(largest, window)
    try:
        result = Simulator(algorithm, benchmark, WORKERS, seed=SEED, report_every=None,
                           stepper=timer).run()
    except _Enough:
        return np.asarray(timer.ns, dtype=np.int64), np.asarray(timer.trials, dtype=np.int64)
    raise RuntimeError(f"the study finished ({result.state.finish_reason}) before {largest} trials "
                       f"and a window of {window} steps")


def measure(name: str, algorithm, benchmark, sizes, window: int, repeats: int,
            ) -> tuple[list[dict], list[float]]:
    """Rows per size, the steps of every repeat pooled; wall seconds of each repeat."""
    windows: dict[int, list[np.ndarray]] = {size: [] for size in sizes}
    walls = []
    starts = None
    for _ in range(repeats):
        began = time.perf_counter()
        ns, trials = timed_run(algorithm, benchmark, max(sizes), window)
        walls.append(time.perf_counter() - began)
        # A run is a pure function of its settings, so pooling is sound only if the windows agree.
        found = [start_of(trials, size) for size in sizes]
        if starts is not None and found != starts:
            raise RuntimeError(f"{name}: repeats disagree on the windows ({starts} vs {found})")
        starts = found
        for size, start in zip(sizes, starts):
            windows[size].append(ns[start:start + window])
    rows = [window_row(name, size, start, windows[size], trials)
            for size, start in zip(sizes, starts)]
    return rows, walls


def start_of(trials: np.ndarray, size: int) -> int:
    """Steps taken when the study first held `size` trials; its window starts after them."""
    return int(np.searchsorted(trials, size)) + 1


def window_row(name: str, size: int, start: int, runs: list[np.ndarray], trials: np.ndarray) -> dict:
    us = np.concatenate(runs) / 1e3
    p99s = [float(np.percentile(run / 1e3, 99)) for run in runs]
    return {
        "algorithm": name,
        "trials": size,
        "first_step": start + 1,
        "trials_at_end": int(trials[start + len(runs[0]) - 1]),
        "steps_per_run": len(runs[0]),
        "runs": len(runs),
        "median_us": float(np.median(us)),
        "p99_us": float(np.percentile(us, 99)),
        "p99_us_per_run": p99s,
        "max_us": float(us.max()),
    }


def verdicts(rows: list[dict]) -> dict[str, bool | None]:
    """Per algorithm: whether p99 at TARGET_TRIALS is under target (None: size not measured)."""
    found: dict[str, bool | None] = {}
    for row in rows:
        found.setdefault(row["algorithm"], None)
        if row["trials"] == TARGET_TRIALS:
            found[row["algorithm"]] = row["p99_us"] < TARGET_P99_US
    return found


def report(rows: list[dict], walls: dict[str, list[float]], window: int, repeats: int) -> None:
    print(f"Decision cost per step: {WORKERS} workers, CrossingCurves, report_every=None, "
          f"seed {SEED}; window = the {window:,} steps after the study reached N trials; "
          f"{repeats} run(s) per algorithm, their windows pooled")
    print()
    print(table(
        ["algorithm", "N trials", "first step", "trials at end", "steps", "median us", "p99 us",
         "p99 us per run", "max us"],
        [[r["algorithm"], r["trials"], r["first_step"], r["trials_at_end"],
          r["steps_per_run"] * r["runs"], r["median_us"], r["p99_us"],
          " ".join(f"{p:.1f}" for p in r["p99_us_per_run"]), r["max_us"]] for r in rows]))
    print()
    for name, seconds in walls.items():
        print(f"{name}: each run took {', '.join(f'{s:.1f}' for s in seconds)} s of wall time")
    print()
    print(f"Target: p99 < {TARGET_P99_US:g} us at {TARGET_TRIALS:,} trials (pooled over the runs)")
    for name, met in verdicts(rows).items():
        if met is None:
            print(f"  {name}: not assessed ({TARGET_TRIALS:,} trials is not reached with --quick)")
            continue
        p99 = next(r["p99_us"] for r in rows
                   if r["algorithm"] == name and r["trials"] == TARGET_TRIALS)
        print(f"  {name}: p99 {p99:.1f} us -> {verdict(met)}")


def main() -> None:
    args = parse_args("bench_decisions", __doc__)
    sizes = QUICK_SIZES if args.quick else SIZES
    window = QUICK_WINDOW if args.quick else WINDOW
    repeats = QUICK_REPEATS if args.quick else REPEATS
    benchmark = CrossingCurves()
    rows: list[dict] = []
    walls: dict[str, list[float]] = {}
    for name, algorithm in algorithms(benchmark).items():
        measured, walls[name] = measure(name, algorithm, benchmark, sizes, window, repeats)
        rows.extend(measured)
    report(rows, walls, window, repeats)
    write_json(args.out, {
        "benchmark": "bench_decisions",
        "quick": args.quick,
        "settings": {"workers": WORKERS, "seed": SEED, "window_steps": window, "sizes": list(sizes),
                     "repeats": repeats, "benchmark": "CrossingCurves(varied_cost=True)",
                     "report_every": None},
        "target": {"trials": TARGET_TRIALS, "p99_us_below": TARGET_P99_US, "met": verdicts(rows)},
        "rows": rows,
        "wall_seconds": walls,
        "environment": environment(),
    })
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
