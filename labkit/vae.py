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

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .machinery import CheckpointError, latest_checkpoint, load_latest, make_checkpoint
from .machinery import LABKIT_VAE, REFERENCE, VAECode, check_code  # noqa: F401 (VAECode: a student's pieces)
from .data import BatchSampler, load_mnist
from .models import VAE, evaluating
from .machinery import (RunConfig, RunLock, RunWriter, TrainingDiverged, announce, check_checkpoint_config,
                   check_run_folder, check_writable, forked_rng, load_weights, prepare_run_folder, read_config,
                   read_history, resolve_device, runs_root, saved_state)
from .train import check_seed, check_whole, fixed_noise

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
    code = code or LABKIT_VAE
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


def load_vae_run(run_dir, device="cpu", code=None):
    """A VAE run folder's config, history and newest weights (in eval mode). Writes nothing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    config = read_config(run_dir, VAEConfig)
    check_code(code or LABKIT_VAE, config, run_dir)
    state = load_latest(run_dir, CHECKPOINT_KIND, map_location=device)
    if state is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet; train it first")
    check_checkpoint_config(state, config, run_dir)
    return _run_from_state(run_dir, config, state, device)


def _run_from_state(run_dir, config, state, device):
    with torch.random.fork_rng(devices=[]):  # building a model draws its initial weights
        vae = VAE(config.latent_dim)
    load_weights(vae, state["models"]["vae"], "VAE", run_dir)
    history = [row for row in read_history(run_dir, VAE_COLUMNS) if row["step"] <= state["step"]]
    return VAERun(Path(run_dir), config, history, vae.to(device).eval(), state["step"])


def train_vae(config=None, out_dir=None, *, code=None, progress=True, **overrides):
    """Train (or resume, or load) a VAE run; returns a VAERun.

    The arguments are those of labkit.train.train; `code` is a VAECode.
    """
    code = code or LABKIT_VAE
    config = replace((config or VAEConfig()).updated(**overrides), code=code.identity)
    run_dir = Path(out_dir) if out_dir is not None else runs_root() / config.name
    check_run_folder(run_dir)
    device = resolve_device(config.device)
    say = print if progress else (lambda *a, **k: None)
    state = saved_state(run_dir, config, CHECKPOINT_KIND, device)
    if state is not None and state["step"] >= config.num_training_steps:
        say(f"labkit: found the finished run {run_dir} (step {state['step']}); loading it")
        return _run_from_state(run_dir, config, state, device)
    images = load_mnist("train", device=device)[0]  # a missing dataset is reported before anything is written
    check_writable(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        state = saved_state(run_dir, config, CHECKPOINT_KIND, device)
        if state is not None and state["step"] >= config.num_training_steps:
            say(f"labkit: found the finished run {run_dir} (step {state['step']}); loading it")
            return _run_from_state(run_dir, config, state, device)
        with forked_rng(device):
            return _train_vae(config, run_dir, device, state, code, progress, say, images)


def _train_vae(config, run_dir, device, state, code, progress, say, images):
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    vae = VAE(config.latent_dim).to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.learning_rate)
    noise_rng = torch.Generator(device).manual_seed(config.seed)
    start_step = 0
    if state is not None:
        load_weights(vae, state["models"]["vae"], "VAE", run_dir)
        optimizer.load_state_dict(state["optimizers"]["vae"])
        noise_rng.set_state(state["rng"]["noise"].cpu())
        start_step = state["step"]

    train_images, dev_images = split_train_dev(images, config.dev_size)
    history = prepare_run_folder(run_dir, config, state, VAE_COLUMNS,
                                 source=code.source() if code.student_pieces else None)
    batches = BatchSampler(len(train_images), config.batch_size, config.seed, device)
    sample_noise = fixed_noise(config.latent_dim, device=device)
    writer = RunWriter(run_dir, start_step, VAE_COLUMNS, tag=lambda key: key.replace("_", "/", 1))
    say(announce(run_dir, start_step, config.num_training_steps, device))
    bar = tqdm(total=config.num_training_steps, initial=start_step, desc=run_dir.name, disable=not progress,
               dynamic_ncols=True)
    started = time.time()
    vae.train()
    try:
        for step in range(start_step + 1, config.num_training_steps + 1):
            images = train_images[batches.indices(step - 1)]
            noise = torch.randn(len(images), config.latent_dim, generator=noise_rng, device=device)
            loss, kl, reconstruction = vae_losses(vae, images, noise, code)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)

            is_save = step % config.saving_steps == 0 or step == config.num_training_steps
            if step % config.logging_steps == 0 or is_save:
                dev = evaluate(vae, dev_images, code=code)
                values = [loss.item(), kl.item(), reconstruction.item(), *dev]
                if not all(map(torch.isfinite, torch.tensor(values, dtype=torch.float64))):
                    last = latest_checkpoint(run_dir)
                    raise TrainingDiverged(
                        f"the VAE's loss became NaN or infinite at or before step {step}; training stopped. "
                        + (f"The last good checkpoint is {last}." if last else "No checkpoint was written yet.")
                        + " Try a lower learning rate or another seed.")
                if step % config.logging_steps == 0:
                    row = dict(zip(VAE_COLUMNS, [step, *values]))
                    history.append(row)
                    writer.log(row)
                    bar.set_postfix(train=f"{row['train_loss']:.1f}", dev=f"{row['dev_loss']:.1f}",
                                    kl=f"{row['dev_kl']:.1f}")

            if is_save:
                with torch.no_grad(), evaluating(vae):
                    samples = vae.decoder(sample_noise)
                writer.save(make_checkpoint(CHECKPOINT_KIND, step, config, models={"vae": vae},
                                            optimizers={"vae": optimizer}, rng={"noise": noise_rng.get_state()}),
                            samples)
    finally:
        bar.close()
        writer.close()
    say(f"labkit: {config.num_training_steps - start_step} steps in {time.time() - started:.1f} s")
    return VAERun(run_dir, config, history, vae.eval(), config.num_training_steps)
