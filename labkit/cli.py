"""The `labkit` command: train, sample and measure from the shell.

    labkit train                       # the course default, into the runs root
    labkit train --latent_dim 100 --generator_hidden_dim 64 --seed 2023
    labkit sample --run runs/dcgan_z16_g16_d16_steps5000_seed2022
    labkit fid --run runs/dcgan_z16_g16_d16_steps5000_seed2022

The training flags keep the course's spelling (`--latent_dim`,
`--num_training_steps`, ...), so the course's commands work as they were.
Runs go to the runs root the notebooks use (labkit/runs/folder.py: LABKIT_RUNS, else
runs/ in the lab folder), named by their settings.

Bad input ends with one line on stderr, `labkit: error: ...`, and exit status
2, before anything is written; a run that diverges ends with exit status 1,
Ctrl-C with 130. Nothing a user had is overwritten.

This module reads the flags; labkit/commands.py does the work. Only the
standard library (and labkit/runs/config.py, which needs nothing more) is
imported at the top of this module, so that Ctrl-C during the slow imports
(torch, in labkit/commands.py) is also answered with one line.
"""

import argparse
import errno
import getpass
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from .runs.config import MAX_SAMPLES, PIPELINES, TrainConfig, VAEConfig  # the flags' defaults; the standard library only, like this module

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 1
EXIT_INTERRUPTED = 130


PIPELINE_HELP = ("how MNIST's 28x28 digits become 32x32: pad (labkit's Pad(2)) or resize (the course's "
                 "Resize(32)); a run setting, in its name when not pad")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other labkit error."""

    def error(self, message):
        print(f"labkit: error: {message} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _add_train_flags(parser, grid=False):
    """The training flags; grid=True leaves out those a sweep's grid sets (sizes and seed)."""
    defaults = TrainConfig()
    course = parser.add_argument_group("the course's flags")
    meaning = dict(latent_dim="size of the noise z", generator_hidden_dim="width h of G (channels 4h, 2h, h)",
                   discriminator_hidden_dim="width h of D (channels h, 2h, 4h)", batch_size="images per step",
                   num_training_steps="steps in all (part of the run's name; `labkit extend` trains a run on)",
                   logging_steps="log to history.csv and TensorBoard every so many steps",
                   saving_steps="checkpoint and sample grid every so many steps")
    if grid:
        for name in ("latent_dim", "generator_hidden_dim", "discriminator_hidden_dim"):
            del meaning[name]
    for name, text in meaning.items():
        course.add_argument(f"--{name}", type=int, default=getattr(defaults, name),
                            help=f"{text} (default: %(default)s)")
    course.add_argument("--learning_rate", type=float, default=defaults.learning_rate,
                        help="Adam's learning rate for G and D (default: %(default)s)")
    course.add_argument("--beta1", type=float, default=defaults.beta1, help="Adam's beta1 (default: %(default)s)")
    course.add_argument("--use_mlp", action="store_true", help="the MLP GAN instead of the DCGAN")
    course.add_argument("--no_cuda", action="store_true", help="train on the CPU even if a GPU is present")
    more = parser.add_argument_group("labkit's additions")
    if not grid:
        more.add_argument("--seed", type=int, default=defaults.seed, help="(default: %(default)s)")
    more.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA if present)")
    more.add_argument("--pipeline", choices=PIPELINES, default=defaults.pipeline,
                      help=PIPELINE_HELP + " (default: %(default)s)")
    more.add_argument("--quiet", action="store_true", help="no progress bar")
    rebalance = parser.add_argument_group("rebalancing D and G")
    rebalance.add_argument("--d_every", type=int, default=1, help="update D only on every k-th step")
    rebalance.add_argument("--d_pause_ratio", type=float, default=0.0,
                           help="skip D's update while loss_D / loss_G < this (e.g. 0.8; 0 = off)")
    rebalance.add_argument("--generator_learning_rate", type=float, default=None)
    rebalance.add_argument("--discriminator_learning_rate", type=float, default=None)
    ablation = parser.add_argument_group("ablations")
    ablation.add_argument("--discriminator_activation", choices=["leaky_relu", "relu"], default="leaky_relu")
    ablation.add_argument("--no_batch_norm", action="store_true", help="remove BatchNorm from the DCGAN")
    ablation.add_argument("--no_discriminator_bias", action="store_true",
                          help="the DCGAN's D without biases, as the course's GAN.py gives it")
    ablation.add_argument("--mlp_discriminator_batch_norm", action="store_true",
                          help="BatchNorm in the MLP discriminator (the students' failure)")


def _train_parser(p):
    _add_train_flags(p)
    p.add_argument("--out", type=Path, default=None,
                   help="run folder (default: <runs root>/<name from the settings>); rerunning resumes it")
    return "train"


