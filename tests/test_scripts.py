"""The benchmarks keep running: each algorithm benchmark in --quick mode prints a table and writes JSON."""

import json
import subprocess
import sys

import pytest

from tests.runtime import ROOT, environment


@pytest.mark.parametrize("script", ["bench_decisions", "bench_simulator", "bench_speedup"])
def test_a_benchmark_runs_quick_and_writes_its_json(script, tmp_path):
    out = tmp_path / f"{script}.json"
    run = subprocess.run([sys.executable, f"scripts/{script}.py", "--quick", "--out", str(out)],
                         cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "---" in run.stdout  # a table was printed
    assert json.loads(out.read_text())
