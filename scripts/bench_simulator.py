"""Simulator throughput and worker utilisation, from 1 to 1024 workers.

What is measured. ASHA (promotion variant, min_budget=1, max_budget=81, eta=3, no trial limit) and,
for contrast, synchronous Successive Halving (n_configs=81, min_budget=1, max_budget=81, eta=3,
brackets=None, overlap=False: one bracket after another, as in the papers) run on CrossingCurves
(varied_cost=True) with one result per attempt (report_every=None) until the simulated clock reaches a
horizon H. For each worker count the table gives the events stepped, the wall time of `run`, events
per wall second, and utilisation: busy worker-seconds / (workers x H), which is the simulator's
`result.utilisation` since a run stopped by `until` has a makespan of exactly H.

How H is chosen. ASHA here steps about 1.3 events per worker per simulated second (three events per
attempt: result, checkpoint, end), so H = EVENTS / workers simulated seconds gives every ASHA run
roughly EVENTS events whatever the worker count; Successive Halving gets the same H, so its
utilisation is read over the same interval, and its event count shows how much less work it hands out.
All runs use seed 0. Wall times are single runs and carry the noise of the machine.

Target: ASHA utilisation >= 0.99 at every worker count (printed as met / NOT met).
"""

from __future__ import annotations

import time

from benchlib import environment, parse_args, table, verdict, write_json
from rung.algorithms import ASHA, SuccessiveHalving
from rung.algorithms.benchmarks import CrossingCurves
from rung.algorithms.simulate import Simulator

WORKERS = (1, 4, 16, 64, 256, 1024)
EVENTS = 150_000
QUICK_EVENTS = 10_000
SEED = 0
TARGET_UTILISATION = 0.99


def algorithms(benchmark: CrossingCurves) -> dict:
    settings = dict(min_budget=1, max_budget=81, eta=3, metric=benchmark.metric)
    return {
        "ASHA": lambda: ASHA(benchmark.space, variant="promotion", **settings),
        "SHA (sync)": lambda: SuccessiveHalving(benchmark.space, n_configs=81, brackets=None,
                                                overlap=False, **settings),
    }


def measure(name: str, make, benchmark, workers: int, horizon: float) -> dict:
    simulator = Simulator(make(), benchmark, workers, seed=SEED, report_every=None)
    began = time.perf_counter()
    result = simulator.run(until=horizon)
    wall = time.perf_counter() - began
    if result.finished or result.makespan != horizon:
        raise RuntimeError(f"{name} with {workers} workers stopped at {result.makespan} "
                           f"({result.state.finish_reason!r}), before the horizon {horizon}")
    return {
        "algorithm": name,
        "workers": workers,
        "horizon_s": horizon,
        "events": result.events,
        "trials": len(result.state.trials),
        "wall_s": wall,
        "events_per_s": result.events / wall,
        "utilisation": result.utilisation,
    }


def met(rows: list[dict]) -> bool:
    return all(r["utilisation"] >= TARGET_UTILISATION for r in rows if r["algorithm"] == "ASHA")


def report(rows: list[dict], total_wall: float) -> None:
    print("Simulator throughput and utilisation: CrossingCurves(varied_cost=True), "
          f"report_every=None, seed {SEED}; utilisation over [0, H]")
    print()
    print(table(
        ["algorithm", "workers", "H (sim s)", "events", "trials", "wall s", "events/s",
         "utilisation"],
        [[r["algorithm"], r["workers"], r["horizon_s"], r["events"], r["trials"], r["wall_s"],
          round(r["events_per_s"]), f"{r['utilisation']:.4f}"] for r in rows]))
    print()
    print(f"total wall time {total_wall:.1f} s")
    lowest = min(r["utilisation"] for r in rows if r["algorithm"] == "ASHA")
    print(f"Target: ASHA utilisation >= {TARGET_UTILISATION} at every worker count "
          f"(lowest {lowest:.4f}) -> {verdict(met(rows))}")


def main() -> None:
    args = parse_args("bench_simulator", __doc__)
    events = QUICK_EVENTS if args.quick else EVENTS
    benchmark = CrossingCurves(varied_cost=True)
    began = time.perf_counter()
    rows = [measure(name, make, benchmark, workers, events / workers)
            for name, make in algorithms(benchmark).items() for workers in WORKERS]
    total_wall = time.perf_counter() - began
    report(rows, total_wall)
    write_json(args.out, {
        "benchmark": "bench_simulator",
        "quick": args.quick,
        "settings": {"workers": list(WORKERS), "events_target": events, "seed": SEED,
                     "horizon": "events_target / workers simulated seconds",
                     "benchmark": "CrossingCurves(varied_cost=True)", "report_every": None},
        "target": {"asha_utilisation_at_least": TARGET_UTILISATION, "met": met(rows)},
        "rows": rows,
        "total_wall_seconds": total_wall,
        "environment": environment(),
    })
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
