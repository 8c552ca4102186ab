"""Speed-up with workers: simulated time for ASHA, synchronous SHA and Hyperband to reach a target error.

What is measured. On CrossingCurves (varied_cost=True, one result per attempt: report_every=None),
each algorithm runs with 1, 4, 16, 64 and 256 workers and seeds 0-9 (the seed goes to the simulator,
which seeds the study with it, so the three algorithms see the same stream of configurations):

- ASHA, promotion variant (min_budget=1, max_budget=81, eta=3);
- Successive Halving (n_configs=81, min_budget=1, max_budget=81, eta=3, brackets=None), twice:
  "SHA" with overlap=True (a worker that would wait at a rung's barrier opens the next bracket, the
  strong parallel baseline of Li et al. 2020) and "SHA strict" with overlap=False (brackets one after
  another, workers idle at the barriers, as the synchronous algorithm is written);
- Hyperband (min_budget=1, max_budget=81, eta=3, iterations=None, overlap=True).

A run is `Simulator(...).run(target=T, until=CAP / workers, max_events=MAX_EVENTS)`; its figure is
`result.time_to_target`, the simulated time at which any reported error first reached T. A run that
hits a cap first counts as "not reached" and as an infinite time in the median, so a median is "not
reached" when half the seeds or more did not reach T. The table gives the median time over the seeds,
each algorithm's speed-up (its median at 1 worker over its median at W workers; ideal: W) and ASHA's
advantage at the same worker count (the other algorithm's median over ASHA's).

The target T is computed, not picked: the QUANTILE quantile (numpy's default, linear interpolation) of
the error at the maximum budget, `CrossingCurves().evaluate(config, 81)`, over CONFIGS configurations
drawn uniformly from the unit cube with numpy's default_rng(0). Errors at smaller budgets are never
lower than at budget 81 on this benchmark, so reaching T means finding a configuration at least that
good. --quick uses 3 seeds and fewer worker counts, the same T.
"""

from __future__ import annotations

import time

import numpy as np

from benchlib import environment, parse_args, table, write_json
from rung.algorithms import ASHA, Hyperband, SuccessiveHalving
from rung.algorithms.benchmarks import CrossingCurves
from rung.algorithms.simulate import Simulator

WORKERS = (1, 4, 16, 64, 256)
QUICK_WORKERS = (1, 16, 64)
SEEDS = tuple(range(10))
QUICK_SEEDS = tuple(range(3))
QUANTILE = 0.002
CONFIGS = 100_000
MAX_BUDGET = 81
# Simulated seconds at 1 worker, far above the slowest median there (Hyperband, about 8,300 s) and
# shrunk in proportion to the workers; with MAX_EVENTS it bounds the wall time of a run that never
# reaches T.
CAP = 200_000.0
MAX_EVENTS = 300_000


def algorithms(benchmark: CrossingCurves) -> dict:
    settings = dict(min_budget=1, max_budget=MAX_BUDGET, eta=3, metric=benchmark.metric)
    return {
        "ASHA": lambda: ASHA(benchmark.space, variant="promotion", **settings),
        "SHA": lambda: SuccessiveHalving(benchmark.space, n_configs=81, brackets=None,
                                         overlap=True, **settings),
        "SHA strict": lambda: SuccessiveHalving(benchmark.space, n_configs=81, brackets=None,
                                                overlap=False, **settings),
        "Hyperband": lambda: Hyperband(benchmark.space, iterations=None, overlap=True, **settings),
    }


def target_error(benchmark: CrossingCurves) -> tuple[float, float]:
    """(T, best error of the sample)."""
    points = np.random.default_rng(0).random((CONFIGS, 6))
    errors = np.array([
        benchmark.evaluate({f"x{i}": float(value) for i, value in enumerate(point)}, MAX_BUDGET)
        for point in points
    ])
    return float(np.quantile(errors, QUANTILE)), float(errors.min())


