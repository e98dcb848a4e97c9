"""Three numbers to compare: the course's, labkit's reference, and yours.

A student whose FID lands far from a number in a report cannot tell a bug
from noise without a reference measured the same way. So each experiment of
the lab has
  * COURSE: what the course's students reported (Inception FIDs), with the
    report it comes from. The reports do not say how they measured FID; the
    course's own code, as copied into students' public repositories, resizes
    the 28x28 digits to 32x32 (its dataset.py: Resize(32)) where labkit pads
    them (Pad(2)), and compares 3000 training images with 3000 samples
    (main.py). In the course's code that pipeline puts its FIDs 2-3x above
    labkit's (88.9 resized, 36.5 padded at its default settings); labkit's
    code on the resized digits scores 44.3, so something else in the course's
    code matters too (issue 30, docs/reference-results.md). So every course
    number is labelled "(course: Resize(32))";
  * labkit's reference (labkit/assets/reference_results.csv), measured by
    bench/reference_results.py at the course's settings, with labkit's
    standard Inception FID (pytorch-fid, 3000 vs 3000) and with MNIST-FID, over
    several seeds;
  * the active profile's own result, measured in the notebook.

`compare(experiment, yours)` prints them side by side, saying which numbers
are comparable: Inception FIDs only with Inception FIDs of the same image
counts, MNIST-FIDs only with MNIST-FIDs of the same counts.
"""

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from .runs.config import TrainConfig, VAEConfig

REFERENCE_CSV = Path(__file__).parent / "assets" / "reference_results.csv"
# labkit's reference under other settings of the data and of D (bench/reference_results.py --pipeline resize
# [--no-discriminator-bias]): {tag: (CSV, what it is)}; pad is the table above.
VARIANTS = {
    "pad": (REFERENCE_CSV, "pad, D with biases (labkit's)"),
    "resize": (REFERENCE_CSV.with_name("reference_results_resize.csv"), "resize, D with biases"),
    "resize_dnobias": (REFERENCE_CSV.with_name("reference_results_resize_dnobias.csv"),
                       "resize, D without biases (the course's setting)"),
}


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    kind: str  # "gan" or "vae"
    settings: dict  # TrainConfig or VAEConfig settings on top of the course's defaults
    seeds: tuple = (2022,)


# What bench/reference_results.py trains on a CPU (about three hours on 2 cores).
EXPERIMENTS = [
    Experiment("dcgan_z16_h16", "DCGAN, latent 16, hidden 16 (the course's default)", "gan", {},
               (2022, 2023, 2024)),
    Experiment("dcgan_z100_h16", "DCGAN, latent 100, hidden 16", "gan", {"latent_dim": 100}, (2022, 2023, 2024)),
    Experiment("mlp_z16", "MLP GAN, latent 16", "gan", {"use_mlp": True}, (2022, 2023, 2024)),
    Experiment("relu_in_d", "DCGAN z16 h16, ReLU instead of LeakyReLU in D", "gan",
               {"discriminator_activation": "relu"}),
    Experiment("no_batchnorm", "DCGAN z16 h16 without BatchNorm", "gan", {"batch_norm": False}),
    Experiment("d_every_2", "DCGAN z16 h16, D updated every 2nd step", "gan", {"d_every": 2}),
    Experiment("pause_0.8", "DCGAN z16 h16, D paused while loss_D / loss_G < 0.8", "gan", {"d_pause_ratio": 0.8}),
    Experiment("vae_z3", "VAE, latent 3", "vae", {"latent_dim": 3}),
    Experiment("vae_z10", "VAE, latent 10", "vae", {"latent_dim": 10}),
    Experiment("vae_z100", "VAE, latent 100", "vae", {"latent_dim": 100}),
]


def course_grid_experiments():
    """On a GPU: the course's whole latent x hidden grid, 5 seeds each (GPU: not measured yet)."""
    return [Experiment(f"dcgan_z{z}_h{h}", f"DCGAN, latent {z}, hidden {h}", "gan",
                       {"latent_dim": z, "generator_hidden_dim": h, "discriminator_hidden_dim": h},
                       (2022, 2023, 2024, 2025, 2026))
            for z in (16, 32, 64, 100) for h in (16, 32, 64, 100)]


