"""The lab as an assignment: the instructor's notebooks, their exercise marks, and the student release.

The instructor's notebooks (notebooks/) hold the solutions, marked with
nbgrader's conventions, so a course that already runs nbgrader can use them
as they are:

  * a *solution cell* (metadata nbgrader.solution = true) holds the student's
    part between `### BEGIN SOLUTION` and `### END SOLUTION`;
  * a *grade cell* (nbgrader.grade = true, with `points` and a `grade_id`)
    checks it: public checks the student sees, then hidden ones between
    `### BEGIN HIDDEN TESTS` and `### END HIDDEN TESTS`.
An exercise is a solution cell `<name>_solution` and the grade cell `<name>`.

    labkit assignment release --out DIR       DIR/notebooks/NN_*.ipynb for students
    labkit assignment grade SUBMISSIONS --out REPORT      (labkit/grading/gradebook.py)

`release` uses nbgrader's own preprocessors (ClearSolutions, ClearHiddenTests)
and nbconvert's ClearOutput. Grading does not use `nbgrader autograde`, which
runs the checks in the student's own kernel, where the student's code can
change what they report: labkit decides every verdict in a process that never
runs student code (labkit/grading/grade.py).
"""

import copy
import json
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ClearOutputPreprocessor
from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

from ..runs.folder import check_writable, lab_folder
from ..runs.targets import output_folder, write_made
from . import secret

STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


class BadNotebook(ValueError):
    """A file that is not a readable Jupyter notebook."""


def lab_notebooks(source=None):
    """The instructor's notebooks, NN_*.ipynb in order: from `source`, else the lab folder's notebooks/."""
    if source is None:
        if lab_folder() is None:
            raise FileNotFoundError("no lab folder here (one with notebooks/01_*.ipynb); give the instructor's "
                                    "notebooks with --source")
        source = lab_folder() / "notebooks"
    source = Path(source)
    paths = sorted(source.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no lab notebooks (NN_*.ipynb) in {source}; give the instructor's notebooks "
                                f"with --source")
    return paths


def read_notebook(path):
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as err:
        raise BadNotebook(f"{path.name} is not a notebook ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else 'unreadable'})") from None


def meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def exercises(nb):
    """[(exercise name, points)] of a notebook, in order: its grade cells."""
    return [(meta(c)["grade_id"], float(meta(c).get("points", 0))) for c in nb.cells if meta(c).get("grade")]


def check_marks(nb, name):
    """Refuse an instructor notebook whose exercise marks are inconsistent (a typo would grade nothing)."""
    ids = [meta(c)["grade_id"] for c in nb.cells if meta(c)]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{name}: grade_ids repeat: {ids}")
    for cell in nb.cells:
        m = meta(cell)
        if "### BEGIN SOLUTION" in cell.source and not m.get("solution"):
            raise ValueError(f"{name}: a cell with ### BEGIN SOLUTION is not marked as a solution cell")
        if m.get("solution") and not (m["grade_id"].endswith("_solution")
                                      and m["grade_id"][: -len("_solution")] in ids):
            raise ValueError(f"{name}: solution cell {m['grade_id']} has no grade cell {m['grade_id'][:-9]}")


# ---------------------------------------------------------------------------
# Release


def student_version(nb):
    """A copy of an instructor notebook with solutions stubbed, hidden checks and outputs removed."""
    nb = copy.deepcopy(nb)
    resources = {}
    for preprocessor in (ClearSolutions(), ClearHiddenTests(), ClearOutputPreprocessor()):
        nb, resources = preprocessor.preprocess(nb, resources)
    nb.metadata.pop("widgets", None)
    return nb


def release(out, source=None, force=False):
    """Write the student version of every lab notebook into out/notebooks/.

    Checked before anything is written (labkit/runs/targets.py): out/notebooks
    must not be the instructor's notebooks it reads (`cd LAB && release --out .`),
    nor a link; a notebook already there is replaced only with `force`, and only if
    labkit released it (listed in out/.labkit-made.json, or a student version: no
    solution and no hidden check in it). Any other file is never replaced.
    """
    out = Path(out)
    paths = lab_notebooks(source)
    names = [f"notebooks/{path.name}" for path in paths]
    output_folder(out, names, inputs=[paths[0].parent, *paths], overwrite=force, ours=is_student_version,
                  replacing="the notebooks labkit released there (students' work in them would be lost)")
    check_writable(out)
    notebooks = {}
    for path in paths:
        nb = read_notebook(path)
        check_marks(nb, path.name)
        notebooks[path.name] = student_version(nb)
    count, points = 0, 0.0
    for name, nb in notebooks.items():
        text = nbformat.writes(nb)
        write_made(out, f"notebooks/{name}", (text if text.endswith("\n") else text + "\n").encode())
        count += len(exercises(nb))
        points += sum(p for _, p in exercises(nb))
    print(f"labkit: wrote {len(notebooks)} student notebooks to {out / 'notebooks'}: {count} exercises, "
          f"{points:g} points")
    if secret.make(paths[0].parent):
        print(f"labkit: made the grading secret {secret.path(paths[0].parent)}, where the hidden checks' inputs "
              f"come from: keep it, never hand it out (docs/grading.md)")
    return 0


def is_student_version(path):
    """Whether a notebook is a student version labkit released: exercise marks, and no solution or hidden check.

    An instructor's notebook always holds its solutions, so it is never taken for one."""
    try:
        nb = json.loads(Path(path).read_bytes())
        sources = ["".join(cell.get("source", "")) for cell in nb["cells"]]
        marked = any(cell.get("metadata", {}).get("nbgrader") for cell in nb["cells"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return marked and not any("### BEGIN SOLUTION" in text or "### BEGIN HIDDEN TESTS" in text for text in sources)


def stubbed(cell):
    """A solution cell with its solution replaced by the stub, as the release has it."""
    cell = copy.deepcopy(cell)
    ClearSolutions()._replace_solution_region(cell, "python")
    cell.outputs, cell.execution_count = [], None
    return cell
