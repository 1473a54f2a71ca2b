"""Feature extractors for sample quality: one pass gives (features, logits) per image.

=============  ==========================================  ========================
name           network                                     features / logits
=============  ==========================================  ========================
digits-cnn     the project's SmallCNN for 8x8 digits        128 / 10
mnist-cnn      the project's SmallCNN for 28x28 MNIST       128 / 10
inception      Inception-v3, the standard FID network       2048 (pool3) / 1008
               (torch-fidelity, weights from a local file)
=============  ==========================================  ========================

The Frechet distance and KID use the features, the Inception Score the logits. Every
extractor takes images (B, C, H, W) in [-1, 1] and carries a ``fingerprint`` of its weights so
cached reference features are never mixed across weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from difflab.errors import ConfigError, check_choice
from difflab.evaluation.classifier import SmallCNN, asset_path, load_classifier

ExtractorName = Literal["digits-cnn", "mnist-cnn", "inception"]
EXTRACTORS: tuple[str, ...] = ("digits-cnn", "mnist-cnn", "inception")
INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"  # torch-fidelity's FID Inception-v3 file
DEFAULT_EXTRACTOR = {"digits": "digits-cnn", "mnist": "mnist-cnn"}  # anything else: inception


def file_fingerprint(path: str | Path) -> str:
    """First 16 hex digits of the SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class ClassifierExtractor(nn.Module):
    """Penultimate features and logits of a ``SmallCNN`` (Heusel et al. 2017's recipe, small)."""

    def __init__(self, classifier: SmallCNN, name: str, fingerprint: str) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.name, self.fingerprint = name, fingerprint

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.classifier.config
        expected = (cfg.channels, cfg.image_size, cfg.image_size)
        if tuple(images.shape[1:]) != expected:
            raise ConfigError(
                f"feature extractor '{self.name}' takes images of shape {expected}, got {tuple(images.shape[1:])}; "
                "choose the extractor that matches the dataset (digits-cnn: 1x8x8, mnist-cnn: 1x28x28)"
            )
        features = self.classifier.features(images.float())
        return features, self.classifier.head(features)


class InceptionExtractor(nn.Module):
    """Inception-v3 pool3 features and logits, as torch-fidelity computes them for FID and IS.

    Images in [-1, 1] become uint8 RGB (grayscale repeated), which the network resizes to 299.
    """

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        if importlib.util.find_spec("torch_fidelity") is None:
            raise ConfigError(
                "Inception features need the torch-fidelity package (pip install torch-fidelity) and the "
                f"standard FID weights file {INCEPTION_WEIGHTS} given with --inception-weights; "
                "on digits or MNIST use the offline extractors digits-cnn / mnist-cnn instead"
            )
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights)
        ).eval()
        self.name, self.fingerprint = "inception", file_fingerprint(weights)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        features, logits = self.net(pixels)
        return features.reshape(len(images), -1), logits.reshape(len(images), -1)


def make_extractor(name: ExtractorName, *, inception_weights: str | Path | None = None) -> nn.Module:
    """The named extractor; "inception" needs ``inception_weights``, a local copy of the FID weights."""
    check_choice("features", name, EXTRACTORS)
    if name == "inception":
        if inception_weights is None or not Path(inception_weights).is_file():
            raise ConfigError(
                f"Inception features need the standard FID weights file ({INCEPTION_WEIGHTS}) on disk; "
                f"pass its path with inception_weights= / --inception-weights (got {inception_weights!r}); "
                "nothing is downloaded"
            )
        return InceptionExtractor(inception_weights)
    dataset = name.removesuffix("-cnn")
    return ClassifierExtractor(load_classifier(dataset), name, file_fingerprint(asset_path(dataset)))  # type: ignore[arg-type]


def resolve_extractor(
    features: str | nn.Module | None, dataset: str, *, inception_weights: str | Path | None = None
) -> nn.Module:
    """An extractor by name, the dataset's default (None), or a user module used as is.

    A user module maps images (B, C, H, W) in [-1, 1] to (features (B, d), logits (B, K)) and
    has ``name`` and ``fingerprint`` strings (the reference cache is keyed on both).
    """
    if isinstance(features, nn.Module):
        missing = [a for a in ("name", "fingerprint") if not isinstance(getattr(features, a, None), str)]
        if missing:
            raise ConfigError(f"a custom feature extractor needs string attribute(s) {missing} (they key the reference cache)")
        return features
    return make_extractor(features or default_extractor(dataset), inception_weights=inception_weights)  # type: ignore[arg-type]


def default_extractor(dataset: str) -> ExtractorName:
    """digits -> digits-cnn, mnist -> mnist-cnn, anything else -> inception."""
    return DEFAULT_EXTRACTOR.get(dataset, "inception")  # type: ignore[return-value]


@torch.no_grad()
def extract(extractor: nn.Module, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, d), logits (N, K)) of images (N, C, H, W) in [-1, 1], float64, in batches."""
    parts = [extractor(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat([p[0] for p in parts]).double(), torch.cat([p[1] for p in parts]).double()
