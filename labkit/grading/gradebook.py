"""Grading a class in one command: a gradebook, feedback for each student, copies flagged.

    labkit assignment grade SUBMISSIONS --out REPORT [--jobs N] [--timeout S] [--source NOTEBOOKS]

SUBMISSIONS is one student's folder or a folder of them, one per student
(labkit/grading/submissions.py). REPORT then holds

    gradebook.csv           one row per student and exercise:
                            student,notebook,exercise,points,max_points,passed,message,copy_of
    <student>/grades.csv    that student's rows          (one student: REPORT/grades.csv)
    <student>/feedback.md   what the student reads: each exercise, its points, the check's
                            message; nothing of the hidden checks' code  (one student: REPORT/feedback.md)
    grading.log             each exercise's verdict, and a name of its inputs (the same name: the same inputs)
    .labkit-grading.json    each submission's content hash and rows, for the next grading
    .labkit-made.json       what labkit wrote here (labkit/runs/targets.py)

Students are graded in parallel (`jobs` processes, default: the cores), each
exercise in its own boxed kernel (labkit/grading/grade.py). A second run
regrades only the students whose graded cells changed, or everyone if the
instructor's notebooks changed. A student whose grading crashes is recorded
with the error, and the others go on.

`copy_of` names the students an exercise's solution shares code with, beyond
what the reference and the stub explain, and how much (`bob (0.86)`;
labkit/grading/copies.py); the points stay, the instructor decides.

In the report folder labkit replaces only files it wrote there, never writes
through a link or into the folders it grades, and deletes nothing.
"""

import csv
import hashlib
import io
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..lab import PROFILES
from ..runs.targets import TargetError, made_by_labkit, output_folder, write_made
from . import copies, inert, sandbox, secret
from .assignment import check_marks, lab_notebooks, read_notebook
from .grade import Boxes, exercises_of, grade_exercise
from .submissions import is_submission, read_submission, students

GRADEBOOK_COLUMNS = ("student", "notebook", "exercise", "points", "max_points", "passed", "message", "copy_of")
STATE = ".labkit-grading.json"  # content hashes and rows of the last grading


def grade(submissions, out, source=None, timeout=120, jobs=None):
    """Grade SUBMISSIONS into OUT (see the module docstring); the exit status (0; 2 if a single
    student's notebook was missing or unreadable)."""
    submissions, out = Path(submissions), Path(out)
    check_arguments(submissions, timeout, jobs)
    paths = lab_notebooks(source)
    instructor = {p.name: read_notebook(p) for p in paths}
    for name, nb in instructor.items():
        check_marks(nb, name)
    exercises = exercises_of(instructor)
    single = is_submission(submissions)
    found = students(submissions)
    report = Report(out, report_names([name for name, _ in found], single), inputs=(submissions, paths[0].parent))
    key = secret.load(paths[0].parent)  # the hidden checks' inputs: the same on every regrade (secret.py)
    source_digest = hashlib.sha256(b"".join(p.read_bytes() for p in paths)
                                   + secret.fingerprint(key).encode()).hexdigest()[:20]
    stubs = {(e.notebook, e.name): e.stub for e in exercises}
    class_ = [read_submission(name, folder, exercises, stubs) for name, folder in found]
    started = time.time()
    todo = [s for s in class_ if report.cached(s.student, s.digest(source_digest)) is None]
    box = BoxPlan(level=sandbox.isolation(), secret_paths=(submissions, out, paths[0].parent), inputs_secret=key)
    if box.level == "process" and todo:
        print("labkit: warning: this machine offers no namespaces, so students' code runs with the grading "
              "user's file and network access; verdicts are still decided outside it (see docs/grading.md)",
              file=sys.stderr)
    results = _grade_all(todo, exercises, timeout, jobs, box, progress=not single)
    rows = {}
    for submission in class_:
        digest = submission.digest(source_digest)
        rows[submission.student] = results.get(submission.student) or report.cached(submission.student, digest)
        if any(r.get("crashed") for r in rows[submission.student]):
            report.forget(submission.student)  # graded again next time
        else:
            report.remember(submission.student, digest, rows[submission.student])
    copies.flag(rows, class_, exercises)
    report.write(report_files(rows, single))
    _summarise(rows, single, len(todo), time.time() - started, out)
    problems = [f"{notebook}: {why}: scored 0" for s in class_ for notebook, why in s.problems.items()]
    if single:
        for problem in problems:
            print(f"labkit: error: {problem}", file=sys.stderr)
    return 2 if single and problems else 0


