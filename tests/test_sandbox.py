"""The box a student's kernel runs in, attacked directly: code that breaks every rule, run without the rules.

Grading's static rules (tests/test_rules.py) only give reasons; these tests show
that the box holds even for code that gets past them (any code can: numpy
reaches ctypes). Every kernel here is a real bubblewrap box. The escape of
issue 26 is made as root and, when the tests run as root, again as an
ordinary user (uid 65534, through setpriv), whose box bubblewrap builds in an
unprivileged user namespace.
"""

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import tree_digest

from labkit.grading import meter, sandbox
from labkit.grading.kernel import GradingError, Kernel, KernelDied, KernelTimeout, StudentError

pytestmark = pytest.mark.skipif(sandbox.bwrap_fails() is not None,
                                reason=f"bubblewrap does not work here ({sandbox.bwrap_fails()}): "
                                       f"sudo apt-get install bubblewrap")
ROOT = os.geteuid() == 0
NOBODY = 65534


def _makes_cgroups():
    """Whether grading here gives each kernel a cgroup of its own (root, with cgroups mounted)."""
    made = meter.Meter()
    kind = made.kind
    made.close()
    return kind == "cgroup"


CGROUPS = _makes_cgroups()


@pytest.fixture
def secrets_(tmp_path):
    """An instructor's notebook with hidden checks, and a report folder, as a grader would have them."""
    source, report = tmp_path / "instructor", tmp_path / "report"
    source.mkdir(), report.mkdir()
    (source / "01_train_dcgan.ipynb").write_text('{"cells": ["### BEGIN HIDDEN TESTS\\nassert secret"]}')
    (report / "grades.csv").write_text("notebook,exercise,points\n01,dcgan_networks,0\n")
    return source, report


@pytest.fixture
def box(secrets_):
    return sandbox.make_box(sandbox.BWRAP, list(secrets_))


def probe(box, code, timeout=60):
    """Run `code` (which defines probe()) in a kernel; probe()'s result, or the kernel's error."""
    with Kernel([code], {}, box, timeout) as kernel:
        return kernel.request("call", target="probe", args=[], kwargs={}, what="probe()")["output"]


# The escape of issue 26 (five lines that climbed out of labkit's own chroot box), then every file a
# student would want: the hidden checks, the report, labkit's source, the grader's HOME.
ESCAPE = '''
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

def escape():
    said = []
    for step in (lambda: os.mkdir("/kernel/e"), lambda: os.chroot("/kernel/e")):
        try:
            step()
            said.append("done")
        except OSError as err:
            said.append(type(err).__name__)
    for _ in range(64):
        os.chdir("..")
    try:
        os.chroot(".")
        said.append("done")
    except OSError as err:
        said.append(type(err).__name__)
    return said

def probe():
    return [escape(), [attempt(action, path) for action, path in PATHS], os.getuid()]
'''


def escape_code(source, report, labkit_dir):
    checks = str(Path(labkit_dir) / "checks.py")
    paths = [("read", str(source / "01_train_dcgan.ipynb")), ("read", checks), ("write", checks),
             ("write", str(report / "grades.csv")), ("write", str(report / "new.txt")),
             ("write", os.path.join(os.path.dirname(socket.__file__), "socket.py")), ("read", "/etc/shadow"),
             ("read", str(Path.home() / ".bashrc"))]
    return f"PATHS = {paths!r}\n" + ESCAPE


def test_the_escape_of_issue_26_fails_as_root_and_the_graders_files_are_untouched(secrets_, box):
    import labkit

    source, report = secrets_
    labkit_dir = Path(labkit.__file__).parent
    before = tree_digest(source, report, labkit_dir)
    climbed, files, uid = probe(box, escape_code(source, report, labkit_dir))
    assert climbed == ["done", "PermissionError", "PermissionError"], climbed  # mkdir in its own tmpfs only
    assert "done" not in files, files
    assert uid == sandbox.KERNEL_UID
    assert tree_digest(source, report, labkit_dir) == before


