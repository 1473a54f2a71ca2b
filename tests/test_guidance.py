"""Classifier-free guidance: end points exact, combination linear, one batched pass."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import difflab
from difflab.errors import ConfigError
from difflab.models import Conditioning, DiffusionModel
from difflab.samplers import guided
from difflab.samplers.guidance import class_labels

NUM_CLASSES = 3


class TinyConditional(nn.Module):
    """A class-conditional toy network with the ``difflab.nn`` conventions (null label = num_classes)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.config = SimpleNamespace(num_classes=NUM_CLASSES)
        self.embed = nn.Embedding(NUM_CLASSES + 1, 16)
        self.mix = nn.Linear(16, 16)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None,
                scale: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(x.shape[0])
        if class_labels is None:
            class_labels = torch.full((x.shape[0],), NUM_CLASSES, dtype=torch.long)
        h = self.mix(x.flatten(1) * torch.cos(t)[:, None] + self.embed(class_labels))
        if scale is not None:
            h = h * scale[:, None]
        return torch.tanh(h).reshape(x.shape)


def _inputs(batch: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(batch, 1, 4, 4, generator=g)
    t = torch.rand(batch, generator=g)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    return z, t, y


def test_w0_is_unconditional_and_w1_conditional_bit_for_bit():
    model = TinyConditional()
    z, t, y = _inputs()
    null = torch.full_like(y, NUM_CLASSES)
    with torch.no_grad():
        assert torch.equal(guided(model, 0.0, NUM_CLASSES)(z, t, class_labels=y), model(z, t, class_labels=null))
        assert torch.equal(guided(model, 1.0, NUM_CLASSES)(z, t, class_labels=y), model(z, t, class_labels=y))


def test_guided_prediction_is_the_linear_combination_from_one_batched_pass():
    model = TinyConditional()
    z, t, y = _inputs()
    null = torch.full_like(y, NUM_CLASSES)
    with torch.no_grad():
        pred_c, pred_u = model(z, t, class_labels=y), model(z, t, class_labels=null)
        model.calls.clear()
        out = guided(model, 3.0, NUM_CLASSES)(z, t, class_labels=y)
    assert model.calls == [2 * z.shape[0]]  # both passes in one batch of 2B
    torch.testing.assert_close(out, pred_u + 3.0 * (pred_c - pred_u), rtol=1e-5, atol=1e-6)


def test_other_per_example_conditions_are_stacked_too():
    model = TinyConditional()
    z, t, y = _inputs()
    scale = torch.linspace(0.5, 2.0, z.shape[0])
    null = torch.full_like(y, NUM_CLASSES)
    with torch.no_grad():
        out = guided(model, 2.0, NUM_CLASSES)(z, t, class_labels=y, scale=scale)
        pred_c = model(z, t, class_labels=y, scale=scale)
        pred_u = model(z, t, class_labels=null, scale=scale)
    torch.testing.assert_close(out, pred_u + 2.0 * (pred_c - pred_u), rtol=1e-5, atol=1e-6)


def test_missing_labels_is_a_config_error():
    z, t, _ = _inputs()
    with pytest.raises(ConfigError, match="class_labels"):
        guided(TinyConditional(), 2.0, NUM_CLASSES)(z, t)


def test_guidance_one_equals_plain_conditional_sampling():
    model = TinyConditional()
    process = difflab.GaussianDiffusion()
    noise = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        plain = difflab.sample(model, process, noise.shape, steps=5, noise=noise, cond={"class_labels": y})
        via_sample = difflab.sample(model, process, noise.shape, steps=5, noise=noise, cond={"class_labels": y},
                                    guidance=1.0)
    assert torch.equal(plain, via_sample)
    # through a model: its conditioning spec gives the labels (classes cycle) and the null condition
    wrapped = DiffusionModel(model, process, (1, 4, 4), conditioning=Conditioning.classes(NUM_CLASSES))
    with torch.no_grad():
        conditional = wrapped.sample(4, seed=3, steps=5)
        via_model = wrapped.sample(4, seed=3, steps=5, guidance=1.0)
        explicit = wrapped.sample(4, seed=3, steps=5, cond={"class_labels": y})
    assert torch.equal(conditional, via_model) and torch.equal(conditional, explicit)
    assert wrapped.conditioning.resolve(4, None)["class_labels"].tolist() == y.tolist()
    guided_out = wrapped.sample(4, seed=3, steps=5, guidance=2.0)
    assert not torch.equal(guided_out, conditional)


def test_guidance_needs_a_null_label():
    process = difflab.GaussianDiffusion()

    def bare(z, t, class_labels=None):
        return z

    with pytest.raises(ConfigError, match="null_label"):
        difflab.sample(bare, process, (2, 1, 4, 4), steps=2, cond={"class_labels": torch.zeros(2, dtype=torch.long)},
                       guidance=2.0)
    out = difflab.sample(bare, process, (2, 1, 4, 4), steps=2, cond={"class_labels": torch.zeros(2, dtype=torch.long)},
                         guidance=2.0, null_label=10)
    assert out.shape == (2, 1, 4, 4)


def test_class_labels_helper():
    assert class_labels(2, 3, null_label=NUM_CLASSES).tolist() == [2, 2, 2]
    assert class_labels([0, 1], 5, null_label=NUM_CLASSES).tolist() == [0, 1, 0, 1, 0]
    with pytest.raises(ConfigError, match=r"\[0, 2\]"):
        class_labels(3, 2, null_label=NUM_CLASSES)  # 3 is the null label, not a class
    with pytest.raises(ConfigError, match="no class"):
        class_labels([], 2, null_label=NUM_CLASSES)


# --- difflab sample --class / --guidance -----------------------------------------------------------
def _train_tiny(tmp_path, *extra: str):
    from difflab.training import Trainer, load_config

    tiny = ["network.base_channels=16", "optim.batch_size=16", "optim.steps=2", "optim.warmup_steps=1",
            "run.progress=false", "run.sample.steps=3", "run.sample.num=4", f"run.out_dir={tmp_path / 'run'}"]
    Trainer(load_config(None, [*tiny, *extra])).train()
    return tmp_path / "run"


def test_cli_class_and_guidance(tmp_path, capsys):
    import numpy as np

    from difflab.cli.main import main

    run = _train_tiny(tmp_path, "network.num_classes=10", "objective.cond_drop_prob=0.2")
    common = ["sample", "--checkpoint", str(run), "--num", "6", "--steps", "3", "--sampler", "dpmpp_2m"]

    def npz(name: str, *flags: str) -> dict:
        assert main([*common, "--out", str(tmp_path / f"{name}.png"), "--npz", str(tmp_path / f"{name}.npz"),
                     *flags]) == 0
        return dict(np.load(tmp_path / f"{name}.npz"))

    plain, w1, threes, guided3 = npz("plain"), npz("w1", "--guidance", "1"), npz("c3", "--class", "3"), \
        npz("g3", "--class", "3", "--guidance", "2.5")
    assert np.array_equal(plain["images"], w1["images"]) and np.array_equal(plain["labels"], w1["labels"])
    assert threes["labels"].tolist() == [3] * 6 and guided3["labels"].tolist() == [3] * 6
    assert not np.array_equal(threes["images"], guided3["images"])


def test_cli_guidance_needs_a_conditional_model(tmp_path, capsys):
    from difflab.cli.main import main

    run = _train_tiny(tmp_path)
    assert main(["sample", "--checkpoint", str(run), "--num", "2", "--steps", "2", "--guidance", "2",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "class-conditional" in capsys.readouterr().err
