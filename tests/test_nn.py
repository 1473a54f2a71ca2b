"""Tests of difflab.nn: shapes, conditioning, attention placement, gradients, config round trips."""

from __future__ import annotations

import json
import math

import pytest
import torch

from difflab.errors import ConfigError
from difflab.nn import (
    MLP,
    AttentionBlock,
    MLPConfig,
    UNet,
    UNetConfig,
    build_network,
    config_from_dict,
    config_to_dict,
    count_parameters,
    network_from_dict,
    timestep_embedding,
)

torch.set_num_threads(1)

SMALL = dict(base_channels=32, head_channels=32, dropout=0.0)


def small_unet(**fields) -> UNet:
    return UNet(UNetConfig(**{**SMALL, **fields}))


def randomize_zero_init(net: torch.nn.Module, seed: int = 0) -> None:
    """Give the zero-initialised layers random weights so every path affects the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def inputs(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.rand(shape[0], generator=g)


# --- time embedding ---------------------------------------------------------------------------


def test_timestep_embedding_closed_form():
    t = torch.tensor([0.0, 0.25, 1.0])
    dim = 8
    emb = timestep_embedding(t, dim, scale=1000.0, max_period=10_000.0)
    for b, tb in enumerate(t.tolist()):
        for i in range(dim // 2):
            angle = 1000.0 * tb * 10_000.0 ** (-i / (dim // 2))
            assert emb[b, i].item() == pytest.approx(math.cos(angle), abs=1e-4)
            assert emb[b, dim // 2 + i].item() == pytest.approx(math.sin(angle), abs=1e-4)


def test_timestep_embedding_odd_dim_pads_zero_column():
    emb = timestep_embedding(torch.rand(4), 7)
    assert emb.shape == (4, 7)
    assert torch.all(emb[:, -1] == 0)


# --- UNet shapes and sizes --------------------------------------------------------------------

UNET_CASES = [
    (dict(in_channels=1, channel_mult=(1, 2), attention_resolutions=(4,), resolution=8), (2, 1, 8, 8)),
    (dict(in_channels=1, channel_mult=(1, 2, 2), attention_resolutions=(14,), resolution=28), (2, 1, 28, 28)),
    (dict(in_channels=3, channel_mult=(1, 2, 2), attention_resolutions=(16,), resolution=32), (2, 3, 32, 32)),
    (dict(in_channels=3, channel_mult=(1, 2, 2), attention_resolutions=(8,), resolution=16), (2, 3, 16, 24)),
]


@pytest.mark.parametrize("fields, shape", UNET_CASES)
def test_unet_output_shape_equals_input_shape(fields, shape):
    net = small_unet(**fields)
    x, t = inputs(shape)
    assert net(x, t).shape == x.shape


def test_unet_256x256_adm_layout():
    """ADM's 256x256 level layout (six levels, attention at 32, 16, 8) with few channels."""
    net = small_unet(
        in_channels=3, base_channels=16, norm_groups=8, head_channels=16, num_res_blocks=1,
        channel_mult=(1, 1, 2, 2, 4, 4), attention_resolutions=(32, 16, 8), resolution=256,
    )
    x, t = inputs((1, 3, 256, 256))
    assert net(x, t).shape == x.shape
    assert net.config.downsample_factor == 32


def test_unet_out_channels_override():
    net = small_unet(in_channels=3, out_channels=6, channel_mult=(1, 2), attention_resolutions=(), resolution=8)
    x, t = inputs((2, 3, 8, 8))
    assert net(x, t).shape == (2, 6, 8, 8)


def test_unet_starts_at_zero_output():
    """The output conv is zero-initialised, so the untrained network predicts exactly zero."""
    net = small_unet(in_channels=1, channel_mult=(1, 2), attention_resolutions=(4,), resolution=8)
    x, t = inputs((3, 1, 8, 8))
    assert torch.all(net(x, t) == 0)


def test_unet_scalar_t_is_broadcast():
    net = small_unet(in_channels=1, channel_mult=(1, 2), attention_resolutions=(), resolution=8)
    randomize_zero_init(net)
    x, _ = inputs((3, 1, 8, 8))
    torch.testing.assert_close(net(x, torch.tensor(0.3)), net(x, torch.full((3,), 0.3)))


def test_unet_accepts_float64_time():
    """Samplers may hand over float64 t; the float32 network gives the float32-t answer."""
    net = small_unet(in_channels=1, channel_mult=(1, 2), attention_resolutions=(), resolution=8)
    randomize_zero_init(net)
    x, t = inputs((3, 1, 8, 8))
    torch.testing.assert_close(net(x, t.double()), net(x, t))


def test_unet_samples_are_independent_in_a_batch():
    """GroupNorm is per sample, so in eval mode sample i's output ignores the rest of the batch."""
    net = small_unet(in_channels=1, channel_mult=(1, 2, 2), attention_resolutions=(14,), resolution=28)
    randomize_zero_init(net)
    net.eval()
    x, t = inputs((3, 1, 28, 28))
    torch.testing.assert_close(net(x, t)[1:2], net(x[1:2], t[1:2]), atol=1e-5, rtol=1e-4)


