"""``CLDModel``: critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis, ICLR 2022).

A ``CLD`` process in phase space (``difflab.processes.cld``), a denoiser network that sees
(x_t, v_t / sqrt(M)) stacked on the channels (2C in, C out) and predicts alpha, the velocity
noise eps_v, trained by hybrid score matching (``objectives.hsm_loss``), and the CLD samplers
(``samplers.cld``: SSCS, Euler-Maruyama, probability-flow ODE) on difflab's time grids.

Mixed score (Sec. 3.4): alpha = v_t / (ell_t Sigma_t^vv) + the network, where Sigma_t^vv is the
velocity variance at t for data N(0, I); the first term is the exact answer for such data (up to
the x-v correlation), so the network learns the residual, which is small at large t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from difflab.errors import ConfigError, check_choice
from difflab.likelihood.cld import cld_nll_bound
from difflab.models.base import Batch, OptionsModel
from difflab.nn import DENOISER_CONFIGS, config_to_dict
from difflab.objectives import CLD_WEIGHTINGS, hsm_loss
from difflab.processes.cld import CLD
from difflab.processes.noise import Generator, PerSampleGenerator, standard_normal
from difflab.samplers.cld import CLD_SAMPLERS, cld_score_calls
from difflab.samplers.grids import quadratic_grid, uniform_grid

CLD_GRIDS = {"quadratic": quadratic_grid, "uniform": uniform_grid}
SAMPLE_DEFAULTS: dict[str, Any] = {"sampler": "sscs", "steps": 50, "grid": "quadratic"}


@dataclass(frozen=True)
class CLDOptions:
    """The ``model`` section of a CLD run (besides ``family: cld``); defaults: the paper's CIFAR-10 setting."""

    mass: float = 0.25
    """M (M^-1 = 4 in the paper); the damping is critical, Gamma = 2 sqrt(M)."""
    beta: float = 4.0
    """beta, the SDE's time scale (constant)."""
    gamma: float = 0.04
    """v_0 ~ N(0, gamma M I)."""
    t_min: float = 1e-3
    """Training times are drawn from [t_min, 1]; samplers evaluate the network down to t_min and
    take the last step to 0 without noise (the denoising step)."""
    weighting: str = "eps"
    """"eps" (lambda = ell_t^-2: plain MSE on eps_v, for samples) or "likelihood" (lambda = Gamma beta)."""
    mixed_score: bool = True
    """Add the analytic score of N(0, I) data to the network's output (Sec. 3.4)."""

    def __post_init__(self) -> None:
        CLD(self.mass, self.beta, self.gamma)  # validates the process
        check_choice("model.weighting", self.weighting, CLD_WEIGHTINGS)
        if not 0.0 < self.t_min < 0.5:
            raise ConfigError(f"model.t_min={self.t_min} must be in (0, 0.5) (the paper uses 1e-3 to 1e-5)")


