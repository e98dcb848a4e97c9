"""The GAN: its step, its training loop, its runs. Every trainer calls `gan_step`.

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

The losses are exercise 2 (labkit's answers: labkit/solutions/losses.py).

One step, as in the course and pytorch/examples/dcgan (`gan_step`):
    1. D's turn: D on a real batch (target 1) and on G(z).detach() (target 0);
       update D, or not: the rebalancing rule (exercise 3) decides;
    2. G's turn: G on D(G(z)) with target 1, the same z, through the D just
       updated; update G.

Training (`train`, its loop `train_loop`):

    run = train(TrainConfig(latent_dim=32))     # trains runs/dcgan_z32_g16_d16_steps5000_seed2022
    run = train(TrainConfig(latent_dim=32))     # the same settings again: loads that run
    run = load_run(run.path)                    # config, history and newest weights

`train_loop` feeds the step batches and noise and says what to log and save;
`training` around it (labkit/runs/training.py) opens, locks, resumes and
writes the run folder. Calling `train` with the settings of an unfinished
run continues it from its newest checkpoint, so an interrupted run loses at
most `saving_steps` steps and, on a CPU, ends with exactly the weights an
uninterrupted run would have. A finished run is loaded, not trained again,
and nothing in it is written. The GPU never waits for the host between
logging steps (unless the rebalancing rule needs the losses: `needs_losses`).
"""

from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from .data import BatchSampler, load_mnist
from .models import fixed_noise, fixed_samples
from .runs.code import Code
from .runs.config import TrainConfig
from .runs.folder import TrainingDiverged  # noqa: F401 (what `train` raises when a loss turns NaN)
from .runs.training import branch_run, read_run, training
from .solutions.dcgan import DCGANDiscriminator, DCGANGenerator
from .solutions.losses import discriminator_loss, generator_loss
from .solutions.mlp import MLPDiscriminator, MLPGenerator
from .solutions.rebalancing import update_discriminator

HISTORY_COLUMNS = ("step", "discriminator_loss", "generator_loss", "D_x", "D_G_z1", "D_G_z2", "d_updates")
CHECKPOINT_KIND = "gan"


def gan_step(generator, discriminator, opt_g, opt_d, real, z, step, config, code, prev_loss_g=None):
    """One training step, as every trainer runs it: D's turn, then G's, on the same fakes G(z).

    generator, discriminator: the networks; the discriminator has `logits(images)`.
    real, z:     this step's real batch and noise.
    step:        the 1-based step number, for the rebalancing rule.
    config:      the run's TrainConfig (d_every, d_pause_ratio).
    code:        whose losses and rebalancing rule to use (a GANCode).
    prev_loss_g: G's loss on the previous step as a float, or None; needed only
                 when the rule may look at losses (see `needs_losses`).
    Stacked models (labkit/experiments/together.py) have one loss each: they are
    summed before backward(). Returns a StepOutput.
    """
    fake = generator(z)

    # D's turn: maximize log(D(x)) + log(1 - D(G(z))), that is, minimize BCE(D(x), 1) + BCE(D(G(z)), 0).
    real_logits = discriminator.logits(real)  # D(x) = sigmoid(real_logits)
    fake_logits = discriminator.logits(fake.detach())  # detached: D's update must not reach G
    loss_d = code.discriminator_loss(real_logits, fake_logits)
    rule_sees = loss_d.item() if needs_losses(config, code) else None  # .item() waits for the device
    updated_d = bool(code.update_discriminator(step, rule_sees, prev_loss_g, config.d_every, config.d_pause_ratio))
    if updated_d:  # the rebalancing rule (notebook 04) lets D take its step
        opt_d.zero_grad(set_to_none=True)
        loss_d.sum().backward()
        opt_d.step()

    # G's turn: maximize log(D(G(z))) (the non-saturating loss), that is, minimize BCE(D(G(z)), 1),
    # on the same fakes, judged by the D that just took its turn.
    with frozen(discriminator):  # the gradient flows back through D into G; D's own weights need none
        fake_logits_after = discriminator.logits(fake)
    loss_g = code.generator_loss(fake_logits_after)
    opt_g.zero_grad(set_to_none=True)
    loss_g.sum().backward()
    opt_g.step()
    return StepOutput(loss_d, loss_g, real_logits, fake_logits, fake_logits_after, updated_d)


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


def needs_losses(config, code):
    """Whether the rebalancing rule must see the losses as numbers on the host.

    labkit's rule reads them only to pause D; a student's rule may read them
    at any time. Reading a loss makes the host wait for the GPU, so it is
    skipped where the rule cannot need it.
    """
    return config.d_pause_ratio > 0 or code.update_discriminator is not update_discriminator


