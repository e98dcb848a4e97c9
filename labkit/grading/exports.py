"""One gradebook: the checks' points and the graders' marks merged, a late policy, feedback, a summary, exports.

    labkit assignment export REPORT --format canvas|moodle|csv
                             [--deadline 2026-12-01T23:59+01:00] [--late-penalty-per-day 10]

reads what `grade` wrote (gradebook.csv, written/questions.json) and what the graders
saved in the review page (written.csv), and writes into REPORT

    grades-merged.csv     one row per student and item (code exercise or written question):
                          student,notebook,item,kind,points,max_points,detail
    totals.csv            one row per student: points per notebook, code, written, total,
                          submission time, days late, late penalty, final grade, answers not reviewed
    students/<student>/feedback.md  what the student reads: every exercise and question, the rubric items
                          met and missed with their comments, the grader's comment, the late penalty
    summary.md, summary.png   the class: points per exercise and question (histograms), the
                          commonest messages of failed checks, answers not reviewed yet
    export-canvas.csv     Canvas's gradebook import (Student, ID, SIS User ID, SIS Login ID, Section, the assignment)
    export-moodle.csv     Moodle's offline grading worksheet (Identifier, Full name, ..., Grade, Feedback comments)
    export-csv.csv        the plain one: totals.csv

A submission's time is the newest modification time of the student's notebooks (an LMS
download keeps them; `labkit assignment collect` sets them from a time in the file names).
With --deadline, a submission after it is late by each day or part of one; with
--late-penalty-per-day P, its final grade loses P% of its total per late day (at most all
of it). Without a penalty, lateness is only recorded. Export is rerun at will: it rereads
everything and replaces only the files it wrote.
"""

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..runs.targets import output_folder, write_made
from . import inert, summary, written
from .collect import read_roster
from .review import read_marks

FORMATS = ("canvas", "moodle", "csv")
MERGED_COLUMNS = ("student", "notebook", "item", "kind", "points", "max_points", "detail")


@dataclass
class Grade:
    """One student's merged grade."""

    student: str
    rows: list = field(default_factory=list)  # {notebook, item, kind, points, max_points, detail, ...}
    submitted: str = ""  # ISO time, UTC
    days_late: int = 0
    penalty_percent: float = 0.0

    def points(self, kind=None, notebook=None):
        return sum(r["points"] for r in self.rows if kind in (None, r["kind"]) and notebook in (None, r["notebook"]))

    def possible(self, kind=None):
        return sum(r["max_points"] for r in self.rows if kind in (None, r["kind"]))

    @property
    def final(self):
        return round(self.points() * (1 - self.penalty_percent / 100), 2)

    @property
    def unreviewed(self):
        return sum(r["kind"] == "written" and r.get("detail") == "not reviewed yet" for r in self.rows)


def read_gradebook(reports):
    """{student: [code exercise rows]} of a report: gradebook.csv (a class) or grades.csv (one student)."""
    reports = Path(reports)
    if (reports / "gradebook.csv").is_file():
        path, single = reports / "gradebook.csv", None
    elif (reports / "grades.csv").is_file():
        path, single = reports / "grades.csv", next(iter(written.load(reports)[1]), reports.name)
    else:
        raise FileNotFoundError(f"no gradebook in {reports}: grade the class into it first "
                                f"(labkit assignment grade SUBMISSIONS --out {reports})")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    found = {}
    for r in rows:
        found.setdefault(single or r["student"], []).append(r)
    return found


def merged(reports, deadline=None, penalty_per_day=0.0):
    """[Grade] of every student of a report (see the module docstring)."""
    questions, submitted = written.load(reports)
    keys = {(q.notebook, q.name): q for q in questions}
    marks = read_marks(reports)
    grades = []
    for student, rows in read_gradebook(reports).items():
        grade = Grade(student, submitted=submitted.get(student, ""))
        for r in rows:
            question = keys.get((r["notebook"], r["exercise"]))
            if question is None:
                grade.rows.append(dict(notebook=r["notebook"], item=r["exercise"], kind="code",
                                       points=float(r["points"]), max_points=float(r["max_points"]),
                                       detail="passed" if r["passed"] == "True" else r["message"]))
            else:
                grade.rows.append(written_row(question, marks.get((student, question.key)), r["message"]))
        grade.days_late = days_late(grade.submitted, deadline)
        grade.penalty_percent = min(100.0, grade.days_late * penalty_per_day)
        grades.append(grade)
    return grades


