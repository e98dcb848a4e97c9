"""The box a student's kernel runs in while it is graded: one bubblewrap sandbox per kernel.

labkit does not build the box itself: bubblewrap (`bwrap`, the sandbox Flatpak
runs every application in; Debian and Ubuntu package `bubblewrap`) does, from
one command line per kernel (`command`). The same line is used whether the
grader runs as root (CI) or as an ordinary user (bubblewrap then works through
unprivileged user namespaces):

    --unshare-all --unshare-user   new user, mount, PID, network, IPC, UTS and cgroup namespaces
    --disable-userns               the kernel cannot make a user namespace of its own (and gain capabilities there)
    --uid 1000 --gid 1000          a non-zero user id inside; outside, the grading user's (see docs/grading.md)
    --cap-drop ALL                 no capability, even inside its namespaces; no_new_privs (bubblewrap always sets it)
    --die-with-parent              killed when the grader dies, however it dies; its PID namespace with it
    --new-session                  no terminal to inject keystrokes into
    --ro-bind PYTHON, SITE-PACKAGES   read-only: the Python installation and the folders of the installed packages
    --tmpfs LABKIT                 ... with labkit's own source covered by an empty folder, if it lies in them
    --tmpfs /tmp, --tmpfs /kernel  empty, private, writable; gone with the kernel
    --proc /proc, --dev /dev       its own processes only; null, zero, random, urandom
    --tmpfs /dev/shm               sized like /tmp (an unsized tmpfs is RAM no limit counts)
    --remount-ro /dev, /           read-only: bubblewrap's own tmpfs root and /dev take no files

and nothing else: the root is a fresh tmpfs that bubblewrap pivot_roots into
(the old root is detached, so no chroot trick climbs out of it). The
instructor's notebooks, the report folder, the other submissions, HOME and
labkit's source are not in the kernel's file system at all.

Where bubblewrap is missing, grading stops with how to install it, unless the
instructor accepts a box of processes only (`--process-box`, macOS): then the
kernel is an ordinary process with its own temporary working folder and HOME,
and it reads and writes what the grading user can. The gradebook records which
box graded each row.

Limits inside either box: the memory limit (address space), a per-process
CPU-time limit and a file-size limit (no file the kernel writes grows past
serve.FILE_BYTES, not even one it reaches through /proc/1/fd), set by the
kernel's own start-up code before any student code runs (labkit/grading/serve.py). What an exercise's time limit counts, and how
kernels graded side by side share the cores, is labkit/grading/meter.py.
"""

import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy
import torch

BWRAP, PROCESS = "bwrap", "process"  # the two boxes; the gradebook's `box` column says which graded a row
INSTALL = ("grading runs each student's code in bubblewrap, which is not installed: install it "
           "(sudo apt-get install bubblewrap; dnf install bubblewrap), or pass --process-box to accept a box "
           "of processes only, where students' code reads and writes what you can (macOS)")
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache", "/etc/ld.so.conf",
          "/etc/ld.so.conf.d")
WORKING_FOLDER = "/kernel"  # the kernel's working folder and HOME, inside the bwrap box
CODE_FOLDER = "/opt/labkit-kernel"  # the kernel's own code inside the box: serve.py and wire.py, nothing else
KERNEL_UID = 1000  # the kernel's user id inside its user namespace (not root)
TMPFS_BYTES = 256 * 2**20  # each of /tmp, /kernel and /dev/shm
KERNEL_CODE = ("serve.py", "wire.py")  # labkit/grading/ files the kernel runs; the rest of labkit stays outside


class NoBox(ValueError):
    """bubblewrap is missing or does not work here (the message says what to do)."""


@dataclass(frozen=True)
class Box:
    """How every kernel of a grading is boxed: which box, and what it may see."""

    kind: str  # BWRAP or PROCESS
    read_only: tuple = ()  # host paths the kernel sees, read-only, at the same path
    hidden: tuple = ()  # paths inside those that it must not see (covered by empty folders)
    memory_bytes: int = 4 * 2**30  # address space the student's code may add to the kernel's


