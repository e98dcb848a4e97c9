"""Measuring generated digits: FID (two backbones), KID, precision and recall.

Two feature extractors ("backbones") turn images into vectors:

- "inception": pytorch-fid's Inception-v3 with the standard FID weights, pool3
  features (2048-d). This is the FID of the literature (the course's reports
  do not say how theirs was measured: bench/course_protocol.md). It
  is slow on a CPU (a 32x32 digit is resized to 299x299): about 7-12 images/s
  on 2 cores, seconds for thousands on a GPU.
- "mnist": labkit's digit classifier, penultimate features (128-d). Its FID
  ("MNIST-FID") takes seconds for 10,000 images on a CPU, so CPU users can
  measure every run. Its numbers are on another scale: never compare an
  MNIST-FID with an Inception FID. Every result carries its backbone in its label.

Images are labkit's (N, 1, 32, 32) tensors in [-1, 1]. A generator's FID is
measured against real digits made 32x32 by the run's own data pipeline ("pad"
or "resize", labkit/data.py), and its label says which: the same samples score
about 36 against padded digits and over 100 against resized ones (issue 30), so
an FID without its pipeline means little. The Frechet distance is
pytorch-fid's formula (see `frechet_distance`), so an Inception FID here is the
number pytorch-fid gives for the same images, computed 7-9x faster.
"""

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from pytorch_fid.inception import InceptionV3

from .classifier import ASSET, CHECKPOINT_KIND, DigitClassifier
from .data import load_mnist, to_unit_range
from .models import sample_images
from .runs.checkpoints import load_checkpoint
from .runs.device import threads_for_machine
from .runs.progress import bar as progress_bar
from .runs.targets import cache_file

BACKBONES = ("inception", "mnist")
INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
_models = {}  # (backbone, device) -> loaded model; loading Inception takes seconds
_warned = {}  # warnings given once per process


class WeightsNotFoundError(RuntimeError):
    """The FID Inception weights are neither cached nor downloadable."""


def _check_images(images):
    if not (torch.is_tensor(images) and images.dim() == 4 and tuple(images.shape[1:]) == (1, 32, 32)):
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"expected images of shape (N, 1, 32, 32) in [-1, 1], got {shape}")
    if len(images) < 2:
        raise ValueError(f"need at least 2 images to estimate feature statistics, got {len(images)}")


# ---------------------------------------------------------------------------
# Backbones


def load_inception(device="cpu"):
    """pytorch-fid's InceptionV3 returning pool3 features, in eval mode on `device`."""
    key = ("inception", str(device))
    if key not in _models:
        try:
            model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        except Exception as err:
            home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
            raise WeightsNotFoundError(
                f"the FID Inception weights could not be loaded or downloaded ({type(err).__name__}). "
                f"Connect to the internet once, or put {INCEPTION_WEIGHTS} into {home / 'hub' / 'checkpoints'} "
                f"(or set TORCH_HOME to a folder whose hub/checkpoints/ has it)."
            ) from None
        model.eval().to(device)
        if torch.device(device).type == "cpu":
            # channels_last: 1.6x faster Inception on a 2-core CPU, same features.
            model.to(memory_format=torch.channels_last)
        _models[key] = model
    return _models[key]


def load_digit_classifier(device="cpu", path=None):
    """labkit's trained DigitClassifier (>= 99% MNIST test accuracy), eval mode."""
    key = ("mnist", str(device), str(path))
    if key not in _models:
        state = load_checkpoint(path or ASSET, CHECKPOINT_KIND)
        model = DigitClassifier()
        model.load_state_dict(state["models"]["classifier"])
        model.test_accuracy = state["counters"]["test_accuracy"]
        _models[key] = model.eval().to(device)
    return _models[key]


