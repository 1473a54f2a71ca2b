"""``Trainer``: step-based training of any ``difflab.models`` family on HuggingFace Accelerate.

A run lasts ``optim.steps`` updates or ``optim.time_budget`` of training time
(``difflab.training.schedule``: the step count is estimated once from the first steps and
stored, so the LR decay and the EMA length fit the run). Speed switches
(``optim.mixed_precision``, ``run.channels_last``, ``run.compile``) resolve per device
(``difflab.training.device``); a step has no host-device sync unless ``run.on_nonfinite`` is
"skip" (``difflab.training.nonfinite``).

One step: take this rank's slice of the global batch (``ResumableBatchSampler``), ask the
model for its losses (``model.losses(batch, generator)``: the family draws its times, noise
and condition drops from the rank's generator; no formula lives here), back-propagate their
sum, clip, AdamW (one parameter group per ``model.param_groups()`` entry) at the LR of
``RunLength`` (warm-up, then optional decay), ``model.after_step()``, EMA update. A family
with ``training_phases`` (a GAN: the discriminator, then the generator) gets one AdamW per
phase over the parameter group of that name, and the step runs the phases in order, each
with ``losses(batch, generator, phase=...)``, its own backward, clip and update. The log
line holds the mean of each named loss and the family's ``diagnostics`` on the last batch. State
fitted to data (IHDM's prior, a latent model's tokenizer) is fitted once before the first
step (``model.fit``) and saved inside the model artefact. Runs on one CPU process by default
and on many with ``accelerate launch`` (DDP averages gradients, so every rank holds the same
weights and EMA).

Reproducibility: the weights, data order and every random draw come from ``optim.seed``
(rank r's generators from seed + r). A checkpoint stores the optimizer, EMA, sampler
position, loss-log window and every rank's RNG states (``difflab.training.resume``), so a
resumed run continues bit for bit (on CPU with ``run.deterministic``). The learning rate is a function of the step alone.

Every ``run.eval_every`` steps the main process evaluates the EMA weights
(``difflab.evaluation.evaluate``, see ``periodic_eval``) while the other ranks wait; the
evaluation has its own generators, so it does not change the run.

Outputs in ``run.out_dir``: ``config.yaml``, ``metrics.jsonl``, ``loss.png``, ``eval.png``
(with ``run.eval_every``), ``samples/step_XXXXXXX.png`` and ``checkpoints/step_XXXXXXX`` with
``checkpoints/latest``.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from difflab.data import ImageDataset, ResumableBatchSampler, random_hflip
from difflab.errors import CheckpointError
from difflab.models import GenerativeModel
from difflab.nn.speed import resolve_channels_last
from difflab.samplers import TunedGrid
from difflab.training.build import build_components, image_shape
from difflab.training.checkpoint import (
    check_compatible,
    load_checkpoint,
    resume_path_for,
    save_run_checkpoint,
    step_dir_name,
)
from difflab.training.config import TrainConfig
from difflab.training.device import (
    SpeedSettings,
    agree,
    fork_rng,
    make_accelerator,
    reproducible,
    speed_up,
)
from difflab.training.ema import EMA
from difflab.training.metrics import LossWindow, MetricsLog
from difflab.training.nonfinite import NonFiniteError, NonFiniteWatch
from difflab.training.optimizer import phase_optimizers
from difflab.training.outputs import RunOutputs
from difflab.training.resume import (
    capture_run_state,
    replica_checksums,
    restore_run_state,
)
from difflab.training.run_length import RunLength
from difflab.training.schedule import format_duration
from difflab.training.signals import StopRequest

__all__ = ["NonFiniteError", "Trainer"]
MAX_DEVICE_DATA_BYTES = 2**31  # datasets up to 2 GiB (CIFAR-10 train is 0.6 GB as float32) live on the GPU


class Trainer:
    """Train ``config``; optionally continue from a checkpoint.

    Args:
        config: the run.
        resume: a checkpoint, a run's ``checkpoints/`` folder or a run folder to continue
            from; ``"auto"`` continues from ``run.out_dir`` if it holds a checkpoint and
            starts afresh otherwise; None starts afresh (and refuses an out_dir that already
            holds checkpoints, so a run is never overwritten by accident).
        accelerator: an existing ``Accelerator`` (default: ``make_accelerator``).
        clock: seconds from any origin, for ``optim.time_budget`` (default
            ``time.perf_counter``; tests inject a fake clock).
        dataset: images already in memory to train on instead of loading ``config.data``
            (e.g. a subset a study holds out of its probe split); ``data.hflip`` still applies.

    Nothing is written until ``train()``; all validation (config, data, network fit,
    checkpoint compatibility) and compilation (``run.compile``) happen here.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: str | os.PathLike | None = None,
        accelerator: Accelerator | None = None,
        clock: Callable[[], float] | None = None,
        dataset: ImageDataset | None = None,
    ) -> None:
        self.config = config
        self.out_dir = Path(config.run.out_dir)
        resume_path = resume_path_for(resume, self.out_dir)
        self.dataset, model = build_components(config, dataset)
        self.accelerator = accelerator or make_accelerator(config.optim.mixed_precision,
                                                           find_unused_parameters=bool(model.training_phases))
        acc, optim = self.accelerator, config.optim
        self.image_shape = image_shape(self.dataset)
        resident = acc.device.type != "cpu" and self.dataset.images.nbytes <= MAX_DEVICE_DATA_BYTES
        self.train_data = self.dataset.to(acc.device) if resident else self.dataset  # where batches are indexed
        self.sampler = ResumableBatchSampler(
            len(self.dataset), optim.batch_size, seed=optim.seed,
            num_replicas=acc.num_processes, rank=acc.process_index,
        )
        self.step = 0
        self.window = LossWindow(acc.device)  # the losses since the last log line
        self.last_batch: tuple[torch.Tensor, dict[str, torch.Tensor] | None] | None = None  # for diagnostics
        self.skipped = 0
        self.last_loss: float | None = None
        self.last_grad_norm: torch.Tensor | float | None = None
        self.checkpoint: Path | None = None
        self.rng_to_restore: dict[str, torch.Tensor] | None = None
        self.watch = NonFiniteWatch(acc.device)
        self.length = RunLength(optim, clock)
        self.budget = self.length.budget
        self.overran = False  # the time budget ran out (on any rank) before the estimated step count
        checkpoint = load_checkpoint(resume_path) if resume_path is not None else None
        self.fitted: str | None = None  # the model's report of what it fitted to the data (a fresh run only)
        if checkpoint is not None:
            check_compatible(checkpoint.config, config, checkpoint.path)
            model.load_state_dict(checkpoint.model.state_dict())
            model.load_fitted_state(checkpoint.model.fitted_state())
        else:
            # data-dependent state (IHDM's prior, a tokenizer), fitted on the device, batch by batch
            self.fitted = model.fit(batch.to(acc.device) for batch in self.train_data.images.split(1024))
        self.ema = EMA(model, optim.ema_decay, warmup=optim.ema_warmup)
        model.to(acc.device)
        self.channels_last = resolve_channels_last(config.run.channels_last, acc.device)
        self.speed = self._speed_up(model)
        self.model, *optimizers = acc.prepare(model, *phase_optimizers(model, optim, acc.device).values())
        self.optimizers = dict(zip(model.training_phases or ("",), optimizers, strict=True))
        self.ema.module.to(acc.device)
        self.generator = torch.Generator(device=acc.device).manual_seed(optim.seed + acc.process_index)
        if checkpoint is not None:
            try:
                restore_run_state(self, checkpoint)
            except (KeyError, TypeError, IndexError, AttributeError) as err:
                raise CheckpointError(f"{checkpoint.path} has no usable training state ({type(err).__name__}: "
                                      f"{err}); it can be sampled from but not resumed") from None
        self.ema.decay = self.length.ema_decay()
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl")
        self.outputs = RunOutputs(config, self.accelerator, self.metrics)

    # --- set-up ----------------------------------------------------------------------------
    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer of a one-phase model (the first phase's otherwise)."""
        return next(iter(self.optimizers.values()))

    def _speed_up(self, model: GenerativeModel) -> SpeedSettings:
        """channels_last and ``torch.compile`` per ``run``; compilation is probed on one batch
        (forward and backward, no update, on its own random streams) so failures show now."""
        run, acc = self.config.run, self.accelerator

        def probe() -> None:
            indices = torch.arange(self.config.optim.batch_size // acc.num_processes) % len(self.dataset)
            with fork_rng(acc.device), acc.autocast():
                losses = model.losses(self._batch(indices, model), torch.Generator(acc.device).manual_seed(0))
                sum(v.float().mean() for v in losses.values()).backward()
            model.zero_grad(set_to_none=True)

        return speed_up(model, precision=acc.mixed_precision, channels_last=self.channels_last,
                        compile_networks=run.compile, probe=probe)

    # --- the run ---------------------------------------------------------------------------
    @property
    def unwrapped_model(self) -> GenerativeModel:
        return self.accelerator.unwrap_model(self.model)

    @property
    def process(self) -> Any:
        """The model's forward process (with its fitted state), for figures and reports."""
        return self.ema.module.process

    def train(self) -> dict[str, Any]:
        """Run until the run's step count (or a stop signal); return a summary dict.

        Summary keys: steps, steps_this_run, wall_time_s, train_time_s (time in training
        steps), images_per_s, final_loss, skipped, interrupted (None or the signal name),
        checkpoint, out_dir, tuned_grids ((TunedGrid, seconds) per ``run.tune_steps`` entry),
        speed (the precision, memory format and compiled networks used), budget (None, or the
        budget's seconds, the training seconds used, the estimated steps and the step at
        which they were estimated, and whether it overran).
        """
        with reproducible(self.config.run, self.config.optim.seed, self.accelerator, self.rng_to_restore), \
                StopRequest() as stop:
            self._prepare_out_dir()
            if self.outputs.eval_due(self.step):  # resumed at an evaluation step: a stop signal may have come before it
                self.outputs.evaluate(self.ema.module, self.step, unless_logged=True)
            start_step, t0 = self.step, time.perf_counter()
            stopped_by, train_time = self._loop(stop)
            wall = time.perf_counter() - t0
            self._check_finite()
            if self.checkpoint is None or not self.checkpoint.name.endswith(step_dir_name(self.step)):
                self.save()
            tuned: list[tuple[TunedGrid, float]] = []
            if stopped_by is None and self.step > start_step:
                self.outputs.preview(self.ema.module, self.step)
                tuned = self.outputs.tune_grids(self.ema.module, self.checkpoint)
            self.outputs.plot_loss()
        images = (self.step - start_step) * self.config.optim.batch_size
        return {
            "steps": self.step,
            "steps_this_run": self.step - start_step,
            "wall_time_s": wall,
            "train_time_s": train_time,
            "images_per_s": images / train_time if train_time > 0 else 0.0,
            "final_loss": self.last_loss,
            "skipped": self.skipped,
            "interrupted": stopped_by,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "out_dir": str(self.out_dir),
            "tuned_grids": tuned,
            "speed": self.speed,
            "budget": self.length.summary(),
            "fitted": self.fitted,
        }

    def _finished(self) -> bool:
        """Whether the run is done: its step count reached, or (any rank) overran its time budget."""
        total = self.length.total_steps
        return self.overran or (total is not None and self.step >= total)

    def _loop(self, stop: StopRequest) -> tuple[str | None, float]:
        """Train until finished or stopped; returns (signal name or None, seconds in training steps)."""
        cfg, start = self.config, self.step
        batches = iter(self.sampler)
        clock, train_time = time.perf_counter, 0.0
        bar = tqdm(total=self.length.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (cfg.run.progress and self.accelerator.is_main_process))
        with bar:
            while not self._finished():
                t = clock()
                self.length.start_step()
                self._train_step(batches)
                self.step += 1
                if self.length.end_step(self.step, self.accelerator):  # a budget run's length is now known
                    self.ema.decay = self.length.ema_decay()
                    bar.total = self.length.total_steps
                if self.budget is not None:
                    bar.set_description(f"{format_duration(self.budget.left())} left", refresh=False)
                train_time += clock() - t
                bar.update(1)
                signalled = self._poll(stop)
                if self.step % cfg.run.log_every == 0 or self._finished():
                    self._log((self.step - start) * cfg.optim.batch_size / max(train_time, 1e-9), bar)
                if signalled:
                    return stop.signal_name or "signal", train_time
                if self.outputs.eval_due(self.step):
                    self.outputs.evaluate(self.ema.module, self.step)
                if cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0:
                    self.save()
                if cfg.run.sample_every and self.step % cfg.run.sample_every == 0:
                    self.outputs.preview(self.ema.module, self.step)
        if self.overran and self.step < (self.length.total_steps or 0):
            warnings.warn(f"optim.time_budget={self.config.optim.time_budget!r} ran out at step {self.step} of the "
                          f"{self.length.total_steps} estimated after the first steps (the machine got slower); the LR "
                          "had not finished decaying", stacklevel=2)
        return None, train_time

    def _train_step(self, batches: Iterator[torch.Tensor]) -> None:
        """One training step: one optimizer update per phase (one for most families), or, with
        ``run.on_nonfinite: skip``, a skipped non-finite batch."""
        batch = self._batch(next(batches))
        lr = self.length.learning_rate(self.step)
        for phase, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] = lr
            if not self._update(batch, phase, optimizer):
                return
        self.unwrapped_model.after_step()
        self.ema.update(self.unwrapped_model)
        self.window.count += 1
        self.last_batch = batch

    def _update(self, batch: tuple[torch.Tensor, dict[str, torch.Tensor] | None], phase: str,
                optimizer: torch.optim.Optimizer) -> bool:
        """Back-propagate the sum of ``phase``'s losses and step its optimizer; whether it stepped."""
        acc, cfg = self.accelerator, self.config
        skip_mode = cfg.run.on_nonfinite == "skip"
        with acc.autocast():
            phase_arg = {"phase": phase} if phase else {}
            losses = self.model(batch, self.generator, **phase_arg)  # {name: (b,)}; through DDP when distributed
            loss = sum(value.float().mean() for value in losses.values())
        if skip_mode:  # decide before the update: one sync per phase
            global_loss = acc.reduce(loss.detach().clone(), reduction="mean").item()
            if not math.isfinite(global_loss):
                self._non_finite("loss", global_loss)
                return False
        acc.backward(loss)
        max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grad_norm = acc.clip_grad_norm_(params, max_norm)
        if skip_mode and not math.isfinite(float(grad_norm)) and acc.scaler is None:  # fp16: the scaler skips
            self._non_finite("gradient norm", float(grad_norm))
            return False
        if not skip_mode:  # with fp16 the loss scaler skips non-finite gradients itself
            self.watch.observe(self.step + 1, loss, torch.as_tensor(grad_norm if acc.scaler is None else 0.0))
        optimizer.step()
        self.model.zero_grad(set_to_none=True)  # every gradient: G's loss also reaches D's parameters
        if acc.optimizer_step_was_skipped:
            return False
        self.window.add(loss, losses)
        self.last_grad_norm = grad_norm
        return True

    def _batch(self, indices: torch.Tensor, model: GenerativeModel | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """This rank's images (b, C, H, W) on the device, and their class labels if the model takes them
        (dropping them for guidance training is the model's ``conditioning.drop``)."""
        model = model if model is not None else self.unwrapped_model
        x0, labels = self.train_data.batch(indices.to(self.train_data.images.device))
        x0 = x0.to(self.accelerator.device, non_blocking=True)
        if self.channels_last and x0.dim() == 4:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        if self.config.data.hflip:
            x0 = random_hflip(x0, generator=self.generator)
        if not model.conditioning.is_conditional or labels is None:
            return x0, None
        return x0, {"class_labels": labels.to(self.accelerator.device, non_blocking=True)}

    def _check_finite(self) -> None:
        """``NonFiniteError`` if any rank saw a non-finite loss or gradient norm (one sync)."""
        first = self.watch.first(self.accelerator.gather if self.accelerator.num_processes > 1 else None)
        if first is not None:
            step, quantity, value = first
            self._non_finite(quantity, value, step=step)

    def _non_finite(self, quantity: str, value: float, *, step: int | None = None) -> None:
        self.model.zero_grad(set_to_none=True)
        if self.config.run.on_nonfinite == "skip":
            self.skipped += 1
            return
        last = f"last good checkpoint: {self.checkpoint}" if self.checkpoint else "no checkpoint was saved yet"
        step = self.step + 1 if step is None else step
        raise NonFiniteError(f"non-finite {quantity} ({value}) at step {step}; training stopped, {last}; "
                             "lower optim.lr, check the data, or set run.on_nonfinite: skip")

    def _poll(self, stop: StopRequest) -> bool:
        """Whether any rank got SIGINT/SIGTERM; sets ``self.overran`` if any rank's training time
        overran the budget. All ranks agree (one all-reduce), so they stop at the same step."""
        flags = [float(bool(stop)), float(self.budget is not None and self.budget.overrun())]
        signalled, self.overran = (v > 0 for v in agree(self.accelerator, flags, "sum"))
        return signalled

    # --- outputs ---------------------------------------------------------------------------
    def _prepare_out_dir(self) -> None:
        if self.accelerator.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(self.config.to_yaml(), encoding="utf-8")
            if self.metrics.path.exists():
                self.metrics.truncate_after(self.step)
        self.accelerator.wait_for_everyone()

    def _log(self, images_per_s: float, bar: Any) -> None:
        self._check_finite()
        acc = self.accelerator
        means = self.window.means((lambda v: acc.reduce(v, reduction="mean")) if acc.num_processes > 1 else None)
        self.last_loss = means.pop("loss")
        grad_norm = None if self.last_grad_norm is None else float(self.last_grad_norm)
        record = {
            "step": self.step,
            "loss": self.last_loss,
            "lr": self.length.learning_rate(self.step - 1),
            "grad_norm": grad_norm,
            "skipped": self.skipped,
            "images_per_s": round(images_per_s, 2),
        }
        if len(means) > 1:  # the terms of a loss with several (a VAE's reconstruction and KL, a GAN's D and G)
            record["losses"] = means
        if self.last_batch is not None:
            record.update(self.unwrapped_model.diagnostics(self.last_batch))
        self.window = LossWindow(acc.device)
        if acc.is_main_process:
            self.metrics.append(record)
            loss_text = "nan" if self.last_loss is None else f"{self.last_loss:.4f}"
            bar.set_postfix(loss=loss_text, img_s=f"{images_per_s:.0f}")

    def save(self) -> Path:
        """Checkpoint now to ``out_dir/checkpoints/step_XXXXXXX`` (main process writes; never
        from non-finite weights)."""
        self._check_finite()
        state = capture_run_state(self)
        if self.accelerator.num_processes > 1:
            checksums = replica_checksums(self)
            if not bool((checksums == checksums[0]).all()):
                raise RuntimeError(f"weights or EMA differ between processes at step {self.step} (a difflab bug)")
            state["replica_checksums"] = checksums
        path = self.out_dir / "checkpoints" / step_dir_name(self.step)
        if self.accelerator.is_main_process:
            path = save_run_checkpoint(self.out_dir / "checkpoints", keep_last=self.config.run.keep_last,
                                       config=self.config, model=self.unwrapped_model, ema_model=self.ema.module,
                                       step=self.step, training_state=state)
            self.outputs.plot_loss()
        self.accelerator.wait_for_everyone()
        self.checkpoint = path
        return path
