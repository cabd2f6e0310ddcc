"""Chunked causal encoding: the encoder runs along time chunk by chunk and still computes the latents
of the whole video, because every causal conv and time-folding downsample is handed the last input
frames of the previous chunk (see tiling.py for where this is used and why it is exact)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from .convolution import CausalConv3d, SpaceToDepthDownsample

if TYPE_CHECKING:
    from .autoencoder import Encoder


def _conv_context(module: nn.Module, seen: int) -> tuple[int, int]:
    """A causal k-tap conv with temporal stride S: output j reads input frames jS−k+1 … jS and belongs to
    the chunk holding frame jS. For a chunk starting at input frame `seen`, the first output needs
    `context` earlier frames; prepended, they (and the conv's own replicated padding) give `drop`
    extra outputs in front."""
    k, stride = module.kernel_size, module.conv.stride[0]
    first = -(-seen // stride)  # ceil: the chunk's first output
    context = min(seen, seen - first * stride + k - 1)
    offset = first * stride - seen + context  # where the first output's window starts, after the padding
    assert offset % stride == 0, "a chunk boundary splits a temporal stride"
    return context, offset // stride


def _fold_context(module: nn.Module, seen: int) -> tuple[int, int]:
    """A time-folding SpaceToDepthDownsample: it prepends a copy of its first input frame and folds
    pairs, so a chunk must start at an odd frame; 3 earlier frames (1 at the very start) restore both
    the pairing and the 3-tap conv's view, and the first (context + 1) / 2 folded frames are extra."""
    if seen == 0:
        return 0, 0
    assert seen % 2 == 1, "a chunk boundary splits a temporal fold"
    context = min(seen, 3)
    return context, (context + 1) // 2


class CausalStream:
    """While active, the encoder runs chunk by chunk along time and gives the latents of the whole:
    every causal conv and time-folding downsample (`_CONTEXT`) gets the last frames of its previous
    input in front of the new chunk, and the outputs they add are cut off again. Use one stream per
    spatial tile, feeding chunks in order; a chunk boundary must be a multiple of 8 pixel frames after
    frame 0, where every temporal stride lines up."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.tail: dict[nn.Module, torch.Tensor] = {}  # the last ≤ 3 input frames
        self.seen: dict[nn.Module, int] = {}
        self.drop: dict[nn.Module, int] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def _before(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]  # (B, C, T, H, W)
        seen = self.seen.get(module, 0)
        context, self.drop[module] = _CONTEXT[type(module)](module, seen)
        tail = self.tail.get(module, x[:, :, :0])
        self.tail[module] = torch.cat([tail, x[:, :, -3:]], dim=2)[:, :, -3:]
        self.seen[module] = seen + x.shape[2]
        return (torch.cat([tail[:, :, tail.shape[2] - context :], x], dim=2), *args[1:])

    def _after(self, module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        return out[:, :, self.drop[module] :]

    def __enter__(self) -> CausalStream:
        folds = [m for m in self.encoder.modules() if isinstance(m, SpaceToDepthDownsample) and m.stride[0] > 1]
        inner = {id(m.conv) for m in folds}  # handled as part of their fold
        convs = [m for m in self.encoder.modules() if isinstance(m, CausalConv3d) and id(m) not in inner]
        for module in folds + convs:
            self.handles += [module.register_forward_pre_hook(self._before), module.register_forward_hook(self._after)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()


_CONTEXT: dict[type, Callable[[nn.Module, int], tuple[int, int]]] = {
    CausalConv3d: _conv_context,
    SpaceToDepthDownsample: _fold_context,
}
