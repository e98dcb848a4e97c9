"""Training the course's GAN: one config dataclass, one loop, one run folder.

A run folder holds
    config.json          every setting of the run (TrainConfig)
    history.csv          one row per logging step (HISTORY_COLUMNS)
    tensorboard/         the same values as TensorBoard event files
    checkpoints/         the newest checkpoint: G, D, both optimizers, RNG states
    samples/             a grid of 64 samples from fixed noise at every checkpoint

Calling `train` again with the same folder continues from its newest
checkpoint (or returns at once if the run is complete), so an interrupted run
loses at most `saving_steps` steps, and on a CPU ends with exactly the weights
an uninterrupted run would have.

The step is the course's (LAB-SPEC section 1), as in pytorch/examples/dcgan:
    1. D on a real batch (target 1) and on G(z).detach() (target 0); update D.
    2. G on D(G(z)) with target 1, the same z; update G.
The GPU never waits for the host between logging steps: the logged values stay
on the device until a logging step reads them.
"""

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torchvision.utils import save_image

from .checkpoints import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    remove_older_checkpoints,
    save_atomic,
)
from .data import BatchSampler, load_mnist, to_unit_range
from .models import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator

HISTORY_COLUMNS = ("step", "discriminator_loss", "generator_loss", "D_x", "D_G_z1", "D_G_z2", "d_updates")
CHECKPOINT_KIND = "gan"


@dataclass
class TrainConfig:
    # The course's flags, with the course's defaults.
    latent_dim: int = 16
    generator_hidden_dim: int = 16
    discriminator_hidden_dim: int = 16
    batch_size: int = 64
    num_training_steps: int = 5000
    logging_steps: int = 10
    saving_steps: int = 1000
    learning_rate: float = 2e-4
    beta1: float = 0.5
    use_mlp: bool = False
    # Reproducibility and hardware. seed 2022 is the one the course's reports used.
    seed: int = 2022
    device: str = "auto"  # "auto" (CUDA if present), "cpu", "cuda", "cuda:1", ...
    # Ablations (LAB-SPEC section 7) and the MLP GAN's BatchNorm failure (section 6).
    discriminator_activation: str = "leaky_relu"  # or "relu"
    batch_norm: bool = True  # BatchNorm in the DCGAN's G and D
    mlp_discriminator_batch_norm: bool = False
    # Rebalancing D and G (LAB-SPEC section 3); all off by default.
    d_every: int = 1  # update D only on every k-th step
    d_pause_ratio: float = 0.0  # skip D's update while loss_D / loss_G < this
    generator_learning_rate: Optional[float] = None  # default: learning_rate
    discriminator_learning_rate: Optional[float] = None  # default: learning_rate

    def __post_init__(self):
        for name in ("latent_dim", "generator_hidden_dim", "discriminator_hidden_dim", "batch_size",
                     "num_training_steps", "logging_steps", "saving_steps", "d_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        for name in ("learning_rate", "generator_learning_rate", "discriminator_learning_rate"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not 0 <= self.beta1 < 1:
            raise ValueError(f"beta1 must be in [0, 1), got {self.beta1!r}")
        if not self.d_pause_ratio >= 0:
            raise ValueError(f"d_pause_ratio must be >= 0 (0 turns it off), got {self.d_pause_ratio!r}")
        if self.discriminator_activation not in ("leaky_relu", "relu"):
            raise ValueError("discriminator_activation must be 'leaky_relu' or 'relu', "
                             f"got {self.discriminator_activation!r}")

    @property
    def name(self):
        """A short folder name that tells runs of a sweep apart."""
        return f"{self.architecture}_seed{self.seed}"

    @property
    def architecture(self):
        """The model and its sizes, e.g. dcgan_z16_g16_d16."""
        model = "mlp" if self.use_mlp else "dcgan"
        return f"{model}_z{self.latent_dim}_g{self.generator_hidden_dim}_d{self.discriminator_hidden_dim}"

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# Settings that may change between a run and its resumption: they do not
# change what the model has learned so far.
RESUMABLE_CHANGES = {"num_training_steps", "logging_steps", "saving_steps", "device"}


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


def resolve_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but PyTorch sees no CUDA GPU; use device='cpu'")
    return device


def describe_device(device):
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def build_models(config):
    """The untrained (generator, discriminator) pair that `config` describes."""
    if config.use_mlp:
        return MLPGenerator(config.latent_dim), MLPDiscriminator(config.mlp_discriminator_batch_norm)
    return (
        DCGANGenerator(config.latent_dim, config.generator_hidden_dim, config.batch_norm),
        DCGANDiscriminator(config.discriminator_hidden_dim, config.discriminator_activation,
                           config.batch_norm),
    )


def bce(prob, target):
    """Binary cross-entropy, the same numbers as nn.BCELoss (log clamped at -100).

    Written out because nn.BCELoss asserts that its input lies in [0, 1]: a NaN
    from a diverging run then fails inside the loss (on CUDA as a device-side
    assert that ends the whole process) instead of reaching the training loop's
    check, which says at which step it happened and keeps the last checkpoint.

    The mean is over the last dimension: one loss for a batch (B,) of
    probabilities, and one per model for the (N, B) of N stacked models
    (labkit/together.py).
    """
    log_p = torch.log(prob).clamp(min=-100)
    log_not_p = torch.log1p(-prob).clamp(min=-100)
    return -(target * log_p + (1 - target) * log_not_p).mean(dim=-1)


def descend(optimizer, loss):
    """One optimizer step down `loss` (summed first: stacked models have one loss each)."""
    optimizer.zero_grad(set_to_none=True)
    loss.sum().backward()
    optimizer.step()


def generator_step(generator_optimizer, discriminator, fake, ones):
    """Update G so that D calls its fakes real; return (loss_g, D's outputs on the fakes).

    G's gradient flows through D, but D's own weight gradients are not needed,
    so D's weights are left out of the graph (about 8% of a step saved).
    """
    discriminator.requires_grad_(False)
    out_fake = discriminator(fake)
    discriminator.requires_grad_(True)  # the graph is already recorded without D's weights
    loss_g = bce(out_fake, ones)
    descend(generator_optimizer, loss_g)
    return loss_g, out_fake


def fixed_noise(latent_dim, count=64, device="cpu"):
    """The noise behind every run's sample grids: the same for every seed."""
    return torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(0)).to(device)


