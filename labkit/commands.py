"""What each `labkit` command does, once labkit/cli.py has read its flags.

One function per command, named as the command is (train-vae: train_vae); each
takes the parsed flags. Every error a user can cause is one of BAD_INPUT, which
the command line reports in one line with exit status 2.
"""

from dataclasses import fields

from torchvision.utils import save_image

from .classifier import ASSET, train_classifier as fit_classifier
from .data import DatasetNotFoundError, to_unit_range
from .experiments.sweep import format_table, parse_shard, sweep as run_sweep
from .gan import extend as extend_run, load_run, train as train_gan
from .metrics import WeightsNotFoundError, generator_fid
from .models import sample_images
from .runs.atomic import atomic_path
from .runs.checkpoints import CheckpointError, checkpoints
from .runs.config import MAX_SAMPLES, TrainConfig, VAEConfig, check_seed
from .runs.device import resolve_device
from .runs.folder import RunInUseError, TrainingDiverged, check_writable  # noqa: F401 (TrainingDiverged: cli.py)
from .runs.targets import output_file, refuse_link
from .vae import train_vae as fit_vae

BAD_INPUT = (ValueError, FileNotFoundError, CheckpointError, DatasetNotFoundError, WeightsNotFoundError,
             RunInUseError, PermissionError)  # a user's mistake: one line, exit status 2


def device_name(args):
    return "cpu" if getattr(args, "no_cuda", False) else (args.device or "auto")


def train_config(args):
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values["batch_norm"] = not args.no_batch_norm
    values["discriminator_bias"] = not args.no_discriminator_bias
    values["device"] = device_name(args)
    resolve_device(values["device"])  # a bad --device is bad input: say so before anything else
    return TrainConfig(**values)


def train(args):
    train_gan(train_config(args), args.out, progress=not args.quiet)


def extend(args):
    extend_run(args.run, args.num_training_steps, progress=not args.quiet)


def png_path(args):
    """The image `sample --out` names, checked before anything is read or written (targets.output_file)."""
    path = args.out
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg") and not path.is_dir():
        raise ValueError(f"--out must be an image file ending in .png or .jpg, got {path}")
    inputs = [args.run / "config.json", args.run / "history.csv", *checkpoints(args.run)]  # what sample reads
    output_file(path, inputs=inputs, overwrite=args.force, example="samples.png")
    check_writable(path.parent)
    return path


def sample(args):
    if not 1 <= args.count <= MAX_SAMPLES:
        raise ValueError(f"--count must be from 1 to {MAX_SAMPLES:,} images, got {args.count}")
    if args.nrow < 1:
        raise ValueError(f"--nrow must be at least 1 (images per row), got {args.nrow}")
    check_seed(args.seed)  # the noise generator's range: one line, not "Overflow when unpacking long long"
    out = png_path(args) if args.out else None
    run = load_run(args.run)
    if out is None:  # labkit's own kind of file in the run's own samples/ folder: replaced freely
        refuse_link(run.path / "samples")
        out = output_file(run.path / "samples" / f"sample-step-{run.step:06d}-seed{args.seed}.png", owned=True)
    check_writable(out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, out.suffix) as tmp:
        save_image(to_unit_range(sample_images(run.generator, args.count, seed=args.seed)), tmp, nrow=args.nrow)
    print(out)


def fid(args):
    if not 2 <= args.count <= 60_000:
        raise ValueError(f"--count must be from 2 to 60,000 images, got {args.count}")
    device = resolve_device("cpu" if args.no_cuda else "auto")
    run = load_run(args.run, device=device)
    result = generator_fid(run.generator, args.count, args.backbone, progress=not args.quiet,
                           pipeline=args.pipeline or run.config.pipeline)
    print(f"{run.path} (step {run.step}): {result}")


def train_classifier(args):
    if args.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {args.epochs}")
    check_seed(args.seed)
    out = args.out or ASSET
    # The weights labkit ships are its own file, retrained in place; any other existing file needs --force.
    output_file(out, overwrite=args.force, owned=out.resolve() == ASSET.resolve(), example="digit_classifier.pt")
    check_writable(out.parent)
    fit_classifier(epochs=args.epochs, seed=args.seed, device=resolve_device(args.device), out=out)


def train_vae(args):
    values = {f: getattr(args, f) for f in ("latent_dim", "batch_size", "num_training_steps", "learning_rate",
                                            "logging_steps", "saving_steps", "seed", "pipeline")}
    values["device"] = device_name(args)
    resolve_device(values["device"])
    fit_vae(VAEConfig(**values), args.out, progress=not args.quiet)


def sweep(args):
    base = train_config(args)
    runs, summary = run_sweep(args.latent_dims, args.hidden_dims, args.seeds, None, base,
                          fid_count=args.fid_count, backbone=args.backbone, shard=parse_shard(args.shard),
                          together={"auto": None, "yes": True, "no": False}[args.together],
                          progress=not args.quiet, out_dir=args.out)
    failed = [r for r in runs if r["status"] != "done"]
    backbone = "Inception FID" if args.backbone == "inception" else "MNIST-FID"
    print(f"{backbone} ({args.pipeline}), {args.fid_count} vs {args.fid_count} images: mean ± std (best)")
    print(format_table(summary, args.latent_dims, args.hidden_dims))
    if failed:
        print(f"{len(failed)} run(s) failed; see runs.csv. Rerun the same command to retry them.")


def assignment(args):
    try:
        import nbgrader  # noqa: F401  (the release uses its preprocessors)
    except ImportError:
        raise ValueError("labkit assignment needs nbgrader: install labkit with its dev tools, "
                         "pip install -e \".[dev]\"") from None
    # Imported here, not at the top: grading is the instructor's, and needs nbgrader (checked above).
    from .grading import assignment as notebooks, collect, exports, gradebook, review

    if args.action == "release":
        return notebooks.release(args.out, source=args.source, force=args.force,
                                 check_reference=gradebook.check_reference)
    if args.action == "collect":
        return collect.collect(args.download, args.out)
    if args.action == "review":
        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port must be from 0 to 65535, got {args.port}")
        return review.serve(args.reports, args.grader, args.port)
    if args.action == "export":
        return exports.export(args.reports, args.format, deadline=args.deadline,
                              penalty_per_day=args.late_penalty_per_day, assignment=args.assignment)
    return gradebook.grade(args.submission, args.out, source=args.source, timeout=args.timeout, jobs=args.jobs,
                           process_box=args.process_box)
