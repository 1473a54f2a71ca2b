"""Issue 6, points 1 and 6: exact resume after SIGKILL, graceful stop on SIGINT/SIGTERM.

Real subprocesses running ``python -m difflab.cli train`` are killed; the resumed run must
end with the same weights, EMA, optimizer state and loss log as an uninterrupted run, bit
for bit (CPU, deterministic mode, one thread).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from difflab.cli.main import main
from difflab.training import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}

# Every random stream is exercised: dropout (global RNG), hflip, stratified t, noise, label drop.
CONFIG = """
network: {base_channels: 16, dropout: 0.1, num_classes: 10}
data: {hflip: true}
objective: {prediction: v, time_sampling: stratified, cond_drop_prob: 0.2}
optim: {batch_size: 16, steps: STEPS, warmup_steps: 5, seed: 3}
run: {log_every: 1, checkpoint_every: 3, keep_last: 2, progress: false, num_threads: 1,
      sample: {steps: 2, num: 4}, eval_every: 10,
      eval: {metrics: [fd, kid], num_samples: 16, steps: 2, cache_dir: CACHE}}
"""


def write_config(tmp_path: Path, steps: int) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG.replace("STEPS", str(steps)).replace("CACHE", str(tmp_path / "cache")))
    return path


def train_command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "difflab.cli", "train", "--config", str(config), f"run.out_dir={out}", *extra]


def logged_step(out: Path) -> int:
    """Highest step in metrics.jsonl (0 if none yet)."""
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return max(steps, default=0)


def start_and_wait(command: list[str], out: Path, at_step: int, timeout: float = 120) -> subprocess.Popen:
    """Start ``command`` and return once its log reaches ``at_step`` (fails if it ends first)."""
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while logged_step(out) < at_step:
        if proc.poll() is not None:
            pytest.fail(f"training ended (code {proc.returncode}) before step {at_step}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"training did not reach step {at_step} in {timeout} s")
        time.sleep(0.005)
    return proc


def curve(out: Path) -> list[tuple]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["lr"], r["grad_norm"], r["skipped"]) for r in records if "loss" in r]


def evaluations(out: Path) -> list[tuple]:
    """(step, numbers, protocol) of the periodic evaluations, in log order."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["eval"], r["protocol"]) for r in records if "eval" in r]


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigkill_then_resume_is_bit_exact(tmp_path):
    steps = 40
    config = write_config(tmp_path, steps)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert main(train_command(config, reference)[3:]) == 0  # uninterrupted, in this process

    for kill_at, resume in ((7, ()), (22, ("--resume",))):  # a fresh run, then a resumed one
        proc = start_and_wait(train_command(config, killed, *resume), killed, kill_at)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert logged_step(killed) < steps
    assert main([*train_command(config, killed)[3:], "--resume"]) == 0  # finish in this process

    ref, got = load_checkpoint(reference), load_checkpoint(killed)
    assert ref.step == got.step == steps
    assert_same_tensors(ref.model.state_dict(), got.model.state_dict())
    assert_same_tensors(ref.ema_model.state_dict(), got.ema_model.state_dict())
    ref_opt, got_opt = ref.training_state["optimizer"], got.training_state["optimizer"]
    for i in ref_opt["state"]:
        assert_same_tensors(ref_opt["state"][i], got_opt["state"][i])
    assert_same_tensors(ref.training_state["rng"], got.training_state["rng"])
    assert ref.training_state["sampler"] == got.training_state["sampler"] == {"seed": 3, "step": steps}
    assert curve(reference) == curve(killed)
    assert evaluations(reference) == evaluations(killed) and [e[0] for e in evaluations(killed)] == [10, 20, 30, 40]
    assert [r[0] for r in curve(killed)] == list(range(1, steps + 1))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_exits_0(tmp_path, sig):
    config = write_config(tmp_path, 100_000)
    out = tmp_path / "run"
    proc = start_and_wait(train_command(config, out), out, 3)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    stopped = load_checkpoint(out)
    assert f"stopped by {sig.name} at step {stopped.step}; checkpoint saved to" in stderr
    assert 3 <= stopped.step < 100_000 and logged_step(out) == stopped.step
    resume_line = next(line for line in stderr.splitlines() if line.startswith("resume with: "))
    argv = shlex.split(resume_line[len("resume with: "):])
    assert argv[:2] == ["difflab", "train"] and "--resume" in argv
    # the printed command continues the run (here for two more steps)
    assert main([*argv[1:], f"optim.steps={stopped.step + 2}"]) == 0
    assert load_checkpoint(out).step == stopped.step + 2
