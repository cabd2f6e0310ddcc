"""Frame conditioning: images or short clips pinned to frames of the video, and the token sequence the
sampler starts from.

Two layouts, one per generation of reference pipelines (the sampler picks one by name, see rules.py):

- in place (0.9.0 / 0.9.1: diffusers' LTXImageToVideoPipeline, the official pipeline of January 2025,
  ComfyUI's LTXVImgToVideo): every condition overwrites the video's latents at its frames; a token of
  strength s starts at `s·clean + (1 − s)·noise`.
- appended (0.9.5 on: the official `ConditioningItem`s of `LTXVideoPipeline.prepare_conditioning`,
  diffusers' LTXConditionPipeline, ComfyUI's LTXVAddGuide): conditions at frame 0 are lerped into the
  first latent frames; any other image becomes extra tokens in front of the video's, positioned at its
  target pixel frame; a clip of 1 + 8·k frames at frame S > 0 appends its first two latent frames the
  same way (the first of them encodes one pixel frame, unlike the video's latent frame there) and lerps
  the rest in place from latent frame S/8 + 2. Appended tokens start at `lerp(noise, clean, s)` with
  their own noise and are dropped before decoding.

Where the ≥0.9.5 references differ, we follow the official pipeline: the causal RoPE fix comes from
the transformer's config (diffusers applies it always; every 0.9.5+ config sets it). Both references
draw the appended tokens' noise after the video's from one generator; so do we (`generator`), and
the pack's pipeline draws the video's noise channel-major first, as diffusers does (the official
pipeline draws it token-major). The references encode conditions by sampling the VAE posterior, the
pack uses its mean (as ComfyUI). Images smaller than the video (the official media_x / media_y
placement) are not supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..model.patchify import to_tokens
from ..model.rope import fractional_positions, video_positions
from ..types import VAE_TEMPORAL_SCALE
from .noise import draw_noise

# Leading latent frames of a clip after frame 0 that become appended tokens (the official
# `num_prefix_latent_frames`, diffusers' default too).
PREFIX_LATENT_FRAMES = 2


@dataclass(frozen=True)
class FrameCondition:
    """Normalised latents (1 or B, 128, f, h, w) of an image (f = 1) or a clip of 1 + 8·(f − 1) frames,
    pinned from pixel frame `frame` with `strength` in [0, 1] (1 = kept exactly). Where the frame may
    lie depends on the layout: see `check_fits`."""

    latents: torch.Tensor
    frame: int = 0
    strength: float = 1.0
    # Two placements that ComfyUI's own nodes make, which the layout would not choose by itself:
    # in_place: lerped into the video's latents at its frames in every layout (what a noise mask says);
    # positions: (3, f·h·w) integer pixel coordinates (time, y, x) of appended tokens placed exactly
    # there in every layout that appends (LTXVAddGuide's `keyframe_idxs`); `frame` is then their first.
    in_place: bool = False
    positions: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.latents.ndim != 5:
            raise ValueError(f"condition latents must be (B, C, f, h, w), got shape {tuple(self.latents.shape)}")
        if self.frame < 0:
            raise ValueError(f"a condition starts at pixel frame 0 or later, got {self.frame}")
        if not 0 <= self.strength <= 1:
            raise ValueError(f"condition strength must be in [0, 1], got {self.strength}")
        if self.positions is not None:
            tokens = self.latents[0, 0].numel()
            if self.in_place or tuple(self.positions.shape) != (3, tokens):
                raise ValueError(
                    f"positions of appended tokens must be (3, {tokens}) for condition latents "
                    f"{tuple(self.latents.shape)}, and not in place; got {tuple(self.positions.shape)}"
                )

    @property
    def latent_frame(self) -> int:
        """Latent frame k holds pixel frames 8k − 7 … 8k, so pixel frame 8k sits in latent frame k."""
        return self.frame // VAE_TEMPORAL_SCALE

    @property
    def is_clip(self) -> bool:
        """More than one latent frame: a clip of 9, 17, … pixel frames rather than an image."""
        return self.latents.shape[2] > 1


def check_fits(cond: FrameCondition, shape: Sequence[int], *, appended: bool = False) -> None:
    """Raise ValueError unless `cond` fits a latent video of `shape` (B, C, F, H, W). In place, a
    condition starts at a multiple of 8; appended, an image may sit at any pixel frame (its tokens
    carry their own position) and only clips after frame 0 need a multiple of 8."""
    b, c, f, h, w = shape
    cb, cc, cf, ch, cw = cond.latents.shape
    if cc != c or (ch, cw) != (h, w) or cb not in (1, b):
        raise ValueError(
            f"condition latents {tuple(cond.latents.shape)} do not fit the video latents {tuple(shape)}: "
            "encode the image at the video's width and height"
        )
    if cond.positions is not None:  # tokens with their own positions fit wherever their size does
        return
    if cond.frame % VAE_TEMPORAL_SCALE and (not appended or cond.is_clip or cond.in_place):
        below = cond.frame // VAE_TEMPORAL_SCALE * VAE_TEMPORAL_SCALE
        what = "a clip" if appended else "a condition"
        raise ValueError(
            f"{what} can start at frame 0 or a multiple of {VAE_TEMPORAL_SCALE}, got {cond.frame}: "
            f"use {below} or {below + VAE_TEMPORAL_SCALE}"
        )
    frames = 1 + (f - 1) * VAE_TEMPORAL_SCALE
    if cond.latent_frame + cf > f or cond.frame >= frames:
        raise ValueError(
            f"a condition of {cf} latent frames at frame {cond.frame} runs past the video's {f} latent "
            f"frames ({frames} pixel frames): start it earlier or make the video longer"
        )


def appended_token_count(conditions: Sequence[FrameCondition]) -> int:
    """How many tokens the appended layout puts in front of the video's: all of a condition with its
    own positions, the first (up to PREFIX_LATENT_FRAMES) latent frames of each other one after frame 0."""
    return sum(
        c.latents[0, 0].numel() if c.positions is not None else c.latents[0, 0, :PREFIX_LATENT_FRAMES].numel()
        for c in conditions
        if c.positions is not None or not (c.frame == 0 or c.in_place)
    )


def condition_latents(
    shape: Sequence[int], conditions: Sequence[FrameCondition], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean latents (B, C, F, H, W) and strength mask (B, 1, F, H, W), both float32, from `conditions`
    written in place on a latent video of `shape`; a later condition overwrites an earlier one."""
    b, c, f, h, w = shape
    clean = torch.zeros(b, c, f, h, w, device=device)
    strength = torch.zeros(b, 1, f, h, w, device=device)
    for cond in conditions:
        check_fits(cond, shape)
        start, cf = cond.latent_frame, cond.latents.shape[2]
        clean[:, :, start : start + cf] = cond.latents.to(device=device, dtype=torch.float32)
        strength[:, :, start : start + cf] = cond.strength
    return clean, strength


