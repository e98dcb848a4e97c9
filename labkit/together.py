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

Each seed gets what its separate run (`labkit.train`) would: initial weights
built after torch.manual_seed(seed), its own noise generator and its own order
of batches. The results equal separate runs up to float rounding (in float64
exactly; tests/test_together.py checks both). Every seed keeps its own run
folder in exactly the format `train` writes, so `load_run`, the notebooks and
the sweep tables read it the same way, and either trainer can resume it.

Why grouped layers and not torch.func (stack_module_state + vmap over
functional_call), which computes the same thing: under vmap the convolutions
become grouped convolutions too, but the tensors between layers are strided
in ways that fall off PyTorch's fast CPU paths. On a 2-core CPU, 5 seeds
stacked with vmap ran at 0.96x (hidden 16) and 0.83x (hidden 64) the speed of
5 separate runs; as grouped layers in channels_last, at 1.26x and 0.92x
(bench/seeds_together.py).

Not stacked: `d_pause_ratio` (each seed would decide on its own whether D
skips a step, which one optimizer over the stack cannot do); such runs train
one after another.
"""

import copy
import time
from dataclasses import asdict, replace

import torch
from torch import nn

from .checkpoints import latest_checkpoint
from .data import BatchSampler, load_mnist
from .models import IMAGE_SHAPE
from .train import (
    CHECKPOINT_KIND,
    Run,
    RunWriter,
    TrainConfig,
    TrainingDiverged,
    bce,
    build_models,
    check_finite,
    descend,
    describe_device,
    fixed_noise,
    generator_step,
    open_run,
    prepare_run_folder,
)


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
        y = self.net(x)
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


def can_train_together(config):
    """Whether runs of `config` can share a stack (see the module docstring)."""
    return config.d_pause_ratio == 0


def train_together(config, seeds, out_dirs, *, progress=True, on_log=None):
    """Train (or resume) one run per seed of `config`, all at once; return their results.

    config:   a TrainConfig; its seed is replaced by each of `seeds`.
    out_dirs: one run folder per seed.
    on_log:   called as on_log(seed, row) at every logging step.

    Returns one entry per seed: its `Run`, or the TrainingDiverged error that
    stopped it (its folder keeps the last good checkpoint; the other seeds go
    on, since a NaN in one model of the stack never reaches the others).
    All runs must be at the same step: new, or resumed from checkpoints of
    the same step.
    """
    if not can_train_together(config):
        raise ValueError("runs with d_pause_ratio > 0 cannot train together; train them one by one")
    if len(seeds) != len(out_dirs) or len(set(seeds)) != len(seeds):
        raise ValueError(f"need one out_dir per seed and distinct seeds; got seeds {seeds} for {len(out_dirs)} folders")
    configs = [replace(config, seed=seed) for seed in seeds]
    opened = [open_run(c, d, CHECKPOINT_KIND) for c, d in zip(configs, out_dirs)]
    run_dirs = [run_dir for run_dir, _, _ in opened]
    states = [state for _, _, state in opened]
    device = opened[0][1]
    start_steps = {state["step"] if state else 0 for state in states}
    if len(start_steps) > 1:
        raise ValueError(f"runs to train together must be at the same step; these are at {sorted(start_steps)}")
    start_step = start_steps.pop()

    # Each seed's models, built exactly as `train` builds them.
    generators, discriminators, torch_rng_states = [], [], []
    for c in configs:
        torch.manual_seed(c.seed)
        generator, discriminator = build_models(c)
        generators.append(generator)
        discriminators.append(discriminator)
        torch_rng_states.append(torch.get_rng_state())
    G = StackedModel(generators, out_shape=IMAGE_SHAPE).to(device)
    D = StackedModel(discriminators, out_shape=()).to(device)
    if device.type == "cpu" and not config.use_mlp:
        # As in `train`: channels_last is faster for convolutions on the CPU.
        G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    lr_g = config.generator_learning_rate or config.learning_rate
    lr_d = config.discriminator_learning_rate or config.learning_rate
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=(config.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=(config.beta1, 0.999))
    noise_rngs = [torch.Generator(device).manual_seed(c.seed) for c in configs]
    d_updates = 0
    if start_step > 0:  # resume
        load_stacked(G, [s["generator"] for s in states])
        load_stacked(D, [s["discriminator"] for s in states])
        opt_g.load_state_dict(stack_adam_states([s["opt_generator"] for s in states], G))
        opt_d.load_state_dict(stack_adam_states([s["opt_discriminator"] for s in states], D))
        for rng, s in zip(noise_rngs, states):
            rng.set_state(s["noise_rng"].cpu())
        d_updates = states[0]["d_updates"]  # the same for all: d_every is shared
    histories = [prepare_run_folder(d, c, s) for d, c, s in zip(run_dirs, configs, states)]
    results = [None] * len(seeds)  # a Run, or the error that stopped the seed

    if start_step < config.num_training_steps:
        from tqdm.auto import tqdm

        images = load_mnist("train", device=device)[0]
        samplers = [BatchSampler(len(images), config.batch_size, c.seed, device) for c in configs]
        sample_noise = fixed_noise(config.latent_dim, device=device)
        writers = [RunWriter(d, start_step) for d in run_dirs]
        bar = tqdm(total=config.num_training_steps, initial=start_step, disable=not progress,
                   desc=f"{len(seeds)} seeds together", dynamic_ncols=True)
        if progress:
            bar.write(f"labkit: training seeds {', '.join(map(str, seeds))} of {config.architecture} together "
                      f"on {describe_device(device)}" + (f", resuming at step {start_step}" if start_step else ""))
        ones = torch.ones(len(seeds), config.batch_size, device=device)
        zeros = torch.zeros_like(ones)
        finite_flags = []  # one (N,) bool tensor per step since the last check, on the device
        G.train(), D.train()
        started = time.time()
        try:
            for step in range(start_step + 1, config.num_training_steps + 1):
                real = images[torch.stack([s.indices(step - 1) for s in samplers])]  # (N, B, 1, 32, 32)
                z = torch.stack([torch.randn(config.batch_size, config.latent_dim, generator=rng, device=device)
                                 for rng in noise_rngs])

                # (1) Discriminators: real -> 1, fake -> 0. Losses (N,), summed for backward.
                out_real = D(real)
                fake = G(z)
                out_fake = D(fake.detach())
                loss_d = bce(out_real, ones) + bce(out_fake, zeros)
                if (step - 1) % config.d_every == 0:
                    descend(opt_d, loss_d)
                    d_updates += 1

                # (2) Generators, as in `train`.
                loss_g, out_fake_after = generator_step(opt_g, D, fake, ones)

                finite_flags.append(torch.isfinite(loss_d) & torch.isfinite(loss_g))
                bar.update(1)
                is_log = step % config.logging_steps == 0
                is_save = step % config.saving_steps == 0 or step == config.num_training_steps
                if not (is_log or is_save):
                    continue

                finite = torch.stack(finite_flags).cpu()  # (steps, N): the one host-device sync
                finite_flags.clear()
                for i in range(len(seeds)):
                    if results[i] is None:
                        try:
                            check_finite(finite[:, i], step, run_dirs[i])
                        except TrainingDiverged as err:
                            results[i] = err  # this seed stops writing; the others go on
                            writers[i].close()
                            if progress:
                                bar.write(f"labkit: seed {seeds[i]}: {err}")
                live = [i for i in range(len(seeds)) if results[i] is None]
                if not live:
                    break

                if is_log:
                    logged = torch.stack([loss_d, loss_g, out_real.mean(1), out_fake.mean(1),
                                          out_fake_after.mean(1)]).tolist()
                    for i in live:
                        row = dict(step=step, discriminator_loss=logged[0][i], generator_loss=logged[1][i],
                                   D_x=logged[2][i], D_G_z1=logged[3][i], D_G_z2=logged[4][i],
                                   d_updates=d_updates)
                        histories[i].append(row)
                        writers[i].log(row)
                        if on_log is not None:
                            on_log(seeds[i], row)

                if is_save:
                    G.eval()
                    with torch.no_grad():  # the same noise for every seed
                        samples = G(sample_noise.expand(len(seeds), *sample_noise.shape))
                    G.train()
                    g_opt_state, d_opt_state = opt_g.state_dict(), opt_d.state_dict()
                    for i in live:
                        writers[i].save({
                            "kind": CHECKPOINT_KIND, "step": step, "config": asdict(configs[i]),
                            "generator": G.model_state_dict(i), "discriminator": D.model_state_dict(i),
                            "opt_generator": split_adam_state(g_opt_state, G, i),
                            "opt_discriminator": split_adam_state(d_opt_state, D, i),
                            "noise_rng": noise_rngs[i].get_state(), "torch_rng": torch_rng_states[i],
                            "d_updates": d_updates, "prev_generator_loss": None,
                        }, samples[i])
        finally:
            bar.close()
            for i, writer in enumerate(writers):
                if not isinstance(results[i], TrainingDiverged):
                    writer.close()
        if progress:
            print(f"labkit: {len(seeds)} x {config.num_training_steps - start_step} steps in "
                  f"{time.time() - started:.1f} s")

    for i in range(len(seeds)):
        if results[i] is None:
            generator, discriminator = build_models(configs[i])
            generator.load_state_dict(G.model_state_dict(i))
            discriminator.load_state_dict(D.model_state_dict(i))
            generator.to(device).eval(), discriminator.to(device).eval()
            results[i] = Run(run_dirs[i], configs[i], histories[i], generator, discriminator,
                             max(start_step, config.num_training_steps))
    return results


def resume_step(run_dir):
    """The step a run folder would resume from: its newest checkpoint's (0 for a new run)."""
    newest = latest_checkpoint(run_dir)
    return int(newest.stem.split("-")[1]) if newest else 0
