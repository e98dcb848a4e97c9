"""Grading a class in one command: a gradebook, feedback for each student, copies flagged.

    labkit assignment grade SUBMISSIONS --out REPORT [--jobs N] [--timeout S] [--source NOTEBOOKS]

SUBMISSIONS is one student's folder or a folder of them, one per student
(labkit/grading/submissions.py). REPORT then holds

    gradebook.csv           one row per student and exercise:
                            student,notebook,exercise,points,max_points,passed,message,copy_of,box
    grading.log             each exercise's verdict, and a name of its inputs (the same name: the same inputs)
    students/<student>/grades.csv    that student's rows          (one student: REPORT/grades.csv)
    students/<student>/feedback.md   what the student reads: each exercise, its points, the check's
                            message; nothing of the hidden checks' code  (one student: REPORT/feedback.md)
    .labkit-grading.json    each submission's content hash and rows, for the next grading
    .labkit-made.json       what labkit wrote here (labkit/runs/targets.py)

Each student's files live in students/<student>/, so no student's name (a
folder called gradebook.csv) can collide with the class's files.

Students are graded in parallel (`jobs` processes, default: the cores; one
process per student), each exercise in its own boxed kernel
(labkit/grading/grade.py). A second run regrades only the students whose
graded cells changed, or everyone if the instructor's notebooks changed; an
exercise that timed out is graded again too. Whatever one student's folder
holds costs at most that student's rows, with the reason: a notebook that is
not one, odd metadata, a link, a file too large, or a grading process that
died (that student is graded once more, then recorded as crashed).

`copy_of` names the students an exercise's solution shares code with, beyond
what the reference and the stub explain, and how much (`bob (0.86)`;
labkit/grading/copies.py); the points stay, the instructor decides.

In the report folder labkit replaces only files it wrote there, never writes
through a link or into the folders it grades, and deletes nothing.
"""

import csv
import ctypes
import hashlib
import io
import json
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path

from tqdm.auto import tqdm

from ..lab import PROFILES
from ..runs.targets import TargetError, made_by_labkit, output_folder, write_made
from . import copies, inert, meter, sandbox, secret, written
from .collect import refuse_a_download
from .assignment import check_marks, lab_notebooks, read_notebook
from .grade import exercises_of, grade_exercise
from .submissions import Submission, is_submission, read_submission, stray_notebooks, students

GRADEBOOK_COLUMNS = ("student", "notebook", "exercise", "points", "max_points", "passed", "message", "copy_of",
                     "box")
STATE = ".labkit-grading.json"  # content hashes and rows of the last grading
STUDENTS = "students"  # REPORT/students/<student>/: each student's files, apart from the class's
PR_SET_PDEATHSIG = 1


def grade(submissions, out, source=None, timeout=120, jobs=None, process_box=False):
    """Grade SUBMISSIONS into OUT (see the module docstring); the exit status (0; 2 if a single
    student's notebook was missing or unreadable)."""
    submissions, out = Path(submissions), Path(out)
    check_arguments(submissions, timeout, jobs)
    refuse_a_download(submissions)  # no notebook, or an LMS download not collected: one line, not "0 students"
    kind = sandbox.choose(process_box)  # before anything is written: no bubblewrap, one line and exit 2
    meter.sweep()
    paths = lab_notebooks(source)
    instructor = {p.name: read_notebook(p) for p in paths}
    for name, nb in instructor.items():
        check_marks(nb, name)
    exercises = exercises_of(instructor)
    single = is_submission(submissions)
    found = students(submissions)
    for stray in [] if single else stray_notebooks(submissions):
        print(f"labkit: warning: {stray} lies beside the students' folders, in no student's: not graded",
              file=sys.stderr)
    questions = written.questions_of(instructor)
    report = Report(out, report_names([name for name, _ in found], single) + written.report_names(questions),
                    inputs=(submissions, paths[0].parent))
    key = secret.load(paths[0].parent)  # the hidden checks' inputs: the same on every regrade (secret.py)
    source_digest = hashlib.sha256(b"".join(p.read_bytes() for p in paths)
                                   + secret.fingerprint(key).encode()).hexdigest()[:20]
    stubs = {(e.notebook, e.name): e.stub for e in exercises}
    class_ = [read_safely(name, folder, exercises, stubs) for name, folder in found]
    started = time.time()
    todo = [s for s in class_ if report.cached(s.student, s.digest(source_digest)) is None]
    box = sandbox.make_box(kind, secret_paths=(submissions, out, paths[0].parent))
    if box.kind == sandbox.PROCESS and todo:
        print("labkit: warning: --process-box: students' code runs with your file and network access; verdicts "
              "are still decided outside it (see docs/grading.md)", file=sys.stderr)
    results = _grade_all(todo, exercises, timeout, jobs, (box, key), progress=not single)
    rows = {}
    for submission in class_:
        digest = submission.digest(source_digest)
        rows[submission.student] = results.get(submission.student) or report.cached(submission.student, digest)
        if any(r.get("crashed") or r.get("timed_out") for r in rows[submission.student]):
            report.forget(submission.student)  # graded again next time
        else:
            report.remember(submission.student, digest, rows[submission.student])
    copies.flag(rows, class_, exercises)
    answers, submitted = written.collect(found, questions)  # listed, to be reviewed (labkit assignment review)
    rows = {student: student_rows + written.rows(student, questions, answers) for student, student_rows in rows.items()}
    report.write({**report_files(rows, single), **written.report_files(questions, answers, submitted, submissions)})
    _summarise(rows, single, len(todo), time.time() - started, out)
    if questions:
        print(f"{len(questions)} written questions ({sum(q.points for q in questions):g} points) to review: "
              f"labkit assignment review {out}")
    problems = [f"{notebook}: {why}: scored 0" for s in class_ for notebook, why in s.problems.items()]
    if single:
        for problem in problems:
            print(f"labkit: error: {problem}", file=sys.stderr)
    return 2 if single and problems else 0


