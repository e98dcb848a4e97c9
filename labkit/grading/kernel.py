"""A student's kernel for grading, seen from the grader: start it in its box, ask it, stop it.

Each exercise of each submission gets a fresh kernel: a new Python started in
its own bubblewrap box (labkit/grading/sandbox.py), running labkit/grading/serve.py,
the only code that runs beside the student's. The grader asks it questions over
a socket and gets back plain data (labkit/grading/wire.py):

    grader                                        kernel (student code)
    ------                                        ---------------------
    Kernel(cells, ...)            starts it  -->  imports torch, sets its limits: {"started"}
                                  -- cells -->    runs them: {"ready"} or {"error": "..."}
    kernel.request("new", ...)    -- request -->  Generator(16, 16)  -> {"value": handle}
    kernel.request("call", ...)   -- request -->  G(z)               -> {"value": <tensor bytes>}

The grader compares the answers with labkit's reference in its own process
(labkit/grading/remote.py, labkit/grading/grade.py). Whatever the student's
code does to its own kernel (swallow errors, patch torch, return objects that
lie about their values, exit), all that reaches the grader is data, checked for
type and shape, or a kernel that stopped answering.

The time limit counts the kernel's own CPU time, from "started" on, all its
processes included (labkit/grading/meter.py), so a busy machine or a
classmate's busy loops slow a kernel down without timing it out; a kernel that
sleeps is stopped after the limit (Clock). Starting a kernel (a new Python
importing torch: about 2 s of CPU) is grading's time, not the student's.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

from . import meter, sandbox, wire
from .wire import Channel

PRELUDE = "import math\n\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n"  # what the notebooks import
STARTUP_CPU_SECONDS = 60  # a kernel not started after this much CPU (or 5x as much wall time): grading's problem
DIED = "the kernel stopped while running your code (os._exit, sys.exit, a crash, or the memory limit)"


class KernelError(Exception):
    """The kernel did not answer with plain data; `str(err)` is the message for the student."""


class StudentError(KernelError):
    """The student's code raised an exception (its type and message are the error's text)."""


class Refused(KernelError):
    """The kernel answered with something that is not plain data of the expected kind."""


class KernelTimeout(KernelError):
    """The exercise's time limit ran out (never cached: the next grading grades it again)."""


class GradingError(Exception):
    """A kernel could not be started or boxed: grading's own problem (the student is graded again next run)."""


class KernelDied(KernelError):
    """The kernel's process ended (os._exit, a crash, the memory limit) while the grader waited."""


