import csv

import pytest
import torch

from labkit.checkpoints import CheckpointError, latest_checkpoint, load_checkpoint, save_atomic
from labkit.train import HISTORY_COLUMNS, TrainConfig, TrainingDiverged, build_models, load_run, train

# Small enough for CI: hidden 8 steps take a few milliseconds on a CPU.
TINY = dict(generator_hidden_dim=8, discriminator_hidden_dim=8, logging_steps=5, saving_steps=10, device="cpu")


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_step_changes_both_networks(tmp_path):
    config = TrainConfig(num_training_steps=1, **TINY)
    torch.manual_seed(config.seed)
    G0, D0 = build_models(config)
    run = train(config, tmp_path / "run", progress=False)
    for before, after in ((G0, run.generator), (D0, run.discriminator)):
        changed = [k for k, v in after.state_dict().items() if k.endswith("weight")
                   and not torch.equal(v, before.state_dict()[k])]
        assert changed, "a training step left a network untouched"


def test_run_folder_history_and_checkpoint_round_trip(tmp_path):
    out = tmp_path / "run"
    run = train(TrainConfig(num_training_steps=20, **TINY), out, progress=False)
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == HISTORY_COLUMNS
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    for r in rows:
        for key in ("D_x", "D_G_z1", "D_G_z2"):
            assert 0 < float(r[key]) < 1
        assert float(r["discriminator_loss"]) > 0 and float(r["generator_loss"]) > 0
    assert run.column("step") == [5, 10, 15, 20]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-000010.png", "step-000020.png"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000020.pt"]  # only the newest is kept
    assert any((out / "tensorboard").glob("events.out.tfevents.*"))
    loaded = load_run(out)
    assert loaded.step == 20 and loaded.config == run.config and loaded.history == run.history
    assert same(weights(loaded.generator), weights(run.generator))
    assert same(weights(loaded.discriminator), weights(run.discriminator))


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    config = TrainConfig(num_training_steps=30, **TINY)
    straight = train(config, tmp_path / "straight", progress=False)

    def interrupt(row):
        if row["step"] == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", progress=False, on_log=interrupt)
    assert latest_checkpoint(tmp_path / "resumed").name == "step-000020.pt"
    resumed = train(config, tmp_path / "resumed", progress=False)
    assert same(weights(straight.generator), weights(resumed.generator))
    assert same(weights(straight.discriminator), weights(resumed.discriminator))
    assert resumed.history == straight.history  # rows logged after the checkpoint were redone once
    # A finished run is returned as it is, without training.
    again = train(config, tmp_path / "resumed", progress=False, on_log=interrupt)
    assert again.step == 30


def test_resuming_with_other_settings_is_refused(tmp_path):
    train(TrainConfig(num_training_steps=10, **TINY), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="latent_dim=16 there vs 32 now"):
        train(TrainConfig(num_training_steps=10, **{**TINY, "generator_hidden_dim": 8}), tmp_path / "run",
              latent_dim=32, progress=False)
    # More steps is allowed: the run continues.
    longer = train(TrainConfig(num_training_steps=20, **TINY), tmp_path / "run", progress=False)
    assert longer.history[-1]["step"] == 20


def test_d_every_skips_discriminator_updates(tmp_path):
    run = train(TrainConfig(num_training_steps=20, d_every=2, **TINY), tmp_path / "run", progress=False)
    assert run.column("d_updates") == [3, 5, 8, 10]  # steps 1, 3, 5, ... update D


def test_loss_ratio_pause_freezes_the_discriminator(tmp_path):
    one_step = train(TrainConfig(num_training_steps=1, **TINY), tmp_path / "one", progress=False)
    # loss_D / loss_G never reaches 1000, so after step 1 (which has no loss_G to
    # compare with yet) D is paused for good.
    paused = train(TrainConfig(num_training_steps=10, d_pause_ratio=1000.0, **TINY), tmp_path / "paused",
                   progress=False)
    assert paused.column("d_updates") == [1, 1]
    # Its parameters stay put (BatchNorm's running statistics still follow the batches).
    params = lambda m: {k: v.detach().clone() for k, v in m.named_parameters()}  # noqa: E731
    assert same(params(paused.discriminator), params(one_step.discriminator))
    unpaused = train(TrainConfig(num_training_steps=10, **TINY), tmp_path / "on", progress=False)
    assert unpaused.column("d_updates") == [5, 10]


def test_separate_learning_rates_reach_the_optimizers(tmp_path):
    train(TrainConfig(num_training_steps=10, generator_learning_rate=1e-3, discriminator_learning_rate=5e-5,
                      **TINY), tmp_path / "run", progress=False)
    state = load_checkpoint(latest_checkpoint(tmp_path / "run"), "gan")
    assert state["opt_generator"]["param_groups"][0]["lr"] == 1e-3
    assert state["opt_discriminator"]["param_groups"][0]["lr"] == 5e-5


def test_diverging_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import labkit.train
    from labkit.data import BatchSampler, load_mnist

    config = TrainConfig(num_training_steps=40, **TINY)
    # One NaN image that first enters training in step 15's batch.
    poisoned = BatchSampler(60000, config.batch_size, config.seed).indices(14)[0]

    def load_poisoned(split, device="cpu"):
        images, labels = load_mnist(split, device=device)
        images = images.clone()
        images[poisoned] = float("nan")
        return images, labels

    monkeypatch.setattr(labkit.train, "load_mnist", load_poisoned)
    with pytest.raises(TrainingDiverged, match=r"at step 15\b.*step-000010\.pt"):
        train(config, tmp_path / "run", progress=False)
    assert latest_checkpoint(tmp_path / "run").name == "step-000010.pt"
    good = load_checkpoint(latest_checkpoint(tmp_path / "run"), "gan")
    assert all(torch.isfinite(v).all() for v in good["generator"].values())


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_atomic({"kind": "gan", "step": 1}, path)

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError):
        save_atomic({"kind": "gan", "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path, "gan")["step"] == 1


def test_corrupt_and_foreign_checkpoints_are_reported(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(bad, "gan")
    save_atomic({"kind": "vae"}, tmp_path / "vae.pt")
    with pytest.raises(CheckpointError, match="not a labkit gan checkpoint"):
        load_checkpoint(tmp_path / "vae.pt", "gan")


@pytest.mark.parametrize("field, value", [("num_training_steps", 0), ("batch_size", -1),
                                          ("learning_rate", 0.0), ("beta1", 1.0), ("d_every", 0)])
def test_bad_config_values_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_mlp_gan_trains(tmp_path):
    run = train(TrainConfig(num_training_steps=10, use_mlp=True, **TINY), tmp_path / "mlp", progress=False)
    assert run.generator.__class__.__name__ == "MLPGenerator" and len(run.history) == 2


def test_bce_equals_torch_bce_loss():
    from labkit.train import bce

    prob = torch.tensor([1e-30, 1e-6, 0.3, 0.5, 0.999, 1.0, 0.0])
    for target in (torch.ones(7), torch.zeros(7)):
        assert torch.allclose(bce(prob, target), torch.nn.BCELoss()(prob, target), rtol=1e-6)
    assert torch.isnan(bce(torch.tensor([float("nan")]), torch.ones(1)))
