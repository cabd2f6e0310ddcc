"""Frame conditions carried inside a latent video, and the sigma choice of a sampling call.

Node graphs pass one latent video between steps, so a conditioning image travels inside it: its
clean latents overwrite the video's latents at its frames, and a per-latent-frame noise mask says
how much of each frame is still to be generated (1 = all, 0 = keep; strength = 1 − mask). This is
ComfyUI's LATENT convention (`noise_mask` of shape (B, 1, F, 1, 1)), so latents made by either side
mean the same. The functions here convert between that form and `FrameCondition`s.

The mask can only say "this whole latent frame, in place", which is the 0.9.0 / 0.9.1 layout (and
ComfyUI's LTXVImgToVideo). For the 0.9.5+ "appended" layout (sampling/conditioning.py) a condition
that is not at frame 0, an image between latent frames, or a clip must reach `sample()` as a
`FrameCondition` of its own rather than through the mask: so the LATENT also carries the exact
conditions in a list under `CONDITIONS_KEY`, and `guide_conditions` picks what the layout needs.

ComfyUI's LTXVAddGuide appends conditions its own way: the guide's latent frames go after the video's
in the LATENT (with their noise mask), and each token's pixel coordinates ride in the CONDITIONING as
`keyframe_idxs`, which core's model puts on the last tokens; LTXVCropGuides cuts the frames off after
sampling. `split_core_guides` turns such a latent back into the video and FrameConditions that carry
those exact positions.
"""

from __future__ import annotations

import torch

from .sampling.conditioning import FrameCondition, check_fits
from .sampling.schedule import custom_sigmas, make_schedule, partial_schedule
from .types import VAE_TEMPORAL_SCALE

# The LATENT key under which the pack's image condition node records its FrameConditions, in order.
# ComfyUI's own nodes ignore it (and most build a fresh dict, dropping it); our sampler reads it.
CONDITIONS_KEY = "ltx_pack_conditions"
# The LATENT key under which our sampler notes how many guide frames (from LTXVAddGuide) follow the
# video's, so that our decode leaves them out when LTXVCropGuides did not (its output drops the key).
GUIDE_FRAMES_KEY = "ltx_pack_guide_frames"


def frame_index(frame: int, latent_frames: int) -> int:
    """A pixel frame index, negative counting from the end (−1 = last), → 0 … 8·(F − 1)."""
    frames = 1 + (latent_frames - 1) * VAE_TEMPORAL_SCALE
    index = frames + frame if frame < 0 else frame
    if not 0 <= index < frames:
        raise ValueError(
            f"frame {frame} is outside the video's {frames} frames; use 0 … {frames - 1}, or −1 for the last frame"
        )
    return index


