"""Why labkit's Inception FIDs differ from the course's: the candidates, measured one at a time.

labkit's course DCGAN (latent 16, hidden 16, 5000 steps) scores far below the
FIDs the course's students reported for the same settings. This script keeps
everything of labkit's standard measurement but one thing, for each candidate
the gap could come from, and measures what that one change does:

  subset     another 3000 real training images, and another 3000 samples
  count      1000 and 2000 images instead of 3000 (FID is biased upwards for fewer)
  split      3000 real *test* images instead of training images
  range      images passed to Inception in [-1, 1] instead of [0, 1]
  batchnorm  samples drawn with G in training mode (batch statistics) instead of eval mode
  init       G and D initialised with PyTorch's defaults instead of DCGAN's N(0, 0.02)
  scaling    the training data in [0, 1] (no Normalize(0.5, 0.5)) with G's Tanh kept

Every FID here is pytorch-fid's (its Inception weights and pool3 features).
Candidates that need new features use 1000 vs 1000 images (to keep the run
under an hour on a 2-core CPU) and are compared with labkit's standard at
1000 vs 1000 on the same images. Results go to bench/fid_gap.md; the
README's "Why labkit's FIDs differ from the course's" quotes them.

    python bench/fid_gap.py --run runs/dcgan_z16_g16_d16_steps5000_seed2022
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from labkit import metrics
from labkit.gan import GANCode
from labkit.data import load_mnist, to_unit_range
from labkit.models import sample_images
from labkit.solutions import DCGANDiscriminator, DCGANGenerator
from labkit.gan import load_run, train

OUT = Path(__file__).with_suffix(".md")


def inception(images, unit_range=True):
    """pool3 features of (N, 1, 32, 32) images: labkit's path (unit_range: [-1, 1] mapped to [0, 1] first),
    or the images passed as they are."""
    if unit_range:
        return metrics.features(images, "inception", progress=True)
    model = metrics.load_inception("cpu")
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 50):
            batch = images[start:start + 50].float().expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)
            out.append(model(batch)[0].flatten(1))
    return torch.cat(out).double().numpy()


def fid(a, b):
    return metrics.frechet_distance(*metrics.statistics(a), *metrics.statistics(b))


class Cache:
    """Features computed once and kept on disk (a rerun skips them)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, name, compute):
        path = self.folder / f"{name}.npy"
        if path.is_file():
            return np.load(path)
        started = time.time()
        value = compute()
        np.save(path, value)
        print(f"  features {name}: {len(value)} images in {time.time() - started:.0f} s", flush=True)
        return value


