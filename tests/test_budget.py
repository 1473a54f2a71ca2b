"""Issue 12: training to a time budget, with an injected clock (no wall-time flakiness).

The fake clock advances one second per reading and the trainer reads it twice per step
(before and after), so every step "takes" exactly one second and the step estimate is exact.
"""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch

from difflab.errors import ConfigError
from difflab.training import Trainer, load_checkpoint, load_config, parse_duration
from difflab.training.schedule import budget_warmup, ema_decay_for, learning_rate

TINY = ["network.base_channels=16", "optim.batch_size=16", "optim.warmup_steps=4", "optim.steps=null",
        "run.log_every=1", "run.progress=false", "run.sample.steps=2", "run.sample.num=4", "run.num_threads=1"]


class FakeClock:
    """Seconds that advance by ``tick`` at each reading (``tick`` can change mid-run)."""

    def __init__(self, tick: float = 0.5) -> None:
        self.now, self.tick = 1000.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def budget_trainer(out, budget="20s", *extra, resume=None, tick=0.5):
    config = load_config(None, [*TINY, f"optim.time_budget={budget}", f"run.out_dir={out}", *extra])
    return Trainer(config, resume=resume, clock=FakeClock(tick))


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400),
                                                 ("1.5m", 90), (45, 45)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10 minutes", "m", "", "0s", "-5s", "5x"])
def test_bad_duration_is_a_one_line_config_error(text):
    with pytest.raises(ConfigError, match="optim.time_budget") as err:
        parse_duration(text)
    assert "\n" not in str(err.value)


