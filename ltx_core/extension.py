"""Video extension: generate a new video that continues an existing one forward (after its end) or
backward (before its start), by conditioning it on an overlap of the old video, then join the two.

This is what the official pipeline does with a clip `ConditioningItem` (the overlap) at frame 0
(forward) or at the end (backward); the sampler's layout decides how the clip is laid out (see
sampling/conditioning.py). Lengths are in pixel frames and follow the VAE's 1 + 8·k rule: an overlap
of 1 + 8·(k − 1) frames is k latent frames.

Frames (T, H, W, 3) or latents (B, C, F, H, W) of the old video are accepted. Frames are exact: the
overlap is re-encoded, so its first latent frame is a one-frame latent as the model expects. Latents
are sliced: going backward that is exact too (the old video's latent frame 0 is a one-frame latent),
going forward the overlap's first latent frame holds 8 frames but is read as one (Lightricks'
LTXVExtendSampler does the same and drops that latent from its output; `join_latents` drops it too).
"""

from __future__ import annotations

import torch

from .sampling.conditioning import FrameCondition
from .types import VAE_TEMPORAL_SCALE

DIRECTIONS = ("forward", "backward")


def _check(direction: str, overlap: int, have: int, what: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if overlap < 1 or (overlap - 1) % VAE_TEMPORAL_SCALE:
        raise ValueError(f"the overlap must be 1 + 8·k frames (1, 9, 17, …), got {overlap}")
    if overlap > have:
        raise ValueError(f"an overlap of {overlap} frames needs a video of at least that many {what}, got {have}")


def overlap_frames(video: torch.Tensor, overlap: int, direction: str = "forward") -> torch.Tensor:
    """The `overlap` frames (1 + 8·k) of video (T, H, W, 3) the new video continues from: its last
    ones going forward, its first ones going backward."""
    _check(direction, overlap, video.shape[0], "frames")
    return video[-overlap:] if direction == "forward" else video[:overlap]


def overlap_latents(latents: torch.Tensor, overlap: int, direction: str = "forward") -> torch.Tensor:
    """The latent frames of latents (B, C, F, H, W) covering `overlap` pixel frames (1 + 8·k → k + 1
    latent frames) at the end (forward) or start (backward); see the module docstring on forward."""
    count = 1 + (overlap - 1) // VAE_TEMPORAL_SCALE
    _check(direction, overlap, 1 + (latents.shape[2] - 1) * VAE_TEMPORAL_SCALE, "frames")
    return latents[:, :, -count:] if direction == "forward" else latents[:, :, :count]


def extension_condition(
    overlap: torch.Tensor, frames: int, direction: str = "forward", strength: float = 1.0
) -> FrameCondition:
    """The condition that makes a new video of `frames` pixel frames continue an old one: the
    overlap's normalised latents (B, C, k, H, W) at frame 0 (forward) or at its last 1 + 8·(k − 1)
    frames (backward)."""
    length = 1 + (overlap.shape[2] - 1) * VAE_TEMPORAL_SCALE
    _check(direction, length, frames, "frames in the new video")
    return FrameCondition(overlap, 0 if direction == "forward" else frames - length, strength)


def join_frames(old: torch.Tensor, new: torch.Tensor, overlap: int, direction: str = "forward") -> torch.Tensor:
    """old and new frames (T, H, W, 3) as one video: the old frames unchanged, plus the new frames
    outside the overlap."""
    _check(direction, overlap, new.shape[0], "frames")
    return torch.cat([old, new[overlap:]]) if direction == "forward" else torch.cat([new[:-overlap], old])


def join_latents(old: torch.Tensor, new: torch.Tensor, overlap: int, direction: str = "forward") -> torch.Tensor:
    """old and new latents (B, C, F, H, W) as one latent video: the new latent frames outside the
    overlap's are kept, whole 8-frame latents only, for a k-latent overlap: forward, the new video's
    latents from index k on (they follow the old video's last); backward, the new video's first
    F − k + 1 latents (the last of them ends on the old video's frame 0), then the old video's
    latents after its one-frame latent 0."""
    count = 1 + (overlap - 1) // VAE_TEMPORAL_SCALE
    _check(direction, overlap, 1 + (new.shape[2] - 1) * VAE_TEMPORAL_SCALE, "frames")
    if direction == "forward":
        return torch.cat([old, new[:, :, count:]], dim=2)
    return torch.cat([new[:, :, : new.shape[2] - count + 1], old[:, :, 1:]], dim=2)
