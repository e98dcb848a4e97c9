"""N seeds of one configuration: trained together (labkit.experiments.together) vs one after another (labkit.train).

Both run the real trainers on MNIST. Each is timed per step between logging
steps after a warm-up, so set-up (loading MNIST, building models) is left
out. "one after another" is N separate `train` runs, their steps timed and
added up. Printed per hidden size:

    one run        ms per step of a single seed
    N in turn      ms per step of all N seeds, one run after another
    N together     ms per step of all N seeds in one stacked model
    speed-up       N in turn / N together   (> 1: together is faster)
    vs one run     N together / one run     (the GPU goal: < 1.5 for 5 seeds)
    sweep uses     what `labkit sweep` does here by default (labkit.experiments.sweep.stack_seeds)

    python bench/seeds_together.py                        # 5 seeds, hidden 16 32 64
    python bench/seeds_together.py --hidden 16 --steps 50 --device cpu
    python bench/seeds_together.py --mlp                  # the MLP GAN
"""

import argparse
import os
import sys
import tempfile
import time

import torch

from labkit.runs.device import describe_device, resolve_device
from labkit.experiments.sweep import stack_seeds
from labkit.experiments.together import train_together
from labkit.gan import train, TrainConfig


def steady_ms_per_step(stamps, warmup):
    """ms per step between the first logging step at or after `warmup` and the last one."""
    (s0, t0), (s1, t1) = next(st for st in stamps if st[0] >= warmup), stamps[-1]
    return (t1 - t0) / (s1 - s0) * 1000


def ms_per_step_in_turn(config, seeds, warmup):
    """Per-step times of `train` runs, one per seed, one after another: (first run's, sum over runs)."""
    times = []
    for seed in seeds:
        stamps = []
        with tempfile.TemporaryDirectory() as out:
            train(config, out, progress=False, seed=seed,
                  on_log=lambda row: stamps.append((row["step"], time.perf_counter())))
        times.append(steady_ms_per_step(stamps, warmup))
    return times[0], sum(times)


def ms_per_step_together(config, seeds, warmup):
    stamps = []
    with tempfile.TemporaryDirectory() as out:
        def on_log(seed, row):
            if seed == seeds[0]:  # all seeds log at the same step
                stamps.append((row["step"], time.perf_counter()))

        results = train_together(config, seeds, [f"{out}/{s}" for s in seeds], progress=False, on_log=on_log)
    assert all(not isinstance(r, Exception) for r in results), results
    return steady_ms_per_step(stamps, warmup)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--steps", type=int, default=50, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--mlp", action="store_true", help="the MLP GAN instead of the DCGAN")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    seeds = [2022 + i for i in range(args.seeds)]
    print(f"device: {describe_device(device)}, torch {torch.__version__}, {os.cpu_count()} cores; "
          f"{'MLP GAN' if args.mlp else 'DCGAN'}, {args.seeds} seeds, batch 64, "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'hidden':>6} {'one run':>9} {f'{args.seeds} in turn':>11} {f'{args.seeds} together':>12} "
          f"{'speed-up':>9} {'vs one run':>11} {'sweep uses':>11}   (ms per step)")
    for hidden in args.hidden if not args.mlp else [0]:
        config = TrainConfig(generator_hidden_dim=hidden or 16, discriminator_hidden_dim=hidden or 16,
                             use_mlp=args.mlp, num_training_steps=args.warmup + args.steps, logging_steps=5,
                             saving_steps=10_000_000, device=str(device))
        one, in_turn = ms_per_step_in_turn(config, seeds, args.warmup)
        together = ms_per_step_together(config, seeds, args.warmup)
        print(f"{hidden or 'mlp':>6} {one:>9.1f} {in_turn:>11.1f} {together:>12.1f} "
              f"{in_turn / together:>8.2f}x {together / one:>10.2f}x "
              f"{'together' if stack_seeds(config) else 'in turn':>11}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
