"""The written half of the assessment: answer cells in the lab's notebooks, what the release does with their
model answers and rubrics, and how grading lists them. A tiny course in nbgrader's own cell ids
(tests/course.py) checks that labkit takes an nbgrader notebook as nbgrader writes it."""

import json
import re
from pathlib import Path

import nbformat
import pytest
from course import labkit, read_csv, tiny_course

from labkit.grading import assignment, written

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
README = Path(__file__).parents[1] / "README.md"


def lab():
    return {p.name: nbformat.read(str(p), as_version=4) for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))}


def test_every_notebook_asks_for_a_written_answer_with_a_rubric_that_adds_up():
    notebooks = lab()
    questions = written.questions_of(notebooks)
    assert sorted({q.notebook for q in questions}) == sorted(notebooks)  # each of the nine asks
    for q in questions:
        assert q.points > 0 and "answer in the cell below" in q.prompt and "your own" in q.prompt, q.key
        assert sum(i["points"] for i in q.rubric if i["points"] > 0) == q.points, q.key
        assert all(i["text"] and i["feedback"] for i in q.rubric), q.key
        assert len(q.model.split()) > 60, f"{q.key}: the model answer is a sketch"
    for name, nb in notebooks.items():
        assignment.check_marks(nb, name)
    code = sum(p for nb in notebooks.values() for _, p in assignment.exercises(nb))
    prose = sum(q.points for q in questions)
    # The README states the split the notebooks hold.
    assert f"{code:g} points for code" in README.read_text() and f"{prose:g} for written answers" in README.read_text()


def test_a_release_keeps_the_answer_cells_and_drops_model_answers_and_rubrics(tmp_path):
    assert assignment.release(tmp_path, source=NOTEBOOKS) == 0
    for name, nb in lab().items():
        student = nbformat.read(str(tmp_path / "notebooks" / name), as_version=4)
        text = (tmp_path / "notebooks" / name).read_text()
        for q in written.questions(nb, name):
            cell = next(c for c in student.cells if c.metadata.get("nbgrader", {}).get("grade_id") == q.name)
            assert cell.source == written.STUB and cell.metadata["nbgrader"]["points"] == q.points
            assert q.model.splitlines()[0] not in text
            assert all(item["feedback"] not in text for item in q.rubric)
        assert '"labkit"' not in text and '"rubric"' not in text
        assert assignment.is_student_version(tmp_path / "notebooks" / name)
    assert not assignment.is_student_version(NOTEBOOKS / "02_training_curves.ipynb")  # written answers only


def test_a_mismarked_cell_is_named_in_full():
    nb = nbformat.read(str(NOTEBOOKS / "04_nash_equilibrium.ipynb"), as_version=4)
    solution = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "rebalancing_rule_solution")
    check = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "rebalancing_rule")
    nb.cells.remove(check)
    with pytest.raises(ValueError, match="solution cell rebalancing_rule_solution has no grade cell: .* "
                                         "call the grade cell rebalancing_rule beside"):
        assignment.check_marks(nb, "04")
    solution.metadata.nbgrader["grade_id"] = "cell-4d1f"
    nb.cells.insert(nb.cells.index(solution) + 1, check)
    assignment.check_marks(nb, "04")  # nbgrader's own id: the solution cell right above its grade cell
    assert assignment.solutions_of(nb) == {"rebalancing_rule": "cell-4d1f"}
    answer = next(c for c in nb.cells if written.is_answered(c.source) and c.metadata.get("labkit"))
    answer.metadata.labkit["rubric"][0]["points"] = 1.5
    with pytest.raises(ValueError, match="nash_answer: its rubric's positive items add up to 3, not its 2 points"):
        assignment.check_marks(nb, "04")


