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

from labkit.runs.checkpoints import checkpoints, load_checkpoint
from labkit.cli import main

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


@pytest.fixture(scope="module")
def a_trained_run(tmp_path_factory):
    """One tiny run (20 steps, checkpoints at 10 and 20), trained once for the tests that copy it."""
    out = tmp_path_factory.mktemp("shared") / "run"
    assert main(["train", "--num_training_steps", "20", "--saving_steps", "10", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run_copy(workdir, a_trained_run):
    """A copy of `a_trained_run` in this test's folder, for the test to damage."""
    import shutil

    shutil.copytree(a_trained_run, workdir / "run", ignore=shutil.ignore_patterns(".lock*"))
    return workdir / "run"


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
    (["sample", "--run", "x", "--seed", "99999999999999999999"], "seed must be a whole number from 0 to 4,294,967,295"),
    (["sample", "--run", "x", "--seed", "-1"], "seed must be a whole number from 0 to 4,294,967,295"),
    (["train-classifier", "--seed", "99999999999999999999"], "seed must be a whole number from 0 to 4,294,967,295"),
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


@pytest.mark.parametrize("out, message", [
    ("weights", "is a folder; give a file name such as"),
    ("mine.pt", "mine.pt already exists; add --force to replace it"),
    ("link.pt", "link.pt is a symbolic link"),
])
def test_train_classifier_checks_its_destination_before_training(workdir, capsys, monkeypatch, out, message):
    import labkit.classifier

    monkeypatch.setattr(labkit.classifier, "train_classifier", lambda **k: pytest.fail("it trained"))
    (workdir / "weights").mkdir()
    (workdir / "mine.pt").write_bytes(b"my own weights")
    (workdir / "link.pt").symlink_to(workdir / "mine.pt")
    before = snapshot(workdir)
    force = ["--force"] if out == "link.pt" else []  # a link is refused even when asked to replace
    status, err = run(capsys, "train-classifier", "--device", "cpu", "--out", workdir / out, *force)
    assert status == 2
    one_error(err, message)
    assert snapshot(workdir) == before and (workdir / "link.pt").is_symlink()


# ---------------------------------------------------------------------------
# Targets: a command never writes over its own input, through a link, or over a file it did not make


def test_sample_never_replaces_an_image_or_writes_through_a_link(workdir, capsys, run_copy):
    photo, link = workdir / "photo.png", workdir / "link.png"
    photo.write_bytes(b"\x89PNG my holiday")
    link.symlink_to(photo)
    (workdir / "dangling.png").symlink_to(workdir / "gone.png")
    before = snapshot(workdir)
    for out, force, message in [(photo, [], "photo.png already exists; add --force to replace it"),
                                (link, ["--force"], "link.png is a symbolic link (to "),
                                (workdir / "dangling.png", ["--force"], "dangling.png is a symbolic link")]:
        status, err = run(capsys, "sample", "--run", run_copy, "--out", out, *force)
        assert status == 2
        one_error(err, message)
    assert snapshot(workdir) == before and link.is_symlink()
    status, err = run(capsys, "sample", "--run", run_copy, "--out", photo, "--force")  # asked for: replaced
    assert status == 0, err
    assert photo.read_bytes().startswith(b"\x89PNG") and photo.read_bytes() != before[photo]
    no_temporary_files(workdir)


INSTRUCTOR = Path(__file__).resolve().parents[1] / "notebooks"


def test_a_release_never_writes_over_the_instructors_notebooks(workdir, capsys):
    pytest.importorskip("nbgrader")
    import shutil

    lab = workdir / "lab"
    shutil.copytree(INSTRUCTOR, lab / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints",
                                                                             ".labkit-grading-secret"))
    before = snapshot(lab)
    os.chdir(lab)  # cd LAB && labkit assignment release --out . --force: the source is ./notebooks
    status, err = run(capsys, "assignment", "release", "--out", ".", "--force")
    assert status == 2
    one_error(err, "notebooks is ", "which this command reads; writing there would destroy it")
    assert snapshot(lab) == before
    # A release elsewhere; then the instructor's own notebook copied over one of its notebooks.
    out = workdir / "course"
    assert run(capsys, "assignment", "release", "--out", out)[0] == 0
    released = out / "notebooks" / "01_train_dcgan.ipynb"
    shutil.copy(lab / "notebooks" / "01_train_dcgan.ipynb", released)
    (out / "notebooks" / "my_notes.md").write_text("mine")
    mine = snapshot(out)
    status, err = run(capsys, "assignment", "release", "--out", out, "--force")
    assert status == 2
    one_error(err, "01_train_dcgan.ipynb was not written by labkit; labkit never replaces a file it did not make")
    assert snapshot(out) == mine
    # --force replaces what labkit released, a student's work in it included; never another file.
    student = out / "notebooks" / "04_nash_equilibrium.ipynb"
    student.write_text(student.read_text().replace("raise NotImplementedError()", "pass  # my work", 1))
    released.unlink()
    status, err = run(capsys, "assignment", "release", "--out", out, "--force")
    assert status == 0, err
    assert "my work" not in student.read_text() and (out / "notebooks" / "my_notes.md").read_text() == "mine"
    secret = lab / "notebooks" / ".labkit-grading-secret"  # the one file a release adds there, once (docs/grading.md)
    assert secret.is_file() and {p: b for p, b in snapshot(lab).items() if p != secret} == before
    no_temporary_files(workdir)


def test_a_run_folder_that_is_a_link_or_holds_links_is_refused(workdir, capsys, run_copy):
    from labkit.gan import extend

    thesis = workdir / "thesis.txt"
    thesis.write_text("three years of work")
    (workdir / "elsewhere").symlink_to(run_copy)
    status, err = run(capsys, "train", "--num_training_steps", 20, "--saving_steps", 10, "--out",
                      workdir / "elsewhere", *TINY)
    assert status == 2
    one_error(err, "elsewhere is a symbolic link")
    (run_copy / "checkpoints" / "step-000020.pt").unlink()  # unfinished: training would append to history.csv
    (run_copy / "history.csv").unlink()
    (run_copy / "history.csv").symlink_to(thesis)
    before = snapshot(workdir)
    status, err = run(capsys, "train", "--num_training_steps", 20, "--saving_steps", 10, "--out", run_copy, *TINY)
    assert status == 2
    one_error(err, "history.csv is a symbolic link", "give the real path")
    assert snapshot(workdir) == before and thesis.read_text() == "three years of work"
    with pytest.raises(ValueError, match="which this command reads"):
        extend(run_copy, 40, out_dir=workdir / "run", progress=False)  # the run it extends is its input
    assert snapshot(workdir) == before


def test_sweep_tables_never_replace_a_users_file(workdir, capsys):
    tables = workdir / "my_tables"
    tables.mkdir()
    (tables / "runs.csv").write_text("my,own,table\n")
    before = snapshot(workdir)
    status, err = run(capsys, "sweep", "--latent_dims", 8, "--hidden_dims", 8, "--seeds", 1, "--num_training_steps",
                      10, "--fid_count", 50, "--backbone", "mnist", "--out", tables, "--no_cuda", "--quiet")
    assert status == 2
    one_error(err, "runs.csv was not written by labkit; labkit never replaces a file it did not make")
    assert snapshot(workdir) == before and not (workdir / "runs").exists()


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
    from labkit.gan import load_run

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


@pytest.mark.parametrize("command", ["sample", "extend"])
@pytest.mark.parametrize("damage", ["a field over 131,072 characters", "undecodable bytes"])
def test_an_oversized_or_undecodable_history_row_is_one_line(workdir, capsys, run_copy, command, damage):
    lines = (run_copy / "history.csv").read_bytes().split(b"\n")
    lines[1] = lines[1] + b"9" * 140_000 if damage.startswith("a field") else b"10,0.5,\xff\xfe,0.1" + lines[1][11:]
    (run_copy / "history.csv").write_bytes(b"\n".join(lines))
    before = snapshot(workdir)
    args = {"sample": ["sample", "--run", run_copy, "--out", workdir / "grid.png"],
            "extend": ["extend", "--run", run_copy, "--num_training_steps", 30, "--quiet"]}[command]
    status, err = run(capsys, *args)
    assert status == 2
    one_error(err, f"{run_copy / 'history.csv'} is damaged at line 2", "delete the run folder")
    assert snapshot(workdir) == before


@pytest.mark.parametrize("torn", [b"20,0.51,\xff\xfe\xfd", b"20," + b"9" * 140_000, b"20,0.51,1.2"])
def test_a_torn_last_row_of_any_bytes_is_dropped_with_a_warning(workdir, capsys, run_copy, torn):
    lines = (run_copy / "history.csv").read_bytes().split(b"\n")[:-2]  # header and step 10: step 20's row torn
    (run_copy / "history.csv").write_bytes(b"\n".join([*lines, torn]))
    before = snapshot(run_copy)
    status = main(["sample", "--run", str(run_copy), "--out", str(workdir / "grid.png")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 0
    assert err == [f"labkit: warning: {run_copy / 'history.csv'} line 3 is incomplete (the run was stopped while "
                   f"writing it); it is left out"]
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("command", ["sample", "train"])
@pytest.mark.parametrize("config, message", [
    ({"use_mlp": "yes"}, "does not hold a TrainConfig (use_mlp must be true or false, got 'yes')"),
    ({"learning_rate": "fast"}, "learning_rate must be a number, got 'fast'"),
    ({"latent_dim": 16.5}, "latent_dim must be a whole number, got 16.5"),
    ([1, 2, 3], "is not a labkit config (expected a JSON object, found list)"),
    (7, "is not a labkit config (expected a JSON object, found int)"),
    ("[" * 100_000, "is damaged (its config.json is not valid JSON"),
])
def test_a_config_json_of_the_wrong_kind_is_one_line(workdir, capsys, run_copy, command, config, message):
    import json

    saved = json.loads((run_copy / "config.json").read_text())
    changed = {**saved, **config} if isinstance(config, dict) else config
    text = config if isinstance(config, str) else json.dumps(changed)
    (run_copy / "config.json").write_text(text)
    before = snapshot(workdir)
    args = {"sample": ["sample", "--run", run_copy, "--out", workdir / "grid.png"],
            "train": ["train", "--num_training_steps", 20, "--saving_steps", 10, "--out", run_copy, *TINY]}[command]
    status, err = run(capsys, *args)
    assert status == 2
    one_error(err, str(run_copy / "config.json"), message)
    assert snapshot(workdir) == before


@pytest.mark.parametrize("result", ["[1, 2, 3]", '{"status": "done"}', "\xff"])
def test_a_damaged_sweep_result_is_one_line(workdir, capsys, result):
    run_dir = workdir / "runs" / "dcgan_z16_g8_d8_steps10_seed2022"
    run_dir.mkdir(parents=True)
    (run_dir / "fid_mnist_50.json").write_bytes(result.encode("latin-1"))
    before = snapshot(workdir)
    status, err = run(capsys, "sweep", "--latent_dims", 16, "--hidden_dims", 8, "--seeds", 1, "--num_training_steps",
                      10, "--fid_count", 50, "--backbone", "mnist", "--no_cuda", "--quiet")
    assert status == 2
    one_error(err, str(run_dir / "fid_mnist_50.json"), "delete")
    assert snapshot(workdir) == before


# ---------------------------------------------------------------------------
# A kill during each write


@pytest.mark.parametrize("target", ["config.json", "history.csv", "checkpoint", "result.json"])
def test_a_kill_during_a_write_leaves_the_old_file_whole(workdir, capsys, monkeypatch, target):
    """Every file labkit rewrites goes through a temporary file and a rename: a kill leaves the old one."""
    import labkit.runs.folder
    from labkit.runs.checkpoints import save_atomic
    from labkit.runs.atomic import write_json
    from labkit.runs.folder import write_history
    from labkit.gan import TrainConfig

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

    state = load_checkpoint(checkpoints(out)[-1], "gan")
    with monkeypatch.context() as patch:
        patch.setattr(builtins, "open", killed_open)
        with pytest.raises(KeyboardInterrupt):
            if target == "checkpoint":  # killed half-way through writing the bytes torch.save made
                save_atomic(state, checkpoints(out)[-1])
            elif target == "config.json":
                labkit.runs.folder.write_config(out, TrainConfig(num_training_steps=20))
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
        [sys.executable, "-c", "import time; from labkit.runs.folder import RunLock\n"
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


SWEEP = ["sweep", "--latent_dims", "8", "--hidden_dims", "8", "--seeds", "1", "--num_training_steps", "3000",
         "--saving_steps", "3000", "--fid_count", "50", "--backbone", "mnist", "--no_cuda", "--quiet"]


def test_a_second_identical_sweep_is_told_who_runs_it(workdir):
    """Two real `labkit sweep` processes, the second started 1.5 s after the first (as issue 22 found it)."""
    command = [sys.executable, "-m", "labkit.cli", *SWEEP]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=workdir)
    time.sleep(1.5)
    second = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=workdir)
    processes = {first.pid: first, second.pid: second}
    try:
        # Whichever takes the sweep's lock first trains (3000 steps: long enough); the other is refused.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and all(p.poll() is None for p in processes.values()):
            time.sleep(0.2)
        loser = next(p for p in processes.values() if p.poll() is not None)
        winner = next(p for p in processes.values() if p is not loser)
        err = [line for line in loser.stderr.read().splitlines() if line.strip()]
        assert loser.returncode == 2, err
        one_error(err, "is being swept (shard 0/1) by process ", f"process {winner.pid} on ", "wait for it to finish")
        assert winner.poll() is None  # still training: the refusal did not disturb it
        tables = next((workdir / "runs" / "sweeps").iterdir())
        assert sorted(p.name for p in tables.iterdir()) == [".sweep-0-of-1.lock", ".sweep-0-of-1.lock.owner"]
    finally:
        for process in processes.values():
            process.kill()
            process.wait()
    no_temporary_files(workdir)


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
    assert status == 0 and "MNIST-FID (pad, 100 real vs 100 generated)" in captured.out
    warning = [line for line in captured.err.splitlines() if line.strip()]
    assert len(warning) == 1 and warning[0].startswith("labkit: warning: could not cache")


def test_a_linked_cache_file_is_never_written_through(workdir, capsys, run_copy, monkeypatch):
    import labkit.metrics

    monkeypatch.setattr(labkit.metrics, "_warned", {})
    fid = ["fid", "--run", str(run_copy), "--count", "100", "--backbone", "mnist", "--quiet"]
    assert main(fid) == 0
    capsys.readouterr()
    cached = next((workdir / "cache" / "fid_stats").iterdir())
    mine = workdir / "mine.txt"
    mine.write_text("my notes")
    cached.unlink()
    cached.symlink_to(mine)
    status = main(fid)
    captured = capsys.readouterr()
    assert status == 0 and "MNIST-FID (pad, 100 real vs 100 generated)" in captured.out
    warning = [line for line in captured.err.splitlines() if line.strip()]
    assert len(warning) == 1 and warning[0].startswith("labkit: warning: could not cache real-image statistics")
    assert "is a symbolic link" in warning[0]
    assert mine.read_text() == "my notes" and cached.is_symlink()


class SmallDisk:
    """A real filesystem of a few MB (tmpfs), and a way to fill it at the moment a writer writes.

    The disk is filled for real (a filler file written until the kernel says ENOSPC), so the
    writer under test gets the kernel's own error through its own code path: torch, PIL,
    TensorBoard's writer thread, numpy's zip writer. The test chooses only *when* the disk
    becomes full: when a file whose name matches is opened to be written (a new file needs
    a page at its first byte), or, for a file that is appended to, right before the write that
    needs a new page (the page it has left would take a few more rows otherwise).
    """

    PAGE = 4096

    def __init__(self, path, monkeypatch):
        self.path, self.monkeypatch, self.filler = path, monkeypatch, path / "filler"

    def fill(self):
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for size in (1 << 20, self.PAGE, 1):
                try:
                    while True:
                        os.write(fd, bytes(size))
                except OSError as err:
                    assert err.errno == errno.ENOSPC, err
        finally:
            os.close(fd)

    def free(self):
        self.filler.unlink(missing_ok=True)

    def fill_when_written(self, pattern, appended=False, skip=0):
        """Fill the disk when a file whose name holds `pattern` is opened for writing (appended=False), or
        right before the write to it that needs a new page, after `skip` such writes (appended=True)."""
        import re

        real_open, seen = builtins.open, []

        class Appended:
            def __init__(self, f, disk):
                self.f, self.disk = f, disk

            def write(self, data):
                size = os.fstat(self.f.fileno()).st_size
                if size == 0 or (size + len(data) - 1) // SmallDisk.PAGE > (size - 1) // SmallDisk.PAGE:
                    seen.append(1)
                    if len(seen) == skip + 1:
                        self.disk.fill()
                return self.f.write(data)

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self.f.__exit__(*exc)

        def hooked(file, mode="r", *args, **kwargs):
            name = os.fsdecode(file) if isinstance(file, (str, bytes, os.PathLike)) else ""
            if not re.search(pattern, Path(name).name) or not set(mode) & set("wa"):
                return real_open(file, mode, *args, **kwargs)
            if not appended:
                if not self.filler.exists():
                    self.fill()
                return real_open(file, mode, *args, **kwargs)
            return Appended(real_open(file, mode, *args, **kwargs), self)

        self.monkeypatch.setattr(builtins, "open", hooked)
        self.monkeypatch.setattr(io, "open", hooked)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A real 8 MB filesystem (tmpfs), mounted for the test: needs root (CI runs as root) and Linux."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mounted by root on Linux (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield SmallDisk(disk, monkeypatch)
    finally:
        monkeypatch.undo()  # the hooks off before the disk goes
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], check=True)


