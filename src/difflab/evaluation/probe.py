"""Linear probing of frozen features: how linearly decodable are labels from a representation?

Protocol (the linear-probe evaluation of self-supervised learning, e.g. MAE (He et al. 2022) and
l-DAE (Chen et al. 2024, App. A), here with a closed-form-friendly classifier instead of SGD):

1. Features: a frozen network is run on (optionally noised) images at a fixed time t, and the
   output of one chosen layer is captured with a forward hook and average-pooled: tokens
   (B, N, C) over N (ViT encoder blocks), feature maps (B, C, H, W) over H and W (UNet
   bottleneck / decoder blocks).
2. Classifier: multinomial logistic regression (scikit-learn, L-BFGS) on features standardised
   with the mean and standard deviation of the training split, so the result does not depend
   on the scale of any feature.
3. Regularisation: the inverse strength C is chosen from ``CS`` by accuracy on a stratified
   validation split held out of the training split; the classifier is then refitted on the
   whole training split with that C and scored once on the test split.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

from difflab.errors import ConfigError, DataError

CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # inverse L2 strengths tried on the validation split


@dataclass(frozen=True)
class ProbeResult:
    """Test accuracy of a linear probe and how it was obtained."""

    accuracy: float
    C: float
    val_accuracy: float
    n_train: int
    n_val: int
    n_test: int
    dim: int

    def protocol(self) -> str:
        """One line that says how the number was measured."""
        return (
            f"logistic regression on {self.dim} standardised features; C={self.C:g} chosen on "
            f"{self.n_val} held-out training examples (val acc {self.val_accuracy:.4f}) from {list(CS)}, "
            f"refit on {self.n_train}, tested on {self.n_test}"
        )


def _fit_classifier(x: np.ndarray, y: np.ndarray, C: float, max_iter: int) -> tuple[StandardScaler, LogisticRegression]:
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    clf.fit(scaler.transform(x), y)
    return scaler, clf


def _accuracy(model: tuple[StandardScaler, LogisticRegression], x: np.ndarray, y: np.ndarray) -> float:
    scaler, clf = model
    return float((clf.predict(scaler.transform(x)) == y).mean())


def linear_probe(
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray,
    test_features: torch.Tensor | np.ndarray,
    test_labels: torch.Tensor | np.ndarray,
    *,
    val_fraction: float = 0.2,
    Cs: Sequence[float] = CS,
    seed: int = 0,
    max_iter: int = 500,
) -> ProbeResult:
    """Fit and score a linear probe with the protocol of this module's docstring."""
    x_tr, y_tr = np.asarray(train_features, dtype=np.float64), np.asarray(train_labels)
    x_te, y_te = np.asarray(test_features, dtype=np.float64), np.asarray(test_labels)
    if x_tr.ndim != 2 or x_te.ndim != 2 or x_tr.shape[1] != x_te.shape[1]:
        raise DataError(f"features must be (N, F) with the same F; got {x_tr.shape} and {x_te.shape}")
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise DataError("features and labels must have the same number of rows")
    if not 0 < val_fraction < 1 or not Cs:
        raise ConfigError(f"val_fraction={val_fraction} must be in (0, 1) and Cs non-empty")
    fit_x, val_x, fit_y, val_y = train_test_split(x_tr, y_tr, test_size=val_fraction, random_state=seed, stratify=y_tr)
    val_acc = [_accuracy(_fit_classifier(fit_x, fit_y, C, max_iter), val_x, val_y) for C in Cs]
    best = int(np.argmax(val_acc))  # first maximum: the strongest regularisation among ties
    final = _fit_classifier(x_tr, y_tr, Cs[best], max_iter)
    return ProbeResult(accuracy=_accuracy(final, x_te, y_te), C=float(Cs[best]), val_accuracy=val_acc[best],
                       n_train=len(x_tr), n_val=len(val_x), n_test=len(x_te), dim=x_tr.shape[1])


# --- features ------------------------------------------------------------------------------------
def probe_layers(model: nn.Module) -> list[nn.Module]:
    """The layers a probe may tap, in forward order: ViT blocks, or UNet down / middle / up blocks."""
    if isinstance(getattr(model, "blocks", None), nn.ModuleList):
        return list(model.blocks)
    if all(hasattr(model, name) for name in ("down", "middle", "up")):
        return [*model.down, model.middle, *model.up]
    raise ConfigError(f"{type(model).__name__} has no probe layers: expected a ViT (blocks) or a UNet (down/middle/up)")


def default_layer(model: nn.Module) -> int:
    """The ViT encoder's last block, or the UNet bottleneck (middle block)."""
    config = getattr(model, "config", None)
    if hasattr(config, "encoder_depth"):
        return config.encoder_depth - 1  # type: ignore[union-attr]
    if hasattr(model, "middle"):
        return len(model.down)  # type: ignore[arg-type]
    return len(probe_layers(model)) - 1


def pool(h: torch.Tensor) -> torch.Tensor:
    """Average-pool a layer output to (B, C): tokens (B, N, C) over N, maps (B, C, H, W) over H, W."""
    if h.ndim == 3:
        return h.mean(1)
    if h.ndim == 4:
        return h.mean((2, 3))
    return h.flatten(1)


InputFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images: torch.Tensor,
    *,
    t: float = 0.0,
    layer: int | None = None,
    prepare: InputFn | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Pooled output of layer ``layer`` of ``model`` for ``images``, shape (N, C), float32.

    The network is called as ``model(prepare(x, t_batch), t_batch)`` with every t equal to ``t``;
    ``prepare`` maps clean images to the network input (noising at t, encoding to a latent ...);
    by default the clean images are used. Only the hooked layer's output is kept.
    """
    layers = probe_layers(model)
    index = default_layer(model) if layer is None else layer
    if not -len(layers) <= index < len(layers):
        raise ConfigError(f"layer={layer} is out of range: {type(model).__name__} has {len(layers)} probe layers")
    captured: list[torch.Tensor] = []
    handle = layers[index].register_forward_hook(lambda module, args, out: captured.append(pool(out).float().cpu()))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size]
            t_batch = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
            model(x if prepare is None else prepare(x, t_batch), t_batch)
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(captured)


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    """The raw-pixel baseline: flattened images (N, C H W)."""
    return images.flatten(1).float()


def pca_features(train_images: torch.Tensor, test_images: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The PCA baseline: projections of flattened images on the top ``dim`` principal directions
    of the training images (capped at the rank available)."""
    x_tr, x_te = pixel_features(train_images).double(), pixel_features(test_images).double()
    mean = x_tr.mean(0)
    k = min(dim, x_tr.shape[0], x_tr.shape[1])
    _, _, vh = torch.linalg.svd(x_tr - mean, full_matrices=False)  # rows of vh: principal directions
    return ((x_tr - mean) @ vh[:k].T).float(), ((x_te - mean) @ vh[:k].T).float()


def random_network(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every weight matrix / kernel redrawn from N(0, 1 / fan-in) and every
    bias and norm parameter kept: the "randomly initialised network of the same architecture"
    baseline. Zero-initialised layers (adaLN-Zero, ADM's zero_module) are redrawn too, otherwise
    their blocks would be the identity and the baseline would not be random features."""
    clone = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clone.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * p[0].numel() ** -0.5)
    return clone.eval()
