"""The written half of the assessment: questions answered in prose, graded by hand with a rubric.

A written question is nbgrader's "manually graded answer" cell: a markdown cell whose
metadata is

    nbgrader: {solution: true, grade: true, task: false, points: 2, grade_id: nash_answer, ...}
    labkit:   {rubric: [{id: a, points: 0.5, text: "what the grader looks for",
                         feedback: "what the student reads when it is ticked"}, ...]}

(nbgrader's "manually graded task" cell, task: true, is one too.) The instructor's
notebook holds a model answer in the cell; the release replaces it with "YOUR ANSWER
HERE" and removes the rubric (assignment.student_version). A rubric item with negative
points is a deduction; the items with positive points add up to the question's points,
and a student's points are the ticked items' sum, kept between 0 and the question's points.

Grading a class (gradebook.grade) lists every written question in the gradebook as
"to be reviewed" and writes what the review page shows into the report folder:

    written/questions.json      each question: its notebook, points, prompt, rubric, model answer;
                                each student's submission time (for a late policy)
    written/<notebook>.<question>.json
                                each student's answer and the outputs of their notebook above
                                it (figures as PNG, tables and printed text), for the review page

The marks the graders give live in written.csv (labkit/grading/review.py).
"""

import base64
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .assignment import BadNotebook, is_written, meta, read_notebook
from .submissions import find_notebook

STUB = "YOUR ANSWER HERE"  # what nbgrader's ClearSolutions leaves in a markdown solution cell
MAX_OUTPUTS = 16  # outputs shown beside one answer (the lab's notebooks have at most about 10 per question)
MAX_TEXT = 4000  # characters of one text output
MAX_IMAGE_BYTES = 4 * 2**20


@dataclass(frozen=True)
class Question:
    """One written question, as the instructor's notebook defines it."""

    notebook: str
    name: str  # the answer cell's grade_id
    points: float
    prompt: str  # the markdown cell above the answer cell
    rubric: tuple  # ({id, points, text, feedback}, ...)
    model: str  # the instructor's model answer

    @property
    def key(self):
        """The question's name across the lab: `<notebook stem>.<grade_id>`."""
        return f"{Path(self.notebook).stem}.{self.name}"


def questions(nb, notebook=""):
    """[Question] of a notebook, in order: its manually graded answer and task cells."""
    found = []
    for index, cell in enumerate(nb.cells):
        if is_written(cell):
            above = nb.cells[index - 1] if index else None
            prompt = above.source if above is not None and above.cell_type == "markdown" else ""
            points = float(meta(cell).get("points", 0))
            found.append(Question(notebook, meta(cell)["grade_id"], points, prompt, rubric_of(cell, points),
                                  cell.source))
    return found


def questions_of(notebooks):
    """[Question] of the instructor's notebooks, {file name: notebook}, in order."""
    return [q for name, nb in notebooks.items() for q in questions(nb, name)]


def rubric_of(cell, points):
    """A cell's rubric items; a cell without one gets a single item worth all its points."""
    rubric = cell.get("metadata", {}).get("labkit", {}).get("rubric")
    if not rubric:
        return ({"id": "all", "points": points, "text": "a complete, correct answer", "feedback": ""},)
    return tuple({"id": str(i["id"]), "points": float(i["points"]), "text": str(i.get("text", "")),
                  "feedback": str(i.get("feedback", ""))} for i in rubric)


def score(question, ticked):
    """The points for the ticked rubric item ids: their sum, kept between 0 and the question's points."""
    total = sum(i["points"] for i in question.rubric if i["id"] in ticked)
    return min(max(total, 0.0), question.points)


# ---------------------------------------------------------------------------
# What a student wrote, and what their notebook showed


def is_answered(text):
    return bool(text.strip()) and text.strip() != STUB


def student_answers(nb, notebook_questions):
    """{question name: {"answer": text, "outputs": [...]}} of a student's notebook.

    The outputs are those of the code cells between the previous written question (or the
    notebook's start) and the answer cell: what the question asks the student to read. A task
    cell's answer is the markdown the student wrote below it (task_answer)."""
    found, outputs = {}, []
    names = {q.name for q in notebook_questions}
    for index, cell in enumerate(nb.cells):
        name = meta(cell).get("grade_id")
        if name in names and (cell.cell_type == "markdown" or meta(cell).get("task")):
            found[name] = {"answer": task_answer(nb.cells[index + 1:]) if meta(cell).get("task") else cell.source,
                           "outputs": outputs[:MAX_OUTPUTS]}
            outputs = []
        elif cell.cell_type == "code":
            outputs += [shown for output in cell.get("outputs", []) if (shown := displayable(output))]
    for name in names - set(found):  # a deleted answer cell: no answer
        found[name] = {"answer": "", "outputs": []}
    return found