def check_reference(notebooks, timeout=120):
    """Grade the instructor's own solutions with their own checks, public and hidden, before a release: a check
    the reference fails would fail every student. ValueError, one line naming the exercise, if one fails.

    The reference is the instructor's code, so it runs in a box of processes (no bubblewrap needed). A lab
    that passed is remembered in the user's cache by the notebooks' and labkit's content: checked once."""
    exercises = exercises_of(notebooks)  # {file name: the instructor's notebook}, as the release read them
    stamp = reference_stamp(exercises)
    count = f"{len(exercises)} exercise" + ("" if len(exercises) == 1 else "s")
    said = f"labkit: the instructor's solutions pass their own checks ({count}"
    if stamp.is_file():
        print(f"{said}; unchanged since they were graded)")
        return
    box = sandbox.make_box(sandbox.PROCESS, secret_paths=())
    failed = []
    for exercise in exercises:
        verdict = grade_exercise(exercise, [exercise.reference], box, timeout, seed=0)
        if not verdict.passed:
            failed.append(f"{exercise.notebook} {exercise.name}: {one_line(verdict.message, 200)}")
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise ValueError(f"the reference solution fails its own check, as every student would: {failed[0]}{more}; "
                         f"fix the solution or the check, then release again")
    print(f"{said}, graded now)")
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()
    except OSError:  # a read-only home: checked again next time, nothing lost
        pass


