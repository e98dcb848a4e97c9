import pytest

from labkit import lab


def test_profiles_scale_the_lab_and_keep_their_own_run_folders(monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "smoke")
    monkeypatch.setenv("LABKIT_RUNS", "/tmp/somewhere")
    assert lab.profile().steps < lab.PROFILES["cpu"].steps < lab.PROFILES["default"].steps == 5000
    assert str(lab.runs_dir()) == "/tmp/somewhere/smoke"
    assert lab.config(latent_dim=32).num_training_steps == lab.PROFILES["smoke"].steps
    default = lab.PROFILES["default"]  # the real lab is the course's protocol, unscaled
    assert (default.fid_count, len(default.seeds), default.sizes) == (3000, 5, (16, 32, 64, 100))
    monkeypatch.delenv("LABKIT_PROFILE")
    assert lab.profile().name == "default"


def test_an_unknown_profile_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "fast")
    with pytest.raises(ValueError, match="LABKIT_PROFILE='fast' is not a profile; use one of default, cpu, smoke"):
        lab.profile()
