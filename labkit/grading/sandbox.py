"""The box a student's kernel runs in while it is graded.

`enter(box)` is called in the kernel's process before any student code runs,
and cannot be undone from inside. What it does depends on what the platform
allows (`isolation()` says which level this machine gets):

    level       where                                 what the kernel sees and may do
    ---------   -----------------------------------   -------------------------------------------------
    "root"      Linux, grading as root (CI runners)    its own mount, network, PID and IPC namespaces;
                                                      a root directory that holds only Python, the
                                                      installed packages (labkit's source hidden) and
                                                      the system libraries, all read-only; an empty
                                                      /tmp and working folder; runs as its own unprivileged
                                                      user id, so it cannot touch other kernels
    "user"      Linux, unprivileged user namespaces    the same, inside a user namespace (the same user id
                (most desktop distributions)          as the grader, but no process outside is visible)
    "process"   macOS, Windows, Linux without          its own temporary working folder and HOME, the
                namespaces                             limits below; files and network as the grading user

At every level: a memory limit (address space), a CPU-time limit, at most
64 processes ("root" and "process" on Unix), no new privileges, and the grader
kills it at the exercise's time limit. The instructor's notebooks, the report
folder, the other submissions and labkit's own source (hidden checks included)
are not in the kernel's file system at "root" and "user"; at "process" they
are only as protected as the grading user's file permissions make them, which
is why grading in CI runs as root (the "root" level).

Linux namespaces and mounts are made with libc's unshare(2) and mount(2)
through ctypes; the layout follows bubblewrap's (a tmpfs root with read-only
bind mounts), without needing bubblewrap installed.
"""

import ctypes
import os
import select
import signal
import sys
import tempfile
from dataclasses import dataclass, field

import numpy
import torch

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
SYSTEM = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d")
MAX_PROCESSES = 64
WORKING_FOLDER = "/kernel"  # the kernel's working folder and HOME ("root", "user")
FIRST_UID = 200_000  # kernels at the "root" level run as FIRST_UID + a process id: no user owns those ids


@dataclass
class Box:
    """Where and how one kernel is boxed (made by the grader, entered by the kernel)."""

    level: str  # "root", "user" or "process" (see the module docstring)
    mount_point: str  # an empty folder of the grader's: the kernel's root ("root", "user") or its working folder
    read_only: list = field(default_factory=list)  # host paths the kernel sees, read-only
    hidden: list = field(default_factory=list)  # paths inside those that it must not see (covered by empty folders)
    memory_bytes: int = 4 * 2**30  # address space the student's code may add to the kernel's
    cpu_seconds: int = 600


def isolation():
    """The strongest level this machine offers: "root", "user" or "process" (tried, not guessed: some
    systems allow a user namespace but no mounts in it, e.g. Ubuntu 24.04's AppArmor default)."""
    if not sys.platform.startswith("linux"):
        return "process"
    level = "root" if os.geteuid() == 0 else "user"
    return level if _works(level) else "process"


def _works(level):
    """Whether namespaces and a tmpfs mount work at `level`, tried in a throwaway child process."""
    with tempfile.TemporaryDirectory(prefix="labkit-probe-") as folder:
        pid = os.fork()
        if pid == 0:
            try:
                flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID
                uid, gid = os.getuid(), os.getgid()
                _check(_libc().unshare(flags | (CLONE_NEWUSER if level == "user" else 0)), "unshare")
                if level == "user":
                    _write("/proc/self/setgroups", "deny")
                    _write("/proc/self/uid_map", f"0 {uid} 1")
                    _write("/proc/self/gid_map", f"0 {gid} 1")
                _mount(None, "/", None, MS_REC | MS_PRIVATE)
                _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "size=4k")
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) == 0


def read_only_paths():
    """What a kernel needs to see: the Python installation, the folders of the installed packages, the
    system's libraries and a few devices."""
    paths = {sys.base_prefix, sys.prefix, *SYSTEM, *DEVICES}
    for module in (torch, numpy):
        paths.add(os.path.dirname(os.path.dirname(module.__file__)))  # its site-packages
    return sorted(p for p in paths if os.path.exists(p))


