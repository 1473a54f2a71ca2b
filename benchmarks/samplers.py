"""Sampler benchmark: relative W2 to the data vs NFE, on Gaussian data with its exact denoiser.

Data: one-channel 32 x 32 "images", Gaussian and diagonal in the process basis, with a
power-law spectrum like natural images: ``v(f) = (1 + f)^-p`` with ``f = sqrt(i^2 + j^2)`` the
frequency index of coefficient (i, j) and p = 1.82 chosen so v falls from 1 (DC) to 1e-3 (the
highest frequency); mean ``m = sqrt(v) cos(f) / 2``. For Gaussian diffusion (identity basis)
the same numbers are per-pixel variances; for blurring diffusion they are DCT coefficients.

With the exact denoiser (``GaussianData.model``) every deterministic sampler is an affine map
per coefficient, ``out = offset + gain * n`` of the initial standard noise n, so pushing n = 0
and n = 1 through it gives the output law N(offset, gain^2) exactly, and

    W2^2 = sum_k (offset_k - m_k)^2 + (|gain_k| - sqrt(v_k))^2,   relative W2 = W2 / sqrt(sum_k m_k^2 + v_k).

diffusers' DDIMScheduler, DPMSolverMultistepScheduler and UniPCMultistepScheduler are driven
by the same denoiser on the DDPM linear schedule (diffusers timestep j is difflab time
(j + 1) / 1000, where both have alpha_bar_{j+1}); every scheduler is swept over its spacing,
sigma and order options and the best configuration per NFE is reported. The "floor" is the
W2 of the exact ODE solution followed by the final clean estimate at the last grid time
t_min = 1e-3 (what any sampler converges to). Stochastic samplers (ancestral, SDE) are not
affine maps of n alone and are left out; "euler" is identical to "ddim".

Tuned grids: ``difflab.tune_grid`` with its defaults (t_min = 1e-5) tunes a grid per process,
sampler and NFE budget on a batch of initial noises, as ``difflab tune`` does for a checkpoint;
the tuned grid is then scored like the fixed ones (its floor is the one at t_min = 1e-5). The
tuning only sees the model (here the exact denoiser), never the data's mean and variances.

Run: ``python benchmarks/samplers.py`` (about 10 minutes on one core, 8 of them tuning
blurring grids; ``--tune-all-samplers`` adds 2 more; ``--checkpoint RUN`` adds the trained
network's FD and RMSE, about 18 minutes per digits model). Writes
``benchmarks/results/samplers.json`` and ``samplers.png`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from difflab.processes import BlurringDiffusion, DiagonalGaussianProcess, GaussianDiffusion
from difflab.processes.analytic import GaussianData
import difflab
from difflab.samplers import SAMPLERS, auto_grid, make_denoiser, time_grid
from difflab.samplers.api import AUTO_GRIDS, auto_sampler
from difflab.samplers.grids import T_MIN, scalar_logsnr
from difflab.samplers.tuning import TUNED_T_MIN, TunedGrid
from difflab.models.tuning import TUNE_BATCH

SIZE = 32
V_MAX, V_MIN = 1.0, 1e-3
NFES = (5, 10, 20, 50)
BENCH_SAMPLERS = ("ddim", "heun", "dpmpp_2m", "dpmpp_3m", "unipc")
BENCH_GRIDS = ("uniform", "quadratic", "logsnr", "karras")
TARGET_RATIO_10 = 0.5  # default sampler at 10 NFE: at most half of diffusers' best
TARGET_W2_20 = 0.004  # default sampler at 20 NFE
# Grid tuning as `difflab tune` does it (difflab.tune_grid with its default t_min,
# reference_steps and max_evals; TUNE_BATCH noises from seed TUNE_SEEDS[0]); robustness: every
# seed x batch below. The RMSE noise of part (b) has its own seed, so it is not the tuning noise.
TUNE_SEEDS = (0, 1, 2)
RMSE_SEED = 1
ROBUST_BATCHES = (16, 32)
ROBUST_NFES = (10, 20)
RESULTS = Path(__file__).parent / "results"


# --- data and metric -----------------------------------------------------------------------
def power_law_data(size: int = SIZE) -> GaussianData:
    """Gaussian data (1, size, size) with v(f) = (1 + f)^-p from V_MAX at f = 0 to V_MIN at the top frequency."""
    i = torch.arange(size, dtype=torch.float64)
    f = torch.sqrt(i[:, None] ** 2 + i[None, :] ** 2)
    p = math.log(V_MAX / V_MIN) / math.log(1.0 + f.max().item())
    var = V_MAX * (1.0 + f) ** (-p)
    return GaussianData(mean=(0.5 * var.sqrt() * torch.cos(f))[None], var=var[None])


def spectrum_exponent(size: int = SIZE) -> float:
    return math.log(V_MAX / V_MIN) / math.log(1.0 + math.sqrt(2.0) * (size - 1))


def relative_w2(offset: torch.Tensor, gain: torch.Tensor, data: GaussianData,
                reference: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """Relative W2 between N(offset, gain^2) and N(m, v) (or N(ref_offset, ref_gain^2)), all diagonal.

    Normalised by the data's root mean square, sqrt(sum_k m_k^2 + v_k), in both cases.
    """
    m, v = data.mean.double(), data.var.double()
    ref_mean, ref_std = (m, v.sqrt()) if reference is None else (reference[0], reference[1].abs())
    w2_sq = ((offset - ref_mean) ** 2 + (gain.abs() - ref_std) ** 2).sum()
    return (w2_sq / (m**2 + v).sum()).sqrt().item()


def _unit_noise(data: GaussianData) -> torch.Tensor:
    """Initial noise n = 0 and n = 1 as a batch of two (2, C, H, W), float64."""
    zeros = torch.zeros_like(data.mean, dtype=torch.float64)
    return torch.stack([zeros, torch.ones_like(zeros)])


def _affine(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return out[0], out[1] - out[0]


# --- difflab -------------------------------------------------------------------------------
def difflab_affine(process: DiagonalGaussianProcess, data: GaussianData, sampler: str, grid: str,
                   steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(offset, gain) of a difflab sampler on a named grid."""
    return difflab_affine_on(process, data, sampler, time_grid(grid, steps, process=process))


