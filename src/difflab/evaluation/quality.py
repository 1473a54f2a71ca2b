"""Sample quality from features: Frechet distance, KID and Inception Score, computed by torchmetrics.

The arithmetic is torchmetrics' own (``FrechetInceptionDistance``, ``KernelInceptionDistance``,
``InceptionScore``); each metric gets a pass-through ``feature=`` module because the features
(and logits) are extracted once per image by ``difflab.evaluation.features`` and the reference
side comes from a cache. Metrics and their papers:

- FD / FID: ``|mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2})`` (Heusel et al. 2017);
- KID: unbiased MMD^2 with the cubic polynomial kernel over random subsets (Binkowski et al. 2018);
- IS: ``exp E_x KL(p(y|x) || p(y))`` over splits (Salimans et al. 2016).

torchmetrics is imported inside each function (it takes seconds to import). The subset draws of KID and the split shuffle of IS use torch's default generator inside
torchmetrics, so they run under ``torch.random.fork_rng`` seeded with the caller's ``seed``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from difflab.errors import DataError
from difflab.evaluation.features import extract

CACHE_DIR_ENV = "DIFFLAB_CACHE_DIR"


class PassThrough(nn.Module):
    """The identity as a torchmetrics ``feature=`` module: inputs are already features (B, d)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _check_features(name: str, real: torch.Tensor, fake: torch.Tensor, minimum: int = 2) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise DataError(f"{name}: features must be (N, d) with the same d; got {tuple(real.shape)} and {tuple(fake.shape)}")
    if min(len(real), len(fake)) < minimum:
        raise DataError(f"{name} needs at least {minimum} samples on each side; got {len(real)} and {len(fake)}")


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, d) and (M, d)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_features("Frechet distance", real, fake)
    metric = FrechetInceptionDistance(feature=PassThrough(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_distance(
    real: torch.Tensor, fake: torch.Tensor, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID (mean, std over ``subsets`` random subsets of min(subset_size, N, M) samples)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_features("KID", real, fake)
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # "will save all extracted features": that is the point here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=PassThrough(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score(logits: torch.Tensor, *, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Inception Score (mean, std over ``splits``) of class logits (N, K)."""
    from torchmetrics.image.inception import InceptionScore

    if logits.ndim != 2 or len(logits) < splits:
        raise DataError(f"Inception Score needs logits (N, K) with N >= splits={splits}; got {tuple(logits.shape)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=PassThrough(logits.shape[1]), splits=splits)
    metric.update(logits.double())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


# --- reference statistics cache -------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$DIFFLAB_CACHE_DIR/reference`` or ``~/.cache/difflab/reference``."""
    root = os.environ.get(CACHE_DIR_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "difflab") / "reference"


def tensor_fingerprint(x: torch.Tensor) -> str:
    """First 16 hex digits of the SHA-256 of a tensor's float32 bytes and shape."""
    digest = hashlib.sha256(str(tuple(x.shape)).encode())
    digest.update(x.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def reference_features(
    images: torch.Tensor,
    extractor: nn.Module,
    *,
    dataset: str,
    split: str,
    cache_dir: str | Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of the reference images, cached per dataset x extractor x split.

    The cache file ``<cache_dir>/<dataset>-<split>-<extractor>.safetensors`` records the
    extractor's weight fingerprint, the image count and a hash of the images; any mismatch
    recomputes it.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"{dataset}-{split}-{extractor.name}.safetensors"
    expected = {"fingerprint": extractor.fingerprint, "count": str(len(images)), "images": tensor_fingerprint(images)}
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        if all(meta.get(k) == v for k, v in expected.items()):
            stored = load_file(str(path))
            return stored["features"], stored["logits"]
    features, logits = extract(extractor, images)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"features": features.contiguous(), "logits": logits.contiguous()}, str(tmp),
              metadata={**expected, "dataset": dataset, "split": split, "extractor": extractor.name})
    tmp.replace(path)
    return features, logits
