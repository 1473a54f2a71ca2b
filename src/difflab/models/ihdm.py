"""``IHDMModel``: inverse heat dissipation (Rissanen, Heinonen & Solin, ICLR 2023) as a model family.

The network predicts the less-blurred level (``objectives.heat_loss``) and samples are drawn
level by level from the prior p(u_K) (``samplers.sample_heat``); the prior is the process's
fitted state (``HeatDissipation.fit``), saved inside the model artefact. IHDM defines no
likelihood here (its network is not a denoiser of a Gaussian diffusion), so ``nll`` raises
``UnsupportedMetric``; sample metrics apply as for every family.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from difflab.errors import ConfigError, check_choice
from difflab.models.base import UnsupportedMetric
from difflab.models.diffusion import DiffusionModel
from difflab.objectives import heat_loss
from difflab.processes import HeatDissipation
from difflab.processes.noise import PerSampleGenerator
from difflab.samplers import sample_heat

SAMPLERS = ("auto", "ihdm")
DELTA = 0.01  # sampling noise std after each level (the paper's value)


class IHDMModel(DiffusionModel):
    """A network that undoes one level of heat dissipation, with the process's fitted prior."""

    family: ClassVar[str] = "ihdm"
    fitted_description: ClassVar[str] = "the prior p(u_K) of the blurred training images (Rissanen et al. 2023)"

    tunable: ClassVar[bool] = False
    has_likelihood: ClassVar[bool] = False

    @classmethod
    def check_process(cls, process: Any) -> None:
        if not isinstance(process, HeatDissipation):
            raise ConfigError(f"an IHDM model needs a 'heat' process (process.kind: heat); got '{process.kind}'")

    def loss(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             cond: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """IHDM's unweighted MSE on the less-blurred level k - 1, with k = ceil(t K)."""
        return heat_loss(self.network, self.process, x0, t=t, noise=noise, cond=cond)  # type: ignore[arg-type]

    def sample_options(self) -> tuple[str, ...]:
        return ("sampler", "steps", "delta", "clip_x0", "eta", "grid")  # clip_x0: accepted, unused

    def _check(self, options: dict[str, Any]) -> tuple[int, float]:
        """(steps, delta) of a draw; the other diffusion options do not apply."""
        sampler = options.get("sampler") or "auto"
        check_choice("sampler", sampler, SAMPLERS)
        steps = options.get("steps")
        process: HeatDissipation = self.process  # type: ignore[assignment]
        if steps is not None and steps != process.K:
            raise ConfigError(f"IHDM samples one step per blur level: steps={steps} must be K={process.K}")
        for name in ("eta", "guidance"):
            if options.get(name) is not None:
                raise ConfigError(f"IHDM sampling has no option {name!r}; its options are sampler, steps, delta")
        if options.get("grid") not in (None, "auto"):
            raise ConfigError("IHDM samples on its own levels t = k / K; it takes no --grid")
        delta = DELTA if options.get("delta") is None else float(options["delta"])
        return process.K, delta

    def draw(self, generator: PerSampleGenerator, cond: dict[str, torch.Tensor] | None,
             **options: Any) -> torch.Tensor:
        steps, delta = self._check(options)
        return sample_heat(self.network, self.process, (len(generator), *self.image_shape), steps=steps,  # type: ignore[arg-type]
                           delta=delta, generator=generator, cond=cond, device=options.get("device"))

    def sampling_protocol(self, **options: Any) -> dict[str, Any]:
        steps, _ = self._check(options)
        return {"sampler": "ihdm", "steps": steps, "nfe": steps, "grid": "levels"}

    @classmethod
    def sampler_names(cls) -> list[str]:
        return list(SAMPLERS)

    def nll(self, x: torch.Tensor, *args: Any, **options: Any) -> torch.Tensor:
        raise UnsupportedMetric("IHDM models have no likelihood in difflab (the network predicts the next blur "
                                "level, not a denoiser); evaluate fd, kid, is, precision or recall instead")
