"""The training loop's skeleton: everything a trainer does around its step, written once.

labkit's trainers (labkit/gan.py, labkit/vae.py, and labkit/experiments/together.py
for several seeds stacked into one model) differ only in their step. What
surrounds it is here, and every trainer reads the same:

    with training([config], [out_dir], KIND, COLUMNS, data=load_images) as loop:
        if loop.finished:                          # trained before: loaded, nothing written
            return ...loop.saved[0]...
        counters = loop.resume(models, optimizers, rng)   # {} for a new run
        for step in loop.steps():                  # the steps left, under a progress bar
            ...the step...
            loop.check(step, loss_d, loss_g)       # NaN? read only at logging and saving steps
            if loop.logging(step):
                loop.log(row)                      # history.csv, TensorBoard, the bar
            if loop.saving(step):
                loop.save(step, samples, models=..., optimizers=..., rng=..., counters=...)

What `training` does, in this order:
  1. the run folder: `out_dir`, or runs_root() / config.name (the run's identity,
     labkit/runs/folder.py); refused if it is a file or someone else's folder;
  2. the device (config.device) and the run's saved state: its newest readable
     checkpoint, checked against config.json. A finished run is handed back as it
     is (`loop.finished`), and nothing in it is written;
  3. the data, `data(device)`: a missing dataset is reported before anything is written;
  4. the folder is created and locked (one process per run folder), and its state
     read again (another process may have trained it meanwhile);
  5. the caller's global RNG state is restored on exit, however the loop ends;
  6. when the steps begin: config.json (and a student's code.py) written,
     history.csv cut back to the checkpoint the run resumes from, the history and
     TensorBoard writers opened, one line said (training or resuming), a progress bar;
  7. at logging and saving steps, the one wait for the device: the finite-flags of
     the steps since the last check are read, and a run whose loss became NaN or
     infinite stops with TrainingDiverged, which names the step and the last good
     checkpoint. Between them the GPU never waits for the host;
  8. on exit, the bar and the writers are closed; on success, the time is said.

Stopping (labkit/runs/stopping.py): while the steps run, Ctrl-C (Kernel >
Interrupt in Jupyter; also a KeyboardInterrupt raised by `on_log`) asks the
loop to stop. The step in progress ends, `saving` says yes, the trainer saves
as at any checkpoint, and the loop raises TrainingStopped, whose one line
says the step and how to resume. On a CPU, `saving` also says yes once
`checkpoint_minutes` of wall time have passed since the last checkpoint, so
little is lost to a crash or a closed lid. These *interim* checkpoints have
no sample grid, and are deleted at the next regular one (every `saving_steps`
steps), so a run's folder ends the same however often it was stopped.

`together=True` (labkit/experiments/together.py): one run folder per seed, all at
the same step, trained as one stacked model. A seed whose loss or weights turn
NaN stops alone (its entry of `loop.errors`), and the others go on.
"""

import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import save_image

from .atomic import atomic_path, write_atomic
from .checkpoints import (KEEP, CheckpointError, check_checkpoint_config, checkpoint_path, checkpoint_step, checkpoints,
                          latest_checkpoint, load_latest, load_weights, make_checkpoint, save_atomic, saved_state)
from .code import check_code
from .config import format_value
from .device import choose_threads, describe_device, forked_rng, recheck_threads, resolve_device
from .folder import (RunLock, TrainingDiverged, check_run_folder, check_writable, read_config, read_history,
                     runs_root, write_config, write_history)
from .progress import bar as progress_bar, wrapped
from .stopping import StopRequests, TrainingStopped, in_ipython, quiet_in_ipython

DISPLAY_NAMES = {"vae": "VAE"}  # how errors name a checkpoint's model, where not by its key
CPU_CHECKPOINT_MINUTES = 5  # on a CPU, a checkpoint at least this often (in minutes of wall time) by default
RATE_WINDOW_SECONDS = 20  # the step rate is measured over windows this long
RECHECK_SECONDS = 300  # and the CPU's load looked at again this often, or when the rate halves


