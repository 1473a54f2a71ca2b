"""Diffusion in a tokenizer's latent space, and the noise levels of l-DAE.

Latent diffusion (Rombach et al. 2022, Sec. 3.3) is the ordinary Gaussian process applied to
``u_0 = E(x_0)``: ``u_t = alpha_t u_0 + sigma_t eps`` with eps ~ N(0, I) of the latent shape
(B, d, H/f, W/f). ``LatentDiffusion`` wraps any diagonal Gaussian process (identity basis there)
together with the tokenizer, so every sampler, loss and closed-form check of the core runs
unchanged on latents; images come back with ``decode``::

    latent = LatentDiffusion(GaussianDiffusion(), pca)
    loss = diffusion_loss(model, latent, latent.encode(x0))
    x = latent.decode(difflab.sample(model, latent, latent.latent_shape(x0.shape)))

This sidesteps the core's assumption of an orthonormal *square* basis: a PCA tokenizer with
d < C p^2 is a projection (orthonormal rows), so noise is drawn in the d-dimensional latent,
never in pixel space.

``DAEDiffusion`` holds the noise levels of Chen, Liu, Xie & He (2024, "Deconstructing denoising
diffusion models for self-supervised learning"):

================  ==========================================  ================================
noise             alpha_t, sigma_t                            paper
================  ==========================================  ================================
linear_gamma2     gamma_t^2 = 1 - t (linear in t), VP         Sec. 4.1 "replace noise schedule",
                                                              Fig. 3: more capacity on cleaner
                                                              images than DDPM's linear betas
linear_sigma      gamma_t = 1, sigma_t = sigma_max t          Sec. 4.3 "remove input scaling"
                  (sigma_max = sqrt 2)
single            gamma_t = 1, sigma_t = sigma_single         Sec. 4.3 "single noise level"
                  (sqrt(1/3)) for every t
================  ==========================================  ================================

(The paper writes gamma_t for the signal scale called alpha_t here.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from difflab.errors import ConfigError, check_choice
from difflab.processes.bases import Basis, IdentityBasis
from difflab.processes.diffusion import DiagonalGaussianProcess
from difflab.processes.tokenizers import Tokenizer


class LatentDiffusion(DiagonalGaussianProcess):
    """``process`` run on the latents of ``tokenizer``; data tensors are latents (B, d, h, w)."""

    kind: ClassVar[str] = "latent"

    def __init__(self, process: DiagonalGaussianProcess, tokenizer: Tokenizer) -> None:
        if isinstance(process, LatentDiffusion):
            raise ConfigError("LatentDiffusion cannot wrap another LatentDiffusion; wrap its inner process")
        self.process = process
        self.tokenizer = tokenizer
        self.basis: Basis = process.basis

    def alpha_sigma(self, t: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The inner process's (alpha, sigma) for latents of ``shape``."""
        return self.process.alpha_sigma(t, shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> clean latents u_0 (B, d, h, w)."""
        return self.tokenizer.encode(x)

    def decode(self, u: torch.Tensor) -> torch.Tensor:
        """Latents (B, d, h, w) -> images (B, C, H, W)."""
        return self.tokenizer.decode(u)

    def latent_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Latent shape for images of ``shape``: pass it to ``difflab.sample``."""
        return self.tokenizer.latent_shape(tuple(shape))

    def config(self) -> dict[str, Any]:
        """``{"kind": "latent", "process": ..., "tokenizer": ...}``; the tokenizer's tensors are
        saved apart with ``save_tokenizer``."""
        return {
            "kind": self.kind,
            "process": self.process.config(),
            "tokenizer": {"kind": self.tokenizer.kind, **self.tokenizer.config()},
        }

    def __repr__(self) -> str:
        return f"LatentDiffusion({self.process!r}, {self.tokenizer.kind})"


NoiseLevels = Literal["linear_gamma2", "linear_sigma", "single"]
NOISE_LEVELS: tuple[str, ...] = ("linear_gamma2", "linear_sigma", "single")


@dataclass(frozen=True)
class DAEDiffusion(DiagonalGaussianProcess):
    """The noise levels of l-DAE (Chen et al. 2024, Secs. 4.1 and 4.3); identity basis.

    ``t`` is clipped to [t_eps, 1 - t_eps] ("linear_gamma2") or [t_eps, 1] ("linear_sigma") so
    that alpha_t > 0 and sigma_t > 0 (the paper's range 1 > gamma_t^2 >= 0).
    """

    kind: ClassVar[str] = "dae"
    noise: NoiseLevels = "linear_gamma2"
    sigma_max: float = math.sqrt(2.0)  # Sec. 4.3: sigma_t linear from 0 to sqrt(2)
    sigma_single: float = math.sqrt(1.0 / 3.0)  # Sec. 4.3: the fixed noise level
    t_eps: float = 1e-4
    basis: Basis = field(default_factory=IdentityBasis, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_choice("noise", self.noise, NOISE_LEVELS)
        if self.sigma_max <= 0 or self.sigma_single <= 0 or not 0 < self.t_eps < 0.5:
            raise ConfigError(
                f"DAEDiffusion needs sigma_max > 0, sigma_single > 0 and 0 < t_eps < 0.5; got "
                f"sigma_max={self.sigma_max}, sigma_single={self.sigma_single}, t_eps={self.t_eps}"
            )

    def alpha_sigma(self, t: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        t = t.double().reshape((t.shape[0],) + (1,) * (len(shape) - 1))  # (B, 1, ..., 1)
        if self.noise == "linear_gamma2":
            gamma2 = 1.0 - t.clamp(self.t_eps, 1.0 - self.t_eps)
            return gamma2.sqrt(), (1.0 - gamma2).sqrt()
        ones = torch.ones_like(t)
        if self.noise == "linear_sigma":
            return ones, self.sigma_max * t.clamp(self.t_eps, 1.0)
        return ones, self.sigma_single * ones


