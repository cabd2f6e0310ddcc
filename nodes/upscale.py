"""The latent upsamplers of the 0.9.7+ multiscale recipe: a loader, and LATENT → LATENT ×2.

Multiscale, as Lightricks' `LTXMultiScalePipeline` runs it: the sampler's first pass at about 2/3 of
the size, this upscale (×2 in height and width), the sampler's second pass at the doubled size, decode.
A temporal upsampler doubles the frames instead: F latent frames become 2F − 1 (pixel frames 1 + 8k
become 1 + 16k), so set the second pass and the video to twice the frame rate.

Conditions do not cross the upscale: the official pipeline encodes its conditioning images again at the
second pass's size, so the output LATENT carries no recorded conditions and no noise mask, and LTX Image
Condition (pack) after this node, with the same images, conditions the second pass as it does.
"""

from __future__ import annotations

import logging
import math

import torch

from ..ltx_core import load_latent_upsampler
from ..ltx_core.latent_guides import CONDITIONS_KEY, GUIDE_FRAMES_KEY
from ..ltx_core.types import LATENT_CHANNELS
from ..ltx_core.upsampling import ADAIN_FACTOR, TONE_MAP_COMPRESSION, upsample_latents
from . import comfy_bridge as bridge
from .loaders import in_node_words
from .types import (
    CATEGORY,
    DEVICE_TOOLTIP,
    DEVICES,
    GENERATOR_KEY,
    TEXT_DTYPES,
    UPSAMPLER,
    VAE,
    Loaded,
    field,
    video_latents,
)

log = logging.getLogger(__name__)

# Newer ComfyUI's folder for latent upscalers first, then the image upscalers' folder, where Lightricks'
# ComfyUI-LTXVideo pack listed them for 0.9.7 and 0.9.8.
UPSAMPLER_FOLDERS = ("latent_upscale_models", "upscale_models")
NODE = "LTX Latent Upscale (pack)"
# Live activations of the upsampler at the upsampled size, in mid-channel tensors (a residual block's input,
# its two convolutions' outputs), for the room asked of ComfyUI besides the weights.
LIVE_ACTIVATIONS = 3


class LTXPackUpsamplerLoader:
    DESCRIPTION = "Loads a latent upsampler of the 0.9.7+ multiscale recipe, e.g. ltxv-spatial-upscaler-0.9.8."
    CATEGORY = CATEGORY
    RETURN_TYPES = (UPSAMPLER,)
    RETURN_NAMES = ("upsampler",)
    OUTPUT_TOOLTIPS = ("The latent upsampler (spatial or temporal ×2), for LTX Latent Upscale (pack).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "upsampler_name": field(
                    bridge.list_models(UPSAMPLER_FOLDERS),
                    "ltxv-spatial-upscaler-0.9.8.safetensors (or -0.9.7, or ltxv-temporal-upscaler-0.9.7) from "
                    "models/latent_upscale_models or models/upscale_models; a diffusers latent_upsampler folder "
                    "works too. Spatial or temporal is read off the file.",
                ),
                "dtype": field(list(TEXT_DTYPES), "default keeps the file's.", default="default"),
                "device": field(DEVICES, DEVICE_TOOLTIP, default="default"),
            }
        }

    def load(self, upsampler_name: str, dtype: str, device: str) -> tuple:
        path = bridge.model_path(UPSAMPLER_FOLDERS, upsampler_name)
        with in_node_words():
            upsampler, detected = load_latent_upsampler(path, dtype=TEXT_DTYPES[dtype], device="cpu")
        log.info("%s: %s latent upsampler (%s)", upsampler_name, detected.release, detected.format)
        return (bridge.manage(upsampler, device, "vae"),)


class LTXPackLatentUpscale:
    DESCRIPTION = (
        "Doubles a latent video with a latent upsampler (height and width, or frames for a temporal one), "
        "between the sampler's first and second multiscale pass."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = (
        "The upscaled latents, without conditions: chain LTX Image Condition (pack) after this node to condition "
        "the second pass.",
    )
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        share = {"min": 0.0, "max": 1.0, "step": 0.05}
        return {
            "required": {
                "samples": field("LATENT", "From the sampler's first pass."),
                "upsampler": field(UPSAMPLER, "From LTX Upsampler Loader (pack)."),
                "vae": field(VAE, "From the LTX model loader: the upsampler works on un-normalised latents."),
                "adain_factor": field(
                    "FLOAT",
                    "How far each channel of the result takes the mean and spread of the input's (AdaIN); 1 "
                    "as the official multiscale pipeline, 0 = none.",
                    default=ADAIN_FACTOR,
                    **share,
                ),
                "tone_map_compression": field(
                    "FLOAT",
                    "Compresses large latent values after upscaling (diffusers' tone_map_compression_ratio); "
                    "0 = none, as the official pipeline at this step.",
                    default=TONE_MAP_COMPRESSION,
                    **share,
                ),
            }
        }

    def upscale(self, samples: dict, upsampler, vae: Loaded, adain_factor: float, tone_map_compression: float):
        if GUIDE_FRAMES_KEY in samples:
            raise ValueError(
                f"the latent given to {NODE} still holds the guide frames of core's LTXVAddGuide: put LTXVCropGuides "
                "before the upscale (it also takes the guides out of the conditioning), and LTXVAddGuide again after "
                "it to guide the second pass"
            )
        if vae.defaults.vae != "0.9.5+":
            raise ValueError(
                f"the VAE given to {NODE} is the {vae.release} release's; the latent upsamplers were made for the "
                "latents of the 0.9.5+ VAE (multiscale came with 0.9.7): use a 0.9.7+ model and its VAE"
            )
        latents = video_latents(samples, LATENT_CHANNELS, NODE)
        config = upsampler.module.config
        upscaled = latents.shape[0] * math.prod(latents.shape[2:]) * math.prod(config.factors)
        itemsize = upsampler.module.initial_conv.weight.element_size()
        upsampler.load(activations=LIVE_ACTIVATIONS * config.mid_channels * upscaled * itemsize)
        with bridge.interruptible(upsampler.module), torch.inference_mode():
            out = upsample_latents(
                upsampler.module,
                vae.module,
                latents,
                adain_factor=adain_factor,
                tone_map_compression=tone_map_compression,
            )
        dropped = [key for key in (CONDITIONS_KEY, "noise_mask") if key in samples]
        if dropped:
            log.info("%s: the conditions of the input latent (%s) are not carried over", NODE, ", ".join(dropped))
        kept = {key: samples[key] for key in ("batch_index", GENERATOR_KEY) if key in samples}
        return ({"samples": out.float().cpu(), **kept},)
