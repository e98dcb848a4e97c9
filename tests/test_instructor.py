"""The instructor's whole loop on the lab's own notebooks, with the commands the README gives, on a generated
class of 30: release, collect (15 students' folders, and a Canvas download of 15 more as flat files, some late),
grade, review the written answers in a real browser, export to Canvas; every merged total checked.

Each student solves at most one code exercise (one in seven solves none, one solves all six), so the class
costs the 2-core CPU 31 kernels: grading a notebook still at the release's stub needs no kernel."""

import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
from course import labkit, read_csv
from test_review import browser, wait_saved  # noqa: F401  (a fixture, and a helper)

from labkit.grading import assignment, review, written

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
DEADLINE = datetime(2026, 12, 1, 23, 59, tzinfo=timezone.utc)
ANSWER = "My runs say it: my D_x was 0.83 and my FID 41.2 (the table above); the reason is ..."
EXERCISE_ORDER = ("dcgan_networks", "gan_losses", "rebalancing_rule", "interpolation", "mlp_networks", "vae_pieces")
QUESTION_ORDER = ("samples_answer", "curves_answer", "pipeline_answer", "fid_answer", "nash_answer", "latent_answer",
                  "modes_answer", "mlp_answer", "bias_answer", "ablation_answer", "vae_answer")
STUDENTS = [f"s{i:02d}" for i in range(30)]
CANVAS = STUDENTS[15:]  # handed in through Canvas, as flat files
DAYS_LATE = {"s20": 2, "s25": 1, "s29": 3}  # 1.5, 0.5 and 2.2 days after the deadline: started days


def plan(student):
    """(code exercises solved, written questions answered, samples_answer's rubric items, other questions marked
    with every positive item?) for one generated student."""
    i = int(student[1:])
    solved = EXERCISE_ORDER if i == 0 else () if i % 7 == 6 else (EXERCISE_ORDER[i % 7],)
    answered = tuple(q for k, q in enumerate(QUESTION_ORDER) if i == 0 or k == 0 or (i + k) % 3 != 0)
    browser_items = ("a", "b", "c", "d") if i % 4 == 0 else ("a", "x") if i % 4 == 1 else ("a", "b") if i % 4 == 2 else ()
    return solved, answered, browser_items, i % 2 == 0


SOLVED = {s: plan(s)[0] for s in STUDENTS}
ANSWERED = {s: plan(s)[1] for s in STUDENTS}
BROWSER_MARKS = {s: plan(s)[2] for s in STUDENTS}


def cells_by_id(nb):
    return {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}


