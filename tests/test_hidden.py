"""Hidden checks on inputs no student can know, the same on every regrade (labkit/grading/secret.py).

The first tests run the instructor's check cells in this process, with labkit's
reference or a student's wrong answer bound to the exercise's names, on many
seeds: the reference passes on every seed, and each wrong answer a hidden check
means to catch fails on every seed (its branch is always reached). The last ones
run the real grader on real notebooks: a lookup table and a loss that answers from
memory fail, two gradings give the same rows, and no input reaches the feedback.
"""

import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from labkit import checks, solutions
from labkit.grading import grade, secret
from labkit.grading.assignment import lab_notebooks, read_notebook

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
SEEDS = range(1, 201)


@pytest.fixture(scope="module")
def exercises():
    """{exercise name: grade.Exercise} of the instructor's notebooks."""
    found = grade.exercises_of({p.name: read_notebook(p) for p in lab_notebooks(NOTEBOOKS)})
    return {e.name: e for e in found}


def verdict(exercise, seed, **names):
    """The verdict of the exercise's check cell (public and hidden checks) with `names` bound, as grading
    decides it, on the inputs of `seed`."""
    return grade.run_check_cell(exercise, names, seed)


# ---------------------------------------------------------------------------
# Students' wrong answers that the fixed inputs of the past let through


def fixed_answers():
    """{(step, loss_D, loss_G, every, pause_ratio): answer} for the 57 inputs the checks used to call
    update_discriminator with: what a lookup table needed to pass."""
    public = [((1, 0.5, None), {}), ((2, 0.5, 1.0), {}), ((1, 0.5, None), {"every": 2}), ((2, 0.5, 1.0), {"every": 2}),
              ((3, 0.5, 1.0), {"every": 2}), ((4, 0.5, 1.0), {"every": 2}), ((5, 0.5, 1.0), {"pause_ratio": 0.8}),
              ((5, 0.9, 1.0), {"pause_ratio": 0.8}), ((1, 0.1, None), {"pause_ratio": 0.8})]
    hidden = [((s, 1.0, 1.0), {"every": e}) for e in (1, 3, 5) for s in range(1, 16)]
    hidden += [((4, 0.8, 1.0), {"every": 3, "pause_ratio": 0.8}), ((2, 5.0, 1.0), {"every": 3, "pause_ratio": 0.8}),
               ((7, 0.1, 1.0), {"every": 1, "pause_ratio": 0.0})]
    known = {}
    for args, kwargs in public + hidden:
        every, ratio = kwargs.get("every", 1), kwargs.get("pause_ratio", 0.0)
        known[(*args, every, ratio)] = solutions.update_discriminator(*args, every, ratio)
    assert len(public + hidden) == 57
    return known


def table_rule():
    """update_discriminator as a lookup table of the 57 inputs the checks used to call it with."""
    known = fixed_answers()

    def update_discriminator(step_, loss_D, loss_G, every=1, pause_ratio=0.0):
        return known.get((step_, loss_D, loss_G, every, pause_ratio), True)
    return update_discriminator


def memory_d_loss(real, fake):
    """From probabilities (nn.BCELoss clamps log(0) to -100), except at the public checks' +-200 logits,
    where it answers what it remembers."""
    if bool((real.abs() == 200).all()):
        return torch.relu(-real).mean() + torch.relu(fake).mean()
    bce = torch.nn.BCELoss()
    return bce(torch.sigmoid(real), torch.ones_like(real)) + bce(torch.sigmoid(fake), torch.zeros_like(fake))


def memory_g_loss(fake):
    if bool((fake.abs() == 200).all()):
        return torch.relu(-fake).mean()
    return torch.nn.BCELoss()(torch.sigmoid(fake), torch.ones_like(fake))


def naive_slerp(z1, z2, t):
    """slerp without the straight line for parallel codes: sin(angle) = 0 divides by 0 there."""
    omega = torch.arccos((F.normalize(z1, dim=-1) * F.normalize(z2, dim=-1)).sum(-1, keepdim=True).clamp(-1, 1))
    return (torch.sin((1 - t) * omega) * z1 + torch.sin(t * omega) * z2) / torch.sin(omega)


def rule_with(mistake):
    def update_discriminator(step_, loss_D, loss_G, every=1, pause_ratio=0.0):
        if mistake != "ignores every" and (step_ - 1) % every:
            return False
        if mistake == "ignores a missing loss_G" and loss_G is None:
            return False
        if pause_ratio > 0 and loss_G is not None:
            ratio = loss_D / loss_G
            return ratio > pause_ratio if mistake == "pauses at the ratio" else ratio >= pause_ratio
        return True
    return update_discriminator


