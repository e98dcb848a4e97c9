"""The instructor's whole loop on the lab's own notebooks, with the commands the README gives: release, collect
(students' folders, and a Canvas download of flat files), grade, review the written answers in a real browser,
export to Canvas; every merged total checked. Three students, to keep the grading short on a 2-core CPU."""

import os
import re
import shutil
import subprocess
import sys
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
# Who writes what: code exercises solved (the instructor's solution), written questions answered.
SOLVED = {"ann": "all", "bob": (), "carl": ("dcgan_networks", "gan_losses")}
ANSWERED = {"ann": "all", "bob": ("samples_answer", "nash_answer"), "carl": ("samples_answer",)}
# The marks: samples_answer in the browser, the others through the page's own saving code.
BROWSER_MARKS = {"ann": ("a", "b", "c", "d"), "bob": ("a", "x"), "carl": ("a", "b")}
OTHER_MARKS = {"ann": "all", "bob": {"nash_answer": ("a",)}, "carl": {}}


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
            if SOLVED[student] == "all" or name in SOLVED[student]:
                mine[f"{name}_solution"].source = instructor[f"{name}_solution"].source
        for question in written.questions(nb, path.name):
            if ANSWERED[student] == "all" or question.name in ANSWERED[student]:
                mine[question.name].source = f"{ANSWER} ({student})"
        notebooks[path.name] = nb
    return notebooks


def save(nb, path, when):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    os.utime(path, (when.timestamp(), when.timestamp()))


def expected_totals(source):
    """{student: (code, written, final)} from the plan above and the points the notebooks hold."""
    notebooks = {p.name: nbformat.read(str(p), as_version=4) for p in sorted(source.glob("*.ipynb"))}
    points = {name: p for nb in notebooks.values() for name, p in assignment.exercises(nb)}
    questions = {q.name: q for q in written.questions_of(notebooks)}
    found = {}
    for student in SOLVED:
        code = sum(p for name, p in points.items() if SOLVED[student] == "all" or name in SOLVED[student])
        marks = {"samples_answer": BROWSER_MARKS[student]}
        marks.update({q: [i["id"] for i in questions[q].rubric if i["points"] > 0] for q in questions
                      if q != "samples_answer"} if OTHER_MARKS[student] == "all" else OTHER_MARKS[student])
        prose = sum(written.score(questions[q], items) for q, items in marks.items())
        late = 2 if student == "carl" else 0  # handed in 1.5 days after the deadline: two started days
        found[student] = (code, prose, round((code + prose) * (1 - 0.1 * late), 2))
    return found


@pytest.fixture
def course(tmp_path):
    source = tmp_path / "instructor"
    shutil.copytree(NOTEBOOKS, source)
    return source


def test_the_instructors_loop_from_release_to_canvas(course, tmp_path, browser):  # noqa: F811
    source = course
    # 1. Release.
    assert labkit("assignment", "release", "--out", tmp_path / "release", "--source", source).returncode == 0
    release = tmp_path / "release" / "notebooks"
    # The class hands in: two in folders of their own, one through Canvas (flat files, late).
    for student in ("ann", "bob"):
        for name, nb in hand_in(source, release, student).items():
            save(nb, tmp_path / "submissions" / student / name, DEADLINE - timedelta(hours=1))
    for name, nb in hand_in(source, release, "carl").items():
        save(nb, tmp_path / "canvas" / f"carl_LATE_1003_2003_{name}", DEADLINE + timedelta(days=1.5))
    # 2. Collect the Canvas download beside the students' folders.
    done = labkit("assignment", "collect", tmp_path / "canvas", "--out", tmp_path / "submissions")
    assert done.returncode == 0 and "1 students, 9 notebooks" in done.stdout, done.stdout + done.stderr
    # 3. Grade.
    done = labkit("assignment", "grade", tmp_path / "submissions", "--out", tmp_path / "report", "--source", source,
                  "--jobs", "2", timeout=1800)
    assert done.returncode == 0, done.stderr
    assert "3 students" in done.stdout and "9 written questions (16 points) to review" in done.stdout
    # 4. Review: the command's page, in the browser, for the first question; the others as a second grader would.
    mark_in_the_browser(tmp_path / "report", browser)
    questions, _ = written.load(tmp_path / "report")
    other = review.Marks(tmp_path / "report", "bo")
    for student, plan in OTHER_MARKS.items():
        for question in questions[1:]:
            items = [i["id"] for i in question.rubric if i["points"] > 0] if plan == "all" else plan.get(question.name, ())
            for item in items:
                other.change(student, question, toggle=item)
    # 5. Export to Canvas, with a deadline and 10% off per late day.
    done = labkit("assignment", "export", tmp_path / "report", "--format", "canvas", "--deadline",
                  DEADLINE.isoformat(), "--late-penalty-per-day", "10")
    assert done.returncode == 0 and "not reviewed" not in done.stdout, done.stdout + done.stderr
    check_totals(tmp_path / "report", expected_totals(source))


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
            assert f"Student {slot} of 3" in header and not any(name in header for name in BROWSER_MARKS)
            assert f"({student})" in driver.find_element(By.CSS_SELECTOR, ".answer").text  # their own answer
            for item in BROWSER_MARKS[student]:
                driver.find_element(By.CSS_SELECTOR, f".item[data-id={item}]").click()
                wait_saved(driver)
            driver.find_element(By.ID, "comment").send_keys(f"Seen, {slot}.")
            wait_saved(driver)
    finally:
        server.terminate()
        server.wait(timeout=60)


def check_totals(report, expected):
    code, prose, full = expected["ann"]  # ann earns every point: the lab's total, read from the notebooks
    totals = {r["student"]: r for r in read_csv(report / "totals.csv")}
    assert sorted(totals) == sorted(expected)
    for student, (their_code, their_prose, final) in expected.items():
        row = totals[student]
        assert (float(row["code"]), float(row["written"]), float(row["final"])) == (their_code, their_prose, final), row
        assert float(row["total"]) == their_code + their_prose and float(row["max_points"]) == full
        assert row["not_reviewed"] == "0"
    assert totals["carl"]["days_late"] == "2" and totals["ann"]["days_late"] == "0"
    canvas = read_csv(report / "export-canvas.csv")
    assert canvas[0]["Student"] == "Points Possible" and float(canvas[0]["GAN lab"]) == full
    by_name = {r["Student"]: r for r in canvas[1:]}
    assert {name: float(r["GAN lab"]) for name, r in by_name.items()} == {s: f for s, (_, _, f) in expected.items()}
    assert by_name["carl"]["ID"] == "1003"  # Canvas's user id, from the download's file names
    merged = read_csv(report / "grades-merged.csv")
    assert len(merged) == 3 * (6 + 9)
    feedback = (report / "students" / "ann" / "feedback.md").read_text()
    assert f"**{full:g} / {full:g} points** (code {code:g} / {code:g}, written {prose:g} / {prose:g})" in feedback
    assert "> Seen," in feedback
    late = (report / "students" / "carl" / "feedback.md").read_text()
    assert "2 days after the deadline: -20%" in late and "*not answered*" in late
    assert (report / "summary.png").read_bytes().startswith(b"\x89PNG")
    assert "NotImplementedError" in (report / "summary.md").read_text()  # the commonest failure: not done
