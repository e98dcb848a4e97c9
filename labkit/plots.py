"""The lab's figures. Each function draws one figure and returns it.

Image grids are torchvision's make_grid; curves are smoothed like TensorBoard
(`analysis.smooth`), so a figure here matches what TensorBoard shows.
"""

import matplotlib.pyplot as plt
import numpy as np
from torchvision.utils import make_grid

from .analysis import MNIST_TRAIN_COUNTS, smooth
from .data import to_unit_range

CURVES = ("discriminator_loss", "generator_loss", "D_x", "D_G_z1", "D_G_z2")


def show_images(images, nrow=8, title=None, ax=None):
    """A grid of (N, 1, 32, 32) images in [-1, 1]."""
    grid = make_grid(to_unit_range(images.detach().cpu()).clamp(0, 1), nrow=nrow, padding=2, pad_value=1)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(12, 0.9 * nrow + 1), min(12, 0.9 * len(images) / nrow + 1)))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax.figure


def plot_curves(runs, smoothing=0.6, curves=CURVES):
    """The logged curves of several runs ({name: history}), one panel per value.

    Faint lines are the raw values, solid lines the TensorBoard-smoothed ones;
    the dashed line at 0.5 on the D panels is where a Nash equilibrium sits.
    """
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False)
    for name, history in runs.items():
        steps = [row["step"] for row in history]
        for ax, key in zip(axes[0], curves):
            values = [row[key] for row in history]
            (line,) = ax.plot(steps, smooth(values, smoothing), label=name, lw=1.5)
            ax.plot(steps, values, color=line.get_color(), alpha=0.2, lw=0.8)
    for ax, key in zip(axes[0], curves):
        ax.set_title(key)
        ax.set_xlabel("step")
        if key.startswith("D_"):
            ax.axhline(0.5, color="k", ls="--", lw=0.8)
            ax.set_ylim(-0.02, 1.02)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"smoothing {smoothing}")
    fig.tight_layout()
    return fig


def plot_digit_counts(counts_by_name, title="digits among samples"):
    """Bars of digit shares per model ({name: DigitCounts}) against MNIST's training mix."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    names = list(counts_by_name)
    width = 0.8 / (len(names) + 1)
    digits = np.arange(10)
    ax.bar(digits - 0.4 + width / 2, MNIST_TRAIN_COUNTS / MNIST_TRAIN_COUNTS.sum(), width, label="MNIST train",
           color="lightgray")
    for i, name in enumerate(names):
        c = counts_by_name[name]
        share = c.counts / max(c.counts.sum(), 1)
        ax.bar(digits - 0.4 + width * (i + 1.5), share, width,
               label=f"{name} (n={c.counts.sum()}, unsure {c.unsure}, p={c.p_value:.2g})")
    ax.set_xticks(digits)
    ax.set_xlabel("digit")
    ax.set_ylabel("share")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_heatmap(table, row_values, col_values, row_label, col_label, title, fmt="{:.1f}"):
    """A table (rows x cols of numbers, NaN for missing) as an annotated heatmap."""
    table = np.asarray(table, dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * len(col_values) + 2, 1.0 * len(row_values) + 1.5))
    im = ax.imshow(table, cmap="viridis_r")
    ax.set_xticks(range(len(col_values)), [str(v) for v in col_values])
    ax.set_yticks(range(len(row_values)), [str(v) for v in row_values])
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            if np.isfinite(table[i, j]):
                ax.text(j, i, fmt.format(table[i, j]), ha="center", va="center", color="w", fontsize=9)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    return fig
