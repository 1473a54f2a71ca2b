"""The ``model``, ``tokenizer``, ``objective`` and ``optim`` sections of a training config.

Each section is a frozen dataclass validated on construction (one-line ``ConfigError``);
every field says its unit and why its default. Cross-section checks live in
``difflab.training.config.check_consistency``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from difflab.errors import ConfigError, check_choice
from difflab.models import FAMILIES
from difflab.objectives import LDAE_SPACES, LDAESpace, TimeSampling, Weighting
from difflab.processes import Prediction
from difflab.training.fields import MAX_SEED, check_range, dataclass_from_dict
from difflab.training.schedule import LR_DECAYS, LRDecay, parse_duration

MixedPrecision = Literal["auto", "no", "fp16", "bf16"]
ObjectiveWeighting = Literal[Weighting, "dae"]  # diffusion_loss's weightings, and l-DAE's "dae"
TokenizerKind = Literal["none", "patch_pca", "autoencoder", "kl_vae", "vq_vae"]
TOKENIZER_FIT_OPTIONS = ("path", "fit_images", "steps", "batch_size", "lr")  # how, not what, is fitted
DEFAULT_STEPS = 2000


@dataclass(frozen=True)
class ModelConfig:
    """Which model family the run trains (``difflab.models.FAMILIES``), and that family's own options.

    Written flat in YAML, ``model: {family: vae, beta: 4.0}``: the keys besides ``family`` are the
    fields of the family's ``options_class`` (``VAEOptions``, ``FlowOptions`` ...; the diffusion
    families have none, their options live in ``process`` and ``objective``).
    """

    family: str = "auto"
    """"diffusion" (a denoiser: eps/x0/v prediction, the ODE/SDE samplers, NLL), "ihdm" (inverse
    heat dissipation: predict the less-blurred level, Rissanen et al. 2023), "latent" (diffusion
    in a tokenizer's latent: latent diffusion, l-DAE), "vae" (VAE / beta-VAE), "flow" (RealNVP /
    Glow), "pixelcnn" (gated PixelCNN), or "auto": "latent" when a tokenizer is set, else the family the process was designed
    for (heat -> ihdm, others -> diffusion)."""
    options: Any = None
    """The family's options (an instance of its ``options_class``), None for families without."""

    def __post_init__(self) -> None:
        check_choice("model.family", self.family, ["auto", *sorted(FAMILIES)])
        options_class = FAMILIES[self.family].options_class if self.family != "auto" else None
        if options_class is not None and self.options is None:
            object.__setattr__(self, "options", options_class())
        if options_class is None and self.options is not None or \
                options_class is not None and not isinstance(self.options, options_class):
            raise ConfigError(f"model.options of a {self.family} model must be a {getattr(options_class, '__name__', None)}")

    @classmethod
    def from_dict(cls, raw: Any) -> ModelConfig:
        """``{family, **options}`` (parsed YAML) validated into a ``ModelConfig``."""
        if not isinstance(raw, dict):
            raise ConfigError(f"the model section must be a mapping like {{family: vae, beta: 4.0}}, got {raw!r}")
        options = dict(raw)
        family = options.pop("family", "auto")
        check_choice("model.family", family, ["auto", *sorted(FAMILIES)])
        options_class = FAMILIES[family].options_class if family != "auto" else None
        if options_class is None:
            if options:
                raise ConfigError(f"unknown model option(s) {sorted(options)}: model.family {family!r} has none "
                                  "(its options are in the process and objective sections)")
            return cls(family)
        return cls(family, dataclass_from_dict(options_class, options, "model"))

    def to_dict(self) -> dict[str, Any]:
        """The flat ``{family, **options}`` that ``from_dict`` reads."""
        return {"family": self.family, **(dataclasses.asdict(self.options) if self.options is not None else {})}