NOBODY_GRADER = '''
import json, sys
import labkit
from labkit.grading import sandbox
from labkit.grading.kernel import Kernel

box = sandbox.make_box(sandbox.choose(), sys.argv[2:])
with Kernel([open(sys.argv[1]).read()], {}, box, 60) as kernel:
    said = kernel.request("call", target="probe", args=[], kwargs={}, what="probe()")["output"]
print(json.dumps([labkit.__file__, said]))
'''


def as_nobody(argv, env):
    """Run argv as uid 65534 (from root). Where the Python installation lies in a folder only root may enter
    (/root/.pyenv), the command runs in a mount namespace where that folder is passable; nothing else changes."""
    wrap = ["bwrap", "--dev-bind", "/", "/"]
    for path in map(Path, sandbox.read_only_paths()):
        closed = next((p for p in reversed(path.parents) if not os.stat(p).st_mode & 0o001), None)
        if closed is not None and str(closed) not in wrap:
            inside = closed / path.relative_to(closed).parts[0]
            wrap += ["--perms", "0755", "--tmpfs", str(closed), "--ro-bind", str(inside), str(inside)]
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run([*wrap, "--", *setpriv, *argv], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not ROOT, reason="the tests run as an ordinary user already: the test above is that case")
def test_the_escape_of_issue_26_fails_as_an_ordinary_user_who_owns_the_files():
    """The grader runs as uid 65534 and owns the instructor's notebooks, the report and its own copy of labkit
    (so a kernel with the grader's rights could write them all): bubblewrap builds the box unprivileged."""
    import labkit

    scene = Path(tempfile.mkdtemp(prefix="labkit-nobody-"))
    try:
        source, report, home, code = scene / "instructor", scene / "report", scene / "home", scene / "src"
        for folder in (source, report, home):
            folder.mkdir()
        shutil.copytree(Path(labkit.__file__).parent, code / "labkit", ignore=shutil.ignore_patterns("__pycache__"))
        (source / "01_train_dcgan.ipynb").write_text('{"cells": ["### BEGIN HIDDEN TESTS\\nassert secret"]}')
        (report / "grades.csv").write_text("points\n0\n")
        (scene / "probe.py").write_text(escape_code(source, report, code / "labkit"))
        (scene / "grader.py").write_text(NOBODY_GRADER)
        for path in [scene, *scene.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        before = tree_digest(source, report, code)
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(code), "PYTHONDONTWRITEBYTECODE": "1"}
        done = as_nobody([sys.executable, str(scene / "grader.py"), str(scene / "probe.py"), str(source),
                          str(report)], env)
        assert done.returncode == 0, done.stderr[-2000:]
        labkit_file, (climbed, files, uid) = json.loads(done.stdout.splitlines()[-1])
        assert labkit_file.startswith(str(code))  # the grader used the copy its user owns
        assert climbed == ["done", "PermissionError", "PermissionError"], climbed
        assert "done" not in files, files
        assert tree_digest(source, report, code) == before
    finally:
        shutil.rmtree(scene, ignore_errors=True)


def test_the_kernel_has_its_own_home_and_tmp_and_they_vanish_with_it(box):
    code = '''
import os

def probe():
    with open(os.path.join(os.environ["HOME"], "notes.txt"), "w") as f:
        f.write("mine")
    with open("/tmp/labkit-kernel-was-here", "w") as f:
        f.write("mine")
    return [os.environ["HOME"], os.getcwd(), sorted(os.listdir("/tmp")), os.getuid() != 0]
'''
    home, cwd, tmp, not_root = probe(box, code)
    assert home == cwd == sandbox.WORKING_FOLDER and tmp == ["labkit-kernel-was-here"] and not_root
    assert not Path("/tmp/labkit-kernel-was-here").exists()
    assert probe(box, "import os\ndef probe():\n    return sorted(os.listdir('/tmp'))\n") == []


