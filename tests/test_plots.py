"""The lab's figures: what a student reads in them, and the slider's shortcut (equal to a fresh figure)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from labkit import plots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def runs(small_gan):
    """Two runs' histories (the second one shifted, so the lines differ)."""
    shifted = [{k: (v if k == "step" else v * 0.9) for k, v in row.items()} for row in small_gan.history]
    return {"course DCGAN": small_gan.history, "shifted": shifted}


def pixels(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def test_a_new_smoothing_in_place_draws_exactly_the_figure_a_fresh_one_would(runs):
    moved = plots.set_smoothing(plots.plot_curves(runs, smoothing=0.6), runs, 0.2)
    fresh = plots.plot_curves(runs, smoothing=0.2)
    untouched = plots.plot_curves(runs, smoothing=0.6)
    assert np.array_equal(pixels(moved), pixels(fresh))
    assert not np.array_equal(pixels(untouched), pixels(fresh))  # the weight shows in the figure
    with pytest.raises(ValueError, match="same runs"):
        plots.set_smoothing(moved, {"another run": runs["shifted"]}, 0.5)


def test_figures_fit_the_notebook_and_their_text_is_readable(runs):
    heatmap = plots.plot_heatmap([[30.0, 40.0], [50.0, np.nan]], [16, 100], [16, 32], "latent", "hidden",
                                 "FID", value_label="Inception FID")
    for fig in (plots.plot_curves(runs), heatmap):
        assert fig.get_figwidth() <= plots.WIDTH  # JupyterLab shows it at full size, not shrunk
        texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible()]
        assert texts and min(t.get_fontsize() for t in texts) >= 9, \
            sorted((t.get_fontsize(), t.get_text()) for t in texts)[:3]
    curves = plots.plot_curves(runs)
    assert all(ax.get_ylabel() for ax in curves.axes[:len(plots.CURVES)])  # every panel says what it plots
    assert curves.axes[len(plots.CURVES)].get_legend() is not None  # the legend has a panel of its own
    assert heatmap.axes[1].get_ylabel() == "Inception FID"  # the colour bar says what its colours mean
