"""A student's kernel for grading: the only process that runs the student's code.

Each exercise of each submission gets a fresh kernel: a process forked from a
server that has imported torch once (so a kernel starts in about 60 ms, not
the 2-3 s of a new Python importing torch; measured on the 2-core CPU),
boxed (labkit/grading/sandbox.py) before the student's cells run in it. The
grader then asks it questions over a pipe and gets back plain data
(labkit/grading/wire.py):

    grader                                        kernel (student code)
    ------                                        ---------------------
    Kernel(cells, ...)            -- cells -->    boxed: {"started"}; runs them: {"ready"} or {"error": "..."}
    kernel.request("new", ...)    -- request -->  Generator(16, 16)  -> {"value": handle}
    kernel.request("call", ...)   -- request -->  G(z)               -> {"value": <tensor bytes>}

The grader compares the answers with labkit's reference in its own process
(labkit/grading/remote.py, labkit/grading/grade.py). Whatever the student's
code does to its own kernel (swallow errors, patch torch or labkit, return
objects that lie about their values, exit), all that reaches the grader is
data, checked for type and shape, or a kernel that stopped answering.

Inside the kernel, `import labkit` finds a stand-in package that holds only
the helpers the exercise lets students import (e.g. labkit.models.init_weights):
labkit's reference solutions and checks are neither importable nor on disk there.
"""

import builtins
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import types
from dataclasses import asdict

import torch

from . import sandbox, wire

PRELUDE = "import math\n\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n"  # what the notebooks import
STARTUP_SECONDS = 60  # a kernel that is not ready by then (a busy machine) is a grading error, not the student's
_server = {}


class KernelError(Exception):
    """The kernel did not answer with plain data; `str(err)` is the message for the student."""


class StudentError(KernelError):
    """The student's code raised an exception (its type and message are the error's text)."""


class Refused(KernelError):
    """The kernel answered with something that is not plain data of the expected kind."""


class KernelTimeout(KernelError):
    """The exercise's time limit ran out."""


class GradingError(Exception):
    """A kernel could not be started or boxed: grading's own problem (the student is graded again next run)."""


class KernelDied(KernelError):
    """The kernel's process ended (os._exit, a crash, the memory limit) while the grader waited."""


# ---------------------------------------------------------------------------
# The grader's side


class Kernel:
    """A running kernel with the student's cells executed in it.

    cells:   the student's source, one string per cell, run in order in one namespace;
    helpers: {"labkit.models": "source"}: the stand-in labkit modules the cells may import from;
    box:     a sandbox.Box; timeout: seconds for everything the student's code does in this kernel,
             counted from when the box is ready (starting the kernel is grading's time, not the student's).
    Raises StudentError if a cell raises, KernelTimeout / KernelDied as they happen, and
    GradingError if the kernel could not be started or boxed.
    """

    def __init__(self, cells, helpers, box, timeout):
        self.timeout = timeout
        self.channel, theirs = Channel.pair()
        try:
            self.pid = _zygote().fork(theirs, {"box": asdict(box), "cells": list(cells), "helpers": dict(helpers)})
        finally:
            theirs.close()
        try:
            self._started()
            self.deadline = time.monotonic() + timeout  # the student's cells run from here on
            self._reply()  # {"ready": true}, or the cell's error
        except BaseException:  # the caller never gets this kernel to close: stop it here (it may still run)
            self.close()
            raise

    def _started(self):
        """Wait for the kernel to say it is boxed, which it does before any student code runs (so this
        message cannot be forged). A busy machine gets STARTUP_SECONDS: grading's problem, not the student's."""
        try:
            said = wire.decode(self.channel.receive(STARTUP_SECONDS))
        except (TimeoutError, EOFError, OSError, ValueError, wire.NotPlainData) as err:
            raise GradingError(f"a kernel did not start within {STARTUP_SECONDS} s ({type(err).__name__})") from None
        if said != {"started": True}:
            why = said.get("box_failed", said) if isinstance(said, dict) else said
            raise GradingError(f"a kernel could not be boxed: {str(why)[:400]}")

    def request(self, op, **fields):
        """Send a request; its answer's value (plain data), or a KernelError."""
        try:  # within the time limit: a kernel that stops reading must not hang the grader in sendall
            self.channel.send(wire.encode({"op": op, **fields}), timeout=max(self.deadline - time.monotonic(), 0.001))
        except TimeoutError:
            self._timed_out()
        except OSError:
            raise KernelDied(DIED) from None
        return self._reply().get("value")

    def _timed_out(self):
        self.close()
        raise KernelTimeout(f"took longer than the exercise's time limit of {self.timeout:g} s "
                            f"(a loop that never ends?)") from None

    def _reply(self):
        try:
            message = self.channel.receive(max(self.deadline - time.monotonic(), 0))
        except TimeoutError:
            self._timed_out()
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
        try:
            os.kill(self.pid, signal.SIGKILL)  # the kernel's own children die with it (sandbox.py)
        except ProcessLookupError:
            pass
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


