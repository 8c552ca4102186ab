"""Trainables for the runtime tests: a learning curve over `x`, and the ways user code goes wrong."""

import json
import os
import signal
import time


def curve(trial):
    """loss = (x - 0.3)^2 + 1 / step, one step per `sleep` seconds, a checkpoint every step."""
    config = trial.config
    mode = config.get("mode", "ok")
    if mode == "raise":
        raise RuntimeError("the model diverged")
    if mode == "silent":
        return
    if mode == "hang":
        time.sleep(1000)
    if config.get("ignore_sigterm"):  # one that takes its whole stop grace, as a slow save would
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    start = 0
    if trial.checkpoint is not None:
        start = trial.checkpoint["step"]
        assert start == trial.checkpoint_step, (start, trial.checkpoint_step)
    for step in range(start + 1, int(trial.budget) + 1):
        time.sleep(config.get("sleep", 0.0))
        if "log" in config:  # who trained which step when: a test checks attempts never overlap
            with open(config["log"], "a") as log:
                print(json.dumps([trial.trial_id, trial.attempt, step, os.getpid(), time.time()]),
                      file=log)
        trial.report(step, loss=(config["x"] - 0.3) ** 2 + 1.0 / step)
        trial.save({"step": step}, step=step)


def flood(trial):
    """Reports every step up to the budget as fast as it can, with a large checkpoint halfway and a
    second, different one at the same step."""
    half = int(trial.budget) // 2
    for step in range(1, int(trial.budget) + 1):
        trial.report(step, loss=1.0 / step)
        if step == half:
            trial.save({"weights": bytes(range(256)) * (trial.config["kib"] * 4)}, step=step)
            trial.save({"weights": b"second"}, step=step)


def chatty(trial):
    """Prints `lines` numbered lines of `width` characters, on stdout and stderr in turn, reporting
    every 1000th; then raises if `fail` is set."""
    import sys

    config = trial.config
    for line in range(1, config["lines"] + 1):
        print(f"line {line} " + "x" * config.get("width", 10), file=sys.stdout if line % 2 else sys.stderr)
        if line % 1000 == 0 or line == config["lines"]:
            time.sleep(config.get("sleep", 0.0))
            trial.report(line, loss=1.0 / line)
    if config.get("fail"):
        raise ValueError(f"gave up after {config['lines']} lines")


def long_metric(trial):
    """Reports a metric whose name the wire refuses (past 128 characters), then its loss."""
    trial.report(1, **{"x" * 200: 1.0})
    trial.report(1, loss=1.0)


def many_metrics(trial):
    """Reports 256 metrics of 128-character names, none of them the study's, then sleeps."""
    trial.report(1, **{f"{n:03d}" + "m" * 125: 1.0 for n in range(256)})
    time.sleep(30)


def counter(trial):
    """Reports steps 1..budget as fast as it can, resuming after its checkpoint, and appends each
    step to the file `log` as it reports it."""
    start = trial.checkpoint["step"] if trial.checkpoint is not None else 0
    with open(trial.config["log"], "a") as log:
        for step in range(start + 1, int(trial.budget) + 1):
            trial.report(step, loss=1.0 / step)
            print(step, file=log, flush=True)
            if step % 1000 == 0:
                trial.save({"step": step}, step=step)
