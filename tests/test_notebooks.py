"""What a student sees in the notebooks, where a test can see it.

nbval runs every notebook (the README's test command); these tests check what
nbval cannot: how the notebooks are saved, and that the functions behind the
widgets draw one figure and return nothing (a returned Figure or Run would be
shown a second time, or as a long repr, under the widget). They run under
JupyterLab's inline backend and count the PNGs a student would see.
"""

import os
from pathlib import Path
from queue import Empty
from time import monotonic

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_saved_small_and_start_with_their_banner(path):
    nb = nbformat.read(str(path), as_version=4)
    assert "widgets" not in nb.metadata  # no stale widget state
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        if "NBVAL_CHECK_OUTPUT" not in cell.source:
            assert not cell.outputs, cell.source[:60]
    assert f'lab.banner("{path.name[:2]}")' in code[0].source  # says its profile and what it costs here
    assert path.stat().st_size < 60_000


@pytest.mark.parametrize("name", ["07_mlp_gan", "08_ablations"])  # the notebooks rewritten as lessons so far
def test_a_lesson_explains_each_step_in_short_cells(name):
    """At least one markdown cell per code cell, and no code cell over 25 lines.

    An exercise's nbgrader cells are exempt: grading relies on them as they are.
    """
    nb = nbformat.read(str(next(p for p in NOTEBOOKS if p.stem == name)), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code)
    long = [c.source.splitlines()[0] for c in code if len(c.source.splitlines()) > 25 and "nbgrader" not in c.metadata]
    assert not long, f"code cells over 25 lines: {long}"


def _in_slices(get_msg):
    """`get_msg(timeout)` of a kernel channel, asked again every second until `timeout`."""
    async def get_msg_in_slices(timeout=None):
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            left = 1.0 if deadline is None else min(1.0, max(deadline - monotonic(), 0.0))
            try:
                return await get_msg(timeout=left)
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise
    return get_msg_in_slices


class SlicedNotebookClient(NotebookClient):
    """nbclient's NotebookClient, waiting for the kernel's messages in 1-second slices.

    NotebookClient waits up to its whole cell timeout in one poll of the shell
    channel. Late in the full test run, that poll once missed the reply the
    kernel had sent (the kernel sat idle) and noticed it only when the poll timed
    out: one widget test took 621 s instead of 20 (CI, then reproduced; nbclient
    issue #312 reports a similar hang with widgets). Polling in slices looks
    again every second.
    """

    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        kc.shell_channel.get_msg = _in_slices(kc.shell_channel.get_msg)
        kc.iopub_channel.get_msg = _in_slices(kc.iopub_channel.get_msg)
        return kc


@pytest.mark.parametrize("name, call", [
    ("01_train_dcgan", "train_and_show(latent_dim=16, hidden_dim=8, steps=20, seed=1)"),
    ("02_training_curves", "show_curves(0.3)"),
    ("05_latent_interpolation", "morph(common[0], common[1], 1.5)"),
])
def test_each_widget_draws_one_figure_and_returns_nothing(name, call, tmp_path):
    nb = nbformat.read(str(next(p for p in NOTEBOOKS if p.stem == name)), as_version=4)
    widget = next(i for i, c in enumerate(nb.cells) if "widgets.interact" in c.source)
    probe = f"result = {call}\nprint('PROBE', result)"
    nb.cells = nb.cells[:widget + 1] + [nbformat.v4.new_code_cell(probe)]  # the widget cell defines it
    # JupyterLab's own backend: a figure reaches the student as a PNG output, so count those.
    env = dict(os.environ, LABKIT_PROFILE="smoke", LABKIT_RUNS=str(tmp_path / "runs"),
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        done = SlicedNotebookClient(nb, timeout=600, kernel_name="python3",
                              resources={"metadata": {"path": str(NOTEBOOKS[0].parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert not [o for o in done.cells[widget].outputs if "image/png" in o.get("data", {})]  # no stray figure
    outputs = done.cells[-1].outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "PROBE None" in text, text  # nothing returned: no Figure shown twice, no long repr
    shown = [sorted(o["data"]) for o in outputs if o.output_type != "stream"]  # besides printed text
    figures = [kinds for kinds in shown if "image/png" in kinds]
    others = [kinds for kinds in shown if "image/png" not in kinds]
    assert len(figures) == 1, shown  # one figure, drawn once
    assert all("application/vnd.jupyter.widget-view+json" in kinds for kinds in others), shown  # progress bars
