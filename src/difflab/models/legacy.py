"""Convert a checkpoint of the earlier single-folder layout to ``model/`` + ``train_state/``.

The earlier layout (difflab-checkpoint format 1) kept everything in one folder --
``model.safetensors``, ``ema.safetensors``, ``config.yaml``, ``state.safetensors``,
``state.json``, ``manifest.json`` (+ ``tuned_grids.json``) -- and IHDM's fitted prior two folders
up, in the run folder (``prior.safetensors``). ``convert_checkpoint`` verifies the old files,
builds the model artefact from them (``difflab.models.save_model`` layout, the prior inside it)
and moves the training state beside it; the weights are copied bit for bit. Run it as
``difflab convert <checkpoint or run folder>``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from difflab.errors import CheckpointError
from difflab.models.artefact import (
    LEGACY_FORMAT,
    MANIFEST,
    MODEL_DIR,
    TRAIN_STATE_DIR,
    TUNED_GRIDS,
    WEIGHTS,
    build_model,
    fsync,
    load_weights,
    read_json,
    resolve_checkpoint,
    sha256,
    write_manifest,
    write_model,
)
from difflab.models.conditioning import Conditioning
from difflab.processes import HeatPrior, build_process

LEGACY_FILES = ("model.safetensors", "ema.safetensors", "config.yaml", "state.safetensors", "state.json")
STATE_FILES = ("config.yaml", "state.safetensors", "state.json")


def _verify_legacy(folder: Path) -> dict[str, Any]:
    manifest = read_json(folder / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != LEGACY_FORMAT or manifest.get("version") != 1:
        raise CheckpointError(f"{folder} is not a checkpoint of the earlier layout ({LEGACY_FORMAT} version 1)")
    for name in LEGACY_FILES:
        entry = manifest.get("files", {}).get(name, {})
        if not (folder / name).is_file() or sha256(folder / name) != entry.get("sha256"):
            raise CheckpointError(f"{folder / name} is missing or differs from its manifest; it cannot be converted")
    return manifest


def _model_config(raw: dict[str, Any], image_shape: list[int]) -> dict[str, Any]:
    """The model ``config()`` from the sections of the earlier ``config.yaml``."""
    objective, sample = raw.get("objective", {}), raw.get("run", {}).get("sample", {})
    return {
        "network": raw["network"], "process": raw["process"], "image_shape": image_shape,
        "prediction": objective.get("prediction", "eps"), "weighting": objective.get("weighting", "uniform"),
        "gamma": objective.get("gamma", 5.0), "time_sampling": objective.get("time_sampling", "uniform"),
        "conditioning": Conditioning.classes(raw["network"].get("num_classes"),
                                             objective.get("cond_drop_prob", 0.0)).config(),
        "sample_defaults": {k: sample.get(k, d) for k, d in (("sampler", "ddim"), ("steps", 50), ("eta", None),
                                                               ("clip_x0", 1.0))},
    }


def _migrate_config(raw: dict[str, Any], samplers: list[str]) -> dict[str, Any]:
    """The earlier ``config.yaml`` for this difflab: ``run.eval`` sampled with DDIM, 50 steps, by
    default, which IHDM runs cannot use (they could not be evaluated at all); such a sampler becomes
    null, i.e. the run's ``run.sample`` one."""
    evaluation = raw.get("run", {}).get("eval", {})
    if evaluation.get("sampler") not in (None, *samplers):
        evaluation["sampler"] = evaluation["steps"] = None
    return raw


def convert_checkpoint(path: str | os.PathLike, *, prior: str | os.PathLike | None = None) -> Path:
    """Rewrite the earlier-layout checkpoint at ``path`` (or a run's latest) in place; returns it.

    ``prior``: IHDM's ``prior.safetensors`` (default: the run folder's, two levels up).
    """
    folder = resolve_checkpoint(path)
    manifest = _verify_legacy(folder)
    raw = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    image_shape = state["state"].get("image_shape")
    if not isinstance(image_shape, list):
        raise CheckpointError(f"{folder / 'state.json'} does not record the image shape; it cannot be converted")
    process = build_process(raw["process"])
    model = build_model(process.default_family, _model_config(raw, image_shape))
    ema = build_model(process.default_family, _model_config(raw, image_shape))
    load_weights(model.network, folder / "model.safetensors")
    load_weights(ema.network, folder / "ema.safetensors")
    if model.needs_fit:
        prior_path = Path(prior) if prior is not None else folder.parent.parent / "prior.safetensors"
        fitted = HeatPrior.load(prior_path)
        model.load_fitted_state({f"process.prior.{k}": getattr(fitted, k) for k in ("mean", "var", "low_index", "low_cov")})
    tmp = folder.parent / f".convert-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_model(tmp / MODEL_DIR, model, ema, {"step": manifest.get("step"), "data": raw.get("data", {}),
                                               "converted_from": LEGACY_FORMAT})
    (tmp / TRAIN_STATE_DIR).mkdir()
    for name in ("state.safetensors", "state.json"):
        shutil.copy2(folder / name, tmp / TRAIN_STATE_DIR / name)
    text = yaml.safe_dump(_migrate_config(raw, type(model).sampler_names()), sort_keys=False)
    (tmp / TRAIN_STATE_DIR / "config.yaml").write_text(text, encoding="utf-8")
    write_manifest(tmp / TRAIN_STATE_DIR, list(STATE_FILES), step=manifest.get("step"))
    _carry_tuned_grids(folder, tmp / MODEL_DIR)
    fsync(tmp)
    old = folder.parent / f".old-{folder.name}-{os.getpid()}"
    os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _carry_tuned_grids(old: Path, model_dir: Path) -> None:
    """Keep ``tuned_grids.json``: the weights are the same tensors in a new file, so the grids still
    apply; they are re-keyed from the old file's sha256 to the new one's."""
    if not (old / TUNED_GRIDS).is_file():
        return
    payload = json.loads((old / TUNED_GRIDS).read_text(encoding="utf-8"))
    for ema in (False, True):
        if payload.get("weights_sha256") == sha256(old / ("ema.safetensors" if ema else "model.safetensors")):
            payload["weights_sha256"] = sha256(model_dir / WEIGHTS[ema])
            (model_dir / TUNED_GRIDS).write_text(json.dumps(payload, indent=1), encoding="utf-8")
            return


__all__ = ["convert_checkpoint"]
