"""The README a student reads in a minute: short, pointing to docs/ for the rest, and every link alive."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def section(title):
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.S | re.M)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def test_the_readme_is_short_and_starts_with_what_a_student_does_first():
    assert len(README.split()) <= 1500
    assert len(section("Start here").strip().splitlines()) <= 40
    for title in ("For students", "For instructors", "Run the tests", "The main job"):
        section(title)


def test_user_docs_cite_no_issue_numbers_and_hold_no_placeholders():
    for path in USER_DOCS:
        text = path.read_text()
        assert not re.search(r"\bissues? #?\d+\b", text, flags=re.I), path
        assert not re.search(r"[A-Z_]+(PLACEHOLDER|_README)\b", text), path


def test_every_local_link_in_the_readme_and_docs_exists():
    for path in USER_DOCS:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text()):
            if not re.match(r"[a-z]+://", target):
                assert (path.parent / target).exists(), f"{path.name} links to {target}, which does not exist"
