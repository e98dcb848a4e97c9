"""The box a student's kernel runs in, attacked directly: code that breaks every rule, run without the rules.

Grading's static rules (tests/test_rules.py) only give reasons; these tests show
that the box holds even for code that gets past them (any code can: numpy
reaches ctypes). On Linux as root (CI) the kernel runs at the "root" level;
tests that need namespaces are skipped, with the reason, elsewhere.
"""

import os
import socket
import time
from pathlib import Path

import pytest
from conftest import tree_digest

from labkit.grading import sandbox
from labkit.grading.grade import Boxes
from labkit.grading.kernel import Kernel, KernelDied, KernelTimeout, StudentError

LEVEL = sandbox.isolation()
boxed = pytest.mark.skipif(LEVEL == "process", reason="this machine offers no namespaces (level 'process'): "
                                                      "files and network are only as protected as file permissions")


@pytest.fixture
def secrets_(tmp_path):
    """An instructor's notebook with hidden checks, and a report folder, as a grader would have them."""
    source, report = tmp_path / "instructor", tmp_path / "report"
    source.mkdir(), report.mkdir()
    (source / "01_train_dcgan.ipynb").write_text('{"cells": ["### BEGIN HIDDEN TESTS\\nassert secret"]}')
    (report / "grades.csv").write_text("notebook,exercise,points\n01,dcgan_networks,0\n")
    return source, report


@pytest.fixture
def boxes(secrets_):
    made = Boxes(list(secrets_))
    yield made
    made.close()


def probe(boxes, code, timeout=60):
    """Run `code` (which defines probe()) in a kernel; probe()'s result, or the kernel's error."""
    with Kernel([code], {}, boxes.new(timeout), timeout) as kernel:
        return kernel.request("call", target="probe", args=[], kwargs={}, what="probe()")["output"]


TRY_FILES = '''
import os

def attempt(action, path):
    try:
        if action == "read":
            with open(path, "rb") as f:
                f.read(100)
        else:
            with open(path, "a") as f:
                f.write("tampered")
        return "done"
    except OSError as err:
        return type(err).__name__

def probe():
    return [attempt(action, path) for action, path in PATHS]
'''


LEVELS = [level for level in ("root", "user") if (level != "root" or os.geteuid() == 0) and sandbox._works(level)]


@pytest.mark.parametrize("level", LEVELS or [pytest.param("none", marks=pytest.mark.skip(
    reason="this machine offers no namespaces: files are only as protected as file permissions"))])
def test_the_kernel_can_neither_read_nor_write_the_graders_files(level, secrets_):
    import labkit.checks

    boxes = Boxes(list(secrets_), level=level)
    source, report = secrets_
    notebook, grades = source / "01_train_dcgan.ipynb", report / "grades.csv"
    before = tree_digest(source, report, Path(labkit.checks.__file__).parent)
    paths = [("read", str(notebook)), ("read", labkit.checks.__file__), ("write", str(grades)),
             ("write", str(report / "new.txt")), ("write", labkit.checks.__file__),
             ("write", os.path.join(os.path.dirname(socket.__file__), "socket.py")), ("read", "/etc/shadow")]
    code = f"PATHS = {paths!r}\n" + TRY_FILES
    try:
        results = probe(boxes, code)
    finally:
        boxes.close()
    assert "done" not in results, list(zip(paths, results))
    assert tree_digest(source, report, Path(labkit.checks.__file__).parent) == before


@boxed
def test_the_kernel_has_its_own_home_and_tmp_and_they_vanish_with_it(boxes):
    code = '''
import os

def probe():
    with open(os.path.join(os.environ["HOME"], "notes.txt"), "w") as f:
        f.write("mine")
    with open("/tmp/labkit-kernel-was-here", "w") as f:
        f.write("mine")
    return [os.environ["HOME"], os.getcwd(), sorted(os.listdir("/tmp")), os.getuid() != 0]
'''
    home, cwd, tmp, not_root = probe(boxes, code)
    assert home == cwd == sandbox.WORKING_FOLDER and tmp == ["labkit-kernel-was-here"] and not_root
    assert not Path("/tmp/labkit-kernel-was-here").exists()
    assert probe(boxes, "import os\ndef probe():\n    return sorted(os.listdir('/tmp'))\n") == []


