"""Pins an image (or a short clip) to a frame of the latent video: first frame, keyframes, last frame.

The condition travels inside the LATENT twice: exactly, in a list of FrameConditions under our own key
(what the sampler uses for 0.9.5+ models, which append conditions after frame 0 as extra tokens), and,
where a whole latent frame can hold it, written in place (clean latents at its frames, `noise_mask` =
1 − strength) as ComfyUI's own LTX image-to-video node does, which is what 0.9.0 / 0.9.1 models and
core's nodes read. Nodes of this kind chain, and core's LTX latents work as input.
"""

from __future__ import annotations

import torch

from ..ltx_core import FrameCondition
from ..ltx_core.latent_guides import CONDITIONS_KEY, add_condition, conditions_from_mask, frame_index
from ..ltx_core.media import compress_like_h264, resize_and_crop, video_tensor_from_frames
from ..ltx_core.memory import vae_budget
from ..ltx_core.sampling.conditioning import check_fits
from ..ltx_core.types import LATENT_CHANNELS, VAE_SPATIAL_SCALE, VAE_TEMPORAL_SCALE, check_frames
from . import comfy_bridge as bridge
from .types import CATEGORY, VAE, Loaded, video_latents


class LTXPackImageCondition:
    DESCRIPTION = "Keeps an image (or a 1 + 8·k frame clip) at a frame of the video: image-to-video, keyframes."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The latent video with the condition written in; chain more of these for more keyframes.",)
    FUNCTION = "condition"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "latent": ("LATENT", {"tooltip": "The latent video to condition (from the empty latent video node)."}),
                "vae": (VAE, {"tooltip": "From the LTX model loader."}),
                "image": (
                    "IMAGE",
                    {
                        "tooltip": "One image, or a clip of 1 + 8·k frames; resized and centre-cropped "
                        "to the video's size."
                    },
                ),
                "frame": (
                    "INT",
                    {
                        "default": 0,
                        "min": -8193,
                        "max": 8192,
                        "step": 1,
                        "tooltip": "Pixel frame it starts at: 0 = first; negative counts from the end (−1 = last "
                        "frame). 0.9.5+ models take an image at any frame; clips, and every condition of 0.9.0 / "
                        "0.9.1 models, start at a multiple of 8.",
                    },
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "1 keeps the frame exactly; lower values let the model change it.",
                    },
                ),
                "compression": (
                    "INT",
                    {
                        "default": 29,
                        "min": 0,
                        "max": 51,
                        "tooltip": "H.264 CRF applied to the "
                        "image first so it looks like the video frames the model learned from (0 = none).",
                    },
                ),
            }
        }

    def condition(self, latent: dict, vae: Loaded, image: torch.Tensor, frame: int, strength: float, compression: int):
        check_strength(strength)
        check_frames(image.shape[0])
        samples = video_latents(latent, LATENT_CHANNELS, "LTX Image Condition (pack)")
        height, width = samples.shape[3] * VAE_SPATIAL_SCALE, samples.shape[4] * VAE_SPATIAL_SCALE
        pixels = compress_like_h264(resize_and_crop(image[..., :3], width, height), compression)
        condition = FrameCondition(encode_frames(vae, pixels), frame_index(frame, samples.shape[2]), strength)
        return (with_condition(latent, samples, condition),)


def check_strength(strength: float) -> None:
    """Raise ValueError, naming the input, unless the condition strength is in [0, 1]."""
    if not 0 <= strength <= 1:
        raise ValueError(f"strength {strength} is out of range; use a value from 0 (free) to 1 (kept exactly)")


def encode_frames(vae: Loaded, pixels: torch.Tensor) -> torch.Tensor:
    """Frames (T, H, W, 3) in [0, 1] at the video's size → normalised latents (1, 128, f, h, w) on the CPU."""
    device = vae.handle.load()
    with bridge.interruptible(vae.module), torch.inference_mode():
        video = video_tensor_from_frames(pixels).to(device)
        return vae.module.encode(video, memory_budget=vae_budget(vae.handle.memory)).float().cpu()


def with_condition(latent: dict, samples: torch.Tensor, condition: FrameCondition) -> dict:
    """A copy of the LATENT with `condition` added as the module docstring says: recorded exactly, and
    written in place where it starts on a whole latent frame. samples: the LATENT's (B, 128, F, h, w)."""
    check_fits(condition, samples.shape, appended=True)  # the sampler checks in-place models' frames
    mask = latent.get("noise_mask")
    # Latents without a record (from core's nodes) start it with what their mask says.
    recorded = latent[CONDITIONS_KEY] if CONDITIONS_KEY in latent else conditions_from_mask(samples, mask)
    out = {**latent, CONDITIONS_KEY: [*recorded, condition]}
    if condition.frame % VAE_TEMPORAL_SCALE == 0:  # a whole latent frame: in place too
        out["samples"], out["noise_mask"] = add_condition(samples, mask, condition)
    return out
