"""Which FID protocol would turn labkit's models into the course's numbers?

labkit's reference runs score far lower Inception FIDs than the course's
students reported for the same settings (bench/reference_results.md), and
bench/fid_gap.py found no single measurement detail that moves one run's FID
by more than 8 points. This script asks the question of the whole table at
once: for each candidate protocol (how many images, and how they reach
Inception) it measures every configuration that has a course number and a
labkit reference run, and fits the result to the course's numbers.

A protocol is a sample count N per side (the same for real and generated
images, as in the course's code) and a pipeline:

  labkit        labkit's standard: real MNIST training images padded to 32x32,
                real and generated both mapped to [0, 1], grey tiled to 3
                channels, pytorch-fid resizes to 299 (bilinear) and rescales
  real28        the real digits fed at 28x28, unpadded (generated ones stay 32x32):
                after the resize to 299 the real digit is drawn 8/7 larger
  mixed_range   real images in [0, 1], generated ones left in [-1, 1]
  both_pm1      real and generated both left in [-1, 1]
  test_split    real images from MNIST's test split instead of its training split
  g_train_mode  generated with G in training mode (BatchNorm uses the statistics
                of each batch of 64), as the course's main.py did: it never
                calls netG.eval() before sampling
  real28+mixed_range, real28+g_train_mode   two differences at once

Each pipeline needs its own Inception features. They are computed once per
(run, pipeline) for the largest count and cached as .npy files under
--cache (resumable chunk by chunk); smaller N are random subsets of them
(`--subsets` draws each, their mean is the FID, their std the spread), and N
above what was computed comes from the fit FID(N) = FID_inf + k / N, labelled
extrapolated. Other pipelines were checked, not measured (see the .md):
no resize (pytorch-fid's Inception cannot run on 28 or 32 pixels), PIL's
convert('RGB') (the same pixels as tiling), torchvision's ImageNet weights
(not on this machine).

    python bench/course_protocol.py                    # the reference runs under LABKIT_RUNS
    python bench/course_protocol.py --train            # train the missing reference runs first
    python bench/course_protocol.py --only dcgan_z16_h16 --real 60 --fake 40 --cache /tmp/c --out /tmp/t.md

Writes bench/course_protocol.md (--out): the fit table, one row per protocol,
and labkit's FID per configuration under each.
"""

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from labkit import metrics
from labkit.data import to_unit_range
from labkit.runs.folder import runs_root
from labkit.models import sample_images
from labkit.reference import COURSE, EXPERIMENTS

OUT = Path(__file__).with_suffix(".md")
# Configurations whose course number was measured at the same settings as labkit's reference run. The two
# rebalancing rules are not among them: the course ran them at latent 16 / hidden 100, labkit at hidden 16.
FITTED = ("dcgan_z16_h16", "dcgan_z100_h16", "mlp_z16", "relu_in_d", "no_batchnorm", "vae_z3", "vae_z10",
          "vae_z100")
RATIOS = {"d_every_2": "dcgan_z16_h16", "pause_0.8": "dcgan_z16_h16"}  # rule: its baseline (same seed)
COURSE_RATIOS = {"d_every_2": 37.1 / 26.1, "pause_0.8": 79.1 / 26.1}  # report 000, at latent 16 / hidden 100
COUNTS = (64, 100, 128, 256, 500, 1000, 2000, 3000, 10000)


# ---------------------------------------------------------------------------
# Image sources: what reaches Inception, before pytorch-fid's own resize and rescale


def real_source(name, count):
    """`count` real MNIST images (N, 1, H, W) as they reach Inception under source `name`.

    The same random subset (seed 0) for every source, as the course's first
    `count` images of a shuffled training loader.
    """
    if name == "test32":
        return to_unit_range(metrics.real_images(count, "test", seed=0))
    images = metrics.real_images(count, "train", seed=0)
    if name == "train32":
        return to_unit_range(images)
    if name == "train28":
        return to_unit_range(images[:, :, 2:30, 2:30])  # the 28x28 digit: labkit's padding cut off again
    if name == "train32_pm1":
        return images
    raise ValueError(f"unknown real source {name!r}")


