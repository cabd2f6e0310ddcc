"""Hand-written Triton kernels (source in `triton_kernels`), used on CUDA when Triton is importable,
for work that torch.compile splits into several passes over memory:

- `qk_norm_rope`: the self-attention query/key path (RMSNorm with a learned weight, then RoPE) for q
  and k in one launch; each program takes one token, loads its cos/sin row once and applies it to
  that token's q and k rows of every batch sample the row serves.
- `norm_silu_pad_kernel`: everything between two VAE convolutions in one read and one write.
- `add_noise_and_skip_kernel`: the residual sum that ends a VAE res block, in one pass.
- `quantize_rows_kernel`: fp8 row quantization (optionally of GELU(x)) reading each row once.

Each kernel stands in for a plain step of a model file (`kernel_table`), and only the fused ops of
`model.ops` call it, in place of that step. Triton is imported on the first call that needs it;
without Triton (or with a broken one) the ops keep the step's compiled or plain form
(`kernels_usable`). Inference only: the kernels have no backward.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar

import torch

from .fusion import Step, fusion_enabled, raise_if_out_of_memory

log = logging.getLogger(__name__)
T = TypeVar("T")


@functools.cache
def _kernels() -> ModuleType | None:
    """The Triton kernels, imported on first use (a CUDA forward), or None without a working Triton.
    Deferred so that importing `ltx_core` never pays for importing Triton."""
    try:
        from . import triton_kernels
    except Exception:  # not installed, or broken
        return None
    return triton_kernels


def triton_importable() -> bool:
    """Whether Triton (and so the kernels) can be imported here."""
    return _kernels() is not None


def triton_available(t: torch.Tensor) -> bool:
    """Whether the Triton kernels can run on `t`: a CUDA tensor, with Triton importable."""
    return t.is_cuda and _kernels() is not None


def kernels_usable(t: torch.Tensor) -> bool:
    """Whether a caller should use a kernel of this module on `t`: fusion on for its device, Triton
    there, no autograd (the kernels have no backward), no compiler tracing (which fuses the plain
    path itself), and no kernel has failed in this process (`kernel_or_none`)."""
    return (
        not _failed
        and fusion_enabled(t.device.type)
        and triton_available(t)
        and not (t.requires_grad or torch.compiler.is_compiling())
    )


_failed: list[str] = []


def kernel_or_none(call: Callable[[], T]) -> T | None:
    """`call()`, a call of a kernel of this module, or None when it fails to build or launch (a Triton
    that cannot build for this GPU, say): logged once, after which `kernels_usable` is False and
    callers keep to their plain path instead of stopping the generation. Running out of memory
    propagates as torch.OutOfMemoryError and switches nothing off: the plain path needs the memory
    too, and the VAE's automatic tiling provokes it on purpose and retries smaller."""
    try:
        return call()
    except Exception as error:
        raise_if_out_of_memory(error)
        log.warning("a Triton kernel failed (%s); using the plain path from now on", error)
        _failed.append(repr(error))
        return None


