"""Several seeds of one configuration, trained at once as one stacked model.

A sweep trains the same small network with several seeds. One DCGAN at
hidden size 16 leaves a GPU almost idle: each step is a few dozen tiny kernel
launches. Training the seeds together turns N small steps into one step of N
times the width:

  * N copies of a layer become one grouped layer (`grouped_layer`): a
    convolution with groups=N, a batched matrix product, a BatchNorm over N
    times the channels. Model k lives in block k of every weight, and its
    BatchNorm layers keep their own running statistics;
  * the N losses are summed before backward. Each model's weights appear only
    in its own loss, so each receives exactly the gradient of that loss; and
    Adam updates every number independently, so one Adam over the stacked
    weights is N separate Adams.

Each seed gets what its separate run (`labkit.gan`) would: initial weights
built after torch.manual_seed(seed), its own noise generator and its own order
of batches, and the same step (`labkit.gan.gan_step`, called on the stack).
In float64 each seed ends with exactly the weights of its separate run
(tests/test_together.py). In float32 it does not: a grouped convolution adds
its terms in another order, and a GAN's trajectory amplifies that rounding,
so the two runs are different samples of the same training procedure (the
same distribution of FIDs, not the same FID). Every seed keeps its own run
folder in exactly the format `train` writes, so `load_run`, the notebooks and
the sweep tables read it the same way, and either trainer can resume it.

Why grouped layers and not torch.func (stack_module_state + vmap over
functional_call), which computes the same thing: under vmap the convolutions
become grouped convolutions too, but the tensors between layers are strided
in ways that fall off PyTorch's fast CPU paths. On the 2-core CPU labkit is
developed on (AMD EPYC, 2 threads), 5 seeds stacked with vmap ran at 0.96x
(hidden 16) and 0.83x (hidden 64) the speed of 5 separate runs; as grouped
layers in channels_last, at 1.26x and 0.92x (bench/seeds_together.py). GPU:
not measured.

Not stacked (`why_not_together`): `d_pause_ratio`, and runs of a student's
code; the sweep trains such runs one after another.
"""

import copy

import torch
from torch import nn

from ..data import BatchSampler, load_mnist
from ..gan import (CHECKPOINT_KIND, HISTORY_COLUMNS, GANCode, Run, build_models, gan_step, make_config,
                   make_optimizers, run_from)
from ..models import IMAGE_SHAPE, fixed_noise, fixed_samples
from ..runs.checkpoints import CheckpointError, load_latest
from ..runs.config import REFERENCE
from ..runs.training import training

LABKIT_GAN = GANCode()


def grouped_layer(layers):
    """One layer that computes len(layers) copies of a layer side by side, each with its own weights.

    N convolutions from C to C' channels are one convolution from N*C to N*C'
    channels with groups=N: group k sees only input channels k*C ... (k+1)*C - 1
    and has model k's weights. N Linear layers are one batched matrix product
    (GroupedLinear), and BatchNorm over N*C channels is N BatchNorms: each
    channel has its own statistics. Activations act elementwise and hold no
    weights, so one serves all N.
    """
    first, n = layers[0], len(layers)
    if isinstance(first, nn.Conv2d):
        grouped = nn.Conv2d(n * first.in_channels, n * first.out_channels, first.kernel_size, first.stride,
                            first.padding, groups=n)
    elif isinstance(first, nn.ConvTranspose2d):
        grouped = nn.ConvTranspose2d(n * first.in_channels, n * first.out_channels, first.kernel_size,
                                     first.stride, first.padding, groups=n)
    elif isinstance(first, nn.Linear):
        grouped = GroupedLinear(n, first.in_features, first.out_features)
    elif isinstance(first, (nn.BatchNorm1d, nn.BatchNorm2d)):
        grouped = type(first)(n * first.num_features, first.eps, first.momentum)
    elif not any(True for _ in first.parameters()) and not any(True for _ in first.buffers()):
        return first  # ReLU, LeakyReLU, Tanh, Sigmoid, Identity
    else:
        raise TypeError(f"labkit cannot stack a {type(first).__name__} layer")
    load_stacked(grouped, [layer.state_dict() for layer in layers])
    return grouped


