"""Training the course's GAN: one config dataclass, one loop, one run folder.

    run = train(TrainConfig(latent_dim=32))     # trains runs/dcgan_z32_g16_d16_steps5000_seed2022
    run = train(TrainConfig(latent_dim=32))     # the same settings again: loads that run
    run = load_run(run.path)                    # config, history and newest weights

The step itself is `labkit.step.gan_step` (the losses, the rebalancing rule);
this module builds the networks, feeds the step batches and noise, logs what
it measured and writes the run folder (labkit/machinery/runs.py describes it).

Calling `train` with the settings of an unfinished run continues it from its
newest checkpoint, so an interrupted run loses at most `saving_steps` steps
and, on a CPU, ends with exactly the weights an uninterrupted run would have.
A finished run is loaded, not trained again, and nothing in it is written.

The GPU never waits for the host between logging steps: the logged values
stay on the device until a logging step reads them (unless the rebalancing
rule needs the losses: labkit.step.needs_losses).
"""

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .machinery import CheckpointError, checkpoint_path, latest_checkpoint, load_latest, make_checkpoint
from .machinery import LABKIT_GAN, REFERENCE, GANCode, check_code  # noqa: F401 (GANCode: a student's pieces)
from .data import MNIST_TRAIN_SIZE, BatchSampler, load_mnist
from .models import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, evaluating
from .machinery import (RunConfig, RunLock, RunWriter, TrainingDiverged, announce, check_checkpoint_config,
                   check_run_folder, check_writable, forked_rng, format_value, load_weights, prepare_run_folder,
                   read_config, read_history, resolve_device, runs_root, saved_state, write_config, write_history)
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
            learning_rates = [f"lr{format_value(self.lr_g)}"]  # one rate for both
        else:
            learning_rates = [f"{short}{format_value(lr)}" for short, lr in (("glr", self.lr_g), ("dlr", self.lr_d))
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


def build_models(config, code=LABKIT_GAN):
    """The untrained (generator, discriminator) pair that `config` describes, built from `code`'s classes."""
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
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    config = read_config(run_dir, TrainConfig)
    code = code or LABKIT_GAN
    check_code(code, config, run_dir)
    state = load_latest(run_dir, CHECKPOINT_KIND, map_location=device)
    if state is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet; train it first")
    check_checkpoint_config(state, config, run_dir)
    return _run_from_state(run_dir, config, state, device, code)


def _run_from_state(run_dir, config, state, device, code):
    with torch.random.fork_rng(devices=[]):  # building a model draws its initial weights
        generator, discriminator = build_models(config, code)
    load_weights(generator, state["models"]["generator"], "generator", run_dir)
    load_weights(discriminator, state["models"]["discriminator"], "discriminator", run_dir)
    generator.to(device).eval(), discriminator.to(device).eval()
    history = [row for row in read_history(run_dir, HISTORY_COLUMNS) if row["step"] <= state["step"]]
    return Run(Path(run_dir), config, history, generator, discriminator, state["step"])


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


def make_config(config, overrides, code):
    """`config` (default: the course's) with keyword overrides and the code's identity; names are checked."""
    config = (config or TrainConfig()).updated(**overrides)
    return replace(config, code=code.identity)


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
    code = code or LABKIT_GAN
    config = make_config(config, overrides, code)
    run_dir = Path(out_dir) if out_dir is not None else runs_root() / config.name
    check_run_folder(run_dir)
    device = resolve_device(config.device)
    say = print if progress else (lambda *a, **k: None)

    state = saved_state(run_dir, config, CHECKPOINT_KIND, device)
    if state is not None and state["step"] >= config.num_training_steps:
        say(f"labkit: found the finished run {run_dir} (step {state['step']}); loading it")
        return _run_from_state(run_dir, config, state, device, code)
    images = load_mnist("train", device=device)  # a missing dataset is reported before anything is written
    check_writable(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        state = saved_state(run_dir, config, CHECKPOINT_KIND, device)  # another process may have moved it on
        if state is not None and state["step"] >= config.num_training_steps:
            say(f"labkit: found the finished run {run_dir} (step {state['step']}); loading it")
            return _run_from_state(run_dir, config, state, device, code)
        with forked_rng(device):
            return _train(config, run_dir, device, state, code, progress, say, on_log, images[0])


def _train(config, run_dir, device, state, code, progress, say, on_log, images):
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    generator, discriminator = build_models(config, code)
    # channels_last made a whole step 1.3-1.4x faster on a 2-core CPU at hidden
    # 16 and 64 (bench/train_speed.py); it is not measured on CUDA, so there
    # the default layout stays.
    memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    generator.to(device, memory_format=memory_format)
    discriminator.to(device, memory_format=memory_format)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=(config.beta1, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=(config.beta1, 0.999))
    noise_rng = torch.Generator(device).manual_seed(config.seed)
    start_step, d_updates, prev_loss_g = 0, 0, None
    if state is not None:  # resume
        load_weights(generator, state["models"]["generator"], "generator", run_dir)
        load_weights(discriminator, state["models"]["discriminator"], "discriminator", run_dir)
        opt_g.load_state_dict(state["optimizers"]["generator"])
        opt_d.load_state_dict(state["optimizers"]["discriminator"])
        noise_rng.set_state(state["rng"]["noise"].cpu())
        torch.set_rng_state(state["rng"]["torch"].cpu())
        start_step = state["step"]
        d_updates, prev_loss_g = state["counters"]["d_updates"], state["counters"]["prev_generator_loss"]

    images = images.contiguous(memory_format=memory_format)
    history = prepare_run_folder(run_dir, config, state, HISTORY_COLUMNS,
                                 source=code.source() if code.student_pieces else None)
    batches = BatchSampler(len(images), config.batch_size, config.seed, device)
    sample_noise = fixed_noise(config.latent_dim, device=device)
    track_losses = needs_losses(config, code)
    writer = RunWriter(run_dir, start_step, HISTORY_COLUMNS)
    say(announce(run_dir, start_step, config.num_training_steps, device))
    bar = tqdm(total=config.num_training_steps, initial=start_step, desc=run_dir.name, disable=not progress,
               dynamic_ncols=True)
    finite_flags = []  # one 0-d bool tensor per step since the last check, kept on the device
    generator.train(), discriminator.train()
    started = time.time()
    try:
        for step in range(start_step + 1, config.num_training_steps + 1):
            real = images[batches.indices(step - 1)]
            z = torch.randn(config.batch_size, config.latent_dim, generator=noise_rng, device=device)
            out = gan_step(generator, discriminator, opt_g, opt_d, real, z, step, config, code, prev_loss_g)
            d_updates += out.updated_d
            if track_losses:
                prev_loss_g = out.loss_g.item()

            finite_flags.append(torch.isfinite(out.loss_d) & torch.isfinite(out.loss_g))
            bar.update(1)
            is_log = step % config.logging_steps == 0
            is_save = step % config.saving_steps == 0 or step == config.num_training_steps
            if not (is_log or is_save):
                continue
            check_finite(torch.stack(finite_flags).cpu(), step, run_dir)  # the one host-device sync
            finite_flags.clear()

            if is_log:
                row = {"step": step, **{k: v.item() for k, v in out.logged().items()}, "d_updates": d_updates}
                history.append(row)
                writer.log(row)
                bar.set_postfix(loss_D=f"{row['discriminator_loss']:.3f}",
                                loss_G=f"{row['generator_loss']:.3f}", D_x=f"{row['D_x']:.2f}")
                if on_log is not None:
                    on_log(row)

            if is_save:
                with torch.no_grad(), evaluating(generator):
                    samples = generator(sample_noise)
                writer.save(make_checkpoint(
                    CHECKPOINT_KIND, step, config,
                    models={"generator": generator, "discriminator": discriminator},
                    optimizers={"generator": opt_g, "discriminator": opt_d},
                    rng={"noise": noise_rng.get_state(), "torch": torch.get_rng_state()},
                    counters={"d_updates": d_updates, "prev_generator_loss": prev_loss_g}), samples)
    finally:
        bar.close()
        writer.close()
    say(f"labkit: {config.num_training_steps - start_step} steps in {time.time() - started:.1f} s; "
        f"samples in {run_dir / 'samples'}")
    generator.eval(), discriminator.eval()
    return Run(run_dir, config, history, generator, discriminator, config.num_training_steps)


def extend(run, num_training_steps, out_dir=None, *, code=None, progress=True):
    """Train a run on to `num_training_steps`, as a new run; the original is left as it is.

    The new run starts from a copy of the original's newest checkpoint and
    history, in its own folder (default: beside the original, named with the
    new step count), so whatever loads the original still gets the original.
    It ends with the weights a run trained straight to `num_training_steps`
    would have (on a CPU exactly: tests/test_train.py).
    """
    source = Path(run.path if isinstance(run, Run) else run)
    config = read_config(source, TrainConfig)
    code = code or LABKIT_GAN
    check_code(code, config, source)
    if num_training_steps <= config.num_training_steps:
        raise ValueError(f"{source} is already {config.num_training_steps} steps long; extend it to more steps")
    config = config.updated(num_training_steps=num_training_steps)
    target = Path(out_dir) if out_dir is not None else source.parent / config.name
    check_run_folder(target, inputs=[source])  # never the run it extends
    if not (target / "config.json").exists():
        state = load_latest(source, CHECKPOINT_KIND)
        if state is None:
            raise CheckpointError(f"{source} has no checkpoint to extend")
        history = [r for r in read_history(source, HISTORY_COLUMNS) if r["step"] <= state["step"]]  # read first
        check_writable(target)
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            (partial / "checkpoints").mkdir(parents=True)
            shutil.copy2(checkpoint_path(source, state["step"]), checkpoint_path(partial, state["step"]))
            for folder in ("samples", "tensorboard"):
                if (source / folder).is_dir():
                    shutil.copytree(source / folder, partial / folder)
            if (source / "code.py").is_file():
                shutil.copy2(source / "code.py", partial / "code.py")
            write_history(partial, history, HISTORY_COLUMNS)
            write_config(partial, config)
            partial.rename(target)  # the new run appears whole, or not at all
        except BaseException:  # a full disk, Ctrl-C: no half copy left behind
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if progress:
            print(f"labkit: extending {source} (step {state['step']}) into {target}")
    return train(config, target, code=code, progress=progress)
