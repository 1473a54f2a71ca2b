"""``DiffusionModel``: a denoising network + a diagonal Gaussian process, as one trained model.

The network is any ``model(z_t, t, **cond) -> prediction`` (eps, x0 or v; a ``difflab.nn``
network, your own module, or an analytic denoiser); the process carries its fitted state (if
any). The loss is ``objectives.diffusion_loss`` with the model's prediction and weighting
lambda(t); sampling is ``difflab.sample`` with the model's tuned grids; the likelihood is
``difflab.likelihood.nll``. ``DiffusionModel.wrap(net, process)`` turns any callable into a
model, so the evaluation and the CLI treat user networks like trained ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from difflab.errors import ConfigError, check_choice
from difflab.likelihood import nll
from difflab.models.base import Batch, GenerativeModel
from difflab.models.conditioning import Conditioning
from difflab.nn import DENOISER_CONFIGS, config_to_dict, network_from_dict
from difflab.objectives import diffusion_loss, sample_times
from difflab.processes import DiagonalGaussianProcess, build_process
from difflab.processes.noise import Generator, PerSampleGenerator, standard_normal
from difflab.samplers import SAMPLERS, sample
from difflab.samplers.api import grid_name, network_evaluations, resolve_sampler
from difflab.samplers.grids import grid_choices

SAMPLE_DEFAULTS: dict[str, Any] = {"sampler": "auto", "steps": 20, "eta": None, "clip_x0": None}


class DiffusionModel(GenerativeModel):
    """A denoiser network trained on a diagonal Gaussian process (DDPM/VP, blurring, latent ...).

    Args:
        network: ``network(z_t, t, **cond) -> prediction`` in pixel space.
        process: the forward process (with its fitted state, if it has any).
        image_shape: (C, H, W) of one sample.
        prediction: what the network predicts: "eps", "x0", "v" or "flow".
        weighting, gamma, time_sampling: the loss (``objectives.diffusion_loss``, ``sample_times``).
        conditioning: the conditioning inputs and their drop probability (guidance training).
        sample_defaults: default ``sampler``, ``steps``, ``eta`` and ``clip_x0`` of ``sample``.
    """

    family: ClassVar[str] = "diffusion"

    def __init__(
        self,
        network: Any,
        process: DiagonalGaussianProcess,
        image_shape: tuple[int, ...],
        *,
        prediction: str = "eps",
        weighting: str = "uniform",
        gamma: float = 5.0,
        time_sampling: str = "uniform",
        conditioning: Conditioning | None = None,
        sample_defaults: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.check_process(process)
        self.network = network
        self.process = process
        self.image_shape = tuple(int(d) for d in image_shape)
        self.prediction, self.weighting, self.gamma, self.time_sampling = prediction, weighting, gamma, time_sampling
        self.conditioning = conditioning or Conditioning()
        unknown = sorted(set(sample_defaults or {}) - set(SAMPLE_DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown sample default(s) {unknown}; allowed: {sorted(SAMPLE_DEFAULTS)}")
        self.sample_defaults = {**SAMPLE_DEFAULTS, **(sample_defaults or {})}

    @classmethod
    def wrap(cls, network: Any, process: DiagonalGaussianProcess, image_shape: tuple[int, ...], *,
             prediction: str = "eps", num_classes: int | None = None, **sample_defaults: Any) -> DiffusionModel:
        """Any callable ``network(z_t, t, **cond)`` as a model (e.g. for ``evaluate``)."""
        return cls(network, process, image_shape, prediction=prediction,
                   conditioning=Conditioning.classes(num_classes), sample_defaults=sample_defaults)

    # --- training ----------------------------------------------------------------------------
    def losses(self, batch: Batch, generator: Generator) -> dict[str, torch.Tensor]:
        """{"network": diffusion_loss (B,)}: conditions dropped, then t and noise drawn, in that order."""
        x0, cond = batch
        cond = self.conditioning.drop(cond, generator)
        t = sample_times(x0.shape[0], method=self.time_sampling, generator=generator, device=x0.device)
        noise = standard_normal(self.state_shape(x0.shape[0]), generator, device=x0.device, dtype=x0.dtype)
        return {"network": self.loss(x0, t, noise, cond)}

    def loss(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             cond: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """The per-example loss of images ``x0`` at times ``t`` (B,) and ``noise`` (``state_shape``)."""
        return diffusion_loss(self.network, self.process, x0, prediction=self.prediction,  # type: ignore[arg-type]
                              weighting=self.weighting, gamma=self.gamma, t=t, noise=noise,  # type: ignore[arg-type]
                              cond=cond)

    def fit(self, batches: Iterable[torch.Tensor]) -> str | None:
        """Fit the process's data-dependent state, if it has any."""
        self.process = self.process.fit(batches)
        return self.fitted_description if self.fitted_state() else None

    @property
    def needs_fit(self) -> bool:
        return self.process.needs_fit

    def fitted_state(self) -> dict[str, torch.Tensor]:
        return {f"process.{k}": v for k, v in self.process.fitted_state().items()}

    def load_fitted_state(self, tensors: dict[str, torch.Tensor]) -> None:
        own = {k.removeprefix("process."): v for k, v in tensors.items() if k.startswith("process.")}
        self.process = self.process.with_fitted_state(own)

    # --- where the process runs: pixels here, a tokenizer's latent in ``LatentDiffusionModel`` ---
    def state_shape(self, n: int) -> tuple[int, ...]:
        """Shape of n states z_t of the process: (n, C, H, W) of the images."""
        return (n, *self.image_shape)

    def network_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the tensors the network maps to tensors of the same shape."""
        return self.image_shape

    def dry_run(self, where: str) -> None:
        """One forward pass of the network (eval, no grad) on zeros of ``network_shape()``; its
        output must have its input's shape."""
        x = torch.zeros(2, *self.network_shape(), device=next(self.network.parameters()).device)
        was_training = self.network.training
        try:
            with torch.no_grad():
                out = self.network.eval()(x, torch.full((2,), 0.5, device=x.device))
        except RuntimeError as err:
            raise ConfigError(f"the network cannot process the data ({where}): {str(err).splitlines()[0]}") from None
        finally:
            self.network.train(was_training)
        if out.shape != x.shape:
            raise ConfigError(f"the network maps images of shape {tuple(x.shape[1:])} to {tuple(out.shape[1:])}; "
                              f"its output must have the input's shape ({where})")

    @property
    def denoiser(self) -> Any:
        """``denoiser(z_t, t, **cond)``: the prediction (``sample_prediction``) of the clean state."""
        return self.network

    @property
    def sample_prediction(self) -> str:
        """What ``denoiser`` predicts ("eps", "x0", "v" or "flow"), as the samplers need to know."""
        return self.prediction

    def to_image(self, z: torch.Tensor) -> torch.Tensor:
        """A sampled state as images (B, C, H, W); the identity here."""
        return z

    def network_input(self, x0: torch.Tensor, t: torch.Tensor, *, clean: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """What the network sees for images ``x0`` at times ``t`` (B,): z_t drawn with ``generator``,
        or ``x0`` itself with ``clean`` (l-DAE's probe protocol feeds clean input, t conditioning)."""
        if clean:
            return x0
        device = generator.device if generator is not None else x0.device
        eps = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype).to(x0.device)
        return self.process.diffuse(x0, t.to(x0.device).double(), eps)

    # --- sampling ------------------------------------------------------------------------------
    def sample_options(self) -> tuple[str, ...]:
        return ("sampler", "steps", "grid", "guidance", "clip_x0", "eta", "sampler_options")

    state_is_image: ClassVar[bool] = True
    """Whether the process runs on images in [-1, 1]; a latent's states are never clipped (``clip_x0``)."""

    def _resolved(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with the model's defaults filled in and checked."""
        o = {**self.sample_defaults, "grid": "auto", "guidance": None, "sampler_options": {},
             **{k: v for k, v in options.items() if v is not None}}
        o["sampler"] = resolve_sampler(o["sampler"], self.process)
        if isinstance(o["grid"], str):
            check_choice("grid", o["grid"], grid_choices())
        if o["grid"] == "auto" and self.tuned_grids is not None:
            o["grid"] = self.tuned_grids
        if o["guidance"] is not None and not self.conditioning.is_conditional:
            raise ConfigError("guidance needs a class-conditional model (network.num_classes set)")
        if not self.state_is_image or o["clip_x0"] is not None and o["clip_x0"] <= 0:
            o["clip_x0"] = None
        return o

    def draw(self, generator: PerSampleGenerator, cond: dict[str, torch.Tensor] | None,
             **options: Any) -> torch.Tensor:
        o = self._resolved(options)
        extra = dict(o["sampler_options"])
        if o["eta"] is not None:
            extra["eta"] = o["eta"]
        z = sample(self.denoiser, self.process, self.state_shape(len(generator)), o["sampler"], o["steps"],
                   self.sample_prediction, generator, grid=o["grid"], cond=cond, guidance=o["guidance"],  # type: ignore[arg-type]
                   null_label=self.conditioning.null if o["guidance"] is not None else None,
                   clip_x0=o["clip_x0"], device=options.get("device"), **extra)
        return self.to_image(z)

    def sampling_protocol(self, **options: Any) -> dict[str, Any]:
        o = self._resolved(options)
        requested = options.get("sampler") or self.sample_defaults["sampler"]
        label = f"auto = {o['sampler']}" if requested == "auto" else o["sampler"]
        return {"sampler": label, "steps": o["steps"], "nfe": network_evaluations(o["sampler"], o["steps"]),
                "grid": grid_name(o["grid"], o["steps"], self.process, o["sampler"])}

    tunable: ClassVar[bool] = True
    has_likelihood: ClassVar[bool] = True
    nll_methods: ClassVar[tuple[str, ...]] = ("elbo", "ode")

    @classmethod
    def nll_options(cls, method: str, settings: dict[str, Any]) -> dict[str, Any]:
        """elbo: continuous time, ``num_t`` importance-sampled times; ode: Hutchinson, RK45 at ``ode_tol``."""
        if method == "elbo":
            return {"time": "continuous", "num_t": settings["num_t"], "importance": True}
        return {"divergence": "hutchinson", "num_probes": 1, "rtol": settings["ode_tol"], "atol": settings["ode_tol"]}

    @classmethod
    def check_network(cls, network: Any) -> None:
        """A denoiser ``net(x, t, **cond)`` (UNet, MLP, ViT), not a VAE or a flow."""
        if not isinstance(network, DENOISER_CONFIGS):
            raise ConfigError(f"a {cls.family} model needs a denoiser network (network.kind: unet, mlp or vit); "
                              f"got {config_to_dict(network)['kind']!r}: set model.family to its family (vae, flow)")

    @classmethod
    def sampler_names(cls) -> list[str]:
        return ["auto", *sorted(SAMPLERS)]

    @classmethod
    def check_process(cls, process: DiagonalGaussianProcess) -> None:
        """``ConfigError`` unless this family can train and sample ``process``."""
        if not process.denoiser_samplers:
            raise ConfigError(f"process '{process.kind}' is not sampled by a denoiser; train it as "
                              f"model.family: {process.default_family} (or model.family: auto)")

    # --- likelihood ----------------------------------------------------------------------------
    def nll(self, x: torch.Tensor, method: str = "elbo", *, levels: int | None = None,
            cond: dict[str, torch.Tensor] | None = None, generator: torch.Generator | None = None,
            **options: Any) -> torch.Tensor:
        """-log p(x) in bits/dim per example (``difflab.likelihood.nll``; "elbo" or "ode")."""
        return nll(self.network, self.process, x, method, self.prediction, levels=levels,  # type: ignore[arg-type]
                   cond=cond, generator=generator, **options)

    # --- persistence ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        if not isinstance(self.network, nn.Module) or not hasattr(self.network, "config"):
            raise ConfigError("only models with a difflab.nn network can be saved (this one wraps a plain callable)")
        return {
            "network": config_to_dict(self.network.config),
            "process": self.process.config(),
            "image_shape": list(self.image_shape),
            "prediction": self.prediction,
            "weighting": self.weighting,
            "gamma": self.gamma,
            "time_sampling": self.time_sampling,
            "conditioning": self.conditioning.config(),
            "sample_defaults": dict(self.sample_defaults),
        }

    @classmethod
    def config_from_sections(cls, sections: dict[str, Any], image_shape: tuple[int, ...]) -> dict[str, Any]:
        """``config()`` of the model a training config trains: its network, process, objective
        and ``run.sample`` sections (the sampling defaults saved with the model)."""
        o, s = sections["objective"], sections["run"]["sample"]
        return {
            "network": sections["network"],
            "process": sections["process"],
            "image_shape": list(image_shape),
            "prediction": o["prediction"],
            "weighting": o["weighting"],
            "gamma": o["gamma"],
            "time_sampling": o["time_sampling"],
            "conditioning": Conditioning.classes(sections["network"].get("num_classes"), o["cond_drop_prob"]).config(),
            "sample_defaults": {k: s[k] for k in ("sampler", "steps", "eta", "clip_x0")},
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], *, seed: int | None = None) -> DiffusionModel:
        c = dict(config)
        return cls(network_from_dict(c.pop("network"), seed=seed), build_process(c.pop("process")),
                   tuple(c.pop("image_shape")), conditioning=Conditioning.from_config(c.pop("conditioning", {})), **c)
