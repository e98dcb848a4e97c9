"""The course's networks: a DCGAN and an MLP GAN for 32x32 MNIST.

Images are (N, 1, 32, 32) in [-1, 1]; latent codes are (N, latent_dim), and
the generators accept (N, latent_dim, 1, 1) too, the shape the course used.
Discriminators end in a Sigmoid and return one probability per image, (N,);
`logits(images)` gives the scores before that Sigmoid, from which the
training losses are computed (labkit/step.py says why).

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


def _check_size(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")


def init_weights(module):
    """DCGAN initialisation for one module; use as `model.apply(init_weights)`."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _norm(channels, batch_norm):
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class DCGANGenerator(nn.Module):
    """latent (N, z) -> image (N, 1, 32, 32) through 1 -> 4 -> 8 -> 16 -> 32 pixels."""

    def __init__(self, latent_dim=16, hidden_dim=16, batch_norm=True):
        super().__init__()
        _check_size("latent_dim", latent_dim)
        _check_size("hidden_dim", hidden_dim)
        self.latent_dim, self.hidden_dim = latent_dim, hidden_dim
        h = hidden_dim
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 4 * h, 4, 1, 0), _norm(4 * h, batch_norm), nn.ReLU(True),  # 4x4
            nn.ConvTranspose2d(4 * h, 2 * h, 4, 2, 1), _norm(2 * h, batch_norm), nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(2 * h, h, 4, 2, 1), _norm(h, batch_norm), nn.ReLU(True),  # 16x16
            nn.ConvTranspose2d(h, 1, 4, 2, 1), nn.Tanh(),  # 32x32
        )
        self.apply(init_weights)

    def forward(self, z):
        return self.net(z.view(z.size(0), self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """image (N, 1, 32, 32) -> probability that it is real, (N,).

    `activation` is "leaky_relu" (the course, slope 0.2) or "relu" (an
    ablation); `batch_norm=False` removes the BatchNorm layers (another).
    """

    def __init__(self, hidden_dim=16, activation="leaky_relu", batch_norm=True):
        super().__init__()
        _check_size("hidden_dim", hidden_dim)
        if activation not in ("leaky_relu", "relu"):
            raise ValueError(f"activation must be 'leaky_relu' or 'relu', got {activation!r}")
        self.hidden_dim = hidden_dim
        h = hidden_dim

        def act():
            return nn.LeakyReLU(0.2, True) if activation == "leaky_relu" else nn.ReLU(True)

        self.net = nn.Sequential(
            nn.Conv2d(1, h, 4, 2, 1), act(),  # 16x16
            nn.Conv2d(h, 2 * h, 4, 2, 1), _norm(2 * h, batch_norm), act(),  # 8x8
            nn.Conv2d(2 * h, 4 * h, 4, 2, 1), _norm(4 * h, batch_norm), act(),  # 4x4
            nn.Conv2d(4 * h, 1, 4, 1, 0), nn.Sigmoid(),  # 1x1
        )
        self.apply(init_weights)

    def logits(self, images):
        """D's scores before the final Sigmoid, (N,): probability = sigmoid(score)."""
        return self.net[:-1](images).view(-1)

    def forward(self, images):
        return self.net(images).view(-1)


class MLPGenerator(nn.Module):
    """latent -> 128 -> 256 -> 512 -> 1024 pixels, BatchNorm + ReLU between, Tanh out."""

    def __init__(self, latent_dim=16):
        super().__init__()
        _check_size("latent_dim", latent_dim)
        self.latent_dim = latent_dim
        layers, width = [], latent_dim
        for out in (128, 256, 512):
            layers += [nn.Linear(width, out), nn.BatchNorm1d(out), nn.ReLU(True)]
            width = out
        self.net = nn.Sequential(*layers, nn.Linear(width, IMAGE_PIXELS), nn.Tanh())

    def forward(self, z):
        return self.net(z.reshape(z.size(0), self.latent_dim)).view(-1, *IMAGE_SHAPE)


class MLPDiscriminator(nn.Module):
    """1024 pixels -> 512 -> 256 -> 128 -> 1, LeakyReLU(0.2), Sigmoid out.

    `batch_norm=True` adds BatchNorm after each hidden layer: the students found
    the MLP discriminator then learned nothing, so it is off by default.
    """

    def __init__(self, batch_norm=False):
        super().__init__()
        layers, width = [], IMAGE_PIXELS
        for out in (512, 256, 128):
            layers.append(nn.Linear(width, out))
            if batch_norm:
                layers.append(nn.BatchNorm1d(out))
            layers.append(nn.LeakyReLU(0.2, True))
            width = out
        self.net = nn.Sequential(*layers, nn.Linear(width, 1), nn.Sigmoid())

    def logits(self, images):
        """D's scores before the final Sigmoid, (N,): probability = sigmoid(score)."""
        return self.net[:-1](images.reshape(images.size(0), IMAGE_PIXELS)).view(-1)

    def forward(self, images):
        return self.net(images.reshape(images.size(0), IMAGE_PIXELS)).view(-1)


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


class DigitClassifier(nn.Module):
    """A small CNN that reads 32x32 MNIST digits in [-1, 1]: labkit's judge of samples.

    Three conv blocks (32 -> 64 -> 128 channels, each halving the image) and a
    global average pool give a 128-d feature vector (`features`), which MNIST-FID,
    KID and precision/recall compare; a linear layer maps it to 10 digit logits.
    About 93k parameters (370 kB), trained once by `labkit train-classifier`.
    """

    feature_dim = 128

    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(True), nn.MaxPool2d(2)]

        self.body = nn.Sequential(*block(1, 32), *block(32, 64), *block(64, 128),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.feature_dim, 10))

    def features(self, images):
        return self.body(images)

    def forward(self, images):
        return self.head(self.features(images))


