"""fp8 matrix products (Hopper and Ada): linear weights in e4m3 with one scale per output channel,
activations quantized per row on the fly, multiplied by `torch._scaled_mm` with float32 accumulation.

`quantize_linears(model)` converts the transformer blocks' linear layers once (from whatever dtype
they hold); their forward then runs the fp8 product on a GPU that has one and, elsewhere, the same
weights expanded to the activation dtype. It is an opt-in speed mode: on an H100 a forward of the 2B
model at 768×512×121 takes 91 ms instead of 110 ms, and its output moves from bf16 by 4.4 % of its
mean magnitude, against 1.0 % between bf16 and diffusers' bf16 (benchmarks/compare.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import fused, fusion_enabled, raise_if_out_of_memory
from .kernels import kernel_or_none, kernels_usable, quantize_rows_kernel

E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448


def fp8_matmul_supported(device: torch.device) -> bool:
    """CUDA devices of compute capability 8.9 (Ada) or newer have fp8 tensor cores."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) → e4m3 values and (M, 1) float32 scales with x ≈ values · scale, row by row (one pass
    over x on CUDA)."""
    quantized = kernel_or_none(lambda: quantize_rows_kernel(x)) if kernels_usable(x) else None
    return _quantize_rows(x) if quantized is None else quantized


def gelu_quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`quantize_rows` of GELU(tanh)(x), in one pass on CUDA: the feed-forward's hidden activations
    go from the first product to the second as e4m3, never written out in their own dtype."""
    quantized = kernel_or_none(lambda: quantize_rows_kernel(x, gelu=True)) if kernels_usable(x) else None
    return _gelu_quantize_rows(x) if quantized is None else quantized


@fused
def _quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX
    return (x.float() / scale).to(torch.float8_e4m3fn), scale


@fused
def _gelu_quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _quantize_rows.__wrapped__(F.gelu(x.float(), approximate="tanh"))


def project(x: torch.Tensor, *linears: nn.Module) -> list[torch.Tensor]:
    """x through each of `linears` (an attention's q, k, v): when all are Fp8Linear on the fp8 path,
    x is quantized once for all of them."""
    if all(isinstance(linear, Fp8Linear) for linear in linears) and linears[0].fast(x):
        rows, row_scale = quantize_rows(x.reshape(-1, x.shape[-1]))
        return [linear.from_rows(rows, row_scale, x) for linear in linears]
    return [linear(x) for linear in linears]


_bias_in_epilogue = [True]  # cleared if this build of torch refuses a bias with row-wise scales


def _scaled_mm(
    a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor, bias: torch.Tensor | None, dtype
) -> torch.Tensor:
    if bias is not None and _bias_in_epilogue[0]:
        try:
            return torch._scaled_mm(a, b, scale_a, scale_b, bias=bias, out_dtype=dtype, use_fast_accum=True)
        except RuntimeError as error:
            raise_if_out_of_memory(error)  # only a refused bias switches the epilogue off
            _bias_in_epilogue[0] = False
    out = torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=dtype, use_fast_accum=True)
    return out if bias is None else out + bias


class Fp8Linear(nn.Module):
    """y = x Wᵀ + b with W held as e4m3 (out, in) and a float32 scale per output channel."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / E4M3_MAX  # (out,)
        self.register_buffer("weight", (w / scale[:, None]).to(torch.float8_e4m3fn))
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.out_features, self.in_features = weight.shape

    def fast(self, x: torch.Tensor) -> bool:
        """Whether x goes through the fp8 product (fusion on and an fp8 GPU), not the expanded weights."""
        return fusion_enabled(x.device.type) and fp8_matmul_supported(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast(x):
            return self.from_rows(*quantize_rows(x.reshape(-1, self.in_features)), x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        weight = (self.weight.float() * self.weight_scale[:, None]).to(x.dtype)
        return F.linear(x, weight, bias)

    def from_rows(self, rows: torch.Tensor, row_scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The fp8 product of x already quantized by `quantize_rows` (rows, row_scale) → x's shape and dtype."""
        bias = None if self.bias is None else self.bias.to(x.dtype)
        out = _scaled_mm(rows, self.weight.t(), row_scale, self.weight_scale[None, :], bias, x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8 e4m3 per channel"


def quantize_linears(model: nn.Module, under: str = "transformer_blocks.") -> int:
    """Replace every linear layer below `under` with an Fp8Linear of its weights; returns how many.
    Plain nn.Linear layers are converted from the dtype they hold; GGUF layers (QuantizedLinear: any
    layer whose `weight` has `dequantize()`) are expanded from their GGML blocks to float32 one at a
    time and requantized, so their memory becomes ~1 byte per weight (less than Q8_0's 1.06, more
    than Q4's ~0.56). The dimensions must be multiples of 16 (those of every released LTX-Video
    model are). Raises if there is nothing to convert."""
    count = 0
    for name, module in list(model.named_modules()):
        weight = _float_weight(module) if name.startswith(under) else None
        if weight is None:
            continue
        out_features, in_features = weight.shape
        if in_features % 16 or out_features % 16:
            raise ValueError(
                f"{name} is {in_features}→{out_features}; fp8 matmuls need multiples of 16: "
                "load this model with another weight dtype"
            )
        parent, _, child = name.rpartition(".")
        model.get_submodule(parent).register_module(child, Fp8Linear(weight, module.bias))
        count += 1
    if count == 0:
        raise ValueError(
            f"{type(model).__name__} has no linear layers under {under!r} to convert to fp8 (all are "
            "fp8 already, or of a kind fp8 matmuls cannot take): load it with another weight dtype"
        )
    return count


def _float_weight(module: nn.Module) -> torch.Tensor | None:
    """The weight of a linear layer fp8 matmuls can take, as a float tensor; None for other modules."""
    if isinstance(module, nn.Linear):
        return module.weight
    weight = getattr(module, "weight", None)
    if hasattr(module, "in_features") and not isinstance(weight, torch.Tensor) and hasattr(weight, "dequantize"):
        return weight.dequantize()  # GGML blocks → float32 (QuantizedLinear)
    return None
