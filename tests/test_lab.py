import os
import sys
from pathlib import Path

import pytest
import torch

from labkit import lab


@pytest.fixture
def no_choice(monkeypatch):
    """No lab.use() from an earlier test."""
    monkeypatch.setattr(lab, "_chosen", None)


def test_profiles_scale_the_lab(monkeypatch, no_choice):
    monkeypatch.setenv("LABKIT_PROFILE", "smoke")
    assert lab.profile().steps < lab.PROFILES["cpu"].steps
    assert lab.config(latent_dim=32).num_training_steps == lab.PROFILES["smoke"].steps
    default = lab.PROFILES["default"]  # the real lab is the course's protocol, unscaled
    assert (default.fid_backbone, default.fid_count, len(default.seeds)) == ("inception", 3000, 5)
    assert default.latent_sizes == default.hidden_sizes == (16, 32, 64, 100)
    assert lab.PROFILES["cpu"].steps == default.steps == 5000  # a CPU student trains the course's runs


def test_the_profile_is_chosen_in_the_notebook_without_a_restart(monkeypatch, no_choice, capsys):
    monkeypatch.delenv("LABKIT_PROFILE", raising=False)
    assert lab.profile().name == ("default" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("LABKIT_PROFILE", "smoke")
    assert lab.profile().name == "smoke"
    lab.use("cpu")  # beats the environment: the student's explicit choice
    assert lab.profile().name == "cpu" and lab.config().num_training_steps == 5000
    assert "using the profile 'cpu'" in capsys.readouterr().out
    with pytest.raises(ValueError, match="'fast' is not a profile; use one of default, cpu, smoke"):
        lab.use("fast")


def test_an_unknown_profile_is_named_in_the_error(monkeypatch, no_choice):
    monkeypatch.setenv("LABKIT_PROFILE", "fast")
    with pytest.raises(ValueError, match="LABKIT_PROFILE='fast' is not a profile; use one of default, cpu, smoke"):
        lab.profile()


def test_a_widget_run_never_changes_what_other_notebooks_load(monkeypatch, no_choice, tmp_path):
    """Notebook 1's widget trains other steps; the run every later notebook loads stays as it was."""
    monkeypatch.setenv("LABKIT_PROFILE", "smoke")
    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path))
    small = dict(generator_hidden_dim=8, discriminator_hidden_dim=8)
    first = lab.run(**small)  # notebook 1
    widget = lab.run(**small, num_training_steps=40)  # the steps slider
    later = lab.run(**small)  # any later notebook
    assert widget.path != first.path and widget.step == 40
    assert later.path == first.path and later.step == first.config.num_training_steps == 30
    assert later.config == first.config and later.history == first.history
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.path.name, widget.path.name])
    with pytest.raises(ValueError, match="no setting 'hiden_dim'"):
        lab.run(hiden_dim=8)


def test_the_cli_and_the_notebooks_share_one_runs_folder(monkeypatch, tmp_path):
    from labkit.runs.folder import runs_root

    (tmp_path / "lab" / "notebooks").mkdir(parents=True)
    (tmp_path / "lab" / "notebooks" / "01_train_dcgan.ipynb").write_text("{}")
    monkeypatch.delenv("LABKIT_RUNS", raising=False)
    monkeypatch.chdir(tmp_path / "lab")  # a shell in the lab folder
    assert runs_root() == tmp_path / "lab" / "runs"
    monkeypatch.chdir(tmp_path / "lab" / "notebooks")  # a notebook kernel
    assert runs_root() == tmp_path / "lab" / "runs"
    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path / "elsewhere"))
    assert runs_root() == tmp_path / "elsewhere"


def test_the_time_estimate_times_the_trainers_own_step(monkeypatch):
    """The banner's minutes come from the step that trains: gan_step, on networks and Adams built as `train`'s."""
    real_step, seen = lab.gan_step, []

    def counted(generator, discriminator, opt_g, opt_d, real, z, step, config, code, prev_loss_g=None):
        seen.append((type(generator).__name__, generator.net[0].out_channels, type(opt_g).__name__,
                     opt_d.param_groups[0]["betas"], tuple(real.shape), step))
        return real_step(generator, discriminator, opt_g, opt_d, real, z, step, config, code, prev_loss_g)

    monkeypatch.setattr(lab, "gan_step", counted)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    assert lab.seconds_per_step(hidden_dim=8, steps=3) > 0
    assert [s[-1] for s in seen] == [1, 2, 3, 4]  # one warm-up step, then the three timed
    assert seen[0][:-1] == ("DCGANGenerator", 4 * 8, "Adam", (0.5, 0.999), (64, 1, 32, 32))
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random numbers are left alone


def test_the_steps_slider_stops_where_a_student_wants_to_stop():
    from labkit import lab

    slider = lab.steps_slider()
    assert list(slider.options) == sorted({100, 500, 1000, 2000, 5000, 10000, lab.profile().steps})
    assert slider.value == lab.profile().steps and not slider.continuous_update


