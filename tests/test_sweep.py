import csv
import json
from dataclasses import replace

import pytest

from labkit.experiments.sweep import format_table, grid, parse_shard, sweep, table
from labkit.gan import TrainConfig

BASE = TrainConfig(num_training_steps=10, logging_steps=5, saving_steps=10, device="cpu")


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sweep_writes_runs_and_summary_then_skips_finished_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sweep"
    runs, summary = sweep([8, 16], [8], [1, 2], tmp_path / "runs", BASE, fid_count=100, backbone="mnist",
                          progress=False, out_dir=out)
    # Each run in its own folder beside the notebooks' runs, named by its settings.
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(
        f"dcgan_z{z}_g8_d8_steps10_seed{s}" for z in (8, 16) for s in (1, 2))
    assert (tmp_path / "runs" / "dcgan_z8_g8_d8_steps10_seed1" / "fid_mnist_100.json").is_file()
    assert [(r["latent_dim"], r["hidden_dim"], r["seed"]) for r in runs] == grid([8, 16], [8], [1, 2])
    assert all(r["status"] == "done" and r["fid"] > 0 and r["fid_n"] == 100 for r in runs)
    rows = read(out / "runs.csv")
    assert len(rows) == 4 and rows[0]["fid_backbone"] == "mnist" and 0 < float(rows[0]["D_x"]) < 1
    first = [r for r in runs if r["latent_dim"] == 8]
    s = {(r["latent_dim"], r["hidden_dim"]): r for r in summary}[(8, 8)]
    assert s["count"] == 2 and s["fid_best"] == min(r["fid"] for r in first)
    assert s["fid_mean"] == pytest.approx(sum(r["fid"] for r in first) / 2)
    assert len(read(out / "summary.csv")) == 2
    assert table(summary, [8, 16], [8]).shape == (2, 1) and "±" in format_table(summary, [8, 16], [8])
    # Rerun: nothing is trained again.
    import labkit.experiments.sweep
    monkeypatch.setattr(labkit.experiments.sweep, "run_one", lambda *a, **k: pytest.fail("a finished run was redone"))
    again, _ = sweep([8, 16], [8], [1, 2], tmp_path / "runs", BASE, fid_count=100, backbone="mnist",
                     progress=False, out_dir=out)
    assert again == runs


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    import labkit.experiments.sweep

    real_run_one = labkit.experiments.sweep.run_one

    def flaky(config, *args, **kwargs):
        if config.seed == 1:
            raise RuntimeError("out of memory")
        return real_run_one(config, *args, **kwargs)

    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(labkit.experiments.sweep, "run_one", flaky)
    runs, summary = sweep([8], [8], [1, 2], tmp_path / "s", BASE, fid_count=100, backbone="mnist",
                          together=False, progress=False)
    assert [r["status"] for r in runs] == ["failed: RuntimeError: out of memory", "done"]
    tables = tmp_path / "s" / "sweeps" / "dcgan_z8_h8_steps10_seeds1-2_mnist100"
    assert len(read(tables / "runs.csv")) == 2 and read(tables / "summary.csv")[0]["count"] == "1"
    assert summary[0]["count"] == 1
    monkeypatch.setattr(labkit.experiments.sweep, "run_one", real_run_one)  # the retry on rerun succeeds
    runs, _ = sweep([8], [8], [1, 2], tmp_path / "s", BASE, fid_count=100, backbone="mnist", together=False,
                    progress=False)
    assert [r["status"] for r in runs] == ["done", "done"]


def test_seeds_trained_together_give_the_same_table_as_one_by_one(tmp_path, monkeypatch):
    import labkit.experiments.sweep

    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    stacks = []
    real_train_together = labkit.experiments.sweep.train_together
    monkeypatch.setattr(labkit.experiments.sweep, "train_together",
                        lambda config, seeds, *a, **k: stacks.append(seeds) or real_train_together(config, seeds, *a, **k))
    config = dict(base=BASE, fid_count=100, backbone="mnist", progress=False)
    together, _ = sweep([8], [8, 16], [1, 2, 3], tmp_path / "together", together=None, **config)  # auto on a CPU
    assert stacks == [[1, 2, 3], [1, 2, 3]]
    in_turn, _ = sweep([8], [8, 16], [1, 2, 3], tmp_path / "in_turn", together=False, **config)
    assert len(stacks) == 2
    for a, b in zip(together, in_turn):
        assert (a["hidden_dim"], a["seed"], a["status"]) == (b["hidden_dim"], b["seed"], "done")
        assert a["fid"] == pytest.approx(b["fid"], rel=0.02) and a["D_x"] == pytest.approx(b["D_x"], abs=0.01)


