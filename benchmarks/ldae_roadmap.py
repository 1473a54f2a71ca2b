"""The l-DAE roadmap on a CPU budget: linear-probe accuracy from a DDM to a latent DAE.

Follows the deconstruction of Chen, Liu, Xie & He (2024, "Deconstructing denoising diffusion
models for self-supervised learning", Tabs. 1-3 and Fig. 6) with one small DiT-style ViT per
step, all trained for the same number of steps (equal compute: every network has the same
width, depth and number of tokens), and probed linearly (``difflab.evaluation.probe``) on the
pooled tokens of its encoder at t = 0.01 with clean input (the paper's App. A protocol).
A second table compares generation by latent diffusion (patch-PCA and KL-VAE latents) with
pixel-space diffusion at equal training steps, by Frechet distance (FD).

Every model is trained by difflab's ``Trainer`` (the path of ``difflab train``: AdamW with
warm-up, gradient clipping, EMA; the tokenizer fitted at the start and saved in the model), from
a training config built per step; the probe and the samples use the EMA weights.

Data: MNIST (../shared/data/mnist: pretraining and probe-train images from the train split,
probe-test from the test split) and the CIFAR-10 test split (../shared/data/cifar10/
cifar10_test.npz), divided into a stratified probe-train part (also the unlabelled pretraining
set, handed to the Trainer in memory) and a probe-test part that no model sees before testing.
Settings: configs/ldae/ldae-*.yaml.

Usage::

    python benchmarks/ldae_roadmap.py --quick                 # smoke test, about a minute
    python benchmarks/ldae_roadmap.py --out docs/ldae         # the study (tens of minutes)

Writes ``roadmap.json``, ``roadmap.md`` and figures into ``--out`` and prints the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from sklearn.model_selection import train_test_split

from difflab.data import ImageDataset, load_dataset
from difflab.evaluation import EXTRACTORS, extract, frechet_distance, make_extractor
from difflab.evaluation.probe import (
    extract_features,
    linear_probe,
    pca_features,
    pixel_features,
    random_network,
)
from difflab.models import DiffusionModel
from difflab.nn import build_network
from difflab.processes import build_process
from difflab.tokenizers import PatchPCA
from difflab.training import Trainer
from difflab.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


# --- the roadmap ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One entry of the roadmap: where the noise is added, what is predicted, which noise levels."""

    name: str
    label: str
    space: str  # "pixel" (eps on pixels), "latent_eps" (latent diffusion), or ldae_loss's "latent",
    # "inverse_pca", "image"
    process: dict[str, Any]
    class_cond: bool = False
    paper: str = ""


DDPM_LINEAR = {"kind": "gaussian", "schedule": "linear"}
GAMMA2 = {"kind": "dae", "noise": "linear_gamma2"}
ROADMAP: tuple[Step, ...] = (
    Step("ddm_cls", "DDM on pixels (eps, DDPM schedule) + class conditioning", "pixel", DDPM_LINEAR, True, "57.5"),
    Step("ddm", "- class conditioning", "pixel", DDPM_LINEAR, paper="62.5"),
    Step("schedule", "+ noise schedule gamma_t^2 = 1 - t", "pixel", GAMMA2, paper="63.4 (after VQGAN steps)"),
    Step("latent_eps", "pixels -> patch-PCA latent (eps)", "latent_eps", GAMMA2, paper="65.1"),
    Step("latent_x0", "+ predict clean latent (lambda = gamma_t^2)", "latent", GAMMA2, paper="62.4"),
    Step("no_scaling", "+ remove input scaling (gamma = 1, sigma_t = sqrt(2) t)", "latent",
         {"kind": "dae", "noise": "linear_sigma"}, paper="63.6"),
    Step("inverse_pca", "+ image input and output by inverse PCA", "inverse_pca",
         {"kind": "dae", "noise": "linear_sigma"}, paper="63.9"),
    Step("ldae", "+ predict original image (Eq. 4, w = 0.1) = l-DAE", "image",
         {"kind": "dae", "noise": "linear_sigma"}, paper="64.5"),
    Step("ldae_single", "l-DAE with single-level noise sigma = sqrt(1/3)", "image",
         {"kind": "dae", "noise": "single"}, paper="61.5"),
)
LATENT_SPACES = ("latent_eps", "latent")  # the network sees latents (one token per latent cell)


