"""Run folders: where runs live, what their names mean, and how they are written safely.

A run folder holds
    config.json     every setting of the run, and whose code trained it
    history.csv     one row per logging step
    tensorboard/    the same values as TensorBoard event files
    checkpoints/    the two newest checkpoints (labkit/machinery/checkpoints.py)
    samples/        a grid of samples at every checkpoint
    code.py         the student pieces that trained it, if any (labkit/machinery/code.py)

**Identity.** A run's folder name says every setting that changes what the
model learns, steps and code included (`RunConfig.identity`): settings at the
course's defaults are left out, the others are spelled out, e.g.
`dcgan_z16_g16_d16_steps5000_seed2022_devery2`. So a run is found again by
asking for the same settings, and different settings never share a folder.
Logging, saving and the device are not part of it: they may change when a
run is resumed.

**Where.** Every run lives under one root (`runs_root`), shared by the
`labkit` command and the notebooks: a run trained in a shell is the one a
notebook loads, and the other way round.

**Safety.** config.json and rewrites of history.csv go through a temporary
file and a rename, so a kill leaves the old file or the new one, never half
of one; a row torn by a kill during an append is dropped, with a warning,
when the history is read. One process at a time may train a run folder
(`RunLock`); reading a run writes nothing, so a read-only folder of runs
(an instructor's) can be loaded.
"""

import difflib
import os
import socket
import sys
import time
import typing
from dataclasses import asdict, fields
from pathlib import Path

from .atomic import atomic_path, read_json, write_atomic, write_csv, write_json  # noqa: F401 (re-exported)

RUN_ONLY = ("logging_steps", "saving_steps", "device")  # may change between a run and its resumption


def runs_root():
    """The folder that holds every run (the README's "Start here" says it in one line).

    1. LABKIT_RUNS, if set;
    2. else `runs/` in the lab folder: the nearest folder, from the current
       one upwards, that has a `notebooks/` folder with the lab's notebooks in
       it (so a shell in the project and a notebook kernel in notebooks/ agree);
    3. else ./runs.
    """
    if os.environ.get("LABKIT_RUNS"):
        return Path(os.environ["LABKIT_RUNS"])
    folder = lab_folder()
    return folder / "runs" if folder else Path("runs")


def lab_folder():
    """The nearest folder, from the current one upwards, with the lab's notebooks in notebooks/; or None."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if any((folder / "notebooks").glob("01_*.ipynb")):
            return folder
    return None


# ---------------------------------------------------------------------------
# Settings


class RunConfig:
    """What TrainConfig and VAEConfig share: strict loading, identity and a name."""

    @classmethod
    def from_dict(cls, values):
        """A config from a dict; an unknown key is an error that suggests the right name."""
        if not isinstance(values, dict):
            raise ValueError(f"a {cls.__name__} is a JSON object of settings, not {type(values).__name__}")
        check_setting_names(cls, values)
        return cls(**values)

    def check_types(self):
        """Refuse a setting of the wrong kind in one line (a config.json edited by hand: "use_mlp": "yes").

        The dataclass's annotations say the kinds: bool must be True or False, int a whole
        number, float any number, str text, Optional[...] also None. Ranges are the subclass's.
        """
        kinds = {bool: (bool, "true or false"), int: (int, "a whole number"), float: ((int, float), "a number"),
                 str: (str, "text")}
        for name, kind in typing.get_type_hints(type(self)).items():
            value = getattr(self, name)
            if typing.get_origin(kind) is typing.Union:  # Optional[float]
                if value is None:
                    continue
                kind = next(k for k in typing.get_args(kind) if k is not type(None))
            allowed, words = kinds.get(kind, (object, ""))
            if not isinstance(value, allowed) or (kind is not bool and isinstance(value, bool)):
                raise ValueError(f"{name} must be {words}, got {value!r}")

    def updated(self, **changes):
        """A copy with `changes`, checked like from_dict (a misspelt name is an error)."""
        return type(self).from_dict({**asdict(self), **changes})

    def identity(self):
        """{setting: value} of everything that changes what the model learns."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUN_ONLY}

    def name_parts(self):
        """The readable name's parts, in order; subclasses say what they are."""
        raise NotImplementedError

    @property
    def name(self):
        """The run folder's name: every setting of `identity`, the defaults left out."""
        return "_".join(self.name_parts())

    @staticmethod
    def spelt(value):
        """`value` as a run name spells it (`format_value`): exactly, so two settings never share a name."""
        return format_value(value)

    def suffixes(self, short_names):
        """Name parts for settings that differ from their defaults, e.g. 'devery2' or 'relu'.

        short_names: {setting: name or function(value) -> name part}.
        """
        defaults = type(self)()
        identity, default_identity = self.identity(), defaults.identity()
        parts = []
        for key, short in short_names.items():
            if key in identity and identity[key] != default_identity.get(key, getattr(defaults, key)):
                value = identity[key]
                parts.append(short(value) if callable(short) else f"{short}{format_value(value)}")
        return parts


