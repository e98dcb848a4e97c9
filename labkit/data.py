"""MNIST, padded to 32x32 and scaled to [-1, 1], held as one tensor.

The course fed MNIST through a DataLoader with per-sample transforms
(Pad(2) -> ToTensor -> Normalize(0.5, 0.5)). The whole training set is only
60,000 x 32 x 32 floats (245 MB), so labkit applies those transforms once to
the full tensor, keeps it on the training device and forms each batch by
indexing it. That removes the loader's per-sample Python work and the
host-to-device copy from every training step; the images are the same.

Where the files come from, in order: the `root` argument, the environment
variable LABKIT_DATA, then ./data. torchvision downloads MNIST there if it is
missing; offline, a DatasetNotFoundError says where to put the files.
"""

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.datasets import MNIST

from .runs.config import MNIST_TRAIN_SIZE  # noqa: F401 (the dataset's size, also said here)

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DatasetNotFoundError(RuntimeError):
    """MNIST is neither on disk nor downloadable."""


def data_root(root=None):
    """The folder that holds (or will hold) MNIST/raw."""
    return Path(root or os.environ.get("LABKIT_DATA") or "data")


# Sizes of the four uncompressed files, to tell a damaged file from a missing one.
MNIST_SIZES = {"train-images-idx3-ubyte": 47_040_016, "train-labels-idx1-ubyte": 60_008,
               "t10k-images-idx3-ubyte": 7_840_016, "t10k-labels-idx1-ubyte": 10_008}


def check_mnist_files(raw):
    """Refuse an MNIST file that is there but of the wrong size (cut short by a copy or a download)."""
    for name, size in MNIST_SIZES.items():
        path = Path(raw) / name
        if path.is_file() and path.stat().st_size != size:
            raise DatasetNotFoundError(
                f"the MNIST file {path} is damaged ({path.stat().st_size:,} bytes; a good copy has {size:,}): "
                f"delete it so that it is downloaded again, or copy a good one there")


def _torchvision_mnist(root, train):
    check_mnist_files(Path(root) / "MNIST" / "raw")
    try:
        return MNIST(root=str(root), train=train, download=True)
    except Exception as err:  # urllib, socket and checksum errors all end here
        raw = Path(root).resolve() / "MNIST" / "raw"
        raise DatasetNotFoundError(
            f"MNIST is not in {raw} and could not be downloaded ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}). Either connect to the "
            f"internet once, or copy the four files {', '.join(MNIST_FILES)} into {raw}, "
            f"or set LABKIT_DATA to a folder that has MNIST/raw inside."
        ) from None


def require_mnist(root=None):
    """Make sure MNIST is there (downloading it if it can), or raise DatasetNotFoundError saying what to do.

    For commands that would otherwise find out only inside their first run."""
    for train in (True, False):
        _torchvision_mnist(data_root(root), train=train)


def load_mnist(split="train", root=None, device="cpu"):
    """All of one MNIST split as (images, labels) on `device`.

    images: float32 (N, 1, 32, 32) in [-1, 1], the 28x28 digits padded by 2
            zero-valued (i.e. -1 after scaling) pixels on each side;
    labels: int64 (N,).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    dataset = _torchvision_mnist(data_root(root), train=(split == "train"))
    pixels = dataset.data.unsqueeze(1).float().div_(255.0)  # (N, 1, 28, 28) in [0, 1]
    pixels = F.pad(pixels, (2, 2, 2, 2))  # Pad(2) with zeros, as the course did
    images = pixels.mul_(2.0).sub_(1.0)  # Normalize(mean=0.5, std=0.5)
    return images.to(device), dataset.targets.clone().to(device)


def to_unit_range(images):
    """labkit's [-1, 1] images to [0, 1], the range image files and FID expect."""
    return (images + 1) / 2


class BatchSampler:
    """Shuffled mini-batches of indices, reproducible from (seed, step) alone.

    Each epoch is a fresh permutation drawn from a generator seeded with
    (seed, epoch), so the batch at any step can be recomputed without stored
    state: a resumed run sees exactly the batches an uninterrupted one would.
    Like DataLoader(shuffle=True, drop_last=True), every epoch visits each
    image at most once.
    """

    def __init__(self, num_items, batch_size, seed, device="cpu"):
        if batch_size > num_items:
            raise ValueError(f"batch size {batch_size} is larger than the dataset ({num_items})")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.device = torch.device(device)
        self.batches_per_epoch = num_items // batch_size
        self._epoch, self._perm = None, None

    def indices(self, step):
        """Indices (int64, on `device`) of the batch for 0-based training step `step`."""
        epoch, position = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.num_items, generator=generator).to(self.device)
            self._epoch = epoch
        start = position * self.batch_size
        return self._perm[start : start + self.batch_size]
