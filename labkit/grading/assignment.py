"""The lab as an assignment: the instructor's notebooks, their exercise marks, and the student release.

The instructor's notebooks (notebooks/) hold the solutions, marked with
nbgrader's conventions, so a course that already runs nbgrader can use them
as they are:

  * a *solution cell* (metadata nbgrader.solution = true) holds the student's
    part between `### BEGIN SOLUTION` and `### END SOLUTION`;
  * a *grade cell* (nbgrader.grade = true, with `points` and a `grade_id`)
    checks it: public checks the student sees, then hidden ones between
    `### BEGIN HIDDEN TESTS` and `### END HIDDEN TESTS`.
An exercise is a solution cell `<name>_solution` and the grade cell `<name>`;
with nbgrader's own ids (`cell-8d3f...`) it is a grade cell and the solution
cell nearest above it. A *written question* is nbgrader's "manually graded
answer" cell (a markdown cell with solution = grade = true and `points`) or a
"manually graded task" cell (task = true): the instructor's version holds a
model answer and, in metadata.labkit.rubric, the rubric the release removes
(labkit/grading/written.py; docs/instructors.md).

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
    """A cell's nbgrader marks, {} when it has none (or anything but a dict: hand-edited JSON, other frontends)."""
    metadata = cell.get("metadata") if isinstance(cell, dict) else None
    marks = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return marks if isinstance(marks, dict) else {}


def is_written(cell):
    """Whether a cell is a written question graded by hand: nbgrader's manually graded answer cell (solution
    and grade) or manually graded task cell (task)."""
    m = meta(cell)
    return bool(m.get("task") or (m.get("solution") and m.get("grade")))


def is_check(cell):
    """Whether a cell is an autograded check (nbgrader's "autograder tests" cell): grade, and not written."""
    return bool(meta(cell).get("grade")) and not is_written(cell)


def exercises(nb):
    """[(exercise name, points)] of a notebook's code exercises, in order: its autograded grade cells."""
    return [(meta(c)["grade_id"], float(meta(c).get("points", 0))) for c in nb.cells if is_check(c)]


def solutions_of(nb):
    """{grade cell's id: its solution cell's id} of a notebook's code exercises.

    labkit's rule: the solution cell `<name>_solution` beside the grade cell `<name>`.
    nbgrader's own ids (`cell-8d3f...`) follow no rule, so there a grade cell's solution is
    the nearest solution code cell above it, with no other grade cell in between."""
    found, above = {}, None
    ids = {meta(c).get("grade_id") for c in nb.cells if meta(c).get("solution") and not is_written(c)}
    for cell in nb.cells:
        if meta(cell).get("solution") and not is_written(cell):
            above = meta(cell)["grade_id"]
        elif is_check(cell):
            name = meta(cell)["grade_id"]
            found[name] = f"{name}_solution" if f"{name}_solution" in ids else above
            above = None
    return {name: solution for name, solution in found.items() if solution is not None}


def check_marks(nb, name):
    """Refuse an instructor notebook whose exercise marks are inconsistent (a typo would grade nothing)."""
    ids = [meta(c).get("grade_id") for c in nb.cells if meta(c)]
    if None in ids or len(ids) != len(set(ids)):
        raise ValueError(f"{name}: every nbgrader cell needs a grade_id, and no two the same: {ids}")
    pairs = solutions_of(nb)
    for cell in nb.cells:
        m = meta(cell)
        if "### BEGIN SOLUTION" in cell.source and not m.get("solution"):
            raise ValueError(f"{name}: a cell with ### BEGIN SOLUTION is not marked as a solution cell")
        if is_check(cell) and m["grade_id"] not in pairs:
            raise ValueError(f"{name}: grade cell {m['grade_id']} has no solution cell: name one "
                             f"{m['grade_id']}_solution, or put it above the grade cell")
        if m.get("solution") and not is_written(cell) and m["grade_id"] not in pairs.values():
            raise ValueError(f"{name}: solution cell {m['grade_id']} has no grade cell: put a grade cell right "
                             f"below it (or, by labkit's naming rule, call the grade cell "
                             f"{m['grade_id'].removesuffix('_solution')} beside {m['grade_id']})")
        if is_written(cell):
            check_rubric(cell, name)


