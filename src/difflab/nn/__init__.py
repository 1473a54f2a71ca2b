"""Networks. Denoisers (UNet, MLP, ViT) are plain ``nn.Module``s ``forward(x, t, class_labels=None) -> x's shape``;
``ConvVAE`` (a VAE's encoder and decoder), ``Glow`` (a normalizing flow) and ``GatedPixelCNN`` (an
autoregressive network) and ``DCGAN`` (a generator and a discriminator) and ``VQVAE`` (a VQ autoencoder and
its code prior) and ``DDGANNetwork`` (a denoising diffusion GAN's generator and discriminator) and
``LSGMNetwork`` (an LSGM's VAE and latent score network) serve their families.

t is a float in [0, 1] per sample, shape (B,). The networks know nothing of diffusion
processes; what the output means (eps, x_0, v, ...) is the objective's choice. With
``num_classes`` set, label ``num_classes`` is the "null" label (unconditional) used for
classifier-free guidance, and ``class_labels=None`` means all-null.

Build from a config dict with ``build_network(kind, **fields)`` / ``network_from_dict``, save
the architecture with ``config_to_dict(net.config)``.
"""

from difflab.nn.autoencoder import AutoencoderConfig, ConvAutoencoder, fit_autoencoder
from difflab.nn.build import (
    DENOISER_CONFIGS,
    NETWORK_KINDS,
    NetworkConfig,
    NetworkKind,
    build_network,
    config_from_dict,
    config_to_dict,
    count_parameters,
    make_config,
    network_from_config,
    network_from_dict,
)
from difflab.nn.ddgan import DDGANConfig, DDGANNetwork
from difflab.nn.embeddings import ClassEmbedding, TimeEmbedding, timestep_embedding
from difflab.nn.flow import Glow, GlowConfig
from difflab.nn.gan import DCGAN, DCGANConfig
from difflab.nn.lsgm import LSGMConfig, LSGMNetwork
from difflab.nn.mlp import MLP, MLPConfig
from difflab.nn.pixelcnn import GatedPixelCNN, PixelCNNConfig
from difflab.nn.unet import AttentionBlock, ResBlock, UNet, UNetConfig
from difflab.nn.vae import ConvVAE, ConvVAEConfig
from difflab.nn.vit import ViT, ViTConfig
from difflab.nn.vqvae import VQVAE, VQVAEConfig

__all__ = [
    "DENOISER_CONFIGS",
    "MLP",
    "NETWORK_KINDS",
    "AttentionBlock",
    "AutoencoderConfig",
    "ClassEmbedding",
    "ConvAutoencoder",
    "ConvVAE",
    "ConvVAEConfig",
    "DCGAN",
    "DCGANConfig",
    "DDGANConfig",
    "DDGANNetwork",
    "LSGMConfig",
    "LSGMNetwork",
    "GatedPixelCNN",
    "Glow",
    "GlowConfig",
    "MLPConfig",
    "NetworkConfig",
    "NetworkKind",
    "PixelCNNConfig",
    "ResBlock",
    "TimeEmbedding",
    "UNet",
    "UNetConfig",
    "ViT",
    "ViTConfig",
    "VQVAE",
    "VQVAEConfig",
    "build_network",
    "config_from_dict",
    "config_to_dict",
    "count_parameters",
    "fit_autoencoder",
    "make_config",
    "network_from_config",
    "network_from_dict",
    "timestep_embedding",
]
