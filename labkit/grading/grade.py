"""Grading one submission: every exercise decided in the grader, with the student's code in its kernel.

PIPELINE below is the whole road from a student's folder to a row of the
gradebook, one stage a line. For each exercise of the instructor's notebooks:

  1. the student's solution cell (and any code cells they added right below it)
     is read as text and checked by labkit/grading/rules.py; a solution that
     imports the exercise's names from labkit, patches a library or reaches for
     the interpreter is refused with the reason, and never runs; a solution
     still the release's stub is "not done" without running;
  2. a fresh kernel in a bubblewrap box of its own runs those cells
     (labkit/grading/sandbox.py, kernel.py, serve.py), its CPU time metered
     (meter.py);
  3. the instructor's check cell, public and hidden checks, runs in the
     grader's process, with the student's names bound to stand-ins that ask the
     kernel (labkit/grading/remote.py) and get plain data back (wire.py), and
     the checks' inputs drawn from the seed of this student and exercise
     (labkit/grading/secret.py).

The verdict is whether the check cell ran to its end. The kernel is closed
after each exercise, so nothing one exercise's code does reaches another's.

Once the checks have called the student's code, that code has seen their
secret inputs: from then on nothing the kernel says (an error's text, a forged
reply) reaches the feedback, only what kind of thing went wrong (`_on_inputs`).
"""

import ast
import contextlib
import inspect
import io
import math
import secrets
from dataclasses import dataclass
from importlib import import_module

import torch
import torch.nn.functional as F
from torch import nn

from .. import checks
from . import remote, rules
from .assignment import exercises, meta, solutions_of, stubbed
from .kernel import PRELUDE, Kernel, KernelError, KernelTimeout, Refused, StudentError

NOT_DONE = "not done: the code still raises NotImplementedError (replace it with your solution)"

# The grading pipeline, in order: (stage, where it lives, what it does). gradebook.grade drives a class
# through it; grade_exercise below, stages rules to checks, for one exercise.
PIPELINE = (
    ("submission", "submissions.read_submission", "the solution cells, as text, of regular files in the folder"),
    ("rules", "rules.refusal", "a first screen that gives a reason: labkit imports, patches, the interpreter"),
    ("box", "sandbox.command", "a bubblewrap box of its own for each kernel: no network, no files of yours"),
    ("kernel", "kernel.Kernel", "a fresh Python runs the cells (serve.py); its CPU time metered (meter.py)"),
    ("wire", "wire.decode", "only plain data comes back, decoded within a fixed budget"),
    ("stand-ins", "remote.stand_in", "the student's names in the grader: each call a request to the kernel"),
    ("checks", "grade.run_check_cell", "the instructor's check cell, run in the grader on fresh inputs"),
    ("gradebook", "gradebook.Report.write", "rows, feedback, and what the next grading may reuse"),
)


@dataclass(frozen=True)
class Exercise:
    """One exercise, as the instructor's notebook defines it."""

    notebook: str
    name: str
    points: float
    check: str  # the grade cell: public checks, then hidden ones
    names: dict  # {name: "class" or "function"}: what the solution cell defines
    labkit_imports: dict  # {module: (names, ...)}: what the solution cell may import from labkit
    reference: str  # the instructor's solution cell
    stub: str  # the same cell as the release gives it to students
    solution: str = None  # the solution cell's grade_id (default: `<name>_solution`)

    @property
    def solution_id(self):
        return self.solution or f"{self.name}_solution"


@dataclass
class Verdict:
    passed: bool
    message: str
    seed: int = None  # the checks' inputs were drawn from it (grading.log records it, to replay a grade)
    timed_out: bool = False  # never kept for the next grading: a busy machine must not decide a grade


def exercises_of(notebooks):
    """[Exercise] of the instructor's notebooks, {file name: notebook}, in order."""
    found = []
    for name, nb in notebooks.items():
        cells = {meta(c).get("grade_id"): c for c in nb.cells if meta(c)}
        pairs = solutions_of(nb)
        for exercise, points in exercises(nb):
            solution = cells[pairs[exercise]].source
            tree = ast.parse(solution)
            names = {node.name: "class" if isinstance(node, ast.ClassDef) else "function" for node in tree.body
                     if isinstance(node, (ast.ClassDef, ast.FunctionDef))}
            imports = {}
            for node in tree.body:
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labkit"):
                    imports[node.module] = tuple(imports.get(node.module, ())) + tuple(a.name for a in node.names)
            found.append(Exercise(name, exercise, points, cells[exercise].source, names, imports, solution,
                                  stubbed(cells[pairs[exercise]]).source, pairs[exercise]))
    return found


def helpers(exercise):
    """{module: source} of the labkit helpers the exercise's cell may import, for the kernel's stand-in labkit."""
    sources = {}
    for module, names in exercise.labkit_imports.items():
        code = "\n\n".join(inspect.getsource(getattr(import_module(module), name)) for name in names)
        sources[module] = PRELUDE + "\n" + code
    return sources


