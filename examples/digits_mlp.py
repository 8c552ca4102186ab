"""A real, small training task for rung: a one-hidden-layer MLP on scikit-learn's digits, in numpy.

The task. scikit-learn's bundled digits data set (`sklearn.datasets.load_digits`: 1797 8x8 images of
handwritten digits, 64 features with values 0..16, 10 classes; it ships inside the package, so nothing is
downloaded) is scaled to [0, 1] and split once, with a fixed seed that does not depend on the
configuration, into 1397 training and 400 validation samples. A multilayer perceptron with one hidden
layer (ReLU or tanh) is trained with softmax cross-entropy and minibatch SGD with momentum and weight
decay, all in float32 numpy. The budget is the number of epochs.

The hyperparameters (`SPACE`, built with rung's helpers):

    lr            learning rate, log-uniform in [1e-3, 1]
    hidden        hidden units, integer in [16, 256] on a log scale
    momentum      heavy-ball momentum, uniform in [0, 0.99]
    weight_decay  L2 penalty on the weights (not the biases), log-uniform in [1e-6, 1e-2]
    batch_size    16, 32, 64 or 128
    activation    "relu" (He initialisation) or "tanh" (Xavier initialisation)

A configuration may leave any of them out (`DEFAULTS` fills them in) and may add an int `seed`.

What it reports. After every epoch `trial.report(epoch, loss=..., accuracy=..., train_loss=...)`:
`loss` is the validation cross-entropy (minimise it), `accuracy` the validation accuracy, `train_loss`
the mean training cross-entropy over the epoch's minibatches. A run that diverges (a huge learning rate)
reports NaN losses, and an accuracy that counts non-finite predictions as wrong, instead of raising;
rung ranks NaN worst and never promotes it.

Checkpoints and resumption. After every epoch `trial.save(state, step=epoch)` stores the weights, the
momentum buffers and the epoch as plain msgpack-able data (arrays as float32 bytes with their shapes).
A promoted trial gets that state back as `trial.checkpoint` and trains on from it to its new budget.
Everything random is derived from a stable hash of the configuration: the initial weights from
(seed, 0) and each epoch's shuffle from (seed, 1, epoch), so no generator state needs to be
saved, the same configuration always gives the same run, and resuming at epoch k gives exactly, bit for
bit, what training straight through gives.

Running it with rung. The trainable is `examples.digits_mlp:train` and the search space is
`examples.digits_mlp:SPACE`; a study runner that takes the two is not written yet. Metric "loss" with
mode "min" (or "accuracy" with "max"); budgets of 1 to ~30 epochs are sensible (the defaults pass 95%
validation accuracy by epoch 3 and reach ~98% by epoch 20; a bad learning rate stays near 10%).
`examples` is not an installed package, so run workers from the repository root (or put it on
PYTHONPATH). `python -m examples.digits_mlp [--epochs 20 --lr 0.05 ...]` trains one configuration and
prints its curve and the time per epoch.

Speed. The matrices are small (at most 128x64 by 64x256), so one epoch takes about 1 to 7 ms on one
core: 1-3 ms with batch 128, 3-7 ms with batch 16, where Python overhead per minibatch dominates.
Multithreaded BLAS only hurts at these sizes (on 2 cores it made epochs 1.3x to 10x slower), so `train`
holds the BLAS thread pool to one thread while it runs (with threadpoolctl, which scikit-learn brings;
the limit is lifted when `train` returns). One thread also keeps the floating-point results from depending
on how many cores a worker has. Several workers on one machine then use one core each.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import math
import os
from typing import Any

import numpy as np

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - scikit-learn depends on threadpoolctl
    ThreadpoolController = None

from rung import choice, loguniform, randint, uniform

SPACE = {
    "lr": loguniform(1e-3, 1.0),
    "hidden": randint(16, 256, log=True),
    "momentum": uniform(0.0, 0.99),
    "weight_decay": loguniform(1e-6, 1e-2),
    "batch_size": choice([16, 32, 64, 128]),
    "activation": choice(["relu", "tanh"]),
}

DEFAULTS = {
    "lr": 0.05,
    "hidden": 64,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "batch_size": 32,
    "activation": "relu",
}

N_TRAIN = 1397
N_VALIDATION = 400
N_CLASSES = 10
SPLIT_SEED = 20240611  # fixed, independent of any configuration

_DTYPE = np.float32
_PARAM_NAMES = ("w1", "b1", "w2", "b2")
_STREAM_INIT = 0
_STREAM_SHUFFLE = 1


@functools.lru_cache(maxsize=1)
def _threadpool_controller():
    return ThreadpoolController() if ThreadpoolController is not None else None


def _one_blas_thread():
    """A context that holds BLAS to one thread (a no-op without threadpoolctl)."""
    controller = _threadpool_controller()
    return controller.limit(limits=1, user_api="blas") if controller is not None else contextlib.nullcontext()


@functools.lru_cache(maxsize=1)
def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_validation, y_validation): float32 features in [0, 1], int64 labels.

    The split is the same on every call and in every process. The arrays are read-only and shared.
    """
    features, labels = _digits()
    x = (np.asarray(features, dtype=np.float64) / 16.0).astype(_DTYPE)
    y = np.asarray(labels, dtype=np.int64)
    assert x.shape == (N_TRAIN + N_VALIDATION, 64), x.shape
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    train, validation = order[:N_TRAIN], order[N_TRAIN:]
    arrays = (
        np.ascontiguousarray(x[train]), y[train].copy(),
        np.ascontiguousarray(x[validation]), y[validation].copy(),
    )
    for array in arrays:
        array.setflags(write=False)
    return arrays


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits' features and labels, as `sklearn.datasets.load_digits` gives them. Read straight from
    the file scikit-learn bundles (its CSV of 64 features and the label per row), found without
    importing scikit-learn: importing `sklearn.datasets` costs about 0.8 s, which every trial process
    would pay at every dispatch. `load_digits` itself where the file is not where it is looked for."""
    spec = importlib.util.find_spec("sklearn")
    folders = spec.submodule_search_locations if spec is not None else None
    for folder in folders or []:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.exists(path):
            data = np.loadtxt(path, delimiter=",")
            return data[:, :-1], data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data, digits.target


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration with defaults filled in and each value checked and made a plain Python value."""
    unknown = set(config) - set(DEFAULTS) - {"seed"}
    if unknown:
        raise ValueError(f"unknown hyperparameters {sorted(unknown)}; known: {sorted(DEFAULTS)} and seed")
    merged = {**DEFAULTS, **config}
    resolved = {
        "lr": float(merged["lr"]),
        "hidden": int(merged["hidden"]),
        "momentum": float(merged["momentum"]),
        "weight_decay": float(merged["weight_decay"]),
        "batch_size": int(merged["batch_size"]),
        "activation": str(merged["activation"]),
    }
    if "seed" in merged:
        resolved["seed"] = int(merged["seed"])
    if resolved["activation"] not in ("relu", "tanh"):
        raise ValueError(f"activation is {resolved['activation']!r}, but must be 'relu' or 'tanh'")
    if resolved["hidden"] < 1 or resolved["batch_size"] < 1:
        raise ValueError("hidden and batch_size must be positive")
    if not (resolved["lr"] > 0 and 0 <= resolved["momentum"] < 1 and resolved["weight_decay"] >= 0):
        raise ValueError("lr must be > 0, momentum in [0, 1) and weight_decay >= 0")
    return resolved


