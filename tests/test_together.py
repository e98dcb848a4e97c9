"""Seeds trained together (labkit.experiments.together) must give what separate runs give.

In float32 the two differ by rounding: a grouped convolution adds its terms
in another order, and Adam turns rounding noise in gradients that are
mathematically zero (a conv bias just before BatchNorm) into full-size steps
of +-lr. In float64 that noise is far below Adam's eps, so there the
comparison can be exact, and it is: the `float64` fixture runs both trainers
in double precision on the same MNIST.
"""

import math
import shutil

import pytest
import torch

import labkit.runs.training
import labkit.experiments.together
import labkit.gan
from labkit.runs.checkpoints import latest_checkpoint, load_checkpoint
from labkit.data import BatchSampler, load_mnist
from labkit.experiments.together import train_together
from labkit.gan import load_run, Run, train, TrainConfig, TrainingDiverged

CONFIG = TrainConfig(num_training_steps=20, logging_steps=5, saving_steps=10, device="cpu")


@pytest.fixture
def float64(monkeypatch, mnist_train):
    """Both trainers in double precision."""
    images, labels = mnist_train[0].double(), mnist_train[1]

    def load_mnist(split, device="cpu", pipeline=None):
        return images.to(device), labels

    monkeypatch.setattr(labkit.gan, "load_mnist", load_mnist)
    monkeypatch.setattr(labkit.experiments.together, "load_mnist", load_mnist)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def max_difference(a, b):
    """Largest difference between two state_dicts with the same keys."""
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def assert_same_run(together, separate, tolerance):
    assert isinstance(together, Run), together
    assert [r["step"] for r in together.history] == [r["step"] for r in separate.history]
    for row_t, row_s in zip(together.history, separate.history):
        for key, value in row_s.items():
            assert row_t[key] == pytest.approx(value, abs=tolerance), (row_t["step"], key)
    assert max_difference(together.generator.state_dict(), separate.generator.state_dict()) <= tolerance
    assert max_difference(together.discriminator.state_dict(), separate.discriminator.state_dict()) <= tolerance


@pytest.mark.parametrize("overrides", [
    {},  # the course's DCGAN
    {"use_mlp": True, "mlp_discriminator_batch_norm": True, "learning_rate": 1e-3, "d_every": 2},
], ids=["dcgan", "mlp"])
def test_each_seed_equals_its_separate_run_in_float64(tmp_path, float64, overrides):
    config = TrainConfig(**{**CONFIG.__dict__, **overrides})
    seeds = [1, 2, 3]
    together = train_together(config, seeds, [tmp_path / f"t{s}" for s in seeds], progress=False)
    for seed, result in zip(seeds, together):
        separate = train(config, tmp_path / f"s{seed}", progress=False, seed=seed)
        assert_same_run(result, separate, tolerance=1e-9)
        # What was written to the folder is what `train` writes, and reads back the same.
        reloaded = load_run(tmp_path / f"t{seed}")
        assert reloaded.config.seed == seed and reloaded.step == config.num_training_steps
        assert reloaded.history == result.history
        assert max_difference(reloaded.generator.state_dict(), separate.generator.state_dict()) <= 1e-9
        assert (tmp_path / f"t{seed}" / "samples" / "step-000020.png").is_file()
    # Different seeds learned different things.
    g1, g2 = together[0].generator.state_dict(), together[1].generator.state_dict()
    assert max_difference(g1, g2) > 1e-3


