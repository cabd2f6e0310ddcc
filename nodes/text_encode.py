"""Prompt and negative prompt → two ComfyUI CONDITIONINGs (T5 hidden states with their masks)."""

from __future__ import annotations

import torch

from ..ltx_core import DEFAULT_NEGATIVE_PROMPT
from ..ltx_core.memory import placed, t5_activation_bytes
from .types import CATEGORY, TEXT_ENCODER, Loaded, to_conditioning


class LTXPackTextEncode:
    DESCRIPTION = "Encodes the prompt and the negative prompt with T5 for the LTX-Video sampler."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("The encoded prompt.", "The encoded negative prompt (the unguided branch of guidance).")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "text_encoder": (TEXT_ENCODER, {"tooltip": "From the LTX text encoder loader."}),
                "prompt": (
                    "STRING",
                    {
                        "multiline": True,
                        "dynamicPrompts": True,
                        "default": "",
                        "tooltip": "What to show. LTX-Video likes long, detailed descriptions of the "
                        "scene, the motion and the camera.",
                    },
                ),
                "negative_prompt": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": DEFAULT_NEGATIVE_PROMPT,
                        "tooltip": "What to avoid (used by the sampler's steps that run classifier-free guidance).",
                    },
                ),
                "max_tokens": (
                    "INT",
                    {
                        "default": 256,
                        "min": 8,
                        "max": 1024,
                        "step": 8,
                        "tooltip": "Prompts are cut to this many T5 tokens: 128 for releases up to "
                        "0.9.1, 256 from 0.9.5 on.",
                    },
                ),
            }
        }

    def encode(self, text_encoder: Loaded, prompt: str, negative_prompt: str, max_tokens: int) -> tuple:
        config = text_encoder.module.model.config
        activations = t5_activation_bytes(config.d_model, config.d_ff, config.num_heads, 2, max_tokens)
        device = text_encoder.handle.load(activations=activations)  # with room made by ComfyUI's memory manager
        memory = text_encoder.handle.memory
        with placed(text_encoder.module, device, memory, keep_pinned=True), torch.inference_mode():
            text = text_encoder.module.encode(prompt, negative_prompt, max_tokens)
        negative = text.negative
        return to_conditioning(text.context, text.mask), to_conditioning(negative.context, negative.mask)
