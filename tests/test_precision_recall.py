"""Improved precision and recall (Kynkaanniemi et al. 2019): k-NN radii, manifold membership, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difflab.errors import ConfigError, DataError
from difflab.evaluation.precision_recall import knn_radii, precision_recall


def gaussian(n: int, centre: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return centre + torch.randn(n, len(centre), generator=g, dtype=torch.float64)


def brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """The paper's definition written out with O(N^2) Python loops."""

    def radii(x: np.ndarray) -> list[float]:
        out = []
        for i in range(len(x)):
            others = sorted(float(np.sqrt(((x[i] - x[j]) ** 2).sum())) for j in range(len(x)) if j != i)
            out.append(others[k - 1])
        return out

    def fraction_inside(query: np.ndarray, centres: np.ndarray) -> float:
        r = radii(centres)
        inside = sum(
            any(np.sqrt(((q - c) ** 2).sum()) <= rc for c, rc in zip(centres, r, strict=True)) for q in query
        )
        return inside / len(query)

    return fraction_inside(fake, real), fraction_inside(real, fake)


# --- properties ----------------------------------------------------------------------------------


def test_identical_sets_have_precision_and_recall_one() -> None:
    x = gaussian(150, torch.zeros(5, dtype=torch.float64), seed=0)
    assert precision_recall(x, x.clone()) == (1.0, 1.0)


def test_fake_far_from_real_has_precision_and_recall_zero() -> None:
    real = gaussian(100, torch.zeros(4, dtype=torch.float64), seed=0)
    fake = gaussian(100, torch.zeros(4, dtype=torch.float64), seed=1) + 100.0
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_fake_from_one_of_two_modes_has_half_recall_and_full_precision() -> None:
    centre = torch.full((2,), 20.0, dtype=torch.float64)
    real = torch.cat([gaussian(200, centre, seed=0), gaussian(200, -centre, seed=1)])
    fake = gaussian(400, centre, seed=2)
    precision, recall = precision_recall(real, fake)
    assert abs(recall - 0.5) <= 0.05
    assert precision >= 0.95


def test_dropping_a_mode_halves_recall_and_keeps_precision_exactly() -> None:
    # In 8-D, k=3 with 200 points per mode the k-NN balls cover only ~85-90% of their own
    # distribution, so the absolute values are below the 2-D ones above; what a dropped mode does is
    # exact: the fake manifold is the same, it just covers none of the second mode's real points,
    # and the real balls of one mode do not depend on the other (the modes are ~113 apart).
    centre = torch.full((8,), 20.0, dtype=torch.float64)
    real_a, real_b = gaussian(200, centre, seed=0), gaussian(200, -centre, seed=1)
    fake = gaussian(400, centre, seed=2)
    precision_one, recall_one = precision_recall(real_a, fake)
    precision, recall = precision_recall(torch.cat([real_a, real_b]), fake)
    assert precision == precision_one
    assert recall == recall_one / 2
    assert 0.4 <= recall <= 0.5 and precision >= 0.8


# --- against a direct computation -----------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_brute_force(k: int) -> None:
    rng = np.random.default_rng(k)
    real, fake = rng.normal(size=(30, 3)), rng.normal(0.3, 1.2, size=(25, 3))
    expected = brute_force(real, fake, k)
    for batch_size in (1024, 7):
        got = precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=k, batch_size=batch_size)
        assert got == expected


@pytest.mark.parametrize("batch_size", [1024, 5])
def test_ties_and_duplicates_far_from_the_origin_are_exact(batch_size: int) -> None:
    # Integer coordinates near 1e6: every distance is exact in float64, many are tied with a radius
    # (so `<=` decides), duplicates sit at distance 0; |a|^2 + |b|^2 - 2ab alone would get these wrong.
    rng = np.random.default_rng(0)
    real = rng.integers(0, 4, size=(40, 2)).astype(np.float64) + 1e6
    fake = np.concatenate([real[:10], rng.integers(0, 6, size=(20, 2)) + 1e6])
    for k in (1, 2, 3):
        expected = brute_force(real, fake, k)
        got = precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=k, batch_size=batch_size)
        assert got == expected


def test_float32_input_is_computed_in_float64() -> None:
    real = gaussian(60, torch.zeros(3, dtype=torch.float64), seed=0).float()
    fake = gaussian(50, torch.ones(3, dtype=torch.float64), seed=1).float()
    assert precision_recall(real, fake) == precision_recall(real.double(), fake.double())
    assert knn_radii(real).dtype == torch.float64


# --- radii ---------------------------------------------------------------------------------------


def test_knn_radii_on_a_line() -> None:
    line = torch.arange(10.0)[:, None]
    assert knn_radii(line, 1).tolist() == [1.0] * 10
    assert knn_radii(line, 2, batch_size=3).tolist() == [2.0] + [1.0] * 8 + [2.0]


def test_knn_radii_excludes_the_point_but_not_its_duplicate() -> None:
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    assert knn_radii(x, 1).tolist() == [0.0, 0.0, 5.0]


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("real", "fake"),
    [
        (torch.zeros(10), torch.zeros(10, 1)),  # not 2-D
        (torch.randn(10, 3), torch.randn(10, 4)),  # different d
        (torch.randn(3, 2), torch.randn(10, 2)),  # not more than k=3 points
        (torch.randn(10, 2), torch.randn(10, 2).index_fill_(0, torch.tensor([4]), float("nan"))),
    ],
)
def test_bad_features_raise_data_error(real: torch.Tensor, fake: torch.Tensor) -> None:
    with pytest.raises(DataError, match="precision/recall"):
        precision_recall(real, fake)


@pytest.mark.parametrize("options", [{"k": 0}, {"k": 2.5}, {"k": True}, {"batch_size": 0}])
def test_bad_options_raise_config_error(options: dict[str, object]) -> None:
    x = torch.randn(10, 2)
    with pytest.raises(ConfigError, match="precision/recall"):
        precision_recall(x, x, **options)


def test_knn_radii_needs_more_than_k_points() -> None:
    with pytest.raises(DataError, match="more than k=5"):
        knn_radii(torch.randn(5, 2), 5)