FILLS = '''
import os
import signal

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the file-size limit a write then fails instead of killing


def fill(path, megabytes):
    written = 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for _ in range(megabytes):
                written += os.write(fd, b"x" * 2**20)
        finally:
            os.close(fd)
    except OSError as err:
        return [written // 2**20, err.errno]
    return [written // 2**20, 0]


def probe():
    return [fill("/proc/1/fd/2", 300), fill("/x", 1), fill("/dev/x", 1), fill("/dev/shm/x", 300)]
'''


def test_the_kernel_cannot_fill_the_graders_disk_or_ram_past_its_limits(box):
    """Red team: 300 MB written through /proc/1/fd/2 (bubblewrap's stderr, a file on the grader's disk) landed on
    the host; 1 GB in /dev/shm (an unsized tmpfs: RAM no limit counts) raised the machine's shared memory."""
    import errno

    to_host, root, dev, shm = probe(box, FILLS)
    assert to_host == [64, errno.EFBIG], to_host  # serve.FILE_BYTES, then no more
    assert root == [0, errno.EROFS] and dev == [0, errno.EROFS], (root, dev)  # bubblewrap's own tmpfs: read-only
    assert shm[0] <= 64 and shm[1] in (errno.EFBIG, errno.ENOSPC), shm


def test_an_environment_under_tmp_is_seen_and_tmp_stays_writable(box):
    """A fresh clone under /tmp: its packages are bound after the kernel's own /tmp is made, so both work."""
    with tempfile.TemporaryDirectory(prefix="labkit-env-") as env:
        (Path(env) / "pkg.txt").write_text("a package")
        under_tmp = sandbox.Box(box.kind, (*box.read_only, env), box.hidden, box.memory_bytes)
        code = f'''
def probe():
    with open("/tmp/scratch", "w") as f:
        f.write("ok")
    return [open({str(Path(env) / "pkg.txt")!r}).read(), open("/tmp/scratch").read()]
'''
        assert probe(under_tmp, code) == ["a package", "ok"]


def test_a_secret_folder_inside_what_the_kernel_sees_is_covered(box):
    """labkit installed into site-packages, or the instructor's notebooks inside the environment: make_box
    lists such folders as hidden, and the kernel finds them empty and read-only."""
    with tempfile.TemporaryDirectory(prefix="labkit-env-") as env:
        secret = Path(env) / "labkit"
        secret.mkdir()
        (secret / "checks.py").write_text("the hidden checks")
        (Path(env) / "pkg.txt").write_text("a package")
        covered = sandbox.Box(box.kind, (*box.read_only, env), (str(secret),), box.memory_bytes)
        code = f"""
import os

def probe():
    try:
        open({str(secret / "new.py")!r}, "w")
        wrote = "done"
    except OSError as err:
        wrote = type(err).__name__
    return [os.listdir({str(secret)!r}), wrote, open({str(Path(env) / "pkg.txt")!r}).read()]
"""
        listed, wrote, read = probe(covered, code)
    assert listed == [] and wrote != "done" and read == "a package", (listed, wrote, read)


def test_the_kernel_has_no_network_and_sees_no_other_process(box):
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
    out.append(sorted(int(name) for name in os.listdir("/proc") if name.isdigit()))
    return out
