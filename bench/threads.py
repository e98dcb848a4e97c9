"""The DCGAN step rate on a busy CPU: labkit's thread choice against PyTorch's default, side by side.

For 0, 1 and 2 competing busy processes (each a Python loop that never
sleeps, as a second notebook or a browser tab can be), the course's DCGAN
step (labkit.gan.gan_step, hidden 16, batch 64, on the CPU) is timed twice in
turn: with the threads labkit chooses (labkit.runs.device.choose_threads:
the usable cores less the busy ones, at least 1) and with PyTorch's default
(one per core). Each row prints both rates and their ratio.

    python bench/threads.py                       # 0, 1, 2 busy processes, 6 s per measurement
    python bench/threads.py --busy 0 1 --seconds 3
    python bench/threads.py --work features       # MNIST-FID's features (the digit classifier), images/s
    python bench/threads.py --work inception      # Inception FID's features, images/s

The features are what FID, KID and precision/recall compute outside a training run
(labkit.metrics.features takes the same choice).

The other load on the machine counts too; the table's first line says how busy the
cores were before the bench started its own competitors.
"""

import argparse
import multiprocessing
import os
import time

import torch

from labkit.gan import GANCode, TrainConfig, build_training, gan_step, memory_format
from labkit.runs.device import TORCH_DEFAULT_THREADS, busy_cores, choose_threads, usable_cores


def spin():
    """A competing process: busy on one core until it is stopped."""
    while True:
        pass


def steps_per_second(threads, seconds, hidden=16):
    """The DCGAN step rate with `threads` PyTorch threads, over `seconds` after 3 warm-up steps."""
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    config = TrainConfig(generator_hidden_dim=hidden, discriminator_hidden_dim=hidden, device="cpu")
    code = GANCode()
    torch.manual_seed(0)
    generator, discriminator, opt_g, opt_d = build_training(config, code, device)
    real = torch.rand(config.batch_size, 1, 32, 32).contiguous(memory_format=memory_format(device)) * 2 - 1
    z = torch.randn(config.batch_size, config.latent_dim)
    for step in range(1, 4):
        gan_step(generator, discriminator, opt_g, opt_d, real, z, step, config, code)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        steps += 1
        gan_step(generator, discriminator, opt_g, opt_d, real, z, steps, config, code)
    return steps / (time.perf_counter() - start)


def features_per_second(threads, seconds, backbone="mnist"):
    """Images per second through `backbone`'s feature network with `threads` threads, after one warm-up batch."""
    from labkit.metrics import load_digit_classifier, load_inception

    torch.set_num_threads(threads)
    if backbone == "mnist":
        network, batch = load_digit_classifier(torch.device("cpu")).features, torch.rand(1000, 1, 32, 32) * 2 - 1
    else:
        inception = load_inception(torch.device("cpu"))
        network = lambda x: inception(x)[0]  # noqa: E731
        batch = torch.rand(50, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        network(batch)
        images, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            network(batch)
            images += len(batch)
    return images / (time.perf_counter() - start)


WORK = {"step": steps_per_second, "features": features_per_second,
        "inception": lambda threads, seconds: features_per_second(threads, seconds, "inception")}


def measure(busy, seconds, work=steps_per_second):
    """(labkit's choice, its rate, the default's rate) with `busy` competing processes running."""
    competitors = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
    for process in competitors:
        process.start()
    try:
        time.sleep(1.0)  # the competitors are running
        torch.set_num_threads(TORCH_DEFAULT_THREADS)
        choice = choose_threads()
        chosen = work(choice.threads, seconds)
        default = work(TORCH_DEFAULT_THREADS, seconds)
    finally:
        for process in competitors:
            process.terminate()
            process.join()
    return choice, chosen, default


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="competing busy processes")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--work", choices=sorted(WORK), default="step",
                        help="a DCGAN training step (steps/s), or a feature network's forward pass (images/s)")
    args = parser.parse_args()
    unit = "steps/s" if args.work == "step" else "images/s"
    os.environ.pop("LABKIT_THREADS", None)  # the bench measures labkit's own choice
    print(f"{usable_cores()} usable cores, {busy_cores(1.0):.1f} busy before the bench; torch {torch.__version__}, "
          f"default {TORCH_DEFAULT_THREADS} threads")
    print(f"| busy processes | labkit's choice | {unit} (labkit) | {unit} (torch default) | labkit vs default |")
    print("| --- | --- | --- | --- | --- |")
    for busy in args.busy:
        choice, chosen, default = measure(busy, args.seconds, WORK[args.work])
        print(f"| {busy} | {choice.describe()} | {chosen:.2f} | {default:.2f} | {chosen / default:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
