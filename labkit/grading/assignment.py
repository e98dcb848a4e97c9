"""The lab as an assignment: a student release of the notebooks, and grading what students wrote.

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
    labkit assignment grade SUBMISSION --out REPORT

`release` uses nbgrader's own preprocessors (ClearSolutions, ClearHiddenTests)
and nbconvert's ClearOutput. `grade` does not use `nbgrader autograde`, which
needs a gradebook database, a course folder layout and its own executor:
labkit grades a plain folder of notebooks with nbval, the tool the course's
CI already runs, so a grade is exactly "these checks passed under nbval".
It rebuilds each notebook from the instructor's cells (hidden checks
included, so editing a check earns nothing) and the student's solution
cells, runs the rebuilt notebooks with `pytest --nbval-lax` in the profile
that LABKIT_PROFILE names, and writes grades.csv. Each exercise cell has its
own time limit; a solution that loops forever loses its exercise, and one
that kills the kernel is graded again with that exercise left blank, so
it loses only that exercise.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..machinery.runs import atomic_path, write_csv

GRADE_COLUMNS = ("notebook", "exercise", "points", "max_points", "passed", "message")
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
    """Write the student version of every lab notebook into out/notebooks/.

    Checked before anything is written (labkit/machinery/targets.py): out/notebooks
    must not be the instructor's notebooks it reads (`cd LAB && release --out .`),
    nor a link; a notebook already there is replaced only with `force`, and only if
    labkit released it (listed in out/.labkit-made.json, or a student version: no
    solution and no hidden check in it). Any other file is never replaced.
    """
    import nbformat

    from ..machinery.runs import check_writable
    from ..machinery.targets import output_folder, write_made

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


# ---------------------------------------------------------------------------
# Grading


def find_submission(folder, name):
    """The submitted notebook for instructor notebook `name`: by file name, or by its NN_ number."""
    for base in (folder, folder / "notebooks"):
        if (base / name).is_file():
            return base / name
    for base in (folder, folder / "notebooks"):
        matches = sorted(base.glob(name[:3] + "*.ipynb"))
        if matches:
            return matches[0]
    return None


def assemble(source_nb, student_nb):
    """The notebook to grade: the instructor's cells, with the student's solution cells in their places.

    Solution cells are matched by grade_id. A solution the student deleted is
    left blank (the stub). Cells the student added right after a solution
    cell (a helper, say) come with it; other added cells are left out.
    """
    student_cells = student_nb.cells
    by_id = {meta(c)["grade_id"]: i for i, c in enumerate(student_cells) if meta(c).get("grade_id")}
    nb = copy.deepcopy(source_nb)
    cells = []
    for cell in nb.cells:
        m = meta(cell)
        if not m.get("solution"):
            cells.append(cell)
            continue
        index = by_id.get(m["grade_id"])
        if index is None:
            cells.append(stubbed(cell))
            continue
        mine = copy.deepcopy(student_cells[index])
        mine.metadata["nbgrader"] = dict(m)  # the instructor's marks, whatever the submission says
        mine.outputs, mine.execution_count = [], None
        cells.append(mine)
        for extra in student_cells[index + 1:]:
            if meta(extra) or extra.cell_type != "code":
                break
            extra = copy.deepcopy(extra)
            extra.outputs, extra.execution_count = [], None
            cells.append(extra)
    nb.cells = cells
    nb.metadata.pop("widgets", None)
    return nb


def stubbed(cell):
    """A solution cell with its solution replaced by the stub, as the release has it."""
    from nbgrader.preprocessors import ClearSolutions

    cell = copy.deepcopy(cell)
    ClearSolutions()._replace_solution_region(cell, "python")
    cell.outputs, cell.execution_count = [], None
    return cell


def graded_part(nb):
    """The notebook up to its last grade cell: what comes after cannot change a grade."""
    last = max((i for i, c in enumerate(nb.cells) if meta(c).get("grade")), default=-1)
    nb = copy.deepcopy(nb)
    nb.cells = nb.cells[:last + 1]
    return nb


def run_nbval(paths, work, timeout, log):
    """Run notebooks with nbval (and labkit's grading plugin); {notebook: [cell records]}."""
    results = work / "results.jsonl"
    results.unlink(missing_ok=True)
    (work / "pytest.ini").write_text("[pytest]\naddopts =\n")
    command = [sys.executable, "-m", "pytest", "-c", str(work / "pytest.ini"), "--rootdir", str(work),
               "-p", "labkit.grading.nbval_plugin", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
               "--labkit-results", str(results), "--labkit-exercise-timeout", str(timeout), "-q",
               *[str(p) for p in paths]]
    with open(log, "a") as f:
        f.write(f"$ {' '.join(command)}\n")
        f.flush()
        subprocess.run(command, cwd=work, stdout=f, stderr=subprocess.STDOUT, env=grading_env())
    records = {}
    if results.is_file():
        for line in results.read_text().splitlines():
            record = json.loads(line)
            records.setdefault(record["notebook"], []).append(record)
    return records


def grading_env():
    """The graders' environment: the same runs root as labkit would use here, so labkit's own
    runs (the same for every student) are trained once, not once per submission."""
    from ..machinery.runs import runs_root

    env = dict(os.environ)
    env.setdefault("LABKIT_RUNS", str(runs_root().resolve()))
    env.setdefault("MPLBACKEND", "Agg")
    return env


def score(nb, records):
    """{exercise: (passed, message)} from a notebook's cell records."""
    by_id = {r["nbgrader"].get("grade_id"): r for r in records if r["nbgrader"].get("grade_id")}
    out = {}
    for name, _ in exercises(nb):
        check, solution = by_id.get(name), by_id.get(f"{name}_solution")
        if check is None:
            out[name] = (False, "its check did not run (the notebook stopped before it)")
        elif solution is not None and not solution["passed"]:
            out[name] = (False, not_done(solution["message"]) or f"solution cell: {solution['message']}")
        else:
            out[name] = (check["passed"], not_done(check["message"]) or check["message"])
    return out


def not_done(message):
    """The message for an exercise whose code still raises the release's NotImplementedError, else None."""
    if message.startswith("NotImplementedError"):
        return "not done: the code still raises NotImplementedError (replace it with your solution)"
    return None


def culprit(nb, records):
    """The exercise to blame if the kernel died in this notebook, else None."""
    dead = [r for r in records if not r["passed"] and "kernel died" in r["message"]]
    if not dead:
        return None
    cell_ids = [meta(c).get("grade_id") for c in nb.cells if c.cell_type == "code"]
    last = None
    for number, grade_id in enumerate(cell_ids):
        if grade_id and meta_is_exercise(nb, grade_id):
            last = grade_id[:-len("_solution")] if grade_id.endswith("_solution") else grade_id
        if number == dead[0]["cell"]:
            return last
    return last


def meta_is_exercise(nb, grade_id):
    return any(meta(c).get("grade_id") == grade_id and (meta(c).get("solution") or meta(c).get("grade"))
               for c in nb.cells)


def grade(submission, out, source=None, timeout=None):
    """Grade a folder of submitted notebooks into out/grades.csv; the exit status (0, or 2 on bad input)."""
    import nbformat

    from ..machinery.runs import check_writable

    submission, out = Path(submission), Path(out)
    if not submission.is_dir():
        raise ValueError(f"no folder {submission} to grade")
    from ..machinery.runs import check_folder_path

    check_folder_path(out, "the report")
    sources = lab_notebooks(source)
    check_writable(out)
    timeout = timeout or 120
    started = time.time()
    work = out / "graded"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = out / "grading.log"
    log.write_text("")

    problems, graded, instructor = [], {}, {}
    for path in sources:
        nb = read_notebook(path)
        check_marks(nb, path.name)
        instructor[path.name] = nb
        if not exercises(nb):
            continue
        found = find_submission(submission, path.name)
        if found is None:
            problems.append(f"{path.name} is missing from {submission}: scored 0")
            continue
        try:
            graded[path.name] = graded_part(assemble(nb, read_notebook(found)))
        except BadNotebook as err:
            problems.append(f"{err}: scored 0")

    marks, lost = {}, {}  # {notebook: {exercise: (passed, message)}}, {notebook: {exercise: why}}
    todo = dict(graded)
    while todo:
        for name, nb in todo.items():
            nbformat.write(nb, str(work / name))
        records = run_nbval([work / name for name in todo], work, timeout, log)
        retry = {}
        for name, nb in todo.items():
            marks[name] = score(nb, records.get(name, []))
            blamed = culprit(nb, records.get(name, []))
            if blamed is not None and blamed not in lost.get(name, {}):
                # Grade the rest again, with the exercise whose code killed the kernel left blank.
                lost.setdefault(name, {})[blamed] = "the kernel died while running this exercise's code"
                retry[name] = blank(nb, blamed, instructor[name])
        todo = retry

    rows = []
    for name, nb in instructor.items():
        for exercise, points in exercises(nb):
            if name not in graded:
                passed, message = False, "notebook missing or unreadable"
            elif exercise in lost.get(name, {}):
                passed, message = False, lost[name][exercise]
            else:
                passed, message = marks.get(name, {}).get(exercise, (False, "not graded"))
            rows.append(dict(notebook=name, exercise=exercise, points=points if passed else 0.0,
                             max_points=points, passed=passed, message=message))
    write_grades(out / "grades.csv", rows)
    total, possible = sum(r["points"] for r in rows), sum(r["max_points"] for r in rows)
    for name in instructor:
        mine = [r for r in rows if r["notebook"] == name]
        if mine:
            print(f"{name:<32} {sum(r['points'] for r in mine):g} / {sum(r['max_points'] for r in mine):g}")
    print(f"total: {total:g} / {possible:g} points ({len(rows)} exercises, graded in "
          f"{time.time() - started:.0f} s; details in {out / 'grades.csv'})")
    for problem in problems:
        print(f"labkit: error: {problem}", file=sys.stderr)
    return 2 if problems else 0


def blank(nb, exercise, source_nb):
    """`nb` with the solution of `exercise` replaced by the release's stub of the instructor's cell."""
    solution = f"{exercise}_solution"
    stub = stubbed(next(c for c in source_nb.cells if meta(c).get("grade_id") == solution))
    nb = copy.deepcopy(nb)
    nb.cells = [stub if meta(c).get("grade_id") == solution else c for c in nb.cells]
    return nb


def write_grades(path, rows):
    write_csv(path, GRADE_COLUMNS, [{**row, "points": f"{row['points']:g}", "max_points": f"{row['max_points']:g}"}
                                    for row in rows])
