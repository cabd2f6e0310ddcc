"""The Triton source of `kernels` (imported by it on first use, never at package import)."""

import triton
import triton.language as tl


@triton.jit
def norm_rope_row(src, dst, cols, mask, w0, w1, cos, sin, dim, eps, PAIRS: tl.constexpr):
    # one contiguous (vectorised) load, then the channels split into the even (x0) and odd (x1) ones
    x0, x1 = tl.split(tl.reshape(tl.load(src + cols, mask=mask, other=0.0).to(tl.float32), (PAIRS, 2)))
    inv_rms = tl.rsqrt(tl.sum(x0 * x0 + x1 * x1) / dim + eps)
    dtype = dst.dtype.element_ty
    y0 = (x0 * inv_rms * w0).to(dtype).to(tl.float32)  # F.rms_norm returns x's dtype
    y1 = (x1 * inv_rms * w1).to(dtype).to(tl.float32)
    out = tl.reshape(tl.join(y0 * cos - y1 * sin, y1 * cos + y0 * sin), (2 * PAIRS,))
    tl.store(dst + cols, out.to(dtype), mask=mask)


@triton.jit
def qk_norm_rope_kernel(
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
        norm_rope_row(q + row, q_out + row, cols, mask, qw0, qw1, c, s, dim, eps, PAIRS)
        norm_rope_row(k + row, k_out + row, cols, mask, kw0, kw1, c, s, dim, eps, PAIRS)


@triton.jit
def norm_silu_pad_kernel(
    x, bias, noise, noise_scale, shift, scale, out, channels, plane, frames, eps,
    FRONT: tl.constexpr, BACK: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_NOISE: tl.constexpr,
    HAS_MODULATION: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # x (B, T, H, W, C) and out (B, FRONT + T + BACK, H, W, C) in memory: each program normalises a
    # block of BLOCK_P positions of one sample over all channels and writes them once, plus the
    # copies the time padding needs when the block holds first- or last-frame positions
    block, sample = tl.program_id(0), tl.program_id(1).to(tl.int64)
    p = block.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)  # int64: offsets pass 2³¹ at large sizes
    c = tl.arange(0, BLOCK_C)
    p_ok, c_ok = p < frames * plane, c < channels
    ok = p_ok[:, None] & c_ok[None, :]
    v = tl.load(x + (sample * frames * plane + p)[:, None] * channels + c[None, :], mask=ok, other=0.0)
    v = v.to(tl.float32)
    if HAS_BIAS:
        v += tl.load(bias + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    hw = p % plane
    if HAS_NOISE:
        spatial = tl.load(noise + hw, mask=p_ok, other=0.0).to(tl.float32)
        v += spatial[:, None] * tl.load(noise_scale + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    y = v * tl.rsqrt(tl.sum(v * v, axis=1) / channels + eps)[:, None]
    if HAS_MODULATION:
        row = sample * channels + c
        y = y * (1 + tl.load(scale + row, mask=c_ok, other=0.0).to(tl.float32)[None, :])
        y += tl.load(shift + row, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    y = (y * tl.sigmoid(y)).to(out.dtype.element_ty)
    dst = out + sample * (FRONT + frames + BACK) * plane * channels + c[None, :]
    tl.store(dst + (FRONT * plane + p)[:, None] * channels, y, mask=ok)
    t = p // plane
    for i in tl.static_range(FRONT):  # copies of frame 0 in front
        tl.store(dst + (i * plane + hw)[:, None] * channels, y, mask=ok & (t == 0)[:, None])
    for i in tl.static_range(BACK):  # copies of the last frame behind
        tl.store(dst + ((FRONT + frames + i) * plane + hw)[:, None] * channels, y, mask=ok & (t == frames - 1)[:, None])


@triton.jit
def quantize_rows_kernel(x, values, scales, cols, max_value, GELU: tl.constexpr, BLOCK: tl.constexpr):
    # one row per program, read once: [GELU(tanh)] → amax → e4m3 values and a float32 scale
    row = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, BLOCK)
    ok = c < cols
    v = tl.load(x + row * cols + c, mask=ok, other=0.0).to(tl.float32)
    if GELU:  # 0.5·v·(1 + tanh(√(2/π)·(v + 0.044715·v³))), tanh(u) = 1 − 2 / (e^(2u) + 1)
        u = 0.7978845608028654 * (v + 0.044715 * v * v * v)
        v = 0.5 * v * (2.0 - 2.0 / (tl.exp(2.0 * u) + 1.0))
    scale = tl.maximum(tl.max(tl.abs(v), axis=0), 1e-12) / max_value
    tl.store(values + row * cols + c, (v / scale).to(values.dtype.element_ty), mask=ok)
    tl.store(scales + row, scale)
