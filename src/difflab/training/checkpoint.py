"""Training checkpoints: the model artefact plus the state to continue training, no pickle.

Layout of one checkpoint directory::

    model/          the model artefact (difflab.models.save_model): config.json, weights, EMA,
                    fitted state, manifest; all that sampling and evaluation need
    train_state/    config.yaml   the fully resolved TrainConfig
                    state.safetensors, state.json   optimizer moments, RNG states, data position,
                                  step (see difflab.training.state)
                    manifest.json size + sha256 of each file

A run keeps its checkpoints in ``out_dir/checkpoints/step_XXXXXXX`` with a text file
``latest`` naming the newest. Every checkpoint is first written to a hidden temporary
directory and then renamed into place, and ``latest`` is replaced by rename too, so a
process killed at any moment leaves either the old or the new checkpoint, never a broken
one. Loading verifies sizes and hashes before reading anything, refuses pickles (and
``torch.save`` archives) and parses weights only with safetensors.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import save_file

from difflab.errors import CheckpointError, ConfigError
from difflab.models import GenerativeModel, load_model
from difflab.models.artefact import (
    LATEST,
    MODEL_DIR,
    STEP_PREFIX,
    TRAIN_STATE_DIR,
    fsync,
    model_dir,
    read_latest,
    read_tensors,
    resolve_checkpoint,
    verify_manifest,
    write_manifest,
    write_model,
)
from difflab.processes import DiagonalGaussianProcess
from difflab.training.config import TrainConfig, model_family
from difflab.training.sections import TOKENIZER_FIT_OPTIONS
from difflab.training.state import flatten, unflatten

STATE_FILES = ("config.yaml", "state.safetensors", "state.json")

__all__ = [
    "Checkpoint",
    "check_compatible",
    "load_checkpoint",
    "read_config",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_run_checkpoint",
]


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (raw weights) and its EMA on the CPU, and the training state."""

    path: Path
    config: TrainConfig
    model: GenerativeModel
    ema_model: GenerativeModel
    step: int
    training_state: dict[str, Any] = field(default_factory=dict)

    @property
    def process(self) -> DiagonalGaussianProcess:
        return self.model.process  # type: ignore[return-value]


# --- writing ---------------------------------------------------------------------------------

