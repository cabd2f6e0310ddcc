"""One step's model call split over processes: its batch rows over CFG-parallel ranks, their tokens over
Ulysses ranks, every velocity back on every rank.

The sampler batches a step's branches (negative prompt, prompt, STG's perturbed prompt), each B videos,
into one call of R = n·B rows (sampler._guided_velocity); every row is independent of the others, so
the rows are what CFG-parallel shares out, whatever branch they belong to:

- R // cfg rows per cfg rank, each share's tokens split over that rank's Ulysses group (`ulysses` parts);
- the R % cfg rows left over (3 branches on 2 cfg ranks: one row) run on every rank at once, their
  tokens split over all `world` ranks: Ulysses over the whole world, when the heads divide by it.
  Each rank then does R / world rows' worth of work, where giving the extra row to some cfg ranks
  would leave the others idle for a whole row (CFG + STG on 2 GPUs: 1.5 rows each instead of 2 on
  one and 1 on the other; a distilled release's single row is split in two instead of run on one).
  When the heads do not divide by the world size, the rows left over go one per cfg rank instead.

Each rank runs its calls, then one all-gather over the world gives every rank every block (float32:
the sampler combines the branches in float32 anyway), so the guidance, the Euler step and the next
step's input are computed identically on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import nn

from ..model.transformer import SkipLayers
from .layout import Parallel, span, split_sizes
from .ulysses import TokenShards, split_tokens


@dataclass(frozen=True)
class _Call:
    """One model call of one rank: batch `rows`, its share of their tokens (run `index` of `sizes`),
    split over its Ulysses group or, with `whole_world`, over all ranks."""

    rows: slice
    sizes: list[int]
    index: int
    whole_world: bool = False

    @property
    def tokens(self) -> slice:
        return span(self.sizes, self.index)


def plan_calls(parallel: Parallel, rows: int, tokens: int, heads: int) -> list[list[_Call]]:
    """The calls of every rank of `parallel` (by rank) for a batch of rows × tokens (module docstring)."""
    cfg, ulysses, world = parallel.cfg, parallel.ulysses, parallel.world
    share, left = divmod(rows, cfg)
    if ulysses > 1 and (heads % ulysses or tokens < ulysses):
        raise ValueError(
            f"Ulysses over {ulysses} ranks needs a head count ({heads}) that it divides and at least {ulysses} "
            f"tokens (got {tokens}): choose a Ulysses size that divides {heads}"
        )
    split = split_sizes(tokens, ulysses)
    by_rank: list[list[_Call]] = [[] for _ in range(world)]
    for rank in range(world):
        k, j = divmod(rank, ulysses)  # cfg rank, ulysses rank
        if share:
            by_rank[rank].append(_Call(slice(k * share, (k + 1) * share), split, j))
        if left and heads % world == 0 and tokens >= world:
            by_rank[rank].append(_Call(slice(cfg * share, rows), split_sizes(tokens, world), rank, whole_world=True))
        elif k < left:
            by_rank[rank].append(_Call(slice(cfg * share + k, cfg * share + k + 1), split, j))
    return by_rank


def parallel_forward(
    parallel: Parallel,
    model: nn.Module,
    x: torch.Tensor,
    sigma: torch.Tensor,
    context: torch.Tensor,
    context_mask: torch.Tensor | None,
    positions: torch.Tensor,
    skip: SkipLayers | None = None,
) -> torch.Tensor:
    """`model(x, sigma, context, context_mask, positions, skip=skip)` split over `parallel`'s ranks;
    every rank passes the same whole inputs and gets the whole velocity (R, N, out_channels) float32.

    x: (R, N, C); sigma: (R,) or (R, N); context: (R, L, D); context_mask: (R, L) or None;
    positions: (1 or R, 3, N); skip: STG's perturbation of some rows, or None."""
    rows, tokens, _ = x.shape
    config = model.config
    calls = plan_calls(parallel, rows, tokens, config.num_heads)
    outputs = []
    for call in calls[parallel.rank]:
        r, t = call.rows, call.tokens
        args = (
            x[r, t],
            sigma[r] if sigma.ndim == 1 else sigma[r, t],
            context[r],
            None if context_mask is None else context_mask[r],
            (positions if positions.shape[0] == 1 else positions[r])[:, :, t],
        )
        kwargs = {} if skip is None else {"skip": replace(skip, samples=skip.samples[r])}
        if len(call.sizes) == 1:
            outputs.append(model(*args, **kwargs))
        else:
            group = parallel.group if call.whole_world else parallel.ulysses_group
            with split_tokens(model, TokenShards(group, call.sizes, call.index)):
                outputs.append(model(*args, **kwargs))
    return _gather(parallel, calls, outputs, (rows, tokens, config.out_channels), x.device)


def _gather(
    parallel: Parallel,
    calls: list[list[_Call]],
    outputs: list[torch.Tensor],
    shape: tuple[int, int, int],
    device: torch.device,
) -> torch.Tensor:
    """Every rank's call outputs, one all-gather over the world, laid out as the whole batch (R, N, C)."""
    channels = shape[2]

    def size(call: _Call) -> int:
        return (call.rows.stop - call.rows.start) * (call.tokens.stop - call.tokens.start) * channels

    longest = max(sum(size(c) for c in rank_calls) for rank_calls in calls)
    mine = torch.zeros(longest, dtype=torch.float32, device=device)
    if outputs:
        flat = torch.cat([out.float().reshape(-1) for out in outputs])
        mine[: flat.numel()] = flat
    gathered = [torch.empty_like(mine) for _ in calls]
    dist.all_gather(gathered, mine, group=parallel.group)
    whole = torch.empty(shape, dtype=torch.float32, device=device)
    for rank_calls, buffer in zip(calls, gathered, strict=True):
        start = 0
        for call in rank_calls:
            rows, tokens = call.rows, call.tokens
            block = buffer[start : start + size(call)]
            whole[rows, tokens] = block.view(rows.stop - rows.start, tokens.stop - tokens.start, channels)
            start += size(call)
    return whole
