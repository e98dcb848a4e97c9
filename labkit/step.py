"""One training step of the GAN, in one place: every trainer calls `gan_step`.

The GAN game (Goodfellow et al., 2014): D maximises

    log D(x) + log(1 - D(G(z)))        (x a real image, z random noise)

and G minimises it. Early on D easily rejects G's fakes, so log(1 - D(G(z)))
is flat and G's gradient vanishes; G therefore *maximises log D(G(z))*
instead (the "non-saturating" loss), which has the same fixed point and a
strong gradient exactly where G is bad. As binary cross-entropy (BCE):

    discriminator_loss = BCE(D(x), 1) + BCE(D(G(z)), 0)
    generator_loss     = BCE(D(G(z)), 1)

D ends in a Sigmoid, D(x) = sigmoid(s(x)), and the losses are computed from
the score s(x) (the *logit*), not from the probability. Once D is sure,
sigmoid(s) = 1 / (1 + exp(-s)) is exactly 1.0 in float32 from s = 24 ln 2
= 16.64 (1 + exp(-s) rounds to 1 there), and exactly 0.0 below s = -88.72
(exp(-s) overflows float32 there); measured with PyTorch 2.14 on a CPU.
Then log(0) = -inf; nn.BCELoss clamps that log at -100, so the loss stops
growing and its gradient becomes 0 just where G needs one. From the logit,
-log sigmoid(s) = softplus(-s) stays exact for any s. That is what
`binary_cross_entropy_with_logits` computes. (A run with D's learning rate at
0.01 died with NaN at step 85 with the hand-written BCE on probabilities that
labkit had before; on logits it trains on: tests/test_train.py.)

One step, as in the course and pytorch/examples/dcgan (`gan_step`):
    1. D's turn (`discriminator_step`): D on a real batch (target 1) and on
       G(z).detach() (target 0); update D (or not: `update_discriminator`,
       the rebalancing rule);
    2. G's turn (`generator_step`): G on D(G(z)) with target 1, the same z,
       through the D just updated; update G.

Below the lesson, the plumbing the trainers need: what a step measured
(`StepOutput`) and when the rule may read the losses (`needs_losses`).
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def bce_with_logits(logits, target):
    """BCE between sigmoid(logits) and a constant target (0 or 1), averaged over the last dimension.

    The last dimension is the batch: a batch (B,) gives one loss, and N stacked
    models' (N, B) give one loss per model (labkit/machinery/together.py).
    """
    targets = torch.full_like(logits, float(target))
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=-1)


def discriminator_loss(real_logits, fake_logits):
    """D's loss: -[log D(x) + log(1 - D(G(z)))], from D's logits on a real and a fake batch."""
    return bce_with_logits(real_logits, 1) + bce_with_logits(fake_logits, 0)


def generator_loss(fake_logits):
    """G's non-saturating loss: -log D(G(z)), from D's logits on G's fakes."""
    return bce_with_logits(fake_logits, 1)


def discriminator_step(discriminator, opt_d, real, fake, discriminator_loss=discriminator_loss, may_step=None):
    """D's turn: D maximizes log D(x) + log(1 - D(G(z))).

    As a loss to minimize, that is BCE(D(x), 1) + BCE(D(G(z)), 0), from D's scores
    before the Sigmoid (its logits). fake: G(z). may_step(loss_d): may D take its
    step this time? (the rebalancing rule of notebook 4; None: always).
    Returns (loss_d, real_logits, fake_logits, whether D stepped).
    """
    real_logits = discriminator.logits(real)  # D(x) = sigmoid(real_logits)
    fake_logits = discriminator.logits(fake.detach())  # detached: D's update must not reach G
    loss_d = discriminator_loss(real_logits, fake_logits)  # -[log D(x) + log(1 - D(G(z)))]
    stepped = may_step is None or may_step(loss_d)
    if stepped:
        descend(opt_d, loss_d)
    return loss_d, real_logits, fake_logits, stepped


def generator_step(discriminator, opt_g, fake, generator_loss=generator_loss):
    """G's turn: G maximizes log D(G(z)), the non-saturating loss.

    As a loss to minimize, that is BCE(D(G(z)), 1), on the same fakes, judged by
    the D that just took its turn. Returns (loss_g, fake_logits).
    """
    with frozen(discriminator):  # the gradient flows back through D into G; D's own weights need none
        fake_logits = discriminator.logits(fake)
    loss_g = generator_loss(fake_logits)  # -log D(G(z))
    descend(opt_g, loss_g)
    return loss_g, fake_logits


