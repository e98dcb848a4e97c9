import csv
import math

import pytest
import torch

from labkit.runs.checkpoints import CheckpointError, latest_checkpoint, load_checkpoint, save_atomic
from labkit.gan import build_models, extend, HISTORY_COLUMNS, load_run, train, TrainConfig, TrainingDiverged

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
    # The newest checkpoint and the one before it, to fall back to.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000010.pt", "step-000020.pt"]
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
    assert latest_checkpoint(tmp_path / "resumed").name == "step-000025.pt"  # stopped there, at a checkpoint
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
    # Other steps are other settings too: the folder's run is not stretched in place ...
    with pytest.raises(ValueError, match="num_training_steps=10 there vs 20 now.*extend it"):
        train(TrainConfig(num_training_steps=20, **TINY), tmp_path / "run", progress=False)
    # ... but a run can be extended into a new run; the original stays as it was.
    longer = extend(tmp_path / "run", 20, progress=False)
    assert longer.history[-1]["step"] == 20 and longer.path.name == longer.config.name
    assert load_run(tmp_path / "run").step == 10 and load_run(tmp_path / "run").config.num_training_steps == 10


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
    assert state["optimizers"]["generator"]["param_groups"][0]["lr"] == 1e-3
    assert state["optimizers"]["discriminator"]["param_groups"][0]["lr"] == 5e-5


def test_diverging_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import labkit.gan
    from labkit.data import BatchSampler, load_mnist

    config = TrainConfig(num_training_steps=40, **TINY)
    # One NaN image that first enters training in step 15's batch.
    poisoned = BatchSampler(60000, config.batch_size, config.seed).indices(14)[0]

    def load_poisoned(split, device="cpu", pipeline="pad"):
        images, labels = load_mnist(split, device=device, pipeline=pipeline)
        images = images.clone()
        images[poisoned] = float("nan")
        return images, labels

    monkeypatch.setattr(labkit.gan, "load_mnist", load_poisoned)
    with pytest.raises(TrainingDiverged, match=r"at step 15\b.*step-000010\.pt"):
        train(config, tmp_path / "run", progress=False)
    assert latest_checkpoint(tmp_path / "run").name == "step-000010.pt"
    good = load_checkpoint(latest_checkpoint(tmp_path / "run"), "gan")
    assert all(torch.isfinite(v).all() for v in good["models"]["generator"].values())


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    from labkit.runs.checkpoints import make_checkpoint

    path = tmp_path / "ckpt.pt"
    save_atomic(make_checkpoint("gan", 1, {}, {}), path)

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError):
        save_atomic(make_checkpoint("gan", 2, {}, {}), path)
    monkeypatch.undo()
    assert load_checkpoint(path, "gan")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


