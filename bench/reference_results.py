"""labkit's own numbers for the course's experiments, at the course's settings.

Trains every experiment of labkit.reference.EXPERIMENTS (on a GPU: the course's
whole latent x hidden grid too) at the course's settings (5000 steps, batch 64,
Adam 2e-4 / 0.5; the VAE 25,000 steps, batch 32, lr 1e-3), measures each run
with labkit's standard Inception FID (pytorch-fid, 3000 real training images vs
3000 samples, the count in the course's main.py; the reports do not state their
protocol: bench/course_protocol.md) and with MNIST-FID (10,000 vs 10,000),
counts the digits of 10,000 samples, and writes

    labkit/assets/reference_results.csv   one row per experiment (shipped: the notebooks read it)
    bench/reference_results.md            the same as a table beside the course's numbers

Resumable: every run lives in its own run folder (under --runs) and keeps its
measurements in reference.json; rerunning skips what is done and resumes
what is not. The CSV is rewritten after every run, so a partial run already
gives partial results.

    python bench/reference_results.py                 # CPU: about 3 hours on 2 cores
    python bench/reference_results.py --grid course   # the course's 16 x 5 grid as well (meant for a GPU)
    LABKIT_RUNS=/big/disk python bench/reference_results.py
    python bench/reference_results.py --pipeline resize --only dcgan_z16_h16 --seeds 2022
    python bench/reference_results.py --pipeline resize --no-discriminator-bias   # the course's own setting

--pipeline resize trains on the course's data pipeline (Resize(32) where labkit
pads: issue 30) and measures every FID against resized real images; its runs
are named with _resize and its tables are the *_resize files beside the
others, so the two pipelines' results never mix. The digit classifier behind
MNIST-FID and the digit counts learnt padded digits: under resize those two
columns are on another footing, and only the Inception FID compares with the
course's numbers.

--no-discriminator-bias trains every DCGAN with the course's discriminator, which
has no biases (its GAN.py: `bias=False`; TrainConfig.discriminator_bias), the
difference bench/course_pieces.md found to double the FID on resized digits. With
--pipeline resize that is the course's setting as a whole; its tables are the
*_resize_dnobias files. The MLP GAN and the VAE have no such discriminator: their
runs are the same as without the flag (the same run folders, measured once).
"""

import argparse
import math
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from labkit import analysis, metrics
from labkit.models import sample_images
from labkit.reference import (COLUMNS, COURSE, EXPERIMENTS, INCEPTION_PROTOCOL, MNIST_PROTOCOL, REFERENCE_CSV,
                              VARIANTS, course_grid_experiments, load)
from labkit.runs.atomic import read_json, write_json
from labkit.runs.config import PIPELINES
from labkit.runs.device import resolve_device
from labkit.runs.folder import runs_root
from labkit.gan import train, TrainConfig
from labkit.vae import train_vae, VAEConfig

sys.path.insert(0, str(Path(__file__).parent))
from course_protocol import FITTED, course_spread, fit_to_course, grid_cv  # noqa: E402  (one fit, two tables)

MARKDOWN = Path(__file__).with_suffix(".md")


def variant(pipeline, discriminator_bias=True):
    """A table's tag: the pipeline, and `dnobias` for the course's bias-free discriminator, e.g. resize_dnobias."""
    return pipeline + ("" if discriminator_bias else "_dnobias")


def describe_variant(tag):
    """A tag as the tables say it: 'resize_dnobias' -> 'resize, D without bias (the course's)'."""
    return tag.replace("_dnobias", ", D without bias (the course's)")


def outputs(pipeline, discriminator_bias=True):
    """(CSV, markdown) of a variant's results: labkit's shipped table for pad, *_resize etc. beside it."""
    tag = variant(pipeline, discriminator_bias)
    if tag == "pad":
        return REFERENCE_CSV, MARKDOWN
    return (REFERENCE_CSV.with_name(f"{REFERENCE_CSV.stem}_{tag}.csv"),
            MARKDOWN.with_name(f"{MARKDOWN.stem}_{tag}.md"))


def measure(generator, device, pipeline="pad"):
    """The reference measurements of one generator (or VAE decoder), against real images of `pipeline`."""
    started = time.time()
    inception = metrics.generator_fid(generator, 3000, "inception", pipeline=pipeline)
    mnist = metrics.generator_fid(generator, 10000, "mnist", pipeline=pipeline)
    counts = analysis.count_digits(sample_images(generator, 10000, seed=1))
    return dict(fid=inception.value, mnist_fid=mnist.value, unsure_share=counts.unsure / counts.total,
                entropy_bits=counts.entropy_bits, counts=counts.counts.tolist(),
                measure_minutes=(time.time() - started) / 60)