class GroupedLinear(nn.Module):
    """N Linear layers side by side: (batch, N * in_features) -> (batch, N * out_features).

    One batched matrix product (torch.baddbmm) rather than a grouped 1x1
    convolution, which measured 6x slower than N separate Linear layers on a
    CPU. Weights are stored as (N * out_features, in_features), model k's
    in block k, like every other grouped layer here.
    """

    def __init__(self, count, in_features, out_features):
        super().__init__()
        self.count, self.in_features, self.out_features = count, in_features, out_features
        self.weight = nn.Parameter(torch.empty(count * out_features, in_features))
        self.bias = nn.Parameter(torch.empty(count * out_features))

    def forward(self, x):
        n, batch = self.count, x.shape[0]
        x = x.view(batch, n, self.in_features).transpose(0, 1)  # (N, batch, in)
        weight = self.weight.view(n, self.out_features, self.in_features).transpose(1, 2)
        y = torch.baddbmm(self.bias.view(n, 1, self.out_features), x, weight)  # (N, batch, out)
        return y.transpose(0, 1).reshape(batch, n * self.out_features)


@torch.no_grad()
def load_stacked(grouped, states):
    """Fill a grouped module with the N state_dicts `states` (model k in block k of every tensor)."""
    for name, tensor in grouped.state_dict().items():
        if name.endswith("num_batches_tracked"):  # a count, the same for every model
            tensor.copy_(states[0][name])
        else:
            tensor.copy_(torch.stack([state[name] for state in states]).reshape(tensor.shape))


class StackedModel(nn.Module):
    """N models of one architecture (labkit's, built as `self.net = nn.Sequential(...)`), run as one.

    Maps inputs (N, batch, *in_shape) to outputs (N, batch, *out_shape): model k
    gets input k. Inside, the N models are one network of grouped layers
    (`grouped_layer`) working on (batch, N * channels, ...) tensors.
    """

    def __init__(self, models, out_shape):
        super().__init__()
        self.count, self.out_shape = len(models), tuple(out_shape)
        self.net = nn.Sequential(*[grouped_layer(layers) for layers in zip(*(m.net for m in models))])
        self.shapes = {name: t.shape for name, t in models[0].state_dict().items()}
        self.is_mlp = isinstance(self.net[0], GroupedLinear)

    def forward(self, inputs):
        return self._run(inputs, self.net)

    def logits(self, inputs):
        """For stacked discriminators: the scores before their final Sigmoid, (N, batch)."""
        return self._run(inputs, self.net[:-1])

    def _run(self, inputs, net):
        n, batch = inputs.shape[:2]
        x = inputs.transpose(0, 1)  # (batch, N, ...): model k's input in block k of the channels
        if self.is_mlp:
            x = x.reshape(batch, -1)  # flat features, as the MLPs take them
        elif x.dim() == 3:
            x = x.reshape(batch, -1, 1, 1)  # latent codes as 1x1 images, as the DCGAN generator takes them
        else:
            x = x.reshape(batch, -1, *x.shape[-2:])
        if self.net[0].weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        y = net(x)
        return y.reshape(batch, n, *self.out_shape).transpose(0, 1)

    def model_state_dict(self, index):
        """Model `index`'s state_dict, as the single model's state_dict() would give it."""
        return {name: split(t, self.count, index, self.shapes[name]) for name, t in self.state_dict().items()}


def split(tensor, count, index, shape):
    """Block `index` of `count` along dim 0, reshaped to one model's `shape` (a 0-d count is shared)."""
    if tensor.dim() == 0:
        return tensor.clone()
    return tensor.reshape(count, -1)[index].reshape(shape).clone()


def split_adam_state(state, model, index):
    """The Adam state_dict that model `index` of the stack would have had on its own."""
    shapes = list(model.shapes[name] for name, _ in model.named_parameters())
    return {
        "state": {p: {key: (value if key == "step" else split(value, model.count, index, shapes[p]))
                      for key, value in s.items()}
                  for p, s in state["state"].items()},
        "param_groups": copy.deepcopy(state["param_groups"]),
    }


