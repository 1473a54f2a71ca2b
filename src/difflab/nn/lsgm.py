"""``LSGMNetwork``: the VAE and the latent score network of an LSGM (Vahdat, Kreis & Kautz 2021,
"Score-based Generative Modeling in Latent Space", Sec. 3).

- ``vae``: a ``ConvVAE``, the encoder q(z_0 | x) and the decoder p(x | z_0) over a vector latent;
- ``prior``: a residual ``MLP`` eps'(z_t, t) on that latent, the neural part of the prior's
  denoiser;
- ``mixing_logit``: one logit per latent coordinate; a = sigmoid(logit) weighs the neural part
  against the denoiser of a standard normal in LSGM's mixed score (Sec. 3.2). How the two mix
  depends on the forward process, so ``difflab.models.lsgm`` does it; this module only holds
  the parameters. ``forward(z_t, t)`` is ``prior``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from difflab.errors import ConfigError
from difflab.nn.mlp import MLP, MLPConfig
from difflab.nn.vae import ConvVAE, ConvVAEConfig


@dataclass
class LSGMConfig(ConvVAEConfig):
    """Hyper-parameters of ``LSGMNetwork``: the VAE's (``ConvVAEConfig``; the diffusion runs on its
    ``latent_dim``-d latent) and the prior's below. Defaults suit 28x28 MNIST on a CPU (~1.3M
    parameters: the VAE 0.43M, the prior MLP 0.91M)."""

    prior_hidden: int = 256
    """Width of the prior MLP; the latent is 32 numbers, so a few residual blocks suffice."""
    prior_blocks: int = 3
    """Residual blocks of the prior MLP."""
    prior_time_embed_dim: int = 128
    """Width of the prior MLP's sinusoidal time encoding."""
    mixing_logit_init: float = -3.0
    """Initial logit of the mixing coefficient a: -3 gives a = 0.05, so training starts near the
    standard normal prior (LSGM's code uses -3 on small images and -6 after a VAE warm-up)."""

    def __post_init__(self) -> None:
        super().__post_init__()  # the VAE's fields
        if min(self.prior_hidden, self.prior_blocks, self.prior_time_embed_dim) < 1:
            raise ConfigError(f"LSGM needs positive prior sizes; got prior_hidden={self.prior_hidden}, "
                              f"prior_blocks={self.prior_blocks}, prior_time_embed_dim={self.prior_time_embed_dim}")
        self.prior_config()

    def vae_config(self) -> ConvVAEConfig:
        """The VAE's fields alone."""
        return ConvVAEConfig(**{f.name: getattr(self, f.name) for f in fields(ConvVAEConfig)})

    def prior_config(self) -> MLPConfig:
        return MLPConfig(in_features=self.latent_dim, hidden_features=self.prior_hidden,
                         num_blocks=self.prior_blocks, time_embed_dim=self.prior_time_embed_dim)


class LSGMNetwork(nn.Module):
    """The VAE, the prior's neural denoiser and the mixing logits (see the module docstring)."""

    def __init__(self, config: LSGMConfig) -> None:
        super().__init__()
        self.config = config
        self.vae = ConvVAE(config.vae_config())
        self.prior = MLP(config.prior_config())
        self.mixing_logit = nn.Parameter(torch.full((config.latent_dim,), float(config.mixing_logit_init)))

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps'(z_t, t) (B, latent_dim): the neural part of the prior's noise prediction."""
        return self.prior(z_t, t)
