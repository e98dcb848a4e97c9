"""Settings for the lab notebooks, chosen by one environment variable.

    LABKIT_PROFILE=default   the real lab: the course's 5000 steps, 3000-image
                             Inception FID, 5 seeds. Meant for a GPU kernel.
    LABKIT_PROFILE=cpu       smaller settings that still teach on a laptop CPU:
                             fewer steps, seeds and sizes, FID on fewer images.
    LABKIT_PROFILE=smoke     tiny, for CI: every notebook runs in a minute or
                             two. The numbers mean nothing.

Notebooks call `lab.run(config)` for every model they need: it trains the run
into runs/<profile>/<name>, or loads it if an earlier notebook already did,
so a student never trains the same model twice. Profiles keep their own run
folders, so a smoke run is never mistaken for a real one.
"""

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch


@dataclass(frozen=True)
class Profile:
    name: str
    steps: int  # GAN training steps per run
    saving_steps: int
    seeds: tuple  # seeds per configuration, where the course used several
    sizes: tuple  # latent and hidden sizes of the sweep
    curve_sizes: tuple  # latent and hidden sizes of the curves notebook ({16, 100} in the course)
    fid_count: int  # real and generated images per Inception FID
    count_samples: int  # samples whose digits are counted
    vae_steps: int
    vae_latents: tuple
    interpolation_pairs: int = 10
    interpolation_steps: int = 20
    confident: float = 0.9  # classifier confidence for picking interpolation endpoints by digit

    def describe(self):
        return (f"profile '{self.name}': {self.steps} steps per GAN run, seeds {list(self.seeds)}, "
                f"Inception FID on {self.fid_count} vs {self.fid_count} images")


PROFILES = {
    "default": Profile("default", steps=5000, saving_steps=1000, seeds=(2022, 2023, 2024, 2025, 2026),
                       sizes=(16, 32, 64, 100), curve_sizes=(16, 100), fid_count=3000, count_samples=10000,
                       vae_steps=25000, vae_latents=(3, 10, 100)),
    "cpu": Profile("cpu", steps=1500, saving_steps=500, seeds=(2022, 2023, 2024),
                   sizes=(16, 32), curve_sizes=(16, 32), fid_count=500, count_samples=10000,
                   vae_steps=3000, vae_latents=(3, 10, 100)),
    "smoke": Profile("smoke", steps=30, saving_steps=30, seeds=(2022, 2023),
                     sizes=(16, 32), curve_sizes=(16, 32), fid_count=20, count_samples=300,
                     vae_steps=30, vae_latents=(3, 10), interpolation_pairs=3, interpolation_steps=8,
                     confident=0.0),
}


def profile():
    """The Profile named by LABKIT_PROFILE (default: "default")."""
    name = os.environ.get("LABKIT_PROFILE", "default")
    if name not in PROFILES:
        raise ValueError(f"LABKIT_PROFILE={name!r} is not a profile; use one of {', '.join(PROFILES)}")
    return PROFILES[name]


def runs_dir():
    """runs/<profile>/ below LABKIT_RUNS (default: ./runs)."""
    return Path(os.environ.get("LABKIT_RUNS", "runs")) / profile().name


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def config(**settings):
    """A TrainConfig with the profile's steps, and `settings` on top."""
    from .train import TrainConfig

    p = profile()
    return replace(TrainConfig(num_training_steps=p.steps, saving_steps=p.saving_steps), **settings)


def run(train_config=None, name=None, **settings):
    """Train this configuration, or load it if it has been trained: a `train.Run`."""
    from .train import train

    train_config = train_config or config(**settings)
    return train(train_config, runs_dir() / (name or train_config.name))


def sweep(latent_dims=None, hidden_dims=None, seeds=None, backbone="inception", fid_count=None):
    """The profile's latent x hidden x seeds sweep, in the lab's run folders
    (so runs trained by other notebooks are reused); returns (runs, summary)."""
    from . import sweep as sweeps

    p = profile()
    return sweeps.sweep(latent_dims or p.sizes, hidden_dims or p.sizes, seeds or p.seeds, runs_dir(), config(),
                        fid_count=fid_count or p.fid_count, backbone=backbone)


def vae(latent_dim, seed=2022):
    """Train this VAE with the profile's steps, or load it: a `vae.VAERun`."""
    from .vae import VAEConfig, train_vae

    vae_config = VAEConfig(latent_dim=latent_dim, num_training_steps=profile().vae_steps, seed=seed,
                           saving_steps=max(profile().vae_steps // 5, 1),
                           logging_steps=min(100, profile().vae_steps // 3 or 1))
    return train_vae(vae_config, runs_dir() / vae_config.name)


def seconds_per_step(hidden_dim=16, steps=5):
    """A quick measurement of one training step here (used to warn CPU users)."""
    from .models import DCGANDiscriminator, DCGANGenerator
    from .train import bce

    dev = device()
    G, D = DCGANGenerator(16, hidden_dim).to(dev), DCGANDiscriminator(hidden_dim).to(dev)
    opt = torch.optim.Adam(list(G.parameters()) + list(D.parameters()))
    real, ones = torch.zeros(64, 1, 32, 32, device=dev), torch.ones(64, device=dev)
    for i in range(steps + 1):
        if i == 1:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = bce(D(real), ones) + bce(D(G(torch.randn(64, 16, device=dev))), ones)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def banner():
    """Print the profile and device; on a CPU with the default profile, say what it costs."""
    p, dev = profile(), device()
    print(f"labkit lab, {p.describe()}; device: {dev}")
    if dev.type == "cpu" and p.name == "default":
        minutes = seconds_per_step(16) * p.steps / 60
        print(f"No GPU: one default run (5000 steps, hidden 16) takes about {minutes:.0f} min here, more at "
              f"larger hidden sizes. For smaller settings that still teach, restart the kernel with "
              f"LABKIT_PROFILE=cpu (e.g. `LABKIT_PROFILE=cpu jupyter lab`).")