def test_the_reference_passes_the_hidden_checks_on_every_seed(exercises):
    cheap = {"rebalancing_rule": dict(update_discriminator=solutions.update_discriminator),
             "gan_losses": dict(discriminator_loss=solutions.discriminator_loss, generator_loss=solutions.generator_loss),
             "interpolation": dict(interpolation_latents=solutions.interpolation_latents, slerp=solutions.slerp),
             "vae_pieces": dict(reparameterize=solutions.reparameterize, kl_divergence=solutions.kl_divergence,
                                vae_loss=solutions.vae_loss)}
    for name, names in cheap.items():
        for seed in SEEDS:
            assert verdict(exercises[name], seed, **names).passed, (name, seed)
    networks = {"dcgan_networks": dict(Generator=solutions.DCGANGenerator, Discriminator=solutions.DCGANDiscriminator),
                "mlp_networks": dict(MLPGenerator=solutions.MLPGenerator, MLPDiscriminator=solutions.MLPDiscriminator)}
    for name, names in networks.items():
        for seed in SEEDS[:10]:
            assert verdict(exercises[name], seed, **names).passed, (name, seed)


@pytest.mark.parametrize("exercise, names, message", [
    ("rebalancing_rule", dict(update_discriminator=table_rule()), "^D must "),
    ("rebalancing_rule", dict(update_discriminator=rule_with("pauses at the ratio")),
     "^D must update when loss_D / loss_G equals pause_ratio"),
    ("rebalancing_rule", dict(update_discriminator=rule_with("ignores every")), "D (should|must) skip"),
    ("rebalancing_rule", dict(update_discriminator=rule_with("ignores a missing loss_G")),
     "loss_G=None.*D should update|^D must update when G has no loss yet"),
    ("gan_losses", dict(discriminator_loss=memory_d_loss, generator_loss=solutions.generator_loss),
     "^the loss overflows or is clamped for large logits"),
    ("gan_losses", dict(discriminator_loss=solutions.discriminator_loss, generator_loss=memory_g_loss),
     "^the loss overflows or is clamped for large logits"),
    ("interpolation", dict(interpolation_latents=solutions.interpolation_latents, slerp=naive_slerp),
     "^slerp of two parallel codes gives NaN"),
    ("vae_pieces", dict(reparameterize=solutions.reparameterize, kl_divergence=solutions.kl_divergence,
                        vae_loss=lambda *a: solutions.vae_loss(*a) * a[0].shape[0]), "batch"),
])
def test_each_hidden_check_catches_its_mistake_on_every_seed(exercises, exercise, names, message):
    for seed in SEEDS:
        found = verdict(exercises[exercise], seed, **names)
        assert not found.passed and re.search(message, found.message), (seed, found.message)


def test_the_wrong_answers_above_passed_the_fixed_inputs_of_the_past(exercises):
    """Without the hidden checks (seed 0, the public checks only), the lookup table and the loss that
    remembers pass: what catches them is the hidden checks' inputs."""
    checks.rebalancing_rule(table_rule())
    checks.gan_losses(memory_d_loss, memory_g_loss)


def numbers(text):
    return {n.replace(",", "").replace("_", "") for n in re.findall(r"\d[\d,_]*(?:\.\d+)?(?:e-?\d+)?", text)}


@pytest.mark.parametrize("exercise, names", [
    ("gan_losses", dict(discriminator_loss=lambda r, f: solutions.discriminator_loss(r, f) * 1.5,
                        generator_loss=solutions.generator_loss)),
    ("vae_pieces", dict(reparameterize=solutions.reparameterize, kl_divergence=solutions.kl_divergence,
                        vae_loss=lambda *a: solutions.vae_loss(*a) + 0.25)),
    ("vae_pieces", dict(reparameterize=solutions.reparameterize, vae_loss=solutions.vae_loss,
                        kl_divergence=lambda m, lv: solutions.kl_divergence(m, lv)[:-1])),
    ("rebalancing_rule", dict(update_discriminator=lambda *a, **k: "step 17, loss 0.731")),
    ("dcgan_networks", dict(Generator=lambda z, h: solutions.DCGANGenerator(z, h + 3),
                            Discriminator=solutions.DCGANDiscriminator)),
])
def test_a_failing_check_shows_no_value_the_inputs_or_the_code_made(exercises, exercise, names):
    """Every number in a grading's message is one the public checks' source spells out (a fixed size, a
    parameter count), never one computed from the seeded inputs or returned by the student's code."""
    public = numbers(inspect.getsource(checks) + exercises[exercise].check.split("### BEGIN HIDDEN TESTS")[0])
    for seed in (5, 6, 7):
        found = verdict(exercises[exercise], seed, **names)
        assert not found.passed and numbers(found.message) <= public, found.message
        assert "another" in found.message or not numbers(found.message) - {"1", "0"}, found.message