def save_checkpoint(
    directory: str | os.PathLike,
    *,
    config: TrainConfig,
    model: GenerativeModel,
    ema_model: GenerativeModel,
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
    metadata = {"step": step, "data": config.to_dict()["data"]}
    write_model(tmp / MODEL_DIR, model, ema_model, metadata)
    _write_state(tmp / TRAIN_STATE_DIR, config, step, training_state or {})
    fsync(tmp)
    _replace_dir(tmp, final)
    return final


def _write_state(folder: Path, config: TrainConfig, step: int, state: dict[str, Any]) -> None:
    folder.mkdir()
    skeleton, tensors = flatten(state, "state")
    save_file(tensors, str(folder / "state.safetensors"))
    (folder / "state.json").write_text(json.dumps({"step": step, "state": skeleton}, indent=1), encoding="utf-8")
    (folder / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    write_manifest(folder, list(STATE_FILES), step=step)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``; an existing ``final`` is moved aside first, then deleted."""
    trash = None
    if final.exists():
        trash = final.parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, trash)
    os.replace(tmp, final)
    fsync(final.parent)
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
    tmp.write_text(path.name + "\n", encoding="utf-8")
    fsync(tmp)
    os.replace(tmp, folder / LATEST)
    fsync(folder)
    prune_checkpoints(folder, keep_last)
    return path


def list_checkpoints(checkpoints: str | os.PathLike) -> list[Path]:
    """``step_*`` directories of a run's checkpoint folder, oldest first."""
    folder = Path(checkpoints)
    found = [p for p in folder.glob(f"{STEP_PREFIX}*") if p.is_dir() and p.name[len(STEP_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def prune_checkpoints(checkpoints: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (never the one ``latest`` names)."""
    latest = read_latest(checkpoints)
    for old in list_checkpoints(checkpoints)[:-keep_last]:
        if old.name != latest:
            shutil.rmtree(old, ignore_errors=True)


def has_checkpoint(out_dir: str | os.PathLike) -> bool:
    """Whether ``out_dir`` (a run folder) holds a resumable checkpoint."""
    return read_latest(Path(out_dir) / "checkpoints") is not None


# --- reading -----------------------------------------------------------------------------------

def read_config(directory: Path) -> TrainConfig:
    """``train_state/config.yaml`` of a checkpoint as a ``TrainConfig``."""
    path = Path(directory) / TRAIN_STATE_DIR / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return TrainConfig.from_dict(raw)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError) as err:
        raise CheckpointError(f"{path} is invalid: {str(err).splitlines()[0]}") from None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint (directory, ``checkpoints/`` folder or run folder), verified, on the CPU."""
    directory = model_dir(path).parent  # refuses the earlier layout with the conversion command
    state_dir = directory / TRAIN_STATE_DIR
    manifest = verify_manifest(state_dir, required=STATE_FILES)
    config = read_config(directory)
    model, ema_model = load_model(directory, ema=False), load_model(directory, ema=True)
    try:
        meta = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
        step = int(meta["step"])
        state = unflatten(meta["state"], read_tensors(state_dir / "state.safetensors"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{state_dir / 'state.json'} is invalid: {err}") from None
    if step != manifest.get("step"):
        raise CheckpointError(f"{directory}: state.json step {step} differs from the manifest's {manifest.get('step')}")
    return Checkpoint(directory, config, model, ema_model, step, state)


def check_compatible(saved: TrainConfig, current: TrainConfig, source: Path) -> None:
    """``CheckpointError`` listing keys where ``current`` cannot continue from ``saved``.

    The model family, network architecture, process, tokenizer and objective type must agree;
    everything else (steps, lr, logging, how a tokenizer is fitted ...) may change between a
    run and its resumption.
    """
    old, new = saved.to_dict(), current.to_dict()
    for fit_only in TOKENIZER_FIT_OPTIONS:  # how the tokenizer was fitted; the checkpoint holds it fitted
        old["tokenizer"].pop(fit_only), new["tokenizer"].pop(fit_only)
    pairs = {
        "model.family": (model_family(saved), model_family(current)),
        **{f"{section}.{k}": (old[section].get(k), new[section].get(k))
           for section in ("network", "process", "tokenizer") for k in {*old[section], *new[section]}},
        **{f"model.{k}": (old["model"].get(k), new["model"].get(k))  # the family's options (beta ...)
           for k in {*old["model"], *new["model"]} - {"family"}},
        **{f"objective.{k}": (old["objective"][k], new["objective"][k])
           for k in ("loss", "prediction", "space", "residual_weight")},
    }
    diffs = [f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in sorted(pairs.items()) if a != b]
    if diffs:
        raise CheckpointError(f"checkpoint {source} is incompatible with the config ({'; '.join(diffs)}); "
                              "use the checkpoint's config or a new run.out_dir")


def resume_path_for(resume: str | os.PathLike | None, out_dir: Path) -> Path | None:
    """The checkpoint a run continues from: None starts afresh (refusing an ``out_dir`` that already
    holds checkpoints, so a run is never overwritten by accident); "auto" continues ``out_dir`` if
    it holds a checkpoint; anything else is resolved (a checkpoint, ``checkpoints/`` or a run folder)."""
    if resume is None:
        if has_checkpoint(out_dir):
            raise ConfigError(f"run.out_dir={str(out_dir)!r} already holds a run's checkpoints; "
                              "resume it (--resume) or choose another run.out_dir")
        return None
    if str(resume) == "auto":
        return resolve_checkpoint(out_dir) if has_checkpoint(out_dir) else None
    return resolve_checkpoint(resume)