def enter(box):
    """Box this process (see the module docstring). At "root" and "user" the caller continues in a
    child process that is PID 1 of a new PID namespace; the original process waits for it and exits
    with its status, so `enter` returns only in the boxed process."""
    if box.level in ("root", "user"):
        _namespaces(box)
    else:
        os.makedirs(box.mount_point, exist_ok=True)
        os.chdir(box.mount_point)
        os.environ["TMPDIR"] = box.mount_point
    _limits(box)
    tmp = os.environ.get("TMPDIR", "/tmp")
    os.environ.clear()
    os.environ.update(HOME=os.getcwd(), TMPDIR=tmp, PATH="/usr/bin:/bin", LANG="C.UTF-8", OMP_NUM_THREADS="1")


def _namespaces(box):
    libc = _libc()
    uid, gid, outer_pid = os.getuid(), os.getgid(), os.getpid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    _check(libc.unshare(flags | (CLONE_NEWUSER if box.level == "user" else 0)), "unshare")
    if box.level == "user":
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
    alive_r, alive_w = os.pipe()  # its write end closes when the outer process dies, however it dies
    child = os.fork()  # the first process of the new PID namespace
    if child:
        os.close(alive_r)
        signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGKILL))
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    os.close(alive_w)
    _mount_root(box)
    if box.level == "root":  # a user id of its own (no two live kernels share a process id), no groups
        os.setgroups([])
        os.setgid(FIRST_UID + outer_pid)
        os.setuid(FIRST_UID + outer_pid)
    # Killed with the process the grader holds (and with it every process of the namespace). Set after the
    # user id changes, which clear it; then the pipe tells whether the outer process died before it was set.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([alive_r], [], [], 0)[0]:
        os._exit(1)
    os.close(alive_r)


def _mount_root(box):
    root = box.mount_point
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the grader's view
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=755")
    for path in box.read_only:
        target = root + path
        if os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "w").close()
        _mount(path, target, None, MS_BIND | MS_REC)
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
    for path in box.hidden:  # inside a read-only tree: cover it with an empty, read-only folder
        if os.path.isdir(root + path):
            _mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,mode=555")
    for folder in (WORKING_FOLDER, "/tmp"):  # empty and writable; never over a read-only path (a venv in /tmp)
        if not any(p == folder or p.startswith(folder + "/") for p in box.read_only):
            os.makedirs(root + folder, exist_ok=True)
            _mount("tmpfs", root + folder, "tmpfs", MS_NOSUID | MS_NODEV, "size=256m,mode=1777")
    os.makedirs(root + "/proc", exist_ok=True)
    try:
        _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV)  # this PID namespace's processes only
    except OSError:
        pass  # not needed by the kernel; some container runtimes refuse it
    os.chroot(root)
    os.chdir(WORKING_FOLDER)
    if not os.access("/tmp", os.W_OK):
        os.environ["TMPDIR"] = WORKING_FOLDER


def _limits(box):
    try:  # resource is Unix-only
        import resource
    except ImportError:  # Windows
        return
    in_use = _address_space()
    resource.setrlimit(resource.RLIMIT_AS, (in_use + box.memory_bytes,) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (box.cpu_seconds, box.cpu_seconds + 5))
    if box.level != "user":  # in a user namespace the count would include every process of the grading user
        resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))
    if sys.platform.startswith("linux"):
        _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def _address_space():
    """Bytes of address space this process has mapped (an imported torch maps a few GB it never touches)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # no /proc (macOS): the peak resident size instead; resource is Unix-only, as _limits says
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def die_with_parent(parent_pid):
    """Have the kernel killed when `parent_pid` (its zygote) ends (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None):
    encode = (lambda s: s.encode() if s is not None else None)
    _check(_libc().mount(encode(source), encode(target), encode(fstype), flags, encode(data)), f"mount {target}")


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
