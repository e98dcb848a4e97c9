"""The device a run trains on, said in words; the CPU threads it uses; the caller's random state kept safe.

Threads. PyTorch uses one thread per core for each operation, and its threads
wait for each other at every one. When another process keeps a core busy (a
second notebook, a browser, an update), every operation waits for the thread
that shares that core: a DCGAN step on a 2-core machine with one busy process
ran 10x slower with 2 threads than with 1 (bench/threads.py, docs/speed.md).
So a run on a CPU starts with `choose_threads`: the cores this process may use,
less those other processes keep busy now, at least 1. The loop
(labkit/runs/training.py) asks again when its step rate drops by half, and
puts PyTorch's setting back when it ends. The features FID, KID and precision/recall
compare take the same choice for their duration (`threads_for_machine` in
labkit.metrics.features), though they suffer far less: beside one busy process Inception
ran 1.09x faster with it, the digit classifier 1.02x (bench/threads.py --work).

A count set by hand wins: torch.set_num_threads(N) after importing labkit, or
LABKIT_THREADS=N. Sums split over threads round differently, so a run resumed
with another count ends close to, not bit for bit at, the uninterrupted run's
weights; fix the count for bit-exact runs.
"""

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import torch

TORCH_DEFAULT_THREADS = torch.get_num_threads()  # PyTorch's own choice, read before labkit changes it



def resolve_device(name="auto"):
    """A torch.device from "auto" (CUDA if present), "cpu", "cuda" or "cuda:N", with a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU number), got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for, but PyTorch sees no CUDA GPU; use device 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} does not exist: PyTorch sees {torch.cuda.device_count()} GPU(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def describe_device(device, threads=None):
    """The device in words: "cuda (NVIDIA H100 ...)", or "cpu (1 thread: 2 cores, 1 busy)" with a ThreadChoice."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if threads is None:
        return f"cpu ({plural(torch.get_num_threads(), 'thread')})"
    return f"cpu ({threads.describe()})"


def plural(count, noun):
    return f"{count} {noun}" + ("" if count == 1 else "s")


@dataclass
class ThreadChoice:
    """How many threads PyTorch uses on the CPU, and why."""

    threads: int
    cores: int
    busy: Optional[float]  # cores other processes kept busy when measured; None: not measured (set by hand)
    why: str = ""  # for a count set by hand: by whom

    def describe(self):
        if self.busy is None:
            return f"{plural(self.threads, 'thread')}, {self.why}"
        busy = round(self.busy)
        return f"{plural(self.threads, 'thread')}: {plural(self.cores, 'core')}, {busy or 'none'} busy"


def usable_cores():
    """The cores this process may run on (its CPU affinity; a container's or taskset's limit counts)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def busy_cores(seconds=0.25):
    """How many cores other processes keep busy now, measured over `seconds` while this process waits.

    Linux: the whole machine's busy time (/proc/stat) less this process's own, over
    the interval. Elsewhere: the 1-minute load average (which lags a minute behind).
    """
    try:
        before, own_before, start = _machine_busy_seconds(), _own_seconds(), time.monotonic()
        time.sleep(seconds)
        busy, own = _machine_busy_seconds() - before, _own_seconds() - own_before
        return max(0.0, (busy - own) / (time.monotonic() - start))
    except OSError:
        return max(0.0, os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0


def _machine_busy_seconds():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds():
    times = os.times()
    return times.user + times.system


def threads_for(cores, busy):
    """The thread count for `cores` usable cores of which `busy` are busy: one per free core, at least 1."""
    return max(1, min(cores, cores - round(busy)))


def choose_threads():
    """Set PyTorch's thread count for the machine as it is now (see the module docstring); a ThreadChoice.

    A count set by hand (torch.set_num_threads, LABKIT_THREADS) is kept.
    """
    cores, current = usable_cores(), torch.get_num_threads()
    if current != TORCH_DEFAULT_THREADS:
        return ThreadChoice(current, cores, None, "as set with torch.set_num_threads")
    pinned = os.environ.get("LABKIT_THREADS", "").strip()
    if pinned:
        if not pinned.isdigit() or int(pinned) < 1:
            raise ValueError(f"LABKIT_THREADS must be a whole number of threads, at least 1; got {pinned!r}")
        torch.set_num_threads(int(pinned))
        return ThreadChoice(int(pinned), cores, None, "as set with LABKIT_THREADS")
    busy = busy_cores()
    choice = ThreadChoice(threads_for(cores, busy), cores, busy)
    torch.set_num_threads(choice.threads)
    return choice


def forked_rng(device):
    """A context that restores the caller's global RNG states (CPU, and `device` if CUDA) on exit."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def recheck_threads(choice):
    """Measure the load again and set the count it calls for, where labkit chose `choice`; the new ThreadChoice."""
    if choice is None or choice.busy is None:
        return choice  # a GPU run, or a count set by hand
    busy = busy_cores()
    again = ThreadChoice(threads_for(choice.cores, busy), choice.cores, busy)
    torch.set_num_threads(again.threads)
    return again


@contextmanager
def threads_for_machine(device):
    """Within the block, PyTorch's CPU threads as `choose_threads` sets them; yields the ThreadChoice
    (None for a GPU). PyTorch's count is put back afterwards."""
    before = torch.get_num_threads()
    try:
        yield choose_threads() if device.type == "cpu" else None
    finally:
        torch.set_num_threads(before)