def test_a_secret_that_cannot_be_made_is_one_line_that_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(secret.ENVIRONMENT, raising=False)
    with pytest.raises(ValueError, match="cannot write the grading secret .* set LABKIT_GRADING_SECRET"):
        secret.load(tmp_path / "no such folder")
    (tmp_path / secret.FILE).write_text("short\n")
    with pytest.raises(ValueError, match="holds no secret"):
        secret.load(tmp_path)
    monkeypatch.setenv(secret.ENVIRONMENT, "e" * 64)
    assert secret.load(tmp_path / "no such folder") == b"e" * 64


def test_the_inputs_depend_on_the_student_and_the_exercise_and_nothing_else():
    key = b"k" * 64
    a = secret.seed(key, "alice", "05_latent_interpolation.ipynb", "interpolation")
    assert a == secret.seed(key, "alice", "05_latent_interpolation.ipynb", "interpolation")
    assert a != secret.seed(key, "bob", "05_latent_interpolation.ipynb", "interpolation")
    assert a != secret.seed(key, "alice", "04_nash_equilibrium.ipynb", "rebalancing_rule")
    assert a != secret.seed(b"j" * 64, "alice", "05_latent_interpolation.ipynb", "interpolation")
    assert 0 <= a < 2**63
    with grade._seeded(a):
        first = torch.randn(3, generator=checks.generator())
    with grade._seeded(a):
        assert torch.equal(first, torch.randn(3, generator=checks.generator()))
    assert not checks.GRADING and checks.SEED == 0  # restored for the notebooks


# ---------------------------------------------------------------------------
# The real grader, on real notebooks

sys.path.insert(0, str(Path(__file__).parent))
from test_grading import labkit, read_csv, reference, submit  # noqa: E402  (the same helpers as the class of 30)

TABLE = '''KNOWN = {known!r}


def update_discriminator(step, loss_D, loss_G, every=1, pause_ratio=0.0):
    return KNOWN.get((step, loss_D, loss_G, every, pause_ratio), True)
'''
MEMORY = '''import torch
from torch import nn


def discriminator_loss(real_logits, fake_logits):
    if bool((real_logits.abs() == 200).all()):  # the public checks' sure discriminator: answered from memory
        return torch.relu(-real_logits).mean() + torch.relu(fake_logits).mean()
    real, fake = torch.sigmoid(real_logits), torch.sigmoid(fake_logits)
    return nn.BCELoss()(real, torch.ones_like(real)) + nn.BCELoss()(fake, torch.zeros_like(fake))


def generator_loss(fake_logits):
    if bool((fake_logits.abs() == 200).all()):
        return torch.relu(-fake_logits).mean()
    fake = torch.sigmoid(fake_logits)
    return nn.BCELoss()(fake, torch.ones_like(fake))
'''
NAIVE_SLERP = inspect.getsource(naive_slerp).replace("F.normalize", "torch.nn.functional.normalize").replace(
    "def naive_slerp", "def slerp")
LEAKS = {  # right on the public checks' inputs; on any other input, raise it, to read it in the feedback
    # (the kind of exception is chosen by the input too: 3 bits of `step` if the feedback named it)
    "rebalancing_rule": '''KINDS = [ValueError, TypeError, KeyError, IndexError, OverflowError, LookupError,
         ZeroDivisionError, ArithmeticError]


def update_discriminator(step, loss_D, loss_G, every=1, pause_ratio=0.0):
    if every > 2 or step > 5:
        raise KINDS[step % 8](f"inputs: {step} {loss_D} {loss_G} {every} {pause_ratio}")
    if (step - 1) % every:
        return False
    return pause_ratio == 0 or loss_G is None or loss_D / loss_G >= pause_ratio
''',
    "interpolation": NAIVE_SLERP.replace("    omega =", "    if z1.shape[-1] != 16:\n"
                                                    "        raise ValueError(repr(z1.tolist()) + repr(t.tolist()))\n"
                                                    "    omega =") + '''

def interpolation_latents(z1, z2, start=0.0, stop=1.0, steps=20, method="linear"):
    if z1.shape[-1] != 16:
        raise ValueError(f"{start} {stop} {steps} {z1.tolist()}")
    t = torch.linspace(start, stop, steps).view(1, steps, 1)
    a, b = z1[:, None, :], z2[:, None, :]
    return (1 - t) * a + t * b if method == "linear" else slerp(a, b, t)
'''}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The instructor's notebooks (a copy), released once: the release makes the grading secret."""
    root = tmp_path_factory.mktemp("course")
    source = root / "instructor"
    shutil.copytree(NOTEBOOKS, source, ignore=shutil.ignore_patterns(secret.FILE))
    done = labkit("assignment", "release", "--out", root / "release", "--source", source)
    assert done.returncode == 0 and "made the grading secret" in done.stdout, done.stderr
    return source, root / "release"


