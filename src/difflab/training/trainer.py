"""``Trainer``: step-based training of any ``difflab.models`` family on HuggingFace Accelerate.

One step: take this rank's slice of the global batch (``ResumableBatchSampler``), ask the
model for its losses (``model.losses(batch, generator)``: the family draws its times, noise
and condition drops from the rank's generator; no formula lives here), back-propagate their
sum, clip, AdamW (one parameter group per ``model.param_groups()`` entry) with a linear
warm-up, ``model.after_step()``, EMA update. State fitted to data (IHDM's prior) is fitted
once before the first step (``model.fit``) and saved inside the model artefact. Runs on one CPU process by default and on many with
``accelerate launch`` (DDP averages gradients, so every rank holds the same weights and EMA).

Reproducibility: the weights, data order and every random draw come from ``optim.seed``
(rank r's generators from seed + r). A checkpoint stores the optimizer, EMA, sampler
position, loss-log window and every rank's RNG states, so ``resume`` continues bit for bit
(on CPU with ``run.deterministic``). The learning rate is a function of the step alone.

Every ``run.eval_every`` steps the main process evaluates the EMA weights
(``difflab.evaluation.evaluate``, see ``periodic_eval``) while the other ranks wait; the
evaluation has its own generators, so it does not change the run.

Outputs in ``run.out_dir``: ``config.yaml``, ``metrics.jsonl``, ``loss.png``, ``eval.png``
(with ``run.eval_every``), ``samples/step_XXXXXXX.png`` and ``checkpoints/step_XXXXXXX`` with
``checkpoints/latest``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from difflab.data import ResumableBatchSampler, random_hflip
from difflab.errors import CheckpointError, ConfigError, DifflabError
from difflab.evaluation.figures import save_image_grid
from difflab.models import GenerativeModel
from difflab.models.artefact import MODEL_DIR
from difflab.models.tuning import tune_model_grids
from difflab.training.build import build_components, image_shape
from difflab.training.checkpoint import (
    Checkpoint,
    check_compatible,
    has_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    save_run_checkpoint,
    step_dir_name,
)
from difflab.training.config import TrainConfig
from difflab.training.ema import EMA
from difflab.training.metrics import MetricsLog, plot_eval_curves, plot_loss_curve
from difflab.training.periodic_eval import PeriodicEvaluator
from difflab.training.signals import StopRequest
from difflab.samplers import TunedGrid


class NonFiniteError(DifflabError):
    """The loss or gradient became NaN/Inf (with ``run.on_nonfinite: stop``)."""


def learning_rate(step: int, lr: float, warmup_steps: int) -> float:
    """Linear warm-up: lr * min(1, (step + 1) / warmup_steps) for the update at ``step`` (0-based)."""
    if warmup_steps <= 0:
        return lr
    return lr * min(1.0, (step + 1) / warmup_steps)


def has_gpu() -> bool:
    """Whether torch sees a CUDA, MPS or XPU device."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def make_accelerator(mixed_precision: str) -> Accelerator:
    """An ``Accelerator``; fp16 without a GPU falls back to fp32 (with a warning).

    Without a GPU the accelerator is told ``cpu=True``, so processes started by
    ``accelerate launch --multi_gpu`` or ``torchrun`` form a gloo (multi-CPU) group.
    """
    if mixed_precision == "fp16" and not has_gpu():
        warnings.warn("optim.mixed_precision='fp16' needs a GPU; training in fp32 on the CPU", stacklevel=2)
        mixed_precision = "no"
    return Accelerator(mixed_precision=mixed_precision, cpu=not has_gpu())


