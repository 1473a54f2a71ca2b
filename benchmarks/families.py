"""The families benchmark: diffusion, latent diffusion, VAE, beta-VAE, a flow, a PixelCNN, a GAN and a
VQ-VAE on MNIST at equal compute.

Every model is trained by difflab's ``Trainer`` (the path of ``difflab train``) from its shipped
config for the same wall budget of training time (``optim.time_budget``; the LR decay and the EMA
length follow the steps the budget buys), in one process with the same threads, then judged by
one protocol on the MNIST test split:

- samples: N images per model (seed 0, per-sample seeds), FD and KID on the shipped ``mnist-cnn``
  features, precision and recall (Kynkaanniemi et al. 2019, k = 3) in the same feature space,
  and the fraction the shipped MNIST classifier labels with confidence > 0.9 (rows for held-out
  training images and for uniform noise show both ends of every scale);
- speed: milliseconds and network calls per sample (batches of 250, this machine);
- training diagnostics: the families' own log entries at the last step (a GAN's discriminator
  accuracy on real and fake batches and its diversity on a fixed z batch; a VQ-VAE's restarted
  codes and code perplexity);
- likelihood: bits/dim of the discrete 8-bit test images, the same convention for every family
  (uniform dequantization for the flow, discretized decoders for the VAE and diffusion's ELBO),
  on a seeded subset of the test split with its standard error; beside it, the per-pixel
  independent baseline: each pixel's 256-way histogram over the training set (add-1/2 smoothing).

Usage::

    python benchmarks/families.py --quick                       # smoke test, a few minutes
    python benchmarks/families.py --budget 5m --out docs/families

Writes ``families.json``, ``families.md``, ``families.png`` (quality, diversity and speed),
``samples_<model>.png`` and ``vae_traversal.png`` into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from difflab.data import load_dataset
from difflab.evaluation.classifier import load_classifier
from difflab.evaluation.evaluate import (
    Reference,
    likelihood_summary,
    make_reference,
    sample_quality,
)
from difflab.evaluation.features import make_extractor
from difflab.evaluation.figures import save_image_grid
from difflab.models import GenerativeModel, load_model
from difflab.training import Trainer
from difflab.training.config import load_config

SMALL_UNET = ["network.base_channels=32", "network.num_res_blocks=1", "network.attention_resolutions=[]",
              "network.dropout=0.0", "network.head_channels=null", "network.norm_groups=8",
              "run.sample.sampler=ddim", "run.sample.steps=50",
              "optim.batch_size=64", "optim.lr=1e-3"]  # more, larger updates for a budget of minutes
SMALL_PIXELCNN = ["network.hidden_channels=32", "network.layers=5",  # ~50 images/s to train on 2 cores, not 11
                  "optim.batch_size=32", "optim.lr=2e-3", "optim.warmup_steps=20"]
MODELS: dict[str, tuple[str, list[str]]] = {  # name: (shipped config, overrides)
    "diffusion": ("mnist-gauss", SMALL_UNET),  # DDPM/VP, cosine, eps, a small UNet, DDIM 50 steps
    "latent diffusion": ("mnist-latent-pca", []),  # the best of docs/ldae.md's 6-minute CPU runs (no NLL)
    "vae": ("mnist-vae", []),
    "beta-vae": ("mnist-beta-vae", []),
    "flow": ("mnist-flow", []),
    "pixelcnn": ("mnist-pixelcnn", SMALL_PIXELCNN),  # exact likelihood; 784 sub-pixel steps per sample
    "gan": ("mnist-gan", []),  # DCGAN + R1: one call per sample, no likelihood
    "vq-vae": ("mnist-vqvae", []),  # VQ-VAE + PixelCNN prior over its 7x7 codes: 49 + 1 calls per sample
    "latent diffusion (VQ)": ("mnist-latent-vq", []),  # the VQ-VAE as LDM's VQ-reg tokenizer
}
STANDARD_LOG_KEYS = {"step", "loss", "lr", "grad_norm", "skipped", "images_per_s", "losses"}
NLL_SETTINGS = {"num_t": 4, "ode_tol": 1e-5, "k": 64}  # diffusion ELBO times per image; IWAE samples
CONFIDENT = 0.9
PUBLISHED = [  # full-scale results from the papers (bits/dim of dequantized / discrete 8-bit data)
    ("MNIST", "RealNVP", 1.06, "Grathwohl et al. 2019, Tab. 2"),
    ("MNIST", "Glow", 1.05, "Grathwohl et al. 2019, Tab. 2"),
    ("MNIST", "FFJORD", 0.99, "Grathwohl et al. 2019, Tab. 2"),
    ("CIFAR-10", "Glow", 3.35, "Kingma & Dhariwal 2018, Tab. 2"),
    ("CIFAR-10", "PixelCNN++", 2.92, "Salimans et al. 2017, Tab. 1"),
    ("CIFAR-10", "DDPM (L_simple)", 3.70, "Ho et al. 2020, Tab. 1 (<= 3.70)"),
]


def train(name: str, budget: str, out: Path) -> dict[str, Any]:
    """Train one model for ``budget`` of training time; its summary."""
    config_name, overrides = MODELS[name]
    config = load_config(config_name, [*overrides, "optim.steps=null", f"optim.time_budget={budget}",
                                       "run.progress=false", "run.eval_every=0", "run.sample_every=0",
                                       "run.checkpoint_every=0", "run.log_every=100", f"run.out_dir={out}"])
    summary = Trainer(config).train()
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line][-1]
    return {"config": config_name, "overrides": overrides, "steps": summary["steps"],
            "train_time_s": summary["train_time_s"], "images_per_s": summary["images_per_s"],
            "fitted": summary["fitted"], "final_losses": last.get("losses"),
            "diagnostics": {k: v for k, v in last.items() if k not in STANDARD_LOG_KEYS}}


def file_name(name: str) -> str:
    """A model's name as a file name part: "latent diffusion (VQ)" -> "latent-diffusion-vq"."""
    return name.lower().replace(" ", "-").replace("(", "").replace(")", "")


