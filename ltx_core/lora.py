"""LoRAs on a loaded model, on every weight storage, changed or removed without reloading it.

    stack = apply_loras(transformer, [("style.safetensors", 0.8), ("motion-comfyui.safetensors", 1.0)])
    stack.set_strength(0, 0.5)      # or stack.set([...]) for another list
    stack.remove()                  # the exact base model again

Each linear layer a LoRA names gets the stack of all applied LoRAs as one pair of factors (ranks
concatenated, strength · alpha / rank folded in), kept beside its weights (model/storage.py): layers
whose weights are in the activation dtype (bf16, fp16, fp32) use W + ΔW, formed per call from the
untouched W and rounded once, the numbers of weights merged at load; fp8 and GGUF layers add ΔW into
the weight they expand per call; fp8-matmul layers multiply by a requantized fp8 copy of W + ΔW, built
when the LoRAs are set (one byte per weight of the LoRA'd layers). No stored weight is ever written, so
removal is exact and no copy of the base weights is kept; the cost is one addmm per layer per call (W's
size read and written, beside a product that reads it anyway; none for fp8 matmuls). Streamed blocks
carry their layers' LoRA buffers with them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from .loading.keymaps import TRANSFORMER_DIFFUSERS_SEGMENTS, rename_segments
from .loading.lora import LoRA, LoraModule, load_lora
from .memory import release, streaming_now
from .model.ops import compute_dtype, describe_ops
from .model.storage import StoredLinear, linear_layers

log = logging.getLogger(__name__)
LoraSource = LoRA | str | Path | Mapping[str, torch.Tensor]
_LISTED = 3  # names an error message lists


class LoraStack:
    """The LoRAs applied to one model, each with a strength, in the order given. `set` replaces them,
    `set_strength` changes one, `remove` takes them all off; each rebuilds the layers' factors from
    the LoRAs as read (never from the weights)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.entries: list[tuple[LoRA, float]] = []

    def set(self, loras: Sequence[tuple[LoraSource, float]]) -> None:
        """Apply exactly `loras` (file, state dict or LoRA, with a strength each) instead of the current ones."""
        entries = [(lora if isinstance(lora, LoRA) else load_lora(lora), float(strength)) for lora, strength in loras]
        layers = _layers(self.model)
        targets = [_resolve(lora, layers) for lora, _ in entries]  # every check before any layer changes
        if streaming_now(self.model):
            raise RuntimeError("cannot change LoRAs while the model runs with its blocks streamed")
        stacks: dict[str, list[tuple[LoraModule, float]]] = {}
        for (_, strength), resolved in zip(entries, targets, strict=True):
            if strength != 0:  # strength 0 is no LoRA at all, exactly
                for layer_name, module in resolved.items():
                    stacks.setdefault(layer_name, []).append((module, strength))
        dtype = compute_dtype(self.model)
        for layer_name, layer in layers.items():
            layer.set_lora(*_stacked(stacks.get(layer_name, []), layer, dtype))
        release(self.model)  # a streamer packed the old factors: the next streamed use packs anew
        self.entries = entries
        if log.isEnabledFor(logging.INFO):
            described = ", ".join(f"{lora.name} × {strength:g}" for lora, strength in entries) or "none"
            log.info("LoRAs: %s, on %d layers. %s", described, len(stacks), describe_ops(self.model))

    def set_strength(self, which: int | str, strength: float) -> None:
        """Change the strength of one applied LoRA, by position or by name."""
        index = which if isinstance(which, int) else [lora.name for lora, _ in self.entries].index(which)
        entries = list(self.entries)
        entries[index] = (entries[index][0], strength)
        self.set(entries)

    def remove(self) -> None:
        """Take every LoRA off: the model computes exactly as before any was applied."""
        self.set([])

    @property
    def strengths(self) -> list[tuple[str, float]]:
        return [(lora.name, strength) for lora, strength in self.entries]


def apply_loras(model: nn.Module, loras: Sequence[tuple[LoraSource, float]]) -> LoraStack:
    """Apply `loras` (each a LoRA file, state dict or `load_lora` result, with a strength) to `model`,
    replacing the LoRAs applied before; returns the model's LoraStack, to change or remove them.
    Raises CheckpointError naming the file for a file that is not a LoRA, a LoRA for another model
    size, or one whose modules are not layers of this model."""
    stack = model.__dict__.get("lora_stack")
    if stack is None:
        stack = model.__dict__["lora_stack"] = LoraStack(model)
    stack.set(loras)
    return stack


