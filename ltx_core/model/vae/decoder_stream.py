"""Exact chunked decoding: the decoder runs along time piece by piece and still computes the frames of
the whole video.

The decoder is not causal, but it is local in time: it is a chain of steps (conv_in, each res block,
each upsampler, conv_out; `Decoder.steps`) and output frame t of a step reads only its input frames
t − front … t + back (2 and 2 for a res block's two 3-tap convolutions), everything else being per
frame (PixelNorm, adaLN, SiLU, the noise maps, which are shared over time). So a step handed the last
`front + back` input frames of its previous piece in front of the new ones computes the whole video's
frames, except the last `back`, which wait for the next piece: each step lags its input by `back`
frames, and a final piece pads with the last frame, as the whole decode does.

The stream runs the deepest step that has work first, so every step's queue holds at most about one
piece: the memory follows the piece, not the video.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ...types import VAE_TEMPORAL_SCALE
from .convolution import conv_layout


@dataclass(frozen=True)
class Step:
    """One step of the decoder: (B, C, T, H, W) → (B, C', stride·T − (stride − 1), H', W'), where output
    frame t (before the temporal upsampling) reads input frames t − front … t + back, the ends padded by
    repeating the first and last frame; a temporal `stride` drops the video's first stride − 1 frames."""

    run: Callable[[torch.Tensor], torch.Tensor]
    front: int
    back: int
    stride: int = 1


def _keep(x: torch.Tensor) -> torch.Tensor:
    """A copy of a slice, so that the tensor it was cut from can be freed (channels-last on CUDA, as
    `conv_layout` would make it)."""
    return x.clone(memory_format=torch.channels_last_3d if x.is_cuda else torch.contiguous_format)


class _StepState:
    """A step's input frames waiting to run, and the last `front + back` frames it ran (its context)."""

    def __init__(self, step: Step, limit: int) -> None:
        self.step = step
        # frames of context: the step's reach, and one more for an upsampling that reaches nothing behind,
        # whose first output frame (dropped by the step) must then be a context frame's
        self.reach = step.front + step.back + (1 if step.stride > 1 and step.front == 0 else 0)
        self.limit = limit  # frames per piece
        self.queue: list[torch.Tensor] = []
        self.tail: torch.Tensor | None = None
        self.seen = 0  # input frames run so far
        self.done = False

    def queued(self) -> int:
        return sum(x.shape[2] for x in self.queue)

    def outputs(self, taken: int, final: bool) -> int:
        """Input frames whose output is complete once `taken` more frames have run."""
        context = min(self.reach, self.seen)
        return min(context, self.step.back) + taken - (0 if final else self.step.back)

    def run(self, taken: int, final: bool) -> torch.Tensor:
        """Run the next `taken` queued frames behind their context; the frames of the whole video that
        are complete, (B, C', stride·outputs, H', W') (the video's first stride − 1 dropped)."""
        context = min(self.reach, self.seen)
        if self.queue:
            queue = torch.cat(self.queue, dim=2) if len(self.queue) > 1 else self.queue[0]
            x, rest = queue[:, :, :taken], queue[:, :, taken:]
            self.queue = [_keep(rest)] if rest.shape[2] else []
        else:  # a final piece of context alone: the frames held back wait for nothing more
            assert self.tail is not None and taken == 0
            x = self.tail[:, :, :0]
        if context:
            assert self.tail is not None
            x = torch.cat([self.tail[:, :, self.tail.shape[2] - context :], x], dim=2)
        self.tail = _keep(x[:, :, max(0, x.shape[2] - self.reach) :])
        self.seen += taken
        out = self.step.run(x)
        # complete frames of x: [first, last); x's padding in front is the video's only when first = 0
        first, last = max(0, context - self.step.back), x.shape[2] - (0 if final else self.step.back)
        assert first or self.seen == x.shape[2] or self.step.stride == 1, "drops a frame inside the video"
        s = self.step.stride
        return out[:, :, max(0, s * first - (s - 1)) : s * last - (s - 1)]


def stream(steps: list[Step], z: torch.Tensor, frames: int) -> Iterator[torch.Tensor]:
    """Run `steps` over latents z (B, C, F, h, w) in pieces of at most 8·`frames` frames of each step's
    own input; yields the last step's output in consecutive pieces along time, together what running the
    steps on the whole gives. The last step's piece is 8·`frames` output frames, what `frames` latent
    frames decode to; a piece of an earlier step holds no more as long as each temporal ×2 upsampling
    at most halves the channels per pixel, as in every released decoder (and the latent-resolution
    steps, which are cheap, recompute their few frames of context less often)."""
    states = [_StepState(step, VAE_TEMPORAL_SCALE * frames) for step in steps]
    states[0].queue.append(conv_layout(z))
    while True:  # the deepest step that can run runs first, so that every queue holds about one piece
        for j in reversed(range(len(states))):
            state = states[j]
            if state.done:
                continue
            back, queued = state.step.back, state.queued()
            need = back + 1 - min(state.seen, back)  # frames to run for at least one complete output
            taken = min(queued, max(state.limit, need))
            final = taken == queued and all(s.done for s in states[:j])  # then pad with the last frame
            if not final and taken < need:
                continue
            state.done = final
            if final and state.outputs(taken, final=True) == 0:
                break
            out = state.run(taken, final)
            if j + 1 < len(states):
                states[j + 1].queue.append(out)
            else:
                yield out
            break
        else:
            return
