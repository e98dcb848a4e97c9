"""Training the course's GAN: one config dataclass, one loop, one run folder.

    run = train(TrainConfig(latent_dim=32))     # trains runs/dcgan_z32_g16_d16_steps5000_seed2022
    run = train(TrainConfig(latent_dim=32))     # the same settings again: loads that run
    run = load_run(run.path)                    # config, history and newest weights

The step itself is `labkit.step.gan_step` (the losses, the rebalancing rule).
This module builds the networks and their optimizers, and its loop (`_train`)
feeds the step batches and noise and says what to log and save; the
skeleton around the loop (labkit/machinery/loop.py) opens, locks, resumes
and writes the run folder (labkit/machinery/runs.py describes it).

Calling `train` with the settings of an unfinished run continues it from its
newest checkpoint, so an interrupted run loses at most `saving_steps` steps
and, on a CPU, ends with exactly the weights an uninterrupted run would have.
A finished run is loaded, not trained again, and nothing in it is written.

The GPU never waits for the host between logging steps: the logged values
stay on the device until a logging step reads them (unless the rebalancing
rule needs the losses: labkit.step.needs_losses).
"""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .data import MNIST_TRAIN_SIZE, BatchSampler, load_mnist
from .machinery import REFERENCE, GANCode, RunConfig, branch_run, read_run, training
from .machinery import TrainingDiverged  # noqa: F401 (what `train` raises when a loss turns NaN)
from .models import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, evaluating
from .step import gan_step, needs_losses

HISTORY_COLUMNS = ("step", "discriminator_loss", "generator_loss", "D_x", "D_G_z1", "D_G_z2", "d_updates")
CHECKPOINT_KIND = "gan"
# Upper bounds that catch typos (an extra zero) before they allocate gigabytes.
LIMITS = dict(latent_dim=4096, generator_hidden_dim=1024, discriminator_hidden_dim=1024,
              batch_size=MNIST_TRAIN_SIZE, num_training_steps=10_000_000, logging_steps=10_000_000,
              saving_steps=10_000_000, d_every=1_000_000)
MAX_SEED = 2**32 - 1


def check_whole(name, value, limit):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ValueError(f"{name} must be a whole number from 1 to {limit:,}, got {value!r}")


def check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED:,}, got {seed!r}")


@dataclass
class TrainConfig(RunConfig):
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
    # Ablations and the MLP GAN's BatchNorm-in-D failure.
    discriminator_activation: str = "leaky_relu"  # or "relu"
    batch_norm: bool = True  # BatchNorm in the DCGAN's G and D
    mlp_discriminator_batch_norm: bool = False
    # Rebalancing D and G; all off by default.
    d_every: int = 1  # update D only on every k-th step
    d_pause_ratio: float = 0.0  # skip D's update while loss_D / loss_G < this
    generator_learning_rate: Optional[float] = None  # default: learning_rate
    discriminator_learning_rate: Optional[float] = None  # default: learning_rate
    # Whose code trains it: "labkit", or "student-<hash>" (labkit/machinery/code.py).
    code: str = REFERENCE

    def __post_init__(self):
        self.check_types()  # "use_mlp": "yes" in a config.json is one line, like a bad value on the command line
        for name, limit in LIMITS.items():
            check_whole(name, getattr(self, name), limit)
        check_seed(self.seed)
        for name in ("learning_rate", "generator_learning_rate", "discriminator_learning_rate"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(self.beta1, (int, float)) and 0 <= self.beta1 < 1):
            raise ValueError(f"beta1 must be in [0, 1), got {self.beta1!r}")
        if not (isinstance(self.d_pause_ratio, (int, float)) and 0 <= self.d_pause_ratio < float("inf")):
            raise ValueError(f"d_pause_ratio must be >= 0 (0 turns it off), got {self.d_pause_ratio!r}")
        if self.discriminator_activation not in ("leaky_relu", "relu"):
            raise ValueError("discriminator_activation must be 'leaky_relu' or 'relu', "
                             f"got {self.discriminator_activation!r}")

    @property
    def lr_g(self):
        return self.generator_learning_rate or self.learning_rate

    @property
    def lr_d(self):
        return self.discriminator_learning_rate or self.learning_rate

    def identity(self):
        """The settings that change what the model learns (the MLP GAN has no hidden sizes or ablations)."""
        identity = super().identity()
        # What learns is the two rates in effect; learning_rate only supplies the ones not given.
        del identity["learning_rate"]
        identity["generator_learning_rate"], identity["discriminator_learning_rate"] = self.lr_g, self.lr_d
        ignored = ("generator_hidden_dim", "discriminator_hidden_dim", "discriminator_activation", "batch_norm") \
            if self.use_mlp else ("mlp_discriminator_batch_norm",)
        for key in ignored:
            del identity[key]
        return identity

    def name_parts(self):
        parts = [self.architecture, f"steps{self.num_training_steps}", f"seed{self.seed}"]
        default_lr = type(self)().learning_rate
        if self.lr_g == self.lr_d != default_lr:
            learning_rates = [f"lr{self.spelt(self.lr_g)}"]  # one rate for both
        else:
            learning_rates = [f"{short}{self.spelt(lr)}" for short, lr in (("glr", self.lr_g), ("dlr", self.lr_d))
                              if lr != default_lr]
        return parts + self.suffixes(dict(batch_size="b", beta1="beta")) + learning_rates + self.suffixes(dict(
            d_every="devery", d_pause_ratio="pause",
            discriminator_activation=lambda v: v.replace("_", ""), batch_norm=lambda v: "nobn",
            mlp_discriminator_batch_norm=lambda v: "dbn", code=str))

    @property
    def architecture(self):
        """The model and its sizes, e.g. dcgan_z16_g16_d16 or mlp_z16."""
        if self.use_mlp:
            return f"mlp_z{self.latent_dim}"
        return f"dcgan_z{self.latent_dim}_g{self.generator_hidden_dim}_d{self.discriminator_hidden_dim}"


