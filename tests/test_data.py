import json

import pytest
import torch
from torchvision import transforms
from torchvision.datasets import MNIST

from labkit import metrics
from labkit.data import BatchSampler, DatasetNotFoundError, data_root, load_mnist, to_unit_range
from labkit.runs.config import TrainConfig, VAEConfig
from labkit.runs.folder import read_config, write_config

# The course's dataset.py (Resize) and labkit's (Pad), as torchvision applies them to each PIL image.
TORCHVISION = {
    "resize": transforms.Compose([transforms.Resize(32), transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]),
    "pad": transforms.Compose([transforms.Pad(2), transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]),
}


def test_mnist_is_padded_scaled_and_complete(mnist_train, mnist_test):
    images, labels = mnist_train
    assert images.shape == (60000, 1, 32, 32) and images.dtype == torch.float32
    assert images.min() == -1 and images.max() == 1
    # Pad(2): the two-pixel border is background (0 before scaling, -1 after).
    border = torch.cat([images[..., :2, :].flatten(), images[..., -2:, :].flatten(),
                        images[..., :, :2].flatten(), images[..., :, -2:].flatten()])
    assert (border == -1).all()
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert torch.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(mnist_test[1]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert to_unit_range(images[:5]).min() == 0


def test_batches_cover_each_epoch_once_and_are_reproducible():
    sampler = BatchSampler(num_items=1000, batch_size=64, seed=7)
    epoch = torch.cat([sampler.indices(step) for step in range(sampler.batches_per_epoch)])
    assert len(epoch) == 15 * 64 and len(set(epoch.tolist())) == len(epoch)  # no repeats in an epoch
    again = BatchSampler(num_items=1000, batch_size=64, seed=7)
    assert torch.equal(again.indices(20), sampler.indices(20))  # any step, no state needed
    assert not torch.equal(sampler.indices(0), sampler.indices(15))  # a new shuffle each epoch
    assert not torch.equal(BatchSampler(1000, 64, seed=8).indices(0), sampler.indices(0))


def test_missing_dataset_offline_says_where_and_what_to_do(tmp_path, offline):
    with pytest.raises(DatasetNotFoundError) as err:
        load_mnist("train", root=tmp_path)
    message = str(err.value)
    assert str(tmp_path.resolve() / "MNIST" / "raw") in message
    assert "LABKIT_DATA" in message and "train-images-idx3-ubyte" in message
    assert "\n" not in message


def test_root_comes_from_argument_then_environment(monkeypatch, tmp_path):
    from labkit.data import data_root

    monkeypatch.setenv("LABKIT_DATA", "/somewhere")
    assert str(data_root()) == "/somewhere"
    assert data_root(tmp_path) == tmp_path
    monkeypatch.delenv("LABKIT_DATA")
    assert str(data_root()) == "data"


# ---------------------------------------------------------------------------
# The data pipeline: labkit's Pad(2) or the course's Resize(32) (issue 30)


@pytest.mark.parametrize("pipeline", ["pad", "resize"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_each_pipeline_gives_torchvision_s_images_pixel_for_pixel(pipeline, split):
    """One batch of real MNIST through labkit's whole-tensor pipeline and through torchvision's
    per-image transforms, as the course's DataLoader fed them: the same floats."""
    images, labels = load_mnist(split, pipeline=pipeline)
    dataset = MNIST(str(data_root()), train=(split == "train"), transform=TORCHVISION[pipeline])
    index = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:256].tolist()
    expected = torch.stack([dataset[i][0] for i in index])
    assert images.shape[1:] == (1, 32, 32) and images.dtype == torch.float32
    torch.testing.assert_close(images[index], expected, rtol=0, atol=1e-6)
    assert labels[index].tolist() == [dataset[i][1] for i in index]


def test_the_pipelines_give_different_digits(mnist_train):
    """Resized digits fill the frame (no black border) and are not the padded ones."""
    resized = load_mnist("train", pipeline="resize")[0][:500]
    padded = mnist_train[0][:500]
    assert (padded[..., :2, :] == -1).all() and not (resized[..., 2:30, :2] == -1).all()
    assert (resized > 0).float().mean() > 1.2 * (padded > 0).float().mean()  # wider strokes: more ink


def test_an_unknown_pipeline_is_one_clear_error():
    for make in (lambda: load_mnist("train", pipeline="Resize"), lambda: TrainConfig(pipeline="crop"),
                 lambda: VAEConfig(pipeline="")):
        with pytest.raises(ValueError, match="pipeline must be 'pad' or 'resize'"):
            make()


def test_the_pipeline_is_in_a_run_s_identity_and_in_its_name_only_when_not_pad():
    pad, resize = TrainConfig(), TrainConfig(pipeline="resize")
    assert pad.name == "dcgan_z16_g16_d16_steps5000_seed2022"  # every existing run keeps its name
    assert resize.name == "dcgan_z16_g16_d16_steps5000_seed2022_resize"
    assert pad.identity()["pipeline"] == "pad" and resize.identity()["pipeline"] == "resize"
    assert TrainConfig(use_mlp=True, pipeline="resize").name == "mlp_z16_steps5000_seed2022_resize"
    assert TrainConfig(pipeline="resize", code="student-0123abcd").name.endswith("_resize_student-0123abcd")
    assert VAEConfig().name == "vae_z10_steps25000_seed2022"
    assert VAEConfig(pipeline="resize").name == "vae_z10_steps25000_seed2022_resize"


def test_config_json_says_the_pipeline_only_when_not_pad_and_an_old_one_reads_as_pad(tmp_path):
    write_config(tmp_path, TrainConfig())
    assert "pipeline" not in json.loads((tmp_path / "config.json").read_text())  # as before pipelines existed
    assert read_config(tmp_path, TrainConfig).pipeline == "pad"
    write_config(tmp_path, VAEConfig(pipeline="resize"))
    assert json.loads((tmp_path / "config.json").read_text())["pipeline"] == "resize"
    assert read_config(tmp_path, VAEConfig) == VAEConfig(pipeline="resize")


def test_fid_s_real_images_come_from_the_pipeline_and_are_cached_apart(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    assert metrics.real_statistics_key(3000, "train", 0, "inception") == "mnist-train-n3000-seed0-inception"
    assert metrics.real_statistics_key(3000, "train", 0, "inception", "resize") == \
        "mnist-train-n3000-seed0-inception-resize"
    pad_mu, _ = metrics.real_statistics(200, backbone="mnist")
    resize_mu, _ = metrics.real_statistics(200, backbone="mnist", pipeline="resize")
    assert len(list((tmp_path / "fid_stats").glob("*.npz"))) == 2 and not (pad_mu == resize_mu).all()
    resized = metrics.real_images(200, pipeline="resize")
    assert torch.equal(resized, load_mnist("train", pipeline="resize")[0][
        torch.randperm(60000, generator=torch.Generator().manual_seed(0))[:200]])  # the same digits, resized
    result = metrics.fid(resized, metrics.real_images(200, seed=1), "mnist", pipeline="resize")
    assert result.label == "MNIST-FID (resize, 200 real vs 200 generated)"