@dataclass
class Study:
    """Everything one dataset's study needs: config, data, tokenizer, RNG."""

    name: str
    cfg: dict[str, Any]
    pretrain: ImageDataset
    probe_train: tuple[torch.Tensor, torch.Tensor]
    probe_test: tuple[torch.Tensor, torch.Tensor]
    runs: Path  # where the Trainer writes each model's run folder
    pca: PatchPCA | None = None
    deadline: float = float("inf")  # time.perf_counter() after which remaining models are skipped
    results: dict[str, Any] = field(default_factory=dict)


# --- data -----------------------------------------------------------------------------------------
def load_study(name: str, cfg: dict[str, Any], quick: bool, runs: Path) -> Study:
    """Pretraining and probe splits as described in the module docstring (seeded)."""
    d = cfg["data"]
    shrink = (lambda n: min(n, 600)) if quick else (lambda n: n)
    rng = np.random.default_rng(0)
    if name == "mnist":
        train, test = load_dataset("mnist", split="train"), load_dataset("mnist", split="test")
        pre = rng.permutation(len(train.images))[: shrink(d["pretrain_images"])]
        probe_tr = rng.permutation(len(train.images))[: shrink(d["probe_train"])]
        probe_te = rng.permutation(len(test.images))[: shrink(d["probe_test"])]
        return Study(name, cfg, subset(train, pre), (train.images[probe_tr], train.labels[probe_tr]),
                     (test.images[probe_te], test.labels[probe_te]), runs)
    test = load_dataset("cifar10", split="test")  # the only CIFAR-10 split shipped in shared/data
    idx_tr, idx_te = train_test_split(np.arange(len(test.images)), train_size=d["probe_train"],
                                      test_size=d["probe_test"], random_state=0, stratify=test.labels.numpy())
    idx_tr, idx_te = idx_tr[: shrink(len(idx_tr))], idx_te[: shrink(len(idx_te))]
    probe_train = (test.images[idx_tr], test.labels[idx_tr])
    return Study(name, cfg, subset(test, idx_tr), probe_train, (test.images[idx_te], test.labels[idx_te]), runs)


def subset(data: ImageDataset, index: np.ndarray) -> ImageDataset:
    """The images (and labels) of ``data`` at ``index``."""
    labels = None if data.labels is None else data.labels[index]
    return dataclasses.replace(data, images=data.images[index], labels=labels, name=f"{data.name} (pretraining part)")


