"""``LatentDiffusionModel``: a tokenizer plus a diffusion model in its latent space.

Two recipes share it:

- **latent diffusion** (Rombach et al. 2022, Sec. 3.3), ``loss="diffusion"``: the images are
  encoded once, u_0 = E(x_0) (B, d, h, w), and a denoiser is trained on
  u_t = alpha_t u_0 + sigma_t eps exactly as in pixel space (eps / x0 / v, any weighting);
  samples are drawn in the latent and decoded, x = D(u_0).
- **l-DAE** (Chen, Liu, Xie & He 2024, Secs. 4.3-4.4), ``loss="ldae"``: the same noise in a
  patch-PCA latent, but the network predicts clean data, in the ``space`` of their Tab. 3
  (``objectives.ldae_loss``). Seen from the latent it is an x0-denoiser,
  u_0_hat = E(net(D(u_t), t)) for image input, so every sampler of the core draws from it.

The tokenizer is the model's fitted state, not a trained parameter: ``fit`` fits a patch-PCA
on the training images or trains an autoencoder as a first stage (``fit_options``: images,
steps, batch_size, lr, seed), or loads one saved with ``save_tokenizer`` (``path``); its
tensors are saved in ``fitted.safetensors``, outside the optimizer and the EMA. A lossy
tokenizer gives no likelihood of the pixels, so ``nll`` raises ``UnsupportedMetric``; and since
latents are not images in [-1, 1], sampling never clips them (``clip_x0`` does not apply).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from difflab.errors import CheckpointError, ConfigError, check_choice
from difflab.models.base import UnsupportedMetric, first_images
from difflab.models.conditioning import Conditioning
from difflab.models.diffusion import DiffusionModel
from difflab.nn import network_from_dict
from difflab.objectives import LDAE_SPACES, diffusion_loss, ldae_loss
from difflab.processes import (
    DiagonalGaussianProcess,
    LatentDiffusion,
    Tokenizer,
    build_process,
)
from difflab.tokenizers import (
    PatchPCA,
    load_tokenizer,
    tokenizer_from_saved,
    unfitted_tokenizer,
)

LOSSES = ("diffusion", "ldae")
FIT_DEFAULTS: dict[str, Any] = {"images": 0, "steps": 1000, "batch_size": 64, "lr": 2e-3, "seed": 0, "path": None}
PCA_KEYS = ("patch_size", "components", "whiten")
AE_KEYS = ("latent_channels", "levels", "base_channels", "kl_weight")


def tokenizer_spec(section: dict[str, Any], channels: int) -> dict[str, Any]:
    """``{"kind", **config}`` of the tokenizer a training config's ``tokenizer`` section describes."""
    kind = section["kind"]
    if kind == PatchPCA.kind:
        return {"kind": kind, **{k: section[k] for k in PCA_KEYS}, "eps": 1e-6}
    vq = {"codebook_size": section["codebook_size"], "commitment": section["commitment"]} if kind == "vq_vae" else {}
    return {"kind": kind, "in_channels": channels, **{k: section[k] for k in AE_KEYS}, "variational": kind == "kl_vae",
            **vq}