def reference_stamp(exercises):
    """The cache file that says these exercises' references passed their checks, with this labkit."""
    digest = hashlib.sha256()
    for exercise in exercises:
        digest.update("\0".join((exercise.notebook, exercise.name, exercise.reference, exercise.check)).encode())
    for source in sorted(Path(__file__).resolve().parents[1].rglob("*.py")):
        digest.update(source.read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "labkit" / "references-passed" / digest.hexdigest()[:32]


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


def _grade_all(todo, exercises, timeout, jobs, grading, progress=True):
    """{student: rows} for the submissions in `todo`, `grading` = (sandbox.Box, the inputs' secret): each
    student graded in a process of its own (forked from
    this one), `jobs` at a time, with a progress bar. A process that dies (the OOM killer, a crash in torch)
    costs only the student it was grading, who is graded once more; twice, and their rows say so (not cached:
    the next run grades them again)."""
    results, running = {}, {}  # running: {connection: (process, submission, attempt)}
    pending = deque((submission, 1) for submission in todo)
    jobs = min(jobs or os.cpu_count() or 1, max(len(todo), 1))
    bar = tqdm(total=len(todo), desc="grading", unit="student", disable=not (todo and progress))
    while pending or running:
        while pending and len(running) < jobs:
            submission, attempt = pending.popleft()
            connection, process = _start_worker(submission, exercises, timeout, grading)
            running[connection] = (process, submission, attempt)
        for connection in wait(list(running)):
            process, submission, attempt = running.pop(connection)
            rows, died = _collect(connection, process)
            if died and attempt == 1:
                pending.append((submission, 2))
                continue
            results[submission.student] = rows if not died else crashed(
                submission, exercises, WorkerDied(f"its grading process died twice ({died})"))
            bar.update(1)
    bar.close()
    return results


class WorkerDied(Exception):
    """A process grading one student ended without its rows."""


def _start_worker(submission, exercises, timeout, grading):
    """A process grading one student (forked where the platform allows: it starts at once); its connection."""
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    ours, theirs = context.Pipe(duplex=False)
    process = context.Process(target=_worker, args=(theirs, submission, exercises, timeout, *grading),
                              daemon=True)
    process.start()
    theirs.close()
    return ours, process


def _worker(connection, submission, exercises, timeout, box, inputs_secret):
    if sys.platform.startswith("linux"):  # dies with the grader, and its kernels with it (--die-with-parent)
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    connection.send(grade_student(submission, exercises, timeout, box, inputs_secret))
    connection.close()


def _collect(connection, process):
    """(rows, None) from a worker that finished, or (None, how it died)."""
    try:
        rows = connection.recv()
    except (EOFError, OSError):
        rows = None
    connection.close()
    process.join()
    if rows is not None:
        return rows, None
    code = process.exitcode
    return None, (f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}")


def grade_student(submission, exercises, timeout, box, inputs_secret=b""):
    """One student's rows: every exercise graded in its own kernel, in `box` (sandbox.Box), on the checks'
    inputs from `inputs_secret`, the grading secret (secret.py; it stays in the grader). Never raises for the
    student's code."""
    rows = []
    try:
        for exercise in exercises:
            key = (exercise.notebook, exercise.name)
            if exercise.notebook in submission.problems:
                rows.append(row(submission.student, exercise, False, submission.problems[exercise.notebook], box=box))
            else:
                seed = secret.seed(inputs_secret, submission.student, *key) if inputs_secret else None
                verdict = grade_exercise(exercise, submission.cells[key], box, timeout, seed)
                rows.append(row(submission.student, exercise, verdict.passed, verdict.message, verdict.seed, box))
                rows[-1]["timed_out"] = verdict.timed_out
    except Exception as err:  # a bug of grading's: recorded, the class goes on
        return crashed(submission, exercises, err)
    return rows


def read_safely(student, folder, exercises, stubs):
    """read_submission, whatever the folder holds: an error of reading costs that student's notebooks only."""
    try:
        return read_submission(student, folder, exercises, stubs)
    except Exception as err:  # a case read_submission did not foresee: this student's rows say so
        problem = one_line(f"could not be read ({type(err).__name__}: {err})")
        return Submission(student, Path(folder), problems={e.notebook: problem for e in exercises})


def row(student, exercise, passed, message, seed=None, box=None):
    """A gradebook row. `inputs` names the checks' inputs for grading.log without telling them: the seed
    with the public hidden checks would give every input (secret.py). `box`: which box graded it."""
    inputs = None if seed is None else hashlib.sha256(f"labkit inputs {seed}".encode()).hexdigest()[:10]
    return dict(student=student, notebook=exercise.notebook, exercise=exercise.name,
                points=exercise.points if passed else 0.0, max_points=exercise.points, passed=passed,
                message=one_line(message), copy_of="", inputs=inputs, box=box.kind if box else "")


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
    rows = {student: [r for r in student_rows if not r.get("written")] for student, student_rows in rows.items()}
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
    return ["gradebook.csv", "grading.log",
            *(f"{STUDENTS}/{s}/{name}" for s in students_ for name in ("grades.csv", "feedback.md"))]


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
            files[f"{STUDENTS}/{student}/grades.csv"] = csv_text(GRADEBOOK_COLUMNS[1:], student_rows)
            files[f"{STUDENTS}/{student}/feedback.md"] = feedback(student_rows, student)
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
    rows, answers = [r for r in rows if not r.get("written")], [r for r in rows if r.get("written")]
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
    lines += written.feedback_lines(answers)
    return "\n".join(lines) + "\n"


def log(rows):
    lines = [f"labkit grading, {time.strftime('%Y-%m-%d %H:%M:%S')}"]
    for student, student_rows in rows.items():
        for r in student_rows:
            lines.append(f"{one_line(student)}\t{r['notebook']}\t{r['exercise']}\t{r['points']:g}/{r['max_points']:g}\t"
                         f"inputs {r.get('inputs')}\t{r['message']}")
    return "\n".join(lines) + "\n"