def written_row(question, mark, message):
    """A written question's merged row: the grader's mark, or 0 and why (not answered, not reviewed)."""
    row = dict(notebook=question.notebook, item=question.name, kind="written", max_points=question.points,
               question=question, marked=mark is not None, ticked=[], comment="")
    if mark is None:
        return {**row, "points": 0.0, "detail": "not answered" if "not answered" in message else "not reviewed yet"}
    ticked = [i for i in mark["rubric_items"].split(";") if i]
    texts = [i["text"] for i in question.rubric if i["id"] in ticked]
    return {**row, "points": written.score(question, ticked), "ticked": ticked, "comment": mark["comment"],
            "detail": "; ".join(texts + ([f"comment: {mark['comment']}"] if mark["comment"] else []))}


def parse_deadline(text):
    """A deadline in ISO 8601 (2026-12-01T23:59+01:00); without a time zone it is this machine's local time."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--deadline {text!r} is not a date and time; write it as 2026-12-01T23:59+01:00") from None
    return moment if moment.tzinfo else moment.astimezone()


def days_late(submitted, deadline):
    """Days (each started one counts) from the deadline to the submission; 0 if on time or unknown."""
    if not deadline or not submitted:
        return 0
    late = (datetime.fromisoformat(submitted) - parse_deadline(deadline)).total_seconds()
    return max(0, math.ceil(late / 86400))


# ---------------------------------------------------------------------------
# The files


def table(columns, rows):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: as_text(v) for k, v in r.items()} for r in rows)
    return text.getvalue()


def as_text(value):
    """A cell a spreadsheet shows as written: numbers as 2 or 1.5; text as inert.csv_cell makes it (never a
    formula)."""
    return f"{value:g}" if isinstance(value, float) else inert.csv_cell(value)


def totals(grades):
    """(columns, rows) of totals.csv: one row per student."""
    notebooks = list(dict.fromkeys(r["notebook"] for g in grades for r in g.rows))
    columns = ["student", *(Path(n).stem for n in notebooks), "code", "written", "total", "max_points", "submitted",
               "days_late", "late_penalty_percent", "final", "not_reviewed"]
    rows = [{"student": g.student, **{Path(n).stem: g.points(notebook=n) for n in notebooks},
             "code": g.points("code"), "written": g.points("written"), "total": g.points(), "max_points": g.possible(),
             "submitted": g.submitted, "days_late": g.days_late, "late_penalty_percent": g.penalty_percent,
             "final": g.final, "not_reviewed": g.unreviewed} for g in grades]
    return columns, rows


def lms_table(grades, form, roster, assignment):
    """The text of an LMS's grade import: Canvas's gradebook CSV, Moodle's grading worksheet, or totals.csv."""
    if form == "csv":
        return table(*totals(grades))
    if form == "canvas":
        columns = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", assignment]
        rows = [dict(zip(columns, ["Points Possible", "", "", "", "", max((g.possible() for g in grades), default=0)]))]
        for g in grades:
            known = roster.get(g.student, {})
            canvas = known.get("lms") == "canvas"
            rows.append(dict(zip(columns, [known.get("full_name", g.student), known.get("lms_id", "") if canvas else "",
                                           "", known.get("full_name", g.student) if canvas else g.student, "", g.final])))
        return table(columns, rows)
    columns = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade", "Grade can be changed",
               "Last modified (submission)", "Last modified (grade)", "Feedback comments"]
    rows = []
    for g in grades:
        known = roster.get(g.student, {})
        identifier = f"Participant {known['lms_id']}" if known.get("lms") == "moodle" else g.student
        rows.append(dict(zip(columns, [identifier, known.get("full_name", g.student), "", "", g.final, g.possible(),
                                       "Yes", g.submitted, "", comment_line(g)])))
    return table(columns, rows)


