"""Linear probe: recovers known linear structure, ignores feature scale, taps the right layer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from difflab.errors import ConfigError, DataError
from difflab.evaluation.probe import (
    default_layer,
    extract_features,
    linear_probe,
    pca_features,
    pixel_features,
    probe_layers,
)
from difflab.nn import ViT, ViTConfig, build_network


def separable(n: int, dim: int = 12, classes: int = 4, flip: float = 0.0, seed: int = 0):
    """Features with labels argmax(W x) (linearly separable), a fraction ``flip`` relabelled at random."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(classes, dim))
    x = rng.normal(size=(n, dim))
    y = (x @ w.T).argmax(1)
    noisy = rng.random(n) < flip
    y[noisy] = rng.integers(0, classes, noisy.sum())
    return x, y


def test_probe_recovers_linearly_separable_labels():
    x, y = separable(3000)
    result = linear_probe(x[:2000], y[:2000], x[2000:], y[2000:])
    assert result.accuracy > 0.95
    assert (result.n_train, result.n_test, result.dim) == (2000, 1000, 12)
    assert "chosen on 400 held-out" in result.protocol()


def test_probe_accuracy_tracks_known_label_noise_and_chance():
    x, y = separable(4000, flip=0.4, seed=1)  # 40% relabelled uniformly: 30% wrong -> ~0.7 ceiling
    result = linear_probe(x[:3000], y[:3000], x[3000:], y[3000:])
    assert 0.62 < result.accuracy < 0.76
    rng = np.random.default_rng(2)
    random_labels = rng.integers(0, 4, 4000)
    chance = linear_probe(x[:3000], random_labels[:3000], x[3000:], random_labels[3000:])
    assert chance.accuracy < 0.33


def test_probe_is_invariant_to_feature_scaling_and_shift():
    x, y = separable(1500, flip=0.1, seed=3)
    rng = np.random.default_rng(4)
    scale = 10.0 ** rng.uniform(-3, 3, x.shape[1]) * rng.choice([-1.0, 1.0], x.shape[1])
    shift = rng.normal(scale=100.0, size=x.shape[1])
    a = linear_probe(x[:1000], y[:1000], x[1000:], y[1000:])
    b = linear_probe(x[:1000] * scale + shift, y[:1000], x[1000:] * scale + shift, y[1000:])
    assert (a.accuracy, a.C, a.val_accuracy) == (b.accuracy, b.C, b.val_accuracy)


def test_probe_rejects_mismatched_inputs():
    x, y = separable(100)
    with pytest.raises(DataError, match="same F"):
        linear_probe(x, y, x[:, :3], y)
    with pytest.raises(ConfigError, match="val_fraction"):
        linear_probe(x, y, x, y, val_fraction=1.5)


def test_vit_features_are_the_pooled_encoder_tokens():
    torch.manual_seed(0)
    net = ViT(ViTConfig(in_channels=1, patch_size=4, dim=32, encoder_depth=2, decoder_depth=2, num_heads=2))
    for p in net.parameters():  # leave adaLN-Zero so that blocks are not the identity
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(10, 1, 8, 8)
    feats = extract_features(net, x, t=0.3, batch_size=4)
    t = torch.full((10,), 0.3)
    assert feats.shape == (10, 32)
    assert torch.allclose(feats, net.encode(x, t).mean(1), atol=1e-5)
    last = extract_features(net, x, t=0.3, layer=-1)
    assert not torch.allclose(last, feats)
    noisy = extract_features(net, x, t=0.3, prepare=lambda z, tt: z + 1.0)
    assert torch.allclose(noisy, net.encode(x + 1.0, t).mean(1), atol=1e-5)
    with pytest.raises(ConfigError, match="out of range"):
        extract_features(net, x, layer=4)


def test_unet_default_layer_is_the_bottleneck():
    net = build_network("unet", seed=0, in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                        attention_resolutions=(), resolution=8, norm_groups=8, head_channels=16)
    layers = probe_layers(net)
    assert layers[default_layer(net)] is net.middle
    feats = extract_features(net, torch.randn(3, 1, 8, 8), t=0.5)
    assert feats.shape == (3, 32)  # bottleneck channels = 16 * 2


def test_baseline_features():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(50, 1, 4, 4, generator=g), torch.randn(7, 1, 4, 4, generator=g)
    assert pixel_features(test).shape == (7, 16)
    f_tr, f_te = pca_features(train, test, dim=5)
    assert f_tr.shape == (50, 5) and f_te.shape == (7, 5)
    cov = (f_tr.T @ f_tr).double()
    assert torch.allclose(cov - torch.diag(torch.diagonal(cov)), torch.zeros(5, 5, dtype=torch.float64), atol=1e-3)
    assert torch.all(torch.diagonal(cov)[:-1] >= torch.diagonal(cov)[1:])