@contextmanager
def training(configs, out_dirs, kind, columns, *, data, progress=True, **options):
    """Open run folders to train them, in the order the module docstring gives; yields the `Loop`.

    configs, out_dirs: one of each per run (an out_dir of None: runs_root() / config.name).
    kind, columns:     the checkpoint kind ("gan", "vae") and the history's columns.
    data(device):      loads the training data, called only when there is training to do.
    progress:          say what happens, and show a progress bar.
    options:           see `Loop`.
    """
    loop = Loop(configs, out_dirs, kind, columns, progress, **options)
    if loop.finished:
        yield loop
        return
    loop.data = data(loop.device)  # a missing dataset is reported before anything is written
    for run_dir in loop.run_dirs:
        check_writable(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        for run_dir in loop.run_dirs:
            stack.enter_context(RunLock(run_dir))
        loop.read_saved()  # another process may have moved the runs on
        if not loop.finished:
            stack.enter_context(forked_rng(loop.device))
            stack.push(loop)  # Loop.__exit__ closes what the steps opened
        yield loop


def say(text):
    """Print a line; in a notebook wrapped between words (labkit/runs/progress.py), in a terminal as it is."""
    print(wrapped(text) if in_ipython() else text)


@dataclass
class SavedRun:
    """A run as its folder holds it: its settings, its newest checkpoint (None: none yet) and its history."""

    path: Path
    config: object
    state: Optional[dict]
    columns: tuple

    @property
    def step(self):
        return self.state["step"] if self.state else 0

    def history(self):
        """The history rows up to the checkpoint (rows logged after it are redone by a resumed run)."""
        return [row for row in read_history(self.path, self.columns) if row["step"] <= self.step]

    def load(self, **models):
        """Load the checkpoint's weights into each model (name=module), with a clear error if they do not fit."""
        for name, model in models.items():
            load_weights(model, self.state["models"][name], DISPLAY_NAMES.get(name, name), self.path)


class Loop:
    """Run folders being trained, and what a trainer's loop calls (the module docstring shows how).

    Options, given to `training`:
      together:     the runs are seeds of one stacked model (see the module docstring);
      source:       a student's code, saved as code.py beside the run;
      tag(column):  the TensorBoard tag of a history column (default: the column's name);
      show(row):    {name: text} the progress bar shows of a history row;
      on_log:       called with each history row (together: with the seed and the row);
      samples_note: the closing line says where the sample grids are;
      checkpoint_minutes: an interim checkpoint once this many minutes passed since the last one
                    (None: CPU_CHECKPOINT_MINUTES on a CPU, never on a GPU; 0: never). It is no part
                    of the run's identity: it changes where a run can resume, not what it learns.
    """

    def __init__(self, configs, out_dirs, kind, columns, progress, *, together=False, source=None, tag=None,
                 show=None, on_log=None, samples_note=False, checkpoint_minutes=None):
        self.configs, self.kind, self.columns, self.progress = list(configs), kind, columns, progress
        self.run_dirs = [Path(d) if d is not None else runs_root() / c.name for c, d in zip(configs, out_dirs)]
        for run_dir in self.run_dirs:
            check_run_folder(run_dir)
        self.device = resolve_device(self.configs[0].device)
        self.together, self.source, self.tag, self.show, self.on_log = together, source, tag, show, on_log
        self.samples_note = samples_note
        if checkpoint_minutes is None:
            checkpoint_minutes = CPU_CHECKPOINT_MINUTES if self.device.type == "cpu" else 0
        self.checkpoint_seconds = 60 * checkpoint_minutes
        self.stops, self.interim, self.last_saved, self.last_save_time = StopRequests(), None, None, None
        self.threads, self.threads_before, self.rate = None, torch.get_num_threads(), None
        self.end = self.configs[0].num_training_steps
        self.say = say if progress else (lambda *a, **k: None)
        self.errors = [None] * len(self.configs)  # together: the error that stopped each seed
        self.data, self.histories, self.writers, self.flags, self.bar, self.started = None, [], [], [], None, None
        self.read_saved()

    # What the trainer reads

    @property
    def run_dir(self):
        return self.run_dirs[0]

    @property
    def history(self):
        return self.histories[0]

    @property
    def states(self):
        return [saved.state for saved in self.saved]

    @property
    def live(self):
        """The runs still training (all but a stacked seed that diverged)."""
        return [i for i, error in enumerate(self.errors) if error is None]

    def read_saved(self):
        """Read each run's saved state; `finished` says whether every run is done already."""
        self.saved = [SavedRun(d, c, saved_state(d, c, self.kind, self.device), self.columns)
                      for d, c in zip(self.run_dirs, self.configs)]
        self.finished = all(saved.step >= self.end for saved in self.saved)
        if self.finished and not self.together:  # (a sweep says itself what it found)
            self.say(f"labkit: found the finished run {self.run_dir} (step {self.saved[0].step}); loading it")
        steps = sorted({saved.step for saved in self.saved})
        if len(steps) > 1 and not self.finished:
            raise ValueError(f"runs to train together must be at the same step; these are at {steps}")
        self.start = steps[0]

    def resume(self, models, optimizers, rng):
        """Load the checkpoint the run resumes from into `models`, `optimizers` and `rng` (torch.Generators),
        each {name: object} as its checkpoint names them; return the checkpoint's counters ({} for a new run)."""
        saved = self.saved[0]
        if saved.state is None:
            return {}
        saved.load(**models)
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(saved.state["optimizers"][name])
        for name, generator in rng.items():
            generator.set_state(saved.state["rng"][name].cpu())
        return saved.state["counters"]

    # The loop

    def steps(self):
        """The steps left, start + 1 ... num_training_steps; the run folders are opened for writing first.
        After a step that saved a checkpoint because a stop was asked for, raises TrainingStopped."""
        self._open()
        for step in range(self.start + 1, self.end + 1):
            if not self.live:
                return
            self.interim = step if self._checkpoint_due() else None
            yield step
            self.bar.update(1)
            self.rate.step(step)
            if self.stops.requested and self.last_saved == step and step < self.end:
                quiet_in_ipython()
                raise TrainingStopped(step, self.end)

    def logging(self, step):
        return step % self.configs[0].logging_steps == 0 and bool(self.live)

    def saving(self, step):
        """Whether the trainer saves a checkpoint at the end of `step`: every saving_steps steps, at the
        end, and (interim) when a stop was asked for or checkpoint_minutes have passed."""
        if self.stops.requested and self.interim is None:
            self.interim = step  # from now on in this step: save, then stop
        return (self._regular(step) or step == self.interim) and bool(self.live)

    def _regular(self, step):
        return step % self.configs[0].saving_steps == 0 or step == self.end

    def _checkpoint_due(self):
        return 0 < self.checkpoint_seconds <= time.monotonic() - self.last_save_time

    def check(self, step, *losses):
        """Note whether this step's losses are finite, on the device (no wait). At logging and saving steps,
        read the notes (the one wait for the device) and stop each run whose loss became NaN or infinite."""
        finite = torch.isfinite(losses[0])
        for loss in losses[1:]:
            finite = finite & torch.isfinite(loss)
        self.flags.append(finite)
        if not (self.logging(step) or self.saving(step)):
            return
        flags = torch.stack(self.flags).cpu().reshape(len(self.flags), -1)  # (steps, runs)
        self.flags.clear()
        for run in self.live:
            if not flags[:, run].all():
                bad_step = step - len(flags) + 1 + int((~flags[:, run]).nonzero()[0])
                self.stop(run, self.diverged(f"the loss became NaN or infinite at step {bad_step}", run))

    def log(self, row, run=0):
        """Add `row` to run `run`'s history: history.csv, TensorBoard, the progress bar, on_log."""
        self.histories[run].append(row)
        self.writers[run].log(row)
        if self.show is not None:
            self.bar.set_postfix(**self.show(row))
        if self.on_log is not None:
            try:
                self.on_log(*([self.configs[run].seed] if self.together else []), row)
            except KeyboardInterrupt:  # as Ctrl-C: stop at a checkpoint at the end of this step
                self.stops.request()

    def save(self, step, samples, run=0, **parts):
        """Write run `run`'s checkpoint at `step` and a grid of `samples` (images in [-1, 1]).

        parts: make_checkpoint's models, optimizers, rng and counters. The checkpoint
        is written whole or not at all (save_atomic: torch.save, then one rename), and
        all but the two newest are deleted; a regular checkpoint also deletes the interim
        ones before it, and an interim one writes no grid (the module docstring says why).
        Weights that became NaN are not saved: the run stops.
        """
        run_dir, state = self.run_dirs[run], make_checkpoint(self.kind, step, self.configs[run], **parts)
        for name, weights in state["models"].items():
            if not all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()):
                return self.stop(run, TrainingDiverged(
                    f"the {name}'s weights became NaN or infinite by step {step}; training stopped and they "
                    f"were not saved. Try a lower learning rate or another seed."))
        if self._regular(step):
            grid = run_dir / "samples" / f"step-{step:06d}.png"
            grid.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(grid, ".png") as tmp:
                save_image((samples + 1) / 2, tmp, nrow=8)  # [-1, 1] -> [0, 1]
        save_atomic(state, checkpoint_path(run_dir, step))
        self._prune(run_dir)
        self.writers[run].tensorboard.flush()
        self.last_saved, self.last_save_time = step, time.monotonic()

    def _prune(self, run_dir):
        """Keep the KEEP newest regular checkpoints, and the newest interim one if it is newer than those."""
        files = checkpoints(run_dir)
        regular = [path for path in files if self._regular(checkpoint_step(path))]
        interim = [path for path in files if path not in regular]
        newest_regular = checkpoint_step(regular[-1]) if regular else 0
        keep = set(regular[-KEEP:]) | {p for p in interim[-1:] if checkpoint_step(p) > newest_regular}
        for path in files:
            if path not in keep:
                path.unlink(missing_ok=True)

    def diverged(self, what, run=0):
        """The TrainingDiverged error saying `what` became NaN or infinite, and where to go back to."""
        last = latest_checkpoint(self.run_dirs[run])
        return TrainingDiverged(
            f"{what}; training stopped. "
            + (f"The last good checkpoint is {last}." if last else "No checkpoint was written yet.")
            + " Try a lower learning rate or another seed.")

    def stop(self, run, error):
        """Stop run `run` with `error`: raised, or, for a stacked seed, kept in `errors` while the others go on."""
        if not self.together:
            raise error
        self.errors[run] = error
        self.writers[run].close()
        if self.progress:
            self.bar.write(f"labkit: seed {self.configs[run].seed}: {error}")

    # Opening and closing

    def _open(self):
        self.histories = [prepare_run_folder(saved.path, saved.config, saved.state, self.columns, self.source)
                          for saved in self.saved]
        for run_dir in self.run_dirs:
            self.writers.append(RunWriter(run_dir, self.start, self.columns, self.tag))
        if self.device.type == "cpu":
            self.threads = choose_threads()
        self.rate = StepRate(self.start, self._recheck_threads)
        self.say(self._announcement())
        self.bar = progress_bar(total=self.end, initial=self.start, disable=not self.progress, dynamic_ncols=True,
                                desc=f"{len(self.configs)} seeds" if self.together else "steps")  # the name: 1st line
        self.started, self.last_save_time = time.time(), time.monotonic()
        self.stops.__enter__()  # Ctrl-C from here on: noted, and the loop stops at a checkpoint

    def _recheck_threads(self):
        """The step rate fell by half, or minutes passed: set the threads for the machine's load now."""
        before, self.threads = self.threads, recheck_threads(self.threads)
        if self.threads is not None and before.threads != self.threads.threads and self.progress:
            self.bar.write(f"labkit: the CPU's load changed; now {self.threads.describe()}")

    def _announcement(self):
        where = describe_device(self.device, self.threads)
        if self.together:
            seeds = ", ".join(str(c.seed) for c in self.configs)
            return (f"labkit: training seeds {seeds} of {self.configs[0].architecture} together on {where}"
                    + (f", resuming at step {self.start}" if self.start else ""))
        if self.start == 0:
            return f"labkit: training {self.run_dir} ({self.end} steps) on {where}"
        return f"labkit: resuming {self.run_dir} at step {self.start} of {self.end} on {where}"

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        self.stops.__exit__()
        torch.set_num_threads(self.threads_before)
        if self.bar is not None:
            self.bar.close()
        for writer in self.writers:
            writer.close()
        if kind is None and self.started is not None:
            steps, seconds = self.end - self.start, time.time() - self.started
            if self.together:
                self.say(f"labkit: {len(self.configs)} x {steps} steps in {seconds:.1f} s")
            else:
                self.say(f"labkit: {steps} steps in {seconds:.1f} s"
                         + (f"; samples in {self.run_dir / 'samples'}" if self.samples_note else ""))
        return False