def config_seed(config: dict[str, Any]) -> int:
    """A stable 63-bit seed from the resolved configuration (not Python's salted `hash`)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def init_params(config: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, _STREAM_INIT])
    n_in, n_hidden = 64, config["hidden"]
    if config["activation"] == "relu":
        std1 = math.sqrt(2.0 / n_in)  # He
    else:
        std1 = math.sqrt(2.0 / (n_in + n_hidden))  # Xavier (Glorot normal)
    std2 = math.sqrt(2.0 / (n_hidden + N_CLASSES))  # Xavier for the softmax layer
    return {
        "w1": (rng.standard_normal((n_in, n_hidden)) * std1).astype(_DTYPE),
        "b1": np.zeros(n_hidden, dtype=_DTYPE),
        "w2": (rng.standard_normal((n_hidden, N_CLASSES)) * std2).astype(_DTYPE),
        "b2": np.zeros(N_CLASSES, dtype=_DTYPE),
    }


def _forward(params: dict[str, np.ndarray], x: np.ndarray, relu: bool):
    pre = x @ params["w1"] + params["b1"]
    hidden = np.maximum(pre, 0) if relu else np.tanh(pre)
    logits = hidden @ params["w2"] + params["b2"]
    return pre, hidden, logits


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _finite_or_nan(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.nan


def evaluate(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, relu: bool) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on (x, y); NaN loss, and non-finite rows counted wrong, if diverged."""
    with np.errstate(all="ignore"):
        _, _, logits = _forward(params, x, relu)
        log_probs = _log_softmax(logits)
        loss = -log_probs[np.arange(len(y)), y].mean(dtype=np.float64)
        correct = (logits.argmax(axis=1) == y) & np.isfinite(logits).all(axis=1)
    return _finite_or_nan(loss), float(correct.mean())


