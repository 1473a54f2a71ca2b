"""``DDGANModel``: a denoising diffusion GAN (Xiao, Kreis & Vahdat, ICLR 2022).

A diffusion over a difflab process (``gaussian``: DDPM/VP; ``blurring``) with only T large
steps, on the uniform grid t_k = k / T. A step that large has a multimodal reverse kernel, so
DDGAN learns it with a GAN instead of a Gaussian (Sec. 3):

    x0_hat = G(x_{t_k}, z, t_k),  z ~ N(0, I),
    x_{t_{k-1}} ~ q(x_{t_{k-1}} | x_{t_k}, x0 = x0_hat)          (the process's posterior, Eq. 5),

and a time-conditional discriminator D(x_{t_{k-1}}, x_{t_k}, t_k) tells real pairs, drawn from
q(x_{t_k} | x0) q(x_{t_{k-1}} | x_{t_k}, x0), from fake ones (Eq. 4, 6). Every training step
makes two updates, each with its own optimizer, on a fresh k ~ U{1..T} per example:

1. **D** on the non-saturating loss with R1 on the real x_{t_{k-1}} (DDGAN, App. C);
2. **G** on the non-saturating loss (``objectives.adversarial``).

Sampling is the ancestral sampler of the diffusion family with G as its x0-denoiser (a fresh z
per step) on that grid: T network calls. The sampling weights are the EMA of the network. No
likelihood (``nll`` raises ``UnsupportedMetric``); ``diagnostics`` as the GAN family's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from difflab.errors import ConfigError, check_choice
from difflab.models.base import Batch, OptionsModel
from difflab.models.gan import DIAGNOSTIC_SEED, DIAGNOSTIC_SIZE, adversarial_diagnostics
from difflab.nn import DDGANNetwork, network_from_dict
from difflab.objectives.adversarial import Critic, discriminator_terms, generator_terms
from difflab.processes import DiagonalGaussianProcess, build_process
from difflab.processes.noise import Generator, PerSampleGenerator, standard_normal
from difflab.samplers import sample


@dataclass(frozen=True)
class DDGANOptions:
    """The ``model`` section of a DDGAN run (besides ``family: ddgan``)."""

    steps: int = 4
    """T, the denoising steps (= network calls per sample). DDGAN's CIFAR-10 model uses 4;
    1 is a GAN conditioned on pure noise, 2 already needs the multimodal denoiser."""
    r1_gamma: float = 0.05
    """gamma of the R1 penalty on the real x_{t-1}; 0 turns it off. DDGAN uses 0.02-1 by dataset
    (every 15 steps on CIFAR-10); this is every step, as difflab's GAN family."""

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"model.steps={self.steps!r} must be a positive integer (DDGAN uses 1, 2 or 4)")
        if not self.r1_gamma >= 0:
            raise ConfigError(f"model.r1_gamma={self.r1_gamma:g} must be >= 0 (0 turns the R1 penalty off)")