def stack_adam_states(states, model):
    """The inverse of split_adam_state: one state_dict for an Adam over the stacked model."""
    params = list(model.parameters())
    return {
        "state": {p: {key: (value if key == "step" else
                            torch.empty_like(params[p]).copy_(
                                torch.stack([s["state"][p][key] for s in states]).reshape(params[p].shape)))
                      for key, value in s0.items()}
                  for p, s0 in states[0]["state"].items()},
        "param_groups": copy.deepcopy(states[0]["param_groups"]),
    }


def why_not_together(config, code=LABKIT_GAN):
    """Why runs of `config` cannot share a stack, or None if they can.

    A stack has one optimizer per network and one loss summed over its
    models, so every model must take the same decision at every step and
    compute its loss the same way:
      * `d_pause_ratio` lets each seed's losses decide whether its D steps;
      * a student's pieces may do anything (a loss averaged over the whole
        stack instead of per model, a rule that reads the losses), and a
        student's networks are not built from layers labkit can group.
    """
    if config.d_pause_ratio > 0:
        return "d_pause_ratio lets each seed's own losses decide when its D steps"
    if code.identity != REFERENCE:
        return "runs with a student's code train one at a time"
    return None


def train_together(config, seeds, out_dirs, *, code=None, progress=True, on_log=None,
                   checkpoint_minutes=None):
    """Train (or resume) one run per seed of `config`, all at once; return their results.

    config:   a TrainConfig; its seed is replaced by each of `seeds`.
    out_dirs: one run folder per seed.
    on_log:   called as on_log(seed, row) at every logging step.
    checkpoint_minutes: as labkit.gan.train's.

    Returns one entry per seed: its `Run`, or the TrainingDiverged error that
    stopped it (its folder keeps the last good checkpoint; the other seeds go
    on, since a NaN in one model of the stack never reaches the others).
    All runs must be at the same step: new, or resumed from checkpoints of
    the same step. A setting that cannot be stacked (`why_not_together`) is
    refused with ValueError; `labkit.sweep` then trains the seeds one by one.
    The caller's global RNG state is restored afterwards.
    """
    code = code or LABKIT_GAN
    reason = why_not_together(config, code)
    if reason:
        raise ValueError(f"these runs cannot train together: {reason}; train them one by one")
    if len(seeds) != len(out_dirs) or len(set(seeds)) != len(seeds):
        raise ValueError(f"need one out_dir per seed and distinct seeds; got seeds {seeds} for {len(out_dirs)} folders")
    configs = [make_config(config, {"seed": seed}, code) for seed in seeds]
    with training(configs, out_dirs, CHECKPOINT_KIND, HISTORY_COLUMNS, together=True, progress=progress,
                  on_log=on_log, checkpoint_minutes=checkpoint_minutes,
                  data=lambda device: load_mnist("train", device=device, pipeline=config.pipeline)[0]) as loop:
        if loop.finished:
            return [run_from(saved, code, loop.device) for saved in loop.saved]
        return _train_together(loop, config, code)


def _train_together(loop, config, code):
    """`labkit.gan.train_loop`'s loop, on the stack: every tensor has one entry per seed in front."""
    device, images, seeds = loop.device, loop.data, [c.seed for c in loop.configs]
    G, D, torch_rng_states = build_stack(loop.configs, device)
    opt_g, opt_d = make_optimizers(G, D, config)
    noise_rngs = [torch.Generator(device).manual_seed(seed) for seed in seeds]
    d_updates = resume_stack(loop, G, D, opt_g, opt_d, noise_rngs)
    samplers = [BatchSampler(len(images), config.batch_size, seed, device) for seed in seeds]
    sample_noise = fixed_noise(config.latent_dim, device=device).expand(len(seeds), -1, -1)  # the same for every seed
    G.train(), D.train()
    for step in loop.steps():
        real = images[torch.stack([s.indices(step - 1) for s in samplers])]  # (N, B, 1, 32, 32)
        z = torch.stack([torch.randn(config.batch_size, config.latent_dim, generator=rng, device=device)
                         for rng in noise_rngs])
        out = gan_step(G, D, opt_g, opt_d, real, z, step, config, code)  # `train`'s step; every loss is (N,)
        d_updates += out.updated_d
        loop.check(step, out.loss_d, out.loss_g)  # a seed whose loss turned NaN stops alone
        if loop.logging(step):
            values = out.values()
            for i in loop.live:
                loop.log({"step": step, **{k: v[i] for k, v in values.items()}, "d_updates": d_updates}, run=i)
        if loop.saving(step):
            save_stack(loop, step, fixed_samples(G, sample_noise), G, D, opt_g, opt_d,
                       rng=[{"noise": n, "torch": t} for n, t in zip(noise_rngs, torch_rng_states)],
                       counters={"d_updates": d_updates, "prev_generator_loss": None})
    return [loop.errors[i] or run_of(loop, i, G, D) for i in range(len(seeds))]