@dataclass(frozen=True)
class CourseResult:
    text: str  # as the reports give it, e.g. "98.8 ± 14.3 (best 71.1)"
    mean: float
    source: str
    std: float = math.nan  # over the report's 5 seeds, where it gives one


# The course's Inception FIDs, from the students' reports (which do not state their protocol).
_GRID_MEAN_STD = {  # report 000: 5 seeds (2022-2026) per configuration, mean ± std
    (16, 16): (98.8, 14.3, 71.1), (16, 32): (67.8, 4.7, 61.5), (16, 64): (60.7, 7.0, 47.8), (16, 100): (38.5, 8.0, 26.1),
    (32, 16): (75.7, 13.6, 57.9), (32, 32): (69.5, 13.9, 53.1), (32, 64): (53.7, 4.9, 49.4), (32, 100): (37.4, 3.8, 32.3),
    (64, 16): (83.3, 17.5, 59.3), (64, 32): (62.1, 11.9, 45.5), (64, 64): (49.6, 12.1, 32.6), (64, 100): (36.8, 5.6, 31.2),
    (100, 16): (82.4, 23.9, 47.0), (100, 32): (59.3, 9.3, 43.5), (100, 64): (37.0, 7.8, 27.1), (100, 100): (37.9, 6.6, 29.0),
}
COURSE = {f"dcgan_z{z}_h{h}": CourseResult(f"{m} ± {s} (best {b}); 5 seeds", m, "report 000", s)
          for (z, h), (m, s, b) in _GRID_MEAN_STD.items()}
COURSE["dcgan_z16_h16"] = CourseResult("98.8 ± 14.3 (best 71.1), 5 seeds; single runs in other reports: 77.4, "
                                       "87.1, 104.5", 98.8, "reports 000, 002, 001, 004", 14.3)
COURSE.update({
    "mlp_z16": CourseResult("112.5 ± 3.5 (best 106.8), 5 seeds; 140.2 at latent 100", 112.5, "reports 000, 001", 3.5),
    "relu_in_d": CourseResult("70.0 (one run)", 70.0, "report 002"),
    "no_batchnorm": CourseResult("236.6 (one run)", 236.6, "report 002"),
    "d_every_2": CourseResult("37.1, against 26.1 without it (at latent 16, hidden 100; one run)", 37.1, "report 000"),
    "pause_0.8": CourseResult("79.1, against 26.1 without it (at latent 16, hidden 100; one run)", 79.1, "report 000"),
    "vae_z3": CourseResult("320.7 (one run)", 320.7, "report 003"),
    "vae_z10": CourseResult("46.3 (one run)", 46.3, "report 003"),
    "vae_z100": CourseResult("28.8 (one run)", 28.8, "report 003"),
})


COLUMNS = ("experiment", "title", "seeds", "runs", "fid_mean", "fid_std", "fid_best", "fid_protocol",
           "mnist_fid_mean", "mnist_fid_std", "mnist_fid_protocol", "unsure_share", "entropy_bits",
           "train_minutes", "measure_minutes", "device", "torch")
INCEPTION_PROTOCOL = "Inception FID, 3000 real (train) vs 3000 generated"
MNIST_PROTOCOL = "MNIST-FID, 10000 real (train) vs 10000 generated"


def load(path=REFERENCE_CSV):
    """{experiment: row} from the reference CSV (numbers as floats); {} if it does not exist yet."""
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    numeric = ("runs", "fid_mean", "fid_std", "fid_best", "mnist_fid_mean", "mnist_fid_std", "unsure_share",
               "entropy_bits", "train_minutes", "measure_minutes")
    return {r["experiment"]: {k: (float(v) if k in numeric and v != "" else v) for k, v in r.items()} for r in rows}