@dataclass(frozen=True)
class ObjectiveConfig:
    """The training loss (``difflab.objectives.diffusion_loss``)."""

    loss: Literal["diffusion", "ldae"] = "diffusion"
    """"diffusion": ``objectives.diffusion_loss`` (with a tokenizer: on its latents, as latent
    diffusion, Rombach et al. 2022); "ldae": ``objectives.ldae_loss``, the latent denoising
    autoencoder of Chen et al. (2024): noise in a tokenizer's latent, clean data predicted."""
    prediction: Prediction = "eps"
    """Network output: "eps" (DDPM, Ho et al. 2020), "x0", "v" (Salimans & Ho 2022) or "flow"
    (eps - x0, the flow-matching velocity; with process.schedule: flow, rectified flow). The
    "ldae" loss always predicts clean data (set "x0")."""
    weighting: ObjectiveWeighting = "uniform"
    """Weight of the per-coefficient error: "uniform" (plain MSE on the prediction, DDPM's
    L_simple), "snr" (MSE on x0), "min_snr" (Hang et al. 2023); with loss "ldae": "dae"
    (lambda_t = gamma_t^2 / (gamma_t^2 + sigma_t^2), Chen et al. 2024) or "uniform"."""
    space: LDAESpace = "image"
    """"ldae" only: the network sees u_t and predicts u_0 ("latent"), sees D(u_t) and predicts
    D(u_0) ("inverse_pca"), or predicts the image x_0 ("image", the final l-DAE; needs patch_pca)."""
    residual_weight: float = 0.1
    """"ldae", space "image": weight of the PCA components beyond d in the loss (Eq. 4; the
    paper's 0.1)."""
    gamma: float = 5.0
    """min_snr clamp on the SNR (unitless); 5 is Hang et al.'s recommended value."""
    time_sampling: TimeSampling = "uniform"
    """How training times t are drawn: i.i.d. "uniform", low-variance "stratified"
    (Kingma et al. 2021, App. I.1), or "logit_normal" (t = sigmoid(N(0, 1)), Esser et al. 2024)."""
    cond_drop_prob: float = 0.0
    """Probability of replacing a class label by the null label, for classifier-free guidance
    (Ho & Salimans 2022 use 0.1-0.2). 0 = plain conditional (or unconditional) training."""

    def __post_init__(self) -> None:
        check_range("objective.gamma", self.gamma, 0.0, low_open=True, why="Hang et al. use 5")
        check_range("objective.cond_drop_prob", self.cond_drop_prob, 0.0, 1.0, high_open=True)
        check_choice("objective.space", self.space, LDAE_SPACES)
        check_range("objective.residual_weight", self.residual_weight, 0.0)
        ldae = self.loss == "ldae"
        if ldae and (self.weighting not in ("dae", "uniform") or self.prediction != "x0"):
            raise ConfigError(f"objective.loss='ldae' predicts clean data with weighting 'dae' or 'uniform'; got "
                              f"prediction={self.prediction!r}, weighting={self.weighting!r}: set prediction: x0 "
                              "and weighting: dae")
        if not ldae and self.weighting == "dae":
            raise ConfigError("objective.weighting='dae' is l-DAE's weighting: set objective.loss: ldae "
                              "(or weighting: uniform, snr, min_snr)")