def check_arguments(submissions, timeout, jobs):
    if not submissions.is_dir():
        raise ValueError(f"no folder {submissions} to grade")
    if not (isinstance(timeout, (int, float)) and 0 < timeout <= 24 * 3600):
        raise ValueError(f"--timeout must be a number of seconds from 1 to 86,400, got {timeout}")
    if jobs is not None and not (isinstance(jobs, int) and 1 <= jobs <= 256):
        raise ValueError(f"--jobs must be a whole number from 1 to 256, got {jobs}")
    profile = os.environ.get("LABKIT_PROFILE")
    if profile:
        if profile not in PROFILES:
            raise ValueError(f"LABKIT_PROFILE={profile!r} is not a profile; use one of {', '.join(PROFILES)} "
                             f"(grading does not depend on it: unset it)")


def _grade_all(todo, exercises, timeout, jobs, box, progress=True):
    """{student: rows} for the submissions in `todo`, graded in `jobs` processes, with a progress bar."""
    results = {}
    jobs = min(jobs or os.cpu_count() or 1, max(len(todo), 1))
    bar = tqdm(total=len(todo), desc="grading", unit="student", disable=not (todo and progress))
    if jobs == 1:
        for submission in todo:
            results[submission.student] = grade_student(submission, exercises, timeout, box)
            bar.update(1)
    else:
        with ProcessPoolExecutor(jobs) as pool:
            futures = {pool.submit(grade_student, s, exercises, timeout, box): s for s in todo}
            for future in as_completed(futures):
                student = futures[future].student
                try:
                    results[student] = future.result()
                except Exception as err:  # a grading process that died: the others go on
                    results[student] = crashed(futures[future], exercises, err)
                bar.update(1)
    bar.close()
    return results


@dataclass(frozen=True)
class BoxPlan:
    """How every kernel of this grading is boxed: the level (sandbox.isolation) and what it must not see;
    and the secret its checks' inputs come from (secret.py; it stays in the grader, never reaches a kernel)."""

    level: str
    secret_paths: tuple
    inputs_secret: bytes = b""


def grade_student(submission, exercises, timeout, box):
    """One student's rows: every exercise graded in its own kernel. Never raises for the student's code."""
    boxes = Boxes(box.secret_paths, level=box.level)
    rows = []
    try:
        for exercise in exercises:
            key = (exercise.notebook, exercise.name)
            if exercise.notebook in submission.problems:
                rows.append(row(submission.student, exercise, False, submission.problems[exercise.notebook]))
            else:
                seed = secret.seed(box.inputs_secret, submission.student, *key) if box.inputs_secret else None
                verdict = grade_exercise(exercise, submission.cells[key], boxes, timeout, seed)
                rows.append(row(submission.student, exercise, verdict.passed, verdict.message, verdict.seed))
    except Exception as err:  # a bug of grading's: recorded, the class goes on
        return crashed(submission, exercises, err)
    finally:
        boxes.close()
    return rows


def row(student, exercise, passed, message, seed=None):
    """A gradebook row. `inputs` names the checks' inputs for grading.log without telling them: the seed
    with the public hidden checks would give every input (secret.py)."""
    inputs = None if seed is None else hashlib.sha256(f"labkit inputs {seed}".encode()).hexdigest()[:10]
    return dict(student=student, notebook=exercise.notebook, exercise=exercise.name,
                points=exercise.points if passed else 0.0, max_points=exercise.points, passed=passed,
                message=one_line(message), copy_of="", inputs=inputs)


def one_line(text, limit=400):
    """A message as one printable line of at most `limit` characters. Messages carry what a student's code
    raised, so its layout (line breaks, tabs: forged rows in grading.log) never reaches the report."""
    text = "".join(c if c.isprintable() else " " for c in str(text))
    return text if len(text) <= limit else text[:limit] + " ..."


def crashed(submission, exercises, err):
    """Rows for a student whose grading failed for a reason of grading's own; never cached (a rerun retries)."""
    return [{**row(submission.student, e, False, f"grading crashed ({type(err).__name__}: {err}); grade it again"),
             "crashed": True} for e in exercises]


def _summarise(rows, single, graded, seconds, out):
    for student, student_rows in rows.items():
        total = sum(r["points"] for r in student_rows)
        possible = sum(r["max_points"] for r in student_rows)
        if single:
            for notebook in dict.fromkeys(r["notebook"] for r in student_rows):
                mine = [r for r in student_rows if r["notebook"] == notebook]
                print(f"{notebook:<32} {sum(r['points'] for r in mine):g} / {sum(r['max_points'] for r in mine):g}")
            print(f"total: {total:g} / {possible:g} points ({len(student_rows)} exercises, graded in "
                  f"{seconds:.0f} s; details in {out / 'grades.csv'})")
        else:
            flagged = sum(bool(r["copy_of"]) for r in student_rows)
            print(f"{student:<32} {total:g} / {possible:g}" + (f"   ({flagged} flagged as copies)" if flagged else ""))
    if not single:
        print(f"{len(rows)} students ({graded} graded now, {len(rows) - graded} unchanged since the last grading) "
              f"in {seconds:.0f} s; gradebook in {out / 'gradebook.csv'}")