def descend(optimizer, loss):
    """One optimizer step down `loss` (summed first: stacked models have one loss each)."""
    optimizer.zero_grad(set_to_none=True)
    loss.sum().backward()
    optimizer.step()


@contextmanager
def frozen(module):
    """Inside the block `module`'s parameters need no gradient; their own flags are restored after.

    G's step backpropagates through D to reach G, but needs no gradient for D's
    weights: leaving them out of the graph saves about 8% of a step.
    """
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def update_discriminator(step, loss_D, loss_G, every=1, pause_ratio=0.0):
    """The rebalancing rule: does D take its optimizer step at training step `step` (1, 2, 3, ...)?

    every:       update D only on steps 1, 1 + every, 1 + 2 * every, ... (1: every step).
    pause_ratio: skip D's update while loss_D / loss_G < pause_ratio: D is winning
                 by that margin, so let G catch up (0: never pause).
    loss_D:      D's loss on this step's batch (a float);
    loss_G:      G's loss on the previous step (None at the first step: no pause then).
    """
    if (step - 1) % every != 0:
        return False
    if pause_ratio > 0 and loss_G is not None:
        return loss_D / max(loss_G, 1e-12) >= pause_ratio
    return True


def gan_step(generator, discriminator, opt_g, opt_d, real, z, step, config, code, prev_loss_g=None):
    """One training step, as every trainer runs it: D's turn, then G's, on the same fakes G(z).

    generator, discriminator: the networks; the discriminator has `logits(images)`.
    real, z:     this step's real batch and noise.
    step:        the 1-based step number, for the rebalancing rule.
    config:      the run's TrainConfig (d_every, d_pause_ratio).
    code:        whose losses and rebalancing rule to use (labkit/machinery/code.py's GANCode).
    prev_loss_g: G's loss on the previous step as a float, or None; needed only
                 when the rule may look at losses (see `needs_losses`).
    Returns a StepOutput.
    """
    fake = generator(z)
    loss_d, real_logits, fake_logits, updated_d = discriminator_step(
        discriminator, opt_d, real, fake, code.discriminator_loss,
        may_step=lambda loss: rebalance(step, loss, prev_loss_g, config, code))
    loss_g, fake_logits_after = generator_step(discriminator, opt_g, fake, code.generator_loss)
    return StepOutput(loss_d, loss_g, real_logits, fake_logits, fake_logits_after, updated_d)


# ---------------------------------------------------------------------------
# The plumbing below the lesson: what a step measured, and when the rule reads the losses


@dataclass
class StepOutput:
    """What one step measured. Tensors stay on the device (reading them waits for it)."""

    loss_d: torch.Tensor
    loss_g: torch.Tensor
    real_logits: torch.Tensor  # D on the real batch
    fake_logits: torch.Tensor  # D on the fakes, before D's update
    fake_logits_after: torch.Tensor  # D on the same fakes, after it (what G trained against)
    updated_d: bool

    def logged(self):
        """The five values of a history row (mean D outputs as probabilities), as device tensors."""
        return dict(discriminator_loss=self.loss_d, generator_loss=self.loss_g,
                    D_x=torch.sigmoid(self.real_logits).mean(-1),
                    D_G_z1=torch.sigmoid(self.fake_logits).mean(-1),
                    D_G_z2=torch.sigmoid(self.fake_logits_after).mean(-1))

    def values(self):
        """logged() read from the device: floats (stacked models: a list per value, one per model)."""
        return {name: value.tolist() for name, value in self.logged().items()}


def rebalance(step, loss_d, prev_loss_g, config, code):
    """Ask the rebalancing rule whether D steps now, showing it the losses as numbers only if it may read them."""
    loss_d = loss_d.item() if needs_losses(config, code) else None  # .item() waits for the device
    return bool(code.update_discriminator(step, loss_d, prev_loss_g, config.d_every, config.d_pause_ratio))


def needs_losses(config, code):
    """Whether the rebalancing rule must see the losses as numbers on the host.

    labkit's rule reads them only to pause D; a student's rule may read them
    at any time. Reading a loss makes the host wait for the GPU, so it is
    skipped where the rule cannot need it.
    """
    return config.d_pause_ratio > 0 or code.update_discriminator is not update_discriminator
