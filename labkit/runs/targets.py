"""What a command may write: every output target is checked before anything is written.

A command that writes resolves each of its targets first, with one of

    output_file(path, inputs=..., overwrite=...)            one file the user named (sample --out grid.png)
    output_folder(folder, names, inputs=..., overwrite=...)  files of labkit's own, by name, in a folder
                                                             (assignment release --out DIR: DIR/notebooks/NN_*.ipynb)

and then writes each file into such a folder with `write_made(folder, name, data)`.
The two checks write nothing; they raise `TargetError` (a ValueError: the `labkit` command prints it
as one line, `labkit: error: ...`, exit 2) for

  * a target that is a symbolic link: labkit neither writes through a link nor
    replaces one (give the real path). Links among its parent folders are fine
    (a runs folder on another disk);
  * a target that is one of the command's own `inputs` (the same path once links
    are resolved, or the same file by inode: a hard link or a bind mount), e.g. a
    release into the folder of the instructor's notebooks it reads;
  * a folder where a file is wanted, a file where a folder is wanted, a path under a file;
  * an existing file labkit did not make; and one it did make unless the user asked
    to overwrite (`overwrite=True`, from --force). Overwriting replaces only what
    labkit made: a file it did not make is refused even then.

How labkit knows what it made
-----------------------------
* In a folder it writes into (a release's notebooks/, a sweep's tables, a report
  folder), a manifest: `.labkit-made.json` lists, for each file labkit wrote there,
  the SHA-256 of the contents it wrote (`write_made` records them before it writes,
  so a kill in between leaves a file the manifest still knows). A file is labkit's
  while its contents are ones labkit wrote: a file a user wrote, or copied over
  labkit's, is not, and is never replaced, moved or deleted; labkit writes beside it.
  A caller may also recognise its own files by their content (`ours`, e.g. a student
  notebook without solutions, a table with labkit's header): a release edited by a
  student is still the release --force replaces, and folders written before
  manifests existed, or whose manifest was lost, are still recognised.
* One file the user names (`output_file`): a new file is written; an existing one
  is replaced only if the user asked to (`overwrite`), or if the caller knows it is
  labkit's own kind of file in labkit's own folder (`owned=True`: a sample grid in a
  run's samples/, a cached statistic in labkit's cache).
* Run folders (labkit/runs/folder.py) are recognised by their config.json and
  their entries by name; `check_run_folder` uses `refuse_link` from here.

Two processes updating one manifest at once each write it whole, and the last one
wins: the other's latest contents may be forgotten. The processes of one sweep
share a tables folder this way; their tables are recognised by their header too.
"""

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

from .atomic import atomic_path, write_json

MANIFEST = ".labkit-made.json"
KEEP = 4  # contents remembered per file: a kill between recording and writing leaves the old or the new


class TargetError(ValueError):
    """An output target labkit must not write: one line that says what to do."""


def same_path(a, b):
    """Whether two paths are one file or folder: equal once links are resolved, or the same inode."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def refuse_link(path, label=None):
    """Refuse a path that is a symbolic link (a dangling one included). label: how the message names it."""
    path = Path(path)
    if path.is_symlink():
        raise TargetError(f"{label or path} is a symbolic link (to {os.readlink(path)}); labkit does not write "
                          f"through or over a link: give the real path, or another one")


def refuse_under_a_file(path, what="--out"):
    """Refuse a path whose parent folders include a file."""
    path = Path(path)
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise TargetError(f"{what} {path} is under {parent}, which is a file; choose another path")


def refuse_inputs(path, inputs, what="--out", label=None):
    """Refuse a target that is one of the command's inputs (files or folders it reads)."""
    for source in inputs:
        if Path(source).exists() and Path(path).exists() and same_path(path, source):
            raise TargetError(f"{label or f'{what} {path}'} is {Path(source)}, which this command reads; writing "
                              f"there would destroy it: choose another {what}")


