"""How long the whole lab takes: every notebook, Run All in order, from an empty runs folder.

Runs the nine notebooks headless (nbclient, one fresh kernel each) in one
profile, with a new empty runs folder and cache, times each notebook, and
writes

    labkit/assets/lab_time.csv   profile, notebook, minutes, machine, ms_per_step (each notebook's banner
                                 quotes it, scaled by the step time it measures then)
    bench/lab_time_<profile>.md  the same as a markdown table (the README shows it)

It then checks the quality gate of the profile's course DCGAN (latent 16,
hidden 16, seed 2022, labkit's code, trained by the notebooks): the share of
1000 samples the digit classifier is unsure of, and the smallest digit's
share against MNIST's.

    python bench/lab_time.py --profile cpu      # about 45 min on a 2-core CPU
    python bench/lab_time.py --profile smoke    # about 4 min
    python bench/lab_time.py --profile cpu --busy 1   # beside one busy loop (a laptop with a browser,
                                                      # an update): bench/lab_time_cpu_busy1.md only; the
                                                      # banners keep quoting the idle measurement
"""

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "labkit" / "assets" / "lab_time.csv"


def machine():
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"a {os.cpu_count()}-core CPU ({name})"


def run_notebook(path, env):
    """Execute one notebook in a fresh kernel (in a subprocess, with `env`); its wall-clock seconds."""
    code = ("import sys, nbformat\nfrom nbclient import NotebookClient\n"
            "nb = nbformat.read(sys.argv[1], as_version=4)\n"
            "NotebookClient(nb, timeout=None, kernel_name='python3', "
            "resources={'metadata': {'path': sys.argv[2]}}).execute()\n")
    started = time.time()
    subprocess.run([sys.executable, "-c", code, str(path), str(path.parent)], env=env, check=True)
    return time.time() - started


def quality_gate(runs):
    """The course DCGAN's unsure share and smallest digit share on 1000 samples."""
    from labkit import analysis
    from labkit.models import sample_images
    from labkit.gan import load_run

    run = load_run(runs / "dcgan_z16_g16_d16_steps5000_seed2022")
    counts = analysis.count_digits(sample_images(run.generator, 1000, seed=0))
    expected = analysis.MNIST_TRAIN_COUNTS / analysis.MNIST_TRAIN_COUNTS.sum() * counts.counts.sum()
    return counts, counts.unsure / counts.total, float((counts.counts / expected).min())



def write_table(args, rows, total, where, beside):
    """bench/lab_time_<profile>[_busy<N>].md: the minutes of each notebook and of all nine."""
    command = f"python bench/lab_time.py --profile {args.profile}" + (f" --busy {args.busy}" if args.busy else "")
    table = [f"| notebook | minutes (profile {args.profile}{beside}) |", "| --- | --- |"]
    table += [f"| {r['notebook']} | {r['minutes']:.1f} |" for r in rows]
    table += [f"| **all nine** | **{total:.1f}** |", "", f"Measured on {where}{beside}"
              + (" (nothing else running)" if args.busy else "") + f" with `{command}`."]
    name = f"lab_time_{args.profile}" + (f"_busy{args.busy}" if args.busy else "") + ".md"
    (ROOT / "bench" / name).write_text("\n".join(table) + "\n")

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=["default", "cpu", "smoke"])
    parser.add_argument("--only", nargs="+", default=None, help="notebook numbers, e.g. 01 02 (default: all)")
    parser.add_argument("--busy", type=int, default=0,
                        help="run this many competing busy loops (one core each) for the whole measurement")
    args = parser.parse_args(argv)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        measure(args)
    finally:
        for process in busy:
            process.kill()


def measure(args):
    """Run the notebooks, print and write their minutes, then check the quality gate."""
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [p for p in notebooks if p.name[:2] in args.only]
    work = Path(tempfile.mkdtemp(prefix="labkit-lab-time-"))
    env = dict(os.environ, LABKIT_PROFILE=args.profile, LABKIT_RUNS=str(work / "runs"),
               LABKIT_CACHE=str(work / "cache"), MPLBACKEND="Agg")
    where = machine()
    from labkit import lab  # the step the banner times, on this machine as it is now: the banner scales by it
    step_ms = round(1000 * sorted(lab.seconds_per_step(16) for _ in range(5))[2], 1)
    beside = f", beside {args.busy} busy loop{'s' * (args.busy > 1)}" if args.busy else ""
    print(f"lab time, profile {args.profile}, on {where}{beside} ({step_ms} ms per step); runs in {work / 'runs'}",
          flush=True)
    rows = []
    for path in notebooks:
        seconds = run_notebook(path, env)
        rows.append(dict(profile=args.profile, notebook=path.stem, minutes=round(seconds / 60, 1), machine=where,
                         ms_per_step=step_ms))
        print(f"{path.stem:<28} {seconds / 60:6.1f} min", flush=True)
    total = sum(r["minutes"] for r in rows)
    print(f"{'total':<28} {total:6.1f} min")

    if not args.only and not args.busy:  # the banners quote the idle machine's minutes
        old = []
        if CSV.is_file():
            with open(CSV, newline="") as f:
                old = [r for r in csv.DictReader(f) if r["profile"] != args.profile]
        with open(CSV, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["profile", "notebook", "minutes", "machine", "ms_per_step"])
            writer.writeheader()
            writer.writerows(old + rows)
    if not args.only:
        write_table(args, rows, total, where, beside)

    if args.profile != "smoke" and (work / "runs" / "dcgan_z16_g16_d16_steps5000_seed2022").is_dir():
        os.environ.update(LABKIT_RUNS=str(work / "runs"), LABKIT_CACHE=str(work / "cache"))
        counts, unsure, lowest = quality_gate(work / "runs")
        print(f"quality gate, course DCGAN z16 h16 seed 2022, 1000 samples: {counts}")
        print(f"  unsure {unsure:.1%} (gate: at most 15%); smallest digit share {lowest:.2f} of its expected share "
              f"(gate: at least 0.33)")


if __name__ == "__main__":
    main()
