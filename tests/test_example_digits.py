"""The digits MLP example: it learns, it resumes exactly, it survives divergence, it is deterministic."""

import math
import signal
import time

import msgpack
import numpy as np
import pytest

pytest.importorskip("sklearn")

from examples import digits_mlp  # noqa: E402  (after the skip: it needs scikit-learn)
from rung import Space, loguniform  # noqa: E402
from rung.broker.broker import Broker  # noqa: E402
from rung.study import Study  # noqa: E402
from tests.runtime import stop, wait_for, worker  # noqa: E402
from tests.test_runtime import FAST, _records, counted_once  # noqa: E402

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


def test_the_bundled_file_read_directly_is_what_load_digits_gives():
    from sklearn.datasets import load_digits

    features, labels = digits_mlp._digits()
    digits = load_digits()
    assert np.array_equal(features, digits.data) and np.array_equal(labels, digits.target)


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


# ----------------------------------------------------------------------------------------------------
# The example for real: a broker, worker processes, one of them killed with SIGKILL mid-attempt.

UNTRAINED_LOSS = math.log(10)  # cross-entropy of a uniform guess over the 10 digits


def _fresh_attempt(broker, name):
    """(trial, attempt, checkpoint it resumed from) if the broker has worker `name` running an attempt
    that has reported nothing yet, else None."""
    with broker._lock:
        tid = broker.state.workers.get(name)
        if tid is None:
            return None
        trial = broker.state.trials[tid]
        if trial.worker != name or trial.status.name != "RUNNING" or trial.step is not None:
            return None
        return tid, trial.attempt, trial.checkpoint


def test_pbt_tunes_the_digits_lr_through_the_broker_and_survives_a_worker_killed_mid_attempt(tmp_path):
    """PBT over the example's learning rate, 4 members in 2-epoch segments up to 8 epochs, on 3 real
    workers; once a clone has happened, a worker in the middle of an attempt is killed with SIGKILL. The
    study finishes with every member trained to 8 epochs, nothing counted twice, the lost attempt
    retried elsewhere, every clone and resumption from stored weights, and a best validation loss far
    below an untrained network's."""
    study = Study("examples.digits_mlp:train",
                  {"lr": loguniform(1e-3, 1.0), "momentum": 0.9, "hidden": 64, "weight_decay": 1e-4,
                   "batch_size": 64, "activation": "relu"},
                  "pbt", {"population": 4, "ready": 2, "max_budget": 8, "quantile": 0.25,
                          "factors": [0.8, 1.2]},
                  metric="loss", mode="min", seed=0, name="digits-pbt")
    broker = Broker(study, tmp_path, **FAST).start()
    names = ["w0", "w1", "w2"]
    workers = {name: worker(broker.address, name) for name in names}
    try:
        def cloned_and_busy():
            with broker._lock:
                if not any(t.info.get("clones") for t in broker.state.trials):
                    return None
            for name in names:
                attempt = _fresh_attempt(broker, name)
                if attempt is not None:
                    return name, attempt
            return None

        def frozen_mid_attempt():
            # The broker's view lags the worker by a message or two: freeze the worker (SIGSTOP stops
            # every thread of it, so it sends nothing more), give the broker a few heartbeats to take
            # in what it had sent, and go on only if the attempt is still held and has still reported
            # nothing. Its child (~1 s, most of it importing scikit-learn) may train on meanwhile, but
            # nothing of it can reach the broker: the attempt is lost whole.
            name, attempt = wait_for(cloned_and_busy, 60, "a first clone and a fresh attempt")
            workers[name].send_signal(signal.SIGSTOP)
            time.sleep(5 * FAST["heartbeat"])  # well inside the liveness window
            if _fresh_attempt(broker, name) != attempt:
                workers[name].send_signal(signal.SIGCONT)
                return None
            return name, attempt

        victim, (lost_trial, lost_attempt, resumed_from) = wait_for(
            frozen_mid_attempt, 60, "a worker frozen mid-attempt")
        workers[victim].send_signal(signal.SIGKILL)
        assert broker.wait(60)
        for name, process in workers.items():
            if name != victim:
                assert process.wait(timeout=30) == 0  # told that the study is over
    finally:
        stop(*workers.values())

    state = broker.state
    assert state.finished
    assert [t.status.name for t in state.trials] == ["COMPLETED"] * 4, [t.reason for t in state.trials]
    assert all(t.budget == 8 and max(step for _, step, _ in t.history) == 8 for t in state.trials)
    counted_once(state)

    records = _records(tmp_path)
    # Fields: checkpoint event [kind, trial, attempt, step, key, time]; start and promote decisions
    # [kind, trial, attempt, worker, config, budget, checkpoint, bracket, rung, reason]; clone decisions
    # [kind, trial, attempt, worker, config, budget, checkpoint, source, reason].
    stored = {}  # checkpoint key -> (trial, step), in journal order
    resumed = {}  # (trial, attempt) -> step its checkpoint was taken at
    config = {}  # trial -> its configuration, as the decisions so far set it
    clones = []
    for event, decisions in records:
        if event[0] == "checkpoint":
            stored[event[4]] = (event[1], event[3])
        for d in decisions:
            if d[0] not in ("start", "promote", "clone"):
                continue
            if d[6] is not None:
                assert d[6] in stored, f"{d[0]} of trial {d[1]} resumes from a checkpoint never stored"
                resumed[(d[1], d[2])] = stored[d[6]][1]
            if d[0] == "clone":
                # The source's stored weights, the source's configuration with only the lr perturbed.
                source = config[d[7]]
                assert stored[d[6]][0] == d[7]
                lr, others = d[4]["lr"], {k: v for k, v in d[4].items() if k != "lr"}
                assert others == {k: v for k, v in source.items() if k != "lr"}
                assert lr in (pytest.approx(min(max(source["lr"] * f, 1e-3), 1.0)) for f in (0.8, 1.2))
                clones.append(d)
            config[d[1]] = d[4]
    assert clones
    # A resumed attempt trains on from its checkpoint's epoch, not from scratch.
    for (tid, attempt), step in resumed.items():
        steps = [s for a, s, _ in state.trials[tid].history if a == attempt]
        assert not steps or min(steps) == step + 1, (tid, attempt, step, steps)

    # The killed worker's attempt was lost whole and retried once, on another worker, from the
    # checkpoint the lost attempt had started from, through its whole segment.
    lost = [i for i, (event, _) in enumerate(records) if event[0] == "worker_lost" and event[1] == victim]
    assert len(lost) == 1
    retries = [d for _, ds in records[lost[0]:] for d in ds if d[0] in ("start", "promote", "clone")
               and (d[1], d[2]) == (lost_trial, lost_attempt + 1)]
    assert len(retries) == 1
    retry = retries[0]
    assert retry[0] == "start" and retry[3] != victim and retry[9].startswith("retry after")
    assert retry[6] == resumed_from
    history = state.trials[lost_trial].history
    assert not any(a == lost_attempt for a, _, _ in history)
    retried = [s for a, s, _ in history if a == lost_attempt + 1]
    assert retried and max(retried) == retry[5]

    # The weights carried over: the best validation loss is a real number far below a guess's (ln 10 =
    # 2.30). It measured 0.052 to 0.059 (members trained straight through reach 0.06 to 0.11).
    best = min(t.best for t in state.trials)
    assert math.isfinite(best) and best < 0.3 < UNTRAINED_LOSS
