"""What the lab notebooks share: the profile (how big the lab is), and load-or-train.

Three profiles scale the lab:

    default   the real lab: the course's settings, labkit's standard Inception
              FID on 3000 vs 3000 images, 5 seeds, the full latent x hidden
              grid. For a GPU.
    cpu       a laptop CPU: the course's 5000 steps per GAN run, but fewer
              sizes and seeds, and MNIST-FID (seconds on a CPU) instead of
              Inception FID (minutes).
    smoke     tiny, for CI and grading: every notebook runs in a minute or
              two. The numbers mean nothing.

Which one is active: the last `lab.use(name)` in this kernel; else the
environment variable LABKIT_PROFILE; else `default` on a machine with a CUDA
GPU and `cpu` without one. `lab.banner()` (each notebook's first cell) says
which, and why.

`lab.run(config)` returns a run trained with exactly `config`: it loads the
run if any notebook (or `labkit train`) trained it before, and trains it
otherwise, saying which it did. The run's folder name holds its settings
(labkit/runs/folder.py), so a widget that trains other settings makes a new run and
never changes what another notebook loads.
"""

import csv
import inspect
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as widgets
import torch
from IPython.display import Code, display

from .experiments import sweep as sweeps
from .gan import GANCode, build_training, extend as extend_run, gan_step, memory_format, train
from .metrics import generator_fid
from .runs.atomic import write_atomic
from .runs.config import TrainConfig, VAEConfig
from .runs.device import describe_device, forked_rng, threads_for_machine
from .runs.folder import runs_root
from .runs.progress import wrapped
from .vae import train_vae


@dataclass(frozen=True)
class Profile:
    name: str
    steps: int  # GAN training steps per run
    saving_steps: int
    seeds: tuple  # seeds per configuration, where the course used several
    latent_sizes: tuple  # latent sizes of the sweep and the curves
    hidden_sizes: tuple  # hidden sizes of the sweep and the curves
    curve_latents: tuple  # the curves notebook's grid ({16, 100} x {16, 100} in the course)
    curve_hiddens: tuple
    fid_backbone: str  # "inception" (Inception FID, as the course's) or "mnist" (MNIST-FID, fast on a CPU)
    fid_count: int  # real and generated images per FID
    count_samples: int  # samples whose digits are counted
    vae_steps: int
    vae_latents: tuple
    vae_logging_steps: int = 100
    interpolation_pairs: int = 10
    interpolation_steps: int = 20
    confident: float = 0.9  # classifier confidence for picking interpolation endpoints by digit
    why: str = ""

    @property
    def fid_label(self):
        name = "Inception FID" if self.fid_backbone == "inception" else "MNIST-FID"
        return f"{name} on {self.fid_count} vs {self.fid_count} images"

    def describe(self):
        return (f"profile '{self.name}': {self.steps} steps per GAN run, seeds {list(self.seeds)}, "
                f"{self.fid_label}")


PROFILES = {
    "default": Profile("default", steps=5000, saving_steps=1000, seeds=(2022, 2023, 2024, 2025, 2026),
                       latent_sizes=(16, 32, 64, 100), hidden_sizes=(16, 32, 64, 100),
                       curve_latents=(16, 100), curve_hiddens=(16, 100), fid_backbone="inception",
                       fid_count=3000, count_samples=10000, vae_steps=25000, vae_latents=(3, 10, 100),
                       why="the course's settings, for a GPU"),
    "cpu": Profile("cpu", steps=5000, saving_steps=1000, seeds=(2022, 2023, 2024),
                   latent_sizes=(16, 100), hidden_sizes=(8, 16), curve_latents=(16, 100), curve_hiddens=(8, 16),
                   fid_backbone="mnist", fid_count=10000, count_samples=10000, vae_steps=5000,
                   vae_latents=(3, 10, 100), vae_logging_steps=250,
                   why="the course's 5000 steps, fewer sizes and seeds, MNIST-FID: for a laptop CPU"),
    "smoke": Profile("smoke", steps=30, saving_steps=30, seeds=(2022, 2023), latent_sizes=(16, 32),
                     hidden_sizes=(8, 16), curve_latents=(16, 32), curve_hiddens=(8, 16), fid_backbone="inception",
                     fid_count=20, count_samples=300, vae_steps=30, vae_latents=(3, 10), vae_logging_steps=10,
                     interpolation_pairs=3, interpolation_steps=8, confident=0.0,
                     why="a tiny check that every cell runs (CI, grading); the numbers mean nothing"),
}

_chosen = None  # set by use()


def use(name):
    """Switch this kernel to profile `name` ("default", "cpu" or "smoke"), without restarting."""
    global _chosen
    if name not in PROFILES:
        raise ValueError(f"{name!r} is not a profile; use one of {', '.join(PROFILES)}")
    _chosen = name
    say(f"labkit: using the {describe_choice()}")