class StepRate:
    """The loop's steps per second, over windows of RATE_WINDOW_SECONDS; calls `recheck()` when the rate falls
    below half the best seen, or RECHECK_SECONDS passed since the last call."""

    def __init__(self, step, recheck):
        self.recheck, self.best = recheck, 0.0
        self.window_step, self.window_start = step, time.monotonic()
        self.checked = self.window_start

    def step(self, step):
        now = time.monotonic()
        if now - self.window_start < RATE_WINDOW_SECONDS:
            return
        rate = (step - self.window_step) / (now - self.window_start)
        self.best = max(self.best, rate)
        if rate < self.best / 2 or now - self.checked > RECHECK_SECONDS:
            self.recheck()
            self.best, self.checked = rate, time.monotonic()
        self.window_step, self.window_start = step, time.monotonic()


def prepare_run_folder(run_dir, config, state, columns, source=None):
    """Before training: write config.json (and code.py), and cut history.csv back to the checkpoint.

    Returns the history up to the checkpoint we resume from. Rows logged after
    it are redone by the resumed run, so they are dropped here.
    """
    run_dir = Path(run_dir)
    history = []
    if state is not None:
        history = [row for row in read_history(run_dir, columns) if row["step"] <= state["step"]]
    write_config(run_dir, config)
    if source:
        write_atomic(run_dir / "code.py", f"# The student code that trained this run ({config.code}).\n\n{source}\n")
    write_history(run_dir, history, columns)
    return history


