"""Reading what students handed in: whose folder is whose, and each exercise's cells, taken safely.

A submission is a folder with the student's notebooks, as `NN_*.ipynb` or
`notebooks/NN_*.ipynb` (the release's layout). A class is a folder of
submissions, one folder per student, named after the student (what a GitHub
Classroom export or a course's LMS download gives); `students(folder)` tells
the two apart.

Only regular files inside the student's own folder are read: a notebook that
is a symbolic link (to the instructor's notebooks, say) or resolves outside the
folder scores 0 with the reason. Of each notebook grading takes, per
exercise, the solution cell (matched by its nbgrader grade_id) and the code
cells the student added right below it; the rest of the notebook (outputs,
the instructor's cells, edited checks) is never used. A solution cell the
student deleted counts as the release's stub: not done.
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .assignment import BadNotebook, meta, read_notebook

MAX_NOTEBOOK_BYTES = 64 * 2**20  # notebooks with every figure stay far below; a larger file is not read
MAX_VALUES = 500_000  # JSON lists, objects and items per notebook, counted in the bytes before parsing: the
# lab's notebooks, figures and all, have under 20,000; 21 million empty lists in 60 MB cost the grader 3.6 GB


@dataclass
class Submission:
    student: str
    folder: Path
    cells: dict = field(default_factory=dict)  # {(notebook, exercise): [source, ...]}
    problems: dict = field(default_factory=dict)  # {notebook: why it scored 0}

    def digest(self, source_digest):
        """The content hash a later grading compares: the graded cells, the problems, and the instructor's side."""
        text = json.dumps([source_digest, sorted((list(k), v) for k, v in self.cells.items()),
                           sorted(self.problems.items())])
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def is_submission(folder):
    """Whether `folder` holds lab notebooks itself (one student), rather than one folder per student: NN_*.ipynb
    files of its own or in a repository's `notebooks/`, and no student folder with notebooks beside them (a class
    with a student called "notebooks", or with a stray notebook uploaded beside the students' folders, is still
    a class: `stray_notebooks` names what grading leaves out)."""
    folder = Path(folder)
    if not (has_notebooks(folder) or has_notebooks(folder / "notebooks")):
        return False
    beside = [c for c in folder.iterdir() if c.name != "notebooks" and not c.name.startswith(".") and c.is_dir()]
    return not any(has_notebooks(c) or has_notebooks(c / "notebooks") for c in beside)


def stray_notebooks(folder):
    """Notebooks at the top of a class folder (not `is_submission`), in no student's folder: not graded, but said."""
    return sorted(p.name for p in Path(folder).glob("[0-9][0-9]_*.ipynb") if p.is_file())


def has_notebooks(folder):
    """Whether `folder` is a folder with NN_*.ipynb files in it (a folder named like a notebook is not one)."""
    return folder.is_dir() and any(p.is_file() for p in folder.glob("[0-9][0-9]_*.ipynb"))


def students(folder):
    """[(student, their folder)]: the folder itself if it is one submission, else each visible subfolder."""
    folder = Path(folder)
    if is_submission(folder):
        return [(folder.resolve().name, folder)]
    return [(child.name, child) for child in sorted(folder.iterdir())
            if not child.name.startswith(".") and (child.is_dir() or child.is_symlink())]


def read_submission(student, folder, exercises, stubs):
    """A Submission: the cells of every exercise (or why a notebook scored 0).

    exercises: [grade.Exercise]; stubs: {(notebook, exercise): the release's solution cell}.
    """
    submission = Submission(student, Path(folder))
    if Path(folder).is_symlink():
        for notebook in {e.notebook for e in exercises}:
            submission.problems[notebook] = f"{student} is a symbolic link; only folders inside the " \
                                            f"submissions folder are graded"
        return submission
    for notebook in dict.fromkeys(e.notebook for e in exercises):
        try:
            nb = read_notebook(find_notebook(Path(folder), notebook))
        except (FileNotFoundError, BadNotebook, ValueError) as err:
            submission.problems[notebook] = str(err)
            continue
        try:
            found = {e.name: solution_cells(nb, e.solution_id, e.name) for e in exercises if e.notebook == notebook}
        except ValueError as err:
            submission.problems[notebook] = f"{notebook}: {err}"
            continue
        for name, cells in found.items():
            submission.cells[notebook, name] = cells or [stubs[notebook, name]]
    return submission


def find_notebook(folder, name):
    """The student's notebook for the instructor's `name`: by file name, or by its NN_ number.

    Refuses (ValueError) a symbolic link or a file that resolves outside `folder`.
    """
    candidates = [base / name for base in (folder, folder / "notebooks")]
    candidates += [p for base in (folder, folder / "notebooks") for p in sorted(base.glob(name[:3] + "*.ipynb"))]
    for path in candidates:
        if path.is_symlink():
            raise ValueError(f"{name} is a symbolic link; only regular files inside the submission are graded")
        if path.is_file():
            if folder.resolve() not in path.resolve().parents:
                raise ValueError(f"{name} lies outside the submission; only files inside it are graded")
            if path.stat().st_size > MAX_NOTEBOOK_BYTES:
                raise ValueError(f"{name} is {path.stat().st_size / 2**20:.0f} MB; a lab notebook without "
                                 f"outputs is well under {MAX_NOTEBOOK_BYTES // 2**20} MB")
            data = path.read_bytes()  # an upper bound on what parsing builds, however keys are spelled (base64 has none)
            values = data.count(b"[") + data.count(b"{") + data.count(b",")
            if values > MAX_VALUES:
                raise ValueError(f"{name} holds about {values:,} JSON values; a lab notebook has far fewer than "
                                 f"{MAX_VALUES:,} (clear its outputs, or resave it from Jupyter)")
            return path
    raise FileNotFoundError(f"{name} is missing")


def solution_cells(nb, solution_id, exercise):
    """The sources of the exercise's solution cell (its grade_id) and of the code cells the student added below
    it; None if the solution cell is gone. ValueError for a cell whose source is not text (hand-edited JSON)."""
    cells = [c for c in nb.get("cells", []) if isinstance(c, dict)] if isinstance(nb.get("cells"), list) else []
    index = next((i for i, c in enumerate(cells) if meta(c).get("grade_id") == solution_id), None)
    if index is None:
        return None
    found = [_text(cells[index], exercise)]
    for cell in cells[index + 1:]:
        if meta(cell) or cell.get("cell_type") != "code":
            break
        found.append(_text(cell, exercise))
    return found


def _text(cell, exercise):
    source = cell.get("source")
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        return "".join(source)
    if not isinstance(source, str):
        raise ValueError(f"a cell of {exercise} has a source that is not text ({type(source).__name__})")
    return source
