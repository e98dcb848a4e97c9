import pytest
import torch

from labkit.data import BatchSampler, DatasetNotFoundError, load_mnist, to_unit_range


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
