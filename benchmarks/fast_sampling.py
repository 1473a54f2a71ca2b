"""Fast sampling at equal training compute: quality vs network calls for DDPM/VP diffusion,
critically-damped Langevin diffusion (CLD), denoising diffusion GANs (DDGAN) and LSGM on MNIST.

Every model is trained by difflab's ``Trainer`` for the same wall budget (``optim.time_budget``),
one after another in one process with the same threads: diffusion and CLD with the same small
UNet (CLD's sees (x, v): 2 input channels), DDGAN (``mnist-ddgan``) at T = 2 and T = 4, LSGM
(``mnist-lsgm``: a VAE with a diffusion prior on its 32-d latent). Then, at each NFE budget
(network calls per sample):

- diffusion: DDPM ancestral, DDIM (eta = 0), and the default solver (``sampler: auto``) on the
  grid tuned to the trained weights (as ``difflab tune``) at the budgets in ``--tune-nfes``, on
  its default grid at the others (tuning costs ``(600 + (4 + max_evals) * NFE) * 32`` network
  calls per budget, over an hour at NFE 100 on a CPU; ``--quick`` tunes none; the "grid" of
  every row is in the JSON, the tuning table in ``tuning``);
- CLD: SSCS (one call per step) and the probability-flow ODE with Heun (2 steps - 1 calls), on the
  quadratic grid down to t_min = 1e-3, then the denoising step;
- DDGAN: its T steps, at the budget NFE = T only;
- LSGM: the default solver on the latent (its default grid), NFE calls of the prior's MLP plus
  one decoder call (much cheaper calls than a UNet's: the time per sample is in the tables);

and every row is judged on N samples (seed 0, per-sample seeds): FD, precision and recall on the
shipped ``mnist-cnn`` features against the MNIST test split.

Usage::

    python benchmarks/fast_sampling.py --quick                    # smoke test, minutes
    python benchmarks/fast_sampling.py --budget 5m --num-samples 400 --out docs/fast_sampling
    python benchmarks/fast_sampling.py --models diffusion,cld --nfes 10,20,50,100   # a subset

Writes ``fast_sampling.json``, ``fast_sampling.md``, ``fd_vs_nfe.png`` and a sample grid per
model at one setting (``samples_<row>.png``: CLD SSCS at 20 steps, DDGAN at its T, LSGM at every
budget) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from difflab.data import load_dataset
from difflab.evaluation.evaluate import make_reference, sample_quality
from difflab.evaluation.features import make_extractor
from difflab.evaluation.figures import save_image_grid, save_quality_vs_nfe
from difflab.models import load_model, model_dir
from difflab.models.tuning import tune_model_grids, tuned_table
from difflab.training import Trainer
from difflab.training.config import load_config

SMALL_UNET = ["network.base_channels=32", "network.num_res_blocks=1", "network.attention_resolutions=[]",
              "network.dropout=0.0", "network.head_channels=null", "network.norm_groups=8",
              "optim.batch_size=64", "optim.lr=1e-3"]  # as benchmarks/families.py: minutes of CPU
NFES = (1, 2, 4, 10, 20, 50, 100)
DDGAN = ["optim.batch_size=64"]  # mnist-ddgan as shipped (1M parameters), the UNets' batch size
MODELS: dict[str, tuple[str, list[str]]] = {
    "diffusion": ("mnist-gauss", SMALL_UNET), "cld": ("mnist-cld", SMALL_UNET),
    "ddgan-2": ("mnist-ddgan", [*DDGAN, "model.steps=2"]), "ddgan-4": ("mnist-ddgan", [*DDGAN, "model.steps=4"]),
    "lsgm": ("mnist-lsgm", []),  # as shipped: the VAE's batch of 128
}
LSGM_ROW = "LSGM (default solver on the latent)"
Options = Callable[[int], dict[str, Any] | None]  # NFE budget -> sample options, None where the row has no cell
ROWS: list[tuple[str, str, Options]] = [  # (model, label, options)
    ("diffusion", "DDPM ancestral", lambda n: {"sampler": "ancestral", "steps": n}),
    ("diffusion", "DDIM", lambda n: {"sampler": "ddim", "steps": n, "eta": 0.0}),
    ("diffusion", "default solver, tuned grid (see tuning)", lambda n: {"sampler": "auto", "steps": n}),
    ("cld", "CLD SSCS", lambda n: {"sampler": "sscs", "steps": n} if n >= 2 else None),  # the last step denoises
    ("cld", "CLD probability-flow ODE (Heun)", lambda n: {"sampler": "ode", "steps": (n + 1) // 2} if n >= 3 else None),
    ("ddgan-2", "DDGAN T = 2", lambda n: {} if n == 2 else None),
    ("ddgan-4", "DDGAN T = 4", lambda n: {} if n == 4 else None),
    ("lsgm", LSGM_ROW, lambda n: {"sampler": "auto", "steps": n}),
]
GRID_SAMPLES = {("CLD SSCS", 20), ("DDGAN T = 2", 2), ("DDGAN T = 4", 4),  # (row, NFE) whose samples are saved
                *((LSGM_ROW, n) for n in NFES)}


def train(name: str, budget: str, out: Path) -> dict[str, Any]:
    """Train one model for ``budget`` of training time; its summary."""
    config_name, overrides = MODELS[name]
    config = load_config(config_name, [*overrides, "optim.steps=null", f"optim.time_budget={budget}",
                                       "run.progress=false", "run.eval_every=0", "run.sample_every=0",
                                       "run.checkpoint_every=0", f"run.out_dir={out}"])
    summary = Trainer(config).train()
    return {"config": config_name, "overrides": overrides, "steps": summary["steps"],
            "train_time_s": summary["train_time_s"], "budget": summary["budget"]}


def file_name(label: str) -> str:
    """A row label as a file-name part: "CLD SSCS" -> "cld_sscs", "DDGAN T = 4" -> "ddgan_t_4"."""
    return "_".join(label.lower().replace("= ", "").replace("(", "").replace(")", "").split())


def markdown(rows: list[dict[str, Any]], trained: dict[str, Any], nfes: tuple[int, ...], meta: dict[str, Any]) -> str:
    """One table per metric: a row per sampler, a column per NFE budget."""
    text = [f"Training: {meta['budget']} of CPU time each ({meta['threads']} threads); "
            + ", ".join(f"{k} {v['steps']} steps in {v['train_time_s']:.0f} s" for k, v in trained.items())
            + f". {meta['num_samples']} samples per cell; wall time {meta['wall_time_s']:.0f} s. "
            "A dash: the sampler has no setting with that many calls.", ""]
    for key, label in (("fd", "FD (mnist-cnn), lower is better"), ("precision", "precision"), ("recall", "recall"),
                       ("s_per_1000", "seconds per 1000 samples (batches of 250)")):
        text += [f"**{label}** (network calls per sample in brackets where they differ from the budget)", "",
                 "| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---" * (len(nfes) + 1) + "|"]
        for label_ in dict.fromkeys(r["sampler"] for r in rows):
            cells = []
            for n in nfes:
                r = next((r for r in rows if r["sampler"] == label_ and r["budget"] == n), None)
                extra = f" ({r['nfe']})" if r is not None and r["nfe"] != n else ""
                cells.append("-" if r is None else f"{r[key]:.3g}{extra}")
            text.append(f"| {label_} | " + " | ".join(cells) + " |")
        text.append("")
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="5m", help="training time per model (default 5m)")
    parser.add_argument("--num-samples", type=int, default=400,
                        help="samples per cell (default 400: ~1 h of sampling for all cells on 2 CPU cores)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"models to train (default {','.join(MODELS)})")
    parser.add_argument("--nfes", default=",".join(map(str, NFES)), help="NFE budgets (default %(default)s)")
    parser.add_argument("--tune-nfes", default="10,20", help="budgets whose grid is tuned (default 10,20; '' for none)")
    parser.add_argument("--tune-evals", type=int, default=60, help="sampler runs per tuned grid (default 60)")
    parser.add_argument("--out", default="benchmarks/results/fast_sampling", help="output folder")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 20 s budgets, 50 samples, NFE 2, 4 and 10, no grid tuning (the default grid)")
    args = parser.parse_args()
    names = [name for name in args.models.split(",") if name]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    nfes = tuple(int(n) for n in args.nfes.split(",") if n)
    tune_nfes = tuple(n for n in map(int, filter(None, args.tune_nfes.split(","))) if n in nfes and "diffusion" in names)
    if args.quick:
        args.budget, args.num_samples, nfes, tune_nfes = "20s", 50, (2, 4, 10), ()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    extractor = make_extractor("mnist-cnn")
    reference = make_reference(load_dataset("mnist", split="test"), extractor)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        trained = {name: train(name, args.budget, Path(tmp) / name) for name in names}
        models = {name: load_model(Path(tmp) / name).eval() for name in names}
        tuning = tune_model_grids(model_dir(Path(tmp) / "diffusion"), models["diffusion"], tune_nfes,
                                  max_evals=args.tune_evals) if tune_nfes else []
        print(tuned_table(tuning), flush=True)
        for model_name, label, options in ROWS:
            for n in nfes:
                o = options(n) if model_name in models else None
                if o is None:
                    continue
                model = models[model_name]
                start = time.perf_counter()
                samples = model.sample(args.num_samples, seed=0, batch_size=250, **o)
                protocol = model.sampling_protocol(**o)
                row = {"sampler": label, "budget": n, "nfe": protocol["nfe"], "grid": protocol["grid"],
                       "s_per_1000": 1000 * (time.perf_counter() - start) / args.num_samples,
                       **sample_quality(samples, reference, extractor, ("fd", "precision", "recall"))}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if (label, n) in GRID_SAMPLES:
                    save_image_grid(samples[:64], out / f"samples_{file_name(label)}_{n}.png", nrow=8)
    meta = {"budget": args.budget, "threads": args.threads, "num_samples": args.num_samples,
            "tune_nfes": tune_nfes, "tune_evals": args.tune_evals, "wall_time_s": time.perf_counter() - wall}
    tuned = [{"steps": g.steps, "sampler": g.sampler, "rel_mse_start": g.rel_mse_start, "rel_mse": g.rel_mse,
              "rel_mse_reference": g.rel_mse_reference, "seconds": s} for g, s in tuning]
    (out / "fast_sampling.json").write_text(json.dumps({"meta": meta, "trained": trained, "tuning": tuned,
                                                        "rows": rows}, indent=1))
    curves = {label: ([r["nfe"] for r in rows if r["sampler"] == label], [r["fd"] for r in rows if r["sampler"] == label])
              for label in dict.fromkeys(r["sampler"] for r in rows)}
    save_quality_vs_nfe(curves, out / "fd_vs_nfe.png", ylabel="FD (mnist-cnn features)",
                        title=f"MNIST, {args.budget} of training per model, {args.num_samples} samples")
    text = markdown(rows, trained, nfes, meta) + "\n**Grid tuning** (default solver)\n\n" + tuned_table(tuning) + "\n"
    (out / "fast_sampling.md").write_text(text)
    print(text + f"\nwrote {out}")


if __name__ == "__main__":
    main()
