"""Nested training state (optimizer, scaler, RNG ...) as safetensors + JSON, without pickle.

``flatten(state)`` splits any nest of dicts, lists, tuples, tensors and JSON scalars into a
JSON-safe skeleton and a flat ``{name: tensor}`` dict; each tensor is replaced in the
skeleton by ``{"__tensor__": name}``. Dicts with non-string keys (a torch optimizer's
``state`` is keyed by parameter index) become ``{"__items__": [[key, value], ...]}`` and
tuples ``{"__tuple__": [...]}``, so ``unflatten`` restores the exact structure and types.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from difflab.errors import CheckpointError

JSONScalar = (str, int, float, bool, type(None))


def flatten(state: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON skeleton, tensors) of ``state``; tensor names are dotted paths from ``prefix``."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, prefix, tensors)
    return skeleton, tensors


def _flatten(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _flatten(v, f"{path}.{k}", tensors) for k, v in value.items()}
        return {"__items__": [[k, _flatten(v, f"{path}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}  # JSON has no inf/nan
    if isinstance(value, JSONScalar):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {path!r} in a checkpoint (no pickles)")


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``flatten``. A missing tensor is a ``CheckpointError``."""
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if set(skeleton) == {"__tensor__"}:
        name = skeleton["__tensor__"]
        if name not in tensors:
            raise CheckpointError(f"state.safetensors has no tensor {name!r} that state.json refers to")
        return tensors[name]
    if set(skeleton) == {"__items__"}:
        return {_key(k): unflatten(v, tensors) for k, v in skeleton["__items__"]}
    if set(skeleton) == {"__tuple__"}:
        return tuple(unflatten(v, tensors) for v in skeleton["__tuple__"])
    if set(skeleton) == {"__float__"}:
        return float(skeleton["__float__"])
    return {k: unflatten(v, tensors) for k, v in skeleton.items()}


def _key(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key
