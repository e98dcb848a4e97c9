"""Exercise 5 (notebook 07), labkit's answer: the MLP GAN, fully connected layers only."""

from torch import nn

from ..models import IMAGE_PIXELS, IMAGE_SHAPE, check_size


class MLPGenerator(nn.Module):
    """latent -> 128 -> 256 -> 512 -> 1024 pixels, BatchNorm + ReLU between, Tanh out."""

    def __init__(self, latent_dim=16):
        super().__init__()
        check_size("latent_dim", latent_dim)
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
