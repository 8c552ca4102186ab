"""A trainable that does no work, for `bench_broker.py`: one report at step 1, then it returns.

Imported by the trial child as "scripts.noop_trainable:train", so the worker needs the repository root
on its PYTHONPATH (bench_broker.py sets it). No checkpoint is saved: an upload would add its own cost
to the dispatch being measured.
"""


def train(trial):
    trial.report(1, loss=float(trial.config.get("x", 0.0)))
