"""The latent denoising autoencoder (l-DAE) objective of Chen, Liu, Xie & He (2024).

"Deconstructing denoising diffusion models for self-supervised learning", Secs. 4.3-4.4: the
clean image x_0 is projected to the patch-PCA latent u_0 = E(x_0), noised there,

    u_t = gamma_t u_0 + sigma_t eps,      eps ~ N(0, I) of the latent shape (B, d, h, w),

and the network predicts the clean data from it. ``space`` selects the step of their Tab. 3:

=============  ==============================  =================================================
space          network input -> target          loss per example
=============  ==============================  =================================================
latent         u_t -> u_0                       lambda_t mean (u_0 - net)^2           ("predict
                                                clean data", "remove input scaling")
inverse_pca    D(u_t) -> D(u_0)                 lambda_t mean (D(u_0) - net)^2 in pixels
                                                ("operate on image input/output with inv. PCA")
image          D(u_t) -> x_0                    lambda_t sum_i w_i r_i^2 / (number of pixels),
                                                r = V (x_0 - net) per patch in the full PCA
                                                basis, w_i = 1 for i <= d and ``residual_weight``
                                                (0.1) beyond: their Eq. 4 ("predict original
                                                image", the final l-DAE)
=============  ==============================  =================================================

D is the inverse PCA (``tokenizer.decode``). The weight is lambda_t = gamma_t^2 / (gamma_t^2 +
sigma_t^2): it equals the paper's gamma_t^2 for variance-preserving noise and 1 / (1 + sigma_t^2)
once gamma_t = 1 (Sec. 4.3); ``weighting="uniform"`` uses lambda_t = 1.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from difflab.errors import ConfigError, check_choice
from difflab.objectives.losses import sample_times
from difflab.processes import DiagonalGaussianProcess, Tokenizer
from difflab.tokenizers import PatchPCA

LDAESpace = Literal["latent", "inverse_pca", "image"]
LDAE_SPACES: tuple[str, ...] = ("latent", "inverse_pca", "image")
LDAEWeighting = Literal["dae", "uniform"]
LDAE_WEIGHTINGS: tuple[str, ...] = ("dae", "uniform")


def dae_weight(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """lambda_t = alpha^2 / (alpha^2 + sigma^2): gamma_t^2 (VP) or 1 / (1 + sigma_t^2) (gamma = 1)."""
    return alpha**2 / (alpha**2 + sigma**2)


def weighted_residual(tokenizer: PatchPCA, residual: torch.Tensor, residual_weight: float) -> torch.Tensor:
    """sum_i w_i r_i^2 per example over patches, divided by the pixel count (Eq. 4): shape (B,)."""
    r = tokenizer.full_coordinates(residual)  # (B, D, h, w)
    w = torch.full((r.shape[1],), residual_weight, dtype=r.dtype, device=r.device)
    w[: tokenizer.components] = 1.0
    return (w[:, None, None] * r**2).flatten(1).sum(1) / residual[0].numel()


def ldae_loss(
    model: Any,
    process: DiagonalGaussianProcess,
    tokenizer: Tokenizer,
    x0: torch.Tensor,
    *,
    space: LDAESpace = "image",
    weighting: LDAEWeighting = "dae",
    residual_weight: float = 0.1,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    cond: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Per-example l-DAE loss, shape (B,), for images ``x0`` (B, C, H, W).

    ``process`` acts on latents (identity basis, e.g. ``DAEDiffusion``); ``noise`` has the latent
    shape; ``t`` (B,) and ``noise`` are drawn with ``generator`` when not given.
    """
    check_choice("space", space, LDAE_SPACES)
    check_choice("weighting", weighting, LDAE_WEIGHTINGS)
    if space == "image" and not isinstance(tokenizer, PatchPCA):
        raise ConfigError("space='image' weights residuals in the full PCA basis: it needs a PatchPCA tokenizer")
    # 1. Clean latent and its noisy version, u_t = gamma_t u_0 + sigma_t eps.
    u_0 = tokenizer.encode(x0)  # (B, d, h, w)
    if t is None:
        t = sample_times(x0.shape[0], generator=generator, device=x0.device)
    if noise is None:
        noise = torch.randn(u_0.shape, generator=generator, device=u_0.device, dtype=u_0.dtype)
    u_t = process.diffuse(u_0, t, noise)
    # 2. Predict the clean data from the latent or from its inverse-PCA image.
    net_input = u_t if space == "latent" else tokenizer.decode(u_t)
    pred = model(net_input, t.to(x0.dtype), **(cond or {}))
    # 3. Squared error in the chosen space, per example.
    if space == "latent":
        err = (pred - u_0).pow(2).flatten(1).mean(1)
    elif space == "inverse_pca":
        err = (pred - tokenizer.decode(u_0)).pow(2).flatten(1).mean(1)
    else:
        err = weighted_residual(tokenizer, x0 - pred, residual_weight)  # type: ignore[arg-type]
    if weighting == "uniform":
        return err
    alpha, sigma = process.alpha_sigma(t.to(x0.device), tuple(u_0.shape))
    return dae_weight(alpha, sigma).flatten().to(err.dtype) * err
