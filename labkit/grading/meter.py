"""What an exercise's time limit counts: its kernel's own CPU time, every process of it included.

A kernel's time limit is CPU seconds, not wall-clock seconds, so nothing a
classmate graded beside it runs can time it out: a classmate's 62 busy loops
slow it down, but do not add a second to its count. The count, by what the
machine allows (tried, in this order):

  * a cgroup of its own (grading as root; cgroup v1 `cpu`+`cpuacct`, or v2):
    the kernel's first process is moved in before it starts, every process it
    forks stays in, and the kernel cannot leave it. The cgroup also gives each
    kernel the same CPU weight, however many processes it runs (kernels side by
    side share the cores fairly), and caps its processes at MAX_PROCESSES;
  * else the sum over the kernel's process tree, read from /proc: a process
    that ends is counted in its parent's children's time, and an orphan is
    adopted by the kernel's own PID 1 (bubblewrap's PID namespace), so nothing
    leaves the tree (a child Linux would reap unseen, its parent ignoring
    SIGCHLD, stays a zombie instead: serve.py's seccomp filter). On macOS (a process box): the kernel process's own time.

The wall clock stops only a kernel that sleeps rather than computes (kernel.py's
Clock), and any kernel after WALL_FACTOR times its limit: the backstop.
"""

import os
import time
from pathlib import Path

CGROUP_V1 = Path("/sys/fs/cgroup")
WALL_FACTOR = 10  # whatever a kernel does, it is stopped after this many times its limit of wall-clock time
MAX_PROCESSES = 64  # per kernel, where a pids cgroup is available
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_count = [0]


class Meter:
    """The CPU seconds of one kernel (module docstring). `wrap(argv)` makes the command start inside the
    kernel's cgroup; `watch(pid)` names the kernel's first process; `seconds()` is the count so far."""

    def __init__(self):
        _count[0] += 1
        self.name = f"labkit-{os.getpid()}-{_count[0]}"
        self.pid = None
        self.folders = _make_cgroups(self.name)  # {"cpu": path, "cpuacct": path, "pids": path} or {"v2": path}

    @property
    def kind(self):
        return "cgroup" if self.folders else "process tree"

    def wrap(self, argv):
        """argv started inside this kernel's cgroups (a shell line that joins them, then execs argv)."""
        if not self.folders:
            return argv
        procs = " ".join(str(Path(f) / "cgroup.procs") for f in dict.fromkeys(self.folders.values()))
        return ["/bin/sh", "-c", 'for f in $0; do echo $$ > "$f" || exit 97; done; exec "$@"', procs, *argv]

    def watch(self, pid):
        self.pid = pid

    def seconds(self):
        """CPU seconds used by every process of the kernel so far."""
        if "v2" in self.folders:
            return _v2_usage(self.folders["v2"])
        if "cpuacct" in self.folders:
            return int(_read(Path(self.folders["cpuacct"]) / "cpuacct.usage") or 0) / 1e9
        return tree_seconds(self.pid) if self.pid else 0.0

    def close(self, wait=5.0):
        """Remove the cgroups once their processes are gone (the caller killed them)."""
        deadline = time.monotonic() + wait
        for folder in dict.fromkeys(self.folders.values()):
            while True:
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # still busy: its processes are dying
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
        self.folders = {}


def sweep():
    """Remove the empty cgroups left by grading processes that are gone (one killed outright leaves its own)."""
    for parent in [CGROUP_V1, *(CGROUP_V1 / c for c in ("cpu", "cpuacct", "pids"))]:
        for folder in parent.glob("labkit-*-*") if parent.is_dir() else ():
            pid = folder.name.split("-")[1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                try:
                    os.rmdir(folder)
                except OSError:
                    pass


def _make_cgroups(name):
    """{controller: folder} of new cgroups for one kernel, or {} if this process may not make them."""
    if not Path("/sys/fs/cgroup").is_dir() or os.geteuid() != 0:
        return {}
    if (CGROUP_V1 / "cgroup.controllers").exists():  # cgroup v2, unified
        return _make({"v2": CGROUP_V1 / name}, {"pids.max": MAX_PROCESSES})
    folders = {c: CGROUP_V1 / c / name for c in ("cpu", "cpuacct", "pids") if (CGROUP_V1 / c / "tasks").exists()}
    if "cpuacct" not in folders:
        return {}
    return _make(folders, {"pids.max": MAX_PROCESSES})


def _make(folders, settings):
    made = {}
    try:
        for controller, folder in folders.items():
            real = folder.resolve()
            if real not in {Path(f).resolve() for f in made.values()}:
                real.mkdir()
            made[controller] = str(real)
    except OSError:
        for folder in dict.fromkeys(made.values()):
            os.rmdir(folder)
        return {}
    for folder in dict.fromkeys(made.values()):
        for setting, value in settings.items():
            if (Path(folder) / setting).exists():
                (Path(folder) / setting).write_text(f"{value}\n")
    return made


def _v2_usage(folder):
    for line in (_read(Path(folder) / "cpu.stat") or "").splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1]) / 1e6
    return 0.0


def tree_seconds(root):
    """CPU seconds of process `root` and all its descendants, alive or ended (Linux /proc; elsewhere the
    process's own, if it is this process's child)."""
    table = {}
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if entry.name.isdigit():
            stat = _read(Path(entry.path) / "stat")
            if stat:
                fields = stat.rsplit(")", 1)[1].split()
                table[int(entry.name)] = (int(fields[1]), sum(int(n) for n in fields[11:15]))  # ppid, times
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += table.get(pid, (0, 0))[1]
        todo += children.get(pid, [])
    return total / TICKS


def _read(path):
    try:
        return Path(path).read_text()
    except OSError:
        return None
