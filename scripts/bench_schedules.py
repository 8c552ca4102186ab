"""Learning-rate schedules where greed loses: random search, PBT and FIRE PBT on the noisy quadratic.

What is measured. The noisy quadratic model of Wu et al. 2018 (`NoisyQuadratic`: 100 coordinates with
curvatures 1/i, gradient noise 0.1 h_i, exact expected dynamics), trained for STEPS steps, where a
schedule that decays the learning rate late beats every constant rate and a greedy one decays it too
early. Each method runs in the simulator with one worker per trial, over SEEDS seeds:

- random search over constant rates: 50 trials, lr log-uniform in [1e-3, 1.9];
- random search over a two-phase schedule: 50 trials, lr and lr_late each log-uniform, switching at
  STEPS / 2 (the hand-designed shape; random search picks its two rates);
- PBT: 50 members, ready every READY steps, truncation 25%, explore factors {0.8, 1.2};
- FIRE PBT: 2, 3 and 4 sub-populations of 8 plus three quarters as many evaluators as parents (22,
  36 and 50 workers), ready every READY steps, factors {0.5, 0.8, 1.25, 2.0}, p_stat 0.01.

The figure is the final expected loss of the best trial (for PBT and FIRE PBT, of the best member;
evaluators are not counted), lower is better; the table gives the median and the spread over the seeds,
and the learning rate the best member of seed 0 used along the way. The task is fixed before any method
runs and never tuned to any outcome; whatever the table shows is what this code does.
"""

from __future__ import annotations

import statistics
import time

from benchlib import environment, parse_args, table, write_json
from rung.algorithms import PBT, FirePBT, RandomSearch, loguniform
from rung.algorithms.benchmarks import NoisyQuadratic
from rung.algorithms.pbt import best_schedule
from rung.algorithms.simulate import Simulator

STEPS = 1000
READY = 50
REPORT_EVERY = 10
SEEDS = 5
QUICK_SEEDS = 2
PROBES = (0, 250, 500, 750, 950)  # steps at which the best schedule's rate is shown


def methods(nqm: NoisyQuadratic, quick: bool) -> dict:
    lr = loguniform(1e-3, 1.9)
    settings = dict(metric="loss", mode="min")
    chosen = {
        "random, constant": (50, lambda: RandomSearch({"lr": lr}, budget=STEPS, max_trials=50, **settings)),
        "random, two-phase": (50, lambda: RandomSearch(
            {"lr": lr, "lr_late": loguniform(1e-4, 1.9), "switch": STEPS // 2}, budget=STEPS,
            max_trials=50, **settings)),
        "PBT": (50, lambda: PBT({"lr": lr}, population=50, ready=READY, max_budget=STEPS, **settings)),
    }
    for subpopulations in ((2,) if quick else (2, 3, 4)):
        fire = FirePBT({"lr": lr}, subpopulations=subpopulations, size=8, ready=READY,
                       max_budget=STEPS, **settings)
        workers = subpopulations * 8 + fire.evaluators
        chosen[f"FIRE PBT ({subpopulations}x8)"] = (
            workers, lambda n=subpopulations: FirePBT({"lr": lr}, subpopulations=n, size=8, ready=READY,
                                                      max_budget=STEPS, **settings))
    return chosen


def final_loss(state) -> float:
    members = [t for t in state.trials if t.info.get("role") != "evaluator" and t.value is not None
               and t.step is not None and t.history and t.history[-1][1] >= STEPS]
    return min(t.value for t in members) if members else float("inf")


def rate_along(nqm: NoisyQuadratic, state) -> list[float | None]:
    schedule = best_schedule(state, maximise=False)
    if schedule is None:  # random search: the best trial's own schedule
        best = min((t for t in state.trials if t.value is not None), key=lambda t: t.value)
        return [nqm.rate(best.config, step) for step in PROBES]
    rates = []
    for step in PROBES:
        current = [config for start, config, _ in schedule if start <= step]
        rates.append(nqm.rate(current[-1], step) if current else None)
    return rates


def main() -> None:
    args = parse_args("bench_schedules", __doc__)
    nqm = NoisyQuadratic()
    seeds = range(QUICK_SEEDS if args.quick else SEEDS)
    rows, figures = [], {}
    began = time.perf_counter()
    for name, (workers, build) in methods(nqm, args.quick).items():
        losses, rates = [], None
        for seed in seeds:
            result = Simulator(build(), nqm, workers, seed=seed, report_every=REPORT_EVERY).run()
            losses.append(final_loss(result.state))
            if seed == 0:
                rates = rate_along(nqm, result.state)
        figures[name] = {"workers": workers, "losses": losses, "rates_seed0": rates}
        spread = f"{min(losses):.5f}-{max(losses):.5f}"
        rows.append([name, workers, f"{statistics.median(losses):.5f}", spread,
                     " ".join("-" if r is None else f"{r:.3g}" for r in rates)])
    print(f"Noisy quadratic (Wu et al. 2018): {STEPS} steps, ready every {READY}; final loss of the best "
          f"member, {len(seeds)} seeds; rate of seed 0's best schedule at steps {', '.join(map(str, PROBES))}\n")
    print(table(["method", "workers", "median loss", "range", "lr along the best schedule"], rows))
    print(f"\ntotal wall time {time.perf_counter() - began:.1f} s")
    write_json(args.out, {"environment": environment(), "steps": STEPS, "ready": READY,
                          "seeds": list(seeds), "methods": figures})


if __name__ == "__main__":
    main()
