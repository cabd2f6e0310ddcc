"""ComfyUI nodes over ltx_core, in ComfyUI's V1 node contract.

Why V1 and not V3 (`comfy_api.latest.io`): a V3 node is a subclass of `io.ComfyNode` and its schema is
built from `io.*` objects, so defining a node needs ComfyUI installed. CI cannot install ComfyUI, and
the node definitions must be importable and checkable there (schemas, workflows, end-to-end runs).
V1 nodes are plain classes whose schema is data (INPUT_TYPES, RETURN_TYPES, ...), need no ComfyUI
import at definition time, and are fully supported by ComfyUI. Everything that touches ComfyUI at
run time goes through `comfy_bridge`, which imports ComfyUI lazily and which tests replace.

The pack's `__init__.py` exports NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS only inside ComfyUI.
"""

from __future__ import annotations

from .extension import LTXPackExtendVideo, LTXPackJoinVideo
from .guidance import LTXPackGuidance
from .image_condition import LTXPackImageCondition
from .latents import LTXPackEmptyLatentVideo, LTXPackVAEDecode, LTXPackVAEEncode
from .loaders import LTXPackModelLoader, LTXPackTextEncoderLoader
from .lora import LTXPackLoraLoader
from .sampler import LTXPackSampler
from .save_video import LTXPackSaveVideo
from .text_encode import LTXPackTextEncode
from .upscale import LTXPackLatentUpscale, LTXPackUpsamplerLoader

# Every node id starts with this prefix: ComfyUI silently drops pack nodes whose ids equal its own.
NODE_ID_PREFIX = "LTXPack"

NODE_CLASSES = [
    LTXPackModelLoader,
    LTXPackLoraLoader,
    LTXPackTextEncoderLoader,
    LTXPackTextEncode,
    LTXPackEmptyLatentVideo,
    LTXPackImageCondition,
    LTXPackExtendVideo,
    LTXPackGuidance,
    LTXPackSampler,
    LTXPackUpsamplerLoader,
    LTXPackLatentUpscale,
    LTXPackVAEDecode,
    LTXPackVAEEncode,
    LTXPackJoinVideo,
    LTXPackSaveVideo,
]
DISPLAY_NAMES = {
    LTXPackModelLoader: "LTX Model Loader (pack)",
    LTXPackLoraLoader: "LTX LoRA Loader (pack)",
    LTXPackTextEncoderLoader: "LTX Text Encoder Loader (pack)",
    LTXPackTextEncode: "LTX Text Encode (pack)",
    LTXPackEmptyLatentVideo: "LTX Empty Latent Video (pack)",
    LTXPackImageCondition: "LTX Image Condition (pack)",
    LTXPackExtendVideo: "LTX Extend Video (pack)",
    LTXPackGuidance: "LTX Guidance (pack)",
    LTXPackSampler: "LTX Sampler (pack)",
    LTXPackUpsamplerLoader: "LTX Upsampler Loader (pack)",
    LTXPackLatentUpscale: "LTX Latent Upscale (pack)",
    LTXPackVAEDecode: "LTX VAE Decode (pack)",
    LTXPackVAEEncode: "LTX VAE Encode (pack)",
    LTXPackJoinVideo: "LTX Join Video (pack)",
    LTXPackSaveVideo: "LTX Save Video (pack)",
}

NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.__name__: DISPLAY_NAMES[cls] for cls in NODE_CLASSES}