@dataclass(frozen=True)
class TokenState:
    """What the sampler starts from. tokens (B, N, C) float32: `appended` condition tokens, then the
    video's F·H·W tokens in (f, h, w) order. strength (B, N) float32 per token, 0 = free, or (B, 1)
    zeros without conditions (one noise level per sample). positions (1, 3, N): RoPE coordinates."""

    tokens: torch.Tensor
    strength: torch.Tensor
    positions: torch.Tensor
    appended: int = 0


def in_place_start(
    noise: torch.Tensor,
    sigma: torch.Tensor,
    conditions: Sequence[FrameCondition],
    *,
    initial: torch.Tensor | None,
    frame_rate: float,
    causal_fix: bool,
    generator: torch.Generator,
) -> TokenState:
    """noise (B, C, F, H, W) at noise level `sigma`, over `initial` (video-to-video) or zeros, with the
    conditions written in: a token of strength s starts at noise level σ·(1 − s). Draws no noise."""
    if any(cond.positions is not None for cond in conditions):
        raise ValueError(
            "conditions with their own token positions (guide frames appended by ComfyUI's LTXVAddGuide) need "
            "the appended layout of 0.9.5+ models; 0.9.0 / 0.9.1 models take conditions in place only"
        )
    b, _, f, h, w = noise.shape
    positions = video_positions(f, h, w, frame_rate=frame_rate, causal_fix=causal_fix, device=noise.device)
    base = torch.zeros_like(noise) if initial is None else initial.to(noise)
    strength = noise.new_zeros(b, 1)
    if conditions:
        clean, mask = condition_latents(noise.shape, conditions, noise.device)
        base = torch.where(mask > 0, clean, base)
        strength = to_tokens(mask)[..., 0]  # (B, N)
    base = to_tokens(base)  # (B, N, C)
    tokens = base + (sigma * (1 - strength))[..., None] * (to_tokens(noise) - base)  # (1 − σ')·base + σ'·noise
    return TokenState(tokens, strength, positions)