@contextlib.contextmanager
def inference(model: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode under ``torch.no_grad``, with its train/eval mode and the global
    RNG (CPU, and ``device`` if CUDA) restored afterwards: sampling leaves training untouched."""
    was_training = model.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield model.eval()
    finally:
        model.train(was_training)


class Trainer:
    """Train ``config``; optionally continue from a checkpoint.

    Args:
        config: the run.
        resume: a checkpoint, a run's ``checkpoints/`` folder or a run folder to continue
            from; ``"auto"`` continues from ``run.out_dir`` if it holds a checkpoint and
            starts afresh otherwise; None starts afresh (and refuses an out_dir that already
            holds checkpoints, so a run is never overwritten by accident).
        accelerator: an existing ``Accelerator`` (default: ``make_accelerator``).

    Nothing is written until ``train()``; all validation (config, data, network fit,
    checkpoint compatibility) happens here.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: str | os.PathLike | None = None,
        accelerator: Accelerator | None = None,
    ) -> None:
        self.config = config
        self.out_dir = Path(config.run.out_dir)
        resume_path = self._resume_path(resume)
        self.accelerator = accelerator or make_accelerator(config.optim.mixed_precision)
        acc, optim = self.accelerator, config.optim
        self.dataset, model = build_components(config)
        self.image_shape = image_shape(self.dataset)
        self.sampler = ResumableBatchSampler(
            len(self.dataset), optim.batch_size, seed=optim.seed,
            num_replicas=acc.num_processes, rank=acc.process_index,
        )
        self.step = 0
        self.window = {"loss_sum": 0.0, "count": 0}  # loss since the last metrics line
        self.skipped = 0
        self.last_loss: float | None = None
        self.last_grad_norm: float | None = None
        self.checkpoint: Path | None = None
        self._rng_to_restore: dict[str, torch.Tensor] | None = None
        checkpoint = load_checkpoint(resume_path) if resume_path is not None else None
        if checkpoint is not None:
            check_compatible(checkpoint.config, config, checkpoint.path)
            model.load_state_dict(checkpoint.model.state_dict())
            model.load_fitted_state(checkpoint.model.fitted_state())
        else:
            model.fit(self.dataset.images.split(1024))  # data-dependent state (IHDM's prior); most have none
        self.ema = EMA(model, optim.ema_decay, warmup=optim.ema_warmup)
        groups = [{"params": params, "name": name} for name, params in model.param_groups().items()]
        optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.ema.module.to(acc.device)
        self.generator = torch.Generator(device=acc.device).manual_seed(optim.seed + acc.process_index)
        if checkpoint is not None:
            try:
                self._restore(checkpoint)
            except (KeyError, TypeError, IndexError, AttributeError) as err:
                raise CheckpointError(f"{checkpoint.path} has no usable training state ({type(err).__name__}: "
                                      f"{err}); it can be sampled from but not resumed") from None
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl")
        self.evaluator = PeriodicEvaluator(config) if config.run.eval_every else None

    # --- set-up ----------------------------------------------------------------------------
    def _resume_path(self, resume: str | os.PathLike | None) -> Path | None:
        if resume is None:
            if has_checkpoint(self.out_dir):
                raise ConfigError(f"run.out_dir={str(self.out_dir)!r} already holds a run's checkpoints; "
                                  "resume it (--resume) or choose another run.out_dir")
            return None
        if str(resume) == "auto":
            return resolve_checkpoint(self.out_dir) if has_checkpoint(self.out_dir) else None
        return resolve_checkpoint(resume)

    def _restore(self, checkpoint: Checkpoint) -> None:
        """Continue exactly where ``checkpoint`` stopped (weights were loaded before ``prepare``)."""
        state = checkpoint.training_state
        self.step = checkpoint.step
        if checkpoint.path.parent.resolve() == (self.out_dir / "checkpoints").resolve():
            self.checkpoint = checkpoint.path  # already on disk: do not rewrite it at this step
        self.ema.module.load_state_dict(checkpoint.ema_model.state_dict())
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.window = dict(state["window"])
        self.skipped = int(state["skipped"])
        self.last_loss = state.get("last_loss")
        self.last_grad_norm = state.get("last_grad_norm")
        scaler = self.accelerator.scaler
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        if rng["generator"].shape[0] == world:
            self.generator.set_state(rng["generator"][rank].clone())
            self._rng_to_restore = {k: v[rank].clone() for k, v in rng.items() if k != "generator"}
        else:
            warnings.warn(f"checkpoint was written by {rng['generator'].shape[0]} processes, this run has "
                          f"{world}: random streams restart from the seed (the run is no longer bit-exact)",
                          stacklevel=2)
        if checkpoint.config.optim.batch_size != self.config.optim.batch_size:
            warnings.warn(f"optim.batch_size changed from {checkpoint.config.optim.batch_size} to "
                          f"{self.config.optim.batch_size}: the data order after step {self.step} differs from "
                          "the original run's", stacklevel=2)

    # --- the run ---------------------------------------------------------------------------
    @property
    def unwrapped_model(self) -> GenerativeModel:
        return self.accelerator.unwrap_model(self.model)

    @property
    def process(self) -> Any:
        """The model's forward process (with its fitted state), for figures and reports."""
        return self.ema.module.process

    def train(self) -> dict[str, Any]:
        """Run until ``optim.steps`` (or a stop signal); return a summary dict.

        Summary keys: steps, steps_this_run, wall_time_s, images_per_s, final_loss, skipped,
        interrupted (None or the signal name), checkpoint, out_dir, tuned_grids ((TunedGrid,
        seconds) per ``run.tune_steps`` entry).
        """
        with self._reproducible(), StopRequest() as stop:
            self._prepare_out_dir()
            if self._eval_due():  # resumed at an evaluation step: a stop signal may have come before it
                self.evaluate(unless_logged=True)
            start_step, t0 = self.step, time.perf_counter()
            stopped_by = self._loop(stop, t0)
            wall = time.perf_counter() - t0
            if self.checkpoint is None or not self.checkpoint.name.endswith(step_dir_name(self.step)):
                self.save()
            tuned: list[tuple[TunedGrid, float]] = []
            if stopped_by is None and self.step > start_step:
                self.preview()
                tuned = self.tune_grids()
            self._plot()
        images = (self.step - start_step) * self.config.optim.batch_size
        return {
            "steps": self.step,
            "steps_this_run": self.step - start_step,
            "wall_time_s": wall,
            "images_per_s": images / wall if wall > 0 else 0.0,
            "final_loss": self.last_loss,
            "skipped": self.skipped,
            "interrupted": stopped_by,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "out_dir": str(self.out_dir),
            "tuned_grids": tuned,
        }

    def _loop(self, stop: StopRequest, t0: float) -> str | None:
        cfg, start = self.config, self.step
        batches = iter(self.sampler)
        bar = tqdm(total=cfg.optim.steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (cfg.run.progress and self.accelerator.is_main_process))
        with bar:
            while self.step < cfg.optim.steps:
                self._train_step(batches)
                self.step += 1
                bar.update(1)
                if self.step % cfg.run.log_every == 0 or self.step == cfg.optim.steps:
                    rate = (self.step - start) * cfg.optim.batch_size / max(time.perf_counter() - t0, 1e-9)
                    self._log(rate, bar)
                if self._stop_requested(stop):
                    return stop.signal_name or "signal"
                if self._eval_due():
                    self.evaluate()
                if cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0:
                    self.save()
                if cfg.run.sample_every and self.step % cfg.run.sample_every == 0:
                    self.preview()
        return None

    def _train_step(self, batches: Iterator[torch.Tensor]) -> None:
        """One optimizer update (or a skipped batch when the loss/gradient is not finite)."""
        acc, cfg = self.accelerator, self.config
        batch = self._batch(next(batches))
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, cfg.optim.lr, cfg.optim.warmup_steps)
        with acc.autocast():
            losses = self.model(batch, self.generator)  # {name: (b,)}; through DDP when distributed
            loss = sum(value.float().mean() for value in losses.values())
        global_loss = acc.reduce(loss.detach().clone(), reduction="mean").item()
        if not math.isfinite(global_loss):
            return self._non_finite("loss", global_loss)
        acc.backward(loss)
        max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
        grad_norm = float(acc.clip_grad_norm_(self.model.parameters(), max_norm))
        if not math.isfinite(grad_norm) and acc.scaler is None:  # with fp16 the loss scaler skips such steps
            return self._non_finite("gradient norm", grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not acc.optimizer_step_was_skipped:
            self.unwrapped_model.after_step()
            self.ema.update(self.unwrapped_model)
        self.window["loss_sum"] += global_loss
        self.window["count"] += 1
        self.last_grad_norm = grad_norm

    def _batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """This rank's images (b, C, H, W) on the device, and their class labels if the model takes them
        (dropping them for guidance training is the model's ``conditioning.drop``)."""
        x0, labels = self.dataset.batch(indices)
        x0 = x0.to(self.accelerator.device)
        if self.config.data.hflip:
            x0 = random_hflip(x0, generator=self.generator)
        if not self.unwrapped_model.conditioning.is_conditional or labels is None:
            return x0, None
        return x0, {"class_labels": labels.to(self.accelerator.device)}

    def _non_finite(self, quantity: str, value: float) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.run.on_nonfinite == "skip":
            self.skipped += 1
            return
        last = f"last good checkpoint: {self.checkpoint}" if self.checkpoint else "no checkpoint was saved yet"
        raise NonFiniteError(f"non-finite {quantity} ({value}) at step {self.step + 1}; training stopped, {last}; "
                             "lower optim.lr, check the data, or set run.on_nonfinite: skip")

    def _stop_requested(self, stop: StopRequest) -> bool:
        """Whether any rank got SIGINT/SIGTERM (all ranks agree, so they stop at the same step)."""
        if self.accelerator.num_processes == 1:
            return bool(stop)
        flag = torch.tensor([1.0 if stop else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    # --- outputs ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _reproducible(self) -> Iterator[None]:
        """Deterministic kernels, fixed threads and seeded global RNG for the run; restored after.

        The global RNG only drives randomness inside modules (dropout); every other draw uses
        ``self.generator``.
        """
        run, acc = self.config.run, self.accelerator
        previous = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
        if run.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        if run.num_threads is not None:
            torch.set_num_threads(run.num_threads)
        devices = [acc.device] if acc.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.config.optim.seed + acc.process_index)
                if self._rng_to_restore is not None:
                    torch.set_rng_state(self._rng_to_restore["global"])
                    if "cuda" in self._rng_to_restore and acc.device.type == "cuda":
                        torch.cuda.set_rng_state(self._rng_to_restore["cuda"], acc.device)
                yield
        finally:
            torch.use_deterministic_algorithms(previous[0])
            torch.set_num_threads(previous[1])

    def _prepare_out_dir(self) -> None:
        if self.accelerator.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(self.config.to_yaml(), encoding="utf-8")
            if self.metrics.path.exists():
                self.metrics.truncate_after(self.step)
        self.accelerator.wait_for_everyone()

    def _log(self, images_per_s: float, bar: Any) -> None:
        count = self.window["count"]
        self.last_loss = self.window["loss_sum"] / count if count else None
        record = {
            "step": self.step,
            "loss": self.last_loss,
            "lr": learning_rate(self.step - 1, self.config.optim.lr, self.config.optim.warmup_steps),
            "grad_norm": self.last_grad_norm,
            "skipped": self.skipped,
            "images_per_s": round(images_per_s, 2),
        }
        self.window = {"loss_sum": 0.0, "count": 0}
        if self.accelerator.is_main_process:
            self.metrics.append(record)
            loss_text = "nan" if self.last_loss is None else f"{self.last_loss:.4f}"
            bar.set_postfix(loss=loss_text, img_s=f"{images_per_s:.0f}")

    def training_state(self) -> dict[str, Any]:
        """Everything besides the weights needed to continue bit for bit (collective: all ranks call it)."""
        acc = self.accelerator
        rng = {"generator": self.generator.get_state(), "global": torch.get_rng_state()}
        if acc.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(acc.device)
        gathered = {k: acc.gather(v.to(acc.device)[None]).cpu() for k, v in rng.items()}  # (world, n) uint8
        scaler = acc.scaler.state_dict() if acc.scaler is not None else None
        return {
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict(),
            "sampler": self.sampler.state_dict(),
            "window": dict(self.window),
            "skipped": self.skipped,
            "last_loss": self.last_loss,
            "last_grad_norm": self.last_grad_norm,
            "scaler": scaler,
            "rng": gathered,
            "image_shape": list(self.image_shape),
            "num_processes": acc.num_processes,
        }

    def replica_checksums(self) -> torch.Tensor:
        """(world, 2 * tensors) float64 per-tensor sums of the weights and EMA on every rank.

        DDP keeps replicas equal; ``save`` checks it, since a divergence would make the
        checkpoint (written by rank 0 alone) misrepresent the other ranks.
        """
        tensors = [*self.unwrapped_model.parameters(), *self.ema.module.parameters()]
        sums = torch.stack([p.detach().double().sum() for p in tensors])
        return self.accelerator.gather(sums[None]).cpu()

    def save(self) -> Path:
        """Checkpoint now to ``out_dir/checkpoints/step_XXXXXXX`` (main process writes)."""
        state = self.training_state()
        if self.accelerator.num_processes > 1:
            checksums = self.replica_checksums()
            if not bool((checksums == checksums[0]).all()):
                raise RuntimeError(f"weights or EMA differ between processes at step {self.step} (a difflab bug)")
            state["replica_checksums"] = checksums
        path = self.out_dir / "checkpoints" / step_dir_name(self.step)
        if self.accelerator.is_main_process:
            path = save_run_checkpoint(self.out_dir / "checkpoints", keep_last=self.config.run.keep_last,
                                       config=self.config, model=self.unwrapped_model, ema_model=self.ema.module,
                                       step=self.step, training_state=state)
            self._plot()
        self.accelerator.wait_for_everyone()
        self.checkpoint = path
        return path

    def preview(self) -> Path | None:
        """Sample a grid with the EMA weights to ``samples/step_XXXXXXX.png`` (main process)."""
        path = None
        if self.accelerator.is_main_process:
            s = self.config.run.sample
            with inference(self.ema.module, self.accelerator.device) as model:
                x = model.sample(s.num, seed=self.config.optim.seed)  # the run.sample defaults are the model's
            path = save_image_grid(x, self.out_dir / "samples" / f"{step_dir_name(self.step)}.png")
        self.accelerator.wait_for_everyone()
        return path

    def tune_grids(self) -> list[tuple[TunedGrid, float]]:
        """Tune time grids for ``run.tune_steps`` to the EMA weights of the last checkpoint (main
        process; the others wait); returns (TunedGrid, seconds) per step count."""
        done: list[tuple[TunedGrid, float]] = []
        steps = self.config.run.tune_steps
        if steps and self.checkpoint is not None and self.accelerator.is_main_process:
            with inference(self.ema.module, self.accelerator.device) as model:
                done = tune_model_grids(self.checkpoint / MODEL_DIR, model, steps, seed=self.config.optim.seed,  # type: ignore[arg-type]
                                        device=self.accelerator.device)
        self.accelerator.wait_for_everyone()
        return done

    def _eval_due(self) -> bool:
        every = self.config.run.eval_every
        return self.evaluator is not None and self.step > 0 and self.step % every == 0

    def evaluate(self, *, unless_logged: bool = False) -> dict[str, Any] | None:
        """Evaluate the EMA weights now (main process; the others wait) and log the result.

        Appends ``{"step", "eval", "protocol", "seconds"}`` to metrics.jsonl, redraws
        ``eval.png`` and returns the record (None on other ranks, without ``run.eval_every``,
        or with ``unless_logged`` when the log already holds this step's evaluation).
        """
        record = None
        main = self.evaluator is not None and self.accelerator.is_main_process
        if main and not (unless_logged and self._eval_logged()):
            t0 = time.perf_counter()
            with inference(self.ema.module, self.accelerator.device) as model:
                result = self.evaluator(model)
            record = {"step": self.step, **result, "seconds": round(time.perf_counter() - t0, 2)}
            self.metrics.append(record)
            plot_eval_curves(self.metrics.read(), self.out_dir / "eval.png")
        self.accelerator.wait_for_everyone()
        return record

    def _eval_logged(self) -> bool:
        """Whether metrics.jsonl already holds the evaluation of this step."""
        return any(r.get("step") == self.step and "eval" in r for r in self.metrics.read())

    def _plot(self) -> None:
        if self.accelerator.is_main_process:
            plot_loss_curve(self.metrics.read(), self.out_dir / "loss.png")