def test_grading_lists_written_questions_to_review_and_takes_nbgrader_ids(tmp_path):
    """A course written in nbgrader's create_assignment (cell-... ids): released, one student graded."""
    source = tiny_course(tmp_path)
    done = labkit("assignment", "release", "--out", tmp_path / "out", "--source", source)
    assert done.returncode == 0, done.stderr
    assert "1 exercises, 2 points; 2 written questions, 3 points; 5 points in all" in done.stdout
    student = tmp_path / "ada"
    student.mkdir()
    for name in ("01_add.ipynb", "02_words.ipynb"):
        nb = nbformat.read(str(tmp_path / "out" / "notebooks" / name), as_version=4)
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id == "cell-5eb1c0de":
                cell.source = "def add(a, b):\n    return a + b\n"
            if grade_id == "add_answer":
                cell.source = "It adds: 2 + 3 = 5 <script>alert(1)</script>"
        nbformat.write(nb, str(student / name))
    done = labkit("assignment", "grade", student, "--out", tmp_path / "report", "--source", source)
    assert done.returncode == 0, done.stderr
    assert "total: 2 / 2 points" in done.stdout and "2 written questions (3 points) to review" in done.stdout
    rows = {r["exercise"]: r for r in read_csv(tmp_path / "report" / "grades.csv")}
    assert rows["cell-9a8b7c6d"]["points"] == "2" and rows["cell-9a8b7c6d"]["passed"] == "True"
    assert rows["add_answer"]["message"].startswith("written answer: to be reviewed")
    assert rows["words_task"]["message"] == "written answer: not answered"
    assert [rows[q]["max_points"] for q in ("add_answer", "words_task")] == ["2", "1"]
    feedback = (tmp_path / "report" / "feedback.md").read_text()
    assert "## Written questions (3 points, reviewed by hand)" in feedback and "| add_answer | - / 2 |" in feedback
    shown = json.loads((tmp_path / "report" / "written" / "01_add.add_answer.json").read_text())["ada"]
    assert shown["answer"].endswith("<script>alert(1)</script>")  # stored as written; the page escapes it
    assert shown["outputs"] == []  # the release has no outputs; none are invented
    assert re.search(r"\d{4}-\d\d-\d\dT", json.loads((tmp_path / "report" / "written" / "questions.json")
                                                     .read_text())["submitted"]["ada"])