@torch.no_grad()
def features(images, backbone="inception", batch_size=None, device=None, progress=False):
    """Feature vectors (N, D) as float64 numpy, computed in batches on `device`.

    device defaults to the images' device, so features of a generator's samples
    are computed where the generator is.
    """
    _check_images(images)
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    device = torch.device(device or images.device)
    if backbone == "inception":
        model, batch_size = load_inception(device), batch_size or 50
        memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    else:
        model, batch_size = load_digit_classifier(device), batch_size or 1000
    out = []
    with threads_for_machine(device):  # on a CPU: the threads the machine has free now (labkit/runs/device.py)
        for start in progress_bar(range(0, len(images), batch_size), desc=f"{backbone} features",
                                  disable=not progress, leave=False):
            batch = images[start:start + batch_size].to(device, torch.float32)
            if backbone == "inception":
                # pytorch-fid's convention: [0, 1] images; grey is repeated to 3 channels.
                # pytorch-fid then resizes to 299x299 and rescales to [-1, 1] itself.
                batch = to_unit_range(batch).expand(-1, 3, -1, -1).contiguous(memory_format=memory_format)
                out.append(model(batch)[0].flatten(1).cpu())
            else:
                out.append(model.features(batch).cpu())
    return torch.cat(out).double().numpy()


# ---------------------------------------------------------------------------
# Frechet distance


def statistics(feats):
    """Mean and covariance of feature vectors, as pytorch-fid computes them."""
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def trace_sqrt_product(sigma1, sigma2):
    """Tr(sqrt(sigma1 sigma2)) for covariance matrices, without a matrix square root.

    pytorch-fid takes scipy.linalg.sqrtm of the 2048 x 2048 product and then its
    trace. Only the trace is needed: sigma1 sigma2 is similar to the symmetric
    PSD matrix sqrt(sigma1) sigma2 sqrt(sigma1), so its eigenvalues are real and
    >= 0, and the trace of its square root is the sum of their square roots. Two
    symmetric eigendecompositions do this 7-9x faster than sqrtm on a 2-core CPU
    (2.5 s against 16-22 s for 2048-d features) and never produce the imaginary
    parts sqrtm has to discard; the FIDs agree with pytorch-fid's to 1e-7
    relative, also when there are fewer images than dimensions. (It also avoids
    sqrtm's `disp` argument, which pytorch-fid 0.3.0 passes and SciPy removes.)
    """
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # sqrt(sigma1); clip rounding below 0
    m = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), pytorch-fid's formula:

        d^2 = ||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrt(sigma1 sigma2))
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two sets of statistics come from features of different sizes")
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))


def features_fid(feats1, feats2):
    """The Frechet distance between two sets of feature vectors (N, D): `frechet_distance` of
    their `statistics`, computed exactly and much faster when a set has fewer vectors than dimensions.

    With X = (feats1 - mu1) / sqrt(n1 - 1) and Y likewise, sigma1 = X^T X and
    sigma2 = Y^T Y. The nonzero eigenvalues of sigma1 sigma2 = X^T (X Y^T Y) are
    those of (X Y^T Y) X^T = (X Y^T)(X Y^T)^T, so Tr(sqrt(sigma1 sigma2)) is the
    sum of the singular values of the n1 x n2 matrix X Y^T, and Tr(sigma1) is the
    sum of X's squares. For 500 vs 500 Inception features that is one 500 x 500
    SVD instead of two 2048 x 2048 eigendecompositions: milliseconds instead of
    seconds, which is what makes averaging over many random subsets affordable.
    The value agrees with `frechet_distance` to 1e-7 relative (tests/test_metrics.py).
    """
    feats1, feats2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    (n1, dim), n2 = feats1.shape, len(feats2)
    if min(n1, n2) >= dim:
        return frechet_distance(*statistics(feats1), *statistics(feats2))
    mu1, mu2 = feats1.mean(axis=0), feats2.mean(axis=0)
    x, y = (feats1 - mu1) / np.sqrt(n1 - 1), (feats2 - mu2) / np.sqrt(n2 - 1)
    diff = mu1 - mu2
    trace_sqrt = np.linalg.svd(x @ y.T, compute_uv=False).sum()
    return float(diff.dot(diff) + (x * x).sum() + (y * y).sum() - 2 * trace_sqrt)