def appended_start(
    noise: torch.Tensor,
    sigma: torch.Tensor,
    conditions: Sequence[FrameCondition],
    *,
    initial: torch.Tensor | None,
    frame_rate: float,
    causal_fix: bool,
    generator: torch.Generator,
) -> TokenState:
    """The official ≥0.9.5 `prepare_latents` + `prepare_conditioning`, operation for operation: the
    video at `σ·noise + (1 − σ)·initial`, frame-0 conditions lerped in, the others appended (module
    docstring) with noise drawn from `generator` per condition in order, shape (B, C, f, H, W) (as the
    official pipeline and diffusers' LTXConditionPipeline draw it after the video's noise)."""
    b, c, f, h, w = noise.shape
    video = noise.clone() if initial is None else sigma * noise + (1 - sigma) * initial.to(noise)
    strength = noise.new_zeros(b, f, h, w)
    tokens, strengths, positions = [], [], []
    for cond in conditions:
        check_fits(cond, noise.shape, appended=True)
        latents = cond.latents.to(noise).expand(b, -1, -1, -1, -1)
        s = cond.strength
        if cond.positions is None and (cond.frame == 0 or cond.in_place):
            k0, k = cond.latent_frame, latents.shape[2]
            video[:, :, k0 : k0 + k] = torch.lerp(video[:, :, k0 : k0 + k], latents, s)
            strength[:, k0 : k0 + k] = s
            continue
        if cond.is_clip and cond.positions is None:  # all but the prefix in place, right after the prefix's
            start = cond.latent_frame + PREFIX_LATENT_FRAMES
            rest = latents[:, :, PREFIX_LATENT_FRAMES:]
            video[:, :, start : start + rest.shape[2]] = torch.lerp(video[:, :, start : start + rest.shape[2]], rest, s)
            strength[:, start : start + rest.shape[2]] = s
            latents = latents[:, :, :PREFIX_LATENT_FRAMES]
        extra = torch.lerp(draw_noise(tuple(latents.shape), generator, device=noise.device), latents, s)
        tokens.append(to_tokens(extra))  # (B, f·H·W, C)
        strengths.append(noise.new_full(tokens[-1].shape[:2], s))
        if cond.positions is not None:
            positions.append(fractional_positions(cond.positions.to(noise.device), frame_rate))
        else:
            where = dict(frame_rate=frame_rate, causal_fix=causal_fix, start_frame=cond.frame, device=noise.device)
            positions.append(video_positions(latents.shape[2], h, w, **where))
    appended = sum(t.shape[1] for t in tokens)
    video_positions_ = video_positions(f, h, w, frame_rate=frame_rate, causal_fix=causal_fix, device=noise.device)
    return TokenState(
        tokens=torch.cat([*tokens, to_tokens(video)], dim=1),
        strength=torch.cat([*strengths, strength.flatten(1)], dim=1) if conditions else strength.new_zeros(b, 1),
        positions=torch.cat([*positions, video_positions_], dim=2),
        appended=appended,
    )