def choose(process_box=False):
    """The box this machine gives: BWRAP if bubblewrap works here; else PROCESS if the instructor accepted it
    (`process_box`), else NoBox with the line that says how to install bubblewrap."""
    why = bwrap_fails()
    if why is None:
        return BWRAP
    if process_box:
        return PROCESS
    raise NoBox(INSTALL if why == "missing" else f"bubblewrap is installed but cannot make a box here ({why}); "
                f"allow unprivileged user namespaces (docs/grading.md), or pass --process-box")


def bwrap_fails():
    """None if bubblewrap makes a box here (tried, not guessed: some systems forbid user namespaces);
    "missing", or bubblewrap's own complaint."""
    if not sys.platform.startswith("linux") or shutil.which("bwrap") is None:
        return "missing"
    probe = [*_bwrap_options(), "--ro-bind", "/", "/", "--", "/bin/true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{type(err).__name__}: {err}"
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["failed"])[-1][:300]


def make_box(kind, secret_paths, memory_bytes=4 * 2**30):
    """The Box for this grading: Python and the installed packages read-only, with every secret path that lies
    inside them (labkit's source, HOME, the instructor's notebooks, the report) covered."""
    read_only = read_only_paths()
    labkit_source = Path(__file__).resolve().parents[1]
    candidates = {Path(p).resolve() for p in [*secret_paths, labkit_source, Path.home()] if p}
    hidden = sorted(str(p) for p in candidates if any(p == Path(r) or Path(r) in p.parents for r in read_only))
    return Box(kind, tuple(read_only), tuple(hidden), memory_bytes)


def read_only_paths():
    """What a kernel needs to see: the Python installation and the folders its packages come from."""
    paths = {os.path.realpath(sys.base_prefix), *(os.path.realpath(p) for p in site_packages())}
    return sorted(p for p in paths if os.path.isdir(p))


def site_packages():
    """The folders torch, numpy and the environment's other packages are imported from."""
    found = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    found += [os.path.dirname(os.path.dirname(module.__file__)) for module in (torch, numpy)]
    return list(dict.fromkeys(os.path.realpath(p) for p in found if os.path.isdir(p)))


def kernel_code_folder():
    return Path(__file__).resolve().parent


def command(box, python_args):
    """The argv that starts a kernel in `box`: bwrap's line (module docstring), or the bare Python for PROCESS
    (the caller gives that one an empty folder of its own as working folder and HOME: process_env)."""
    python = os.path.realpath(sys.executable)
    if box.kind == PROCESS:
        return [python, *python_args]
    size = ["--size", str(TMPFS_BYTES)]
    argv = [*_bwrap_options(), *size, "--tmpfs", "/tmp", *size, "--tmpfs", WORKING_FOLDER]
    for path in box.read_only:  # after /tmp's tmpfs, so an environment that lives under /tmp is still seen
        argv += ["--ro-bind", path, path]
    for path in box.hidden:
        argv += ["--perms", "0555", "--tmpfs", path, "--remount-ro", path]
    for name in KERNEL_CODE:
        argv += ["--ro-bind", str(kernel_code_folder() / name), f"{CODE_FOLDER}/{name}"]
    for path in SYSTEM:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
             "--remount-ro", "/", "--chdir", WORKING_FOLDER, "--clearenv", *_env(HOME=WORKING_FOLDER, TMPDIR="/tmp")]
    return [*argv, "--", python, *python_args]


def _bwrap_options():
    return ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(KERNEL_UID),
            "--gid", str(KERNEL_UID), "--hostname", "kernel", "--cap-drop", "ALL", "--die-with-parent",
            "--new-session"]


def _env(**values):
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", **values}
    return [arg for name, value in env.items() for arg in ("--setenv", name, value)]


def process_env(workdir):
    """The environment of a PROCESS kernel: only what Python needs, HOME and TMPDIR in its own folder."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "HOME": str(workdir),
            "TMPDIR": str(workdir)}
