"""Loaders: the transformer + VAE, and the T5 text encoder, from ComfyUI's model folders.

Files are recognised by content (ltx_core.loading), so any supported format may sit in any of the
listed folders. ComfyUI caches node outputs by their inputs, so the same selection returns the same
loaded objects until an input changes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from ..ltx_core import CheckpointError, Release, load_text_encoder, load_transformer, load_vae, tokenizer_beside
from ..ltx_core.loading.release import AUTO, RELEASE_CHOICES, resolve_release
from ..ltx_core.loading.transformer import inspect_transformer
from ..ltx_core.loading.vae import inspect_vae
from ..ltx_core.memory import MEMORY_MODES
from ..ltx_core.model.fp8 import quantize_linears
from . import comfy_bridge as bridge
from .types import (
    CATEGORY,
    DEVICE_TOOLTIP,
    DEVICES,
    MEMORY_TOOLTIP,
    MODEL,
    TEXT_DTYPES,
    TEXT_ENCODER,
    VAE,
    WEIGHT_DTYPES,
    Loaded,
    vae_dtype,
    vae_in_dtype,
)

log = logging.getLogger(__name__)

MODEL_FOLDERS = ("checkpoints", "diffusion_models")
VAE_FOLDERS = ("vae", "checkpoints")
TEXT_FOLDERS = ("text_encoders",)
FROM_MODEL = "(from the model file)"
MODEL_LOADER = "the LTX Model Loader (pack)"
TEXT_LOADER = "the LTX Text Encoder Loader (pack)"

# The core's advice (ltx_core.loading.errors.API_ADVICE) in node words: the input to choose a file in.
NODE_ADVICE = {
    "transformer": f"choose it in model_name of {MODEL_LOADER} (models/checkpoints or models/diffusion_models)",
    "vae": f"choose it in vae_name of {MODEL_LOADER} (models/vae or models/checkpoints)",
    "text_encoder": f"choose it in text_encoder_name of {TEXT_LOADER} (models/text_encoders)",
    "missing_tokenizer": "put T5's spiece.model or tokenizer.json (from google/t5-v1_1-xxl) next to the file in "
    f"models/text_encoders. ComfyUI's own T5 tokenizer, {bridge.BUNDLED_TOKENIZER}, is missing too: "
    "updating or reinstalling ComfyUI brings it back",
    "bad_tokenizer": "replace that file with T5's spiece.model or tokenizer.json (from google/t5-v1_1-xxl), or "
    "remove it: a T5 file with no tokenizer beside it uses ComfyUI's own T5 tokenizer",
    "release": f"choose the release in release of {MODEL_LOADER}",
    "matching_vae": f"choose the VAE of the transformer's release in vae_name of {MODEL_LOADER} (a VAE file, or "
    "that release's full checkpoint)",
    # the core's key for a file it detects as a latent upsampler (loading/detect.py)
    "latent_upsampler": "choose it in upsampler_name of the LTX Upsampler Loader (pack) (models/latent_upscale_models "
    "or models/upscale_models)",
}
RELEASE_TOOLTIP = (
    "The LTX-Video release of the model file, which picks the sampler's and decoder's settings: auto reads it "
    "off the files (embedded config, model width, the VAE's layout) and asks when they cannot tell, as for "
    "GGUF and diffusion-model files of 0.9.5 and later. The release found shows in the release output."
)


@contextlib.contextmanager
def in_node_words() -> Iterator[None]:
    """The core's file errors with their advice naming node inputs instead of Python functions."""
    try:
        yield
    except CheckpointError as error:
        raise error.reworded(NODE_ADVICE) from None


