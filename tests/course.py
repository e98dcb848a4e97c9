"""A tiny course for the tests of the written half (tests/test_written.py, test_review.py, test_instructor.py):
two notebooks marked as nbgrader's create_assignment marks them (its own `cell-...` ids), one code exercise and
two written questions, and helpers to run the `labkit` command and read its tables."""

import csv
import os
import subprocess
import sys

import nbformat

KERNEL = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}
RUBRIC = [{"id": "a", "points": 1, "text": "quotes the number their cell printed", "feedback": "You quoted your output."},
          {"id": "b", "points": 1, "text": "explains why it is that number", "feedback": "Right reason."},
          {"id": "x", "points": -1, "text": "no number of their own", "feedback": "Quote what your cell printed."}]


def labkit(*args, timeout=900, cwd=None):
    env = dict(os.environ, LABKIT_PROFILE="smoke")
    return subprocess.run([sys.executable, "-m", "labkit.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=cwd)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def marked(cell, grade_id, **flags):
    cell.metadata["nbgrader"] = {"grade": False, "solution": False, "task": False, "locked": False,
                                 "schema_version": 3, "grade_id": grade_id, **flags}
    return cell


def tiny_course(root):
    """The instructor's notebooks of a two-notebook course, in root/instructor; returns that folder."""
    new_code, new_md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    add = nbformat.v4.new_notebook(metadata=KERNEL, cells=[
        new_md("# Adding\n\nWrite `add(a, b)`."),
        marked(new_code("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION\n"),
               "cell-5eb1c0de", solution=True),
        marked(new_code("assert add(2, 3) == 5\n### BEGIN HIDDEN TESTS\nassert add(-4, 4) == 0\n"
                        "### END HIDDEN TESTS\n"), "cell-9a8b7c6d", grade=True, locked=True, points=2),
        new_code("print(add(2, 3))"),
        new_md("**Question** (2 points; answer in the cell below, with your own number). What did the cell print?"),
        marked(new_md("It printed 5, the sum of 2 and 3."), "add_answer", solution=True, grade=True, points=2),
    ])
    add.cells[-1].metadata["labkit"] = {"rubric": RUBRIC}
    words = nbformat.v4.new_notebook(metadata=KERNEL, cells=[
        new_md("# Words"),
        marked(new_md("Describe `add` in one sentence, in a cell below this one."), "words_task", task=True,
               locked=True, points=1),
    ])
    source = root / "instructor"
    source.mkdir(parents=True)
    nbformat.write(add, str(source / "01_add.ipynb"))
    nbformat.write(words, str(source / "02_words.ipynb"))
    return source
