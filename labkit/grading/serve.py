"""The kernel's side: the only code that runs with a student's code, inside its box.

The grader (labkit/grading/kernel.py) starts this file in a fresh Python in the
box (labkit/grading/sandbox.py), as a script beside wire.py: labkit itself is
not there. It

  1. imports torch, sets its own limits (memory, CPU time per process, children
     that cannot hide their CPU) and says {"started": true}: before any student code runs, so that message cannot be
     forged, and the grader's clock for the student starts there;
  2. receives the job, {"cells": [...], "helpers": {"labkit.models": "source"}},
     builds a stand-in `labkit` package of those helpers only, runs the cells and
     says {"ready": true} or {"error": "..."};
  3. answers the grader's requests about the names the cells defined (call this
     function, build this network, its state dict...) with plain data (wire.py),
     until the grader hangs up.

Nothing here returns to the grader but plain data.
"""

import builtins
import ctypes
import os
import platform
import resource
import signal
import socket
import struct
import sys
import types

import numpy  # noqa: F401  (imported before the limits: it maps memory the student's code did not ask for)
import torch

import wire

PR_SET_PDEATHSIG, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS = 1, 22, 38
FILE_BYTES = 64 * 2**20  # the largest file the kernel may write: bubblewrap's stderr on the host included


def main(fd, memory_bytes, cpu_seconds, max_tasks=0):
    """The kernel process (see the module docstring). `max_tasks`: processes and threads the box may hold at once
    (0: no limit, a process box, where the limit would count every process of the grading user)."""
    channel = wire.Channel(socket.socket(fileno=fd))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1), os.dup2(devnull, 2)  # the student's prints go nowhere, never into the grader's log
    try:
        _limits(memory_bytes, cpu_seconds, max_tasks)
        torch.set_num_threads(1)
    except BaseException as err:
        _send(channel, {"box_failed": f"{type(err).__name__}: {err}"})
        os._exit(3)
    _send(channel, {"started": True})  # before the student's code: the grader's clock starts here
    try:
        job = wire.decode(channel.receive())
    except (EOFError, OSError, ValueError, wire.NotPlainData):
        os._exit(0)
    _stand_in_labkit(job["helpers"])
    Server(channel).serve(job["prelude"], job["cells"])
    os._exit(0)


def _limits(memory_bytes, cpu_seconds, max_tasks=0):
    """Address space (beyond what torch already maps), CPU seconds per process, the size of any file it writes
    (through /proc/1/fd/2 the kernel reaches bubblewrap's stderr, a file on the grader's disk) and, in a bwrap box,
    its processes and threads; killed with its parent.

    The task limit counts the box's own tasks only: the kernel is uid 1000 of its own user namespace, and Linux
    counts RLIMIT_NPROC per user of each namespace. Without it, a kernel graded by an ordinary user (no pids
    cgroup) started threads until the user's limit, and the classmate graded beside it could not start a kernel."""
    in_use = _address_space()
    resource.setrlimit(resource.RLIMIT_AS, (in_use + memory_bytes,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    if max_tasks:
        resource.setrlimit(resource.RLIMIT_NPROC, (max_tasks, max_tasks))
    if sys.platform.startswith("linux"):  # a process box: die with the grader (bubblewrap does it in its box)
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        _children_stay_counted()


# A process that ignores SIGCHLD (or sets SA_NOCLDWAIT) has its ended children reaped by Linux at once: their
# CPU time is then added to no process, and a time limit that sums the kernel's process tree (grading as an
# ordinary user: labkit/grading/meter.py) never sees it (a red team ran 120 s of CPU under a 20 s limit so).
# The filter below makes rt_sigaction(SIGCHLD, new action) a call that does nothing and reports success, for
# the kernel and everything it starts (a seccomp filter is inherited and cannot be removed): an ended child
# stays a zombie, whose CPU /proc still shows, until its parent waits for it, which adds it to the parent's.
# Honest code is not broken: asking for the current action still works, and a handler that is not installed
# (torch's DataLoader installs one to report dead workers) changes nothing a check sees.
SECCOMP_ARCH = {"x86_64": (0xC000003E, 13), "aarch64": (0xC00000B7, 134)}  # audit arch, rt_sigaction's number
SECCOMP_MODE_FILTER, RET_ALLOW, RET_ERRNO = 2, 0x7FFF0000, 0x00050000
X32_BIT = 0x40000000  # x86_64's x32 system calls: a second way in, refused


def seccomp_program(arch, rt_sigaction):
    """The classic-BPF program (seccomp_data: nr at byte 0, arch at 4, args[i] at 16 + 8i, little-endian)."""
    load, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    allow, skip, refuse = 11, 12, 13  # the last three instructions' indexes; a jump counts from the next one
    program = [
        (load, 0, 0, 4), (jeq, 0, refuse - 2, arch),  # 0-1: another architecture's calls: refused
        (load, 0, 0, 0), (jge, refuse - 4, 0, X32_BIT),  # 2-3: the call's number; x32 calls: refused
        (jeq, 0, allow - 5, rt_sigaction),  # 4: any other call: allowed
        (load, 0, 0, 16), (jeq, 0, allow - 7, signal.SIGCHLD),  # 5-6: another signal's action: allowed
        (load, 0, 0, 24), (jeq, 0, skip - 9, 0),  # 7-8: a new action given (pointer's low half)...
        (load, 0, 0, 28), (jeq, allow - 11, skip - 11, 0),  # 9-10: (...or high half): skipped
        (ret, 0, 0, RET_ALLOW), (ret, 0, 0, RET_ERRNO | 0), (ret, 0, 0, RET_ERRNO | 1),  # 11-13: 0 = success
    ]
    return b"".join(struct.pack("HBBI", *instruction) for instruction in program)


def _children_stay_counted():
    """Install the seccomp filter above (Linux on x86_64 or aarch64; elsewhere the meter's documented gap)."""
    if platform.machine() not in SECCOMP_ARCH:
        return
    code = seccomp_program(*SECCOMP_ARCH[platform.machine()])
    buffer = ctypes.create_string_buffer(code, len(code))

    class Program(ctypes.Structure):  # struct sock_fprog
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    program = Program(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or \
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0):
        raise OSError(ctypes.get_errno(), "seccomp filter refused: " + os.strerror(ctypes.get_errno()))


def _address_space():
    """Bytes of address space this process has mapped (an imported torch maps a few GB it never touches)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # no /proc (macOS): the peak resident size instead
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _stand_in_labkit(helpers):
    """A `labkit` package of the allowed helpers only (labkit itself is not in the box)."""
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

    def serve(self, prelude, cells):
        exec(compile(prelude, "<the notebook's imports>", "exec"), self.namespace)
        for number, source in enumerate(cells, start=1):
            try:
                exec(compile(source, f"<your cell {number}>", "exec"), self.namespace)
            except BaseException as err:  # SystemExit and KeyboardInterrupt too: they are the student's
                _send(self.channel, {"error": describe(err)})
                return
        _send(self.channel, {"ready": True})
        while True:
            try:
                request = wire.decode(self.channel.receive(), self.local)
            except (EOFError, OSError):
                return
            try:
                value = getattr(self, "op_" + request["op"])(request)
                _send(self.channel, {"value": value})
            except wire.NotPlainData as err:
                _send(self.channel, {"refused": f"{request.get('what', 'your code')} returned {err}"})
            except BaseException as err:
                _send(self.channel, {"error": describe(err)})

    def local(self, kind, body):
        """A network the grader's request names (wire.py): one it had built here, or one `build` describes."""
        if kind == "object":
            return self.objects[body]
        return wire.build(body["expression"], body["seed"])

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
