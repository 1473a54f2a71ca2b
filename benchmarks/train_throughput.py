"""Training-step throughput of difflab's UNet vs diffusers' ``UNet2DModel`` (images/s, CPU).

One step = sample noise and times, noise the batch, forward, MSE to the noise, backward, AdamW
step. Both networks have the same layout (channels per level, residual blocks per level,
attention at the same resolution, scale-shift time conditioning, dropout) so their parameter
counts are nearly equal, and both run at the same batch size in the same process. The two
sides alternate in rounds and the median round is reported, so load from other processes
hits both alike.

difflab's noising is written inline (cosine schedule ``alpha_t = cos(pi t / 2)``,
``sigma_t = sin(pi t / 2)``, ``z_t = alpha_t x + sigma_t eps``) so that this script needs
only ``difflab.nn``; diffusers uses ``DDPMScheduler.add_noise`` with integer timesteps.

    PYTHONPATH=src python benchmarks/train_throughput.py --threads 2
"""

from __future__ import annotations

import argparse
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

from difflab.nn import UNet, UNetConfig, config_to_dict, count_parameters

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
    eps = torch.randn(x.shape, generator=g)
    t = torch.rand(x.shape[0], generator=g)
    alpha = torch.cos(0.5 * math.pi * t)[:, None, None, None]
    sigma = torch.sin(0.5 * math.pi * t)[:, None, None, None]
    z = alpha * x + sigma * eps
    loss = F.mse_loss(net(z, t), eps)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def diffusers_step_fn() -> Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Generator], None]:
    """One training step of diffusers' DDPM recipe: integer t, ``add_noise``, eps-prediction."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000)

    def step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, g: torch.Generator) -> None:
        eps = torch.randn(x.shape, generator=g)
        t = torch.randint(0, 1000, (x.shape[0],), generator=g)
        z = scheduler.add_noise(x, eps, t)
        loss = F.mse_loss(net(z, t).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def images_per_second(step: Callable, net: nn.Module, x: torch.Tensor, steps: int, g: torch.Generator, opt) -> float:
    """Time ``steps`` training steps and return images per second."""
    start = time.perf_counter()
    for _ in range(steps):
        step(net, opt, x, g)
    return steps * x.shape[0] / (time.perf_counter() - start)


def bench_case(case: Case, args: argparse.Namespace) -> dict:
    """Alternate rounds of both libraries on one case; report median images/s per side."""
    torch.manual_seed(0)
    sides = {"difflab": (difflab_unet(case), difflab_step), "diffusers": (diffusers_unet(case), diffusers_step_fn())}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, case.channels, case.size, case.size, generator=g)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rates: dict[str, list[float]] = {name: [] for name in sides}
    opts = {}
    for name, (net, step) in sides.items():
        net.train()
        if args.channels_last:
            net.to(memory_format=torch.channels_last)
        opts[name] = torch.optim.AdamW(net.parameters(), lr=1e-4)
        images_per_second(step, net, x, args.warmup, g, opts[name])
    for _ in range(args.rounds):
        for name, (net, step) in sides.items():
            rates[name].append(images_per_second(step, net, x, args.steps, g, opts[name]))
    result = {"case": case.name, "batch_size": args.batch_size}
    for name, (net, _) in sides.items():
        result[f"{name}_params"] = count_parameters(net)
        result[f"{name}_images_per_s"] = statistics.median(rates[name])
        result[f"{name}_rounds_images_per_s"] = rates[name]
    result["ratio_difflab_over_diffusers"] = result["difflab_images_per_s"] / result["diffusers_images_per_s"]
    result["difflab_config"] = config_to_dict(sides["difflab"][0].config)
    return result


def markdown_table(results: list[dict]) -> str:
    """Results as a markdown table."""
    lines = [
        "| case | batch | difflab params | diffusers params | difflab img/s | diffusers img/s | difflab/diffusers |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} | {r['batch_size']} | {r['difflab_params']:,} | {r['diffusers_params']:,} "
            f"| {r['difflab_images_per_s']:.1f} | {r['diffusers_images_per_s']:.1f} "
            f"| {r['ratio_difflab_over_diffusers']:.2f} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=32, help="images per training step")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round and side")
    p.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side before timing")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format for both")
    p.add_argument("--cases", nargs="+", default=[c.name for c in CASES], choices=[c.name for c in CASES])
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON output path")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    import diffusers

    load_before = os.getloadavg()[0]
    results = [bench_case(c, args) for c in CASES if c.name in args.cases]
    print(markdown_table(results))
    meta = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "threads": args.threads,
        "steps": args.steps,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "channels_last": args.channels_last,
        "device": "cpu",
        "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
