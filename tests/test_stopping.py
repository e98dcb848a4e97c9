"""Stopping a run: Ctrl-C ends it at a checkpoint of the current step, in one line, and a resumed run ends
with exactly the weights of one never stopped (labkit/runs/stopping.py, labkit/runs/training.py)."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from jupyter_client.manager import start_new_kernel

from labkit.experiments.together import train_together
from labkit.gan import train, TrainConfig
from labkit.runs.checkpoints import checkpoint_path, checkpoints, load_checkpoint
from labkit.runs.stopping import TrainingStopped
from labkit.vae import train_vae, VAEConfig

TINY = dict(generator_hidden_dim=8, discriminator_hidden_dim=8, batch_size=16, logging_steps=5, saving_steps=10,
            device="cpu")
STOPPED = re.compile(r"labkit: stopped at step (\d+) of (\d+); run (this cell|the same command) again to resume")


def stop_at(step):
    """An on_log that raises KeyboardInterrupt at `step`, as a Ctrl-C there would."""
    def on_log(*args):
        if args[-1]["step"] == step:
            raise KeyboardInterrupt
    return on_log


def same_weights(a, b):
    return all(torch.equal(value, b.state_dict()[key]) for key, value in a.state_dict().items())


def files(run_dir):
    return sorted(str(p.relative_to(run_dir)) for p in Path(run_dir).rglob("*")
                  if p.is_file() and "tensorboard" not in p.parts and not p.name.startswith(".lock"))


def test_a_stopped_run_saves_its_step_and_resumes_to_the_same_weights(tmp_path):
    config = TrainConfig(num_training_steps=30, **TINY)
    straight = train(config, tmp_path / "straight", progress=False)
    with pytest.raises(TrainingStopped) as stopped:
        train(config, tmp_path / "run", progress=False, on_log=stop_at(15))
    assert STOPPED.fullmatch(str(stopped.value)) and stopped.value.step == 15
    assert "\n" not in str(stopped.value)
    assert checkpoint_path(tmp_path / "run", 15).is_file()  # the current step, not the last regular one (10)
    resumed = train(config, tmp_path / "run", progress=False)
    assert same_weights(straight.generator, resumed.generator)
    assert same_weights(straight.discriminator, resumed.discriminator)
    assert resumed.history == straight.history
    # The interim checkpoint is gone, and it drew no sample grid: the folder is as if never stopped.
    assert files(tmp_path / "run") == files(tmp_path / "straight")


def test_checkpoints_every_few_minutes_leave_the_run_as_it_would_be(tmp_path):
    config = TrainConfig(num_training_steps=30, **TINY)
    straight = train(config, tmp_path / "straight", progress=False, checkpoint_minutes=0)
    seen = []

    def look(row):  # at step 25, the interim checkpoint of step 24 is there (one after every step)
        if row["step"] == 25:
            seen.extend(p.name for p in checkpoints(tmp_path / "run"))

    run = train(config, tmp_path / "run", progress=False, on_log=look, checkpoint_minutes=1e-9)
    assert "step-000024.pt" in seen and "step-000020.pt" in seen
    assert same_weights(straight.generator, run.generator) and run.history == straight.history
    assert files(tmp_path / "run") == files(tmp_path / "straight")


def test_a_stopped_vae_and_stacked_seeds_resume_to_the_same_weights(tmp_path, monkeypatch):
    vae_config = VAEConfig(latent_dim=3, batch_size=16, num_training_steps=20, logging_steps=5, saving_steps=10,
                           dev_size=200, device="cpu")
    straight = train_vae(vae_config, tmp_path / "vae_straight", progress=False)
    handler = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as patch:  # Ctrl-C during step 13's backward pass
        real_backward = torch.Tensor.backward
        calls = []

        def backward(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 13:
                os.kill(os.getpid(), signal.SIGINT)
            return real_backward(self, *args, **kwargs)

        patch.setattr(torch.Tensor, "backward", backward)
        with pytest.raises(TrainingStopped, match="stopped at step 13 of 20"):
            train_vae(vae_config, tmp_path / "vae", progress=False)
    assert checkpoint_path(tmp_path / "vae", 13).is_file()
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C does again what it did before
    resumed = train_vae(vae_config, tmp_path / "vae", progress=False)
    assert same_weights(straight.vae, resumed.vae) and resumed.history == straight.history

    config, seeds = TrainConfig(num_training_steps=20, **TINY), [1, 2]
    together = train_together(config, seeds, [tmp_path / f"a{s}" for s in seeds], progress=False)
    with pytest.raises(TrainingStopped, match="stopped at step 15 of 20"):
        train_together(config, seeds, [tmp_path / f"b{s}" for s in seeds], progress=False,
                       on_log=lambda seed, row: stop_at(15)(row))
    assert all(checkpoint_path(tmp_path / f"b{s}", 15).is_file() for s in seeds)
    resumed = train_together(config, seeds, [tmp_path / f"b{s}" for s in seeds], progress=False)
    for before, after in zip(together, resumed):
        assert same_weights(before.generator, after.generator)


def test_ctrl_c_stops_the_real_command_at_a_checkpoint_in_one_line(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "labkit.cli", "train", "--num_training_steps", "100000", "--logging_steps", "5",
               "--generator_hidden_dim", "8", "--discriminator_hidden_dim", "8", "--batch_size", "16", "--no_cuda",
               "--quiet", "--out", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "LABKIT_RUNS": str(tmp_path / "runs")})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:  # wait until it has logged two rows
        history = out / "history.csv"
        if history.is_file() and len(history.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 130 and len(lines) == 1, err
    said = STOPPED.fullmatch(lines[0])
    assert said and said[2] == "100000" and said[3] == "the same command", lines
    step = int(said[1])
    state = load_checkpoint(checkpoint_path(out, step), "gan")
    # Its weights are those of a run trained straight to that step.
    straight = train(TrainConfig(num_training_steps=step, **{**TINY, "logging_steps": 5}), tmp_path / "straight",
                     progress=False)
    for key, value in straight.generator.state_dict().items():
        assert torch.equal(value, state["models"]["generator"][key]), key


def test_kernel_interrupt_in_a_notebook_shows_one_line_and_no_traceback(tmp_path):
    """What JupyterLab shows for a cell is what the kernel sends: its error message, and any text."""
    out = tmp_path / "run"
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        request = client.execute(f"from labkit.gan import train, TrainConfig\n"
                       f"train(TrainConfig(num_training_steps=100000, generator_hidden_dim=8, "
                       f"discriminator_hidden_dim=8, batch_size=16, logging_steps=5, device='cpu'), {str(out)!r}, "
                       f"progress=False)")
        deadline = time.monotonic() + 120
        history = out / "history.csv"
        while time.monotonic() < deadline and not (history.is_file() and len(history.read_text().splitlines()) >= 3):
            time.sleep(0.05)
        manager.interrupt_kernel()
        errors, texts = [], []
        while True:
            message = client.get_iopub_msg(timeout=120)
            if message["parent_header"].get("msg_id") != request:
                continue  # the kernel's start, not this cell
            kind, content = message["msg_type"], message["content"]
            if kind == "error":
                errors.append(content)
            elif kind == "stream":
                texts.append(content["text"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert len(errors) == 1 and len(errors[0]["traceback"]) == 1, errors
    said = STOPPED.fullmatch(errors[0]["traceback"][0])
    assert said and said[3] == "this cell", errors
    assert checkpoint_path(out, int(said[1])).is_file()
    assert "".join(texts).strip() == ""


def cell_messages(code, cwd, env=None):
    """(msg_type, content) of every iopub message one cell sends in a fresh kernel, until it is idle."""
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(cwd), env=env)
    try:
        request, found = client.execute(code), []
        while True:
            message = client.get_iopub_msg(timeout=600)
            if message["parent_header"].get("msg_id") != request:
                continue
            found.append((message["msg_type"], message["content"]))
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                return found
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_progress_in_a_notebook_is_text_that_a_saved_notebook_keeps(tmp_path):
    """The student pass: after save and reopen every FID bar was "Error displaying widget: model not found" (a
    widget whose model died with the kernel), and a sweep's stacked-seed bar printed a new line every second (the
    cursor-up a nested text bar writes, which a notebook ignores). Now: no widget at all, and no cursor-up."""
    code = (f"from labkit.experiments.sweep import sweep\nfrom labkit.gan import TrainConfig\n"
            f"from labkit.metrics import generator_fid\n"
            f"base = TrainConfig(num_training_steps=40, logging_steps=5, batch_size=16, device='cpu')\n"
            f"runs, _ = sweep([16], [8], [2022, 2023], {str(tmp_path / 'runs')!r}, base, fid_count=20, "
            f"backbone='mnist', together=True)\n"
            f"assert [r['status'] for r in runs] == ['done', 'done'], runs\n")
    messages = cell_messages(code, tmp_path, env=dict(os.environ, LABKIT_PROFILE="smoke"))
    assert not [c for kind, c in messages if kind == "error"], messages
    assert not [kind for kind, _ in messages if kind.startswith("comm_")]  # a widget opens a comm
    assert not [c for kind, c in messages if kind in ("display_data", "update_display_data")
                and "application/vnd.jupyter.widget-view+json" in c["data"]]
    stdout = "".join(c["text"] for kind, c in messages if kind == "stream" and c["name"] == "stdout")
    everything = "".join(c["text"] for kind, c in messages if kind == "stream")
    assert "2 seeds:" in stdout and "40/40" in stdout and "mnist features" in stdout  # the bars, as text
    assert "labkit: training seeds 2022, 2023 of dcgan_z16_g8_d8 together" in stdout
    assert "\x1b[A" not in everything  # drawn in place with "\r", never by moving the cursor up
