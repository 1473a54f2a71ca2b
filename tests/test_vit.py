"""DiT-style ViT encoder-decoder: shapes, adaLN-Zero identity at init, conditioning, build round trip."""

from __future__ import annotations

import pytest
import torch

from difflab.errors import ConfigError
from difflab.nn import ViT, ViTConfig, build_network, config_to_dict, network_from_dict
from difflab.nn.vit import sincos_position_embedding


def small(**kw) -> ViT:
    torch.manual_seed(0)
    return ViT(ViTConfig(**{"in_channels": 3, "patch_size": 4, "dim": 32, "encoder_depth": 2,
                            "decoder_depth": 1, "num_heads": 4, **kw}))


def test_output_has_input_shape_on_non_square_images_and_is_zero_at_init():
    net = small()
    x, t = torch.randn(2, 3, 8, 12), torch.rand(2)
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised final layer (DiT)
    assert small(out_channels=1)(x, t).shape == (2, 1, 8, 12)


def test_blocks_are_the_identity_at_init_and_encoder_tokens_have_grid_length():
    net = small()
    x, t = torch.randn(2, 3, 8, 12), torch.rand(2)
    tokens, grid = net.tokens(x)
    assert grid == (2, 3) and tokens.shape == (2, 6, 32)
    assert torch.allclose(net.encode(x, t), tokens)  # adaLN-Zero gates start at 0


def test_training_steps_fit_a_denoising_target_and_make_time_matter():
    net = small(in_channels=1, decoder_depth=2)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 1, 8, 8, generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        t = torch.rand(16, generator=g)
        z = x0 + t[:, None, None, None] * torch.randn(x0.shape, generator=g)
        loss = (net(z, t) - x0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    z = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(net(z, torch.zeros(2)), net(z, torch.ones(2)))


def test_class_conditioning_only_when_configured():
    x, t = torch.randn(2, 3, 8, 8), torch.rand(2)
    labels = torch.tensor([0, 3])
    assert small(num_classes=4)(x, t, labels).shape == x.shape
    with pytest.raises(ConfigError, match="unconditional"):
        small()(x, t, labels)


def test_bad_config_and_input_are_config_errors():
    with pytest.raises(ConfigError, match="num_heads"):
        ViTConfig(dim=30, num_heads=4)
    with pytest.raises(ConfigError, match="multiples of patch_size=4"):
        small()(torch.randn(1, 3, 6, 8), torch.rand(1))


def test_build_network_round_trip():
    net = build_network("vit", seed=1, in_channels=1, dim=32, num_heads=2, encoder_depth=1, decoder_depth=1)
    again = network_from_dict(config_to_dict(net.config), seed=1)
    assert config_to_dict(again.config)["kind"] == "vit"
    for (k1, v1), (k2, v2) in zip(net.state_dict().items(), again.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)


def test_position_embedding_is_distinct_per_position():
    pos = sincos_position_embedding(3, 5, 16)
    assert pos.shape == (15, 16)
    assert torch.cdist(pos, pos).add(torch.eye(15)).min() > 1e-3
