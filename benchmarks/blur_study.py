"""Blur versus noise on MNIST: IHDM, Gaussian and blurring diffusion at equal compute.

Hoogeboom & Salimans ("Blurring Diffusion Models", ICLR 2023, Table 1 / Fig. 5) put three
models on one axis, the maximum blur sigma_B,max of the forward process: Gaussian denoising
diffusion (sigma_B,max = 0), blurring diffusion (0 < sigma_B,max), and inverse heat
dissipation (Rissanen et al., ICLR 2023), which blurs to sigma_B,max with almost no noise.
They report that moderate blur beats both ends. This script trains all of them through the
same difflab code path (processes, objectives, ``difflab.sample``) with the same network,
optimiser, number of steps, batch size, data order and seed, and evaluates FD / KID on the
features of difflab's MNIST classifier (and NLL, where defined) during training.

Outputs (``--out``, default ``docs/blur_study``): ``results.json``, ``table.md``,
``fd_vs_blur.png``, ``fd_vs_step.png``, ``samples.png``, ``forward_strips.png``; the
markdown table is printed too. ``--replot`` overlays finished runs (e.g. an eps- and a
v-prediction arm) in one pair of FD figures without training anything.

The committed runs (docs/blur_study.md; 1 CPU thread on a shared 2-core machine)::

    OMP_NUM_THREADS=1 python benchmarks/blur_study.py --out docs/blur_study/eps
    OMP_NUM_THREADS=1 python benchmarks/blur_study.py --out docs/blur_study/v --prediction v \
        --only gaussian blur1 blur4 blur10 blur20
    python benchmarks/blur_study.py --replot docs/blur_study/eps docs/blur_study/v --out docs/blur_study

Smoke test and the forward-process figure alone::

    OMP_NUM_THREADS=1 python benchmarks/blur_study.py --quick --out /tmp/blur_quick
    python benchmarks/blur_study.py --strips-only
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import difflab
from difflab.samplers import sample_heat
from difflab.data import load_dataset
from difflab.errors import DataError
from difflab.evaluation.figures import forward_strip, make_grid
from difflab.nn import build_network, count_parameters
from difflab.objectives import diffusion_loss, heat_loss
from difflab.processes import BlurringDiffusion, DiagonalGaussianProcess, HeatDissipation, HeatPrior, fit_heat_prior

OUT = Path(__file__).resolve().parents[1] / "docs" / "blur_study"
BLUR_LEVELS = (0.0, 1.0, 4.0, 10.0, 20.0)  # sigma_B,max of blurring diffusion; 0 is Gaussian diffusion


# --- the six models ----------------------------------------------------------------------------


def study_processes(image_size: int) -> dict[str, DiagonalGaussianProcess]:
    """name -> process: IHDM (the paper's MNIST K and sigma_B,max), Gaussian, blurring at 4 levels."""
    processes: dict[str, DiagonalGaussianProcess] = {}
    for s in BLUR_LEVELS:
        processes["gaussian" if s == 0 else f"blur{s:g}"] = BlurringDiffusion(sigma_blur_max=s)
    # Rissanen et al. (2023), App.: MNIST K = 100, sigma_B,max = 20 at 28x28 (scaled for other sizes).
    processes["ihdm"] = HeatDissipation(K=100, sigma_blur_min=0.5, sigma_blur_max=20.0 * image_size / 28)
    return processes


def blur_axis(name: str, process: DiagonalGaussianProcess) -> float:
    """The x-axis of the paper's figure: sigma_B,max."""
    return float(process.sigma_blur_max)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Budget:
    """Everything that is held equal across the models."""

    steps: int = 800
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 100
    ema: float = 0.995
    eval_every: int = 400
    n_eval: int = 200
    sample_steps: int = 100  # network evaluations per sample for every model (= IHDM's K)
    delta: float = 0.01  # IHDM sampling noise (Rissanen et al. 2023)
    n_nll: int = 100
    nll_times: int = 16
    base_channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2, 2)
    prediction: str = "eps"  # diffusion models' output: eps as in Hoogeboom & Salimans' Alg. 1, or "v"
    seed: int = 0
    device: str = "cpu"  # where training and sampling run (evaluation features are computed on the CPU)


QUICK = Budget(steps=6, batch=8, warmup=2, eval_every=3, n_eval=16, n_nll=4, nll_times=2)