def test_jupyterlab_is_set_to_save_widget_state_so_reopened_sliders_show_their_plot(tmp_path):
    """Issue 27: a reopened notebook showed "Error displaying widget: model not found" where the sliders and their
    plots were. JupyterLab itself (jupyterlab_server's settings code) reads labkit's default from the app folder."""
    from jupyterlab_server.settings_utils import get_settings

    said = lab.keep_widgets_on_reopen(tmp_path)
    assert "from the next start of JupyterLab" in said and "a reload of the tab is not enough" in said
    assert lab.keep_widgets_on_reopen(tmp_path) is None  # once only: a student's own choice later is kept
    schemas = Path(sys.prefix) / "share" / "jupyter" / "labextensions"
    found, _ = get_settings(str(tmp_path / "settings"), str(tmp_path / "no-schemas"), str(tmp_path / "user"),
                            schema_name="@jupyter-widgets/jupyterlab-manager:plugin", labextensions_path=[str(schemas)])
    assert found["schema"]["properties"]["saveState"]["default"] is True  # the page reads its default from here

    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes anyway: a file where the folder should be stops it the same way
        (read_only / "settings").write_text("")
    assert "Settings > Save Widget State Automatically" in lab.keep_widgets_on_reopen(read_only)


def test_the_banner_scales_a_notebooks_time_by_how_much_slower_a_step_is_here_now(monkeypatch, no_choice, capsys):
    """The student pass: under load the banner said 'about 7 min' and notebook 02 took 23. The measured table keeps
    the step time of its machine, and a step 4x slower here now says so for the whole notebook."""
    minutes, machine, step = lab.measured_minutes("02", "cpu")
    assert minutes > 1 and step > 0
    lab.use("cpu")
    monkeypatch.setattr(lab, "device", lambda: torch.device("cpu"))
    monkeypatch.setattr(lab, "keep_widgets_on_reopen", lambda: None)
    monkeypatch.setattr(lab, "seconds_per_step", lambda hidden_dim=16, steps=5: 4 * step)
    lab.banner("02")
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100  # wrapped between words, not by JupyterLab mid-word
    said = " ".join(out.split())
    assert f"That is 4.0x the step time of {machine}: expect this notebook to take up to about " \
           f"{minutes * 4:.0f} min here" in said, said
    monkeypatch.setattr(lab, "measured_minutes", lambda notebook, profile: (0.2, machine, step))
    lab.banner("05")  # a notebook of seconds, on a machine 4x slower: not "up to about 0 min"
    assert "expect this notebook to take up to under a minute here" in " ".join(capsys.readouterr().out.split())
    monkeypatch.setattr(lab, "seconds_per_step", lambda hidden_dim=16, steps=5: step)
    lab.banner("02")
    assert "x the step time" not in capsys.readouterr().out  # as fast as the table's machine: nothing more to say


def test_a_vae_compared_with_the_longer_reference_run_is_told_why_it_scores_higher():
    """The student pass: notebook 09's VAEs (5000 steps in the cpu profile) printed MNIST-FIDs 20-50% above the
    reference's (25,000 steps, the course's) and nothing said why."""
    from labkit import reference

    said = reference.compare("vae_z3", "41.7", "mnist", 10000, label="VAE, latent 3", steps=5000)
    assert "1 seed, 25,000 steps" in said
    assert said.endswith("-> yours trained 5,000 steps, the reference 25,000: a shorter run scores higher")
    same = reference.compare("dcgan_z16_h16", "35.0", "inception", 3000, steps=5000)
    assert "3 seeds, 5,000 steps" in same and "shorter run" not in same


def test_the_reference_under_each_pipeline_and_discriminator_is_read_from_its_own_table(tmp_path, monkeypatch):
    """Notebook 08's table: one line per shipped variant, each from its own CSV, the course's number last;
    a variant whose table lacks the experiment says "not measured" instead of borrowing another's number."""
    from labkit import reference

    shipped = {tag: reference.load(path).get("dcgan_z16_h16") for tag, (path, _) in reference.VARIANTS.items()}
    lines = reference.variants("dcgan_z16_h16").splitlines()
    assert len(lines) == 2 + len(reference.VARIANTS) and lines[-1].endswith(reference.COURSE["dcgan_z16_h16"].text)
    for line, (tag, row) in zip(lines[1:], shipped.items()):
        assert reference.VARIANTS[tag][1] in line
        assert (f"{row['fid_mean']:.1f}" in line) if row else line.endswith("not measured")
    monkeypatch.setitem(reference.VARIANTS, "resize_dnobias", (tmp_path / "missing.csv", "resize, D without biases"))
    assert reference.variants("dcgan_z16_h16").splitlines()[3].endswith("not measured")
