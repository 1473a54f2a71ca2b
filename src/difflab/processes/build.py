"""``PROCESSES``: the one table of process kinds, and ``build_process`` from a saved config.

Nothing registers itself on import: a new process kind is a new entry here.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from difflab.errors import ConfigError, check_choice
from difflab.processes.diffusion import (
    BlurringDiffusion,
    DiagonalGaussianProcess,
    GaussianDiffusion,
)
from difflab.processes.heat import HeatDissipation
from difflab.processes.latent import DAEDiffusion

PROCESSES: dict[str, type[DiagonalGaussianProcess]] = {
    "gaussian": GaussianDiffusion,  # DDPM/VP in pixel space (identity basis)
    "blurring": BlurringDiffusion,  # blurring diffusion in the DCT basis (Hoogeboom & Salimans 2023)
    HeatDissipation.kind: HeatDissipation,  # inverse heat dissipation (Rissanen et al. 2023)
    DAEDiffusion.kind: DAEDiffusion,  # l-DAE's latent process (Chen et al. 2024)
}


def build_process(config: dict[str, Any]) -> DiagonalGaussianProcess:
    """The process described by ``config`` (``{"kind": ..., **fields}``), as saved by ``.config()``."""
    config = dict(config)
    kind = config.pop("kind", None)
    check_choice("process.kind", kind, sorted(PROCESSES))
    cls = PROCESSES[kind]
    allowed = {f.name for f in fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for process '{kind}'; allowed: {sorted(allowed)}")
    return cls(**config)
