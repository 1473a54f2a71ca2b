"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

TINY_RUN = ["network.base_channels=16", "optim.batch_size=16", "optim.steps=2", "optim.warmup_steps=1",
            "run.progress=false", "run.sample.steps=2", "run.sample.num=4"]


def train_tiny_run(out: Path) -> Path:
    """A 2-step training run of a tiny UNet on digits into ``out`` (its checkpoint is what the CLI tests read)."""
    from difflab.training import Trainer, load_config

    Trainer(load_config(None, [*TINY_RUN, f"run.out_dir={out}"])).train()
    return out


def assert_train_refused(argv: list[str], fragment: str, out: Path, capsys) -> None:
    """``difflab train <argv> run.out_dir=<out>`` exits 2 with one line on stderr holding
    ``fragment``, and writes nothing."""
    from difflab.cli.main import main

    assert main(["train", *argv, f"run.out_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert not out.exists()


def assert_samples_but_has_no_likelihood(argv: list[str], tmp_path: Path, capsys) -> None:
    """A model trained by ``difflab train <argv>`` samples through ``difflab sample``, and
    ``difflab eval --metrics nll`` exits 2 saying it has no likelihood."""
    from difflab.cli.main import main

    out = tmp_path / "run"
    assert main(["train", *argv, f"run.out_dir={out}"]) == 0
    assert main(["eval", "--checkpoint", str(out), "--metrics", "nll", "--out", str(tmp_path / "ev")]) == 2
    assert "no likelihood" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(out), "--num", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").exists()


def assert_resume_is_bit_exact(config: str, overrides: list[str], tmp_path: Path, before_resumed_run=None) -> None:
    """4 steps of ``config`` in one run, and 2 steps then 2 more resumed, end with identical
    weights and the same training log, every step logged (but for throughput);
    ``before_resumed_run(trainer)`` may inspect the resumed trainer before it trains."""
    import json

    import torch

    from difflab.models import load_model
    from difflab.training import Trainer, load_config

    overrides = [*overrides, "run.log_every=1"]  # the same log windows in both runs
    Trainer(load_config(config, [*overrides, "optim.steps=4", f"run.out_dir={tmp_path / 'straight'}"])).train()
    Trainer(load_config(config, [*overrides, "optim.steps=2", f"run.out_dir={tmp_path / 'resumed'}"])).train()
    resumed = Trainer(load_config(config, [*overrides, "optim.steps=4", f"run.out_dir={tmp_path / 'resumed'}"]),
                      resume="auto")
    assert resumed.step == 2
    if before_resumed_run is not None:
        before_resumed_run(resumed)
    resumed.train()
    a, b = load_model(tmp_path / "straight"), load_model(tmp_path / "resumed")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    logs = [[{k: v for k, v in json.loads(line).items() if k != "images_per_s"}
             for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("straight", "resumed")]
    assert [record["step"] for record in logs[0]] == [1, 2, 3, 4] and logs[0] == logs[1]


def assert_every_optimizer_restored(trainer) -> None:
    """Each of a resumed trainer's optimizers (one per training phase) holds Adam moments again,
    for every one of its parameters."""
    assert trainer.optimizers
    for optimizer in trainer.optimizers.values():
        state = optimizer.state_dict()["state"]
        assert len(state) == sum(len(group["params"]) for group in optimizer.param_groups)
        assert any(float(s["exp_avg"].abs().sum()) > 0 for s in state.values())
