"""The benchmarks run (with tiny sizes): a benchmark that no longer runs measures nothing.

Their numbers are not checked here: speed is measured by running them, never asserted in tests.
"""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "bench"


@pytest.mark.parametrize("script, args", [
    ("train_speed.py", ["--hidden", "8", "--steps", "20", "--warmup", "10", "--device", "cpu"]),
    ("seeds_together.py", ["--seeds", "2", "--hidden", "8", "--steps", "10", "--warmup", "5", "--device", "cpu"]),
])
def test_a_benchmark_runs_and_prints_its_ratio(script, args):
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "x" in done.stdout.splitlines()[-1]  # the speed-up column