@dataclass(frozen=True)
class TokenizerConfig:
    """The tokenizer of a latent model, fitted at the start of ``difflab train`` and saved with it."""

    kind: TokenizerKind = "none"
    """"patch_pca" (a PCA of p x p patches, Chen et al. 2024), "autoencoder", "kl_vae" or "vq_vae"
    (a convolutional autoencoder trained first; "kl_vae" and "vq_vae" are LDM's KL-reg and VQ-reg,
    Rombach et al. 2022), or "none": the model works on pixels."""
    path: str | None = None
    """A tokenizer saved by ``difflab.tokenizers.save_tokenizer`` to use instead of fitting one
    (its kind must be ``kind``); null = fit on the training images."""
    patch_size: int = 4
    """patch_pca: side p of a patch in pixels; the latent grid is H/p x W/p (4: 7x7 on MNIST)."""
    components: int = 8
    """patch_pca: d principal components kept per patch (8 of 16 keep 96% of MNIST's patch variance)."""
    whiten: bool = False
    """patch_pca: scale each component to unit variance (l-DAE does not)."""
    latent_channels: int = 4
    """autoencoders: latent channels d (LDM's KL-f4 uses 3, KL-f8 uses 4)."""
    levels: int = 2
    """autoencoders: stride-2 downsamplings; the latent grid is H/2^levels (2: 7x7 on MNIST)."""
    base_channels: int = 32
    """autoencoders: channels at full resolution, doubled per level."""
    kl_weight: float = 1e-3
    """kl_vae: beta of the KL term per latent element (small, so the latent keeps detail)."""
    codebook_size: int = 256
    """vq_vae: K codes of the quantized latent."""
    commitment: float = 0.25
    """vq_vae: beta of the commitment loss (van den Oord et al. 2017)."""
    fit_images: int = 20000
    """Training images the tokenizer is fitted on (the first ones; 0 = all)."""
    steps: int = 1000
    """autoencoders: Adam steps of the first training stage (not charged to optim.time_budget)."""
    batch_size: int = 64
    """autoencoders: images per step of the first stage."""
    lr: float = 2e-3
    """autoencoders: Adam learning rate of the first stage."""

    def __post_init__(self) -> None:
        for name in ("patch_size", "components", "latent_channels", "base_channels", "steps", "batch_size"):
            check_range(f"tokenizer.{name}", getattr(self, name), 1)
        check_range("tokenizer.levels", self.levels, 0)
        check_range("tokenizer.fit_images", self.fit_images, 0, why="0 = all training images")
        check_range("tokenizer.kl_weight", self.kl_weight, 0.0)
        check_range("tokenizer.codebook_size", self.codebook_size, 1)
        check_range("tokenizer.commitment", self.commitment, 0.0)
        check_range("tokenizer.lr", self.lr, 0.0, low_open=True)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up, optional LR decay, gradient clipping and an EMA of the weights.

    A run lasts ``steps`` updates or ``time_budget`` of training time (not both; see
    ``difflab.training.schedule``).
    """

    lr: float = 2e-4
    """Peak learning rate (per step); DDPM's CIFAR-10 value (Ho et al. 2020, App. B)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2): PyTorch/Adam defaults, used by DDPM."""
    weight_decay: float = 0.0
    """Decoupled weight decay per step (x lr); DDPM uses none."""
    warmup_steps: int = 100
    """Steps of linear LR warm-up from lr/warmup_steps to lr; DDPM uses 5000 at batch 128,
    a short one suffices for the small default models. 0 = no warm-up. A time-budget run warms
    up for at most 5% of its estimated steps."""
    grad_clip: float = 1.0
    """Max global L2 norm of the gradient (DDPM: 1.0); 0 = no clipping."""
    batch_size: int = 64
    """Global batch size in images, summed over all processes (must be divisible by their number)."""
    steps: int | None = None
    """Optimizer steps of the whole run; null = 2000 (the digits default trains in minutes on a
    CPU), or, with ``time_budget``, as many as the budget affords (estimated from the first steps)."""
    time_budget: str | None = None
    """Train for this much time instead of a step count: "90s", "10m", "1h30m", "2h" (training
    steps only; evaluations, previews and checkpoints are not charged). The step count is
    estimated once from the first steps and stored, so the LR decay and the EMA length fit
    the run and a resumed run continues bit for bit. Also ``difflab train --budget 10m``."""
    lr_decay: LRDecay = "auto"
    """LR after warm-up: "none" (constant), "cosine" or "linear" decay to ``min_lr_ratio * lr``
    at the last step; "auto" = cosine with a time budget, none with a step count (DDPM's
    constant LR)."""
    min_lr_ratio: float = 0.1
    """LR at the last step as a fraction of ``lr`` when it decays (nanoGPT's lr/10)."""
    ema_decay: float = 0.999
    """Per-step decay of the exponential moving average of the weights (DDPM: 0.9999 over
    800k steps; 0.999 suits runs of thousands of steps). 0 = EMA equals the weights."""
    ema_length: float | None = None
    """Cap the EMA's averaging length 1 / (1 - decay) at this fraction of the run's steps
    (decay = min(ema_decay, 1 - 1 / (ema_length * steps))), so short runs are averaged over
    their own end, not over their initialisation; null = ``ema_decay`` alone for step runs and
    0.1 for time-budget runs (whose length is known only after the first steps)."""
    ema_warmup: bool = True
    """Use decay min(ema_decay, (1 + n) / (10 + n)) after n updates, so early EMA weights are
    not dominated by the random initialisation."""
    mixed_precision: MixedPrecision = "auto"
    """"bf16" autocast, "fp16" (with a loss scaler) or "no" (fp32). "auto" = bf16 where the
    device computes it natively (CUDA with bf16; CPUs with AVX512-BF16 or AMX), fp32 elsewhere.
    An option the device lacks falls back to fp32 with a one-line warning."""
    seed: int = 0
    """Seeds the weights, the data order and every training generator (rank r uses seed + r)."""

    def __post_init__(self) -> None:
        check_range("optim.lr", self.lr, 0.0, low_open=True)
        for i, beta in enumerate(self.betas):
            check_range(f"optim.betas[{i}]", beta, 0.0, 1.0, high_open=True)
        check_range("optim.weight_decay", self.weight_decay, 0.0)
        check_range("optim.warmup_steps", self.warmup_steps, 0)
        check_range("optim.grad_clip", self.grad_clip, 0.0, why="0 disables clipping")
        check_range("optim.batch_size", self.batch_size, 1)
        check_choice("optim.lr_decay", self.lr_decay, LR_DECAYS)
        check_range("optim.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        if self.time_budget is not None:
            parse_duration(self.time_budget)
            if self.steps is not None:
                raise ConfigError(f"optim.steps={self.steps} and optim.time_budget={self.time_budget!r} are both set; "
                                  "a budget run estimates its steps: set optim.steps: null (or drop the budget)")
        elif self.steps is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS)
        if self.steps is not None:
            check_range("optim.steps", self.steps, 1)
        check_range("optim.ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        if self.ema_length is not None:
            check_range("optim.ema_length", self.ema_length, 0.0, 1.0, low_open=True)
        check_range("optim.seed", self.seed, 0, MAX_SEED)

    @property
    def budget_seconds(self) -> float | None:
        """``time_budget`` in seconds (None for a step-count run)."""
        return None if self.time_budget is None else parse_duration(self.time_budget)