DIED = ("the kernel stopped while running your code (os._exit, sys.exit, a crash, or the memory limit)")


class Channel:
    """Messages over a Unix socket: each one a 8-byte length, then that many bytes."""

    def __init__(self, sock):
        self.sock = sock

    @classmethod
    def pair(cls):
        a, b = socket.socketpair()
        return cls(a), cls(b)

    def send(self, message, timeout=None):
        """Send one message; TimeoutError if the other end has not taken it all within `timeout` seconds."""
        self.sock.settimeout(timeout)  # a limit on the whole sendall (Python >= 3.5), not on each chunk
        try:
            self.sock.sendall(struct.pack("!Q", len(message)) + message)
        finally:
            self.sock.settimeout(None)

    def receive(self, timeout=None, limit=wire.MAX_MESSAGE):
        """The next message; TimeoutError after `timeout` seconds, EOFError if the other end is gone,
        ValueError if it announces more than `limit` bytes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        (length,) = struct.unpack("!Q", self._exactly(8, deadline))
        if length > limit:
            raise ValueError(f"a message of {length:,} bytes; at most {limit:,}")
        return self._exactly(length, deadline)

    def _exactly(self, count, deadline):
        data = bytearray()
        while len(data) < count:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    raise TimeoutError
            chunk = self.sock.recv(min(count - len(data), 2**20))
            if not chunk:
                raise EOFError
            data += chunk
        return bytes(data)

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        self.sock.close()


class _Zygote:
    """A process that imported torch once and forks a kernel whenever the grader asks (Unix only).

    Started with `python -c` rather than multiprocessing's forkserver: that one
    runs the caller's main script again in every child it forks."""

    def __init__(self):
        if not hasattr(os, "fork"):
            raise ValueError("grading forks a kernel per exercise, which needs Linux or macOS (on Windows: WSL, "
                             "or the GitHub workflow in .github/workflows/grade.yml)")
        ours, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        env.pop("LABKIT_GRADING_SECRET", None)  # the hidden checks' inputs come from it (secret.py)
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"from labkit.grading.kernel import zygote; zygote({theirs.fileno()})"],
            pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self.control = ours

    def fork(self, channel, job):
        """Fork a kernel that serves `channel` (sent over as a file descriptor); its process id."""
        payload = json.dumps(job).encode()
        socket.send_fds(self.control, [struct.pack("!Q", len(payload))], [channel.fileno()])
        self.control.sendall(payload)
        reply = Channel(self.control)._exactly(8, time.monotonic() + STARTUP_SECONDS)
        return struct.unpack("!Q", reply)[0]


def _zygote():
    zygote_ = _server.get("zygote")
    if zygote_ is None or zygote_.process.poll() is not None:
        zygote_ = _server["zygote"] = _Zygote()
    return zygote_


def zygote(fd):
    """The zygote's loop: for each job the grader sends, fork a kernel; exit when the grader hangs up."""
    import numpy  # noqa: F401  (imported once here, not in every kernel)

    control = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        try:
            header, fds, _, _ = socket.recv_fds(control, 8, 1)
        except InterruptedError:
            continue
        if not header:
            return
        header += Channel(control)._exactly(8 - len(header), None)
        job = json.loads(Channel(control)._exactly(struct.unpack("!Q", header)[0], None))
        zygote_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            sandbox.die_with_parent(zygote_pid)  # the zygote exits when the grader is gone, however it went
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            run(socket.socket(fileno=fds[0]), sandbox.Box(**job["box"]), job["cells"], job["helpers"])
        os.close(fds[0])
        control.sendall(struct.pack("!Q", pid))


def _reap(*_):
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


# ---------------------------------------------------------------------------
# The kernel's side (a fresh process; nothing here returns to the grader but plain data)


