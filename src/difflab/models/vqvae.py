"""``VQVAEModel``: a VQ-VAE with a PixelCNN prior over its codes (van den Oord, Vinyals &
Kavukcuoglu 2017, "Neural Discrete Representation Learning").

An encoder maps x to a grid of vectors z_e, each replaced by its nearest code e_k
(``difflab.nn.quantize``); a decoder maps the codes back. Per example the autoencoder minimises
(Eq. 3, with a Gaussian decoder: the squared error)

    ||x - D(z_q)||^2 / D + ||sg[z_e] - e_k||^2 + beta ||z_e - sg[e_k]||^2,

dead codes are restarted after every step, and a gated PixelCNN learns the prior p(k) over the
code grid by maximum likelihood (Sec. 3.2), in bits per code. The paper fits the prior after the
autoencoder; here both train in the same run, the prior on the current codes with no gradient
into the encoder (the codes settle early, and one run under one budget keeps the families
comparable). Samples draw k from the prior, one code at a time (h w network calls), and decode
it (one call). The model has no likelihood in difflab (a bound would need the decoder's
discretized likelihood, which the squared error does not define).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from difflab.models.autoregressive import ancestral_sample, level_values
from difflab.models.base import Batch, OptionsModel
from difflab.nn import VQVAE, ConvAutoencoder, GatedPixelCNN
from difflab.processes.noise import Generator, PerSampleGenerator


def perplexity(k: torch.Tensor, codebook_size: int) -> float:
    """exp(entropy) of the code frequencies in ``k``: the effective number of codes used."""
    p = torch.bincount(k.flatten(), minlength=codebook_size).double() / k.numel()
    return float(torch.exp(-(p * torch.log(p.clamp(min=1e-30))).sum()))


class VQVAEModel(OptionsModel):
    """A ``VQVAE`` network: the autoencoder and its code prior (see the module docstring)."""

    family: ClassVar[str] = "vqvae"
    network_kind: ClassVar[str] = "vqvae"

    def __init__(self, network: VQVAE, image_shape: tuple[int, ...]) -> None:
        super().__init__(network, image_shape)
        self.codebook_size = network.config.codebook_size

    @property
    def autoencoder(self) -> ConvAutoencoder:
        return self.network.autoencoder

    @property
    def prior(self) -> GatedPixelCNN:
        return self.network.prior

    # --- training ------------------------------------------------------------------------------
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The code indices k (B, h, w) of images (B, C, H, W)."""
        quantizer = self.autoencoder.quantizer
        return quantizer.indices(self.autoencoder.posterior(x)[0])

    def prior_bits(self, k: torch.Tensor) -> torch.Tensor:
        """-log2 p(k) per code (B,) under the prior, for code grids (B, h, w)."""
        logits = self.prior(level_values(k[:, None], self.codebook_size))  # (B, 1, K, h, w)
        nats = F.cross_entropy(logits[:, 0], k, reduction="none")  # (B, h, w)
        return nats.flatten(1).mean(1) / math.log(2)

    def losses(self, batch: Batch, generator: Generator) -> dict[str, torch.Tensor]:
        """{"reconstruction", "codebook", "commitment", "prior"} per example (B,); see the module docstring."""
        x = batch[0]
        decoded, k, codebook_loss, commitment_loss = self.autoencoder.quantized(x)
        reconstruction = (decoded - x).pow(2).flatten(1).mean(1)
        return {"reconstruction": reconstruction, "codebook": codebook_loss,
                "commitment": self.network.config.commitment * commitment_loss, "prior": self.prior_bits(k.detach())}

    def after_step(self) -> None:
        """Restart the codebook's dead codes on the latest batch's latents."""
        self.autoencoder.after_step()

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> dict[str, float]:
        """Codes the last step's batch did not pick, codes restarted so far (dead: idle for
        ``DEAD_AFTER`` steps), and the codebook perplexity on ``batch``."""
        quantizer = self.autoencoder.quantizer
        return {"codes_unpicked": int((quantizer.idle > 0).sum()), "codes_restarted": int(quantizer.restarts),
                "code_perplexity": perplexity(self.codes(batch[0]), self.codebook_size)}

    # --- sampling --------------------------------------------------------------------------------
    def draw(self, generator: PerSampleGenerator, cond: dict[str, torch.Tensor] | None,
             **options: Any) -> torch.Tensor:
        """k ~ p(k) code by code, then D(e_k)."""
        side = self.prior.config.resolution  # the code grid is side x side
        k = ancestral_sample(self.prior, (len(generator), 1, side, side), generator, options.get("device"))[:, 0]
        return self.autoencoder.decoder(self.autoencoder.quantizer.embed(k)).clamp(-1.0, 1.0)

    def sampling_protocol(self, **options: Any) -> dict[str, Any]:
        calls = self.prior.config.resolution ** 2 + 1
        return {"sampler": "prior code by code, then decoder", "steps": calls, "grid": "-", "nfe": calls}
