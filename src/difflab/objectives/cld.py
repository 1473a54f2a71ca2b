"""Hybrid score matching for critically-damped Langevin diffusion (Dockhorn et al. 2022, Sec. 3.3).

The network learns only the velocity score. With v_0 integrated out, the target
grad_v log p(u_t | x_0) = -ell_t eps_v is known in closed form (``CLD.ell``), so the network's
output alpha (in units of eps_v: s = -ell_t alpha) is regressed on eps_v:

    L(x_0) = E_t,eps [ lambda(t) ||eps_v - alpha(u_t, t)||^2 ],          (Eq. 8, in eps units)

- "eps": lambda = 1, i.e. lambda(t) = ell_t^-2 in score units, the paper's choice for samples;
- "likelihood": lambda = Gamma beta ell_t^2, i.e. lambda(t) = Gamma beta in score units = g(t)^2 / 2,
  the maximum-likelihood weighting (Song et al. 2021) under which L bounds the NLL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from difflab.errors import check_choice
from difflab.processes.cld import CLD

CLDWeighting = Literal["eps", "likelihood"]
CLD_WEIGHTINGS: tuple[str, ...] = ("eps", "likelihood")
Alpha = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, v_t, t) -> alpha


def hsm_weight(process: CLD, t: torch.Tensor, weighting: CLDWeighting) -> torch.Tensor:
    """lambda(t) of the module docstring in eps units, (B,) float64."""
    check_choice("model.weighting", weighting, CLD_WEIGHTINGS)
    if weighting == "eps":
        return torch.ones_like(t, dtype=torch.float64)
    return process.damping * process.beta * process.ell(t) ** 2


def hsm_loss(alpha: Alpha, process: CLD, x0: torch.Tensor, t: torch.Tensor, eps_x: torch.Tensor,
             eps_v: torch.Tensor, weighting: CLDWeighting = "eps") -> torch.Tensor:
    """Per-example hybrid score matching loss (B,) of images ``x0`` at times ``t`` (B,) with noise
    ``eps_x``, ``eps_v`` (like x0); the squared error is averaged over the pixels."""
    x_t, v_t = process.perturb(x0, t, eps_x, eps_v)
    error = (eps_v - alpha(x_t, v_t, t)).float().pow(2).flatten(1).mean(1)  # (B,)
    return hsm_weight(process, t, weighting).to(error.dtype) * error
