"""A grid of configurations x seeds in one call, resumable and summarised.

    labkit sweep --latent_dims 16 32 64 100 --hidden_dims 16 32 64 100 --seeds 5

trains every (latent, hidden, seed) run into its own folder under --out,
measures its FID, and writes
    <run>/result.json   the run's row, written when the run is done
    runs.csv            one row per run (config, seed, status, FID with its
                        backbone and N, final D_x / D_G_z1 / D_G_z2, seconds)
    summary.csv         one row per configuration: mean, std, best, count

Rerunning the same command skips finished runs (they have result.json) and
resumes unfinished ones from their checkpoints. A run that fails is recorded
with its error and the sweep goes on.

The seeds of one configuration train together as one stacked model
(labkit/together.py) where that measured faster (`stack_seeds`): on a GPU, and
for DCGANs up to hidden size 32 on a CPU. Their results equal separate runs'.

Several GPUs or machines: start one process per GPU on the same --out folder,
each with its share of the grid, e.g. on a 4-GPU machine
    for k in 0 1 2 3; do CUDA_VISIBLE_DEVICES=$k labkit sweep ... --shard $k/4 & done
(on a cluster, the same command as an array job with --shard $TASK_ID/$N).
Runs never share a folder, and runs.csv and summary.csv are rebuilt from all
result.json files after every run, so the processes need no coordination.
"""

import csv
import itertools
import json
import math
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from .together import can_train_together, resume_step, train_together
from .train import TrainConfig, resolve_device, train

RUN_COLUMNS = ("latent_dim", "hidden_dim", "seed", "status", "fid", "fid_backbone", "fid_n", "D_x", "D_G_z1",
               "D_G_z2", "seconds", "run_dir")
SUMMARY_COLUMNS = ("latent_dim", "hidden_dim", "count", "fid_mean", "fid_std", "fid_best", "fid_backbone", "fid_n")


def grid(latent_dims, hidden_dims, seeds):
    """Every (latent, hidden, seed), in a fixed order."""
    return [(z, h, s) for z in latent_dims for h in hidden_dims for s in seeds]


def parse_shard(text):
    """'K/N' -> (K, N): this process takes the K-th of N equal parts of the grid (see `shard_of`)."""
    try:
        k, n = (int(v) for v in text.split("/"))
        assert 0 <= k < n
    except (ValueError, AssertionError):
        raise ValueError(f"--shard must look like K/N with 0 <= K < N, e.g. 0/4; got {text!r}") from None
    return k, n