def profile():
    """The active Profile (see the module docstring for how it is chosen)."""
    return PROFILES[_profile_name()[0]]


def _profile_name():
    if _chosen is not None:
        return _chosen, "chosen with lab.use"
    name = os.environ.get("LABKIT_PROFILE")
    if name:
        if name not in PROFILES:
            raise ValueError(f"LABKIT_PROFILE={name!r} is not a profile; use one of {', '.join(PROFILES)}")
        return name, "from LABKIT_PROFILE"
    if torch.cuda.is_available():
        return "default", "a GPU is present"
    return "cpu", "no GPU was found"


def describe_choice():
    name, reason = _profile_name()
    return f"{PROFILES[name].describe()} ({reason})"


def runs_dir():
    """Where the lab's runs are: the runs root shared with the `labkit` command (labkit/runs/folder.py)."""
    return runs_root()


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def config(**settings):
    """A TrainConfig with the profile's steps, and `settings` on top (a misspelt name is an error)."""
    p = profile()
    return TrainConfig(num_training_steps=p.steps, saving_steps=p.saving_steps).updated(**settings)


def run(train_config=None, *, code=None, **settings):
    """The run trained with exactly this configuration: loaded if it exists, else trained (a `gan.Run`).

    train_config: a TrainConfig (default: `config(**settings)`).
    code:         a labkit.gan.GANCode with your own pieces (default: labkit's).
    """
    if train_config is not None and settings:
        train_config = train_config.updated(**settings)
    return train(train_config or config(**settings), code=code)


def extend(finished, steps, *, code=None):
    """Train a finished run on to `steps` steps, as a new run (the original stays as it is)."""
    return extend_run(finished, steps, code=code)


def sweep(latent_dims=None, hidden_dims=None, seeds=None, backbone=None, fid_count=None):
    """The profile's latent x hidden x seeds sweep over the lab's runs (so runs trained by other
    notebooks are reused); returns (runs, summary). seeds: a list, or a number N for 2022 ... 2022 + N - 1."""
    p = profile()
    return sweeps.sweep(latent_dims or p.latent_sizes, hidden_dims or p.hidden_sizes, seeds or list(p.seeds),
                        runs_dir(), config(), fid_count=fid_count or p.fid_count,
                        backbone=backbone or p.fid_backbone)


STEP_STOPS = (100, 500, 1000, 2000, 5000, 10000)  # the steps a widget offers: a few presses, not 500


def steps_slider(description="steps"):
    """A slider over STEP_STOPS (and the profile's own steps), set to the profile's steps."""
    steps = profile().steps
    return widgets.SelectionSlider(options=sorted({*STEP_STOPS, steps}), value=steps, description=description,
                                   continuous_update=False)


