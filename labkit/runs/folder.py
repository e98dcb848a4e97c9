"""Run folders: where runs live, and how they are written safely.

A run folder holds
    config.json     every setting of the run, and whose code trained it (labkit/runs/config.py)
    history.csv     one row per logging step
    tensorboard/    the same values as TensorBoard event files
    checkpoints/    the two newest checkpoints (labkit/runs/checkpoints.py)
    samples/        a grid of samples at every checkpoint
    code.py         the student pieces that trained it, if any (labkit/runs/code.py)

Its name is the run's identity (labkit/runs/config.py says how it is made).

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

import os
import socket
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout

from .atomic import read_json, write_atomic, write_json
from .config import format_value
from .targets import refuse_inputs, refuse_link



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
    write_json(Path(run_dir) / "config.json", config.to_dict())


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
        self.path = Path(run_dir) / name
        self.owner = Path(run_dir) / f"{name}.owner"
        self.doing = doing  # what the holder does, for the message: "is being trained", "is being swept"
        self.lock = FileLock(str(self.path), timeout=0)

    def __enter__(self):
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
