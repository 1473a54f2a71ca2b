"""Checkpoints: a directory of safetensors, YAML and JSON files, written atomically, no pickle.

Layout of one checkpoint directory::

    model.safetensors   network weights (state_dict)
    ema.safetensors     EMA weights (used for sampling by default)
    config.yaml         the fully resolved TrainConfig
    state.safetensors   tensors of the training state (optimizer moments, RNG states, ...)
    state.json          step and the rest of the training state (see difflab.training.state)
    manifest.json       format version, and size + sha256 of every file above

A run keeps its checkpoints in ``out_dir/checkpoints/step_XXXXXXX`` with a text file
``latest`` naming the newest. Every checkpoint is first written to a hidden temporary
directory and then renamed into place, and ``latest`` is replaced by rename too, so a
process killed at any moment leaves either the old or the new checkpoint, never a broken
one. Loading verifies sizes and hashes before reading anything, refuses pickles (and
``torch.save`` archives) and parses weights only with safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from difflab.errors import CheckpointError, ConfigError
from difflab.nn import network_from_dict
from difflab.processes import DiagonalGaussianProcess, build_process
from difflab.training.config import TrainConfig
from difflab.training.state import flatten, unflatten

FORMAT = "difflab-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FILES = ("model.safetensors", "ema.safetensors", "config.yaml", "state.safetensors", "state.json")
LATEST = "latest"
STEP_PREFIX = "step_"
PICKLE_MAGIC = b"\x80"  # pickle protocol >= 2 starts with PROTO (0x80)
ZIP_MAGIC = b"PK\x03\x04"  # torch.save archives are zip files holding a pickle


@dataclass
class Checkpoint:
    """A loaded checkpoint: networks on the CPU, the process, and the raw training state."""

    path: Path
    config: TrainConfig
    model: nn.Module
    ema_model: nn.Module
    process: DiagonalGaussianProcess
    step: int
    training_state: dict[str, Any] = field(default_factory=dict)


# --- writing ---------------------------------------------------------------------------------

def save_checkpoint(
    directory: str | os.PathLike,
    *,
    config: TrainConfig,
    model: nn.Module,
    ema_model: nn.Module,
    step: int,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint to ``directory`` atomically (temp dir + rename); return its path.

    ``training_state`` is any nest of dicts/lists/tensors/JSON scalars (optimizer state,
    RNG states, data-sampler position ...); it comes back as ``Checkpoint.training_state``.
    An existing checkpoint at ``directory`` is replaced.
    """
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _write_files(tmp, config, model, ema_model, step, training_state or {})
    _fsync_dir(tmp)
    _replace_dir(tmp, final)
    return final