def run_experiment(experiment, device, runs, pipeline="pad", discriminator_bias=True):
    """Train and measure every seed of `experiment` on `pipeline`'s data; its per-run results."""
    results = []
    for seed in experiment.seeds:
        if experiment.kind == "gan":
            config = TrainConfig(**experiment.settings, seed=seed, device=str(device), pipeline=pipeline,
                                 discriminator_bias=discriminator_bias)
        else:
            config = VAEConfig(**experiment.settings, seed=seed, device=str(device), pipeline=pipeline)
        run_dir = runs / config.name
        done = run_dir / "reference.json"
        if done.is_file():
            results.append(read_json(done))
            continue
        print(f"== {experiment.name}, seed {seed}: {run_dir}", flush=True)
        started = time.time()
        if experiment.kind == "gan":
            generator = train(config, run_dir, progress=False).generator
        else:
            generator = train_vae(config, run_dir, progress=False).vae.decoder
        train_minutes = (time.time() - started) / 60
        result = dict(seed=seed, run=str(run_dir), train_minutes=train_minutes,
                      **measure(generator, device, pipeline))
        write_json(done, result)
        print(f"   FID {result['fid']:.1f}, MNIST-FID {result['mnist_fid']:.2f}, unsure "
              f"{result['unsure_share']:.1%}, {train_minutes:.1f} + {result['measure_minutes']:.1f} min", flush=True)
        results.append(result)
    return results


def summarise(experiment, results, device, tag="pad"):
    fids = np.array([r["fid"] for r in results])
    mnist = np.array([r["mnist_fid"] for r in results])
    std = (lambda a: float(a.std(ddof=1)) if len(a) > 1 else math.nan)
    return dict(
        experiment=experiment.name, title=experiment.title, seeds=" ".join(str(r["seed"]) for r in results),
        runs=len(results), fid_mean=round(float(fids.mean()), 2), fid_std=round(std(fids), 2),
        fid_best=round(float(fids.min()), 2), fid_protocol=protocol(INCEPTION_PROTOCOL, tag),
        mnist_fid_mean=round(float(mnist.mean()), 3), mnist_fid_std=round(std(mnist), 3),
        mnist_fid_protocol=protocol(MNIST_PROTOCOL, tag),
        unsure_share=round(float(np.mean([r["unsure_share"] for r in results])), 4),
        entropy_bits=round(float(np.mean([r["entropy_bits"] for r in results])), 3),
        train_minutes=round(float(np.mean([r["train_minutes"] for r in results])), 1),
        measure_minutes=round(float(np.mean([r["measure_minutes"] for r in results])), 1),
        device=describe(device), torch=torch.__version__)


def describe(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:  # e.g. "AMD EPYC" on Linux
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name} CPU, {torch.get_num_threads()} threads"


def protocol(text, tag):
    """A protocol's description, with the real images' pipeline where it is not labkit's Pad(2)."""
    pipeline, _, rest = tag.partition("_")
    return (text if pipeline == "pad" else f"{text}, {pipeline} pipeline (runs and reals)") + \
        (", D without bias (the course's)" if rest else "")