def test_steps_and_budget_are_exclusive_and_steps_default_to_2000():
    assert load_config(None, []).optim.steps == 2000
    assert load_config(None, ["optim.time_budget=5m"]).optim.steps is None
    with pytest.raises(ConfigError, match="both set"):
        load_config(None, ["optim.time_budget=5m", "optim.steps=10"])


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_decay_ends_exactly_at_min_lr_and_never_rises_after_warmup(decay):
    lrs = [learning_rate(s, 1e-3, 10, 100, decay, 0.1) for s in range(100)]
    assert lrs[:10] == pytest.approx([1e-3 * (s + 1) / 10 for s in range(10)], rel=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == 1e-3 * 0.1
    assert learning_rate(50, 1e-3, 10, None, decay, 0.1) == 1e-3  # before the estimate: no decay yet
    assert learning_rate(50, 1e-3, 10, 100, "none", 0.1) == 1e-3


def test_ema_length_and_warmup_follow_the_run_length():
    assert ema_decay_for(40, 0.999, 0.1) == pytest.approx(0.75)  # averages over ~4 of 40 steps
    assert ema_decay_for(10**6, 0.999, 0.1) == 0.999  # never longer than optim.ema_decay
    assert budget_warmup(100, 40) == 2 and budget_warmup(100, 10**5) == 100 and budget_warmup(100, None) == 100


def test_budget_run_stops_at_the_budget_with_the_lr_at_its_end_value(tmp_path):
    trainer = budget_trainer(tmp_path / "run")
    summary = trainer.train()
    # 0.5 s per reading, two readings per step: each step takes 0.5 s of the 20 s budget
    assert summary["steps"] == 40 and summary["interrupted"] is None
    b = summary["budget"]
    assert b["total_steps"] == 40 and b["used_s"] == pytest.approx(20.0) and not b["overran"]
    assert b["estimated_at"] == 7  # 2 untimed steps, then 5 timed ones (>= 0.6 s = 3% of the budget)
    lr = trainer.optimizer.param_groups[0]["lr"]
    assert lr == trainer.config.optim.lr * trainer.config.optim.min_lr_ratio
    assert trainer.ema.decay == pytest.approx(ema_decay_for(40, 0.999, 0.1)) == trainer.length.ema_decay()
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 40 and ckpt.training_state["budget"]["total_steps"] == 40


def test_resumed_budget_run_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path):
    whole = budget_trainer(tmp_path / "whole")
    whole.train()
    part = budget_trainer(tmp_path / "part")
    part._poll = lambda stop: part.step == 23  # as if SIGINT came at step 23
    assert part.train()["interrupted"] is not None
    resumed = budget_trainer(tmp_path / "part", resume="auto", tick=7.0)  # a different clock origin and pace
    resumed.budget.clock = FakeClock(0.5)
    summary = resumed.train()
    assert summary["steps"] == 40 and summary["steps_this_run"] == 17
    for a, b in zip(whole.unwrapped_model.state_dict().values(), resumed.unwrapped_model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    for a, b in zip(whole.ema.module.state_dict().values(), resumed.ema.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    log = lambda t: [line for line in (t.out_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    strip = lambda lines: [line.split('"images_per_s"')[0] for line in lines]
    assert strip(log(whole)) == strip(log(resumed))


def test_a_slower_machine_stops_at_the_budget_with_a_warning(tmp_path):
    trainer = budget_trainer(tmp_path / "run", "10s")
    original = trainer.budget.stop

    def slow_down(step):  # after the estimate every step takes three times as long
        if trainer.budget.total_steps is not None:
            trainer.budget.clock.tick = 1.5
        original(step)

    trainer.budget.stop = slow_down
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = trainer.train()
    assert summary["budget"]["overran"] and summary["steps"] < summary["budget"]["total_steps"]
    assert summary["budget"]["used_s"] <= 10 * 1.1 + 1.5
    assert any("ran out at step" in str(w.message) for w in caught)
    assert load_checkpoint(tmp_path / "run").step == summary["steps"]
    assert math.isfinite(summary["final_loss"])


def test_cli_budget_flag_trains_to_a_budget_and_reports_it(tmp_path, capsys):
    from difflab.cli.main import main

    out = tmp_path / "cli"
    code = main(["train", "--config", "digits-gauss", "--budget", "2s", f"run.out_dir={out}", *TINY])
    assert code == 0
    text = capsys.readouterr().out
    assert "time budget 2 s:" in text and "steps estimated after the first" in text
    assert load_checkpoint(out).config.optim.time_budget == "2s"


def test_resume_with_another_budget_is_refused_in_one_line(tmp_path):
    from difflab.errors import CheckpointError

    trainer = budget_trainer(tmp_path / "run", "5s")
    trainer._poll = lambda stop: trainer.step == 3
    trainer.train()
    with pytest.raises(CheckpointError, match="changed from '5s' to '9s'") as err:
        budget_trainer(tmp_path / "run", "9s", resume="auto")
    assert "\n" not in str(err.value)
    Trainer(load_config(None, [*TINY[:3], "optim.steps=2", *TINY[4:], f"run.out_dir={tmp_path / 'steps'}"])).train()
    with pytest.raises(CheckpointError, match="not a time-budget run"):
        budget_trainer(tmp_path / "steps", "9s", resume="auto")


def test_every_family_trains_to_a_budget(tmp_path):
    """The budget lives in the trainer, not in a family: IHDM (its own loss and sampler) runs to it too."""
    trainer = budget_trainer(tmp_path / "ihdm", "6s", "process.kind=heat", "process.K=5", "run.sample.steps=5",
                             "run.sample.sampler=ihdm", "run.sample.clip_x0=null")
    summary = trainer.train()
    assert trainer.unwrapped_model.family == "ihdm"
    assert summary["steps"] == summary["budget"]["total_steps"] == 12 and not summary["budget"]["overran"]
    assert trainer.optimizer.param_groups[0]["lr"] == trainer.config.optim.lr * trainer.config.optim.min_lr_ratio


def test_cli_budget_beside_an_explicit_step_count_exits_2_and_writes_nothing(tmp_path, capsys):
    from difflab.cli.main import main

    out = tmp_path / "both"
    assert main(["train", "--config", "digits-gauss", "--budget", "1m", "optim.steps=5", f"run.out_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "both set" in err and not out.exists()
