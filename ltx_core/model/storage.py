"""Linear layers by weight storage: one class per way a weight is kept, all behind one interface.

Every linear layer of our models is a `StoredLinear`: y = x·Wᵀ + b with W in its storage, plus a LoRA
stack. The classes, and where each storage's own code lives:

    Linear           weights as loaded: in the activation dtype (bf16, fp16, fp32), or narrower (fp8,
                     expanded to the activation dtype per call)                      (here)
    Fp8Linear        e4m3 weights with per-channel scales, multiplied on fp8 tensor cores (model/fp8.py)
    QuantizedLinear  GGUF blocks, dequantized per call                         (loading/quantized.py)
    Fp8WeightLinear  ComfyUI's scaled fp8, expanded per call                   (loading/quantized.py)

Storage is chosen when a model is loaded (`replace_linear` swaps a built layer for another storage,
and is the only place that does), and never asked about by the model: the model calls its layers,
and the ops (model/ops.py) use the interface below for their fast paths. Streamed blocks keep their
layers' storage: streaming moves the tensors, not the classes.

LoRA: `lora_down` (R, in) and `lora_up` (out, R), non-persistent buffers in the compute dtype with
each LoRA's strength · alpha / rank folded into `lora_up` and the ranks of stacked LoRAs concatenated
(`ltx_core.lora` fills them). Every storage *merges* them, never writing its stored weights: a layer
that keeps W in the activation dtype multiplies by W + lora_up·lora_down formed per call from the
untouched W (one addmm, rounded once to W's dtype: the numbers of weights merged at load); one that
expands W per call (fp8 storage, GGUF) adds lora_up·lora_down into that expansion, which is the call's
own, before the product (one addmm in place); the fp8 matmul keeps a requantized copy of W + ΔW beside
W while a LoRA is set (model/fp8.py). So changing or removing LoRAs is exact and needs nothing
reloaded, and a LoRA costs one addmm per layer per call (against the at-use x·Aᵀ·Bᵀ, two products over
every token), plus, for fp8 matmuls, one fp8 copy of each LoRA'd layer. What LoRAs add to a layer are
its buffers named `lora_*`, which move and stream with it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .ops import UsesOps


class StoredLinear(UsesOps, nn.Module):
    """Base of our linear layers (see the module docstring). A storage defines `dense_weight`,
    `storage_name` and, if it keeps W in the activation dtype, `holds_compute_dtype`; one that
    prepares its input for a faster product (fp8 matmuls quantize it) defines the `prepare` trio; one
    that keeps its LoRA otherwise than as a per-call addmm overrides `weight_like`, `lora_mode` and
    `set_lora` (model/fp8.py)."""

    in_features: int
    out_features: int
    bias: torch.Tensor | None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("lora_down", None, persistent=False)  # (R, in)
        self.register_buffer("lora_up", None, persistent=False)  # (out, R), scales folded in

    # --- what each storage defines -----------------------------------------------------------------

    def dense_weight(self, x: torch.Tensor) -> torch.Tensor:
        """W (out, in) in x's dtype on x's device, without LoRA: a tensor of the call's own unless
        `holds_compute_dtype(x.dtype)` (`weight_like` adds a LoRA into it in place)."""
        raise NotImplementedError

    def storage_name(self) -> str:
        """How the weight is kept, for `describe_ops`."""
        raise NotImplementedError

    def holds_compute_dtype(self, dtype: torch.dtype) -> bool:
        """Whether W is kept in `dtype` itself, so that `dense_weight` may return the stored tensor."""
        return False

    def prepares_input(self, x: torch.Tensor) -> bool:
        """Whether this layer multiplies x faster once x is prepared (`prepare`), with its model's ops."""
        return False

    def prepare(self, x: torch.Tensor, gelu: bool = False) -> object:
        """x (of GELU(tanh)(x) with `gelu`) prepared for `from_prepared`, reusable by layers of the same kind."""
        raise NotImplementedError(f"{type(self).__name__} does not prepare its input")

    def from_prepared(self, prepared: object, x: torch.Tensor) -> torch.Tensor:
        """The layer's output for x from x prepared by `prepare`."""
        raise NotImplementedError(f"{type(self).__name__} does not prepare its input")

    # --- shared ------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_features) → (..., out_features), computed in x's dtype on x's device."""
        if self.prepares_input(x):
            return self.from_prepared(self.prepare(x), x)
        return F.linear(x, self.weight_like(x), self.bias_like(x))

    def bias_like(self, x: torch.Tensor) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.to(device=x.device, dtype=x.dtype)

    def weight_like(self, x: torch.Tensor) -> torch.Tensor:
        """W in x's dtype on x's device with the LoRA stack merged: W + lora_up·lora_down in one addmm
        (products accumulated in float32, rounded once), into W's per-call expansion where there is one."""
        weight = self.dense_weight(x)
        if self.lora_up is None:
            return weight
        up, down = self._lora_factors(x)
        if self.holds_compute_dtype(x.dtype):
            return torch.addmm(weight, up, down)  # W may be the stored tensor: never written
        return weight.addmm_(up, down)  # W expanded for this call alone

    def plain_weight(self, x: torch.Tensor) -> torch.Tensor | None:
        """`weight_like(x)` where W is kept in x's dtype (the ops fuse such products with what follows
        them); else None."""
        return self.weight_like(x) if self.holds_compute_dtype(x.dtype) else None

    def lora_mode(self, dtype: torch.dtype) -> str | None:
        """How the LoRA stack is merged for activations of `dtype` (for `describe_ops`), or None without LoRA."""
        if self.lora_up is None:
            return None
        return "merged" if self.holds_compute_dtype(dtype) else "merged into the weight expanded per call"

    def set_lora(self, down: torch.Tensor | None, up: torch.Tensor | None) -> None:
        """Install a LoRA stack (down (R, in), up (out, R), scales folded into up), or remove it (None, None)."""
        if (down is None) != (up is None):
            raise ValueError("a LoRA stack needs both factors, or neither")
        if down is not None and (down.shape[1] != self.in_features or up.shape != (self.out_features, down.shape[0])):
            raise ValueError(
                f"LoRA factors {tuple(down.shape)}, {tuple(up.shape)} do not fit a "
                f"{self.in_features}→{self.out_features} layer"
            )
        self.lora_down, self.lora_up = down, up

    def _lora_factors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(t.to(device=x.device, dtype=x.dtype) for t in (self.lora_up, self.lora_down))

    def extra_repr(self) -> str:
        lora = "" if self.lora_down is None else f", LoRA rank {self.lora_down.shape[0]}"
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.storage_name()}{lora}"