def reset_to_pytorch_defaults(model):
    """Undo DCGAN's N(0, 0.02) initialisation: every layer back to PyTorch's own default."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)):
            module.reset_parameters()
    return model


class DefaultInitGenerator(DCGANGenerator):
    def __init__(self, latent_dim=16, hidden_dim=16):
        super().__init__(latent_dim, hidden_dim)
        reset_to_pytorch_defaults(self)


class DefaultInitDiscriminator(DCGANDiscriminator):
    def __init__(self, hidden_dim=16):
        super().__init__(hidden_dim)
        reset_to_pytorch_defaults(self)


def train_variant(config, folder, **patches):
    """Train a variant of the course's run in its own folder (patches: module attributes to replace)."""
    import labkit.gan

    saved = {name: getattr(labkit.gan, name) for name in patches}
    try:
        for name, value in patches.items():
            setattr(labkit.gan, name, value)
        return train(config, folder, progress=False).generator
    finally:
        for name, value in saved.items():
            setattr(labkit.gan, name, value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="labkit's course DCGAN run (latent 16, hidden 16)")
    parser.add_argument("--work", type=Path, default=None, help="features and variant runs (default: beside --run)")
    args = parser.parse_args(argv)
    run = load_run(args.run)
    config = run.config
    work = args.work or args.run.parent / "fid_gap"
    cache = Cache(work / "features")
    G = run.generator
    print(f"FID gap analysis of {args.run} on {torch.get_num_threads()} CPU threads", flush=True)

    real_a = cache("real_train_seed0", lambda: inception(metrics.real_images(3000, "train", seed=0)))
    fake_a = cache("fake_seed0", lambda: inception(sample_images(G, 3000, seed=0)))
    standard = fid(real_a, fake_a)
    results = [("standard", "labkit's measurement: 3000 train vs 3000 samples, [0, 1], G in eval mode", 3000,
                standard, 0.0)]
    real_b = cache("real_train_seed1", lambda: inception(metrics.real_images(3000, "train", seed=1)))
    fake_b = cache("fake_seed1", lambda: inception(sample_images(G, 3000, seed=1)))
    for name, a, b, what in (("subset", real_b, fake_a, "another 3000 real training images"),
                             ("subset", real_a, fake_b, "another 3000 samples"),
                             ("subset", real_b, fake_b, "both other")):
        value = fid(a, b)
        results.append((name, what, 3000, value, value - standard))
    for n in (1000, 2000):
        value = fid(real_a[:n], fake_a[:n])
        results.append(("count", f"{n} vs {n} (the first {n} of each)", n, value, value - standard))
    real_test = cache("real_test_seed0", lambda: inception(metrics.real_images(3000, "test", seed=0)))
    value = fid(real_test, fake_a)
    results.append(("split", "3000 real test images instead of training images", 3000, value, value - standard))

    # Candidates measured at 1000 vs 1000, against the standard at 1000 vs 1000 on the same images.
    n = 1000
    base = fid(real_a[:n], fake_a[:n])
    real_pm = cache("real_train_seed0_pm1_n1000",
                    lambda: inception(metrics.real_images(3000, "train", seed=0)[:n], unit_range=False))
    fake_pm = cache("fake_seed0_pm1_n1000", lambda: inception(sample_images(G, n, seed=0), unit_range=False))
    value = fid(real_pm, fake_pm)
    results.append(("range", "both sets passed to Inception in [-1, 1] (not mapped to [0, 1])", n, value, value - base))

    def train_mode_samples():
        generator = G.train()
        with torch.no_grad():
            z = torch.randn(n, generator.latent_dim, generator=torch.Generator().manual_seed(0))
            images = torch.cat([generator(z[i:i + 64]) for i in range(0, n, 64)])
        generator.eval()
        return inception(images)

    value = fid(real_a[:n], cache("fake_seed0_trainmode_n1000", train_mode_samples))
    results.append(("batchnorm", "samples from G in training mode (batches of 64)", n, value, value - base))

    code = GANCode(generator=DefaultInitGenerator, discriminator=DefaultInitDiscriminator)
    default_init = train(config, work / "default_init", code=code, progress=False).generator
    value = fid(real_a[:n], cache("fake_default_init_n1000", lambda: inception(sample_images(default_init, n, seed=0))))
    results.append(("init", "G and D with PyTorch's default initialisation, trained 5000 steps", n, value, value - base))

    def unit_mnist(split, device="cpu"):
        images, labels = load_mnist(split, device=device)
        return to_unit_range(images), labels

    scaled = train_variant(config, work / "data_0_1", load_mnist=unit_mnist)
    value = fid(real_a[:n], cache("fake_data01_n1000",
                                  lambda: inception(sample_images(scaled, n, seed=0).clamp(0, 1), unit_range=False)))
    results.append(("scaling", "trained on data in [0, 1] (no Normalize), samples clamped to [0, 1]", n, value,
                    value - base))

    lines = [f"FID gap analysis of `{args.run.name}` (labkit's standard FID: {standard:.1f}).", "",
             "| candidate | what changes | images per side | FID | change |", "| --- | --- | --- | --- | --- |"]
    for name, what, count, value, delta in results:
        lines.append(f"| {name} | {what} | {count} | {value:.1f} | {delta:+.1f} |")
    lines += ["", f"Standard at 1000 vs 1000 on the same images: {base:.1f}; candidates at 1000 are compared with it.",
              f"Measured with `python bench/fid_gap.py --run {args.run}` on {torch.get_num_threads()} CPU threads."]
    OUT.write_text("\n".join(lines) + "\n")
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