def test_unet_size_not_divisible_raises_config_error():
    net = small_unet(in_channels=1, channel_mult=(1, 2, 2), attention_resolutions=(), resolution=8)
    x = torch.randn(1, 1, 10, 12)
    with pytest.raises(ConfigError, match="10x12 is not divisible by the downsampling factor 4"):
        net(x, torch.rand(1))


def test_unet_wrong_channel_count_raises_config_error():
    net = small_unet(in_channels=3, channel_mult=(1, 2), attention_resolutions=(), resolution=8)
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\)"):
        net(torch.randn(1, 1, 8, 8), torch.rand(1))


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(attention_resolutions=(12,), resolution=32), "choose from"),
        (dict(base_channels=24, norm_groups=32), "norm_groups"),
        (dict(channel_mult=()), "channel_mult"),
        (dict(head_channels=48), "heads"),
        (dict(head_channels=None, num_heads=48), "heads"),
        (dict(head_channels=None, num_heads=0), "heads"),
        (dict(dropout=1.0), "dropout"),
        (dict(num_classes=0), "num_classes"),
    ],
)
def test_unet_config_rejects_bad_fields(fields, message):
    with pytest.raises(ConfigError, match=message):
        UNetConfig(**{**SMALL, **fields})


# --- attention --------------------------------------------------------------------------------


def attention_input_sizes(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> list[tuple[int, int]]:
    """Spatial size of the feature map entering every AttentionBlock during one forward."""
    sizes: list[tuple[int, int]] = []
    hooks = [
        m.register_forward_pre_hook(lambda _m, args: sizes.append(tuple(args[0].shape[-2:])))
        for m in net.modules()
        if isinstance(m, AttentionBlock)
    ]
    net(x, t)
    for h in hooks:
        h.remove()
    return sizes


def test_attention_runs_at_chosen_resolution_only():
    net = small_unet(in_channels=1, channel_mult=(1, 2, 2), num_res_blocks=2, attention_resolutions=(14,), resolution=28)
    x, t = inputs((1, 1, 28, 28))
    sizes = attention_input_sizes(net, x, t)
    # level 1 (14x14): 2 blocks down + 3 blocks up; middle (7x7): 1 block; none at 28x28.
    assert sizes.count((14, 14)) == 5
    assert sizes.count((7, 7)) == 1
    assert len(sizes) == 6


def test_attention_on_non_square_maps():
    net = small_unet(in_channels=3, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(8,), resolution=16)
    x, t = inputs((1, 3, 16, 24))
    assert set(attention_input_sizes(net, x, t)) == {(8, 12), (4, 6)}


def test_attention_heads_follow_head_channels():
    net = small_unet(in_channels=1, channel_mult=(1, 2), attention_resolutions=(8,), resolution=8, head_channels=16)
    heads = {m.norm.num_channels: m.num_heads for m in net.modules() if isinstance(m, AttentionBlock)}
    assert heads == {32: 2, 64: 4}


def test_attention_heads_follow_num_heads_without_head_channels():
    net = small_unet(in_channels=1, channel_mult=(1, 2), attention_resolutions=(8,), resolution=8, head_channels=None, num_heads=8)
    assert {m.num_heads for m in net.modules() if isinstance(m, AttentionBlock)} == {8}
    x, t = inputs((1, 1, 8, 8))
    assert net(x, t).shape == x.shape


def test_attention_block_matches_explicit_softmax_attention():
    torch.manual_seed(0)
    block = AttentionBlock(channels=8, num_heads=2, groups=4)
    randomize_zero_init(block)
    x = torch.randn(2, 8, 3, 5)
    B, C, H, W = x.shape
    d = C // 2
    h = block.norm(x).reshape(B, C, H * W).transpose(1, 2)  # (B, HW, C)
    q, k, v = block.qkv(h).split(C, dim=-1)  # each (B, HW, C), heads are blocks of d channels
    out = []
    for head in range(2):
        qh, kh, vh = (a[..., head * d : (head + 1) * d] for a in (q, k, v))
        weights = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(d), dim=-1)  # (B, HW, HW)
        out.append(weights @ vh)
    h = block.proj(torch.cat(out, dim=-1))  # (B, HW, C)
    expected = x + h.transpose(1, 2).reshape(B, C, H, W)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


# --- class conditioning -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_class_conditioning_changes_output_and_null_label_is_default(kind):
    if kind == "unet":
        net = small_unet(in_channels=1, channel_mult=(1, 2), attention_resolutions=(4,), resolution=8, num_classes=10)
        x, t = inputs((4, 1, 8, 8))
    else:
        net = MLP(MLPConfig(in_features=64, hidden_features=64, num_classes=10))
        x, t = inputs((4, 64))
    randomize_zero_init(net)
    y3 = net(x, t, torch.full((4,), 3))
    y7 = net(x, t, torch.full((4,), 7))
    y_null = net(x, t, torch.full((4,), 10))
    assert not torch.allclose(y3, y7)
    assert not torch.allclose(y3, y_null)
    torch.testing.assert_close(net(x, t, None), y_null)