def worked_example(after="A worked example"):
    """The two cells of a worked example in docs/instructors.md: (solution cell, grade cell) sources."""
    text = (Path(__file__).parents[1] / "docs" / "instructors.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text.split(after)[1], re.S)[:2]
    return [block.split("\n", 1)[1] for block in blocks]  # without the comment that says which cell it is


def test_the_worked_example_of_the_instructors_guide_grades_right_and_wrong(tmp_path):
    from course import KERNEL, marked

    solution, check = worked_example()
    nb = nbformat.v4.new_notebook(metadata=KERNEL, cells=[
        marked(nbformat.v4.new_code_cell(solution), "d_accuracy_solution", solution=True),
        marked(nbformat.v4.new_code_cell(check), "d_accuracy", grade=True, locked=True, points=1)])
    source = tmp_path / "instructor"
    source.mkdir()
    nbformat.write(nb, str(source / "02_curves.ipynb"))
    for student, body in [("right", solution), ("wrong", solution.replace("(fake_logits < 0)", "(fake_logits > 0)"))]:
        (tmp_path / "class" / student).mkdir(parents=True)
        nb.cells[0].source = body
        nbformat.write(nb, str(tmp_path / "class" / student / "02_curves.ipynb"))
    done = labkit("assignment", "grade", tmp_path / "class", "--out", tmp_path / "report", "--source", source,
                  "--jobs", "1")
    assert done.returncode == 0, done.stderr
    rows = {r["student"]: r for r in read_csv(tmp_path / "report" / "gradebook.csv")}
    assert rows["right"]["points"] == "1" and rows["wrong"]["points"] == "0", rows


def test_a_check_can_hand_the_students_code_networks_built_in_the_box(tmp_path):
    """docs/instructors.md's count_parameters example: networks described by `build` and built again in the kernel,
    and a network of the student's own class handed back to the kernel that holds it."""
    from course import KERNEL, marked

    solution, check = worked_example(after="A check that hands the student's code a network")
    own = ("from torch import nn\n\n\nclass Tiny(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
           "        self.layer = nn.Linear(2, 3)\n        self.register_buffer('seen', torch.zeros(100))\n\n\n"
           + solution)
    nb = nbformat.v4.new_notebook(metadata=KERNEL, cells=[
        marked(nbformat.v4.new_code_cell(solution), "count_parameters_solution", solution=True),
        marked(nbformat.v4.new_code_cell(check), "count_parameters", grade=True, locked=True, points=1),
        marked(nbformat.v4.new_code_cell(own), "tiny_solution", solution=True),
        marked(nbformat.v4.new_code_cell("assert count_parameters(Tiny()) == 9\n"), "tiny", grade=True, locked=True,
               points=1)])
    source = tmp_path / "instructor"
    source.mkdir()
    nbformat.write(nb, str(source / "07_mlp.ipynb"))
    wrong = {"right": lambda text: text,
             "tensors": lambda text: text.replace("sum(p.numel() for p in network.parameters() if p.requires_grad)",
                                                  "len(list(network.parameters()))"),
             "buffers": lambda text: text.replace("sum(p.numel() for p in network.parameters() if p.requires_grad)",
                                                  "sum(t.numel() for t in network.state_dict().values())")}
    for student, edit in wrong.items():
        (tmp_path / "class" / student).mkdir(parents=True)
        nb.cells[0].source, nb.cells[2].source = edit(solution), edit(own)
        nbformat.write(nb, str(tmp_path / "class" / student / "07_mlp.ipynb"))
    done = labkit("assignment", "release", "--out", tmp_path / "release", "--source", source)
    assert done.returncode == 0, done.stderr
    done = labkit("assignment", "grade", tmp_path / "class", "--out", tmp_path / "report", "--source", source,
                  "--jobs", "1")
    assert done.returncode == 0, done.stderr
    points = {(r["student"], r["exercise"]): r["points"] for r in read_csv(tmp_path / "report" / "gradebook.csv")}
    assert points == {("right", "count_parameters"): "1", ("right", "tiny"): "1",
                      ("tensors", "count_parameters"): "0", ("tensors", "tiny"): "0",  # 2 tensors, not 16 numbers
                      ("buffers", "count_parameters"): "0",  # the public check passes; BatchNorm's statistics fail it
                      ("buffers", "tiny"): "0"}, points
    buffers = next(r for r in read_csv(tmp_path / "report" / "gradebook.csv")
                   if r["student"] == "buffers" and r["exercise"] == "count_parameters")
    assert buffers["message"] == "a hidden check failed", buffers  # nothing of the hidden network shown


def test_a_release_whose_reference_fails_its_own_check_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    from course import KERNEL, marked

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where a passing reference is remembered

    solution, check = worked_example()
    broken = check.replace("((real > 0).sum() + (fake < 0).sum()) / 96.0", "((real > 0).sum() + (fake < 0).sum()) / 64.0")
    assert broken != check
    source = tmp_path / "instructor"
    source.mkdir()
    for text in (broken, check):
        nb = nbformat.v4.new_notebook(metadata=KERNEL, cells=[
            marked(nbformat.v4.new_code_cell(solution), "d_accuracy_solution", solution=True),
            marked(nbformat.v4.new_code_cell(text), "d_accuracy", grade=True, locked=True, points=1)])
        nbformat.write(nb, str(source / "02_curves.ipynb"))
        done = labkit("assignment", "release", "--out", tmp_path / "release", "--source", source)
        if text is broken:
            assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
            assert ("the reference solution fails its own check, as every student would: 02_curves.ipynb d_accuracy: "
                    "a hidden check failed; fix the solution or the check") in done.stderr
            assert not (tmp_path / "release").exists()
    assert done.returncode == 0 and "solutions pass their own checks (1 exercise, graded now)" in done.stdout
    again = labkit("assignment", "release", "--out", tmp_path / "release", "--source", source, "--force")
    assert again.returncode == 0 and "unchanged since they were graded" in again.stdout, again.stdout
    # A cache that cannot be written (here a file where its folder would be): graded again, released all the same.
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    third = labkit("assignment", "release", "--out", tmp_path / "release", "--source", source, "--force")
    assert third.returncode == 0 and "graded now" in third.stdout and "labkit" not in third.stderr, third.stderr
    assert (tmp_path / "not-a-folder").read_text() == ""
