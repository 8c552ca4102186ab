"""The digits MLP example: it learns, it resumes exactly, it survives divergence, it is deterministic."""

import math

import msgpack
import numpy as np
import pytest

pytest.importorskip("sklearn")

from examples import digits_mlp  # noqa: E402  (after the skip: it needs scikit-learn)
from rung import Space  # noqa: E402

GOOD = {"lr": 0.05, "hidden": 64, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 32,
        "activation": "relu"}


class FakeTrial:
    """The trial context `train` sees; saved states go through msgpack to prove they are plain data."""

    def __init__(self, config, budget, checkpoint=None, checkpoint_step=0):
        self.config = config
        self.budget = budget
        self.checkpoint = checkpoint
        self.checkpoint_step = checkpoint_step
        self.reports = []
        self.saves = []

    def report(self, step, **metrics):
        for name, value in metrics.items():
            assert isinstance(value, float), (name, value)
        self.reports.append((step, metrics))

    def save(self, state, step=None):
        self.saves.append((step, msgpack.unpackb(msgpack.packb(state), raw=False)))


def run(config, budget, checkpoint=None, checkpoint_step=0):
    trial = FakeTrial(config, budget, checkpoint, checkpoint_step)
    digits_mlp.train(trial)
    return trial


def test_the_data_split_is_fixed_and_scaled():
    x_train, y_train, x_val, y_val = digits_mlp.load_data()
    assert x_train.shape == (1397, 64) and x_val.shape == (400, 64)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1
    assert set(np.unique(y_val)) == set(range(10))
    digits_mlp.load_data.cache_clear()
    again = digits_mlp.load_data()
    assert np.array_equal(again[3], y_val) and np.array_equal(again[2], x_val)


def test_a_sensible_config_learns_the_digits_reporting_and_saving_every_epoch():
    trial = run(GOOD, 20)
    assert [step for step, _ in trial.reports] == list(range(1, 21))
    assert [step for step, _ in trial.saves] == list(range(1, 21))
    assert all(set(m) == {"loss", "accuracy", "train_loss"} for _, m in trial.reports)
    final = trial.reports[-1][1]
    assert final["accuracy"] > 0.9
    assert final["loss"] < trial.reports[0][1]["loss"]
    assert trial.saves[-1][1]["epoch"] == 20


def test_resuming_from_epoch_5_gives_exactly_what_training_straight_to_10_gives():
    straight = run(GOOD, 10)
    step, state = straight.saves[4]
    assert step == 5
    resumed = run(GOOD, 10, checkpoint=state, checkpoint_step=5)
    assert [s for s, _ in resumed.reports] == list(range(6, 11))
    assert resumed.reports == straight.reports[5:]
    assert resumed.saves[-1] == straight.saves[-1]  # weights and momentum buffers, bit for bit


def test_resuming_works_for_tanh_small_batches_and_a_float_budget():
    config = {**GOOD, "activation": "tanh", "batch_size": 16, "hidden": 24}
    straight = run(config, 4)
    resumed = run(config, 4.7, checkpoint=straight.saves[1][1], checkpoint_step=2)
    assert resumed.reports == straight.reports[2:]


def test_a_budget_already_reached_trains_nothing():
    first = run(GOOD, 3)
    again = run(GOOD, 3, checkpoint=first.saves[-1][1], checkpoint_step=3)
    assert again.reports == [] and again.saves == []


def test_a_checkpoint_of_another_architecture_is_refused():
    state = run(GOOD, 1).saves[0][1]
    with pytest.raises(ValueError, match="hidden units"):
        run({**GOOD, "hidden": 32}, 2, checkpoint=state, checkpoint_step=1)


def test_a_pbt_clone_trains_on_from_another_configs_weights_with_its_own_optimiser_settings():
    state = run(GOOD, 3).saves[-1][1]
    clone = run({**GOOD, "lr": GOOD["lr"] * 0.8, "momentum": 0.5}, 6, checkpoint=state, checkpoint_step=3)
    assert [step for step, _ in clone.reports] == [4, 5, 6]
    assert clone.reports[-1][1]["accuracy"] > 0.9


@pytest.mark.parametrize("lr", [1e3, 1e6])
def test_a_huge_learning_rate_reports_nan_or_a_high_loss_without_raising(lr):
    trial = run({**GOOD, "lr": lr}, 5)
    assert [step for step, _ in trial.reports] == list(range(1, 6))
    final = trial.reports[-1][1]
    assert math.isnan(final["loss"]) or final["loss"] > 2.0
    assert 0.0 <= final["accuracy"] <= 0.5
    msgpack.packb(final)  # NaN is plain data too


def test_the_same_config_gives_the_same_reports_and_another_seed_does_not():
    first, second = run(GOOD, 3), run(dict(GOOD), 3)
    assert first.reports == second.reports
    assert first.saves == second.saves
    other = run({**GOOD, "seed": 1}, 3)
    assert other.reports != first.reports


def test_space_is_a_rung_space_and_its_samples_train():
    space = Space(digits_mlp.SPACE)
    assert set(space.params) == set(digits_mlp.DEFAULTS)
    rng = np.random.default_rng(0)
    for _ in range(4):
        config = space.sample(rng)
        trial = run(config, 1)
        assert len(trial.reports) == 1 and 0.0 <= trial.reports[0][1]["accuracy"] <= 1.0