@dataclass
class Run:
    """A trained (or partly trained) run, as `train` returns it and `load_run` reads it."""

    path: Path
    config: TrainConfig
    history: list  # of dicts, one per logging step, keys HISTORY_COLUMNS
    generator: nn.Module
    discriminator: nn.Module
    step: int

    @property
    def finished(self):
        return self.step >= self.config.num_training_steps

    def column(self, name):
        return [row[name] for row in self.history]


COUNT_COLUMNS = {"step", "d_updates"}


def read_history(run_dir):
    """A run folder's history.csv as a list of dicts (counts as int, values as float)."""
    path = Path(run_dir) / "history.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (int(v) if k in COUNT_COLUMNS else float(v)) for k, v in row.items()}
                for row in csv.DictReader(f)]


def write_history(run_dir, rows, columns=HISTORY_COLUMNS):
    with open(Path(run_dir) / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_config(run_dir, config_class=None):
    config_class = config_class or TrainConfig
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a labkit run folder (it has no config.json)")
    return config_class.from_dict(json.loads(path.read_text()))


def load_run(run_dir, device="cpu"):
    """A run folder's config, history and newest weights (in eval mode)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    config = read_config(run_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet; train it first")
    state = load_checkpoint(ckpt, CHECKPOINT_KIND, map_location=device)
    generator, discriminator = build_models(config)
    generator.load_state_dict(state["generator"])
    discriminator.load_state_dict(state["discriminator"])
    generator.to(device).eval()
    discriminator.to(device).eval()
    return Run(run_dir, config, read_history(run_dir), generator, discriminator, state["step"])


def check_resumable(run_dir, config):
    """Refuse to resume a run folder whose settings differ in what the model learned."""
    saved = read_config(run_dir, type(config))
    changed = [f.name for f in fields(config)
               if getattr(saved, f.name) != getattr(config, f.name) and f.name not in RESUMABLE_CHANGES]
    if changed:
        diffs = ", ".join(f"{n}={getattr(saved, n)!r} there vs {getattr(config, n)!r} now" for n in changed)
        raise ValueError(f"{run_dir} holds a run with other settings ({diffs}); "
                         f"choose another output folder or delete that one")


def open_run(config, out_dir, kind):
    """(run folder, device, newest checkpoint's state or None) for a run about to train.

    Checks everything that could stop the run before anything is written: the
    device, and that an existing run folder holds the same settings and a
    readable checkpoint.
    """
    run_dir = Path(out_dir) if out_dir is not None else Path("runs") / config.name
    device = resolve_device(config.device)
    state = None
    newest = latest_checkpoint(run_dir)
    if newest is not None:
        check_resumable(run_dir, config)
        state = load_checkpoint(newest, kind, map_location=device)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, device, state


def prepare_run_folder(run_dir, config, state):
    """Write config.json and cut history.csv back to the checkpoint we resume from; return that history."""
    history = []
    if state is not None:
        history = [row for row in read_history(run_dir) if row["step"] <= state["step"]]
    write_history(run_dir, history)  # drops rows logged after the checkpoint
    (Path(run_dir) / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    return history


def check_finite(finite_flags, step, run_dir):
    """Raise TrainingDiverged if any flag is False.

    finite_flags: one bool per step, for the steps that end at `step`, on the host.
    """
    finite = torch.as_tensor(finite_flags)
    if finite.all():
        return
    bad_step = step - len(finite) + 1 + int((~finite).nonzero()[0])
    last = latest_checkpoint(run_dir)
    raise TrainingDiverged(
        f"the loss became NaN or infinite at step {bad_step}; training stopped. "
        + (f"The last good checkpoint is {last}." if last else "No checkpoint was written yet.")
        + " Try a lower learning rate or another seed.")


class RunWriter:
    """What a run writes while it trains: history.csv rows, TensorBoard scalars, sample grids, checkpoints."""

    def __init__(self, run_dir, start_step):
        from torch.utils.tensorboard import SummaryWriter  # slow import; only needed when training

        self.run_dir = Path(run_dir)
        self.tensorboard = SummaryWriter(self.run_dir / "tensorboard", purge_step=start_step + 1)
        self.history_file = open(self.run_dir / "history.csv", "a", newline="")
        self.history = csv.DictWriter(self.history_file, fieldnames=HISTORY_COLUMNS)

    def log(self, row):
        self.history.writerow(row)
        self.history_file.flush()
        for key in HISTORY_COLUMNS[1:]:
            self.tensorboard.add_scalar(key, row[key], row["step"])

    def save(self, state, samples):
        """Write the checkpoint `state` (atomically; older ones are deleted) and a grid of `samples`."""
        step = state["step"]
        path = self.run_dir / "samples" / f"step-{step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(to_unit_range(samples), path, nrow=8)
        ckpt = checkpoint_path(self.run_dir, step)
        save_atomic(state, ckpt)
        remove_older_checkpoints(self.run_dir, keep=ckpt)
        self.tensorboard.flush()

    def close(self):
        self.tensorboard.close()
        self.history_file.close()


def train(config=None, out_dir=None, *, progress=True, on_log=None, **overrides):
    """Train (or resume) a GAN run and return it as a `Run`.

    config:    a TrainConfig; keyword overrides (e.g. latent_dim=32) are applied to it.
    out_dir:   the run folder; default runs/<config.name>.
    progress:  show a tqdm progress bar (a widget in Jupyter).
    on_log:    called with each history row (a dict) at every logging step.
    """
    config = TrainConfig.from_dict({**asdict(config or TrainConfig()), **overrides})
    run_dir, device, state = open_run(config, out_dir, CHECKPOINT_KIND)

    torch.manual_seed(config.seed)
    generator, discriminator = build_models(config)
    # channels_last made a whole step 1.3-1.4x faster on a 2-core CPU at hidden
    # 16 and 64 (bench/train_speed.py); it is not yet measured on CUDA, so there
    # the default layout stays.
    memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    generator.to(device, memory_format=memory_format)
    discriminator.to(device, memory_format=memory_format)
    lr_g = config.generator_learning_rate or config.learning_rate
    lr_d = config.discriminator_learning_rate or config.learning_rate
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr_g, betas=(config.beta1, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=(config.beta1, 0.999))
    noise_rng = torch.Generator(device).manual_seed(config.seed)
    start_step, d_updates, prev_loss_g = 0, 0, None

    if state is not None:  # resume
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_generator"])
        opt_d.load_state_dict(state["opt_discriminator"])
        noise_rng.set_state(state["noise_rng"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        start_step, d_updates, prev_loss_g = state["step"], state["d_updates"], state["prev_generator_loss"]
    history = prepare_run_folder(run_dir, config, state)

    if start_step >= config.num_training_steps:
        generator.eval(), discriminator.eval()
        return Run(run_dir, config, history, generator, discriminator, start_step)

    from tqdm.auto import tqdm

    images = load_mnist("train", device=device)[0].contiguous(memory_format=memory_format)
    batches = BatchSampler(len(images), config.batch_size, config.seed, device)
    sample_noise = fixed_noise(config.latent_dim, device=device)
    ones = torch.ones(config.batch_size, device=device)
    zeros = torch.zeros(config.batch_size, device=device)
    writer = RunWriter(run_dir, start_step)
    bar = tqdm(total=config.num_training_steps, initial=start_step, desc=run_dir.name,
               disable=not progress, dynamic_ncols=True)
    if progress:
        bar.write(f"labkit: training {run_dir} on {describe_device(device)}"
                  + (f", resuming at step {start_step}" if start_step else ""))
    finite_flags = []  # one 0-d bool tensor per step since the last check, kept on the device
    generator.train(), discriminator.train()
    started = time.time()
    try:
        for step in range(start_step + 1, config.num_training_steps + 1):
            real = images[batches.indices(step - 1)]
            z = torch.randn(config.batch_size, config.latent_dim, generator=noise_rng, device=device)

            # (1) Discriminator: real -> 1, fake -> 0.
            out_real = discriminator(real)
            fake = generator(z)
            out_fake = discriminator(fake.detach())
            loss_d = bce(out_real, ones) + bce(out_fake, zeros)
            update_d = (step - 1) % config.d_every == 0
            if update_d and config.d_pause_ratio > 0 and prev_loss_g is not None:
                # This option needs the losses on the host, so it costs one sync per step.
                update_d = loss_d.item() / max(prev_loss_g, 1e-12) >= config.d_pause_ratio
            if update_d:
                descend(opt_d, loss_d)
                d_updates += 1

            # (2) Generator: make D call the same fakes real.
            loss_g, out_fake_after = generator_step(opt_g, discriminator, fake, ones)
            if config.d_pause_ratio > 0:
                prev_loss_g = loss_g.item()

            finite_flags.append(torch.isfinite(loss_d) & torch.isfinite(loss_g))
            bar.update(1)
            is_log = step % config.logging_steps == 0
            is_save = step % config.saving_steps == 0 or step == config.num_training_steps
            if not (is_log or is_save):
                continue

            check_finite(torch.stack(finite_flags).cpu(), step, run_dir)  # the one host-device sync
            finite_flags.clear()

            if is_log:
                row = dict(step=step, discriminator_loss=loss_d.item(), generator_loss=loss_g.item(),
                           D_x=out_real.mean().item(), D_G_z1=out_fake.mean().item(),
                           D_G_z2=out_fake_after.mean().item(), d_updates=d_updates)
                history.append(row)
                writer.log(row)
                bar.set_postfix(loss_D=f"{row['discriminator_loss']:.3f}",
                                loss_G=f"{row['generator_loss']:.3f}", D_x=f"{row['D_x']:.2f}")
                if on_log is not None:
                    on_log(row)

            if is_save:
                generator.eval()
                with torch.no_grad():
                    samples = generator(sample_noise)
                generator.train()
                writer.save({
                    "kind": CHECKPOINT_KIND, "step": step, "config": asdict(config),
                    "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                    "opt_generator": opt_g.state_dict(), "opt_discriminator": opt_d.state_dict(),
                    "noise_rng": noise_rng.get_state(), "torch_rng": torch.get_rng_state(),
                    "d_updates": d_updates, "prev_generator_loss": prev_loss_g,
                }, samples)
    finally:
        bar.close()
        writer.close()
    if progress:
        print(f"labkit: {config.num_training_steps - start_step} steps in {time.time() - started:.1f} s; "
              f"samples in {run_dir / 'samples'}")
    generator.eval(), discriminator.eval()
    return Run(run_dir, config, history, generator, discriminator, config.num_training_steps)