def disk_full(err, path=None):
    one_error(err, "the disk is full", "free some space, then run the same command again")
    if path is not None:
        assert f"({path})" in err[0], err


TRAIN_ON_DISK = ["--num_training_steps", 40, "--saving_steps", 20, "--logging_steps", 1, *TINY]


@pytest.mark.parametrize("writer, pattern, appended", [
    ("config.json", r"^\.config\.json\..*\.tmp$", False),       # the first write of a run
    ("history.csv", r"^history\.csv$", True),                   # a row appended while training
    ("TensorBoard", r"^events\.out\.tfevents", True),           # written in TensorBoard's own thread
    ("sample grid", r"^\.step-000040\.png\..*\.tmp", False),    # the grid saved with a checkpoint
    ("checkpoint", r"^\.step-000040\.pt\..*\.tmp$", False),     # torch.save's bytes
])
def test_a_real_full_disk_is_one_line_and_the_run_resumes(workdir, capsys, small_disk, writer, pattern, appended):
    notes = small_disk.path / "notes.txt"
    notes.write_text("the user's own file on the same disk")
    out = small_disk.path / "run"
    small_disk.fill_when_written(pattern, appended, skip=2 if writer == "TensorBoard" else 0)
    status, err = run(capsys, "train", "--out", out, *TRAIN_ON_DISK)
    assert small_disk.filler.exists(), "the disk was never filled"
    assert status == 2
    disk_full(err, out / "config.json" if writer == "config.json" else None)
    assert notes.read_text() == "the user's own file on the same disk"
    saved = [load_checkpoint(path, "gan")["step"] for path in checkpoints(out)]  # every checkpoint left is whole
    assert saved == ([] if writer == "config.json" else [20])
    no_temporary_files(small_disk.path)
    small_disk.monkeypatch.undo()
    small_disk.free()  # space freed: the same command resumes (from step 20) and finishes
    status, err = run(capsys, "train", "--out", out, *TRAIN_ON_DISK)
    assert status == 0, err
    from labkit.gan import load_run
    assert [r["step"] for r in load_run(out).history] == list(range(1, 41))
    assert [path.name for path in checkpoints(out)] == ["step-000020.pt", "step-000040.pt"]
    assert notes.read_text() == "the user's own file on the same disk"
    no_temporary_files(small_disk.path)