# --- one model per step, trained by difflab's Trainer ---------------------------------------------------
def step_config(study: Study, step: Step, steps: int, out: Path, tokenizer: dict[str, Any] | None = None
                ) -> TrainConfig:
    """The training config of one roadmap step (or generation model): a ViT with patch p on images,
    or patch 1 on the p-times smaller latent grid; the objective of the step's ``space``."""
    cfg, tok = study.cfg, tokenizer or {**study.cfg["tokenizer"], "fit_images": 0}
    latent_channels = tok.get("components", tok.get("latent_channels"))
    network = {**cfg["network"], "num_classes": 10 if step.class_cond else None}
    if step.space in LATENT_SPACES:
        network.update(in_channels=latent_channels, patch_size=1)
    else:
        network.update(in_channels=study.pretrain.images.shape[1])
    if step.space in ("pixel", "latent_eps"):
        objective = {"prediction": "eps", "cond_drop_prob": 0.1 if step.class_cond else 0.0}
    else:
        o = cfg["objective"]
        objective = {"loss": "ldae", "space": step.space, "prediction": "x0", "weighting": o["weighting"],
                     "residual_weight": o["residual_weight"]}
    optim = {k: cfg["optim"][k] for k in ("lr", "warmup_steps", "batch_size", "grad_clip")}
    return TrainConfig.from_dict({
        "data": {"name": study.name},
        "tokenizer": tok if step.space != "pixel" else {"kind": "none"},
        "process": step.process, "network": network, "objective": objective,
        "optim": {**optim, "steps": steps, "mixed_precision": "no", "seed": 0},
        "run": {"out_dir": str(out), "progress": False, "log_every": max(1, steps // 10), "sample_every": 0,
                "eval_every": 0, "checkpoint_every": 0, "num_threads": torch.get_num_threads()},
    })


def train(study: Study, step: Step, steps: int, tokenizer: dict[str, Any] | None = None) -> tuple[DiffusionModel, dict]:
    """Train one step's model with ``Trainer`` on the study's pretraining images; (EMA model, log
    with the seconds of the set-up, i.e. the tokenizer's fit, and of the training steps alone)."""
    start = time.perf_counter()
    trainer = Trainer(step_config(study, step, steps, study.runs / f"{study.name}-{step.name}", tokenizer),
                      dataset=study.pretrain)
    setup = time.perf_counter() - start
    summary = trainer.train()
    log = {"steps": steps, "seconds": summary["train_time_s"], "setup_seconds": setup,
           "final_loss": summary.get("final_loss")}  # the mean loss of the last log window
    return trainer.ema.module.eval(), log  # type: ignore[return-value]


# --- probing --------------------------------------------------------------------------------------
def probe_network(study: Study, net: torch.nn.Module, prepare: Callable | None = None) -> dict[str, Any]:
    """Linear probe on the encoder's pooled tokens at the configured t; ``prepare`` maps clean
    images to the network input (None: the images themselves)."""
    p = study.cfg["probe"]
    feats = [extract_features(net, x, t=p["t"], layer=p["layer"], prepare=prepare)
             for x in (study.probe_train[0], study.probe_test[0])]
    return probe(feats[0], study.probe_train[1], feats[1], study.probe_test[1])


def probe_model(study: Study, model: DiffusionModel) -> dict[str, Any]:
    """The probe of a trained model with clean input (the paper's App. A protocol): the images,
    or their latents for networks that see latents (``model.network_input``)."""
    with torch.no_grad():
        return probe_network(study, model.network, lambda x, t: model.network_input(x, t, clean=True))


def probe(f_tr: torch.Tensor, y_tr: torch.Tensor, f_te: torch.Tensor, y_te: torch.Tensor) -> dict[str, Any]:
    start = time.perf_counter()
    result = linear_probe(f_tr, y_tr, f_te, y_te)
    return {"accuracy": result.accuracy, "C": result.C, "val_accuracy": result.val_accuracy, "dim": result.dim,
            "protocol": result.protocol(), "probe_seconds": time.perf_counter() - start}


def baselines(study: Study, dim: int) -> dict[str, Any]:
    """Raw pixels, PCA of the ViT's feature width, patch-PCA latents, randomly initialised l-DAE ViT."""
    (x_tr, y_tr), (x_te, y_te) = study.probe_train, study.probe_test
    out = {"pixels": probe(pixel_features(x_tr), y_tr, pixel_features(x_te), y_te)}
    pca_tr, pca_te = pca_features(x_tr, x_te, dim)
    out[f"pca{dim}"] = probe(pca_tr, y_tr, pca_te, y_te)
    enc = [study.pca.encode(x).flatten(1) for x in (x_tr, x_te)]  # type: ignore[union-attr]
    out["patch_pca_latent"] = probe(enc[0], y_tr, enc[1], y_te)
    vit = {**study.cfg["network"], "in_channels": study.pretrain.images.shape[1]}
    out["random_vit"] = probe_network(study, random_network(build_network(**vit), seed=1))
    return out


# --- generation ------------------------------------------------------------------------------------
class PCAFeatures:
    """FD feature space without a trained extractor: the top-64 principal components of the real
    reference images' pixels (a fixed, label-free stand-in for Inception features on CIFAR-10)."""

    description = "FD on the top-64 principal components of the reference images' pixels"

    def __init__(self, reference: torch.Tensor, dim: int = 64) -> None:
        x = reference.flatten(1).double()
        self.mean = x.mean(0)
        self.basis = torch.linalg.svd(x - self.mean, full_matrices=False)[2][:dim]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.flatten(1).double() - self.mean) @ self.basis.T


class ClassifierFeatures:
    """FD on the penultimate features of the classifier difflab ships for the dataset
    (``difflab.evaluation``: "mnist-cnn"), the MNIST stand-in for Inception."""

    def __init__(self, dataset: str) -> None:
        self.extractor = make_extractor(f"{dataset}-cnn")
        self.description = f"FD on the shipped {dataset}-cnn classifier's features (difflab.evaluation)"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return extract(self.extractor, images)[0]


