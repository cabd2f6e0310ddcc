"""fp8 matrix products (Hopper and Ada): linear weights in e4m3 with one scale per output channel,
activations quantized per row on the fly, multiplied by `torch._scaled_mm` with float32 accumulation.

`quantize_linears(model)` converts the transformer blocks' linear layers once (from whatever dtype
they hold); their forward then runs the fp8 product on a GPU that has one and, elsewhere, the same
weights expanded to the activation dtype. It is an opt-in speed mode: on an H100 a forward of the 2B
model at 768×512×121 takes 91 ms instead of 110 ms, and its output moves from bf16 by 4.4 % of its
mean magnitude, against 1.0 % between bf16 and diffusers' bf16 (benchmarks/compare.py).

A LoRA is merged, not applied at use: adding x·Aᵀ·Bᵀ to each output costs two products over every
token (13 GFLOP per 2048-wide layer at rank 128, 1.2–1.35× the forward on an H200), so while a LoRA
is set each layer keeps beside W an e4m3 copy of W + ΔW, requantized per output channel from the
untouched W, and multiplies by that. The copy costs one byte per weight of the LoRA'd layers (1.9 GB
for LoRAs on every block layer of the 2B model); removing the LoRA drops it and W is as loaded.
Its values are rounded stochastically (`requantize_channels`), as ComfyUI rounds fp8 weights it
patches with a LoRA (comfy/float.py): W is already on the e4m3 grid, so rounding W + ΔW to the
nearest value would give W back wherever ΔW is under half a step, and drop much of a weak LoRA (41 %
of one whose ΔW is 1.5 % of W, tests/test_lora.py); rounded stochastically every ΔW counts in full on
average, at the price of more rounding noise (per weight, at most √3× the error of rounding to the
nearest): a model with LoRAs is 1.5–2.3× as far from its float32 self as the fp8 rounding puts the base
model, against 1.0–1.1× for weights expanded per call (tests/test_lora.py).
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import raise_if_out_of_memory, step
from .ops import FUSED
from .storage import StoredLinear, linear_layers, replace_linear

E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448


def fp8_matmul_supported(device: torch.device) -> bool:
    """CUDA devices of compute capability 8.9 (Ada) or newer have fp8 tensor cores."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) → e4m3 values and (M, 1) float32 scales with x ≈ values · scale, row by row (one pass
    over x on CUDA)."""
    return FUSED.run(_quantize_rows, x)


def gelu_quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`quantize_rows` of GELU(tanh)(x), in one pass on CUDA: the feed-forward's hidden activations
    go from the first product to the second as e4m3, never written out in their own dtype."""
    return FUSED.run(_gelu_quantize_rows, x)


@step
def _quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX
    return (x.float() / scale).to(torch.float8_e4m3fn), scale


@step
def _gelu_quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _quantize_rows.__wrapped__(F.gelu(x.float(), approximate="tanh"))


