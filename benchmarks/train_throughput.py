"""Training and sampling throughput of difflab's UNet vs diffusers' ``UNet2DModel`` (images/s),
for each speed option alone and combined.

Training step = sample noise and times, noise the batch, forward, MSE to the noise, backward,
AdamW step. Sampling = a 5-step DDIM loop (``difflab.samplers.sample`` vs diffusers'
``DDIMScheduler``) under ``torch.inference_mode``. Both networks have the same layout
(channels per level, residual blocks per level, attention at the same resolution,
scale-shift time conditioning, dropout) so their parameter counts are nearly equal, and both
run at the same batch size in the same process with the same options: bf16 autocast,
channels_last and ``torch.compile`` (inductor, default mode) are applied to both sides alike,
so the ratio measures difflab, not the flags. The two sides alternate in rounds and the
median round is reported, so load from other processes hits both alike.

Options (``--modes``): fp32 (plain), channels_last, bf16 (autocast; emulated, and so slow,
on CPUs without AVX512-BF16/AMX), compile, and combined (every option this device runs
natively: bf16 only where it is native).

difflab's noising is written inline (cosine schedule ``alpha_t = cos(pi t / 2)``,
``sigma_t = sin(pi t / 2)``, ``z_t = alpha_t x + sigma_t eps``) so that this script needs
only ``difflab.nn``; diffusers uses ``DDPMScheduler.add_noise`` with integer timesteps.

    PYTHONPATH=src python benchmarks/train_throughput.py --threads 2
    PYTHONPATH=src python benchmarks/train_throughput.py --modes fp32 compile --tasks train
    PYTHONPATH=src python benchmarks/train_throughput.py --modes fp32 --tasks train --optimizer library \
        --out benchmarks/results/train_throughput_optimizer.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from difflab.nn import UNet, UNetConfig, count_parameters

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"


@dataclass(frozen=True)
class Case:
    """One image size and the matching architecture of both libraries."""

    name: str
    channels: int
    size: int
    channel_mult: tuple[int, ...]
    attention_level: int
    base_channels: int = 64
    head_channels: int = 32
    num_res_blocks: int = 2
    dropout: float = 0.1


CASES = [
    Case("8x8x1", channels=1, size=8, channel_mult=(1, 2), attention_level=1),
    Case("28x28x1", channels=1, size=28, channel_mult=(1, 2, 2), attention_level=1),
]


def difflab_unet(case: Case) -> UNet:
    """difflab UNet with the case's layout."""
    return UNet(
        UNetConfig(
            in_channels=case.channels,
            base_channels=case.base_channels,
            channel_mult=case.channel_mult,
            num_res_blocks=case.num_res_blocks,
            attention_resolutions=(case.size // 2**case.attention_level,),
            dropout=case.dropout,
            head_channels=case.head_channels,
            resolution=case.size,
        )
    )


def diffusers_unet(case: Case) -> nn.Module:
    """diffusers UNet2DModel with the same layout (imported here: a benchmark-only dependency)."""
    from diffusers import UNet2DModel

    levels = range(len(case.channel_mult))
    attn = [level == case.attention_level for level in levels]
    return UNet2DModel(
        sample_size=case.size,
        in_channels=case.channels,
        out_channels=case.channels,
        block_out_channels=tuple(case.base_channels * m for m in case.channel_mult),
        layers_per_block=case.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        attention_head_dim=case.head_channels,
        resnet_time_scale_shift="scale_shift",
        dropout=case.dropout,
    )


def difflab_step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, g: torch.Generator) -> None:
    """One training step of eps-prediction with an inline cosine VP schedule."""
    eps = torch.randn(x.shape, generator=g).contiguous(memory_format=mem_format(x))
    t = torch.rand(x.shape[0], generator=g)
    alpha = torch.cos(0.5 * math.pi * t)[:, None, None, None]
    sigma = torch.sin(0.5 * math.pi * t)[:, None, None, None]
    z = alpha * x + sigma * eps
    loss = F.mse_loss(net(z, t).float(), eps)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def diffusers_step_fn() -> Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Generator], None]:
    """One training step of diffusers' DDPM recipe: integer t, ``add_noise``, eps-prediction."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000)

    def step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, g: torch.Generator) -> None:
        eps = torch.randn(x.shape, generator=g).contiguous(memory_format=mem_format(x))
        t = torch.randint(0, 1000, (x.shape[0],), generator=g)
        z = scheduler.add_noise(x, eps, t)
        loss = F.mse_loss(net(z, t).sample.float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def difflab_sample_fn(steps: int) -> Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]:
    """``steps``-step DDIM with difflab's sampler API (cosine VP process, eps-prediction)."""
    from difflab.processes import GaussianDiffusion
    from difflab.samplers import sample

    process = GaussianDiffusion()

    def draw(net: nn.Module, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=g).contiguous(memory_format=mem_format(x))
        return sample(net, process, tuple(x.shape), "ddim", steps, noise=noise)

    return draw


