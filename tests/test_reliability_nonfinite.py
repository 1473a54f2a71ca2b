"""Issue 6, point 4: a NaN/Inf loss or gradient stops training (or skips the batch)."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from difflab.cli.main import main
from difflab.training import NonFiniteError, Trainer, load_checkpoint, load_config
from difflab.training.device import make_accelerator

TINY = ["network.base_channels=16", "optim.batch_size=16", "optim.warmup_steps=1", "run.log_every=1",
        "run.progress=false", "run.sample.steps=2", "run.sample.num=4", "run.checkpoint_every=2"]


def trainer_with_nan(tmp_path, at_steps: set[int], where: str, *extra: str) -> Trainer:
    """A Trainer whose network output ("loss") or one gradient ("gradient") is NaN at the
    1-based steps ``at_steps``."""
    trainer = Trainer(load_config(None, [*TINY, f"run.out_dir={tmp_path / 'run'}", *extra]))
    model = trainer.unwrapped_model.network

    def poisoned() -> bool:
        return trainer.step + 1 in at_steps

    if where == "loss":
        model.register_forward_hook(lambda m, i, out: out * math.nan if poisoned() and m.training else out)
    else:
        param = next(model.parameters())
        param.register_hook(lambda g: torch.full_like(g, math.inf) if poisoned() else g)
    return trainer


@pytest.mark.parametrize(("where", "quantity"), [("loss", "loss (nan)"), ("gradient", "gradient norm (inf)")])
def test_stop_names_the_step_and_quantity_and_keeps_the_last_good_checkpoint(tmp_path, where, quantity):
    trainer = trainer_with_nan(tmp_path, {5}, where, "optim.steps=8")
    with pytest.raises(NonFiniteError) as info:
        trainer.train()
    message = str(info.value)
    assert f"non-finite {quantity} at step 5; training stopped, last good checkpoint:" in message
    assert "step_0000004" in message and "\n" not in message
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 4
    assert all(torch.isfinite(p).all() for p in ckpt.model.parameters())


def test_skip_drops_the_batch_counts_it_and_finishes(tmp_path):
    trainer = trainer_with_nan(tmp_path, {3, 4}, "loss", "optim.steps=6", "run.on_nonfinite=skip")
    summary = trainer.train()
    assert summary["steps"] == 6 and summary["skipped"] == 2 and math.isfinite(summary["final_loss"])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in records] == [0, 0, 1, 2, 2, 2]
    assert records[2]["loss"] is None and records[3]["loss"] is None  # no finite loss in those windows
    # only the 4 good batches updated the weights and the EMA
    assert trainer.ema.num_updates == 4
    assert int(trainer.optimizer.state_dict()["state"][0]["step"]) == 4
    assert all(torch.isfinite(p).all() for p in trainer.unwrapped_model.parameters())


def test_skipped_gradient_leaves_weights_unchanged(tmp_path):
    trainer = trainer_with_nan(tmp_path, {1}, "gradient", "optim.steps=1", "run.on_nonfinite=skip")
    before = {k: v.clone() for k, v in trainer.unwrapped_model.state_dict().items()}
    assert trainer.train()["skipped"] == 1
    after = trainer.unwrapped_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cli_divergence_exits_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--config", "digits-gauss", f"run.out_dir={out}", *TINY, "optim.steps=10",
                 "optim.lr=1e30", "optim.warmup_steps=0", "optim.grad_clip=0", "run.checkpoint_every=1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "non-finite loss (inf) at step 2; training stopped, last good checkpoint:" in err
    assert "set run.on_nonfinite: skip" in err
    assert load_checkpoint(out).step == 1


def test_fp16_without_gpu_falls_back_to_fp32_with_a_warning():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: fp16 uses Accelerate's grad scaler there")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        accelerator = make_accelerator("fp16")
    assert accelerator.mixed_precision == "no" and accelerator.scaler is None
    assert any("needs a GPU" in str(w.message) for w in caught)
