import pytest
import torch
from torch import nn

from labkit.models import count_parameters, sample_images
from labkit.solutions import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator


def test_generator_parameter_counts_match_the_course():
    assert count_parameters(DCGANGenerator(16, 16)) == 57_937
    assert count_parameters(DCGANGenerator(100, 16)) == 143_953


@pytest.mark.parametrize("latent, hidden", [(16, 16), (100, 64)])
def test_dcgan_shapes_and_ranges(latent, hidden, mnist_train):
    G, D = DCGANGenerator(latent, hidden), DCGANDiscriminator(hidden)
    fake = G(torch.randn(8, latent))
    assert fake.shape == (8, 1, 32, 32) and fake.abs().max() <= 1
    assert G(torch.randn(8, latent, 1, 1)).shape == (8, 1, 32, 32)  # the course's noise shape
    prob = D(mnist_train[0][:8])
    assert prob.shape == (8,) and ((prob > 0) & (prob < 1)).all()


def test_ablation_switches_change_the_layers():
    default = DCGANDiscriminator(16)
    relu = DCGANDiscriminator(16, activation="relu")
    plain = DCGANDiscriminator(16, batch_norm=False)
    def kinds(m, t):
        return sum(isinstance(x, t) for x in m.modules())
    assert kinds(default, nn.LeakyReLU) == 3 and kinds(default, nn.ReLU) == 0
    assert kinds(relu, nn.LeakyReLU) == 0 and kinds(relu, nn.ReLU) == 3
    assert kinds(default, nn.BatchNorm2d) == 2 and kinds(plain, nn.BatchNorm2d) == 0
    assert kinds(DCGANGenerator(16, 16, batch_norm=False), nn.BatchNorm2d) == 0


def test_mlp_gan_shapes_and_optional_batchnorm(mnist_train):
    G, D = MLPGenerator(16), MLPDiscriminator()
    assert G(torch.randn(4, 16)).shape == (4, 1, 32, 32)
    assert D(mnist_train[0][:4]).shape == (4,)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in D.modules())
    assert sum(isinstance(m, nn.BatchNorm1d) for m in MLPDiscriminator(batch_norm=True).modules()) == 3


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_sizes_are_refused_with_the_name(bad):
    with pytest.raises(ValueError, match="latent_dim must be a positive whole number"):
        DCGANGenerator(latent_dim=bad)


def test_sample_images_is_reproducible_and_leaves_global_rng_alone():
    G = DCGANGenerator(16, 16)
    state = torch.get_rng_state()
    a, b = sample_images(G, 10, seed=3, batch_size=4), sample_images(G, 10, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (10, 1, 32, 32) and torch.allclose(a, b, atol=1e-6)
    assert G.training  # its mode is restored