@dataclass(frozen=True)
class FID:
    """An FID value that remembers how it was measured.

    FID is biased upwards for small sample counts: compare only values with the
    same counts and backbone (which is why both are in the label).
    """

    value: float
    backbone: str
    n_real: int
    n_fake: int
    pipeline: Optional[str] = None  # how the real images were made 32x32 ("pad", "resize"), where known

    @property
    def label(self):
        """e.g. "Inception FID (pad, 3000 real vs 3000 generated)"."""
        name = "Inception FID" if self.backbone == "inception" else "MNIST-FID"
        pipeline = f"{self.pipeline}, " if self.pipeline else ""
        return f"{name} ({pipeline}{self.n_real} real vs {self.n_fake} generated)"

    def __float__(self):
        return self.value

    def __str__(self):
        return f"{self.label}: {self.value:.2f}"


def fid(real_images, fake_images, backbone="inception", progress=False, pipeline=None):
    """FID between two image sets (lower: more alike); `pipeline` names the real images' pipeline in its label."""
    mu1, s1 = statistics(features(real_images, backbone, progress=progress))
    mu2, s2 = statistics(features(fake_images, backbone, progress=progress))
    return FID(frechet_distance(mu1, s1, mu2, s2), backbone, len(real_images), len(fake_images), pipeline)


def inception_fid(real_images, fake_images, progress=False):
    """labkit's standard Inception FID: Inception-v3 pool3 features, as pytorch-fid computes it."""
    return fid(real_images, fake_images, "inception", progress)


def mnist_fid(real_images, fake_images, progress=False):
    """MNIST-FID: FID on the digit classifier's features. Fast; not comparable to Inception FID."""
    return fid(real_images, fake_images, "mnist", progress)


# ---------------------------------------------------------------------------
# Real-image statistics, computed once and cached


def cache_dir():
    """Where labkit caches derived data: LABKIT_CACHE, else ~/.cache/labkit."""
    return Path(os.environ.get("LABKIT_CACHE") or Path.home() / ".cache" / "labkit")


def real_images(count, split="train", seed=0, device="cpu", pipeline="pad"):
    """`count` MNIST images of `split`, a random subset fixed by `seed`, made 32x32 by `pipeline`.

    The subset is the same digits whatever the pipeline."""
    images, _ = load_mnist(split, pipeline=pipeline)
    if not 2 <= count <= len(images):
        raise ValueError(f"count must be between 2 and {len(images)} for MNIST {split}, got {count}")
    index = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]
    return images[index].to(device)


def real_statistics_key(count, split, seed, backbone, pipeline="pad"):
    """The cache file's name for `real_statistics`. Like a run's name, it says the pipeline only
    when it is not the default, so the statistics cached before pipelines existed are still found."""
    key = f"mnist-{split}-n{count}-seed{seed}-{backbone}" + ("" if pipeline == "pad" else f"-{pipeline}")
    if backbone == "mnist":
        key += "-" + hashlib.sha1(ASSET.read_bytes()).hexdigest()[:8]
    return key


def real_statistics(count=3000, split="train", seed=0, backbone="inception", device="cpu", progress=False,
                    pipeline="pad"):
    """(mu, sigma) of `count` real MNIST images, from the cache when it has them.

    The cache key holds the dataset, split, count, seed, backbone and pipeline
    (and, for the classifier, a hash of its weights), so any change recomputes.
    """
    key = real_statistics_key(count, split, seed, backbone, pipeline)
    path = cache_dir() / "fid_stats" / f"{key}.npz"
    if path.exists():
        try:
            with np.load(path) as cached:
                return cached["mu"], cached["sigma"]
        except Exception:  # a damaged cache file (cut short, or not ours): compute the statistics again
            pass
    mu, sigma = statistics(features(real_images(count, split, seed, device, pipeline), backbone, progress=progress))
    try:
        with cache_file(path, ".npz") as tmp:  # np.savez adds .npz to a name without it
            np.savez(tmp, mu=mu, sigma=sigma)
    except (OSError, ValueError) as err:  # ValueError: a TargetError (a link where the cache goes); a read-only, full or odd cache costs time next call, never the result
        if not _warned.get("cache"):
            _warned["cache"] = True
            reason = err.strerror if isinstance(err, OSError) and err.strerror else err
            print(f"labkit: warning: could not cache real-image statistics in {cache_dir()} "
                  f"({reason}); they will be computed again next time. Set LABKIT_CACHE to a "
                  f"folder you can write to.", file=sys.stderr)
    return mu, sigma