@boxed
def test_the_kernel_has_no_network_and_sees_no_other_process():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0)), listener.listen(1)
    port = listener.getsockname()[1]
    code = f'''
import os, socket

def probe():
    out = []
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=2)
        out.append("connected")
    except OSError as err:
        out.append(type(err).__name__)
    try:
        os.kill({os.getpid()}, 0)
        out.append("signalled the grader")
    except OSError as err:
        out.append(type(err).__name__)
    out.append(sum(name.isdigit() for name in os.listdir("/proc")))
    return out
'''
    made = Boxes([])
    try:
        connected, signalled, processes = probe(made, code)
    finally:
        made.close(), listener.close()
    assert connected != "connected" and signalled == "ProcessLookupError" and processes <= 2


def test_a_kernel_that_exits_or_never_ends_is_stopped_and_reported(boxes):
    with pytest.raises(KernelDied, match="stopped while running your code"):
        probe(boxes, "import os\ndef probe():\n    os._exit(0)\n")
    started = time.monotonic()
    with pytest.raises(KernelTimeout, match="time limit of 3 s"):
        probe(boxes, "def probe():\n    while True:\n        pass\n", timeout=3)
    assert time.monotonic() - started < 30


def test_a_cell_that_never_ends_is_a_timeout_and_the_clock_starts_with_the_students_code(boxes):
    """The time limit counts from the box being ready; the CPU limit (limit + 5 s) never fires first."""
    started = time.monotonic()
    with pytest.raises(KernelTimeout, match="time limit of 3 s"):
        Kernel(["while True:\n    pass\n"], {}, boxes.new(3), 3)
    assert time.monotonic() - started < 30


def test_memory_beyond_the_limit_is_an_error_in_the_students_code_not_the_machines(secrets_):
    made = Boxes(list(secrets_), memory_bytes=512 * 2**20)
    code = '''
import torch

def probe():
    return torch.empty(4 * 2**30, dtype=torch.uint8).numel()

def small():
    return torch.ones(3).sum()
'''
    try:
        with Kernel([code], {}, made.new(60), 60) as kernel:
            with pytest.raises(StudentError, match="(?i)memory"):
                kernel.request("call", target="probe", args=[], kwargs={}, what="probe()")
            assert kernel.request("call", target="small", args=[], kwargs={}, what="small()")["output"] == 3
    finally:
        made.close()


@pytest.mark.skipif(LEVEL != "root", reason="the process limit is per user id; kernels get their own only as root")
def test_a_fork_bomb_stops_at_the_process_limit(boxes):
    code = '''
import os, time

def probe():
    made = 0
    try:
        for _ in range(200):
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            made += 1
    except OSError:
        pass
    return made
'''
    assert probe(boxes, code) < sandbox.MAX_PROCESSES


def test_labkit_in_the_kernel_holds_only_the_helpers_the_exercise_names(boxes):
    from labkit.grading.grade import PRELUDE  # noqa: F401  (the helpers' source starts with it)
    import inspect

    from labkit.models import init_weights

    helpers = {"labkit.models": "from torch import nn\n\n" + inspect.getsource(init_weights)}
    code = '''
from labkit.models import init_weights

def attempt(statement):
    try:
        exec(statement, {})
        return "imported"
    except ImportError as err:
        return type(err).__name__

def probe():
    return [callable(init_weights), attempt("from labkit.models import DCGANGenerator"),
            attempt("import labkit.checks"), attempt("from labkit import solutions")]
'''
    with Kernel([code], helpers, boxes.new(60), 60) as kernel:
        found = kernel.request("call", target="probe", args=[], kwargs={}, what="probe()")["output"]
    assert found[0] is True and "imported" not in found[1:], found


# A kernel that forges the protocol: the student's code owns its end of the socket, so it can write any
# frame there. What it writes is still only data; these tests check that the grader neither hangs nor
# mistakes the forgery for a fault of grading's own.
FORGE = '''
import json, os, stat, struct, time

def forge(message):
    fd = next(fd for fd in range(64) if _is_socket(fd))
    data = json.dumps(message).encode()
    os.write(fd, struct.pack("!Q", len(data)) + data)

def _is_socket(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False

forge({"dict": {"ready": True}})  # "ready" before the kernel itself says so; then:
'''


