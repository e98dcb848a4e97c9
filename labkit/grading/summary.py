"""The class at a glance: points per exercise and question as histograms, and what went wrong most often.

Written by `labkit assignment export` (labkit/grading/exports.py) into REPORT/summary.png
and REPORT/summary.md.
"""

import io
import math
import re
from collections import Counter

from matplotlib.figure import Figure  # not pyplot: a file, never a window, whatever the backend

COMMONEST = 8


def items(grades):
    """[(notebook, item, kind, max points)] of the class, in the notebooks' order."""
    return list(dict.fromkeys((r["notebook"], r["item"], r["kind"], r["max_points"]) for g in grades for r in g.rows))


def figure(grades):
    """PNG bytes: a histogram of the class's points for each exercise and question, and one of the totals."""
    found = items(grades)
    panels = len(found) + 1
    columns = min(4, panels)
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(3.2 * columns, 2.4 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (notebook, item, kind, most) in zip(axes.flat, found):
        points = [r["points"] for g in grades for r in g.rows if (r["notebook"], r["item"]) == (notebook, item)]
        ax.hist(points, bins=[x / 2 - 0.25 for x in range(int(most * 2) + 2)], color="#4c72b0" if kind == "code"
                else "#dd8452")
        ax.set_title(f"{notebook[:2]} {item} ({kind})", fontsize=9)
        ax.set_xlim(-0.5, most + 0.5)
    totals = [g.final for g in grades]
    ax = axes.flat[len(found)]
    ax.hist(totals, bins=min(20, max(len(set(totals)), 1)), color="#55a868")
    ax.set_title("final grade", fontsize=9)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    for ax in axes.flat:
        ax.tick_params(labelsize=8)
    fig.supxlabel("points", fontsize=9)
    fig.supylabel("students", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def failures(grades):
    """[(message, count)] of the failed checks' messages, commonest first; numbers in them count as one
    ("expected 57937 parameters, got 1" and "... got 3" are one failure)."""
    found = Counter(re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "N", r["detail"]) for g in grades for r in g.rows
                    if r["kind"] == "code" and r["detail"] != "passed")
    return found.most_common(COMMONEST)


def markdown(grades):
    """summary.md: each item's mean and full marks, the commonest failures, what is left to review."""
    lines = [f"# The class: {len(grades)} students", "", "![points per exercise and question](summary.png)", "",
             "| notebook | item | kind | mean | full marks |", "| --- | --- | --- | --- | --- |"]
    for notebook, item, kind, most in items(grades):
        points = [r["points"] for g in grades for r in g.rows if (r["notebook"], r["item"]) == (notebook, item)]
        lines.append(f"| {notebook} | {item} | {kind} | {sum(points) / len(points):.2f} / {most:g} | "
                     f"{sum(p == most for p in points)} |")
    finals = [g.final for g in grades]
    lines += ["", f"Final grades: mean {sum(finals) / len(finals):.2f}, lowest {min(finals):g}, highest {max(finals):g}; "
                  f"{sum(g.days_late > 0 for g in grades)} late.", "", "## The commonest failures", ""]
    lines += [f"{count} x {message.replace('|', '/')}" + "  " for message, count in failures(grades)] or ["none"]
    left = sum(g.unreviewed for g in grades)
    lines += ["", f"Written answers not reviewed yet: {left}."]
    return "\n".join(lines) + "\n"
