"""Orthonormal bases in which a forward process is diagonal.

A basis is an invertible linear map ``u = B(x)`` with ``B^T B = I``. Because it is
orthonormal, standard normal noise in pixel space is standard normal in the basis, and
squared errors are the same in both. Two bases ship here:

========== =================================================================
basis      use
========== =================================================================
identity   isotropic Gaussian diffusion (DDPM / VP, Ho et al. 2020)
dct        blurring diffusion and heat dissipation (Hoogeboom & Salimans 2023;
           Rissanen et al. 2023): heat flow is diagonal in the DCT-II basis
========== =================================================================

Both act on the last two axes (H, W) of a (..., H, W) tensor.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Protocol

import torch


class Basis(Protocol):
    """An orthonormal change of coordinates on images of shape (..., H, W)."""

    name: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel space -> basis coefficients (same shape)."""
        ...

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        """Basis coefficients -> pixel space (same shape)."""
        ...


class IdentityBasis:
    """The standard basis: coefficients are pixels."""

    name = "identity"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        return u


@lru_cache(maxsize=32)
def _dct_matrix_f64(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix C (n x n), float64 on CPU.

    ``C[k, m] = s_k cos(pi (2m + 1) k / (2n))`` with ``s_0 = sqrt(1/n)`` and
    ``s_k = sqrt(2/n)``; rows are the cosine basis vectors, so ``C @ C.T = I``.
    """
    m = torch.arange(n, dtype=torch.float64)
    k = m[:, None]
    c = torch.cos(math.pi * (2 * m[None, :] + 1) * k / (2 * n))
    scale = torch.full((n, 1), math.sqrt(2.0 / n), dtype=torch.float64)
    scale[0] = math.sqrt(1.0 / n)
    return c * scale


def dct_matrix(n: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The orthonormal DCT-II matrix of size n, on ``device`` in ``dtype``."""
    return _dct_matrix_f64(n).to(device=device, dtype=dtype)


class DCTBasis:
    """Orthonormal 2-D DCT-II over the last two axes (scipy's ``dctn(norm="ortho")``).

    ``U = C_H X C_W^T`` and ``X = C_H^T U C_W``; exact inverse, differentiable, any H != W.
    Coefficient ``U[..., i, j]`` has spatial frequency ``(pi i / H, pi j / W)``.
    """

    name = "dct"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c_h = dct_matrix(x.shape[-2], device=x.device, dtype=x.dtype)
        c_w = dct_matrix(x.shape[-1], device=x.device, dtype=x.dtype)
        return c_h @ x @ c_w.T

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        c_h = dct_matrix(u.shape[-2], device=u.device, dtype=u.dtype)
        c_w = dct_matrix(u.shape[-1], device=u.device, dtype=u.dtype)
        return c_h.T @ u @ c_w


def dct_frequencies_squared(height: int, width: int) -> torch.Tensor:
    """lambda_ij = (pi i / H)^2 + (pi j / W)^2, shape (H, W), float64.

    The eigenvalues of the (negated) discrete Laplacian with Neumann boundaries in the DCT
    basis, as used by the heat equation in Rissanen et al. (2023) and by blurring diffusion
    (Hoogeboom & Salimans 2023, Sec. 3).
    """
    f_h = math.pi * torch.arange(height, dtype=torch.float64) / height
    f_w = math.pi * torch.arange(width, dtype=torch.float64) / width
    return f_h[:, None] ** 2 + f_w[None, :] ** 2
