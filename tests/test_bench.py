"""The benchmarks run (with tiny sizes): a benchmark that no longer runs measures nothing.

Their numbers are not checked here: speed is measured by running them, never asserted in tests.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).parents[1] / "bench"


@pytest.mark.parametrize("script, args", [
    ("train_speed.py", ["--hidden", "8", "--steps", "20", "--warmup", "10", "--device", "cpu"]),
    ("seeds_together.py", ["--seeds", "2", "--hidden", "8", "--steps", "10", "--warmup", "5", "--device", "cpu"]),
    ("threads.py", ["--busy", "0", "1", "--seconds", "0.5"]),
    ("threads.py", ["--work", "features", "--busy", "1", "--seconds", "0.5"]),
])
def test_a_benchmark_runs_and_prints_its_ratio(script, args):
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "x" in done.stdout.splitlines()[-1]  # the speed-up column


def test_unsure_vs_steps_extends_a_run_and_counts_its_digits(tmp_path):
    import os

    env = dict(os.environ, LABKIT_RUNS=str(tmp_path / "runs"), LABKIT_CACHE=str(tmp_path / "cache"))
    train = subprocess.run([sys.executable, "-m", "labkit.cli", "train", "--num_training_steps", "10",
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


def _course_protocol():
    import importlib.util

    spec = importlib.util.spec_from_file_location("course_protocol", BENCH / "course_protocol.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_course_protocol_fits_a_hand_made_table():
    bench = _course_protocol()
    course = {"a": 20.0, "b": 25.0, "c": 60.0}
    spread = {"a": 10.0, "b": 5.0, "c": 30.0}
    fit = bench.fit_to_course({"a": 10.0, "b": 20.0, "c": 30.0}, course, spread)
    assert fit["mae"] == pytest.approx((10 + 5 + 30) / 3)
    assert fit["mean_abs_z"] == pytest.approx(1.0)  # each error is exactly one course std
    assert fit["rho"] == pytest.approx(1.0) and fit["n_configs"] == 3  # same order as the course's
    assert bench.fit_to_course({"a": 3.0, "b": 2.0, "c": 1.0}, course, spread)["rho"] == pytest.approx(-1.0)
    fid_inf, k = bench.fit_bias([100, 200, 500], [30 + 900 / n for n in (100, 200, 500)])
    assert (fid_inf, k) == (pytest.approx(30.0), pytest.approx(900.0))
    assert bench.course_spread("dcgan_z16_h16", 0.2) == 14.3  # the report's std over 5 seeds
    assert bench.course_spread("no_batchnorm", 0.2) == pytest.approx(0.2 * 236.6)  # a single run: cv x its number


def test_course_protocol_runs_on_a_tiny_setting(tmp_path):
    """One configuration, one 10-step run, a few dozen images: every protocol gets a row."""
    import json
    import os

    env = dict(os.environ, LABKIT_RUNS=str(tmp_path / "runs"))
    out = tmp_path / "protocol.md"
    done = subprocess.run([sys.executable, str(BENCH / "course_protocol.py"), "--only", "dcgan_z16_h16", "--train",
                           "--steps", "10", "--seeds", "2022", "--real", "24", "--fake", "24", "--variant", "16",
                           "--counts", "8", "16", "24", "48", "--subsets", "3", "--cache", str(tmp_path / "cache"),
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    bench = _course_protocol()
    fit_rows = [line for line in out.read_text().split("## labkit's FID of each")[0].splitlines()
                if line.startswith("| ") and "N = " in line]
    assert len(fit_rows) == len(bench.PIPELINES) * 4  # one row per protocol: pipeline x N
    assert all("(extrapolated)" in row for row in fit_rows if "N = 48 " in row)  # more than was computed
    assert any(row.startswith("| labkit, N = 24 | ") for row in fit_rows)  # measured: 24 real and 24 generated
    results = json.loads((tmp_path / "cache" / "results.json").read_text())
    small = np.mean([results["table"][f"{p.name} N=8"]["dcgan_z16_h16"] for p in bench.PIPELINES])
    large = np.mean([results["table"][f"{p.name} N=16"]["dcgan_z16_h16"] for p in bench.PIPELINES])
    assert small > large  # FID is biased upwards at small N


def test_reference_results_keeps_each_pipeline_s_runs_and_tables_apart():
    """--pipeline resize writes its own *_resize tables and says its pipeline; pad keeps the shipped ones."""
    import importlib.util

    from labkit.reference import INCEPTION_PROTOCOL, REFERENCE_CSV

    spec = importlib.util.spec_from_file_location("reference_results", BENCH / "reference_results.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.outputs("pad") == (REFERENCE_CSV, BENCH / "reference_results.md")
    assert [p.name for p in bench.outputs("resize")] == ["reference_results_resize.csv", "reference_results_resize.md"]
    assert bench.protocol(INCEPTION_PROTOCOL, "pad") == INCEPTION_PROTOCOL  # the shipped CSV's column as it was
    assert bench.protocol(INCEPTION_PROTOCOL, "resize").endswith("resize pipeline (runs and reals)")
    # The course's discriminator (no biases) has its own tables, and says so in every protocol.
    assert [p.name for p in bench.outputs("resize", discriminator_bias=False)] == \
        ["reference_results_resize_dnobias.csv", "reference_results_resize_dnobias.md"]
    assert bench.protocol(INCEPTION_PROTOCOL, "resize_dnobias").endswith(
        "resize pipeline (runs and reals), D without bias (the course's)")


def test_reference_results_fits_a_table_to_the_courses_beside_the_shipped_pad_table():
    """The fit the README's verdict quotes: on the shipped table, the numbers bench/course_protocol.md gives."""
    import importlib.util

    from labkit.reference import COURSE, REFERENCE_CSV, load

    spec = importlib.util.spec_from_file_location("reference_results", BENCH / "reference_results.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = list(load(REFERENCE_CSV).values())
    lines = bench.fit_lines(rows, "pad")
    assert "| pad | 75.4 | 0.79 | 4.1 | 1 of 8 |" in lines, lines  # course_protocol.md: MAE 75.4, rho 0.79
    # A table of three configurations, one of them 1 above the course's number: within the course's spread.
    resized = [dict(r, fid_mean=COURSE[r["experiment"]].mean + 1) if r["experiment"] == "dcgan_z16_h16" else r
               for r in rows if r["experiment"] in ("dcgan_z16_h16", "mlp_z16", "vae_z3")]
    lines = bench.fit_lines(resized, "resize")
    assert any(line.startswith("| resize |") and line.endswith("| 1 of 3 |") for line in lines), lines
    assert any(line.startswith("| pad (labkit's shipped table) |") and line.endswith("| 0 of 3 |") for line in lines)


def test_course_pieces_are_the_courses_networks_and_train_in_labkits_loop(tmp_path, monkeypatch):
    """bench/course_pieces.py's copies of the course's code: its generator has the course's 57,937 parameters at
    16/16, its discriminator no bias at all, and both train through GANCode as a student's code does."""
    import importlib.util

    from labkit.gan import GANCode, train

    spec = importlib.util.spec_from_file_location("course_pieces", BENCH / "course_pieces.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    generator, discriminator = bench.CourseGenerator(16, 16), bench.CourseDiscriminator(16)
    assert sum(p.numel() for p in generator.parameters()) == 57_937
    assert all(m.bias is None for m in discriminator.modules() if type(m).__name__ == "Conv2d")
    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path))
    run = train(code=GANCode(**bench.VARIANTS["course_all"]), pipeline="resize", seed=0, num_training_steps=3,
                saving_steps=3, generator_hidden_dim=8, discriminator_hidden_dim=8, progress=False)
    assert "_resize_student-" in run.path.name and run.step == 3  # the course's pipeline, the pieces' own run