class CLDModel(OptionsModel):
    """A denoiser trained by hybrid score matching on a ``CLD`` process (module docstring).

    Args:
        network: ``network(cat(x_t, v_t / sqrt(M)), t) -> alpha`` with 2C input and C output channels.
        image_shape: (C, H, W).
        sample_defaults: default ``sampler``, ``steps`` and ``grid`` of ``sample``.
        **options: the fields of ``CLDOptions``.
    """

    family: ClassVar[str] = "cld"
    options_class: ClassVar[type | None] = CLDOptions

    def __init__(self, network: Any, image_shape: tuple[int, ...], *, sample_defaults: dict[str, Any] | None = None,
                 **options: Any) -> None:
        validated = CLDOptions(**options)
        super().__init__(network, tuple(int(d) for d in image_shape))
        self.options = validated
        self.process = CLD(self.options.mass, self.options.beta, self.options.gamma)
        unknown = sorted(set(sample_defaults or {}) - set(SAMPLE_DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown CLD sample default(s) {unknown}; allowed: {sorted(SAMPLE_DEFAULTS)}")
        self.sample_defaults = {**SAMPLE_DEFAULTS, **(sample_defaults or {})}

    # --- the network's view ----------------------------------------------------------------------
    def network_shape(self) -> tuple[int, ...]:
        """(2C, H, W): the network sees x_t and v_t stacked on the channels."""
        c, *spatial = self.image_shape
        return (2 * c, *spatial)

    def network_output_channels(self) -> int:
        """C: the network predicts eps_v."""
        return self.image_shape[0]

    def alpha(self, x: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The prediction of eps_v at (x_t, v_t) (each (B, C, H, W)) and times t (B,)."""
        out = self.network(torch.cat([x, v / math.sqrt(self.process.mass)], 1), t.to(x.dtype))  # (B, 2C, ..) -> (B, C, ..)
        if self.options.mixed_score:
            _, sigma = self.process.marginal(t.double(), data_variance=1.0)
            scale = 1.0 / (self.process.ell(t.double()) * sigma[:, 1, 1])  # (B,)
            out = out + scale.to(v.dtype).view(-1, *[1] * (v.dim() - 1)) * v
        return out

    def score(self, x: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad_v log p_t(x, v) = -ell_t alpha (B, C, H, W)."""
        ell = self.process.ell(t.double()).to(v.dtype).view(-1, *[1] * (v.dim() - 1))
        return -ell * self.alpha(x, v, t)

    # --- training --------------------------------------------------------------------------------
    def losses(self, batch: Batch, generator: Generator) -> dict[str, torch.Tensor]:
        """{"network": hsm_loss (B,)}: t ~ U[t_min, 1], then eps_x, eps_v, in that order."""
        x0 = batch[0]
        u = torch.rand(len(x0), generator=generator, dtype=torch.float64, device=x0.device)
        t = self.options.t_min + (1.0 - self.options.t_min) * u
        eps_x = standard_normal(x0.shape, generator, device=x0.device, dtype=x0.dtype)
        eps_v = standard_normal(x0.shape, generator, device=x0.device, dtype=x0.dtype)
        return {"network": hsm_loss(self.alpha, self.process, x0, t, eps_x, eps_v, self.options.weighting)}  # type: ignore[arg-type]

    # --- sampling --------------------------------------------------------------------------------
    @classmethod
    def sampler_names(cls) -> list[str]:
        return ["auto", *CLD_SAMPLERS]

    def sample_options(self) -> tuple[str, ...]:
        return ("sampler", "steps", "grid")

    def _resolved(self, options: dict[str, Any]) -> dict[str, Any]:
        o = {**self.sample_defaults, **{k: v for k, v in options.items() if v is not None and k in SAMPLE_DEFAULTS}}
        for key in ("sampler", "grid"):
            if o[key] == "auto":
                o[key] = SAMPLE_DEFAULTS[key]
        check_choice("sampler", o["sampler"], sorted(CLD_SAMPLERS))
        check_choice("grid", o["grid"], sorted(CLD_GRIDS))
        if not isinstance(o["steps"], int) or o["steps"] < 2:
            raise ConfigError(f"CLD steps={o['steps']!r} must be an integer >= 2 (the last one is the denoising step)")
        return o

    def times(self, grid: str, steps: int) -> torch.Tensor:
        """The grid's ``steps`` + 1 times from 1 to t_min, then 0 (float64)."""
        return CLD_GRIDS[grid](steps, t_min=self.options.t_min)

    def draw(self, generator: PerSampleGenerator, cond: dict[str, torch.Tensor] | None,
             **options: Any) -> torch.Tensor:
        o = self._resolved(options)
        u = self.process.prior((len(generator), *self.image_shape), generator, device=options.get("device"))
        x = CLD_SAMPLERS[o["sampler"]](self.score, self.process, u, self.times(o["grid"], o["steps"]), generator=generator)
        return x.clamp(-1.0, 1.0)

    def sampling_protocol(self, **options: Any) -> dict[str, Any]:
        o = self._resolved(options)
        return {"sampler": o["sampler"], "steps": o["steps"], "grid": o["grid"],
                "nfe": cld_score_calls(o["sampler"], o["steps"])}

    # --- likelihood ------------------------------------------------------------------------------
    has_likelihood: ClassVar[bool] = True
    nll_methods: ClassVar[tuple[str, ...]] = ("ode",)

    @classmethod
    def nll_options(cls, method: str, settings: dict[str, Any]) -> dict[str, Any]:
        """Hutchinson's divergence, RK45 at ``ode_tol``."""
        return {"divergence": "hutchinson", "rtol": settings["ode_tol"], "atol": settings["ode_tol"]}

    def nll(self, x: torch.Tensor, method: str = "ode", *, levels: int | None = None,
            generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        """The probability-flow ODE bound on -log p(x) in bits/dim (``likelihood.cld``), from t_min."""
        check_choice("nll method", method, self.nll_methods)
        return cld_nll_bound(self.score, self.process, x, t_min=self.options.t_min, levels=levels,
                             generator=generator, **options)

    # --- persistence -----------------------------------------------------------------------------
    @classmethod
    def check_network(cls, network: Any) -> None:
        if not isinstance(network, DENOISER_CONFIGS):
            raise ConfigError(f"a cld model needs a denoiser network (network.kind: unet, mlp or vit); "
                              f"got {config_to_dict(network)['kind']!r}")

    def config(self) -> dict[str, Any]:
        return {"network": config_to_dict(self.network.config), "image_shape": list(self.image_shape),
                **{k: getattr(self.options, k) for k in CLDOptions.__dataclass_fields__},
                "sample_defaults": dict(self.sample_defaults)}

    @classmethod
    def config_from_sections(cls, sections: dict[str, Any], image_shape: tuple[int, ...]) -> dict[str, Any]:
        """The ``network`` section (2C in, C out), the ``model`` options and ``run.sample``'s sampler and steps."""
        network, c = sections["network"], image_shape[0]
        out = network.get("out_channels") or network["in_channels"]
        if network["in_channels"] != 2 * c or out != c:
            raise ConfigError(f"a cld network sees (x, v) and predicts eps_v: set network.in_channels: {2 * c} and "
                              f"network.out_channels: {c} for images with {c} channel(s)")
        s = sections["run"]["sample"]
        sampler = s["sampler"] if s["sampler"] != "auto" else SAMPLE_DEFAULTS["sampler"]
        options = {k: v for k, v in sections["model"].items() if k != "family"}
        return {"network": network, "image_shape": list(image_shape), **options,
                "sample_defaults": {**SAMPLE_DEFAULTS, "sampler": sampler, "steps": s["steps"]}}
