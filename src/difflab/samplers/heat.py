"""IHDM's sampler: undo the heat equation one level at a time (Rissanen et al., ICLR 2023, Alg. 2).

Starting from the fitted prior ``u_K ~ p(u_K)`` (``HeatDissipation.fit``, see
``difflab.processes.HeatPrior``)::

    for k = K, ..., 1:   u_{k-1} = f(u_k) + delta eps,    f(u_k) = u_k + net(u_k, k / K)

with a small sampling noise delta (0.01 in the paper). The last step returns f(u_1) without
noise, as the diffusion samplers return their clean estimate. Unlike the shared samplers the
network here predicts the next level, not the clean image, so this sampler drives the model
itself; ``difflab.models.IHDMModel.sample`` calls it.
"""

from __future__ import annotations

from typing import Any

import torch

from difflab.errors import ConfigError
from difflab.objectives.heat import predict_less_blurred
from difflab.processes import DiagonalGaussianProcess, HeatDissipation, HeatPrior
from difflab.processes.noise import Generator, standard_normal


def _check_heat_inputs(process: DiagonalGaussianProcess, prior: HeatPrior | None, shape: tuple[int, ...], steps: int) -> None:
    if not isinstance(process, HeatDissipation):
        raise ConfigError(f"sampler 'ihdm' needs a 'heat' process; got '{process.kind}' (use 'ancestral' or 'ddim')")
    if not isinstance(prior, HeatPrior):
        raise ConfigError("sampler 'ihdm' needs prior p(u_K): fit it with process.fit(images), or pass "
                          "prior=HeatPrior.load(path)")
    if tuple(prior.mean.shape) != tuple(shape[1:]):
        raise ConfigError(f"the prior was fitted on images of shape {tuple(prior.mean.shape)}; requested {tuple(shape[1:])}")
    if prior.process != process:
        raise ConfigError(f"the prior was fitted for {prior.process}, not for {process}")
    if steps != process.K:
        raise ConfigError(f"sampler 'ihdm' takes one step per blur level: pass steps={process.K} (K), not {steps}")


@torch.no_grad()
def sample_heat(
    model: Any,
    process: HeatDissipation,
    shape: tuple[int, ...],
    *,
    prior: HeatPrior | None = None,
    delta: float = 0.01,
    steps: int | None = None,
    generator: Generator = None,
    noise: torch.Tensor | None = None,
    return_trajectory: bool = False,
    cond: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Draw IHDM samples x_0 of ``shape`` (B, C, H, W), pixel space.

    Args:
        model: ``model(z_k, t) -> residual``; ``z_k + residual`` predicts level k-1.
        process: the ``HeatDissipation`` the model was trained for, with its fitted prior.
        prior: a ``HeatPrior`` to use instead of the process's own (default: ``process.prior``).
        delta: sampling noise std added after each step but the last.
        steps: must equal K if given (one step per level).
        generator: a torch.Generator or a ``PerSampleGenerator`` (per-sample seeds).
        noise: standard-normal innovation for the prior draw, of ``shape``.
        return_trajectory: also return u_K, u_{K-1}, ..., u_0 (on CPU).
    """
    prior = prior if prior is not None else getattr(process, "prior", None)
    _check_heat_inputs(process, prior, tuple(shape), process.K if steps is None else steps)
    if delta < 0:
        raise ConfigError(f"sampling noise delta={delta} must be >= 0 (the paper uses 0.01)")
    u = prior.sample(shape[0], generator=generator, noise=noise, device=device, dtype=dtype)
    trajectory = [u.cpu()]
    for k in range(process.K, 0, -1):
        t = torch.full((shape[0],), k / process.K, dtype=torch.float64, device=u.device)
        u = predict_less_blurred(model, u, t, cond)
        if k > 1 and delta > 0:
            u = u + delta * standard_normal(u.shape, generator, device=u.device, dtype=u.dtype)
        if return_trajectory:
            trajectory.append(u.cpu())
    return (u, trajectory) if return_trajectory else u
