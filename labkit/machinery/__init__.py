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

import importlib

# Each name, and the module it lives in. They are imported on first use (PEP 562), so that importing
# labkit.machinery.cli imports no torch: the `labkit` command answers a Ctrl-C during torch's import
# in one line only if torch is imported inside its main(), after its handler is in place.
_WHERE = {
    "atomic": ["atomic_path"],
    "checkpoints": ["CheckpointError", "checkpoint_path", "latest_checkpoint", "load_checkpoint", "load_latest",
                    "make_checkpoint", "save_atomic"],
    "code": ["LABKIT_GAN", "LABKIT_VAE", "REFERENCE", "GANCode", "VAECode", "check_code"],
    "runs": ["RunConfig", "RunLock", "RunWriter", "TrainingDiverged", "announce", "check_checkpoint_config",
             "check_run_folder", "check_writable", "describe_device", "forked_rng", "format_value", "load_weights",
             "prepare_run_folder", "read_config", "read_history", "resolve_device", "runs_root", "saved_state",
             "write_config", "write_history"],
    "targets": ["TargetError", "output_file"],
}
__all__ = [name for names in _WHERE.values() for name in names]


def __getattr__(name):
    for module, names in _WHERE.items():
        if name in names:
            return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