class Kernel:
    """A running kernel with the student's cells executed in it.

    cells:   the student's source, one string per cell, run in order in one namespace;
    helpers: {"labkit.models": "source"}: the stand-in labkit modules the cells may import from;
    box:     a sandbox.Box; timeout: CPU seconds for everything the student's code does in this kernel.
    Raises StudentError if a cell raises, KernelTimeout / KernelDied as they happen, and
    GradingError if the kernel could not be started or boxed.
    """

    def __init__(self, cells, helpers, box, timeout):
        self.timeout, self.box = timeout, box
        self.meter = meter.Meter()
        self.workdir = tempfile.mkdtemp(prefix="labkit-kernel-") if box.kind == sandbox.PROCESS else None
        self.channel, theirs = Channel.pair()
        self.errors = tempfile.TemporaryFile()  # bubblewrap's own complaints, if it cannot make the box
        try:
            self.process = self._start(theirs.fileno())
        except BaseException:
            self.close()
            raise
        finally:
            theirs.close()
        self.pid = self.process.pid
        self.meter.watch(self.pid)
        try:
            self._started()
            self.clock = Clock(self.meter, timeout)  # the student's time runs from here on
            job = wire.encode({"prelude": PRELUDE, "cells": list(cells), "helpers": dict(helpers)})
            self._send(job)
            self._reply()  # {"ready": true}, or the cell's error
        except BaseException:  # the caller never gets this kernel to close: stop it here (it may still run)
            self.close()
            raise

    def _start(self, fd):
        code = sandbox.CODE_FOLDER if self.box.kind == sandbox.BWRAP else str(sandbox.kernel_code_folder())
        max_tasks = meter.MAX_PROCESSES if self.box.kind == sandbox.BWRAP else 0
        boot = (f"import sys; sys.path[:0] = {[code, *sandbox.site_packages()]!r}; import serve; "
                f"serve.main({fd}, {self.box.memory_bytes}, {int(self.timeout) + 5}, {max_tasks})")
        argv = sandbox.command(self.box, ["-E", "-s", "-c", boot])
        env = sandbox.process_env(self.workdir) if self.workdir else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        return subprocess.Popen(self.meter.wrap(argv), pass_fds=[fd], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=self.errors, env=env, cwd=self.workdir,
                                start_new_session=True)

    def _started(self):
        """Wait for the kernel to say it is boxed and ready, which it does before any student code runs (so this
        message cannot be forged). Its CPU for starting is STARTUP_CPU_SECONDS at most: grading's problem."""
        startup = Clock(self.meter, STARTUP_CPU_SECONDS)
        try:
            said = wire.decode(startup.wait(self.channel.receive))
        except KernelTimeout:
            raise GradingError(f"a kernel did not start within {STARTUP_CPU_SECONDS} s of CPU time") from None
        except (EOFError, OSError, ValueError, wire.NotPlainData) as err:
            raise GradingError(f"a kernel did not start ({type(err).__name__}{self._bwrap_said()})") from None
        if said != {"started": True}:
            why = said.get("box_failed", said) if isinstance(said, dict) else said
            raise GradingError(f"a kernel could not be boxed: {str(why)[:400]}")

    def _bwrap_said(self):
        self.errors.seek(0)
        text = self.errors.read(2000).decode(errors="replace").strip()
        return f": {text.splitlines()[-1]}" if text else ""

    def request(self, op, **fields):
        """Send a request; its answer's value (plain data), or a KernelError."""
        self._send(wire.encode({"op": op, **fields}))
        return self._reply().get("value")

    def _send(self, message):
        try:  # within the time limit: a kernel that stops reading must not hang the grader
            self.clock.wait(self.channel.send, message)
        except KernelTimeout as err:
            self._timed_out(str(err))
        except OSError:
            raise KernelDied(DIED) from None

    def _timed_out(self, message):
        self.close()
        raise KernelTimeout(message) from None

    def _reply(self):
        try:
            message = self.clock.wait(self.channel.receive)
        except KernelTimeout as err:
            self._timed_out(str(err))
        except (EOFError, OSError):  # OSError: the kernel closed its end mid-message (a reset connection)
            raise KernelDied(DIED) from None
        except ValueError as err:  # longer than any answer may be
            raise Refused(f"your code's kernel answered with something that is not plain data ({err})") from None
        try:
            reply = wire.decode(message)
        except wire.NotPlainData as err:
            raise Refused(f"your code's kernel answered with something that is not plain data ({err})") from None
        if type(reply) is not dict:
            raise Refused("your code's kernel answered with something that is not a reply")
        if "error" in reply:  # the kernel's text, forged or not, is cut to a line (grade.py cleans it further)
            raise StudentError(str(reply["error"])[:400])
        if "refused" in reply:
            raise Refused(str(reply["refused"])[:400])
        return reply

    def close(self):
        """Stop the kernel and every process it started; remove what it leaves (its cgroups, its folder)."""
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            for kill in (os.killpg, os.kill):  # bubblewrap kills its box when it dies (--die-with-parent)
                try:
                    kill(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            process.wait()
        self.channel.close()
        self.meter.close()
        self.errors.close()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Clock:
    """A kernel's time limit from now on, counted while the grader waits for it (its time between requests
    is the grader's):

      * `limit` CPU seconds of the kernel's, all its processes included (meter.py);
      * a kernel that sleeps instead (less than IDLE_SHARE of a core over `limit` seconds) is stopped then:
        a busy machine slows a kernel down, it does not make it idle;
      * and WALL_FACTOR times `limit` of waiting in all, whatever it does: the backstop.
    """

    IDLE_SHARE = 0.01

    def __init__(self, meter_, limit):
        self.meter, self.limit = meter_, limit
        self.cpu_at_start = meter_.seconds()
        self.waited, self.since = 0.0, None  # seconds waited for the kernel; when this wait began
        self.window = (0.0, 0.0)  # (waited, cpu) when the current idle window began

    def wait(self, channel_call, *args):
        """channel.send / channel.receive with this clock's checks (KernelTimeout when the limit is reached)."""
        self.since = time.monotonic()
        try:
            return channel_call(*args, check=self.check)
        finally:
            self.waited += time.monotonic() - self.since
            self.since = None

    def check(self):
        cpu = self.meter.seconds() - self.cpu_at_start
        waited = self.waited + (time.monotonic() - self.since if self.since else 0.0)
        if cpu > self.limit:
            raise KernelTimeout(f"used more than the exercise's time limit of {self.limit:g} s of CPU time "
                                f"(a loop that never ends?)")
        if waited > meter.WALL_FACTOR * self.limit:
            raise KernelTimeout(f"ran {waited:.0f} s without finishing, {meter.WALL_FACTOR}x the exercise's time "
                                f"limit of {self.limit:g} s")
        window_waited, window_cpu = self.window
        if waited - window_waited >= self.limit:
            if cpu - window_cpu < self.IDLE_SHARE * (waited - window_waited):
                raise KernelTimeout(f"did nothing for {waited - window_waited:.0f} s (waiting for something that "
                                    f"never comes?): stopped at the exercise's time limit of {self.limit:g} s")
            self.window = (waited, cpu)