class LTXPackModelLoader:
    DESCRIPTION = "Loads the LTX-Video transformer and VAE: a full checkpoint, a diffusion-model file or a GGUF."
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL, VAE, "STRING")
    RETURN_NAMES = ("model", "vae", "release")
    OUTPUT_TOOLTIPS = (
        "The LTX-Video transformer.",
        "The LTX-Video video VAE.",
        "The release the files were found to be (or named), its size and how it was decided.",
    )
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        models = bridge.list_models(MODEL_FOLDERS)
        return {
            "required": {
                "model_name": (
                    models,
                    {
                        "tooltip": "Checkpoint, transformer-only safetensors or GGUF file, from "
                        "models/checkpoints or models/diffusion_models."
                    },
                ),
                "vae_name": (
                    [FROM_MODEL, *bridge.list_models(VAE_FOLDERS)],
                    {
                        "tooltip": "Where the VAE comes from: the model file itself (full checkpoints), or a VAE file "
                        "from models/vae; a full checkpoint in models/checkpoints works too (its VAE part)."
                    },
                ),
                "weight_dtype": (
                    list(WEIGHT_DTYPES),
                    {
                        "default": "default",
                        "tooltip": "Transformer weight dtype: default keeps the file's; fp8 halves the memory of "
                        "bf16 (computes in bf16); fp8_matmul also multiplies in fp8 on Ada / Hopper GPUs "
                        "(fastest; the video differs slightly from bf16; GGUF weights are expanded and "
                        "requantized to fp8, ~1 byte per weight). The VAE follows in bf16 or fp32 only, as "
                        "ComfyUI core runs it: bf16 for fp16 and fp8.",
                    },
                ),
                "device": (DEVICES, {"default": "default", "tooltip": DEVICE_TOOLTIP}),
                "memory": (list(MEMORY_MODES), {"default": "default", "tooltip": MEMORY_TOOLTIP}),
            },
            # optional, so that workflows saved before it existed still run (as auto)
            "optional": {"release": (list(RELEASE_CHOICES), {"default": AUTO, "tooltip": RELEASE_TOOLTIP})},
        }

    def load(
        self,
        model_name: str,
        vae_name: str,
        weight_dtype: str,
        device: str,
        memory: str = "default",
        release: str = AUTO,
    ) -> tuple:
        path = bridge.model_path(MODEL_FOLDERS, model_name)
        vae_path = path if vae_name == FROM_MODEL else bridge.model_path(VAE_FOLDERS, vae_name)
        with in_node_words():
            found = _release(model_name, path, vae_name, vae_path, release)  # from headers, before any weight
            log.info("%s: %s", model_name, found.describe())
            dtype, causal = WEIGHT_DTYPES[weight_dtype], found.causal_positions
            transformer, _ = load_transformer(path, dtype=dtype, device="cpu", causal_temporal_positioning=causal)
            if weight_dtype == "fp8_matmul":
                count = quantize_linears(transformer)
                log.info("fp8_matmul: %d linear layers of %s requantized to fp8", count, model_name)
            wanted = transformer.dtype if dtype is not None else None
            vae, _ = load_vae(vae_path, dtype=vae_dtype(wanted), device="cpu")
        return (
            Loaded(bridge.manage(transformer, device, "diffusion", memory), found),
            Loaded(bridge.manage(vae_in_dtype(vae), device, "vae", memory), found),
            found.describe(),
        )


def _release(model_name: str, path: Path, vae_name: str, vae_path: Path, release: str) -> Release:
    """The release of the chosen transformer and VAE files, read off their headers or named."""
    transformer = inspect_transformer(path)
    try:
        vae = inspect_vae(vae_path)
    except CheckpointError as error:
        if vae_name == FROM_MODEL and error.advice == "transformer":  # the model file has no VAE
            raise ValueError(
                f"{model_name} holds only the transformer ({transformer.format}), no VAE. Choose a VAE in "
                "vae_name: a VAE file from models/vae, or the full checkpoint from models/checkpoints."
            ) from None
        raise
    return resolve_release(transformer, vae, release)


class LTXPackTextEncoderLoader:
    DESCRIPTION = "Loads a T5 text encoder (T5-XXL single file, fp8, GGUF, or a transformers folder)."
    CATEGORY = CATEGORY
    RETURN_TYPES = (TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The T5 encoder with its tokenizer.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "text_encoder_name": (
                    bridge.list_models(TEXT_FOLDERS),
                    {
                        "tooltip": "T5 encoder file or folder in models/text_encoders, e.g. t5xxl_fp16.safetensors. "
                        "Its tokenizer is spiece.model or tokenizer.json beside it, else ComfyUI's own T5 tokenizer."
                    },
                ),
                "dtype": (
                    list(TEXT_DTYPES),
                    {
                        "default": "default",
                        "tooltip": "Compute dtype: default keeps the file's (bf16 for fp8 and GGUF files).",
                    },
                ),
                "device": (DEVICES, {"default": "default", "tooltip": DEVICE_TOOLTIP}),
                "memory": (list(MEMORY_MODES), {"default": "default", "tooltip": MEMORY_TOOLTIP}),
            }
        }

    def load(self, text_encoder_name: str, dtype: str, device: str, memory: str = "default") -> tuple:
        path = bridge.model_path(TEXT_FOLDERS, text_encoder_name)
        # T5 files are usually downloaded alone; core's T5 encoders use the tokenizer bundled with ComfyUI
        tokenizer = None if tokenizer_beside(path) else bridge.default_tokenizer()
        with in_node_words():
            encoder, _ = load_text_encoder(path, dtype=TEXT_DTYPES[dtype], device="cpu", tokenizer_path=tokenizer)
        return (Loaded(bridge.manage(encoder, device, "text_encoder", memory), release=None),)