def confident_fraction(images: torch.Tensor, classifier: torch.nn.Module) -> float:
    """Fraction of ``images`` the classifier labels with softmax confidence > ``CONFIDENT``."""
    with torch.no_grad():
        p = torch.cat([classifier(b).softmax(1) for b in images.split(500)])
    return float((p.max(1).values > CONFIDENT).float().mean())


def judge(model: GenerativeModel, reference: Reference, test_images: torch.Tensor, extractor: Any,
          classifier: Any, num_samples: int, nll_examples: int) -> tuple[dict[str, Any], torch.Tensor]:
    """The protocol of the module docstring for one model: (numbers, samples)."""
    start = time.perf_counter()
    samples = model.sample(num_samples, seed=0, batch_size=250)
    ms = 1000 * (time.perf_counter() - start) / num_samples
    row: dict[str, Any] = {"nfe": model.sampling_protocol()["nfe"], "ms_per_sample": ms,
                           "sampler": model.sampling_protocol()["sampler"],
                           **sample_quality(samples, reference, extractor, ("fd", "kid", "precision", "recall")),
                           "confident": confident_fraction(samples, classifier)}
    if model.has_likelihood:
        nll_ref = Reference(test_images, torch.empty(0), torch.empty(0), "mnist/test", 256)
        for method in model.nll_methods if model.family == "vae" else model.nll_methods[:1]:
            nll = likelihood_summary(model, nll_ref, method=method, num_examples=nll_examples, seed=0,
                                     **model.nll_options(method, NLL_SETTINGS))
            row[f"nll_{method}"], row[f"nll_{method}_se"] = nll["nll"], nll["nll_se"]
    return row, samples


