"""Fault injection: every bad input gets one clear line, and nothing a user had is lost or corrupted.

Each test injects one fault (a bad value, a kill during a write, a second
process on the same run, a read-only folder, a full disk, a damaged file)
and asserts the exit status, the one-line message on stderr, and that every
file the user had is unchanged. The README's table "What labkit promises
when things go wrong" lists these promises and the tests that hold them.

Tests run as root in CI, where file permissions do not stop writes, so a
read-only folder is injected: every way Python writes a file (open, os.open,
os.mkdir, os.replace, ...) fails with EACCES below that folder.
"""

import builtins
import errno
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from labkit.machinery.checkpoints import checkpoints, load_checkpoint
from labkit.machinery.cli import main

TINY = ["--generator_hidden_dim", "8", "--discriminator_hidden_dim", "8", "--no_cuda", "--quiet"]


def run(capsys, *args):
    """labkit's entry point in this process: (exit status, stderr lines)."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, [line for line in captured.err.splitlines() if line.strip()]


def one_error(err, *fragments, prefix="labkit: error: "):
    assert len(err) == 1, err
    assert err[0].startswith(prefix), err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])


def snapshot(folder):
    """Every file below `folder` with its bytes: to show nothing changed."""
    return {p: p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def no_temporary_files(folder):
    left = [p for p in Path(folder).rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]
    assert not left, left


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh current folder with its own runs root and cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def trained(capsys, out, steps=20, saving=10):
    status, err = run(capsys, "train", "--num_training_steps", steps, "--saving_steps", saving, "--out", out, *TINY)
    assert status == 0, err
    return out


# ---------------------------------------------------------------------------
# Bad values: one line, exit 2, nothing created


@pytest.mark.parametrize("command", [["train"], ["train-vae"], ["train-classifier"]])
@pytest.mark.parametrize("device", ["bogus", "gpu", "cuda:x", "cuda:7"])
def test_a_bad_device_is_one_line(workdir, capsys, command, device):
    status, err = run(capsys, *command, "--device", device)
    assert status == 2
    one_error(err, "device")
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["train", "--latent_dim", "100000000"], "latent_dim must be a whole number from 1 to 4,096"),
    (["train", "--generator_hidden_dim", "5000"], "generator_hidden_dim must be a whole number from 1 to 1,024"),
    (["train", "--batch_size", "70000"], "batch_size must be a whole number from 1 to 60,000"),
    (["train", "--seed", "100000000000000000000"], "seed must be a whole number from 0 to 4,294,967,295"),
    (["train", "--seed", "1e20"], "argument --seed: invalid int value: '1e20'"),
    (["train", "--seed", "-1"], "seed must be a whole number from 0"),
    (["train-vae", "--batch_size", "70000"], "batch_size must be a whole number from 1 to 50,000"),
    (["train-classifier", "--epochs", "0"], "--epochs must be at least 1"),
    (["sweep", "--latent_dims", "8", "--hidden_dims", "8", "--seeds", "0"], "--seeds must be at least 1"),
    (["sweep", "--latent_dims", "8", "--hidden_dims", "8", "--seeds", "-2"], "--seeds must be at least 1"),
    (["sweep", "--latent_dims", "8", "--hidden_dims", "8", "--fid_count", "0"], "--fid_count must be from 2"),
    (["sweep", "--latent_dims", "8", "--hidden_dims", "8", "--fid_count", "1"], "--fid_count must be from 2"),
    (["sweep", "--latent_dims", "0", "--hidden_dims", "8"], "latent_dim must be a whole number from 1"),
    (["fid", "--run", "x", "--count", "1"], "--count must be from 2 to 60,000"),
    (["sample", "--run", "x", "--nrow", "0"], "--nrow must be at least 1"),
    (["sample", "--run", "x", "--nrow", "-2"], "--nrow must be at least 1"),
    (["sample", "--run", "x", "--count", "100000000"], "--count must be from 1 to 10,000"),
    (["sample", "--run", "no/such/run"], "no run folder at no/such/run"),
    (["extend", "--run", "no/such/run", "--num_training_steps", "10"], "no/such/run"),
])
def test_bad_values_are_one_line_and_create_nothing(workdir, capsys, args, message):
    status, err = run(capsys, *args)
    assert status == 2
    one_error(err, message)
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("command", [
    ["train", "--num_training_steps", 10, *TINY],
    ["sweep", "--latent_dims", 8, "--hidden_dims", 8, "--seeds", 2, "--num_training_steps", 10,
     "--backbone", "mnist", "--fid_count", 100],  # one line before any run, not every run marked failed
    ["train-vae", "--num_training_steps", 10]])
def test_an_empty_data_folder_offline_is_one_line_and_creates_nothing(workdir, capsys, monkeypatch, offline, command):
    monkeypatch.setenv("LABKIT_DATA", str(workdir / "empty"))
    status, err = run(capsys, *command)
    assert status == 2
    one_error(err, "MNIST is not in", "copy the four files")
    assert not (workdir / "runs").exists()


def test_a_truncated_mnist_file_is_named(workdir, capsys, monkeypatch):
    data = workdir / "data" / "MNIST" / "raw"
    data.mkdir(parents=True)
    shared = Path(os.environ["LABKIT_DATA"]) / "MNIST" / "raw"
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (data / name).write_bytes((shared / name).read_bytes())
    (data / "train-images-idx3-ubyte").write_bytes((shared / "train-images-idx3-ubyte").read_bytes()[:1000])
    monkeypatch.setenv("LABKIT_DATA", str(workdir / "data"))
    status, err = run(capsys, "train", "--num_training_steps", 10, *TINY)
    assert status == 2
    one_error(err, "train-images-idx3-ubyte", "damaged", "1,000 bytes", "47,040,016")
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("command", ["train", "sweep", "train-vae", "sample"])
def test_an_out_path_that_is_a_file_or_under_a_file_is_refused(workdir, capsys, command):
    (workdir / "notes.txt").write_text("my notes")
    before = snapshot(workdir)
    extra = {"train": [*TINY], "sweep": ["--latent_dims", "8", "--hidden_dims", "8", "--no_cuda", "--quiet"],
             "train-vae": ["--no_cuda"], "sample": ["--run", "x"]}[command]
    for out in (workdir / "notes.txt", workdir / "notes.txt" / "run"):
        target = out if command != "sample" else out / "grid.png" if out.name == "run" else out
        status, err = run(capsys, command, *extra, "--out", target)
        assert status == 2, err
        one_error(err, "notes.txt")
    assert snapshot(workdir) == before


def test_sample_out_must_be_an_image_file(workdir, capsys):
    out = trained(capsys, workdir / "run", steps=10)
    (workdir / "folder").mkdir()
    status, err = run(capsys, "sample", "--run", out, "--out", workdir / "folder")
    assert status == 2
    one_error(err, "is a folder; give a file name such as")
    status, err = run(capsys, "sample", "--run", out, "--out", workdir / "grid.txt")
    assert status == 2
    one_error(err, "--out must be an image file ending in .png or .jpg")


def test_train_classifier_checks_its_destination_before_training(workdir, capsys, monkeypatch):
    import labkit.classifier

    monkeypatch.setattr(labkit.classifier, "train_classifier", lambda **k: pytest.fail("it trained"))
    (workdir / "weights").mkdir()
    status, err = run(capsys, "train-classifier", "--device", "cpu", "--out", workdir / "weights")
    assert status == 2
    one_error(err, "is a folder")


# ---------------------------------------------------------------------------
# Folders that are not labkit's, runs of other settings, damaged files


def test_a_folder_of_the_users_own_files_is_never_written(workdir, capsys):
    mine = workdir / "my_experiment"
    mine.mkdir()
    (mine / "config.json").write_text('{"learning_rate": 0.1, "my_notes": "do not touch"}\n')
    (mine / "history.csv").write_text("epoch,loss\n1,0.5\n")
    before = snapshot(mine)
    status, err = run(capsys, "train", "--num_training_steps", 10, "--out", mine, *TINY)
    assert status == 2
    one_error(err, "config.json does not hold a TrainConfig")
    assert snapshot(mine) == before
    (mine / "config.json").unlink()  # now only someone's history.csv: still not labkit's
    status, err = run(capsys, "train", "--num_training_steps", 10, "--out", mine, *TINY)
    assert status == 2
    one_error(err, "holds files that are not a labkit run")
    assert (mine / "history.csv").read_text() == "epoch,loss\n1,0.5\n"


def test_a_checkpoint_of_another_model_size_is_reported(workdir, capsys):
    small = trained(capsys, workdir / "small", steps=10)
    status, err = run(capsys, "train", "--num_training_steps", 10, "--out", workdir / "big",
                      "--generator_hidden_dim", "16", "--discriminator_hidden_dim", "16", "--no_cuda", "--quiet")
    assert status == 0, err
    big_ckpt = checkpoints(workdir / "big")[-1]
    big_ckpt.write_bytes(checkpoints(small)[-1].read_bytes())  # someone copied the wrong file in
    before = snapshot(workdir / "big")
    for args in (["train", "--num_training_steps", 10, "--out", workdir / "big", "--generator_hidden_dim", "16",
                  "--discriminator_hidden_dim", "16", "--no_cuda", "--quiet"], ["sample", "--run", workdir / "big"]):
        status, err = run(capsys, *args)
        assert status == 2
        one_error(err, "written by a run with other settings", "generator_hidden_dim")
    assert snapshot(workdir / "big") == before


def test_weights_that_do_not_fit_the_model_are_reported(workdir, capsys):
    out = trained(capsys, workdir / "run", steps=10)
    path = checkpoints(out)[-1]
    state = torch.load(path, weights_only=True)
    state["models"]["generator"]["net.0.weight"] = torch.zeros(3, 3)
    torch.save(state, path)
    status, err = run(capsys, "sample", "--run", out)
    assert status == 2
    one_error(err, "does not fit the model", "delete that folder")


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(workdir, capsys):
    out = trained(capsys, workdir / "run", steps=30, saving=10)
    newest = checkpoints(out)[-1]
    assert [p.name for p in checkpoints(out)] == ["step-000020.pt", "step-000030.pt"]
    newest.write_bytes(newest.read_bytes()[:300])  # cut short
    status = main(["sample", "--run", str(out), "--out", str(workdir / "grid.png")])
    captured = capsys.readouterr()
    assert status == 0 and (workdir / "grid.png").is_file()
    warning = [line for line in captured.err.splitlines() if line.strip()]
    assert len(warning) == 1 and warning[0].startswith("labkit: warning: ") and "step-000020.pt" in warning[0]
    # Training the same run resumes from step 20 and writes a good step-30 checkpoint over the damaged one.
    status, err = run(capsys, "train", "--num_training_steps", 30, "--saving_steps", 10, "--out", out, *TINY)
    assert status == 0 and load_checkpoint(checkpoints(out)[-1], "gan")["step"] == 30
    no_temporary_files(workdir)


@pytest.mark.parametrize("damage", ["empty", "half"])
def test_a_damaged_config_json_is_one_line(workdir, capsys, damage):
    out = trained(capsys, workdir / "run", steps=10)
    text = (out / "config.json").read_text()
    (out / "config.json").write_text("" if damage == "empty" else text[: len(text) // 2])
    before = snapshot(out)
    status, err = run(capsys, "train", "--num_training_steps", 10, "--out", out, *TINY)
    assert status == 2
    one_error(err, "config.json", "damaged", "delete the folder")
    assert snapshot(out) == before


def test_a_torn_last_history_row_is_dropped_with_a_warning(workdir, capsys):
    from labkit.train import load_run

    out = trained(capsys, workdir / "run", steps=20, saving=10)
    history = (out / "history.csv").read_text()
    (out / "history.csv").write_text(history + "30,0.51,1.2")  # a kill while a row was being appended
    before = snapshot(out)
    run_ = load_run(out)
    assert [row["step"] for row in run_.history] == [10, 20]
    warning = capsys.readouterr().err
    assert "line 4 is incomplete" in warning and "left out" in warning
    assert snapshot(out) == before  # reading wrote nothing


def test_a_history_with_other_columns_is_one_line(workdir, capsys):
    out = trained(capsys, workdir / "run", steps=20, saving=10)
    history = (out / "history.csv").read_text().splitlines()
    (out / "history.csv").write_text("\n".join(["step,loss", *history[1:]]) + "\n")  # e.g. edited by hand
    before = snapshot(out)
    status, err = run(capsys, "sample", "--run", out, "--out", workdir / "grid.png")
    assert status == 2
    one_error(err, "history.csv has the columns step,loss, not labkit's step,discriminator_loss", "delete the run")
    assert snapshot(out) == before


# ---------------------------------------------------------------------------
# A kill during each write


@pytest.mark.parametrize("target", ["config.json", "history.csv", "checkpoint", "result.json"])
def test_a_kill_during_a_write_leaves_the_old_file_whole(workdir, capsys, monkeypatch, target):
    """Every file labkit rewrites goes through a temporary file and a rename: a kill leaves the old one."""
    import labkit.machinery.runs
    from labkit.machinery.checkpoints import save_atomic
    from labkit.machinery.runs import write_history, write_json
    from labkit.train import TrainConfig

    out = trained(capsys, workdir / "run", steps=20, saving=10)
    (out / "fid_mnist_100.json").write_text('{"status": "done", "fid": 1.0}\n')
    before = snapshot(out)
    real_open = builtins.open

    class HalfWritten:
        """A file whose first write stops half-way: the process is killed there."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise KeyboardInterrupt

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def killed_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return HalfWritten(f) if "w" in mode else f

    with monkeypatch.context() as patch:
        if target == "checkpoint":
            def killed_save(obj, f, *args, **kwargs):
                f.write(b"half a checkpoint")
                raise KeyboardInterrupt
            patch.setattr(torch, "save", killed_save)
            with pytest.raises(KeyboardInterrupt):
                save_atomic(load_checkpoint(checkpoints(out)[-1], "gan"), checkpoints(out)[-1])
        else:
            patch.setattr(builtins, "open", killed_open)
            with pytest.raises(KeyboardInterrupt):
                if target == "config.json":
                    labkit.machinery.runs.write_config(out, TrainConfig(num_training_steps=20))
                elif target == "history.csv":
                    write_history(out, [], ("step",))
                else:
                    write_json(out / "fid_mnist_100.json", {"status": "failed"})
    assert snapshot(out) == before
    no_temporary_files(workdir)
    # The run is still whole: it loads, and the same command finishes it again at once.
    status, err = run(capsys, "train", "--num_training_steps", 20, "--saving_steps", 10, "--out", out, *TINY)
    assert status == 0, err


