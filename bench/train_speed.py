"""labkit's trainer vs a plain DataLoader trainer, side by side, per step.

The baseline is how the course's code trained: a torchvision MNIST Dataset
with per-sample Pad/ToTensor/Normalize, a DataLoader with 2 workers, and
`.item()` on the losses every step. Both train the same DCGAN with the same
step; each is timed over steady-state steps after a warm-up, and the ratio
baseline / labkit is printed per hidden size.

With --compile a third column times labkit's step with G and D.logits passed
through torch.compile (the "speed for CPU students" candidate of the lab), and
prints how long compiling took; labkit does not compile because of it.

    python bench/train_speed.py                     # hidden 16 and 64, 200 steps each
    python bench/train_speed.py --hidden 16 --steps 100 --compile
"""

import argparse
import os
import sys
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from labkit.experiments.together import LABKIT_GAN
from labkit.data import BatchSampler, data_root, load_mnist
from labkit.solutions import DCGANDiscriminator, DCGANGenerator
from labkit.runs.device import resolve_device
from labkit.gan import gan_step
from labkit.gan import build_models, train, TrainConfig


def course_loop(hidden, steps, device, latent=16, batch_size=64, seed=0, on_step=None, progress=False):
    """Train the course DCGAN `steps` steps the way the course's main.py did; returns the generator.

    A torchvision MNIST Dataset with per-sample Pad/ToTensor/Normalize, a shuffling
    DataLoader with 2 workers, Sigmoid outputs into nn.BCELoss, `.item()` on the
    losses every step (as its logger did). The networks are labkit's (the course's
    architecture, DCGAN init). `on_step(step)` is called before each 0-based step.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    transform = transforms.Compose([transforms.Pad(2), transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    dataset = datasets.MNIST(str(data_root()), train=True, download=True, transform=transform)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=2, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=True)
    G, D = DCGANGenerator(latent, hidden).to(device), DCGANDiscriminator(hidden).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCELoss()
    batches = iter(loader)
    for step in tqdm(range(steps), desc="the course's loop", disable=not progress, mininterval=5):
        if on_step:
            on_step(step)
        try:
            real, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            real, _ = next(batches)
        real = real.to(device)
        ones = torch.ones(batch_size, device=device)
        zeros = torch.zeros(batch_size, device=device)
        # D: maximize log(D(x)) + log(1 - D(G(z)))
        D.zero_grad()
        out_real = D(real)
        z = torch.randn(batch_size, latent, 1, 1, device=device)
        fake = G(z)
        out_fake = D(fake.detach())
        loss_d = bce(out_real, ones) + bce(out_fake, zeros)
        loss_d.backward()
        opt_d.step()
        # G: maximize log(D(G(z))) on the same z
        G.zero_grad()
        loss_g = bce(D(fake), ones)
        loss_g.backward()
        opt_g.step()
        loss_d.item(), loss_g.item(), out_real.mean().item(), out_fake.mean().item()  # logged every step
    return G.eval()


def baseline_ms_per_step(hidden, steps, warmup, device, latent=16, batch_size=64):
    start = []

    def on_step(step):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start.append(time.perf_counter())

    course_loop(hidden, warmup + steps, device, latent, batch_size, on_step=on_step)
    return (time.perf_counter() - start[0]) / steps * 1000


def labkit_ms_per_step(hidden, steps, warmup, device):
    """Time labkit.train between its first and last logging step (setup excluded)."""
    stamps = []
    config = TrainConfig(generator_hidden_dim=hidden, discriminator_hidden_dim=hidden,
                         num_training_steps=warmup + steps, logging_steps=10,
                         saving_steps=10_000_000, device=str(device))
    with tempfile.TemporaryDirectory() as out:
        train(config, out, progress=False,
              on_log=lambda row: stamps.append((row["step"], time.perf_counter())))
    (s0, t0), (s1, t1) = next(st for st in stamps if st[0] >= warmup), stamps[-1]
    return (t1 - t0) / (s1 - s0) * 1000


def compiled_ms_per_step(hidden, steps, warmup, device):
    """labkit's step (as `train` runs it) with G and D.logits compiled; (ms per step, seconds to compile)."""
    config = TrainConfig(generator_hidden_dim=hidden, discriminator_hidden_dim=hidden, device=str(device))
    torch.manual_seed(0)
    G, D = (m.to(device) for m in build_models(config))
    if device.type == "cpu":
        G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr_g, betas=(config.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr_d, betas=(config.beta1, 0.999))
    G_compiled = torch.compile(G)
    D.logits = torch.compile(D.logits)  # gan_step calls D.logits
    images = load_mnist("train", device=device)[0]
    sampler = BatchSampler(len(images), config.batch_size, 0, device)
    started = time.perf_counter()
    for step in range(1, warmup + steps + 1):
        if step == warmup + 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            compile_seconds = time.perf_counter() - started
            start = time.perf_counter()
        z = torch.randn(config.batch_size, config.latent_dim, device=device)
        out = gan_step(G_compiled, D, opt_g, opt_d, images[sampler.indices(step - 1)], z, step, config, LABKIT_GAN)
        if step % 10 == 0:
            out.loss_d.item()  # as labkit's trainer: the host waits at logging steps only
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1000, compile_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="also time labkit's step under torch.compile")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device: {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores; {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'hidden':>6} {'baseline ms/step':>17} {'labkit ms/step':>15} {'speed-up':>9}"
          + (f" {'compiled ms/step':>17} {'compiled vs labkit':>19} {'compiling':>10}" if args.compile else ""))
    for hidden in args.hidden:
        base = baseline_ms_per_step(hidden, args.steps, args.warmup, device)
        ours = labkit_ms_per_step(hidden, args.steps, args.warmup, device)
        line = f"{hidden:>6} {base:>17.1f} {ours:>15.1f} {base / ours:>8.2f}x"
        if args.compile:
            compiled, seconds = compiled_ms_per_step(hidden, args.steps, args.warmup, device)
            line += f" {compiled:>17.1f} {ours / compiled:>18.2f}x {seconds:>9.0f}s"
        print(line)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