def train_epoch(params, velocity, x, y, config, seed: int, epoch: int) -> float:
    """One epoch of minibatch SGD with momentum, in place; returns the mean minibatch training loss.

    The epoch's shuffle is drawn from (seed, epoch) alone, so epoch `epoch` is the same whether the run
    went straight through or resumed from a checkpoint.
    """
    relu = config["activation"] == "relu"
    lr = _DTYPE(config["lr"])
    momentum = _DTYPE(config["momentum"])
    decay = _DTYPE(config["weight_decay"])
    batch = config["batch_size"]
    order = np.random.default_rng([seed, _STREAM_SHUFFLE, epoch]).permutation(len(x))
    eye = np.eye(N_CLASSES, dtype=_DTYPE)
    w1, b1, w2, b2 = (params[name] for name in _PARAM_NAMES)
    v_w1, v_b1, v_w2, v_b2 = (velocity[name] for name in _PARAM_NAMES)
    total, count = 0.0, 0
    with np.errstate(all="ignore"):
        for start in range(0, len(x), batch):
            index = order[start:start + batch]
            xb, yb = x[index], y[index]
            n = len(index)
            pre, hidden, logits = _forward(params, xb, relu)
            log_probs = _log_softmax(logits)
            total += -float(log_probs[np.arange(n), yb].sum(dtype=np.float64))
            count += n
            # d(mean cross-entropy)/d(logits) = (softmax - onehot) / n
            d_logits = (np.exp(log_probs) - eye[yb]) / _DTYPE(n)
            g_w2 = hidden.T @ d_logits + decay * w2
            g_b2 = d_logits.sum(axis=0)
            d_hidden = d_logits @ w2.T
            d_pre = d_hidden * (pre > 0) if relu else d_hidden * (1 - hidden * hidden)
            g_w1 = xb.T @ d_pre + decay * w1
            g_b1 = d_pre.sum(axis=0)
            # PyTorch-style momentum: v = mu v + g; w -= lr v (in place, so params and velocity update)
            for v, g, w in ((v_w1, g_w1, w1), (v_b1, g_b1, b1), (v_w2, g_w2, w2), (v_b2, g_b2, b2)):
                v *= momentum
                v += g
                w -= lr * v
    return _finite_or_nan(total / count)