@torch.no_grad()
def fake_source(name, generator, count):
    """`count` generated images as they reach Inception under source `name` (noise seed 0)."""
    if name == "eval01":
        return to_unit_range(sample_images(generator, count, seed=0))
    if name == "eval_pm1":
        return sample_images(generator, count, seed=0)
    if name == "trainmode01":  # the course's main.py: netG left in training mode, batches of 64
        rng = torch.Generator().manual_seed(0)
        was_training = generator.training
        generator.train()
        try:
            batches = [generator(torch.randn(min(64, count - start), generator.latent_dim, generator=rng))
                       for start in range(0, count, 64)]
        finally:
            generator.train(was_training)
        return to_unit_range(torch.cat(batches))
    raise ValueError(f"unknown fake source {name!r}")


@dataclass(frozen=True)
class Pipeline:
    name: str
    real: str  # a real_source name
    fake: str  # a fake_source name
    what: str


PIPELINES = [
    Pipeline("labkit", "train32", "eval01", "labkit's standard: train images padded to 32x32, both in [0, 1]"),
    Pipeline("real28", "train28", "eval01", "real digits fed at 28x28 unpadded, generated at 32x32"),
    Pipeline("mixed_range", "train32", "eval_pm1", "real in [0, 1], generated left in [-1, 1]"),
    Pipeline("both_pm1", "train32_pm1", "eval_pm1", "real and generated both left in [-1, 1]"),
    Pipeline("test_split", "test32", "eval01", "real images from the test split"),
    Pipeline("g_train_mode", "train32", "trainmode01", "G in training mode (BatchNorm statistics of batches of 64)"),
    Pipeline("real28+mixed_range", "train28", "eval_pm1", "real at 28x28 in [0, 1], generated at 32x32 in [-1, 1]"),
    Pipeline("real28+g_train_mode", "train28", "trainmode01", "real at 28x28, G in training mode"),
]


# ---------------------------------------------------------------------------
# Features, cached


def pool3(images, batch_size=50):
    """pytorch-fid's pool3 features (float64) of (N, 1, H, W) images, grey tiled to 3 channels.

    Unlike metrics.features this takes the images exactly as they should reach
    Inception (any range, any size), so each pipeline can prepare its own.
    """
    model = metrics.load_inception("cpu")
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].float().expand(-1, 3, -1, -1)
            out.append(model(batch.contiguous(memory_format=torch.channels_last))[0].flatten(1))
    return torch.cat(out).double().numpy()


class FeatureCache:
    """Features of one image set, kept in folder/<key>.npy and computed chunk by chunk.

    `images` is called once per call to get the whole (deterministic) set; a
    run that is stopped keeps the chunks done so far and the next one resumes.
    """

    def __init__(self, folder, chunk=100):
        self.folder, self.chunk = Path(folder), chunk
        self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, key, count, images):
        from tqdm.auto import tqdm

        path = self.folder / f"{key}.npy"
        done = np.load(path) if path.is_file() else np.zeros((0, 2048))
        if len(done) >= count:
            return done[:count]
        pending = images()[len(done):count]
        started = time.time()
        for start in tqdm(range(0, len(pending), self.chunk), desc=key, leave=False, mininterval=30):
            done = np.concatenate([done, pool3(pending[start:start + self.chunk])])
            tmp = path.with_name(path.stem + ".tmp.npy")
            np.save(tmp, done)
            tmp.replace(path)
        print(f"  features {key}: {len(pending)} images in {time.time() - started:.0f} s", flush=True)
        return done


# ---------------------------------------------------------------------------
# The reference runs


def reference_runs(names, runs, train_missing=False, seeds=None, steps=None):
    """{experiment: [(seed, run folder name, generator)]} of the finished reference runs; and what is missing.

    seeds: only these of each experiment's seeds; steps: another length than the course's (for tests)."""
    from labkit.gan import load_run, train, TrainConfig
    from labkit.vae import load_vae_run, train_vae, VAEConfig

    found, missing = {}, []
    for experiment in (e for e in EXPERIMENTS if e.name in names):
        gan = experiment.kind == "gan"
        for seed in [s for s in experiment.seeds if seeds is None or s in seeds]:
            config = (TrainConfig if gan else VAEConfig)(**experiment.settings, seed=seed, device="cpu")
            if steps:
                config = config.updated(num_training_steps=steps)
            folder = runs / config.name
            if train_missing:
                (train if gan else train_vae)(config, folder, progress=False)
            try:
                run = load_run(folder) if gan else load_vae_run(folder)
            except Exception:  # not there, or no checkpoint yet
                run = None
            if run is None or run.step < config.num_training_steps:
                missing.append(f"{experiment.name} seed {seed} ({folder.name})")
                continue
            generator = run.generator if gan else run.vae.decoder
            found.setdefault(experiment.name, []).append((seed, folder.name, generator.eval()))
    return found, missing