class ImageSpaceDenoiser:
    """u_t -> E(net(D(u_t), t)): l-DAE's image-space clean-data predictor (Chen et al. 2024,
    Sec. 4.4: input D(u_t), output x_0) seen from the latent, i.e. an x0-denoiser of u_t."""

    def __init__(self, network: Callable[..., torch.Tensor], tokenizer: Tokenizer) -> None:
        self.network, self.tokenizer = network, tokenizer

    def __call__(self, u_t: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        return self.tokenizer.encode(self.network(self.tokenizer.decode(u_t), t, **cond))


class LatentDiffusionModel(DiffusionModel):
    """A denoiser trained in ``tokenizer``'s latent (see the module docstring).

    Args:
        network: ``network(input, t, **cond)``; input u_t (B, d, h, w), or D(u_t) (B, C, H, W) for
            ``loss="ldae"`` with ``space`` "image" or "inverse_pca".
        process: the process on latents (identity basis: gaussian, dae ...).
        image_shape: (C, H, W) of the images.
        tokenizer: fitted, or a placeholder (``unfitted_tokenizer``) that ``fit`` replaces.
        loss, space, residual_weight: the objective (``objectives.ldae_loss`` for "ldae").
        fit_options: how ``fit`` gets the tokenizer (``FIT_DEFAULTS``).
        fitted: whether ``tokenizer`` is already fitted.
        **diffusion: prediction, weighting, conditioning ... as for ``DiffusionModel``.
    """

    family: ClassVar[str] = "latent"
    fitted_description: ClassVar[str] = "the fitted tokenizer (patch-PCA or trained autoencoder)"
    has_likelihood: ClassVar[bool] = False
    state_is_image: ClassVar[bool] = False  # latents are not images in [-1, 1]: never clipped

    def __init__(self, network: Any, process: DiagonalGaussianProcess, image_shape: tuple[int, ...],
                 tokenizer: Tokenizer, *, loss: str = "diffusion", space: str = "image",
                 residual_weight: float = 0.1, fit_options: dict[str, Any] | None = None,
                 fitted: bool = True, **diffusion: Any) -> None:
        check_choice("loss", loss, LOSSES)
        check_choice("space", space, LDAE_SPACES)
        super().__init__(network, LatentDiffusion(process, tokenizer), image_shape, **diffusion)
        unknown = sorted(set(fit_options or {}) - set(FIT_DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown tokenizer fit option(s) {unknown}; allowed: {sorted(FIT_DEFAULTS)}")
        self.loss_kind, self.space, self.residual_weight = loss, space, residual_weight
        self.fit_options = {**FIT_DEFAULTS, **(fit_options or {})}
        self.fitted = fitted

    @property
    def tokenizer(self) -> Tokenizer:
        return self.process.tokenizer  # type: ignore[attr-defined,no-any-return]

    @property
    def latent_process(self) -> DiagonalGaussianProcess:
        """The process the latents follow (``process`` is it wrapped with the tokenizer)."""
        return self.process.process  # type: ignore[attr-defined,no-any-return]

    @property
    def image_input(self) -> bool:
        """Whether the network sees images D(u_t) (l-DAE's "image" and "inverse_pca") or latents u_t."""
        return self.loss_kind == "ldae" and self.space != "latent"

    # --- where the process runs ------------------------------------------------------------
    def state_shape(self, n: int) -> tuple[int, ...]:
        return self.tokenizer.latent_shape((n, *self.image_shape))

    def network_shape(self) -> tuple[int, ...]:
        return self.image_shape if self.image_input else self.state_shape(1)[1:]

    @property
    def denoiser(self) -> Any:
        return ImageSpaceDenoiser(self.network, self.tokenizer) if self.image_input else self.network

    @property
    def sample_prediction(self) -> str:
        return "x0" if self.loss_kind == "ldae" else self.prediction

    def to_image(self, z: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode(z)

    def network_input(self, x0: torch.Tensor, t: torch.Tensor, *, clean: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """u_t (or D(u_t) for image input) of images ``x0``; ``clean``: E(x0) (or x0 itself)."""
        if clean:
            return x0 if self.image_input else self.tokenizer.encode(x0)
        u_t = super().network_input(self.tokenizer.encode(x0), t, generator=generator)
        return self.tokenizer.decode(u_t) if self.image_input else u_t

    # --- training ------------------------------------------------------------------------------
    def loss(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             cond: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """Per-example loss of images ``x0``; ``noise`` has the latent shape."""
        if self.loss_kind == "ldae":
            return ldae_loss(self.network, self.process, self.tokenizer, x0, space=self.space,  # type: ignore[arg-type]
                             weighting=self.weighting, residual_weight=self.residual_weight,  # type: ignore[arg-type]
                             t=t, noise=noise, cond=cond)
        with torch.no_grad():
            u_0 = self.tokenizer.encode(x0)  # (B, d, h, w)
        return diffusion_loss(self.network, self.process, u_0, prediction=self.prediction,  # type: ignore[arg-type]
                              weighting=self.weighting, gamma=self.gamma, t=t, noise=noise, cond=cond)  # type: ignore[arg-type]

    def fit(self, batches: Iterable[torch.Tensor]) -> str:
        """Fit the tokenizer (patch-PCA), train it (autoencoders), or load it from ``fit_options["path"]``;
        reports how, in how long, and its reconstruction error on (up to 1000 of) the images."""
        o, start = self.fit_options, time.perf_counter()
        images = first_images(batches, o["images"], ConfigError(
            "a latent model's tokenizer is fitted on the training images, but none were given"))
        if o["path"] is not None:
            self._set_tokenizer(self._loaded(o["path"]))
            how = f"loaded from {o['path']}"
        else:
            generator = torch.Generator(device=images.device).manual_seed(int(o["seed"]))
            self._set_tokenizer(self.tokenizer.fit_to(images, generator, steps=o["steps"],
                                                      batch_size=o["batch_size"], lr=o["lr"]))
            trained = f", {o['steps']} steps of {o['batch_size']}" if isinstance(self.tokenizer, nn.Module) else ""
            how = f"fitted on {len(images)} training images{trained}"
        with torch.no_grad():
            x = images[:1000]
            mse = float((self.tokenizer.decode(self.tokenizer.encode(x)) - x).pow(2).mean())
        latent = "x".join(str(d) for d in self.state_shape(1)[1:])
        return (f"tokenizer {self.tokenizer.kind} ({latent} latent) {how} in {time.perf_counter() - start:.0f} s; "
                f"reconstruction MSE {mse:.4g} per pixel in [-1, 1]")

    def _loaded(self, path: str) -> Tokenizer:
        tokenizer = load_tokenizer(path)
        wanted = self.tokenizer.latent_shape((1, *self.image_shape))
        if tokenizer.kind != self.tokenizer.kind or tokenizer.latent_shape((1, *self.image_shape)) != wanted:
            raise ConfigError(f"the tokenizer at {path} is a {tokenizer.kind} with latents "
                              f"{tokenizer.latent_shape((1, *self.image_shape))[1:]}; the config asks for a "
                              f"{self.tokenizer.kind} with latents {wanted[1:]}")
        return tokenizer

    def _set_tokenizer(self, tokenizer: Tokenizer) -> None:
        if isinstance(tokenizer, nn.Module):
            tokenizer.requires_grad_(False).eval()
        self.process = LatentDiffusion(self.latent_process, tokenizer)
        self.fitted = True

    @property
    def needs_fit(self) -> bool:
        return not self.fitted

    def fitted_state(self) -> dict[str, torch.Tensor]:
        return {f"tokenizer.{k}": v for k, v in self.tokenizer.tensors().items()}

    def load_fitted_state(self, tensors: dict[str, torch.Tensor]) -> None:
        own = {k.removeprefix("tokenizer."): v for k, v in tensors.items() if k.startswith("tokenizer.")}
        if not own:
            raise CheckpointError(f"the saved state has no tokenizer tensors; this latent model needs "
                                  f"{self.fitted_description}")
        self._set_tokenizer(tokenizer_from_saved(self.tokenizer.kind, self.tokenizer.config(), own))
        if isinstance(self.tokenizer, nn.Module):
            self.tokenizer.to(next(iter(own.values())).device)

    def _apply(self, fn: Any, recurse: bool = True) -> LatentDiffusionModel:
        """``.to(device)`` and friends also move a network tokenizer (held by the process)."""
        super()._apply(fn, recurse)
        if isinstance(self.tokenizer, nn.Module):
            self.tokenizer._apply(fn)
        return self

    # --- likelihood ----------------------------------------------------------------------------
    def nll(self, x: torch.Tensor, *args: Any, **options: Any) -> torch.Tensor:
        raise UnsupportedMetric("latent models have no likelihood of the pixels in difflab (the tokenizer is "
                                "lossy); evaluate fd, kid, is, precision or recall instead")

    # --- persistence ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        c = super().config()
        c["process"] = self.latent_process.config()
        return {**c, "tokenizer": {"kind": self.tokenizer.kind, **self.tokenizer.config()},
                "loss": self.loss_kind, "space": self.space, "residual_weight": self.residual_weight,
                "fit_options": dict(self.fit_options)}

    @classmethod
    def from_config(cls, config: dict[str, Any], *, seed: int | None = None) -> LatentDiffusionModel:
        c = dict(config)
        spec, shape = dict(c.pop("tokenizer")), tuple(c.pop("image_shape"))
        with torch.random.fork_rng(devices=[]):  # an autoencoder's initial weights: seeded, global RNG untouched
            if seed is not None:
                torch.manual_seed(seed + 1)
            tokenizer = unfitted_tokenizer(spec.pop("kind"), spec, int(shape[0]))
        return cls(network_from_dict(c.pop("network"), seed=seed), build_process(c.pop("process")), shape, tokenizer,
                   fitted=False, conditioning=Conditioning.from_config(c.pop("conditioning", {})), **c)

    @classmethod
    def config_from_sections(cls, sections: dict[str, Any], image_shape: tuple[int, ...]) -> dict[str, Any]:
        """``DiffusionModel``'s, plus the ``tokenizer`` section and the l-DAE objective options."""
        o, tok = sections["objective"], sections["tokenizer"]
        fit = {"images": tok["fit_images"], "steps": tok["steps"], "batch_size": tok["batch_size"], "lr": tok["lr"],
               "seed": sections["optim"]["seed"], "path": tok["path"]}
        config = super().config_from_sections(sections, image_shape)
        config["sample_defaults"]["clip_x0"] = None  # latents are not images in [-1, 1]
        return {**config, "tokenizer": tokenizer_spec(tok, image_shape[0]),
                "loss": o["loss"], "space": o["space"], "residual_weight": o["residual_weight"], "fit_options": fit}