def hand_in(source, release, student):
    """{notebook file name: the student's notebook}, from the release, with their solutions and answers."""
    notebooks = {}
    for path in sorted(release.glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        instructor = cells_by_id(nbformat.read(str(source / path.name), as_version=4))
        mine = cells_by_id(nb)
        for name, _ in assignment.exercises(nb):
            if name in SOLVED[student]:
                mine[f"{name}_solution"].source = instructor[f"{name}_solution"].source
        for question in written.questions(nb, path.name):
            if question.name in ANSWERED[student]:
                mine[question.name].source = f"{ANSWER} ({student})"
        notebooks[path.name] = nb
    return notebooks


def save(nb, path, when):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    os.utime(path, (when.timestamp(), when.timestamp()))


def other_marks(student, questions):
    """{question: rubric items} a second grader gives outside the browser, for every answered question but the
    first: every positive item for an even student, the first item for an odd one."""
    every = plan(student)[3]
    return {q.name: [i["id"] for i in q.rubric if i["points"] > 0] if every else ["a"] for q in questions
            if q.name != "samples_answer" and q.name in ANSWERED[student]}


def expected_totals(source):
    """{student: (code, written, final)} from the plan above and the points the notebooks hold."""
    notebooks = {p.name: nbformat.read(str(p), as_version=4) for p in sorted(source.glob("*.ipynb"))}
    points = {name: p for nb in notebooks.values() for name, p in assignment.exercises(nb)}
    assert sorted(points) == sorted(EXERCISE_ORDER)
    questions = {q.name: q for q in written.questions_of(notebooks)}
    assert list(questions) == list(QUESTION_ORDER)
    found = {}
    for student in STUDENTS:
        code = sum(points[name] for name in SOLVED[student])
        marks = {"samples_answer": BROWSER_MARKS[student], **other_marks(student, questions.values())}
        prose = sum(written.score(questions[q], items) for q, items in marks.items())
        found[student] = (code, prose, round((code + prose) * (1 - 0.1 * DAYS_LATE.get(student, 0)), 2))
    return found


@pytest.fixture
def course(tmp_path):
    source = tmp_path / "instructor"
    shutil.copytree(NOTEBOOKS, source)
    return source


def test_the_instructors_loop_on_a_class_of_30_from_release_to_canvas(course, tmp_path, browser):  # noqa: F811
    source, clock = course, Clock()
    # 1. Release.
    assert labkit("assignment", "release", "--out", tmp_path / "release", "--source", source).returncode == 0
    clock.lap("release")
    release = tmp_path / "release" / "notebooks"
    # The class hands in: 15 in folders of their own, 15 through Canvas (flat files, three of them late).
    for student in STUDENTS:
        when = DEADLINE + (timedelta(days=DAYS_LATE[student] - 0.5) if student in DAYS_LATE else -timedelta(hours=1))
        for name, nb in hand_in(source, release, student).items():
            if student in CANVAS:
                late = "LATE_" if student in DAYS_LATE else ""
                save(nb, tmp_path / "canvas" / f"{student}_{late}{1000 + int(student[1:])}_{2000 + int(student[1:])}_{name}",
                     when)
            else:
                save(nb, tmp_path / "submissions" / student / name, when)
    # 2. Collect the Canvas download beside the students' folders.
    done = labkit("assignment", "collect", tmp_path / "canvas", "--out", tmp_path / "submissions")
    assert done.returncode == 0 and "15 students, 135 notebooks" in done.stdout, done.stdout + done.stderr
    clock.lap("collect")
    # 3. Grade.
    done = labkit("assignment", "grade", tmp_path / "submissions", "--out", tmp_path / "report", "--source", source,
                  "--jobs", "2", timeout=1800)
    assert done.returncode == 0, done.stderr
    assert "30 students" in done.stdout and "11 written questions (18 points) to review" in done.stdout
    clock.lap("grade")
    # 4. Review: the command's page, in the browser, for the first question; the others as a second grader would.
    mark_in_the_browser(tmp_path / "report", browser)
    clock.lap("review in the browser (30 answers)")
    questions, _ = written.load(tmp_path / "report")
    other = review.Marks(tmp_path / "report", "bo")
    for student in STUDENTS:
        for question_name, items in other_marks(student, questions).items():
            question = next(q for q in questions if q.name == question_name)
            for item in items:
                other.change(student, question, toggle=item)
    # 5. Export to Canvas, with a deadline and 10% off per started late day.
    done = labkit("assignment", "export", tmp_path / "report", "--format", "canvas", "--deadline",
                  DEADLINE.isoformat(), "--late-penalty-per-day", "10")
    assert done.returncode == 0 and "not reviewed" not in done.stdout, done.stdout + done.stderr
    clock.lap("export")
    print(f"class of 30, load {os.getloadavg()[0]:.1f}: {clock}")  # for the README's times (pytest -s)
    check_totals(tmp_path / "report", expected_totals(source), lab_points(source))


class Clock:
    """Wall time of each step, for the README: "release 21 s, collect 3 s, ..."."""

    def __init__(self):
        self.laps, self.last = [], time.monotonic()

    def lap(self, step):
        now = time.monotonic()
        self.laps.append(f"{step} {now - self.last:.0f} s")
        self.last = now

    def __str__(self):
        return ", ".join(self.laps)


def lab_points(source):
    """(code, written) points of the whole lab, read from the instructor's notebooks."""
    notebooks = {p.name: nbformat.read(str(p), as_version=4) for p in sorted(source.glob("*.ipynb"))}
    return (sum(p for nb in notebooks.values() for _, p in assignment.exercises(nb)),
            sum(q.points for q in written.questions_of(notebooks)))


def mark_in_the_browser(report, driver):
    """Start `labkit assignment review`, mark samples_answer for each student in the browser, stop it."""
    from selenium.webdriver.common.by import By

    server = subprocess.Popen([sys.executable, "-m", "labkit.cli", "assignment", "review", str(report),
                               "--grader", "ann-ta"], stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/\S+/", server.stdout.readline()).group(0)
        question = written.load(report)[0][0]
        assert question.name == "samples_answer"
        for slot, student in enumerate(review.shuffled(sorted(BROWSER_MARKS), "ann-ta", question), 1):
            driver.get(f"{url}q/1/{slot}")
            header = driver.find_element(By.TAG_NAME, "header").text
            assert f"Student {slot} of 30" in header and not any(re.search(rf"\\b{name}\\b", header)
                                                                 for name in BROWSER_MARKS)
            assert f"({student})" in driver.find_element(By.CSS_SELECTOR, ".answer").text  # their own answer
            for item in BROWSER_MARKS[student]:
                driver.find_element(By.CSS_SELECTOR, f".item[data-id={item}]").click()
                wait_saved(driver)
            driver.find_element(By.ID, "comment").send_keys(f"Seen, {slot}.")
            wait_saved(driver)
    finally:
        server.terminate()
        server.wait(timeout=60)


def check_totals(report, expected, lab):
    full = sum(lab)
    totals = {r["student"]: r for r in read_csv(report / "totals.csv")}
    assert sorted(totals) == sorted(expected)
    for student, (their_code, their_prose, final) in expected.items():
        row = totals[student]
        assert (float(row["code"]), float(row["written"]), float(row["final"])) == (their_code, their_prose, final), row
        assert float(row["total"]) == their_code + their_prose and float(row["max_points"]) == full
        assert row["not_reviewed"] == "0" and row["days_late"] == str(DAYS_LATE.get(student, 0)), row
    assert expected["s00"] == (lab[0], lab[1], full)  # s00 earns every point
    canvas = read_csv(report / "export-canvas.csv")
    assert canvas[0]["Student"] == "Points Possible" and float(canvas[0]["GAN lab"]) == full
    by_name = {r["Student"]: r for r in canvas[1:]}
    assert {name: float(r["GAN lab"]) for name, r in by_name.items()} == {s: f for s, (_, _, f) in expected.items()}
    assert by_name["s20"]["ID"] == "1020"  # Canvas's user id, from the download's file names
    merged = read_csv(report / "grades-merged.csv")
    assert len(merged) == 30 * (len(EXERCISE_ORDER) + len(QUESTION_ORDER))
    code, prose, _ = expected["s00"]
    feedback = (report / "students" / "s00" / "feedback.md").read_text()
    assert f"**{code + prose:g} / {full:g} points** (code {code:g} / {lab[0]:g}, written {prose:g} / {lab[1]:g})" \
        in feedback, feedback[:500]
    assert "> Seen," in feedback
    late = (report / "students" / "s20" / "feedback.md").read_text()
    assert "2 days after the deadline: -20%" in late and "*not answered*" in late
    assert (report / "summary.png").read_bytes().startswith(b"\x89PNG")
    assert "NotImplementedError" in (report / "summary.md").read_text()  # the commonest failure: not done
