"""A model artefact on disk: ``save_model`` / ``load_model``, with no pickle and no trainer.

A model directory holds everything needed to sample, evaluate and serve the model::

    config.json          format, family, the model's config(), metadata (training step, data)
    weights.safetensors  the network weights (as trained)
    ema.safetensors      their exponential moving average (used by default)
    fitted.safetensors   state fitted to data (e.g. IHDM's prior p(u_K)); only if the model has any
    manifest.json        size and sha256 of each file above (verified before anything is read)
    tuned_grids.json     grids tuned to the weights (``difflab tune``; optional, tied to their sha256)

A training checkpoint is ``<step dir>/model/`` (this) plus ``<step dir>/train_state/``;
``load_model`` accepts a model directory, a checkpoint, a run's ``checkpoints/`` folder or a
run folder (its latest checkpoint). Checkpoints of the earlier single-folder layout are
recognised and refused with the command that converts them (``difflab convert``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from difflab.errors import CheckpointError, ConfigError, check_choice
from difflab.models.autoregressive import PixelCNNModel
from difflab.models.base import GenerativeModel
from difflab.models.cld import CLDModel
from difflab.models.ddgan import DDGANModel
from difflab.models.diffusion import DiffusionModel
from difflab.models.flow import FlowModel
from difflab.models.gan import GANModel
from difflab.models.ihdm import IHDMModel
from difflab.models.latent import LatentDiffusionModel
from difflab.models.lsgm import LSGMModel
from difflab.models.vae import VAEModel
from difflab.models.vqvae import VQVAEModel
from difflab.samplers import TunedGrids

FAMILIES: dict[str, type[GenerativeModel]] = {
    "diffusion": DiffusionModel,  # a denoiser on a diagonal Gaussian process (DDPM/VP, blurring ...)
    "ihdm": IHDMModel,  # inverse heat dissipation (Rissanen et al. 2023)
    "latent": LatentDiffusionModel,  # a tokenizer + diffusion in its latent (LDM; l-DAE)
    "vae": VAEModel,  # a VAE / beta-VAE with a discretized logistic decoder
    "flow": FlowModel,  # a RealNVP/Glow normalizing flow on dequantized images
    "pixelcnn": PixelCNNModel,  # a gated PixelCNN: exact likelihood, one call per sub-pixel
    "gan": GANModel,  # a DCGAN with the R1 penalty: one call per sample, no likelihood
    "vqvae": VQVAEModel,  # a VQ-VAE and a PixelCNN prior over its codes
    "cld": CLDModel,  # critically-damped Langevin diffusion: phase space, hybrid score matching, SSCS
    "ddgan": DDGANModel,  # a denoising diffusion GAN: T posterior steps with a GAN-learned x0, T calls
    "lsgm": LSGMModel,  # a VAE with a diffusion prior in its latent, trained end to end (LSGM)
}
FORMAT, FORMAT_VERSION = "difflab-model", 1
MODEL_DIR, TRAIN_STATE_DIR = "model", "train_state"
CONFIG, MANIFEST, TUNED_GRIDS = "config.json", "manifest.json", "tuned_grids.json"
WEIGHTS = {False: "weights.safetensors", True: "ema.safetensors"}  # keyed by "EMA?"
FITTED = "fitted.safetensors"
LATEST, STEP_PREFIX = "latest", "step_"
LEGACY_FORMAT = "difflab-checkpoint"  # the single-folder layout (model.safetensors, config.yaml, ...)
PICKLE_MAGIC, ZIP_MAGIC = b"\x80", b"PK\x03\x04"  # pickle protocol >= 2; torch.save zip archives


def build_model(family: str, config: dict[str, Any], *, seed: int | None = None) -> GenerativeModel:
    """A model of ``family`` (a name in ``FAMILIES``) from its ``config()``, weights from ``seed``."""
    check_choice("model family", family, sorted(FAMILIES))
    return FAMILIES[family].from_config(config, seed=seed)


# --- files ---------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync(path: Path) -> None:
    """Flush a file (or, on POSIX, a directory entry) to disk."""
    if path.is_dir() and os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """A JSON file's content; a missing, undecodable or malformed file is a one-line ``CheckpointError``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is missing or unreadable: {err}") from None