def write_outputs(rows, path, markdown=MARKDOWN, tag="pad"):
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    said = describe_variant(tag)
    lines = ["| experiment | course (Inception FID; course: Resize(32)) | labkit Inception FID "
             f"({said}) | labkit MNIST-FID ({said}) | unsure digits | minutes to train (one run) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        course = COURSE.get(r["experiment"])
        fid = f"{r['fid_mean']:.1f}" + ("" if math.isnan(r["fid_std"]) else f" ± {r['fid_std']:.1f}") + \
            (f" (best {r['fid_best']:.1f}), {r['runs']} seeds" if r["runs"] > 1 else ", 1 seed")
        mnist = f"{r['mnist_fid_mean']:.2f}" + ("" if math.isnan(r["mnist_fid_std"]) else f" ± {r['mnist_fid_std']:.2f}")
        lines.append(f"| {r['title']} | {course.text if course else '-'} | {fid} | {mnist} | "
                     f"{r['unsure_share']:.1%} | {r['train_minutes']:.1f} |")
    markdown.write_text("\n".join(lines + fit_lines(rows, tag)) + "\n")


def fit_lines(rows, tag):
    """The fit of this table to the course's, beside the other variants' tables on the same configurations.

    Over the configurations bench/course_protocol.py fits (the rebalancing rules are left out: the course ran
    them at hidden 100): MAE, Spearman rho, the error in units of the course's seed-to-seed std, and how many
    configurations land within that std of the course's number."""
    shown = {r["experiment"]: r["fid_mean"] for r in rows if r["experiment"] in FITTED}
    if not shown:
        return []
    cv = grid_cv()
    course = {k: COURSE[k].mean for k in shown}
    spread = {k: course_spread(k, cv) for k in shown}
    lines = ["", f"Fit to the course's table over {len(shown)} configurations ({', '.join(sorted(shown))}); "
             "a configuration is within the spread when |labkit - course| <= the course's seed-to-seed std "
             f"(its 5-seed std where a report gives one, else {cv:.3f} x its number):", "",
             "| pipeline | MAE | Spearman rho | mean error / course std | within the spread |", "| --- | --- | --- | --- | --- |"]
    for name, values in [(describe_variant(tag), shown)] + other_variants(tag, shown):
        fit = fit_to_course(values, course, spread)
        within = sum(abs(values[k] - course[k]) <= spread[k] for k in values)
        lines.append(f"| {name} | {fit['mae']:.1f} | {fit['rho']:.2f} | {fit['mean_abs_z']:.1f} | "
                     f"{within} of {len(values)} |")
    return lines


def other_variants(tag, shown):
    """[(label, {experiment: FID})] of the other variants' tables that have every configuration of `shown`."""
    found = []
    for other, (path, _) in VARIANTS.items():  # the shipped tables (labkit/reference.py)
        values = {name: row["fid_mean"] for name, row in load(path).items() if name in shown}
        if other != tag and len(values) == len(shown):
            found.append((describe_variant(other) + (" (labkit's shipped table)" if other == "pad" else ""), values))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", choices=["auto", "cpu", "course"], default="auto",
                        help="cpu: the experiments a 2-core CPU finishes in about 3 hours; course: plus the course's "
                             "16 x 5 DCGAN grid (auto: course on a GPU, cpu otherwise)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=Path, default=None, help="where the runs go (default: the runs root)")
    parser.add_argument("--only", nargs="+", default=None, help="experiment names to run (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="only these of each experiment's seeds (default: all of them)")
    parser.add_argument("--pipeline", choices=PIPELINES, default="pad",
                        help="pad (labkit's Pad(2)) or resize (the course's Resize(32)); runs and FID reals alike")
    parser.add_argument("--no-discriminator-bias", dest="discriminator_bias", action="store_false",
                        help="the DCGANs' discriminator without biases, as the course's (its tables: *_dnobias)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the CSV (default: labkit/assets/reference_results.csv, *_resize.csv for resize)")
    args = parser.parse_args(argv)
    tag = variant(args.pipeline, args.discriminator_bias)
    csv_path, markdown = outputs(args.pipeline, args.discriminator_bias)
    csv_path = args.out or csv_path

    device = resolve_device(args.device)
    grid = args.grid if args.grid != "auto" else ("course" if device.type == "cuda" else "cpu")
    experiments = list(EXPERIMENTS)
    if grid == "course":
        names = {e.name for e in experiments}
        experiments = [e for e in course_grid_experiments() if e.name not in names] + experiments
        experiments = [replace(e, seeds=(2022, 2023, 2024, 2025, 2026)) if e.kind == "gan" else e
                       for e in experiments]
    if args.only:
        experiments = [e for e in experiments if e.name in args.only]
    if args.seeds:
        experiments = [replace(e, seeds=tuple(s for s in e.seeds if s in args.seeds)) for e in experiments]
        experiments = [e for e in experiments if e.seeds]
    runs = args.runs or runs_root()
    print(f"reference results ({describe_variant(tag)}): {len(experiments)} experiments on {describe(device)}, "
          f"runs in {runs}", flush=True)
    started = time.time()
    rows = {name: row for name, row in load(csv_path).items()}  # other experiments' rows are kept
    for experiment in experiments:
        results = run_experiment(experiment, device, runs, args.pipeline, args.discriminator_bias)
        rows[experiment.name] = summarise(experiment, results, device, tag)
        write_outputs(list(rows.values()), csv_path, markdown, tag)
    print(f"done in {(time.time() - started) / 60:.0f} min: {csv_path}, {markdown}")
    print(markdown.read_text())


if __name__ == "__main__":
    sys.exit(main())