def test_class_labels_out_of_range_raise_config_error():
    net = small_unet(in_channels=1, channel_mult=(1, 2), attention_resolutions=(), resolution=8, num_classes=10)
    x, t = inputs((2, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"\[0, 10\]"):
        net(x, t, torch.tensor([0, 11]))


def test_class_labels_on_unconditional_net_raise_config_error():
    net = small_unet(in_channels=1, channel_mult=(1, 2), attention_resolutions=(), resolution=8)
    x, t = inputs((2, 1, 8, 8))
    with pytest.raises(ConfigError, match="unconditional"):
        net(x, t, torch.tensor([0, 1]))


# --- gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_gradients_reach_every_parameter_after_one_step(kind):
    """Zero-initialised layers block gradients to what lies before them: at init only the
    output conv gets a gradient, after one step also the residual branches' last layers, and
    after two optimiser steps every parameter (including time and class embeddings) gets one."""
    if kind == "unet":
        net = small_unet(in_channels=1, channel_mult=(1, 2), attention_resolutions=(4,), resolution=8, num_classes=3)
        x, t = inputs((4, 1, 8, 8))
    else:
        net = MLP(MLPConfig(in_features=2, hidden_features=32, num_classes=3))
        x, t = inputs((4, 2))
    labels = torch.tensor([0, 1, 2, 3])  # includes the null label
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def grads() -> dict[str, torch.Tensor | None]:
        opt.zero_grad()
        (net(x, t, labels) - x).square().mean().backward()
        return {n: p.grad for n, p in net.named_parameters()}

    def dead() -> list[str]:
        return [n for n, g in grads().items() if g is None or g.abs().sum() == 0]

    assert "head.2.weight" not in dead()
    opt.step()
    zero_init_layers = {"conv2", "fc2", "proj"}  # residual branches' last layers
    assert not [n for n in dead() if n.split(".")[-2] in zero_init_layers]
    opt.step()
    assert dead() == []


# --- configs, building, determinism -----------------------------------------------------------


@pytest.mark.parametrize(
    "kind, fields",
    [
        ("unet", dict(in_channels=1, base_channels=32, channel_mult=(1, 2), attention_resolutions=(4,), resolution=8, num_classes=10)),
        ("mlp", dict(in_features=2, hidden_features=32, num_blocks=2, num_classes=5)),
    ],
)
def test_config_dict_round_trip_rebuilds_same_architecture(kind, fields):
    net = build_network(kind, seed=0, **fields)
    saved = json.loads(json.dumps(config_to_dict(net.config)))  # tuples -> lists, as on disk
    assert saved["kind"] == kind
    assert config_from_dict(saved) == net.config
    rebuilt = network_from_dict(saved, seed=1)
    assert type(rebuilt) is type(net)
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    rebuilt.load_state_dict(net.state_dict())  # strict: same keys and shapes
    assert count_parameters(rebuilt) == count_parameters(net)


def test_build_network_rejects_unknown_kind_and_fields():
    with pytest.raises(ConfigError, match="'unet', 'mlp'"):
        build_network("transformer")
    with pytest.raises(ConfigError, match="channel_multiplier"):
        build_network("unet", channel_multiplier=(1, 2))
    with pytest.raises(ConfigError, match="kind"):
        config_from_dict({"in_features": 2})


def test_seeded_build_is_deterministic_and_leaves_global_rng_alone():
    fields = dict(in_channels=1, base_channels=32, channel_mult=(1, 2), attention_resolutions=(4,), resolution=8, dropout=0.0)
    state = torch.get_rng_state()
    a, b, c = (build_network("unet", seed=s, **fields) for s in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), state)
    x, t = inputs((2, 1, 8, 8))
    for net in (a, b, c):
        randomize_zero_init(net)
    assert torch.equal(a(x, t), b(x, t))
    assert not torch.allclose(a(x, t), c(x, t))


def test_count_parameters_matches_hand_count_for_mlp():
    net = MLP(MLPConfig(in_features=2, hidden_features=8, num_blocks=1, time_embed_dim=4))
    d, w, e = 2, 8, 4
    time_mlp = (e * w + w) + (w * w + w)
    block = 2 * w + (w * 2 * w + 2 * w) + 2 * (w * w + w)
    expected = time_mlp + (d * w + w) + block + 2 * w + (w * d + d)
    assert count_parameters(net) == expected
    net.stem.weight.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == expected - d * w


# --- MLP --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 2), (5, 1, 8, 8)])
def test_mlp_output_shape_equals_input_shape(shape):
    net = MLP(MLPConfig(in_features=math.prod(shape[1:]), hidden_features=32))
    x, t = inputs(shape)
    assert net(x, t).shape == x.shape


def test_mlp_wrong_feature_count_raises_config_error():
    net = MLP(MLPConfig(in_features=3))
    with pytest.raises(ConfigError, match="in_features"):
        net(torch.randn(4, 2), torch.rand(4))