def write_manifest(folder: Path, names: list[str], **extra: Any) -> None:
    """``manifest.json`` listing size and sha256 of ``names`` in ``folder``; every file flushed."""
    files = {n: {"size": (folder / n).stat().st_size, "sha256": sha256(folder / n)} for n in names}
    (folder / MANIFEST).write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION, **extra,
                                               "files": files}, indent=1), encoding="utf-8")
    for name in (*names, MANIFEST):
        fsync(folder / name)


def verify_manifest(folder: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The manifest of ``folder`` after checking each listed file's size and sha256."""
    manifest = read_json(folder / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{folder / MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{folder} has format version {manifest.get('version')!r}; this difflab reads {FORMAT_VERSION}")
    for name in required:
        if name not in manifest["files"]:
            raise CheckpointError(f"{folder / MANIFEST} does not list {name}")
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is missing")
        if not isinstance(expected, dict) or path.stat().st_size != expected.get("size"):
            raise CheckpointError(f"checkpoint file {path} has {path.stat().st_size} bytes, manifest says "
                                  f"{expected.get('size') if isinstance(expected, dict) else '?'} (truncated or modified)")
        if sha256(path) != expected.get("sha256"):
            raise CheckpointError(f"checkpoint file {path} is corrupted (sha256 differs from the manifest)")
    return manifest


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (CPU). Pickles and ``torch.save`` zips are refused unread."""
    with open(path, "rb") as f:
        head = f.read(9)
    header_len = int.from_bytes(head[:8], "little")  # safetensors: u64 header size, then a JSON header
    if len(head) < 9 or header_len + 8 > path.stat().st_size or head[8:9] != b"{":
        if head.startswith(PICKLE_MAGIC) or head.startswith(ZIP_MAGIC):
            raise CheckpointError(f"{path} is a pickle / torch.save file, not safetensors; difflab never "
                                  "unpickles (it could run arbitrary code): convert it with safetensors")
        raise CheckpointError(f"{path} is not a valid safetensors file")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file: {err}") from None


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load ``path`` into ``module`` strictly; mismatches name the keys."""
    tensors = read_tensors(path)
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = [f"{label}: {few(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise CheckpointError(f"{path} does not match the model of {path.parent / CONFIG}; " + "; ".join(parts))
    module.load_state_dict(tensors, strict=True)


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


# --- writing -------------------------------------------------------------------------------------
def write_model(folder: Path, model: GenerativeModel, ema: GenerativeModel | None = None,
                metadata: dict[str, Any] | None = None) -> None:
    """Write the model files into the (new, empty) ``folder``; ``ema`` defaults to ``model``."""
    folder.mkdir(parents=True, exist_ok=False)
    meta = {"format": FORMAT, "version": str(FORMAT_VERSION)}
    save_file(_weights(model), str(folder / WEIGHTS[False]), metadata=meta)
    save_file(_weights(ema if ema is not None else model), str(folder / WEIGHTS[True]), metadata=meta)
    names = [CONFIG, WEIGHTS[False], WEIGHTS[True]]
    fitted = {k: v.detach().cpu().contiguous() for k, v in model.fitted_state().items()}
    if fitted:
        save_file(fitted, str(folder / FITTED), metadata=meta)
        names.append(FITTED)
    record = {"format": FORMAT, "version": FORMAT_VERSION, "family": model.family, "config": model.config(),
              "fitted": sorted(fitted), "metadata": metadata or {}}
    (folder / CONFIG).write_text(json.dumps(record, indent=1), encoding="utf-8")
    write_manifest(folder, names)


def save_model(directory: str | os.PathLike, model: GenerativeModel, *, ema: GenerativeModel | None = None,
               metadata: dict[str, Any] | None = None) -> Path:
    """Write a model directory atomically (a temporary folder renamed into place); returns it.

    ``ema``: the averaged model whose weights ``load_model`` uses by default (default: ``model``);
    ``metadata``: JSON-safe facts kept beside the config (training step, the data it saw ...).
    """
    final = Path(directory)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_model(tmp, model, ema, metadata)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


# --- finding a model -----------------------------------------------------------------------------
def read_latest(folder: Path) -> str | None:
    """The checkpoint name a ``latest`` file in ``folder`` holds, or None."""
    try:
        return (folder / LATEST).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint directory (current or earlier layout)."""
    return (path / MODEL_DIR / MANIFEST).is_file() or (path / MANIFEST).is_file()


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint (or model) directory ``path`` means: itself, a ``checkpoints/`` folder's
    ``latest``, or a run folder's ``checkpoints/latest``."""
    path = Path(path)
    if is_checkpoint(path) or (path / CONFIG).is_file():
        return path
    for folder in (path, path / "checkpoints"):
        name = read_latest(folder)
        if name is not None:
            if not is_checkpoint(folder / name):
                raise CheckpointError(f"{folder / LATEST} names {name!r}, which is not a complete checkpoint")
            return folder / name
    if path.is_file():
        raise CheckpointError(f"{path} is a file; a difflab checkpoint is a directory holding {MODEL_DIR}/")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raise CheckpointError(f"no checkpoint in {path}: expected {MODEL_DIR}/, a '{LATEST}' file, or checkpoints/{LATEST}")


def model_dir(path: str | os.PathLike) -> Path:
    """The model directory of a run, checkpoint or model path; refuses the earlier layout with
    the command that converts it."""
    found = resolve_checkpoint(path)
    if (found / MODEL_DIR / MANIFEST).is_file():
        return found / MODEL_DIR
    if (found / CONFIG).is_file() and (found / MANIFEST).is_file():
        return found
    try:
        legacy = json.loads((found / MANIFEST).read_text(encoding="utf-8")).get("format") == LEGACY_FORMAT
    except (OSError, ValueError, AttributeError):
        legacy = False
    if legacy:
        raise CheckpointError(f"{found} was written by an earlier difflab (one folder, config.yaml + model.safetensors); "
                              f"convert it with: difflab convert {found}")
    raise CheckpointError(f"{found} holds no {MODEL_DIR}/{MANIFEST}; it is not a difflab model")


# --- reading -------------------------------------------------------------------------------------
def read_model_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a model directory (format checked)."""
    record = read_json(folder / CONFIG)
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("config"), dict):
        raise CheckpointError(f"{folder / CONFIG} is not a {FORMAT} config")
    return record


def load_model(path: str | os.PathLike, *, ema: bool = True) -> GenerativeModel:
    """The model saved at ``path`` (model dir, checkpoint, ``checkpoints/`` or run folder), verified,
    on the CPU, in eval mode, with its fitted state and tuned grids; EMA weights unless ``ema=False``.

    The result carries ``artefact``: {"path", "ema", "weights_sha256", "metadata"}.
    """
    folder = model_dir(path)
    manifest = verify_manifest(folder, required=(CONFIG, WEIGHTS[False], WEIGHTS[True]))
    record = read_model_config(folder)
    try:
        model = build_model(record.get("family", ""), record["config"])
    except (ConfigError, TypeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{folder / CONFIG} does not describe a model: {str(err).splitlines()[0]}") from None
    load_weights(model, folder / WEIGHTS[ema])
    if record.get("fitted"):
        if FITTED not in manifest["files"]:
            raise CheckpointError(f"{folder / FITTED} is missing: this {model.family} model needs "
                                  f"{model.fitted_description}")
        model.load_fitted_state(read_tensors(folder / FITTED))
    if model.needs_fit:
        raise CheckpointError(f"{folder / FITTED} is missing: this {model.family} model needs {model.fitted_description}")
    weights_sha = manifest["files"][WEIGHTS[ema]]["sha256"]
    model.tuned_grids = TunedGrids.load(folder / TUNED_GRIDS, weights_sha)
    model.artefact = {"path": str(folder), "ema": ema, "weights_sha256": weights_sha,  # type: ignore[assignment]
                      "metadata": record.get("metadata", {})}
    return model.eval()
