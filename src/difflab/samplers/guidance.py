"""Classifier-free guidance (Ho & Salimans 2022) as a model wrapper.

A class-conditional network trained with labels randomly replaced by a "null" label gives
both ``pred_c = model(z, t, class_labels=y)`` and ``pred_u = model(z, t, class_labels=null)``.
Guidance with weight w samples from ``pred = pred_u + w (pred_c - pred_u)``:

=====  ==========================================================
w      meaning
=====  ==========================================================
0      unconditional model
1      conditional model (no guidance)
> 1    guided: Ho & Salimans' ``(1 + w') eps_c - w' eps_u`` with w' = w - 1
=====  ==========================================================

The combination is in prediction space. Since (u_0, eps) are affine in the prediction at
fixed z_t (``processes.predictions``), guiding eps, x0 or v predictions is the same thing.
Networks in ``difflab.nn`` reserve label ``num_classes`` as the null label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from difflab.errors import ConfigError
from difflab.samplers.denoiser import ModelFn

LABEL_KEY = "class_labels"
NullCond = Callable[[dict[str, Any]], dict[str, Any]]  # conditioning -> its unconditional ("null") version


def null_labels(null_label: int) -> NullCond:
    """The ``NullCond`` of a class-conditional network: every class label becomes ``null_label``."""

    def null(cond: dict[str, Any]) -> dict[str, Any]:
        if cond.get(LABEL_KEY) is None:
            raise ConfigError("classifier-free guidance needs class labels: pass cond={'class_labels': y}")
        return {**cond, LABEL_KEY: torch.full_like(cond[LABEL_KEY], null_label)}

    return null


def _stack(value: Any, null_value: Any, batch: int) -> Any:
    """[cond; uncond] along the batch for per-example tensors (leading dim = batch); else as is."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return torch.cat([value, null_value])
    return value


def guided(model: ModelFn, w: float, null: int | NullCond) -> ModelFn:
    """``model`` with classifier-free guidance weight ``w``: ``pred_u + w (pred_c - pred_u)``.

    ``null`` turns the conditioning into the unconditional one: a null class label (int), or
    any ``NullCond`` (e.g. ``difflab.models.Conditioning.null`` for several inputs). Both
    passes run as one batch of 2B; w = 0 and w = 1 need one pass only and return the
    unconditional and conditional predictions exactly (``torch.lerp`` is exact at its end points).
    """
    w = float(w)
    uncond = null_labels(null) if isinstance(null, int) else null

    def guided_model(z_t: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        null_cond = uncond(cond)
        if w == 0.0:
            return model(z_t, t, **null_cond)
        if w == 1.0:
            return model(z_t, t, **cond)
        batch = z_t.shape[0]
        stacked = {key: _stack(value, null_cond[key], batch) for key, value in cond.items()}
        pred = model(torch.cat([z_t, z_t]), torch.cat([t, t]), **stacked)
        pred_c, pred_u = pred[:batch], pred[batch:]  # (B, ...) each
        return torch.lerp(pred_u, pred_c, w)

    return guided_model


def null_label_of(model: ModelFn) -> int:
    """The null label of a ``difflab.nn`` network: ``model.config.num_classes``."""
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    if not isinstance(num_classes, int):
        raise ConfigError(
            "guidance needs a class-conditional model (config.num_classes set) or an explicit null_label=..."
        )
    return num_classes


def class_labels(
    classes: int | Sequence[int] | range | torch.Tensor,
    batch: int,
    null_label: int,
) -> torch.Tensor:
    """Labels (B,) int64: one class for all, or a sequence repeated to fill the batch.

    The one label builder of difflab: ``range(K)`` gives 0, 1, ..., K-1, 0, ... (one class per
    column of a K-wide grid, every class equally often up to one), the default of sampling,
    evaluation and grid tuning (``difflab.models.Conditioning``).
    """
    labels = torch.as_tensor(list(classes) if isinstance(classes, range) else classes, dtype=torch.long).reshape(-1)
    if labels.numel() == 0:
        raise ConfigError("no class labels given; pass a class index in [0, num_classes)")
    if int(labels.min()) < 0 or int(labels.max()) >= null_label:
        raise ConfigError(
            f"class labels must lie in [0, {null_label - 1}] ({null_label} is the null label); got {labels.tolist()}"
        )
    return labels.repeat(-(-batch // labels.numel()))[:batch]