class RunWriter:
    """What a run appends while it trains: history rows and TensorBoard scalars (Loop.save writes the rest)."""

    def __init__(self, run_dir, start_step, columns, tag=None):
        self.run_dir, self.columns = Path(run_dir), columns
        self.tag = tag or (lambda key: key)
        self.tensorboard = SummaryWriter(self.run_dir / "tensorboard", purge_step=start_step + 1)
        self.history_file = open(self.run_dir / "history.csv", "a", newline="")

    def log(self, row):
        self.history_file.write(",".join(format_value(row[c]) for c in self.columns) + "\n")
        self.history_file.flush()
        for key in self.columns[1:]:
            self.tensorboard.add_scalar(self.tag(key), row[key], row["step"])

    def close(self):
        try:
            self.tensorboard.close()
        finally:
            self.history_file.close()


# ---------------------------------------------------------------------------
# Reading a run, and starting a new run from one


def read_run(run_dir, config_class, kind, columns, code, device="cpu"):
    """A run folder as it is, to read it (a `SavedRun`); writes nothing.

    Refuses a folder that is not a run, a run trained by other code than
    `code` (labkit/runs/code.py), and a run with no checkpoint yet.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    config = read_config(run_dir, config_class)
    check_code(code, config, run_dir)
    state = load_latest(run_dir, kind, map_location=device)
    if state is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet; train it first")
    check_checkpoint_config(state, config, run_dir)
    return SavedRun(run_dir, config, state, columns)


def branch_run(source, num_training_steps, config_class, kind, columns, code, out_dir=None, progress=True):
    """A new run folder that goes on from `source` to `num_training_steps`; returns (its config, its folder).

    The new folder (default: beside the source, named by its settings) starts
    as a copy of the source's newest checkpoint, sample grids, TensorBoard
    files, code.py and history up to that checkpoint, and appears whole or not
    at all. The source is left as it is. Training the new folder then goes on
    from the copied checkpoint (labkit.gan.extend).
    """
    source = Path(source)
    config = read_config(source, config_class)
    check_code(code, config, source)
    if num_training_steps <= config.num_training_steps:
        raise ValueError(f"{source} is already {config.num_training_steps} steps long; extend it to more steps")
    config = config.updated(num_training_steps=num_training_steps)
    target = Path(out_dir) if out_dir is not None else source.parent / config.name
    check_run_folder(target, inputs=[source])  # never the run it extends
    if not (target / "config.json").exists():
        step = _copy_run(source, target, config, kind, columns)
        if progress:
            print(f"labkit: extending {source} (step {step}) into {target}")
    return config, target


def _copy_run(source, target, config, kind, columns):
    state = load_latest(source, kind)
    if state is None:
        raise CheckpointError(f"{source} has no checkpoint to extend")
    history = [r for r in read_history(source, columns) if r["step"] <= state["step"]]  # a damaged one: before copying
    check_writable(target)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        (partial / "checkpoints").mkdir(parents=True)
        shutil.copy2(checkpoint_path(source, state["step"]), checkpoint_path(partial, state["step"]))
        for folder in ("samples", "tensorboard"):
            if (source / folder).is_dir():
                shutil.copytree(source / folder, partial / folder)
        if (source / "code.py").is_file():
            shutil.copy2(source / "code.py", partial / "code.py")
        write_history(partial, history, columns)
        write_config(partial, config)
        partial.rename(target)  # the new run appears whole, or not at all
    except BaseException:  # a full disk, Ctrl-C: no half copy left behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return state["step"]