# The VAE's three pieces (the lab's notebook 9 asks students to write them).


def reparameterize(mean, logvar, noise):
    """A sample z ~ N(mean, exp(logvar)) written as mean + sigma * noise, noise ~ N(0, I).

    Sampling itself has no gradient; written this way, z is a differentiable
    function of mean and logvar, so the encoder learns through it.
    """
    return mean + torch.exp(0.5 * logvar) * noise


def kl_divergence(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, I)) per image, summed over latent dimensions: (N,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1)


def reconstruction_loss(logits, images):
    """-log p(x | z) per image under a Bernoulli per pixel, in nats: (N,). Images in [-1, 1]."""
    target = (images + 1) / 2
    return nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)


def vae_loss(logits, images, mean, logvar):
    """The negative ELBO, averaged over the batch: reconstruction + KL, in nats per image."""
    return (reconstruction_loss(logits, images) + kl_divergence(mean, logvar)).mean()


class VAEDecoder(nn.Module):
    """latent (N, z) -> image (N, 1, 32, 32) in [-1, 1]: the VAE's generator.

    It has `latent_dim` and is called on codes like a GAN generator, so
    `sample_images`, FID and interpolation work on it unchanged.
    """

    def __init__(self, latent_dim):
        super().__init__()
        self.latent_dim = latent_dim
        self.project = nn.Linear(latent_dim, 128 * 4 * 4)
        self.net = nn.Sequential(
            nn.ReLU(True),
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(True),  # 16x16
            nn.ConvTranspose2d(32, 1, 4, 2, 1),  # 32x32 logits
        )

    def logits(self, z):
        """Per-pixel Bernoulli logits of the probability that a pixel is ink."""
        return self.net(self.project(z.reshape(z.size(0), self.latent_dim)).view(-1, 128, 4, 4))

    def forward(self, z):
        return torch.sigmoid(self.logits(z)) * 2 - 1  # the mean image, in labkit's [-1, 1]


class VAE(nn.Module):
    """A convolutional variational autoencoder (Kingma & Welling, 2014).

    Encoder: 32 -> 16 -> 8 -> 4 pixels (32, 64, 128 channels), then linear maps
    to the mean and log-variance of q(z|x). Decoder: `VAEDecoder`, the mirror.

    Reconstruction likelihood: Bernoulli per pixel, i.e. binary cross-entropy
    between the decoder's logits and the image in [0, 1]. MNIST pixels are
    nearly binary (most are 0 or 1), which a Bernoulli describes well; a
    Gaussian with a fixed variance would need that variance chosen by hand,
    and it sets how blurry samples get. The image a VAE shows is the decoder's
    mean, sigmoid(logits).
    """

    def __init__(self, latent_dim=10):
        super().__init__()
        _check_size("latent_dim", latent_dim)
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(True),  # 16x16
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(True),  # 8x8
            nn.Conv2d(64, 128, 4, 2, 1), nn.ReLU(True),  # 4x4
            nn.Flatten(),
        )
        self.to_mean = nn.Linear(128 * 4 * 4, latent_dim)
        self.to_logvar = nn.Linear(128 * 4 * 4, latent_dim)
        self.decoder = VAEDecoder(latent_dim)

    def encode(self, images):
        """Mean and log-variance of q(z | x), each (N, latent_dim)."""
        h = self.encoder(images)
        return self.to_mean(h), self.to_logvar(h)

    def forward(self, images, noise=None, sample=reparameterize):
        """(reconstruction logits, mean, logvar) of `images`.

        noise:  N(0, I) draws for the reparameterisation (default: fresh ones);
        sample: the reparameterisation, sample(mean, logvar, noise) -> z.
        """
        mean, logvar = self.encode(images)
        if noise is None:
            noise = torch.randn_like(mean)
        return self.decoder.logits(sample(mean, logvar, noise)), mean, logvar

