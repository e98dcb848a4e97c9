"""Can the course DCGAN draw readable digits at the course's 5000 steps? Candidates, side by side.

labkit's course DCGAN (latent 16, hidden 16, seed 2022, 5000 steps, batch 64,
Adam 2e-4 / 0.5) draws digits the classifier is unsure of (confidence below
0.7) in about a fifth of its samples; labkit's goal was at most 15%. This script
measures, in one run, what each change that leaves the course's *training*
alone does to that share, beside labkit's standard sampling:

  standard   labkit's run, G in eval mode (BatchNorm's running statistics)
  batchnorm  the same G in training mode (each batch of 64 normalised by its own statistics)
  ema        an exponential moving average of G's weights and BatchNorm statistics over
             training (torch.optim.swa_utils.AveragedModel, decay 0.99 and 0.999); D and G
             train exactly as before, only the sampled weights are the average
  init       G and D initialised with PyTorch's defaults instead of DCGAN's N(0, 0.02)
             (the course's code does not say which it used), trained 5000 steps
  course     the course's own loop (bench/train_speed.py's baseline: a shuffling DataLoader,
             per-sample transforms, Sigmoid into nn.BCELoss), same networks and seed, 5000
             steps: does labkit's faster trainer draw worse digits than the course's code?
  threshold  the standard samples, counted at confidences 0.5 and 0.6 instead of 0.7

Each share is over 1000 samples, for two sample seeds, with the smallest
digit's share of its expected count (the gate's other half: at least 1/3).
The loop that tracks the averages is labkit's (build_models, BatchSampler,
gan_step, seeded as `labkit.gan.train` seeds them); the script checks that its
final G is bit-identical to `train`'s run before it reports anything.
`--grid PNG` also saves the first 100 standard samples with the classifier's
verdicts, to compare its "unsure" with your own eyes. Longer training is
bench/unsure_vs_steps.py. Results go to bench/unsure_gap.md.

    python bench/unsure_gap.py                    # 13 minutes on a 2-core CPU once labkit's runs are trained
    python bench/unsure_gap.py --grid /tmp/first100.png
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from labkit import analysis
from labkit.experiments.together import LABKIT_GAN
from labkit.gan import GANCode
from labkit.data import BatchSampler, load_mnist
from labkit.models import sample_images
from labkit.runs.folder import runs_root
from labkit.gan import gan_step, needs_losses
from labkit.gan import build_models, train, TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from fid_gap import DefaultInitDiscriminator, DefaultInitGenerator  # noqa: E402  (the same init as fid_gap)
from train_speed import course_loop  # noqa: E402  (the course's loop, as train_speed times it)

OUT = Path(__file__).with_suffix(".md")
DECAYS = (0.99, 0.999)
SAMPLE_SEEDS = (0, 1)


def readability(images, threshold=0.7):
    """(unsure share, smallest digit's share of its expected count) of `images`."""
    counts = analysis.count_digits(images, threshold)
    expected = analysis.MNIST_TRAIN_COUNTS / analysis.MNIST_TRAIN_COUNTS.sum() * max(counts.counts.sum(), 1)
    return counts.unsure / counts.total, float((counts.counts / expected).min())


def train_mode_samples(generator, count, seed, batch_size=64):
    """`count` samples with G's BatchNorm in training mode (batch statistics), G left in eval mode."""
    z = torch.randn(count, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    generator = copy.deepcopy(generator).train()  # a copy: training mode would update the running statistics
    with torch.no_grad():
        return torch.cat([generator(z[i:i + batch_size]) for i in range(0, count, batch_size)])


def train_with_averages(config, decays, progress=True):
    """The course's run, trained as `labkit.gan.train` trains it, with EMAs of G kept alongside.

    Returns (G, {decay: averaged G}). Only the CPU path: channels_last, as train() uses there. No
    rebalancing rule that reads the losses (train() passes it G's previous loss; this loop does not).
    """
    from tqdm.auto import tqdm

    assert not needs_losses(config, LABKIT_GAN), "the loop does not track G's previous loss"

    device = torch.device("cpu")
    images = load_mnist("train")[0].contiguous(memory_format=torch.channels_last)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        G, D = build_models(config)
        G.to(device, memory_format=torch.channels_last)
        D.to(device, memory_format=torch.channels_last)
        opt_g = torch.optim.Adam(G.parameters(), lr=config.lr_g, betas=(config.beta1, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=config.lr_d, betas=(config.beta1, 0.999))
        noise_rng = torch.Generator(device).manual_seed(config.seed)
        batches = BatchSampler(len(images), config.batch_size, config.seed, device)
        averages = {d: AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(d), use_buffers=True) for d in decays}
        G.train(), D.train()
        for step in tqdm(range(1, config.num_training_steps + 1), desc="course DCGAN with EMAs",
                         disable=not progress, mininterval=5):
            real = images[batches.indices(step - 1)]
            z = torch.randn(config.batch_size, config.latent_dim, generator=noise_rng, device=device)
            gan_step(G, D, opt_g, opt_d, real, z, step, config, LABKIT_GAN)
            for average in averages.values():
                average.update_parameters(G)
    G.eval()
    return G, {d: average.module.eval() for d, average in averages.items()}


def save_grid(images, path):
    """The first 100 images with the classifier's digit and confidence (red: unsure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = images[:100]
    digit, confidence = analysis.classify_digits(images)
    fig, axes = plt.subplots(10, 10, figsize=(10, 11.5))
    for ax in axes.flat:
        ax.set_axis_off()
    for i, ax in zip(range(len(images)), axes.flat):
        ax.imshow(images[i, 0].cpu().numpy(), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"{digit[i].item()} {confidence[i].item():.2f}", fontsize=9,
                     color="red" if confidence[i] < 0.7 else "black")
    fig.suptitle(f"the first {len(images)} samples: the classifier's digit and confidence (red: unsure, below 0.7)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--num_training_steps", type=int, default=5000)
    parser.add_argument("--hidden_dim", type=int, default=16)
    parser.add_argument("--grid", type=Path, default=None, help="save the first 100 standard samples here (PNG)")
    args = parser.parse_args(argv)
    config = TrainConfig(seed=args.seed, num_training_steps=args.num_training_steps, device="cpu",
                         generator_hidden_dim=args.hidden_dim, discriminator_hidden_dim=args.hidden_dim)
    started = time.time()
    run = train(config, runs_root() / config.name)  # labkit's run: loaded if trained before
    G, averages = train_with_averages(config, DECAYS)
    theirs, ours = run.generator.state_dict(), G.state_dict()
    differ = [name for name in theirs if name not in ours or not torch.equal(theirs[name], ours[name])]
    if differ or theirs.keys() != ours.keys():
        sys.exit(f"unsure_gap: this script's loop did not reproduce {run.path} ({(differ or ['the keys'])[0]} "
                 f"differs). Was that run trained on another device or torch version? Otherwise fix "
                 f"train_with_averages before trusting its numbers")
    default_init = train(config, runs_root() / "bench_unsure_gap" / f"{config.name}_default_init",
                         code=GANCode(generator=DefaultInitGenerator, discriminator=DefaultInitDiscriminator)).generator

    standard = {seed: sample_images(run.generator, args.samples, seed=seed) for seed in SAMPLE_SEEDS}
    rows = [("standard", "labkit's run, G in eval mode, confidence 0.7", [readability(standard[s]) for s in SAMPLE_SEEDS]),
            ("batchnorm", "G in training mode (batch statistics, batches of 64)",
             [readability(train_mode_samples(run.generator, args.samples, s)) for s in SAMPLE_SEEDS])]
    for decay, average in averages.items():
        rows.append(("ema", f"G's weights averaged over training, decay {decay}",
                     [readability(sample_images(average, args.samples, seed=s)) for s in SAMPLE_SEEDS]))
    rows.append(("init", "PyTorch's default initialisation, retrained",
                 [readability(sample_images(default_init, args.samples, seed=s)) for s in SAMPLE_SEEDS]))
    course = course_loop(args.hidden_dim, args.num_training_steps, torch.device("cpu"), seed=args.seed, progress=True)
    rows.append(("course", "the course's own loop (DataLoader, nn.BCELoss), same networks and seed, retrained",
                 [readability(sample_images(course, args.samples, seed=s)) for s in SAMPLE_SEEDS]))
    for threshold in (0.6, 0.5):
        rows.append(("threshold", f"the standard samples, unsure below confidence {threshold}",
                     [readability(standard[s], threshold) for s in SAMPLE_SEEDS]))
    if args.grid:
        save_grid(standard[0], args.grid)

    lines = [f"Unsure digits of `{config.name}` at the course's settings, {args.samples} samples per sample seed "
             f"(the goal: at most 15% unsure, every digit at least 1/3 of its expected share).", "",
             "| candidate | what changes | unsure (sample seed 0) | unsure (sample seed 1) | smallest digit share |",
             "| --- | --- | --- | --- | --- |"]
    for name, what, results in rows:
        lines.append(f"| {name} | {what} | {results[0][0]:.1%} | {results[1][0]:.1%} | "
                     f"{min(r[1] for r in results):.2f} |")
    lines += ["", f"Measured with `python bench/unsure_gap.py` on {torch.get_num_threads()} CPU threads, torch "
              f"{torch.__version__.split('+')[0]}, in {(time.time() - started) / 60:.0f} min; this script's loop "
              f"reproduced labkit's run bit for bit."]
    print("\n".join(lines))
    if args.num_training_steps == 5000 and args.samples == 1000 and args.hidden_dim == 16:
        OUT.write_text("\n".join(lines) + "\n")  # only the gate's own settings are published


if __name__ == "__main__":
    sys.exit(main())
