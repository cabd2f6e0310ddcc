"""Video extension: a new video that continues an existing one forward (after its end) or backward
(before its start), through `overlap` frames the two share, and the join of the two afterwards.

LTX Extend Video pins the old video's overlap frames as a clip condition at frame 0 (forward) or on
the new video's last `overlap` frames (backward), recorded in the LATENT as LTX Image Condition does
(see image_condition.py): 0.9.5+ models take it as the official pipeline's clip `ConditioningItem`,
0.9.0 / 0.9.1 models in place; either way Extend → Sampler equals `ltx_core.extend_video`. Clips get
no H.264 artefacts (the reference compresses single images only). LTX Join Video puts the decoded new
frames and the old ones together, the old frames unchanged.

A batch of new videos (the empty latent's batch_size) decodes to one IMAGE of batch × frames: the
join node needs that batch_size to cut it, joins each video to the old one, and returns the joined
videos one after another. The old video is one video; every new one continues it.
"""

from __future__ import annotations

import torch

from ..ltx_core.extension import DIRECTIONS, extension_condition, join_frames, overlap_frames
from ..ltx_core.media import resize_and_crop
from ..ltx_core.types import LATENT_CHANNELS, VAE_SPATIAL_SCALE, VAE_TEMPORAL_SCALE
from .image_condition import check_strength, encode_frames, with_condition
from .types import CATEGORY, VAE, Loaded, field, video_latents

DIRECTION_TOOLTIP = (
    "forward: the new video starts with the old one's last frames and goes on after its end; backward: it ends "
    "with the old one's first frames and leads up to its start."
)
OLD_TOOLTIP = "The existing video's frames, in order (one video); resized and centre-cropped to the new one's size."
OVERLAP = dict(default=17, min=1, max=8193, step=8)
OVERLAP_TOOLTIP = "Frames the old and the new video share (1 + 8·k); the same value on Extend and Join."


def check_overlap(overlap: int, old_frames: int, new_frames: int) -> None:
    """Raise ValueError, in the nodes' input words, unless `overlap` is 1 + 8·k frames and both videos
    are long enough: the old one at least the overlap, the new one longer (else nothing is new)."""
    if overlap < 1 or (overlap - 1) % VAE_TEMPORAL_SCALE:
        below = 1 + max(0, overlap - 1) // VAE_TEMPORAL_SCALE * VAE_TEMPORAL_SCALE
        raise ValueError(
            f"overlap {overlap} is not 1 + 8·k frames: set overlap to {below} or {below + VAE_TEMPORAL_SCALE}"
        )
    if old_frames < overlap:
        most = 1 + (old_frames - 1) // VAE_TEMPORAL_SCALE * VAE_TEMPORAL_SCALE  # the longest overlap that fits
        fits = f"lower overlap to {most} or " if old_frames else ""
        raise ValueError(
            f"the video has {old_frames} frames, fewer than the overlap of {overlap}: {fits}give a longer video"
        )
    if new_frames <= overlap:
        raise ValueError(
            f"the new video has {new_frames} frames, no more than the overlap of {overlap}, so nothing new would be "
            f"made: set the empty latent's length to {overlap + VAE_TEMPORAL_SCALE} or more, or lower overlap"
        )


class LTXPackExtendVideo:
    DESCRIPTION = "Makes the latent video continue an existing video, forward or backward, through shared frames."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The latent video with the old video's overlap frames in it; sample it, decode, then join.",)
    FUNCTION = "extend"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "latent": field("LATENT", "The new part's latent video (from the empty latent video node)."),
                "vae": field(VAE, "From the LTX model loader."),
                "video": field("IMAGE", OLD_TOOLTIP),
                "direction": field(list(DIRECTIONS), DIRECTION_TOOLTIP, default="forward"),
                "overlap": field("INT", OVERLAP_TOOLTIP, **OVERLAP),
                "strength": field(
                    "FLOAT",
                    "1 keeps the shared frames exactly; lower values let the model change them.",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                ),
            }
        }

    def extend(self, latent: dict, vae: Loaded, video: torch.Tensor, direction: str, overlap: int, strength: float):
        check_strength(strength)
        samples = video_latents(latent, LATENT_CHANNELS, "LTX Extend Video (pack)")
        frames = 1 + (samples.shape[2] - 1) * VAE_TEMPORAL_SCALE
        check_overlap(overlap, video.shape[0], frames)
        height, width = samples.shape[3] * VAE_SPATIAL_SCALE, samples.shape[4] * VAE_SPATIAL_SCALE
        shared = resize_and_crop(overlap_frames(video[..., :3], overlap, direction), width, height)
        condition = extension_condition(encode_frames(vae, shared), frames, direction, strength)
        return (with_condition(latent, samples, condition),)


class LTXPackJoinVideo:
    DESCRIPTION = "Joins an extension (decoded) to the video it continues: the old frames, then the new ones."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The joined video's frames (old + new − overlap), at the new video's size; videos in turn.",)
    FUNCTION = "join"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "video": field("IMAGE", OLD_TOOLTIP + " The video given to LTX Extend Video."),
                "new_frames": field("IMAGE", "The extension's frames (LTX VAE Decode after the sampler)."),
                "direction": field(list(DIRECTIONS), DIRECTION_TOOLTIP, default="forward"),
                "overlap": field("INT", OVERLAP_TOOLTIP, **OVERLAP),
                "batch_size": field(
                    "INT",
                    "Videos in new_frames: the empty latent's batch_size. Each is joined to the video.",
                    default=1,
                    min=1,
                    max=64,
                ),
            }
        }

    def join(self, video: torch.Tensor, new_frames: torch.Tensor, direction: str, overlap: int, batch_size: int):
        count, height, width = new_frames.shape[:3]
        length = count // batch_size
        if count % batch_size or (length - 1) % VAE_TEMPORAL_SCALE:
            batches = [b for b in range(1, count + 1) if count % b == 0 and (count // b - 1) % VAE_TEMPORAL_SCALE == 0]
            readings = ", ".join(f"{b} of {count // b}" for b in batches[:4])
            raise ValueError(
                f"new_frames holds {count} frames, which do not split into batch_size = {batch_size} videos of "
                f"1 + 8·k frames each: set batch_size to the empty latent's batch_size ({count} frames can be "
                f"{readings} frames)"
            )
        check_overlap(overlap, video.shape[0], length)
        old = resize_and_crop(video[..., :3], width, height)
        clips = new_frames[..., :3].reshape(batch_size, length, height, width, 3)  # (b t) h w c -> b t h w c
        return (torch.cat([join_frames(old.to(clip), clip, overlap, direction) for clip in clips]),)