def diffusers_sample_fn(steps: int) -> Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]:
    """``steps``-step DDIM with diffusers' ``DDIMScheduler`` (the loop of its ``DDIMPipeline``)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(steps)

    def draw(net: nn.Module, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        z = torch.randn(x.shape, generator=g).contiguous(memory_format=mem_format(x))
        for t in scheduler.timesteps:
            eps = net(z, t.expand(z.shape[0])).sample
            z = scheduler.step(eps.float(), t, z).prev_sample
        return z

    return draw


def mem_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4 \
        and not x.is_contiguous() else torch.contiguous_format


@dataclass(frozen=True)
class Mode:
    """One combination of speed options, applied to both sides."""

    name: str
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False


def modes(native_bf16: bool) -> dict[str, Mode]:
    return {
        "fp32": Mode("fp32"),
        "channels_last": Mode("channels_last", channels_last=True),
        "bf16": Mode("bf16", bf16=True),
        "compile": Mode("compile", compile=True),
        "combined": Mode("combined", bf16=native_bf16, channels_last=True, compile=True),
    }


def rate(fn: Callable[[], object], images: int, repeats: int) -> float:
    """Images per second of ``repeats`` calls of ``fn``, each producing ``images`` images."""
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return repeats * images / (time.perf_counter() - start)


def bench(case: Case, mode: Mode, task: str, args: argparse.Namespace) -> dict:
    """Alternate timing rounds of both libraries on one case, mode and task; median images/s per side."""
    torch.manual_seed(0)
    nets = {"difflab": difflab_unet(case), "diffusers": diffusers_unet(case)}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, case.channels, case.size, case.size, generator=g)
    if mode.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    calls, compile_s = {}, {}
    for name, net in nets.items():
        if mode.channels_last:
            net.to(memory_format=torch.channels_last)
        if task == "train":
            net.train()
            opt = optimizer(name, net, args.optimizer)
            step = difflab_step if name == "difflab" else diffusers_step_fn()
            fn = (lambda step=step, net=net, opt=opt: step(net, opt, x, g))
        else:
            net.eval()
            draw = (difflab_sample_fn if name == "difflab" else diffusers_sample_fn)(args.sample_steps)
            fn = (lambda draw=draw, net=net: draw(net, x, g))
        calls[name] = wrap(fn, mode, task)
        if mode.compile:
            net.compile()
        t0 = time.perf_counter()
        for _ in range(args.warmup if not slow_bf16(mode) else 1):
            calls[name]()
        compile_s[name] = time.perf_counter() - t0
    repeats = args.steps if task == "train" else 1
    if slow_bf16(mode):
        repeats = 1  # emulated bf16 is ~10x slower: one call per round
    rates: dict[str, list[float]] = {name: [] for name in nets}
    for round_ in range(args.rounds):
        t0 = time.perf_counter()
        for name in nets:
            rates[name].append(rate(calls[name], args.batch_size, repeats))
        if round_ == 0 and time.perf_counter() - t0 > args.slow_round_s:
            break  # a slow mode (emulated bf16, a slow compiled graph): one round is enough to rank it
    result = {"case": case.name, "mode": mode.name, "task": task, "batch_size": args.batch_size,
              "optimizer": args.optimizer if task == "train" else None,
              "bf16": mode.bf16, "channels_last": mode.channels_last, "compile": mode.compile}
    for name, net in nets.items():
        result[f"{name}_params"] = count_parameters(net)
        result[f"{name}_images_per_s"] = statistics.median(rates[name])
        result[f"{name}_rounds_images_per_s"] = rates[name]
        result[f"{name}_warmup_s"] = compile_s[name]
    result["ratio_difflab_over_diffusers"] = result["difflab_images_per_s"] / result["diffusers_images_per_s"]
    print(row(result), flush=True)
    return result


def optimizer(side: str, net: nn.Module, choice: str) -> torch.optim.Optimizer:
    """AdamW for one side: torch's default implementation on both ("same": compares the networks),
    or each library's own ("library": difflab's trainer uses the fused kernel,
    ``difflab.training.optimizer.adamw``; diffusers' training examples use the default one)."""
    if choice == "library" and side == "difflab":
        from difflab.training.optimizer import adamw

        return adamw([{"params": list(net.parameters())}], torch.device("cpu"), lr=1e-4, betas=(0.9, 0.999),
                     weight_decay=0.0)
    return torch.optim.AdamW(net.parameters(), lr=1e-4)


