"""Issue 6, points 2 and 3: atomic checkpoints, corruption detection, safe loading."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from difflab.cli.main import main
from difflab.errors import CheckpointError
from difflab.models import artefact as artefact_module
from difflab.models import build_model
from difflab.models.artefact import verify_manifest
from difflab.training import checkpoint as ckpt_module
from difflab.training import load_checkpoint, load_config
from difflab.training.build import model_config
from difflab.training.checkpoint import save_run_checkpoint


def tiny_model(base_channels: int = 16):
    config = load_config(None, [f"network.base_channels={base_channels}"])
    return config, build_model("diffusion", model_config(config, (1, 8, 8)), seed=0)

TINY = ["network.base_channels=16", "optim.batch_size=16", "optim.steps=2", "run.progress=false",
        "run.sample.steps=2", "run.sample.num=4"]


@pytest.fixture()
def run_folder(tmp_path):
    """A run's checkpoints/ folder holding a valid step 1."""
    config, model = tiny_model()
    kwargs = dict(config=config, model=model, ema_model=model, training_state={"x": torch.ones(3)})
    folder = tmp_path / "checkpoints"
    save_run_checkpoint(folder, keep_last=2, step=1, **kwargs)
    return folder, kwargs


class Crash(Exception):
    """Stands for the process dying at this point."""


def crash_at(monkeypatch, k: int) -> list[str]:
    """Make the k-th file-system operation of a save raise ``Crash``; returns the op log."""
    log: list[str] = []
    targets = [(ckpt_module, "save_file"), (ckpt_module, "fsync"), (ckpt_module, "_replace_dir"),
               (artefact_module, "save_file"), (artefact_module, "fsync"), (Path, "write_text")]
    for owner, name in targets:
        original = getattr(owner, name)

        def wrapped(*args, _name=name, _original=original, **kwargs):
            log.append(_name)
            if len(log) == k + 1:
                raise Crash(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapped)
    original_replace = os.replace

    def replace(*args, **kwargs):
        log.append("os.replace")
        if len(log) == k + 1:
            raise Crash("os.replace")
        return original_replace(*args, **kwargs)

    monkeypatch.setattr(ckpt_module.os, "replace", replace)
    return log


def test_a_crash_at_any_point_of_a_save_leaves_a_loadable_latest(run_folder, monkeypatch):
    folder, kwargs = run_folder
    with monkeypatch.context() as m:
        total = crash_at(m, 10**9)
        save_run_checkpoint(folder, keep_last=2, step=2, **kwargs)
    assert len(total) >= 20 and total.count("os.replace") == 2  # each write, fsync and rename of a save
    for k in range(len(total)):
        with monkeypatch.context() as m:
            crash_at(m, k)
            with pytest.raises(Crash):
                save_run_checkpoint(folder, keep_last=2, step=3 + k, **kwargs)
        step = load_checkpoint(folder).step  # never a broken latest
        assert step in (2, 3 + k)
    # the next good save removes the debris of the crashed ones
    save_run_checkpoint(folder, keep_last=2, step=1000, **kwargs)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in folder.iterdir())[-1] == "step_0001000"


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda d: (d / "model/weights.safetensors").write_bytes((d / "model/weights.safetensors").read_bytes()[:-10]),
         "weights.safetensors has"),
        (lambda d: flip_byte(d / "model/ema.safetensors"), "ema.safetensors is corrupted (sha256"),
        (lambda d: flip_byte(d / "model/config.json"), "config.json is corrupted (sha256"),
        (lambda d: flip_byte(d / "train_state/state.json"), "state.json is corrupted (sha256"),
        (lambda d: (d / "train_state/state.safetensors").unlink(), "state.safetensors is missing"),
        (lambda d: (d / "model/manifest.json").write_text("{"), "manifest.json is missing or unreadable"),
        (lambda d: (d / "train_state/config.yaml").write_text("x: 1\n"), "config.yaml has"),
    ],
)
def test_truncated_or_corrupted_files_are_named(run_folder, damage, fragment):
    folder, _ = run_folder
    step_dir = folder / "step_0000001"
    damage(step_dir)
    with pytest.raises(CheckpointError, match=fragment.replace("(", r"\(")):
        load_checkpoint(folder)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_latest_naming_a_missing_checkpoint_is_an_error(run_folder):
    folder, _ = run_folder
    (folder / "latest").write_text("step_0000099\n")
    with pytest.raises(CheckpointError, match="names 'step_0000099', which is not a complete checkpoint"):
        load_checkpoint(folder)