class Linear(StoredLinear, nn.Linear):
    """nn.Linear whose weight is kept as loaded: in the activation dtype, or narrower (fp8: expanded to
    the activation dtype per call, the bias too)."""

    def dense_weight(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.to(device=x.device, dtype=x.dtype)

    def holds_compute_dtype(self, dtype: torch.dtype) -> bool:
        return self.weight.dtype == dtype

    def storage_name(self) -> str:
        dtype = str(self.weight.dtype).removeprefix("torch.")
        return dtype if self.weight.element_size() > 1 else f"{dtype} (expanded per call)"


def linear_layers(model: nn.Module, under: str = "") -> Iterator[tuple[str, nn.Module]]:
    """(name, layer) of every linear layer of `model` whose name starts with `under`: our storage
    classes and any plain nn.Linear."""
    for name, module in list(model.named_modules()):
        if name and name.startswith(under) and isinstance(module, StoredLinear | nn.Linear):
            yield name, module


def replace_linear(model: nn.Module, name: str, layer: nn.Module) -> None:
    """Put `layer` (another storage of the same weight) where the linear layer `name` is; it keeps the
    replaced layer's ops and LoRA stack."""
    old = model.get_submodule(name)
    if isinstance(old, UsesOps) and isinstance(layer, UsesOps) and "ops" in old.__dict__:
        layer.ops = old.ops
    if isinstance(old, StoredLinear) and isinstance(layer, StoredLinear) and old.lora_up is not None:
        layer.set_lora(old.lora_down, old.lora_up)
    parent, _, child = name.rpartition(".")
    model.get_submodule(parent).register_module(child, layer)