def test_in_float32_the_runs_agree_to_rounding(tmp_path):
    seeds = [5, 6]
    together = train_together(CONFIG, seeds, [tmp_path / f"t{s}" for s in seeds], progress=False)
    for seed, result in zip(seeds, together):
        separate = train(CONFIG, tmp_path / f"s{seed}", progress=False, seed=seed)
        for row_t, row_s in zip(result.history, separate.history):
            assert row_t["D_x"] == pytest.approx(row_s["D_x"], abs=0.01)
            assert row_t["generator_loss"] == pytest.approx(row_s["generator_loss"], rel=0.01)
        noise = torch.randn(64, CONFIG.latent_dim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            gap = (result.generator(noise) - separate.generator(noise)).abs().mean().item()
        assert gap < 0.01  # pixels lie in [-1, 1]


def test_together_runs_resume_together_or_alone(tmp_path, float64):
    seeds = [1, 2]
    dirs = [tmp_path / f"t{s}" for s in seeds]

    def stop_at_15(seed, row):
        if row["step"] == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_together(CONFIG, seeds, dirs, progress=False, on_log=stop_at_15)
    assert all(latest_checkpoint(d).name == "step-000015.pt" for d in dirs)  # stopped there, at a checkpoint
    # Both seeds resume together; a copy of seed 2's folder resumes with `train` alone, so the
    # checkpoint format is checked both ways.
    shutil.copytree(dirs[1], tmp_path / "alone")
    resumed = train_together(CONFIG, seeds, dirs, progress=False)
    alone = train(CONFIG, tmp_path / "alone", progress=False, seed=2)
    for seed, result in zip(seeds, resumed):
        separate = train(CONFIG, tmp_path / f"s{seed}", progress=False, seed=seed)
        assert_same_run(result, separate, tolerance=1e-9)
        assert [r["step"] for r in result.history] == [5, 10, 15, 20]
    assert_same_run(alone, resumed[1], tolerance=1e-9)
    # Finished runs return at once.
    again = train_together(CONFIG, seeds, dirs, progress=False)
    assert [r.step for r in again] == [20, 20]


def test_one_diverging_seed_stops_alone(tmp_path, monkeypatch):
    seeds = [1, 2]
    batches = [BatchSampler(60000, CONFIG.batch_size, seed) for seed in seeds]
    seen_by_seed_2 = torch.cat([batches[1].indices(step) for step in range(CONFIG.num_training_steps)])
    poisoned = next(int(i) for i in batches[0].indices(14) if i not in seen_by_seed_2)  # seed 1, step 15

    def load_poisoned(split, device="cpu", pipeline="pad"):
        images, labels = load_mnist(split, device=device, pipeline=pipeline)
        images = images.clone()
        images[poisoned] = math.nan
        return images, labels

    monkeypatch.setattr(labkit.experiments.together, "load_mnist", load_poisoned)
    bad, good = train_together(CONFIG, seeds, [tmp_path / "t1", tmp_path / "t2"], progress=False)
    assert isinstance(bad, TrainingDiverged) and "at step 15" in str(bad)
    assert latest_checkpoint(tmp_path / "t1").name == "step-000010.pt"
    state = load_checkpoint(latest_checkpoint(tmp_path / "t1"), "gan")
    assert all(torch.isfinite(v).all() for v in state["models"]["generator"].values())
    assert isinstance(good, Run) and good.step == 20 and len(good.history) == 4
    assert all(math.isfinite(row["generator_loss"]) for row in good.history)


def test_a_seed_whose_weights_turn_non_finite_at_a_checkpoint_stops_alone(tmp_path, monkeypatch):
    # Finite losses but NaN weights (the fault injected into seed 1's checkpoint at step 20): RunWriter refuses
    # to save them; that seed stops with its last good checkpoint, the other finishes.
    real_make_checkpoint = labkit.runs.training.make_checkpoint

    def poisoned(kind, step, config, models, **parts):
        if config.seed == 1 and step == 20:
            models = {**models, "generator": {k: torch.full_like(v, math.nan) if v.is_floating_point() else v
                                              for k, v in models["generator"].items()}}
        return real_make_checkpoint(kind, step, config, models=models, **parts)

    monkeypatch.setattr(labkit.runs.training, "make_checkpoint", poisoned)
    bad, good = train_together(CONFIG, [1, 2], [tmp_path / "t1", tmp_path / "t2"], progress=False)
    assert isinstance(bad, TrainingDiverged) and "weights became NaN or infinite by step 20" in str(bad)
    assert latest_checkpoint(tmp_path / "t1").name == "step-000010.pt"
    assert isinstance(good, Run) and good.step == 20 and latest_checkpoint(tmp_path / "t2").name == "step-000020.pt"


def test_what_cannot_train_together_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot train together: d_pause_ratio"):
        train_together(TrainConfig(d_pause_ratio=0.5, device="cpu"), [1, 2], [tmp_path / "a", tmp_path / "b"])
    # A student's pieces may compute a loss over the whole stack: refused, never silently stacked.
    from labkit.gan import GANCode

    def generator_loss(fake_logits):
        return torch.nn.functional.softplus(-fake_logits).mean()

    with pytest.raises(ValueError, match="student's code train one at a time"):
        train_together(CONFIG, [1, 2], [tmp_path / "a", tmp_path / "b"], code=GANCode(generator_loss=generator_loss))
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match="distinct seeds"):
        train_together(CONFIG, [1, 1], [tmp_path / "a", tmp_path / "b"])

    def stop_at_15(row):
        if row["step"] == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # seed 1 stopped at its checkpoint at step 15
        train(CONFIG, tmp_path / "a", progress=False, seed=1, on_log=stop_at_15)
    with pytest.raises(ValueError, match=r"same step.*\[0, 15\]"):
        train_together(CONFIG, [1, 2], [tmp_path / "a", tmp_path / "b"], progress=False)


def test_the_sweep_groups_a_run_by_the_step_it_will_really_resume_from(tmp_path):
    from labkit.experiments.together import resume_step

    run_dir = tmp_path / "run"
    train(CONFIG, run_dir, progress=False)  # checkpoints at steps 10 and 20
    assert resume_step(run_dir) == 20 and resume_step(tmp_path / "new") == 0
    (run_dir / "checkpoints" / "step-000020.pt").write_bytes(b"cut short")
    assert resume_step(run_dir) == 10  # training falls back to step 10, so the sweep stacks it with runs at 10
    (run_dir / "checkpoints" / "step-000010.pt").write_bytes(b"cut short")
    assert resume_step(run_dir) is None  # nothing readable: trained alone, where the error is reported
