"""Sequence-parallel (Ulysses) attention: an ops set that wraps another one's attention.

Inside a split model call every rank of a Ulysses group holds a contiguous run of the tokens, all
heads; everything in the transformer but self-attention works token by token, so only self-attention
communicates. Around it one all-to-all turns "my tokens, all heads" into "all tokens, my heads" for
q, k and v together, the wrapped ops attend over the whole sequence with 1/u of the heads, and a
second all-to-all turns the output back. Per head this is the same attention over the same keys as in
one process, so the result is exact to float rounding.

Token runs need not be equal: the all-to-alls take each rank's own count (`layout.split_sizes`: they
differ by at most one), so a token count that does not divide by the group size needs neither padding
nor a mask, and the attention kernel sees exactly the one-process sequence (a mask would also keep
SDPA off its fastest kernels).

Cross-attention stays local: its keys and values are the text's, which every rank holds whole, and
each query token attends on its own; heads-sharding it would cost two all-to-alls for the same work.

The ops are installed on a model by `split_tokens` (kept afterwards, inert outside a split call) and
chosen again, like any ops, when the model next meets its device (`memory.placed`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..model.fusion import Step
from ..model.ops import Ops, ops_of, use_ops


@dataclass(frozen=True, eq=False)
class TokenShards:
    """How one model call's tokens are split: run `index` of `sizes` (one per rank of `group`, in rank
    order, contiguous along the sequence) is this rank's."""

    group: dist.ProcessGroup | None
    sizes: list[int]
    index: int

    @property
    def parts(self) -> int:
        return len(self.sizes)


class UlyssesOps(Ops):
    """`inner`'s ops, with self-attention split over a Ulysses group while `shards` is set (by
    `split_tokens`); as `inner` otherwise."""

    def __init__(self, inner: Ops) -> None:
        self.inner = inner
        self.name = f"ulysses+{inner.name}"
        self.shards: TokenShards | None = None

    def attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Self-attention of this rank's tokens q, k, v (B, n, D) over the whole split sequence → (B, n, D)."""
        shards = self.shards
        if shards is None or shards.parts == 1:
            return self.inner.attention(q, k, v, heads, bias)
        if bias is not None or heads % shards.parts:
            raise ValueError(
                f"Ulysses attention splits {heads} heads over {shards.parts} ranks without a bias: "
                f"use a Ulysses size that divides {heads} (got bias={bias is not None})"
            )
        q, k, v = tokens_to_heads([q, k, v], shards)  # (B, N, D/u) each
        out = self.inner.attention(q, k, v, heads // shards.parts)  # (B, N, D/u)
        return heads_to_tokens(out, shards)  # (B, n, D)

    def cross_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.inner.cross_attention(q, k, v, heads, bias)  # local: the text is whole on every rank

    def run(self, step: Step, *args: object) -> object:
        return self.inner.run(step, *args)

    def project(self, x: torch.Tensor, *linears: nn.Module) -> list[torch.Tensor]:
        return self.inner.project(x, *linears)

    def gelu_linear(self, linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.inner.gelu_linear(linear, x)

    def feed_forward(self, proj: nn.Module, out: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.inner.feed_forward(proj, out, x)

    def fp8_matmul(self, x: torch.Tensor) -> bool:
        return self.inner.fp8_matmul(x)

    def paths(self, device: torch.device) -> dict[str, str]:
        inner = self.inner.paths(device)
        return {**inner, "attention": f"{inner['attention']}, self-attention split over tokens (Ulysses all-to-all)"}


def tokens_to_heads(tensors: Sequence[torch.Tensor], shards: TokenShards) -> list[torch.Tensor]:
    """Tensors (B, n, D): this rank's n tokens, all heads → (B, N, D/u) each: every rank's tokens in
    sequence order, this rank's heads (heads j·H/u … (j+1)·H/u − 1 on rank j). One all-to-all for all."""
    b, n, d = tensors[0].shape
    u, width = shards.parts, d // shards.parts
    send = tensors[0].new_empty(u, len(tensors), b, n, width)  # rank j's heads j-th
    for i, t in enumerate(tensors):
        send[:, i] = t.unflatten(-1, (u, width)).permute(2, 0, 1, 3)
    per_token = len(tensors) * b * width
    recv = send.new_empty(per_token * sum(shards.sizes))
    received = [per_token * m for m in shards.sizes]
    dist.all_to_all_single(recv, send.view(-1), received, [per_token * n] * u, group=shards.group)
    parts = [part.view(len(tensors), b, m, width) for part, m in zip(recv.split(received), shards.sizes, strict=True)]
    return list(torch.cat(parts, dim=2).unbind(0))  # (B, N, D/u) each


def heads_to_tokens(x: torch.Tensor, shards: TokenShards) -> torch.Tensor:
    """The inverse: (B, N, D/u), every token of this rank's heads → (B, n, D), this rank's tokens of
    all heads."""
    b, _, width = x.shape
    u, n = shards.parts, shards.sizes[shards.index]
    send = torch.cat([part.reshape(-1) for part in x.split(shards.sizes, dim=1)])  # rank j's tokens j-th
    recv = x.new_empty(u * b * n * width)
    dist.all_to_all_single(recv, send, [b * n * width] * u, [b * m * width for m in shards.sizes], group=shards.group)
    return recv.view(u, b, n, width).permute(1, 2, 0, 3).reshape(b, n, u * width)  # heads back in order


@contextmanager
def split_tokens(model: nn.Module, shards: TokenShards) -> Iterator[None]:
    """Run `model`'s self-attention over `shards` for the block: its ops wrapped in UlyssesOps (once;
    the wrapper stays, inert outside such a block, until the model's ops are chosen again)."""
    ops = ops_of(model)
    if not isinstance(ops, UlyssesOps):
        ops = UlyssesOps(ops)
        use_ops(model, ops)
    ops.shards = shards
    try:
        yield
    finally:
        ops.shards = None
