"""Speed switches for any network: bf16 autocast, channels_last memory format, ``torch.compile``.

Each switch has a per-device default ("auto") and falls back to the plain fp32, contiguous,
eager path with a one-line warning when the device cannot do it, so a config written on one
machine runs on every other. What each buys on the reference CPU and against diffusers is
measured by ``benchmarks/train_throughput.py``.

* bf16 autocast: matrix products and convolutions in bfloat16, reductions in fp32. Fast only
  where the hardware has bf16 units (CUDA with bf16; x86 CPUs with AVX512-BF16 or AMX); on
  other CPUs it is emulated and several times slower than fp32, so "auto" does not use it.
* channels_last (NHWC): what cuDNN's tensor-core kernels want; on CPUs it is measured
  slower for these small UNets, so "auto" turns it on for CUDA only.
* ``torch.compile``: fuses the element-wise work (GroupNorm, SiLU, casts) around the
  matrix products. Compilation costs minutes for a UNet on a small CPU, so it is opt-in.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from difflab.errors import check_choice

Precision = Literal["auto", "no", "fp16", "bf16"]
PRECISIONS = ("auto", "no", "fp16", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matrix products in hardware (not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return device.type in ("mps", "xpu")


def resolve_precision(requested: str, device: torch.device, key: str = "optim.mixed_precision") -> str:
    """"no", "fp16" or "bf16" for ``device``: "auto" picks bf16 where it is native; an
    option the device lacks (fp16 off CUDA, bf16 on a CPU without bf16 units) warns and gives "no"."""
    check_choice(key, requested, PRECISIONS)
    if requested == "auto":
        return "bf16" if native_bf16(device) else "no"
    if requested == "fp16" and device.type != "cuda":
        warnings.warn(f"{key}='fp16' needs a GPU (CUDA); using fp32 on {device.type}", stacklevel=2)
        return "no"
    if requested == "bf16" and not native_bf16(device):
        warnings.warn(f"{key}='bf16': this {device.type} has no bf16 units (AVX512-BF16/AMX or a bf16 GPU), "
                      "emulated bf16 is several times slower; using fp32", stacklevel=2)
        return "no"
    return requested


def autocast(device: torch.device, precision: str) -> Any:
    """``torch.autocast`` for a resolved ``precision`` ("no" = a no-op context)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def resolve_channels_last(requested: bool | None, device: torch.device) -> bool:
    """``requested``, or for None (auto) True on CUDA only."""
    return device.type == "cuda" if requested is None else bool(requested)


def to_channels_last(module: nn.Module) -> nn.Module:
    """``module`` with its 4-d weights in channels_last (NHWC) layout, in place; outputs keep
    the values, only their strides change."""
    return module.to(memory_format=torch.channels_last)


def networks(model: nn.Module) -> dict[str, nn.Module]:
    """The direct sub-modules of ``model`` that hold parameters (a generative model's networks)."""
    return {name: child for name, child in model.named_children() if any(True for _ in child.parameters())}


def compile_in_place(
    module: nn.Module, probe: Callable[[], Any], what: str = "network", backend: str | Callable[..., Any] = "inductor"
) -> bool:
    """``module.compile()`` (its ``state_dict`` keys stay the same), then run ``probe``, which
    calls the module as training or sampling will, so that compilation happens now. If the
    compiler fails (no C++ compiler, an unsupported operator ...) the module goes back to
    eager mode with a one-line warning. Returns whether the module is compiled.
    """
    module.compile(backend=backend)
    try:
        probe()
    except Exception as err:  # noqa: BLE001 (any compiler failure: keep the eager path, never crash the run)
        module._compiled_call_impl = None  # undo nn.Module.compile
        root = err
        while root.__cause__ is not None or getattr(root, "inner_exception", None) is not None:
            root = root.__cause__ or root.inner_exception  # type: ignore[attr-defined]
        lines = str(root).strip().splitlines()
        warnings.warn(f"torch.compile of the {what} failed ({type(root).__name__}: {(lines[0] if lines else '')[:200]}); "
                      "running it eagerly", stacklevel=2)
        return False
    return True
