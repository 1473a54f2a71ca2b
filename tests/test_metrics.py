"""Sample-quality metrics: closed forms, the shipped classifiers, the reference cache."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import scipy.linalg
import torch

from difflab.data import load_dataset
from difflab.errors import ConfigError, DataError
from difflab.evaluation import quality
from difflab.evaluation.classifier import (
    accuracy,
    asset_path,
    load_classifier,
    read_metadata,
)
from difflab.evaluation.features import extract, make_extractor
from difflab.evaluation.quality import (
    frechet_distance,
    inception_score,
    kernel_distance,
    reference_features,
)


def with_moments(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    """n points (n, d) whose sample mean and (n-1)-normalised covariance are exactly mean, cov."""
    w = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    w = w - w.mean(0)
    w = w @ torch.linalg.inv(torch.linalg.cholesky(w.T @ w / (n - 1))).T  # sample covariance I
    return mean + w @ torch.linalg.cholesky(cov).T


def random_cov(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# --- Frechet distance, KID, IS ------------------------------------------------------------------


def test_frechet_distance_of_a_set_with_itself_is_zero() -> None:
    f = with_moments(300, torch.zeros(6, dtype=torch.float64), random_cov(6, 0), seed=1)
    assert abs(frechet_distance(f, f)) < 1e-8


def test_frechet_distance_equals_closed_form_for_gaussians() -> None:
    d = 5
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.linspace(-1, 1, d, dtype=torch.float64)
    s1, s2 = random_cov(d, 2), random_cov(d, 3)
    # Closed form (Dowson & Landau 1982), with scipy's matrix square root as the reference.
    root = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = ((mu1 - mu2) ** 2).sum().item() + (s1.trace() + s2.trace()).item() - 2 * float(root.trace())
    got = frechet_distance(with_moments(400, mu1, s1, 4), with_moments(700, mu2, s2, 5))
    assert got == pytest.approx(expected, rel=1e-6)
    # Commuting (diagonal) covariances: sum_k (sqrt a_k - sqrt b_k)^2 by hand.
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    mu = torch.tensor([0.5, 0.0, -1.0], dtype=torch.float64)
    diag = frechet_distance(with_moments(200, torch.zeros(3, dtype=torch.float64), torch.diag(a).double(), 6),
                            with_moments(200, mu, torch.diag(b).double(), 7))
    assert diag == pytest.approx(0.25 + 1.0 + ((a.sqrt() - b.sqrt()) ** 2).sum().item(), rel=1e-8)


def test_kid_is_zero_in_expectation_for_equal_distributions_and_seeded() -> None:
    g = torch.Generator().manual_seed(8)
    real, same, shifted = (torch.randn(400, 4, generator=g, dtype=torch.float64) for _ in range(3))
    shifted = shifted + 1.0
    kid_same, std_same = kernel_distance(real, same, subsets=20, subset_size=200, seed=0)
    kid_shift, _ = kernel_distance(real, shifted, subsets=20, subset_size=200, seed=0)
    assert abs(kid_same) < 3 * std_same + 1e-3 and kid_shift > 20 * max(abs(kid_same), std_same)
    assert kernel_distance(real, shifted, subsets=20, subset_size=200, seed=0)[0] == kid_shift


def test_inception_score_limits() -> None:
    k, n = 10, 1000
    assert inception_score(torch.zeros(n, k))[0] == pytest.approx(1.0)  # uninformative classifier
    confident = torch.nn.functional.one_hot(torch.arange(n) % k, k).double() * 50.0  # sure and balanced
    assert inception_score(confident, splits=1)[0] == pytest.approx(k, rel=1e-6)


def test_metric_input_errors() -> None:
    with pytest.raises(DataError, match="same d"):
        frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(DataError, match="at least 2"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))


# --- the shipped classifiers -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_classifier_weights_are_small_safetensors(name: str) -> None:
    path = asset_path(name)
    assert path.stat().st_size < 1_000_000
    meta = read_metadata(path)
    assert meta["dataset"] == name and float(meta["test_accuracy"]) > 0.97


def test_digits_classifier_reaches_its_stated_accuracy() -> None:
    test = load_dataset("digits", split="test")
    acc = accuracy(load_classifier("digits"), test.images, test.labels)
    assert acc >= 0.97
    assert acc == pytest.approx(float(read_metadata(asset_path("digits"))["test_accuracy"]), abs=1e-4)


def test_mnist_classifier_reaches_its_stated_accuracy() -> None:
    test = load_or_skip("mnist", "test")  # ../shared/data/mnist or $DIFFLAB_DATA_DIR/mnist
    acc = accuracy(load_classifier("mnist"), test.images, test.labels)
    assert acc >= 0.98
    assert acc == pytest.approx(float(read_metadata(asset_path("mnist"))["test_accuracy"]), abs=1e-4)


def load_or_skip(name: str, split: str):
    try:
        return load_dataset(name, split=split)
    except DataError:
        pytest.skip(f"{name} not present in ../shared/data or $DIFFLAB_DATA_DIR")


@pytest.mark.parametrize("name, split", [("digits", "train"), ("mnist", "test")])
def test_fd_between_halves_of_real_data_is_far_below_data_vs_noise(name: str, split: str) -> None:
    images = load_or_skip(name, split).images
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(9))
    half_a, half_b = images[order[: len(images) // 2]], images[order[len(images) // 2 :]]
    noise = torch.rand(half_b.shape, generator=torch.Generator().manual_seed(10)) * 2 - 1
    extractor = make_extractor(f"{name}-cnn")
    fa, fb, fn = (extract(extractor, x)[0] for x in (half_a, half_b, noise))
    fd_real, fd_noise = frechet_distance(fa, fb), frechet_distance(fa, fn)
    assert fd_real < 0.02 * fd_noise
    logits_real = extract(extractor, images)[1]
    assert inception_score(logits_real)[0] > 8.0 > 2 * inception_score(extract(extractor, noise)[1])[0]


def test_extractor_rejects_the_wrong_image_size() -> None:
    with pytest.raises(ConfigError, match="mnist-cnn"):
        make_extractor("digits-cnn")(torch.zeros(2, 1, 28, 28))


def test_inception_without_weights_explains_how_to_provide_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inception-weights"):
        make_extractor("inception")
    if importlib.util.find_spec("torch_fidelity") is None:
        fake = tmp_path / "pt_inception.pth"
        fake.write_bytes(b"\0")
        with pytest.raises(ConfigError, match="torch-fidelity"):
            make_extractor("inception", inception_weights=fake)


# --- reference cache --------------------------------------------------------------------------


def test_reference_features_are_cached_per_extractor_and_images(tmp_path: Path, monkeypatch) -> None:
    images = load_dataset("digits", split="test").images
    extractor = make_extractor("digits-cnn")
    first = reference_features(images, extractor, dataset="digits", split="test", cache_dir=tmp_path)
    assert (tmp_path / "digits-test-digits-cnn.safetensors").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(quality, "extract", refuse)
    again = reference_features(images, extractor, dataset="digits", split="test", cache_dir=tmp_path)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    with pytest.raises(AssertionError, match="recomputed"):  # other images: the cache entry is stale
        reference_features(images.flip(0), extractor, dataset="digits", split="test", cache_dir=tmp_path)
    assert math.isfinite(frechet_distance(first[0], again[0]))
