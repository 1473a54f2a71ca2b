"""Gated PixelCNN: causality by gradients, a distribution per sub-pixel, and the family through
``difflab train`` (save, load, identical samples, bad input)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import assert_resume_is_bit_exact, assert_train_refused

from difflab.cli.main import main
from difflab.models import PixelCNNModel, load_model
from difflab.nn import GatedPixelCNN, PixelCNNConfig
from difflab.training import Trainer
from difflab.training.config import load_config


def perturbed(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("channels", [1, 3])
def test_each_output_depends_only_on_earlier_subpixels_in_raster_order(channels):
    torch.manual_seed(0)
    net = perturbed(GatedPixelCNN(PixelCNNConfig(in_channels=channels, resolution=6, levels=4, hidden_channels=6,
                                                 layers=3))).double()
    h = w = 6
    for c, i, j in [(0, 0, 0), (channels - 1, 2, 3), (0, 3, 0), (channels - 1, 5, 5)]:
        x = torch.randn(1, channels, h, w, dtype=torch.float64, requires_grad=True)
        net(x)[0, c, :, i, j].sum().backward()
        grad = x.grad[0].abs()  # (C, H, W)
        before = torch.zeros(channels, h, w, dtype=torch.bool)  # sub-pixels before (c, i, j) in raster order
        before[:, :i] = True
        before[:, i, :j] = True
        before[:c, i, j] = True
        assert (grad[~before] == 0).all(), (c, i, j)  # nothing at or after (c, i, j)
        if before.any():
            assert grad[before].sum() > 0  # and it does see the past


def test_one_subpixel_likelihood_sums_to_one_over_its_levels():
    """Vary the last pixel over its L levels: sum_v p(x_<last, v) = p(x_<last), i.e. the model's
    exact likelihoods of the L images sum to the probability of the shared context."""
    torch.manual_seed(1)
    levels = 5
    net = perturbed(GatedPixelCNN(PixelCNNConfig(in_channels=1, resolution=4, levels=levels, hidden_channels=4,
                                                 layers=1)))
    model = PixelCNNModel(net, (1, 4, 4))
    context = 2 * torch.randint(0, levels, (1, 1, 4, 4), generator=torch.Generator().manual_seed(0)) / (levels - 1) - 1
    x = context.repeat(levels, 1, 1, 1)
    x[:, 0, 3, 3] = torch.linspace(-1, 1, levels)  # the last pixel takes each of its levels
    log_p = -model.nll(x, levels=levels) * 16 * math.log(2)  # (L,) nats
    with torch.no_grad():
        logits = net(x)[:, 0, :, 3, 3]  # (L, levels): the same context for every row
    assert torch.allclose(logits, logits[:1].expand_as(logits), atol=1e-6)
    log_context = log_p[0] - logits[0].log_softmax(0)[0]  # log p(x_<last)
    assert abs(torch.logsumexp(log_p, 0).item() - log_context.item()) < 1e-5


@pytest.mark.parametrize("channels,embedding_dim", [(1, 0), (3, 0), (1, 5)])
def test_row_by_row_logits_equal_the_full_pass_on_every_row(channels, embedding_dim):
    """``row_context`` + ``row_logits`` (sampling's cached form) against ``forward``, on an image
    taller than the context, so the crop of the rows above is exercised."""
    torch.manual_seed(2)
    levels = 6
    net = perturbed(GatedPixelCNN(PixelCNNConfig(in_channels=channels, resolution=14, levels=levels, hidden_channels=6,
                                                 layers=3, embedding_dim=embedding_dim))).double()
    assert net.context_rows < 14
    x = 2 * torch.randint(0, levels, (2, channels, 14, 9)).double() / (levels - 1) - 1
    with torch.no_grad():
        full = net(x)  # (B, C, L, H, W)
        for i in range(14):
            row = net.row_logits(x[:, :, i:i + 1], net.row_context(x, i))
            assert torch.allclose(row, full[..., i:i + 1, :], atol=1e-10), i


def test_ancestral_sampling_matches_a_brute_force_loop_over_full_passes():
    from difflab.models.autoregressive import ancestral_sample, level_values
    from difflab.processes.noise import PerSampleGenerator

    torch.manual_seed(3)
    levels, shape = 4, (3, 2, 9, 5)
    net = perturbed(GatedPixelCNN(PixelCNNConfig(in_channels=2, resolution=9, levels=levels, hidden_channels=4,
                                                 layers=2))).double()
    k = ancestral_sample(net, shape, PerSampleGenerator(7, range(3)))
    generator, expected = PerSampleGenerator(7, range(3)), torch.zeros(shape, dtype=torch.long)
    with torch.no_grad():
        for i in range(9):
            for j in range(5):
                for c in range(2):
                    p = net(level_values(expected, levels).double())[:, c, :, i, j].softmax(1)  # (B, L)
                    u = torch.special.ndtr(generator.randn((3, 1)))
                    expected[:, c, i, j] = (p.cumsum(1) < u).sum(1).clamp(max=levels - 1)
    assert torch.equal(k, expected)
    assert len(k.unique()) > 1


DIGITS = ["data.name=digits", "network.resolution=8", "network.levels=17", "network.hidden_channels=8",
          "network.layers=1", "optim.batch_size=8", "optim.warmup_steps=1", "run.progress=false",
          "run.sample_every=0", "run.eval_every=0", "run.sample.num=2", "run.deterministic=true"]


def test_two_steps_save_load_identical_samples_and_bit_exact_resume(tmp_path):
    trainer = Trainer(load_config("mnist-pixelcnn", [*DIGITS, "optim.steps=2", f"run.out_dir={tmp_path / 'a'}"]))
    trainer.train()
    loaded = load_model(tmp_path / "a")
    assert loaded.family == "pixelcnn" and loaded.sampling_protocol()["nfe"] == 64
    x = loaded.sample(3, seed=2)
    assert torch.equal(x, trainer.ema.module.eval().sample(3, seed=2))
    assert torch.equal(x, loaded.sample(3, seed=2, batch_size=1))
    assert torch.allclose(((x + 1) * 8).round(), (x + 1) * 8, atol=1e-5)  # on the 17-level grid
    assert_resume_is_bit_exact("mnist-pixelcnn", DIGITS, tmp_path)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["network.levels=256"], "the training images are not on the 256-level grid the PixelCNN predicts"),
        (["network.kernel_size=4"], "PixelCNN kernel_size=4 must be odd"),
        (["model.beta=1"], "unknown model option(s) ['beta']: model.family 'pixelcnn' has none"),
        (["network.resolution=28"], "network.resolution=28 but the images are (C, H, W) = (1, 8, 8)"),
    ],
)
def test_bad_pixelcnn_options_exit_2_with_one_line_and_write_nothing(overrides, fragment, tmp_path, capsys):
    assert_train_refused(["--config", "mnist-pixelcnn", *DIGITS, "optim.steps=1", *overrides],
                         fragment, tmp_path / "run", capsys)


def test_shipped_config_trains_samples_and_evaluates_through_the_cli(tmp_path, capsys):
    pytest.importorskip("difflab.data.mnist")
    out = tmp_path / "run"
    assert main(["train", "--config", "mnist-pixelcnn", "network.hidden_channels=8", "network.layers=1",
                 "optim.steps=2", "optim.batch_size=8", "optim.warmup_steps=1", "run.progress=false",
                 "run.sample.num=2", f"run.out_dir={out}"]) == 0
    assert main(["sample", "--checkpoint", str(out), "--num", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert "ancestral, pixel by pixel" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(out), "--metrics", "nll", "--nll-examples", "4",
                 "--out", str(tmp_path / "ev")]) == 0
    (row,) = json.loads((tmp_path / "ev" / "eval.json").read_text())["rows"]
    assert 0 < row["nll"] < 8.5 and "exact" in row["protocol_text"]
