"""Latent models through ``difflab train``: latent diffusion (patch-PCA, KL-VAE) and l-DAE.

Each shipped latent config trains 2 steps, then is sampled, evaluated and probed through the
CLI; the tokenizer saved in the model reproduces the one in memory; resume restores the
tokenizer instead of refitting it; bad tokenizer / objective / process / network options exit 2
with one line and write nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_train_refused

import difflab
from difflab.cli.main import main
from difflab.data import load_dataset
from difflab.errors import CheckpointError, ConfigError
from difflab.models import LatentDiffusionModel, build_model, load_model, save_model
from difflab.processes import GaussianDiffusion, LatentDiffusion
from difflab.processes.noise import PerSampleGenerator
from difflab.tokenizers import PatchPCA
from difflab.training import Trainer
from difflab.training.build import model_config
from difflab.training.config import TrainConfig, load_config, model_family

LATENT_CONFIGS = ("mnist-latent-pca", "mnist-latent-kl", "mnist-ldae")
TINY = ["optim.steps=2", "optim.batch_size=8", "optim.warmup_steps=1", "network.dim=32", "network.encoder_depth=1",
        "network.decoder_depth=1", "tokenizer.fit_images=1000", "tokenizer.steps=3", "run.progress=false",
        "run.sample_every=0", "run.sample.num=4", "run.sample.steps=3"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reference-cache")


@pytest.mark.parametrize("name", LATENT_CONFIGS)
def test_latent_config_trains_samples_evaluates_and_probes(name, tmp_path, cache, capsys):
    pytest.importorskip("difflab.data.mnist")
    out = tmp_path / "run"
    config = load_config(name, [*TINY, f"run.out_dir={out}"])
    trainer = Trainer(config)
    assert trainer.train()["fitted"].startswith(f"tokenizer {config.tokenizer.kind} (")  # printed by difflab train
    in_memory = trainer.ema.module
    loaded = load_model(out)
    assert loaded.family == "latent" and loaded.tokenizer.kind == config.tokenizer.kind
    x = load_dataset("mnist", split="test").images[:16]
    with torch.no_grad():
        assert torch.equal(loaded.tokenizer.decode(loaded.tokenizer.encode(x)),
                           in_memory.tokenizer.decode(in_memory.tokenizer.encode(x)))
        assert torch.equal(loaded.sample(3, seed=1, steps=2), in_memory.sample(3, seed=1, steps=2))
    assert main(["sample", "--checkpoint", str(out), "--num", "3", "--steps", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["eval", "--checkpoint", str(out), "--metrics", "fd", "--num", "10", "--steps", "2",
                 "--out", str(tmp_path / "fd"), "--cache-dir", str(cache)]) == 0
    (row,) = json.loads((tmp_path / "fd" / "eval.json").read_text())["rows"]
    assert row["fd"] > 0
    assert main(["probe", "--checkpoint", str(out), "--t", "0.01", "--n-train", "60", "--n-test", "20",
                 "--no-baselines"]) == 0
    assert "| model | 32 |" in capsys.readouterr().out


def digits_config(**sections) -> TrainConfig:
    base = {"data": {"name": "digits"}, "tokenizer": {"kind": "patch_pca", "patch_size": 4, "components": 3},
            "network": {"kind": "vit", "in_channels": 3, "patch_size": 1, "dim": 16, "encoder_depth": 1,
                        "decoder_depth": 1, "num_heads": 2},
            "objective": {"prediction": "v"}, "optim": {"steps": 4, "batch_size": 8, "warmup_steps": 1},
            "run": {"progress": False, "sample_every": 0, "checkpoint_every": 2, "num_threads": 1,
                    "sample": {"num": 2, "steps": 2}}}
    return TrainConfig.from_dict({**base, **sections})


def test_resume_restores_the_tokenizer_and_is_bit_exact(tmp_path):
    straight = Trainer(digits_config(run={**digits_config().to_dict()["run"], "out_dir": str(tmp_path / "a")}))
    straight.train()
    half = digits_config(optim={"steps": 2, "batch_size": 8, "warmup_steps": 1},
                         run={**digits_config().to_dict()["run"], "out_dir": str(tmp_path / "b")})
    Trainer(half).train()
    resumed = Trainer(digits_config(run={**digits_config().to_dict()["run"], "out_dir": str(tmp_path / "b")}),
                      resume="auto")
    assert resumed.step == 2 and not resumed.model.needs_fit
    resumed.train()
    a, b = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(a.tokenizer.basis, b.tokenizer.basis)


def image_net(x, t):
    """A deterministic image-space 'network' (B, C, H, W) -> same shape."""
    return torch.tanh(x) * (1 - t.view(-1, 1, 1, 1).to(x.dtype))


@pytest.mark.parametrize("loss", ["diffusion", "ldae"])
def test_the_latent_model_samples_the_core_process_in_the_latent_and_decodes(loss):
    images = load_dataset("digits").images
    pca = PatchPCA.fit(images, patch_size=4, components=3)
    if loss == "diffusion":  # a latent network, eps prediction
        net, denoiser, prediction = (lambda u, t: 0.5 * u), (lambda u, t: 0.5 * u), "eps"
        model = LatentDiffusionModel(net, GaussianDiffusion(), (1, 8, 8), pca)
    else:  # l-DAE: an image-space x0 network seen from the latent as E(net(D(u_t)))
        denoiser, prediction = (lambda u, t: pca.encode(image_net(pca.decode(u), t))), "x0"
        model = LatentDiffusionModel(image_net, GaussianDiffusion(), (1, 8, 8), pca, loss="ldae",
                                     prediction="x0", weighting="dae")
    assert model.state_shape(4) == (4, 3, 2, 2)
    generator = PerSampleGenerator(5, range(4), torch.device("cpu"))
    u_0 = difflab.sample(denoiser, LatentDiffusion(GaussianDiffusion(), pca), (4, 3, 2, 2), "ddim", 3, prediction,
                         generator)
    assert torch.equal(model.sample(4, seed=5, sampler="ddim", steps=3), pca.decode(u_0).float())


def test_saved_latent_model_round_trips(tmp_path):
    config = digits_config()
    model = build_model(model_family(config), model_config(config, (1, 8, 8)), seed=0)
    assert model.needs_fit
    model.fit([load_dataset("digits").images])
    path = save_model(tmp_path / "m", model)
    loaded = load_model(path)
    assert loaded.config() == model.config() and not loaded.needs_fit
    assert torch.equal(loaded.tokenizer.basis, model.tokenizer.basis)
    assert torch.equal(loaded.sample(3, seed=2, steps=2), model.eval().sample(3, seed=2, steps=2))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["tokenizer.kind=pca"], "tokenizer.kind='pca' is not allowed; choose one of: 'none', 'patch_pca'"),
        (["objective.space=pixels"], "objective.space='pixels' is not allowed; choose one of: 'latent'"),
        (["objective.weighting=snr"], "objective.loss='ldae' predicts clean data with weighting 'dae' or 'uniform'"),
        (["process.noise=cosine"], "process.noise='cosine' is not allowed; choose one of: 'linear_gamma2'"),
        (["network.kind=transformer"], "network.kind='transformer' is not allowed; choose one of: 'unet', 'mlp', 'vit'"),
        (["network.depth=3"], "unknown network option(s) ['depth']; allowed:"),
        (["tokenizer.kind=none"], "model.family='latent' with tokenizer.kind='none'"),
        (["tokenizer.kind=kl_vae"], "objective.space='image' weights residuals per PCA component"),
        (["model.family=diffusion"], "a tokenizer belongs to latent models only"),
    ],
)
def test_bad_latent_options_exit_2_with_one_line_and_write_nothing(overrides, fragment, tmp_path, capsys):
    assert_train_refused(["--config", "mnist-ldae", *overrides], fragment, tmp_path / "run", capsys)


def test_a_tokenizer_from_a_path_must_match_the_config(tmp_path):
    from difflab.tokenizers import save_tokenizer

    save_tokenizer(PatchPCA.fit(load_dataset("digits").images, patch_size=4, components=5), tmp_path / "tok")
    config = digits_config(tokenizer={"kind": "patch_pca", "patch_size": 4, "components": 3,
                                      "path": str(tmp_path / "tok")})
    model = build_model("latent", model_config(config, (1, 8, 8)), seed=0)
    with pytest.raises(ConfigError, match="latents \\(5, 2, 2\\); the config asks for a patch_pca with latents \\(3, 2, 2\\)"):
        model.fit([load_dataset("digits").images])


def test_latents_are_never_clipped_like_images():
    pca = PatchPCA.fit(load_dataset("digits").images, patch_size=4, components=3)
    model = LatentDiffusionModel(lambda u, t: 0.5 * u, GaussianDiffusion(), (1, 8, 8), pca,
                                 sample_defaults={"clip_x0": 1.0})
    generator = PerSampleGenerator(0, range(4), torch.device("cpu"))
    u_0 = difflab.sample(lambda u, t: 0.5 * u, LatentDiffusion(GaussianDiffusion(), pca), (4, 3, 2, 2), "ddim", 3,
                         "eps", generator)  # no clip_x0
    assert u_0.abs().max() > 1  # PCA latents leave [-1, 1] ...
    assert torch.equal(model.sample(4, seed=0, sampler="ddim", steps=3, clip_x0=1.0), pca.decode(u_0).float())


def test_an_autoencoder_tokenizer_starts_from_the_run_seed():
    config = digits_config(tokenizer={"kind": "kl_vae", "latent_channels": 2, "levels": 1, "base_channels": 8},
                           network={"kind": "vit", "in_channels": 2, "patch_size": 1, "dim": 16, "encoder_depth": 1,
                                    "decoder_depth": 1, "num_heads": 2},
                           objective={"prediction": "v"})
    a, b, c = (build_model("latent", model_config(config, (1, 8, 8)), seed=s) for s in (0, 0, 1))
    weights = [dict(m.tokenizer.tensors()) for m in (a, b, c)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_resume_refuses_another_tokenizer_but_not_another_way_to_fit_it(tmp_path):
    run = {**digits_config().to_dict()["run"], "out_dir": str(tmp_path / "r")}
    Trainer(digits_config(optim={"steps": 2, "batch_size": 8, "warmup_steps": 1}, run=run)).train()
    tokenizer = digits_config().to_dict()["tokenizer"]
    with pytest.raises(CheckpointError, match="tokenizer.whiten: checkpoint False vs config True"):
        Trainer(digits_config(tokenizer={**tokenizer, "whiten": True}, run=run), resume="auto")
    resumed = Trainer(digits_config(tokenizer={**tokenizer, "fit_images": 10}, run=run), resume="auto")
    assert resumed.step == 2
