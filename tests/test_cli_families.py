"""Every shipped digits/MNIST config, tiny: ``difflab train`` -> ``sample`` -> ``eval`` (fd, and nll where defined)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from difflab.cli.main import main
from difflab.errors import DataError
from difflab.training.config import shipped_configs

TINY_NET = ["network.base_channels=16", "network.norm_groups=8", "network.channel_mult=[1,2]",
            "network.attention_resolutions=[]", "network.num_res_blocks=1", "network.head_channels=null",
            "network.num_heads=1", "network.dropout=0.0", "optim.batch_size=8", "optim.steps=2",
            "optim.warmup_steps=1", "run.progress=false", "run.sample.num=4", "run.eval_every=0"]
EXTRA = {"mnist-ihdm": ["process.K=5", "run.sample.steps=5"]}  # IHDM samples one step per level
LATENT = ("mnist-latent-pca", "mnist-latent-kl", "mnist-ldae", "mnist-latent-vq")  # ViT: test_latent, test_vqvae
# No plain UNet: each has its own test module (test_vae_flow, test_pixelcnn, test_gan, test_vqvae, test_ddgan,
# test_lsgm)
OWN_NETWORKS = ("mnist-vae", "mnist-beta-vae", "mnist-flow", "mnist-pixelcnn", "mnist-gan", "mnist-vqvae", "mnist-ddgan",
                "mnist-lsgm")
CONFIGS = sorted(name for name in shipped_configs()
                 if name.startswith(("digits-", "mnist-")) and name not in LATENT + OWN_NETWORKS)


def test_every_process_family_is_covered():
    assert {"digits-gauss", "digits-blur", "mnist-gauss", "mnist-blur", "mnist-ihdm"} <= set(CONFIGS)


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@pytest.fixture(scope="module")
def mnist_present() -> bool:
    """Whether MNIST is on disk (../shared/data or $DIFFLAB_DATA_DIR); CI has it."""
    from difflab.data.mnist import find_mnist_files

    try:
        find_mnist_files(None, "train")
        find_mnist_files(None, "test")
    except DataError:
        return False
    return True


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """Reference features shared by the tests (one extraction per dataset)."""
    return tmp_path_factory.mktemp("reference-cache")


@pytest.mark.parametrize("config", CONFIGS)
def test_train_sample_eval(config, tmp_path, cache, mnist_present, capsys):
    if config.startswith("mnist") and not mnist_present:
        pytest.skip("../shared/data/mnist not present")
    out = tmp_path / "run"
    assert main(["train", "--config", config, *TINY_NET, *EXTRA.get(config, []), "run.sample.steps=3"
                 if config not in EXTRA else "run.sample_every=0", f"run.out_dir={out}"]) == 0
    assert main(["sample", "--checkpoint", str(out), "--num", "3", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert main(["eval", "--checkpoint", str(out), "--metrics", "fd,precision,recall", "--num", "10",
                 "--out", str(tmp_path / "fd"), "--cache-dir", str(cache)]) == 0
    (row,) = json.loads((tmp_path / "fd" / "eval.json").read_text())["rows"]
    assert row["fd"] > 0 and 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
    capsys.readouterr()
    nll = ["eval", "--checkpoint", str(out), "--metrics", "nll", "--nll-examples", "4", "--nll-num-t", "1",
           "--out", str(tmp_path / "nll")]
    if config.endswith("ihdm"):  # no likelihood: one line, exit 2, nothing written
        assert main(nll) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "'nll' is not defined for ihdm models" in err
        assert not (tmp_path / "nll").exists()
        assert main(["tune", "--checkpoint", str(out), "--steps", "3"]) == 2  # no ODE grids to tune
        assert "ihdm models do not sample on ODE grids" in capsys.readouterr().err
    else:
        assert main(nll) == 0
        (row,) = json.loads((tmp_path / "nll" / "eval.json").read_text())["rows"]
        assert row["nll"] > 0


def test_ihdm_trains_with_periodic_evaluation(tmp_path, cache, mnist_present):
    if not mnist_present:
        pytest.skip("../shared/data/mnist not present")
    out = tmp_path / "run"
    assert main(["train", "--config", "mnist-ihdm", *TINY_NET, *EXTRA["mnist-ihdm"], "run.eval_every=2",
                 "run.eval.num_samples=10", f"run.eval.cache_dir={cache}", f"run.out_dir={out}"]) == 0
    (line,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert line["step"] == 2 and line["eval"]["fd"] > 0 and "ihdm 5 steps" in line["protocol"]


def test_ihdm_nll_in_periodic_evaluation_fails_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "mnist-ihdm", *TINY_NET, "run.eval_every=2", "run.eval.metrics=[fd,nll]",
                 f"run.out_dir={out}"]) == 2
    assert "'nll', which ihdm models do not define" in capsys.readouterr().err and not out.exists()