def train(config=None, out_dir=None, *, code=None, progress=True, on_log=None, **overrides):
    """Train (or resume, or load) a GAN run and return it as a `Run`.

    config:    a TrainConfig; keyword overrides (e.g. latent_dim=32) are applied to it
               (a misspelt name is an error).
    out_dir:   the run folder; default: runs_root() / config.name.
    code:      a labkit.code.GANCode with a student's pieces (default: labkit's).
    progress:  say in one line what happens (training, resuming or loading)
               and show a tqdm progress bar (a widget in Jupyter).
    on_log:    called with each history row (a dict) at every logging step.

    The caller's global RNG state is restored afterwards.
    """
    code = code or GANCode()
    config = make_config(config, overrides, code)
    with training([config], [out_dir], CHECKPOINT_KIND, HISTORY_COLUMNS, data=training_images, progress=progress,
                  on_log=on_log, show=progress_line, samples_note=True,
                  source=code.source() if code.student_pieces else None) as loop:
        if loop.finished:  # trained before: loaded, and nothing in it is written
            return _run_from(loop.saved[0], code, loop.device)
        return _train(loop, config, code)


def _train(loop, config, code):
    """The training loop. `loop` (labkit/machinery/loop.py) holds the run folder: it resumes, logs and saves."""
    device = loop.device
    torch.manual_seed(config.seed)  # the initial weights: the same seed, the same networks
    generator, discriminator, opt_g, opt_d = build_training(config, code, device)
    noise = torch.Generator(device).manual_seed(config.seed)  # draws every z, in the same order on a resume
    # What a checkpoint holds, and what a resumed run loads back:
    models = dict(generator=generator, discriminator=discriminator)
    optimizers = dict(generator=opt_g, discriminator=opt_d)
    rng = dict(noise=noise, torch=torch.default_generator)  # torch: the global generator
    counters = loop.resume(models, optimizers, rng)
    d_updates, prev_loss_g = counters.get("d_updates", 0), counters.get("prev_generator_loss")
    images = loop.data.contiguous(memory_format=memory_format(device))
    batches = BatchSampler(len(images), config.batch_size, config.seed, device)
    sample_noise = fixed_noise(config.latent_dim, device=device)
    track_losses = needs_losses(config, code)
    generator.train(), discriminator.train()
    for step in loop.steps():
        real = images[batches.indices(step - 1)]
        z = torch.randn(config.batch_size, config.latent_dim, generator=noise, device=device)
        out = gan_step(generator, discriminator, opt_g, opt_d, real, z, step, config, code, prev_loss_g)
        d_updates += out.updated_d
        if track_losses:  # a rule that reads the losses sees G's as a number at the next step
            prev_loss_g = out.loss_g.item()
        loop.check(step, out.loss_d, out.loss_g)  # NaN? (the flags are read at logging and saving steps)
        if loop.logging(step):
            loop.log({"step": step, **out.values(), "d_updates": d_updates})
        if loop.saving(step):
            loop.save(step, fixed_samples(generator, sample_noise), models=models, optimizers=optimizers, rng=rng,
                      counters={"d_updates": d_updates, "prev_generator_loss": prev_loss_g})
    generator.eval(), discriminator.eval()
    return Run(loop.run_dir, config, loop.history, generator, discriminator, config.num_training_steps)


