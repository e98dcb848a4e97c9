"""nbgrader's own commands on a course marked for labkit, with docs/nbgrader_config.py: generate_assignment
removes model answers and rubrics, autograde scores the code, export writes nbgrader's grades.csv.
(The formgrader, a web page, is not run.)"""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
from course import read_csv, tiny_course

CONFIG = Path(__file__).parents[1] / "docs" / "nbgrader_config.py"


def nbgrader(course, *args):
    done = subprocess.run([str(Path(sys.executable).with_name("nbgrader")), *args], cwd=course,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_nbgrader_generates_autogrades_and_exports_with_labkits_configuration(tmp_path):
    course = tmp_path / "course"
    shutil.move(str(tiny_course(tmp_path)), str(course / "source" / "lab"))
    shutil.copy(CONFIG, course / "nbgrader_config.py")
    nbgrader(course, "generate_assignment", "lab")
    released = course / "release" / "lab" / "01_add.ipynb"
    text = released.read_text()
    assert "rubric" not in text and "It printed 5" not in text and "return a + b" not in text
    student = course / "submitted" / "ada" / "lab"
    student.mkdir(parents=True)
    for name in ("01_add.ipynb", "02_words.ipynb"):
        nb = nbformat.read(str(course / "release" / "lab" / name), as_version=4)
        for cell in nb.cells:
            cell.source = cell.source.replace("    # YOUR CODE HERE\n    raise NotImplementedError()", "    return a + b")
            cell.source = cell.source.replace("YOUR ANSWER HERE", "It printed 5.")
        nbformat.write(nb, str(student / name))
    nbgrader(course, "autograde", "lab", "--create")
    nbgrader(course, "export")
    (row,) = read_csv(course / "grades.csv")
    assert row["student_id"] == "ada" and float(row["raw_score"]) == 2.0 and float(row["max_score"]) == 5.0
