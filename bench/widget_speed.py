"""How fast the view-only widgets answer: notebook 2's smoothing slider and notebook 5's morph slider.

Each widget move redraws one figure. This script times what a move costs, from
the call to the PNG that JupyterLab shows (matplotlib's inline backend renders
the figure to PNG; the same is done here), side by side with how the widgets
worked before labkit's fix (the baseline) and in between:

  smoothing  a plots.plot_curves figure of four runs of the cpu profile's length
             (500 logged rows each), built once and given each new weight by
             plots.set_smoothing; before: a new figure per move, and at first
             drawn twice (the callback returned the Figure, so interact showed
             it again)
  morph      the interpolation path and its chosen point (analysis.interpolate,
             plots.plot_path), endpoints found once per digit pair and cached;
             baseline: analysis.find_latents (2 x 2000 samples through G and the
             digit classifier) on every move

Figures are ms per move, median of `--moves` moves after a first draw, and the
ratio baseline / variant. The runs are the lab's: the course DCGAN from the runs
root (trained if missing); the four curve histories are its history, four times
(a plot's cost depends on the rows, not on their values).

    python bench/widget_speed.py
    python bench/widget_speed.py --moves 5
"""

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from labkit import analysis, plots  # noqa: E402
from labkit.models import sample_images  # noqa: E402
from labkit.runs.folder import runs_root  # noqa: E402
from labkit.gan import load_run, train, TrainConfig  # noqa: E402

PATH = torch.linspace(-1, 2, 13)  # notebook 5's path: l = -1, -0.75, ..., 2


def render(fig):
    """What the inline backend does with a figure: a PNG, then the figure is closed."""
    fig.canvas.print_figure(io.BytesIO(), format="png", bbox_inches="tight")
    plt.close(fig)


def median_ms(move, values):
    times = []
    for value in values:
        started = time.perf_counter()
        move(value)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moves", type=int, default=10)
    parser.add_argument("--confident", type=float, default=0.9, help="endpoint confidence (notebook 5's cpu "
                                                                      "profile: 0.9)")
    parser.add_argument("--run", type=Path, default=None, help="a GAN run (default: the course's DCGAN from the "
                                                                "runs root, trained if missing)")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    if args.run is None:
        config = TrainConfig(device="cpu")
        run = train(config, runs_root() / config.name)
    else:
        run = load_run(args.run)
    runs = {f"run {i}": run.history for i in range(4)}
    G = run.generator

    smoothing = [0.3 + 0.6 * i / max(args.moves - 1, 1) for i in range(args.moves)]
    render(plots.plot_curves(runs, 0.6))  # the first draw (fonts, caches)
    curves = plots.plot_curves(runs, 0.6)  # notebook 2 builds its figure once

    def smoothing_in_place(s):
        plots.set_smoothing(curves, runs, s).canvas.print_figure(io.BytesIO(), format="png", bbox_inches="tight")

    def smoothing_new_figure(s):
        render(plots.plot_curves(runs, s))

    def smoothing_shown_twice(s):
        render(plots.plot_curves(runs, s))
        render(plots.plot_curves(runs, s))  # returned by the callback and shown again

    common = [int(d) for d in analysis.count_digits(sample_images(G, 1000)).counts.argsort()[::-1][:2]]
    cache = {}

    def endpoints(a, b, cached):
        if not cached or (a, b) not in cache:
            cache[a, b] = (analysis.find_latents(G, a, threshold=args.confident),
                           analysis.find_latents(G, b, threshold=args.confident))
        return cache[a, b]

    def morph(l, cached):
        a, b = endpoints(common[0], common[1], cached)
        row = analysis.interpolate(G, a, b, -1, 2, steps=len(PATH))[0]
        point = analysis.interpolate(G, a, b, l, l, steps=2)[0, 0]
        render(plots.plot_path(row, PATH.tolist(), point, l, title="bench"))

    positions = [-1 + 3 * i / max(args.moves - 1, 1) for i in range(args.moves)]
    morph(0.5, cached=True)  # the first draw, which finds and caches the endpoints

    variants = [  # (widget, how a move is drawn, function, values); the first of each widget is the baseline
        ("smoothing (notebook 2)", "a new figure, shown twice (before labkit's fix)", smoothing_shown_twice, smoothing),
        ("smoothing (notebook 2)", "a new figure per move (labkit until set_smoothing)", smoothing_new_figure,
         smoothing),
        ("smoothing (notebook 2)", "one figure, new weight in place (plots.set_smoothing: now)", smoothing_in_place,
         smoothing),
        ("morph (notebook 5)", "endpoints searched on every move (before labkit's fix)",
         lambda l: morph(l, False), positions),
        ("morph (notebook 5)", "endpoints cached per digit pair (now)", lambda l: morph(l, True), positions),
    ]
    lines = ["| widget | a move | ms per move (median) | slowest move | speed-up over the first |",
             "| --- | --- | --- | --- | --- |"]
    baseline = {}
    for widget, how, move, values in variants:
        median, slowest = median_ms(move, values)
        baseline.setdefault(widget, median)
        lines.append(f"| {widget} | {how} | {median:.0f} | {slowest:.0f} | {baseline[widget] / median:.1f}x |")
    print(f"widget moves on {torch.get_num_threads()} CPU threads, median of {args.moves} moves after the first draw")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