def make_network(budget: Budget, channels: int, size: int) -> nn.Module:
    """The one network every model gets: a small ADM UNet without attention, same init seed."""
    return build_network(
        "unet", seed=budget.seed, in_channels=channels, resolution=size, base_channels=budget.base_channels,
        channel_mult=budget.channel_mult, num_res_blocks=1, attention_resolutions=(), dropout=0.0,
        norm_groups=8, head_channels=None, num_heads=1,
    )


def training_loss(process: DiagonalGaussianProcess, budget: Budget) -> Callable[..., torch.Tensor]:
    """IHDM's objective for the heat process, the unweighted MSE of ``budget.prediction`` for diffusion."""
    if isinstance(process, HeatDissipation):
        return heat_loss
    return lambda model, process, x0, generator: diffusion_loss(model, process, x0, prediction=budget.prediction,
                                                                generator=generator)


def draw_samples(model: nn.Module, process: DiagonalGaussianProcess, n: int, budget: Budget,
                 prior: HeatPrior | None, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """n samples in [-1, 1] with the same number of network evaluations for every model."""
    g = torch.Generator(device=budget.device).manual_seed(seed)
    out = []
    for start in range(0, n, 250):
        b = min(250, n - start)
        if isinstance(process, HeatDissipation):
            x = sample_heat(model, process, (b, *shape), steps=process.K, generator=g, prior=prior,
                            delta=budget.delta, device=budget.device)
        else:
            x = difflab.sample(model, process, (b, *shape), sampler="ancestral", steps=budget.sample_steps,
                               prediction=budget.prediction, generator=g, clip_x0=1.0, device=budget.device)
        out.append(x.clamp(-1, 1).cpu())
    return torch.cat(out)


# --- training at equal compute -----------------------------------------------------------------


@dataclass
class Record:
    """What the study keeps of one model."""

    name: str
    kind: str
    sigma_blur_max: float
    params: int = 0
    train_seconds: float = 0.0
    sample_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)  # step, fd, kid, kid_std
    nll_bpd: float | None = None


def ema_update(ema: nn.Module, model: nn.Module, decay: float, n: int) -> None:
    """EMA of the weights with the usual warm-up min(decay, (1 + n) / (10 + n))."""
    d = min(decay, (1 + n) / (10 + n))
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(pm, 1 - d)


def batches(images: torch.Tensor, budget: Budget) -> Callable[[], torch.Tensor]:
    """The same batch sequence for every model: a seeded random permutation per epoch."""
    g = torch.Generator().manual_seed(budget.seed + 1)
    order: list[int] = []

    def next_batch() -> torch.Tensor:
        nonlocal order
        if len(order) < budget.batch:
            order += torch.randperm(len(images), generator=g).tolist()
        idx, order = order[: budget.batch], order[budget.batch :]
        return images[idx]

    return next_batch


