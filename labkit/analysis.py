"""What the students worked out by hand: digit counts, interpolations, equilibria.

- `count_digits`: the digit classifier labels generated samples (the students
  labelled 100 by eye), with a chi-square test against MNIST's label mix;
  samples that are no digit at all (noise, blanks, smudges) are counted apart
  first (`digit_region`), so a GAN that has not learned is not read as ten digits.
- `interpolate`, `slerp`, `find_latents`: walks between two latent codes,
  with endpoints chosen by the digit they draw (no prompt loop).
- `equilibrium_table`: how far a run's D outputs are from the 0.5 of a Nash
  equilibrium.
- `smooth`: TensorBoard's smoothing slider, exactly.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from .data import load_mnist
from .metrics import load_digit_classifier
from .models import evaluating
from .runs.progress import bar as progress_bar
from .solutions.interpolation import interpolation_latents

# Label counts of MNIST's 60,000 training images, digits 0-9.
MNIST_TRAIN_COUNTS = np.array([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])


# ---------------------------------------------------------------------------
# Digit counts


@dataclass
class DigitCounts:
    counts: np.ndarray  # (10,) confident predictions per digit
    unsure: int  # digits whose prediction is below the confidence threshold
    chi2: float  # chi-square statistic of `counts` against MNIST's training mix
    p_value: float  # small: the counts are unlikely under MNIST's mix (mode collapse, or bias)
    entropy_bits: float  # of the count histogram; log2(10) = 3.32 bits for a uniform mix
    threshold: float
    not_digits: int = 0  # images outside the region of real digits (`digit_region`), not counted above

    @property
    def total(self):
        return int(self.counts.sum()) + self.unsure + self.not_digits

    @property
    def mostly_not_digits(self):
        return self.not_digits > self.total / 2

    @property
    def missing_digits(self):
        """Digits the generator never drew (confidently)."""
        return [d for d in range(10) if self.counts[d] == 0]

    def __str__(self):
        first = (f"most of these samples are not digits ({self.not_digits} of {self.total}): the generator has not "
                 f"learned digits yet, so the counts below say little. " if self.mostly_not_digits else "")
        return (first + f"counts {self.counts.tolist()} + {self.unsure} unsure + {self.not_digits} not digits "
                f"of {self.total}; chi2 = {self.chi2:.1f}, p = {self.p_value:.3g}; entropy {self.entropy_bits:.2f} "
                f"of 3.32 bits")


@dataclass
class DigitRegion:
    """Where real digits lie in the classifier's feature space: an out-of-distribution test.

    A softmax is sure of *something* for any input (noise was read as "8" with
    probability 1.00), so its confidence cannot tell a digit from noise. The
    classifier's 128-d features can: a real digit lies near the mean feature of
    its class. `distance` is the smallest Mahalanobis distance to the ten class
    means (one covariance shared by the classes), fitted on 5,000 training
    images; `limit` is the `percentile` of the distances of 5,000 held-out test
    images (the first half of MNIST's test set), so that share of real digits
    passes. A blank image sits close to the mean of the ones, so an image must
    also hold ink: at least half the least of the held-out digits'.
    tests/test_analysis.py checks the other half, noise, blanks, shuffled pixels
    and blurred digits.
    """

    means: torch.Tensor  # (10, 128)
    precision: torch.Tensor  # (128, 128): the inverse of the shared covariance
    limit: float
    percentile: float
    min_ink: float = 0.0  # the least share of bright pixels an image must have

    def distance(self, features):
        """(N,) squared Mahalanobis distance of each feature vector to its nearest class mean."""
        centred = features[:, None, :] - self.means[None]  # (N, 10, 128)
        return torch.einsum("nci,ij,ncj->nc", centred, self.precision, centred).min(1).values

    def is_digit(self, features, images):
        return (self.distance(features) <= self.limit) & (ink(images).cpu() >= self.min_ink)


def ink(images):
    """The share of each image's pixels that are bright (above the middle grey), (N,)."""
    return (images > 0).flatten(1).float().mean(1)


_regions = {}


@torch.no_grad()
def digit_region(classifier=None, percentile=99.0):
    """The DigitRegion of `classifier` (default: labkit's), fitted once per process (on 10,000 images)."""
    classifier = classifier or load_digit_classifier()
    key = (id(classifier), percentile)
    if key not in _regions:
        device = next(classifier.parameters()).device
        images, labels = load_mnist("train", device=device)
        features = batched_features(classifier, images[:5000])
        labels = labels[:5000].cpu()
        means = torch.stack([features[labels == d].mean(0) for d in range(10)])
        centred = features - means[labels]
        covariance = centred.T @ centred / len(features) + 1e-4 * torch.eye(features.shape[1])
        region = DigitRegion(means, torch.linalg.inv(covariance), math.inf, percentile)
        held_out = load_mnist("test", device=device)[0][:5000]
        region.limit = float(torch.quantile(region.distance(batched_features(classifier, held_out)), percentile / 100))
        region.min_ink = float(ink(held_out).min()) / 2
        _regions[key] = region
    return _regions[key]


def batched_features(classifier, images, batch_size=1000):
    """The classifier's features of `images`, (N, 128) on the CPU, in batches."""
    with torch.no_grad():
        return torch.cat([classifier.features(images[i:i + batch_size]).cpu()
                          for i in range(0, len(images), batch_size)])


def classify_digits(images, classifier=None, batch_size=1000):
    """(predicted digit, confidence) for each image, both (N,) CPU tensors."""
    classifier = classifier or load_digit_classifier(images.device)
    with torch.no_grad():
        probs = torch.cat([classifier(images[i:i + batch_size]).softmax(1)
                           for i in range(0, len(images), batch_size)])
    confidence, digit = probs.max(1)
    return digit.cpu(), confidence.cpu()


@torch.no_grad()
def count_digits(images, threshold=0.7, classifier=None, progress=False, batch_size=1000):
    """Count the digits 0-9 among `images` (N, 1, 32, 32) in [-1, 1].

    First, images outside the region of real digits (`digit_region`: noise,
    blanks, smudges) are counted as "not digits". Of the rest, a prediction
    whose softmax probability is below `threshold` counts as "unsure" (a blob
    that is no clear digit) and stays out of the test. At the default 0.7, 1.3%
    of MNIST's real test digits are unsure and 99.6% of the rest are read
    correctly (the classifier is 99.1% accurate overall); 1% of real digits
    fall outside the region (its 99th percentile).

    progress: a text bar over the batches (a string: its label).
    """
    classifier = classifier or load_digit_classifier(images.device)
    region = digit_region(classifier)
    features, probs = [], []
    # One pass: the classifier's features decide "a digit or not", its head (on the same features) which digit.
    for start in progress_bar(range(0, len(images), batch_size), disable=not progress, leave=False,
                              desc=progress if isinstance(progress, str) else "counting digits"):
        batch_features = classifier.features(images[start:start + batch_size])
        probs.append(classifier.head(batch_features).softmax(1).cpu())
        features.append(batch_features.cpu())
    confidence, digit = torch.cat(probs).max(1)
    in_region = region.is_digit(torch.cat(features), images)
    sure = (confidence >= threshold) & in_region
    counts = np.bincount(digit[sure].numpy(), minlength=10)
    n = counts.sum()
    if n > 0:
        expected = MNIST_TRAIN_COUNTS / MNIST_TRAIN_COUNTS.sum() * n
        chi2, p_value = stats.chisquare(counts, expected)
        share = counts[counts > 0] / n
        entropy = max(0.0, float(-(share * np.log2(share)).sum()))  # max: no "-0.00" for one digit
    else:
        chi2, p_value, entropy = math.nan, math.nan, 0.0
    return DigitCounts(counts, int((in_region & ~sure).sum()), float(chi2), float(p_value), entropy, threshold,
                       int((~in_region).sum()))


# ---------------------------------------------------------------------------
# Latent interpolation


@torch.no_grad()
def interpolate(generator, z1, z2, start=0.0, stop=1.0, steps=20, method="linear", latents=None):
    """Images along the paths from z1 to z2: (P, steps, 1, 32, 32) in [-1, 1].

    latents: the function that makes the codes (default `interpolation_latents`;
    notebook 5 passes the student's own). The generator runs in eval mode and
    is left in the mode it was in.
    """
    device = next(generator.parameters()).device
    z = (latents or interpolation_latents)(z1.to(device), z2.to(device), start, stop, steps, method)
    pairs = z.shape[0]
    with evaluating(generator):
        return generator(z.reshape(pairs * steps, -1)).reshape(pairs, steps, 1, 32, 32)


def random_pairs(latent_dim, pairs=10, seed=0):
    """P pairs of Gaussian codes (z1, z2), the same for the same seed: reuse them across ranges."""
    rng = torch.Generator().manual_seed(seed)
    return torch.randn(pairs, latent_dim, generator=rng), torch.randn(pairs, latent_dim, generator=rng)


@torch.no_grad()
def find_latents(generator, digit, count=1, seed=0, pool=2000, threshold=0.95):
    """`count` latent codes whose samples the classifier reads as `digit`, confidently.

    Replaces the students' prompt loop: draw a pool of codes, keep those whose
    image is `digit` with probability >= threshold, most confident first.
    """
    rng = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    z = torch.randn(pool, generator.latent_dim, generator=rng)
    with evaluating(generator):
        images = torch.cat([generator(z[i:i + 500].to(device)) for i in range(0, pool, 500)])
    label, confidence = classify_digits(images)
    score = torch.where(label == digit, confidence, torch.zeros_like(confidence))
    order = score.argsort(descending=True)[:count]
    if (score[order] < threshold).any():
        found = int((score >= threshold).sum())
        raise ValueError(f"only {found} of {pool} samples are a confident {digit}; the generator may "
                         f"rarely draw it (mode collapse?). Try a larger pool or a lower threshold.")
    return z[order]


# ---------------------------------------------------------------------------
# Equilibrium diagnostics and curves


def equilibrium(history, window=50):
    """Means of the last `window` logged rows, and their distance from a Nash equilibrium.

    At the equilibrium of the GAN game D cannot tell real from fake, so
    D_x = D_G_z1 = D_G_z2 = 0.5 and both losses are 2 log 2 and log 2.
    """
    rows = history[-window:]
    if not rows:
        raise ValueError("the run has no logged history yet")
    mean = {k: float(np.mean([r[k] for r in rows]))
            for k in ("D_x", "D_G_z1", "D_G_z2", "discriminator_loss", "generator_loss")}
    return {
        **mean,
        "distance_from_0.5": float(np.mean([abs(mean[k] - 0.5) for k in ("D_x", "D_G_z1", "D_G_z2")])),
        "loss_ratio": mean["discriminator_loss"] / mean["generator_loss"],
        "rows": len(rows),
    }


def equilibrium_table(runs, window=50):
    """A printable table of `equilibrium` for several runs ({name: history})."""
    header = f"{'run':<28}{'D_x':>7}{'D_G_z1':>8}{'D_G_z2':>8}{'|.-0.5|':>9}{'lossD/lossG':>13}"
    lines = [header, "-" * len(header)]
    for name, history in runs.items():
        e = equilibrium(history, window)
        lines.append(f"{name:<28}{e['D_x']:>7.3f}{e['D_G_z1']:>8.3f}{e['D_G_z2']:>8.3f}"
                     f"{e['distance_from_0.5']:>9.3f}{e['loss_ratio']:>13.3f}")
    return "\n".join(lines)


def smooth(values, weight=0.6):
    """TensorBoard's scalar smoothing: a debiased exponential moving average.

    The same computation as TensorBoard's smoothing slider (weight in [0, 1)):
    last = weight * last + (1 - weight) * value, divided by 1 - weight^n so
    the first points are not pulled towards 0. Non-finite values pass through.
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"smoothing weight must be in [0, 1], got {weight}")
    out, last, n = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        last = last * weight + (1 - weight) * value
        n += 1
        out.append(last / (1 - weight ** n) if weight < 1 else last)
    return out
