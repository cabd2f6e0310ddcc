"""GGML block formats → float tensors, in plain torch so that it runs on the compute device.

Every kernel takes the raw bytes of a tensor as `blocks`, a uint8 tensor of shape
(n_blocks, type_size), and returns float32 values of shape (n_blocks, block_size). Scales are
fp16 read by viewing their two bytes as float16; everything is computed in float32 and the
products are grouped as in gguf-py, so results are bit-exact with `gguf.quants.dequantize`.
Layouts: docs in ggml's `ggml-common.h`, summarised in the fact sheet §6.6.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from enum import IntEnum

import torch

from ..model.fusion import step
from ..model.ops import FUSED, Ops

QK_K = 256  # elements per K-quant super-block


class GGMLType(IntEnum):
    """GGML tensor type ids, as stored in GGUF tensor infos."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    BF16 = 30


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The fp16 scale at byte `start` of each block → (n_blocks, 1) float32."""
    return blocks[:, start : start + 2].contiguous().view(torch.float16).to(torch.float32)


def _split_bits(x: torch.Tensor, width: int) -> torch.Tensor:
    """(..., k) uint8 → (..., 8 // width, k): field i holds bits [width·i, width·(i+1)) of each byte."""
    shifts = torch.arange(0, 8, width, dtype=torch.uint8, device=x.device).view(-1, 1)
    return (x.unsqueeze(-2) >> shifts) & ((1 << width) - 1)


def _k_scales(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K / Q5_K: 12 bytes → 8 six-bit (scale, min) pairs, each (n_blocks, 8) float32."""
    a, b, c = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    # sub-blocks 0-3 use the low 6 bits of a (scale) and b (min); 4-7 combine a nibble of c
    # with the top 2 bits of a (scale) or b (min)
    sc = torch.cat([a & 63, (c & 15) | ((a >> 6) << 4)], dim=-1)
    mn = torch.cat([b & 63, (c >> 4) | ((b >> 6) << 4)], dim=-1)
    return sc.to(torch.float32), mn.to(torch.float32)


def dequant_f32(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.contiguous().view(torch.float32)  # (n, 4) bytes → (n, 1)


def dequant_f16(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.contiguous().view(torch.float16).to(torch.float32)


def dequant_bf16(blocks: torch.Tensor) -> torch.Tensor:
    # bfloat16 is the top half of a float32: shift the 16 bits up
    bits = blocks.contiguous().view(torch.int16).to(torch.int32) << 16
    return bits.view(torch.float32)


def dequant_q8_0(blocks: torch.Tensor) -> torch.Tensor:
    """34 bytes: d, 32 × int8; w = d·q."""
    return blocks[:, 2:].view(torch.int8).to(torch.float32) * _f16(blocks, 0)


def dequant_q4_0(blocks: torch.Tensor) -> torch.Tensor:
    """18 bytes: d, 16 bytes of nibbles (low nibbles = elements 0-15, high = 16-31); w = d·(q − 8)."""
    q = _split_bits(blocks[:, 2:], 4).flatten(1)  # (n, 2, 16) → (n, 32)
    return _f16(blocks, 0) * (q.to(torch.float32) - 8)


def dequant_q4_1(blocks: torch.Tensor) -> torch.Tensor:
    """20 bytes: d, m, 16 bytes of nibbles; w = d·q + m."""
    q = _split_bits(blocks[:, 4:], 4).flatten(1)  # (n, 32)
    return _f16(blocks, 0) * q.to(torch.float32) + _f16(blocks, 2)


def _five_bit(qh: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
    """Q5_0 / Q5_1 quants: nibbles of qs (n, 16) plus bit e of the little-endian u32 qh (n, 4) → (n, 32)."""
    high = _split_bits(qh, 1).transpose(1, 2).flatten(1)  # (n, 8 bits, 4 bytes) → element 8·byte + bit
    return _split_bits(qs, 4).flatten(1) | (high << 4)


def dequant_q5_0(blocks: torch.Tensor) -> torch.Tensor:
    """22 bytes: d, qh (4), qs (16); w = d·(q − 16)."""
    q = _five_bit(blocks[:, 2:6], blocks[:, 6:])
    return _f16(blocks, 0) * (q.to(torch.float32) - 16)


def dequant_q5_1(blocks: torch.Tensor) -> torch.Tensor:
    """24 bytes: d, m, qh (4), qs (16); w = d·q + m."""
    q = _five_bit(blocks[:, 4:8], blocks[:, 8:])
    return _f16(blocks, 0) * q.to(torch.float32) + _f16(blocks, 2)


def dequant_q2_k(blocks: torch.Tensor) -> torch.Tensor:
    """84 bytes: scales (16: low nibble scale, high nibble min), qs (64), d, dmin; w = d·sc·q − dmin·m."""
    n = blocks.shape[0]
    scales = blocks[:, :16]
    dl = (_f16(blocks, 80) * (scales & 15).to(torch.float32)).view(n, 16, 1)
    ml = (_f16(blocks, 82) * (scales >> 4).to(torch.float32)).view(n, 16, 1)
    q = _split_bits(blocks[:, 16:80].reshape(n, 2, 32), 2)  # (n, half, shift, 32): element 128h + 32s + l
    return (dl * q.reshape(n, 16, 16).to(torch.float32) - ml).view(n, QK_K)


def dequant_q3_k(blocks: torch.Tensor) -> torch.Tensor:
    """110 bytes: hmask (32), qs (64), scales (12), d; w = d·(scale − 32)·(q2 − 4·(1 − hbit))."""
    n = blocks.shape[0]
    scales = blocks[:, 96:108]
    low = _split_bits(scales[:, :8], 4).flatten(1)  # (n, 16): scale i from byte i % 8, nibble i // 8
    high = _split_bits(scales[:, 8:], 2).flatten(1)  # (n, 16): 2 bits of byte 8 + i % 4, pair i // 4
    scale = (low | (high << 4)).to(torch.float32) - 32
    dl = (_f16(blocks, 108) * scale).view(n, 16, 1)
    q2 = _split_bits(blocks[:, 32:96].reshape(n, 2, 32), 2).reshape(n, 16, 16)
    hbit = _split_bits(blocks[:, :32], 1).reshape(n, 16, 16)  # bit e // 32 of hmask[e % 32]
    q = q2.to(torch.float32) - 4 * (1 - hbit.to(torch.float32))  # a set high bit means no offset
    return (dl * q).view(n, QK_K)


def dequant_q4_k(blocks: torch.Tensor) -> torch.Tensor:
    """144 bytes: d, dmin, scales (12), qs (128); w = d·sc·q − dmin·m per sub-block of 32."""
    n = blocks.shape[0]
    sc, mn = _k_scales(blocks[:, 4:16])
    d = (_f16(blocks, 0) * sc).view(n, 8, 1)
    dm = (_f16(blocks, 2) * mn).view(n, 8, 1)
    q = _split_bits(blocks[:, 16:].reshape(n, 4, 32), 4).reshape(n, 8, 32)  # chunk c: low → 2c, high → 2c + 1
    return (d * q.to(torch.float32) - dm).view(n, QK_K)


def dequant_q5_k(blocks: torch.Tensor) -> torch.Tensor:
    """176 bytes: d, dmin, scales (12), qh (32), qs (128); Q4_K plus bit `sub-block` of qh[l]."""
    n = blocks.shape[0]
    sc, mn = _k_scales(blocks[:, 4:16])
    d = (_f16(blocks, 0) * sc).view(n, 8, 1)
    dm = (_f16(blocks, 2) * mn).view(n, 8, 1)
    low = _split_bits(blocks[:, 48:].reshape(n, 4, 32), 4).reshape(n, 8, 32)
    high = _split_bits(blocks[:, 16:48], 1)  # (n, 8, 32): bit sb of qh[l]
    return (d * (low | (high << 4)).to(torch.float32) - dm).view(n, QK_K)


def dequant_q6_k(blocks: torch.Tensor) -> torch.Tensor:
    """210 bytes: ql (128), qh (64), scales (16 × int8), d; w = d·scale·(q − 32) per 16 elements."""
    n = blocks.shape[0]
    d = (_f16(blocks, 208) * blocks[:, 192:208].view(torch.int8).to(torch.float32)).view(n, 16, 1)
    # per half of 128 elements: element 32k + l takes nibble k // 2 of ql[32·(k % 2) + l] …
    low = _split_bits(blocks[:, :128].reshape(n, 2, 64), 4).reshape(n, 2, 4, 32)
    # … and bits 2k, 2k + 1 of qh[l]
    high = _split_bits(blocks[:, 128:192].reshape(n, 2, 32), 2)  # (n, 2, 4, 32)
    q = (low | (high << 4)).to(torch.float32) - 32
    return (d * q.reshape(n, 16, 16)).view(n, QK_K)


Kernel = Callable[[torch.Tensor], torch.Tensor]

# qtype → (elements per block, bytes per block, kernel)
KERNELS: dict[GGMLType, tuple[int, int, Kernel]] = {
    GGMLType.F32: (1, 4, dequant_f32),
    GGMLType.F16: (1, 2, dequant_f16),
    GGMLType.BF16: (1, 2, dequant_bf16),
    GGMLType.Q8_0: (32, 34, dequant_q8_0),
    GGMLType.Q5_1: (32, 24, dequant_q5_1),
    GGMLType.Q5_0: (32, 22, dequant_q5_0),
    GGMLType.Q4_1: (32, 20, dequant_q4_1),
    GGMLType.Q4_0: (32, 18, dequant_q4_0),
    GGMLType.Q6_K: (QK_K, 210, dequant_q6_k),
    GGMLType.Q5_K: (QK_K, 176, dequant_q5_k),
    GGMLType.Q4_K: (QK_K, 144, dequant_q4_k),
    GGMLType.Q3_K: (QK_K, 110, dequant_q3_k),
    GGMLType.Q2_K: (QK_K, 84, dequant_q2_k),
}


def supported_type(qtype: int, name: str | None = None, where: str = "") -> GGMLType:
    """The GGMLType for a raw type id, or a ValueError naming it (and `where`) and the supported types."""
    if qtype in KERNELS.keys():
        return GGMLType(qtype)
    label = f"{name} (id {int(qtype)})" if name else f"id {int(qtype)}"
    raise ValueError(
        f"{where}GGML tensor type {label} is not supported; supported types: "
        f"{', '.join(t.name for t in KERNELS)}. Use a GGUF file quantized to one of those types."
    )


def raw_size(qtype: GGMLType, shape: Sequence[int]) -> int:
    """Number of bytes a tensor of `shape` takes in `qtype`; the last dimension must fill whole blocks."""
    block_size, type_size, _ = KERNELS[qtype]
    if not shape or shape[-1] % block_size:
        raise ValueError(
            f"A {qtype.name} tensor needs a last dimension that is a multiple of {block_size}, "
            f"got shape {tuple(shape)}. The file does not follow the GGUF layout; it is probably corrupted."
        )
    return math.prod(shape) // block_size * type_size


def dequantize(
    raw: torch.Tensor, qtype: int, shape: Sequence[int], dtype: torch.dtype = torch.float32, ops: Ops = FUSED
) -> torch.Tensor:
    """Raw GGML bytes (uint8, any shape holding whole blocks) → a `dtype` tensor of `shape` on raw's
    device, the blocks' arithmetic run by `ops` (compiled on CUDA by the default, fused ops)."""
    qtype = supported_type(qtype)
    type_size = KERNELS[qtype][1]
    expected = raw_size(qtype, shape)
    if raw.dtype != torch.uint8 or raw.numel() != expected:
        raise ValueError(
            f"{qtype.name} data for shape {tuple(shape)} must be {expected} uint8 bytes, "
            f"got {raw.numel()} of {raw.dtype}. Pass the tensor's raw bytes as stored in the GGUF file."
        )
    return ops.run(_dequantize_blocks, raw.reshape(-1, type_size), qtype, dtype).reshape(shape)


@step
def _dequantize_blocks(blocks: torch.Tensor, qtype: GGMLType, dtype: torch.dtype) -> torch.Tensor:
    """(n_blocks, type_size) uint8 → (n_blocks, block_size) `dtype`: one fused kernel on CUDA
    instead of one per step of the format, plain torch elsewhere."""
    return KERNELS[qtype][2](blocks).to(dtype)
