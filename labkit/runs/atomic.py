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
    except OSError as err:
        if err.filename is None:  # a write's error (a full disk) names no file: name the one being written
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path, text):
    """Write `text` to `path` atomically (`atomic_path`), flushed to the disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def csv_text(columns, rows):
    """Dict rows as the text of a CSV table with a header."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def write_csv(path, columns, rows):
    """Write dict rows as a CSV table with a header, atomically."""
    write_atomic(path, csv_text(columns, rows))


def write_json(path, value):
    write_atomic(path, json.dumps(value, indent=2) + "\n")


def read_json(path, what="file"):
    """A JSON file, or one clear line (a ValueError naming the file) if it is damaged in any way."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:  # not JSON, not text (UnicodeDecodeError), nested too deep
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ValueError(f"{path} is damaged ({what} is not valid JSON: {reason}); "
                         f"delete the folder {path.parent} to start that run again") from None
