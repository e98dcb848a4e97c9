"""Training the VAE, with the GAN trainer's conventions.

A run folder is laid out as labkit/runs/folder.py describes (config.json,
history.csv, tensorboard/, checkpoints/, samples/); rerunning resumes, and a
finished run is loaded. The training images are MNIST train less a held-out
dev split (`dev_size` images chosen by a fixed seed, the same for every run);
every logging step records, for the current training batch and for the whole
dev split, the loss, the KL divergence and the reconstruction loss
(VAE_COLUMNS), in nats per image.

The loss is the negative evidence lower bound (ELBO) of Kingma & Welling (2014):

    loss = E_q(z|x)[-log p(x|z)] + KL(q(z|x) || N(0, I))
         = reconstruction          + KL

estimated with one z per image, z = mean + sigma * noise (the
reparameterisation). Notebook 09 asks students for the three pieces
(reparameterize, kl_divergence, vae_loss; labkit's answers are in
labkit/solutions/vae.py); a student's versions train through `code=VAECode(...)`.
"""

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .data import BatchSampler, load_mnist
from .models import check_size, evaluating, fixed_noise, fixed_samples
from .runs.code import Code
from .runs.config import VAEConfig
from .runs.training import read_run, training
from .solutions import vae as answers

VAE_COLUMNS = ("step", "train_loss", "train_kl", "train_reconstruction", "dev_loss", "dev_kl", "dev_reconstruction")
CHECKPOINT_KIND = "vae"
DEV_SPLIT_SEED = 0
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
        check_size("latent_dim", latent_dim)
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

    def forward(self, images, noise=None, sample=answers.reparameterize):
        """(reconstruction logits, mean, logvar) of `images`.

        noise:  N(0, I) draws for the reparameterisation (default: fresh ones);
        sample: the reparameterisation, sample(mean, logvar, noise) -> z.
        """
        mean, logvar = self.encode(images)
        if noise is None:
            noise = torch.randn_like(mean)
        return self.decoder.logits(sample(mean, logvar, noise)), mean, logvar


@dataclass(frozen=True)
class VAECode(Code):
    """The pieces of a VAE run: reparameterize(mean, logvar, noise), kl_divergence(mean, logvar)
    (per image), vae_loss(logits, images, mean, logvar) (the batch mean); labkit's are in
    labkit/solutions/vae.py."""

    reparameterize: Callable = answers.reparameterize
    kl_divergence: Callable = answers.kl_divergence
    vae_loss: Callable = answers.vae_loss


@dataclass
class VAERun:
    path: Path
    config: VAEConfig
    history: list
    vae: VAE
    step: int

    def column(self, name):
        return [row[name] for row in self.history]

    def __repr__(self):
        return f"VAERun({str(self.path)!r}, step {self.step} of {self.config.num_training_steps})"


