"""Python function trainables, each one behaviour the attempt runner must handle."""

import os
import signal
import subprocess
import sys
import time


def counts(trial):
    """Counts one per step up to the budget, carrying the count over in its checkpoints."""
    counter = trial.checkpoint["counter"] if trial.checkpoint is not None else 0
    for step in range(int(trial.checkpoint_step) + 1, int(trial.budget) + 1):
        counter += 1
        trial.report(step, counter=counter, loss=1 / step)
        trial.save({"counter": counter, "blob": b"\x00\x01", "nested": [1.5, None, True, "x"]})


def raises(trial):
    trial.report(1, loss=1.0)
    return 1 / 0


def returns(trial):
    pass


def exits_3(trial):
    os._exit(3)


def reports_env(trial):
    gate = trial.config.get("gate")  # a file to wait for, so that a test can hold the study open
    deadline = time.monotonic() + 60
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    trial.report(1, cuda=float(os.environ["CUDA_VISIBLE_DEVICES"]))


def ignores_sigterm(trial):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    trial.report(0, ready=1)  # only now may the test stop it: the handler is in place
    time.sleep(1000)


def spawns_sleep(trial):
    sleeper = subprocess.Popen(["sleep", "1000"])
    trial.report(0, pid=sleeper.pid)
    time.sleep(1000)


def forks_and_returns(trial):
    # Like a data loader's worker processes: a fork holds a copy of every descriptor, the channel to
    # the worker included, so the pipe does not close when this function's process exits.
    pid = os.fork()
    if pid == 0:
        time.sleep(1000)
        os._exit(0)
    trial.report(0, pid=pid)


def leaves_sleep_behind(trial):
    sleeper = subprocess.Popen(["sleep", "1000"])
    trial.report(0, pid=sleeper.pid)


def prints(trial):
    print("text on stdout " * 1000)
    sys.stdout.flush()
    sys.stdout.buffer.write(b"\x00\x00\x00\x05\x81\xa1t\xa4done\n")  # looks like a frame, is not one
    sys.stdout.buffer.flush()
    trial.report(1, loss=0.5)
    print("text on stderr", file=sys.stderr)
    trial.report(2, loss=float("nan"))


def saves_array(trial):
    import numpy as np

    trial.report(1, loss=0.5)
    trial.save({"weights": np.zeros(3)})


def reports_then_waits(trial):
    trial.report(1, loss=0.5)
    time.sleep(1000)