def _fmt(mean, std=math.nan, best=math.nan):
    if not isinstance(mean, float) or math.isnan(mean):
        return "not measured"
    text = f"{mean:.1f}"
    if isinstance(std, float) and not math.isnan(std):
        text += f" ± {std:.1f}"
    if isinstance(best, float) and not math.isnan(best):
        text += f" (best {best:.1f})"
    return text


def reference_steps(experiment):
    """The training steps of labkit's reference run of `experiment` (the course's: 5000 for a GAN, 25,000 for a VAE)."""
    found = next((e for e in EXPERIMENTS if e.name == experiment), None)
    default = (VAEConfig if found and found.kind == "vae" else TrainConfig).num_training_steps
    return found.settings.get("num_training_steps", default) if found else default


def compare(experiment, yours=None, backbone=None, count=None, label=None, steps=None):
    """The course's number, labkit's reference and yours, side by side, as printable text.

    yours: a metrics.FID, or a text such as "41.2 ± 3.1 (3 seeds)" with its
    `backbone` ("inception" or "mnist") and image `count`; `steps`: how long yours trained, if the
    reference trained longer (the cpu profile's VAEs train 5000 steps, the reference's 25,000).
    """
    pipeline = "pad"
    if hasattr(yours, "backbone"):
        yours, backbone, count, pipeline = f"{yours.value:.2f}", yours.backbone, yours.n_fake, yours.pipeline or "pad"
    course, ref = COURSE.get(experiment), load().get(experiment)
    lines = [f"{label or experiment}"]
    lines.append(f"  course, Inception FID (course: Resize(32)):  {course.text if course else 'not reported'}")
    if ref:
        lines.append(f"  labkit reference, Inception FID (pad, 3000): "
                     f"{_fmt(ref['fid_mean'], ref['fid_std'], ref['fid_best'])}, {_seeds(ref)}, "
                     f"{reference_steps(experiment):,} steps")
        lines.append(f"  labkit reference, MNIST-FID (pad, 10000):    "
                     f"{_fmt(ref['mnist_fid_mean'], ref['mnist_fid_std'])}")
    else:
        lines.append("  labkit reference:                            not measured on a CPU (GPU: not measured)")
    if yours is not None:
        name = "Inception FID" if backbone == "inception" else "MNIST-FID"
        lines.append(f"  {f'yours, {name} ({pipeline}, {count}):':<45}{yours}")
        same = (backbone == "inception" and count == 3000) or (backbone == "mnist" and count == 10000)
        if pipeline != "pad":
            lines.append(f"  -> yours is on the {pipeline} pipeline, the labkit reference on pad: another scale. "
                         f"The course's numbers are on resize")
        else:
            lines.append(f"  -> compare yours with the labkit reference's {name}"
                         + ("" if same else f" only roughly: yours uses {count} images, and FID grows as the count "
                                            f"shrinks"))
        if steps and ref and steps < reference_steps(experiment):
            lines.append(f"  -> yours trained {steps:,} steps, the reference {reference_steps(experiment):,}: "
                         f"a shorter run scores higher")
    return "\n".join(lines)


def variants(experiment="dcgan_z16_h16"):
    """labkit's reference Inception FID of `experiment` under every data pipeline and discriminator measured,
    beside the course's number, as printable text (notebook 08: the course's discriminator has no biases)."""
    course = COURSE.get(experiment)
    lines = [f"{experiment}: Inception FID (3000 real vs 3000 generated), 5000 steps"]
    for tag, (path, said) in VARIANTS.items():
        ref = load(path).get(experiment)
        best = ref and (ref["fid_best"] if ref["runs"] > 1 else math.nan)
        text = f"{_fmt(ref['fid_mean'], ref['fid_std'], best)}, {_seeds(ref)}" if ref else "not measured"
        lines.append(f"  {'labkit, ' + said + ':':<58}{text}")
    lines.append(f"  {'course (Resize(32), D without biases):':<58}{course.text if course else 'not reported'}")
    return "\n".join(lines)


def _seeds(ref):
    runs = int(ref["runs"])
    return f"{runs} seed{'s' if runs > 1 else ''}"