class Report:
    """The report folder, checked before grading and written after (labkit/runs/targets.py): only
    files labkit wrote there are replaced, never through a link, never over the submissions or the
    instructor's notebooks, and nothing is deleted."""

    def __init__(self, out, names, inputs):
        self.out = Path(out)
        for source in inputs:
            if self.out.resolve() == Path(source).resolve() or Path(source).resolve() in self.out.resolve().parents:
                raise TargetError(f"--out {self.out} is inside {source}, which this command reads; choose a "
                                  f"folder outside it")
        output_folder(self.out, [*names, STATE], inputs=inputs, overwrite=True)
        self.students = self._read_state()

    def _read_state(self):
        """The content hash and rows of every student graded here before (none if labkit did not write them)."""
        if not made_by_labkit(self.out, STATE):
            return {}
        try:
            return dict(json.loads((self.out / STATE).read_text())["students"])
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def cached(self, student, digest):
        entry = self.students.get(student)
        return entry["rows"] if isinstance(entry, dict) and entry.get("digest") == digest else None

    def remember(self, student, digest, rows):
        self.students[student] = {"digest": digest, "rows": rows}

    def forget(self, student):
        self.students.pop(student, None)

    def write(self, files):
        """Write {name: text} and the grading state, each file atomically."""
        for name, text in files.items():
            write_made(self.out, name, text.encode())
        write_made(self.out, STATE, (json.dumps({"students": self.students}, indent=1) + "\n").encode())


def report_names(students_, single):
    """The files a grading writes into its report folder."""
    if single:
        return ["grades.csv", "feedback.md", "grading.log"]
    return ["gradebook.csv", "grading.log", *(f"{s}/{name}" for s in students_ for name in ("grades.csv", "feedback.md"))]


def report_files(rows, single):
    """{name: text} of a grading's report (see the module docstring)."""
    files = {}
    if single:
        (student_rows,) = rows.values()
        files["grades.csv"] = csv_text(GRADEBOOK_COLUMNS[1:], student_rows)
        files["feedback.md"] = feedback(student_rows)
    else:
        files["gradebook.csv"] = csv_text(GRADEBOOK_COLUMNS, [r for student_rows in rows.values() for r in student_rows])
        for student, student_rows in rows.items():
            files[f"{student}/grades.csv"] = csv_text(GRADEBOOK_COLUMNS[1:], student_rows)
            files[f"{student}/feedback.md"] = feedback(student_rows, student)
    files["grading.log"] = log(rows)
    return files


def csv_text(columns, rows):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(_formatted(r) for r in rows)
    return text.getvalue()


def _formatted(r):
    return {**{k: inert.csv_cell(v) for k, v in r.items() if k != "inputs"}, "points": f"{r['points']:g}",
            "max_points": f"{r['max_points']:g}"}


def feedback(rows, student=None):
    """A student's feedback in Markdown: each exercise, its points, and what the checks said."""
    total, possible = sum(r["points"] for r in rows), sum(r["max_points"] for r in rows)
    lines = [f"# Lab feedback{f' for {inert.markdown(student)}' if student else ''}", "",
             f"**{total:g} / {possible:g} points**", "", "| notebook | exercise | points | |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {inert.markdown(r['notebook'])} | {inert.markdown(r['exercise'])} | "
                     f"{r['points']:g} / {r['max_points']:g} | "
                     f"{'passed' if r['passed'] else inert.markdown(r['message'])} |")
    lines += ["", "Each exercise was graded with the public checks you saw and hidden ones, on inputs of your own "
                  "that no one hands out (the same ones on every regrade), in a fresh kernel that ran only that "
                  "exercise's cells."]
    return "\n".join(lines) + "\n"


def log(rows):
    lines = [f"labkit grading, {time.strftime('%Y-%m-%d %H:%M:%S')}"]
    for student, student_rows in rows.items():
        for r in student_rows:
            lines.append(f"{one_line(student)}\t{r['notebook']}\t{r['exercise']}\t{r['points']:g}/{r['max_points']:g}\t"
                         f"inputs {r.get('inputs')}\t{r['message']}")
    return "\n".join(lines) + "\n"
