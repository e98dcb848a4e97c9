"""Checkpoints: one schema for every trainer, written atomically, read with clear errors.

Every labkit checkpoint (GAN, stacked GANs, VAE, digit classifier) is a dict
made by `make_checkpoint`:

    kind        "gan", "vae" or "digit-classifier": what wrote it
    schema      SCHEMA, so that a later labkit can tell old files apart
    step        training steps done
    config      the run's settings (its config's to_dict(), as config.json has them)
    models      {name: state_dict}, e.g. {"generator": ..., "discriminator": ...}
    optimizers  {name: optimizer state_dict}, the same names
    rng         {name: RNG state tensor}: what resuming needs to draw the same numbers
                (given as a torch.Generator, its state is taken)
    counters    {name: number or None}: anything else the loop carries (e.g. d_updates)

Reading one is here too: the newest readable checkpoint of a run
(`load_latest`), checked against the run's settings (`saved_state`,
`check_checkpoint_config`), and weights loaded with a clear error when they
belong to another model (`load_weights`).

A checkpoint is written to a temporary file beside its final name and then
renamed over it. A rename within one folder is atomic, so a run killed in the
middle of saving leaves the previous checkpoint intact, never half a file.
Each run keeps its two newest checkpoints: if the newest is damaged anyway
(a disk that lied about a flush, a copy cut short), `load_latest` says so and
falls back to the one before.
"""

import io
import os
import sys
from pathlib import Path

import torch

from .atomic import atomic_path
from .config import RunConfig, differences
from .folder import read_config

SCHEMA = 2
KEEP = 2  # checkpoints kept per run: the newest, and one to fall back to


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not labkit's."""


def make_checkpoint(kind, step, config, models, optimizers=None, rng=None, counters=None):
    """The one checkpoint layout (see the module docstring)."""
    return {
        "kind": kind,
        "schema": SCHEMA,
        "step": int(step),
        "config": config.to_dict() if isinstance(config, RunConfig) else dict(config),
        "models": {name: model.state_dict() if hasattr(model, "state_dict") else model
                   for name, model in models.items()},
        "optimizers": {name: opt.state_dict() if hasattr(opt, "state_dict") else opt
                       for name, opt in (optimizers or {}).items()},
        "rng": {name: r.get_state() if isinstance(r, torch.Generator) else r for name, r in (rng or {}).items()},
        "counters": dict(counters or {}),
    }


def save_atomic(state, path):
    """torch.save `state` to `path` so that `path` is always either the old file or the new one.

    The checkpoint is serialised in memory first and then written with plain file I/O:
    torch.save writing to a file itself reports a full disk as a RuntimeError ("enforce
    fail at inline_container.cc ... file write failed"), the plain write as the
    OSError(ENOSPC) it is, which the `labkit` command turns into one line. The temporary
    file is removed if anything goes wrong (a full disk, Ctrl-C).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = io.BytesIO()
    torch.save(state, data)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.getbuffer())
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(path, kind, step, config, models, **parts):
    """make_checkpoint(kind, step, config, models, **parts), saved to `path` with save_atomic."""
    save_atomic(make_checkpoint(kind, step, config, models, **parts), path)


def checkpoint_path(run_dir, step):
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}.pt"


def checkpoints(run_dir):
    """A run's checkpoint files, oldest first."""
    return sorted((Path(run_dir) / "checkpoints").glob("step-*.pt"))


def latest_checkpoint(run_dir):
    """The newest checkpoint file of a run, or None if it has none yet."""
    files = checkpoints(run_dir)
    return files[-1] if files else None


def checkpoint_step(path):
    """The step in a checkpoint's file name (step-001000.pt -> 1000)."""
    return int(Path(path).stem.split("-")[1])


def remove_older_checkpoints(run_dir, keep=KEEP):
    """Delete all but the `keep` newest checkpoints of a run."""
    for path in checkpoints(run_dir)[:-keep]:
        path.unlink(missing_ok=True)