def slow_bf16(mode: Mode) -> bool:
    """Whether ``mode`` asks for bf16 on a CPU that emulates it (then fewer calls are timed)."""
    return mode.bf16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported()


def wrap(fn: Callable[[], object], mode: Mode, task: str) -> Callable[[], object]:
    """``fn`` under the mode's autocast, and under inference_mode for sampling."""

    def call() -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.bf16), \
                (torch.inference_mode() if task == "sample" else contextlib.nullcontext()):
            return fn()

    return call


HEADER = ("| task | case | mode | batch | difflab params | diffusers params | difflab img/s | diffusers img/s "
          "| difflab/diffusers | warm-up s (difflab / diffusers) |\n|---|---|---|---|---|---|---|---|---|---|")


def row(r: dict) -> str:
    return (f"| {r['task']} | {r['case']} | {r['mode']} | {r['batch_size']} | {r['difflab_params']:,} "
            f"| {r['diffusers_params']:,} | {r['difflab_images_per_s']:.1f} | {r['diffusers_images_per_s']:.1f} "
            f"| {r['ratio_difflab_over_diffusers']:.2f} | {r['difflab_warmup_s']:.0f} / {r['diffusers_warmup_s']:.0f} |")


def markdown_table(results: list[dict]) -> str:
    """Results as a markdown table."""
    return "\n".join([HEADER, *(row(r) for r in results)])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=16, help="images per training step / sampling batch")
    p.add_argument("--steps", type=int, default=2, help="timed training steps per round and side")
    p.add_argument("--sample-steps", type=int, default=5, help="DDIM steps per sampling call")
    p.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per side first (they include compilation)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--slow-round-s", type=float, default=30.0,
                   help="time only one round when the first takes longer than this (seconds)")
    p.add_argument("--modes", nargs="+", default=list(modes(False)), choices=list(modes(False)))
    p.add_argument("--tasks", nargs="+", default=["train", "sample"], choices=["train", "sample"])
    p.add_argument("--optimizer", default="same", choices=["same", "library"],
                   help="same: torch's default AdamW on both sides (compares the networks); library: each "
                        "library's own (difflab's trainer fuses it, diffusers' examples do not)")
    p.add_argument("--cases", nargs="+", default=[c.name for c in CASES], choices=[c.name for c in CASES])
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON output path")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    load_before = os.getloadavg()[0]
    print(HEADER, flush=True)
    results: list[dict] = []
    for task in args.tasks:
        for case in (c for c in CASES if c.name in args.cases):
            for m in args.modes:
                results.append(bench(case, modes(native)[m], task, args))
                write(args, results, native, load_before)  # after every row: a partial run keeps its rows
    print(f"\nwrote {args.out}")


def write(args: argparse.Namespace, results: list[dict], native: bool, load_before: float) -> None:
    import diffusers

    meta = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native,
        "threads": args.threads,
        "steps": args.steps,
        "sample_steps": args.sample_steps,
        "rounds": args.rounds,
        "slow_round_s": args.slow_round_s,
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "compile": "torch.compile(backend='inductor', mode=None) on both sides (nn.Module.compile)",
        "optimizer": args.optimizer,
        "bf16": "torch.autocast('cpu', dtype=torch.bfloat16) around each step/sampling call on both sides",
        "device": "cpu",
        "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
