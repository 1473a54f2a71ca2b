"""Inverse heat dissipation (IHDM): Rissanen, Heinonen & Solin, "Generative Modelling With
Inverse Heat Dissipation", ICLR 2023.

The forward process runs the heat equation ``du/dtau = Laplacian(u)`` (Neumann boundaries)
on the image and adds a small constant noise (Sec. 2 and Eq. 3 of the paper):

    u_k = F(tau_k) u_0 + sigma eps,      F(tau) = V^T diag(exp(-lambda tau)) V,

where V is the orthonormal 2-D DCT and ``lambda_ij = (pi i / H)^2 + (pi j / W)^2``. In the DCT
basis this is ``u_k = alpha_k (.) u_0 + sigma eps`` with ``alpha_k = exp(-lambda tau_k)`` per
frequency: a ``DiagonalGaussianProcess`` with per-frequency alpha and constant sigma, so the
shared posterior, losses and likelihood code apply to it unchanged.

Blur schedule (the paper's Sec. 4 and its released code): K levels with blur widths
``sigma_B,k`` geometric from ``sigma_B,min`` to ``sigma_B,max`` (k = 1..K) and
``tau_k = sigma_B,k^2 / 2``; level 0 is the data (tau_0 = 0). A Gaussian blur of width
sigma_B equals heat flow for time sigma_B^2 / 2.

Level <-> time mapping used by difflab (time t in [0, 1], as for every process):

========================  =============================================================
level k = 0, 1, ..., K    t = k / K
t in [1/K, 1]             sigma_B(t) = sigma_B,min (sigma_B,max / sigma_B,min)^((tK - 1)/(K - 1))
t in [0, 1/K]             tau(t) = (tK) tau_1: linear from 0, so t = 0 is the identity F = I
========================  =============================================================

The generative model learns ``u_{k-1} ~ f(u_k)`` (see ``difflab.objectives.heat``); its prior
p(u_K) depends on the data: ``process.fit(images)`` returns the process with a fitted
``HeatPrior`` (``fit_heat_prior``), its state, which a model artefact saves beside the weights,
so ``prior_sample`` needs no dataset.

Notation (paper symbol -> name here):

==================  ===================  ==============================================
symbol              name                 meaning
==================  ===================  ==============================================
K                   ``K``                number of blur levels
sigma_B,min/max     ``sigma_blur_min``,  blur widths (pixels) of levels 1 and K
                    ``sigma_blur_max``
sigma               ``sigma``            training noise std (0.01 in the paper)
tau_k               ``dissipation_time``  heat-equation time sigma_B,k^2 / 2
lambda_ij           ``dct_frequencies_squared``  Laplacian eigenvalue of DCT frequency (i, j)
==================  ===================  ==============================================
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from difflab.errors import CheckpointError, ConfigError, DataError
from difflab.processes.bases import Basis, DCTBasis, dct_frequencies_squared
from difflab.processes.diffusion import DiagonalGaussianProcess
from difflab.processes.noise import Generator, standard_normal


@dataclass(frozen=True)
class HeatDissipation(DiagonalGaussianProcess):
    """IHDM's forward process: heat flow in the DCT basis plus constant noise ``sigma``.

    Defaults are the paper's MNIST setting (K = 100, sigma_B,max = 20); CIFAR-10 uses
    K = 200, sigma_B,max = 24. Level k is time t = k / K (module docstring).
    """

    kind: ClassVar[str] = "heat"
    default_family: ClassVar[str] = "ihdm"  # trained by predicting the less-blurred level (objectives.heat)
    denoiser_samplers: ClassVar[bool] = False  # the network predicts the next level, not a denoiser
    K: int = 100
    sigma_blur_min: float = 0.5
    sigma_blur_max: float = 20.0
    sigma: float = 0.01
    basis: Basis = field(default_factory=DCTBasis, init=False, repr=False, compare=False)
    prior: HeatPrior | None = field(default=None, init=False, repr=False, compare=False)
    """p(u_K), fitted to data by ``fit`` (None until then); saved inside a model as fitted state."""

    def __post_init__(self) -> None:
        if not isinstance(self.K, int) or self.K < 2:
            raise ConfigError(f"HeatDissipation needs an integer K >= 2 blur levels; got K={self.K!r}")
        if not 0 < self.sigma_blur_min <= self.sigma_blur_max:
            raise ConfigError(
                f"HeatDissipation needs 0 < sigma_blur_min <= sigma_blur_max; got "
                f"sigma_blur_min={self.sigma_blur_min}, sigma_blur_max={self.sigma_blur_max}"
            )
        if not self.sigma > 0:
            raise ConfigError(f"HeatDissipation needs noise sigma > 0 (the paper uses 0.01); got sigma={self.sigma}")

    # --- schedule ---------------------------------------------------------------------------
    def level_times(self) -> torch.Tensor:
        """t_k = k / K for k = 0..K, float64, shape (K + 1,)."""
        return torch.arange(self.K + 1, dtype=torch.float64) / self.K

    def blur_width(self, t: torch.Tensor) -> torch.Tensor:
        """sigma_B(t) in pixels, float64: geometric on [1/K, 1], sqrt(2 tau(t)) below."""
        return torch.sqrt(2.0 * self.dissipation_time(t))

    def dissipation_time(self, t: torch.Tensor) -> torch.Tensor:
        """tau(t): sigma_B,k^2 / 2 at t = k / K (k >= 1), linear from tau(0) = 0 to tau_1."""
        pos = t.double() * self.K  # continuous level index in [0, K]
        frac = ((pos - 1.0) / (self.K - 1)).clamp(min=0.0)
        log_width = math.log(self.sigma_blur_min) + frac * math.log(self.sigma_blur_max / self.sigma_blur_min)
        tau_geometric = 0.5 * torch.exp(2.0 * log_width)
        tau_1 = 0.5 * self.sigma_blur_min**2
        return torch.where(pos >= 1.0, tau_geometric, pos.clamp(min=0.0) * tau_1)

    def alpha_sigma(self, t: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha = exp(-lambda tau(t)) per frequency (B, 1, H, W); sigma constant (B, 1, 1, 1)."""
        if len(shape) < 3:
            raise ConfigError(f"HeatDissipation needs image data (B, C, H, W); got shape {tuple(shape)}")
        lam = dct_frequencies_squared(shape[-2], shape[-1]).to(t.device)
        tau = self.dissipation_time(t).reshape(-1, 1, 1, 1)
        alpha = torch.exp(-lam * tau)
        sigma = torch.full_like(tau, self.sigma)
        return alpha, sigma

    # --- deterministic heat flow ------------------------------------------------------------
    def blur(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """F(tau(t)) x: the noise-free heat-equation solution at time t (B,), pixel space."""
        alpha, _ = self.coefficients(t, x)
        return self.from_basis(alpha * self.to_basis(x))

    # --- the fitted prior p(u_K): state of the process ---------------------------------------
    def fit(self, batches: torch.Tensor | Iterable[torch.Tensor]) -> HeatDissipation:
        """This process with its prior p(u_K) fitted to image ``batches`` (``fit_heat_prior``)."""
        return self.with_prior(fit_heat_prior(self, batches))

    def with_prior(self, prior: HeatPrior) -> HeatDissipation:
        """A copy of this process that samples its prior from ``prior``."""
        if prior.process != self:
            raise ConfigError(f"the prior was fitted for {prior.process}, not for {self}")
        fitted = copy.copy(self)
        object.__setattr__(fitted, "prior", prior)
        return fitted

    @property
    def needs_fit(self) -> bool:
        return self.prior is None

    def fitted_state(self) -> dict[str, torch.Tensor]:
        if self.prior is None:
            return {}
        return {f"prior.{name}": getattr(self.prior, name) for name in PRIOR_TENSORS}

    def with_fitted_state(self, tensors: dict[str, torch.Tensor]) -> HeatDissipation:
        found = {name: tensors[f"prior.{name}"] for name in PRIOR_TENSORS if f"prior.{name}" in tensors}
        if not found:
            return self
        if len(found) != len(PRIOR_TENSORS):
            raise CheckpointError(f"the heat prior needs tensors {list(PRIOR_TENSORS)}; found only {sorted(found)}")
        return self.with_prior(HeatPrior(process=self, **found))

    def prior_sample(
        self,
        shape: tuple[int, ...],
        *,
        generator: Generator = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """u_K ~ p(u_K) from the fitted prior, pixel space (B, C, H, W); ``noise`` as in ``HeatPrior.sample``."""
        if self.prior is None:
            raise ConfigError("this HeatDissipation has no prior fitted to data: use process.fit(images) "
                              "(difflab train fits it and saves it inside the model)")
        if tuple(self.prior.mean.shape) != tuple(shape[1:]):
            raise ConfigError(f"the prior was fitted on images of shape {tuple(self.prior.mean.shape)}; "
                              f"requested {tuple(shape[1:])}")
        return self.prior.sample(shape[0], generator=generator, noise=noise, device=device, dtype=dtype)


# --- the prior p(u_K) ---------------------------------------------------------------------------

LOW_ALPHA = 1e-3  # frequencies with alpha_K above this "survive" the blur and get a full covariance
PRIOR_TENSORS = ("mean", "var", "low_index", "low_cov")


@dataclass
class HeatPrior:
    """p(u_K): a Gaussian fitted to the level-K blurred data, plus the process noise sigma.

    In the DCT basis, every coefficient has its own mean and variance (``mean``, ``var``,
    shape (C, H, W)). The few frequencies that survive the blur (alpha_K > ``LOW_ALPHA``, at
    every channel) are also correlated with each other, e.g. the RGB means of an image, so
    they get a full covariance ``low_cov`` (m, m) over the flat indices ``low_index`` (m,)
    into (C, H, W). Sampling adds the forward process's noise: ``u_K = F_K u_0 + sigma eps``
    (Rissanen et al. 2023, Sec. 2: "blurred training images at level K plus noise").
    """

    mean: torch.Tensor
    var: torch.Tensor
    low_index: torch.Tensor
    low_cov: torch.Tensor
    process: HeatDissipation

    def sample(
        self,
        n: int,
        *,
        generator: Generator = None,
        noise: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """n draws of u_K in pixel space, shape (n, C, H, W).

        ``noise`` (standard normal, (n, C, H, W)) may be given for reproducibility; it is
        used as the basis-space innovation.
        """
        shape = (n, *self.mean.shape)
        if noise is None:
            noise = standard_normal(shape, generator, device=device, dtype=dtype)
        if tuple(noise.shape) != shape:
            raise ConfigError(f"prior noise has shape {tuple(noise.shape)}; expected {shape}")
        xi = noise.double().flatten(1)  # (n, C*H*W)
        mean, var = self.mean.double().flatten().to(xi.device), self.var.double().flatten().to(xi.device)
        total_var = var + self.process.sigma**2
        u = mean + total_var.sqrt() * xi
        if self.low_index.numel():
            idx = self.low_index.to(xi.device)
            eye = torch.eye(idx.numel(), dtype=torch.float64, device=xi.device)
            chol = torch.linalg.cholesky(self.low_cov.double().to(xi.device) + self.process.sigma**2 * eye)
            u[:, idx] = mean[idx] + xi[:, idx] @ chol.T
        return self.process.from_basis(u.reshape(shape)).to(noise.dtype)

    def save(self, path: str | Path) -> None:
        """Write to a safetensors file (tensors plus the process config in the metadata)."""
        from safetensors.torch import save_file

        tensors = {"mean": self.mean, "var": self.var, "low_index": self.low_index, "low_cov": self.low_cov}
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(tensors, str(path), metadata={"kind": "heat_prior", "process": json.dumps(self.process.config())})

    @classmethod
    def load(cls, path: str | Path) -> HeatPrior:
        """Read a prior written by ``save``; raises ``CheckpointError`` on a wrong or broken file."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"heat prior file {path} does not exist; fit one with fit_heat_prior and .save()")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except Exception as err:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"cannot read heat prior {path}: {err}") from err
        missing = {"mean", "var", "low_index", "low_cov"} - set(tensors)
        if meta.get("kind") != "heat_prior" or missing:
            raise CheckpointError(f"{path} is not a difflab heat prior (kind={meta.get('kind')!r}, missing {sorted(missing)})")
        config = json.loads(meta["process"])
        if config.pop("kind", None) != HeatDissipation.kind:
            raise CheckpointError(f"{path} was not fitted for a 'heat' process (its process: {meta['process']})")
        try:
            process = HeatDissipation(**config)
        except (TypeError, ConfigError) as err:
            raise CheckpointError(f"{path} holds an invalid heat process config: {err}") from None
        return cls(process=process, **tensors)


def fit_heat_prior(process: HeatDissipation, batches: torch.Tensor | Iterable[torch.Tensor]) -> HeatPrior:
    """Fit p(u_K) to data: moments of the DCT coefficients of the level-K blurred images.

    ``batches``: one tensor (N, C, H, W) or an iterable of such batches (pixel space, the
    scaling used in training, e.g. [-1, 1]). One pass, float64, shifted by the first batch's
    mean for accuracy; only the diagonal and the surviving low-frequency block are kept.
    """
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    n, shape, shift, low = 0, None, None, None
    s1 = s2 = s_low = None
    for x in batches:
        if x.ndim != 4 or (shape is not None and tuple(x.shape[1:]) != shape):
            raise DataError(f"fit_heat_prior needs image batches (N, C, H, W) of one shape; got {tuple(x.shape)}")
        x = x.double()
        t_K = torch.ones(1, dtype=torch.float64, device=x.device)
        alpha, _ = process.alpha_sigma(t_K, tuple(x.shape))
        u = (alpha * process.to_basis(x)).flatten(1)  # (N, C*H*W) level-K coefficients, noise-free
        if shape is None:
            shape, shift = tuple(x.shape[1:]), u.mean(0)
            low = (alpha.expand(1, *shape).flatten() > LOW_ALPHA).nonzero().flatten()
            s1, s2 = torch.zeros_like(shift), torch.zeros_like(shift)
            s_low = torch.zeros(low.numel(), low.numel(), dtype=torch.float64, device=x.device)
        d = u - shift
        s1, s2 = s1 + d.sum(0), s2 + (d**2).sum(0)
        s_low = s_low + d[:, low].T @ d[:, low]
        n += u.shape[0]
    if n < 2:
        raise DataError(f"fit_heat_prior needs at least 2 images; got {n}")
    d_mean = s1 / n
    var = (s2 - n * d_mean**2) / (n - 1)
    low_cov = (s_low - n * torch.outer(d_mean[low], d_mean[low])) / (n - 1)
    return HeatPrior(
        mean=(shift + d_mean).reshape(shape).cpu(),
        var=var.clamp(min=0).reshape(shape).cpu(),
        low_index=low.cpu(),
        low_cov=low_cov.cpu(),
        process=process,
    )
