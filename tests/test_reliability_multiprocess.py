"""Issue 6, point 5: two CPU processes with gloo.

``accelerate launch --cpu`` starts several processes only through mpirun; on a machine
without a GPU ``accelerate launch --multi_gpu --num_processes 2`` (torchrun underneath)
starts two, and the trainer's ``Accelerator(cpu=True)`` makes them a gloo group.

One run of 6 steps checkpoints at 3 and 6; a second launch resumes the step-3 checkpoint
into another folder and must reach the first run's step-6 weights and EMA bit for bit.
Checkpoints are written once (by rank 0) and record that both ranks held the same weights
and EMA; the data is sharded (each rank gets its half of every global batch).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from difflab.data import ResumableBatchSampler
from difflab.training import load_checkpoint
from difflab.training.checkpoint import list_checkpoints

REPO = Path(__file__).resolve().parents[1]
CONFIG = """
network: {base_channels: 16, dropout: 0.1}
optim: {batch_size: 16, steps: 6, warmup_steps: 2, seed: 5}
run: {log_every: 1, checkpoint_every: 3, keep_last: 5, progress: false, num_threads: 1,
      sample: {steps: 2, num: 4}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
               "--main_process_port", str(free_port()),
               "-m", "difflab.cli", "train", "--config", str(config), f"run.out_dir={out}", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_processes_train_shard_agree_and_resume_exactly(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    first, second = tmp_path / "first", tmp_path / "second"

    done = launch(config, first)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained 6 steps") == 1  # the summary is printed by rank 0 only
    assert [p.name for p in list_checkpoints(first / "checkpoints")] == ["step_0000003", "step_0000006"]
    assert not [p for p in (first / "checkpoints").iterdir() if p.name.startswith(".")]
    lines = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]  # one log line per step, not per rank

    ckpt = load_checkpoint(first)
    state = ckpt.training_state
    assert state["num_processes"] == 2
    assert state["rng"]["generator"].shape[0] == 2  # each rank's stream is saved
    assert not torch.equal(state["rng"]["generator"][0], state["rng"]["generator"][1])  # seeds 5 and 6
    checksums = state["replica_checksums"]  # weights and EMA of both ranks, per tensor
    assert checksums.shape[0] == 2 and torch.equal(checksums[0], checksums[1])

    done = launch(config, second, "--resume", str(first / "checkpoints" / "step_0000003"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained 3 steps (total 6)" in done.stdout
    resumed = load_checkpoint(second)
    for a, b in ((ckpt.model, resumed.model), (ckpt.ema_model, resumed.ema_model)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [json.loads(line)["loss"] for line in (second / "metrics.jsonl").read_text().splitlines()] == [
        r["loss"] for r in lines[3:]
    ]


def test_ranks_take_disjoint_halves_of_each_global_batch():
    """The sharding the trainer relies on (rank r of 2 gets half r of the global batch)."""
    ranks = [ResumableBatchSampler(100, 16, seed=5, num_replicas=2, rank=r) for r in (0, 1)]
    single = ResumableBatchSampler(100, 16, seed=5)
    for step in range(12):
        halves = [s.indices(step) for s in ranks]
        assert set(halves[0].tolist()).isdisjoint(halves[1].tolist())
        assert torch.equal(torch.cat(halves), single.indices(step))


FAMILY_CONFIGS = {  # families with two optimizers (GAN) and with collectives in after_step (VQ-VAE)
    "gan": """
data: {name: digits}
model: {family: gan}
network: {kind: dcgan, resolution: 8, latent_dim: 8, generator_channels: 16, discriminator_channels: 8}
optim: {batch_size: 16, steps: 4, warmup_steps: 0, seed: 5, betas: [0.5, 0.999]}
run: {log_every: 1, checkpoint_every: 2, keep_last: 5, progress: false, num_threads: 1, sample: {sampler: auto, num: 4}}
""",
    "vqvae": """
data: {name: digits}
model: {family: vqvae}
network: {kind: vqvae, resolution: 8, latent_channels: 4, base_channels: 8, levels: 1, codebook_size: 16,
          prior_hidden_channels: 8, prior_layers: 1}
optim: {batch_size: 16, steps: 4, warmup_steps: 1, seed: 5}
run: {log_every: 1, checkpoint_every: 2, keep_last: 5, progress: false, num_threads: 1, sample: {sampler: auto, num: 4}}
""",
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_two_processes_train_a_gan_and_a_vqvae_in_agreement_and_resume_exactly(family, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(FAMILY_CONFIGS[family])
    first, second = tmp_path / "first", tmp_path / "second"
    done = launch(config, first)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = load_checkpoint(first)
    checksums = ckpt.training_state["replica_checksums"]
    assert checksums.shape[0] == 2 and torch.equal(checksums[0], checksums[1])
    done = launch(config, second, "--resume", str(first / "checkpoints" / "step_0000002"))
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = load_checkpoint(second)
    for a, b in ((ckpt.model, resumed.model), (ckpt.ema_model, resumed.ema_model)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)  # buffers too: a VQ codebook's idle counts