def vae(latent_dim, seed=2022, *, code=None):
    """The VAE with this latent size and the profile's steps: loaded, or trained (a `vae.VAERun`)."""
    p = profile()
    vae_config = VAEConfig(latent_dim=latent_dim, num_training_steps=p.vae_steps, seed=seed,
                           saving_steps=max(p.vae_steps // 5, 1), logging_steps=p.vae_logging_steps)
    return train_vae(vae_config, code=code)


def fid(generator, pipeline="pad"):
    """The profile's FID of a generator (Inception or MNIST-FID, with its counts and pipeline in the label).

    generator: a generator, or a run (`lab.run(...)`): a run is measured against real
               images of its own pipeline, a generator against `pipeline`'s ("pad" or "resize").
    """
    p = profile()
    if hasattr(generator, "config"):  # a run: its generator, and the pipeline it learnt from
        generator, pipeline = generator.generator, generator.config.pipeline
    return generator_fid(generator, p.fid_count, p.fid_backbone, progress=True, pipeline=pipeline)


def seconds_per_step(hidden_dim=16, steps=5):
    """Seconds per training step of the course's DCGAN at this hidden size, here (the banner's estimate).

    It times the trainer's own step (labkit.gan.gan_step, on networks and Adams
    built as labkit.gan builds them, on this device) for `steps` steps after
    one warm-up step, waiting for the device before and after, with the CPU
    threads a run started now would use (labkit/runs/device.py).
    """
    dev = device()
    config = TrainConfig(generator_hidden_dim=hidden_dim, discriminator_hidden_dim=hidden_dim, device=dev.type)
    with forked_rng(dev), threads_for_machine(dev):
        code = GANCode()  # labkit's own pieces
        generator, discriminator, opt_g, opt_d = build_training(config, code, dev)
        real = torch.rand(config.batch_size, 1, 32, 32, device=dev).contiguous(memory_format=memory_format(dev))
        z = torch.randn(config.batch_size, config.latent_dim, device=dev)
        for step in range(1, steps + 2):
            if step == 2:  # after the warm-up step
                synchronize(dev)
                start = time.perf_counter()
            gan_step(generator, discriminator, opt_g, opt_d, real, z, step, config, code)
        synchronize(dev)
    return (time.perf_counter() - start) / steps


def synchronize(dev):
    """Wait until the device has done everything it was asked (a CUDA GPU runs behind the host)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


LAB_TIME_CSV = Path(__file__).parent / "assets" / "lab_time.csv"


def measured_minutes(notebook, profile_name):
    """(minutes, where, seconds per step there then or None) a notebook took in a profile, from bench/lab_time.py's
    table; None if not measured."""
    if not LAB_TIME_CSV.is_file():
        return None
    with open(LAB_TIME_CSV, newline="") as f:
        for row in csv.DictReader(f):
            if row["profile"] == profile_name and row["notebook"].startswith(str(notebook)):
                step = row.get("ms_per_step")
                return float(row["minutes"]), row["machine"], float(step) / 1000 if step else None
    return None


def say(text):
    """Print a banner line wrapped between words (labkit/runs/progress.py: JupyterLab wraps mid-word)."""
    print(wrapped(text))


def minutes_text(minutes):
    """'under a minute' or 'about N min' (the pass read "up to about 0 min")."""
    return "under a minute" if minutes < 1 else f"about {minutes:.0f} min"


def banner(notebook=None):
    """Print the profile, the device and where runs go; with `notebook` ("01", ...), what it costs here."""
    p, dev = profile(), device()
    say(f"labkit lab, {describe_choice()}")
    with threads_for_machine(dev) as threads:
        say(f"device: {describe_device(dev, threads)}; runs in {runs_dir().resolve()}")
    measured = measured_minutes(notebook, p.name) if notebook else None
    if notebook and dev.type == "cpu" and p.name == "default":
        minutes = seconds_per_step(16) * p.steps / 60
        say(f"No GPU: one default run (5000 steps, hidden 16) takes about {minutes:.0f} min here, more at larger "
            f"hidden sizes, and an Inception FID on 3000 images about 7 min. On a laptop: lab.use(\"cpu\").")
    elif measured:
        minutes, machine, _ = measured
        cost = minutes_text(minutes)
        say(f"This notebook in the '{p.name}' profile: {cost} on {machine} when nothing is "
            f"trained yet (bench/lab_time.py); runs trained before are loaded, not trained again.")
    elif notebook and dev.type == "cuda":
        say(f"This notebook in the '{p.name}' profile on a GPU: time not measured yet (bench/lab_time.py).")
    if notebook and dev.type == "cpu" and p.name == "cpu":  # the machine as it is now: other work slows it
        seconds = seconds_per_step(16)
        say(f"Measured here now: {seconds * 1000:.0f} ms per training step, so one {p.steps}-step run at hidden "
            f"16 takes about {max(1, round(seconds * p.steps / 60))} min.")
        if measured and measured[2] and seconds > 1.3 * measured[2]:  # a busy or slower machine: the whole notebook
            slower = seconds / measured[2]  # scales too (a student of the pass waited 23 min where it said 7)
            say(f"That is {slower:.1f}x the step time of {measured[1]}: expect this notebook to take up to "
                f"{minutes_text(measured[0] * slower)} here if nothing is trained yet.")
    others = [name for name in PROFILES if name != p.name]
    say("Other profiles: " + ", ".join(f'lab.use("{name}")' for name in others) + " (no restart needed).")
    said = keep_widgets_on_reopen()
    if said:
        say(said)


WIDGET_SETTINGS = Path(__file__).parent / "assets" / "jupyterlab" / "labkit.json"


def keep_widgets_on_reopen(app_dir=None):
    """Make JupyterLab save the widgets' state with each notebook (its setting "Save Widget State
    Automatically"), so a notebook reopened later shows the sliders' last plots, not "Error displaying
    widget: model not found". JupyterLab reads package defaults from {app_dir}/settings/overrides.d/; a regular
    install puts labkit's there (pyproject.toml), an editable one does not, so this copies it once. Returns
    what the student should know (None when nothing changed)."""
    app_dir = Path(app_dir or os.environ.get("JUPYTERLAB_DIR") or Path(sys.prefix) / "share" / "jupyter" / "lab")
    target = app_dir / "settings" / "overrides.d" / WIDGET_SETTINGS.name
    if target.exists():
        return None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, WIDGET_SETTINGS.read_text())  # a kill mid-copy leaves no half file that stays forever
    except OSError:
        return ("JupyterLab cannot be set to save widget state here: turn on Settings > Save Widget State "
                "Automatically, or reopened notebooks show 'model not found' where the sliders were.")
    return ("labkit turned on JupyterLab's 'Save Widget State Automatically' (sliders and their plots reopen "
            "with the notebook) from the next start of JupyterLab: stop it (Ctrl-C in its terminal) and run "
            "`jupyter lab` again; a reload of the tab is not enough.")


def show(*objects):
    """Show functions' or classes' source in the notebook, as the lesson's code to read."""
    display(Code("\n\n".join(inspect.getsource(obj) for obj in objects), language="python"))
