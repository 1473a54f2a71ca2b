"""Time grids tuned to one model: where a few steps should go so the sampler tracks its own ODE.

A fixed grid (``logsnr``, ``karras``, ...) spreads its points by a rule that knows nothing of
the data. With 10-20 steps, where the points sit matters as much as the solver's order: a
noise level far above the data's scale needs almost no steps (errors made there shrink by
about sqrt(v)/(sigma/alpha) on the way down, v the data variance along a direction), the
levels where the data's variances live need many. "Align Your Steps" (Sabour et al. 2024)
therefore optimises the schedule per model and dataset. ``optimize_grid`` does the same with a
simpler objective that needs only the model: the relative squared distance between the
sampler's output on the candidate grid and a converged solution from the same noise,

    J(grid) = E_n ||Phi_grid(n) - Phi_ref(n)||^2 / E_n ||Phi_ref(n)||^2,

with ``Phi_ref`` the same sampler with ``reference_steps`` intervals on the ``logsnr`` grid.
Because both outputs share the noise n, J bounds the (relative) squared W2 distance between
the sampled distribution and the converged one (W2^2 <= E||X - Y||^2 for any coupling).

The grid keeps its ends, t = 1 and ``t_min``, and its points stay ordered: the free
parameters are ``steps - 2`` logits of a softmax over the gaps in the scalar logSNR
(the remaining gap has logit 0), with every gap at least ``MIN_GAP_FRACTION`` of the
uniform one (no zero-length steps). Powell's method (scipy, derivative free, deterministic)
minimises J with a budget of ``max_evals`` sampler runs, starting from the best of the fixed
grids ``START_GRIDS`` (all ending at ``t_min``), so J never ends above theirs.

Cost: ``1.5 * reference_steps + (len(START_GRIDS) + max_evals) * steps`` network evaluations
(the reference, its half-step check, the start grids, the search) on a batch of initial noises
(2 630 for 10 steps with the defaults): ~30 s for the digits network on one CPU core,
minutes for larger ones on a CPU. ``difflab tune`` stores the result with a checkpoint, and
``grid="auto"`` then uses it (see ``TunedGrids``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from difflab.errors import CheckpointError, ConfigError
from difflab.processes import DiagonalGaussianProcess
from difflab.samplers.denoiser import DenoiseFn
from difflab.samplers.grids import scalar_logsnr, time_from_logsnr, time_grid

TUNED_T_MIN = 1e-5  # DDPM-linear: sigma/alpha = 1e-3, a tenth of an 8-bit step of data in [-1, 1]
MIN_GAP_FRACTION = 0.02  # every logSNR gap >= 2 % of the uniform gap: no wasted zero-length steps
FAILED_J = 1e6  # objective value of a grid whose output is not finite
START_GRIDS = ("logsnr", "quadratic", "karras")  # the fixed grids the search may start from
FORMAT = "difflab-tuned-grids"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TunedGrid:
    """One tuned grid and how well it tracks the reference.

    ``times``: steps + 1 float64 times from 1 to 0 (the last evaluated one is ``t_min``);
    ``rel_mse_start``/``rel_mse``: J on the best fixed start grid and on the tuned one;
    ``rel_mse_reference``: J between the reference and a solve with half its steps, an
    estimate of the reference's own error (it should be far below ``rel_mse``).
    """

    sampler: str
    steps: int
    times: tuple[float, ...]
    rel_mse_start: float
    rel_mse: float
    rel_mse_reference: float
    evaluations: int

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor(self.times, dtype=torch.float64)


def gaps_to_times(
    logits: np.ndarray, process: DiagonalGaussianProcess, lam_first: float, lam_last: float
) -> torch.Tensor:
    """Grid (steps + 1,) from ``steps - 2`` logits: softmax gaps in the scalar logSNR, then t = 0 appended."""
    z = np.concatenate([np.asarray(logits, dtype=np.float64), [0.0]])  # (steps - 1,) gap logits
    w = np.exp(z - z.max())
    gaps = MIN_GAP_FRACTION / len(z) + (1.0 - MIN_GAP_FRACTION) * w / w.sum()  # sums to 1, each > 0
    lam = lam_first + (lam_last - lam_first) * np.concatenate([[0.0], np.cumsum(gaps)])  # (steps,)
    ts = time_from_logsnr(process, torch.tensor(lam, dtype=torch.float64))
    ts[0], ts[-1] = 1.0, float(time_from_logsnr(process, torch.tensor([lam_last], dtype=torch.float64)))
    return torch.cat([ts, torch.zeros(1, dtype=torch.float64)])


def times_to_logits(ts: torch.Tensor, process: DiagonalGaussianProcess) -> np.ndarray:
    """The logits (steps - 2,) whose ``gaps_to_times`` is ``ts`` (gaps below the minimum are raised to it)."""
    lam = scalar_logsnr(process, ts[:-1]).numpy()  # (steps,) evaluated times
    gaps = np.diff(lam) / (lam[-1] - lam[0])  # (steps - 1,), sums to 1
    floor = MIN_GAP_FRACTION / len(gaps)
    p = np.maximum(gaps - floor, 1e-9)
    return np.log(p[:-1]) - np.log(p[-1])


def relative_mse(x: torch.Tensor, reference: torch.Tensor) -> float:
    """E||x - ref||^2 / E||ref||^2 over the batch (float64)."""
    x, reference = x.double(), reference.double()
    return float(((x - reference) ** 2).sum() / (reference**2).sum())


def optimize_grid(
    denoise: DenoiseFn,
    process: DiagonalGaussianProcess,
    u_1: torch.Tensor,
    steps: int,
    *,
    sampler: str,
    sampler_fn: Any,
    t_min: float = TUNED_T_MIN,
    reference_steps: int = 400,
    max_evals: int = 200,
    starts: Sequence[str] = START_GRIDS,
) -> TunedGrid:
    """The grid of ``steps`` intervals minimising J (module docstring) for ``sampler_fn``.

    Args:
        denoise: the model as a basis-space denoiser (``make_denoiser``).
        process: the model's forward process.
        u_1: initial states at t = 1 in the basis (B, C, H, W), e.g. ``sigma_1 * noise``;
            a batch of 16-64 is enough (J averages over it).
        steps: grid intervals of the tuned grid (NFE for all samplers but Heun).
        sampler, sampler_fn: the sampler's name (recorded) and function (shared signature).
        t_min: the last evaluated time, kept fixed.
        reference_steps: intervals of the converged solution (logsnr grid).
        max_evals: budget of objective evaluations (sampler runs) for Powell's method.
        starts: fixed grids (names, ending at ``t_min``) tried first; the search starts from
            the best of them, so the result is never worse than any of them.
    """
    if steps < 1 or reference_steps <= steps or max_evals < 1:
        raise ConfigError(f"grid tuning needs steps >= 1, reference_steps > steps and max_evals >= 1; got "
                          f"steps={steps}, reference_steps={reference_steps}, max_evals={max_evals}")
    from scipy.optimize import minimize  # scipy is a dependency (also used by the ODE likelihood)

    def solve(ts: torch.Tensor) -> torch.Tensor:
        return sampler_fn(denoise, process, u_1, ts)

    reference = solve(time_grid("logsnr", reference_steps, process=process, t_min=t_min))
    half = solve(time_grid("logsnr", reference_steps // 2, process=process, t_min=t_min))
    lam_first, lam_last = scalar_logsnr(process, torch.tensor([1.0, t_min], dtype=torch.float64)).tolist()
    tried = [time_grid(name, steps, process=process, t_min=t_min) for name in starts]
    rel_start, start = min(((relative_mse(solve(ts), reference), ts) for ts in tried), key=lambda pair: pair[0])
    best, evaluations = (rel_start, start), 0
    if steps >= 3:  # steps <= 2 has no interior point to move

        def objective(logits: np.ndarray) -> float:
            nonlocal best, evaluations
            if evaluations >= max_evals:
                raise _BudgetSpent  # scipy's maxfev is not checked inside Powell's line searches
            evaluations += 1
            ts = gaps_to_times(logits, process, lam_first, lam_last)
            j = relative_mse(solve(ts), reference)
            if not math.isfinite(j):
                return FAILED_J  # a grid on which the sampler diverged: finite, so line searches go on
            if j < best[0]:
                best = (j, ts)
            return j

        try:
            minimize(objective, times_to_logits(start, process), method="Powell",
                     options={"maxfev": max_evals, "xtol": 1e-2, "ftol": 1e-4})
        except _BudgetSpent:
            pass
    return TunedGrid(sampler, steps, tuple(best[1].tolist()), rel_start, best[0],
                     relative_mse(half, reference), evaluations)


class _BudgetSpent(Exception):
    """Raised by the objective once ``max_evals`` sampler runs are spent: ends the search."""


# --- a model's tuned grids, saved as JSON next to its weights --------------------------------------
@dataclass
class TunedGrids:
    """The tuned grids of one set of weights, keyed by (sampler, steps).

    ``weights_sha256`` identifies the weights they were tuned for: ``load`` returns None if
    the file belongs to other weights, so stale grids are never used.
    """

    weights_sha256: str
    grids: list[TunedGrid] = field(default_factory=list)

    def get(self, sampler: str, steps: int) -> TunedGrid | None:
        return next((g for g in self.grids if (g.sampler, g.steps) == (sampler, steps)), None)

    def add(self, grid: TunedGrid) -> None:
        self.grids = [g for g in self.grids if (g.sampler, g.steps) != (grid.sampler, grid.steps)] + [grid]

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temp file, then rename)."""
        path = Path(path)
        payload = {"format": FORMAT, "version": FORMAT_VERSION, "weights_sha256": self.weights_sha256,
                   "grids": [asdict(g) for g in sorted(self.grids, key=lambda g: (g.sampler, g.steps))]}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, weights_sha256: str) -> TunedGrids | None:
        """The grids in ``path`` if it exists and was tuned for ``weights_sha256``, else None."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            if payload.get("format") != FORMAT or payload.get("version") != FORMAT_VERSION:
                raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} file")
            grids = [TunedGrid(**{**g, "times": tuple(g["times"])}) for g in payload["grids"]]
            for g in grids:
                check_times(g.as_tensor(), g.steps)
        except (ValueError, TypeError, KeyError, ConfigError) as err:
            raise CheckpointError(f"{path} is invalid ({err}); delete it and run `difflab tune` again") from None
        if payload.get("weights_sha256") != weights_sha256:
            return None
        return cls(weights_sha256, grids)


def check_times(ts: Sequence[float] | torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """An explicit grid as float64 (steps + 1,): strictly decreasing from <= 1 to exactly 0; else ConfigError."""
    ts = torch.as_tensor(ts, dtype=torch.float64).reshape(-1)
    if ts.numel() < 2 or not bool(torch.isfinite(ts).all()):
        raise ConfigError("an explicit grid needs at least 2 finite times, e.g. [1.0, 0.5, 0.0]")
    if steps is not None and ts.numel() != steps + 1:
        raise ConfigError(f"an explicit grid for steps={steps} needs {steps + 1} times, got {ts.numel()}")
    if not (ts[0] <= 1.0 and ts[-1] == 0.0 and bool((ts[1:] < ts[:-1]).all())):
        raise ConfigError(f"an explicit grid must decrease strictly from t <= 1 to exactly 0; got {ts.tolist()}")
    return ts
