"""The VAE decode split along time over processes, equal to the one-process decode.

The decoder is a chain of steps that are local in time (model/vae/decoder_stream.py): output frame t of
a step reads its input frames t − front … t + back (two each way for a res block), everything else is per
frame or shared over time (the adaLN timestep, the injected noise's spatial maps). The one-process
stream carries that reach from one chunk to the next inside each step (the last front + back input
frames kept, the last back output frames held back); split over ranks, the chunks run at once, so the
reach travels the other way: before each step every rank sends its first `back` input frames to the
rank before it and its last `front` to the rank after it (a halo), runs the step on halo + own frames,
and keeps the outputs of its own frames. At the video's two ends there is no halo and the step's own
edge padding (repeated first / last frame) applies, as in the whole decode. A temporal upsampling drops
the video's first output frame only: a later rank takes at least one frame of halo in front so that
the frame it drops is the halo's.

Rank p decodes latent frames `split_sizes(F, world)[p]`: 8·n pixel frames (rank 0: 8·n − 7), joined on
one rank and broadcast to the others unless one `dst` is named. Every rank draws the decode noise and
the injected noise's maps from its own copy of the seeded generator, in the same order as the whole
decode, so the maps are the same everywhere.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from ..model.vae.autoencoder import VideoVAE
from ..model.vae.convolution import conv_layout
from ..model.vae.decoder_stream import Step
from ..model.vae.tiling import decode_bytes, default_budget
from ..types import VAE_SPATIAL_SCALE, VAE_TEMPORAL_SCALE
from .layout import Parallel, span, split_sizes

log = logging.getLogger(__name__)


def _halo(step: Step, part: int, parts: int) -> tuple[int, int]:
    """Input frames part `part` of `parts` takes in front of and behind its own for `step`."""
    front = max(step.front, 1) if step.stride > 1 else step.front  # a dropped frame must be a halo frame
    return (front if part > 0 else 0), (step.back if part < parts - 1 else 0)


def frames_per_step(steps: list[Step], sizes: list[int]) -> list[list[int]] | None:
    """Each part's input frame count at every step, then its output count (the last row); None when some
    part holds fewer frames than a neighbour's halo needs (then the split cannot be exact)."""
    rows, parts = [list(sizes)], len(sizes)
    for step in steps:
        counts = rows[-1]
        for p in range(parts):  # part p sends its last frames to the halo in front of p + 1 and its first behind p − 1
            on = _halo(step, p + 1, parts)[0] if p + 1 < parts else 0
            back = _halo(step, p - 1, parts)[1] if p > 0 else 0
            if counts[p] < max(on, back):
                return None
        s = step.stride
        rows.append([s * n - (s - 1 if p == 0 else 0) for p, n in enumerate(counts)])
    return rows