def time_to_target(make, benchmark, workers: int, seed: int, target: float) -> float | None:
    simulator = Simulator(make(), benchmark, workers, seed=seed, report_every=None)
    return simulator.run(target=target, until=CAP / workers, max_events=MAX_EVENTS).time_to_target


def summarise(name: str, workers: int, times: list[float | None]) -> dict:
    finite = [np.inf if t is None else t for t in times]
    return {
        "algorithm": name,
        "workers": workers,
        "times": times,
        "not_reached": sum(t is None for t in times),
        "median": float(np.median(finite)),
    }


def add_ratios(rows: list[dict]) -> None:
    """Speed-up against the same algorithm at 1 worker; ASHA's advantage at the same workers."""
    median = {(r["algorithm"], r["workers"]): r["median"] for r in rows}
    for row in rows:
        row["speedup"] = ratio(median[(row["algorithm"], 1)], row["median"])
        row["asha_advantage"] = ratio(row["median"], median[("ASHA", row["workers"])])


def ratio(numerator: float, denominator: float) -> float | None:
    if not (np.isfinite(numerator) and np.isfinite(denominator)) or denominator <= 0:
        return None
    return numerator / denominator


def median_cell(row: dict) -> str:
    return "not reached" if not np.isfinite(row["median"]) else f"{row['median']:,.1f}"


def ratio_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def report(rows: list[dict], target: float, best: float, seeds, wall: float) -> None:
    print(f"Target error T = {target:.5f}: the {QUANTILE:.1%} quantile of the error at budget "
          f"{MAX_BUDGET} over {CONFIGS:,} configurations drawn uniformly from [0, 1]^6 with "
          f"default_rng(0) (best of that sample {best:.5f})")
    print(f"Median simulated seconds to reach T over seeds {seeds[0]}-{seeds[-1]} "
          f"({len(seeds)} runs each); cap {CAP:,.0f} / workers simulated s and "
          f"{MAX_EVENTS:,} events per run")
    print()
    print(table(
        ["algorithm", "workers", "median s", "not reached", "speed-up vs 1", "ideal",
         "ASHA advantage (its median / ASHA's)"],
        [[r["algorithm"], r["workers"], median_cell(r), f"{r['not_reached']}/{len(r['times'])}",
          ratio_cell(r["speedup"]), f"{r['workers']}x",
          "" if r["algorithm"] == "ASHA" else ratio_cell(r["asha_advantage"])] for r in rows]))
    print()
    missed = sum(r["not_reached"] for r in rows)
    print(f"runs that did not reach T: {missed} of {sum(len(r['times']) for r in rows)}; "
          f"total wall time {wall:.1f} s")


def main() -> None:
    args = parse_args("bench_speedup", __doc__)
    worker_counts = QUICK_WORKERS if args.quick else WORKERS
    seeds = QUICK_SEEDS if args.quick else SEEDS
    benchmark = CrossingCurves(varied_cost=True)
    began = time.perf_counter()
    target, best = target_error(benchmark)
    rows = [summarise(name, workers,
                      [time_to_target(make, benchmark, workers, seed, target) for seed in seeds])
            for name, make in algorithms(benchmark).items() for workers in worker_counts]
    add_ratios(rows)
    wall = time.perf_counter() - began
    report(rows, target, best, seeds, wall)
    write_json(args.out, {
        "benchmark": "bench_speedup",
        "quick": args.quick,
        "target": {"error": target, "quantile": QUANTILE, "configs": CONFIGS, "budget": MAX_BUDGET,
                   "rng": "numpy.random.default_rng(0).random((configs, 6))",
                   "best_in_sample": best},
        "settings": {"workers": list(worker_counts), "seeds": list(seeds), "cap": f"{CAP} / workers",
                     "max_events": MAX_EVENTS, "benchmark": "CrossingCurves(varied_cost=True)",
                     "report_every": None},
        "rows": rows,
        "wall_seconds": wall,
        "environment": environment(),
    })
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