class DDGANModel(OptionsModel):
    """A ``DDGANNetwork`` trained adversarially on T steps of ``process`` (module docstring).

    Args:
        network: G(x_t, t, z) and D(x_s, x_t, t).
        process: the diagonal Gaussian process whose posterior makes the steps.
        image_shape: (C, H, W).
        steps, r1_gamma: as ``DDGANOptions``.
    """

    family: ClassVar[str] = "ddgan"
    options_class: ClassVar[type | None] = DDGANOptions
    network_kind: ClassVar[str] = "ddgan"
    training_phases: ClassVar[tuple[str, ...]] = ("discriminator", "generator")

    def __init__(self, network: DDGANNetwork, process: DiagonalGaussianProcess, image_shape: tuple[int, ...], *,
                 steps: int = 4, r1_gamma: float = 0.05) -> None:
        DDGANOptions(steps, r1_gamma)  # validates
        self.check_process(process)
        super().__init__(network, image_shape)
        self.process, self.steps, self.r1_gamma = process, steps, r1_gamma

    @classmethod
    def check_process(cls, process: Any) -> None:
        if not getattr(process, "denoiser_samplers", False):
            raise ConfigError(f"a ddgan model steps by the posterior of a denoising process (gaussian, blurring); "
                              f"process '{getattr(process, 'kind', process)}' has none: set process.kind: gaussian")

    def grid(self) -> torch.Tensor:
        """t_k = k / T for k = T..0: the float64 grid (T + 1,) of sampling, decreasing."""
        return torch.linspace(1.0, 0.0, self.steps + 1, dtype=torch.float64)

    # --- training ------------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"discriminator": D's parameters, "generator": G's (UNet and mapping)}: one optimizer each."""
        return {"discriminator": list(self.network.discriminator.parameters()),
                "generator": self.network.generator_parameters()}

    def posterior_draw(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                       generator: Generator) -> torch.Tensor:
        """x_s ~ q(x_s | x_t, x0) (B, C, H, W) for times s < t (B,): the process's posterior, in pixels."""
        mean, var = self.process.posterior(self.process.to_basis(x_t), self.process.to_basis(x0), t, s)
        noise = standard_normal(mean.shape, generator, device=mean.device, dtype=mean.dtype)
        return self.process.from_basis(mean + var.sqrt() * noise)

    def noisy_draw(self, x0: torch.Tensor, generator: Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, s, t): k ~ U{1..T} per example, t = k / T, s = (k - 1) / T (float64, (B,)), and
        x_t ~ q(x_t | x0): where a step starts."""
        k = torch.randint(1, self.steps + 1, (len(x0),), generator=generator, device=x0.device)
        t, s = k.double() / self.steps, (k - 1).double() / self.steps
        eps = standard_normal(x0.shape, generator, device=x0.device, dtype=x0.dtype)
        return self.process.diffuse(x0, t, eps), s, t

    def real_pair(self, x0: torch.Tensor, generator: Generator
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_s, x_t, s, t): ``noisy_draw``, then x_s ~ q(x_s | x_t, x0): the pair DDGAN's D sees as real."""
        x_t, s, t = self.noisy_draw(x0, generator)
        return self.posterior_draw(x_t, x0, t, s, generator), x_t, s, t

    def fake_step(self, x_t: torch.Tensor, s: torch.Tensor, t: torch.Tensor, generator: Generator) -> torch.Tensor:
        """x_s ~ q(x_s | x_t, x0 = G(x_t, z, t)) with z ~ N(0, I): the generator's step."""
        z = standard_normal((len(x_t), self.network.config.latent_dim), generator, device=x_t.device, dtype=x_t.dtype)
        return self.posterior_draw(x_t, self.network(x_t, t.to(x_t.dtype), z), t, s, generator)

    def critic(self, x_t: torch.Tensor, t: torch.Tensor) -> Critic:
        """D(., x_t, t): the discriminator with the noisier state and its time fixed."""
        return lambda x_s: self.network.discriminator(x_s, x_t, t.to(x_t.dtype))

    def losses(self, batch: Batch, generator: Generator, phase: str | None = None) -> dict[str, torch.Tensor]:
        """The losses of ``phase`` ("discriminator" or "generator"); both for None (a dry run)."""
        if phase is not None:
            check_choice("training phase", phase, self.training_phases)
        x0 = batch[0]
        x_t, s, t = self.noisy_draw(x0, generator)  # G's phase needs no real x_s
        terms: dict[str, torch.Tensor] = {}
        if phase in (None, "discriminator"):
            x_s = self.posterior_draw(x_t, x0, t, s, generator)
            with torch.no_grad():
                fake = self.fake_step(x_t, s, t, generator)
            terms.update(discriminator_terms(self.critic(x_t, t), x_s, fake, self.r1_gamma))
        if phase in (None, "generator"):
            terms.update(generator_terms(self.critic(x_t, t)(self.fake_step(x_t, s, t, generator))))
        return terms

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> dict[str, float]:
        """D's accuracy on real and fake pairs of ``batch`` (logit > 0 / < 0), and the mean pairwise
        distance of a fixed batch of samples over the real batch's ("diversity", as the GAN family)."""
        x0 = batch[0]
        z_generator = torch.Generator(device=x0.device).manual_seed(DIAGNOSTIC_SEED)
        x_s, x_t, s, t = self.real_pair(x0, z_generator)
        critic = self.critic(x_t, t)
        real_logits, fake_logits = critic(x_s), critic(self.fake_step(x_t, s, t, z_generator))
        fake = self.draw(PerSampleGenerator(DIAGNOSTIC_SEED, range(DIAGNOSTIC_SIZE), x0.device), None,
                         device=x0.device)
        return adversarial_diagnostics(real_logits, fake_logits, fake, x0)

    # --- sampling --------------------------------------------------------------------------------
    def draw(self, generator: PerSampleGenerator, cond: dict[str, torch.Tensor] | None,
             **options: Any) -> torch.Tensor:
        """The ancestral sampler on ``grid()`` with G as the x0-denoiser: T network calls."""
        device = options.get("device")
        dtype = next(self.network.parameters()).dtype

        def generator_x0(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # a fresh z per step
            z = standard_normal((len(z_t), self.network.config.latent_dim), generator, device=z_t.device, dtype=dtype)
            return self.network(z_t, t, z)

        return sample(generator_x0, self.process, (len(generator), *self.image_shape), "ancestral", self.steps,
                      "x0", generator, grid=self.grid(), device=device, dtype=dtype)  # type: ignore[return-value]

    def sampling_protocol(self, **options: Any) -> dict[str, Any]:
        return {"sampler": "ddgan", "steps": self.steps, "grid": "uniform", "nfe": self.steps}

    # --- persistence ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {**super().config(), "process": self.process.config()}

    @classmethod
    def from_config(cls, config: dict[str, Any], *, seed: int | None = None) -> DDGANModel:
        c = dict(config)
        return cls(network_from_dict(c.pop("network"), seed=seed), build_process(c.pop("process")),
                   tuple(c.pop("image_shape")), **c)

    @classmethod
    def config_from_sections(cls, sections: dict[str, Any], image_shape: tuple[int, ...]) -> dict[str, Any]:
        """The ``network`` and ``process`` sections and the ``model`` section's options."""
        return {**super().config_from_sections(sections, image_shape), "process": sections["process"]}