def generator_fid(generator, count=3000, backbone="inception", real_count=None, seed=0, progress=False,
                  pipeline="pad"):
    """labkit's standard protocol: FID of `count` samples against `real_count` (default: the
    same number, 3000 as in the course's main.py) MNIST training images, with the real
    statistics cached. pipeline: how the real images are made 32x32; pass the run's own
    (`run.config.pipeline`), the one its generator learnt."""
    real_count = real_count or count
    device = next(generator.parameters()).device
    mu1, s1 = real_statistics(real_count, "train", seed, backbone, device, progress, pipeline)
    samples = sample_images(generator, count, seed=seed)
    mu2, s2 = statistics(features(samples, backbone, progress=progress))
    return FID(frechet_distance(mu1, s1, mu2, s2), backbone, real_count, count, pipeline)


# ---------------------------------------------------------------------------
# KID, precision and recall (on the same features)


def kid(real_feats, fake_feats, subsets=100, subset_size=1000, seed=0):
    """Kernel Inception Distance: unbiased MMD^2 with the kernel (x.y / d + 1)^3.

    Averaged over random subsets as Binkowski et al. (2018) and torch-fidelity
    do; returns (mean, std). Unlike FID it is unbiased, so small sample counts
    can be compared with large ones. Pass features from `features(...)`.
    """
    a, b = torch.as_tensor(real_feats), torch.as_tensor(fake_feats)
    n = min(len(a), len(b), subset_size)
    if n < 2:
        raise ValueError("KID needs at least 2 feature vectors on each side")
    dim = a.shape[1]
    rng = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=rng)[:n]]
        y = b[torch.randperm(len(b), generator=rng)[:n]]
        kxx, kyy, kxy = ((x @ x.T / dim + 1) ** 3, (y @ y.T / dim + 1) ** 3, (x @ y.T / dim + 1) ** 3)
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
        values.append(float(within - 2 * kxy.mean()))
    return float(np.mean(values)), float(np.std(values))


def _radii(feats, k):
    """Distance from each vector to its k-th nearest neighbour in the same set."""
    dist = torch.cdist(feats, feats)
    return dist.kthvalue(k + 1, dim=1).values  # +1: the nearest is the point itself


def _covered(queries, centres, radii, chunk=2048):
    """For each query: does it fall inside any centre's ball?"""
    hits = []
    for start in range(0, len(queries), chunk):
        dist = torch.cdist(queries[start:start + chunk], centres)
        hits.append((dist <= radii[None, :]).any(dim=1))
    return torch.cat(hits)


def precision_recall(real_feats, fake_feats, k=3):
    """Improved precision and recall (Kynkaanniemi et al., 2019).

    Each set is approximated by balls around its points reaching their k-th
    nearest neighbour. Precision: the share of generated samples inside the real
    set's balls (are samples realistic?). Recall: the share of real samples
    inside the generated set's balls (is all of the data covered?). Sharp but
    collapsed samples: high precision, low recall; diverse but blurry: the reverse.
    """
    real, fake = torch.as_tensor(real_feats).float(), torch.as_tensor(fake_feats).float()
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} vectors on each side")
    precision = _covered(fake, real, _radii(real, k)).float().mean().item()
    recall = _covered(real, fake, _radii(fake, k)).float().mean().item()
    return precision, recall