def has_batchnorm(model):
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


# ---------------------------------------------------------------------------
# FID at a count, and its extrapolation


def fid_at(real, fake, n, subsets, rng):
    """(mean, std) of the FID between random n-subsets of two feature sets; (nan, nan) if n is too large.

    With n equal to both sets' sizes there is one subset (the whole sets) and std 0.
    """
    if n > min(len(real), len(fake)):
        return math.nan, math.nan
    draws = 1 if n == len(real) == len(fake) else subsets
    values = []
    for _ in range(draws):
        a = real[rng.choice(len(real), n, replace=False)]
        b = fake[rng.choice(len(fake), n, replace=False)]
        values.append(metrics.features_fid(a, b))
    return float(np.mean(values)), float(np.std(values))


def fit_bias(counts, fids):
    """(FID_inf, k) of the least-squares fit FID(N) = FID_inf + k / N.

    FID's bias for N images per side falls like 1/N (Chong & Forsyth, 2020),
    so this extrapolates a curve measured at small N to larger N.
    """
    counts, fids = np.asarray(counts, float), np.asarray(fids, float)
    design = np.stack([np.ones_like(counts), 1 / counts], axis=1)
    (fid_inf, k), *_ = np.linalg.lstsq(design, fids, rcond=None)
    return float(fid_inf), float(k)


def fid_curve(real, fake, subsets, counts=COUNTS, seed=0):
    """{N: (fid, std, measured)} for every N of `counts`: measured where the features suffice, else extrapolated.

    The extrapolation fits the measured N from a quarter of the largest one up (and >= 100): below ~2048
    images the bias does not yet fall like 1/N, so the smallest counts would bend the fit.
    """
    rng = np.random.default_rng(seed)
    measured = {n: fid_at(real, fake, n, subsets, rng) for n in counts}
    measured = {n: v for n, v in measured.items() if not math.isnan(v[0])}
    usable = [n for n in measured if n >= max(100, max(measured, default=0) / 4)] or list(measured)
    fid_inf, k = fit_bias(usable, [measured[n][0] for n in usable]) if len(usable) >= 2 else (math.nan, math.nan)
    return {n: (*measured[n], True) if n in measured else (fid_inf + k / n, math.nan, False) for n in counts}


def run_features(cache, run_name, generator, sizes):
    """{fake source: features} of one run (G in training mode is G in eval mode for a model without BatchNorm)."""
    feats = {}
    for source in ("eval01", "eval_pm1", "trainmode01"):
        if source == "trainmode01" and not has_batchnorm(generator):
            feats[source] = feats["eval01"][:sizes[source]]
            continue
        feats[source] = cache(f"{run_name}__{source}", sizes[source],
                              lambda: fake_source(source, generator, sizes[source]))
    return feats