def fd_features(dataset: str, reference: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The shipped classifier's features where one exists (MNIST), else PCA-64 of pixels (CIFAR-10)."""
    return ClassifierFeatures(dataset) if f"{dataset}-cnn" in EXTRACTORS else PCAFeatures(reference)


def over_budget(study: Study, what: str) -> bool:
    """True (and the item is recorded as skipped) once the study's wall-clock deadline has passed."""
    if time.perf_counter() < study.deadline:
        return False
    study.results.setdefault("skipped_over_budget", []).append(what)
    print(f"[{study.name}] over budget: skipping {what}", flush=True)
    return True


def generation(study: Study, steps: int, quick: bool) -> dict[str, Any]:
    """Pixel-space vs latent (patch-PCA, KL-VAE) diffusion at equal training steps: FD of samples."""
    gcfg, tcfg = study.cfg["generation"], study.cfg["tokenizer"]
    reference = study.probe_test[0]
    features = fd_features(study.name, reference)
    tokenizers: dict[str, dict[str, Any] | None] = {
        "pixel": None,
        "patch_pca": {"kind": "patch_pca", "patch_size": tcfg["patch_size"], "components": gcfg["components"],
                      "fit_images": 0},
        "kl_vae": {"kind": "kl_vae", "latent_channels": gcfg["vae_latent_channels"], "base_channels": 32,
                   "levels": 2, "kl_weight": 1e-3, "steps": 30 if quick else gcfg["vae_steps"], "batch_size": 64,
                   "fit_images": 0},
    }
    n = 64 if quick else gcfg["samples"]
    real_fd = frechet_distance(features(study.pretrain.images[: len(reference)]), features(reference))
    out: dict[str, Any] = {
        "fd_features": features.description,  # type: ignore[attr-defined]
        "reference_images": len(reference), "samples": n, "sampler": f"ddim, {gcfg['sampler_steps']} steps",
        "data": {"fd": real_fd},
    }
    for name, tok in tokenizers.items():
        if over_budget(study, f"generation {name}"):
            continue
        out[name] = generate_with(study, name, tok, steps, n, features, reference)
    return out


def generate_with(study: Study, name: str, tokenizer: dict[str, Any] | None, steps: int, n: int,
                  features: Callable[[torch.Tensor], torch.Tensor], reference: torch.Tensor) -> dict[str, Any]:
    """Train an eps-prediction ViT on pixels or on a tokenizer's latents (fitted or trained first by
    the Trainer: ``setup_seconds``), sample n images, measure FD."""
    space = "pixel" if tokenizer is None else "latent_eps"
    step = Step(f"gen_{name}", name, space, {"kind": "gaussian", "schedule": "cosine"})
    model, log = train(study, step, steps, tokenizer)
    start = time.perf_counter()
    images = model.sample(n, seed=0, sampler="ddim", steps=study.cfg["generation"]["sampler_steps"]).clamp(-1, 1)
    with torch.no_grad():
        recon = reference if tokenizer is None else model.to_image(model.tokenizer.encode(reference)).clamp(-1, 1)  # type: ignore[attr-defined]
    result = {"fd": frechet_distance(features(images), features(reference)),
              "tokenizer_reconstruction_fd": frechet_distance(features(recon), features(reference)),
              "train_seconds": log["seconds"], "setup_seconds": log["setup_seconds"],
              "sample_seconds": time.perf_counter() - start,
              "final_loss": log["final_loss"], "latent_shape": list(model.state_shape(1)[1:]), "steps": steps}
    study.results.setdefault("_samples", {})[name] = images[:64]
    return result


# --- the study --------------------------------------------------------------------------------------
def run_study(name: str, quick: bool, steps: int | None, rows: list[str], deadline: float,
              samples: int | None, runs: Path) -> Study:
    cfg = yaml.safe_load((ROOT / "configs" / "ldae" / f"ldae-{name}.yaml").read_text())
    if samples:
        cfg["generation"]["samples"] = samples
    study = load_study(name, cfg, quick, runs)
    study.deadline = deadline
    steps = steps or (20 if quick else cfg["optim"]["steps"])
    tok = cfg["tokenizer"]
    start = time.perf_counter()
    study.pca = PatchPCA.fit(study.pretrain.images, patch_size=tok["patch_size"], components=tok["components"],
                             whiten=tok["whiten"])  # the same fit every latent model's Trainer makes
    study.results["tokenizer"] = {**tok, "explained_variance": study.pca.explained_variance(),
                                  "fit_seconds": time.perf_counter() - start}
    study.results["splits"] = {"pretrain": len(study.pretrain.images), "probe_train": len(study.probe_train[0]),
                               "probe_test": len(study.probe_test[0])}
    study.results["steps"] = steps
    study.results["roadmap"] = {}
    for step in ROADMAP:
        if step.name not in rows or over_budget(study, step.name):
            continue
        model, log = train(study, step, steps)
        entry = {"label": step.label, "paper_imagenet": step.paper, "train_seconds": log["seconds"],
                 "final_loss": log["final_loss"], **probe_model(study, model)}
        study.results["roadmap"][step.name] = entry
        print(f"[{name}] {step.name:12s} acc {entry['accuracy']:.4f}  train {log['seconds']:.0f}s", flush=True)
        if step.name == "ldae":
            study.results["_ldae_net"] = model.network
    study.results["baselines"] = baselines(study, cfg["network"]["dim"])
    print(f"[{name}] baselines " + ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in study.results["baselines"].items()))
    if "generation" in rows:
        study.results["generation"] = generation(study, steps, quick)
    return study


