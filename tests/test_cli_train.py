"""``difflab train`` and ``difflab sample`` end to end (in-process), and their error handling."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from difflab.cli.main import main

TINY = [
    "network.base_channels=16",
    "optim.batch_size=16",
    "optim.steps=3",
    "optim.warmup_steps=1",
    "run.log_every=1",
    "run.progress=false",
    "run.sample.steps=3",
    "run.sample.num=4",
]


def test_train_then_sample_writes_a_valid_png(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "digits-blur", f"run.out_dir={out}", *TINY]) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]

    grid, npz = tmp_path / "grid.png", tmp_path / "s.npz"
    args = ["sample", "--checkpoint", str(out), "--sampler", "ddim", "--steps", "4", "--num", "9", "--seed", "1",
            "--out", str(grid)]
    assert main([*args, "--npz", str(npz), "--eta", "1.0"]) == 0
    with Image.open(grid) as image:
        image.verify()
    with Image.open(grid) as image:
        assert image.format == "PNG" and min(image.size) >= 64
    data = np.load(npz)
    assert data["images"].shape == (9, 1, 8, 8) and data["uint8"].dtype == np.uint8

    again = tmp_path / "again.png"  # same seed, same grid
    assert main([*args[:-1], str(again), "--eta", "1.0"]) == 0
    assert again.read_bytes() == grid.read_bytes()


def test_sample_without_ema_and_named_checkpoint_dir(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", "digits-gauss", f"run.out_dir={out}", *TINY]) == 0
    grid = tmp_path / "raw.png"
    ckpt = out / "checkpoints" / "step_0000003"
    assert main(["sample", "--checkpoint", str(ckpt), "--no-ema", "--steps", "2", "--num", "4", "--out", str(grid)]) == 0
    assert grid.stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--config", "digits-gauss", "optim.lr=-3"], "optim.lr=-3.0 is out of range"),
        (["--config", "digits-gauss", "optim.nope=1"], "unknown optim option(s) ['nope']"),
        (["--config", "no-such-config"], "neither a file nor a shipped config"),
        (["--config", "digits-gauss", "network.in_channels=3"], "network.in_channels=3 but data digits/train"),
        (["--config", "digits-gauss", "network.kind=mlp"], "unknown network option(s) ['attention_resolutions'"),
        (["--config", "digits-gauss", "network.num_classes=4"], "network.num_classes=4 but digits/train has 10"),
        (["--config", "digits-gauss", "optim.batch_size=5000"], "batch_size=5000 must be between 1 and"),
        (["--config", "digits-gauss", "run.eval.metrics=[fd,fid]"], "run.eval.metrics[1]='fid' is not allowed"),
        (["--config", "digits-gauss", "data.name=cifar10", "run.eval_every=1000"], "set run.eval.inception_weights to a local"),
        (["--config", "digits-gauss", "run.eval_every=1", "run.eval.features=mnist-cnn"], "'mnist-cnn' takes images of shape (1, 28, 28)"),
        (["--config", "digits-gauss", "run.eval_every=0", "data.name=folder", "data.path=/nonexistent/imgs"], "/nonexistent/imgs"),
        ([], "pass --config FILE"),
        (["--config", "digits-gauss", "--resume", "/nonexistent/run"], "checkpoint /nonexistent/run does not exist"),
    ],
)
def test_bad_train_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, fragment):
    out = tmp_path / "run"
    code = main(["train", *argv, f"run.out_dir={out}", *TINY[:1]])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert err.count("\n") == 1 and err.startswith("difflab train: error: ")
    assert not out.exists()


def test_mlp_with_wrong_input_size_exits_2(tmp_path, capsys):
    config = tmp_path / "mlp.yaml"
    config.write_text("network:\n  kind: mlp\n  in_features: 10\n")
    assert main(["train", "--config", str(config), f"run.out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "network.in_features=10 but data digits/train has images of shape (C, H, W) = (1, 8, 8)" in err
    assert "set network.in_features: 64" in err
    assert not (tmp_path / "run").exists()


def test_bad_yaml_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: [1, 2\n")
    assert main(["train", "--config", str(bad), f"run.out_dir={tmp_path / 'run'}"]) == 2
    assert "invalid YAML" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--num", "0"], "--num=0 must be a positive integer"),
        (["--steps", "-1"], "--steps=-1 must be a positive integer"),
        (["--device", "banana"], "--device='banana'"),
        (["--sampler", "nope"], "sampler='nope' is not allowed"),
    ],
)
def test_bad_sample_input_exits_2(tmp_path, capsys, argv, fragment):
    out = tmp_path / "run"
    assert main(["train", "--config", "digits-gauss", f"run.out_dir={out}", *TINY]) == 0
    capsys.readouterr()
    grid = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(out), "--out", str(grid), *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
    assert not grid.exists()


def test_sample_from_a_non_checkpoint_exits_2(tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04junk")
    assert main(["sample", "--checkpoint", str(tmp_path / "model.pt")]) == 2
    assert "is a file; a difflab checkpoint is a directory" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tmp_path)]) == 2
    assert "no checkpoint in" in capsys.readouterr().err


def test_list_configs(capsys):
    assert main(["train", "--list-configs"]) == 0
    names = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["cifar10-blur", "cifar10-gauss", "cifar10-ihdm", "digits-blur", "digits-blur-cond", "digits-gauss",
                     "mnist-beta-vae", "mnist-blur", "mnist-cld", "mnist-ddgan", "mnist-flow", "mnist-gan", "mnist-gauss",
                     "mnist-gauss-cond",
                     "mnist-ihdm", "mnist-latent-kl", "mnist-latent-pca", "mnist-latent-vq", "mnist-ldae", "mnist-lsgm",
                     "mnist-pixelcnn", "mnist-vae", "mnist-vqvae"]


def test_resume_with_the_runs_own_config_and_more_steps(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "digits-gauss", f"run.out_dir={out}", *TINY]) == 0
    assert main(["train", "--resume", str(out), "optim.steps=5"]) == 0
    assert "trained 2 steps (total 5)" in capsys.readouterr().out
    # an override right after a bare --resume is still an override
    assert main(["train", "--config", "digits-gauss", f"run.out_dir={out}", *TINY, "--resume", "optim.steps=6"]) == 0
    assert "trained 1 steps (total 6)" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
