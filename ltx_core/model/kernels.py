"""Hand-written Triton kernels, used on CUDA when Triton is importable (see `Attention.forward`).

`qk_norm_rope` does the self-attention query/key path (RMSNorm with a learned weight, then RoPE)
for q and k in one launch: each program takes one token, loads its cos/sin row once and applies it
to that token's q and k rows of every batch sample the row serves. Without Triton (or with a
broken one) this module still imports and the callers keep their plain path. Inference only: the
kernel has no backward.
"""

from __future__ import annotations

import torch

try:  # optional: the CPU-only path never needs it
    import triton
    import triton.language as tl
except Exception:  # not installed, or broken
    triton = None

if triton is not None:

    @triton.jit
    def _norm_rope_row(src, dst, cols, mask, w0, w1, cos, sin, dim, eps, PAIRS: tl.constexpr):
        # one contiguous (vectorised) load, then the channels split into the even (x0) and odd (x1) ones
        x0, x1 = tl.split(tl.reshape(tl.load(src + cols, mask=mask, other=0.0).to(tl.float32), (PAIRS, 2)))
        inv_rms = tl.rsqrt(tl.sum(x0 * x0 + x1 * x1) / dim + eps)
        dtype = dst.dtype.element_ty
        y0 = (x0 * inv_rms * w0).to(dtype).to(tl.float32)  # F.rms_norm returns x's dtype
        y1 = (x1 * inv_rms * w1).to(dtype).to(tl.float32)
        out = tl.reshape(tl.join(y0 * cos - y1 * sin, y1 * cos + y0 * sin), (2 * PAIRS,))
        tl.store(dst + cols, out.to(dtype), mask=mask)

    @triton.jit
    def _qk_norm_rope_kernel(
        q, k, q_weight, k_weight, cos, sin, q_out, k_out, tokens, dim, eps, SAMPLES: tl.constexpr, PAIRS: tl.constexpr
    ):
        token, table = tl.program_id(0), tl.program_id(1)
        pair, cols = tl.arange(0, PAIRS), tl.arange(0, 2 * PAIRS)
        mask = cols < dim
        table_row = (table * tokens + token).to(tl.int64) * (dim // 2)
        c = tl.load(cos + table_row + pair, mask=pair < dim // 2, other=0.0).to(tl.float32)
        s = tl.load(sin + table_row + pair, mask=pair < dim // 2, other=0.0).to(tl.float32)
        qw0, qw1 = tl.split(tl.reshape(tl.load(q_weight + cols, mask=mask, other=0.0).to(tl.float32), (PAIRS, 2)))
        kw0, kw1 = tl.split(tl.reshape(tl.load(k_weight + cols, mask=mask, other=0.0).to(tl.float32), (PAIRS, 2)))
        for i in tl.static_range(SAMPLES):  # the samples this table row serves, unrolled
            row = ((table * SAMPLES + i) * tokens + token).to(tl.int64) * dim
            _norm_rope_row(q + row, q_out + row, cols, mask, qw0, qw1, c, s, dim, eps, PAIRS)
            _norm_rope_row(k + row, k_out + row, cols, mask, kw0, kw1, c, s, dim, eps, PAIRS)


def triton_available(t: torch.Tensor) -> bool:
    """Whether the Triton kernels can run on `t`: a CUDA tensor, with Triton importable."""
    return t.is_cuda and triton is not None


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
    if triton is None:
        raise RuntimeError("qk_norm_rope needs Triton, which cannot be imported")
    batch, tokens, dim = q.shape
    tables = cos.shape[0]
    if k.shape != q.shape or k.dtype != q.dtype or dim % 2 or tables not in (1, batch):
        raise ValueError(f"bad q/k shapes {tuple(q.shape)}, {tuple(k.shape)} for tables {tuple(cos.shape)}")
    if cos.shape != (tables, tokens, dim // 2) or sin.shape != cos.shape:
        raise ValueError(f"cos/sin must have shape ({tables}, {tokens}, {dim // 2}), got {tuple(cos.shape)}")
    q, k, cos, sin = q.contiguous(), k.contiguous(), cos.contiguous(), sin.contiguous()
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    pairs = 1 << (dim // 2 - 1).bit_length()  # the next power of two ≥ D / 2
    _qk_norm_rope_kernel[(tokens, tables)](
        q, k, q_weight.contiguous(), k_weight.contiguous(), cos, sin, q_out, k_out,
        tokens, dim, eps, SAMPLES=batch // tables, PAIRS=pairs, num_warps=max(1, min(8, dim // 256)),
    )  # fmt: skip
    return q_out, k_out
