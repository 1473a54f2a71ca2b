"""The protocol every trained generative model implements, and drawing samples from it.

A ``GenerativeModel`` is an ``nn.Module`` holding its network(s), its fitted state and its
config; everything that trains, samples, scores or saves a model goes through it:

===================================  ==========================================================
method                               what
===================================  ==========================================================
``param_groups()``                   {name: parameters}: one optimizer group each
``losses(batch, generator)``         {name: per-example loss (B,)}; ``forward`` is the same, so
                                     a DDP wrapper of the model syncs gradients
``training_phases``                  () for one update of all parameters per step; else the
                                     ``param_groups`` names updated one after another, each by
                                     its own optimizer, with ``losses(batch, generator, phase=)``
``after_step()``                     hook after each training step (EMA codebooks, ...)
``diagnostics(batch)``               {name: float} the training log adds (a GAN's D accuracy ...)
``fit(batches)``                     data-dependent state before training (a fitted prior ...)
``sample(n, seed=, cond=, ...)``     images (n, C, H, W) in [-1, 1]; sample i depends on
                                     (seed, i) only, not on the batch size (per-sample seeds)
``nll(x, ...)``                      bits/dim per example, or ``UnsupportedMetric``
``config()`` / ``state_dict()``      what ``save_model`` writes; ``fitted_state()`` besides
``config_from_sections(sections,``   the ``config()`` a training config's sections describe
``image_shape)``                     (``difflab train`` builds every family through it)
``options_class``                    the dataclass of the family's own ``model`` section options
``check_network(config)``            ``ConfigError`` unless the family can use that network
``dry_run(where)``                   one forward pass on zeros, so a shape mismatch fails up front
``nll_methods``, ``nll_options``     the likelihood estimators, and their options from CLI settings
===================================  ==========================================================

A family subclasses ``GenerativeModel`` in its own module and is listed in
``difflab.models.FAMILIES``; the trainer, the evaluation and the CLI know only this protocol.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from difflab.errors import ConfigError, DataError, DifflabError
from difflab.likelihood.quantization import check_on_grid
from difflab.models.conditioning import Conditioning, slice_cond
from difflab.nn import config_to_dict, network_from_dict
from difflab.processes.noise import Generator, PerSampleGenerator
from difflab.samplers import TunedGrids

Batch = tuple[torch.Tensor, dict[str, torch.Tensor] | None]  # (x0 (B, C, H, W) in [-1, 1], conditions)


def check_image_size(network: dict[str, Any], image_shape: tuple[int, ...]) -> None:
    """``ConfigError`` unless a fixed-size network's ``in_channels`` and ``resolution`` match the images."""
    c, h, w = image_shape
    if (network["in_channels"], network["resolution"], network["resolution"]) != (c, h, w):
        raise ConfigError(f"network.in_channels={network['in_channels']}, network.resolution={network['resolution']} "
                          f"but the images are (C, H, W) = {tuple(image_shape)}; set network.in_channels: {c} and "
                          f"network.resolution: {h}")


def check_levels(images: torch.Tensor, levels: int, model: str, fix: str) -> None:
    """One-line ``DataError`` unless ``images`` lie on the ``levels``-level grid that ``model`` scores
    (a discrete decoder, dequantization bins, softmax classes); ``fix`` says which option to set."""
    try:
        check_on_grid(images, levels)
    except DataError:
        raise DataError(f"the training images are not on the {levels}-level grid {model}; "
                        f"set {fix} to the data's levels (17 for digits)") from None


class UnsupportedMetric(DifflabError):
    """A metric the model's family does not define (e.g. a likelihood of an implicit model)."""


def model_device(model: nn.Module) -> torch.device:
    """Where a module's parameters live (CPU when it has none)."""
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


