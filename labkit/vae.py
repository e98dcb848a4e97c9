"""Training the VAE (LAB-SPEC section 8), with the GAN trainer's conventions.

A run folder has config.json, history.csv, tensorboard/, checkpoints/ (the
newest, written atomically) and samples/; rerunning resumes. The training
images are MNIST train less a held-out dev split (`dev_size` images chosen by
a fixed seed, the same for every run); every logging step records, for the
current training batch and for the whole dev split, the loss, the KL
divergence and the reconstruction loss (VAE_COLUMNS), in nats per image.
"""

import csv
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torchvision.utils import save_image

from .checkpoints import checkpoint_path, latest_checkpoint, load_checkpoint, remove_older_checkpoints, save_atomic
from .data import BatchSampler, load_mnist, to_unit_range
from .models import VAE, vae_losses
from .train import describe_device, fixed_noise, open_run, read_config, read_history, write_history

VAE_COLUMNS = ("step", "train_loss", "train_kl", "train_reconstruction", "dev_loss", "dev_kl", "dev_reconstruction")
CHECKPOINT_KIND = "vae"
DEV_SPLIT_SEED = 0


@dataclass
class VAEConfig:
    latent_dim: int = 10
    batch_size: int = 32
    num_training_steps: int = 25000
    learning_rate: float = 1e-3
    logging_steps: int = 100
    saving_steps: int = 5000
    dev_size: int = 5000
    seed: int = 2022
    device: str = "auto"

    def __post_init__(self):
        for name in ("latent_dim", "batch_size", "num_training_steps", "logging_steps", "saving_steps",
                     "dev_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")

    @property
    def name(self):
        return f"vae_z{self.latent_dim}_seed{self.seed}"

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class VAERun:
    path: Path
    config: VAEConfig
    history: list
    vae: VAE
    step: int

    def column(self, name):
        return [row[name] for row in self.history]


def split_train_dev(images, dev_size):
    """(train, dev) images: dev is a fixed random subset of MNIST train."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(DEV_SPLIT_SEED))
    order = order.to(images.device)
    return images[order[dev_size:]], images[order[:dev_size]]


@torch.no_grad()
def evaluate(vae, images, batch_size=1000, seed=0):
    """Mean (loss, KL, reconstruction) over `images`, with fixed reparameterisation noise."""
    rng = torch.Generator().manual_seed(seed)
    totals = torch.zeros(3)
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        noise = torch.randn(len(batch), vae.latent_dim, generator=rng).to(batch.device)
        totals += torch.stack([v.cpu() for v in vae_losses(vae, batch, noise)]) * len(batch)
    return (totals / len(images)).tolist()


def load_vae_run(run_dir, device="cpu"):
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    config = read_config(run_dir, VAEConfig)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet; train it first")
    state = load_checkpoint(ckpt, CHECKPOINT_KIND, map_location=device)
    vae = VAE(config.latent_dim)
    vae.load_state_dict(state["vae"])
    return VAERun(run_dir, config, read_history(run_dir), vae.to(device).eval(), state["step"])


def train_vae(config=None, out_dir=None, *, progress=True, **overrides):
    """Train (or resume) a VAE run; returns a VAERun."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    config = VAEConfig.from_dict({**asdict(config or VAEConfig()), **overrides})
    run_dir, device, state = open_run(config, out_dir, CHECKPOINT_KIND)

    torch.manual_seed(config.seed)
    vae = VAE(config.latent_dim).to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.learning_rate)
    noise_rng = torch.Generator(device).manual_seed(config.seed)
    start_step, history = 0, []
    if state is not None:
        vae.load_state_dict(state["vae"])
        optimizer.load_state_dict(state["optimizer"])
        noise_rng.set_state(state["noise_rng"].cpu())
        start_step = state["step"]
        history = [row for row in read_history(run_dir) if row["step"] <= start_step]
    write_history(run_dir, history, VAE_COLUMNS)
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    if start_step >= config.num_training_steps:
        return VAERun(run_dir, config, history, vae.eval(), start_step)

    train_images, dev_images = split_train_dev(load_mnist("train", device=device)[0], config.dev_size)
    batches = BatchSampler(len(train_images), config.batch_size, config.seed, device)
    sample_noise = fixed_noise(config.latent_dim, device=device)
    writer = SummaryWriter(run_dir / "tensorboard", purge_step=start_step + 1)
    history_file = open(run_dir / "history.csv", "a", newline="")
    history_writer = csv.DictWriter(history_file, fieldnames=VAE_COLUMNS)
    bar = tqdm(total=config.num_training_steps, initial=start_step, desc=run_dir.name, disable=not progress,
               dynamic_ncols=True)
    if progress:
        bar.write(f"labkit: training {run_dir} on {describe_device(device)}"
                  + (f", resuming at step {start_step}" if start_step else ""))
    started = time.time()
    vae.train()
    try:
        for step in range(start_step + 1, config.num_training_steps + 1):
            images = train_images[batches.indices(step - 1)]
            noise = torch.randn(len(images), config.latent_dim, generator=noise_rng, device=device)
            loss, kl, reconstruction = vae_losses(vae, images, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)

            if step % config.logging_steps == 0:
                vae.eval()
                dev = evaluate(vae, dev_images)
                vae.train()
                row = dict(zip(VAE_COLUMNS, [step, loss.item(), kl.item(), reconstruction.item(), *dev]))
                if not all(torch.isfinite(torch.tensor(list(row.values()), dtype=torch.float64))):
                    raise RuntimeError(f"the VAE's loss became NaN or infinite at or before step {step}; "
                                       f"the last good checkpoint is {latest_checkpoint(run_dir)}")
                history.append(row)
                history_writer.writerow(row)
                history_file.flush()
                for key in VAE_COLUMNS[1:]:
                    writer.add_scalar(key.replace("_", "/", 1), row[key], step)
                bar.set_postfix(train=f"{row['train_loss']:.1f}", dev=f"{row['dev_loss']:.1f}",
                                kl=f"{row['dev_kl']:.1f}")

            if step % config.saving_steps == 0 or step == config.num_training_steps:
                vae.eval()
                with torch.no_grad():
                    samples = vae.decoder(sample_noise)
                (run_dir / "samples").mkdir(exist_ok=True)
                save_image(to_unit_range(samples), run_dir / "samples" / f"step-{step:06d}.png", nrow=8)
                vae.train()
                ckpt = checkpoint_path(run_dir, step)
                save_atomic({"kind": CHECKPOINT_KIND, "step": step, "config": asdict(config),
                             "vae": vae.state_dict(), "optimizer": optimizer.state_dict(),
                             "noise_rng": noise_rng.get_state()}, ckpt)
                remove_older_checkpoints(run_dir, keep=ckpt)
    finally:
        bar.close()
        writer.close()
        history_file.close()
    if progress:
        print(f"labkit: {config.num_training_steps - start_step} steps in {time.time() - started:.1f} s")
    return VAERun(run_dir, config, history, vae.eval(), config.num_training_steps)
