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
def _padded_target(i: tl.constexpr, pos, size, edge, ok, SPACE: tl.constexpr):
    # where a position along a padded axis goes: i = 0 its own place, 1 the low border (written from
    # position `edge`), 2 the high border (from size − 1 − edge); with the mask of who writes there
    if i == 0:
        index, mask = pos + SPACE, ok
    elif i == 1:
        index, mask = pos * 0, ok & (pos == edge)
    else:
        index, mask = pos * 0 + (size + 1), ok & (pos == size - 1 - edge)
    return index, mask


@triton.jit
def norm_silu_pad_kernel(
    x, bias, noise, noise_scale, shift, scale, out, channels, height, width, frames, eps, edge,
    FRONT: tl.constexpr, BACK: tl.constexpr, SPACE: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_NOISE: tl.constexpr, HAS_MODULATION: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # x (B, T, H, W, C) and out (B, FRONT + T + BACK, H + 2·SPACE, W + 2·SPACE, C) in memory: each
    # program normalises a block of BLOCK_P positions of one sample over all channels and writes them
    # once, plus the copies the padding needs: first / last frames in time; with SPACE = 1 the row and
    # column `edge` from each border (1: reflect, 0: replicate) also into the border row or column
    block, sample = tl.program_id(0), tl.program_id(1).to(tl.int64)
    plane = height * width
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

    t, h, w = p // plane, hw // width, hw % width
    out_height, out_width = height + 2 * SPACE, width + 2 * SPACE
    dst = out + sample * (FRONT + frames + BACK) * out_height * out_width * channels + c[None, :]
    for ti in tl.static_range(1 + FRONT + BACK):  # the frame itself, then its copies in front / behind
        if ti == 0:
            t_out, t_ok = t + FRONT, p_ok
        elif ti <= FRONT:
            t_out, t_ok = t * 0 + (ti - 1), p_ok & (t == 0)
        else:
            t_out, t_ok = t * 0 + (FRONT + frames + (ti - 1 - FRONT)), p_ok & (t == frames - 1)
        for ri in tl.static_range(1 + 2 * SPACE):  # the row itself, then the top and bottom borders
            h_out, h_ok = _padded_target(ri, h, height, edge, t_ok, SPACE)
            for ci in tl.static_range(1 + 2 * SPACE):  # likewise for columns
                w_out, w_ok = _padded_target(ci, w, width, edge, h_ok, SPACE)
                offset = ((t_out * out_height + h_out) * out_width + w_out) * channels
                tl.store(dst + offset[:, None], y, mask=w_ok[:, None] & c_ok[None, :])


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


@triton.jit
def add_noise_and_skip_kernel(
    h, bias, noise, noise_scale, skip, out, channels, plane, positions,
    HAS_BIAS: tl.constexpr, HAS_NOISE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # h, skip and out (B·T·H·W, C) in memory (channels-last): out = skip + (h [+ bias] [+ noise])
    p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.arange(0, BLOCK_C)
    p_ok, c_ok = p < positions, c < channels
    ok = p_ok[:, None] & c_ok[None, :]
    offsets = p[:, None] * channels + c[None, :]
    v = tl.load(h + offsets, mask=ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v += tl.load(bias + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_NOISE:
        spatial = tl.load(noise + p % plane, mask=p_ok, other=0.0).to(tl.float32)
        v += spatial[:, None] * tl.load(noise_scale + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    v += tl.load(skip + offsets, mask=ok, other=0.0).to(tl.float32)
    tl.store(out + offsets, v.to(out.dtype.element_ty), mask=ok)