class GenerativeModel(nn.Module, ABC):
    """Base class of every trained generative model (see the module docstring)."""

    family: ClassVar[str]
    image_shape: tuple[int, ...]
    conditioning: Conditioning
    tuned_grids: TunedGrids | None = None  # sampler grids tuned to the weights (families with ODE samplers)

    # --- training ----------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{group name: trainable parameters}; one group by default."""
        return {"network": [p for p in self.parameters() if p.requires_grad]}

    @abstractmethod
    def losses(self, batch: Batch, generator: Generator) -> dict[str, torch.Tensor]:
        """{name: per-example loss (B,)} of a training batch, random draws from ``generator``."""

    def forward(self, batch: Batch, generator: Generator = None, **phase: str) -> dict[str, torch.Tensor]:
        """``losses``: calling the model (or its DDP wrapper) computes the training losses (of
        ``phase=`` for a family with ``training_phases``)."""
        return self.losses(batch, generator, **phase)

    training_phases: ClassVar[tuple[str, ...]] = ()  # see the module docstring (a GAN's D then G update)

    def after_step(self) -> None:
        """Called after every training step; nothing by default."""

    def diagnostics(self, batch: Batch) -> dict[str, float]:
        """{name: value} of training diagnostics on a training batch, for the log; none by default."""
        return {}

    def fit(self, batches: Iterable[torch.Tensor]) -> str | None:
        """Fit data-dependent state (before training); a one-line report of what was fitted
        (``difflab train`` prints it), or None. Nothing by default."""
        return None

    @property
    def needs_fit(self) -> bool:
        """Whether state that only data can give is missing (then ``sample`` cannot run)."""
        return False

    def fitted_state(self) -> dict[str, torch.Tensor]:
        """Tensors fitted to data that are not parameters (saved beside the weights)."""
        return {}

    def load_fitted_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore ``fitted_state()`` tensors."""

    fitted_description: ClassVar[str] = "state fitted to the training data"

    # --- sampling ------------------------------------------------------------------------------
    @abstractmethod
    def draw(self, generator: PerSampleGenerator, cond: dict[str, torch.Tensor] | None,
             **options: Any) -> torch.Tensor:
        """One batch of ``len(generator)`` images, every random draw from ``generator``."""

    def sampling_protocol(self, **options: Any) -> dict[str, Any]:
        """{"sampler", "steps", "grid", "nfe"} that ``sample(**options)`` uses, for reports."""
        return {"sampler": "-", "steps": 1, "grid": "-", "nfe": 1}

    @classmethod
    def check_process(cls, process: Any) -> None:
        """``ConfigError`` unless this family can use ``process`` (families without one ignore it)."""

    @classmethod
    def check_network(cls, network: Any) -> None:
        """``ConfigError`` unless this family can use a network of config ``network`` (a ``difflab.nn`` config)."""

    options_class: ClassVar[type | None] = None  # dataclass of the ``model`` section's options besides ``family``

    def network_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the tensors the network sees: the images by default."""
        return tuple(self.image_shape)

    def network_output_channels(self) -> int:
        """Channels of what the network predicts: those of its input by default."""
        return self.network_shape()[0]

    def dry_run(self, where: str) -> None:
        """``ConfigError`` if the training losses of two blank images fail (a shape mismatch ...);
        ``where`` describes the data for the message. Eval mode, no gradients, own generator."""
        was_training = self.training
        x = torch.zeros(2, *self.image_shape, device=model_device(self))
        try:
            with torch.no_grad():
                self.eval().losses((x, None), torch.Generator(device=x.device).manual_seed(0))
        except RuntimeError as err:
            raise ConfigError(f"the network cannot process the data ({where}): {str(err).splitlines()[0]}") from None
        finally:
            self.train(was_training)

    tunable: ClassVar[bool] = False  # whether ``difflab tune`` can tune sampler grids of this family

    @classmethod
    def sampler_names(cls) -> list[str]:
        """The sampler names ``sample(sampler=...)`` accepts."""
        return ["auto"]

    def sample_options(self) -> tuple[str, ...]:
        """The option names ``sample`` accepts besides n, seed, cond, batch_size and device."""
        return ()

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        *,
        seed: int = 0,
        cond: dict[str, torch.Tensor] | None = None,
        batch_size: int = 250,
        device: torch.device | str | None = None,
        progress: Callable[[int, int], None] | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """n images (n, C, H, W) in [-1, 1] on the CPU, drawn in batches of ``batch_size``;
        ``progress(done, n)`` is called before the first batch (done = 0) and after each one.

        Sample i gets its own generator seeded by (seed, i) (``PerSampleGenerator``), so it is
        the same whatever the batch size, process count or order. ``cond`` holds n conditions
        per input (class labels default to 0, 1, ..., K-1, 0, ...). ``options`` go to the
        family's ``draw`` (sampler, steps, guidance ...). The model should be in eval mode.
        """
        options = {k: v for k, v in options.items() if v is not None}  # None: the model's default
        if not isinstance(n, int) or n < 1 or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"n={n!r} and batch_size={batch_size!r} must be positive integers")
        unknown = sorted(set(options) - set(self.sample_options()))
        if unknown:
            raise ConfigError(f"{self.family} models have no sampling option(s) {unknown}; "
                              f"their options are: {list(self.sample_options())}")
        device = torch.device(device) if device is not None else model_device(self)
        cond = self.conditioning.resolve(n, cond)
        out = []
        if progress is not None:
            progress(0, n)
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            generator = PerSampleGenerator(seed, range(start, stop), device)
            x = self.draw(generator, slice_cond(cond, start, stop, device), device=device, **options)
            out.append(x.detach().float().cpu())
            if progress is not None:
                progress(stop, n)
        return torch.cat(out)

    # --- likelihood ----------------------------------------------------------------------------
    def nll(self, x: torch.Tensor, **options: Any) -> torch.Tensor:
        """-log p(x) in bits/dim per example (B,); ``UnsupportedMetric`` unless the family defines it."""
        raise UnsupportedMetric(f"{self.family} models have no likelihood in difflab; "
                                "evaluate sample metrics (fd, kid, is, precision, recall) instead")

    has_likelihood: ClassVar[bool] = False  # whether ``nll`` is defined (else UnsupportedMetric)
    nll_methods: ClassVar[tuple[str, ...]] = ()  # the estimators ``nll(x, method)`` takes; the first is the default

    @classmethod
    def nll_options(cls, method: str, settings: dict[str, Any]) -> dict[str, Any]:
        """The ``nll`` options of ``method`` from generic settings (``difflab eval``'s ``num_t``,
        ``ode_tol``, ``k`` ...); none by default."""
        return {}

    # --- persistence ---------------------------------------------------------------------------
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-safe dict that ``from_config`` turns back into this model (with fresh weights)."""

    @classmethod
    def config_from_sections(cls, sections: dict[str, Any], image_shape: tuple[int, ...]) -> dict[str, Any]:
        """The ``config()`` of the model that a training config's sections (``TrainConfig.to_dict()``)
        describe, for images of ``image_shape`` (C, H, W)."""
        raise ConfigError(f"{cls.family} models cannot be built from a training config")

    @classmethod
    @abstractmethod
    def from_config(cls, config: dict[str, Any], *, seed: int | None = None) -> GenerativeModel:
        """The model ``config`` describes; network weights initialised from ``seed``."""


class OptionsModel(GenerativeModel):
    """A family whose ``config()`` is its ``network``, the ``image_shape`` and the fields of its
    ``options_class`` (the ``model`` section of its training config; none if it is None), each an
    attribute; unconditional, with a network of kind ``network_kind``."""

    network_kind: ClassVar[str]  # the ``network.kind`` the family trains

    def __init__(self, network: nn.Module, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.network, self.image_shape = network, tuple(image_shape)
        self.conditioning = Conditioning.classes(None)
        self.dims = math.prod(self.image_shape)  # D = C H W, for bits/dim

    @classmethod
    def check_network(cls, network: Any) -> None:
        kind = config_to_dict(network)["kind"]
        if kind != cls.network_kind:
            raise ConfigError(f"a {cls.family} model needs network.kind: {cls.network_kind}; got {kind!r}")

    def config(self) -> dict[str, Any]:
        fields = dataclasses.fields(self.options_class) if self.options_class is not None else ()
        options = {f.name: getattr(self, f.name) for f in fields}
        return {"network": config_to_dict(self.network.config), "image_shape": list(self.image_shape), **options}

    @classmethod
    def from_config(cls, config: dict[str, Any], *, seed: int | None = None) -> GenerativeModel:
        c = dict(config)
        return cls(network_from_dict(c.pop("network"), seed=seed), tuple(c.pop("image_shape")), **c)  # type: ignore[call-arg]

    @classmethod
    def config_from_sections(cls, sections: dict[str, Any], image_shape: tuple[int, ...]) -> dict[str, Any]:
        """The ``network`` section (checked against the images) and the ``model`` section's options."""
        check_image_size(sections["network"], image_shape)
        options = {k: v for k, v in sections["model"].items() if k != "family"}
        return {"network": sections["network"], "image_shape": list(image_shape), **options}


def first_images(batches: Iterable[torch.Tensor], n: int, missing: DifflabError) -> torch.Tensor:
    """The first ``n`` images of ``batches`` (all of them for n = 0), read no further than needed;
    raises ``missing`` if there are none."""
    taken, count = [], 0
    for batch in batches:
        taken.append(batch if not n else batch[: n - count])
        count += len(taken[-1])
        if n and count >= n:
            break
    if not taken:
        raise missing
    return torch.cat(taken)
