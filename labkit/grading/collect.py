"""Collecting a class from a learning-management system's bulk download: one folder per student.

    labkit assignment collect DOWNLOAD --out SUBMISSIONS

Canvas's "Download Submissions" and Moodle's "Download all submissions" give one folder
(unzip it first) of files named after the student:

    Canvas   alice_1234_5678_01_train_dcgan.ipynb            login, user id, submission id, file
             alice_LATE_1234_5678_01_train_dcgan-1.ipynb      late; "-1": a resubmission's renamed file
    Moodle   Alice Smith_1234_assignsubmission_file_01_train_dcgan.ipynb     full name, participant id, file
             Alice Smith_1234_assignsubmission_file_/01_train_dcgan.ipynb    (newer Moodle: a folder each)

`collect` copies each notebook to SUBMISSIONS/<student>/<file> (keeping its modification
time, the submission time a late policy reads; a date and time in the download's name,
2026-12-01T23-59 or 20261201-2359, replaces it) and writes SUBMISSIONS/.labkit-roster.csv
(student, full name, LMS, LMS id, late flag), which `export` uses to match grades to the
LMS's students. Students are told apart by their LMS id: two whose names give the same folder
name (two "Wei Zhang", or "Anna Müller" and "Anna Möller") get it with their id added,
Wei_Zhang-111 and Wei_Zhang-112. Files that are not lab notebooks (NN_*.ipynb) are left out and listed.
"""

import csv
import io
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from ..runs.targets import TargetError, output_folder, write_made
from .inert import csv_cell, from_csv_cell

ROSTER = ".labkit-roster.csv"
ROSTER_COLUMNS = ("student", "full_name", "lms", "lms_id", "late")
CANVAS = re.compile(r"^(?P<login>[^_/]+?)(?P<late>_LATE)?_(?P<id>\d+)_(?P<submission>\d+)_(?P<file>.+)$")
MOODLE = re.compile(r"^(?P<name>[^/]+?)_(?P<id>\d+)_assignsubmission_(?:file|onlinetext)_/?(?P<file>.*)$")
NOTEBOOK = re.compile(r"(?:^|[_/])(?P<stem>\d\d_[A-Za-z][A-Za-z0-9_]*?)(?:-\d+)?\.ipynb$")  # x-1.ipynb: Canvas's
# name for a resubmitted file
STAMP = re.compile(r"(\d{4})-?(\d\d)-?(\d\d)[T_ -]?(\d\d)[-:.h]?(\d\d)")


def parse(relative):
    """(student folder name, roster row, notebook file name) of a download's file, or None if not a lab notebook.

    relative: the file's path inside the download, with "/" between folders."""
    for lms, pattern in (("moodle", MOODLE), ("canvas", CANVAS)):
        found = pattern.match(relative)
        if found:
            break
    else:
        return None
    notebook = NOTEBOOK.search(found["file"])
    if not notebook:
        return None
    full_name = found["name"] if lms == "moodle" else found["login"]
    student = re.sub(r"[^A-Za-z0-9._-]+", "_", full_name).strip("._") or f"student_{found['id']}"
    row = {"student": student, "full_name": full_name, "lms": lms, "lms_id": found["id"],
           "late": "yes" if lms == "canvas" and found["late"] else ""}
    return student, row, f"{notebook['stem']}.ipynb"


def stamped(relative):
    """The submission time a download's file name states, as a POSIX timestamp (None if it states none)."""
    found = STAMP.search(relative)
    if not found:
        return None
    try:
        return datetime(*map(int, found.groups()), tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def plan(download):
    """({(student, notebook): source file}, {student: roster row}, [skipped files]) of a download.

    Students are told apart by their LMS id, never by name: two whose names clean to the same folder
    ("Anna Müller" and "Anna Möller", or two "Wei Zhang") each get a folder named with their id too
    (Anna_M_ller-111, Anna_M_ller-112), so neither's notebooks are lost."""
    files, rows, skipped = {}, {}, []
    for path in sorted(p for p in Path(download).rglob("*") if p.is_file() and not p.is_symlink()):
        relative = path.relative_to(download).as_posix()
        parsed = parse(relative)
        if parsed is None:
            skipped.append(relative)
            continue
        _, row, notebook = parsed
        key = (row["lms"], row["lms_id"])
        previous = files.get((key, notebook))
        if previous is None or path.stat().st_mtime >= previous.stat().st_mtime:  # the newest resubmission wins
            files[key, notebook] = path
        rows[key] = row
    folders = _folders(rows)
    roster = {folders[key]: {**row, "student": folders[key]} for key, row in rows.items()}
    return {(folders[key], notebook): path for (key, notebook), path in files.items()}, roster, skipped


def _folders(rows):
    """{(lms, lms id): folder name}: the cleaned name, with "-<id>" added where two ids clean to the same one."""
    ids = {}
    for key, row in rows.items():
        ids.setdefault(row["student"], set()).add(key)
    return {key: row["student"] if len(ids[row["student"]]) == 1 else f"{row['student']}-{row['lms_id']}"
            for key, row in rows.items()}


def collect(download, out):
    """Copy an LMS download into one folder per student (see the module docstring); the exit status."""
    download, out = Path(download), Path(out)
    if not download.is_dir():
        raise ValueError(f"no folder {download}: unzip the LMS's download into a folder and give that")
    files, roster, skipped = plan(download)
    if not files:
        what = "no notebook" if not any(download.rglob("*.ipynb")) else "no notebook named as Canvas or Moodle name them"
        raise ValueError(f"{what} in {download} (e.g. alice_1234_5678_01_train_dcgan.ipynb); a folder with one "
                         f"folder per student needs no collecting: grade it directly")
    names = [f"{student}/{notebook}" for student, notebook in files] + [ROSTER]
    output_folder(out, names, inputs=[download], overwrite=True)  # a second collect refreshes what the first wrote
    for (student, notebook), source in sorted(files.items()):
        target = write_made(out, f"{student}/{notebook}", source.read_bytes())
        when = stamped(source.relative_to(download).as_posix()) or source.stat().st_mtime
        os.utime(target, (when, when))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=ROSTER_COLUMNS)
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in roster[s].items()} for s in sorted(roster))  # a name may be =...
    write_made(out, ROSTER, text.getvalue().encode())
    print(f"labkit: {len(roster)} students, {len(files)} notebooks from {download} into {out}"
          + (f"; left out {len(skipped)} files that are no lab notebook: {', '.join(skipped[:5])}"
             + (" ..." if len(skipped) > 5 else "") if skipped else ""))
    return 0


def read_roster(submissions):
    """{student: roster row} that `collect` wrote beside the students' folders (none: empty)."""
    path = Path(submissions) / ROSTER
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = [{k: from_csv_cell(v) for k, v in r.items()} for r in csv.DictReader(f)]
    return {r["student"]: r for r in rows}


def refuse_a_download(folder):
    """Refuse to grade a folder with no notebook, or an LMS download not yet collected: one line that says what
    to do (`labkit assignment grade` would otherwise find "0 students")."""
    folder = Path(folder)
    if not any(p.is_file() for p in folder.rglob("*.ipynb")):
        raise ValueError(f"no notebook in {folder}: give the folder with the students' notebooks (one folder "
                         f"per student, or one student's NN_*.ipynb)")
    if any(parse(p.name) for p in folder.glob("*.ipynb") if p.is_file()):  # a student's folder may be named so
        raise TargetError(f"{folder} is a Canvas or Moodle download (files named by student); collect it into one "
                          f"folder per student first: labkit assignment collect {folder} --out SUBMISSIONS")