def format_value(value):
    """A setting's value as it appears in a run name, exactly: 5e-05 -> 5e-05, 0.00015 -> 0.00015, 0.8 -> 0.8.

    Python's repr of a float is the shortest text that reads back as the same number,
    so two different settings never share a name."""
    return repr(value) if isinstance(value, float) else str(value)


def check_setting_names(config_class, values):
    """Refuse unknown setting names, suggesting the nearest known one."""
    known = [f.name for f in fields(config_class)]
    for key in values:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; the settings are: {', '.join(known)}"
            raise ValueError(f"{config_class.__name__} has no setting {key!r}{hint}")


def differences(saved, config):
    """The identity settings in which two configs of one run differ, as text (empty if none)."""
    a, b = saved.identity(), config.identity()
    return ", ".join(f"{k}={a.get(k)!r} there vs {b.get(k)!r} now" for k in sorted(set(a) | set(b))
                     if a.get(k) != b.get(k))


def read_config(run_dir, config_class):
    """A run folder's config.json as a `config_class`; a clear error if it is missing or damaged."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a labkit run folder (it has no config.json)")
    values = read_json(path, "its config.json")
    if not isinstance(values, dict):
        raise ValueError(f"{path} is not a labkit config (expected a JSON object, found {type(values).__name__}); "
                         f"delete the folder {path.parent} to train that run again")
    try:
        return config_class.from_dict(values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} does not hold a {config_class.__name__} ({err}); correct it, or delete the "
                         f"folder {path.parent} to train that run again") from None


def write_config(run_dir, config):
    write_json(Path(run_dir) / "config.json", asdict(config))


def read_history(run_dir, columns, warn=None):
    """A run's history.csv as a list of dicts (steps and counts as int, the rest as float).

    A last row cut short by a kill while it was being appended (no line end, or
    values that do not read) is left out, with a warning; nothing is written:
    reading never changes a run. Any other damage (undecodable bytes, a field of
    any length that is not a number, other columns) is one ValueError naming the
    file and the line. The file is labkit's own format, numbers joined by commas
    (`write_history`), so it is split by hand: the csv module's quoting is never
    needed, and its field size limit (131,072 characters) never applies.
    """
    path = Path(run_dir) / "history.csv"
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    torn = lines.pop()  # b"" when the file ends with its line end, as labkit writes it
    if torn:
        lines.append(torn)
    if not lines:
        return []
    header = _history_line(path, lines[0], 1).split(",")
    if header != list(columns):
        raise ValueError(f"{path} has the columns {_shorten(','.join(header))}, not labkit's {','.join(columns)}; "
                         f"it is damaged or from another version: delete the run folder to train it again")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            values = _history_line(path, line, number).split(",")
            if len(values) != len(header):
                raise ValueError("wrong number of values")
            rows.append({k: (int(v) if k in ("step", "d_updates") else float(v)) for k, v in zip(header, values)})
            if number == len(lines) and torn:
                raise ValueError("no line end")
        except ValueError:
            if number == len(lines):  # the last row: torn by a kill during the append
                rows = rows[:number - 2]
                (warn or _warn)(f"labkit: warning: {path} line {number} is incomplete (the run was stopped "
                                f"while writing it); it is left out")
                break
            raise ValueError(f"{path} is damaged at line {number}; delete the run folder to train it again") from None
    return rows


def _history_line(path, line, number):
    """One line of history.csv as text (labkit writes ASCII); a ValueError naming the file if it is not text."""
    try:
        return line.decode("ascii").rstrip("\r")
    except UnicodeDecodeError:
        if number == 1:
            raise ValueError(f"{path} is damaged at line 1 (bytes that are not text); delete the run folder to "
                             f"train it again") from None
        raise ValueError("not text") from None


def _shorten(text, limit=80):
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def write_history(run_dir, rows, columns):
    """Rewrite history.csv with `rows` (atomically)."""
    lines = [",".join(columns)] + [",".join(format_value(row[c]) for c in columns) for row in rows]
    write_atomic(Path(run_dir) / "history.csv", "\n".join(lines) + "\n")


def _warn(text):
    print(text, file=sys.stderr)


# ---------------------------------------------------------------------------
# One process per run folder


class TrainingDiverged(RuntimeError):
    """A loss (or a weight) became NaN or infinite."""


class RunInUseError(RuntimeError):
    """Another process is training this run folder."""


class RunLock:
    """An exclusive lock on a run folder for as long as a process trains it.

    Uses the `filelock` package (an OS-level lock that is released when the
    process ends, however it ends, so a killed run never leaves a stale lock).
    The holder writes its process id and host into `.lock.owner` beside the
    lock (not into the lock file itself, which some systems lock against
    writing), so a second process can say who holds it.
    """

    def __init__(self, run_dir, name=".lock", doing="is being trained"):
        from filelock import FileLock

        self.path = Path(run_dir) / name
        self.owner = Path(run_dir) / f"{name}.owner"
        self.doing = doing  # what the holder does, for the message: "is being trained", "is being swept"
        self.lock = FileLock(str(self.path), timeout=0)

    def __enter__(self):
        from filelock import Timeout

        try:
            self.lock.acquire()
        except Timeout:
            try:
                holder = self.owner.read_text().strip()[:200] or "another process"
            except (OSError, ValueError):  # gone, or not text
                holder = "another process"
            raise RunInUseError(f"{self.path.parent} {self.doing} by {holder}; wait for it to finish "
                                f"(or stop it), then run this again") from None
        try:
            write_atomic(self.owner, f"process {os.getpid()} on {socket.gethostname()} "
                                     f"(since {time.strftime('%H:%M:%S')})\n")
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc):
        self.owner.unlink(missing_ok=True)
        self.lock.release()


# ---------------------------------------------------------------------------
# Checks before a run folder is used


RUN_ENTRIES = ("config.json", "history.csv", "code.py", "checkpoints", "samples", "tensorboard", ".lock",
               ".lock.owner")  # what labkit writes in a run folder, by name


def check_run_folder(run_dir, inputs=()):
    """Refuse a path that cannot be a run folder, before anything is written.

    It may be missing (a new run), an empty folder, or a labkit run folder; not
    a file, not under a file, not a folder of someone's other files, not a
    symbolic link, not one of `inputs` (the run an extension starts from); and
    none of the entries labkit writes in it may be a link (an append to a linked
    history.csv would write into the file it points to).
    """
    from .targets import refuse_inputs, refuse_link

    run_dir = Path(run_dir)
    check_folder_path(run_dir, "a run")
    refuse_link(run_dir, f"the run folder {run_dir}")
    refuse_inputs(run_dir, inputs, label=f"the run folder {run_dir}", what="folder")
    for name in RUN_ENTRIES:
        refuse_link(run_dir / name)
    others = [p for p in run_dir.iterdir() if not labkit_made(p)] if run_dir.is_dir() else []
    if others and not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir} holds files that are not a labkit run; labkit writes only into a new "
                         f"folder or a run folder of its own: choose another path")


def check_folder_path(folder, what="this"):
    """Refuse a folder path that is a file, or lies under a file."""
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == folder else f"is under {parent}, which is a file"
            raise ValueError(f"{folder} {where}; {what} needs a folder: choose another path")


def labkit_made(path):
    """Files labkit puts into a run folder before its config.json: its lock, a sweep's result of a failed run."""
    return path.name in (".lock", ".lock.owner") or (path.name.startswith("fid_") and path.suffix == ".json")


def check_writable(folder):
    """Refuse a folder (or its nearest existing parent) that this process cannot write to."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to {existing} (permission denied); choose a folder you can write to")


# ---------------------------------------------------------------------------
# Devices


def resolve_device(name="auto"):
    """A torch.device from "auto" (CUDA if present), "cpu", "cuda" or "cuda:N", with a clear error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU number), got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for, but PyTorch sees no CUDA GPU; use device 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} does not exist: PyTorch sees {torch.cuda.device_count()} GPU(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def describe_device(device):
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def forked_rng(device):
    """A context that restores the caller's global RNG states (CPU, and `device` if CUDA) on exit."""
    import torch

    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)
