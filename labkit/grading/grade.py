"""Grading one submission: every exercise decided in the grader, with the student's code in its kernel.

For each exercise of the instructor's notebooks:

  1. the student's solution cell (and any code cells they added right below it)
     is read as text and checked by labkit/grading/rules.py; a solution that
     imports the exercise's names from labkit, patches a library or reaches for
     the interpreter is refused with the reason, and never runs;
  2. a fresh, boxed kernel runs those cells (labkit/grading/kernel.py);
  3. the instructor's check cell, public and hidden checks, runs in the
     grader's process, with the student's names bound to stand-ins that ask the
     kernel (labkit/grading/remote.py) and the checks' inputs drawn from the
     seed of this student and exercise (labkit/grading/secret.py).

The verdict is whether the check cell ran to its end. The kernel is closed
after each exercise, so nothing one exercise's code does reaches another's.

Once the checks have called the student's code, that code has seen their
secret inputs: from then on nothing the kernel says (an error's text, a forged
reply) reaches the feedback, only what kind of thing went wrong (`_on_inputs`).
"""

import ast
import builtins
import contextlib
import inspect
import io
import math
import secrets
import tempfile
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import checks
from . import remote, rules, sandbox
from .assignment import exercises, meta, stubbed
from .kernel import PRELUDE, Kernel, KernelError, Refused, StudentError

NOT_DONE = "not done: the code still raises NotImplementedError (replace it with your solution)"


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


@dataclass
class Verdict:
    passed: bool
    message: str
    seed: int = None  # the checks' inputs were drawn from it (grading.log records it, to replay a grade)


def exercises_of(notebooks):
    """[Exercise] of the instructor's notebooks, {file name: notebook}, in order."""
    found = []
    for name, nb in notebooks.items():
        cells = {meta(c).get("grade_id"): c for c in nb.cells if meta(c)}
        for exercise, points in exercises(nb):
            solution = cells[f"{exercise}_solution"].source
            tree = ast.parse(solution)
            names = {node.name: "class" if isinstance(node, ast.ClassDef) else "function" for node in tree.body
                     if isinstance(node, (ast.ClassDef, ast.FunctionDef))}
            imports = {}
            for node in tree.body:
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labkit"):
                    imports[node.module] = tuple(imports.get(node.module, ())) + tuple(a.name for a in node.names)
            found.append(Exercise(name, exercise, points, cells[exercise].source, names, imports, solution,
                                  stubbed(cells[f"{exercise}_solution"]).source))
    return found


def helpers(exercise):
    """{module: source} of the labkit helpers the exercise's cell may import, for the kernel's stand-in labkit."""
    sources = {}
    for module, names in exercise.labkit_imports.items():
        code = "\n\n".join(inspect.getsource(getattr(import_module(module), name)) for name in names)
        sources[module] = PRELUDE + "\n" + code
    return sources


class Boxes:
    """Makes a sandbox.Box for each kernel: what it may see, and what it must not."""

    def __init__(self, secret_paths, memory_bytes=4 * 2**30, level=None):
        self.level = level or sandbox.isolation()
        self.read_only = sandbox.read_only_paths()
        labkit_source = Path(import_module("labkit").__file__).resolve().parent
        candidates = {Path(p).resolve() for p in [*secret_paths, labkit_source, Path.home()] if p}
        self.hidden = sorted(str(p) for p in candidates
                             if any(p == Path(r) or Path(r) in p.parents for r in self.read_only))
        self.memory_bytes = memory_bytes
        self.workspace = tempfile.TemporaryDirectory(prefix="labkit-kernels-")
        self.count = 0

    def new(self, timeout):
        self.count += 1
        folder = Path(self.workspace.name) / f"kernel-{self.count}"
        folder.mkdir()
        return sandbox.Box(self.level, str(folder), self.read_only, self.hidden, self.memory_bytes,
                           cpu_seconds=int(timeout) + 5)

    def close(self):
        self.workspace.cleanup()


def grade_exercise(exercise, cells, boxes, timeout, seed=None):
    """The Verdict on a student's cells (a list of sources) for `exercise`; seed: the checks' inputs
    (labkit/grading/secret.py; default: drawn anew)."""
    refused = rules.refusal("\n\n".join(cells), exercise.names, exercise.labkit_imports)
    if refused:
        return Verdict(False, f"refused: your cell {refused}")
    seed = secrets.randbelow(2**31) if seed is None else seed
    verdict = _run_checks(exercise, cells, boxes, timeout, seed)
    verdict.seed = seed
    return verdict


def _run_checks(exercise, cells, boxes, timeout, seed):
    """Start the kernel, then run the instructor's check cell against its stand-ins. An error of grading's
    own (the kernel cannot start) is raised; everything the student's code causes is a Verdict."""
    try:
        kernel = Kernel(cells, helpers(exercise), boxes.new(timeout), timeout)
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
            return _checked(exercise, stand_ins, seed)
    except (StudentError, Refused) as err:
        return Verdict(False, _on_inputs(err, exercise.names))
    except KernelError as err:  # a time-out or a dead kernel: grading's own fixed words
        return Verdict(False, str(err))


def _on_inputs(err, names):
    """What the student reads of an error their code raised, or a reply it gave, on the checks' inputs: the
    kind of error, never its text (the code has seen the secret inputs and could have written them into it)."""
    text = str(err)
    if isinstance(err, Refused):
        who = text.split(" ", 1)[0] if text.split(" ", 1)[0] in names else "your code"
        return f"refused: {who} returned something that is not plain data (tensors, numbers, bools, strings, " \
               f"and lists of them)"
    kind = text.split(":", 1)[0].strip()
    if kind == "NotImplementedError":
        return NOT_DONE
    known = isinstance(getattr(builtins, kind, None), type) and issubclass(getattr(builtins, kind), BaseException)
    return (f"your code raised {kind if known else 'an exception'} while the checks called it: run the notebook's "
            f"check cell to see where")


def _checked(exercise, stand_ins, seed):
    """Run the check cell in the grader's process with the student's names bound to `stand_ins`."""
    namespace = {"__name__": "__grading__", "torch": torch, "nn": nn, "F": F, "math": math, "checks": checks,
                 **stand_ins}
    try:
        with contextlib.redirect_stdout(io.StringIO()), _seeded(seed):  # the checks' "ok" lines are not needed
            exec(compile(exercise.check, f"<check {exercise.name}>", "exec"), namespace)
    except KernelError:
        raise
    except AssertionError as err:  # the checks' own words, which show no values while grading (checks.shown)
        return Verdict(False, str(err) or "a hidden check failed")
    except Exception as err:  # a check that met data it could not use (a None, a wrong shape): its text may echo it
        return Verdict(False, f"the checks could not use what your code returned ({type(err).__name__})")
    return Verdict(True, "passed")


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
