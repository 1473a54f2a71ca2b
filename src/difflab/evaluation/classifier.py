"""A small CNN classifier whose features stand in for Inception's on digits and MNIST.

FID (Heusel et al. 2017) compares Inception-v3 pool features; for 8x8 digits and 28x28 MNIST a
classifier trained on the dataset itself is the usual offline substitute (its penultimate
activations give a Frechet distance, "FD"; its logits an Inception-style score, "IS"). The
project trains its own with ``scripts/train_classifier.py`` (deterministic) and ships the
weights in ``difflab/assets`` as safetensors, with the test accuracy in the file's metadata.

Architecture (input (B, 1, H, W) in [-1, 1]), ``blocks`` conv blocks with doubling width
(2 for 8x8 digits, 3 for 28x28 MNIST):

    block k: [conv3x3 -> ReLU] x2 (width 2^k) -> maxpool 2
    -> global average pool -> Linear -> ReLU  = features (B, num_features)
    -> Linear                                  = logits (B, num_classes)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from difflab.errors import CheckpointError, check_choice

ClassifierName = Literal["digits", "mnist"]
CLASSIFIERS: tuple[str, ...] = ("digits", "mnist")


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of a ``SmallCNN``; stored as string metadata beside its weights."""

    dataset: str
    image_size: int
    channels: int = 1
    width: int = 32
    blocks: int = 2
    num_features: int = 128
    num_classes: int = 10

    def metadata(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ClassifierConfig:
        ints = {"image_size", "channels", "width", "blocks", "num_features", "num_classes"}
        return cls(**{k: (int(meta[k]) if k in ints else meta[k]) for k in ("dataset", *sorted(ints))})


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions with ReLU, then 2x2 max pooling (halves H and W)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Conv blocks, global pooling, a feature layer and a linear classifier head."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.channels] + [config.width * 2**k for k in range(config.blocks)]
        self.body = nn.Sequential(*(conv_block(a, b) for a, b in zip(widths, widths[1:])))
        self.feature = nn.Sequential(nn.Linear(widths[-1], config.num_features), nn.ReLU())
        self.head = nn.Linear(config.num_features, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, num_features) of images (B, C, H, W) in [-1, 1]."""
        h = self.body(x).mean(dim=(2, 3))  # (B, C_last, H', W') -> (B, C_last)
        return self.feature(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes)."""
        return self.head(self.features(x))


def asset_path(name: ClassifierName) -> Path:
    """The shipped weights file of classifier ``name`` ("digits" or "mnist")."""
    check_choice("classifier", name, CLASSIFIERS)
    return Path(str(resources.files("difflab") / "assets" / f"classifier_{name}.safetensors"))


def save_classifier(model: SmallCNN, path: str | Path, **extra: str) -> None:
    """Write weights and config (plus ``extra`` metadata, e.g. the test accuracy) as safetensors."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={**model.config.metadata(), **extra})


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_classifier(name_or_path: ClassifierName | str | Path) -> SmallCNN:
    """A shipped classifier by name ("digits", "mnist") or one saved with ``save_classifier``, in eval mode."""
    path = asset_path(name_or_path) if name_or_path in CLASSIFIERS else Path(name_or_path)  # type: ignore[arg-type]
    if not path.is_file():
        raise CheckpointError(
            f"classifier weights {path} not found; run scripts/train_classifier.py to make them"
        )
    try:
        meta = read_metadata(path)
        model = SmallCNN(ClassifierConfig.from_metadata(meta))
        model.load_state_dict(load_file(str(path)))
    except (KeyError, RuntimeError, ValueError, OSError) as err:
        raise CheckpointError(f"{path} is not a difflab classifier file ({err})") from err
    return model.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    """Fraction of ``images`` (N, C, H, W) whose arg-max logit equals ``labels`` (N,)."""
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size])
        correct += (logits.argmax(1) == labels[start : start + batch_size]).sum().item()
    return correct / len(images)
