"""Shared fixtures. The tests use the real MNIST: set LABKIT_DATA to a folder
with MNIST/raw (CI points it at ../shared/data), or let torchvision download it
into ./data once.

labkit chooses a run's CPU threads from the machine's load (labkit/runs/device.py),
and sums split over other thread counts round differently; tests that compare two
runs bit for bit therefore train with one fixed count: PyTorch's default, as before.
"""

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

os.environ.setdefault("LABKIT_THREADS", str(torch.get_num_threads()))  # kernels and subprocesses inherit it


def tree_digest(*folders):
    """One hash of every path and file's bytes under `folders`: equal before and after means nothing changed."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            digest.update(str(path).encode() + (path.read_bytes() if path.is_file() else b""))
    return digest.hexdigest()


@pytest.fixture(scope="session")
def mnist_train():
    from labkit.data import load_mnist

    return load_mnist("train")


@pytest.fixture(scope="session")
def mnist_test():
    from labkit.data import load_mnist

    return load_mnist("test")


@pytest.fixture
def offline(monkeypatch):
    """No network: every URL torchvision opens fails as it would offline."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled by the test")

    import torch.hub

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "urlopen", refuse)


@pytest.fixture(scope="session")
def small_gan(tmp_path_factory):
    """A DCGAN trained for 300 steps on MNIST: blurry, but it draws digits."""
    from labkit.gan import train, TrainConfig

    return train(TrainConfig(num_training_steps=300, saving_steps=300, device="cpu"),
                 tmp_path_factory.mktemp("gan"), progress=False)
