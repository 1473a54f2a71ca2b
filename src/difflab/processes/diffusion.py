"""Gaussian forward processes that are diagonal in an orthonormal basis.

Every process here has the marginal (Hoogeboom & Salimans 2023, Eq. 6)

    u_t = alpha_t (.) u_0 + sigma_t eps,      u = B(x),  eps ~ N(0, I),

with alpha_t a scalar or one value per basis coefficient and sigma_t a scalar. Posteriors,
losses, samplers and likelihoods are written once against this form.

Notation (paper symbol -> name here):

====================  ===============  =============================================
symbol                name             meaning
====================  ===============  =============================================
x, z_t                ``x0``, ``z_t``  clean image, noisy image (pixel space)
u_0, u_t              ``u_0``, ``u_t`` the same in basis coordinates, u = B(x)
alpha_t, sigma_t      ``alpha_sigma``  marginal scales; alpha (B,1,H,W) or (B,1,1,1)
lambda_t              ``logsnr``       log(alpha_t^2 / sigma_t^2), per coefficient
alpha_{t|s}           ``alpha_ts``     alpha_t / alpha_s
sigma^2_{t|s}         ``sigma2_ts``    sigma_t^2 - alpha_{t|s}^2 sigma_s^2
delta                 ``delta``        clipping constant of the paper's denoise step
====================  ===============  =============================================

Shapes: data tensors are (B, C, H, W) (any trailing layout for the identity basis); alpha is
(B, 1, H, W) for per-frequency processes and (B, 1, 1, 1) otherwise; sigma is (B, 1, 1, 1).
Schedules are computed in float64 and cast to the data's dtype at the point of use.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

from difflab.errors import ConfigError, check_choice
from difflab.processes.bases import (
    Basis,
    DCTBasis,
    IdentityBasis,
    dct_frequencies_squared,
)
from difflab.processes.noise import Generator, standard_normal
from difflab.processes.schedules import (
    SCHEDULES,
    CosineLogSNR,
    ScheduleName,
    alpha_sigma_from_logsnr,
    make_schedule,
)

DELTA = 1e-8  # the paper's clipping constant in the denoising posterior (Hoogeboom & Salimans 2023, Alg. 2)


def _scalar_shape(t: torch.Tensor, shape: tuple[int, ...]) -> tuple[int, ...]:
    """(B, 1, ..., 1) with as many trailing ones as ``shape`` has non-batch axes."""
    return (t.shape[0],) + (1,) * (len(shape) - 1)


class DiagonalGaussianProcess(ABC):
    """Base class: ``u_t = alpha_t (.) u_0 + sigma_t eps`` in ``self.basis``.

    Subclasses define ``basis`` and ``alpha_sigma``; the rest (diffusion, posterior, prior,
    logSNR and its time derivative) is shared.
    """

    kind: ClassVar[str]
    basis: Basis
    default_family: ClassVar[str] = "diffusion"
    """The model family (``difflab.models.FAMILIES``) whose objective and sampler this process
    was designed for; ``model.family: auto`` in a training config picks it."""
    denoiser_samplers: ClassVar[bool] = True
    """Whether the denoiser-based samplers and likelihoods of ``difflab.samplers`` apply."""

    # --- the one thing a subclass defines -------------------------------------------------
    @abstractmethod
    def alpha_sigma(self, t: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 (alpha, sigma) at times ``t`` (B,) for data of shape ``shape`` = (B, C, H, W).

        alpha broadcasts against basis coefficients (B, 1, H, W) or (B, 1, 1, 1); sigma is
        (B, 1, 1, 1).
        """

    # --- coordinates ----------------------------------------------------------------------
    def to_basis(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel space -> basis coefficients u = B(x)."""
        return self.basis.forward(x)

    def from_basis(self, u: torch.Tensor) -> torch.Tensor:
        """Basis coefficients -> pixel space x = B^T(u)."""
        return self.basis.inverse(u)

    def coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, sigma) at ``t`` cast to ``like``'s dtype and device."""
        alpha, sigma = self.alpha_sigma(t.to(like.device), tuple(like.shape))
        return alpha.to(like.dtype), sigma.to(like.dtype)

    # --- signal-to-noise ------------------------------------------------------------------
    def logsnr(self, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """lambda_t = log(alpha_t^2 / sigma_t^2) per coefficient, float64."""
        alpha, sigma = self.alpha_sigma(t, shape)
        return 2.0 * (torch.log(alpha) - torch.log(sigma))

    def dlogsnr_dt(self, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """d lambda_t / dt per coefficient (float64), exact by forward-mode autodiff."""
        t = t.double()
        _, tangent = torch.func.jvp(lambda tt: self.logsnr(tt, shape), (t,), (torch.ones_like(t),))
        return tangent

    # --- forward process ------------------------------------------------------------------
    def diffuse(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z_t = B^T(alpha_t (.) B(x0)) + sigma_t noise, with ``noise`` ~ N(0, I) in pixel space.

        Since B is orthonormal, B(noise) is N(0, I) too, so this is the marginal q(z_t | x0).
        """
        alpha, sigma = self.coefficients(t, x0)
        return self.from_basis(alpha * self.to_basis(x0)) + sigma * noise

    def prior_sample(
        self,
        shape: tuple[int, ...],
        *,
        generator: Generator = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z_1 ~ N(0, sigma_1^2 I), the (approximate) marginal at t = 1, in pixel space.

        ``noise`` (standard normal, of ``shape``) may be given for reproducibility.
        """
        if noise is None:
            noise = standard_normal(shape, generator, device=device, dtype=dtype)
        t1 = torch.ones(shape[0], dtype=torch.float64, device=noise.device)
        _, sigma = self.coefficients(t1, noise)
        return sigma * noise

    # --- reverse-time posterior -----------------------------------------------------------
    def transition(
        self, t: torch.Tensor, s: torch.Tensor, shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 (alpha_{t|s}, sigma^2_{t|s}) of q(u_t | u_s) for s < t."""
        alpha_t, sigma_t = self.alpha_sigma(t, shape)
        alpha_s, sigma_s = self.alpha_sigma(s, shape)
        alpha_ts = alpha_t / alpha_s
        return alpha_ts, sigma_t**2 - alpha_ts**2 * sigma_s**2

    def posterior(
        self, u_t: torch.Tensor, u_0: torch.Tensor, t: torch.Tensor, s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(u_s | u_t, u_0) in the basis, for s < t.

        Hoogeboom & Salimans (2023), Eq. 8 and Alg. 2 ("denoise"), with their clipping delta
        (sigma^2_{t|s} is clipped at delta too):
        ``var = 1 / max(1 / max(sigma_s^2, delta) + alpha_{t|s}^2 / sigma^2_{t|s}, delta)`` and
        ``mean = var (alpha_{t|s} / sigma^2_{t|s} u_t + alpha_s / max(sigma_s^2, delta) u_0)``.
        For the identity basis this is DDPM's posterior (Ho et al. 2020, Eq. 7).
        """
        shape = tuple(u_t.shape)
        alpha_ts, sigma2_ts = self.transition(t.to(u_t.device), s.to(u_t.device), shape)
        sigma2_ts = sigma2_ts.clamp(min=DELTA)  # 0 where a frequency neither decays nor gains noise (heat: DC)
        alpha_s, sigma_s = self.alpha_sigma(s.to(u_t.device), shape)
        sigma2_s = (sigma_s**2).clamp(min=DELTA)
        var = 1.0 / (1.0 / sigma2_s + alpha_ts**2 / sigma2_ts).clamp(min=DELTA)
        coef_t = (var * alpha_ts / sigma2_ts).to(u_t.dtype)
        coef_0 = (var * alpha_s / sigma2_s).to(u_t.dtype)
        return coef_t * u_t + coef_0 * u_0, var.to(u_t.dtype)

    # --- state fitted to data (none by default) -------------------------------------------
    def fit(self, batches: torch.Tensor | Iterable[torch.Tensor]) -> DiagonalGaussianProcess:
        """This process with its data-dependent state fitted to ``batches``; most have none."""
        return self

    def fitted_state(self) -> dict[str, torch.Tensor]:
        """The fitted tensors (saved with a model); {} when the process has none."""
        return {}

    def with_fitted_state(self, tensors: dict[str, torch.Tensor]) -> DiagonalGaussianProcess:
        """This process with ``fitted_state()`` tensors restored (as read from a model artefact)."""
        return self

    @property
    def needs_fit(self) -> bool:
        """Whether the process lacks state that only data can provide (sampling needs it)."""
        return False

    # --- persistence ----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """A plain dict that ``build_process`` turns back into an equal process."""
        return {"kind": self.kind, **{f.name: getattr(self, f.name) for f in fields(self) if f.init}}  # type: ignore[arg-type]


@dataclass(frozen=True)
class GaussianDiffusion(DiagonalGaussianProcess):
    """Isotropic variance-preserving diffusion: identity basis, scalar alpha (DDPM / VP).

    ``schedule="cosine"``: the logSNR-clipped cosine of Hoogeboom & Salimans (2023);
    ``schedule="linear"``: DDPM's linear betas 1e-4 -> 0.02 over T = 1000 (Ho et al. 2020);
    ``schedule="flow"``: the flow-matching interpolant x_t = (1 - t) x_0 + t eps, rescaled to
    variance-preserving and logSNR-clipped as the cosine (``schedules.FlowLogSNR``); train it
    with ``prediction="flow"`` (eps - x_0) and logit-normal times for rectified flow (Esser et al. 2024).
    """

    kind: ClassVar[str] = "gaussian"
    schedule: ScheduleName = "cosine"
    logsnr_min: float = -10.0  # cosine and flow: lambda(1); sigma_1^2 ~ 1 - 4.5e-5
    logsnr_max: float = 10.0  # cosine and flow: lambda(0)
    basis: Basis = field(default_factory=IdentityBasis, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_choice("schedule", self.schedule, SCHEDULES)
        object.__setattr__(
            self, "_schedule", make_schedule(self.schedule, logsnr_min=self.logsnr_min, logsnr_max=self.logsnr_max)
        )

    def alpha_sigma(self, t: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        logsnr = self._schedule.logsnr(t).reshape(_scalar_shape(t, shape))  # type: ignore[attr-defined]
        return alpha_sigma_from_logsnr(logsnr)


@dataclass(frozen=True)
class BlurringDiffusion(DiagonalGaussianProcess):
    """Blurring diffusion (Hoogeboom & Salimans, ICLR 2023): heat flow plus noise in the DCT basis.

    Per frequency (i, j) of an H x W image (Sec. 3 and App. A of the paper):

    - sigma_B(t) = sigma_blur_max * sin^2(pi t / 2), tau_t = sigma_B(t)^2 / 2
    - lambda_ij = (pi i / H)^2 + (pi j / W)^2
    - d_t = (1 - min_d) exp(-lambda_ij tau_t) + min_d
    - alpha_t = a_t d_t and sigma_t from the clipped cosine logSNR (a_t^2 = sigmoid(logSNR)).

    ``sigma_blur_max = 0`` gives ``GaussianDiffusion("cosine")``.
    """

    kind: ClassVar[str] = "blurring"
    sigma_blur_max: float = 20.0  # pixels; the paper's best CIFAR-10 value (Table 1)
    min_d: float = 0.001  # floor on the frequency scaling so alpha_t never reaches 0
    logsnr_min: float = -10.0
    logsnr_max: float = 10.0
    basis: Basis = field(default_factory=DCTBasis, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.sigma_blur_max < 0 or not 0 < self.min_d <= 1:
            raise ConfigError(
                f"BlurringDiffusion needs sigma_blur_max >= 0 and 0 < min_d <= 1; "
                f"got sigma_blur_max={self.sigma_blur_max}, min_d={self.min_d}"
            )
        object.__setattr__(self, "_schedule", CosineLogSNR(self.logsnr_min, self.logsnr_max))

    def dissipation_time(self, t: torch.Tensor) -> torch.Tensor:
        """tau_t = sigma_B(t)^2 / 2 with sigma_B(t) = sigma_blur_max sin^2(pi t / 2)."""
        sigma_b = self.sigma_blur_max * torch.sin(0.5 * math.pi * t.double()) ** 2
        return 0.5 * sigma_b**2

    def frequency_scaling(self, t: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """d_t = (1 - min_d) exp(-lambda tau_t) + min_d, shape (B, 1, H, W), float64."""
        lam = dct_frequencies_squared(height, width).to(t.device)
        tau = self.dissipation_time(t).reshape(-1, 1, 1, 1)
        return (1.0 - self.min_d) * torch.exp(-lam * tau) + self.min_d

    def alpha_sigma(self, t: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(shape) < 3:
            raise ConfigError(f"BlurringDiffusion needs image data (B, C, H, W); got shape {tuple(shape)}")
        a, sigma = alpha_sigma_from_logsnr(self._schedule.logsnr(t).reshape(-1, 1, 1, 1))  # type: ignore[attr-defined]
        d = self.frequency_scaling(t, shape[-2], shape[-1])
        return a * d, sigma