def processes_left(pid, seconds=10):
    """The processes still alive, after up to `seconds`, of the kernel the grader knows as `pid`: at the root
    level every process of a kernel runs as its own user id, FIRST_UID + pid."""
    uid = str(sandbox.FIRST_UID + pid)
    deadline = time.monotonic() + seconds
    while True:
        left = []
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            except OSError:
                continue
            if fields.get("Uid", "").split()[:1] == [uid] and fields.get("State", "").split()[:1] != ["Z"]:
                left.append(status.parent.name)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_a_kernel_that_stops_reading_times_out_instead_of_hanging_the_grader(boxes):
    import torch

    started = time.monotonic()
    with pytest.raises(KernelTimeout, match="time limit of 3 s"):
        with Kernel([FORGE + "time.sleep(10**6)\n"], {}, boxes.new(3), 3) as kernel:
            pid = kernel.pid
            big = torch.zeros(16 * 2**20 // 4)  # 16 MB (22 in base64): more than the socket's buffers hold
            kernel.request("call", target="probe", args=[big], kwargs={}, what="probe()")
    assert time.monotonic() - started < 30
    if LEVEL == "root":  # the sleeping student code dies with the kernel (its own user id shows it)
        assert processes_left(pid) == []


def test_a_kernel_that_forges_ready_and_exits_is_the_students_fault_not_a_crash(boxes):
    with pytest.raises(KernelDied, match="stopped while running your code"):
        with Kernel([FORGE + "time.sleep(1)\nos._exit(0)\n"], {}, boxes.new(20), 20) as kernel:
            time.sleep(2)  # the kernel is gone: the request meets a closed or reset socket
            kernel.request("kinds", names=["probe"])


def test_a_forged_error_reaches_the_grader_as_one_short_message(boxes):
    with pytest.raises(StudentError) as raised:
        Kernel([FORGE.replace('{"dict": {"ready": True}}', '{"dict": {"error": "A" * 5_000_000}}')
                + "time.sleep(10)\n"], {}, boxes.new(20), 20)
    assert len(str(raised.value)) <= 400


@pytest.mark.skipif(LEVEL != "root", reason="a kernel's processes are told apart by their own user id only "
                                            "at the root level (Linux, as root: CI)")
def test_a_grader_killed_outright_leaves_no_kernel_running(tmp_path):
    """SIGKILL to the grading process (an instructor's kill -9, the OOM killer): its zygote sees the socket
    close and exits, and every kernel dies with the zygote, even one whose student code sleeps forever."""
    import signal
    import subprocess
    import sys

    script = (
        "import threading, time\n"
        "from labkit.grading.grade import Boxes\n"
        "from labkit.grading.kernel import Kernel\n"
        f"boxes = Boxes([{str(tmp_path)!r}])\n"
        "cells = ['import time\\ntime.sleep(10**6)\\n']\n"
        "threading.Thread(target=Kernel, args=(cells, {}, boxes.new(600), 600), daemon=True).start()\n"
        "time.sleep(5)\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n")
    grader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert grader.stdout.readline().strip() == "started"
    zygotes = _children(grader.pid)
    outer = [child for zygote in zygotes for child in _children(zygote)]  # the processes the grader knows
    kernels = [p for p in Path("/proc").glob("[0-9]*") if _field(p, "Uid:") in
               {str(sandbox.FIRST_UID + pid) for pid in outer}] + [Path(f"/proc/{pid}") for pid in outer]
    assert zygotes and outer and len(kernels) > len(outer), "no kernel was running"
    grader.send_signal(signal.SIGKILL)
    grader.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in kernels) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p.name for p in kernels if _alive(p)]


def _field(proc, name):
    """The first value of a line of /proc/PID/status ("Uid:", "PPid:", "State:"); None if it is gone."""
    try:
        return next(line for line in (proc / "status").read_text().splitlines() if line.startswith(name)).split()[1]
    except (OSError, StopIteration, IndexError):
        return None


def _children(pid):
    return [int(p.name) for p in Path("/proc").glob("[0-9]*") if _field(p, "PPid:") == str(pid)]


def _alive(proc):
    return _field(proc, "State:") not in (None, "Z")
