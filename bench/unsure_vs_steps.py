"""How readable the course DCGAN's digits get with more steps: the unsure share against training length.

Takes a finished run (by default the course's DCGAN, latent 16, hidden 16,
seed 2022, 5000 steps, from the runs root), extends it step by step with
`labkit.gan.extend` (each length a new run folder; on a CPU exactly the
weights a run trained straight to that length would have), and at each length
counts the digits of 1000 samples (two sample seeds) with the digit
classifier: the share it is unsure of (confidence below 0.7; 1.3% of MNIST's
real test digits) and the smallest digit's share against MNIST's.

    python bench/unsure_vs_steps.py                          # 5000, 7500, 10000, 15000 steps
    python bench/unsure_vs_steps.py --run runs/dcgan_z16_g16_d16_steps5000_seed2022 --steps 5000 10000
"""

import argparse
import time
from pathlib import Path

from labkit import analysis
from labkit.models import sample_images
from labkit.runs.folder import runs_root
from labkit.gan import extend, load_run, train, TrainConfig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="a finished run (default: the course's, trained "
                                                                "if missing)")
    parser.add_argument("--steps", type=int, nargs="+", default=[5000, 7500, 10000, 15000])
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.run is None:
        run = train(TrainConfig(), runs_root() / TrainConfig().name)
    else:
        run = load_run(args.run)
    print(f"{'steps':>6} {'sample seed':>11} {'unsure':>7} {'smallest digit share':>21} {'seconds':>8}")
    lines = ["| steps | unsure (sample seed 0) | unsure (sample seed 1) | smallest digit share |", "| --- | --- | --- | --- |"]
    for steps in sorted(args.steps):
        started = time.time()
        if steps > run.step:
            run = extend(run, steps, progress=False)
        elif steps < run.step:
            continue
        shares, lowest = [], []
        for seed in (0, 1):
            counts = analysis.count_digits(sample_images(run.generator, args.samples, seed=seed))
            expected = analysis.MNIST_TRAIN_COUNTS / analysis.MNIST_TRAIN_COUNTS.sum() * counts.counts.sum()
            shares.append(counts.unsure / counts.total)
            lowest.append(float((counts.counts / expected).min()))
            print(f"{steps:>6} {seed:>11} {shares[-1]:>6.1%} {lowest[-1]:>21.2f} {time.time() - started:>8.0f}",
                  flush=True)
        lines.append(f"| {steps} | {shares[0]:.1%} | {shares[1]:.1%} | {min(lowest):.2f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
