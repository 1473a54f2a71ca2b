"""``LSGMModel``: a VAE whose prior is a diffusion model in its latent space, trained end to end
(LSGM: Vahdat, Kreis & Kautz, "Score-based Generative Modeling in Latent Space", NeurIPS 2021).

An encoder q(z_0 | x) = N(m(x), diag s(x)^2) and a discretized logistic decoder p(x | z_0)
(``nn.ConvVAE``), and a prior p(z_0) given by a diffusion u_t = alpha_t z_0 + sigma_t eps on the
latent (a ``GaussianDiffusion``) and a learned noise prediction. The bound (LSGM Eq. 2, Sec. 3.1)

    -log p(x) <= E_q[-log p(x | z_0)]  +  E_q[log q(z_0 | x)]  +  CE(q(z_0 | x) || p(z_0))
                 reconstruction          negative entropy        cross-entropy

replaces the VAE's KL to N(0, I) by the cross-entropy to the diffusion prior. The cross-entropy
is bounded by the continuous-time variational bound of the diffusion on each z_0 ~ q (VDM,
Kingma et al. 2021, Eq. 17; ``likelihood.elbo``: prior + diffusion + decoder terms), whose
diffusion term, with likelihood weighting w(t) = -lambda'(t) = g(t)^2 / sigma_t^2 (LSGM Sec. 3),

    1/2 E_{t ~ r(t), eps} [ -lambda'(t) / r(t) |eps - eps_hat(alpha_t z_0 + sigma_t eps, t)|^2 ],

is estimated in training with t importance-sampled from r(t) proportional to d log sigma_t^2 / dt
= -lambda'(t) alpha_t^2, i.e. uniform in log sigma_t^2: LSGM's proposal for the likelihood
weighting (Sec. 3.4), which makes the weighted error of a near-normal latent about constant in t.
``nll`` uses the library's bound (uniform in the logSNR); both are unbiased. Gradients of one
draw of the bound train the encoder, the decoder and the prior together.

The noise prediction is LSGM's **mixed score** (Sec. 3.2): for a VP process the standard normal's
is sigma_t z_t, so

    eps_hat(z_t, t) = sigma_t (1 - a) z_t + a eps'(z_t, t),     a = sigmoid(mixing logit),

with eps' the prior MLP and one learned logit per coordinate: a = 0 is the VAE's N(0, I) prior
exactly, and the network learns only the correction. Sampling draws z_0 with any sampler of the
diffusion family on the latent (``sampler``, ``steps``, tuned grids) and shows the decoder's mean:
``steps`` calls of the prior MLP plus one of the decoder. ``nll`` is the bound above in bits/dim.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from difflab.errors import ConfigError, check_choice
from difflab.likelihood.elbo import continuous_decoder_term, elbo_terms, prior_term, step_weight, weighted_eps_error
from difflab.likelihood.quantization import bin_width, discretized_logistic_log_prob
from difflab.likelihood.time_proposal import IMPORTANCE_CELLS, TimeProposal, check_t_min
from difflab.models.base import Batch, GenerativeModel, check_image_size, check_levels
from difflab.models.diffusion import DiffusionModel
from difflab.nn import LSGMConfig, LSGMNetwork, config_to_dict, network_from_dict
from difflab.processes import DiagonalGaussianProcess, GaussianDiffusion, build_process
from difflab.processes.noise import Generator, standard_normal
from difflab.samplers import make_denoiser


@dataclass(frozen=True)
class LSGMOptions:
    """The ``model`` section of an LSGM run (besides ``family: lsgm``)."""

    levels: int = 256
    """Quantization levels of the data the decoder's bins follow (256 for 8-bit images, 17 for digits)."""

    def __post_init__(self) -> None:
        bin_width(self.levels)


