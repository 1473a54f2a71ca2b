"""``PatchPCA``: a patch-wise PCA tokenizer fitted to images (the l-DAE tokenizer).

Latent diffusion (Rombach et al. 2022, "High-resolution image synthesis with latent diffusion
models", Sec. 3) runs the diffusion process on ``u = E(x)`` instead of the pixels x and decodes
samples with ``x = D(u)``. Chen, Liu, Xie & He (2024, "Deconstructing denoising diffusion models
for self-supervised learning", Sec. 4.2) show that a patch-wise PCA suffices as E:

    u = V (x_patch - mu),      x_patch ~= V^T u + mu,      V V^T = I_d   (their Sec. 4.2)

Notation (paper symbol -> name here):

================  ================  ===================================================
symbol            name              meaning
================  ================  ===================================================
p                 ``patch_size``    side of a square patch, in pixels
D                 ``patch_dim``     C p^2, the dimension of a flattened patch
d                 ``components``    number of principal components kept (latent channels)
V (d x D)         ``basis[:d]``     rows: orthonormal principal directions
mu                ``mean``          mean patch (zero if ``center=False``)
lambda_i          ``variances``     variance of the data along row i of the full basis
================  ================  ===================================================

Layouts: images are (B, C, H, W); a patch grid is (B, D, H/p, W/p) with channel index
``c p^2 + i p + j`` (``torch.nn.functional.pixel_unshuffle``); latents are (B, d, H/p, W/p).
Saved with ``difflab.tokenizers.save_tokenizer`` like every tokenizer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from difflab.errors import CheckpointError, ConfigError, DataError
from difflab.nn.checks import check_divisible


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C p^2, H/p, W/p): every non-overlapping p x p patch as a vector."""
    check_divisible(tuple(x.shape), patch_size, "patchify")
    return F.pixel_unshuffle(x, patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C p^2, h, w) -> (B, C, h p, w p), the exact inverse of ``patchify``."""
    return F.pixel_shuffle(patches, patch_size)


def patch_rows(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """All patches of a batch as rows of a matrix: (B, C, H, W) -> (B H W / p^2, C p^2)."""
    grid = patchify(x, patch_size)  # (B, D, h, w)
    return grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])  # (B h w, D)


# --- patch-wise PCA --------------------------------------------------------------------------
class PatchPCA:
    """Patch-wise PCA tokenizer (Chen et al. 2024, Sec. 4.2): ``u = W V (patch - mu)`` per patch.

    ``basis`` is the full D x D orthonormal eigenbasis of the patch covariance, rows sorted by
    decreasing variance; the tokenizer keeps the first ``components`` rows. With ``whiten``,
    W = diag(lambda_i + eps)^(-1/2) scales each latent channel to unit variance; otherwise W = I
    and ``decode(encode(x))`` is the orthogonal projection of each centred patch onto span(V).
    With ``components == patch_dim`` the round trip is exact.
    """

    kind = "patch_pca"

    def __init__(
        self,
        basis: torch.Tensor,
        mean: torch.Tensor,
        variances: torch.Tensor,
        *,
        patch_size: int,
        components: int,
        whiten: bool = False,
        eps: float = 1e-6,
    ) -> None:
        patch_dim = basis.shape[-1]
        if basis.shape != (patch_dim, patch_dim) or mean.shape != (patch_dim,) or variances.shape != (patch_dim,):
            raise CheckpointError(
                f"PatchPCA needs basis (D, D), mean (D,), variances (D,); got {tuple(basis.shape)}, "
                f"{tuple(mean.shape)}, {tuple(variances.shape)}"
            )
        check_components(components, patch_dim)
        if patch_dim % (patch_size * patch_size):
            raise CheckpointError(f"patch_dim={patch_dim} is not C * {patch_size}^2 for patch_size={patch_size}")
        # contiguous: a fitted basis (a transposed view) and a loaded one must give bit-identical products
        self.basis, self.mean, self.variances = (v.double().contiguous() for v in (basis, mean, variances))
        self.patch_size, self.components, self.whiten, self.eps = patch_size, components, whiten, eps

    # --- fitting ------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        images: torch.Tensor,
        *,
        patch_size: int,
        components: int,
        whiten: bool = False,
        center: bool = True,
        max_patches: int | None = None,
        generator: torch.Generator | None = None,
    ) -> PatchPCA:
        """PCA of all p x p patches of ``images`` (N, C, H, W) by eigendecomposition (float64).

        ``max_patches`` subsamples that many patches at random (with ``generator``), as the paper
        does on "a large set of randomly sampled patches". ``center=False`` keeps mu = 0.
        """
        if images.ndim != 4 or images.shape[0] == 0:
            raise DataError(f"PatchPCA.fit needs a non-empty batch of images (N, C, H, W); got {tuple(images.shape)}")
        rows = patch_rows(images.double(), patch_size)  # (P, D)
        check_components(components, rows.shape[1])
        if max_patches is not None and max_patches < rows.shape[0]:
            rows = rows[torch.randperm(rows.shape[0], generator=generator)[:max_patches]]
        mean = rows.mean(0) if center else torch.zeros(rows.shape[1], dtype=torch.float64)
        centred = rows - mean
        cov = centred.T @ centred / rows.shape[0]  # (D, D)
        variances, vectors = torch.linalg.eigh(cov)  # ascending, columns are eigenvectors
        order = torch.argsort(variances, descending=True)
        basis = canonical_signs(vectors[:, order].T)  # (D, D), rows sorted by variance
        return cls(basis, mean, variances[order].clamp(min=0.0), patch_size=patch_size,
                   components=components, whiten=whiten)

    @classmethod
    def unfitted(cls, config: dict[str, Any], channels: int) -> PatchPCA:
        """A placeholder before ``fit_to``: the pixel basis (u = the first d pixels of each patch),
        zero mean, unit variances. ``config`` is ``config()``: patch_size, components, whiten, eps."""
        patch_dim = channels * config["patch_size"] ** 2
        check_components(config["components"], patch_dim)
        eye = torch.eye(patch_dim, dtype=torch.float64)
        return cls(eye, torch.zeros(patch_dim, dtype=torch.float64), torch.ones(patch_dim, dtype=torch.float64),
                   **config)

    def fit_to(self, images: torch.Tensor, generator: torch.Generator | None = None, **training: Any) -> PatchPCA:
        """A PCA of the same size fitted to all patches of ``images`` (``training`` options unused)."""
        return PatchPCA.fit(images, patch_size=self.patch_size, components=self.components, whiten=self.whiten,
                            generator=generator)

    # --- coordinates --------------------------------------------------------------------------
    @property
    def patch_dim(self) -> int:
        """D = C p^2."""
        return self.basis.shape[0]

    @property
    def channels(self) -> int:
        """Image channels C."""
        return self.patch_dim // (self.patch_size * self.patch_size)

    def scale(self) -> torch.Tensor:
        """Per-component whitening factor W_ii, shape (d,), float64 (ones without whitening)."""
        if not self.whiten:
            return torch.ones(self.components, dtype=torch.float64)
        return (self.variances[: self.components] + self.eps).rsqrt()

    def _operators(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(V, mu, W) cast to ``like``'s device and dtype."""
        kw = {"device": like.device, "dtype": like.dtype}
        return self.basis[: self.components].to(**kw), self.mean.to(**kw), self.scale().to(**kw)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """u = W V (patch - mu): (B, C, H, W) -> (B, d, H/p, W/p)."""
        v, mu, w = self._operators(x)
        grid = patchify(x, self.patch_size) - mu[:, None, None]  # (B, D, h, w)
        return torch.einsum("kD,bDhw->bkhw", v, grid) * w[:, None, None]

    def decode(self, u: torch.Tensor) -> torch.Tensor:
        """x = unpatchify(V^T W^-1 u + mu): (B, d, h, w) -> (B, C, h p, w p)."""
        if u.ndim != 4 or u.shape[1] != self.components:
            raise DataError(f"PatchPCA.decode needs latents (B, {self.components}, h, w); got {tuple(u.shape)}")
        v, mu, w = self._operators(u)
        grid = torch.einsum("kD,bkhw->bDhw", v, u / w[:, None, None]) + mu[:, None, None]  # (B, D, h, w)
        return unpatchify(grid, self.patch_size)

    def full_coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """r = V_full patch(x) in the full D x D basis, no centring or whitening: (B, D, H/p, W/p).

        Used for the per-component weighted loss of l-DAE (Chen et al. 2024, Eq. 4) on residuals.
        """
        grid = patchify(x, self.patch_size)  # (B, D, h, w)
        return torch.einsum("kD,bDhw->bkhw", self.basis.to(x.device, x.dtype), grid)

    def latent_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        check_divisible(tuple(shape), self.patch_size, "PatchPCA")
        if shape[1] != self.channels:
            raise DataError(f"PatchPCA was fitted on {self.channels}-channel images; got shape {tuple(shape)}")
        return (shape[0], self.components, shape[2] // self.patch_size, shape[3] // self.patch_size)

    def explained_variance(self) -> float:
        """Fraction of the patch variance kept by the first d components."""
        total = float(self.variances.sum())
        return float(self.variances[: self.components].sum()) / total if total > 0 else 1.0

    # --- persistence --------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"patch_size": self.patch_size, "components": self.components, "whiten": self.whiten, "eps": self.eps}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"basis": self.basis, "mean": self.mean, "variances": self.variances}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> PatchPCA:
        missing = sorted({"basis", "mean", "variances"} - set(tensors))
        if missing:
            raise CheckpointError(f"PatchPCA tokenizer file lacks tensor(s) {missing}; re-fit and save it")
        return cls(tensors["basis"], tensors["mean"], tensors["variances"], **config)


def check_components(components: int, patch_dim: int) -> None:
    """Raise ``ConfigError`` unless 1 <= components <= patch_dim."""
    if not 1 <= components <= patch_dim:
        raise ConfigError(f"components={components} must be in [1, {patch_dim}] (the patch dimension C p^2)")


def canonical_signs(rows: torch.Tensor) -> torch.Tensor:
    """Flip each row so that its largest-magnitude entry is positive (eigenvectors' sign is arbitrary)."""
    idx = rows.abs().argmax(dim=1, keepdim=True)
    return rows * torch.sign(rows.gather(1, idx))
