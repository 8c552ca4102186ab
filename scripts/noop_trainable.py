"""Trainables that do no work, for `bench_broker.py`: one report at step 1, then they return.

Imported by the trial child as "scripts.noop_trainable:train" (or `train_then_linger`), so the worker
needs the repository root on its PYTHONPATH (bench_broker.py sets it). No checkpoint is saved: an
upload would add its own cost to the dispatch being measured.
"""

import time

LINGER_S = 0.1  # well beyond an interpreter's start-up (about 40 ms on the 2-core machine)


def train(trial):
    trial.report(1, loss=float(trial.config.get("x", 0.0)))


def train_then_linger(trial):
    """As `train`, then stay LINGER_S: the time a worker has to start the next attempt's interpreter."""
    train(trial)
    time.sleep(LINGER_S)
