"""Multi-head attention: the single call into `scaled_dot_product_attention`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Additive bias for padded text tokens, as in the references (exp(−10000) is exactly 0 in
# float32 and bfloat16, so the padded keys get no weight).
MASKED_BIAS = -10000.0


def text_mask_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) mask with 1 = keep → (B, 1, 1, L) additive bias broadcast over heads and queries."""
    return ((1 - mask.to(dtype)) * MASKED_BIAS)[:, None, None, :]


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention over all heads at once.

    q: (B, N, D); k, v: (B, L, D); bias: (B, 1, 1, L) or None. Returns (B, N, D).
    """
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, heads, N|L, D/heads)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return out.transpose(1, 2).flatten(2)  # (B, N, D)
