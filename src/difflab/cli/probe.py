"""``difflab probe``: linear-probe accuracy of a checkpoint's frozen features, with baselines.

    difflab probe --checkpoint runs/mnist-gauss --t 0.1                  # UNet bottleneck at t = 0.1
    difflab probe --checkpoint runs/mnist-gauss --t 0.1 --layer -1       # last decoder block
    difflab probe --checkpoint runs/ldae-mnist --data mnist --t 0.01 --clean-input

Features are the average-pooled output of one layer (a ViT block, or a UNet down / middle / up
block; ``--layer`` indexes them in forward order, default: the ViT encoder's last block or the
UNet bottleneck), captured with a forward hook while the network denoises images noised to
``--t`` by the checkpoint's process (``--clean-input`` feeds the clean images, conditioned on t,
as l-DAE does). Latent models (latent diffusion, l-DAE) encode the images with their saved
tokenizer, noise the latent, and decode it again for image-input networks such as l-DAE's.

The report gives the model, raw pixels, PCA of the same dimension and a randomly initialised
network of the same architecture, each by the protocol of ``difflab.evaluation.probe``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from difflab.errors import ConfigError, DataError
from difflab.evaluation.probe import (
    InputFn,
    extract_features,
    linear_probe,
    pca_features,
    pixel_features,
    probe_layers,
    random_network,
)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("probe", help="linear-probe accuracy of a checkpoint's features",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run folder (its latest)")
    parser.add_argument("--data", help="dataset name (default: the checkpoint's data.name)")
    parser.add_argument("--data-path", help="file or folder of the dataset (default: the usual search)")
    parser.add_argument("--t", type=float, default=0.0, help="noise level t in [0, 1] of the features (default 0)")
    parser.add_argument("--layer", type=int, help="probe layer index in forward order (negative counts from the end)")
    parser.add_argument("--clean-input", action="store_true", help="feed clean images; t only conditions the network")
    parser.add_argument("--n-train", type=int, default=5000, help="probe-train images (default 5000)")
    parser.add_argument("--n-test", type=int, default=5000, help="probe-test images (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsets, noise and random baseline")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--no-baselines", action="store_true", help="probe the model only")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.set_defaults(run=run)


def check_args(args: argparse.Namespace) -> None:
    if not 0.0 <= args.t <= 1.0:
        raise ConfigError(f"--t={args.t} must be in [0, 1]")
    if args.n_train < 20 or args.n_test < 1:
        raise ConfigError(f"--n-train={args.n_train} must be >= 20 and --n-test={args.n_test} >= 1")


# --- data -------------------------------------------------------------------------------------------
def probe_splits(name: str, path: str | None, n_train: int, n_test: int, seed: int
                 ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], str]:
    """(probe-train, probe-test, description): random subsets of the train and test splits, or a
    stratified division of the test split when the train split is not available (CIFAR-10 in
    shared/data ships its test split only)."""
    from difflab.data import load_dataset

    test = load_dataset(name, path=path, split="test")
    if test.labels is None:
        raise DataError(f"dataset {name!r} has no labels: a linear probe needs labelled images")
    rng = np.random.default_rng(seed)
    try:
        train = load_dataset(name, path=path, split="train")
    except DataError:
        n_tr, n_te = min(n_train, int(0.8 * len(test.images))), min(n_test, len(test.images) // 5)
        idx_tr, idx_te = train_test_split(np.arange(len(test.images)), train_size=n_tr, test_size=n_te,
                                          random_state=seed, stratify=test.labels.numpy())
        how = f"{name} test split divided (stratified, seed {seed}): {n_tr} probe-train / {n_te} probe-test"
        return (test.images[idx_tr], test.labels[idx_tr]), (test.images[idx_te], test.labels[idx_te]), how
    idx_tr = rng.permutation(len(train.images))[:n_train]
    idx_te = rng.permutation(len(test.images))[:n_test]
    how = f"{name}: {len(idx_tr)} random train-split images / {len(idx_te)} random test-split images (seed {seed})"
    return (train.images[idx_tr], train.labels[idx_tr]), (test.images[idx_te], test.labels[idx_te]), how


# --- network input -----------------------------------------------------------------------------------
def make_prepare(model: Any, clean: bool, seed: int) -> InputFn:
    """Clean images (B, C, H, W) and t (B,) -> what the model's network sees (``network_input``):
    noised by its process at t (in a latent model's latent, decoded for image-input networks such
    as l-DAE's), or the clean input with ``clean`` (or t = 0)."""
    g = torch.Generator().manual_seed(seed)

    def prepare(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.network_input(x, t, clean=clean or float(t.max()) == 0.0, generator=g)  # type: ignore[no-any-return]

    return prepare


# --- the command ---------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from difflab.models import load_model

    check_args(args)
    loaded = load_model(args.checkpoint, ema=not args.no_ema)
    if not hasattr(loaded, "network_input"):
        raise ConfigError(f"{loaded.family} models have no time-conditioned denoiser to probe; "
                          "probe a diffusion, ihdm or latent model")
    trained_on = loaded.artefact["metadata"].get("data") or {}  # type: ignore[index]
    model, path = loaded.network, Path(loaded.artefact["path"])  # type: ignore[index]
    layers = probe_layers(model)
    if args.layer is not None and not -len(layers) <= args.layer < len(layers):
        raise ConfigError(f"--layer={args.layer} is out of range: the network has {len(layers)} probe layers")
    (x_tr, y_tr), (x_te, y_te), how = probe_splits(args.data or trained_on.get("name", "digits"),
                                                   args.data_path or trained_on.get("path"),
                                                   args.n_train, args.n_test, args.seed)
    mode = f"{tuple(loaded.network_shape())} ({loaded.family} model)"  # type: ignore[attr-defined]
    prepare = make_prepare(loaded, args.clean_input, args.seed)

    def probe_model(net: torch.nn.Module) -> Any:
        feats = [extract_features(net, x, t=args.t, layer=args.layer, prepare=prepare) for x in (x_tr, x_te)]
        return linear_probe(feats[0], y_tr, feats[1], y_te, seed=args.seed)

    results = {"model": probe_model(model)}
    if not args.no_baselines:
        results["pixels"] = linear_probe(pixel_features(x_tr), y_tr, pixel_features(x_te), y_te, seed=args.seed)
        dim = results["model"].dim
        pca_tr, pca_te = pca_features(x_tr, x_te, dim)
        results[f"pca{dim}"] = linear_probe(pca_tr, y_tr, pca_te, y_te, seed=args.seed)
        results["random_init"] = probe_model(random_network(model, seed=args.seed))
    step = loaded.artefact["metadata"].get("step", "?")  # type: ignore[index]
    report(args, path, step, how, mode, results)
    return 0


def report(args: argparse.Namespace, path: Path, step: Any, how: str, mode: str, results: dict[str, Any]) -> None:
    layer = "default (ViT encoder output / UNet bottleneck)" if args.layer is None else str(args.layer)
    noised = f"input noised by the checkpoint's process at t={args.t:g}"
    noise = "clean input" if args.clean_input or args.t == 0 else noised
    print(f"model {path} (step {step}, {'raw' if args.no_ema else 'EMA'} weights)")
    print(f"data: {how}")
    print(f"features: layer {layer}, average-pooled, t={args.t:g}, {noise}; network input: {mode}")
    print(f"protocol: {results['model'].protocol()}")
    print("| features | dim | probe-test accuracy |\n|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r.dim} | {r.accuracy:.4f} |")
    if args.json:
        payload = {name: {"accuracy": r.accuracy, "C": r.C, "val_accuracy": r.val_accuracy, "dim": r.dim,
                          "protocol": r.protocol()} for name, r in results.items()}
        payload["settings"] = {"t": args.t, "layer": args.layer, "clean_input": args.clean_input, "data": how,
                               "network_input": mode, "checkpoint": str(path), "step": step}
        Path(args.json).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
