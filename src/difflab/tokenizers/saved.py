"""Saving and loading any tokenizer: ``tokenizer.json`` (kind + config) and ``tokenizer.safetensors``.

``TOKENIZERS`` is the one table of tokenizer kinds: kind -> a class with ``from_saved(config,
tensors)`` (a fitted tokenizer) and ``unfitted(config, channels)`` (before ``fit_to``).
Nothing registers itself on import; a new tokenizer kind is a new entry here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from difflab.errors import CheckpointError, check_choice
from difflab.nn.autoencoder import ConvAutoencoder
from difflab.processes.tokenizers import Tokenizer
from difflab.tokenizers.pca import PatchPCA

CONFIG_FILE = "tokenizer.json"
TENSORS_FILE = "tokenizer.safetensors"

TOKENIZERS: dict[str, Any] = {
    PatchPCA.kind: PatchPCA,  # "patch_pca": a PCA of image patches (Chen et al. 2024)
    "autoencoder": ConvAutoencoder,  # a trained convolutional autoencoder
    "kl_vae": ConvAutoencoder,  # the same with a KL-regularised latent (Rombach et al. 2022)
    "vq_vae": ConvAutoencoder,  # the same with a vector-quantized latent (LDM's VQ-reg)
}


def unfitted_tokenizer(kind: str, config: dict[str, Any], channels: int) -> Tokenizer:
    """A tokenizer of ``kind`` and ``config`` for ``channels``-channel images, before ``fit_to``."""
    check_choice("tokenizer kind", kind, sorted(TOKENIZERS))
    return TOKENIZERS[kind].unfitted(config, channels)  # type: ignore[no-any-return]


def tokenizer_from_saved(kind: str, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Tokenizer:
    """The fitted tokenizer of ``kind`` with ``config`` and its ``tensors()``."""
    if kind not in TOKENIZERS:
        raise CheckpointError(f"unknown tokenizer kind {kind!r}; known: {sorted(TOKENIZERS)}")
    return TOKENIZERS[kind].from_saved(config, tensors)  # type: ignore[no-any-return]


def save_tokenizer(tokenizer: Tokenizer, directory: str | Path) -> Path:
    """Write ``tokenizer.json`` ({"kind", "config"}) and ``tokenizer.safetensors`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tokenizer.tensors().items()}
    save_file(tensors, str(directory / TENSORS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps({"kind": tokenizer.kind, "config": tokenizer.config()}, indent=2))
    return directory


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """The tokenizer saved by ``save_tokenizer`` in ``directory`` (any kind in ``TOKENIZERS``)."""
    directory = Path(directory)
    config_path, tensors_path = directory / CONFIG_FILE, directory / TENSORS_FILE
    if not config_path.is_file() or not tensors_path.is_file():
        raise CheckpointError(f"no tokenizer in {directory}: expected {CONFIG_FILE} and {TENSORS_FILE}")
    try:
        saved = json.loads(config_path.read_text())
        kind, config = saved["kind"], dict(saved["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{config_path} is not a tokenizer config ({err}); re-save the tokenizer") from err
    if kind not in TOKENIZERS:
        raise CheckpointError(f"unknown tokenizer kind {kind!r} in {config_path}; known: {sorted(TOKENIZERS)}")
    return tokenizer_from_saved(kind, config, load_file(str(tensors_path)))
