"""Grading a class as an instructor would, with students who cheat.

A folder of 30 generated submissions (right, wrong, blank, duplicated, and
every way of faking a grade we know of) is graded in one command; every row of
the gradebook is checked. The instructor's notebooks are a copy in a temporary
folder, so that a grading that failed to box a kernel could not harm the repository.
"""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import tree_digest

from labkit.grading import assignment

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
EXERCISES = {"dcgan_networks": "01_train_dcgan.ipynb", "gan_losses": "01_train_dcgan.ipynb",
             "rebalancing_rule": "04_nash_equilibrium.ipynb", "interpolation": "05_latent_interpolation.ipynb",
             "mlp_networks": "07_mlp_gan.ipynb", "vae_pieces": "09_vae.ipynb"}
POINTS = {"dcgan_networks": 3, "gan_losses": 2, "rebalancing_rule": 2, "interpolation": 2, "mlp_networks": 2,
          "vae_pieces": 3}
NOT_DONE = "not done: the code still raises NotImplementedError"
CODE_POINTS = sum(p for path in NOTEBOOKS.glob("*.ipynb")  # 14: read from the notebooks, as the README states it
                  for _, p in assignment.exercises(nbformat.read(str(path), as_version=4)))


def labkit(*args, timeout=1800):
    env = dict(os.environ, LABKIT_PROFILE="smoke")
    return subprocess.run([sys.executable, "-m", "labkit.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The instructor's notebooks (a copy) and their student release."""
    root = tmp_path_factory.mktemp("course")
    source = root / "instructor"
    shutil.copytree(NOTEBOOKS, source)
    done = labkit("assignment", "release", "--out", root / "release", "--source", source)
    assert done.returncode == 0, done.stderr
    return source, root / "release" / "notebooks"


def submit(folder, base, solutions=None, checks=None):
    """Write a submission into `folder`: `base` notebooks with some solution / check cells replaced."""
    folder.mkdir(parents=True)
    for name in sorted(set(EXERCISES.values())):
        nb = nbformat.read(str(base / name), as_version=4)
        for exercise, source in (solutions or {}).items():
            if EXERCISES[exercise] == name:
                cell(nb, f"{exercise}_solution").source = source
        for exercise, source in (checks or {}).items():
            if EXERCISES[exercise] == name:
                cell(nb, exercise).source = source
        nbformat.write(nb, str(folder / name))
    return folder


def reference(source, exercise):
    return cell(nbformat.read(str(source / EXERCISES[exercise]), as_version=4), f"{exercise}_solution").source


OWN_LOSSES = '''import torch.nn.functional as F


def discriminator_loss(real_logits, fake_logits):
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits):
    return F.softplus(-fake_logits).mean()
'''
OWN_LOSSES_RENAMED = '''import torch.nn.functional as F

# written on my own, honestly
def discriminator_loss(r, f):
    """D's loss."""
    return (F.softplus(-r).mean()
            + F.softplus(f).mean())

def generator_loss(f):
    return F.softplus(-f).mean()
'''
LIAR = '''class Liar:
    """Says whatever a check wants to hear."""
    def __sub__(self, other): return self
    def __rsub__(self, other): return self
    def __abs__(self): return self
    def __lt__(self, other): return True
    def __gt__(self, other): return True
    def __eq__(self, other): return True
    def item(self): return 0.0
    def dim(self): return 0


def discriminator_loss(real_logits, fake_logits):
    return Liar()


def generator_loss(fake_logits):
    return Liar()
'''


def cheats(source, report):
    """{student: ({exercise: solution source}, {exercise: (passed, message pattern)})}: one cheat each,
    on top of the right solutions, so only the cheat's exercise may lose its points."""
    right = {e: reference(source, e) for e in EXERCISES}
    home_cache = Path.home() / ".cache" / "labkit" / "poison.pt"
    return {
        "tamper-custom-exc": ({"gan_losses": "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n"
                                             "def discriminator_loss(real_logits, fake_logits):\n    pass\n"
                                             "def generator_loss(fake_logits):\n    pass\n"},
                              {"gan_losses": (False, "refused: your cell uses get_ipython")}),
        "tamper-checks-patched": ({"dcgan_networks": "import labkit.checks\nfor name in dir(labkit.checks):\n"
                                                     "    setattr(labkit.checks, name, lambda *a, **k: None)\n"
                                                     "from labkit.models import DCGANGenerator as Generator\n"
                                                     "from labkit.models import DCGANDiscriminator as Discriminator\n"},
                                  {"dcgan_networks": (False, "refused: your cell imports the module labkit.checks")}),
        "tamper-import-reference": ({"mlp_networks": "from labkit.models import MLPDiscriminator, MLPGenerator\n"},
                                    {"mlp_networks": (False, "refused: your cell imports MLPDiscriminator, "
                                                             "MLPGenerator from labkit.models")}),
        "tamper-showtraceback": ({"rebalancing_rule": "import IPython\nIPython.get_ipython().showtraceback = "
                                                      "lambda *a, **k: None\n" + right["rebalancing_rule"]},
                                 {"rebalancing_rule": (False, "refused: your cell imports IPython")}),
        "tamper-sys-modules": ({"interpolation": "import sys, types\nsys.modules['labkit.checks'] = "
                                                 "types.SimpleNamespace(interpolation=print)\n" + right["interpolation"]},
                               {"interpolation": (False, "refused: your cell imports sys")}),
        "tamper-code-swap": ({"vae_pieces": right["vae_pieces"] + "\nvae_loss.__code__ = kl_divergence.__code__\n"},
                             {"vae_pieces": (False, "refused: your cell uses the attribute __code__")}),
        "tamper-allclose": ({"gan_losses": "torch.allclose = lambda *a, **k: True\n"
                                           "torch.isfinite = lambda x: torch.ones_like(x, dtype=torch.bool)\n"
                                           "def discriminator_loss(real_logits, fake_logits):\n    pass\n"
                                           "def generator_loss(fake_logits):\n    pass\n"},
                            {"gan_losses": (False, "refused: your cell changes torch.allclose")}),
        "tamper-liar": ({"gan_losses": LIAR},
                        {"gan_losses": (False, "refused: discriminator_loss returned something that is not "
                                               "plain data")}),
        "tamper-write-report": ({"rebalancing_rule": f"torch.save({{'points': 14}}, {str(report / 'gradebook.csv')!r})\n"
                                                     + right["rebalancing_rule"]},
                                {"rebalancing_rule": (False, "(?i)(no such file|does not exist)")}),
        "tamper-read-hidden": ({"interpolation": "import numpy as np\n"
                                                 f"text = np.fromfile({str(source / '05_latent_interpolation.ipynb')!r}, "
                                                 "dtype=np.uint8).tobytes().decode()\nraise ValueError(text)\n"
                                                 + right["interpolation"]},
                               {"interpolation": (False, "FileNotFoundError")}),
        "tamper-exit": ({"vae_pieces": right["vae_pieces"] + "\nimport os\nos._exit(0)\n"},
                        {"vae_pieces": (False, "refused: your cell imports os")}),
        "tamper-segfault": ({"mlp_networks": right["mlp_networks"] + "\nimport numpy as np\n"
                                                                     "np.ctypeslib.ctypes.string_at(0)\n"},
                            {"mlp_networks": (False, "the kernel stopped while running your code")}),
        "tamper-persist": ({"gan_losses": "for path in " + repr([str(home_cache), "/tmp/labkit-poison.py",
                                                                  str(source / "01_train_dcgan.ipynb")]) + ":\n"
                                          "    try:\n        torch.save({'poison': 1}, path)\n"
                                          "    except Exception:\n        pass\n" + right["gan_losses"]},
                           {}),
    }


def alone(outcome):
    """What the gradebook must say of a student who handed in the release with only `outcome`'s exercises written."""
    return {**{e: (False, NOT_DONE) for e in EXERCISES}, **outcome}


def class_of_30(root, source, release, report):
    """The 30 submissions, and what the gradebook must say for each: {student: {exercise: (passed, pattern)}}."""
    expected = {}
    right = {e: reference(source, e) for e in EXERCISES}
    for name in ("right-1", "right-2"):
        submit(root / name, source)
        expected[name] = {}
    for name in ("blank-1", "blank-2"):
        submit(root / name, release)
        expected[name] = {e: (False, NOT_DONE) for e in EXERCISES}
    wrong = {
        "gan_losses": (right["gan_losses"].replace("real_logits))", "real_logits), reduction='sum')"),
                       "discriminator_loss gives"),
        "dcgan_networks": (right["dcgan_networks"].replace("nn.Tanh()", "nn.Identity()"), r"Generator|\[-1, 1\]"),
        "rebalancing_rule": ("def update_discriminator(step, loss_D, loss_G, every=1, pause_ratio=0.0):\n"
                             "    return (step - 1) % every == 0\n", "D should skip"),
        "interpolation": (right["interpolation"].replace("spherical)", "(1 - t) * z1 + t * z2)"), "great circle"),
        "mlp_networks": (right["mlp_networks"].replace("LeakyReLU(0.2", "LeakyReLU(0.1"), "computes something else"),
        "vae_pieces": (right["vae_pieces"].replace("- 1 - logvar", "- 1 + logvar"), "kl_divergence"),
    }
    # Students who wrote one exercise hand in the release with that exercise solved (a kernel for it alone:
    # the release's stubs need none); cheats and the two right students hand in every exercise.
    for exercise, (solution, pattern) in wrong.items():
        submit(root / f"wrong-{exercise}", release, {exercise: solution})
        expected[f"wrong-{exercise}"] = alone({exercise: (False, pattern)})
    submit(root / "copy-a", release, {"gan_losses": OWN_LOSSES})
    submit(root / "copy-b", release, {"gan_losses": OWN_LOSSES_RENAMED})
    expected["copy-a"] = expected["copy-b"] = alone({"gan_losses": (True, "^passed$")})
    for name, (solutions, outcome) in cheats(source, report).items():
        submit(root / name, source, solutions)
        expected[name] = outcome
    submit(root / "loop-forever", release, {"interpolation": right["interpolation"] + "\nwhile True:\n    pass\n"})
    expected["loop-forever"] = alone({"interpolation": (False, "the exercise's time limit of 20 s")})
    submit(root / "edited-check", release, checks={"mlp_networks": "print('all good')\n"})
    expected["edited-check"] = {e: (False, NOT_DONE) for e in EXERCISES}
    folder = submit(root / "symlinked", release)
    (folder / "04_nash_equilibrium.ipynb").unlink()
    (folder / "04_nash_equilibrium.ipynb").symlink_to(source / "04_nash_equilibrium.ipynb")
    expected["symlinked"] = {**{e: (False, NOT_DONE) for e in EXERCISES},
                             "rebalancing_rule": (False, "04_nash_equilibrium.ipynb is a symbolic link")}
    folder = submit(root / "not-a-notebook", release, {"gan_losses": right["gan_losses"]})
    (folder / "09_vae.ipynb").write_text("{ this is not JSON")
    expected["not-a-notebook"] = alone({"gan_losses": (True, "^passed$"),
                                        "vae_pieces": (False, "09_vae.ipynb is not a notebook")})
    folder = submit(root / "missing", release, {"dcgan_networks": right["dcgan_networks"]})
    (folder / "07_mlp_gan.ipynb").unlink()
    expected["missing"] = alone({"dcgan_networks": (True, "^passed$"),
                                 "mlp_networks": (False, "07_mlp_gan.ipynb is missing")})
    assert len(expected) == 30
    return expected


def test_a_class_of_30_is_graded_in_one_command_and_no_cheat_earns_a_point(course, tmp_path):
    source, release = course
    submissions, report = tmp_path / "submissions", tmp_path / "report"
    expected = class_of_30(submissions, source, release, report)
    home_before = sorted(p.name for p in (Path.home() / ".cache").glob("*")) if (Path.home() / ".cache").is_dir() else []
    guarded = tree_digest(source, Path(__import__("labkit").__file__).parent)

    done = labkit("assignment", "grade", submissions, "--out", report, "--source", source, "--timeout", 20)
    assert done.returncode == 0, done.stderr
    table = read_csv(report / "gradebook.csv")
    rows = [r for r in table if r["exercise"] in EXERCISES]  # the written questions: tests/test_written.py
    assert list(rows[0]) == ["student", "notebook", "exercise", "points", "max_points", "passed", "message", "copy_of",
                             "box"]
    assert {r["box"] for r in rows} == {"bwrap"}
    assert len(rows) == 30 * 6 and all(r["message"].startswith("written answer: ") for r in table if r not in rows)
    for r in rows:
        passed, pattern = expected[r["student"]].get(r["exercise"], (True, "^passed$"))
        assert (r["passed"] == "True") == passed and re.search(pattern, r["message"]), r
        assert r["points"] == (str(POINTS[r["exercise"]]) if passed else "0"), r
        assert r["notebook"] == EXERCISES[r["exercise"]] and r["max_points"] == str(POINTS[r["exercise"]])
    assert "30 students (30 graded now, 0 unchanged" in done.stdout

    # Copies: flagged, points kept.
    by = {(r["student"], r["exercise"]): r for r in rows}
    assert by["copy-a", "gan_losses"]["copy_of"] == "copy-b (1.00)"
    assert by["copy-b", "gan_losses"]["copy_of"] == "copy-a (1.00)"
    assert by["right-1", "vae_pieces"]["copy_of"] == ""  # the reference is what every right answer is near: no evidence
    assert by["blank-1", "vae_pieces"]["copy_of"] == "" and by["copy-a", "gan_losses"]["points"] == "2"

    # Feedback a student can read, without the hidden checks.
    feedback = (report / "students" / "tamper-liar" / "feedback.md").read_text()
    assert f"**{CODE_POINTS - 2:g} / {CODE_POINTS:g} points**" in feedback and "refused: discriminator_loss returned" in feedback
    everything = "".join(p.read_text() for p in report.rglob("*") if p.is_file())
    assert "HIDDEN TESTS" not in everything and "same_function(Generator(latent" not in everything
    assert read_csv(report / "students" / "right-1" / "grades.csv")[0]["exercise"] == "dcgan_networks"

    # Nothing the cheats aimed at changed, and nothing appeared where they tried to write.
    assert tree_digest(source, Path(__import__("labkit").__file__).parent) == guarded
    assert not Path("/tmp/labkit-poison.py").exists() and not (Path.home() / ".cache" / "labkit" / "poison.pt").exists()
    assert (sorted(p.name for p in (Path.home() / ".cache").glob("*")) if (Path.home() / ".cache").is_dir() else []) \
        == home_before

    # A second run regrades only what changed, and the endless loop: a time-out is never kept.
    again = labkit("assignment", "grade", submissions, "--out", report, "--source", source, "--timeout", 20)
    assert again.returncode == 0 and "30 students (1 graded now, 29 unchanged" in again.stdout, again.stdout
    kept = [r for r in read_csv(report / "gradebook.csv") if r["student"] != "loop-forever"]
    assert kept == [r for r in table if r["student"] != "loop-forever"]
    shutil.rmtree(submissions / "blank-2")
    submit(submissions / "blank-2", source)
    third = labkit("assignment", "grade", submissions, "--out", report, "--source", source, "--timeout", 20)
    assert "30 students (2 graded now, 28 unchanged" in third.stdout, third.stdout
    assert {r["passed"] for r in read_csv(report / "students" / "blank-2" / "grades.csv")
            if r["exercise"] in EXERCISES} == {"True"}  # (its written answers wait for review)


def test_a_blank_submission_graded_after_hostile_ones_still_scores_zero(course, tmp_path):
    source, release = course
    hostile = tmp_path / "hostile"
    for name, (solutions, _) in cheats(source, tmp_path / "blank-report").items():
        if name in ("tamper-persist", "tamper-write-report", "tamper-segfault", "tamper-checks-patched"):
            submit(hostile / name, source, solutions)
    assert labkit("assignment", "grade", hostile, "--out", tmp_path / "hostile-report", "--source", source,
                  "--timeout", 20).returncode == 0
    done = labkit("assignment", "grade", release, "--out", tmp_path / "blank-report", "--source", source)
    assert done.returncode == 0, done.stderr
    assert f"total: 0 / {CODE_POINTS:g} points" in done.stdout
    assert {r["points"] for r in read_csv(tmp_path / "blank-report" / "grades.csv")} == {"0"}


def test_one_student_the_instructor_and_the_blank_release(course, tmp_path):
    source, release = course
    done = labkit("assignment", "grade", source, "--out", tmp_path / "solved", "--source", source)
    assert done.returncode == 0, done.stderr
    rows = [r for r in read_csv(tmp_path / "solved" / "grades.csv") if r["exercise"] in EXERCISES]
    assert list(rows[0]) == ["notebook", "exercise", "points", "max_points", "passed", "message", "copy_of", "box"]
    assert all(r["passed"] == "True" and r["points"] == r["max_points"] for r in rows), rows
    assert f"total: {CODE_POINTS:g} / {CODE_POINTS:g} points" in done.stdout and done.stderr == ""
    done = labkit("assignment", "grade", release, "--out", tmp_path / "blank", "--source", source)
    assert f"total: 0 / {CODE_POINTS:g} points" in done.stdout
    assert all(r["message"].startswith(NOT_DONE) for r in read_csv(tmp_path / "blank" / "grades.csv")
               if r["exercise"] in EXERCISES)


@pytest.mark.parametrize("args, env, said", [
    (["nowhere"], {}, "no folder"),
    (["file.txt"], {}, "no folder"),
    (["submission", "--timeout", "-5"], {}, "--timeout must be a number of seconds from 1"),
    (["submission", "--jobs", "0"], {}, "--jobs must be a whole number from 1"),
    (["submission"], {"LABKIT_PROFILE": "bogus"}, "LABKIT_PROFILE='bogus' is not a profile"),
    (["submission"], {"PATH": "/nonexistent"}, "install it (sudo apt-get install bubblewrap"),  # no bwrap
])
def test_bad_input_is_one_line_and_grades_nothing(course, tmp_path, args, env, said):
    source, release = course
    (tmp_path / "file.txt").write_text("x")
    shutil.copytree(release, tmp_path / "submission")
    command = [sys.executable, "-m", "labkit.cli", "assignment", "grade", *args, "--out", "report",
               "--source", str(source)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "LABKIT_PROFILE": "smoke", **env})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("labkit: error: ") and said in done.stderr, done.stderr
    assert not (tmp_path / "report").exists()


def test_a_report_folder_of_the_users_own_files_is_never_touched(course, tmp_path):
    source, release = course
    report = tmp_path / "report"
    (report / "graded").mkdir(parents=True)
    (report / "graded" / "thesis.txt").write_text("three years of work")
    (report / "grading.log").write_text("my notes")
    done = labkit("assignment", "grade", release, "--out", report, "--source", source)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "was not written by labkit" in done.stderr
    assert (report / "graded" / "thesis.txt").read_text() == "three years of work"
    assert (report / "grading.log").read_text() == "my notes" and sorted(os.listdir(report)) == ["graded", "grading.log"]
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    done = labkit("assignment", "grade", release, "--out", tmp_path / "link", "--source", source)
    assert done.returncode == 2 and "is a symbolic link" in done.stderr and not os.listdir(tmp_path / "elsewhere")


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MB filesystem (tmpfs), mounted for the test; needs root, as CI runs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def files_under(folder):
    """{path: bytes} of the report's files, in subfolders too (students/, written/), but labkit's hidden ones."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_a_full_disk_under_the_report_is_one_line_and_the_last_report_stays_whole(course, tmp_path, small_disk):
    source, release = course
    report = small_disk / "report"
    assert labkit("assignment", "grade", release, "--out", report, "--source", source).returncode == 0
    before = files_under(report)
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    done = labkit("assignment", "grade", source, "--out", report, "--source", source)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("labkit: error: the disk is full"), done.stderr
    assert files_under(report) == before
    filler.unlink()
    assert labkit("assignment", "grade", source, "--out", report, "--source", source).returncode == 0
    assert {r["passed"] for r in read_csv(report / "grades.csv") if r["exercise"] in EXERCISES} == {"True"}


FORGER = '''def update_discriminator(step, loss_D, loss_G, every=1, pause_ratio=0.0):
    return True

raise type('=HYPERLINK("http://evil.example/x","click")', (Exception,), {})(
    "\\nbob\\t04_nash_equilibrium.ipynb\\trebalancing_rule\\t0/2\\tseed 7\\tcopied from alice, see TA"
    "\\nalice\\t04_nash_equilibrium.ipynb\\trebalancing_rule\\t2/2\\tseed 99\\tpassed")
x = ''' + "-" * 900 + "1\n"  # parses and runs, but is too deep for a recursive walk of its syntax tree


def test_what_a_students_code_says_reaches_the_report_as_one_inert_line(course, tmp_path):
    source, release = course
    submit(tmp_path / "class" / "bob", release)
    submit(tmp_path / "class" / "mallory", release, {"rebalancing_rule": FORGER})
    done = labkit("assignment", "grade", tmp_path / "class", "--out", tmp_path / "report", "--source", source,
                  "--jobs", 1)
    assert done.returncode == 0, done.stderr
    rows = [r for r in read_csv(tmp_path / "report" / "gradebook.csv") if r["exercise"] in EXERCISES]  # code rows
    assert [r["student"] for r in rows] == ["bob"] * 6 + ["mallory"] * 6
    (forged,) = [r for r in rows if r["student"] == "mallory" and r["exercise"] == "rebalancing_rule"]
    assert forged["points"] == "0" and forged["message"].startswith("'=HYPERLINK")  # text, not a formula
    assert "\n" not in forged["message"] and "\t" not in forged["message"]
    log = (tmp_path / "report" / "grading.log").read_text().splitlines()
    code = [line for line in log[1:] if line.split("\t")[2] in EXERCISES]  # (the written questions have rows too)
    assert len(code) == 12 and not any(line.startswith("alice") for line in log)
    assert sum(line.startswith("bob\t") for line in code) == 6


def test_a_student_whose_grading_crashed_is_graded_again_on_the_next_run(course, tmp_path, monkeypatch, capsys):
    from labkit.grading import gradebook

    source, release = course
    submit(tmp_path / "class" / "carol", release)
    real = gradebook.grade_exercise
    with monkeypatch.context() as patch:  # a bug of grading's own, not of the student's code
        patch.setattr(gradebook, "grade_exercise", lambda *a, **k: 1 / 0)
        assert gradebook.grade(tmp_path / "class", tmp_path / "report", source, timeout=20, jobs=1) == 0
    assert "1 students (1 graded now" in capsys.readouterr().out
    rows = [r for r in read_csv(tmp_path / "report" / "gradebook.csv") if r["exercise"] in EXERCISES]  # code rows
    assert {r["message"] for r in rows} == {"grading crashed (ZeroDivisionError: division by zero); grade it again"}
    assert gradebook.grade_exercise is real
    assert gradebook.grade(tmp_path / "class", tmp_path / "report", source, timeout=20, jobs=1) == 0
    assert "1 students (1 graded now, 0 unchanged" in capsys.readouterr().out
    assert all(r["message"].startswith(NOT_DONE) for r in read_csv(tmp_path / "report" / "gradebook.csv")
               if r["exercise"] in EXERCISES)


BOMB = '''import numpy as np

libc = np.ctypeslib.ctypes.CDLL(None)
for _ in range(40):
    if libc.fork() == 0:
        break
while True:
    pass
'''


def test_a_student_who_forks_busy_loops_costs_a_classmate_nothing_and_times_out_alone(course, tmp_path):
    """Issue 26: 40 busy loops in one student's cell, graded beside a classmate (--jobs 2). The limit counts
    each kernel's own CPU, so the classmate scores what it scores alone; the bomber loses that exercise only,
    and a time-out is never kept: the next grading grades it again."""
    source, release = course
    right = {e: reference(source, e) for e in EXERCISES}
    submit(tmp_path / "class" / "bomber", release, {"interpolation": right["interpolation"] + "\n" + BOMB})
    submit(tmp_path / "class" / "classmate", source)
    alone = labkit("assignment", "grade", tmp_path / "class" / "classmate", "--out", tmp_path / "alone",
                   "--source", source, "--timeout", 10)
    assert alone.returncode == 0, alone.stderr
    done = labkit("assignment", "grade", tmp_path / "class", "--out", tmp_path / "report", "--source", source,
                  "--timeout", 10, "--jobs", 2)
    assert done.returncode == 0, done.stderr
    rows = {(r["student"], r["exercise"]): r for r in read_csv(tmp_path / "report" / "gradebook.csv")}
    for r in read_csv(tmp_path / "alone" / "grades.csv"):
        assert rows["classmate", r["exercise"]]["points"] == r["points"], rows["classmate", r["exercise"]]
    assert "the exercise's time limit of 10 s" in rows["bomber", "interpolation"]["message"]  # CPU; 10x in wall
    again = labkit("assignment", "grade", tmp_path / "class", "--out", tmp_path / "report", "--source", source,
                   "--timeout", 10, "--jobs", 2)
    assert "2 students (1 graded now, 1 unchanged" in again.stdout, again.stdout


def odd_class(root, source, release):
    """A class where each folder but one holds something odd; {student: what its rows must say}."""
    submit(root / "right", source)
    odd = {}
    folder = submit(root / "null-metadata", release)
    nb = json.loads((folder / "04_nash_equilibrium.ipynb").read_text())
    nb["cells"][0]["metadata"]["nbgrader"] = None
    nb["cells"].append({"cell_type": "code", "metadata": {"nbgrader": None}, "source": "x = 1", "outputs": [],
                        "execution_count": None})
    (folder / "04_nash_equilibrium.ipynb").write_text(json.dumps(nb))
    odd["null-metadata"] = {e: NOT_DONE for e in EXERCISES}
    folder = submit(root / "number-source", release)
    nb = json.loads((folder / "05_latent_interpolation.ipynb").read_text())
    solution = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "interpolation_solution")
    solution["source"] = 5
    (folder / "05_latent_interpolation.ipynb").write_text(json.dumps(nb))
    odd["number-source"] = {**{e: NOT_DONE for e in EXERCISES}, "interpolation": "is not text"}
    folder = submit(root / "bad-json", release)
    (folder / "07_mlp_gan.ipynb").write_text('{"cells": [')
    odd["bad-json"] = {**{e: NOT_DONE for e in EXERCISES}, "mlp_networks": "07_mlp_gan.ipynb is not a notebook"}
    folder = submit(root / "huge", release)
    with open(folder / "09_vae.ipynb", "r+b") as f:  # 100 MB, sparse: nothing is written to the disk
        f.truncate(100 * 2**20)
    odd["huge"] = {**{e: NOT_DONE for e in EXERCISES}, "vae_pieces": "09_vae.ipynb is 100 MB"}
    (root / "linked").symlink_to(root / "right")
    odd["linked"] = {e: "linked is a symbolic link" for e in EXERCISES}
    folder = submit(root / "many-cells", release)  # the red team's: 1.2 M cells whose key is spelled "cell\u005ftype"
    nb = json.loads((folder / "07_mlp_gan.ipynb").read_text())  # passed a count of '"cell_type"' and cost 2.3 GB
    nb["cells"] += [{"cell_type": "raw", "metadata": {}, "source": ""}] * 120_000
    (folder / "07_mlp_gan.ipynb").write_text(json.dumps(nb).replace('"cell_type"', '"cell\\u005ftype"'))
    odd["many-cells"] = {**{e: NOT_DONE for e in EXERCISES}, "mlp_networks": "07_mlp_gan.ipynb holds about 6"}
    folder = submit(root / "nested", release)  # and 21 M empty lists in the metadata (60 MB) cost it 3.6 GB
    nb = json.loads((folder / "04_nash_equilibrium.ipynb").read_text())
    nb["metadata"]["x"] = [[]] * 600_000
    (folder / "04_nash_equilibrium.ipynb").write_text(json.dumps(nb))
    odd["nested"] = {**{e: NOT_DONE for e in EXERCISES}, "rebalancing_rule": "04_nash_equilibrium.ipynb holds about 1,2"}
    (root / "03_fid_sweep.ipynb").write_bytes((release / "03_fid_sweep.ipynb").read_bytes())  # a stray upload: not
    # a student, and the class beside it is still a class (the red team's turned the class into one student)
    # Names: the report's own files, a repository's notebooks folder, an LMS download's file name (a folder).
    for name in ("gradebook.csv", "grading.log", "students", "notebooks", "mallory_1234_5678_01_train_dcgan.ipynb"):
        submit(root / name, release)
        odd[name] = {e: NOT_DONE for e in EXERCISES}
    return odd


def test_whatever_one_students_folder_holds_costs_only_that_students_rows(course, tmp_path):
    source, release = course
    odd = odd_class(tmp_path / "class", source, release)
    done = labkit("assignment", "grade", tmp_path / "class", "--out", tmp_path / "report", "--source", source,
                  "--timeout", 20)
    assert done.returncode == 0, done.stderr
    rows = [r for r in read_csv(tmp_path / "report" / "gradebook.csv") if r["exercise"] in EXERCISES]  # code rows
    assert len(rows) == (len(odd) + 1) * 6
    for r in rows:
        if r["student"] == "right":
            assert r["passed"] == "True", r
        else:
            assert r["passed"] == "False" and odd[r["student"]][r["exercise"]] in r["message"], r
    for student in [*odd, "right"]:
        assert read_csv(tmp_path / "report" / "students" / student / "grades.csv")[0]["exercise"] == "dcgan_networks"
    assert (tmp_path / "report" / "grading.log").is_file()
    assert "labkit: warning: 03_fid_sweep.ipynb lies beside the students' folders, in no student's: not graded" \
        in done.stderr


def test_a_grading_process_that_dies_costs_only_its_student_who_is_graded_once_more(course, tmp_path, monkeypatch):
    """A process grading one student is killed (SIGKILL: what the OOM killer sends). Only that student is
    graded again, once: "flaky" dies on its first try only and is graded; "victim" dies twice and its rows
    say so; the students graded beside them are untouched."""
    from labkit.grading import gradebook

    source, release = course
    for name in ("ann", "flaky", "victim", "zed"):
        submit(tmp_path / "class" / name, release)
    real = gradebook.grade_student

    def dies(submission, *args):
        marker = tmp_path / f"died-{submission.student}"
        if submission.student == "victim" or (submission.student == "flaky" and not marker.exists()):
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(submission, *args)

    monkeypatch.setattr(gradebook, "grade_student", dies)
    assert gradebook.grade(tmp_path / "class", tmp_path / "report", source, timeout=20, jobs=2) == 0
    rows = [r for r in read_csv(tmp_path / "report" / "gradebook.csv") if r["exercise"] in EXERCISES]  # code rows
    assert len(rows) == 4 * 6
    for r in rows:
        if r["student"] == "victim":
            assert r["message"] == ("grading crashed (WorkerDied: its grading process died twice (killed by "
                                    "SIGKILL)); grade it again"), r
        else:
            assert r["message"].startswith(NOT_DONE), r


def test_a_slerp_of_the_wrong_shape_fails_on_its_shape_before_anything_broadcasts(course):
    """Issue 26: a slerp returning (N, 1, 1) where (N, D) is expected cost the grader 145x its memory through a
    broadcasting allclose. Shapes are compared first: a failed check that names both shapes."""
    from labkit.grading import sandbox
    from labkit.grading.assignment import read_notebook
    from labkit.grading.grade import exercises_of, grade_exercise

    source, _ = course
    instructor = {p.name: read_notebook(p) for p in sorted(source.glob("[0-9][0-9]_*.ipynb"))}
    exercise = next(e for e in exercises_of(instructor) if e.name == "interpolation")
    flat = "_right = slerp\n\n\ndef slerp(z1, z2, t):\n    return _right(z1, z2, t).sum(-1, keepdim=True)[..., None]\n"
    verdict = grade_exercise(exercise, [reference(source, "interpolation"), flat],
                             sandbox.make_box(sandbox.BWRAP, [source]), 60)
    assert not verdict.passed and "shape (3, 1, 1) was compared with one of shape (3, 16)" in verdict.message, \
        verdict.message


def test_the_pipeline_grade_py_declares_names_the_functions_that_run_it():
    from importlib import import_module

    from labkit.grading.grade import PIPELINE

    assert [stage for stage, _, _ in PIPELINE] == ["submission", "rules", "box", "kernel", "wire", "stand-ins",
                                                   "checks", "gradebook"]
    for _, where, _ in PIPELINE:
        module, *names = where.split(".")
        found = import_module(f"labkit.grading.{module}")
        for name in names:
            found = getattr(found, name)
        assert callable(found), where


def test_without_bubblewrap_the_instructor_may_accept_a_process_box_and_the_gradebook_says_so(course, tmp_path):
    source, release = course
    command = [sys.executable, "-m", "labkit.cli", "assignment", "grade", str(release), "--out", str(tmp_path / "r"),
               "--source", str(source), "--process-box"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PATH": "/nonexistent"})
    assert done.returncode == 0 and "--process-box: students' code runs with your file" in done.stderr, done.stderr
    assert {r["box"] for r in read_csv(tmp_path / "r" / "grades.csv") if r["exercise"] in EXERCISES} == {"process"}