def check_rubric(cell, name):
    """Refuse a written question whose points or rubric do not add up (a typo would mis-grade a class)."""
    m = meta(cell)
    where = f"{name}: written question {m.get('grade_id')}"
    if not isinstance(m.get("points"), (int, float)) or m["points"] <= 0:
        raise ValueError(f"{where} needs points > 0 in its nbgrader metadata")
    rubric = cell.get("metadata", {}).get("labkit", {}).get("rubric")
    if rubric is None:
        return
    try:
        items = [(str(i["id"]), float(i["points"]), str(i["text"])) for i in rubric]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: each rubric item needs an id, points and a text") from None
    if len({i for i, _, _ in items}) != len(items):
        raise ValueError(f"{where}: rubric item ids repeat")
    positive = sum(p for _, p, _ in items if p > 0)
    if abs(positive - m["points"]) > 1e-9:
        raise ValueError(f"{where}: its rubric's positive items add up to {positive:g}, not its {m['points']:g} "
                         f"points")


# ---------------------------------------------------------------------------
# Release


def student_version(nb):
    """A copy of an instructor notebook with solutions stubbed, hidden checks and outputs removed."""
    nb = copy.deepcopy(nb)
    resources = {}
    for preprocessor in (ClearSolutions(), ClearHiddenTests(), ClearOutputPreprocessor()):
        nb, resources = preprocessor.preprocess(nb, resources)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("labkit", None)  # a written question's rubric (its model answer is gone with the solution)
    return nb


def release(out, source=None, force=False, check_reference=None):
    """Write the student version of every lab notebook into out/notebooks/.

    `check_reference(notebooks)` (labkit/grading/gradebook.py's, from the CLI) grades the instructor's solutions
    with their own checks first: a release whose reference fails a check is refused, nothing written.

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
    instructor, notebooks = {}, {}
    for path in paths:
        instructor[path.name] = read_notebook(path)
        check_marks(instructor[path.name], path.name)
        notebooks[path.name] = student_version(instructor[path.name])
    if check_reference is not None:
        check_reference(instructor)
    for name, nb in notebooks.items():
        text = nbformat.writes(nb)
        write_made(out, f"notebooks/{name}", (text if text.endswith("\n") else text + "\n").encode())
    print(f"labkit: wrote {len(notebooks)} student notebooks to {out / 'notebooks'}: {points_line(notebooks.values())}")
    if secret.make(paths[0].parent):
        print(f"labkit: made the grading secret {secret.path(paths[0].parent)}, where the hidden checks' inputs "
              f"come from: keep it, never hand it out (docs/grading.md)")
    return 0


def points_line(notebooks):
    """"6 exercises, 14 points; 9 written questions, 16 points; 30 points in all" for these notebooks."""
    code = [p for nb in notebooks for _, p in exercises(nb)]
    written = [float(meta(c).get("points", 0)) for nb in notebooks for c in nb.cells if is_written(c)]
    return (f"{len(code)} exercises, {sum(code):g} points; {len(written)} written questions, {sum(written):g} "
            f"points; {sum(code) + sum(written):g} points in all")


def is_student_version(path):
    """Whether a notebook is a student version labkit released: exercise marks, and no solution or hidden check.

    An instructor's notebook always holds its solutions, so it is never taken for one."""
    try:
        nb = json.loads(Path(path).read_bytes())
        sources = ["".join(cell.get("source", "")) for cell in nb["cells"]]
        marked = any(cell.get("metadata", {}).get("nbgrader") for cell in nb["cells"])
        rubrics = any(cell.get("metadata", {}).get("labkit") for cell in nb["cells"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return marked and not rubrics and not any("### BEGIN SOLUTION" in text or "### BEGIN HIDDEN TESTS" in text for text in sources)


def stubbed(cell):
    """A solution cell with its solution replaced by the stub, as the release has it."""
    cell = copy.deepcopy(cell)
    ClearSolutions()._replace_solution_region(cell, "python")
    cell.outputs, cell.execution_count = [], None
    return cell