def test_random_network_is_a_redrawn_copy():
    from difflab.evaluation.probe import random_network

    net = ViT(ViTConfig(in_channels=1, patch_size=4, dim=32, encoder_depth=1, decoder_depth=1, num_heads=2))
    a, b = random_network(net, seed=3), random_network(net, seed=3)
    for (name, p), q, r in zip(a.named_parameters(), b.parameters(), net.parameters(), strict=True):
        assert torch.equal(p, q)  # deterministic in the seed
        if p.ndim > 1:
            assert not torch.equal(p, r) and abs(float(p.detach().std()) * p[0].numel() ** 0.5 - 1) < 0.35, name
    x = torch.randn(4, 1, 8, 8)
    assert not torch.allclose(extract_features(a, x), extract_features(net, x))  # blocks no longer the identity


# --- the CLI ------------------------------------------------------------------------------------------
def save_tiny_checkpoint(directory, network: dict, process: dict, prediction: str = "eps", **sections):
    from difflab.data import load_dataset
    from difflab.models import build_model
    from difflab.training.build import model_config
    from difflab.training.checkpoint import save_checkpoint
    from difflab.training.config import TrainConfig, model_family

    config = TrainConfig.from_dict({"data": {"name": "digits"}, "process": process, "network": network,
                                    "objective": {"prediction": prediction}, "optim": {"steps": 1}, **sections})
    model = build_model(model_family(config), model_config(config, (1, 8, 8)), seed=0)
    model.fit([load_dataset("digits").images])  # a latent model's tokenizer; nothing for the others
    return save_checkpoint(directory, config=config, model=model, ema_model=model, step=0,
                           training_state={"image_shape": [1, 8, 8]})


def run_cli(argv):
    from difflab.cli.main import main

    return main(argv)


def test_cli_probe_reports_model_and_baselines_for_a_unet(tmp_path, capsys):
    ckpt = save_tiny_checkpoint(tmp_path / "unet", {"kind": "unet", "in_channels": 1, "base_channels": 16,
                                                    "channel_mult": [1, 2], "num_res_blocks": 1,
                                                    "attention_resolutions": [], "resolution": 8,
                                                    "norm_groups": 8, "head_channels": 16},
                                {"kind": "gaussian"})
    out_json = tmp_path / "probe.json"
    assert run_cli(["probe", "--checkpoint", str(ckpt), "--t", "0.2", "--n-train", "400", "--n-test", "300",
                    "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "input noised by the checkpoint's process at t=0.2" in text and "C=" in text
    result = json.loads(out_json.read_text())
    assert set(result) == {"model", "pixels", "pca32", "random_init", "settings"}
    assert result["model"]["dim"] == 32 and result["pixels"]["accuracy"] > 0.85


def test_cli_probe_uses_the_saved_tokenizer_of_ldae_and_latent_models(tmp_path, capsys):
    vit = {"kind": "vit", "patch_size": 4, "dim": 16, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2}
    tokenizer = {"kind": "patch_pca", "patch_size": 4, "components": 3}
    image_ckpt = save_tiny_checkpoint(tmp_path / "ldae", {**vit, "in_channels": 1}, {"kind": "dae"}, "x0",
                                      tokenizer=tokenizer, objective={"loss": "ldae", "prediction": "x0",
                                                                      "weighting": "dae"})
    latent_ckpt = save_tiny_checkpoint(tmp_path / "latent", {**vit, "in_channels": 3, "patch_size": 1},
                                       {"kind": "dae"}, "x0", tokenizer=tokenizer)
    for ckpt, shape in ((image_ckpt, "(1, 8, 8)"), (latent_ckpt, "(3, 2, 2)")):
        assert run_cli(["probe", "--checkpoint", str(ckpt), "--t", "0.01", "--n-train", "200",
                        "--n-test", "100", "--no-baselines"]) == 0
        text = capsys.readouterr().out
        assert f"network input: {shape} (latent model)" in text and "| model | 16 |" in text


def test_cli_probe_rejects_bad_arguments(tmp_path, capsys):
    ckpt = save_tiny_checkpoint(tmp_path / "c", {"kind": "vit", "in_channels": 1, "dim": 16, "num_heads": 2,
                                                 "encoder_depth": 1, "decoder_depth": 1}, {"kind": "gaussian"})
    assert run_cli(["probe", "--checkpoint", str(ckpt), "--t", "1.5"]) == 2
    assert "--t=1.5 must be in [0, 1]" in capsys.readouterr().err
    assert run_cli(["probe", "--checkpoint", str(ckpt), "--layer", "7"]) == 2
    assert "out of range" in capsys.readouterr().err