def _extend_parser(p):
    p.add_argument("--run", type=Path, required=True, help="the run folder to continue")
    p.add_argument("--num_training_steps", type=int, required=True, help="the new run's steps in all")
    p.add_argument("--quiet", action="store_true")
    return "extend"


def _sample_parser(p):
    p.add_argument("--run", type=Path, required=True, help="the run folder")
    p.add_argument("--count", type=int, default=64, help=f"images, 1 to {MAX_SAMPLES:,} (default: %(default)s)")
    p.add_argument("--nrow", type=int, default=8, help="images per row")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise, 0 to 4,294,967,295")
    p.add_argument("--out", type=Path, default=None, help="PNG file (default: in the run's samples/)")
    p.add_argument("--force", action="store_true", help="replace the file --out names if it exists")
    return "sample"


def _fid_parser(p):
    p.add_argument("--run", type=Path, required=True, help="the run folder")
    p.add_argument("--count", type=int, default=3000, help="samples, and real training images (3000)")
    p.add_argument("--backbone", choices=["inception", "mnist"], default="inception",
                   help="inception: Inception FID (pytorch-fid); mnist: MNIST-FID, fast on a CPU, another scale")
    p.add_argument("--pipeline", choices=PIPELINES, default=None,
                   help="the real images' pipeline: pad or resize (default: the run's own, the one it learnt)")
    p.add_argument("--no_cuda", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return "fid"


def _sweep_parser(p):
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
    p.add_argument("--out", type=Path, default=None,
                   help="folder for runs.csv and summary.csv (default: <runs root>/sweeps/<sweep name>)")
    _add_train_flags(p, grid=True)
    return "sweep"


def _train_vae_parser(p):
    vae_defaults = VAEConfig()
    for name in ("latent_dim", "batch_size", "num_training_steps", "logging_steps", "saving_steps", "seed"):
        p.add_argument(f"--{name}", type=int, default=getattr(vae_defaults, name))
    p.add_argument("--learning_rate", type=float, default=vae_defaults.learning_rate)
    p.add_argument("--pipeline", choices=PIPELINES, default=vae_defaults.pipeline,
                   help=PIPELINE_HELP + " (default: %(default)s)")
    p.add_argument("--no_cuda", action="store_true")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=None, help="run folder (default: <runs root>/<name>)")
    p.add_argument("--quiet", action="store_true")
    return "train_vae"


def _train_classifier_parser(p):
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None, help="default: labkit/assets/digit_classifier.pt")
    p.add_argument("--force", action="store_true", help="replace the file --out names if it exists")
    return "train_classifier"


def _assignment_parser(p):
    actions = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    r = actions.add_parser("release", help="write the student notebooks: solutions and hidden checks removed")
    r.add_argument("--out", type=Path, required=True, help="folder to write DIR/notebooks/NN_*.ipynb into")
    r.add_argument("--source", type=Path, default=None, help="the instructor's notebooks (default: labkit's)")
    r.add_argument("--force", action="store_true",
                   help="replace the notebooks an earlier release wrote in --out (never any other file)")
    g = actions.add_parser("grade", help="grade a student's folder, or a folder of students' folders")
    g.add_argument("submission", type=Path, help="a student's folder (NN_*.ipynb or notebooks/NN_*.ipynb), or a "
                                                 "folder with one such folder per student")
    g.add_argument("--out", type=Path, required=True, help="report folder: gradebook.csv (a class) or grades.csv "
                                                           "(one student), feedback, grading.log")
    g.add_argument("--source", type=Path, default=None, help="the instructor's notebooks (default: labkit's)")
    g.add_argument("--timeout", type=float, default=120,
                   help="CPU seconds each exercise's code may use before it scores 0 (default: %(default)g)")
    g.add_argument("--process-box", action="store_true",
                   help="without bubblewrap (macOS): run students' code as ordinary processes, with your file "
                        "and network access (docs/grading.md)")
    g.add_argument("--jobs", type=int, default=None, help="students graded at once (default: the CPU cores)")
    _after_grading_parsers(actions)
    return "assignment"


def _after_grading_parsers(actions):
    """collect, review, export: labkit/grading/collect.py, review.py, exports.py (docs/instructors.md)."""
    c = actions.add_parser("collect", help="turn a Canvas or Moodle bulk download into one folder per student")
    c.add_argument("download", type=Path, help="the download's folder (unzipped): files named by student")
    c.add_argument("--out", type=Path, required=True, help="the folder of students' folders to write")
    r = actions.add_parser("review", help="grade the written answers question by question in a local web page")
    r.add_argument("reports", type=Path, help="the report folder `labkit assignment grade` wrote")
    r.add_argument("--grader", default=getpass.getuser(), help="your name, saved with each mark (default: %(default)s)")
    r.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    e = actions.add_parser("export", help="the merged gradebook as an LMS's grade import, feedback and a summary")
    e.add_argument("reports", type=Path, help="the report folder `labkit assignment grade` wrote")
    e.add_argument("--format", choices=("canvas", "moodle", "csv"), default="csv")
    e.add_argument("--deadline", default=None, help="ISO date and time, e.g. 2026-12-01T23:59+01:00 (default: none)")
    e.add_argument("--late-penalty-per-day", type=float, default=0.0,
                   help="percent of the total taken off per day, or part of one, late (default: 0, lateness recorded)")
    e.add_argument("--assignment", default="GAN lab", help="the assignment's column name in the LMS")


