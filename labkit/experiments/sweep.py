"""A grid of configurations x seeds in one call, resumable and summarised.

    labkit sweep --latent_dims 16 32 64 100 --hidden_dims 16 32 64 100 --seeds 5

trains every (latent, hidden, seed) run into its own run folder under the
runs root (the same folders `labkit train` and the notebooks use, so a run
trained elsewhere is reused), measures its FID, and writes
    <run>/fid_<backbone>_<count>.json   the run's table row for that FID protocol
    <tables>/runs.csv      one row per run (config, seed, status, FID with its
                           backbone and N, final D_x / D_G_z1 / D_G_z2, seconds)
    <tables>/summary.csv   one row per configuration: mean, std, best, count
where <tables> is --out (default: <runs root>/sweeps/<the sweep's name>).

Rerunning the same command skips finished runs (they have their result
file) and resumes unfinished ones from their checkpoints. A run that fails
is recorded with its error, the sweep goes on, and a rerun retries it.

The seeds of one configuration train together as one stacked model
(labkit/experiments/together.py) where that measured faster (`stack_seeds`).

Several GPUs or machines: start one process per GPU with the same command,
each with its share of the grid, e.g. on a 4-GPU machine
    for k in 0 1 2 3; do CUDA_VISIBLE_DEVICES=$k labkit sweep ... --shard $k/4 & done
(on a cluster, the same command as an array job with --shard $TASK_ID/$N).
Runs never share a folder (a second process on the same run is refused by
its lock), and the tables are rebuilt from all result files after every
run, so the processes need no other coordination.
"""

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from tqdm import tqdm  # the text bar: a notebook saved and reopened shows its last state, not a missing widget

from ..analysis import equilibrium
from ..data import require_mnist
from ..gan import train
from ..metrics import BACKBONES, generator_fid
from ..runs.atomic import csv_text, read_json, write_json
from ..runs.config import TrainConfig, check_seed
from ..runs.device import resolve_device
from ..runs.folder import RunInUseError, RunLock, check_folder_path, check_writable, runs_root
from ..runs.targets import output_folder, write_made
from .together import resume_step, train_together, why_not_together

RUN_COLUMNS = ("latent_dim", "hidden_dim", "seed", "status", "fid", "fid_backbone", "fid_n", "D_x", "D_G_z1",
               "D_G_z2", "seconds", "run_dir")
SUMMARY_COLUMNS = ("latent_dim", "hidden_dim", "count", "fid_mean", "fid_std", "fid_best", "fid_backbone", "fid_n")
FIRST_SEED = 2022  # the course's seed; --seeds N means 2022 ... 2022 + N - 1
TABLES = ("runs.csv", "summary.csv", "sweep.json")  # what a sweep writes in its tables folder


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


def seed_list(seeds):
    """A list of seeds, or a number N for the seeds 2022 ... 2022 + N - 1."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"--seeds must be at least 1 (the number of seeds per configuration), got {seeds}")
        return [FIRST_SEED + i for i in range(seeds)]
    seeds = list(seeds)
    if not seeds:
        raise ValueError("a sweep needs at least one seed")
    for seed in seeds:
        check_seed(seed)
    return seeds


def result_file(run_dir, backbone, fid_count):
    return Path(run_dir) / f"fid_{backbone}_{fid_count}.json"


def read_result(path):
    """A run's sweep result file as a dict; one line naming the file if it is not one."""
    row = read_json(path, "a sweep result")
    try:
        assert isinstance(row, dict) and isinstance(row["status"], str)
        assert all(isinstance(row[k], int) and not isinstance(row[k], bool) for k in ("latent_dim", "hidden_dim"))
        assert row["status"] != "done" or isinstance(row["fid"], (int, float))
    except (AssertionError, KeyError):
        raise ValueError(f"{path} is not a labkit sweep result (a JSON object with status, latent_dim, hidden_dim "
                         f"and fid); delete it to measure that run again") from None
    return row


