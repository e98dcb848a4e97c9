"""nbgrader's own commands on a course marked for labkit, with docs/nbgrader_config.py: generate_assignment
removes model answers and rubrics, autograde scores the code, the formgrader (nbgrader's web page, served by
a real Jupyter server) takes a manual grade for a written answer, export writes nbgrader's grades.csv."""

import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
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
    # The formgrader: ada's written answer (2 points) graded by hand through its API, as its page does.
    with formgrader(course) as api:
        (submission,) = api("GET", "submitted_notebooks/lab/01_add")
        grades = api("GET", f"grades?submission_id={submission['id']}")
        written = [g for g in grades if g["needs_manual_grade"]]
        assert [g["name"] for g in written] == ["add_answer"] and written[0]["max_score"] == 2.0, grades
        assert api("PUT", f"grade/{written[0]['id']}", {"manual_score": 1.5})["manual_score"] == 1.5
    nbgrader(course, "export")
    (row,) = read_csv(course / "grades.csv")
    assert float(row["raw_score"]) == 3.5, row


class formgrader:
    """A Jupyter server with nbgrader's formgrader in `course`; `api(method, path, body)` calls its JSON API."""

    def __init__(self, course):
        self.course, self.token = course, secrets.token_hex(16)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]

    def __enter__(self):
        self.server = subprocess.Popen(
            [str(Path(sys.executable).with_name("jupyter")), "server", "--no-browser", "--allow-root",
             f"--ServerApp.port={self.port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={self.token}",
             "--ServerApp.jpserver_extensions={'nbgrader.server_extensions.formgrader': True}"],
            cwd=self.course, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(240):  # up to 2 minutes on a loaded machine
            try:
                self("GET", "status")
                return self
            except OSError:
                time.sleep(0.5)
        raise AssertionError("the Jupyter server with the formgrader did not start")

    def __call__(self, method, path, body=None):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/formgrader/api/{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=60) as reply:
            return json.loads(reply.read())

    def __exit__(self, *exc):
        self.server.terminate()
        self.server.wait(timeout=60)
