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


# ---------------------------------------------------------------------------
# Each typical mistake, planted in labkit's answer, gets a message that names the layer or the term.


def generator_with(edit):
    """The course's generator, its layers (a list) changed by `edit`."""
    class Generator(solutions.DCGANGenerator):
        def __init__(self, latent_dim=16, hidden_dim=16):
            super().__init__(latent_dim, hidden_dim)
            self.net = torch.nn.Sequential(*edit(list(self.net), hidden_dim))
    return Generator


def discriminator_with(edit):
    class Discriminator(solutions.DCGANDiscriminator):
        def __init__(self, hidden_dim=16):
            super().__init__(hidden_dim)
            self.net = torch.nn.Sequential(*edit(list(self.net), hidden_dim))
    return Discriminator


def replaced(index, layer):
    return lambda layers, h: layers[:index] + [layer(h)] + layers[index + 1:]


@pytest.mark.parametrize("G, D, message", [
    (generator_with(lambda layers, h: layers[:-1]), solutions.DCGANDiscriminator,
     r"the course has Tanh after layer 10 \(ConvTranspose2d\(16, 1, kernel 4, stride 2, padding 1\)\)"),
    (solutions.DCGANGenerator, discriminator_with(lambda layers, h: layers[:-1]),
     r"Discriminator\(16\): the course has Sigmoid after layer 9"),
    (generator_with(lambda layers, h: layers[:3] + layers[6:]), solutions.DCGANDiscriminator,
     r"the course has .*ConvTranspose2d\(64, 32, kernel 4, stride 2, padding 1\), BatchNorm2d\(32\).* after layer \d "
     r"\(.*\), and yours has not$"),
    (solutions.DCGANGenerator, discriminator_with(replaced(1, lambda h: torch.nn.ReLU(True))),
     r"layer 2 is ReLU where the course has LeakyReLU\(0.2\)"),
    (solutions.DCGANGenerator, discriminator_with(replaced(0, lambda h: torch.nn.Conv2d(1, h, 4, 1, 1))),
     r"layer 1 is Conv2d\(1, 16, kernel 4, stride 1, padding 1\); the course's is Conv2d\(1, 16, kernel 4, stride 2"),
    (generator_with(replaced(0, lambda h: torch.nn.ConvTranspose2d(16, 4 * h, 4, 1, 0, bias=False))),
     solutions.DCGANDiscriminator, r"layer 1 is ConvTranspose2d\(16, 64, kernel 4, stride 1, padding 0, no bias\)"),
    (generator_with(lambda layers, h: [layers[0], layers[2], layers[1]] + layers[3:]), solutions.DCGANDiscriminator,
     r"yours has ReLU after the course layer 1 \(ConvTranspose2d\(16, 64.*\)\), where the course has none; the course "
     r"has ReLU after its layer 2: is it misplaced\?"),
    (generator_with(lambda layers, h: [layers[0], layers[2]] + layers[3:]), solutions.DCGANDiscriminator,
     r"the course has BatchNorm2d\(64\) after layer 1 \(ConvTranspose2d\(16, 64"),
    (solutions.DCGANGenerator, discriminator_with(lambda layers, h: layers[:2] + [torch.nn.Dropout(0.3)] + layers[2:]),
     r"yours has Dropout after the course layer 2 \(LeakyReLU\(0.2\)\)"),
])
def test_network_mistakes_name_the_layer(G, D, message, capsys):
    with pytest.raises(AssertionError, match=message) as failed:
        checks.dcgan_networks(G, D)
    assert "size of tensor" not in str(failed.value)


def test_a_mistake_in_a_stand_in_network_is_named_by_its_kinds_of_layer():
    class StandIn:  # what the grader has of a student's network: calls, and module_types
        def __init__(self, model):
            self.model = model

        def module_types(self):
            return [type(m).__name__ for m in self.model.modules()]

    no_tanh = generator_with(lambda layers, h: layers[:-1])(16, 16)
    with pytest.raises(AssertionError, match="the course has Tanh after layer 10 .ConvTranspose2d., and yours"):
        checks.compare_layers(StandIn(no_tanh), solutions.DCGANGenerator(16, 16), "your Generator")


def d_sum(real, fake):
    return F.binary_cross_entropy_with_logits(real, torch.ones_like(real), reduction="sum") + \
        F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake), reduction="sum")


def d_bce_on_logits(real, fake):  # nn.BCELoss given logits: values outside [0, 1]
    return F.binary_cross_entropy(real, torch.ones_like(real)) + F.binary_cross_entropy(fake, torch.zeros_like(fake))


@pytest.mark.parametrize("d_loss, g_loss, message", [
    (d_sum, solutions.generator_loss, "sums over the batch; take the mean"),
    (d_bce_on_logits, solutions.generator_loss, "treated them as probabilities"),
    (lambda r, f: solutions.discriminator_loss(torch.sigmoid(r), torch.sigmoid(f)), solutions.generator_loss,
     "applies a Sigmoid to the logits first"),
    (lambda r, f: solutions.discriminator_loss(-r, -f), solutions.generator_loss, "targets are swapped"),
    (solutions.discriminator_loss, lambda f: F.softplus(f).mean(), "its target is 0; G's target is 1"),
    (solutions.discriminator_loss, lambda f: F.softplus(-f).sum(), "sums over the batch"),
])
def test_loss_mistakes_name_the_term(d_loss, g_loss, message):
    with pytest.raises(AssertionError, match=message):
        checks.gan_losses(d_loss, g_loss)


def ignores_the_range(z1, z2, start, stop, steps, method):
    return solutions.interpolation_latents(z1, z2, 0.0, 1.0, steps, method)


def pairs_mixed(z1, z2, start, stop, steps, method):
    return solutions.interpolation_latents(z1, z2, start, stop, steps, method).flip(0)


def misses_the_end(z1, z2, start, stop, steps, method):
    t = torch.linspace(start, stop, steps + 1)[:-1].view(1, -1, 1)
    return (1 - t) * z1[:, None] + t * z2[:, None]


@pytest.mark.parametrize("latents, message", [
    (ignores_the_range, r"run over \[0, 1\] whatever start and stop say"),
    (pairs_mixed, "pair 0's codes are another pair's"),
    (misses_the_end, "the first code must be at l = start"),
])
def test_interpolation_mistakes_are_named(latents, message):
    with pytest.raises(AssertionError, match=message):
        checks.interpolation(latents, solutions.slerp)


@pytest.mark.parametrize("pieces, message", [
    (dict(reparameterize=lambda m, lv, n: m + lv.exp() * n), r"by the variance exp\(logvar\)"),
    (dict(kl_divergence=lambda m, lv: -solutions.kl_divergence(m, lv)), "its sign is flipped"),
    (dict(kl_divergence=lambda m, lv: solutions.kl_divergence(m, lv) / m.shape[1]), "averages over the latent"),
    (dict(vae_loss=lambda *a: solutions.vae_loss(*a) * len(a[0])), "sums over the batch"),
    (dict(vae_loss=lambda lg, im, m, lv: (solutions.reconstruction_loss(lg, im) - solutions.kl_divergence(m, lv)).mean()),
     "subtracts the KL term"),
])
def test_vae_mistakes_are_named(pieces, message):
    chosen = {**dict(reparameterize=solutions.reparameterize, kl_divergence=solutions.kl_divergence,
                     vae_loss=solutions.vae_loss), **pieces}
    with pytest.raises(AssertionError, match=message):
        checks.vae_pieces(**chosen)
