"""The lab as an assignment: the instructor's marks, the student release, runs of a student's code, and
the grading workflow. Grading itself: tests/test_grading.py (a class), test_sandbox.py and test_rules.py."""

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit.grading import assignment

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
EXERCISE_NOTEBOOKS = ["01_train_dcgan.ipynb", "04_nash_equilibrium.ipynb", "05_latent_interpolation.ipynb",
                      "07_mlp_gan.ipynb", "09_vae.ipynb"]


def labkit(*args, cwd=None, env_extra=None, timeout=900):
    import os

    env = dict(os.environ, LABKIT_PROFILE="smoke", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "labkit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def solution_lines(nb):
    """The non-trivial lines of every solution region (what a release must not contain)."""
    lines = []
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if "### BEGIN SOLUTION" in line:
                inside = True
            elif "### END SOLUTION" in line:
                inside = False
            elif inside and len(line.strip()) > 20:
                lines.append(line.strip())
    return lines


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("release")
    done = labkit("assignment", "release", "--out", out, "--source", NOTEBOOKS)
    assert done.returncode == 0, done.stderr
    code = [p for path in sorted(NOTEBOOKS.glob("*.ipynb"))
            for _, p in assignment.exercises(nbformat.read(str(path), as_version=4))]
    assert "9 student notebooks" in done.stdout and f"{len(code)} exercises, {sum(code):g} points" in done.stdout
    return out / "notebooks"


def test_the_instructor_notebooks_mark_their_exercises_consistently():
    found = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        assignment.check_marks(nb, path.name)  # every solution region in a solution cell, with its grade cell
        found += [(path.name, name, points) for name, points in assignment.exercises(nb)]
        for cell in nb.cells:
            m = cell.metadata.get("nbgrader", {})
            if m.get("grade"):  # a check is locked; a written answer's cell is the student's to write in
                assert m["locked"] != m["solution"] and m["points"] > 0 and m["schema_version"] == 3
    assert [n for _, n, _ in found] == ["dcgan_networks", "gan_losses", "rebalancing_rule", "interpolation",
                                        "mlp_networks", "vae_pieces"]
    assert all(p > 0 for _, _, p in found)  # the total is the README's (tests/test_written.py)
    assert "LAB-SPEC" not in "".join(p.read_text() for p in NOTEBOOKS.glob("*.ipynb"))  # self-contained lessons


def test_a_release_holds_no_solution_and_no_hidden_check(release):
    assert sorted(p.name for p in release.iterdir()) == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    for path in NOTEBOOKS.glob("*.ipynb"):
        instructor = nbformat.read(str(path), as_version=4)
        text = (release / path.name).read_text()
        student = nbformat.read(str(release / path.name), as_version=4)
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
        for line in solution_lines(instructor):
            assert line not in text, f"{path.name} gives away: {line}"
        regions = sum(c.source.count("### BEGIN SOLUTION") for c in instructor.cells)
        code = [c.source for c in student.cells if c.cell_type == "code"]
        assert sum(c.count("raise NotImplementedError()") for c in code) == regions
        assert sum(c.count("# YOUR CODE HERE") for c in code) == regions
        assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
        assert [c.metadata.get("nbgrader", {}).get("grade_id") for c in student.cells] == \
            [c.metadata.get("nbgrader", {}).get("grade_id") for c in instructor.cells]


def test_a_release_never_overwrites_students_work(release, tmp_path):
    out = tmp_path / "course"
    assert labkit("assignment", "release", "--out", out, "--source", NOTEBOOKS).returncode == 0
    mine = out / "notebooks" / "01_train_dcgan.ipynb"
    mine.write_text(mine.read_text().replace("raise NotImplementedError()", "pass  # my work", 1))
    again = labkit("assignment", "release", "--out", out, "--source", NOTEBOOKS)
    assert again.returncode == 2 and "--force" in again.stderr and "my work" in mine.read_text()


def test_a_run_trained_with_student_code_lives_in_its_own_folder(tmp_path, monkeypatch):
    import torch.nn.functional as F

    from labkit.gan import GANCode
    from labkit.gan import train, TrainConfig

    def generator_loss(fake_logits):  # a student's own (equivalent) loss
        return F.softplus(-fake_logits).mean()

    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path))
    config = TrainConfig(num_training_steps=10, generator_hidden_dim=8, discriminator_hidden_dim=8, device="cpu")
    mine = train(config, code=GANCode(generator_loss=generator_loss), progress=False)
    theirs = train(config, progress=False)
    assert mine.path != theirs.path and mine.path.parent == theirs.path.parent == tmp_path
    assert re.fullmatch(r"dcgan_z16_g8_d8_steps10_seed2022_student-[0-9a-f]{8}", mine.path.name)
    assert json.loads((mine.path / "config.json").read_text())["code"] == mine.path.name.rsplit("_", 1)[1]
    assert "def generator_loss(fake_logits)" in (mine.path / "code.py").read_text()
    assert not (theirs.path / "code.py").exists() and theirs.config.code == "labkit"
    # Loading it needs the same code: labkit's own would be a different model.
    from labkit.gan import load_run
    with pytest.raises(ValueError, match="trained with student-") as refused:
        load_run(mine.path)
    assert str(mine.path / "code.py") in str(refused.value) and "code=GANCode(...)" in str(refused.value)
    assert load_run(mine.path, code=GANCode(generator_loss=generator_loss)).step == 10


def test_the_grading_workflow_never_hands_hidden_checks_to_a_student():
    yaml = pytest.importorskip("yaml")  # comes with nbgrader and jupytext ([dev])
    workflow = yaml.safe_load((NOTEBOOKS.parent / ".github" / "workflows" / "grade.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"workflow_dispatch"}, "started by the instructor only, not by a student's push"
    steps = workflow["jobs"]["grade"]["steps"]
    checkouts = [step for step in steps if step.get("uses", "").startswith("actions/checkout")]
    assert len(checkouts) == 2 and all(step["with"]["persist-credentials"] is False for step in checkouts)
    uploads = [step for step in steps if step.get("uses", "").startswith("actions/upload-artifact")]
    assert [step["with"]["path"] for step in uploads] == ["report/grades.csv"]
    grade_step = next(step for step in steps if step.get("name") == "Grade")
    assert "labkit assignment grade ../submission --out ../report --source notebooks" in grade_step["run"]