@dataclass(frozen=True)
class GANCode(Code):
    """The pieces of a GAN run; a field left at its default is labkit's (labkit/solutions/).

    generator:     a class called as generator(latent_dim, hidden_dim) for the
                   DCGAN, generator(latent_dim) for the MLP GAN (None: labkit's);
    discriminator: called as discriminator(hidden_dim) for the DCGAN,
                   discriminator(batch_norm) for the MLP GAN (None: labkit's); its
                   instances have `logits(images)`, D's scores before the Sigmoid;
    discriminator_loss(real_logits, fake_logits), generator_loss(fake_logits),
    update_discriminator(step, loss_D, loss_G, every, pause_ratio).
    """

    generator: Optional[type] = None
    discriminator: Optional[type] = None
    discriminator_loss: Callable = discriminator_loss
    generator_loss: Callable = generator_loss
    update_discriminator: Callable = update_discriminator


# ---------------------------------------------------------------------------
# Training a run


def train(config=None, out_dir=None, *, code=None, progress=True, on_log=None, checkpoint_minutes=None,
          **overrides):
    """Train (or resume, or load) a GAN run and return it as a `Run`.

    config:    a TrainConfig; keyword overrides (e.g. latent_dim=32) are applied to it
               (a misspelt name is an error).
    out_dir:   the run folder; default: runs_root() / config.name.
    code:      a GANCode with a student's pieces (default: labkit's).
    progress:  say in one line what happens (training, resuming or loading)
               and show a tqdm text bar (labkit/runs/progress.py).
    on_log:    called with each history row (a dict) at every logging step; a KeyboardInterrupt
               it raises stops the run at a checkpoint, as Ctrl-C does.
    checkpoint_minutes: an extra checkpoint after this many minutes of training (default: 5 on a
               CPU, none on a GPU); not a setting of the run, so it may change on every resume.

    Ctrl-C (Kernel > Interrupt) stops the run at a checkpoint at the current step
    and raises TrainingStopped (a KeyboardInterrupt) with one line; calling `train`
    again resumes there. The caller's global RNG state is restored afterwards.
    """
    code = code or GANCode()
    config = make_config(config, overrides, code)
    with training([config], [out_dir], CHECKPOINT_KIND, HISTORY_COLUMNS, progress=progress,
                  data=lambda device: training_images(device, config.pipeline), on_log=on_log,
                  show=progress_line, samples_note=True, checkpoint_minutes=checkpoint_minutes,
                  source=code.source() if code.student_pieces else None) as loop:
        if loop.finished:  # trained before: loaded, and nothing in it is written
            return run_from(loop.saved[0], code, loop.device)
        return train_loop(loop, config, code)


def train_loop(loop, config, code):
    """The training loop, top to bottom. `loop` (labkit/runs/training.py) holds the run folder: it resumes,
    logs and saves."""
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
        # One round of the game (gan_step, above): D maximizes log(D(x)) + log(1 - D(G(z))), then G
        # maximizes log(D(G(z))), on this batch and this noise.
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
    return (generator, discriminator, *make_optimizers(generator, discriminator, config))


def make_optimizers(generator, discriminator, config):
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
        if (code.generator or code.discriminator) and (not config.batch_norm or not config.discriminator_bias
                                                       or config.discriminator_activation != "leaky_relu"):
            raise ValueError("the ablation settings (batch_norm, discriminator_activation, discriminator_bias) "
                             "need labkit's own networks; train them with code=None")
        generator = code.generator(config.latent_dim, config.generator_hidden_dim) if code.generator else \
            DCGANGenerator(config.latent_dim, config.generator_hidden_dim, config.batch_norm)
        discriminator = code.discriminator(config.discriminator_hidden_dim) if code.discriminator else \
            DCGANDiscriminator(config.discriminator_hidden_dim, config.discriminator_activation, config.batch_norm,
                               config.discriminator_bias)
    if not callable(getattr(discriminator, "logits", None)):
        raise ValueError(f"the discriminator {type(discriminator).__name__} needs a logits(images) method: "
                         f"its scores before the final Sigmoid")
    return generator, discriminator


def training_images(device, pipeline="pad"):
    """MNIST's 60,000 training images, on `device`, made 32x32 by the run's `pipeline` (labkit/data.py)."""
    return load_mnist("train", device=device, pipeline=pipeline)[0]


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

    code: the GANCode that trained it, if that was a student's .
    """
    code = code or GANCode()
    return run_from(read_run(run_dir, TrainConfig, CHECKPOINT_KIND, HISTORY_COLUMNS, code, device), code, device)


def run_from(saved, code, device):
    """The `Run` of a saved run (labkit/runs/training.py's SavedRun)."""
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
