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
from pathlib import Path

from ..machinery.atomic import atomic_path

STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


class BadNotebook(ValueError):
    """A file that is not a readable Jupyter notebook."""


def lab_notebooks(source=None):
    """The instructor's notebooks, NN_*.ipynb in order: from `source`, else the lab folder's notebooks/."""
    if source is None:
        from ..machinery.runs import lab_folder

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
    import nbformat

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
    from nbconvert.preprocessors import ClearOutputPreprocessor
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    nb = copy.deepcopy(nb)
    resources = {}
    for preprocessor in (ClearSolutions(), ClearHiddenTests(), ClearOutputPreprocessor()):
        nb, resources = preprocessor.preprocess(nb, resources)
    nb.metadata.pop("widgets", None)
    return nb


def release(out, source=None, force=False):
    """Write the student version of every lab notebook into out/notebooks/."""
    import nbformat

    from ..machinery.runs import check_folder_path, check_writable

    out = Path(out)
    paths = lab_notebooks(source)
    target = out / "notebooks"
    check_folder_path(out, "the release")
    if any(target.glob("*.ipynb")) and not force:
        raise ValueError(f"{target} already holds notebooks; add --force to replace them (students' work "
                         f"in them would be lost)")
    check_writable(out)
    notebooks = {}
    for path in paths:
        nb = read_notebook(path)
        check_marks(nb, path.name)
        notebooks[path.name] = student_version(nb)
    target.mkdir(parents=True, exist_ok=True)
    count, points = 0, 0.0
    for name, nb in notebooks.items():
        with atomic_path(target / name) as tmp:
            nbformat.write(nb, str(tmp))
        count += len(exercises(nb))
        points += sum(p for _, p in exercises(nb))
    print(f"labkit: wrote {len(notebooks)} student notebooks to {target}: {count} exercises, {points:g} points")
    return 0


def stubbed(cell):
    """A solution cell with its solution replaced by the stub, as the release has it."""
    from nbgrader.preprocessors import ClearSolutions

    cell = copy.deepcopy(cell)
    ClearSolutions()._replace_solution_region(cell, "python")
    cell.outputs, cell.execution_count = [], None
    return cell
