"""Adversarial losses: the non-saturating GAN game with the R1 penalty, per example.

Shared by every family with a discriminator (``GANModel``, ``DDGANModel``). ``critic`` is D
with everything but its "image" input fixed (a DDGAN's D(x_{t-1}, x_t, t) sees x_t and t as
given), so the R1 penalty is the gradient with respect to that input only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Critic = Callable[[torch.Tensor], torch.Tensor]  # images (B, ...) -> logits (B,)


def discriminator_terms(critic: Critic, real: torch.Tensor, fake: torch.Tensor, r1_gamma: float
                        ) -> dict[str, torch.Tensor]:
    """{"d_real", "d_fake", "r1"} per example (B,): the discriminator's loss (Mescheder, Geiger &
    Nowozin 2018, Eq. 9)

        L_D = softplus(-D(x)) + softplus(D(x_fake)) + (gamma / 2) ||grad_x D(x)||^2,

    with no gradient reaching ``fake``; "r1" only for ``r1_gamma`` > 0. The penalty keeps its
    graph only when gradients are enabled (training), not in a dry run or an evaluation.
    """
    training = torch.is_grad_enabled()
    with torch.enable_grad():  # the penalty differentiates D's input, also where the caller does not train
        real = real.detach().requires_grad_(r1_gamma > 0)
        real_logits = critic(real)  # (B,)
        terms = {"d_real": F.softplus(-real_logits), "d_fake": F.softplus(critic(fake.detach()))}
        if r1_gamma > 0:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=training)
            terms["r1"] = 0.5 * r1_gamma * grad.flatten(1).pow(2).sum(1)
    return terms


def generator_terms(fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"g": softplus(-D(x_fake))} per example (B,): the non-saturating generator loss
    (Goodfellow et al. 2014, Sec. 3)."""
    return {"g": F.softplus(-fake_logits)}
