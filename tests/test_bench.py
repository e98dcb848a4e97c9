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


def test_unsure_vs_steps_extends_a_run_and_counts_its_digits(tmp_path):
    import os

    env = dict(os.environ, LABKIT_RUNS=str(tmp_path / "runs"), LABKIT_CACHE=str(tmp_path / "cache"))
    train = subprocess.run([sys.executable, "-m", "labkit.machinery.cli", "train", "--num_training_steps", "10",
                            "--generator_hidden_dim", "8", "--discriminator_hidden_dim", "8", "--no_cuda", "--quiet"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert train.returncode == 0, train.stderr
    run = tmp_path / "runs" / "dcgan_z16_g8_d8_steps10_seed2022"
    done = subprocess.run([sys.executable, str(BENCH / "unsure_vs_steps.py"), "--run", str(run), "--steps", "10", "20",
                           "--samples", "50"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("| 20 | ")  # one table row per length
    assert (tmp_path / "runs" / "dcgan_z16_g8_d8_steps20_seed2022").is_dir()  # the extension is a new run


def test_unsure_gap_reproduces_labkits_run_and_reports_each_candidate(tmp_path):
    """The script refuses to report if its own loop no longer trains exactly labkit's run."""
    import os

    env = dict(os.environ, LABKIT_RUNS=str(tmp_path / "runs"))
    done = subprocess.run([sys.executable, str(BENCH / "unsure_gap.py"), "--num_training_steps", "20",
                           "--hidden_dim", "8", "--samples", "50", "--grid", str(tmp_path / "grid.png")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")][2:]
    assert [row.split(" | ")[0] for row in rows] == ["| standard", "| batchnorm", "| ema", "| ema", "| init",
                                                     "| course", "| threshold", "| threshold"]
    assert "reproduced labkit's run bit for bit" in done.stdout
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_widget_speed_times_both_widgets_beside_their_old_versions(small_gan, tmp_path):
    import os

    env = dict(os.environ, LABKIT_RUNS=str(tmp_path / "runs"), MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, str(BENCH / "widget_speed.py"), "--moves", "2", "--confident", "0",
                           "--run", str(small_gan.path)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()[-5:]
    assert [row.split(" | ")[0] for row in rows] == ["| smoothing (notebook 2)"] * 3 + ["| morph (notebook 5)"] * 2
    assert all(row.endswith("x |") for row in rows)  # the speed-up column
