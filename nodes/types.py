"""The pack's own socket types, the objects they carry, and conversions at ComfyUI's edges.

Nothing here imports ComfyUI: CONDITIONING and LATENT are plain lists, dicts and tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..ltx_core import Conditioning, LoRA, Release
from ..ltx_core.defaults import ReleaseDefaults

CATEGORY = "LTX-Video (pack)"

# Socket type names: links connect only equal names, so these keep our objects on our nodes.
MODEL = "LTXPACK_MODEL"
VAE = "LTXPACK_VAE"
TEXT_ENCODER = "LTXPACK_TEXT_ENCODER"
GUIDANCE = "LTXPACK_GUIDANCE"
UPSAMPLER = "LTXPACK_UPSAMPLER"

# LATENT keys our sampler adds for the multiscale steps after it (core's nodes ignore them; most build a
# fresh dict and drop them): the first pass's generator state, which the second pass goes on with, and the
# tone mapping a second pass asks the decoder for (13B 0.9.8 distilled: 0.6).
GENERATOR_KEY = "ltx_pack_generator"
TONE_MAP_KEY = "ltx_pack_tone_map"

DEVICES = ["default", "cpu"]
DEVICE_TOOLTIP = "default: ComfyUI's GPU, with its memory manager offloading other models; cpu: keep on the CPU."
MEMORY_TOOLTIP = (
    "default: the model moves to the GPU whole while it is used (fastest). low_vram: its blocks stay in CPU "
    "memory and visit the GPU one at a time, overlapped with the computation, and the VAE decodes in "
    "tiles (768×512×121 under 8 GB)."
)
WEIGHT_DTYPES = {
    "default": None,  # as stored in the file
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
    "fp8_matmul": torch.bfloat16,  # loaded in bf16, then requantized for fp8 matrix products
}
TEXT_DTYPES = {k: WEIGHT_DTYPES[k] for k in ("default", "bf16", "fp16", "fp32")}
# The VAE runs in bf16 or fp32 only, the dtypes ComfyUI core allows for this VAE (its VAE class never
# runs it in fp16): the transformer's dtype when it is one of these, else bf16 (fp16 and fp8 weight
# dtypes, VAE files stored in fp16).
VAE_DTYPES = (torch.bfloat16, torch.float32)


def vae_dtype(wanted: torch.dtype | None) -> torch.dtype | None:
    """The VAE's dtype for a wanted one (None: as stored, corrected after loading by `vae_in_dtype`)."""
    return wanted if wanted is None or wanted in VAE_DTYPES else torch.bfloat16


def vae_in_dtype(vae: torch.nn.Module) -> torch.nn.Module:
    """The VAE in one of VAE_DTYPES: as it is, or in bf16 (a file stored in fp16)."""
    stored = next(vae.parameters()).dtype
    return vae if stored in VAE_DTYPES else vae.to(torch.bfloat16)


@dataclass(frozen=True)
class Loaded:
    """A loaded component (`handle.module`, placed by the bridge) and the release it belongs to (None
    for the text encoder, which every release shares). For the transformer, `loras` is the stack of
    LoRAs (each with its strength) that LTX LoRA Loader nodes put on this output: the sampler applies
    exactly these to the shared module before it samples (nodes/lora.py), so every branch of a graph
    and every later prompt gets its own stack from the one loaded model."""

    handle: Any  # comfy_bridge.Managed: .module, .memory and .load(memory=None) -> device
    release: Release | None
    loras: tuple[tuple[LoRA, float], ...] = ()

    @property
    def module(self) -> torch.nn.Module:
        return self.handle.module

    @property
    def defaults(self) -> ReleaseDefaults:
        if self.release is None:
            raise ValueError("the text encoder belongs to no release; the model loader's outputs have defaults")
        return self.release.defaults


def to_conditioning(context: torch.Tensor, mask: torch.Tensor) -> list:
    """(B, L, D) hidden states and (B, L) mask → ComfyUI CONDITIONING, on the CPU."""
    return [[context.float().cpu(), {"attention_mask": mask.cpu()}]]


def from_conditioning(positive: list, negative: list | None, dtype: torch.dtype) -> Conditioning:
    """ComfyUI CONDITIONING (ours, or core's T5 encoders') → Conditioning in `dtype`. The first entry
    of each list is used; a missing attention mask means every token counts."""

    def one(cond: list, name: str) -> Conditioning:
        if not cond:
            raise ValueError(f"the {name} CONDITIONING is empty; connect a text encode node's {name} output")
        context, extras = cond[0][0], cond[0][1]
        mask = extras.get("attention_mask")
        if mask is None:
            mask = torch.ones(context.shape[:2], dtype=torch.int64)
        return Conditioning(context.to(dtype), mask.reshape(context.shape[:2]).to(torch.int64))

    positive_cond = one(positive, "positive")
    if negative is None:
        return positive_cond
    return Conditioning(positive_cond.context, positive_cond.mask, one(negative, "negative"))


def video_latents(latent: dict, channels: int, node: str) -> torch.Tensor:
    """The `samples` of a LATENT, checked to be an LTX-Video latent video (B, channels, F, H, W)."""
    samples = latent["samples"]
    if samples.ndim != 5 or samples.shape[1] != channels:
        kind = f"{samples.shape[1]} channels" if samples.ndim > 1 else "no channels"
        raise ValueError(
            f"the latent given to {node} has shape {tuple(samples.shape)} ({kind}, {samples.ndim}-D); an LTX-Video "
            f"latent video is (batch, {channels}, frames, height/32, width/32). Make it with LTX Empty Latent "
            "Video (pack) or core's EmptyLTXVLatentVideo, or encode frames with LTX VAE Encode (pack)"
        )
    return samples


def field(kind: Any, tooltip: str, **options: Any) -> tuple:
    """One INPUT_TYPES entry: a type name or combo list, and its options with the tooltip."""
    return (kind, {**options, "tooltip": tooltip})
