"""Issue 12: each speed option gives the plain path's loss on a fixed batch, and an option the
device lacks falls back to the plain path with a one-line warning (never a crash).

Compilation is tested on one residual block (compiling a whole UNet takes minutes on a CPU).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from difflab.models.diffusion import DiffusionModel
from difflab.nn import ResBlock, UNet, UNetConfig, speed
from difflab.processes import GaussianDiffusion


def tiny_model() -> DiffusionModel:
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                          attention_resolutions=(4,), dropout=0.0, resolution=8, norm_groups=8,
                          head_channels=16))
    return DiffusionModel.wrap(net, GaussianDiffusion(), (1, 8, 8))


def fixed_loss(model: DiffusionModel, x: torch.Tensor) -> torch.Tensor:
    losses = model.losses((x, None), torch.Generator().manual_seed(1))
    return sum(v.float().mean() for v in losses.values())


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)


def caught_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in caught]


def test_channels_last_gives_the_same_loss_and_gradients(batch):
    plain, fast = tiny_model(), speed.to_channels_last(tiny_model())
    assert fast.network.stem.weight.is_contiguous(memory_format=torch.channels_last)
    loss_a, loss_b = fixed_loss(plain, batch), fixed_loss(fast, batch.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)  # only the summation order differs
    loss_a.backward()
    loss_b.backward()
    for pa, pb in zip(plain.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_loss_is_within_bf16_precision_of_fp32(batch):
    model = tiny_model()
    loss_fp32 = fixed_loss(model, batch)
    with speed.autocast(torch.device("cpu"), "bf16"):
        loss_bf16 = fixed_loss(model, batch)
    # bf16 keeps 8 bits of mantissa (relative step 2^-8 ~ 0.4%); errors of a few steps add up through the UNet
    assert abs(loss_bf16.item() - loss_fp32.item()) <= 0.03 * loss_fp32.item()
    with speed.autocast(torch.device("cpu"), "no"):
        assert torch.equal(fixed_loss(model, batch), loss_fp32)


def test_compiled_residual_block_matches_eager():
    torch.manual_seed(0)
    block = ResBlock(16, 16, emb_dim=32, dropout=0.0, groups=8)
    eager = ResBlock(16, 16, emb_dim=32, dropout=0.0, groups=8)
    eager.load_state_dict(block.state_dict())
    x, emb = torch.randn(4, 16, 8, 8), torch.randn(4, 32)

    def step(module):
        out = module(x, emb)
        out.square().mean().backward()
        return out.detach()

    assert speed.compile_in_place(block, lambda: step(block), what="residual block")
    keys_before = set(eager.state_dict())
    assert set(block.state_dict()) == keys_before  # compiled in place: checkpoints keep their keys
    block.zero_grad()
    torch.testing.assert_close(step(block), step(eager), rtol=1e-5, atol=1e-5)
    for pa, pb in zip(block.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-5)


def test_a_failing_compiler_falls_back_to_eager_with_one_warning():
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler found\nsecond line")

    block = ResBlock(16, 16, emb_dim=32, dropout=0.0, groups=8)
    x, emb = torch.randn(2, 16, 8, 8), torch.randn(2, 32)
    ok, messages = caught_warnings(lambda: speed.compile_in_place(block, lambda: block(x, emb), backend=broken_backend))
    assert not ok and block._compiled_call_impl is None
    assert len(messages) == 1 and "no C++ compiler found" in messages[0] and "\n" not in messages[0]
    assert block(x, emb).shape == x.shape  # the eager path works


def test_precision_resolution_per_device(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(speed, "native_bf16", lambda device: False)
    assert speed.resolve_precision("auto", cpu) == "no"
    for requested in ("bf16", "fp16"):
        resolved, messages = caught_warnings(lambda r=requested: speed.resolve_precision(r, cpu))
        assert resolved == "no" and len(messages) == 1 and "\n" not in messages[0] and "fp32" in messages[0]
    monkeypatch.setattr(speed, "native_bf16", lambda device: True)
    assert speed.resolve_precision("auto", cpu) == "bf16" and speed.resolve_precision("bf16", cpu) == "bf16"
    assert speed.resolve_precision("no", cpu) == "no"
    assert speed.resolve_channels_last(None, cpu) is False and speed.resolve_channels_last(None, torch.device("cuda"))
    from difflab.errors import ConfigError

    with pytest.raises(ConfigError, match="choose one of"):
        speed.resolve_precision("fp8", cpu)


def test_trainer_reports_the_speed_settings_it_used(tmp_path):
    from difflab.training import Trainer, load_config

    config = load_config(None, ["network.base_channels=16", "optim.batch_size=16", "optim.steps=2",
                                "run.progress=false", "run.sample.steps=2", "run.sample.num=4",
                                "run.channels_last=true", f"run.out_dir={tmp_path}"])
    summary = Trainer(config).train()
    assert summary["speed"].channels_last and summary["speed"].precision == "no" and summary["speed"].compiled == ()
    assert summary["steps"] == 2


def test_bf16_on_a_cpu_without_bf16_units_trains_in_fp32_with_a_warning(monkeypatch):
    from difflab.training.device import make_accelerator

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setattr(speed, "native_bf16", lambda device: False)
    accelerator, messages = caught_warnings(lambda: make_accelerator("bf16"))
    assert accelerator.mixed_precision == "no"
    assert len(messages) == 1 and "no bf16 units" in messages[0] and "\n" not in messages[0]


def test_dataset_moves_to_a_device_unchanged():
    from difflab.data import load_dataset

    data = load_dataset("digits", split="test")
    moved = data.to("cpu")
    idx = torch.tensor([3, 1, 4])
    assert torch.equal(moved.batch(idx)[0], data.batch(idx)[0]) and torch.equal(moved.batch(idx)[1], data.batch(idx)[1])
    assert moved.num_levels == data.num_levels and moved.name == data.name


def test_the_trainers_fused_adamw_matches_the_for_loop_update():
    from difflab.training.optimizer import adamw

    torch.manual_seed(0)
    nets = [tiny_model().network for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    fused = adamw([{"params": list(nets[0].parameters())}], torch.device("cpu"), lr=1e-3, betas=(0.9, 0.999),
                  weight_decay=0.01)
    plain = torch.optim.AdamW(nets[1].parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01)
    assert fused.defaults["fused"] is True
    for step in range(3):
        grads = [torch.randn_like(p, generator=torch.Generator().manual_seed(step * 1000 + i))
                 for i, p in enumerate(nets[0].parameters())]
        for net, opt in ((nets[0], fused), (nets[1], plain)):
            for p, g in zip(net.parameters(), grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
