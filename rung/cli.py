"""The `rung` command line.

`rung simulate` runs a study in the simulator: virtual workers on the crossing-curves benchmark, the
same algorithms and the same `step` as a real study, in seconds. It is how to see what an algorithm
does at a scale no test machine has. Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time

from rung.algorithms import (
    ASHA,
    AsyncHyperband,
    Hyperband,
    MedianStopping,
    RandomSearch,
    SuccessiveHalving,
    TrialStatus,
    step,
)
from rung.algorithms.benchmarks import CrossingCurves
from rung.algorithms.simulate import Simulator

ALGORITHMS = {
    "random": lambda a, space: RandomSearch(space, budget=a.max_budget, **limits(a)),
    "sha": lambda a, space: SuccessiveHalving(space, n_configs=a.n_configs, min_budget=a.min_budget,
                                              max_budget=a.max_budget, eta=a.eta, brackets=None,
                                              overlap=True, **limits(a)),
    "hyperband": lambda a, space: Hyperband(space, a.min_budget, a.max_budget, a.eta,
                                            iterations=None, overlap=True, **limits(a)),
    "asha": lambda a, space: ASHA(space, a.min_budget, a.max_budget, a.eta, **limits(a)),
    "asha-stopping": lambda a, space: ASHA(space, a.min_budget, a.max_budget, a.eta,
                                           variant="stopping", **limits(a)),
    "async-hyperband": lambda a, space: AsyncHyperband(space, a.min_budget, a.max_budget, a.eta,
                                                       **limits(a)),
    "median": lambda a, space: MedianStopping(space, budget=a.max_budget, **limits(a)),
}


def limits(args) -> dict:
    return {"metric": CrossingCurves.metric, "max_trials": args.max_trials,
            "total_budget": args.total_budget}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rung", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="run a study on virtual workers in simulated time")
    sim.add_argument("--algorithm", choices=sorted(ALGORITHMS), default="asha")
    sim.add_argument("--workers", type=int, default=16)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--max-trials", type=int, default=500)
    sim.add_argument("--total-budget", type=float, default=None)
    sim.add_argument("--min-budget", type=float, default=1)
    sim.add_argument("--max-budget", type=float, default=81)
    sim.add_argument("--eta", type=int, default=3)
    sim.add_argument("--n-configs", type=int, default=81, help="configurations per SHA bracket")
    sim.add_argument("--until", type=float, default=None, help="stop at this simulated time")
    sim.add_argument("--drop-rate", type=float, default=0.0, help="share of attempts losing their worker")
    sim.add_argument("--straggler-rate", type=float, default=0.0)
    sim.add_argument("--top", type=int, default=5, help="how many trials to list")
    return top


def simulate(args) -> None:
    benchmark = CrossingCurves()
    algorithm = ALGORITHMS[args.algorithm](args, benchmark.space)
    progress = Progress(sys.stderr)
    simulator = Simulator(algorithm, benchmark, args.workers, seed=args.seed, report_every=None,
                          drop_rate=args.drop_rate, straggler_rate=args.straggler_rate,
                          rejoin_after=10.0, stepper=progress.step)
    result = simulator.run(until=args.until)
    progress.done()
    state = result.state
    counts = {status.name.lower(): sum(t.status == status for t in state.trials) for status in TrialStatus}
    print(f"{args.algorithm} on {args.workers} virtual workers, seed {args.seed}")
    print(f"  {'finished: ' + state.finish_reason if result.finished else 'stopped at the time limit'}")
    print(f"  simulated time {result.makespan:.1f} s, utilisation {result.utilisation:.3f}, "
          f"{result.events} events")
    print("  trials: " + ", ".join(f"{n} {name}" for name, n in counts.items() if n))
    ranked = sorted((t for t in state.trials if t.best is not None), key=lambda t: t.best)
    print(f"\n  {'trial':>5}  {'status':<9} {'budget':>6}  {'best error':>10}  config")
    for trial in ranked[: args.top]:
        config = " ".join(f"{k}={v:.3f}" for k, v in trial.config.items())
        print(f"  {trial.id:>5}  {trial.status.name.lower():<9} {trial.budget:>6g}  "
              f"{trial.best:>10.4f}  {config}")


class Progress:
    """Steps the study and, at most twice a second, shows how far it got."""

    def __init__(self, stream):
        self.stream = stream
        self.live = stream.isatty()
        self.events = 0
        self.shown = time.monotonic()

    def step(self, algorithm, state, event):
        self.events += 1
        if self.live and self.events % 1000 == 0 and time.monotonic() - self.shown > 0.5:
            self.shown = time.monotonic()
            self.stream.write(f"\r  {self.events} events, {len(state.trials)} trials, "
                              f"simulated time {event.time:.0f} s")
            self.stream.flush()
        return step(algorithm, state, event)

    def done(self):
        if self.live:
            self.stream.write("\r" + " " * 70 + "\r")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "simulate":
            simulate(args)
    except ValueError as error:
        print(f"rung: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