def qk_norm_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`rms_norm_rope` of q and of k in one kernel launch, computed in float32 with the normed
    values rounded to the input dtype before the rotation (as the plain path does).

    q, k: (B, N, D) of one dtype, D even; q_weight, k_weight: (D,); cos, sin: (B or 1, N, D // 2)
    from `rope_tables`. Returns the new q and k. Checks no device: it runs wherever Triton does
    (the CPU too, under TRITON_INTERPRET=1).
    """
    kernels = _kernels()
    if kernels is None:
        raise RuntimeError("qk_norm_rope needs Triton, which cannot be imported: pip install triton")
    batch, tokens, dim = q.shape
    tables = cos.shape[0]
    if k.shape != q.shape or k.dtype != q.dtype or dim % 2 or tables not in (1, batch):
        raise ValueError(f"bad q/k shapes {tuple(q.shape)}, {tuple(k.shape)} for tables {tuple(cos.shape)}")
    if cos.shape != (tables, tokens, dim // 2) or sin.shape != cos.shape:
        raise ValueError(f"cos/sin must have shape ({tables}, {tokens}, {dim // 2}), got {tuple(cos.shape)}")
    q, k, cos, sin = q.contiguous(), k.contiguous(), cos.contiguous(), sin.contiguous()
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    pairs = _next_power_of_two(dim // 2)
    kernels.qk_norm_rope_kernel[(tokens, tables)](
        q, k, q_weight.contiguous(), k_weight.contiguous(), cos, sin, q_out, k_out,
        tokens, dim, eps, SAMPLES=batch // tables, PAIRS=pairs, num_warps=max(1, min(8, dim // 256)),
    )  # fmt: skip
    return q_out, k_out


def norm_silu_pad_kernel(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    noise: torch.Tensor | None,
    noise_scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    scale: torch.Tensor | None,
    front: int,
    back: int,
    eps: float,
    space: int = 0,
    space_mode: str = "reflect",
) -> torch.Tensor:
    """The VAE's `norm_silu_pad` in one pass: reads x once, writes the padded output once, in float32
    and rounded once to x's dtype.

    x: (B, C, T, H, W), best in channels-last order (other orders are copied to it first); bias,
    noise_scale: (C,); noise: (H, W); shift, scale: (B, C), both given or neither. `space` = 1 also pads
    H and W by one pixel each side, `space_mode` "reflect" or "replicate". Returns
    (B, C, front + T + back, H + 2·space, W + 2·space) in channels-last order.
    """
    kernels = _kernels()
    if kernels is None:
        raise RuntimeError("norm_silu_pad_kernel needs Triton, which cannot be imported: pip install triton")
    batch, channels, frames, height, width = x.shape
    if (noise is None) != (noise_scale is None) or (shift is None) != (scale is None):
        raise ValueError("noise needs noise_scale, and shift needs scale")
    if noise is not None and noise.shape != (height, width):
        raise ValueError(f"noise must have shape ({height}, {width}), got {tuple(noise.shape)}")
    if shift is not None and (shift.shape != (batch, channels) or scale.shape != shift.shape):
        raise ValueError(f"shift and scale must have shape ({batch}, {channels}), got {tuple(shift.shape)}")
    edge = {"reflect": 1, "replicate": 0}.get(space_mode, -1)  # the row / column copied to each border
    if space and (space != 1 or edge < 0 or min(height, width) <= edge):
        raise ValueError(
            f"cannot pad {height}×{width} by {space} in mode {space_mode!r}: this kernel pads 1 pixel, "
            "reflect or replicate, of an image at least 2×2"
        )
    x = x.contiguous(memory_format=torch.channels_last_3d)
    out = torch.empty(
        (batch, channels, front + frames + back, height + 2 * space, width + 2 * space), dtype=x.dtype,
        device=x.device, memory_format=torch.channels_last_3d,
    )  # fmt: skip
    block_c = _next_power_of_two(channels)
    block_p = max(1, 8192 // block_c)
    grid = (-(-frames * height * width // block_p), batch)
    dummy = x  # stands in for absent optional inputs (never read)
    kernels.norm_silu_pad_kernel[grid](
        x, dummy if bias is None else bias.contiguous(), dummy if noise is None else noise.contiguous(),
        dummy if noise_scale is None else noise_scale.contiguous(), dummy if shift is None else shift.contiguous(),
        dummy if scale is None else scale.contiguous(), out, channels, height, width, frames, eps, max(edge, 0),
        FRONT=front, BACK=back, SPACE=space, HAS_BIAS=bias is not None, HAS_NOISE=noise is not None,
        HAS_MODULATION=shift is not None, BLOCK_P=block_p, BLOCK_C=block_c, num_warps=8,
    )  # fmt: skip
    return out


def add_noise_and_skip_kernel(
    h: torch.Tensor,
    bias: torch.Tensor | None,
    noise: torch.Tensor | None,
    noise_scale: torch.Tensor | None,
    skip: torch.Tensor,
) -> torch.Tensor:
    """The end of a VAE res block, skip + (h [+ bias] [+ noise]), in one pass, in float32 and rounded
    once. h, skip: (B, C, T, H, W), best in channels-last order (others are copied to it first);
    bias, noise_scale: (C,); noise: (H, W). Returns (B, C, T, H, W) in channels-last order."""
    kernels = _kernels()
    if kernels is None:
        raise RuntimeError("add_noise_and_skip_kernel needs Triton, which cannot be imported: pip install triton")
    if skip.shape != h.shape or (noise is None) != (noise_scale is None):
        raise ValueError(f"skip {tuple(skip.shape)} must match h {tuple(h.shape)}, and noise needs noise_scale")
    channels, height, width = h.shape[1], h.shape[-2], h.shape[-1]
    h, skip = (t.contiguous(memory_format=torch.channels_last_3d) for t in (h, skip))
    out = torch.empty_like(h, memory_format=torch.channels_last_3d)
    positions = h.numel() // channels
    block_c = _next_power_of_two(channels)
    block_p = max(1, 8192 // block_c)
    dummy = h  # stands in for absent optional inputs (never read)
    kernels.add_noise_and_skip_kernel[(-(-positions // block_p),)](
        h, dummy if bias is None else bias.contiguous(), dummy if noise is None else noise.contiguous(),
        dummy if noise_scale is None else noise_scale.contiguous(), skip, out, channels, height * width,
        positions, HAS_BIAS=bias is not None, HAS_NOISE=noise is not None, BLOCK_P=block_p, BLOCK_C=block_c,
        num_warps=8,
    )  # fmt: skip
    return out


def _next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def quantize_rows_kernel(x: torch.Tensor, gelu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`fp8.quantize_rows` (of GELU(tanh)(x) with `gelu`) reading each row once: x (M, K) → e4m3
    values (M, K) and float32 scales (M, 1). Rows up to 16,384 wide."""
    kernels = _kernels()
    if kernels is None:
        raise RuntimeError("quantize_rows_kernel needs Triton, which cannot be imported: pip install triton")
    rows, cols = x.shape
    if cols > 16384:
        raise ValueError(f"quantize_rows_kernel takes rows of up to 16384 values, got {cols}")
    x = x.contiguous()
    values = torch.empty((rows, cols), dtype=torch.float8_e4m3fn, device=x.device)
    scales = torch.empty((rows, 1), dtype=torch.float32, device=x.device)
    block = _next_power_of_two(cols)
    e4m3_max = torch.finfo(torch.float8_e4m3fn).max
    kernels.quantize_rows_kernel[(rows,)](
        x, values, scales, cols, e4m3_max, GELU=gelu, BLOCK=block, num_warps=max(1, min(16, block // 512))
    )
    return values, scales


@dataclass(frozen=True)
class Kernel:
    """A kernel standing in for a step: `run` takes the step's arguments; `fits` says whether it can
    take these particular ones (None: any)."""

    run: Callable[..., object]
    fits: Callable[..., bool] | None = None


@functools.cache
def kernel_table() -> dict[Step, Kernel]:
    """Every step that has a hand-written kernel → that kernel (read by the fused ops, model/ops.py).
    The steps are imported here, on first use, because the model files that define them import the ops."""
    from .fp8 import _gelu_quantize_rows, _quantize_rows
    from .transformer import rms_norm_rope_qk
    from .vae.blocks import _add_noise_and_skip
    from .vae.convolution import _norm_silu_pad

    return {
        rms_norm_rope_qk: Kernel(_run_qk_norm_rope),
        _norm_silu_pad: Kernel(_run_norm_silu_pad, _pads_at_most_one_pixel),
        _add_noise_and_skip: Kernel(_run_add_noise_and_skip),
        _quantize_rows: Kernel(_run_quantize_rows, _rows_fit),
        _gelu_quantize_rows: Kernel(_run_gelu_quantize_rows, _rows_fit),
    }


# Each kernel called with its step's arguments (the names are looked up per call, so a test can
# stand a fake in for a kernel).
def _run_qk_norm_rope(*args: object) -> tuple[torch.Tensor, torch.Tensor]:
    return qk_norm_rope(*args)


def _run_norm_silu_pad(x, bias, noise, noise_scale, shift, scale, front, back, space_mode, space, eps):  # noqa: ANN001, ANN202
    return norm_silu_pad_kernel(x, bias, noise, noise_scale, shift, scale, front, back, eps, space, space_mode)


def _pads_at_most_one_pixel(x: torch.Tensor, *args: object) -> bool:
    space = args[8]  # the kernel pads 1 pixel, of an image at least 2×2
    return space <= 1 and min(x.shape[-2:]) > space


def _run_add_noise_and_skip(*args: object) -> torch.Tensor:
    return add_noise_and_skip_kernel(*args)


def _run_quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return quantize_rows_kernel(x)


def _run_gelu_quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return quantize_rows_kernel(x, gelu=True)


def _rows_fit(x: torch.Tensor) -> bool:
    return x.shape[-1] <= 16384