def train_model(name: str, process: DiagonalGaussianProcess, data: torch.Tensor, budget: Budget,
                evaluate: Callable[[torch.Tensor], dict[str, float]], prior: HeatPrior | None
                ) -> tuple[Record, torch.Tensor, nn.Module]:
    """Train one model for ``budget.steps`` steps, evaluating the EMA weights every ``eval_every``.

    Returns the record, the final samples (n_eval, C, H, W) and the EMA network.
    """
    shape = tuple(data.shape[1:])
    net = make_network(budget, shape[0], shape[1]).to(budget.device)
    ema = make_network(budget, shape[0], shape[1]).to(budget.device).eval().requires_grad_(False)
    ema.load_state_dict(net.state_dict())
    kind = "gaussian" if blur_axis(name, process) == 0 else process.kind
    record = Record(name, kind, blur_axis(name, process), params=count_parameters(net))
    opt = torch.optim.Adam(net.parameters(), lr=budget.lr)
    loss_fn = training_loss(process, budget)
    g = torch.Generator(device=budget.device).manual_seed(budget.seed + 2)
    next_batch = batches(data, budget)
    samples = torch.empty(0)
    for step in range(1, budget.steps + 1):
        start = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = budget.lr * min(1.0, step / max(1, budget.warmup))
        loss = loss_fn(net, process, next_batch().to(budget.device), generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        ema_update(ema, net, budget.ema, step)
        record.losses.append(float(loss.detach()))
        record.train_seconds += time.perf_counter() - start
        if step % budget.eval_every == 0 or step == budget.steps:
            start = time.perf_counter()
            samples = draw_samples(ema, process, budget.n_eval, budget, prior, seed=budget.seed + 3, shape=shape)
            record.sample_seconds += time.perf_counter() - start
            record.evals.append({"step": step, **evaluate(samples)})
            print(f"  {name:9s} step {step:5d}  loss {np.mean(record.losses[-50:]):.4f}  "
                  + "  ".join(f"{k} {v:.4g}" for k, v in record.evals[-1].items() if k != "step"), flush=True)
    return record, samples, ema


def test_nll(process: DiagonalGaussianProcess, ema: nn.Module, x: torch.Tensor, budget: Budget) -> float | None:
    """Variational bound in bits/dim on test images (256 levels); None where not defined here (IHDM)."""
    if isinstance(process, HeatDissipation):
        return None
    from difflab.evaluation import nll

    g = torch.Generator(device=budget.device).manual_seed(budget.seed + 4)
    bpd = nll(ema, process, x.to(budget.device), method="elbo", prediction=budget.prediction, levels=256,
              num_t=budget.nll_times, generator=g)
    return float(bpd.mean())


# --- figures -----------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str, legend_cols: int = 1) -> Path:
    """Label, legend and write a one-axis figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=legend_cols)
    fig.tight_layout()
    fig.savefig(path)
    _pyplot().close(fig)
    return path


STRIP_TIMES = (0.0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0)


def save_forward_strips(x0: torch.Tensor, path: Path, seed: int = 0) -> Path:
    """The three processes in one picture: one row per process, the same image and t per column."""
    size = x0.shape[-1]
    rows = {
        "Gaussian diffusion\n(σ_B,max = 0)": BlurringDiffusion(sigma_blur_max=0.0),
        "blurring diffusion\n(σ_B,max = 4)": BlurringDiffusion(sigma_blur_max=4.0),
        "blurring diffusion\n(σ_B,max = 20)": BlurringDiffusion(sigma_blur_max=20.0),
        f"IHDM (K = 100,\nσ_B,max = {20 * size / 28:g}, σ = 0.01)": HeatDissipation(sigma_blur_max=20.0 * size / 28),
    }
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 1.25 * len(rows) + 0.4), dpi=110)
    for ax, (label, process) in zip(axes, rows.items(), strict=True):
        strip = forward_strip(process, x0[:1].double(), STRIP_TIMES, generator=torch.Generator().manual_seed(seed))
        ax.imshow(make_grid(strip, nrow=len(STRIP_TIMES), padding=1))
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([(size + 1) * (i + 0.5) for i in range(len(STRIP_TIMES))])
        ax.set_xticklabels([f"t = {t:g}" for t in STRIP_TIMES], fontsize=7)
    fig.suptitle("Forward processes at the same t (one MNIST digit, one noise draw per row)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


Arms = dict[str, list[Record]]  # label (e.g. "eps-prediction") -> the records of one run


def save_fd_vs_blur(arms: Arms, path: Path) -> Path:
    """FD of the final samples against sigma_B,max: one line of blurring diffusion per arm, IHDM apart."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for i, (label, records) in enumerate(arms.items()):
        blur = sorted((r for r in records if r.kind != "heat"), key=lambda r: r.sigma_blur_max)
        if blur:
            ax.plot([r.sigma_blur_max for r in blur], [r.evals[-1]["fd"] for r in blur], "o-", color=f"C{i}",
                    label=f"blurring diffusion, {label} (0 = Gaussian)")
        for r in records:
            if r.kind == "heat":
                ax.plot([r.sigma_blur_max], [r.evals[-1]["fd"]], "s", color="C3", ms=8,
                        label=f"IHDM (σ_B,max = {r.sigma_blur_max:g}, K = 100)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xticks([0, 1, 4, 10, 20])
    ax.set_xticklabels(["0", "1", "4", "10", "20"])
    return _finish(fig, ax, path, "maximum blur σ_B,max (pixels)", "FD (classifier features)",
                   "FD vs maximum blur at equal compute")


def save_fd_vs_step(arms: Arms, path: Path) -> Path:
    """FD of the EMA weights' samples against the training step, one line per model and arm."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=110)
    for style, (label, records) in zip(("-", ":", "-."), arms.items()):
        for j, r in enumerate(records):
            ax.plot([e["step"] for e in r.evals], [e["fd"] for e in r.evals], "s--" if r.kind == "heat" else f"o{style}",
                    color="C3" if r.kind == "heat" else f"C{j if j < 3 else j + 1}",
                    label=r.name if r.kind == "heat" else f"{r.name} ({label})")
    ax.set_yscale("log")
    return _finish(fig, ax, path, "training step", "FD", "FD during training (same network, batch, steps)",
                   legend_cols=len(arms))


def load_arm(folder: Path) -> tuple[str, list[Record]]:
    """(label, records) of a finished run's results.json."""
    data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    prediction = data["budget"].get("prediction", "eps")  # runs from before --prediction existed used eps
    return f"{prediction}-prediction", [Record(**r) for r in data["records"]]


def save_sample_panels(samples: dict[str, torch.Tensor], records: list[Record], path: Path, n: int = 36) -> Path:
    """Final samples of every model side by side (6 x 6 each), titled with their FD."""
    plt = _pyplot()
    cols = min(3, len(samples))
    rows = math.ceil(len(samples) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), dpi=110, squeeze=False)
    fd = {r.name: r.evals[-1]["fd"] for r in records}
    for ax in axes.flat[len(samples):]:
        ax.axis("off")
    for ax, (name, x) in zip(axes.flat, samples.items()):
        ax.imshow(make_grid(x[:n], nrow=int(math.sqrt(n))))
        ax.set_title(f"{name}\nFD {fd[name]:.3g}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- data, evaluation, the run -----------------------------------------------------------------


def load_images(split: str, data_dir: str | None) -> tuple[torch.Tensor, str]:
    """MNIST (../shared/data/mnist or --data-dir); scikit-learn's 8x8 digits if it is absent."""
    try:
        ds = load_dataset("mnist", path=data_dir, split=split)  # type: ignore[arg-type]
    except DataError as err:
        print(f"MNIST not found ({err}); falling back to the 8x8 digits", flush=True)
        ds = load_dataset("digits", split=split)  # type: ignore[arg-type]
    return ds.images, ds.name


def make_evaluator(test: torch.Tensor, budget: Budget) -> Callable[[torch.Tensor], dict[str, float]]:
    """FD and KID of samples against the test set, on difflab's classifier features (mnist-cnn / digits-cnn)."""
    from difflab.evaluation.features import extract, make_extractor
    from difflab.evaluation.quality import frechet_distance, kernel_distance

    extractor = make_extractor("mnist-cnn" if test.shape[-1] == 28 else "digits-cnn")
    real, _ = extract(extractor, test)

    def evaluate(samples: torch.Tensor) -> dict[str, float]:
        fake, _ = extract(extractor, samples)
        kid, kid_std = kernel_distance(real, fake, subsets=100, subset_size=min(1000, len(fake)), seed=budget.seed)
        return {"fd": frechet_distance(real, fake), "kid": kid, "kid_std": kid_std}

    return evaluate


def write_table(records: list[Record], budget: Budget, meta: dict[str, Any], out: Path) -> str:
    """Markdown table of the final evaluation of every model."""
    lines = [
        "| model | process | σ_B,max | FD ↓ | KID ↓ | NLL bits/dim (ELBO) | final loss | train s | sample s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        e = r.evals[-1]
        nll = "n/a" if r.nll_bpd is None else f"{r.nll_bpd:.2f}"
        lines.append(
            f"| {r.name} | {r.kind} | {r.sigma_blur_max:g} | {e['fd']:.2f} | {e['kid']:.3g} ± {e['kid_std']:.2g} "
            f"| {nll} | {np.mean(r.losses[-100:]):.3g} | {r.train_seconds:.0f} | {r.sample_seconds:.0f} |"
        )
    ref = meta["reference"]
    lines.append(f"| *{budget.n_eval} real test images* | data | – | {ref['fd']:.2f} | {ref['kid']:.3g} ± {ref['kid_std']:.2g} "
                 "| – | – | – | – |")
    lines.append("")
    lines.append(
        f"Budget per model: {budget.steps} steps of batch {budget.batch} (Adam, lr {budget.lr:g}, warm-up {budget.warmup}, "
        f"EMA {budget.ema}), UNet {budget.base_channels}×{list(budget.channel_mult)} ({records[0].params / 1e6:.2f}M params), "
        f"{budget.n_eval} samples per evaluation with {budget.sample_steps} network evaluations each "
        f"(ancestral for diffusion with {budget.prediction}-prediction and x0 clipped to [-1, 1], IHDM's K steps with δ = {budget.delta:g}); data {meta['data']}; "
        f"total wall time {meta['wall_seconds'] / 60:.1f} min on {meta['threads']} threads."
    )
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text, encoding="utf-8")
    return text


def run_study(budget: Budget, out: Path, data_dir: str | None, only: list[str] | None) -> list[Record]:
    """Train and evaluate every model; write results.json, table.md and the figures to ``out``."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    train, data_name = load_images("train", data_dir)
    test, _ = load_images("test", data_dir)
    shape = tuple(train.shape[1:])
    save_forward_strips(test[:1], out / "forward_strips.png")
    evaluate = make_evaluator(test, budget)
    records: list[Record] = []
    final: dict[str, torch.Tensor] = {}
    for name, process in study_processes(shape[-1]).items():
        if only and name not in only:
            continue
        prior = fit_heat_prior(process, train.split(1000)) if isinstance(process, HeatDissipation) else None
        print(f"{name}: {process}", flush=True)
        record, samples, ema = train_model(name, process, train, budget, evaluate, prior)
        record.nll_bpd = test_nll(process, ema, test[: budget.n_nll], budget)
        records.append(record)
        final[name] = samples
    reference = evaluate(test[torch.randperm(len(test), generator=torch.Generator().manual_seed(budget.seed))[: budget.n_eval]])
    meta = {"data": data_name, "threads": torch.get_num_threads(), "wall_seconds": time.perf_counter() - t0,
            "reference": reference}
    (out / "results.json").write_text(
        json.dumps({"budget": asdict(budget), "meta": meta, "records": [asdict(r) for r in records]}, indent=1) + "\n",
        encoding="utf-8",
    )
    arms = {f"{budget.prediction}-prediction": records}
    save_fd_vs_blur(arms, out / "fd_vs_blur.png")
    save_fd_vs_step(arms, out / "fd_vs_step.png")
    save_sample_panels(final, records, out / "samples.png")
    print(write_table(records, budget, meta, out))
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default docs/blur_study)")
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: difflab's data dirs)")
    parser.add_argument("--quick", action="store_true", help="tiny budget: checks the script end to end in ~1 minute")
    parser.add_argument("--strips-only", action="store_true", help="only write forward_strips.png")
    parser.add_argument("--replot", nargs="+", type=Path, metavar="RUN_DIR",
                        help="no training: redraw the FD figures of finished runs (e.g. an eps and a v arm) into --out")
    parser.add_argument("--only", nargs="*", help="train only these models (names as in the table)")
    parser.add_argument("--steps", type=int, help="override the training steps")
    parser.add_argument("--eval-every", type=int, help="override the evaluation interval")
    parser.add_argument("--n-eval", type=int, help="override the number of samples per evaluation")
    parser.add_argument("--device", help="torch device for training and sampling (default cpu)")
    parser.add_argument("--prediction", choices=["eps", "v"], help="diffusion models' parameterisation (default eps)")
    args = parser.parse_args(argv)
    if args.replot:
        args.out.mkdir(parents=True, exist_ok=True)
        arms = dict(load_arm(folder) for folder in args.replot)
        print(save_fd_vs_blur(arms, args.out / "fd_vs_blur.png"), save_fd_vs_step(arms, args.out / "fd_vs_step.png"))
        return
    if args.strips_only:
        args.out.mkdir(parents=True, exist_ok=True)
        print(save_forward_strips(load_images("test", args.data_dir)[0][:1], args.out / "forward_strips.png"))
        return
    budget = QUICK if args.quick else Budget()
    overrides = {"steps": args.steps, "eval_every": args.eval_every, "n_eval": args.n_eval, "device": args.device,
                 "prediction": args.prediction}
    budget = Budget(**{**asdict(budget), **{k: v for k, v in overrides.items() if v is not None}})
    run_study(budget, args.out, args.data_dir, args.only)


if __name__ == "__main__":
    main()