def test_the_first_release_makes_the_secret_and_no_release_holds_it(course):
    source, release = course
    key = (source / secret.FILE).read_text().strip()
    assert len(key) == 64 and (source / secret.FILE).stat().st_mode & 0o077 == 0  # the instructor's only
    assert not any(key.encode() in p.read_bytes() for p in release.rglob("*") if p.is_file())
    assert not list(release.rglob(secret.FILE))
    again = labkit("assignment", "release", "--out", release, "--source", source, "--force")
    assert again.returncode == 0 and "made the grading secret" not in again.stdout
    assert (source / secret.FILE).read_text().strip() == key  # kept: regrades draw the same inputs
    ignored = subprocess.run(["git", "check-ignore", "-q", f"notebooks/{secret.FILE}"], cwd=NOTEBOOKS.parent)
    assert ignored.returncode == 0  # never committed from the lab's own notebooks either


def graded(submissions, report, source, **env):
    done = subprocess.run([sys.executable, "-m", "labkit.cli", "assignment", "grade", submissions, "--out",
                           report, "--source", source, "--jobs", "1", "--timeout", "60"], capture_output=True,
                          text=True, env={**os.environ, "LABKIT_PROFILE": "smoke", **env}, timeout=1800)
    assert done.returncode == 0, done.stderr
    return {(r["student"], r["exercise"]): r for r in read_csv(report / "gradebook.csv")}


def test_wrong_answers_that_fixed_inputs_let_through_fail_and_regrades_agree(course, tmp_path):
    source, release = course
    notebooks = release / "notebooks"
    submit(tmp_path / "class" / "table", notebooks, {"rebalancing_rule": TABLE.format(known=fixed_answers()),
                                                     "gan_losses": MEMORY, "interpolation": NAIVE_SLERP + '''

def interpolation_latents(z1, z2, start=0.0, stop=1.0, steps=20, method="linear"):
    t = torch.linspace(start, stop, steps).view(1, steps, 1)
    a, b = z1[:, None, :], z2[:, None, :]
    return (1 - t) * a + t * b if method == "linear" else slerp(a, b, t)
'''})
    submit(tmp_path / "class" / "leaker", notebooks, LEAKS)
    submit(tmp_path / "class" / "right", notebooks, {e: reference(source, e) for e in LEAKS})

    gradings = [graded(tmp_path / "class", tmp_path / f"report-{n}", source) for n in range(2)]
    assert gradings[0] == gradings[1]  # every row, points and messages: the same inputs each time
    logs = [(tmp_path / f"report-{n}" / "grading.log").read_text().splitlines()[1:] for n in range(2)]
    assert logs[0] == logs[1]
    rows = gradings[0]
    assert rows["table", "rebalancing_rule"]["points"] == "0" and rows["table", "rebalancing_rule"]["message"]. \
        startswith("D must ")
    assert rows["table", "gan_losses"]["message"].startswith("the loss overflows or is clamped for large logits")
    assert rows["table", "interpolation"]["message"].startswith("slerp of two parallel codes gives NaN")
    assert all(rows["right", e]["passed"] == "True" for e in LEAKS)
    for exercise in LEAKS:  # what the leaker raised never reaches the report: no number at all
        message = rows["leaker", exercise]["message"]
        assert rows["leaker", exercise]["points"] == "0" and message in (
            "your code raised an exception while the checks called it: run the notebook's check cell to see where",
            "the checks could not use what your code returned (run the notebook's check cell)"), message
        # (fixed words: not even the exception's kind, which a student could choose from the inputs)
    feedback = (tmp_path / "report-0" / "students" / "leaker" / "feedback.md").read_text()
    assert "inputs:" not in feedback and "[[" not in feedback

    # Another secret (LABKIT_GRADING_SECRET, as a CI job passes it) draws other inputs: everyone is regraded.
    rotated = graded(tmp_path / "class", tmp_path / "report-0", source, LABKIT_GRADING_SECRET="r" * 64)
    log = (tmp_path / "report-0" / "grading.log").read_text().splitlines()[1:]
    def inputs(lines):  # of the code exercises (the written questions' rows have none)
        return {line.split("\t")[4] for line in lines} - {"inputs None"}
    assert inputs(log).isdisjoint(inputs(logs[0]))
    assert rotated["right", "interpolation"]["passed"] == "True"
    assert rotated["table", "rebalancing_rule"]["passed"] == "False"