def test_the_discriminator_bias_setting_builds_the_courses_discriminator(tmp_path, monkeypatch):
    """discriminator_bias=False (issue 30) is the course's GAN.py discriminator, weight for weight: the same
    parameters in the same shapes, and with the same weights the same outputs; its runs train and are named so."""
    import importlib.util

    from labkit.gan import build_models, train
    from labkit.runs.config import TrainConfig

    spec = importlib.util.spec_from_file_location("course_pieces", BENCH / "course_pieces.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    course = bench.CourseDiscriminator(16)
    _, ours = build_models(TrainConfig(discriminator_bias=False))
    assert [p.shape for p in ours.parameters()] == [p.shape for p in course.parameters()]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in build_models(TrainConfig())[1]
                                                           .parameters()) - (16 + 32 + 64 + 1)  # no conv bias
    with torch.no_grad():
        for mine, theirs in zip(ours.parameters(), course.parameters()):
            mine.copy_(theirs)
    images = torch.rand(8, 1, 32, 32) * 2 - 1
    course.eval(), ours.eval()
    assert torch.allclose(ours(images), course(images)) and torch.allclose(ours.logits(images), course.logits(images))
    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path))
    run = train(discriminator_bias=False, pipeline="resize", seed=0, num_training_steps=3, saving_steps=3,
                generator_hidden_dim=8, discriminator_hidden_dim=8, progress=False)
    assert run.path.name == "dcgan_z16_g8_d8_steps3_seed0_dnobias_resize" and run.step == 3
    assert json.loads((run.path / "config.json").read_text())["discriminator_bias"] is False
    default = train(seed=0, num_training_steps=3, saving_steps=3, generator_hidden_dim=8, discriminator_hidden_dim=8,
                    progress=False)
    assert "discriminator_bias" not in json.loads((default.path / "config.json").read_text())  # old files unchanged
