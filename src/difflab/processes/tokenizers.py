"""The ``Tokenizer`` protocol: an encoder/decoder pair between images and a smaller latent grid.

Latent diffusion (Rombach et al. 2022, "High-resolution image synthesis with latent diffusion
models", Sec. 3) runs the diffusion process on ``u = E(x)`` instead of the pixels x and decodes
samples with ``x = D(u)`` (``difflab.processes.latent``). The tokenizers themselves (patch-wise
PCA, the trained autoencoders) live in the ``difflab.tokenizers`` layer, above the networks.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Tokenizer(Protocol):
    """An image encoder/decoder ``E``/``D`` with a latent of shape (B, d, H/f, W/f)."""

    kind: str

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> latents (B, d, H/f, W/f)."""
        ...

    def decode(self, u: torch.Tensor) -> torch.Tensor:
        """Latents (B, d, h, w) -> images (B, C, h f, w f)."""
        ...

    def latent_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The latent shape for images of ``shape`` (B, C, H, W)."""
        ...

    def config(self) -> dict[str, Any]:
        """JSON-safe constructor arguments."""
        ...

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every fitted or trained tensor, by name (saved as safetensors)."""
        ...

    def fit_to(self, images: torch.Tensor, generator: torch.Generator | None = None, **training: Any) -> Tokenizer:
        """A tokenizer of the same configuration fitted (PCA) or trained (autoencoders) on ``images``."""
        ...

