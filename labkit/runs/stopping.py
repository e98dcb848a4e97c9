"""Stopping a run safely: Ctrl-C (or Kernel > Interrupt) ends it at a checkpoint, in one line.

A KeyboardInterrupt raised in the middle of a step would leave the networks
half updated (D's step taken, G's not), so no checkpoint could be written
there. While the steps run, `StopRequests` therefore only *notes* the first
Ctrl-C (a SIGINT); the loop (labkit/runs/training.py) finishes the step it is
in, writes a checkpoint at the next one through its ordinary `save`, and then
raises `TrainingStopped`. A second Ctrl-C stops at once, as Python always
does, without a checkpoint.

`TrainingStopped` is a KeyboardInterrupt, so whatever stops on Ctrl-C stops on
it too. In a notebook, `quiet_in_ipython` makes IPython show it as its one
line instead of a traceback; the cell still ends as stopped (so "Run all"
stops there too).
"""

import signal
import threading

from IPython import get_ipython


class TrainingStopped(KeyboardInterrupt):
    """A run stopped on request, with a checkpoint at `step`; its text is the one line the user sees."""

    def __init__(self, step, end):
        again = "run this cell again" if get_ipython() is not None else "run the same command again"
        super().__init__(f"labkit: stopped at step {step} of {end}; {again} to resume")
        self.step, self.end = step, end


class StopRequests:
    """Within `with`, the first SIGINT is noted in `requested` instead of raising KeyboardInterrupt.

    Only the main thread receives signals; elsewhere nothing changes (Ctrl-C raises
    at once). A second SIGINT raises KeyboardInterrupt where the program is, as usual.
    """

    def __init__(self):
        self.requested, self._previous = False, None

    def request(self):
        """Ask the loop to stop after the next checkpoint (what the first Ctrl-C does)."""
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._noted)
        return self

    def _noted(self, signum, frame):
        self.request()
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C stops at once

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False


def in_ipython():
    """Whether this runs in an IPython shell (a notebook's kernel)."""
    return get_ipython() is not None


def quiet_in_ipython():
    """In IPython (a notebook), show a TrainingStopped as its one line, not as a traceback.

    IPython's own mechanism for this is `set_custom_exc`. It holds one handler
    for all the exception types given to it, so it is taken only when nobody
    else uses it.
    """
    shell = get_ipython()
    if shell is None or TrainingStopped in shell.custom_exceptions or shell.custom_exceptions:
        return
    shell.set_custom_exc((TrainingStopped,), _one_line)


def _one_line(shell, kind, value, traceback, tb_offset=None):
    """IPython's handler for TrainingStopped: the error's one line is its whole traceback.

    `_showtraceback` is what IPython's own showtraceback ends with; in a notebook
    (ipykernel) it sends the cell's error output, which JupyterLab shows as is.
    """
    shell._showtraceback(kind, value, [str(value)])

