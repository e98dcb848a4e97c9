"""The public checks that students' exercises run: labkit's reference passes every one, and the mistakes
students make get a message that names the mistake."""

import pytest
import torch
import torch.nn.functional as F

from labkit import checks, solutions


def test_labkits_reference_pieces_pass_every_check(capsys):
    checks.dcgan_networks(solutions.DCGANGenerator, solutions.DCGANDiscriminator)
    checks.gan_losses(solutions.discriminator_loss, solutions.generator_loss)
    checks.rebalancing_rule(solutions.update_discriminator)
    checks.interpolation(solutions.interpolation_latents, solutions.slerp)
    checks.mlp_networks(solutions.MLPGenerator, solutions.MLPDiscriminator)
    checks.vae_pieces(solutions.reparameterize, solutions.kl_divergence, solutions.vae_loss)
    assert capsys.readouterr().out.count("All public checks passed.") == 6


def on_probabilities(d_real, d_fake):  # nn.BCELoss on sigmoid(logits): right on ordinary values
    bce = torch.nn.BCELoss()
    p_real, p_fake = torch.sigmoid(d_real), torch.sigmoid(d_fake)
    return bce(p_real, torch.ones_like(p_real)) + bce(p_fake, torch.zeros_like(p_fake))


def g_on_probabilities(d_fake):
    p = torch.sigmoid(d_fake)
    return torch.nn.BCELoss()(p, torch.ones_like(p))


def g_hand_log(d_fake):
    return -torch.log(torch.sigmoid(d_fake)).mean()


def g_saturating(d_fake):  # minimise log(1 - D(G(z))), from logits: -softplus(s)
    return -F.softplus(d_fake).mean()


@pytest.mark.parametrize("d_loss, g_loss, message", [
    (on_probabilities, solutions.generator_loss, r"clamp log\(0\) to -100"),
    (solutions.discriminator_loss, g_on_probabilities, r"clamp log\(0\) to -100"),
    (solutions.discriminator_loss, g_hand_log, "infinite or NaN"),
    (solutions.discriminator_loss, g_saturating, "generator_loss gives"),  # wrong on ordinary values already
    (lambda r, f: solutions.discriminator_loss(r, f) * 2, solutions.generator_loss, "discriminator_loss gives"),
])
def test_loss_mistakes_are_named(d_loss, g_loss, message):
    with pytest.raises(AssertionError, match=message):
        checks.gan_losses(d_loss, g_loss)