# ---------------------------------------------------------------------------
# A second process on the same run


def test_a_second_process_on_a_run_is_told_who_holds_it(workdir, capsys):
    out = trained(capsys, workdir / "run", steps=20, saving=10)
    (out / "checkpoints" / "step-000020.pt").unlink()  # as if stopped after step 10: the run is unfinished
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from labkit.machinery.runs import RunLock\n"
                               f"with RunLock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(out)
        status, err = run(capsys, "train", "--num_training_steps", 20, "--saving_steps", 10, "--out", out, *TINY)
        assert status == 2
        one_error(err, f"is being trained by process {holder.pid}", "wait for it to finish")
        assert snapshot(out) == before
        # Reading the run and training another are not blocked.
        assert run(capsys, "sample", "--run", out, "--out", workdir / "grid.png")[0] == 0
        assert run(capsys, "train", "--num_training_steps", 10, "--out", workdir / "other", *TINY)[0] == 0
    finally:
        holder.kill()
        holder.wait()
    status, err = run(capsys, "train", "--num_training_steps", 20, "--saving_steps", 10, "--out", out, *TINY)
    assert status == 0, err  # the holder is gone (killed: the OS released its lock), so the run resumes


# ---------------------------------------------------------------------------
# Read-only folders and full disks


@pytest.fixture
def read_only(monkeypatch):
    """deny(folder): from now on, writes below `folder` fail with EACCES, as in a read-only folder."""

    def deny(folder):
        root = str(Path(folder).resolve())

        def inside(path):
            try:
                return str(Path(os.fsdecode(path)).resolve()).startswith(root)
            except (TypeError, ValueError):
                return False

        def refuse(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

        real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
        real_replace, real_access = os.replace, os.access

        def fake_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and inside(file):
                refuse(file)
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
                refuse(path)
            return real_os_open(path, flags, *args, **kwargs)

        def fake_mkdir(path, *args, **kwargs):
            if inside(path):
                refuse(path)
            return real_mkdir(path, *args, **kwargs)

        def fake_replace(src, dst, *args, **kwargs):
            if inside(src) or inside(dst):
                refuse(dst)
            return real_replace(src, dst, *args, **kwargs)

        def fake_access(path, mode, *args, **kwargs):
            if mode & os.W_OK and inside(path):
                return False
            return real_access(path, mode, *args, **kwargs)

        for owner, name, fake in ((builtins, "open", fake_open), (io, "open", fake_open), (os, "open", fake_os_open),
                                  (os, "mkdir", fake_mkdir), (os, "replace", fake_replace),
                                  (os, "rename", fake_replace), (os, "access", fake_access)):
            monkeypatch.setattr(owner, name, fake)

    return deny


@pytest.mark.parametrize("command", ["train", "sweep", "train-vae"])
def test_a_read_only_runs_folder_is_one_line(workdir, capsys, read_only, command):
    (workdir / "runs").mkdir()
    read_only(workdir / "runs")
    args = {"train": ["train", "--num_training_steps", 10, *TINY],
            "sweep": ["sweep", "--latent_dims", 8, "--hidden_dims", 8, "--seeds", 1, "--num_training_steps", 10,
                      "--fid_count", 50, "--backbone", "mnist", "--no_cuda", "--quiet"],
            "train-vae": ["train-vae", "--num_training_steps", 10, "--no_cuda", "--quiet"]}[command]
    status, err = run(capsys, *args)
    assert status == 2
    one_error(err, "cannot write to", "runs", "choose a folder you can write to")
    assert list((workdir / "runs").iterdir()) == []


def test_sample_into_a_read_only_run_is_one_line(workdir, capsys, read_only):
    out = trained(capsys, workdir / "run", steps=10)
    before = snapshot(out)
    read_only(out)
    status, err = run(capsys, "sample", "--run", out)
    assert status == 2
    one_error(err, "cannot write to")
    assert snapshot(out) == before


def test_a_read_only_cache_costs_time_not_the_result(workdir, capsys, read_only, monkeypatch):
    import labkit.metrics

    monkeypatch.setattr(labkit.metrics, "_warned", {})
    out = trained(capsys, workdir / "run", steps=10)
    (workdir / "cache").mkdir()
    read_only(workdir / "cache")
    status = main(["fid", "--run", str(out), "--count", "100", "--backbone", "mnist", "--quiet"])
    captured = capsys.readouterr()
    assert status == 0 and "MNIST-FID (100 real vs 100 generated)" in captured.out
    warning = [line for line in captured.err.splitlines() if line.strip()]
    assert len(warning) == 1 and warning[0].startswith("labkit: warning: could not cache")


@pytest.mark.parametrize("where", ["checkpoint", "tensorboard", "history"])
def test_a_full_disk_is_one_line_and_the_run_resumes(workdir, capsys, monkeypatch, where):
    from torch.utils.tensorboard import SummaryWriter

    out = workdir / "run"
    config = ["train", "--num_training_steps", 30, "--saving_steps", 10, "--logging_steps", 5, "--out", out, *TINY]

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "something"))

    calls = []
    real_save, real_scalar = torch.save, SummaryWriter.add_scalar

    def save_until_full(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint
            f.write(b"partial")
            full()
        return real_save(obj, f, *args, **kwargs)

    def scalar_until_full(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5 * 4:  # the 4th logging step
            full()
        return real_scalar(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        if where == "checkpoint":
            patch.setattr(torch, "save", save_until_full)
        elif where == "tensorboard":
            patch.setattr(SummaryWriter, "add_scalar", scalar_until_full)
        else:
            import labkit.machinery.loop
            real_write = labkit.machinery.loop.RunWriter.log

            def log_until_full(self, row):
                if row["step"] == 15:
                    full()
                return real_write(self, row)
            patch.setattr(labkit.machinery.loop.RunWriter, "log", log_until_full)
        status, err = run(capsys, *config)
    assert status == 2
    one_error(err, "the disk is full", "run the same command again")
    assert load_checkpoint(checkpoints(out)[-1], "gan")["step"] == 10
    no_temporary_files(workdir)
    status, err = run(capsys, *config)  # space freed: the same command resumes and finishes
    assert status == 0, err
    from labkit.train import load_run
    assert [r["step"] for r in load_run(out).history] == [5, 10, 15, 20, 25, 30]


# ---------------------------------------------------------------------------
# Divergence and interruption


def test_a_diverging_vae_stops_with_one_line_and_keeps_finite_weights(workdir, capsys, monkeypatch):
    import labkit.vae

    real_losses, steps = labkit.vae.vae_losses, []

    def diverging_after_step_12(vae, images, noise=None, code=None):
        loss, kl, rec = real_losses(vae, images, noise, code)
        if torch.is_grad_enabled():  # a training step (the dev evaluation runs without gradients)
            steps.append(1)
            if len(steps) > 12:
                loss = loss * float("nan")  # NaN gradients: the weights turn NaN
        return loss, kl, rec

    monkeypatch.setattr(labkit.vae, "vae_losses", diverging_after_step_12)
    out = workdir / "vae"
    status, err = run(capsys, "train-vae", "--num_training_steps", 20, "--logging_steps", 10, "--saving_steps", 10,
                      "--no_cuda", "--quiet", "--out", out)
    assert status == 1
    one_error(err, "NaN or infinite", "step 20", "last good checkpoint", "step-000010.pt", prefix="labkit: ")
    assert [p.name for p in checkpoints(out)] == ["step-000010.pt"]  # the NaN weights of step 20 were not saved
    state = load_checkpoint(checkpoints(out)[-1], "vae")
    assert all(torch.isfinite(v).all() for v in state["models"]["vae"].values())
    no_temporary_files(workdir)


def test_ctrl_c_is_one_line_at_any_moment(workdir, capsys, monkeypatch):
    import labkit.machinery.cli

    def interrupted(*args, **kwargs):  # as if Ctrl-C came while torch was being imported
        raise KeyboardInterrupt

    monkeypatch.setattr(labkit.machinery.cli, "build_parser", interrupted)
    status, err = run(capsys, "train")
    assert status == 130 and err == ["labkit: interrupted; run the same command again to resume from the last "
                                     "checkpoint"]


def test_ctrl_c_during_the_imports_of_the_real_command(workdir):
    process = subprocess.Popen([sys.executable, "-m", "labkit.machinery.cli", "train", "--num_training_steps", "10", *TINY],
                               stderr=subprocess.PIPE, text=True, cwd=workdir)
    # Wait until torch's libraries are being loaded (so labkit's own code is running), then press Ctrl-C while
    # the rest of torch is still being imported. Before labkit's first line runs, Python itself answers Ctrl-C.
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if "libtorch" in maps.read_text(errors="replace"):
                break
        except OSError:  # no /proc here, or the process just ended
            break
        time.sleep(0.01)
    if not maps.exists():
        time.sleep(1.0)  # no /proc (not Linux): give Python a second to reach labkit's code
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert [line for line in err.splitlines() if line.strip()] == [
        "labkit: interrupted; run the same command again to resume from the last checkpoint"]


def test_ctrl_c_during_the_imports_is_held_back_until_they_end():
    """Ctrl-C raised inside code that swallows every exception would be lost; held back, it is raised after."""
    from labkit.machinery.cli import ctrl_c_held_back

    before = signal.getsignal(signal.SIGINT)
    reached_the_end = False
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_held_back():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)  # the signal is handled here
            except BaseException:  # a third-party import that swallows everything
                pass
            reached_the_end = True
    assert reached_the_end and signal.getsignal(signal.SIGINT) is before


OUT_OF_MEMORY = """
import resource, sys
import torch, torchvision, matplotlib
from labkit.machinery.cli import main
import labkit.train, labkit.data
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 1_500_000_000, resource.RLIM_INFINITY))
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux's /proc to size the memory limit")
def test_running_out_of_memory_is_one_line(workdir):
    # The fault, for real: the process may use only 1.5 GB more than it has after the imports, and a batch of
    # 20000 images at hidden 64 needs more than that.
    result = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY, "train", "--batch_size", "20000",
                             "--generator_hidden_dim", "64", "--discriminator_hidden_dim", "64",
                             "--num_training_steps", "2", "--device", "cpu"],
                            capture_output=True, text=True, cwd=workdir, timeout=300)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("labkit: error")]
    assert errors == ["labkit: error: out of memory; try a smaller --batch_size or hidden size"]
    no_temporary_files(workdir)