def histogram_bits_per_dim(train_images: torch.Tensor, test_images: torch.Tensor, examples: int) -> float:
    """Bits/dim of the seeded test subset (as ``likelihood_summary``) under independent per-pixel
    256-way histograms of the training images, each count + 1/2."""
    v_train = ((train_images + 1) * 127.5).round().long().flatten(1)  # (N, D) levels 0..255
    counts = torch.stack([torch.bincount(v_train[:, d], minlength=256) for d in range(v_train.shape[1])]).double()
    log_p = torch.log2((counts + 0.5) / (counts + 0.5).sum(1, keepdim=True))  # (D, 256)
    n = min(examples, len(test_images))
    idx = torch.randperm(len(test_images), generator=torch.Generator().manual_seed(0))[:n]
    v_test = ((test_images[idx] + 1) * 127.5).round().long().flatten(1)  # (n, D)
    return float(-log_p.gather(1, v_test.T).mean())


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def markdown(rows: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """The results table, the baseline, and the published anchors."""
    head = ("| model | steps in budget | FD | KID | precision | recall | confident > 0.9 | ms / sample | "
            "network calls / sample | NLL bits/dim (estimator) |")
    lines = [head, "|" + "|".join(["---"] * 10) + "|"]
    for name, r in rows.items():
        nll = "-"
        for method in ("iwae", "exact", "elbo"):
            if f"nll_{method}" in r:
                label = {"iwae": "IWAE k=64", "exact": "exact", "elbo": "ELBO"}[method]  # flows: dequantized
                nll = f"{r[f'nll_{method}']:.3f} ± {r[f'nll_{method}_se']:.3f} ({label})"
                if method == "iwae":
                    nll += f"; ELBO {r['nll_elbo']:.3f}"
                break
        lines.append(f"| {name} | {r.get('steps', '-')} | {fmt(r['fd'])} | {fmt(r['kid'])} | {r['precision']:.2f} | "
                     f"{r['recall']:.2f} | {r['confident']:.2f} | {fmt(r.get('ms_per_sample'))} | "
                     f"{r.get('nfe', '-')} | {nll} |")
    diagnosed = {name: r["diagnostics"] for name, r in rows.items() if r.get("diagnostics")}
    if diagnosed:
        lines += ["", "Training diagnostics at the last step (the run's log):", ""]
        lines += [f"- {name}: " + ", ".join(f"{k} {fmt(v)}" for k, v in d.items()) for name, d in diagnosed.items()]
    lines += ["", f"Per-pixel independent baseline (256-way histogram per pixel over the {meta['train_images']} "
              f"training images): **{meta['histogram_bpd']:.3f} bits/dim** on the same test subset.", "",
              "Published full-scale anchors (not this protocol; bits/dim):", "",
              "| data | model | bits/dim | source |", "|---|---|---|---|"]
    lines += [f"| {d} | {m} | {v} | {s} |" for d, m, v, s in PUBLISHED]
    return "\n".join(lines) + "\n"


def figure(rows: dict[str, dict[str, Any]], path: Path) -> None:
    """Quality vs speed (FD against ms per sample) and precision vs recall, one point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for k, (name, r) in enumerate(rows.items()):  # one colour per model in both panels
        if r.get("ms_per_sample"):
            a.scatter(r["ms_per_sample"], r["fd"], color=f"C{k}")
            a.annotate(name, (r["ms_per_sample"], r["fd"]))
        b.scatter(r["recall"], r["precision"], color=f"C{k}")
        b.annotate(name, (r["recall"], r["precision"]))
    a.set(xscale="log", yscale="log", xlabel="ms per sample (CPU, batch 250)", ylabel="FD (mnist-cnn), lower is better",
          title="quality vs speed")
    b.set(xlabel="recall (diversity)", ylabel="precision (fidelity)", xlim=(0, 1), ylim=(0, 1),
          title="fidelity vs diversity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="5m", help="training time per model (default 5m)")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples per model for FD/KID/PR (default 1000)")
    parser.add_argument("--nll-examples", type=int, default=1000, help="test images scored for NLL (default 1000)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for every model (default 2)")
    parser.add_argument("--out", default="benchmarks/results/families", help="output folder")
    parser.add_argument("--runs", help="keep each model's run folder here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 20 s budgets, 200 samples, 100 NLL images")
    args = parser.parse_args()
    if args.quick:
        args.budget, args.num_samples, args.nll_examples = "20s", 100, 50
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    train_set, test_set = load_dataset("mnist", split="train"), load_dataset("mnist", split="test")
    extractor, classifier = make_extractor("mnist-cnn"), load_classifier("mnist")
    reference = make_reference(test_set, extractor)
    rows: dict[str, dict[str, Any]] = {}
    real = train_set.images[torch.randperm(len(train_set), generator=torch.Generator().manual_seed(1))[:args.num_samples]]
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(2)) * 2 - 1
    for name, images in (("training images", real), ("uniform noise", noise)):  # the two ends of the scale
        rows[name] = {**sample_quality(images, reference, extractor, ("fd", "kid", "precision", "recall")),
                      "confident": confident_fraction(images, classifier)}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs) if args.runs else Path(tmp)
        for name in names:
            print(f"training {name} for {args.budget} ...", flush=True)
            trained = train(name, args.budget, runs / file_name(name))
            model = load_model(runs / file_name(name)).eval()
            row, samples = judge(model, reference, test_set.images, extractor, classifier, args.num_samples,
                                 args.nll_examples)
            rows[name] = {**trained, **row}
            save_image_grid(samples[:64], out / f"samples_{file_name(name)}.png", nrow=8)
            if model.family == "vae" and name == "vae":
                save_image_grid(model.latent_traversal(test_set.images[:1]), out / "vae_traversal.png", nrow=9)
            print(json.dumps({name: rows[name]}, default=str), flush=True)
    meta = {"budget": args.budget, "threads": args.threads, "num_samples": args.num_samples,
            "nll_examples": args.nll_examples, "train_images": len(train_set),
            "histogram_bpd": histogram_bits_per_dim(train_set.images, test_set.images, args.nll_examples),
            "wall_time_s": time.perf_counter() - wall, "published": PUBLISHED}
    (out / "families.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    text = markdown(rows, meta)
    (out / "families.md").write_text(text)
    figure(rows, out / "families.png")
    print(text + f"\nwall time {meta['wall_time_s']:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