def quantize_channels(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float → e4m3 values and (out,) float32 scales with weight ≈ values · scale, row by
    row, each value rounded to the nearest."""
    w = weight.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / E4M3_MAX  # (out,)
    return (w / scale[:, None]).to(torch.float8_e4m3fn), scale


def requantize_channels(
    weight: torch.Tensor, scale: torch.Tensor, noise: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 (out, in) weight (consumed) that was `values · scale` before a change, in e4m3 again:
    each row keeps its scale where that still covers it, else takes it times the least power of two that
    does, so that every old value stays on the grid (e4m3 values times 2^k are e4m3 values; a float
    format is as precise at any scale). Each value is rounded stochastically to one of its two e4m3
    neighbours, with the probabilities that make its expectation the value itself (drawn from `noise`,
    a generator on weight's device), or to the nearest with None. Returns values and (out,) scales."""
    needed = weight.abs().amax(dim=1) / (E4M3_MAX * scale)  # (out,)
    scale = scale * torch.exp2(torch.ceil(torch.log2(needed)).clamp(min=0))
    y = weight.div_(scale[:, None]).clamp_(-E4M3_MAX, E4M3_MAX)  # the clamp: log2's rounding at 2^k
    if noise is None:
        return y.to(torch.float8_e4m3fn), scale
    _, exponent = torch.frexp(y)  # |y| = m · 2^exponent, 0.5 ≤ m < 1
    # e4m3 keeps 3 mantissa bits: steps of 2^(e − 3) in [2^e, 2^(e+1)), and of 2^-9 below 2^-6 (subnormals)
    step = torch.exp2(exponent.sub_(1).clamp_(min=-6).sub_(3).float())
    steps = y.div_(step)
    low = steps.floor()
    up = torch.rand(y.shape, generator=noise, device=y.device).lt_(steps.sub_(low))  # P(up) = the fraction
    y = low.add_(up).mul_(step)  # a multiple of its step: exact in e4m3, at most 448
    return y.to(torch.float8_e4m3fn), scale


MERGE_CHUNK = 2**24  # weights requantized at once: ~0.4 GB of float32 temporaries at most


def merge_requantized(
    values: torch.Tensor, scale: torch.Tensor, up: torch.Tensor, down: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 W (out, in) with per-channel `scale`, plus ΔW = up (out, R) · down (R, in): W + ΔW formed in
    float32 and requantized per channel (`requantize_channels`), on values' device. Computed on the GPU
    where there is one, a few rows at a time; the noise is seeded by W's first row, so that a layer gets
    the same copy every time it gets the same LoRAs, and layers of one shape (q, k, v) no common noise."""
    home = values.device
    device = torch.device("cuda") if home.type == "cpu" and torch.cuda.is_available() else home
    noise = torch.Generator(device).manual_seed(zlib.crc32(values[0].view(torch.uint8).cpu().numpy().tobytes()))
    down = down.to(device, torch.float32)
    new_values, new_scale = torch.empty_like(values), torch.empty_like(scale)
    rows = max(1, MERGE_CHUNK // values.shape[1])
    for start in range(0, values.shape[0], rows):
        part = slice(start, start + rows)
        old_scale = scale[part].to(device)
        merged = values[part].to(device).float().mul_(old_scale[:, None])
        merged.addmm_(up[part].to(device, torch.float32), down)
        part_values, part_scale = requantize_channels(merged, old_scale, noise)
        new_values[part], new_scale[part] = part_values.to(home), part_scale.to(home)
    return new_values, new_scale


def _expand(values: torch.Tensor, scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """e4m3 values times their per-channel scales, in x's dtype on x's device."""
    return (values.to(x.device).float() * scale.to(x.device)[:, None]).to(x.dtype)


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


class Fp8Linear(StoredLinear):
    """y = x Wᵀ + b with W held as e4m3 (out, in) and a float32 scale per output channel. With fused
    ops on an fp8 GPU, x is quantized per row and multiplied on fp8 tensor cores; otherwise W is
    expanded to x's dtype. While a LoRA is set, both multiply by `lora_weight` (W + ΔW requantized, with
    its own `lora_weight_scale`) instead of W (see the module docstring)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        values, scale = quantize_channels(weight.detach())
        self.register_buffer("weight", values)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("lora_weight", None, persistent=False)  # e4m3 (out, in), while a LoRA is set
        self.register_buffer("lora_weight_scale", None, persistent=False)  # (out,)
        self.out_features, self.in_features = weight.shape

    def dense_weight(self, x: torch.Tensor) -> torch.Tensor:
        return _expand(self.weight, self.weight_scale, x)

    def weight_like(self, x: torch.Tensor) -> torch.Tensor:
        """The e4m3 weight multiplied (W, or W + ΔW requantized while a LoRA is set) in x's dtype."""
        return _expand(*self._in_use(), x)

    def set_lora(self, down: torch.Tensor | None, up: torch.Tensor | None) -> None:
        """Install a LoRA stack and build the requantized W + ΔW from the untouched W; or remove both."""
        super().set_lora(down, up)
        merged = (None, None) if down is None else merge_requantized(self.weight, self.weight_scale, up, down)
        self.lora_weight, self.lora_weight_scale = merged

    def lora_mode(self, dtype: torch.dtype) -> str | None:
        return None if self.lora_up is None else "merged into a requantized fp8 copy"

    def _in_use(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The e4m3 values and per-channel scales every product uses."""
        if self.lora_weight is None:
            return self.weight, self.weight_scale
        return self.lora_weight, self.lora_weight_scale

    def storage_name(self) -> str:
        return "fp8 matmul (e4m3, per-channel scales)"

    def prepares_input(self, x: torch.Tensor) -> bool:
        """The fp8 product: fused ops (fusion on for x's device) and an fp8 GPU."""
        return self.ops.fp8_matmul(x) and fp8_matmul_supported(x.device)

    def prepare(self, x: torch.Tensor, gelu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x (..., in) → its rows quantized to e4m3 and their float32 scales (of GELU(x) with `gelu`)."""
        return self.ops.run(_gelu_quantize_rows if gelu else _quantize_rows, x.reshape(-1, x.shape[-1]))

    def from_prepared(self, prepared: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        rows, row_scale = prepared
        values, scale = self._in_use()
        out = _scaled_mm(rows, values.t(), row_scale, scale[None, :], self.bias_like(x), x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


def quantize_linears(model: nn.Module, under: str = "transformer_blocks.") -> int:
    """Replace every linear layer below `under` with an Fp8Linear of its weights; returns how many.
    Plain nn.Linear layers are converted from the dtype they hold; GGUF layers (QuantizedLinear: any
    layer whose `weight` has `dequantize()`) are expanded from their GGML blocks to float32 one at a
    time and requantized, so their memory becomes ~1 byte per weight (less than Q8_0's 1.06, more
    than Q4's ~0.56). LoRA stacks stay with their layers (merged into requantized copies from then on). The
    dimensions must be multiples of 16 (those of every released LTX-Video model are). Raises if
    there is nothing to convert."""
    count = 0
    for name, module in linear_layers(model, under):
        weight = _float_weight(module)
        if weight is None:
            continue
        out_features, in_features = weight.shape
        if in_features % 16 or out_features % 16:
            raise ValueError(
                f"{name} is {in_features}→{out_features}; fp8 matmuls need multiples of 16: "
                "load this model with another weight dtype"
            )
        replace_linear(model, name, Fp8Linear(weight, module.bias))
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
