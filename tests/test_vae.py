import pytest
import torch

from labkit.solutions import kl_divergence
from labkit.vae import VAE
from labkit.vae import load_vae_run, split_train_dev, train_vae, VAE_COLUMNS, vae_losses, VAEConfig

TINY = dict(logging_steps=10, saving_steps=20, dev_size=500, device="cpu")


@pytest.mark.parametrize("latent", [3, 100])
def test_shapes(latent, mnist_train):
    vae = VAE(latent)
    logits, mean, logvar = vae(mnist_train[0][:5])
    assert logits.shape == (5, 1, 32, 32) and mean.shape == logvar.shape == (5, latent)
    samples = vae.decoder(torch.randn(7, latent))
    assert samples.shape == (7, 1, 32, 32) and samples.min() >= -1 and samples.max() <= 1


def test_kl_of_a_standard_normal_posterior_is_zero():
    assert torch.equal(kl_divergence(torch.zeros(4, 10), torch.zeros(4, 10)), torch.zeros(4))
    # ... and positive otherwise: KL(N(1, 1) || N(0, 1)) = 1/2 per dimension.
    assert kl_divergence(torch.ones(1, 10), torch.zeros(1, 10)).item() == pytest.approx(5.0)


def test_dev_split_is_disjoint_and_fixed(mnist_train):
    train, dev = split_train_dev(mnist_train[0], 5000)
    assert len(train) == 55000 and len(dev) == 5000
    assert torch.equal(split_train_dev(mnist_train[0], 5000)[1], dev)


def test_loss_decreases_on_real_mnist(tmp_path, mnist_train):
    run = train_vae(VAEConfig(num_training_steps=60, **TINY), tmp_path / "vae", progress=False)
    assert tuple(run.history[0]) == VAE_COLUMNS
    dev = run.column("dev_loss")
    assert dev[-1] < 0.8 * dev[0]
    loss, kl, rec = vae_losses(run.vae, mnist_train[0][:200], torch.zeros(200, 10))
    assert loss.item() == pytest.approx(kl.item() + rec.item()) and kl.item() >= 0


def test_interrupted_vae_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import labkit.vae

    config = VAEConfig(num_training_steps=40, **TINY)
    straight = train_vae(config, tmp_path / "a", progress=False)
    real_evaluate, calls = labkit.vae.evaluate, []

    def stopped_at_step_30(*args, **kwargs):  # logging steps 10, 20, 30: Ctrl-C at the third
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(labkit.vae, "evaluate", stopped_at_step_30)
    with pytest.raises(KeyboardInterrupt):
        train_vae(config, tmp_path / "b", progress=False)
    monkeypatch.undo()
    resumed = train_vae(config, tmp_path / "b", progress=False)  # from the checkpoint at step 20
    for k, v in straight.vae.state_dict().items():
        assert torch.equal(v, resumed.vae.state_dict()[k]), k
    assert load_vae_run(tmp_path / "b").step == 40 and resumed.history == straight.history


def test_cli_trains_a_vae(tmp_path, capsys):
    from labkit.cli import main

    out = tmp_path / "vae"
    assert main(["train-vae", "--latent_dim", "3", "--num_training_steps", "20", "--logging_steps", "10",
                 "--saving_steps", "10", "--no_cuda", "--quiet", "--out", str(out)]) == 0
    assert (out / "checkpoints" / "step-000020.pt").exists() and (out / "samples" / "step-000020.png").exists()
    assert load_vae_run(out).config.latent_dim == 3
    assert main(["train-vae", "--latent_dim", "0", "--out", str(tmp_path / "bad")]) == 2