def run(sock, box, cells, helpers):
    """The kernel process: box it, run the cells, then answer requests until the grader hangs up."""
    channel = Channel(sock)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1), os.dup2(devnull, 2)  # the student's prints go nowhere, never into the grader's log
    try:
        sandbox.enter(box)
        _stand_in_labkit(helpers)
        torch.set_num_threads(1)
    except BaseException as err:
        _send(channel, {"box_failed": f"{type(err).__name__}: {err}"})
        os._exit(3)
    _send(channel, {"started": True})  # before the student's code: the grader's clock starts here
    Server(channel).serve(cells)
    os._exit(0)


def _stand_in_labkit(helpers):
    """Replace labkit (imported by this process's parent) with a package of the allowed helpers only."""
    for name in [n for n in sys.modules if n == "labkit" or n.startswith("labkit.")]:
        del sys.modules[name]
    package = types.ModuleType("labkit", "labkit as grading offers it: only the helpers the exercise names")
    package.__path__ = []
    sys.modules["labkit"] = package
    for module_name, source in helpers.items():
        module = types.ModuleType(module_name)
        exec(compile(source, f"<{module_name}>", "exec"), module.__dict__)
        sys.modules[module_name] = module
        setattr(package, module_name.split(".", 1)[1], module)


def _send(channel, reply):
    try:
        message = wire.encode(reply)
    except wire.NotPlainData as err:
        message = wire.encode({"refused": f"your code returned {err}"})
    channel.send(message)


def describe(err):
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return text if len(text) <= 400 else text[:400] + " ..."


class Server:
    """Runs the student's cells, then answers the grader's requests about the names they defined."""

    def __init__(self, channel):
        self.channel = channel
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.objects = {}  # handle -> an object the grader asked for (a network)
        self.graphs = {}  # handle -> (output, inputs): for gradients the grader asks for later

    def serve(self, cells):
        exec(compile(PRELUDE, "<the notebook's imports>", "exec"), self.namespace)
        for number, source in enumerate(cells, start=1):
            try:
                exec(compile(source, f"<your cell {number}>", "exec"), self.namespace)
            except BaseException as err:  # SystemExit and KeyboardInterrupt too: they are the student's
                _send(self.channel, {"error": describe(err)})
                return
        _send(self.channel, {"ready": True})
        while True:
            try:
                request = wire.decode(self.channel.receive())
            except (EOFError, OSError):
                return
            try:
                value = getattr(self, "op_" + request["op"])(request)
                _send(self.channel, {"value": value})
            except wire.NotPlainData as err:
                _send(self.channel, {"refused": f"{request.get('what', 'your code')} returned {err}"})
            except BaseException as err:
                _send(self.channel, {"error": describe(err)})

    def _target(self, request):
        target = request["target"]
        if type(target) is int:
            return self.objects[target]
        if target not in self.namespace:
            raise NameError(f"name {target!r} is not defined")
        return self.namespace[target]

    def op_kinds(self, request):
        kinds = {}
        for name in request["names"]:
            value = self.namespace.get(name)
            kinds[name] = "missing" if name not in self.namespace else "class" if isinstance(value, type) else \
                "function" if callable(value) else "other"
        return kinds

    def op_new(self, request):
        obj = self._target(request)(*request["args"], **request["kwargs"])
        self.objects[len(self.objects) + 1] = obj
        return len(self.objects)

    def op_call(self, request):
        target = self._target(request)
        method = request.get("method")
        function = target if method is None else getattr(target, method)
        inputs = [a for a in request["args"] if isinstance(a, torch.Tensor) and a.requires_grad]
        output = function(*request["args"], **request["kwargs"])
        wire.encode(output)  # refuse a value that is not plain data now, with the caller's name
        if inputs and type(output) is torch.Tensor and output.requires_grad:
            self.graphs[len(self.graphs) + 1] = (output, inputs)
            return {"output": output, "graph": len(self.graphs)}
        return {"output": output}

    def op_vjp(self, request):
        output, inputs = self.graphs.pop(request["graph"])
        grads = torch.autograd.grad(output, inputs, request["grad_output"], allow_unused=True)
        return list(grads)

    def op_train(self, request):
        self._target(request).train(request["mode"])

    def op_state_dict(self, request):
        return [[name, tensor] for name, tensor in self._target(request).state_dict().items()]

    def op_load_state_dict(self, request):
        self._target(request).load_state_dict(dict((name, tensor) for name, tensor in request["state"]))

    def op_parameters(self, request):
        return list(self._target(request).parameters())

    def op_module_types(self, request):
        return [type(module).__name__ for module in self._target(request).modules()]