def check_lora(model: nn.Module, lora: LoraSource) -> LoRA:
    """`lora` (a file, state dict or `load_lora` result) read and checked against `model`'s layers as
    `apply_loras` checks it, without changing the model (one built on the `meta` device will do, to
    check before loading weights). Raises CheckpointError as apply_loras does."""
    lora = lora if isinstance(lora, LoRA) else load_lora(lora)
    _resolve(lora, _layers(model))
    return lora


def loras_of(model: nn.Module) -> LoraStack | None:
    """The model's LoraStack, or None if no LoRA was ever applied."""
    return model.__dict__.get("lora_stack")


def _layers(model: nn.Module) -> dict[str, StoredLinear]:
    return {name: layer for name, layer in linear_layers(model) if isinstance(layer, StoredLinear)}


def _resolve(lora: LoRA, layers: Mapping[str, StoredLinear]) -> dict[str, LoraModule]:
    """The LoRA's modules by the name of the layer each updates: the name as written, in diffusers'
    names, or with underscores for dots (kohya); raises for modules of another shape or of no layer."""
    underscored = {name.replace(".", "_"): name for name in layers}
    resolved: dict[str, LoraModule] = {}
    unmatched, misfits = [], []
    for module_name, module in lora.modules.items():
        renamed = rename_segments(module_name, TRANSFORMER_DIFFUSERS_SEGMENTS)
        candidates = (module_name, renamed, underscored.get(module_name), underscored.get(renamed))
        name = next((c for c in candidates if c in layers), None)
        if name is None:
            unmatched.append(module_name)
            continue
        layer = layers[name]
        lora_in, lora_out = module.down.shape[1], module.up.shape[0]
        if (lora_in, lora_out) != (layer.in_features, layer.out_features):
            misfits.append(f"{name} is {lora_in}→{lora_out} in the LoRA, {layer.in_features}→{layer.out_features} here")
        resolved[name] = module
    if misfits:
        found = f"is a LoRA for another model size: {'; '.join(misfits[:_LISTED])}" + _more(misfits)
        raise lora.error(found, "a LoRA trained for this model's size and release")
    if unmatched:
        found = (
            f"has {len(unmatched)} of {len(lora.modules)} modules that match no linear layer of this model "
            f"({', '.join(sorted(unmatched)[:_LISTED])}{_more(unmatched)}){_blocks_hint(unmatched, layers)}"
        )
        raise lora.error(found, "a LoRA for the LTX-Video transformer whose modules are its layers")
    return resolved


def _more(names: Sequence[str]) -> str:
    return f", … ({len(names)} in all)" if len(names) > _LISTED else ""


def _blocks_hint(unmatched: Sequence[str], layers: Mapping[str, StoredLinear]) -> str:
    """Where a LoRA names blocks past this model's last one, say so: it was made for a deeper model."""

    def blocks(names: Sequence[str]) -> set[int]:
        return {int(part) for n in names for part in n.split(".")[1:2] if part.isdigit()}

    theirs, ours = blocks(unmatched), blocks(list(layers))
    if ours and theirs and max(theirs) > max(ours):
        return f"; it names blocks up to {max(theirs)}, and this model has blocks 0 … {max(ours)} (another model size)"
    return ""


def _stacked(
    stack: Sequence[tuple[LoraModule, float]], layer: StoredLinear, dtype: torch.dtype
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One (down, up) pair for all LoRAs on a layer: ranks concatenated, each up scaled by its
    strength · scale in float32 and rounded once to the compute dtype, on the layer's device."""
    if not stack:
        return None, None
    device = next(t.device for t in (*layer.parameters(), *layer.buffers()) if t is not None)
    down = torch.cat([module.down.to(device, torch.float32) for module, _ in stack])
    up = torch.cat([module.up.to(device, torch.float32) * (module.scale * strength) for module, strength in stack], 1)
    return down.to(dtype), up.to(dtype)
