"""Files written safely: a reader sees the old file or the new one, never half of one.

Every file labkit writes (configs, histories, checkpoints, sample grids, tables,
notebooks, caches) goes through `atomic_path`: the new content is written to a
temporary file beside the target and renamed over it in one step. A kill, a
full disk or Ctrl-C in the middle leaves the old file as it was and no
temporary file behind.
"""

import csv
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path, suffix=""):
    """A temporary file name beside `path` to write in the block. If the block ends normally the file
    replaces `path` in one rename (a reader sees the old file or the new, never half of one); if anything
    goes wrong (an error, a full disk, Ctrl-C) it is removed. suffix: for writers that go by the extension."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path, text):
    """Write `text` to `path` atomically (`atomic_path`), flushed to the disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_csv(path, columns, rows):
    """Write dict rows as a CSV table with a header, atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def write_json(path, value):
    write_atomic(path, json.dumps(value, indent=2) + "\n")


def read_json(path, what="file"):
    """A JSON file, or a clear error if it is damaged."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is damaged ({what} is not valid JSON: {err}); "
                         f"delete the folder {path.parent} to start that run again") from None
