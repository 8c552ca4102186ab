"""rung.tune in one call, and the import direction of the public face."""

import subprocess
import sys

from rung import tune, uniform
from tests.runtime import ROOT
from tests.trainables.study import curve


def test_tune_returns_the_best_trial_and_a_table_of_all(tmp_path):
    result = tune(curve, {"x": uniform(0.0, 1.0)}, "asha", workers=2, directory=tmp_path,
                  min_budget=1, max_budget=3, eta=3, max_trials=6, progress=False)
    assert result.finished and result.reason.startswith("max_trials (6) reached")
    assert len(result.trials) == 6
    assert result.best == result.trials[0]
    assert result.best["best"] == min(r["best"] for r in result.trials)
    # Called again, the study resumes from its journal: it is already over, nothing reruns.
    again = tune("tests.trainables.study:curve", {"x": uniform(0.0, 1.0)}, "asha", workers=1,
                 directory=tmp_path, min_budget=1, max_budget=3, eta=3, max_trials=6, progress=False)
    assert again.trials == result.trials


def test_importing_the_protocol_or_the_algorithms_never_pulls_the_runtime_in():
    code = ("import sys, rung, rung.protocol, rung.algorithms; "
            "print(sorted(m for m in sys.modules if m.startswith(('rung.broker', 'rung.worker', 'zmq'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_a_trial_process_imports_neither_numpy_nor_the_algorithms():
    # Each attempt starts a fresh interpreter that imports rung.worker.child: every import is paid
    # per trial, so the child must stay free of numpy, scipy and the algorithms.
    code = ("import sys, rung.worker.child; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'scipy', 'zmq') "
            "or m.startswith('rung.algorithms')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
