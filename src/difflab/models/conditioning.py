"""What a model is conditioned on: one spec for every conditioning input.

A ``Conditioning`` lists the model's inputs besides (z_t, t) -- class labels today; text
embeddings or a low-resolution image with its augmentation level are further
``ConditionInput`` kinds -- and is the one place that

- builds default conditions for sampling (``default``: labels 0, 1, ..., K-1, 0, ...),
- turns conditions into their unconditional "null" version (``null``, used by classifier-free
  guidance, Ho & Salimans 2022),
- drops conditions at random during training so the null version is learnt (``drop``).

A condition dict maps input names to per-example tensors, e.g. ``{"class_labels": y}`` (B,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

from difflab.errors import ConfigError
from difflab.processes.noise import Generator
from difflab.samplers.guidance import LABEL_KEY, class_labels


class ConditionInput(Protocol):
    """One conditioning input of a model (``key`` names it in the condition dict)."""

    key: ClassVar[str]

    def null_like(self, value: torch.Tensor) -> torch.Tensor: ...
    def default(self, n: int) -> torch.Tensor: ...
    def check(self, value: torch.Tensor, n: int) -> None: ...
    def config(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ClassLabels:
    """Integer class labels in [0, num_classes); label ``num_classes`` is the null label (``difflab.nn``)."""

    num_classes: int
    key: ClassVar[str] = LABEL_KEY

    def null_like(self, value: torch.Tensor) -> torch.Tensor:
        return torch.full_like(value, self.num_classes)

    def default(self, n: int) -> torch.Tensor:
        """0, 1, ..., K-1, 0, ... (every class equally often, up to one; class i % K for sample i)."""
        return class_labels(range(self.num_classes), n, self.num_classes)

    def check(self, value: torch.Tensor, n: int) -> None:
        if tuple(value.shape) != (n,) or value.dtype != torch.long:
            raise ConfigError(f"class_labels must be an int64 tensor of shape ({n},); got {value.dtype} {tuple(value.shape)}")

    def config(self) -> dict[str, Any]:
        return {"kind": self.key, "num_classes": self.num_classes}


INPUT_KINDS: dict[str, type] = {LABEL_KEY: ClassLabels}  # config "kind" -> input class


@dataclass(frozen=True)
class Conditioning:
    """The model's conditioning inputs and how they are dropped for guidance training.

    ``drop_prob``: probability that an example's conditions are all replaced by their null
    version during training (Ho & Salimans 2022 use 0.1-0.2); 0 = never.
    """

    inputs: tuple[ClassLabels, ...] = ()
    drop_prob: float = 0.0

    @classmethod
    def classes(cls, num_classes: int | None, drop_prob: float = 0.0) -> Conditioning:
        """Class-conditional with ``num_classes`` classes (None: unconditional)."""
        return cls((ClassLabels(num_classes),) if num_classes is not None else (), drop_prob)

    @property
    def is_conditional(self) -> bool:
        return bool(self.inputs)

    @property
    def num_classes(self) -> int | None:
        """The number of classes of the class-label input, or None."""
        return next((i.num_classes for i in self.inputs if isinstance(i, ClassLabels)), None)

    def null(self, cond: dict[str, Any]) -> dict[str, Any]:
        """``cond`` with every input replaced by its null version (a ``NullCond`` for ``guided``)."""
        missing = [i.key for i in self.inputs if cond.get(i.key) is None]
        if missing:
            raise ConfigError(f"classifier-free guidance needs the conditioning input(s) {missing}: "
                              f"pass cond={{'{missing[0]}': ...}}")
        return {**cond, **{i.key: i.null_like(cond[i.key]) for i in self.inputs}}

    def drop(self, cond: dict[str, torch.Tensor] | None, generator: Generator) -> dict[str, torch.Tensor] | None:
        """Training: each example's conditions become null with probability ``drop_prob`` (one draw per example)."""
        if cond is None or self.drop_prob == 0 or not self.inputs:
            return cond
        first = cond[self.inputs[0].key]
        u = torch.rand(first.shape[0], generator=generator, device=first.device)
        dropped = dict(cond)
        for i in self.inputs:
            value = cond[i.key]
            mask = (u < self.drop_prob).reshape(-1, *([1] * (value.dim() - 1)))
            dropped[i.key] = torch.where(mask, i.null_like(value), value)
        return dropped

    def resolve(self, n: int, cond: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        """The conditions of n samples: ``cond`` checked, missing inputs filled with their defaults."""
        if not self.inputs:
            if cond:
                raise ConfigError(f"this model is unconditional; it takes no conditioning inputs (got {sorted(cond)})")
            return None
        cond = dict(cond or {})
        unknown = sorted(set(cond) - {i.key for i in self.inputs})
        if unknown:
            raise ConfigError(f"unknown conditioning input(s) {unknown}; this model takes {[i.key for i in self.inputs]}")
        for i in self.inputs:
            if cond.get(i.key) is None:
                cond[i.key] = i.default(n)
            i.check(cond[i.key], n)
        return cond

    def config(self) -> dict[str, Any]:
        return {"inputs": [i.config() for i in self.inputs], "drop_prob": self.drop_prob}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Conditioning:
        inputs = []
        for item in config.get("inputs", []):
            fields = dict(item)
            kind = fields.pop("kind", None)
            if kind not in INPUT_KINDS:
                raise ConfigError(f"unknown conditioning input kind {kind!r}; known: {sorted(INPUT_KINDS)}")
            inputs.append(INPUT_KINDS[kind](**fields))
        return cls(tuple(inputs), float(config.get("drop_prob", 0.0)))


def slice_cond(cond: dict[str, torch.Tensor] | None, start: int, stop: int,
               device: torch.device | str | None = None) -> dict[str, torch.Tensor] | None:
    """Rows start:stop of every per-example condition, on ``device``."""
    if cond is None:
        return None
    return {k: v[start:stop].to(device) for k, v in cond.items()}


__all__ = ["ClassLabels", "ConditionInput", "Conditioning", "slice_cond"]
