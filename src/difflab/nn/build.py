"""Build a network from a plain config dict, and export its config so it can be rebuilt.

Training saves ``config_to_dict(net.config)`` (plain ints, floats, lists, None, and a ``kind``
key) next to the weights; ``network_from_dict`` rebuilds the exact architecture, so the saved
state_dict loads with matching keys and shapes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, get_args

import torch
from torch import nn

from difflab.errors import ConfigError, check_choice
from difflab.nn.ddgan import DDGANConfig, DDGANNetwork
from difflab.nn.flow import Glow, GlowConfig
from difflab.nn.gan import DCGAN, DCGANConfig
from difflab.nn.lsgm import LSGMConfig, LSGMNetwork
from difflab.nn.mlp import MLP, MLPConfig
from difflab.nn.pixelcnn import GatedPixelCNN, PixelCNNConfig
from difflab.nn.unet import UNet, UNetConfig
from difflab.nn.vae import ConvVAE, ConvVAEConfig
from difflab.nn.vit import ViT, ViTConfig
from difflab.nn.vqvae import VQVAE, VQVAEConfig

NetworkKind = Literal["unet", "mlp", "vit", "vae", "glow", "pixelcnn", "dcgan", "vqvae", "ddgan", "lsgm"]
NETWORK_KINDS: tuple[str, ...] = get_args(NetworkKind)
NetworkConfig = UNetConfig | MLPConfig | ViTConfig | ConvVAEConfig | GlowConfig | PixelCNNConfig | DCGANConfig \
    | VQVAEConfig | DDGANConfig | LSGMConfig
NETWORK_CLASSES: dict[str, tuple[type, type[nn.Module]]] = {
    "unet": (UNetConfig, UNet), "mlp": (MLPConfig, MLP), "vit": (ViTConfig, ViT),  # denoisers
    "vae": (ConvVAEConfig, ConvVAE), "glow": (GlowConfig, Glow),  # a VAE's encoder/decoder; a flow
    "pixelcnn": (PixelCNNConfig, GatedPixelCNN),  # an autoregressive network
    "dcgan": (DCGANConfig, DCGAN),  # a GAN's generator and discriminator
    "vqvae": (VQVAEConfig, VQVAE),  # a VQ autoencoder and the PixelCNN prior over its codes
    "ddgan": (DDGANConfig, DDGANNetwork),  # a denoising diffusion GAN's G(x_t, z, t) and D(x_s, x_t, t)
    "lsgm": (LSGMConfig, LSGMNetwork),  # an LSGM's VAE and the score network of its latent prior
}
DENOISER_CONFIGS = (UNetConfig, MLPConfig, ViTConfig)  # networks ``net(x, t, **cond) -> x's shape``


def make_config(kind: NetworkKind, **fields: Any) -> NetworkConfig:
    """Validated config of a ``kind`` network from keyword fields (missing fields get defaults)."""
    check_choice("network kind", kind, NETWORK_KINDS)
    config_class = NETWORK_CLASSES[kind][0]
    allowed = [f.name for f in dataclasses.fields(config_class)]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown {kind} network option(s) {unknown}; allowed options: {', '.join(allowed)}"
        )
    return config_class(**fields)


def network_from_config(config: NetworkConfig, seed: int | None = None) -> nn.Module:
    """Instantiate the network described by ``config``.

    With ``seed`` the initial weights are a deterministic function of it, drawn from a forked
    CPU generator so the caller's global RNG state is left untouched.
    """
    network_class = NETWORK_CLASSES[config_kind(config)][1]
    if seed is None:
        return network_class(config)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return network_class(config)


def build_network(kind: NetworkKind, *, seed: int | None = None, **fields: Any) -> nn.Module:
    """Build a ``"unet"`` or ``"mlp"`` network from its config fields, e.g.
    ``build_network("unet", in_channels=1, channel_mult=(1, 2), resolution=8)``."""
    return network_from_config(make_config(kind, **fields), seed=seed)


def config_kind(config: NetworkConfig) -> NetworkKind:
    """The ``kind`` string of a network config (its exact class: ``LSGMConfig`` extends ``ConvVAEConfig``)."""
    return next(k for k, (cls, _) in NETWORK_CLASSES.items() if type(config) is cls)  # type: ignore[return-value]


def config_to_dict(config: NetworkConfig) -> dict[str, Any]:
    """Plain dict ``{"kind": ..., **fields}`` of a config (tuples stay tuples; JSON/YAML-safe)."""
    return {"kind": config_kind(config), **dataclasses.asdict(config)}


def config_from_dict(data: Mapping[str, Any]) -> NetworkConfig:
    """Inverse of ``config_to_dict``; lists (as read from JSON/YAML) become tuples."""
    fields = dict(data)
    if "kind" not in fields:
        raise ConfigError(
            f"network config has no 'kind' key; add kind: one of {', '.join(NETWORK_KINDS)}"
        )
    return make_config(fields.pop("kind"), **fields)


def network_from_dict(data: Mapping[str, Any], seed: int | None = None) -> nn.Module:
    """Rebuild a network from ``config_to_dict`` output (e.g. loaded next to its weights)."""
    return network_from_config(config_from_dict(data), seed=seed)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (only those with requires_grad if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
