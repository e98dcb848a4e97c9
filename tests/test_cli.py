"""The `labkit` command end to end, as a student runs it, in a subprocess."""

import subprocess
import sys

import pytest

TINY = ["--generator_hidden_dim", "8", "--discriminator_hidden_dim", "8", "--no_cuda", "--quiet"]


def labkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "labkit.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_train_then_resume_then_sample(tmp_path):
    out = tmp_path / "run"
    done = labkit("train", "--num_training_steps", 20, "--saving_steps", 10, "--out", out, *TINY)
    assert done.returncode == 0, done.stderr
    assert (out / "checkpoints" / "step-000020.pt").exists()
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 2  # header + steps 10, 20
    again = labkit("train", "--num_training_steps", 20, "--saving_steps", 10, "--out", out, *TINY[:-1])
    assert again.returncode == 0 and again.stdout.startswith(f"labkit: found the finished run {out} (step 20)")
    more = labkit("extend", "--run", out, "--num_training_steps", 30, "--quiet")
    assert more.returncode == 0, more.stderr
    out = tmp_path / "dcgan_z16_g8_d8_steps30_seed2022"  # the extended run, beside the first
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000020.pt", "step-000030.pt"]
    sample = labkit("sample", "--run", out, "--count", 16, "--nrow", 4)
    assert sample.returncode == 0, sample.stderr
    png = sample.stdout.strip()
    assert png.endswith("sample-step-000030-seed0.png") and open(png, "rb").read(4) == b"\x89PNG"


def test_default_run_folder_is_under_runs(tmp_path):
    done = labkit("train", "--num_training_steps", 10, *TINY, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs" / "dcgan_z16_g8_d8_steps10_seed2022" / "config.json").exists()


def run_main(capsys, *args):
    """labkit's entry point in this process: (exit status, stderr lines)."""
    from labkit.cli import main

    status = main([str(a) for a in args])
    return status, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("args, message", [
    (["train", "--latent_dim", "0"], "latent_dim must be a whole number from 1 to 4,096"),
    (["train", "--num_training_steps", "-5"], "num_training_steps must be a whole number from 1"),
    (["train", "--learning_rate", "-1"], "learning_rate must be a positive number"),
    (["sample", "--run", "no/such/run"], "no run folder at no/such/run"),
])
def test_bad_values_end_with_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    status, err = run_main(capsys, *args)
    assert status == 2 and len(err) == 1
    assert err[0].startswith("labkit: error: ") and message in err[0]
    assert not (tmp_path / "runs").exists()


def test_corrupt_checkpoint_is_reported_and_left_alone(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(capsys, "train", "--num_training_steps", 10, "--out", out, *TINY)[0] == 0
    ckpt = out / "checkpoints" / "step-000010.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:500])  # as if the disk had filled up mid-copy
    before = ckpt.read_bytes()
    for args in (["train", "--num_training_steps", 10, "--out", out, *TINY], ["sample", "--run", out]):
        status, err = run_main(capsys, *args)
        assert status == 2 and len(err) == 1 and "truncated or corrupt" in err[0]
    assert ckpt.read_bytes() == before


def test_other_settings_in_an_existing_run_folder_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(capsys, "train", "--num_training_steps", 10, "--out", out, *TINY)[0] == 0
    history = (out / "history.csv").read_text()
    status, err = run_main(capsys, "train", "--num_training_steps", 10, "--latent_dim", 32, "--out", out, *TINY)
    assert status == 2 and len(err) == 1 and "latent_dim=16 there vs 32 now" in err[0]
    assert (out / "history.csv").read_text() == history


def test_fid_of_a_run_prints_a_labelled_number(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert run_main(capsys, "train", "--num_training_steps", 10, "--out", out, *TINY)[0] == 0
    from labkit.cli import main

    assert main(["fid", "--run", str(out), "--count", "200", "--backbone", "mnist", "--quiet"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{out} (step 10): MNIST-FID (pad, 200 real vs 200 generated): ")
    assert float(line.rsplit(": ", 1)[1]) > 0


def test_pipeline_flag_names_the_run_and_fid_measures_against_its_own_pipeline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert run_main(capsys, "train", "--num_training_steps", 10, "--pipeline", "resize", *TINY)[0] == 0
    out = tmp_path / "runs" / "dcgan_z16_g8_d8_steps10_seed2022_resize"
    assert '"pipeline": "resize"' in (out / "config.json").read_text()
    from labkit.cli import main

    lines = {}
    for flags in ([], ["--pipeline", "pad"]):
        assert main(["fid", "--run", str(out), "--count", "100", "--backbone", "mnist", "--quiet", *flags]) == 0
        lines[tuple(flags)] = capsys.readouterr().out.strip()
    assert "MNIST-FID (resize, 100 real vs 100 generated): " in lines[()]  # the run's own pipeline
    assert "MNIST-FID (pad, 100 real vs 100 generated): " in lines[("--pipeline", "pad")]
    status, err = run_main(capsys, "train", "--pipeline", "crop", *TINY)
    assert status == 2 and len(err) == 1 and "invalid choice: 'crop'" in err[0]