def is_table(path):
    """Whether a file in a tables folder is one a sweep wrote, by its contents (for folders written before
    labkit listed its files in a manifest, labkit/runs/targets.py)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if path.name == "sweep.json":
            value = json.loads(data)
            return isinstance(value, dict) and "latent_dims" in value
        return data.split(b"\n", 1)[0].decode().strip() in (",".join(RUN_COLUMNS), ",".join(SUMMARY_COLUMNS))
    except (OSError, ValueError):
        return False


def sweep_name(base, latent_dims, hidden_dims, seeds, backbone, fid_count):
    """A name for a sweep's tables folder that says what it swept and how it measured."""
    contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    seed_part = f"seeds{seeds[0]}-{seeds[-1]}" if contiguous and len(seeds) > 1 else \
        "seeds" + "-".join(map(str, seeds))
    rest = TrainConfig(**{**asdict(base), "seed": FIRST_SEED}).name_parts()[3:]  # non-default settings
    return "_".join([("mlp" if base.use_mlp else "dcgan"), "z" + "-".join(map(str, latent_dims)),
                     "h" + "-".join(map(str, hidden_dims)), f"steps{base.num_training_steps}", seed_part, *rest,
                     f"{backbone}{fid_count}"])


def collect(configs, runs_dir, out_dir, backbone, fid_count):
    """Rebuild runs.csv and summary.csv from the result files of `configs`' runs; return (runs, summary)."""
    rows = []
    for config in configs:
        path = result_file(Path(runs_dir) / config.name, backbone, fid_count)
        if path.is_file():
            rows.append(read_result(path))
    summary = []
    for (z, h), group in itertools.groupby(rows, key=lambda r: (r["latent_dim"], r["hidden_dim"])):
        done = [r for r in group if r["status"] == "done"]
        fids = np.array([r["fid"] for r in done], dtype=float)
        summary.append(dict(
            latent_dim=z, hidden_dim=h, count=len(fids),
            fid_mean=float(fids.mean()) if len(fids) else math.nan,
            fid_std=float(fids.std(ddof=1)) if len(fids) > 1 else math.nan,  # sample std, as the reports
            fid_best=float(fids.min()) if len(fids) else math.nan,
            fid_backbone=backbone, fid_n=fid_count))
    write_made(out_dir, "runs.csv", csv_text(RUN_COLUMNS, rows).encode())
    write_made(out_dir, "summary.csv", csv_text(SUMMARY_COLUMNS, summary).encode())
    return rows, summary


def stack_seeds(config):
    """Whether the seeds of `config` should train together (bench/seeds_together.py).

    On a GPU one small GAN leaves most of the device idle, so N seeds stacked
    should cost little more than one (GPU: not measured). On the 2-core CPU
    labkit is developed on the work is the same either way and stacking only
    saves per-layer overhead: 5 seeds together measured 1.26-1.49x faster
    than one after another at hidden size 16 and 1.03-1.08x at 32, but
    0.85-0.92x at 64 (grouped convolutions' backward is slower there) and
    0.96-1.15x for the MLP GAN, so there the sweep stacks only DCGANs up to
    hidden size 32.
    """
    if why_not_together(config):
        return False
    if resolve_device(config.device).type == "cuda":
        return True
    return not config.use_mlp and max(config.generator_hidden_dim, config.discriminator_hidden_dim) <= 32


def measure(run, fid_count, backbone, train_seconds, window=50, progress=False):
    """The runs.csv row of a trained run: its FID and D's outputs near the end."""
    started = time.time()
    config = run.config
    fid = generator_fid(run.generator, fid_count, backbone, pipeline=config.pipeline, progress=progress)
    balance = equilibrium(run.history, window)
    return dict(latent_dim=config.latent_dim, hidden_dim=config.generator_hidden_dim, seed=config.seed,
                status="done", fid=fid.value, fid_backbone=backbone, fid_n=fid_count,
                D_x=balance["D_x"], D_G_z1=balance["D_G_z1"], D_G_z2=balance["D_G_z2"],
                seconds=round(train_seconds + time.time() - started, 1), run_dir=str(run.path))