def _write_files(
    folder: Path, config: TrainConfig, model: nn.Module, ema_model: nn.Module, step: int, state: dict[str, Any]
) -> None:
    meta = {"format": FORMAT, "version": str(FORMAT_VERSION)}
    save_file(_weights(model), str(folder / "model.safetensors"), metadata=meta)
    save_file(_weights(ema_model), str(folder / "ema.safetensors"), metadata=meta)
    skeleton, tensors = flatten(state, "state")
    save_file(tensors, str(folder / "state.safetensors"), metadata=meta)
    _write_text(folder / "state.json", json.dumps({"step": step, "state": skeleton}, indent=1))
    _write_text(folder / "config.yaml", config.to_yaml())
    files = {name: {"size": (folder / name).stat().st_size, "sha256": _sha256(folder / name)} for name in FILES}
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "step": step, "files": files}
    _write_text(folder / MANIFEST, json.dumps(manifest, indent=1))
    for name in (*FILES, MANIFEST):
        _fsync_file(folder / name)


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name == "posix":
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``; an existing ``final`` is moved aside first, then deleted."""
    trash = None
    if final.exists():
        trash = final.parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, trash)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


# --- a run's checkpoint folder -----------------------------------------------------------------

def step_dir_name(step: int) -> str:
    """``step_0001234``."""
    return f"{STEP_PREFIX}{step:07d}"


def save_run_checkpoint(checkpoints: str | os.PathLike, *, keep_last: int, **kwargs: Any) -> Path:
    """Save ``checkpoints/step_XXXXXXX``, point ``latest`` at it, keep the newest ``keep_last``.

    Keyword arguments are those of ``save_checkpoint``. Leftover temporary directories of
    interrupted saves are removed first.
    """
    folder = Path(checkpoints)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    path = save_checkpoint(folder / step_dir_name(kwargs["step"]), **kwargs)
    tmp = folder / f".tmp-{LATEST}-{os.getpid()}"
    _write_text(tmp, path.name + "\n")
    _fsync_file(tmp)
    os.replace(tmp, folder / LATEST)
    _fsync_dir(folder)
    prune_checkpoints(folder, keep_last)
    return path


def list_checkpoints(checkpoints: str | os.PathLike) -> list[Path]:
    """``step_*`` directories of a run's checkpoint folder, oldest first."""
    folder = Path(checkpoints)
    found = [p for p in folder.glob(f"{STEP_PREFIX}*") if p.is_dir() and p.name[len(STEP_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def prune_checkpoints(checkpoints: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (never the one ``latest`` names)."""
    latest = _read_latest(checkpoints)
    for old in list_checkpoints(checkpoints)[:-keep_last]:
        if old.name != latest:
            shutil.rmtree(old, ignore_errors=True)


def _read_latest(checkpoints: Path) -> str | None:
    try:
        return (checkpoints / LATEST).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory ``path`` means: a checkpoint itself, a run's ``checkpoints/``
    folder (its ``latest``) or a run's ``out_dir`` (``checkpoints/latest``)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    for folder in (path, path / "checkpoints"):
        name = _read_latest(folder)
        if name is not None:
            if not (folder / name / MANIFEST).is_file():
                raise CheckpointError(f"{folder / LATEST} names {name!r}, which is not a complete checkpoint")
            return folder / name
    if path.is_file():
        raise CheckpointError(f"{path} is a file; a difflab checkpoint is a directory holding {MANIFEST}")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raise CheckpointError(f"no checkpoint in {path}: expected {MANIFEST}, a '{LATEST}' file, or checkpoints/{LATEST}")


def has_checkpoint(out_dir: str | os.PathLike) -> bool:
    """Whether ``out_dir`` (a run folder) holds a resumable checkpoint."""
    return _read_latest(Path(out_dir) / "checkpoints") is not None


# --- reading -----------------------------------------------------------------------------------

def verify_checkpoint(directory: Path) -> dict[str, Any]:
    """The manifest, after checking every listed file's size and sha256; else ``CheckpointError``."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{directory / MANIFEST} is missing or unreadable: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{directory / MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{directory} has checkpoint format version {manifest.get('version')!r}; "
                              f"this difflab reads version {FORMAT_VERSION}")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or sorted(listed) != sorted(FILES):
        raise CheckpointError(f"{directory / MANIFEST} must list exactly {', '.join(FILES)}")
    for name in FILES:
        _verify_file(directory / name, listed[name])
    return manifest


def _verify_file(path: Path, expected: Any) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    if not isinstance(expected, dict):
        raise CheckpointError(f"manifest entry for {path.name} is malformed")
    size = path.stat().st_size
    if size != expected.get("size"):
        raise CheckpointError(f"checkpoint file {path} has {size} bytes, manifest says {expected.get('size')} "
                              "(truncated or modified)")
    if _sha256(path) != expected.get("sha256"):
        raise CheckpointError(f"checkpoint file {path} is corrupted (sha256 differs from the manifest)")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (CPU). Pickles and ``torch.save`` zips are refused unread."""
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    header_len = int.from_bytes(head[:8], "little")  # safetensors: u64 header size, then a JSON header
    if len(head) < 9 or header_len + 8 > size or head[8:9] != b"{":
        if head.startswith(PICKLE_MAGIC) or head.startswith(ZIP_MAGIC):
            raise CheckpointError(f"{path} is a pickle / torch.save file, not safetensors; difflab never "
                                  "unpickles (it could run arbitrary code): convert it with safetensors")
        raise CheckpointError(f"{path} is not a valid safetensors file")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file: {err}") from None


def read_config(directory: Path) -> TrainConfig:
    """``config.yaml`` of a checkpoint as a ``TrainConfig``."""
    try:
        raw = yaml.safe_load((directory / "config.yaml").read_text(encoding="utf-8"))
        return TrainConfig.from_dict(raw)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError) as err:
        raise CheckpointError(f"{directory / 'config.yaml'} is invalid: {str(err).splitlines()[0]}") from None


def load_weights(module: nn.Module, path: Path) -> nn.Module:
    """Load ``path`` (safetensors) into ``module`` strictly; mismatches name the keys."""
    tensors = read_tensors(path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = [f"{label}: {few(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise CheckpointError(f"{path} does not match the network of config.yaml; " + "; ".join(parts))
    module.load_state_dict(tensors, strict=True)
    return module


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint (directory, ``checkpoints/`` folder or run folder), verified, on the CPU."""
    directory = resolve_checkpoint(path)
    manifest = verify_checkpoint(directory)
    config = read_config(directory)
    model = load_weights(network_from_dict(config.network), directory / "model.safetensors")
    ema_model = load_weights(network_from_dict(config.network), directory / "ema.safetensors")
    try:
        meta = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        step = int(meta["step"])
        state = unflatten(meta["state"], read_tensors(directory / "state.safetensors"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{directory / 'state.json'} is invalid: {err}") from None
    if step != manifest.get("step"):
        raise CheckpointError(f"{directory}: state.json step {step} differs from the manifest's {manifest.get('step')}")
    return Checkpoint(directory, config, model.eval(), ema_model.eval(), build_process(config.process), step, state)


def load_for_sampling(
    path: str | os.PathLike, use_ema: bool = True
) -> tuple[nn.Module, DiagonalGaussianProcess, TrainConfig]:
    """(network in eval mode, process, config) of a checkpoint; EMA weights unless ``use_ema=False``."""
    ckpt = load_checkpoint(path)
    return (ckpt.ema_model if use_ema else ckpt.model), ckpt.process, ckpt.config


def check_compatible(saved: TrainConfig, current: TrainConfig, source: Path) -> None:
    """``CheckpointError`` listing keys where ``current`` cannot continue from ``saved``.

    The network architecture, the process and the prediction type must agree; everything
    else (steps, lr, logging ...) may change between a run and its resumption.
    """
    pairs = {
        **{f"network.{k}": (v, current.network.get(k)) for k, v in saved.network.items()},
        **{f"network.{k}": (saved.network.get(k), v) for k, v in current.network.items()},
        **{f"process.{k}": (v, current.process.get(k)) for k, v in saved.process.items()},
        **{f"process.{k}": (saved.process.get(k), v) for k, v in current.process.items()},
        "objective.prediction": (saved.objective.prediction, current.objective.prediction),
    }
    diffs = [f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in sorted(pairs.items()) if a != b]
    if diffs:
        raise CheckpointError(f"checkpoint {source} is incompatible with the config ({'; '.join(diffs)}); "
                              "use the checkpoint's config or a new run.out_dir")
