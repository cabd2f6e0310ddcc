"""Latent videos: an empty one to generate into, and the VAE's encode and decode."""

from __future__ import annotations

import torch

from ..ltx_core.latent_guides import GUIDE_FRAMES_KEY
from ..ltx_core.media import frames_from_video_tensor, video_tensor_from_frames
from ..ltx_core.memory import vae_budget
from ..ltx_core.multiscale import decode_input
from ..ltx_core.types import LATENT_CHANNELS, VAE_SPATIAL_SCALE, check_video_shape, latent_frames
from . import comfy_bridge as bridge
from .types import CATEGORY, TONE_MAP_KEY, VAE, Loaded, field, video_latents

TILING = ["auto", "off"]
TILING_TOOLTIP = "auto: cut the video into tiles and chunks that fit the free memory (needed for long or large videos on small GPUs); off: in one piece."  # noqa: E501


class LTXPackEmptyLatentVideo:
    DESCRIPTION = "An empty LTX-Video latent video (zeros) of the given size, to generate into."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Latents (batch, 128, 1 + (length − 1)/8, height/32, width/32).",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        size = {"min": 64, "max": 8192, "step": 32}
        return {
            "required": {
                "width": field("INT", "Pixels, a multiple of 32.", default=768, **size),
                "height": field("INT", "Pixels, a multiple of 32.", default=512, **size),
                "length": field("INT", "Frames: 1 + 8·k (97 ≈ 4 s at 24 fps).", default=97, min=1, max=8193, step=8),
                "batch_size": field("INT", "Videos made at once.", default=1, min=1, max=64),
            }
        }

    def make(self, width: int, height: int, length: int, batch_size: int) -> tuple:
        check_video_shape(length, height, width)
        h, w = height // VAE_SPATIAL_SCALE, width // VAE_SPATIAL_SCALE
        shape = (batch_size, LATENT_CHANNELS, latent_frames(length), h, w)
        return ({"samples": torch.zeros(shape)},)


class LTXPackVAEEncode:
    DESCRIPTION = "Encodes frames (IMAGE batch of 1 + 8·k frames, sides multiples of 32) into LTX latents."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Normalised latents, as ComfyUI's LTX nodes use them.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "pixels": ("IMAGE", {"tooltip": "The frames of one video, in order."}),
                "vae": (VAE, {"tooltip": "From the LTX model loader."}),
                "tiling": (TILING, {"default": "auto", "tooltip": TILING_TOOLTIP}),
            }
        }

    def encode(self, pixels: torch.Tensor, vae: Loaded, tiling: str) -> tuple:
        frames, height, width = pixels.shape[:3]
        check_video_shape(frames, height, width)
        device = vae.handle.load()
        with bridge.interruptible(vae.module), torch.inference_mode():
            video = video_tensor_from_frames(pixels[..., :3]).to(device)
            latents = vae.module.encode(video, tiling=tiling, memory_budget=vae_budget(vae.handle.memory))
        return ({"samples": latents.float().cpu()},)


class LTXPackVAEDecode:
    DESCRIPTION = "Decodes LTX latents into frames (an IMAGE batch, one video after another)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("All frames of all videos, (batch × frames, height, width, 3).",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "samples": (
                    "LATENT",
                    {
                        "tooltip": "From the sampler. A multiscale second pass that its release tone-maps (13B 0.9.8 "
                        "distilled: 0.6) says so in its LATENT, and the latents are tone-mapped here after the "
                        "decode noise, as the official pipeline does."
                    },
                ),
                "vae": (VAE, {"tooltip": "From the LTX model loader."}),
                "decode_timestep": (
                    "FLOAT",
                    {
                        "default": 0.05,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.001,
                        "tooltip": "Noise level the decoder is told to remove (0.9.1+ VAEs; 0.05 as released).",
                    },
                ),
                "decode_noise_scale": (
                    "FLOAT",
                    {
                        "default": 0.025,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.001,
                        "tooltip": "Noise mixed into the latents before decoding (0.025 as released), for "
                        "timestep-conditioned VAEs (0.9.1+). The 0.9.0 VAE decodes without noise, as "
                        "released (and as in ComfyUI core and diffusers), whatever this says.",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "control_after_generate": True,
                        "tooltip": "Seed of the decode noise.",
                    },
                ),
                "tiling": (TILING, {"default": "auto", "tooltip": TILING_TOOLTIP}),
            }
        }

    def decode(self, samples: dict, vae: Loaded, decode_timestep, decode_noise_scale, seed, tiling) -> tuple:
        if not vae.module.config.timestep_conditioning:  # the 0.9.0 decoder: released without decode noise
            decode_noise_scale = 0.0
        device = vae.handle.load()
        generator = torch.Generator("cpu").manual_seed(seed)
        with bridge.interruptible(vae.module), torch.inference_mode():
            latents = video_latents(samples, LATENT_CHANNELS, "LTX VAE Decode (pack)")
            guides = samples.get(GUIDE_FRAMES_KEY, 0)  # core's guide frames, when LTXVCropGuides did not cut them
            latents = latents[:, :, : latents.shape[2] - guides].to(device)
            tone_map = samples.get(TONE_MAP_KEY, 0.0)  # what a multiscale second pass asks for
            if tone_map:  # decode noise mixed in, then tone-mapped, in the official order
                latents = decode_input(latents, decode_noise_scale, tone_map, generator)
                decode_noise_scale = 0.0
            pixels = vae.module.decode(
                latents,
                decode_timestep,
                noise_scale=decode_noise_scale,
                generator=generator,
                tiling=tiling,
                memory_budget=vae_budget(vae.handle.memory),
            )
        frames = frames_from_video_tensor(pixels.cpu())  # (B, T, H, W, 3)
        return (frames.flatten(0, 1),)