class WriteFile:
    """Unpickling this writes a file: the kind of payload a malicious checkpoint carries."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "pwned"))


def rehash(step_dir: Path) -> None:
    """Make the manifest agree with the files (as an attacker would)."""
    import hashlib
    import json

    manifest = json.loads((step_dir / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        data = (step_dir / name).read_bytes()
        entry["size"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (step_dir / "manifest.json").write_text(json.dumps(manifest))


def test_pickle_posing_as_safetensors_is_refused_and_never_run(run_folder, tmp_path):
    folder, _ = run_folder
    probe = tmp_path / "probe.txt"
    pickle.loads(pickle.dumps(WriteFile(probe)))
    assert probe.read_text() == "pwned"  # the payload is live

    target = tmp_path / "owned.txt"
    step_dir = folder / "step_0000001"
    (step_dir / "model" / "weights.safetensors").write_bytes(pickle.dumps({"weight": WriteFile(target)}))
    rehash(step_dir / "model")
    verify_manifest(step_dir / "model")  # sizes and hashes agree ...
    with pytest.raises(CheckpointError, match="is a pickle / torch.save file, not safetensors; difflab never unpickles"):
        load_checkpoint(folder)  # ... but the content is refused
    assert not target.exists()


def test_torch_save_archive_and_garbage_are_refused(run_folder, tmp_path):
    folder, _ = run_folder
    step_dir = folder / "step_0000001"
    target = tmp_path / "owned.txt"
    torch.save({"w": torch.zeros(1), "payload": WriteFile(target)}, step_dir / "model" / "ema.safetensors")
    rehash(step_dir / "model")
    with pytest.raises(CheckpointError, match="ema.safetensors is a pickle / torch.save file"):
        load_checkpoint(folder)
    (step_dir / "model" / "ema.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    rehash(step_dir / "model")
    with pytest.raises(CheckpointError, match="ema.safetensors is not a valid safetensors file"):
        load_checkpoint(folder)
    assert not target.exists()


def test_weights_not_matching_config_name_the_keys(run_folder):
    folder, kwargs = run_folder
    _, other = tiny_model(base_channels=8)
    save_run_checkpoint(folder, keep_last=2, step=2, **{**kwargs, "model": other})
    with pytest.raises(CheckpointError, match=r"ema.safetensors does not match the model of .*config.json; wrong shape: "):
        load_checkpoint(folder)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_resume_with_an_incompatible_config_exits_2_and_touches_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "digits-gauss", f"run.out_dir={out}", *TINY]) == 0
    before = snapshot(out)
    capsys.readouterr()
    code = main(["train", "--config", "digits-blur", f"run.out_dir={out}", *TINY, "network.base_channels=32",
                 "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "is incompatible with the config" in err
    assert "network.base_channels: checkpoint 16 vs config 32" in err and "process.kind: checkpoint 'gaussian'" in err
    assert snapshot(out) == before


def test_a_fresh_run_refuses_an_out_dir_holding_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "digits-gauss", f"run.out_dir={out}", *TINY]) == 0
    before = snapshot(out)
    assert main(["train", "--config", "digits-gauss", f"run.out_dir={out}", *TINY]) == 2
    assert "already holds a run's checkpoints; resume it (--resume)" in capsys.readouterr().err
    assert snapshot(out) == before


def test_safetensors_whose_header_starts_like_a_pickle_still_load(tmp_path):
    """Regression: a header length of 128 + 256 k begins with byte 0x80, pickle's PROTO opcode."""
    from safetensors.torch import save_file

    from difflab.training.checkpoint import read_tensors

    for n in range(1, 200):
        path = tmp_path / "t.safetensors"
        save_file({"k" * n: torch.arange(3.0)}, str(path))
        if path.read_bytes()[:1] == b"\x80":
            assert torch.equal(read_tensors(path)["k" * n], torch.arange(3.0))
            return
    pytest.fail("no header of length 0x80 mod 256 produced")


def test_resuming_a_checkpoint_without_training_state_is_a_checkpoint_error(run_folder, tmp_path):
    from difflab.training import Trainer

    folder, _ = run_folder  # saved through the API with a made-up training_state
    config = load_config(None, ["network.base_channels=16", f"run.out_dir={tmp_path / 'new'}"])
    with pytest.raises(CheckpointError, match="has no usable training state .*can be sampled from but not resumed"):
        Trainer(config, resume=folder)
    assert not (tmp_path / "new").exists()
