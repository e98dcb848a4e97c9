"""labkit's machinery: everything that keeps runs safe and repeatable, apart from the lesson.

The lesson (labkit.data, models, step, train, vae, metrics, classifier,
analysis, plots, checks) imports from here only the names below, through
`from .machinery import ...`; the modules of this package hold the details:

    atomic        files written so that a reader sees the old or the new, never half
    targets       what a command may write: links, its own inputs and others' files refused first
    runs          run folders: identity and names, locks, config.json and history.csv
    checkpoints   the one checkpoint schema, written atomically, read with clear errors
    code          whose code trains a run: labkit's reference pieces or a student's
    together      several seeds trained at once as one stacked model
    sweep         a latent x hidden x seeds grid, resumable, with FID tables
    cli           the `labkit` command
"""

from .atomic import atomic_path
from .checkpoints import (CheckpointError, checkpoint_path, latest_checkpoint, load_checkpoint, load_latest,
                          make_checkpoint, save_atomic)
from .code import LABKIT_GAN, LABKIT_VAE, REFERENCE, GANCode, VAECode, check_code
from .runs import (RunConfig, RunLock, RunWriter, TrainingDiverged, announce, check_checkpoint_config,
                   check_run_folder, check_writable, describe_device, forked_rng, format_value, load_weights,
                   prepare_run_folder, read_config, read_history, resolve_device, runs_root, saved_state,
                   write_config, write_history)

__all__ = ["atomic_path", "CheckpointError", "checkpoint_path", "latest_checkpoint", "load_checkpoint", "load_latest",
           "make_checkpoint", "save_atomic", "LABKIT_GAN", "LABKIT_VAE", "REFERENCE", "GANCode", "VAECode",
           "check_code", "RunConfig", "RunLock", "RunWriter", "TrainingDiverged", "announce",
           "check_checkpoint_config", "check_run_folder", "check_writable", "describe_device", "forked_rng",
           "format_value", "load_weights", "prepare_run_folder", "read_config", "read_history", "resolve_device",
           "runs_root", "saved_state", "write_config", "write_history"]

from .targets import TargetError, output_file  # noqa: E402 (after __all__: the lesson's caches check their files)

__all__ += ["TargetError", "output_file"]