'''
    try:
        connected, signalled, processes = probe(box, code)
    finally:
        listener.close()
    assert connected != "connected" and signalled == "ProcessLookupError" and processes == [1, 2]


def test_a_kernel_that_exits_loops_or_sleeps_is_stopped_and_reported(box):
    with pytest.raises(KernelDied, match="stopped while running your code"):
        probe(box, "import os\ndef probe():\n    os._exit(0)\n")
    with pytest.raises(KernelTimeout, match="time limit of 2 s"):  # of CPU time; on a crowded machine, 10x wall
        probe(box, "def probe():\n    while True:\n        pass\n", timeout=2)
    with pytest.raises(KernelTimeout, match="did nothing for 1 s"):  # no CPU: stopped after its limit
        probe(box, "import time\ndef probe():\n    time.sleep(10**6)\n", timeout=1)


@pytest.mark.parametrize("count", ["cgroup", "process tree"])
def test_a_cell_that_never_ends_is_a_timeout_that_counts_its_own_cpu_only(box, count, monkeypatch):
    """The limit counts the kernel's CPU from the box being ready (starting it is grading's time), every
    process of it included, from its cgroup (root) or its process tree in /proc (an ordinary user)."""
    if count == "process tree":
        monkeypatch.setattr(meter, "_make_cgroups", lambda name: {})
    elif not CGROUPS:
        pytest.skip("only root makes a kernel's cgroup")
    code = ("import os\n\ndef probe():\n    for _ in range(3):\n        if os.fork() == 0:\n            break\n"
            "    while True:\n        pass\n")
    with Kernel([code], {}, box, 4) as kernel:
        assert kernel.meter.kind == count
        with pytest.raises(KernelTimeout, match="time limit of 4 s of CPU time"):
            kernel.request("call", target="probe", args=[], kwargs={}, what="probe()")


def test_children_linux_would_reap_unseen_still_count_against_the_limit(box, monkeypatch):
    """Issue 26's last break, as an ordinary user (the process-tree count): a kernel that ignores SIGCHLD has
    its ended children reaped by Linux, their CPU added to no process. The kernel's seccomp filter makes that
    call a no-op that reports success: each child burns 1 s and ends, and the limit of 3 s still stops it."""
    monkeypatch.setattr(meter, "_make_cgroups", lambda name: {})
    code = """
import os, signal, time

def probe():
    assert signal.signal(signal.SIGCHLD, signal.SIG_IGN) is not None  # no error: the call simply does nothing
    for _ in range(30):
        done_r, done_w = os.pipe()
        if os.fork() == 0:
            started = time.process_time()
            while time.process_time() - started < 1.0:
                pass
            os.write(done_w, b"x")
            os._exit(0)
        os.read(done_r, 1)  # the kernel sleeps while its child works
    return "30 s of children's CPU, unseen"
"""
    with Kernel([code], {}, box, 3) as kernel:
        assert kernel.meter.kind == "process tree"
        with pytest.raises(KernelTimeout, match="time limit of 3 s of CPU time"):
            kernel.request("call", target="probe", args=[], kwargs={}, what="probe()")


def test_the_seccomp_filter_skips_only_a_new_action_for_sigchld():
    """The filter itself, in a child Python: SIGCHLD's action can be read, not changed (the call says it worked);
    other signals' actions change as before; an ended child ignored this way stays a zombie until waited for."""
    code = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import serve
serve._children_stay_counted()
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    os._exit(0)
import time; time.sleep(0.5)
state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
usr1 = signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
os.kill(os.getpid(), signal.SIGUSR1)  # ignored: really changed
print(state, usr1, os.waitpid(pid, 0)[0] == pid)
"""
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("the filter is made for Linux on x86_64 and aarch64")
    done = subprocess.run([sys.executable, "-c", code, str(sandbox.kernel_code_folder())], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Z", "True", "True"]


def test_memory_beyond_the_limit_is_an_error_in_the_students_code_not_the_machines(secrets_):
    small = sandbox.make_box(sandbox.BWRAP, list(secrets_), memory_bytes=512 * 2**20)
    code = '''
import torch

def probe():
    return torch.empty(4 * 2**30, dtype=torch.uint8).numel()

def small():
    return torch.ones(3).sum()
'''
    with Kernel([code], {}, small, 60) as kernel:
        with pytest.raises(StudentError, match="(?i)memory"):
            kernel.request("call", target="probe", args=[], kwargs={}, what="probe()")
        assert kernel.request("call", target="small", args=[], kwargs={}, what="small()")["output"] == 3


BOMBS = '''
import os, time
threading = __import__("torch").cuda.threading  # the red team's way past the rules' `import threading`

def forks():
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

def threads():
    made = 0
    try:
        for _ in range(200):
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
            made += 1
    except RuntimeError:
        pass
    return made
