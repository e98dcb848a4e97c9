"""MNIST, brought to 32x32 and scaled to [-1, 1], held as one tensor.

Two pipelines make the 28x28 digits 32x32 (a run's `pipeline` setting):

    "pad"     labkit's: Pad(2) -> ToTensor -> Normalize(0.5, 0.5), a 2-pixel
              black border around the digit as drawn;
    "resize"  the course's (its dataset.py): Resize(32) -> ToTensor ->
              Normalize(0.5, 0.5), the digit upsampled bilinearly, so it fills
              the frame and its strokes are wider and softer.

A GAN learns whichever it is fed, and its FID is only meaningful against real
images from the same pipeline (issue 30: the course's FIDs are about 2.5x
labkit's because of this alone).

The course fed MNIST through a DataLoader with per-sample transforms. The whole
training set is only 60,000 x 32 x 32 floats (245 MB), so labkit applies the
transforms once to the full tensor, keeps it on the training device and forms
each batch by indexing it. That removes the loader's per-sample Python work and
the host-to-device copy from every training step; the images are the same,
pixel for pixel (tests/test_data.py compares them with torchvision's).

Where the files come from, in order: the `root` argument, the environment
variable LABKIT_DATA, then ./data. torchvision downloads MNIST there if it is
missing; offline, a DatasetNotFoundError says where to put the files.
"""

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.datasets import MNIST

from .runs.config import MNIST_TRAIN_SIZE, check_pipeline  # noqa: F401 (MNIST_TRAIN_SIZE: said here too)

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


def load_mnist(split="train", root=None, device="cpu", pipeline="pad"):
    """All of one MNIST split as (images, labels) on `device`.

    images: float32 (N, 1, 32, 32) in [-1, 1], made 32x32 by `pipeline` (`to_32x32`);
    labels: int64 (N,).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    check_pipeline(pipeline)
    dataset = _torchvision_mnist(data_root(root), train=(split == "train"))
    pixels = to_32x32(dataset.data.unsqueeze(1), pipeline).float().div_(255.0)  # ToTensor: [0, 1]
    images = pixels.mul_(2.0).sub_(1.0)  # Normalize(mean=0.5, std=0.5)
    return images.to(device), dataset.targets.clone().to(device)


def to_32x32(digits, pipeline="pad"):
    """uint8 digits (N, 1, 28, 28) made (N, 1, 32, 32), still uint8 in 0..255.

    "pad": 2 black pixels on each side (torchvision's Pad(2)).
    "resize": torchvision's Resize(32), bilinear, as the course applied it to each PIL
    image: PIL interpolates in fixed point and rounds to whole grey levels. PyTorch's
    bilinear interpolation of a uint8 tensor with antialias=True is written to match
    PIL's, and does: all 70,000 digits come out identical (measured; antialias itself
    changes nothing when enlarging). Interpolating floats instead, or torchvision's
    resize of the tensor (which does that), differs from PIL by 1/255 in ~4% of pixels.
    """
    if pipeline == "pad":
        return F.pad(digits, (2, 2, 2, 2))
    return F.interpolate(digits, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)


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