def add_condition(
    latents: torch.Tensor, noise_mask: torch.Tensor | None, condition: FrameCondition
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write `condition` into latents (B, C, F, H, W): its clean latents at its frames and noise mask
    1 − strength there. Returns new (latents, noise_mask (B, 1, F, 1, 1)); the inputs are not changed."""
    check_fits(condition, latents.shape)
    b, _, f, _, _ = latents.shape
    start, cf = condition.latent_frame, condition.latents.shape[2]
    mask = torch.ones(b, 1, f, 1, 1) if noise_mask is None else noise_mask.expand(b, 1, f, -1, -1).clone()
    latents = latents.clone()
    latents[:, :, start : start + cf] = condition.latents.to(latents)
    mask = mask.to(torch.float32)
    mask[:, :, start : start + cf] = 1 - condition.strength
    return latents, mask


def conditions_from_mask(latents: torch.Tensor, noise_mask: torch.Tensor | None) -> list[FrameCondition]:
    """The frame conditions a noise mask describes: one per latent frame whose mask is below 1, with
    strength 1 − mask and that frame's latents as the clean target. The mask must be per frame
    ((B or 1, 1, F, 1, 1) or broadcastable to it) and equal across the batch."""
    if noise_mask is None:
        return []
    b, _, f, _, _ = latents.shape
    try:
        if noise_mask.ndim != 5:
            raise RuntimeError
        mask = noise_mask.to(torch.float32).expand(b, 1, f, *noise_mask.shape[3:])
    except RuntimeError as exc:
        raise ValueError(
            f"noise mask {tuple(noise_mask.shape)} does not fit latents {tuple(latents.shape)}; "
            "expected (B or 1, 1, F, 1, 1) with one value per latent frame"
        ) from exc
    per_frame = mask.amax(dim=(0, 1, 3, 4))  # (F,)
    if not torch.equal(mask.amin(dim=(0, 1, 3, 4)), per_frame):
        raise ValueError(
            f"noise mask of shape {tuple(noise_mask.shape)} varies within a frame or across the batch; LTX-Video "
            "conditions whole frames: give one value per latent frame, shape (1, 1, F, 1, 1)"
        )
    return [
        FrameCondition(
            latents[:, :, k : k + 1], k * VAE_TEMPORAL_SCALE, float(1 - per_frame[k].clamp(0, 1)), in_place=True
        )
        for k in range(f)
        if per_frame[k] < 1
    ]


def split_core_guides(
    latents: torch.Tensor, noise_mask: torch.Tensor | None, keyframe_idxs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, list[FrameCondition]]:
    """A LATENT built by LTXVAddGuide → (the video's latents, their noise mask, the guides). latents
    (B, C, F + g, H, W) end in g guide frames whose (B, 3, g·H·W) pixel coordinates are `keyframe_idxs`;
    each guide frame becomes a FrameCondition with those positions and strength 1 − its mask."""
    b, _, f, h, w = latents.shape
    if keyframe_idxs.ndim != 3 or keyframe_idxs.shape[1] != 3 or keyframe_idxs.shape[2] % (h * w):
        raise ValueError(
            f"the conditioning's keyframe_idxs {tuple(keyframe_idxs.shape)} do not fit latents "
            f"{tuple(latents.shape)}: expected (B, 3, guide frames × {h * w}) as LTXVAddGuide writes them"
        )
    guides = keyframe_idxs.shape[2] // (h * w)
    if guides >= f:
        raise ValueError(
            f"the conditioning names {guides} guide frames but the latent has only {f} frames; connect the "
            "latent and the conditioning from the same LTXVAddGuide node"
        )
    if not (keyframe_idxs == keyframe_idxs[:1]).all():
        raise ValueError("keyframe_idxs differ across the batch; LTX-Video guides sit at the same frames in each video")
    mask = None if noise_mask is None else noise_mask.expand(b, 1, f, *noise_mask.shape[3:])
    kept = [1.0] * guides if mask is None else [float(1 - mask[:, :, f - guides + j].amax()) for j in range(guides)]
    coords = keyframe_idxs[0].to(torch.int64)
    conditions = []
    for j in range(guides):
        where = coords[:, j * h * w : (j + 1) * h * w]
        frame = latents[:, :, f - guides + j : f - guides + j + 1]
        conditions.append(FrameCondition(frame, int(where[0].min()), min(max(kept[j], 0.0), 1.0), positions=where))
    video_mask = None if mask is None else mask[:, :, : f - guides]
    return latents[:, :, : f - guides], video_mask, conditions


def guide_conditions(
    latents: torch.Tensor,
    noise_mask: torch.Tensor | None,
    recorded: list[FrameCondition] | None,
    layout: str,
) -> list[FrameCondition]:
    """The conditions `sample()` gets for latents (B, C, F, H, W). In the "appended" layout the
    `recorded` ones (exact: frame, clip, strength), when there are any; in place, and for latents
    without a record (e.g. from ComfyUI's LTXVImgToVideo), the ones the noise mask describes, which
    in place is the same thing. Raises ValueError for a recorded condition that cannot sit in place."""
    if layout == "appended" and recorded is not None:
        for cond in recorded:
            check_fits(cond, latents.shape, appended=True)
        return list(recorded)
    for cond in recorded or ():
        check_fits(cond, latents.shape)
    return conditions_from_mask(latents, noise_mask)


def choose_sigmas(
    schedule: str, steps: int, tokens: int, denoise: float = 1.0, sigmas: torch.Tensor | None = None
) -> torch.Tensor:
    """Given `sigmas` (checked) win; else the named schedule for `steps` steps of a video with
    `tokens` latent tokens, its last `steps` steps of a longer schedule when denoise < 1."""
    if sigmas is not None:
        return custom_sigmas(sigmas)
    return partial_schedule(lambda n: make_schedule(schedule, n, tokens), steps, denoise)