def shard_of(runs, shard):
    """Part K of N of `runs`, in one piece: a configuration's seeds stay together, so they can share a stack."""
    k, n = shard
    return runs[k * len(runs) // n : (k + 1) * len(runs) // n]


def _write_csv_atomic(path, columns, rows):
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def collect(out_dir):
    """Rebuild runs.csv and summary.csv from every result.json under out_dir; return (runs, summary)."""
    out_dir = Path(out_dir)
    rows = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*/result.json"))]
    rows.sort(key=lambda r: (r["latent_dim"], r["hidden_dim"], r["seed"]))
    summary = []
    for z, h in sorted({(r["latent_dim"], r["hidden_dim"]) for r in rows}):
        done = [r for r in rows if (r["latent_dim"], r["hidden_dim"]) == (z, h) and r["status"] == "done"]
        fids = np.array([r["fid"] for r in done], dtype=float)
        summary.append(dict(
            latent_dim=z, hidden_dim=h, count=len(fids),
            fid_mean=float(fids.mean()) if len(fids) else math.nan,
            fid_std=float(fids.std(ddof=1)) if len(fids) > 1 else math.nan,  # sample std, as the reports
            fid_best=float(fids.min()) if len(fids) else math.nan,
            fid_backbone=done[0]["fid_backbone"] if done else "", fid_n=done[0]["fid_n"] if done else 0))
    _write_csv_atomic(out_dir / "runs.csv", RUN_COLUMNS, rows)
    _write_csv_atomic(out_dir / "summary.csv", SUMMARY_COLUMNS, summary)
    return rows, summary


def stack_seeds(config):
    """Whether the seeds of `config` should train together (bench/seeds_together.py).

    On a GPU one small GAN leaves most of the device idle, so N seeds stacked
    should cost little more than one. On a 2-core CPU the work is the same
    either way and stacking only saves per-layer overhead: 5 seeds together
    measured 1.26-1.49x faster than one after another at hidden size 16 and
    1.03-1.08x at 32, but 0.85-0.92x at 64 (grouped convolutions' backward is
    slower there) and 0.96-1.15x for the MLP GAN, so there the sweep stacks
    only DCGANs up to hidden size 32.
    """
    if not can_train_together(config):
        return False
    if resolve_device(config.device).type == "cuda":
        return True
    return not config.use_mlp and max(config.generator_hidden_dim, config.discriminator_hidden_dim) <= 32


def measure(run, fid_count, backbone, train_seconds, window=50):
    """The runs.csv row of a trained run: its FID and D's outputs near the end."""
    from .analysis import equilibrium
    from .metrics import generator_fid

    started = time.time()
    config = run.config
    fid = generator_fid(run.generator, fid_count, backbone)
    balance = equilibrium(run.history, window)
    return dict(latent_dim=config.latent_dim, hidden_dim=config.generator_hidden_dim, seed=config.seed,
                status="done", fid=fid.value, fid_backbone=backbone, fid_n=fid_count,
                D_x=balance["D_x"], D_G_z1=balance["D_G_z1"], D_G_z2=balance["D_G_z2"],
                seconds=round(train_seconds + time.time() - started, 1), run_dir=str(run.path))


def failed(config, run_dir, err):
    return dict(latent_dim=config.latent_dim, hidden_dim=config.generator_hidden_dim, seed=config.seed,
                status=f"failed: {type(err).__name__}: {err}", run_dir=str(run_dir))


def run_one(config, run_dir, fid_count, backbone):
    """Train (or resume) one run and measure it: its runs.csv row."""
    started = time.time()
    run = train(config, run_dir, progress=False)
    return measure(run, fid_count, backbone, time.time() - started)


def run_together(configs, run_dirs, fid_count, backbone):
    """Train (or resume) runs that differ only in seed as one stack; their runs.csv rows.

    `seconds` in each row is its share of the training time plus its own FID time.
    """
    started = time.time()
    results = train_together(configs[0], [c.seed for c in configs], run_dirs, progress=False)
    share = (time.time() - started) / len(configs)
    rows = []
    for config, run_dir, result in zip(configs, run_dirs, results):
        if isinstance(result, Exception):  # this seed diverged
            rows.append(failed(config, run_dir, result))
            continue
        try:
            rows.append(measure(result, fid_count, backbone, share))
        except Exception as err:
            rows.append(failed(config, run_dir, err))
    return rows


def sweep(latent_dims, hidden_dims, seeds, out_dir="runs/sweep", base=None, fid_count=3000,
          backbone="inception", shard=(0, 1), together=None, progress=True):
    """Run the grid (hidden sets both G's and D's hidden size, as the course swept it).

    seeds:    a list of seeds, or a number N for the seeds 2022 ... 2022 + N - 1.
    together: train the seeds of each configuration together (True), one
              after another (False), or where it is faster (None, `stack_seeds`).
    Returns (runs, summary) as lists of dicts, also written to runs.csv and summary.csv.
    """
    from tqdm.auto import tqdm

    if isinstance(seeds, int):
        seeds = [2022 + i for i in range(seeds)]
    base = base or TrainConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = shard_of(grid(latent_dims, hidden_dims, seeds), shard)
    configs = [replace(base, latent_dim=z, generator_hidden_dim=h, discriminator_hidden_dim=h, seed=s)
               for z, h, s in todo]  # validates every size before any training starts
    bar = tqdm(total=len(configs), desc="sweep", unit="run", disable=not progress)

    def record(rows):
        for row in rows:
            run_dir = Path(row["run_dir"])
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "result.json").write_text(json.dumps(row, indent=1) + "\n")
            if progress and row["status"] != "done":
                bar.write(f"labkit: {run_dir.name} {row['status']}; going on")
        collect(out_dir)
        bar.update(len(rows))

    # The grid lists the seeds of a configuration one after another.
    for _, group in itertools.groupby(configs, key=lambda c: (c.latent_dim, c.generator_hidden_dim)):
        pending = []
        for config in group:
            result_file = out_dir / config.name / "result.json"
            if result_file.exists() and json.loads(result_file.read_text())["status"] == "done":
                bar.update(1)
            else:
                pending.append(config)
        stack = len(pending) > 1 and (together if together is not None else stack_seeds(pending[0]))
        # Only runs at the same step can share a stack (new ones, or ones stopped together).
        by_step = {}
        for config in pending:
            by_step.setdefault(resume_step(out_dir / config.name), []).append(config)
        batches = list(by_step.values()) if stack else [[c] for c in pending]
        for batch in batches:
            names = batch[0].name if len(batch) == 1 else \
                f"{batch[0].architecture}, seeds {', '.join(str(c.seed) for c in batch)} together"
            bar.set_postfix_str(names)
            run_dirs = [out_dir / c.name for c in batch]
            try:  # one broken run must not stop the other 79
                if len(batch) == 1:
                    rows = [run_one(batch[0], run_dirs[0], fid_count, backbone)]
                else:
                    rows = run_together(batch, run_dirs, fid_count, backbone)
            except Exception as err:
                rows = [failed(c, d, err) for c, d in zip(batch, run_dirs)]
            record(rows)
    bar.close()
    (out_dir / "sweep.json").write_text(json.dumps(dict(
        latent_dims=list(latent_dims), hidden_dims=list(hidden_dims), seeds=list(seeds), fid_count=fid_count,
        backbone=backbone, base=asdict(base)), indent=1) + "\n")
    return collect(out_dir)


def table(summary, latent_dims, hidden_dims, key="fid_mean"):
    """A latent x hidden array of one summary column (NaN where missing), for heatmaps."""
    values = {(r["latent_dim"], r["hidden_dim"]): r[key] for r in summary}
    return np.array([[values.get((z, h), math.nan) for h in hidden_dims] for z in latent_dims], dtype=float)


def format_table(summary, latent_dims, hidden_dims):
    """The students' table: mean +- std (best) per latent (rows) x hidden (columns)."""
    cells = {(r["latent_dim"], r["hidden_dim"]): r for r in summary}
    lines = ["latent \\ hidden " + "".join(f"{h:>22}" for h in hidden_dims)]
    for z in latent_dims:
        row = f"{z:<16}"
        for h in hidden_dims:
            r = cells.get((z, h))
            row += f"{'-':>22}" if not r or not r["count"] else \
                f"{r['fid_mean']:>9.1f} ± {r['fid_std']:>4.1f} ({r['fid_best']:.1f})"
        lines.append(row)
    return "\n".join(lines)
