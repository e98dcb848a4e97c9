"""The `labkit` command: train, sample and measure from the shell.

    labkit train                       # the course default into runs/
    labkit train --latent_dim 100 --generator_hidden_dim 64 --seed 2023
    labkit sample --run runs/dcgan_z16_g16_d16_seed2022
    labkit fid --run runs/dcgan_z16_g16_d16_seed2022

The training flags keep the course's spelling (`--latent_dim`,
`--num_training_steps`, ...), so the course's commands work as they were.
Bad input ends with one line on stderr and exit status 2; nothing is
overwritten.
"""

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from .checkpoints import CheckpointError
from .data import DatasetNotFoundError
from .metrics import WeightsNotFoundError

EXIT_BAD_INPUT = 2


def _add_train_flags(parser):
    from .train import TrainConfig

    defaults = TrainConfig()
    course = parser.add_argument_group("the course's flags")
    meaning = dict(latent_dim="size of the noise z", generator_hidden_dim="width h of G (channels 4h, 2h, h)",
                   discriminator_hidden_dim="width h of D (channels h, 2h, 4h)", batch_size="images per step",
                   num_training_steps="steps in all (a rerun with more continues the run)",
                   logging_steps="log to history.csv and TensorBoard every so many steps",
                   saving_steps="checkpoint and sample grid every so many steps")
    for name, text in meaning.items():
        course.add_argument(f"--{name}", type=int, default=getattr(defaults, name),
                            help=f"{text} (default: %(default)s)")
    course.add_argument("--learning_rate", type=float, default=defaults.learning_rate,
                        help="Adam's learning rate for G and D (default: %(default)s)")
    course.add_argument("--beta1", type=float, default=defaults.beta1, help="Adam's beta1 (default: %(default)s)")
    course.add_argument("--use_mlp", action="store_true", help="the MLP GAN instead of the DCGAN")
    course.add_argument("--no_cuda", action="store_true", help="train on the CPU even if a GPU is present")
    more = parser.add_argument_group("labkit's additions")
    more.add_argument("--seed", type=int, default=defaults.seed, help="(default: %(default)s)")
    more.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA if present)")
    more.add_argument("--out", type=Path, default=None,
                      help="run folder (default: runs/<model>_z<latent>_g<hidden>_d<hidden>_seed<seed>); "
                           "rerunning with the same folder resumes it")
    more.add_argument("--quiet", action="store_true", help="no progress bar")
    rebalance = parser.add_argument_group("rebalancing D and G (LAB-SPEC 3)")
    rebalance.add_argument("--d_every", type=int, default=1, help="update D only on every k-th step")
    rebalance.add_argument("--d_pause_ratio", type=float, default=0.0,
                           help="skip D's update while loss_D / loss_G < this (e.g. 0.8; 0 = off)")
    rebalance.add_argument("--generator_learning_rate", type=float, default=None)
    rebalance.add_argument("--discriminator_learning_rate", type=float, default=None)
    ablation = parser.add_argument_group("ablations (LAB-SPEC 6, 7)")
    ablation.add_argument("--discriminator_activation", choices=["leaky_relu", "relu"], default="leaky_relu")
    ablation.add_argument("--no_batch_norm", action="store_true", help="remove BatchNorm from the DCGAN")
    ablation.add_argument("--mlp_discriminator_batch_norm", action="store_true",
                          help="BatchNorm in the MLP discriminator (the students' failure)")


def _train_config(args):
    from .train import TrainConfig

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values["batch_norm"] = not args.no_batch_norm
    values["device"] = "cpu" if args.no_cuda else (args.device or "auto")
    return TrainConfig(**values)


def cmd_train(args):
    from .train import train

    train(_train_config(args), args.out, progress=not args.quiet)


def cmd_sample(args):
    from torchvision.utils import save_image

    from .data import to_unit_range
    from .models import sample_images
    from .train import load_run

    run = load_run(args.run)
    if args.count < 1:
        raise ValueError(f"--count must be at least 1, got {args.count}")
    out = args.out or run.path / "samples" / f"sample-step-{run.step:06d}-seed{args.seed}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(to_unit_range(sample_images(run.generator, args.count, seed=args.seed)), out,
               nrow=args.nrow)
    print(out)


def cmd_fid(args):
    from .metrics import generator_fid
    from .train import load_run, resolve_device

    if args.count < 2:
        raise ValueError(f"--count must be at least 2, got {args.count}")
    device = resolve_device("cpu" if args.no_cuda else "auto")
    run = load_run(args.run, device=device)
    result = generator_fid(run.generator, args.count, args.backbone, progress=not args.quiet)
    print(f"{run.path} (step {run.step}): {result}")


