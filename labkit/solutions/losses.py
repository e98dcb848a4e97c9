"""Exercise 2 (notebook 01), labkit's answer: the two GAN losses, from D's logits.

labkit/gan.py says why they are computed from the logits, not the probabilities.
"""

import torch
import torch.nn.functional as F


def bce_with_logits(logits, target):
    """BCE between sigmoid(logits) and a constant target (0 or 1), averaged over the last dimension.

    The last dimension is the batch: a batch (B,) gives one loss, and N stacked
    models' (N, B) give one loss per model (labkit/experiments/together.py).
    """
    targets = torch.full_like(logits, float(target))
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=-1)


def discriminator_loss(real_logits, fake_logits):
    """D's loss: -[log D(x) + log(1 - D(G(z)))], from D's logits on a real and a fake batch."""
    return bce_with_logits(real_logits, 1) + bce_with_logits(fake_logits, 0)


def generator_loss(fake_logits):
    """G's non-saturating loss: -log D(G(z)), from D's logits on G's fakes."""
    return bce_with_logits(fake_logits, 1)
