"""``GANModel``: a generative adversarial network (Goodfellow et al. 2014) with the R1 penalty.

A generator G maps z ~ N(0, I) to an image; a discriminator D scores images with a logit.
Every training step makes two updates, each with its own optimizer (``training_phases``):

1. **D** on the non-saturating loss with the R1 gradient penalty on real data (Mescheder,
   Geiger & Nowozin 2018, "Which Training Methods for GANs do actually Converge?", Eq. 9):

       L_D = softplus(-D(x)) + softplus(D(G(z))) + (gamma / 2) ||grad_x D(x)||^2,

   with G(z) held fixed (no gradient reaches G);
2. **G** on the non-saturating loss (Goodfellow et al. 2014, Sec. 3), with fresh z:

       L_G = softplus(-D(G(z))).

The sampling weights are the EMA of G (the trainer's EMA, as in Karras et al. 2018). A GAN has
no likelihood (``nll`` raises ``UnsupportedMetric``). ``diagnostics`` reports what GAN users
watch: D's accuracy on a real and a fake batch (pinned near 1 means D dominates and G's
gradients vanish) and the diversity of G on a fixed z batch relative to the data's (falling
towards 0 is mode collapse).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from difflab.errors import ConfigError, check_choice
from difflab.models.base import Batch, OptionsModel
from difflab.nn import DCGAN
from difflab.objectives.adversarial import discriminator_terms, generator_terms
from difflab.processes.noise import Generator, PerSampleGenerator, standard_normal

DIAGNOSTIC_SEED, DIAGNOSTIC_SIZE = 0, 64  # the fixed z batch of ``diagnostics``


@dataclass(frozen=True)
class GANOptions:
    """The ``model`` section of a GAN run (besides ``family: gan``)."""

    r1_gamma: float = 0.05
    """gamma of the R1 penalty (gamma / 2) ||grad_x D(x)||^2 on real data; 0 turns it off.
    Mescheder et al. 2018 use 10 on 64x64+ images, StyleGAN2-ADA 0.01 on CIFAR-10; on MNIST
    0.05 gave digit shapes within 1,000 steps where 1 still gave strokes (docs/families.md)."""

    def __post_init__(self) -> None:
        if not self.r1_gamma >= 0:
            raise ConfigError(f"model.r1_gamma={self.r1_gamma:g} must be >= 0 (0 turns the R1 penalty off)")


def mean_pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    """Mean L2 distance between the distinct pairs of a batch (B, ...) -> scalar."""
    flat = x.flatten(1).double()
    b = len(flat)
    return torch.cdist(flat, flat).sum() / (b * (b - 1))


def adversarial_diagnostics(real_logits: torch.Tensor, fake_logits: torch.Tensor, fake: torch.Tensor,
                            real: torch.Tensor) -> dict[str, float]:
    """What GAN users watch (module docstring): D's accuracy on real inputs (logit > 0) and on fake
    ones (logit < 0), and the mean pairwise distance of the ``fake`` samples over that of the first
    ``DIAGNOSTIC_SIZE`` ``real`` images ("diversity"; nan for a single real image)."""
    diversity = mean_pairwise_distance(fake) / mean_pairwise_distance(real[:DIAGNOSTIC_SIZE]) if len(real) > 1 \
        else torch.tensor(float("nan"))
    return {"d_real_accuracy": float((real_logits > 0).double().mean()),
            "d_fake_accuracy": float((fake_logits < 0).double().mean()), "diversity": float(diversity)}


class GANModel(OptionsModel):
    """A ``DCGAN`` trained adversarially (see the module docstring).

    Args:
        network: generator and discriminator.
        image_shape: (C, H, W) of the images.
        r1_gamma: as ``GANOptions``.
    """

    family: ClassVar[str] = "gan"
    options_class: ClassVar[type | None] = GANOptions
    network_kind: ClassVar[str] = "dcgan"
    training_phases: ClassVar[tuple[str, ...]] = ("discriminator", "generator")

    def __init__(self, network: DCGAN, image_shape: tuple[int, ...], *, r1_gamma: float = 0.05) -> None:
        GANOptions(r1_gamma)  # validates
        super().__init__(network, image_shape)
        self.r1_gamma = r1_gamma

    @property
    def generator_net(self) -> nn.Module:
        return self.network.generator

    @property
    def discriminator_net(self) -> nn.Module:
        return self.network.discriminator

    # --- training ------------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"discriminator": D's parameters, "generator": G's}: one optimizer each."""
        return {"discriminator": list(self.discriminator_net.parameters()),
                "generator": list(self.generator_net.parameters())}

    def fake(self, n: int, generator: Generator, device: torch.device) -> torch.Tensor:
        """G(z) for n draws z ~ N(0, I): (n, C, H, W)."""
        dtype = self.network.generator[0].weight.dtype
        return self.network(standard_normal((n, self.network.config.latent_dim), generator, device=device, dtype=dtype))

    def discriminator_losses(self, x: torch.Tensor, generator: Generator) -> dict[str, torch.Tensor]:
        """{"d_real", "d_fake", "r1"} per example (B,): L_D's three terms (Mescheder et al. Eq. 9)."""
        with torch.no_grad():
            fake = self.fake(len(x), generator, x.device)
        return discriminator_terms(self.discriminator_net, x, fake, self.r1_gamma)

    def generator_losses(self, n: int, generator: Generator, device: torch.device) -> dict[str, torch.Tensor]:
        """{"g": softplus(-D(G(z)))} per example (n,): the non-saturating generator loss."""
        return generator_terms(self.discriminator_net(self.fake(n, generator, device)))

    def losses(self, batch: Batch, generator: Generator, phase: str | None = None) -> dict[str, torch.Tensor]:
        """The losses of ``phase`` ("discriminator" or "generator"); both for None (a dry run)."""
        x = batch[0]
        if phase is None:
            return {**self.discriminator_losses(x, generator), **self.generator_losses(len(x), generator, x.device)}
        check_choice("training phase", phase, self.training_phases)
        if phase == "discriminator":
            return self.discriminator_losses(x, generator)
        return self.generator_losses(len(x), generator, x.device)

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> dict[str, float]:
        """D's accuracy on ``batch`` (real: logit > 0) and on a fixed fake batch (logit < 0), and
        the mean pairwise distance of that fake batch over the real batch's ("diversity")."""
        x = batch[0]
        z_generator = torch.Generator(device=x.device).manual_seed(DIAGNOSTIC_SEED)
        fake = self.fake(DIAGNOSTIC_SIZE, z_generator, x.device)
        return adversarial_diagnostics(self.discriminator_net(x), self.discriminator_net(fake), fake, x)

    # --- sampling --------------------------------------------------------------------------------
    def draw(self, generator: PerSampleGenerator, cond: dict[str, torch.Tensor] | None,
             **options: Any) -> torch.Tensor:
        """G(z), z ~ N(0, I): one network call."""
        return self.fake(len(generator), generator, options.get("device"))

    def sampling_protocol(self, **options: Any) -> dict[str, Any]:
        return {"sampler": "generator", "steps": 1, "grid": "-", "nfe": 1}