def cmd_train_classifier(args):
    from .classifier import ASSET, train_classifier
    from .train import resolve_device

    train_classifier(epochs=args.epochs, seed=args.seed, device=resolve_device(args.device),
                     out=args.out or ASSET)


def cmd_train_vae(args):
    from .vae import VAEConfig, train_vae

    values = {f: getattr(args, f) for f in ("latent_dim", "batch_size", "num_training_steps", "learning_rate",
                                            "logging_steps", "saving_steps", "seed")}
    values["device"] = "cpu" if args.no_cuda else (args.device or "auto")
    train_vae(VAEConfig(**values), args.out, progress=not args.quiet)


def cmd_sweep(args):
    from .sweep import format_table, parse_shard, sweep

    base = _train_config(args)
    runs, summary = sweep(args.latent_dims, args.hidden_dims, args.seeds, args.out or Path("runs/sweep"), base,
                          fid_count=args.fid_count, backbone=args.backbone, shard=parse_shard(args.shard),
                          together={"auto": None, "yes": True, "no": False}[args.together], progress=not args.quiet)
    failed = [r for r in runs if r["status"] != "done"]
    backbone = "Inception FID" if args.backbone == "inception" else "MNIST-FID"
    print(f"{backbone}, {args.fid_count} vs {args.fid_count} images: mean ± std (best)")
    print(format_table(summary, args.latent_dims, args.hidden_dims))
    if failed:
        print(f"{len(failed)} run(s) failed; see runs.csv. Rerun the same command to retry them.")


def build_parser():
    parser = argparse.ArgumentParser(prog="labkit", description="A GAN course lab on MNIST.")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train (or resume) a GAN run")
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("sample", help="write a grid of samples from a run's newest checkpoint")
    p.add_argument("--run", type=Path, required=True, help="the run folder")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--nrow", type=int, default=8, help="images per row")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise")
    p.add_argument("--out", type=Path, default=None, help="PNG file (default: in the run's samples/)")
    p.set_defaults(func=cmd_sample)

    p = commands.add_parser("fid", help="FID of a run's newest checkpoint (the course's protocol)")
    p.add_argument("--run", type=Path, required=True, help="the run folder")
    p.add_argument("--count", type=int, default=3000, help="samples, and real training images (3000)")
    p.add_argument("--backbone", choices=["inception", "mnist"], default="inception",
                   help="inception: the course's FID; mnist: MNIST-FID, fast on a CPU, another scale")
    p.add_argument("--no_cuda", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_fid)

    p = commands.add_parser("sweep", help="a latent x hidden grid over several seeds, with FID")
    p.add_argument("--latent_dims", type=int, nargs="+", required=True)
    p.add_argument("--hidden_dims", type=int, nargs="+", required=True, help="hidden size of both G and D")
    p.add_argument("--seeds", type=int, default=5, help="seeds per configuration: 2022, 2023, ...")
    p.add_argument("--fid_count", type=int, default=3000)
    p.add_argument("--backbone", choices=["inception", "mnist"], default="inception")
    p.add_argument("--shard", default="0/1", help="K/N: run the K-th of N equal parts of the grid "
                                                  "(one process per GPU)")
    p.add_argument("--together", choices=["auto", "yes", "no"], default="auto",
                   help="train the seeds of a configuration together as one stacked model; auto: where that "
                        "is faster (on a GPU; on a CPU for DCGANs up to hidden size 32)")
    _add_train_flags(p)
    p.set_defaults(func=cmd_sweep)

    p = commands.add_parser("train-vae", help="train (or resume) a VAE run (LAB-SPEC 8)")
    from .vae import VAEConfig

    vae_defaults = VAEConfig()
    for name in ("latent_dim", "batch_size", "num_training_steps", "logging_steps", "saving_steps", "seed"):
        p.add_argument(f"--{name}", type=int, default=getattr(vae_defaults, name))
    p.add_argument("--learning_rate", type=float, default=vae_defaults.learning_rate)
    p.add_argument("--no_cuda", action="store_true")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/vae_z<latent>_seed<seed>)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train_vae)

    p = commands.add_parser("train-classifier", help="retrain the digit classifier labkit ships")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None, help="default: labkit/assets/digit_classifier.pt")
    p.set_defaults(func=cmd_train_classifier)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .train import TrainingDiverged

    try:
        args.func(args)
    except (ValueError, FileNotFoundError, CheckpointError, DatasetNotFoundError, WeightsNotFoundError) as err:
        print(f"labkit: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDiverged as err:
        print(f"labkit: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("labkit: interrupted; run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