def difflab_affine_on(process: DiagonalGaussianProcess, data: GaussianData, sampler: str,
                      ts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(offset, gain) of a difflab sampler on explicit times ``ts``, the unit noise given in the process basis."""
    noise = _unit_noise(data)
    _, sigma_1 = process.alpha_sigma(ts[:1].expand(2), tuple(noise.shape))
    denoise = make_denoiser(data.model(process, "eps"), process, "eps")
    return _affine(SAMPLERS[sampler](denoise, process, sigma_1 * noise, ts))


def steps_for(sampler: str, nfe: int) -> tuple[int, int]:
    """(steps, actual NFE) within an NFE budget: Heun spends 2 steps - 1 evaluations."""
    if sampler == "heun":
        steps = (nfe + 1) // 2
        return steps, 2 * steps - 1
    return nfe, nfe


def exact_affine(process: DiagonalGaussianProcess, data: GaussianData, t_min: float = T_MIN,
                 noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(offset, gain) of the exact probability-flow ODE from t = 1 to t_min, then the clean estimate there.

    Per coefficient, with y = u / alpha and s = sigma / alpha, the exact flow is
    ``y - m ~ sqrt(v + s^2)`` (Gaussian data convolved with N(0, s^2)). This is what every
    sampler converges to; its W2 to the data is the "floor".
    """
    noise = _unit_noise(data) if noise is None else noise
    shape = tuple(noise.shape)
    batch = shape[0]
    t1, t0 = torch.ones(batch, dtype=torch.float64), torch.full((batch,), t_min, dtype=torch.float64)
    (a1, s1), (a0, s0) = process.alpha_sigma(t1, shape), process.alpha_sigma(t0, shape)
    m, v = data.mean.double(), data.var.double()
    y1 = s1 * noise / a1
    y0 = m + (y1 - m) * ((v + (s0 / a0) ** 2) / (v + (s1 / a1) ** 2)).sqrt()
    u_0, _ = data.posterior_mean(process, a0 * y0, t0)
    return _affine(u_0)


# --- diffusers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SchedulerConfig:
    family: str  # "DDIM", "DPMSolverMultistep", "UniPCMultistep"
    options: tuple[tuple[str, Any], ...]

    def label(self) -> str:
        return f"{self.family}(" + ", ".join(f"{k}={v}" for k, v in self.options) + ")"


DIFFUSERS_DEFAULTS = {  # each scheduler's constructor defaults (DDIM: clip_sample off, see diffusers_affine)
    "DDIM": "DDIM(timestep_spacing=leading)",
    "DPMSolverMultistep": "DPMSolverMultistep(solver_order=2, timestep_spacing=linspace)",
    "UniPCMultistep": "UniPCMultistep(solver_order=2, timestep_spacing=linspace, solver_type=bh2)",
}


def diffusers_configs() -> list[SchedulerConfig]:
    """The swept configurations: spacing x sigmas x order (x solver type for UniPC)."""
    spacings = ("linspace", "leading", "trailing")
    configs = [SchedulerConfig("DDIM", (("timestep_spacing", sp),)) for sp in spacings]
    sigma_options: tuple[tuple[tuple[str, Any], ...], ...] = ((), (("use_karras_sigmas", True),))
    for order in (2, 3):
        for sp in spacings:
            for sig in (*sigma_options, (("use_lu_lambdas", True),)):
                options = (("solver_order", order), ("timestep_spacing", sp), *sig)
                configs.append(SchedulerConfig("DPMSolverMultistep", options))
            for sig in sigma_options:
                for solver_type in ("bh1", "bh2"):
                    configs.append(SchedulerConfig("UniPCMultistep", (("solver_order", order), ("timestep_spacing", sp),
                                                                      ("solver_type", solver_type), *sig)))
    return configs


def _diffusers_scheduler(config: SchedulerConfig) -> Any:
    import diffusers  # the `bench` extra; imported here only

    cls = getattr(diffusers, f"{config.family}Scheduler")
    extra = {"clip_sample": False} if config.family == "DDIM" else {}  # clipping would break the affine map
    return cls(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
               **extra, **dict(config.options))


def diffusers_affine(config: SchedulerConfig, data: GaussianData, nfe: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(offset, gain) of a diffusers scheduler driven by the exact eps denoiser of GaussianDiffusion('linear')."""
    scheduler = _diffusers_scheduler(config)
    scheduler.set_timesteps(nfe)
    model = data.model(GaussianDiffusion("linear"), "eps")
    x = _unit_noise(data) * scheduler.init_noise_sigma
    for j in scheduler.timesteps:
        t = (j.double() + 1.0) / 1000.0  # diffusers timestep j has alpha_bar_{j+1} = difflab alpha^2 at (j+1)/T
        x = scheduler.step(model(x, t.expand(2)), j, x).prev_sample
    return _affine(x.double())


def diffusers_w2(config: SchedulerConfig, data: GaussianData, nfe: int) -> float:
    w2 = relative_w2(*diffusers_affine(config, data, nfe), data)
    return w2 if math.isfinite(w2) else float("inf")


# --- runs ----------------------------------------------------------------------------------
def bench_processes() -> dict[str, DiagonalGaussianProcess]:
    return {
        "gaussian-linear": GaussianDiffusion("linear"),
        "gaussian-cosine": GaussianDiffusion("cosine"),
        "blurring": BlurringDiffusion(),
    }


def w2_row(data: GaussianData, exact: tuple[torch.Tensor, torch.Tensor], offset: torch.Tensor, gain: torch.Tensor,
           **key: Any) -> dict[str, Any]:
    """``key`` with the relative W2 of N(offset, gain^2) to the data and to the exact ODE output (the solver error)."""
    return {**key, "rel_w2": relative_w2(offset, gain, data),
            "solver_w2": relative_w2(offset, gain, data, reference=exact)}


def grid_label(process: DiagonalGaussianProcess, t_min: float) -> str:
    """The process's auto grid, named with its t_min unless that is the fixed grids' T_MIN."""
    return auto_grid(process) if t_min == T_MIN else f"{auto_grid(process)}, t_min {t_min:g}"


def run_difflab(data: GaussianData, nfes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Every sampler x fixed grid x NFE budget; and the auto sampler on the auto grid ending at TUNED_T_MIN,
    like the tuned grids (it separates the effect of t_min from that of the tuned placement)."""
    rows = []
    for pname, process in bench_processes().items():
        exact = exact_affine(process, data)
        for sampler in BENCH_SAMPLERS:
            for grid in BENCH_GRIDS:
                for budget in nfes:
                    steps, nfe = steps_for(sampler, budget)
                    rows.append(w2_row(data, exact, *difflab_affine(process, data, sampler, grid, steps), process=pname,
                                       sampler=sampler, grid=grid, nfe_budget=budget, steps=steps, nfe=nfe))
        exact, sampler = exact_affine(process, data, t_min=TUNED_T_MIN), auto_sampler(process)
        for budget in nfes:
            steps, nfe = steps_for(sampler, budget)
            ts = time_grid(auto_grid(process), steps, process=process, t_min=TUNED_T_MIN)
            rows.append(w2_row(data, exact, *difflab_affine_on(process, data, sampler, ts), process=pname,
                               sampler=sampler, grid=grid_label(process, TUNED_T_MIN), nfe_budget=budget, steps=steps,
                               nfe=nfe))
    return rows


def run_diffusers(data: GaussianData, nfes: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for config in diffusers_configs():
            for nfe in nfes:
                rows.append({"family": config.family, "config": config.label(), "nfe": nfe,
                             "rel_w2": diffusers_w2(config, data, nfe)})
    return rows


def best_grids(rows: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Per process kind and sampler: the grid with the lowest geometric-mean W2 at 10 and 20 NFE."""
    kinds = {"gaussian": ("gaussian-linear", "gaussian-cosine"), "blurring": ("blurring",)}
    best: dict[str, dict[str, str]] = {}
    for kind, pnames in kinds.items():
        best[kind] = {}
        for sampler in BENCH_SAMPLERS:
            def score(grid: str) -> float:
                logs = [math.log(r["rel_w2"]) for r in rows if r["process"] in pnames and r["sampler"] == sampler
                        and r["grid"] == grid and r["nfe_budget"] in (10, 20)]
                return sum(logs) / len(logs)
            best[kind][sampler] = min(BENCH_GRIDS, key=score)
    return best


def find(rows: list[dict[str, Any]], **key: Any) -> dict[str, Any] | None:
    """The first row whose fields equal ``key``, or None."""
    return next((r for r in rows if all(r.get(k) == v for k, v in key.items())), None)


def lookup(rows: list[dict[str, Any]], process: str, sampler: str, grid: str, budget: int,
           key: str = "rel_w2") -> float:
    """One number of a row that must exist; NaN (printed "-") for a tuned grid that was not run."""
    row = find(rows, process=process, sampler=sampler, grid=grid, nfe_budget=budget)
    if row is None and grid == "tuned":
        return math.nan
    assert row is not None, (process, sampler, grid, budget)
    return row[key]


# --- tuned grids ---------------------------------------------------------------------------
@dataclass
class CountingModel:
    """A model callable that counts its calls (one call = one network evaluation of the whole batch)."""

    model: Callable[..., torch.Tensor]
    calls: int = 0

    def __call__(self, z_t: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        self.calls += 1
        return self.model(z_t, t, **cond)


def tune(model: Callable[..., torch.Tensor], process: DiagonalGaussianProcess, shape: tuple[int, ...], steps: int,
         sampler: str, seed: int, **options: Any) -> tuple[TunedGrid, dict[str, Any]]:
    """``difflab.tune_grid`` with its default t_min, reference_steps and max_evals, on ``shape[0]`` noises of ``seed``.

    Returns the grid and its record: the times, J on the best fixed start grid and on the tuned
    one, J of the reference (vs a solve with half its steps), wall seconds and network
    evaluations (per noise) spent tuning.
    """
    counter = CountingModel(model)
    start = time.perf_counter()
    tuned = difflab.tune_grid(counter, process, shape, steps, sampler=sampler,
                              generator=torch.Generator().manual_seed(seed), **options)
    record = {"times": list(tuned.times), "j_start": tuned.rel_mse_start, "j": tuned.rel_mse,
              "j_reference": tuned.rel_mse_reference, "tune_seconds": time.perf_counter() - start,
              "tune_nfe": counter.calls, "tune_seed": seed, "tune_batch": shape[0]}
    return tuned, record


def tuned_row(pname: str, process: DiagonalGaussianProcess, data: GaussianData, sampler: str, budget: int, *,
              seed: int = TUNE_SEEDS[0], batch: int = TUNE_BATCH) -> dict[str, Any]:
    """A grid tuned for ``sampler`` within an NFE budget, scored exactly like the fixed grids
    (the solver error against the exact ODE to the tuned grid's t_min, TUNED_T_MIN)."""
    steps, nfe = steps_for(sampler, budget)
    tuned, record = tune(data.model(process, "eps"), process, (batch, *data.mean.shape), steps, sampler, seed,
                         dtype=torch.float64)
    exact = exact_affine(process, data, t_min=TUNED_T_MIN)
    return w2_row(data, exact, *difflab_affine_on(process, data, sampler, tuned.as_tensor()), process=pname,
                  sampler=sampler, grid="tuned", nfe_budget=budget, steps=steps, nfe=nfe, **record)


def run_tuned(data: GaussianData, nfes: tuple[int, ...], samplers_on_linear: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each process's auto sampler on grids tuned per NFE budget, and ``samplers_on_linear`` on gaussian-linear."""
    rows = []
    for pname, process in bench_processes().items():
        extra = samplers_on_linear if pname == "gaussian-linear" else ()
        for sampler in dict.fromkeys((auto_sampler(process), *extra)):
            rows += [tuned_row(pname, process, data, sampler, budget) for budget in nfes]
    return rows


def run_robustness(data: GaussianData, tuned: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tuned default on gaussian-linear at ROBUST_NFES for every tuning seed x batch (reusing ``tuned``'s rows)."""
    pname = "gaussian-linear"
    process = bench_processes()[pname]
    sampler = auto_sampler(process)
    rows = []
    for batch in ROBUST_BATCHES:
        for seed in TUNE_SEEDS:
            for budget in ROBUST_NFES:
                known = find(tuned, process=pname, sampler=sampler, nfe_budget=budget, tune_seed=seed, tune_batch=batch)
                rows.append(known or tuned_row(pname, process, data, sampler, budget, seed=seed, batch=batch))
    return rows


# --- trained models -------------------------------------------------------------------------
@dataclass
class TrainedRun:
    """A checkpoint's EMA network and what its rows need: the test split (FD) and the RMSE noise."""

    model: torch.nn.Module
    process: DiagonalGaussianProcess
    prediction: str
    num_classes: int | None
    image_shape: tuple[int, ...]
    data: Any  # difflab.data.ImageDataset, the test split
    noise: torch.Tensor  # (num_rmse, *image_shape), seed RMSE_SEED

    @classmethod
    def load(cls, run: Path, num_rmse: int) -> TrainedRun:
        from difflab.data import load_dataset

        model = difflab.load_model(run)
        image_shape = model.image_shape
        noise = torch.randn((num_rmse, *image_shape), generator=torch.Generator().manual_seed(RMSE_SEED))
        return cls(model.network, model.process, model.prediction, model.conditioning.num_classes, image_shape,
                   load_dataset(model.artefact["metadata"]["data"]["name"], split="test"), noise)

    def cond(self, n: int) -> dict[str, torch.Tensor] | None:
        return None if self.num_classes is None else {"class_labels": torch.arange(n) % self.num_classes}

    def solve(self, sampler: str, steps: int, grid: str | torch.Tensor) -> torch.Tensor:
        """Samples from the fixed RMSE noise (clip_x0 = 1)."""
        return difflab.sample(self.model, self.process, tuple(self.noise.shape), sampler=sampler, steps=steps,
                              noise=self.noise, clip_x0=1.0, prediction=self.prediction, grid=grid,
                              cond=self.cond(len(self.noise)))

    def fd(self, sampler: str, steps: int, grid: str | torch.Tensor, num_samples: int) -> float:
        """FD of ``num_samples`` samples (``difflab.evaluation.evaluate``: seed 0, clip_x0 = 1)."""
        from difflab.evaluation import evaluate

        return evaluate(self.model, self.process, self.data, metrics=("fd",), num_samples=num_samples,
                        sampler=sampler, steps=steps, grid=grid, prediction=self.prediction, ema=True,
                        num_classes=self.num_classes)["fd"]

    def tune(self, steps: int) -> tuple[TunedGrid, dict[str, Any]]:
        """The auto sampler's grid tuned to this network (``difflab.tune_grid`` defaults, clip_x0 = 1)."""
        return tune(self.model, self.process, (TUNE_BATCH, *self.image_shape), steps, "auto", TUNE_SEEDS[0],
                    prediction=self.prediction, cond=self.cond(TUNE_BATCH), clip_x0=1.0)


def trained_model_rows(run: Path, nfes: tuple[int, ...], *, num_fd: int = 1000, num_rmse: int = 40,
                       reference_steps: int = 1000) -> list[dict[str, Any]]:
    """Per sampler x NFE on a trained network (EMA weights, clip_x0 = 1): every sampler on the process's
    auto grid, and the auto sampler on grids tuned to the network per NFE budget:

    - ``fd``: Frechet distance of ``num_fd`` samples to the dataset's test split in the project's
      classifier features (``difflab.evaluation``), same seed for every sampler;
    - ``rmse``: pixel RMSE (images in [-1, 1]) of ``num_rmse`` samples to a ``reference_steps``-step
      DDIM solution from the same noise on the auto grid ending at the same t_min (T_MIN for the
      fixed grids, TUNED_T_MIN for the tuned ones): the solver error on a real network.

    Rows with ``converged`` hold those DDIM solutions' FD.
    """
    net = TrainedRun.load(run, num_rmse)
    grid, auto = auto_grid(net.process), auto_sampler(net.process)
    head = {"run": str(run), "process": net.process.kind, "prediction": net.prediction}
    references = {}
    rows = []
    with torch.no_grad():
        for t_min in (T_MIN, TUNED_T_MIN):
            ts = time_grid(grid, reference_steps, process=net.process, t_min=t_min)
            references[t_min] = net.solve("ddim", reference_steps, ts)
            rows.append({**head, "sampler": "ddim", "grid": grid_label(net.process, t_min), "converged": True,
                         "nfe_budget": reference_steps, "nfe": reference_steps,
                         "fd": net.fd("ddim", reference_steps, ts, num_fd)})

        def row(sampler: str, budget: int, t_min: float, ts: torch.Tensor | None = None) -> dict[str, Any]:
            """On ``ts``, or else on the auto grid ending at ``t_min``; RMSE to the reference at ``t_min``."""
            steps, nfe = steps_for(sampler, budget)
            ts = time_grid(grid, steps, process=net.process, t_min=t_min) if ts is None else ts
            x = net.solve(sampler, steps, ts)
            return {**head, "sampler": sampler, "grid": grid_label(net.process, t_min), "nfe_budget": budget,
                    "nfe": nfe, "rmse": ((x - references[t_min]) ** 2).mean().sqrt().item(),
                    "fd": net.fd(sampler, steps, ts, num_fd)}

        rows += [row(sampler, budget, T_MIN) for sampler in BENCH_SAMPLERS for budget in nfes]
        rows += [row(auto, budget, TUNED_T_MIN) for budget in nfes]
        for budget in nfes:
            tuned, record = net.tune(steps_for(auto, budget)[0])
            rows.append({**row(auto, budget, TUNED_T_MIN, tuned.as_tensor()), "grid": "tuned", **record})
    return rows


def trained_table(rows: list[dict[str, Any]], nfes: tuple[int, ...], key: str) -> str:
    lines = _header(["run (process, prediction)", "sampler (grid)"], nfes)
    for run in dict.fromkeys(r["run"] for r in rows):
        sel = [r for r in rows if r["run"] == run]
        name = f"{Path(run).name} ({sel[0]['process']}, {sel[0]['prediction']})"
        for sampler, grid in dict.fromkeys((r["sampler"], r["grid"]) for r in sel if not r.get("converged")):
            cells = [f"{find(sel, sampler=sampler, grid=grid, nfe_budget=n)[key]:.3g}" for n in nfes]
            lines.append(_row(name, [f"{sampler} ({grid})", *cells]))
        if key == "fd":
            for r in (r for r in sel if r.get("converged")):
                lines.append(_row(name, [f"ddim, {r['nfe']} steps, {r['grid']} (converged)", f"{r['fd']:.3g}",
                                         *([""] * (len(nfes) - 1))]))
    return "\n".join(lines)


def report_trained(rows: list[dict[str, Any]], nfes: tuple[int, ...]) -> None:
    print("\n### Trained networks: FD to the test split (1000 samples, classifier features)\n")
    print(trained_table(rows, nfes, "fd"))
    print("\n### Trained networks: RMSE to a 1000-step DDIM solution from the same noise, same t_min\n")
    print(trained_table(rows, nfes, "rmse"))
    print(f"\n### Trained networks: grids tuned for the auto sampler ({TUNE_BATCH} noises, seed {TUNE_SEEDS[0]})\n")
    print(tuning_table([r for r in rows if r["grid"] == "tuned"], lambda r: f"{Path(r['run']).name}, {r['sampler']}",
                       (("fd", "FD"), ("rmse", "RMSE"))))


# --- report --------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:.2e}" if math.isfinite(x) and x < 1e3 else "diverged"


def _row(label: str, cells: list[str]) -> str:
    return f"| {label} | " + " | ".join(cells) + " |"


def _header(labels: list[str], nfes: tuple[int, ...]) -> list[str]:
    return [_row(labels[0], [*labels[1:], *(f"NFE {n}" for n in nfes)]), "|---" * (len(labels) + len(nfes)) + "|"]


def best_row(rows: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The row with the lowest rel_w2 among those ``keep`` accepts, or None."""
    return min((r for r in rows if keep(r)), key=lambda r: r["rel_w2"], default=None)


def diffusers_rows(theirs: list[dict[str, Any]], nfes: tuple[int, ...]) -> list[str]:
    """Each diffusers family at its default configuration, then at its best configuration per NFE."""
    lines = []
    for family, label in DIFFUSERS_DEFAULTS.items():
        cells = [_fmt(next(r["rel_w2"] for r in theirs if r["config"] == label and r["nfe"] == n)) for n in nfes]
        lines.append(_row(f"diffusers {family}, default config", cells))
    for family in DIFFUSERS_DEFAULTS:
        best = [best_row(theirs, lambda r, n=n: r["family"] == family and r["nfe"] == n) for n in nfes]
        lines.append(_row(f"diffusers {family}, best config",
                          [f"{_fmt(r['rel_w2'])} ({r['config'].split('(', 1)[1].rstrip(')')})" for r in best]))
    return lines


def comparison_table(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], nfes: tuple[int, ...],
                     floors: dict[float, dict[str, float]]) -> tuple[str, dict[str, Any]]:
    """Gaussian-linear, identity basis: difflab's default (fixed and tuned grid) vs diffusers' best per family."""
    pname = "gaussian-linear"
    process = bench_processes()[pname]
    sampler, grid = auto_sampler(process), auto_grid(process)
    default = [lookup(ours, pname, sampler, grid, n) for n in nfes]
    tuned = [lookup(ours, pname, sampler, "tuned", n) for n in nfes]
    theirs_best = [best_row(theirs, lambda r, n=n: r["nfe"] == n) for n in nfes]
    ours_fixed = [best_row(ours, lambda r, n=n: (r["process"], r["nfe_budget"]) == (pname, n)
                           and r["grid"] in BENCH_GRIDS) for n in nfes]
    ours_tuned = [best_row(ours, lambda r, n=n: (r["process"], r["nfe_budget"], r["grid"]) == (pname, n, "tuned"))
                  for n in nfes]
    lines = [*_header(["sampler (Gaussian data, DDPM linear schedule)"], nfes),
             _row(f"**difflab default** ({sampler}, grid {grid})", [_fmt(x) for x in default]),
             _row(f"difflab default sampler, grid {grid_label(process, TUNED_T_MIN)} (untuned)",
                  [_fmt(lookup(ours, pname, sampler, grid_label(process, TUNED_T_MIN), n)) for n in nfes]),
             _row(f"**difflab default, tuned grid** ({sampler}, `difflab.tune_grid` defaults)",
                  [_fmt(x) for x in tuned]),
             _row("difflab best of all samplers x fixed grids",
                  [f"{_fmt(r['rel_w2'])} ({r['sampler']}, {r['grid']})" for r in ours_fixed])]
    if len({r["sampler"] for r in ours if r["process"] == pname and r["grid"] == "tuned"}) > 1:
        lines.append(_row("difflab best sampler on its tuned grid",
                          [f"{_fmt(r['rel_w2'])} ({r['sampler']})" for r in ours_tuned]))
    lines += diffusers_rows(theirs, nfes)
    for label, values in (("difflab default", default), ("tuned default", tuned)):
        lines.append(_row(f"ratio {label} / diffusers best",
                          [f"{x / r['rel_w2']:.2f}" for x, r in zip(values, theirs_best, strict=True)]))
    for t_min, floor in floors.items():
        lines.append(_row(f"floor (exact ODE, clean estimate at t_min = {t_min:g})",
                          [_fmt(floor[pname]) for _ in nfes]))
    summary: dict[str, Any] = {"default": f"{sampler} + {grid}", "tuned_default": f"{sampler} + tuned grid", "nfe": {
        n: {"difflab_default": default[i], "difflab_tuned_default": tuned[i], "difflab_best_fixed": ours_fixed[i],
            "diffusers_best": theirs_best[i], "ratio_default_to_diffusers": default[i] / theirs_best[i]["rel_w2"],
            "ratio_tuned_default_to_diffusers": tuned[i] / theirs_best[i]["rel_w2"]}
        for i, n in enumerate(nfes)}}
    summary["targets"] = targets(summary)
    return "\n".join(lines), summary


def targets(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Both targets for the untuned and the tuned default: the measured value and whether it is met."""
    s10, s20 = summary["nfe"][10], summary["nfe"][20]
    out = {}
    for label, key in (("untuned default", "default"), ("tuned default", "tuned_default")):
        ratio, w2 = s10[f"ratio_{key}_to_diffusers"], s20[f"difflab_{key}"]
        out[label] = {"ratio_10": ratio, "met_10": ratio <= TARGET_RATIO_10,
                      "rel_w2_20": w2, "met_20": w2 <= TARGET_W2_20}
    return out


def target_lines(summary: dict[str, Any]) -> str:
    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return "\n".join(
        f"- {label} ({summary['default' if label.startswith('untuned') else 'tuned_default']}): "
        f"10 NFE {t['ratio_10']:.2f} x diffusers best (target <= {TARGET_RATIO_10}): {met(t['met_10'])}; "
        f"20 NFE rel. W2 {t['rel_w2_20']:.2e} (target <= {TARGET_W2_20}): {met(t['met_20'])}"
        for label, t in summary["targets"].items())


def grids_with_rows(rows: list[dict[str, Any]], process: str, sampler: str, grids: tuple[str, ...]) -> list[str]:
    return [g for g in grids if find(rows, process=process, sampler=sampler, grid=g)]


def process_table(rows: list[dict[str, Any]], process: str, nfes: tuple[int, ...],
                  floors: dict[float, dict[str, float]]) -> str:
    lines = _header([f"{process}: sampler", "grid"], nfes)
    low = grid_label(bench_processes()[process], TUNED_T_MIN)
    for sampler in BENCH_SAMPLERS:
        for grid in grids_with_rows(rows, process, sampler, (*BENCH_GRIDS, low, "tuned")):
            lines.append(_row(sampler, [grid, *(_fmt(lookup(rows, process, sampler, grid, n)) for n in nfes)]))
    for t_min, floor in floors.items():
        lines.append(_row("floor", [f"t_min = {t_min:g}", *(_fmt(floor[process]) for _ in nfes)]))
    return "\n".join(lines)


def solver_error_table(rows: list[dict[str, Any]], nfes: tuple[int, ...]) -> str:
    """W2 to the exact ODE output at the grid's own t_min (solver error alone, no floor): auto and tuned grids."""
    lines = _header(["process (grid)", "sampler"], nfes)
    for pname, process in bench_processes().items():
        for sampler in BENCH_SAMPLERS:
            for grid in grids_with_rows(rows, pname, sampler, (auto_grid(process), grid_label(process, TUNED_T_MIN),
                                                               "tuned")):
                cells = [_fmt(lookup(rows, pname, sampler, grid, n, key="solver_w2")) for n in nfes]
                lines.append(_row(f"{pname} ({grid})", [sampler, *cells]))
    return "\n".join(lines)


def tuning_table(rows: list[dict[str, Any]], label: Callable[[dict[str, Any]], str],
                 metrics: tuple[tuple[str, str], ...]) -> str:
    """Per tuned grid: ``metrics`` (key, header), J on the best fixed grid -> tuned, J of the reference, cost."""
    lines = [_row("tuned grid", ["NFE", *(h for _, h in metrics), "J best fixed -> tuned", "J reference", "tuning NFE",
                                 "tuning s"]), "|---" * (6 + len(metrics)) + "|"]
    for r in rows:
        cells = [str(r["nfe"]), *(f"{r[k]:.3g}" for k, _ in metrics), f"{r['j_start']:.2e} -> {r['j']:.2e}",
                 f"{r['j_reference']:.1e}", str(r["tune_nfe"]), f"{r['tune_seconds']:.1f}"]
        lines.append(_row(label(r), cells))
    return "\n".join(lines)


def robustness_table(rows: list[dict[str, Any]]) -> str:
    """Relative W2 of the tuned default per tuning seed x batch, at ROBUST_NFES."""
    lines = [_row("tuning noises (seed, batch)", [f"NFE {n}" for n in ROBUST_NFES]),
             "|---" * (1 + len(ROBUST_NFES)) + "|"]
    for batch in ROBUST_BATCHES:
        for seed in TUNE_SEEDS:
            cells = [_fmt(find(rows, tune_seed=seed, tune_batch=batch, nfe_budget=n)["rel_w2"]) for n in ROBUST_NFES]
            lines.append(_row(f"seed {seed}, batch {batch}", cells))
    return "\n".join(lines)


def grid_description(process: DiagonalGaussianProcess, ts: list[float]) -> str:
    """The scalar logSNR at each evaluated time of a grid (its last time, 0, left out)."""
    lam = scalar_logsnr(process, torch.tensor(ts[:-1], dtype=torch.float64))
    return ", ".join(f"{x:.1f}" for x in lam.tolist())


def plot(rows: list[dict[str, Any]], theirs: list[dict[str, Any]], nfes: tuple[int, ...],
         floors: dict[float, dict[str, float]], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 6.5), sharey=True)
    def curve(pname: str, sampler: str, grid: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
        pts = [(r["nfe"], r["rel_w2"]) for r in rows
               if (r["process"], r["sampler"], r["grid"]) == (pname, sampler, grid)]
        return tuple(zip(*pts, strict=True))  # type: ignore[return-value]

    for ax, (pname, process) in zip(axes, bench_processes().items(), strict=True):
        auto = auto_sampler(process)
        for sampler in BENCH_SAMPLERS:
            style = "-" if sampler == auto else "--"
            ax.plot(*curve(pname, sampler, auto_grid(process)), style, marker="o",
                    label=f"difflab {sampler} ({auto_grid(process)})")
        low = grid_label(process, TUNED_T_MIN)
        ax.plot(*curve(pname, auto, low), "-", color="black", lw=0.8, marker="x", label=f"difflab {auto} ({low})")
        ax.plot(*curve(pname, auto, "tuned"), "-", color="black", lw=2, marker="*", ms=9,
                label=f"difflab {auto} (tuned grid)")
        if pname == "gaussian-linear":
            for family in ("DDIM", "DPMSolverMultistep", "UniPCMultistep"):
                best = [min(r["rel_w2"] for r in theirs if r["family"] == family and r["nfe"] == n) for n in nfes]
                ax.plot(nfes, best, ":", marker="s", label=f"diffusers {family} (best config per NFE)")
        for (t_min, floor), style in zip(floors.items(), ("-", "--"), strict=True):
            ax.axhline(floor[pname], color="gray", ls=style, lw=0.8, label=f"floor (t_min={t_min:g})")
        ax.set(xscale="log", yscale="log", title=pname, xlabel="NFE", ylim=(1e-4, 2.0))
        ax.set_xticks(nfes, [str(n) for n in nfes], minor=False)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    axes[0].set_ylabel("relative W2 to the data")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report_gaussian(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], robust: list[dict[str, Any]],
                    nfes: tuple[int, ...], floors: dict[float, dict[str, float]]) -> dict[str, Any]:
    """Print part (a)'s tables; returns the comparison summary."""
    table, summary = comparison_table(ours, theirs, nfes, floors)
    print(f"## Gaussian data, {SIZE}x{SIZE}, spectrum v = (1 + f)^-{spectrum_exponent():.2f} "
          f"from {V_MAX:g} to {V_MIN:g}\n")
    print(table, "\n")
    print(target_lines(summary), "\n")
    print(f"### Tuned grids (difflab.tune_grid defaults, {TUNE_BATCH} noises, seed {TUNE_SEEDS[0]}, float64)\n")
    tuned = [r for r in ours if r["grid"] == "tuned"]
    metrics = (("rel_w2", "rel. W2"), ("solver_w2", "solver W2"))
    print(tuning_table(tuned, lambda r: f"{r['process']}, {r['sampler']}", metrics), "\n")
    print("Scalar logSNR of the evaluated times, tuned grid vs the auto grid to the same t_min:\n")
    for (pname, process), n in itertools.product(bench_processes().items(), ROBUST_NFES):
        row = find(tuned, process=pname, sampler=auto_sampler(process), nfe_budget=n)
        fixed = time_grid(auto_grid(process), row["steps"], process=process, t_min=TUNED_T_MIN).tolist()
        print(f"- {pname}, {n} NFE: tuned {grid_description(process, row['times'])}; "
              f"{auto_grid(process)} {grid_description(process, fixed)}")
    print(f"\n### Robustness: the tuned default on gaussian-linear per tuning draw\n\n{robustness_table(robust)}\n")
    for pname in bench_processes():
        print(process_table(ours, pname, nfes, floors), "\n")
    print("### Solver error: relative W2 to the exact ODE output at the same t_min (no floor)\n")
    print(solver_error_table(ours, nfes), "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--checkpoint", type=Path, action="append", default=[],
                        help="a trained run (repeatable): add FD and solver error vs NFE of each sampler on it")
    parser.add_argument("--tune-all-samplers", action="store_true",
                        help="also tune grids for every benchmark sampler on gaussian-linear (about 5 more minutes)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = power_law_data()
    nfes = NFES
    floors = {t_min: {name: relative_w2(*exact_affine(process, data, t_min), data)
                      for name, process in bench_processes().items()} for t_min in (T_MIN, TUNED_T_MIN)}
    ours = run_difflab(data, nfes)
    tuned = run_tuned(data, nfes, BENCH_SAMPLERS if args.tune_all_samplers else ())
    robust = run_robustness(data, tuned)
    ours += tuned
    theirs = run_diffusers(data, nfes)
    summary = report_gaussian(ours, theirs, robust, nfes, floors)
    recommended = best_grids(ours)
    print("Best fixed grid per process kind and sampler (geometric mean of W2 at 10 and 20 NFE):", recommended)
    for kind, grid in AUTO_GRIDS.items():
        agree = [name for name, best in recommended[kind].items() if best == grid]
        print(f"- auto grid for {kind}: {grid}, the best here for {', '.join(agree)}")
    print(f"\npart (a): {time.perf_counter() - start:.0f} s")
    trained = [row for run in args.checkpoint for row in trained_model_rows(run, nfes)]
    if trained:
        report_trained(trained, nfes)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"spectrum": {"size": SIZE, "v_max": V_MAX, "v_min": V_MIN, "exponent": spectrum_exponent(),
                           "law": "v = (1 + sqrt(i^2 + j^2))^-p, mean = sqrt(v) cos(f) / 2"},
              "t_min": T_MIN, "tuned_t_min": TUNED_T_MIN, "floors": floors, "comparison": summary,
              "best_grids": recommended, "robustness": robust, "trained_models": trained, "difflab": ours,
              "diffusers": theirs, "seconds": time.perf_counter() - start}
    (args.out / "samplers.json").write_text(json.dumps(result, indent=1, default=str))
    plot(ours, theirs, nfes, floors, args.out / "samplers.png")
    print(f"\nwrote {args.out / 'samplers.json'} and {args.out / 'samplers.png'} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