def load_checkpoint(path, kind, map_location="cpu"):
    """Read a checkpoint written by labkit, checking that it is of `kind` and of this schema."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(err).__name__}); it is probably "
            f"truncated or corrupt. Delete it to restart the run from the checkpoint before it, or from scratch."
        ) from None
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a labkit {kind} checkpoint (found {found!r})")
    if state.get("schema") != SCHEMA:
        raise CheckpointError(f"{path} was written by another version of labkit (checkpoint schema "
                              f"{state.get('schema', 1)}, this labkit reads {SCHEMA}); train the run again")
    if not (isinstance(state.get("step"), int) and all(isinstance(state.get(k), dict) for k in
                                                        ("config", "models", "optimizers", "rng", "counters"))):
        raise CheckpointError(f"{path} is damaged (its step, config, models, optimizers, rng or counters are "
                              f"missing or of the wrong kind); delete it to restart the run from the checkpoint "
                              f"before it, or from scratch")
    return state


def load_latest(run_dir, kind, map_location="cpu", warn=None):
    """The newest readable checkpoint of a run, or None if it has none.

    If the newest file is damaged, the one before is used and `warn` (default:
    print to stderr) is told which file was skipped. Only if no checkpoint can
    be read does the error of the newest one reach the caller.
    """
    files = checkpoints(run_dir)
    first_error = None
    for path in reversed(files):
        try:
            state = load_checkpoint(path, kind, map_location)
        except CheckpointError as err:
            first_error = first_error or err
            continue
        if first_error is not None:
            message = (f"labkit: warning: {first_error} Using the checkpoint before it, {path.name} "
                       f"(step {state['step']}).")
            (warn or (lambda text: print(text, file=sys.stderr)))(message)
        return state
    if first_error is not None:
        raise first_error
    return None


def saved_state(run_dir, config, kind, device):
    """The newest checkpoint's state of the run in `run_dir`, or None if it is new. Reads only.

    Refuses a folder whose run has other settings (config.json) or whose
    checkpoint was written by another run.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
            raise ValueError(f"{run_dir} has checkpoints but no config.json; it is not a run labkit can resume")
        return None
    saved = read_config(run_dir, type(config))
    changed = differences(saved, config)
    if changed:
        hint = ("to train a finished run on for more steps, extend it (labkit extend, lab.extend); "
                if saved.identity() | {"num_training_steps": 0} == config.identity() | {"num_training_steps": 0}
                else "")
        raise ValueError(f"{run_dir} holds a run with other settings ({changed}); {hint}"
                         f"choose another folder, or leave the folder out to use the run's own")
    state = load_latest(run_dir, kind, map_location=device)
    if state is not None:
        check_checkpoint_config(state, config, run_dir)
    return state


def check_checkpoint_config(state, config, run_dir):
    """Refuse a checkpoint written by a run with other settings than `config` (a file copied in by hand)."""
    try:
        written_by = type(config).from_dict(state["config"]).updated(num_training_steps=config.num_training_steps)
    except (TypeError, ValueError):
        changed = "settings this labkit does not know"
    else:
        changed = differences(written_by, config)
    if changed or state["step"] > config.num_training_steps:
        raise CheckpointError(f"the checkpoint of {run_dir} (step {state['step']}) was written by a run with other "
                              f"settings ({changed or 'more steps'}); delete that folder to train the run again")


def load_weights(model, state_dict, what, run_dir):
    """model.load_state_dict, with a clear error if the weights belong to another model."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        detail = next((line.strip().rstrip(".") for line in str(err).splitlines()
                       if "size mismatch" in line or "Missing key" in line or "Unexpected key" in line),
                      str(err).splitlines()[0])
        raise CheckpointError(f"the {what} in the checkpoint of {run_dir} does not fit the model its settings "
                              f"describe ({detail}); delete that folder to train the run again") from None
