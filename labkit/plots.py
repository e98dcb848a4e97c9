"""The lab's figures. Each function draws one figure and returns it.

Sizes are chosen for JupyterLab's default notebook width (about 10 inches
at 100 dpi shown at full size), so text stays at 9-11 pt on screen. Image
grids are torchvision's make_grid; curves are smoothed like TensorBoard
(`analysis.smooth`), so a figure here matches what TensorBoard shows.
"""

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle
import numpy as np
from torchvision.utils import make_grid

from .analysis import MNIST_TRAIN_COUNTS, smooth
from .data import to_unit_range

CURVES = ("discriminator_loss", "generator_loss", "D_x", "D_G_z1", "D_G_z2")
TITLES = {"discriminator_loss": "D's loss", "generator_loss": "G's loss", "D_x": "D(x): D on real images",
          "D_G_z1": "D(G(z)) before D's update", "D_G_z2": "D(G(z)) after D's update"}
WIDTH = 10.0  # inches: JupyterLab's output width at 100 dpi


def show_images(images, nrow=8, title=None, ax=None):
    """A grid of (N, 1, 32, 32) images in [-1, 1]."""
    grid = make_grid(to_unit_range(images.detach().cpu()).clamp(0, 1), nrow=nrow, padding=2, pad_value=1)
    if ax is None:
        rows = int(np.ceil(len(images) / nrow))
        width = min(WIDTH, 0.75 * nrow + 0.5)
        _, ax = plt.subplots(figsize=(width, width * rows / nrow + 0.5))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=11)
    return ax.figure