def task_answer(below):
    """A task cell's answer: the markdown cells the student added right below it (nbgrader's manually graded
    task: the student answers in cells of their own)."""
    found = []
    for cell in below:
        if meta(cell):
            break
        if cell.cell_type == "markdown":
            found.append(cell.source)
    return "\n\n".join(found)


def displayable(output):
    """An output as {"png": base64} or {"text": ...}, or None. Never the student's HTML or JavaScript:
    a PNG is checked to be one, and every text is shown as text."""
    data = output.get("data", {})
    if "image/png" in data:
        png = "".join(data["image/png"]) if isinstance(data["image/png"], list) else str(data["image/png"])
        try:
            raw = base64.b64decode(png, validate=True)
        except ValueError:
            return None
        if raw.startswith(b"\x89PNG\r\n\x1a\n") and len(raw) <= MAX_IMAGE_BYTES:
            return {"png": base64.b64encode(raw).decode()}
        return None
    text = output.get("text") if output.get("output_type") == "stream" else data.get("text/plain")
    if text:
        text = "".join(text) if isinstance(text, list) else str(text)
        return {"text": text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "\n..."}
    return None


def collect(found, all_questions):
    """({question key: {student: answer}}, {student: submission time}) of a class.

    found: [(student, their folder)]. A student's submission time is the newest modification
    time of their notebooks (a download's times: labkit/grading/collect.py keeps them)."""
    answers = {q.key: {} for q in all_questions}
    submitted = {}
    for student, folder in found:
        times = []
        for notebook in dict.fromkeys(q.notebook for q in all_questions):
            mine = [q for q in all_questions if q.notebook == notebook]
            try:
                path = find_notebook(Path(folder), notebook)
                nb = read_notebook(path)
                times.append(path.stat().st_mtime)
            except (FileNotFoundError, BadNotebook, ValueError, OSError):
                nb = None
            written = student_answers(nb, mine) if nb is not None else {}
            for q in mine:
                answers[q.key][student] = written.get(q.name, {"answer": "", "outputs": []})
        submitted[student] = iso(max(times)) if times else ""
    return answers, submitted


def iso(timestamp):
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------
# The report folder


def report_names(all_questions):
    return ["written/questions.json", *(f"written/{q.key}.json" for q in all_questions)]


def report_files(all_questions, answers, submitted, submissions):
    """{name: text} of the written part of a report (see the module docstring)."""
    files = {"written/questions.json": json.dumps(
        {"questions": [{**asdict(q), "key": q.key} for q in all_questions], "submitted": submitted,
         "submissions": str(Path(submissions).resolve())}, indent=1)}
    for q in all_questions:
        files[f"written/{q.key}.json"] = json.dumps(answers[q.key])
    return files


def rows(student, all_questions, answers):
    """A student's gradebook rows for the written questions: no points until reviewed."""
    found = []
    for q in all_questions:
        answered = is_answered(answers[q.key].get(student, {}).get("answer", ""))
        found.append(dict(student=student, notebook=q.notebook, exercise=q.name, points=0.0, max_points=q.points,
                          passed=False, copy_of="", seed=None, written=True,
                          message="written answer: to be reviewed (labkit assignment review REPORT)" if answered
                          else "written answer: not answered"))
    return found


def submissions_folder(reports):
    """The folder of submissions graded into a report (None if unknown)."""
    data = json.loads((Path(reports) / "written" / "questions.json").read_text())
    return Path(data["submissions"]) if data.get("submissions") else None


def load(reports):
    """(questions, submitted) recorded in a report folder by `labkit assignment grade`."""
    path = Path(reports) / "written" / "questions.json"
    if not path.is_file():
        raise FileNotFoundError(f"no written answers in {reports}: grade the class into it first "
                                f"(labkit assignment grade SUBMISSIONS --out {reports})")
    data = json.loads(path.read_text())
    found = [Question(q["notebook"], q["name"], q["points"], q["prompt"], tuple(q["rubric"]), q["model"])
             for q in data["questions"]]
    return found, data.get("submitted", {})


def load_answers(reports, question):
    """{student: {"answer", "outputs"}} of one question, from the report folder."""
    return json.loads((Path(reports) / "written" / f"{question.key}.json").read_text())


def feedback_lines(rows):
    """The written part of a student's feedback.md, before review: each question and its points to come."""
    if not rows:
        return []
    lines = ["", f"## Written questions ({sum(r['max_points'] for r in rows):g} points, reviewed by hand)", "",
             "| notebook | question | points | |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['notebook']} | {r['exercise']} | - / {r['max_points']:g} | {r['message']} |")
    return lines
