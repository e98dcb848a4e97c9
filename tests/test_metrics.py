import warnings

import numpy as np
import pytest
import torch
from torchvision.utils import save_image

from labkit import metrics
from labkit.data import to_unit_range


def write_pngs(images, folder):
    folder.mkdir()
    for i, image in enumerate(images):
        save_image(to_unit_range(image), folder / f"{i:03d}.png")
    return folder


def test_inception_fid_equals_pytorch_fid(mnist_train, mnist_test, tmp_path):
    """labkit's Inception FID against pytorch-fid's own pipeline, from PNG files of the
    same digits (MNIST pixels are 8-bit, so the PNGs hold exactly the same images)."""
    from pytorch_fid import fid_score

    real, other = mnist_train[0][:40], mnist_test[0][:40]
    ours = metrics.inception_fid(real, other)
    assert ours.backbone == "inception" and ours.label == "Inception FID (40 real vs 40 generated)"
    # pytorch-fid's own steps: its image loading, its statistics, its Frechet distance.
    model = metrics.load_inception("cpu")
    files_a = sorted(write_pngs(real, tmp_path / "a").iterdir())
    files_b = sorted(write_pngs(other, tmp_path / "b").iterdir())
    mu1, s1 = fid_score.calculate_activation_statistics(files_a, model, batch_size=20, num_workers=0)
    mu2, s2 = fid_score.calculate_activation_statistics(files_b, model, batch_size=20, num_workers=0)
    np.testing.assert_allclose(metrics.statistics(metrics.features(real))[0], mu1, rtol=1e-4, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy's deprecation of disp=False
        theirs = fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)
    assert ours.value == pytest.approx(theirs, rel=1e-3)


def test_frechet_distance_matches_pytorch_fid_and_closed_form():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 16)), rng.normal(0.3, 1.5, size=(500, 16))
    mu1, s1 = metrics.statistics(a)
    mu2, s2 = metrics.statistics(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # Two isotropic Gaussians: d^2 = |mu1 - mu2|^2 + n (s1 - s2)^2.
    assert metrics.frechet_distance(np.zeros(4), np.eye(4), np.ones(4), 4 * np.eye(4)) == pytest.approx(4 + 4)


def test_features_fid_is_the_frechet_distance_of_the_features_statistics():
    """The low-rank path (fewer vectors than dimensions) and the full one give the same number."""
    rng = np.random.default_rng(0)
    for n1, n2, dim in [(40, 60, 256), (30, 30, 256), (300, 200, 64)]:
        a, b = rng.standard_normal((n1, dim)) ** 2, 1.3 * rng.standard_normal((n2, dim)) + 0.2
        full = metrics.frechet_distance(*metrics.statistics(a), *metrics.statistics(b))
        assert metrics.features_fid(a, b) == pytest.approx(full, rel=1e-7)


def test_digit_classifier_reaches_99_percent(mnist_test):
    from labkit.classifier import ASSET, accuracy

    classifier = metrics.load_digit_classifier()
    assert ASSET.stat().st_size < 1_000_000
    assert accuracy(classifier, *mnist_test) >= 0.99


def test_counts_on_real_test_digits_match_their_labels(mnist_test):
    from labkit.analysis import count_digits

    images, labels = mnist_test[0][:1000], mnist_test[1][:1000]
    result = count_digits(images)
    truth = np.bincount(labels.numpy(), minlength=10)
    assert result.total == 1000 and result.unsure <= 30
    assert np.abs(result.counts - truth).sum() <= 40  # each miscount or unsure moves at most 2
    assert result.p_value > 0.01  # real digits follow MNIST's mix
    assert 3.2 < result.entropy_bits <= np.log2(10)
    ones = images[labels == 1][:100]
    collapsed = count_digits(ones)
    assert collapsed.counts[1] >= 95 and collapsed.p_value < 1e-10 and collapsed.entropy_bits < 0.5
    assert collapsed.missing_digits and 0 in collapsed.missing_digits


def test_mnist_fid_kid_precision_recall_tell_real_from_noise(mnist_train, mnist_test):
    train, test = mnist_train[0][:2000], mnist_test[0][:2000]
    noise = torch.rand(2000, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    real_vs_real = metrics.mnist_fid(train, test)
    real_vs_noise = metrics.mnist_fid(train, noise)
    assert real_vs_real.label.startswith("MNIST-FID") and "Inception" not in str(real_vs_real)
    assert real_vs_real.value < 0.02 * real_vs_noise.value
    f_train, f_test, f_noise = (metrics.features(x, "mnist") for x in (train, test, noise))
    kid_real, _ = metrics.kid(f_train, f_test, subsets=20)
    kid_noise, _ = metrics.kid(f_train, f_noise, subsets=20)
    assert abs(kid_real) < 0.05 * kid_noise
    precision, recall = metrics.precision_recall(f_train, f_test)
    assert precision > 0.6 and recall > 0.6
    precision, recall = metrics.precision_recall(f_train, f_noise)
    assert precision < 0.05
    # One digit only: realistic (high precision) but not diverse (low recall).
    labels = mnist_test[1][:2000]
    precision, recall = metrics.precision_recall(f_train, f_test[labels.numpy() == 7])
    assert precision > 0.6 and recall < 0.3


def test_real_statistics_are_cached_and_keyed(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    mu, sigma = metrics.real_statistics(300, backbone="mnist")
    assert len(list((tmp_path / "fid_stats").glob("*.npz"))) == 1

    def no_features(*args, **kwargs):
        raise AssertionError("features recomputed although cached")

    monkeypatch.setattr(metrics, "features", no_features)
    mu2, sigma2 = metrics.real_statistics(300, backbone="mnist")
    assert np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    with pytest.raises(AssertionError, match="recomputed"):
        metrics.real_statistics(301, backbone="mnist")  # another count is another key


def test_generator_fid_follows_the_course_protocol(small_gan, monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    result = metrics.generator_fid(small_gan.generator, count=500, backbone="mnist")
    assert result.n_real == result.n_fake == 500 and np.isfinite(result.value) and result.value > 0
    assert metrics.generator_fid(small_gan.generator, count=500, backbone="mnist").value == result.value


def test_wrong_image_shapes_are_refused():
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 1, 32, 32\)"):
        metrics.features(torch.zeros(4, 1, 28, 28), "mnist")


def test_missing_inception_weights_offline_say_where_to_put_them(monkeypatch, tmp_path, offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(metrics, "_models", {})
    with pytest.raises(metrics.WeightsNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        metrics.load_inception("cpu")
