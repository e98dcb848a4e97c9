"""Exercise 1 (notebook 01), labkit's answer: the course's DCGAN for 32x32 MNIST.

G: latent (N, z) -> 1 -> 4 -> 8 -> 16 -> 32 pixels by transposed convolutions;
D: the mirror, 32 -> 16 -> 8 -> 4 -> 1, ending in a Sigmoid. Hidden size h
sets the channels (4h, 2h, h in G). BatchNorm after each inner layer, ReLU in
G and LeakyReLU(0.2) in D, Tanh out of G, as in Radford et al. (2016).
"""

from torch import nn

from ..models import check_size, init_weights


def norm(channels, batch_norm):
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class DCGANGenerator(nn.Module):
    """latent (N, z) -> image (N, 1, 32, 32) through 1 -> 4 -> 8 -> 16 -> 32 pixels."""

    def __init__(self, latent_dim=16, hidden_dim=16, batch_norm=True):
        super().__init__()
        check_size("latent_dim", latent_dim)
        check_size("hidden_dim", hidden_dim)
        self.latent_dim, self.hidden_dim = latent_dim, hidden_dim
        h = hidden_dim
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 4 * h, 4, 1, 0), norm(4 * h, batch_norm), nn.ReLU(True),  # 4x4
            nn.ConvTranspose2d(4 * h, 2 * h, 4, 2, 1), norm(2 * h, batch_norm), nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(2 * h, h, 4, 2, 1), norm(h, batch_norm), nn.ReLU(True),  # 16x16
            nn.ConvTranspose2d(h, 1, 4, 2, 1), nn.Tanh(),  # 32x32
        )
        self.apply(init_weights)

    def forward(self, z):
        return self.net(z.view(z.size(0), self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """image (N, 1, 32, 32) -> probability that it is real, (N,).

    `activation` is "leaky_relu" (the course, slope 0.2) or "relu" (an
    ablation); `batch_norm=False` removes the BatchNorm layers (another);
    `bias=False` builds the convolutions without biases, as the course's
    GAN.py does (a third: it doubles the FID on resized digits, notebook 08).
    """

    def __init__(self, hidden_dim=16, activation="leaky_relu", batch_norm=True, bias=True):
        super().__init__()
        check_size("hidden_dim", hidden_dim)
        if activation not in ("leaky_relu", "relu"):
            raise ValueError(f"activation must be 'leaky_relu' or 'relu', got {activation!r}")
        self.hidden_dim = hidden_dim
        h = hidden_dim

        def act():
            return nn.LeakyReLU(0.2, True) if activation == "leaky_relu" else nn.ReLU(True)

        self.net = nn.Sequential(
            nn.Conv2d(1, h, 4, 2, 1, bias=bias), act(),  # 16x16
            nn.Conv2d(h, 2 * h, 4, 2, 1, bias=bias), norm(2 * h, batch_norm), act(),  # 8x8
            nn.Conv2d(2 * h, 4 * h, 4, 2, 1, bias=bias), norm(4 * h, batch_norm), act(),  # 4x4
            nn.Conv2d(4 * h, 1, 4, 1, 0, bias=bias), nn.Sigmoid(),  # 1x1
        )
        self.apply(init_weights)

    def logits(self, images):
        """D's scores before the final Sigmoid, (N,): probability = sigmoid(score)."""
        return self.net[:-1](images).view(-1)

    def forward(self, images):
        return self.net(images).view(-1)
