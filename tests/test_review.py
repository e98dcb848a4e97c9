"""Grading written answers in the review page, in a real browser (headless Chromium, driven by Selenium):
rubric clicks and a comment saved at once to written.csv, kept over a reload; students anonymised and
shuffled per grader; a student's HTML never runs; two graders on one report lose nothing."""

import base64
import io
import shutil
import threading
from pathlib import Path

import nbformat
import pytest
from course import labkit, read_csv, tiny_course

from labkit.grading import review, written

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ANSWERS = {"ada_lovelace": "It printed **5**: 2 + 3.",
           "ben_okri": "5, I think",
           "cy_twombly": "<script>document.title = 'pwned'</script><img src=x onerror=\"document.title='pwned'\"> 5"}


def png_bytes():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 5])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def hand_in(release, folder, answer, figure):
    """A student's notebooks: the solution, the answer, and outputs as running the notebook would leave them."""
    folder.mkdir(parents=True)
    for name in ("01_add.ipynb", "02_words.ipynb"):
        nb = nbformat.read(str(release / name), as_version=4)
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id == "cell-5eb1c0de":
                cell.source = "def add(a, b):\n    return a + b\n"
            elif grade_id == "add_answer":
                cell.source = answer
            elif cell.cell_type == "code" and cell.source.startswith("print(add"):
                cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="5\n"),
                                nbformat.v4.new_output("display_data", data={
                                    "image/png": base64.b64encode(figure).decode(), "text/plain": "<Figure>"}),
                                nbformat.v4.new_output("display_data", data={
                                    "text/html": "<script>document.title='pwned'</script>", "text/plain": "a table"})]
        if name == "02_words.ipynb":
            nb.cells.append(nbformat.v4.new_markdown_cell(f"add sums two numbers ({folder.name})"))
        nbformat.write(nb, str(folder / name))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A class of three graded into a report folder (the tiny course of tests/course.py)."""
    root = tmp_path_factory.mktemp("review")
    source = tiny_course(root)
    assert labkit("assignment", "release", "--out", root / "out", "--source", source).returncode == 0
    figure = png_bytes()
    for student, answer in ANSWERS.items():
        hand_in(root / "out" / "notebooks", root / "class" / student, answer, figure)
    done = labkit("assignment", "grade", root / "class", "--out", root / "report", "--source", source, "--jobs", "1")
    assert done.returncode == 0, done.stderr
    return root / "report"


@pytest.fixture
def fresh(report, tmp_path):
    """A copy of the graded report, for one test's marks."""
    shutil.copytree(report, tmp_path / "report")
    return tmp_path / "report"


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    yield driver
    driver.quit()


@pytest.fixture
def served(fresh):
    httpd = review.server(fresh, "ann")
    review.serve_in_thread(httpd)
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def wait_saved(driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "saved").text == "saved")


def test_a_grader_marks_an_answer_in_the_browser_and_a_reload_keeps_it(served, browser, fresh):
    from selenium.webdriver.common.by import By

    question = written.load(fresh)[0][0]
    order = review.shuffled(sorted(ANSWERS), "ann", question)
    browser.get(review.url(served))
    assert "Written questions, 3 students" in browser.page_source and "0 / 3" in browser.page_source
    browser.find_element(By.LINK_TEXT, "01_add.ipynb: add_answer").click()
    assert "Student 1 of 3" in browser.page_source
    assert not any(name in browser.page_source for name in ANSWERS)  # anonymised
    first = order[0]
    images = browser.find_elements(By.CSS_SELECTOR, ".outputs img")
    assert len(images) == 1 and browser.execute_script("return arguments[0].naturalWidth", images[0]) > 0
    assert [p.text for p in browser.find_elements(By.CSS_SELECTOR, ".outputs pre")] == ["5", "a table"]
    items = {b.get_attribute("data-id"): b for b in browser.find_elements(By.CSS_SELECTOR, ".item")}
    assert list(items) == ["a", "b", "x"]
    for item in ("a", "b", "x", "x"):  # one click ticks an item, a second one unticks it
        items[item].click()
        wait_saved(browser)
    browser.find_element(By.ID, "comment").send_keys("Good; say why 5 is the sum.")
    wait_saved(browser)
    assert browser.find_element(By.ID, "points").text == "2"
    browser.refresh()
    pressed = [b.get_attribute("data-id") for b in browser.find_elements(By.CSS_SELECTOR, ".item[aria-pressed=true]")]
    assert pressed == ["a", "b"] and browser.find_element(By.ID, "points").text == "2"
    assert browser.find_element(By.ID, "comment").get_attribute("value") == "Good; say why 5 is the sum."
    assert read_csv(fresh / "written.csv") == [{"student": first, "question": "01_add.add_answer", "rubric_items": "a;b",
                                                "points": "2", "comment": "Good; say why 5 is the sum.", "grader": "ann"}]
    browser.find_element(By.ID, "next").click()  # the next student, not marked yet
    assert "Student 2 of 3" in browser.page_source and browser.find_element(By.ID, "points").text == "-"
    browser.find_element(By.CSS_SELECTOR, ".item[data-id=x]").click()
    wait_saved(browser)
    assert browser.find_element(By.ID, "points").text == "0"  # a deduction alone: never below 0
    assert {r["student"]: r["points"] for r in read_csv(fresh / "written.csv")} == {first: "2", order[1]: "0"}


def test_a_students_html_is_shown_as_text_and_never_runs(served, browser, fresh):
    from selenium.webdriver.common.by import By

    question = written.load(fresh)[0][0]
    slot = review.shuffled(sorted(ANSWERS), "ann", question).index("cy_twombly") + 1
    browser.get(f"{review.url(served)}q/1/{slot}")
    answer = browser.find_element(By.CSS_SELECTOR, ".answer").text
    assert "<script>document.title = 'pwned'</script>" in answer and "onerror" in answer
    assert browser.title == "01_add.add_answer: student %d" % slot  # no script of the student's ran
    assert browser.find_elements(By.CSS_SELECTOR, ".answer img, .answer script") == []


def test_the_order_is_shuffled_the_same_for_one_grader_and_differently_for_another():
    question = written.Question("01_x.ipynb", "q", 1.0, "", (), "")
    students = [f"student{i:02d}" for i in range(30)]
    ann = review.shuffled(students, "ann", question)
    assert ann == review.shuffled(list(reversed(students)), "ann", question) and sorted(ann) == students
    assert ann != students and review.shuffled(students, "bob", question) != ann


def test_two_graders_on_one_report_lose_none_of_each_others_marks(fresh):
    questions = written.load(fresh)[0]
    graders = [review.Marks(fresh, "ann"), review.Marks(fresh, "bob")]

    def mark(marks, question):
        for student in sorted(ANSWERS):
            marks.change(student, question, toggle=question.rubric[0]["id"])
            marks.change(student, question, comment=f"{marks.grader} was here")

    threads = [threading.Thread(target=mark, args=(m, q)) for m, q in zip(graders, questions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = read_csv(fresh / "written.csv")
    assert sorted((r["grader"], r["question"], r["student"]) for r in rows) == sorted(
        (m.grader, q.key, s) for m, q in zip(graders, questions) for s in ANSWERS)
    assert all(r["comment"] == f"{r['grader']} was here" for r in rows)


def test_review_says_what_to_do_without_a_graded_report(tmp_path):
    done = labkit("assignment", "review", tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no written answers in" in done.stderr and "labkit assignment grade" in done.stderr
