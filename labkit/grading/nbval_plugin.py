"""A pytest plugin that `labkit assignment grade` loads into nbval (pytest -p labkit.grading).

It adds three things to nbval's run of a notebook, and nothing when its
options are not given:
  * exercise cells (nbgrader solution and grade cells) get their own, short
    time limit, the other cells a long one (training may take an hour);
  * a kernel that dies (a solution that calls os._exit, or crashes PyTorch)
    fails its cell at once instead of after the whole time limit;
  * every cell's outcome is written as one JSON line, with the cell's nbgrader
    metadata, for the grader to turn into grades.csv.
"""

import json
import re
import time
from queue import Empty

import pytest

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def pytest_addoption(parser):
    group = parser.getgroup("labkit grading")
    group.addoption("--labkit-results", default=None, help="write each cell's outcome here (JSON lines)")
    group.addoption("--labkit-exercise-timeout", type=float, default=120.0,
                    help="seconds an exercise's solution or check cell may run")
    group.addoption("--labkit-cell-timeout", type=float, default=24 * 3600.0,
                    help="seconds any other cell may run")


def pytest_configure(config):
    results = config.getoption("--labkit-results")
    if results:
        patch_nbval_kernel()
        config.pluginmanager.register(Recorder(results), "labkit-grading-recorder")


def patch_nbval_kernel():
    """Make nbval wait for a cell's reply in 1-second slices, so that a dead kernel is noticed at once."""
    from nbval.kernel import RunningKernel

    if getattr(RunningKernel.await_reply, "labkit", False):
        return
    original = RunningKernel.await_reply

    def await_reply(self, msg_id, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            try:
                return original(self, msg_id, timeout=max(left, 0.0))
            except Empty:
                if not self.is_alive():
                    raise RuntimeError("the kernel died while running this cell") from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    await_reply.labkit = True
    RunningKernel.await_reply = await_reply


def exercise_meta(item):
    cell = getattr(item, "cell", None)
    return dict(cell.metadata.get("nbgrader", {})) if cell is not None else {}


class Recorder:
    """Per-cell time limits, and one JSON line per cell's outcome."""

    def __init__(self, path):
        self.path = path

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        if getattr(item, "cell", None) is not None:
            meta = exercise_meta(item)
            limit = "--labkit-exercise-timeout" if meta.get("solution") or meta.get("grade") else \
                "--labkit-cell-timeout"
            item.config.option.nbval_cell_timeout = item.config.getoption(limit)
        yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if getattr(item, "cell", None) is not None:
            report.labkit = dict(notebook=item.path.name, cell=item.cell_num, nbgrader=exercise_meta(item))

    def pytest_runtest_logreport(self, report):
        info = getattr(report, "labkit", None)
        if info is None or not (report.when == "call" or (report.when == "setup" and report.failed)):
            return
        record = dict(info, passed=report.passed, message="" if report.passed else last_error(report))
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def last_error(report):
    """The line that says what went wrong, e.g. 'AssertionError: ...' (tracebacks are for the log)."""
    text = ANSI.sub("", report.longreprtext or "")
    if "Timeout of" in text:
        line = next(line.strip() for line in text.splitlines() if "Timeout of" in line)
        return re.sub(r"^Cell \d+: ", "", line)
    errors = [line.strip() for line in text.splitlines()
              if re.match(r"^\s*[A-Za-z_.]*(Error|Exception|Interrupt|Exit)\b:?", line)]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (errors[-1] if errors else (lines[-1] if lines else "failed"))[:300]