def failed(config, run_dir, err):
    return dict(latent_dim=config.latent_dim, hidden_dim=config.generator_hidden_dim, seed=config.seed,
                status=f"failed: {type(err).__name__}: {err}", run_dir=str(run_dir))


def run_one(config, run_dir, fid_count, backbone, progress=False):
    """Train (or resume) one run and measure it: its runs.csv row."""
    started = time.time()
    run = train(config, run_dir, progress=progress)
    return measure(run, fid_count, backbone, time.time() - started, progress=progress)


def run_together(configs, run_dirs, fid_count, backbone, progress=False):
    """Train (or resume) runs that differ only in seed as one stack; their runs.csv rows.

    `seconds` in each row is its share of the training time plus its own FID time.
    """
    started = time.time()
    results = train_together(configs[0], [c.seed for c in configs], run_dirs, progress=progress)
    share = (time.time() - started) / len(configs)
    rows = []
    for config, run_dir, result in zip(configs, run_dirs, results):
        if isinstance(result, Exception):  # this seed diverged
            rows.append(failed(config, run_dir, result))
            continue
        try:
            rows.append(measure(result, fid_count, backbone, share, progress=progress))
        except Exception as err:
            rows.append(failed(config, run_dir, err))
    return rows


def check_sweep(latent_dims, hidden_dims, fid_count, backbone, base):
    """Refuse a sweep that could not give a table, before anything is trained or written."""
    if not latent_dims or not hidden_dims:
        raise ValueError("a sweep needs at least one latent size and one hidden size")
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
    if isinstance(fid_count, bool) or not isinstance(fid_count, int) or not 2 <= fid_count <= 60_000:
        raise ValueError(f"--fid_count must be from 2 to 60,000 (images per side of the FID), got {fid_count!r}")
    if base.use_mlp and len(hidden_dims) > 1:
        raise ValueError("the MLP GAN has fixed layer widths: give a single --hidden_dims value")


def sweep(latent_dims, hidden_dims, seeds, runs_dir=None, base=None, fid_count=3000, backbone="inception",
          shard=(0, 1), together=None, progress=True, out_dir=None):
    """Run the grid (hidden sets both G's and D's hidden size, as the course swept it).

    seeds:    a list of seeds, or a number N for the seeds 2022 ... 2022 + N - 1.
    runs_dir: where the run folders are (default: runs_root(), shared with the notebooks).
    out_dir:  where runs.csv and summary.csv go (default: runs_dir/sweeps/<sweep_name>).
    together: train the seeds of each configuration together (True), one
              after another (False), or where it is faster (None, `stack_seeds`).
    Returns (runs, summary) as lists of dicts, also written to runs.csv and summary.csv.

    Before anything is trained or written: every setting is checked, and the tables
    folder may hold only tables this sweep wrote (targets.output_folder: it never
    replaces a file it did not make). One process at a time runs a shard of a sweep
    (a lock in the tables folder): a second, identical command is refused with the
    first one's process id.
    """
    seeds = seed_list(seeds)
    base = base or TrainConfig()
    check_sweep(latent_dims, hidden_dims, fid_count, backbone, base)
    runs_dir = Path(runs_dir) if runs_dir is not None else runs_root()
    configs = [replace(base, latent_dim=z, generator_hidden_dim=h, discriminator_hidden_dim=h, seed=s)
               for z, h, s in grid(latent_dims, hidden_dims, seeds)]  # validates every size before any training
    out_dir = Path(out_dir) if out_dir is not None else \
        runs_dir / "sweeps" / sweep_name(base, latent_dims, hidden_dims, seeds, backbone, fid_count)
    check_folder_path(runs_dir, "the sweep")
    output_folder(out_dir, TABLES, overwrite=True, ours=is_table)  # the tables are rebuilt, and nothing else
    for folder in (runs_dir, out_dir):
        check_writable(folder)
    plan = Plan(configs, runs_dir, out_dir, backbone, fid_count)
    todo = shard_of(configs, shard)
    if not all(plan.finished(c) for c in todo):
        require_mnist()  # offline without MNIST: one clear error now, not every run marked failed
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir, f".sweep-{shard[0]}-of-{shard[1]}.lock", f"is being swept (shard {shard[0]}/{shard[1]})"):
        plan.train(todo, together, progress)
        settings = dict(latent_dims=list(latent_dims), hidden_dims=list(hidden_dims), seeds=seeds,
                        fid_count=fid_count, backbone=backbone, base=asdict(base), runs_dir=str(runs_dir))
        write_made(out_dir, "sweep.json", (json.dumps(settings, indent=2) + "\n").encode())
        return plan.collect()