def extrapolation_check(real, fake, subsets, counts):
    """How far the extrapolation lands from a measured value: fitted on the counts up to a third of the
    largest measured one, compared there. Returns (N, extrapolated, measured) or None."""
    largest = max(n for n in counts if n <= min(len(real), len(fake)))
    upto = [n for n in counts if n <= largest / 3]
    if len(upto) < 2:
        return None
    curve = fid_curve(real[:largest // 3], fake[:largest // 3], subsets, upto + [largest])
    return largest, curve[largest][0], fid_curve(real, fake, subsets, [largest])[largest][0]


def measure(found, cache, sizes, subsets, counts=COUNTS):
    """{(pipeline, N): {experiment: mean FID over its seeds}}, {(pipeline, N): measured?} and
    {(pipeline, N): {rebalancing rule: its FID / its baseline's, both at the rule's first seed}} and
    {(experiment, seed): extrapolation_check of labkit's pipeline}."""
    real = {source: cache(f"real__{source}", sizes[source], lambda: real_source(source, sizes[source]))
            for source in ("train32", "train28", "test32", "train32_pm1")}
    per_run, checks = {}, {}  # (experiment, seed) -> {pipeline: curve}; -> extrapolation_check
    for experiment, runs in found.items():
        for seed, run_name, generator in runs:
            print(f"== {experiment}, seed {seed}", flush=True)
            fake = run_features(cache, run_name, generator, sizes)
            checks[experiment, seed] = extrapolation_check(real["train32"], fake["eval01"], subsets, counts)
            per_run[experiment, seed] = {p.name: fid_curve(real[p.real], fake[p.fake], subsets, counts)
                                         for p in PIPELINES}
    table, measured, ratios = {}, {}, {}
    for p in PIPELINES:
        for n in counts:
            ratios[p.name, n] = {rule: per_run[rule, seed][p.name][n][0] / per_run[base, seed][p.name][n][0]
                                 for rule, base in RATIOS.items() if rule in found
                                 for seed in [found[rule][0][0]] if (base, seed) in per_run}
            points = {experiment: [per_run[experiment, seed][p.name][n] for seed, _, _ in runs]
                      for experiment, runs in found.items()}
            table[p.name, n] = {e: float(np.mean([v[0] for v in pts])) for e, pts in points.items()}
            measured[p.name, n] = all(v[2] for pts in points.values() for v in pts)
    return table, measured, ratios, checks


# ---------------------------------------------------------------------------
# The fit to the course's table


def course_spread(experiment, cv):
    """The course's std for `experiment`: its std over 5 seeds where a report gives one, else cv x its number."""
    course = COURSE[experiment]
    return course.std if not math.isnan(course.std) else cv * course.mean


def fit_to_course(labkit, course, spread):
    """How well labkit's FIDs under one protocol match the course's, across configurations.

    labkit, course, spread: {configuration: value}, over the same configurations.
    Returns mae (mean |labkit - course|), rho (Spearman's rank correlation),
    mean_abs_z (mean |labkit - course| / spread, the error in units of the
    course's own seed-to-seed std) and n_configs.
    """
    keys = sorted(labkit)
    a, b = np.array([labkit[k] for k in keys]), np.array([course[k] for k in keys])
    s = np.array([spread[k] for k in keys])
    rho = float(spearmanr(a, b).statistic) if len(keys) > 2 else math.nan
    return dict(mae=float(np.mean(np.abs(a - b))), rho=rho, mean_abs_z=float(np.mean(np.abs(a - b) / s)),
                n_configs=len(keys))


def grid_cv():
    """The median of std / mean over the course's 16 latent x hidden cells (5 seeds each, report 000)."""
    from labkit.reference import _GRID_MEAN_STD

    return float(np.median([s / m for m, s, _ in _GRID_MEAN_STD.values()]))


def fit_table(table, measured, ratios):
    """One row per protocol, sorted by mean absolute error."""
    cv = grid_cv()
    rows = []
    for (pipeline, n), values in table.items():
        fitted = {k: v for k, v in values.items() if k in FITTED and not math.isnan(v)}
        if not fitted:
            continue
        course = {k: COURSE[k].mean for k in fitted}
        spread = {k: course_spread(k, cv) for k in fitted}
        rows.append(dict(pipeline=pipeline, n=n, measured=measured[pipeline, n], ratios=ratios[pipeline, n],
                         **fit_to_course(fitted, course, spread)))
    return sorted(rows, key=lambda r: r["mae"]), cv


# ---------------------------------------------------------------------------
# Report

# A protocol explains the course's table if its errors are within the course's own seed-to-seed spread on
# average and it orders the configurations as the course does.
EXPLAINS = dict(mean_abs_z=1.0, rho=0.8)

PIPELINE_FINDING = """## What explains the course's numbers: its data pipeline, in its code (issue 30)

The FID protocols below do not explain the course's table, and neither did the models: the course's
`dataset.py` (in the same students' copies as `main.py`) makes MNIST's 28x28 digits 32x32 with
`transforms.Resize(32)`, a bilinear upsampling, where labkit pads 2 pixels (`Pad(2)`). Measured with the
course's own code (its trainer, models and `main.py` with its `calculate_fid_given_images`, pytorch-fid's
Inception weights and pool3 features), latent 16, hidden 16, seed 2022, 5000 steps, 1472 vs 1472 images:
**88.9** as it is (Resize), **36.5** with `Pad(2)` (the course reports 98.8 ± 14.3 over 5 seeds; labkit's
padded seed-2022 run: 35.9 at 3000 vs 3000). Resized real digits against padded ones score 16.0; the
Resize-trained samples against padded reals 104.2. labkit now has the course's pipeline as a run setting
(`--pipeline resize`, labkit/data.py; pixel for pixel torchvision's, tests/test_data.py), and
`bench/reference_results.py --pipeline resize` measures its runs against resized reals
(bench/reference_results_resize.md). The protocol fits below were all made on padded runs, so they could
not find this. But the pipeline is not the whole story:
labkit trained and measured on the course's pipeline scores 44.3 (latent 16) and 42.7 (latent 100) at
seed 2022, 3000 vs 3000, where the course's code scores 88.9. The difference that matters on resized
digits is the discriminator the course hands out, without biases: labkit's trainer with only that
discriminator swapped in scores 85.0 (bench/course_pieces.md). Its samples keep a faint grey background
that Inception counts and the digit classifier does not.
"""

KNOWN = """## What is known about the course's protocol

None of the five reports says how its FIDs were measured (sample count, FID code, weights or image
pipeline). The course's own `main.py`, as copied into students' public GitHub repositories (found by code
search: at least nine near-identical copies of the GAN script, one of the VAE script), does say it: after
training it takes the first 3000 images of the shuffled training loader, maps them from [-1, 1] to [0, 1]
(`* 0.5 + 0.5`) and repeats the grey channel 3 times, draws 3000 samples from G in batches of 64 and maps
them the same way, and calls `calculate_fid_given_images(real, samples, batch_size, device)` from a
`pytorch_fid.fid_score` shipped with the course (the released pytorch-fid has no such function; its source
was not found, so its resize and weights are not known). Trained and measured in one call (`--do_train`),
G samples in eval mode: the course's trainer calls `netG.eval()` at each checkpoint, the last one at step
5000. Measured in a later call without `--do_train`, G is freshly built and samples in training mode (the
`g_train_mode` pipeline below). The VAE script passes both sets without the `* 0.5 + 0.5`. So the count
(3000 vs 3000), the split (training), the range ([0, 1]) and the tiling of labkit's standard are the
course's code's; only what happens inside the course's `fid_score` is open. (Not a protocol matter but a
training one: the course's loader keeps the last short batch and reshuffles every epoch; an earlier version
of this note said its `itertools.cycle` replays the first epoch, which is wrong for these copies.)

## Pipelines checked, not measured

- No resize to 299: pytorch-fid's `InceptionV3(resize_input=False)` cannot run on 28x28 or 32x32 images
  (`RuntimeError: Calculated padded input size per channel: (1 x 1). Kernel size: (3 x 3). Kernel size
  can't be greater than actual input size`). Ruled out.
- Grey converted with PIL's `convert('RGB')` instead of tiled: the same tensors (`torch.equal` on the first
  1000 MNIST training images), so the same FIDs. No difference.
- torchvision's ImageNet Inception weights (`inception_v3(weights="IMAGENET1K_V1")`): not on this machine
  and not downloadable here (URLError). Not measurable here.

## What is compared with what

- labkit's runs are its reference runs (labkit.reference.EXPERIMENTS, the course's settings), seed 2022.
- The course's DCGAN z16/h16 and z100/h16 and MLP numbers are means over 5 seeds (report 000); the
  ablations and the VAEs are single runs (reports 002 and 003). labkit's VAE is labkit's own convolutional
  VAE, not the course's network, so its FIDs compare models as well as protocols.
- The rebalancing rules (D every 2nd step, pause at 0.8) ran at latent 16 / hidden 100 in the course and at
  hidden 16 in labkit's reference: they are not fitted; their ratio to the baseline is shown instead."""


def _fmt(value, digits=1):
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def protocol_name(pipeline, n, measured):
    return f"{pipeline}, N = {n}" + ("" if measured else " (extrapolated)")


def fit_lines(rows, cv):
    lines = ["| protocol | configurations | MAE | Spearman rho | mean abs error / course std | "
             "d_every_2 ratio (course 1.42) | pause_0.8 ratio (course 3.03) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {protocol_name(r['pipeline'], r['n'], r['measured'])} | {r['n_configs']} | {_fmt(r['mae'])} | "
                     f"{_fmt(r['rho'], 2)} | {_fmt(r['mean_abs_z'], 2)} | {_fmt(r['ratios'].get('d_every_2'), 2)} | "
                     f"{_fmt(r['ratios'].get('pause_0.8'), 2)} |")
    return lines


def matrix_lines(table, measured, found):
    """labkit's FID of every configuration under every protocol, the course's number in the header."""
    names = [e.name for e in EXPERIMENTS if e.name in found]
    course = [f"{COURSE[k].mean:.1f}" if k in FITTED else "hidden 100" for k in names]
    lines = ["| protocol | " + " | ".join(f"{k} (course {c})" for k, c in zip(names, course)) + " |",
             "|" + " --- |" * (1 + len(names))]
    for (pipeline, n), values in table.items():
        lines.append(f"| {protocol_name(pipeline, n, measured[pipeline, n])} | "
                     + " | ".join(_fmt(values.get(k)) for k in names) + " |")
    return lines


def within_spread(table, measured, experiment, cv):
    """The protocols under which `experiment` lands within one course std of the course's number, as text."""
    course, spread = COURSE[experiment].mean, course_spread(experiment, cv)
    hits = {}
    for (pipeline, n), values in table.items():
        if abs(values.get(experiment, math.nan) - course) <= spread:
            hits.setdefault(pipeline, []).append(f"{n}" + ("" if measured[pipeline, n] else "*"))
    listed = "; ".join(f"{p} at N = {', '.join(ns)}" for p, ns in hits.items()) or "none"
    return (f"{experiment} (course {course:.1f} ± {spread:.1f}) lands within one course std under: {listed} "
            f"(* extrapolated).")


def verdict(rows, found, table, measured, cv):
    """The verdict, from the best-fitting protocol and the EXPLAINS thresholds; none on fewer than 3 configurations."""
    fitted = [k for k in FITTED if k in found]
    if len(fitted) < 3:
        return ["## Verdict", "", f"None yet: only {len(fitted)} configuration(s) measured ({', '.join(fitted)}); "
                "fitting a protocol to the course's table needs at least 3 (see Missing below). On what was "
                "measured: " + " ".join(within_spread(table, measured, k, cv) for k in fitted)]
    explains = [r for r in rows if r["mean_abs_z"] <= EXPLAINS["mean_abs_z"] and r["rho"] >= EXPLAINS["rho"]]
    best = (explains or rows)[0]
    fit = (f"{protocol_name(best['pipeline'], best['n'], best['measured'])}: MAE {best['mae']:.1f}, Spearman rho "
           f"{best['rho']:.2f}, mean error {best['mean_abs_z']:.1f} course std over {best['n_configs']} configurations")
    if explains:
        text = f"The course's numbers are best explained by {fit}."
    else:
        text = (f"No protocol tried explains the course's numbers (none is within the course's seed-to-seed std on "
                f"average with Spearman rho >= {EXPLAINS['rho']}). Best fit: {fit}.")
    return ["## Verdict", "", text]


def reference_table_fit(cv):
    """labkit's standard protocol (3000 vs 3000) over the whole table, from labkit's shipped reference results
    (bench/reference_results.md: 3 seeds of the DCGANs and the MLP, 1 of the others)."""
    from labkit.reference import load

    ref = {k: row["fid_mean"] for k, row in load().items() if k in FITTED}
    if len(ref) < 3:
        return []
    fit = fit_to_course(ref, {k: COURSE[k].mean for k in ref}, {k: course_spread(k, cv) for k in ref})
    return ["## labkit's standard protocol over the whole table", "",
            f"From labkit's reference results (bench/reference_results.md: pytorch-fid, 3000 training images vs "
            f"3000 samples, both in [0, 1]; 3 seeds of the DCGANs and the MLP, 1 of the others), over "
            f"{fit['n_configs']} configurations: MAE {fit['mae']:.1f}, Spearman rho {fit['rho']:.2f}, mean error "
            f"{fit['mean_abs_z']:.1f} course std."]


def write_report(path, rows, cv, table, measured, found, missing, header):
    """bench/course_protocol.md: the verdict, what is known, the fit table and labkit's FIDs under every protocol."""
    lines = [*header, "", PIPELINE_FINDING, *verdict(rows, found, table, measured, cv), "", KNOWN, "",
             *reference_table_fit(cv), "",
             "## Fit of each protocol to the course's table", "",
             f"Sorted by mean absolute error (MAE) against the course's numbers over the configurations fitted "
             f"({', '.join(k for k in FITTED if k in found)}). The error in course std: |labkit - course| divided "
             f"by the course's std over 5 seeds where a report gives one (DCGAN z16/h16 14.3, z100/h16 23.9, MLP 3.5), "
             f"else by {cv:.3f} x the course's number ({cv:.3f}: the median std / mean over the course's 16 "
             f"latent x hidden cells). The rebalancing rules are not fitted (the course ran them at hidden 100, "
             f"labkit at hidden 16): their columns give labkit's ratio rule / baseline (same seed, hidden 16) "
             f"beside the course's (37.1 / 26.1 and 79.1 / 26.1 at hidden 100).", "",
             *fit_lines(rows, cv), "", "## labkit's FID of each configuration under each protocol", "",
             "Means over the configuration's runs; below the number of images computed, each value is the mean "
             "over random subsets; above it, extrapolated.", "", *matrix_lines(table, measured, found)]
    if missing:
        lines += ["", "## Missing (partial results)", "", "Not measured, the run was not finished: "
                  + "; ".join(missing) + "."]
    Path(path).write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=None, help="the reference runs (default: the runs root)")
    parser.add_argument("--cache", type=Path, default=None, help="features (default: <runs>/course_protocol)")
    parser.add_argument("--only", nargs="+", default=None, help="configurations to measure (default: all)")
    parser.add_argument("--train", action="store_true", help="train the reference runs that are missing")
    parser.add_argument("--real", type=int, default=1000, help="real training images (labkit's pipeline)")
    parser.add_argument("--fake", type=int, default=1000, help="generated images per run, in [0, 1] and in [-1, 1]")
    parser.add_argument("--variant", type=int, default=300, help="images per set for the other sources")
    parser.add_argument("--subsets", type=int, default=10, help="random subsets per smaller N")
    parser.add_argument("--counts", type=int, nargs="+", default=list(COUNTS), help="the N of the protocols")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="only these seeds (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the course's; tests)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--note", default="", help="a line for the report's header (e.g. how long the features took)")
    args = parser.parse_args(argv)
    started = time.time()
    runs = args.runs or runs_root()
    names = args.only or list(FITTED) + list(RATIOS)
    found, missing = reference_runs(names, runs, args.train, args.seeds, args.steps)
    counts = dict(train32=args.real, eval01=args.fake, eval_pm1=args.fake, test32=args.variant,
                  train28=args.variant, train32_pm1=args.variant, trainmode01=args.variant)
    cache = FeatureCache(args.cache or runs / "course_protocol")
    print(f"course protocol: {sum(len(v) for v in found.values())} runs on {torch.get_num_threads()} threads, "
          f"{len(missing)} missing; features in {cache.folder}", flush=True)
    table, measured, ratios, checks = measure(found, cache, counts, args.subsets, args.counts)
    if not found:
        print("no finished reference run to measure")
        return 0
    rows, cv = fit_table(table, measured, ratios)
    shown = list(argv if argv is not None else sys.argv[1:])
    if "--note" in shown:  # the note is printed below the command, not in it
        del shown[shown.index("--note"):shown.index("--note") + 2]
    command = "python bench/course_protocol.py " + " ".join(shown)
    header = ["# The course's FID protocol, fitted", "",
              f"Measured with `{command.strip()}` in {(time.time() - started) / 60:.0f} min on "
              f"{torch.get_num_threads()} CPU threads (features cached: a rerun takes minutes). Features: "
              f"{counts['train32']} real training images, {counts['eval01']} generated images per run in [0, 1] "
              f"and in [-1, 1], {args.variant} per set for the other sources (28x28, test split, real in [-1, 1], "
              f"G in training mode); N above that is extrapolated with FID(N) = FID_inf + k / N, fitted to the "
              f"measured N >= 100; smaller N are means over {args.subsets} random subsets.", "",
              "How far to trust the extrapolation (labkit's pipeline, fitted on the counts up to a third of the "
              "largest measured one, compared with the measurement there): " + "; ".join(
                  f"{e} seed {s}: N = {c[0]}, extrapolated {c[1]:.1f}, measured {c[2]:.1f}"
                  for (e, s), c in checks.items() if c) + "."] + (["", args.note] if args.note else [])
    write_report(args.out, rows, cv, table, measured, found, missing, header)
    results = dict(table={f"{p} N={n}": v for (p, n), v in table.items()}, fit=rows, missing=missing)
    (cache.folder / "results.json").write_text(json.dumps(results, indent=1))
    print(Path(args.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
