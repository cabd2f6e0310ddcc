"""Linear layers whose weight stays in GGML blocks and is dequantized on the fly in forward.

A GGUF transformer keeps ~4-8 bits per weight in memory; each QuantizedLinear expands only its
own weight, on the input's device and in the input's dtype, for the duration of one call.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .dequant import dequantize
from .gguf import QuantizedTensor
from .materialize import CheckpointMismatchError


class QuantizedLinear(nn.Module):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_features) → (..., out_features), computed in x's dtype on x's device."""
        raw = self.weight_raw.to(x.device, non_blocking=True)
        weight = dequantize(raw, self.qtype, (self.out_features, self.in_features), x.dtype)
        bias = None if self.bias is None else self.bias.to(device=x.device, dtype=x.dtype)
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, qtype={self.qtype.name}"


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
    rest = dict(state_dict)
    for name, module in list(model.named_modules()):
        key = f"{name}.weight"
        weight = rest.get(key)
        if not name or not isinstance(module, nn.Linear) or not isinstance(weight, QuantizedTensor):
            continue
        if weight.shape != module.weight.shape:
            found = f"{key} has shape {tuple(weight.shape)}, expected {tuple(module.weight.shape)}"
            raise CheckpointMismatchError(type(model).__name__, [found])
        del rest[key]
        parent, _, child = name.rpartition(".")
        weight = weight if device is None else weight.to(device)
        model.get_submodule(parent).register_module(child, QuantizedLinear(weight, module.bias))
    return {k: v.dequantize() if isinstance(v, QuantizedTensor) else v for k, v in rest.items()}