def grade_exercise(exercise, cells, box, timeout, seed=None):
    """The Verdict on a student's cells (a list of sources) for `exercise`; seed: the checks' inputs
    (labkit/grading/secret.py; default: drawn anew)."""
    refused = rules.refusal("\n\n".join(cells), exercise.names, exercise.labkit_imports)
    if refused:
        return Verdict(False, f"refused: your cell {refused}")
    seed = secrets.randbelow(2**31) if seed is None else seed
    if list(cells) == [exercise.stub]:  # the release's stub raises NotImplementedError: no kernel needed
        return Verdict(False, NOT_DONE, seed)
    verdict = _run_checks(exercise, cells, box, timeout, seed)
    verdict.seed = seed
    return verdict


def _run_checks(exercise, cells, box, timeout, seed):
    """Start the kernel, then run the instructor's check cell against its stand-ins. An error of grading's
    own (the kernel cannot start) is raised; everything the student's code causes is a Verdict."""
    try:
        kernel = Kernel(cells, helpers(exercise), box, timeout)
    except KernelTimeout as err:
        return Verdict(False, str(err), timed_out=True)
    except StudentError as err:  # the cells raised: no input of the checks has reached the kernel yet
        return Verdict(False, NOT_DONE if str(err).startswith("NotImplementedError") else str(err))
    except Refused as err:
        return Verdict(False, f"refused: {err}")
    except KernelError as err:
        return Verdict(False, str(err))
    try:
        with kernel:
            kinds = kernel.request("kinds", names=list(exercise.names))
            for name, kind in exercise.names.items():
                if type(kinds) is not dict or kinds.get(name) != kind:
                    return Verdict(False, f"{name} is not a {kind} after your cell ran")
            stand_ins = {name: remote.stand_in(kernel, name, kind) for name, kind in exercise.names.items()}
            return run_check_cell(exercise, stand_ins, seed)
    except KernelTimeout as err:
        return Verdict(False, str(err), timed_out=True)
    except (StudentError, Refused) as err:
        return Verdict(False, _on_inputs(err, exercise.names))
    except KernelError as err:  # a time-out or a dead kernel: grading's own fixed words
        return Verdict(False, str(err))


def _on_inputs(err, names):
    """What the student reads of an error their code raised, or a reply it gave, on the checks' inputs: fixed
    words, never its text or even its kind (the code has seen the secret inputs: the text could carry them,
    and the choice among some 60 built-in exceptions about 6 bits of them, the same on every regrade)."""
    text = str(err)
    if isinstance(err, Refused):
        who = text.split(" ", 1)[0] if text.split(" ", 1)[0] in names else "your code"
        return f"refused: {who} returned something that is not plain data (tensors, numbers, bools, strings, " \
               f"and lists of them)"
    if text.split(":", 1)[0].strip() == "NotImplementedError":
        return NOT_DONE
    return "your code raised an exception while the checks called it: run the notebook's check cell to see where"


def run_check_cell(exercise, stand_ins, seed):
    """Run the check cell in the grader's process with the student's names bound to `stand_ins`."""
    namespace = {"__name__": "__grading__", "torch": torch, "nn": nn, "F": F, "math": math, "checks": checks,
                 **stand_ins}
    try:
        with contextlib.redirect_stdout(io.StringIO()), _seeded(seed), _shapes_before_values():  # no "ok" lines
            exec(compile(exercise.check, f"<check {exercise.name}>", "exec"), namespace)
    except KernelError:
        raise
    except AssertionError as err:  # the checks' own words, which show no values while grading (checks.shown)
        return Verdict(False, str(err) or "a hidden check failed")
    except MemoryError:  # the student's tensors against the reference's, far too large: the student's answer
        return Verdict(False, "the check ran out of memory comparing your answer (a shape far from the expected)")
    except Exception:  # a check that met data it could not use (a None, a wrong shape): fixed words (_on_inputs)
        return Verdict(False, "the checks could not use what your code returned (run the notebook's check cell)")
    return Verdict(True, "passed")


@contextlib.contextmanager
def _shapes_before_values():
    """While a check cell runs, torch.allclose and torch.isclose compare shapes first: two tensors whose
    broadcast is larger than either (a slerp of shape (N, 1, 1) against the expected (N, D)) fail the check
    with both shapes, instead of building a tensor N times too large in the grader."""
    originals = torch.allclose, torch.isclose

    def shapes_first(compare):
        def checked(a, b, *args, **kwargs):
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape != b.shape:
                if math.prod(torch.broadcast_shapes(a.shape, b.shape)) > max(a.numel(), b.numel()):
                    raise AssertionError(f"a tensor of shape {tuple(a.shape)} was compared with one of shape "
                                         f"{tuple(b.shape)}: check the shape your code returns")
            return compare(a, b, *args, **kwargs)
        return checked

    torch.allclose, torch.isclose = map(shapes_first, originals)
    try:
        yield
    finally:
        torch.allclose, torch.isclose = originals


@contextlib.contextmanager
def _seeded(seed):
    """The checks' inputs from `seed` (labkit.checks.SEED and torch's RNG), and their messages without values
    (labkit.checks.GRADING); both restored afterwards."""
    saved = checks.SEED, checks.GRADING
    checks.SEED, checks.GRADING = seed, True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            yield seed
        finally:
            checks.SEED, checks.GRADING = saved
