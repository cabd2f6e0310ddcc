"""LTX LoRA Loader: a LoRA with a strength on the model, chained for a stack.

ComfyUI caches every node's outputs and hands the same objects to every branch and to later prompts,
so this node never touches the loaded transformer: its MODEL output is the input's `Loaded` with the
LoRA (read and checked against the model here) added to its `loras`. The sampler applies exactly that
stack to the one loaded module before it samples (`use_loras`): the LoRA factors sit beside the
untouched weights (ltx_core.lora), so two branches with different LoRAs, or a prompt without the LoRA
node after one with it, each sample with their own stack, and no weight is ever copied or reloaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from ..ltx_core import CheckpointError, load_lora
from ..ltx_core.lora import apply_loras, check_lora, loras_of
from . import comfy_bridge as bridge
from .types import CATEGORY, MODEL, Loaded, field

LORA_FOLDERS = ("loras",)
LORA_SUFFIXES = (".safetensors", ".sft")  # what load_lora reads
NODE = "LTX LoRA Loader (pack)"
NOT_A_LORA = (
    f"choose a LoRA file from models/loras in lora_name of {NODE}; a model file belongs in the LTX Model Loader (pack)"
)
OTHER_MODEL = (
    f"choose in lora_name of {NODE} one made for this model, LTX-Video {{release}} {{size}} (the model loader's "
    "release output says which), or load the model the LoRA was made for"
)


@contextlib.contextmanager
def in_node_words(advice: str) -> Iterator[None]:
    """The core's LoRA errors (what was found, what was expected, the file) with `advice` in node words."""
    try:
        yield
    except CheckpointError as error:
        raise CheckpointError(error.path, error.found, error.expected, "node", {"node": advice}) from None


class LTXPackLoraLoader:
    DESCRIPTION = (
        "Adds a LoRA with a strength to the model; chain several for a stack. The sampler applies the stack "
        "before it samples, so the model before this node, and every other branch, stay as they are."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with this LoRA added to its stack, for the sampler or the next LoRA loader.",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        loras = [name for name in bridge.list_models(LORA_FOLDERS) if name.lower().endswith(LORA_SUFFIXES)]
        return {
            "required": {
                "model": field(MODEL, "From the LTX model loader, or another LTX LoRA loader."),
                "lora_name": field(
                    loras,
                    "A LoRA for the LTX-Video transformer in models/loras, trained for this model's size and "
                    "release: diffusers/PEFT (lora_A, lora_B) or ComfyUI keys (lora_down, lora_up, alpha).",
                ),
                "strength": field(
                    "FLOAT",
                    "How strongly the LoRA changes the model: 1 as trained, 0 not at all, negative the opposite way.",
                    default=1.0,
                    min=-100.0,
                    max=100.0,
                    step=0.01,
                ),
            }
        }

    def add(self, model: Loaded, lora_name: str, strength: float) -> tuple:
        path = bridge.model_path(LORA_FOLDERS, lora_name)
        with in_node_words(NOT_A_LORA):
            lora = load_lora(path)
        with in_node_words(OTHER_MODEL.format(release=model.release, size=model.release.size)):
            check_lora(model.module, lora)
        return (dataclasses.replace(model, loras=(*model.loras, (lora, strength))),)


def use_loras(model: Loaded) -> None:
    """Put exactly `model.loras` on the loaded transformer (none: take any off), unless those very LoRAs
    at those strengths are on it already (the same prompt again, or a branch with the same stack)."""
    stack = loras_of(model.module)
    applied = stack.entries if stack is not None else []
    same = len(applied) == len(model.loras) and all(
        a is b and s == t for (a, s), (b, t) in zip(applied, model.loras, strict=True)
    )
    if not same:
        apply_loras(model.module, model.loras)