def _pack_arrays(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    return {
        name: {"shape": list(array.shape), "dtype": "float32", "data": array.astype(_DTYPE).tobytes()}
        for name, array in arrays.items()
    }


def _unpack_arrays(packed: dict[str, Any]) -> dict[str, np.ndarray]:
    arrays = {}
    for name in _PARAM_NAMES:
        entry = packed[name]
        array = np.frombuffer(bytes(entry["data"]), dtype=np.dtype(entry["dtype"]))
        arrays[name] = array.reshape(tuple(entry["shape"])).astype(_DTYPE)  # a writable copy
    return arrays


def checkpoint_state(params, velocity, epoch: int, seed: int) -> dict[str, Any]:
    """Plain msgpack-able data: the epoch, the seed, and weights and momentum buffers as float32 bytes."""
    return {
        "format": 1,
        "epoch": int(epoch),
        "seed": int(seed),
        "params": _pack_arrays(params),
        "velocity": _pack_arrays(velocity),
    }


def restore_state(state: dict[str, Any], config: dict[str, Any]):
    """(params, velocity, epoch) from `checkpoint_state`'s data, checked against the configuration."""
    if state.get("format") != 1:
        raise ValueError(f"unknown checkpoint format {state.get('format')!r}")
    # Another configuration's checkpoint is fine (PBT clones weights into new hyperparameters);
    # only the architecture must match.
    params, velocity = _unpack_arrays(state["params"]), _unpack_arrays(state["velocity"])
    if params["w1"].shape != (64, config["hidden"]):
        raise ValueError(f"checkpoint has {params['w1'].shape[1]} hidden units, config {config['hidden']}")
    return params, velocity, int(state["epoch"])


def train(trial) -> dict[str, float] | None:
    """The trainable: train `trial.config` from its checkpoint (or from scratch) up to `trial.budget` epochs.

    Reports after every epoch and saves a checkpoint after every epoch; returns the last metrics
    reported (None if there was no epoch left to train).
    """
    config = resolve_config(dict(trial.config))
    seed = config_seed(config)
    target = int(math.floor(float(trial.budget)))
    x_train, y_train, x_val, y_val = load_data()

    if trial.checkpoint is not None:
        params, velocity, epoch = restore_state(trial.checkpoint, config)
        step = getattr(trial, "checkpoint_step", epoch)
        if step not in (None, epoch):
            raise ValueError(f"checkpoint_step is {step}, but the checkpoint was saved at epoch {epoch}")
    else:
        params = init_params(config, seed)
        velocity = {name: np.zeros_like(array) for name, array in params.items()}
        epoch = 0

    relu = config["activation"] == "relu"
    metrics = None
    with _one_blas_thread():
        while epoch < target:
            epoch += 1
            if all(np.isfinite(array).all() for array in params.values()):
                train_loss = train_epoch(params, velocity, x_train, y_train, config, seed, epoch)
            else:
                train_loss = math.nan  # diverged: nothing left to learn, keep reporting cheaply
            loss, accuracy = evaluate(params, x_val, y_val, relu)
            metrics = {"loss": loss, "accuracy": accuracy, "train_loss": train_loss}
            trial.report(epoch, **metrics)
            trial.save(checkpoint_state(params, velocity, epoch, seed), step=epoch)
    return metrics


class LocalTrial:
    """A minimal trial context for running `train` by hand: keeps reports and the last checkpoint."""

    def __init__(self, config, budget, checkpoint=None, checkpoint_step=0):
        self.config, self.budget = config, budget
        self.checkpoint, self.checkpoint_step = checkpoint, checkpoint_step
        self.reports: list[tuple[int, dict[str, float]]] = []
        self.saved: tuple[int, Any] | None = None

    def report(self, step, **metrics):
        self.reports.append((step, metrics))

    def save(self, state, step=None):
        self.saved = (step, state)


def _main() -> None:
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Train one digits MLP configuration and time it.")
    parser.add_argument("--epochs", type=int, default=20)
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    config = {name: getattr(args, name) for name in DEFAULTS}
    load_data()  # keep the one-off load out of the timing
    trial = LocalTrial(config, args.epochs)
    started = time.perf_counter()
    train(trial)
    elapsed = time.perf_counter() - started
    for step, metrics in trial.reports:
        print(f"epoch {step:3d}  " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    print(f"{elapsed / args.epochs * 1000:.1f} ms per epoch (including evaluation and checkpointing)")


if __name__ == "__main__":
    _main()