def test_a_stack_that_fails_is_recorded_and_retried(tmp_path, monkeypatch):
    import labkit.experiments.sweep

    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    real_train_together = labkit.experiments.sweep.train_together

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(labkit.experiments.sweep, "train_together", out_of_memory)
    config = dict(base=BASE, fid_count=100, backbone="mnist", together=True, progress=False)
    runs, summary = sweep([8, 16], [8], [1, 2], tmp_path / "s", **config)
    assert [r["status"] for r in runs] == ["failed: RuntimeError: CUDA out of memory"] * 4
    assert [s["count"] for s in summary] == [0, 0]
    monkeypatch.setattr(labkit.experiments.sweep, "train_together", real_train_together)
    runs, summary = sweep([8, 16], [8], [1, 2], tmp_path / "s", **config)
    assert [r["status"] for r in runs] == ["done"] * 4 and [s["count"] for s in summary] == [2, 2]


def test_shards_split_the_grid_without_overlap(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    for k in (0, 1):
        sweep([8], [8], [1, 2, 3], tmp_path / "s", BASE, fid_count=100, backbone="mnist", shard=(k, 2),
              progress=False, out_dir=tmp_path / "tables")
    assert sorted(int(r["seed"]) for r in read(tmp_path / "tables" / "runs.csv")) == [1, 2, 3]
    assert json.loads((tmp_path / "tables" / "sweep.json").read_text())["seeds"] == [1, 2, 3]
    with pytest.raises(ValueError, match="K/N"):
        parse_shard("2/2")


def test_cli_sweep_prints_the_table(tmp_path, capsys, monkeypatch):
    from labkit.cli import main

    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path / "runs"))
    assert main(["sweep", "--latent_dims", "8", "--hidden_dims", "8", "--seeds", "2", "--fid_count", "100",
                 "--backbone", "mnist", "--num_training_steps", "10", "--no_cuda", "--quiet",
                 "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "MNIST-FID (pad), 100 vs 100 images" in out and "±" in out
    assert len(read(tmp_path / "s" / "runs.csv")) == 2 and (tmp_path / "runs" / "dcgan_z8_g8_d8_steps10_seed2022").is_dir()
    assert main(["sweep", "--latent_dims", "0", "--hidden_dims", "8", "--out", str(tmp_path / "t")]) == 2


def test_a_seed_trained_earlier_is_measured_alone_and_the_rest_stack(tmp_path, monkeypatch):
    """The lab's notebooks train seed 2022 before the sweep notebook runs; the sweep reuses it."""
    import labkit.experiments.sweep
    from labkit.gan import train

    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    config = replace(BASE, latent_dim=8, generator_hidden_dim=8, discriminator_hidden_dim=8, seed=1)
    train(config, tmp_path / "s" / config.name, progress=False)  # as notebook 1 would
    stacks = []
    real_train_together = labkit.experiments.sweep.train_together
    monkeypatch.setattr(labkit.experiments.sweep, "train_together",
                        lambda config, seeds, *a, **k: stacks.append(seeds) or real_train_together(config, seeds, *a, **k))
    runs, _ = sweep([8], [8], [1, 2, 3], tmp_path / "s", BASE, fid_count=100, backbone="mnist", together=True,
                    progress=False)
    assert stacks == [[2, 3]] and [r["status"] for r in runs] == ["done"] * 3


def test_together_with_a_setting_the_stack_cannot_honour_trains_the_seeds_one_by_one(tmp_path, monkeypatch, capsys):
    import labkit.experiments.sweep

    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(labkit.experiments.sweep, "train_together", lambda *a, **k: pytest.fail("it stacked a paused D"))
    paused = replace(BASE, d_pause_ratio=0.8)
    runs, _ = sweep([8], [8], [1, 2], tmp_path / "s", paused, fid_count=100, backbone="mnist", together=True,
                    progress=True)
    assert [r["status"] for r in runs] == ["done", "done"]
    assert "seeds one after another: d_pause_ratio lets each seed's own losses decide" in capsys.readouterr().out


def test_a_run_another_process_is_training_is_skipped_not_failed(tmp_path, monkeypatch):
    """Two sweeps on the same grid: each run is trained by one process only."""
    import subprocess
    import sys

    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    busy = tmp_path / "runs" / "dcgan_z8_g8_d8_steps10_seed1"
    busy.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from labkit.runs.folder import RunLock\n"
                               f"with RunLock({str(busy)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        runs, _ = sweep([8], [8], [1, 2], tmp_path / "runs", BASE, fid_count=100, backbone="mnist",
                        together=False, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert [(r["seed"], r["status"]) for r in runs] == [(2, "done")]  # seed 1 left to the other process
    assert sorted(p.name for p in busy.iterdir()) == [".lock", ".lock.owner"]  # nothing of a run
