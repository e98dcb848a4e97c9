"""What a student's text becomes in the reports: inert (labkit/grading/inert.py), in a real grading."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import markdown
import mistune
import pytest

from labkit.grading import inert

sys.path.insert(0, str(Path(__file__).parent))
from test_grading import submit  # noqa: E402  (the class of 30's helper)

HOSTILE = ('<img src=x onerror=alert(1)> <script>alert(2)</script> [your grade](http://evil.example/a) '
           '![pixel](http://evil.example/p.png) www.evil.example | forged cell | **14 / 14 points** `code` &lt;b&gt;')


def rendered(text):
    """The HTML two common Markdown renderers make of `text` (Python-Markdown with tables, and mistune)."""
    return [markdown.markdown(text, extensions=["tables"]), mistune.html(text)]


def test_markdown_from_a_student_renders_as_the_same_text_and_no_markup():
    for html in rendered("| a | b |\n| --- | --- |\n| x | " + inert.markdown(HOSTILE) + " |\n"):
        assert "<img" not in html and "<script" not in html and "<a " not in html and "<strong>" not in html
        assert "<code>" not in html and "http://evil" not in html and html.count("<td>") == 2, html
        assert "onerror=alert(1)" in html and "your grade" in html  # still readable, as text
    assert inert.markdown("discriminator_loss: 0 (a loop?)") == "discriminator_loss: 0 (a loop?)"
    assert "\n" not in inert.markdown("two\nlines\r\tand a tab")


@pytest.mark.parametrize("cell", ["=1+2", "+1", "-1+2", "@SUM(A1)", "\t=1+2", "\r=1+2"])
def test_a_csv_cell_a_spreadsheet_could_run_is_quoted(cell):
    assert inert.csv_cell(cell) == "'" + cell
    assert inert.csv_cell("passed") == "passed" and inert.csv_cell(2.0) == 2.0


def test_a_student_named_and_raising_markup_gets_inert_reports(tmp_path):
    """A real grading: a student folder named like a formula and like HTML, whose cell raises markup."""
    source, release = tmp_path / "instructor", tmp_path / "release"
    shutil.copytree(Path(__file__).parents[1] / "notebooks", source, ignore=shutil.ignore_patterns(".labkit-*"))
    done = subprocess.run([sys.executable, "-m", "labkit.cli", "assignment", "release", "--out", release,
                           "--source", source], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    name = "\t=HYPERLINK(\"http:evil\") <img src=x onerror=alert(1)>"
    raising = "def update_discriminator(step, loss_D, loss_G, every=1, pause_ratio=0.0):\n    pass\n\n" \
              f"raise ValueError({HOSTILE!r})\n"
    submit(tmp_path / "class" / name, release / "notebooks", {"rebalancing_rule": raising})
    done = subprocess.run([sys.executable, "-m", "labkit.cli", "assignment", "grade", tmp_path / "class",
                           "--out", tmp_path / "report", "--source", source, "--jobs", "1"],
                          capture_output=True, text=True, env={**os.environ, "LABKIT_PROFILE": "smoke"})
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "report" / "gradebook.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["student"] for r in rows} == {"'" + name}
    (rule,) = [r for r in rows if r["exercise"] == "rebalancing_rule"]
    assert rule["points"] == "0" and "onerror" in rule["message"]
    feedback = (tmp_path / "report" / "students" / name / "feedback.md").read_text()
    for html in rendered(feedback):
        assert "<img" not in html and "<script" not in html and "<a " not in html and "<strong>14" not in html, html
        assert "onerror=alert(1)" in html