'''

BOMBS_GRADER = '''
import json, sys
from labkit.grading import sandbox
from labkit.grading.kernel import Kernel

box = sandbox.make_box(sandbox.choose(), [])
made = []
for target in ("forks", "threads", "forks"):  # the last: a classmate's kernel after the bombs
    with Kernel([open(sys.argv[1]).read()], {}, box, 30) as kernel:
        made.append(kernel.request("call", target=target, args=[], kwargs={}, what=target + "()")["output"])
        made.append(kernel.meter.kind)
print(json.dumps(made))
'''


def bombs(grader_argv, env):
    done = subprocess.run(grader_argv, env=env, capture_output=True, text=True, timeout=600) if env is None else \
        as_nobody(grader_argv, env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not CGROUPS, reason="as root: the kernel's pids cgroup, which only root makes")
def test_a_fork_bomb_or_a_thread_bomb_stops_at_the_pids_cgroup_as_root(box):
    for target in ("forks", "threads"):
        with Kernel([BOMBS], {}, box, 30) as kernel:
            assert kernel.meter.kind == "cgroup"
            assert kernel.request("call", target=target, args=[], kwargs={}, what="x()")["output"] < meter.MAX_PROCESSES


def test_a_fork_bomb_or_a_thread_bomb_stops_at_the_box_task_limit_as_an_ordinary_user():
    """Red team: graded by an ordinary user (no pids cgroup), a kernel started threads until the user's limit, and
    the classmate graded beside it could not start a kernel ("bwrap: Creating new namespace failed"). The
    kernel's RLIMIT_NPROC counts its own box's tasks (uid 1000 of its own user namespace) and stops both bombs."""
    import labkit

    scene = Path(tempfile.mkdtemp(prefix="labkit-bombs-"))
    try:
        shutil.copytree(Path(labkit.__file__).parent, scene / "src" / "labkit",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (scene / "bombs.py").write_text(BOMBS)
        (scene / "grader.py").write_text(BOMBS_GRADER)
        argv = [sys.executable, str(scene / "grader.py"), str(scene / "bombs.py")]
        if ROOT:
            for path in [scene, *scene.rglob("*")]:
                os.chown(path, NOBODY, NOBODY)
            env = {"PATH": os.environ["PATH"], "HOME": str(scene), "PYTHONPATH": str(scene / "src"),
                   "PYTHONDONTWRITEBYTECODE": "1"}
            forks, kind, threads, _, classmate, _ = bombs(argv, env)
        else:
            forks, kind, threads, _, classmate, _ = bombs(argv, None)
    finally:
        shutil.rmtree(scene, ignore_errors=True)
    assert kind == "process tree"
    assert forks < meter.MAX_PROCESSES and threads < meter.MAX_PROCESSES, (forks, threads)
    assert classmate > 10  # a kernel started after the bombs works as ever


def test_labkit_in_the_kernel_holds_only_the_helpers_the_exercise_names(box):
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
    with Kernel([code], helpers, box, 60) as kernel:
        found = kernel.request("call", target="probe", args=[], kwargs={}, what="probe()")["output"]
    assert found[0] is True and "imported" not in found[1:], found


def test_a_box_that_cannot_be_made_is_gradings_error_with_bubblewraps_reason(box):
    broken = sandbox.Box(box.kind, ("/no/such/folder/labkit-test",), (), box.memory_bytes)
    with pytest.raises(GradingError, match="(?i)no such file"):
        Kernel(["x = 1"], {}, broken, 10)


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


def test_a_kernel_that_stops_reading_times_out_instead_of_hanging_the_grader(box):
    import torch

    with pytest.raises(KernelTimeout, match="did nothing for 2 s"):  # it sleeps: stopped after its limit
        with Kernel([FORGE + "time.sleep(10**6)\n"], {}, box, 2) as kernel:
            tree = descendants(kernel.pid)
            big = torch.zeros(16 * 2**20 // 4)  # 16 MB (22 in base64): more than the socket's buffers hold
            kernel.request("call", target="probe", args=[big], kwargs={}, what="probe()")
    assert tree and not alive(tree)  # the sleeping student code died with its kernel


def test_a_kernel_that_forges_ready_and_exits_is_the_students_fault_not_a_crash(box):
    with pytest.raises(KernelDied, match="stopped while running your code"):
        with Kernel([FORGE + "time.sleep(1)\nos._exit(0)\n"], {}, box, 20) as kernel:
            time.sleep(2)  # the kernel is gone: the request meets a closed or reset socket
            kernel.request("kinds", names=["probe"])


def test_a_forged_error_reaches_the_grader_as_one_short_message(box):
    with pytest.raises(StudentError) as raised:
        Kernel([FORGE.replace('{"dict": {"ready": True}}', '{"dict": {"error": "A" * 5_000_000}}')
                + "time.sleep(10)\n"], {}, box, 20)
    assert len(str(raised.value)) <= 400


def descendants(pid):
    """Process `pid` and every process below it (from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += [child for child, parent in parents.items() if parent == found[-1]]
    return found


def alive(pids, seconds=10):
    """Those of `pids` still running (not zombies) after up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        left = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z":
                left.append(pid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_a_grader_killed_outright_leaves_no_kernel_running(tmp_path):
    """SIGKILL to the grading process (an instructor's kill -9, the OOM killer): bubblewrap's --die-with-parent
    kills each kernel's box with every process in it, even student code that sleeps forever."""
    script = (
        "import threading, time\n"
        "from labkit.grading import sandbox\n"
        "from labkit.grading.kernel import Kernel\n"
        f"box = sandbox.make_box(sandbox.BWRAP, [{str(tmp_path)!r}])\n"
        "cells = ['import os, time\\nif os.fork() == 0:\\n    time.sleep(10**6)\\ntime.sleep(10**6)\\n']\n"
        "threading.Thread(target=Kernel, args=(cells, {}, box, 600), daemon=True).start()\n"
        "time.sleep(8)\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n")
    grader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert grader.stdout.readline().strip() == "started"
    kernels = descendants(grader.pid)[1:]
    assert len(kernels) >= 4, "no kernel was running"  # bubblewrap, its PID 1, the kernel, the kernel's child
    grader.send_signal(signal.SIGKILL)
    grader.wait()
    assert not alive(kernels)


def test_without_bubblewrap_grading_stops_with_how_to_install_it_unless_the_instructor_accepts_processes(
        tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(sandbox.NoBox, match="sudo apt-get install bubblewrap"):
        sandbox.choose()
    assert sandbox.choose(process_box=True) == sandbox.PROCESS
    processes = sandbox.make_box(sandbox.PROCESS, [])
    assert probe(processes, "import os\ndef probe():\n    return os.getcwd() != os.environ['HOME'] or 'ok'\n") == "ok"


MEMORY_PROBE = '''
import resource, sys
from labkit.grading import sandbox
from labkit.grading.kernel import Kernel, Refused

code = "def probe():\\n    return [[[]] * 1000] * 2000\\n"  # 8 MB of JSON: 2 million empty lists
with Kernel([code], {}, sandbox.make_box(sandbox.BWRAP, []), 120) as kernel:
    kernel.request("kinds", names=["probe"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        kernel.request("call", target="probe", args=[], kwargs={}, what="probe()")
        said = "decoded"
    except Refused as err:
        said = str(err)
    print(said)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
'''


def test_a_reply_of_8_mb_of_nested_lists_is_refused_within_a_small_memory_budget():
    """Issue 26: such a reply cost the grader 734 MB. Now its values are counted in the bytes, before any is
    built: the grading process's peak memory grows by little more than the message itself."""
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    said, grown_mb = done.stdout.splitlines()[-2:]
    assert "values in one message" in said, said
    assert int(grown_mb) < 64, f"the grader's peak memory grew by {grown_mb} MB"