def output_file(path, *, inputs=(), overwrite=False, owned=False, what="--out", force_flag="--force",
                example="out.png"):
    """Check a file the command is about to write; returns it as a Path. Writes nothing.

    inputs:    files and folders the command reads; the target must be none of them.
    overwrite: the user asked to replace an existing file (--force).
    owned:     the file is labkit's own kind of file in labkit's own folder, replaced freely.
    example:   a file name to suggest when the path is a folder.
    """
    path = Path(path)
    refuse_link(path, f"{what} {path}")
    refuse_under_a_file(path, what)
    if path.exists() and not path.is_file():
        raise TargetError(f"{what} {path} is a folder; give a file name such as {path / example}")
    refuse_inputs(path, inputs, what)
    if path.exists() and not (overwrite or owned):
        raise TargetError(f"{what} {path} already exists; add {force_flag} to replace it, or choose another name")
    return path


@contextmanager
def cache_file(path, suffix=""):
    """Write labkit's own cache file `path` whole: yields a temporary name to write, renamed over `path` at the end.

    For caches (metrics' real-image statistics): the file is replaced freely, but never
    through a symbolic link. Raises TargetError or OSError, which a cache may take as
    "not cached this time". suffix: what the writer appends to the name (np.savez adds .npz).
    """
    path = output_file(path, owned=True, what="the cache file")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix) as tmp:
        yield tmp


def output_folder(folder, names, *, inputs=(), overwrite=False, ours=None, what="--out", force_flag="--force",
                  replacing="what labkit wrote there"):
    """Check a folder the command is about to write the files `names` into; returns it as a Path. Writes nothing.

    names:     file names relative to `folder` (e.g. "runs.csv", "notebooks/01_x.ipynb").
    inputs:    files and folders the command reads; no target may be one of them.
    overwrite: replace files labkit made (--force); files it did not make are refused even then.
    ours:      optional function(path) -> bool that recognises labkit's own files by their content.
    replacing: what --force would replace, for the message (e.g. "the students' notebooks").
    """
    folder = Path(folder)
    refuse_link(folder, f"{what} {folder}")
    refuse_under_a_file(folder, what)
    if folder.exists() and not folder.is_dir():
        raise TargetError(f"{what} {folder} is a file; it needs a folder: choose another path")
    refuse_inputs(folder, inputs, what)
    for name in names:
        path = folder / name
        for parent in reversed(path.relative_to(folder).parents[:-1]):  # subfolders such as notebooks/
            refuse_link(folder / parent)
            refuse_inputs(folder / parent, inputs, what, label=str(folder / parent))
        refuse_link(path)
        refuse_inputs(path, inputs, what, label=str(path))
        if not path.exists():
            continue
        if not path.is_file():
            raise TargetError(f"{path} is a folder where labkit writes a file; move it away, or choose another {what}")
        if not (made_by_labkit(folder, name) or (ours and ours(path))):
            raise TargetError(f"{path} was not written by labkit; labkit never replaces a file it did not make: "
                              f"move it away, or choose another {what}")
        if not overwrite:
            raise TargetError(f"{path} already exists; add {force_flag} to replace {replacing}")
    return folder


def manifest(folder):
    """{name: [SHA-256 of contents labkit wrote]} of `folder` (empty if it has none, or one labkit did not write)."""
    path = Path(folder) / MANIFEST
    if path.is_symlink():  # labkit writes its manifest itself, never a link
        return {}
    try:
        files = json.loads(path.read_bytes())["files"]
        return {name: [h for h in hashes if isinstance(h, str)] for name, hashes in files.items()
                if isinstance(name, str) and isinstance(hashes, list)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none, or damaged: nothing is labkit's
        return {}


def made_by_labkit(folder, name):
    """Whether folder/name holds contents labkit wrote there (its SHA-256 is in the manifest)."""
    path = Path(folder) / name
    hashes = manifest(folder).get(name)
    if not hashes or path.is_symlink() or not path.is_file():
        return False
    return _sha256(path.read_bytes()) in hashes


def write_made(folder, name, data):
    """Write `data` (bytes) to folder/name atomically, recording it in the manifest first.

    Check the folder with `output_folder` before the first write."""

    folder, data = Path(folder), bytes(data)
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    files = manifest(folder)
    digest = _sha256(data)
    if digest not in files.get(name, []):
        files[name] = [*files.get(name, []), digest][-KEEP:]
        write_json(folder / MANIFEST, {"about": "the files labkit wrote in this folder, by the SHA-256 of what it "
                                                "wrote: it replaces only these (labkit/runs/targets.py)",
                                       "files": files})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def _sha256(data):
    return hashlib.sha256(data).hexdigest()
