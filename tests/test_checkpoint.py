"""Checkpoint directories: exact round trip, verification, pointer handling, compatibility."""

from __future__ import annotations

import json

import pytest
import torch

from difflab.errors import CheckpointError
from difflab.models import build_model
from difflab.models.artefact import verify_manifest
from difflab.training import (
    check_compatible,
    load_checkpoint,
    load_config,
    save_checkpoint,
)
from difflab.training.build import model_config
from difflab.training.checkpoint import (
    STATE_FILES,
    list_checkpoints,
    resolve_checkpoint,
    save_run_checkpoint,
)
from difflab.training.ema import EMA

MODEL_FILES = ("config.json", "weights.safetensors", "ema.safetensors")


@pytest.fixture()
def parts():
    config = load_config(None, ["network.base_channels=16"])
    model = build_model("diffusion", model_config(config, (1, 8, 8)), seed=1)
    ema = EMA(model, 0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    ema.update(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.network(torch.randn(2, 1, 8, 8), torch.rand(2)).square().mean().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "rng": {"g": torch.Generator().manual_seed(3).get_state()[None]},
             "image_shape": [1, 8, 8], "last_loss": 0.25}
    return config, model, ema.module, state


def test_roundtrip_is_exact(tmp_path, parts):
    config, model, ema_model, state = parts
    path = save_checkpoint(tmp_path / "ck", config=config, model=model, ema_model=ema_model, step=7,
                           training_state=state)
    assert sorted(p.name for p in path.iterdir()) == ["model", "train_state"]
    assert sorted(p.name for p in (path / "model").iterdir()) == sorted([*MODEL_FILES, "manifest.json"])
    assert sorted(p.name for p in (path / "train_state").iterdir()) == sorted([*STATE_FILES, "manifest.json"])
    ckpt = load_checkpoint(path)
    assert ckpt.step == 7 and ckpt.config == config and ckpt.process.config() == config.process.config()
    for loaded, original in ((ckpt.model, model), (ckpt.ema_model, ema_model)):
        a, b = loaded.state_dict(), original.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    opt = ckpt.training_state["optimizer"]
    assert opt["param_groups"] == state["optimizer"]["param_groups"]
    for i, s in state["optimizer"]["state"].items():
        assert all(torch.equal(opt["state"][i][k], v) for k, v in s.items())
    # the restored optimizer state loads into a fresh AdamW
    fresh = torch.optim.AdamW(ckpt.model.parameters(), lr=1e-3)
    fresh.load_state_dict(opt)
    assert torch.equal(ckpt.training_state["rng"]["g"], state["rng"]["g"])
    assert ckpt.training_state["last_loss"] == 0.25


def test_run_folder_keeps_last_k_and_points_latest(tmp_path, parts):
    config, model, ema_model, state = parts
    folder = tmp_path / "run" / "checkpoints"
    for step in (1, 2, 3, 4):
        save_run_checkpoint(folder, keep_last=2, config=config, model=model, ema_model=ema_model, step=step,
                            training_state=state)
    assert [p.name for p in list_checkpoints(folder)] == ["step_0000003", "step_0000004"]
    assert (folder / "latest").read_text().strip() == "step_0000004"
    assert resolve_checkpoint(tmp_path / "run") == folder / "step_0000004"
    assert resolve_checkpoint(folder) == folder / "step_0000004"
    assert load_checkpoint(tmp_path / "run").step == 4
    # re-saving an existing step replaces it
    save_run_checkpoint(folder, keep_last=2, config=config, model=model, ema_model=ema_model, step=4,
                        training_state=state)
    assert load_checkpoint(folder).step == 4
    assert not list(folder.glob(".*"))


def test_incompatible_config_lists_mismatching_keys(tmp_path, parts):
    config = parts[0]
    other = load_config(None, ["network.base_channels=32", "process.kind=blurring"])
    with pytest.raises(CheckpointError) as info:
        check_compatible(config, other, tmp_path)
    message = str(info.value)
    assert "network.base_channels: checkpoint 16 vs config 32" in message
    assert "process.kind: checkpoint 'gaussian' vs config 'blurring'" in message
    assert "process.sigma_blur_max: checkpoint None vs config 20.0" in message
    check_compatible(config, load_config(None, ["network.base_channels=16", "optim.lr=1"]), tmp_path)


def test_manifest_lists_sizes_and_hashes(tmp_path, parts):
    config, model, ema_model, state = parts
    path = save_checkpoint(tmp_path / "ck", config=config, model=model, ema_model=ema_model, step=1)
    for folder, names in ((path / "model", MODEL_FILES), (path / "train_state", STATE_FILES)):
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["format"] == "difflab-model"
        for name in names:
            assert manifest["files"][name]["size"] == (folder / name).stat().st_size
            assert len(manifest["files"][name]["sha256"]) == 64
        assert verify_manifest(folder) == manifest
    assert json.loads((path / "train_state" / "manifest.json").read_text())["step"] == 1