def test_corrupt_and_foreign_checkpoints_are_reported(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(bad, "gan")
    save_atomic({"kind": "vae"}, tmp_path / "vae.pt")
    with pytest.raises(CheckpointError, match="not a labkit gan checkpoint"):
        load_checkpoint(tmp_path / "vae.pt", "gan")
    save_atomic({"kind": "gan", "step": 3}, tmp_path / "old.pt")  # an older labkit's layout
    with pytest.raises(CheckpointError, match="another version of labkit"):
        load_checkpoint(tmp_path / "old.pt", "gan")


@pytest.mark.parametrize("field, value", [("num_training_steps", 0), ("batch_size", -1),
                                          ("learning_rate", 0.0), ("beta1", 1.0), ("d_every", 0)])
def test_bad_config_values_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_mlp_gan_trains(tmp_path):
    run = train(TrainConfig(num_training_steps=10, use_mlp=True, **TINY), tmp_path / "mlp", progress=False)
    assert run.generator.__class__.__name__ == "MLPGenerator" and len(run.history) == 2


def test_the_losses_are_the_course_bce_and_stay_finite_when_d_is_sure():
    from labkit.solutions import discriminator_loss, generator_loss

    logits = torch.tensor([-30.0, -3.0, 0.0, 0.4, 5.0, 30.0])
    prob = torch.sigmoid(logits)
    bce = torch.nn.BCELoss()
    # Where float32 can still tell the probability from 0 and 1, they are nn.BCELoss of the probabilities.
    ok = slice(1, 5)
    assert discriminator_loss(logits[ok], logits[ok]).item() == pytest.approx(
        (bce(prob[ok], torch.ones(4)) + bce(prob[ok], torch.zeros(4))).item(), rel=1e-5)
    assert generator_loss(logits[ok]).item() == pytest.approx(bce(prob[ok], torch.ones(4)).item(), rel=1e-5)
    # A sure D. In float32 sigmoid(s) is exactly 1 from s = 16.64, but exactly 0 only below s = -88.72.
    assert torch.sigmoid(torch.tensor(30.0)).item() == 1.0 and torch.sigmoid(torch.tensor(-30.0)).item() > 0
    assert torch.sigmoid(torch.tensor(-200.0)).item() == 0.0
    # G's fake scored -200 (D is sure it is fake). On probabilities nn.BCELoss clamps log(0) at -100: the loss
    # stops at 100 and G gets no gradient at all. On logits the loss is exact, 200, with gradient -1.
    s_prob = torch.tensor([-200.0], requires_grad=True)
    on_probabilities = bce(torch.sigmoid(s_prob), torch.ones(1))
    on_probabilities.backward()
    assert on_probabilities.item() == pytest.approx(100.0) and s_prob.grad.item() == 0.0
    s_logit = torch.tensor([-200.0], requires_grad=True)
    loss = generator_loss(s_logit)
    loss.backward()
    assert loss.item() == pytest.approx(200.0, rel=1e-6) and s_logit.grad.item() == pytest.approx(-1.0)
    # The saturating loss log(1 - D(G(z))) has almost no gradient there (-sigmoid(s) = -9e-14 at s = -30):
    # why G maximises log D(G(z)) instead.
    s_sat = torch.tensor([-30.0], requires_grad=True)
    torch.log(1 - torch.sigmoid(s_sat)).sum().backward()
    assert abs(s_sat.grad.item()) < 1e-12
    assert torch.isnan(discriminator_loss(torch.tensor([float("nan")]), torch.zeros(1)))


def test_a_saturated_discriminator_with_a_large_learning_rate_trains_on(tmp_path):
    """With D's learning rate at 0.01, D is sure within a few dozen steps; the losses must not turn NaN.

    (On probabilities, this run died with NaN at step 85 on labkit 0.1.)
    """
    run = train(TrainConfig(num_training_steps=300, discriminator_learning_rate=0.01, logging_steps=50,
                            saving_steps=300, device="cpu"), tmp_path / "run", progress=False)
    assert run.step == 300 and all(math.isfinite(r["generator_loss"]) for r in run.history)
    assert max(r["D_x"] for r in run.history) > 0.99  # it did saturate


def test_a_misspelt_setting_is_an_error_that_names_the_right_one(tmp_path):
    with pytest.raises(ValueError, match="TrainConfig has no setting 'latnet_dim'; did you mean 'latent_dim'"):
        train(TrainConfig(**TINY), tmp_path / "run", latnet_dim=32, progress=False)
    assert not (tmp_path / "run").exists()


def test_the_run_name_says_every_setting_that_changes_what_is_learned():
    assert TrainConfig().name == "dcgan_z16_g16_d16_steps5000_seed2022"
    assert TrainConfig(num_training_steps=300).name != TrainConfig().name
    assert TrainConfig(d_every=2, discriminator_learning_rate=5e-5).name == \
        "dcgan_z16_g16_d16_steps5000_seed2022_dlr5e-05_devery2"
    # Learning rates are spelt exactly (two different rates never share a folder), and only the rates in effect
    # count: one rate for both is `lr`, and learning_rate means nothing once both rates are given.
    assert TrainConfig(discriminator_learning_rate=1.5e-4).name.endswith("_dlr0.00015")
    assert TrainConfig(discriminator_learning_rate=1.5e-4).name != TrainConfig(discriminator_learning_rate=2e-4 - 1e-9).name
    assert TrainConfig(learning_rate=1e-3).name.endswith("_lr0.001")
    assert TrainConfig(learning_rate=1e-3).name == TrainConfig(generator_learning_rate=1e-3,
                                                               discriminator_learning_rate=1e-3).name
    assert TrainConfig(learning_rate=1e-3, generator_learning_rate=1e-4, discriminator_learning_rate=5e-5).name == \
        TrainConfig(generator_learning_rate=1e-4, discriminator_learning_rate=5e-5).name == \
        "dcgan_z16_g16_d16_steps5000_seed2022_glr0.0001_dlr5e-05"
    assert TrainConfig(discriminator_learning_rate=2e-4).name == TrainConfig().name  # the default, spelt out
    assert TrainConfig(discriminator_activation="relu").name.endswith("_relu")
    assert TrainConfig(batch_norm=False).name.endswith("_nobn")
    assert TrainConfig(discriminator_bias=False, pipeline="resize").name == \
        "dcgan_z16_g16_d16_steps5000_seed2022_dnobias_resize"
    assert TrainConfig(use_mlp=True, discriminator_bias=False).name == "mlp_z16_steps5000_seed2022"  # no conv D
    assert TrainConfig(use_mlp=True, mlp_discriminator_batch_norm=True).name == "mlp_z16_steps5000_seed2022_dbn"
    assert TrainConfig(use_mlp=True, generator_hidden_dim=64).name == "mlp_z16_steps5000_seed2022"  # no hidden size
    # Logging, saving and the device do not change what is learned, so they are not in it.
    assert TrainConfig(logging_steps=1, saving_steps=7, device="cpu").name == TrainConfig().name
    # Every DCGAN setting is in the name, but those three (a new setting must say which it is).
    # (use_mlp and mlp_discriminator_batch_norm are checked above.)
    from dataclasses import fields
    from labkit.runs.config import RUN_ONLY
    names = {TrainConfig().name}
    for f in fields(TrainConfig):
        if f.name in RUN_ONLY or f.name in ("use_mlp", "mlp_discriminator_batch_norm"):
            continue
        value = {int: 3, float: 0.125, bool: not f.default, str: "relu"}.get(type(f.default), 0.125)
        if f.name == "code":
            value = "student-12345678"
        if f.name == "pipeline":
            value = "resize"  # the one setting whose text has only two values
        names.add(TrainConfig(**{f.name: value}).name)
    assert len(names) == 1 + len(fields(TrainConfig)) - len(RUN_ONLY) - 2


def test_reading_and_training_leave_the_callers_state_alone(tmp_path):
    config = TrainConfig(num_training_steps=10, **TINY)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train(config, tmp_path / "run", progress=False)
    assert torch.equal(torch.get_rng_state(), before)  # training forks the RNG
    train(config, tmp_path / "run", progress=False)  # a finished run: loaded
    assert torch.equal(torch.get_rng_state(), before)
    # A student's frozen layer stays frozen through the GAN step, and modes come back.
    from labkit import analysis
    from labkit.gan import frozen
    run = load_run(tmp_path / "run")
    D = run.discriminator
    D.net[0].weight.requires_grad_(False)
    with frozen(D):
        assert not any(p.requires_grad for p in D.parameters())
    assert not D.net[0].weight.requires_grad and D.net[0].bias.requires_grad
    G = run.generator.train()
    analysis.interpolate(G, torch.zeros(1, 16), torch.ones(1, 16), steps=3)
    assert G.training and all(m.training for m in G.modules())


def test_loading_a_finished_run_writes_nothing(tmp_path, capsys):
    config = TrainConfig(num_training_steps=10, **TINY)
    train(config, tmp_path / "run", progress=False)
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
    for p in files:
        p.chmod(0o555 if p.is_dir() else 0o444)
    (tmp_path / "run").chmod(0o555)
    try:
        run = train(config, tmp_path / "run")  # a read-only finished run is loaded
        assert "found the finished run" in capsys.readouterr().out
        assert run.step == 10 and load_run(tmp_path / "run").history == run.history
    finally:
        for p in [tmp_path / "run", *files]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")} == files


def test_extending_a_run_equals_training_it_straight(tmp_path):
    straight = train(TrainConfig(num_training_steps=30, **TINY), tmp_path / "straight", progress=False)
    short = train(TrainConfig(num_training_steps=20, **TINY), tmp_path / "short", progress=False)
    longer = extend(short, 30, out_dir=tmp_path / "longer", progress=False)
    assert same(weights(straight.generator), weights(longer.generator))
    assert longer.history == straight.history
    assert load_run(tmp_path / "short").step == 20