def build_stack(configs, device):
    """(G, D, the global RNG state after each seed's models) for the seeds of `configs`, on `device`.

    Each seed's networks are built exactly as `train` builds them, after torch.manual_seed(seed),
    then stacked; the RNG state is what that seed's checkpoints record, as `train`'s do.
    """
    generators, discriminators, torch_rng_states = [], [], []
    for c in configs:
        torch.manual_seed(c.seed)
        generator, discriminator = build_models(c)
        generators.append(generator)
        discriminators.append(discriminator)
        torch_rng_states.append(torch.get_rng_state())
    G = StackedModel(generators, out_shape=IMAGE_SHAPE).to(device)
    D = StackedModel(discriminators, out_shape=()).to(device)
    if device.type == "cpu" and not configs[0].use_mlp:
        # As in `train`: channels_last is faster for convolutions on the CPU.
        G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    return G, D, torch_rng_states


def resume_stack(loop, G, D, opt_g, opt_d, noise_rngs):
    """Load the seeds' checkpoints (all of one step) into the stack; return d_updates (0 for new runs)."""
    if loop.start == 0:
        return 0
    states = loop.states
    load_stacked(G, [s["models"]["generator"] for s in states])
    load_stacked(D, [s["models"]["discriminator"] for s in states])
    opt_g.load_state_dict(stack_adam_states([s["optimizers"]["generator"] for s in states], G))
    opt_d.load_state_dict(stack_adam_states([s["optimizers"]["discriminator"] for s in states], D))
    for rng, s in zip(noise_rngs, states):
        rng.set_state(s["rng"]["noise"].cpu())
    return states[0]["counters"]["d_updates"]  # the same for all: d_every is shared


def save_stack(loop, step, samples, G, D, opt_g, opt_d, rng, counters):
    """Write each live seed's checkpoint, in exactly the format `train` writes, and its sample grid."""
    g_opt_state, d_opt_state = opt_g.state_dict(), opt_d.state_dict()
    for i in loop.live:
        loop.save(step, samples[i], run=i,
                  models={"generator": G.model_state_dict(i), "discriminator": D.model_state_dict(i)},
                  optimizers={"generator": split_adam_state(g_opt_state, G, i),
                              "discriminator": split_adam_state(d_opt_state, D, i)},
                  rng=rng[i], counters=counters)


def run_of(loop, i, G, D):
    """Seed `i`'s `Run`: its networks, taken out of the stack, in eval mode."""
    generator, discriminator = build_models(loop.configs[i])
    generator.load_state_dict(G.model_state_dict(i))
    discriminator.load_state_dict(D.model_state_dict(i))
    generator.to(loop.device).eval(), discriminator.to(loop.device).eval()
    return Run(loop.run_dirs[i], loop.configs[i], loop.histories[i], generator, discriminator, loop.end)


def resume_step(run_dir):
    """The step a run folder would resume from (0 for a new run): its newest readable checkpoint's, as
    training would pick it; None if none can be read (training it will say why)."""
    try:
        state = load_latest(run_dir, CHECKPOINT_KIND, warn=lambda text: None)
    except CheckpointError:
        return None
    return state["step"] if state else 0