def test_a_real_full_disk_while_extending_leaves_no_half_run(workdir, capsys, small_disk, a_trained_run):
    import shutil

    source = small_disk.path / "run"
    shutil.copytree(a_trained_run, source, ignore=shutil.ignore_patterns(".lock*"))
    before = snapshot(small_disk.path)
    small_disk.fill_when_written(r"^step-000020\.pt$")  # the copy of the checkpoint the new run starts from
    status, err = run(capsys, "extend", "--run", source, "--num_training_steps", 30, "--quiet")
    assert status == 2
    disk_full(err)
    assert {p: v for p, v in snapshot(small_disk.path).items() if p.name != "filler"} == before
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["filler", "run"]  # no .partial folder left
    small_disk.monkeypatch.undo()
    small_disk.free()
    status, err = run(capsys, "extend", "--run", source, "--num_training_steps", 30, "--quiet")
    assert status == 0, err
    no_temporary_files(small_disk.path)


def test_a_real_full_disk_while_sampling_keeps_the_old_image(workdir, capsys, small_disk):
    out = trained(capsys, workdir / "run", steps=10)
    photo = small_disk.path / "grid.png"
    status, err = run(capsys, "sample", "--run", out, "--out", photo)
    assert status == 0, err
    before = photo.read_bytes()
    small_disk.fill_when_written(r"^\.grid\.png\..*\.tmp")
    status, err = run(capsys, "sample", "--run", out, "--out", photo, "--seed", 1, "--force")
    assert status == 2
    disk_full(err, photo)
    assert photo.read_bytes() == before
    no_temporary_files(small_disk.path)


