"""Worker utilisation in the simulator: synchronous SHA idles at its barriers, ASHA does not."""

import math

import pytest

from rung.algorithms import ASHA, SuccessiveHalving
from rung.algorithms.benchmarks import CrossingCurves
from rung.algorithms.simulate import Simulator

BENCHMARK = CrossingCurves(varied_cost=False)  # one second per unit of budget


def analytic_sha_utilisation(rungs, workers):
    """Rung i runs n_i jobs of equal length in ceil(n_i / W) waves. A promoted configuration resumes
    from its checkpoint, so its job at rung i trains r_i - r_(i-1) units."""
    busy = makespan = 0
    previous = 0
    for n_i, r_i in rungs:
        length = r_i - previous
        busy += n_i * length
        makespan += math.ceil(n_i / workers) * length
        previous = r_i
    return busy / (workers * makespan)


@pytest.mark.parametrize("workers", [25, 10], ids=lambda w: f"{w}-workers")
def test_synchronous_sha_utilisation_equals_its_analytic_value(workers):
    sha = SuccessiveHalving(BENCHMARK.space, n_configs=256, min_budget=1, max_budget=256, eta=4,
                            metric="error")
    result = Simulator(sha, BENCHMARK, workers, seed=3).run()
    assert result.finished
    assert result.utilisation == pytest.approx(analytic_sha_utilisation(sha.rungs, workers), rel=1e-12)
    # 25 workers: waves of 11, 3, 1, 1, 1 over rungs of 1, 3, 12, 48, 192 units -> 1024 / (25 * 272).
    expected = {25: 1024 / (25 * 272), 10: 1024 / (10 * 311)}[workers]
    assert result.utilisation == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("workers", [1, 10, 100], ids=lambda w: f"{w}-workers")
@pytest.mark.parametrize("variant", ["promotion", "stopping"])
def test_asha_keeps_every_worker_busy(workers, variant):
    asha = ASHA(CrossingCurves.space, min_budget=1, max_budget=256, eta=4, variant=variant,
                metric="error")
    result = Simulator(asha, CrossingCurves(), workers, seed=5, report_every=4).run(until=600)
    assert not result.finished
    assert result.utilisation > 0.999


def test_repeated_synchronous_brackets_stay_near_their_analytic_utilisation():
    # Bracket after bracket, each waiting at its barriers: the analytic value of one bracket holds.
    sha = SuccessiveHalving(BENCHMARK.space, 256, 1, 256, eta=4, metric="error", brackets=None)
    result = Simulator(sha, BENCHMARK, 25, seed=1, report_every=None).run(until=272 * 3)
    assert result.utilisation == pytest.approx(1024 / (25 * 272), rel=1e-12)
    assert len(result.state.brackets) == 4  # three complete, the fourth opened at the horizon