def plot_curves(runs, smoothing=0.6, curves=CURVES):
    """The logged curves of several runs ({name: history}), one panel per value, the legend in its own panel.

    Faint lines are the raw values, solid lines the TensorBoard-smoothed ones;
    the dashed line at 0.5 on the D panels is where a Nash equilibrium sits.
    """
    columns = 3
    rows = int(np.ceil((len(curves) + 1) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(WIDTH, 3.0 * rows), squeeze=False)
    axes = axes.ravel()
    lines = []
    for name, history in runs.items():
        steps = [row["step"] for row in history]
        for i, (ax, key) in enumerate(zip(axes, curves)):
            values = [row[key] for row in history]
            (line,) = ax.plot(steps, smooth(values, smoothing), lw=1.5,
                              color=lines[-1].get_color() if i else None, gid=_smoothed_id(key, name))
            ax.plot(steps, values, color=line.get_color(), alpha=0.2, lw=0.8)
            if i == 0:
                lines.append(line)
    for ax, key in zip(axes, curves):
        ax.set_title(TITLES.get(key, key), fontsize=11)
        ax.set_xlabel("step", fontsize=10)
        ax.tick_params(labelsize=9)
        if key.startswith("D_"):
            ax.axhline(0.5, color="k", ls="--", lw=0.8)
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel("mean probability", fontsize=10)
        else:
            ax.set_ylabel("BCE (nats)", fontsize=10)
    legend = axes[len(curves)]
    legend.set_axis_off()
    legend.legend(lines, list(runs), loc="center", fontsize=10, frameon=False, title=_legend_title(smoothing),
                  title_fontsize=9)
    for ax in axes[len(curves) + 1:]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def set_smoothing(fig, runs, smoothing, curves=CURVES):
    """Give a `plot_curves` figure of the same runs another smoothing weight, in place; returns it.

    Only the smoothed lines' values and the legend's title change, so the
    figure is not built and laid out again (notebook 2's slider;
    bench/widget_speed.py measures it). The axes keep their limits, which the
    raw values set: a smoothed curve is a weighted mean of raw values, so it
    never leaves their range, and the figure equals a new one drawn at
    `smoothing` (tests/test_plots.py).
    """
    smoothed = {line.get_gid(): line for ax in fig.axes for line in ax.lines if line.get_gid()}
    wanted = {_smoothed_id(key, name) for name in runs for key in curves}
    if wanted != set(smoothed):
        raise ValueError("set_smoothing needs the figure plot_curves drew for these same runs and curves; "
                         "draw a new one with plot_curves")
    for name, history in runs.items():
        for key in curves:
            smoothed[_smoothed_id(key, name)].set_ydata(smooth([row[key] for row in history], smoothing))
    fig.axes[len(curves)].get_legend().set_title(_legend_title(smoothing))  # the legend's own panel
    return fig


def _smoothed_id(key, name):
    return f"smoothed {key} of {name}"


def _legend_title(smoothing):
    return f"smoothing {smoothing:.2f}\n(faint: raw values)\n- - - 0.5: equilibrium"


def plot_digit_counts(counts_by_name, title="digits among samples"):
    """Bars of digit shares per model ({name: DigitCounts}) against MNIST's training mix."""
    fig, ax = plt.subplots(figsize=(WIDTH, 3.6))
    names = list(counts_by_name)
    width = 0.8 / (len(names) + 1)
    digits = np.arange(10)
    ax.bar(digits - 0.4 + width / 2, MNIST_TRAIN_COUNTS / MNIST_TRAIN_COUNTS.sum(), width, label="MNIST train",
           color="lightgray")
    for i, name in enumerate(names):
        c = counts_by_name[name]
        share = c.counts / max(c.counts.sum(), 1)
        ax.bar(digits - 0.4 + width * (i + 1.5), share, width,
               label=f"{name}: {c.counts.sum()} read, {c.unsure} unsure, {c.not_digits} not digits, "
                     f"entropy {c.entropy_bits:.2f} bits")
    ax.set_xticks(digits)
    ax.set_xlabel("digit", fontsize=10)
    ax.set_ylabel("share of confidently read samples", fontsize=10)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot_heatmap(table, row_values, col_values, row_label, col_label, title, fmt="{:.1f}", value_label=""):
    """A table (rows x cols of numbers, NaN for missing) as an annotated heatmap with a labelled colour bar."""
    table = np.asarray(table, dtype=float)
    fig, ax = plt.subplots(figsize=(min(WIDTH, 1.3 * len(col_values) + 3), 0.9 * len(row_values) + 1.6))
    im = ax.imshow(table, cmap="viridis_r")
    ax.set_xticks(range(len(col_values)), [str(v) for v in col_values])
    ax.set_yticks(range(len(row_values)), [str(v) for v in row_values])
    ax.set_xlabel(col_label, fontsize=10)
    ax.set_ylabel(row_label, fontsize=10)
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            if np.isfinite(table[i, j]):
                r, g, b, _ = im.cmap(im.norm(table[i, j]))
                light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5  # dark text on light cells, light on dark
                ax.text(j, i, fmt.format(table[i, j]), ha="center", va="center", fontsize=10,
                        color="black" if light else "white")
    bar = fig.colorbar(im, ax=ax)
    bar.set_label(value_label or title, fontsize=10)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


EXTRAPOLATED = "tab:orange"  # plot_path's frame and label for l outside [0, 1]


def plot_path(row, values, point, chosen, title=""):
    """A latent path as one row of images labelled by l, the one nearest `chosen` framed in red, and
    `point` (the image at l = chosen) shown larger on the right."""
    count = len(row)
    fig = plt.figure(figsize=(WIDTH, 1.9))
    grid = fig.add_gridspec(1, count + 3, wspace=0.08)
    nearest = int(np.argmin([abs(v - chosen) for v in values]))
    for i, (image, value) in enumerate(zip(row, values)):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(to_unit_range(image.detach().cpu())[0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([]), ax.set_yticks([])
        inside = 0 <= value <= 1
        ax.set_xlabel(f"{value:g}", fontsize=9, color="black" if inside else EXTRAPOLATED)
        for spine in ax.spines.values():  # frameless: interpolation; an orange frame: extrapolation (a black frame
            spine.set_visible(not inside)  # vanished against the digits' black background)
            spine.set_edgecolor(EXTRAPOLATED), spine.set_linewidth(2.5)
        if i == nearest:
            ax.add_patch(Rectangle((-0.5, -0.5), 32, 32, fill=False, edgecolor="red", lw=3))
    big = fig.add_subplot(grid[0, count + 1:])
    big.imshow(to_unit_range(point.detach().cpu())[0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
    big.set_xticks([]), big.set_yticks([])
    big.set_xlabel(f"l = {chosen:.2f}", fontsize=10, color="red")
    fig.suptitle(f"{title}   (l: position on the path; orange: outside [0, 1], extrapolated; red: l = {chosen:.2f})",
                 fontsize=10, y=1.02)
    return fig