@dataclass
class Plan:
    """A sweep's grid and where it goes: trains its runs, records their results, rebuilds its tables."""

    configs: list
    runs_dir: Path
    out_dir: Path
    backbone: str
    fid_count: int

    def result(self, config):
        return result_file(self.runs_dir / config.name, self.backbone, self.fid_count)

    def finished(self, config):
        path = self.result(config)
        return path.is_file() and read_result(path)["status"] == "done"

    def collect(self):
        return collect(self.configs, self.runs_dir, self.out_dir, self.backbone, self.fid_count)

    def train(self, todo, together, progress):
        """Train and measure the runs `todo` not yet finished, a configuration's seeds at a time."""
        bar = tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress)
        say = bar.write if progress else (lambda text: None)
        try:  # the grid lists the seeds of a configuration one after another
            for _, group in itertools.groupby(todo, key=lambda c: (c.latent_dim, c.generator_hidden_dim)):
                group = list(group)
                pending = [c for c in group if not self.finished(c)]
                bar.update(len(group) - len(pending))
                for batch in self.batches(pending, together, say):
                    bar.set_postfix_str(batch[0].name if len(batch) == 1 else
                                        f"{batch[0].architecture}, seeds {', '.join(str(c.seed) for c in batch)} "
                                        f"together")
                    self.record(self.train_batch(batch, progress, say), say)
                    bar.update(len(batch))
        finally:
            bar.close()

    def batches(self, pending, together, say):
        """The pending seeds of one configuration in groups to train at once (one run each, or stacks)."""
        refused = why_not_together(pending[0]) if pending else None
        if together and refused:
            say(f"labkit: training {pending[0].architecture}'s seeds one after another: {refused}")
        if not (len(pending) > 1 and refused is None and
                (together if together is not None else stack_seeds(pending[0]))):
            return [[c] for c in pending]
        by_step = {}  # only runs at the same step can share a stack (new ones, or ones stopped together)
        for config in pending:
            by_step.setdefault(resume_step(self.runs_dir / config.name), []).append(config)
        unreadable = [[c] for c in by_step.pop(None, [])]  # alone: training each says what is wrong with it
        return list(by_step.values()) + unreadable

    def train_batch(self, batch, progress, say):
        """Train and measure one run, or one stack of seeds: their rows (none if another process has them)."""
        run_dirs = [self.runs_dir / c.name for c in batch]
        try:  # one broken run must not stop the other 79
            if len(batch) == 1:
                return [run_one(batch[0], run_dirs[0], self.fid_count, self.backbone, progress)]
            return run_together(batch, run_dirs, self.fid_count, self.backbone, progress)
        except RunInUseError as err:  # another process trains it: not a failure of the run
            say(f"labkit: {err}; skipping it here")
            return []
        except Exception as err:
            return [failed(c, d, err) for c, d in zip(batch, run_dirs)]

    def record(self, rows, say):
        """Write each row to its run's result file, then rebuild the tables."""
        for row in rows:
            run_dir = Path(row["run_dir"])
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(result_file(run_dir, self.backbone, self.fid_count), row)
            if row["status"] != "done":
                say(f"labkit: {run_dir.name} {row['status']}; going on")
        if rows:
            self.collect()


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