def comment_line(grade):
    late = f"; {grade.days_late} days late, -{grade.penalty_percent:g}%" if grade.days_late else ""
    return (f"code {grade.points('code'):g} / {grade.possible('code'):g}, written {grade.points('written'):g} / "
            f"{grade.possible('written'):g}{late}; details in your feedback.md")


def feedback(grade):
    """A student's feedback.md: the checks' verdicts and the graders' marks, each item's points."""
    lines = [f"# Lab feedback for {inert.markdown(grade.student)}", "",
             f"**{grade.points():g} / {grade.possible():g} points** (code {grade.points('code'):g} / "
             f"{grade.possible('code'):g}, written {grade.points('written'):g} / {grade.possible('written'):g})"]
    if grade.days_late:
        lines += ["", f"Submitted {grade.submitted}, {grade.days_late} days after the deadline: "
                      f"-{grade.penalty_percent:g}%, final grade **{grade.final:g}**."]
    lines += ["", "## Code", "", "| notebook | exercise | points | |", "| --- | --- | --- | --- |"]
    for r in (r for r in grade.rows if r["kind"] == "code"):
        lines.append(f"| {r['notebook']} | {r['item']} | {r['points']:g} / {r['max_points']:g} | "
                     f"{inert.markdown(r['detail'])} |")
    lines += ["", "Each exercise was graded with the public checks you saw and hidden ones, on inputs drawn anew, "
                  "in a fresh kernel that ran only that exercise's cells.", "", "## Written answers"]
    for r in (r for r in grade.rows if r["kind"] == "written"):
        lines += ["", f"### {r['notebook']}: {r['item']}, {r['points']:g} / {r['max_points']:g}", ""]
        if not r["marked"]:
            lines.append(f"*{r['detail']}*")
            continue
        for item in r["question"].rubric:
            met = item["id"] in r["ticked"]
            if item["points"] > 0 or met:
                lines.append(f"- {'[x]' if met else '[ ]'} {item['points']:+g}: {item['text']}"
                             + (f". {item['feedback']}" if met and item["feedback"] else ""))
        if r["comment"]:
            lines += ["", "> " + r["comment"].replace("\n", "\n> ")]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# The command


def export(reports, form, deadline=None, penalty_per_day=0.0, assignment="GAN lab"):
    """Merge, then write the files of the module docstring; the exit status."""
    reports = Path(reports)
    if form not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {form!r}")
    if deadline is not None:
        parse_deadline(deadline)
    if not (0 <= penalty_per_day <= 100):
        raise ValueError(f"--late-penalty-per-day is a percentage from 0 to 100, got {penalty_per_day:g}")
    grades = merged(reports, deadline, penalty_per_day)
    single = not (reports / "gradebook.csv").is_file()
    folder = written.submissions_folder(reports)
    roster = read_roster(folder) if folder else {}
    files = {"grades-merged.csv": table(MERGED_COLUMNS, [{"student": g.student, **r} for g in grades for r in g.rows]),
             "totals.csv": table(*totals(grades)), f"export-{form}.csv": lms_table(grades, form, roster, assignment),
             "summary.md": summary.markdown(grades)}
    for g in grades:
        files["feedback.md" if single else f"students/{g.student}/feedback.md"] = feedback(g)
    output_folder(reports, [*files, "summary.png"], overwrite=True)
    for name, text in files.items():
        write_made(reports, name, text.encode())
    write_made(reports, "summary.png", summary.figure(grades))
    left = sum(g.unreviewed for g in grades)
    print(f"labkit: {len(grades)} students, mean final grade {sum(g.final for g in grades) / max(len(grades), 1):.2f} / "
          f"{max((g.possible() for g in grades), default=0):g}; {reports / f'export-{form}.csv'} for the LMS, "
          f"feedback.md per student, summary.md")
    if left:
        print(f"labkit: {left} written answers not reviewed yet score 0 for now: labkit assignment review {reports}")
    return 0