# --- report ---------------------------------------------------------------------------------------
def markdown(studies: list[Study]) -> str:
    lines = []
    for s in studies:
        r = s.results
        lines += [f"### {s.name}: linear-probe accuracy along the roadmap "
                  f"({r['steps']} steps x batch {s.cfg['optim']['batch_size']} per model; splits {r['splits']})", "",
                  "| step | probe acc. | train s | paper (ImageNet, ViT-12L) |", "|---|---|---|---|"]
        for entry in r["roadmap"].values():
            lines.append(f"| {entry['label']} | {entry['accuracy']:.4f} | {entry['train_seconds']:.0f} | "
                         f"{entry['paper_imagenet']} |")
        for key, entry in r["baselines"].items():
            lines.append(f"| baseline: {key} ({entry['dim']} features) | {entry['accuracy']:.4f} | - | - |")
        lines.append("")
        if "generation" in r:
            gen = r["generation"]
            lines += [f"### {s.name}: generation, latent vs pixel diffusion ({gen['fd_features']}; "
                      f"{gen['samples']} samples, {gen['sampler']}; real train vs reference FD "
                      f"{gen['data']['fd']:.2f})", "",
                      "| space | latent shape | FD (lower is better) | tokenizer recon. FD | set-up s (tokenizer) "
                      "| train s | sample s |", "|---|---|---|---|---|---|---|"]
            for key in [k for k in ("pixel", "patch_pca", "kl_vae") if k in gen]:
                e = gen[key]
                lines.append(f"| {key} | {tuple(e['latent_shape'])} | {e['fd']:.2f} | "
                             f"{e['tokenizer_reconstruction_fd']:.2f} | {e['setup_seconds']:.0f} | {e['train_seconds']:.0f} | "
                             f"{e['sample_seconds']:.0f} |")
            lines.append("")
    return "\n".join(lines)


def figures(studies: list[Study], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(studies), figsize=(6.5 * len(studies), 4.5), squeeze=False)
    for ax, s in zip(axes[0], studies, strict=True):
        names = list(s.results["roadmap"]) + [f"[{k}]" for k in s.results["baselines"]]
        accs = [e["accuracy"] for e in s.results["roadmap"].values()] + \
               [e["accuracy"] for e in s.results["baselines"].values()]
        colors = ["tab:blue"] * len(s.results["roadmap"]) + ["tab:gray"] * len(s.results["baselines"])
        ax.barh(range(len(names)), accs, color=colors)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlim(min(accs) - 0.05, min(1.0, max(accs) + 0.03))
        ax.set_xlabel("linear-probe accuracy")
        ax.set_title(f"{s.name}: roadmap (blue) and baselines (gray)")
    fig.tight_layout()
    fig.savefig(out / "roadmap.png", dpi=110)
    plt.close(fig)
    for s in studies:
        denoising_figure(s, out / f"ldae_denoising_{s.name}.png", plt)
        if "_samples" in s.results:
            samples_figure(s, out / f"samples_{s.name}.png", plt)


