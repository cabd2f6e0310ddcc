"""Linear layers whose weight stays in its stored form and is expanded on the fly in forward.

A GGUF model keeps ~4-8 bits per weight in memory (QuantizedLinear: GGML blocks), an fp8 T5 file
8 bits (Fp8WeightLinear: float8 values and ComfyUI's per-tensor scale); each layer expands only its
own weight, on the input's device and in the input's dtype, for the duration of one call (a LoRA is
added into that expansion). Both are storages of model/storage.py; `swap_linears` and
`swap_fp8_linears` put them in place of a model's built layers when it is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch import nn

from ..model.storage import StoredLinear, replace_linear
from .dequant import GGMLType, dequantize
from .gguf import QuantizedTensor
from .materialize import CheckpointMismatchError


class QuantizedLinear(StoredLinear):
    """y = x Wᵀ + b with W held as raw GGML bytes (a non-persistent buffer, so `.to(device)` moves it).

    The weight is not part of `state_dict()`; only the plain `bias` parameter is, so the rest of a
    model still loads with `materialize()`.
    """

    def __init__(self, weight: QuantizedTensor, bias: nn.Parameter | None) -> None:
        super().__init__()
        if len(weight.shape) != 2:
            raise ValueError(f"QuantizedLinear needs a 2-D weight (out, in), got shape {tuple(weight.shape)}")
        self.qtype = weight.qtype
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight_raw", weight.raw, persistent=False)
        self.register_parameter("bias", bias)

    @property
    def weight(self) -> QuantizedTensor:
        """The quantized weight, (out_features, in_features)."""
        return QuantizedTensor(self.weight_raw, self.qtype, torch.Size((self.out_features, self.in_features)))

    def dense_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The GGML blocks dequantized on x's device into x's dtype (compiled there by fused ops)."""
        raw = self.weight_raw.to(x.device, non_blocking=True)
        return dequantize(raw, self.qtype, (self.out_features, self.in_features), x.dtype, self.ops)

    def holds_compute_dtype(self, dtype: torch.dtype) -> bool:
        """F32 blocks are float32 values as they are: dequantized to float32 they are the stored bytes."""
        return self.qtype == GGMLType.F32 and dtype == torch.float32

    def storage_name(self) -> str:
        return f"GGUF {self.qtype.name} (dequantized per call)"


def swap_linears(
    model: nn.Module,
    state_dict: Mapping[str, QuantizedTensor | torch.Tensor],
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Replace each nn.Linear whose `<name>.weight` is quantized with a QuantizedLinear holding it.

    Meant for a model built on the `meta` device: the raw bytes move to `device`, the bias stays
    the module's (meta) parameter. Returns the remaining plain tensors for `materialize()`; a
    quantized tensor that is not a Linear weight is dequantized to float32 there.
    """

    def make(key: str, weight: QuantizedTensor | torch.Tensor, linear: nn.Linear) -> nn.Module | None:
        if not isinstance(weight, QuantizedTensor):
            return None
        return QuantizedLinear(weight if device is None else weight.to(device), linear.bias)

    rest = _swap(model, state_dict, make)
    return {k: v.dequantize() if isinstance(v, QuantizedTensor) else v for k, v in rest.items()}


def _swap(
    model: nn.Module,
    state_dict: Mapping[str, QuantizedTensor | torch.Tensor],
    make: Callable[[str, QuantizedTensor | torch.Tensor, nn.Linear], nn.Module | None],
) -> dict[str, QuantizedTensor | torch.Tensor]:
    """Replace each nn.Linear of `model` for which `make(key, weight, linear)` returns a module, where
    `key` is its `<name>.weight` in `state_dict`; returns the tensors no replacement took."""
    rest = dict(state_dict)
    for name, module in list(model.named_modules()):
        key = f"{name}.weight"
        weight = rest.get(key)
        if not name or not isinstance(module, nn.Linear) or weight is None:
            continue
        replacement = make(key, weight, module)
        if replacement is None:
            continue
        if weight.shape != module.weight.shape:
            found = f"{key} has shape {tuple(weight.shape)}, expected {tuple(module.weight.shape)}"
            raise CheckpointMismatchError(type(model).__name__, [found])
        del rest[key]
        replace_linear(model, name, replacement)
    return rest


class Fp8Weight(NamedTuple):
    """A float8 weight (out, in) and its float32 scale (None: 1), as an Fp8WeightLinear holds it."""

    values: torch.Tensor
    scale: torch.Tensor | None

    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """values × scale computed in float32 and rounded once to `dtype`."""
        if self.scale is None:
            return self.values.to(dtype)  # every float8 value is exact in bf16, fp16 and fp32
        return (self.values.to(torch.float32) * self.scale.to(self.values.device, torch.float32)).to(dtype)


class Fp8WeightLinear(StoredLinear):
    """y = x Wᵀ + b with W stored in float8 (times a per-tensor scale, for ComfyUI's "scaled" files),
    expanded to x's dtype per call: half the memory of bf16 weights, and the same numbers as weights
    expanded at load (the same float32 product, rounded once).

    The float8 bytes are the non-persistent buffer `weight_fp8` (so the rest of a model still loads
    with `materialize()`), and `weight` is no tensor: transformers' T5 casts its feed-forward
    activations to `wo.weight.dtype` when that is a tensor, which would make them float8.
    """

    def __init__(self, values: torch.Tensor, scale: torch.Tensor | None, bias: nn.Parameter | None) -> None:
        super().__init__()
        if values.ndim != 2 or values.element_size() != 1 or not values.is_floating_point():
            raise ValueError(f"Fp8WeightLinear needs a 2-D float8 weight, got {values.dtype} {tuple(values.shape)}")
        self.out_features, self.in_features = values.shape
        self.register_buffer("weight_fp8", values, persistent=False)
        self.register_buffer("weight_scale", None if scale is None else scale.float().reshape(()), persistent=False)
        self.register_parameter("bias", bias)

    @property
    def weight(self) -> Fp8Weight:
        return Fp8Weight(self.weight_fp8, self.weight_scale)

    def dense_weight(self, x: torch.Tensor) -> torch.Tensor:
        return Fp8Weight(self.weight_fp8.to(x.device, non_blocking=True), self.weight_scale).dequantize(x.dtype)

    def storage_name(self) -> str:
        scaled = "scaled" if self.weight_scale is not None else "unscaled"
        return f"{str(self.weight_fp8.dtype).removeprefix('torch.')} {scaled} (expanded per call)"


def swap_fp8_linears(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    scales: Mapping[str, torch.Tensor],
    device: torch.device | str | None = None,
    keep: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Replace each nn.Linear whose `<name>.weight` is float8 with an Fp8WeightLinear holding it (and
    its scale from `scales`, keyed like the weight), except weights whose key ends with one of `keep`.
    Meant for a model built on the `meta` device; returns the remaining tensors for `materialize()`."""

    def make(key: str, weight: torch.Tensor, linear: nn.Linear) -> nn.Module | None:
        if key.endswith(keep) or weight.element_size() != 1 or not weight.is_floating_point():
            return None
        scale = scales.get(key)
        return Fp8WeightLinear(weight.to(device), None if scale is None else scale.to(device), linear.bias)

    return _swap(model, state_dict, make)