def build_training(config, code, device):
    """(generator, discriminator, opt_g, opt_d) as `train` builds them: the networks on `device`, an Adam each."""
    generator, discriminator = build_models(config, code)
    generator.to(device, memory_format=memory_format(device))
    discriminator.to(device, memory_format=memory_format(device))
    return (generator, discriminator, *adams(generator, discriminator, config))


def adams(generator, discriminator, config):
    """Adam for G and for D, with the run's learning rates and beta1 (beta2 0.999, PyTorch's default)."""
    return (torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=(config.beta1, 0.999)),
            torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=(config.beta1, 0.999)))


def memory_format(device):
    """channels_last on a CPU: it made a whole step 1.3-1.4x faster on a 2-core CPU at hidden 16 and 64
    (bench/train_speed.py). Not measured on CUDA, so there the default layout stays."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def build_models(config, code=None):
    """The untrained (generator, discriminator) pair that `config` describes, built from `code`'s classes."""
    code = code or GANCode()
    if config.use_mlp:
        generator = (code.generator or MLPGenerator)(config.latent_dim)
        discriminator = (code.discriminator or MLPDiscriminator)(config.mlp_discriminator_batch_norm)
    else:
        if (code.generator or code.discriminator) and (not config.batch_norm
                                                       or config.discriminator_activation != "leaky_relu"):
            raise ValueError("the ablation settings (batch_norm, discriminator_activation) need labkit's own "
                             "networks; train them with code=None")
        generator = code.generator(config.latent_dim, config.generator_hidden_dim) if code.generator else \
            DCGANGenerator(config.latent_dim, config.generator_hidden_dim, config.batch_norm)
        discriminator = code.discriminator(config.discriminator_hidden_dim) if code.discriminator else \
            DCGANDiscriminator(config.discriminator_hidden_dim, config.discriminator_activation, config.batch_norm)
    if not callable(getattr(discriminator, "logits", None)):
        raise ValueError(f"the discriminator {type(discriminator).__name__} needs a logits(images) method: "
                         f"its scores before the final Sigmoid")
    return generator, discriminator


def fixed_noise(latent_dim, count=64, device="cpu"):
    """The noise behind every run's sample grids: the same for every seed."""
    return torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(0)).to(device)


@torch.no_grad()
def fixed_samples(generator, noise):
    """The generator's images of the fixed noise, in eval mode (its BatchNorm uses the running statistics)."""
    with evaluating(generator):
        return generator(noise)


def training_images(device):
    """MNIST's 60,000 training images, on `device`."""
    return load_mnist("train", device=device)[0]


def progress_line(row):
    """What the progress bar shows of a history row."""
    return dict(loss_D=f"{row['discriminator_loss']:.3f}", loss_G=f"{row['generator_loss']:.3f}",
                D_x=f"{row['D_x']:.2f}")


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

    def __repr__(self):  # the dataclass repr would print every history row and both networks
        return f"Run({str(self.path)!r}, step {self.step} of {self.config.num_training_steps})"


def load_run(run_dir, device="cpu", code=None):
    """A run folder's config, history and newest weights (in eval mode). Writes nothing.

    code: the GANCode that trained it, if that was a student's (labkit/machinery/code.py).
    """
    code = code or GANCode()
    return _run_from(read_run(run_dir, TrainConfig, CHECKPOINT_KIND, HISTORY_COLUMNS, code, device), code, device)


def _run_from(saved, code, device):
    """The `Run` of a saved run (labkit/machinery/loop.py's SavedRun)."""
    with torch.random.fork_rng(devices=[]):  # building a model draws its initial weights
        generator, discriminator = build_models(saved.config, code)
    saved.load(generator=generator, discriminator=discriminator)
    generator.to(device).eval(), discriminator.to(device).eval()
    return Run(saved.path, saved.config, saved.history(), generator, discriminator, saved.step)


def make_config(config, overrides, code):
    """`config` (default: the course's) with keyword overrides and the code's identity; names are checked."""
    config = (config or TrainConfig()).updated(**overrides)
    return replace(config, code=code.identity)


def extend(run, num_training_steps, out_dir=None, *, code=None, progress=True):
    """Train a run on to `num_training_steps`, as a new run; the original is left as it is.

    The new run starts from a copy of the original's newest checkpoint and
    history, in its own folder (default: beside the original, named with the
    new step count), so whatever loads the original still gets the original.
    It ends with the weights a run trained straight to `num_training_steps`
    would have (on a CPU exactly: tests/test_train.py).
    """
    source = Path(run.path if isinstance(run, Run) else run)
    code = code or GANCode()
    config, target = branch_run(source, num_training_steps, TrainConfig, CHECKPOINT_KIND, HISTORY_COLUMNS, code,
                                out_dir, progress)
    return train(config, target, code=code, progress=progress)