def decode_split(
    parallel: Parallel,
    vae: VideoVAE,
    latents: torch.Tensor,
    timestep: float | torch.Tensor | None = None,
    *,
    noise_scale: float = 0.0,
    generator: torch.Generator | None = None,
    memory_budget: int | None = None,
    dst: int | None = None,
) -> torch.Tensor | None:
    """`vae.decode(latents, timestep, noise_scale=…, generator=…)` with the latent frames split over
    `parallel`'s ranks: the video (B, 3, 8(F−1)+1, 32h, 32w) on every rank, or only on rank `dst` (None
    on the others). Every rank passes the same arguments, `generator` seeded alike (a decode that draws
    noise needs one).

    Each rank decodes its frames whole; when that does not fit `memory_budget` bytes (default: the
    device's, see `tiling.default_budget`) on some rank, or the video is too short for every rank to
    hold a halo's worth of frames, one rank decodes alone as `vae.decode` plans it."""
    noisy = noise_scale > 0 or any(getattr(m, "inject_noise", False) for m in vae.decoder.modules())
    if generator is None and noisy:
        raise ValueError(
            "a split decode that draws noise needs a seeded generator (the same on every rank): pass generator="
        )
    state = generator.get_state() if generator is not None else None
    z, t, noise = vae.decoder_input(latents, timestep, noise_scale=noise_scale, generator=generator)
    steps = vae.decoder.steps(t, noise, z.dtype)
    parts, part, group = parallel.world, parallel.rank, parallel.group
    root = 0 if dst is None else dst  # where the video is joined
    sizes = split_sizes(z.shape[2], parts)
    counts = frames_per_step(steps, sizes)
    budget = default_budget(z.device) if memory_budget is None else memory_budget
    piece = (*z.shape[:2], max(sizes) + 4, *z.shape[3:])  # the largest part with a latent halo each side
    fits = counts is not None and decode_bytes(vae.config, piece, None, z.dtype) <= budget
    agreed = torch.tensor([float(fits)], device=z.device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MIN, group=group)  # every rank takes the same path
    if agreed.item():
        x = conv_layout(z[:, :, span(sizes, part)])
        for step in steps:
            x = _run_with_halo(step, x, part, parts, group)
        video = _gather_frames(x, counts[-1], part, root, group)
    else:
        why = "too few latent frames for a halo on every rank" if counts is None else "over the memory budget"
        log.info("VAE decode not split (%s): rank %d decodes alone", why, root)
        video = None
        if part == root:
            if generator is not None:
                generator.set_state(state)  # the same draws as the split would have made
            video = vae.decode(latents, timestep, noise_scale=noise_scale, generator=generator, memory_budget=budget)
    if dst is not None:
        return video
    if video is None:
        channels = vae.decoder.conv_out.conv.out_channels // vae.decoder.patch_size**2
        b, _, f, h, w = z.shape
        shape = (b, channels, VAE_TEMPORAL_SCALE * (f - 1) + 1, VAE_SPATIAL_SCALE * h, VAE_SPATIAL_SCALE * w)
        video = z.new_empty(shape)
    else:
        video = video.contiguous()
    dist.broadcast(video, _peer(group, root), group)
    return video


def _peer(group: dist.ProcessGroup | None, rank: int) -> int:
    """The global rank of `rank` in `group` (point-to-point operations name global ranks)."""
    return rank if group is None else dist.get_global_rank(group, rank)


def _run_with_halo(step: Step, x: torch.Tensor, part: int, parts: int, group: dist.ProcessGroup | None) -> torch.Tensor:
    """`step` on this part's input frames x (B, C, n, H, W) → the whole decode's output frames of them."""
    front, back = _halo(step, part, parts)
    after_front = _halo(step, part + 1, parts)[0] if part + 1 < parts else 0  # what the neighbours take
    before_back = _halo(step, part - 1, parts)[1] if part > 0 else 0
    left = x.new_empty((*x.shape[:2], front, *x.shape[3:]))
    right = x.new_empty((*x.shape[:2], back, *x.shape[3:]))
    before = _peer(group, part - 1) if part > 0 else None
    after = _peer(group, part + 1) if part + 1 < parts else None
    ops = []
    if front:
        ops.append(dist.P2POp(dist.irecv, left, before, group))
    if after_front:
        ops.append(dist.P2POp(dist.isend, x[:, :, x.shape[2] - after_front :].contiguous(), after, group))
    if back:
        ops.append(dist.P2POp(dist.irecv, right, after, group))
    if before_back:
        ops.append(dist.P2POp(dist.isend, x[:, :, :before_back].contiguous(), before, group))
    for request in dist.batch_isend_irecv(ops) if ops else ():
        request.wait()
    n = x.shape[2]
    out = step.run(conv_layout(torch.cat([left, x, right], dim=2)))
    s = step.stride  # input frame j gave outputs s·j − (s − 1) … s·j (the video's first s − 1 dropped)
    return out[:, :, max(0, s * front - (s - 1)) : s * (front + n) - (s - 1)]


def _gather_frames(
    x: torch.Tensor, counts: list[int], part: int, dst: int, group: dist.ProcessGroup | None
) -> torch.Tensor | None:
    """Every part's output frames (B, 3, counts[p], H, W), joined along time on rank `dst`."""
    if part != dst:
        dist.send(x.contiguous(), _peer(group, dst), group)
        return None
    pieces = []
    for p, count in enumerate(counts):
        if p == part:
            pieces.append(x)
            continue
        piece = x.new_empty((*x.shape[:2], count, *x.shape[3:]))
        dist.recv(piece, _peer(group, p), group)
        pieces.append(piece)
    return torch.cat(pieces, dim=2)
