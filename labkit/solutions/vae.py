"""Exercise 6 (notebook 09), labkit's answer: the VAE's three pieces."""

import torch
from torch import nn


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
