"""Pins an image (or a short clip) to a frame of the latent video: first frame, keyframes, last frame.

The condition travels inside the LATENT (clean latents at its frames, `noise_mask` = 1 − strength),
as in ComfyUI's own LTX image-to-video node, so nodes of this kind chain and core's LTX latents work.
"""

from __future__ import annotations

import torch

from ..ltx_core import FrameCondition
from ..ltx_core.latent_guides import add_condition, frame_index
from ..ltx_core.media import compress_like_h264, resize_and_crop, video_tensor_from_frames
from ..ltx_core.types import LATENT_CHANNELS, VAE_SPATIAL_SCALE, check_frames
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
                        "tooltip": "Pixel frame it "
                        "starts at: 0 = first; a multiple of 8; negative counts from the end (−1 = last frame).",
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
        if not 0 <= strength <= 1:
            raise ValueError(f"strength {strength} is out of range; use a value from 0 (free) to 1 (kept exactly)")
        check_frames(image.shape[0])
        samples = video_latents(latent, LATENT_CHANNELS, "LTX Image Condition (pack)")
        height, width = samples.shape[3] * VAE_SPATIAL_SCALE, samples.shape[4] * VAE_SPATIAL_SCALE
        pixels = compress_like_h264(resize_and_crop(image[..., :3], width, height), compression)
        device = vae.handle.load()
        with bridge.interruptible(vae.module), torch.inference_mode():
            cond = vae.module.encode(video_tensor_from_frames(pixels).to(device)).float().cpu()
        start = frame_index(frame, samples.shape[2])
        samples, mask = add_condition(samples, latent.get("noise_mask"), FrameCondition(cond, start, strength))
        return ({**latent, "samples": samples, "noise_mask": mask},)