def to_image(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W[, 3]) in [0, 1]."""
    img = ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return img[..., 0] if img.shape[-1] == 1 else img


def denoising_figure(s: Study, path: Path, plt: Any) -> None:
    """Clean image, latent noise shown by inverse PCA, and the l-DAE prediction (the paper's Fig. 1)."""
    net = s.results.get("_ldae_net")
    if net is None:
        return
    x = s.probe_test[0][:6]
    process = build_process({"kind": "dae", "noise": "linear_sigma"})
    t = torch.full((6,), 0.4)
    pca: PatchPCA = s.pca  # type: ignore[assignment]
    eps = torch.randn(pca.latent_shape(tuple(x.shape)), generator=torch.Generator().manual_seed(0))
    noisy = pca.decode(process.diffuse(pca.encode(x), t, eps))
    with torch.no_grad():
        pred = net(noisy, t)
    fig, axes = plt.subplots(3, 6, figsize=(9, 4.8))
    for j in range(6):
        for i, (row, title) in enumerate(((x, "clean"), (noisy, "latent noise, inv. PCA"), (pred, "l-DAE output"))):
            axes[i, j].imshow(to_image(row[j]), cmap="gray", vmin=0, vmax=1)
            axes[i, j].axis("off")
            if j == 0:
                axes[i, j].set_title(title, fontsize=8, loc="left")
    fig.suptitle(f"{s.name}: sigma_t = {float(process.alpha_sigma(t[:1], (1, 1))[1]):.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def samples_figure(s: Study, path: Path, plt: Any) -> None:
    samples = s.results["_samples"]
    fig, axes = plt.subplots(1, len(samples), figsize=(4 * len(samples), 4.3), squeeze=False)
    for ax, (name, images) in zip(axes[0], samples.items(), strict=True):
        grid = images[:36].reshape(6, 6, *images.shape[1:]).permute(2, 0, 3, 1, 4)  # (C, 6, H, 6, W)
        grid = grid.reshape(images.shape[1], 6 * images.shape[2], 6 * images.shape[3])
        ax.imshow(to_image(grid), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{name}: FD {s.results['generation'][name]['fd']:.1f}")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"], choices=["mnist", "cifar10"])
    parser.add_argument("--rows", nargs="+", default=[s.name for s in ROADMAP] + ["generation"],
                        help="roadmap steps to run (and 'generation')")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (default: the config's)")
    parser.add_argument("--quick", action="store_true", help="tiny data and 20 steps: a smoke test")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget-minutes", type=float, default=39.0,
                        help="wall-clock budget of the whole study; models not started by then are skipped")
    parser.add_argument("--samples", type=int, default=None, help="generated images per model (default: config)")
    parser.add_argument("--save-checkpoints", type=Path, default=None,
                        help="keep every model's run folder here as DIR/<dataset>-<step> (for `difflab probe`); "
                             "default: a temporary folder")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ldae")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    deadline = start + 60.0 * args.budget_minutes
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.save_checkpoints or Path(tmp)
        studies = [run_study(name, args.quick, args.steps, args.rows, deadline, args.samples, runs)
                   for name in args.datasets]
    table = markdown(studies)
    print(table)
    report = {s.name: {k: v for k, v in s.results.items() if not k.startswith("_")} for s in studies}
    report["total_seconds"] = time.perf_counter() - start
    report["threads"] = args.threads
    report["budget_minutes"] = args.budget_minutes
    (args.out / "roadmap.json").write_text(json.dumps(report, indent=2))
    (args.out / "roadmap.md").write_text(table + f"\nTotal wall time {report['total_seconds'] / 60:.1f} min "
                                         f"on {args.threads} CPU thread(s).\n")
    figures(studies, args.out)
    print(f"total {report['total_seconds'] / 60:.1f} min; wrote {args.out}")


if __name__ == "__main__":
    main()
