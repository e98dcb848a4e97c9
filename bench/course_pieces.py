"""Which piece of the course's code puts its FIDs above labkit's (issue 30).

labkit's trainer with pieces of the course's code swapped in through GANCode (the
same way a student's code is), on the course's pipeline (`resize`), 5000 steps,
seed 2022, each measured with labkit's standard Inception FID (3000 vs 3000,
resized reals) and the share of its samples' pixels that are pure background
(below -0.99, i.e. black: real resized digits 0.753):

    course_all    the course's generator (biases, PyTorch's default bias init), its
                  discriminator (no biases: GAN.py gives it, outside the students'
                  TODO) and nn.BCELoss on probabilities
    course_D      only the discriminator
    course_G      only the generator
    course_loss   only the loss

    python bench/course_pieces.py course_D course_G      # about 25 min each on a 2-core CPU
    LABKIT_RUNS=/big/disk python bench/course_pieces.py course_all

The course's pieces are copied from its students' public copies (cctofu/image-generator,
codes/GAN/GAN.py and trainer.py); results: bench/course_pieces.md.
"""

import argparse
import time

import torch
from torch import nn

from labkit import metrics
from labkit.gan import GANCode, train
from labkit.models import sample_images


def course_weights_init(m):
    """The course's weights_init: conv weights N(0, 0.02), BatchNorm N(1, 0.02) / 0; conv biases keep PyTorch's
    default U(+-1/sqrt(fan_in)) (labkit zeroes them)."""
    name = m.__class__.__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class CourseGenerator(nn.Module):
    """The course's generator as its parameter count (57,937 at 16/16) says: biases on, default bias init."""

    def __init__(self, latent_dim, hidden_dim):
        super().__init__()
        self.latent_dim, h = latent_dim, hidden_dim
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 4 * h, 4, 1, 0), nn.BatchNorm2d(4 * h), nn.ReLU(),
            nn.ConvTranspose2d(4 * h, 2 * h, 4, 2, 1), nn.BatchNorm2d(2 * h), nn.ReLU(),
            nn.ConvTranspose2d(2 * h, h, 4, 2, 1), nn.BatchNorm2d(h), nn.ReLU(),
            nn.ConvTranspose2d(h, 1, 4, 2, 1), nn.Tanh())
        self.apply(course_weights_init)

    def forward(self, z):
        return self.decoder(z.view(z.size(0), self.latent_dim, 1, 1))


class CourseDiscriminator(nn.Module):
    """The course's discriminator (given in its GAN.py): every convolution `bias=False`."""

    def __init__(self, hidden_dim):
        super().__init__()
        h = hidden_dim
        self.clf = nn.Sequential(
            nn.Conv2d(1, h, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(h, 2 * h, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * h), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * h, 4 * h, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * h), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * h, 1, 4, 1, 0, bias=False), nn.Sigmoid())
        self.apply(course_weights_init)

    def logits(self, x):
        return self.clf[:-1](x).view(-1)

    def forward(self, x):
        return self.clf(x).view(-1)


def course_discriminator_loss(real_logits, fake_logits):
    """nn.BCELoss on probabilities, as the course's trainer: Sigmoid, then BCELoss (clamped at log 1e-12)."""
    bce = nn.BCELoss()
    return (bce(torch.sigmoid(real_logits), torch.ones_like(real_logits))
            + bce(torch.sigmoid(fake_logits), torch.zeros_like(fake_logits)))


def course_generator_loss(fake_logits):
    return nn.BCELoss()(torch.sigmoid(fake_logits), torch.ones_like(fake_logits))


VARIANTS = {
    "course_all": dict(generator=CourseGenerator, discriminator=CourseDiscriminator,
                       discriminator_loss=course_discriminator_loss, generator_loss=course_generator_loss),
    "course_D": dict(discriminator=CourseDiscriminator),
    "course_G": dict(generator=CourseGenerator),
    "course_loss": dict(discriminator_loss=course_discriminator_loss, generator_loss=course_generator_loss),
}


def measure(variant, seed=2022, steps=5000):
    """Train (or load: the run's folder is named by its settings and the code's hash) and measure one variant."""
    started = time.time()
    run = train(code=GANCode(**VARIANTS[variant]), pipeline="resize", seed=seed, num_training_steps=steps,
                saving_steps=steps)
    background = (sample_images(run.generator, 1000) < -0.99).float().mean().item()
    fid = metrics.generator_fid(run.generator, 3000, pipeline="resize")
    print(f"| {variant} | {seed} | {fid.value:.1f} | {background:.3f} | {time.time() - started:.0f} s |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument("--steps", type=int, default=5000)
    args = parser.parse_args()
    print("| variant | seed | Inception FID (resize, 3000 vs 3000) | background share | time |\n| --- | --- | --- | --- | --- |")
    for variant in args.variants:
        measure(variant, args.seed, args.steps)
