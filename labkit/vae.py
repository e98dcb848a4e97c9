"""Training the VAE, with the GAN trainer's conventions.

A run folder is laid out as labkit/machinery/runs.py describes (config.json,
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
reparameterisation). labkit.models holds the three pieces (reparameterize,
kl_divergence, vae_loss); a student's versions train through `code=VAECode(...)`.
"""

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .data import BatchSampler, load_mnist
from .machinery import REFERENCE, RunConfig, VAECode, read_run, training
from .models import VAE, evaluating
from .train import check_seed, check_whole, fixed_noise, fixed_samples

VAE_COLUMNS = ("step", "train_loss", "train_kl", "train_reconstruction", "dev_loss", "dev_kl", "dev_reconstruction")
CHECKPOINT_KIND = "vae"
DEV_SPLIT_SEED = 0
LIMITS = dict(latent_dim=4096, batch_size=50_000, num_training_steps=10_000_000, logging_steps=10_000_000,
              saving_steps=10_000_000, dev_size=10_000)


@dataclass
class VAEConfig(RunConfig):
    latent_dim: int = 10
    batch_size: int = 32
    num_training_steps: int = 25000
    learning_rate: float = 1e-3
    logging_steps: int = 100
    saving_steps: int = 5000
    dev_size: int = 5000
    seed: int = 2022
    device: str = "auto"
    code: str = REFERENCE  # "labkit", or "student-<hash>" (labkit/machinery/code.py)

    def __post_init__(self):
        self.check_types()
        for name, limit in LIMITS.items():
            check_whole(name, getattr(self, name), limit)
        check_seed(self.seed)
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < float("inf")):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")

    def name_parts(self):
        parts = [f"vae_z{self.latent_dim}", f"steps{self.num_training_steps}", f"seed{self.seed}"]
        return parts + self.suffixes(dict(batch_size="b", learning_rate="lr", dev_size="dev", code=str))


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


def train_vae(config=None, out_dir=None, *, code=None, progress=True, **overrides):
    """Train (or resume, or load) a VAE run; returns a VAERun.

    The arguments are those of labkit.train.train; `code` is a VAECode.
    """
    code = code or VAECode()
    config = replace((config or VAEConfig()).updated(**overrides), code=code.identity)
    with training([config], [out_dir], CHECKPOINT_KIND, VAE_COLUMNS, data=training_images, progress=progress,
                  show=progress_line, tag=lambda column: column.replace("_", "/", 1),
                  source=code.source() if code.student_pieces else None) as loop:
        if loop.finished:  # trained before: loaded, and nothing in it is written
            return _run_from(loop.saved[0], loop.device)
        return _train_vae(loop, config, code)


def _train_vae(loop, config, code):
    """The training loop. `loop` (labkit/machinery/loop.py) holds the run folder: it resumes, logs and saves."""
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


def training_images(device):
    """MNIST's 60,000 training images, on `device` (split_train_dev holds some out)."""
    return load_mnist("train", device=device)[0]


def progress_line(row):
    """What the progress bar shows of a history row."""
    return dict(train=f"{row['train_loss']:.1f}", dev=f"{row['dev_loss']:.1f}", kl=f"{row['dev_kl']:.1f}")


def load_vae_run(run_dir, device="cpu", code=None):
    """A VAE run folder's config, history and newest weights (in eval mode). Writes nothing."""
    return _run_from(read_run(run_dir, VAEConfig, CHECKPOINT_KIND, VAE_COLUMNS, code or VAECode(), device), device)


def _run_from(saved, device):
    """The `VAERun` of a saved run (labkit/machinery/loop.py's SavedRun)."""
    with torch.random.fork_rng(devices=[]):  # building a model draws its initial weights
        vae = VAE(saved.config.latent_dim)
    saved.load(vae=vae)
    return VAERun(saved.path, saved.config, saved.history(), vae.to(device).eval(), saved.step)
