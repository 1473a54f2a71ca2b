"""Trained generative models: one protocol for every family, saved as one self-contained artefact.

- ``GenerativeModel``: the protocol (``losses``, ``sample``, ``nll``, ``config``, fitted state);
- ``DiffusionModel`` (denoiser + diagonal Gaussian process), ``IHDMModel`` (inverse heat
  dissipation) and ``LatentDiffusionModel`` (a tokenizer + diffusion in its latent: LDM, l-DAE),
  ``VAEModel`` (VAE, beta-VAE), ``FlowModel`` (RealNVP/Glow), ``PixelCNNModel`` (gated
  PixelCNN), ``GANModel`` (DCGAN + R1), ``VQVAEModel`` (VQ-VAE + PixelCNN prior),
  ``CLDModel`` (critically-damped Langevin diffusion), ``DDGANModel`` (denoising diffusion
  GAN) and ``LSGMModel`` (a VAE with a latent diffusion prior), listed by name in ``FAMILIES``;
- ``Conditioning``: conditioning inputs, their null version for guidance, and label dropping;
- ``save_model`` / ``load_model``: the model directory (config JSON + safetensors), which every
  read-only command loads without the trainer.
"""

from difflab.models.artefact import (
    FAMILIES,
    build_model,
    load_model,
    model_dir,
    resolve_checkpoint,
    save_model,
)
from difflab.models.autoregressive import PixelCNNModel
from difflab.models.base import Batch, GenerativeModel, UnsupportedMetric, model_device
from difflab.models.cld import CLDModel, CLDOptions
from difflab.models.conditioning import ClassLabels, Conditioning
from difflab.models.ddgan import DDGANModel, DDGANOptions
from difflab.models.diffusion import DiffusionModel
from difflab.models.flow import FlowModel, FlowOptions
from difflab.models.gan import GANModel, GANOptions
from difflab.models.ihdm import IHDMModel
from difflab.models.latent import LatentDiffusionModel
from difflab.models.lsgm import LSGMModel, LSGMOptions
from difflab.models.vae import VAEModel, VAEOptions
from difflab.models.vqvae import VQVAEModel

__all__ = [
    "FAMILIES",
    "Batch",
    "CLDModel",
    "CLDOptions",
    "ClassLabels",
    "Conditioning",
    "DDGANModel",
    "DDGANOptions",
    "DiffusionModel",
    "FlowModel",
    "FlowOptions",
    "GANModel",
    "GANOptions",
    "GenerativeModel",
    "IHDMModel",
    "LatentDiffusionModel",
    "LSGMModel",
    "LSGMOptions",
    "PixelCNNModel",
    "UnsupportedMetric",
    "VAEModel",
    "VAEOptions",
    "VQVAEModel",
    "build_model",
    "load_model",
    "model_device",
    "model_dir",
    "resolve_checkpoint",
    "save_model",
]