class MixedScore:
    """eps_hat(z_t, t) = sigma_t (1 - a) z_t + a eps'(z_t, t), a = sigmoid(network.mixing_logit):
    LSGM's mixed score (Sec. 3.2) as a noise prediction, a ``model(z_t, t)`` for the samplers."""

    def __init__(self, network: LSGMNetwork, process: DiagonalGaussianProcess) -> None:
        self.network, self.process = network, process

    def __call__(self, z_t: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        _, sigma = self.process.coefficients(t.double(), z_t)  # (B, 1)
        a = torch.sigmoid(self.network.mixing_logit).to(z_t.dtype)  # (latent_dim,)
        return sigma * (1.0 - a) * z_t + a * self.network(z_t, t)


def log_variance_proposal(process: DiagonalGaussianProcess, cells: int = IMPORTANCE_CELLS) -> TimeProposal:
    """r(t) proportional to d log sigma_t^2 / dt on ``cells`` cells of [0, 1]: uniform in log sigma_t^2
    (LSGM's importance sampling for the likelihood weighting, Sec. 3.4)."""
    edges = torch.linspace(0.0, 1.0, cells + 1, dtype=torch.float64)
    _, sigma = process.alpha_sigma(edges, (cells + 1, 1))
    rise = torch.diff(2.0 * torch.log(sigma.flatten()))
    return TimeProposal(edges, rise / rise.sum())


def gaussian_entropy(log_var: torch.Tensor) -> torch.Tensor:
    """H[N(m, diag exp(log_var))] = 1/2 sum (1 + log 2 pi + log_var) per example (B,), nats."""
    return 0.5 * (1.0 + math.log(2 * math.pi) + log_var).sum(1)


class LSGMModel(DiffusionModel):
    """A ``LSGMNetwork`` trained on LSGM's bound (see the module docstring).

    Args:
        network: the VAE, the prior MLP and the mixing logits.
        process: the diffusion on the latent (a variance-preserving ``gaussian`` process).
        image_shape: (C, H, W).
        levels: as ``LSGMOptions``.
        sample_defaults: ``sampler``, ``steps`` (of the latent diffusion) ... as ``DiffusionModel``.
    """

    family: ClassVar[str] = "lsgm"
    options_class: ClassVar[type | None] = LSGMOptions
    nll_methods: ClassVar[tuple[str, ...]] = ("elbo",)
    state_is_image: ClassVar[bool] = False  # the latent is never clipped

    def __init__(self, network: LSGMNetwork, process: DiagonalGaussianProcess, image_shape: tuple[int, ...], *,
                 levels: int = 256, sample_defaults: dict[str, Any] | None = None) -> None:
        LSGMOptions(levels)  # validates
        super().__init__(network, process, image_shape, prediction="eps", sample_defaults=sample_defaults)
        self.levels, self.dims = levels, math.prod(self.image_shape)
        self.latent_dim = network.config.latent_dim
        self.proposal = log_variance_proposal(process)

    @classmethod
    def check_process(cls, process: DiagonalGaussianProcess) -> None:
        """A variance-preserving ``gaussian`` process (the mixed score's sigma_t z_t is then N(0, I)'s
        noise prediction) with a finite logSNR at t = 0 (the bound starts there)."""
        if not isinstance(process, GaussianDiffusion):
            raise ConfigError(f"an lsgm model diffuses a vector latent with a variance-preserving process; got "
                              f"'{process.kind}': set process.kind: gaussian")
        try:
            check_t_min(process, 0.0, (1, 1))
        except ConfigError:
            raise ConfigError(f"an lsgm model's bound starts at t = 0, where process.schedule: {process.schedule} "
                              "has no noise; set process.schedule: cosine (or flow)") from None

    @classmethod
    def check_network(cls, network: Any) -> None:
        if not isinstance(network, LSGMConfig):
            raise ConfigError(f"an lsgm model needs network.kind: lsgm; got {config_to_dict(network)['kind']!r}")

    # --- the latent -----------------------------------------------------------------------------
    def state_shape(self, n: int) -> tuple[int, ...]:
        """(n, latent_dim): the diffusion runs on the VAE's latent."""
        return (n, self.latent_dim)

    def network_input(self, x0: torch.Tensor, t: torch.Tensor, *, clean: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        raise ConfigError("an lsgm model's network sees latents, not images: it has no image-space denoiser "
                          "to probe; probe a diffusion or latent model")

    def dry_run(self, where: str) -> None:
        GenerativeModel.dry_run(self, where)  # the whole bound, encoder to prior

    @property
    def denoiser(self) -> MixedScore:
        return MixedScore(self.network, self.process)

    def to_image(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mean of latents z (B, latent_dim), in [-1, 1]."""
        return self.network.vae(z)[0].clamp(-1.0, 1.0)

    # --- the bound ------------------------------------------------------------------------------
    def posterior_draw(self, x: torch.Tensor, generator: Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_0 ~ q(z_0 | x) by reparameterisation (B, latent_dim), the negative entropy of q (B,))."""
        mean, log_var = self.network.vae.encode(x)
        z0 = mean + torch.exp(0.5 * log_var) * standard_normal(mean.shape, generator, device=x.device,
                                                               dtype=mean.dtype)
        return z0, -gaussian_entropy(log_var)

    def reconstruction(self, x: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        """-log p(x | z_0) per example (B,), nats."""
        return -discretized_logistic_log_prob(x, *self.network.vae(z0), self.levels)

    def cross_entropy(self, z0: torch.Tensor, generator: Generator) -> torch.Tensor:
        """One draw of the bound on -log p(z_0) (B,), nats: t ~ r(t), eps ~ N(0, I); differentiable."""
        u = torch.rand(len(z0), generator=generator, dtype=torch.float64, device=z0.device)
        t, weight = step_weight(self.process, self.proposal, u.cpu(), tuple(z0.shape), "continuous")
        noise = standard_normal(z0.shape, generator, device=z0.device, dtype=z0.dtype)
        denoise = make_denoiser(self.denoiser, self.process, "eps")
        diffusion = weighted_eps_error(denoise, self.process, z0, t.to(z0.device), weight.to(z0.device), noise)
        return prior_term(self.process, z0) + diffusion + continuous_decoder_term(self.process, z0, 0.0)

    def losses(self, batch: Batch, generator: Generator) -> dict[str, torch.Tensor]:
        """{"reconstruction", "negative_entropy", "cross_entropy"} in bits/dim (B,); their sum is one
        draw of the bound (the module docstring)."""
        x = batch[0]
        z0, negative_entropy = self.posterior_draw(x, generator)
        to_bpd = 1.0 / (self.dims * math.log(2))
        return {"reconstruction": self.reconstruction(x, z0) * to_bpd, "negative_entropy": negative_entropy * to_bpd,
                "cross_entropy": self.cross_entropy(z0, generator).to(x.dtype) * to_bpd}

    def fit(self, batches: Iterable[torch.Tensor]) -> str | None:
        """Nothing is fitted; checks that the training images lie on the decoder's ``levels`` grid."""
        first = next(iter(batches), None)
        if first is not None:
            check_levels(first, self.levels, "the LSGM's decoder discretizes", "model.levels")
        return None

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> dict[str, float]:
        """The mean mixing coefficient a (0: the N(0, I) prior; 1: all neural)."""
        return {"mixing": float(torch.sigmoid(self.network.mixing_logit).mean())}

    # --- likelihood ------------------------------------------------------------------------------
    @classmethod
    def nll_options(cls, method: str, settings: dict[str, Any]) -> dict[str, Any]:
        return {"num_t": settings["num_t"]}

    @torch.no_grad()
    def nll(self, x: torch.Tensor, method: str = "elbo", *, levels: int | None = None,
            generator: torch.Generator | None = None, num_t: int = 1, **options: Any) -> torch.Tensor:
        """The bound in bits/dim per example (B,): one z_0 ~ q(z_0 | x), and ``num_t``
        importance-sampled times (stratified) for the diffusion term of its cross-entropy."""
        check_choice("nll method", method, self.nll_methods)
        if options:
            raise ConfigError(f"LSGM nll takes no option(s) {sorted(options)}; its option: num_t")
        if levels is not None and levels != self.levels:
            raise ConfigError(f"the data has {levels} levels but this LSGM's decoder discretizes {self.levels}")
        z0, negative_entropy = self.posterior_draw(x, generator)
        terms = elbo_terms(self.denoiser, self.process, z0, num_t=num_t, generator=generator)
        bound = self.reconstruction(x, z0).double() + negative_entropy.double() + sum(terms.values())
        return (bound / (self.dims * math.log(2))).to(x.dtype)

    # --- persistence ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"network": config_to_dict(self.network.config), "process": self.process.config(),
                "image_shape": list(self.image_shape), "levels": self.levels,
                "sample_defaults": dict(self.sample_defaults)}

    @classmethod
    def from_config(cls, config: dict[str, Any], *, seed: int | None = None) -> LSGMModel:
        c = dict(config)
        return cls(network_from_dict(c.pop("network"), seed=seed), build_process(c.pop("process")),  # type: ignore[arg-type]
                   tuple(c.pop("image_shape")), **c)

    @classmethod
    def config_from_sections(cls, sections: dict[str, Any], image_shape: tuple[int, ...]) -> dict[str, Any]:
        """The ``network``, ``process`` and ``model`` sections, and ``run.sample``'s sampler and steps."""
        check_image_size(sections["network"], image_shape)
        s = sections["run"]["sample"]
        return {"network": sections["network"], "process": sections["process"], "image_shape": list(image_shape),
                "levels": sections["model"]["levels"],
                "sample_defaults": {"sampler": s["sampler"], "steps": s["steps"], "eta": s["eta"], "clip_x0": None}}
