"""What every network of the lab shares: the image's shape, the DCGAN initialisation, sampling.

The networks themselves are the exercises' (notebooks 01 and 07); labkit's
reference versions are in labkit/solutions/ (dcgan.py, mlp.py). Images are
(N, 1, 32, 32) in [-1, 1]; latent codes are (N, latent_dim), and the
generators accept (N, latent_dim, 1, 1) too, the shape the course used.
Discriminators end in a Sigmoid and return one probability per image, (N,);
`logits(images)` gives the scores before that Sigmoid, from which the
training losses are computed (labkit/gan.py says why).

Weight initialisation (`init_weights`) follows the DCGAN paper (Radford et
al., 2016) as pytorch/examples/dcgan does: conv weights ~ N(0, 0.02),
BatchNorm scales ~ N(1, 0.02), biases 0. The paper found it needed for stable
training; with PyTorch's default (Kaiming-uniform) init the course's small
discriminator separates real from fake within a few dozen steps and the
generator's gradients vanish early. Linear layers (the MLP GAN) keep
PyTorch's default initialisation, which trains that model well.
"""

from contextlib import contextmanager

import torch
from torch import nn

IMAGE_SHAPE = (1, 32, 32)
IMAGE_PIXELS = 32 * 32


def check_size(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")


def init_weights(module):
    """DCGAN initialisation for one module; use as `model.apply(init_weights)`."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:  # the course's discriminator has none (TrainConfig.discriminator_bias)
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def count_parameters(model):
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextmanager
def evaluating(model):
    """Inside the block `model` is in eval mode; afterwards every submodule has its own mode back."""
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode


@torch.no_grad()
def sample_images(generator, count, seed=0, batch_size=500):
    """`count` images (count, 1, 32, 32) in [-1, 1] from `generator` in eval mode.

    The noise comes from its own generator seeded with `seed`, so the same
    (model, seed) always gives the same images and the global RNG is untouched.
    The generator's train/eval mode is left as it was. The result stays on the
    generator's device.
    """
    device = next(generator.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    chunks = []
    with evaluating(generator):
        for start in range(0, count, batch_size):
            z = torch.randn(min(batch_size, count - start), generator.latent_dim, generator=rng)
            chunks.append(generator(z.to(device)))
    return torch.cat(chunks).contiguous()


def fixed_noise(latent_dim, count=64, device="cpu"):
    """The noise behind every run's sample grids: the same for every seed."""
    return torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(0)).to(device)


@torch.no_grad()
def fixed_samples(generator, noise):
    """The generator's images of the fixed noise, in eval mode (its BatchNorm uses the running statistics)."""
    with evaluating(generator):
        return generator(noise)
