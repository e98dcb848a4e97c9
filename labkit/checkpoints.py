"""Atomic checkpoint files, and clear errors when one cannot be read.

A checkpoint is written to a temporary file beside its final name and then
renamed over it. A rename within one folder is atomic, so a run killed in the
middle of saving leaves the previous checkpoint intact, never half a file.
"""

import os
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not labkit's."""


def save_atomic(state, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoint_path(run_dir, step):
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}.pt"


def latest_checkpoint(run_dir):
    """The newest checkpoint file of a run, or None if it has none yet."""
    files = sorted((Path(run_dir) / "checkpoints").glob("step-*.pt"))
    return files[-1] if files else None


def remove_older_checkpoints(run_dir, keep):
    """Delete all but `keep`: only the newest is needed to resume or evaluate."""
    for path in (Path(run_dir) / "checkpoints").glob("step-*.pt"):
        if path != Path(keep):
            path.unlink()


def load_checkpoint(path, kind, map_location="cpu"):
    """Read a checkpoint written by labkit, checking that it is of `kind`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(err).__name__}); it is probably "
            f"truncated or corrupt. Delete it to restart the run from scratch."
        ) from None
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a labkit {kind} checkpoint (found {found!r})")
    return state
