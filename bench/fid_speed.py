"""Inception FID features: images per second, default layout vs channels_last.

labkit runs pytorch-fid's InceptionV3 in channels_last on a CPU. This times
both layouts side by side on the same real MNIST digits, checks that they
give the same features, and prints the ratio.

    python bench/fid_speed.py --images 100
"""

import argparse
import time

import torch

from labkit.data import load_mnist, to_unit_range
from labkit.metrics import load_inception


def images_per_second(model, batch, memory_format, repeats):
    x = batch.contiguous(memory_format=memory_format)
    model.to(memory_format=memory_format)
    with torch.no_grad():
        model(x[:2])  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            out = model(x)[0].flatten(1)
    return repeats * len(x) / (time.perf_counter() - start), out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100, help="batch size")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_inception(device)
    batch = to_unit_range(load_mnist("test")[0][: args.images]).expand(-1, 3, -1, -1).to(device)
    base, f_base = images_per_second(model, batch, torch.contiguous_format, args.repeats)
    fast, f_fast = images_per_second(model, batch, torch.channels_last, args.repeats)
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.images} x {args.repeats}")
    print(f"default layout: {base:.1f} images/s; channels_last: {fast:.1f} images/s; ratio {fast / base:.2f}x; "
          f"max feature difference {(f_base - f_fast).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
