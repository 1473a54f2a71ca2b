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

Run: ``python benchmarks/samplers.py`` (about a minute on one core). Writes
``benchmarks/results/samplers.json`` and ``samplers.png`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from difflab.processes import BlurringDiffusion, DiagonalGaussianProcess, GaussianDiffusion
from difflab.processes.analytic import GaussianData
import difflab
from difflab.samplers import SAMPLERS, auto_grid, make_denoiser, time_grid
from difflab.samplers.api import AUTO_GRIDS, auto_sampler
from difflab.samplers.grids import T_MIN

SIZE = 32
V_MAX, V_MIN = 1.0, 1e-3
NFES = (5, 10, 20, 50)
BENCH_SAMPLERS = ("ddim", "heun", "dpmpp_2m", "dpmpp_3m", "unipc")
BENCH_GRIDS = ("uniform", "quadratic", "logsnr", "karras")
TARGET_RATIO_10 = 0.5  # default sampler at 10 NFE: at most half of diffusers' best
TARGET_W2_20 = 0.004  # default sampler at 20 NFE
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
    """(offset, gain) of a difflab sampler, with the unit noise given in the process basis."""
    noise = _unit_noise(data)
    ts = time_grid(grid, steps, process=process)
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


def run_difflab(data: GaussianData, nfes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Every sampler x grid x NFE budget: W2 to the data and to the exact ODE output (the solver error)."""
    rows = []
    for pname, process in bench_processes().items():
        exact = exact_affine(process, data)
        for sampler in BENCH_SAMPLERS:
            for grid in BENCH_GRIDS:
                for budget in nfes:
                    steps, nfe = steps_for(sampler, budget)
                    offset, gain = difflab_affine(process, data, sampler, grid, steps)
                    rows.append({"process": pname, "sampler": sampler, "grid": grid, "nfe_budget": budget,
                                 "steps": steps, "nfe": nfe, "rel_w2": relative_w2(offset, gain, data),
                                 "solver_w2": relative_w2(offset, gain, data, reference=exact)})
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


def lookup(rows: list[dict[str, Any]], process: str, sampler: str, grid: str, budget: int,
           key: str = "rel_w2") -> float:
    return next(r[key] for r in rows if (r["process"], r["sampler"], r["grid"], r["nfe_budget"])
                == (process, sampler, grid, budget))


# --- trained models -------------------------------------------------------------------------
def trained_model_rows(run: Path, nfes: tuple[int, ...], *, num_fd: int = 1000, num_rmse: int = 40,
                       reference_steps: int = 1000) -> list[dict[str, Any]]:
    """Per sampler x NFE on a trained network, at the process's auto grid (clip_x0 = 1, EMA weights):

    - ``fd``: Frechet distance of ``num_fd`` samples to the dataset's test split in the project's
      classifier features (``difflab.evaluation``), same seed for every sampler;
    - ``rmse``: pixel RMSE (images in [-1, 1]) of ``num_rmse`` samples to a ``reference_steps``-step
      DDIM solution from the same noise: the solver error on a real network.
    """
    from difflab.data import load_dataset
    from difflab.evaluation import evaluate
    from difflab.training import load_checkpoint

    ckpt = load_checkpoint(run)
    model, process, config = ckpt.ema_model.eval(), ckpt.process, ckpt.config
    num_classes = config.network.get("num_classes")
    prediction = config.objective.prediction
    data = load_dataset(config.data.name, split="test")
    shape = (num_rmse, *ckpt.training_state["image_shape"])
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    common = {"noise": noise, "clip_x0": 1.0, "prediction": prediction, "grid": auto_grid(process),
              "cond": None if num_classes is None else {"class_labels": torch.arange(num_rmse) % num_classes}}
    fd_options = {"metrics": ("fd",), "num_samples": num_fd, "prediction": prediction, "ema": True,
                  "num_classes": num_classes}
    rows = []
    with torch.no_grad():
        reference = difflab.sample(model, process, shape, sampler="ddim", steps=reference_steps, **common)
        converged = evaluate(model, process, data, sampler="ddim", steps=reference_steps, **fd_options)["fd"]
        for sampler in BENCH_SAMPLERS:
            for budget in nfes:
                steps, nfe = steps_for(sampler, budget)
                x = difflab.sample(model, process, shape, sampler=sampler, steps=steps, **common)
                fd = evaluate(model, process, data, sampler=sampler, steps=steps, **fd_options)["fd"]
                rows.append({"run": str(run), "process": process.kind, "prediction": prediction,
                             "sampler": sampler, "grid": common["grid"], "nfe_budget": budget, "nfe": nfe,
                             "rmse": ((x - reference) ** 2).mean().sqrt().item(), "fd": fd,
                             f"fd_ddim_{reference_steps}": converged})
    return rows


def trained_table(rows: list[dict[str, Any]], nfes: tuple[int, ...], key: str) -> str:
    lines = ["| run (process, prediction, auto grid) | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---|---|" + "---|" * len(nfes)]
    for run in dict.fromkeys(r["run"] for r in rows):
        for sampler in BENCH_SAMPLERS:
            sel = [r for r in rows if r["run"] == run and r["sampler"] == sampler]
            head = f"{Path(run).name} ({sel[0]['process']}, {sel[0]['prediction']}, {sel[0]['grid']})"
            lines.append(f"| {head} | {sampler} | " + " | ".join(f"{r[key]:.3g}" for r in sel) + " |")
        if key == "fd":
            key_steps, converged = next((k, v) for k, v in sel[0].items() if k.startswith("fd_ddim_"))
            lines.append(f"| {Path(run).name} | ddim, {key_steps.rsplit('_', 1)[1]} steps (converged) | "
                         f"{converged:.3g} |" + " |" * (len(nfes) - 1))
    return "\n".join(lines)


# --- report --------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:.2e}" if math.isfinite(x) and x < 1e3 else "diverged"


def comparison_table(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], nfes: tuple[int, ...],
                     floors: dict[str, float]) -> tuple[str, dict[str, Any]]:
    """Gaussian-linear, identity basis: difflab default vs diffusers' best per family."""
    process = bench_processes()["gaussian-linear"]
    default_sampler, default_grid = auto_sampler(process), auto_grid(process)
    lines = ["| sampler (Gaussian data, DDPM linear schedule) | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---|" + "---|" * len(nfes)]
    summary: dict[str, Any] = {"default": f"{default_sampler} + {default_grid}", "nfe": {}}
    default_row = [lookup(ours, "gaussian-linear", default_sampler, default_grid, n) for n in nfes]
    lines.append(f"| **difflab default** ({default_sampler}, grid {default_grid}) | "
                 + " | ".join(_fmt(x) for x in default_row) + " |")
    best_ours = []
    for n in nfes:
        cands = [r for r in ours if r["process"] == "gaussian-linear" and r["nfe_budget"] == n]
        best_ours.append(min(cands, key=lambda r: r["rel_w2"]))
    lines.append("| difflab best of all samplers x grids | "
                 + " | ".join(f"{_fmt(r['rel_w2'])} ({r['sampler']}, {r['grid']})" for r in best_ours) + " |")
    overall = []
    for family, label in DIFFUSERS_DEFAULTS.items():
        cells = [_fmt(next(r["rel_w2"] for r in theirs if r["config"] == label and r["nfe"] == n)) for n in nfes]
        lines.append(f"| diffusers {family}, default config | " + " | ".join(cells) + " |")
    for family in DIFFUSERS_DEFAULTS:
        cells = []
        for n in nfes:
            r = min((r for r in theirs if r["family"] == family and r["nfe"] == n), key=lambda r: r["rel_w2"])
            cells.append(f"{_fmt(r['rel_w2'])} ({r['config'].split('(', 1)[1].rstrip(')')})")
        lines.append(f"| diffusers {family}, best config | " + " | ".join(cells) + " |")
    for i, n in enumerate(nfes):
        best = min((r for r in theirs if r["nfe"] == n), key=lambda r: r["rel_w2"])
        overall.append(best)
        summary["nfe"][n] = {"difflab_default": default_row[i], "difflab_best": best_ours[i],
                             "diffusers_best": best, "ratio_default_to_diffusers": default_row[i] / best["rel_w2"]}
    lines.append("| ratio difflab default / diffusers best | "
                 + " | ".join(f"{default_row[i] / overall[i]['rel_w2']:.2f}" for i in range(len(nfes))) + " |")
    lines.append(f"| floor (exact ODE, clean estimate at t_min = {T_MIN:g}) | "
                 + " | ".join(_fmt(floors["gaussian-linear"]) for _ in nfes) + " |")
    return "\n".join(lines), summary


def process_table(rows: list[dict[str, Any]], process: str, nfes: tuple[int, ...], floor: float) -> str:
    lines = [f"| {process}: sampler | grid | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---|---|" + "---|" * len(nfes)]
    for sampler in BENCH_SAMPLERS:
        for grid in BENCH_GRIDS:
            cells = [_fmt(lookup(rows, process, sampler, grid, n)) for n in nfes]
            lines.append(f"| {sampler} | {grid} | " + " | ".join(cells) + " |")
    lines.append(f"| floor | t_min = {T_MIN:g} | " + " | ".join(_fmt(floor) for _ in nfes) + " |")
    return "\n".join(lines)


def solver_error_table(rows: list[dict[str, Any]], nfes: tuple[int, ...]) -> str:
    """W2 to the exact ODE output (solver error alone, no t_min floor), each process at its auto grid."""
    lines = ["| process (auto grid) | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---|---|" + "---|" * len(nfes)]
    for pname, process in bench_processes().items():
        grid = auto_grid(process)
        for sampler in BENCH_SAMPLERS:
            cells = [_fmt(lookup(rows, pname, sampler, grid, n, key="solver_w2")) for n in nfes]
            lines.append(f"| {pname} ({grid}) | {sampler} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], theirs: list[dict[str, Any]], nfes: tuple[int, ...], floors: dict[str, float],
         path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 6), sharey=True)
    for ax, (pname, process) in zip(axes, bench_processes().items(), strict=True):
        for sampler in BENCH_SAMPLERS:
            grid = auto_grid(process)
            pts = [(r["nfe"], r["rel_w2"]) for r in rows if r["process"] == pname and r["sampler"] == sampler
                   and r["grid"] == grid]
            style = "-" if sampler == auto_sampler(process) else "--"
            ax.plot(*zip(*pts, strict=True), style, marker="o", label=f"difflab {sampler} ({grid})")
        if pname == "gaussian-linear":
            for family in ("DDIM", "DPMSolverMultistep", "UniPCMultistep"):
                best = [min(r["rel_w2"] for r in theirs if r["family"] == family and r["nfe"] == n) for n in nfes]
                ax.plot(nfes, best, ":", marker="s", label=f"diffusers {family} (best config per NFE)")
        ax.axhline(floors[pname], color="gray", lw=0.8, label=f"floor (t_min={T_MIN:g})")
        ax.set(xscale="log", yscale="log", title=pname, xlabel="NFE", ylim=(1e-3, 2.0))
        ax.set_xticks(nfes, [str(n) for n in nfes], minor=False)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    axes[0].set_ylabel("relative W2 to the data")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--checkpoint", type=Path, action="append", default=[],
                        help="a trained run (repeatable): add FD and solver error vs NFE of each sampler on it")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = power_law_data()
    nfes = NFES
    floors = {name: relative_w2(*exact_affine(process, data), data) for name, process in bench_processes().items()}
    ours = run_difflab(data, nfes)
    theirs = run_diffusers(data, nfes)
    table, summary = comparison_table(ours, theirs, nfes, floors)
    print(f"## Gaussian data, {SIZE}x{SIZE}, spectrum v = (1 + f)^-{spectrum_exponent():.2f} "
          f"from {V_MAX:g} to {V_MIN:g}\n")
    print(table, "\n")
    s10, s20 = summary["nfe"][10], summary["nfe"][20]
    ratio_10 = s10["ratio_default_to_diffusers"]
    print(f"- target 10 NFE: default / diffusers best = {ratio_10:.2f} "
          f"(target <= {TARGET_RATIO_10}): {'met' if ratio_10 <= TARGET_RATIO_10 else 'NOT met'}")
    print(f"- target 20 NFE: default rel. W2 = {s20['difflab_default']:.2e} (target <= {TARGET_W2_20}): "
          f"{'met' if s20['difflab_default'] <= TARGET_W2_20 else 'NOT met'}\n")
    for pname in bench_processes():
        print(process_table(ours, pname, nfes, floors[pname]), "\n")
    print("### Solver error: relative W2 to the exact ODE output at the same t_min (no floor)\n")
    print(solver_error_table(ours, nfes), "\n")
    recommended = best_grids(ours)
    print("Best grid per process kind and sampler (geometric mean of W2 at 10 and 20 NFE):", recommended)
    for kind, grid in AUTO_GRIDS.items():
        agree = [name for name, best in recommended[kind].items() if best == grid]
        print(f"- auto grid for {kind}: {grid}, the best here for {', '.join(agree)}")
    trained = [row for run in args.checkpoint for row in trained_model_rows(run, nfes)]
    if trained:
        print("\n### Trained networks: FD to the test split (1000 samples, classifier features)\n")
        print(trained_table(trained, nfes, "fd"))
        print("\n### Trained networks: RMSE to a 1000-step DDIM solution from the same noise\n")
        print(trained_table(trained, nfes, "rmse"))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"spectrum": {"size": SIZE, "v_max": V_MAX, "v_min": V_MIN, "exponent": spectrum_exponent(),
                           "law": "v = (1 + sqrt(i^2 + j^2))^-p, mean = sqrt(v) cos(f) / 2"},
              "t_min": T_MIN, "floors": floors, "comparison": summary, "best_grids": recommended,
              "trained_models": trained, "difflab": ours, "diffusers": theirs}
    (args.out / "samplers.json").write_text(json.dumps(result, indent=1, default=str))
    plot(ours, theirs, nfes, floors, args.out / "samplers.png")
    print(f"\nwrote {args.out / 'samplers.json'} and {args.out / 'samplers.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