def split_train_dev(images, dev_size):
    """(train, dev) images: dev is a fixed random subset of MNIST train."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(DEV_SPLIT_SEED))
    order = order.to(images.device)
    return images[order[dev_size:]], images[order[:dev_size]]


def vae_losses(vae, images, noise=None, code=None):
    """Per-batch means of (loss, KL, reconstruction) in nats per image; loss = reconstruction + KL.

    code: a VAECode whose pieces compute them (default: labkit's). The
    reconstruction term is what is left of the loss after the KL term.
    """
    code = code or VAECode()
    logits, mean, logvar = vae(images, noise, code.reparameterize)
    loss = code.vae_loss(logits, images, mean, logvar)
    kl = code.kl_divergence(mean, logvar).mean()
    return loss, kl, loss - kl


@torch.no_grad()
def evaluate(vae, images, batch_size=1000, seed=0, code=None):
    """Mean (loss, KL, reconstruction) over `images`, with fixed reparameterisation noise."""
    rng = torch.Generator().manual_seed(seed)
    totals = torch.zeros(3)
    with evaluating(vae):
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            noise = torch.randn(len(batch), vae.latent_dim, generator=rng).to(batch.device)
            totals += torch.stack([v.cpu() for v in vae_losses(vae, batch, noise, code)]) * len(batch)
    return (totals / len(images)).tolist()


def train_vae(config=None, out_dir=None, *, code=None, progress=True, checkpoint_minutes=None, **overrides):
    """Train (or resume, or load) a VAE run; returns a VAERun.

    The arguments are those of labkit.gan.train; `code` is a VAECode.
    """
    code = code or VAECode()
    config = replace((config or VAEConfig()).updated(**overrides), code=code.identity)
    with training([config], [out_dir], CHECKPOINT_KIND, VAE_COLUMNS, progress=progress,
                  data=lambda device: training_images(device, config.pipeline), show=progress_line,
                  tag=lambda column: column.replace("_", "/", 1), checkpoint_minutes=checkpoint_minutes,
                  source=code.source() if code.student_pieces else None) as loop:
        if loop.finished:  # trained before: loaded, and nothing in it is written
            return _run_from(loop.saved[0], loop.device)
        return _train_vae(loop, config, code)


def _train_vae(loop, config, code):
    """The training loop. `loop` (labkit/runs/training.py) holds the run folder: it resumes, logs and saves."""
    device = loop.device
    torch.manual_seed(config.seed)  # the initial weights
    vae = VAE(config.latent_dim).to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.learning_rate)
    noise_rng = torch.Generator(device).manual_seed(config.seed)  # the reparameterisation noise
    parts = dict(models={"vae": vae}, optimizers={"vae": optimizer}, rng={"noise": noise_rng})
    loop.resume(**parts)
    train_images, dev_images = split_train_dev(loop.data, config.dev_size)
    batches = BatchSampler(len(train_images), config.batch_size, config.seed, device)
    sample_noise = fixed_noise(config.latent_dim, device=device)
    vae.train()
    for step in loop.steps():
        images = train_images[batches.indices(step - 1)]
        noise = torch.randn(len(images), config.latent_dim, generator=noise_rng, device=device)
        loss, kl, reconstruction = vae_losses(vae, images, noise, code)  # the negative ELBO, and its two terms
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if loop.logging(step) or loop.saving(step):  # this batch's losses and the dev split's
            values = [loss.item(), kl.item(), reconstruction.item(), *evaluate(vae, dev_images, code=code)]
            if not all(map(math.isfinite, values)):
                raise loop.diverged(f"the VAE's loss became NaN or infinite at or before step {step}")
        if loop.logging(step):
            loop.log(dict(zip(VAE_COLUMNS, [step, *values])))
        if loop.saving(step):
            loop.save(step, fixed_samples(vae.decoder, sample_noise), **parts)
    return VAERun(loop.run_dir, config, loop.history, vae.eval(), config.num_training_steps)


def training_images(device, pipeline="pad"):
    """MNIST's 60,000 training images, on `device`, made 32x32 by the run's `pipeline` (split_train_dev
    holds some out)."""
    return load_mnist("train", device=device, pipeline=pipeline)[0]


def progress_line(row):
    """What the progress bar shows of a history row."""
    return dict(train=f"{row['train_loss']:.1f}", dev=f"{row['dev_loss']:.1f}", kl=f"{row['dev_kl']:.1f}")


def load_vae_run(run_dir, device="cpu", code=None):
    """A VAE run folder's config, history and newest weights (in eval mode). Writes nothing."""
    return _run_from(read_run(run_dir, VAEConfig, CHECKPOINT_KIND, VAE_COLUMNS, code or VAECode(), device), device)


def _run_from(saved, device):
    """The `VAERun` of a saved run (labkit/runs/training.py's SavedRun)."""
    with torch.random.fork_rng(devices=[]):  # building a model draws its initial weights
        vae = VAE(saved.config.latent_dim)
    saved.load(vae=vae)
    return VAERun(saved.path, saved.config, saved.history(), vae.to(device).eval(), saved.step)