COMMANDS = (  # name, help, function that adds its flags and returns the command
    ("train", "train (or resume) a GAN run", _train_parser),
    ("extend", "train a finished run on to more steps, as a new run", _extend_parser),
    ("sample", "write a grid of samples from a run's newest checkpoint", _sample_parser),
    ("fid", "FID of a run's newest checkpoint (labkit's standard protocol)", _fid_parser),
    ("sweep", "a latent x hidden grid over several seeds, with FID", _sweep_parser),
    ("train-vae", "train (or resume) a VAE run", _train_vae_parser),
    ("train-classifier", "retrain the digit classifier labkit ships", _train_classifier_parser),
    ("assignment", "the student version of the lab, and grading it (instructors)", _assignment_parser),
)


def build_parser():
    parser = Parser(prog="labkit", description="A GAN course lab on MNIST.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, text, add_flags in COMMANDS:
        p = commands.add_parser(name, help=text)
        p.set_defaults(command_function=add_flags(p))
    return parser


def describe_os_error(err):
    """One line for an error of the operating system (a full disk, a read-only folder)."""
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    if err.errno == errno.ENOSPC:
        return (f"the disk is full{where}; free some space, then run the same command again "
                f"(a training run resumes from its last checkpoint)")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where}: {err.strerror.lower()}; choose a folder you can write to"
    return f"{err.strerror or err}{where}"


@contextmanager
def ctrl_c_held_back():
    """Inside the block Ctrl-C is only noted; it is raised as KeyboardInterrupt when the block ends.

    For the slow imports (torch, seconds): raised in the middle of them, a
    KeyboardInterrupt can land in third-party code that swallows it (CI once
    saw a Ctrl-C lost there, and the run trained to its end).
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread receives signals
        yield
        return
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda *_: pressed.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def tensorboard_errors_said_once(hook=None):
    """A threading.excepthook that leaves out TensorBoard's writer thread's OSError (a full disk).

    TensorBoard writes event files in a background thread; when a write fails there,
    the thread stores the error, which the main thread's next add_scalar or flush
    raises again (and labkit reports in one line), and then the thread dies with a
    traceback on stderr. Seen on a real full disk (tests/test_faults.py). Any other
    exception in any thread goes to `hook` (default: Python's own)."""
    hook = hook or threading.excepthook

    def excepthook(args):
        if type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError):
            return
        hook(args)

    return excepthook


def main(argv=None):
    previous = threading.excepthook
    threading.excepthook = tensorboard_errors_said_once(previous)
    try:
        return _main(argv)
    finally:
        threading.excepthook = previous


def _main(argv):
    try:
        with ctrl_c_held_back():
            # Imported here, not at the top: torch and its company take about 5 s to import (2-core machine,
            # `labkit --help`), and a Ctrl-C meanwhile must be answered in one line, not a traceback.
            from . import commands

        try:
            args = build_parser().parse_args(argv)
        except SystemExit as stop:  # --help, or a usage error already reported in one line
            return stop.code
        try:
            status = getattr(commands, args.command_function)(args)
        except commands.BAD_INPUT as err:
            text = describe_os_error(err) if isinstance(err, PermissionError) and err.errno else str(err)
            print(f"labkit: error: {text}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except commands.TrainingDiverged as err:
            print(f"labkit: {err}", file=sys.stderr)
            return EXIT_DIVERGED
        except OSError as err:
            print(f"labkit: error: {describe_os_error(err)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except MemoryError:
            print("labkit: error: out of memory; try a smaller size or batch", file=sys.stderr)
            return EXIT_BAD_INPUT
        except RuntimeError as err:  # torch.OutOfMemoryError (CUDA) and the CPU allocator's error are RuntimeErrors
            if not any(text in str(err).lower() for text in ("out of memory", "can't allocate memory")):
                raise
            print("labkit: error: out of memory; try a smaller --batch_size or hidden size", file=sys.stderr)
            return EXIT_BAD_INPUT
    except KeyboardInterrupt as err:  # a run stopped at a checkpoint (TrainingStopped) says its own line
        said = str(err) if str(err).startswith("labkit: ") else \
            "labkit: interrupted; run the same command again to resume from the last checkpoint"
        print(said, file=sys.stderr)
        return EXIT_INTERRUPTED
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