def test_a_real_full_cache_disk_costs_time_not_the_result(workdir, capsys, small_disk, monkeypatch):
    import labkit.metrics

    monkeypatch.setattr(labkit.metrics, "_warned", {})
    monkeypatch.setenv("LABKIT_CACHE", str(small_disk.path / "cache"))
    out = trained(capsys, workdir / "run", steps=10)
    small_disk.fill_when_written(r"^\.mnist-train-.*\.npz\..*\.tmp")
    status = main(["fid", "--run", str(out), "--count", "100", "--backbone", "mnist", "--quiet"])
    captured = capsys.readouterr()
    assert small_disk.filler.exists() and status == 0
    assert "MNIST-FID (pad, 100 real vs 100 generated)" in captured.out
    warning = [line for line in captured.err.splitlines() if line.strip()]
    assert len(warning) == 1 and warning[0].startswith("labkit: warning: could not cache real-image statistics")
    assert "No space left on device" in warning[0]
    assert not list((small_disk.path / "cache" / "fid_stats").iterdir())  # nothing half-written left
    no_temporary_files(small_disk.path)


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
    import labkit.cli

    def interrupted(*args, **kwargs):  # as if Ctrl-C came while torch was being imported
        raise KeyboardInterrupt

    monkeypatch.setattr(labkit.cli, "build_parser", interrupted)
    status, err = run(capsys, "train")
    assert status == 130 and err == ["labkit: interrupted; run the same command again to resume from the last "
                                     "checkpoint"]


def test_ctrl_c_during_the_imports_of_the_real_command(workdir):
    process = subprocess.Popen([sys.executable, "-m", "labkit.cli", "train", "--num_training_steps", "10", *TINY],
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
    from labkit.cli import ctrl_c_held_back

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
from labkit.cli import main
import labkit.gan, labkit.data
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
