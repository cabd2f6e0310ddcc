"""The one seam between what a model computes and how: the ops a model computes its building blocks with.

The model files describe the network in plain torch. Their elementwise steps are plain functions
marked `@step` (model/fusion.py), their linear layers are storage classes (model/storage.py: weights
as stored, fp8 matmul, GGUF blocks, ComfyUI's scaled fp8, each with its LoRA stack), and they take
every building block whose implementation can vary from their ops: `ops.run(step, *args)`,
`ops.attention` (`ops.cross_attention` for the text's keys), `ops.project` (q/k/v), `ops.gelu_linear`,
`ops.feed_forward`. A model never asks which ops or which storage it got.

PLAIN     every block as written, on any device: what the CPU runs, what the parity tests check, and
          the reference every fast path is checked against (benchmarks/check_gpu_paths.py).
COMPILED  the elementwise steps through torch.compile (fusion.fused), on devices where fusion is on.
FUSED     COMPILED, plus the hand-written Triton kernels of `kernels.kernel_table` in place of their
          steps, GELU in the feed-forward matmul's epilogue (weights held in the activation dtype),
          and fp8 products on fp8 tensor cores for fp8-matmul layers (one row quantization shared by
          q, k and v; GELU fused into the quantization of the feed-forward's hidden activations).

Each fast path of COMPILED and FUSED runs only where it can (a tensor on a device where fusion is on,
Triton importable for a CUDA tensor, an fp8 GPU, no autograd) and runs its plain form otherwise, so
they are safe on any device; a kernel or compiler that fails is logged once and its plain form used
from then on (kernels.kernel_or_none, fusion.fused). Streaming blocks from host memory changes where
weights are, not how they are used: it is `memory.placed`'s business, and the ops are the same.
Splitting a model call over processes wraps these ops rather than adding a set: `UlyssesOps(inner)`
(parallel/ulysses.py) is `inner` with self-attention split over the tokens of a process group.

A model's ops are chosen in one place, `choose_ops(device)`, when the model meets its compute device
(`memory.placed`), and installed on all its modules by `use_ops`, which logs `describe_ops(model)`:
what each building block runs as on that device, the storage of its linear layers and its LoRAs.
Until then a model has FUSED, which runs plain on the CPU.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from .fusion import Step, fusion_enabled
from .kernels import kernel_or_none, kernel_table, kernels_usable, triton_importable

log = logging.getLogger(__name__)


class Ops:
    """Plain torch: every building block as written, on any device."""

    name = "plain"

    def run(self, step: Step, *args: object) -> object:
        """An elementwise step on its arguments (a tensor first)."""
        return step.__wrapped__(*args)

    def attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Multi-head attention (see `attention.attention`): (B, N, D) queries, (B, L, D) keys and values."""
        return attention(q, k, v, heads, bias)

    def cross_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention of (B, N, D) queries over the (B, L, D) keys and values of another sequence (the
        text): `attention`, told apart so that ops splitting the video's tokens (parallel/ulysses.py)
        can keep it local."""
        return self.attention(q, k, v, heads, bias)

    def project(self, x: torch.Tensor, *linears: nn.Module) -> list[torch.Tensor]:
        """x through each of `linears` (an attention's q, k, v)."""
        return [linear(x) for linear in linears]

    def gelu_linear(self, linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """GELU(tanh) of `linear(x)`."""
        return F.gelu(linear(x), approximate="tanh")

    def feed_forward(self, proj: nn.Module, out: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """out(GELU(tanh)(proj(x))): the transformer's feed-forward."""
        return out(self.gelu_linear(proj, x))

    def fp8_matmul(self, x: torch.Tensor) -> bool:
        """Whether fp8-matmul layers may multiply `x` on fp8 tensor cores (their own check of the GPU
        comes on top); otherwise they multiply by their weights expanded to x's dtype."""
        return False

    def paths(self, device: torch.device) -> dict[str, str]:
        """What each building block runs as for tensors on `device`."""
        return {"elementwise": "plain torch", "attention": "scaled_dot_product_attention"}

    def __repr__(self) -> str:
        return f"<{self.name} ops>"


class CompiledOps(Ops):
    """The elementwise steps compiled by torch.compile where fusion is on; the rest as plain."""

    name = "compiled"

    def run(self, step: Step, *args: object) -> object:
        return step.compiled(*args)

    def paths(self, device: torch.device) -> dict[str, str]:
        compiled = fusion_enabled(device.type)
        return {**super().paths(device), "elementwise": "torch.compile" if compiled else "plain torch"}


class FusedOps(CompiledOps):
    """COMPILED, plus Triton kernels, GELU in matmul epilogues and fp8 products (see the module docstring)."""

    name = "fused"

    def run(self, step: Step, *args: object) -> object:
        kernel = kernel_table().get(step)
        first = args[0]
        if kernel is not None and kernels_usable(first) and (kernel.fits is None or kernel.fits(*args)):
            out = kernel_or_none(lambda: kernel.run(*args))
            if out is not None:
                return out
        return step.compiled(*args)

    def project(self, x: torch.Tensor, *linears: nn.Module) -> list[torch.Tensor]:
        """Layers that prepare their input (fp8 matmuls quantize it) prepare it once for all of them."""
        first = linears[0]
        if all(type(linear) is type(first) for linear in linears) and first.prepares_input(x):
            prepared = first.prepare(x)
            return [linear.from_prepared(prepared, x) for linear in linears]
        return [linear(x) for linear in linears]

    def gelu_linear(self, linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
        weight = linear.plain_weight(x) if x.is_cuda and fusion_enabled("cuda") else None
        if weight is None:
            return super().gelu_linear(linear, x)
        # GELU(tanh) in the matmul's epilogue (cuBLASLt): the 4×-wide activation is written once and
        # never re-read (on the CPU this op computes the erf GELU, hence CUDA only)
        bias = linear.bias_like(x)
        flat = torch._addmm_activation(bias, x.flatten(0, -2), weight.t(), use_gelu=True)
        return flat.unflatten(0, x.shape[:-1])

    def feed_forward(self, proj: nn.Module, out: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """An `out` layer that prepares its input takes GELU(proj(x)) prepared in one pass (fp8: GELU and
        the quantization)."""
        if out.prepares_input(x):
            hidden = proj(x)
            return out.from_prepared(out.prepare(hidden, gelu=True), hidden)
        return out(self.gelu_linear(proj, x))

    def fp8_matmul(self, x: torch.Tensor) -> bool:
        return fusion_enabled(x.device.type)

    def paths(self, device: torch.device) -> dict[str, str]:
        paths = super().paths(device)
        if device.type != "cuda" or not fusion_enabled("cuda"):
            return paths
        if triton_importable():
            paths["Triton kernels"] = ", ".join(step.__name__ for step in kernel_table())
        paths["feed-forward GELU"] = "in the matmul epilogue"
        fp8 = torch.cuda.get_device_capability(device) >= (8, 9)
        paths["fp8-matmul layers"] = "on fp8 tensor cores" if fp8 else "weights expanded (no fp8 tensor cores)"
        return paths


PLAIN, COMPILED, FUSED = Ops(), CompiledOps(), FusedOps()
OPS: dict[str, Ops] = {ops.name: ops for ops in (PLAIN, COMPILED, FUSED)}


class UsesOps:
    """Mixin for the modules that compute with their model's ops (`self.ops`): installed by `use_ops`,
    FUSED until then."""

    ops: Ops = FUSED


def choose_ops(device: torch.device | str) -> Ops:
    """The ops a model computes with on `device`: FUSED where fusion is on for the device (CUDA by
    default, see fusion.set_fusion) and, on CUDA, Triton importable (torch.compile writes its GPU code
    in Triton too); PLAIN elsewhere. The model's dtype and the storage of its layers choose within
    FUSED, per layer and per call: every path takes bf16, fp16 and fp32; weights held in the
    activation dtype get the GELU epilogue, fp8-matmul layers fp8 products on a GPU that has them,
    GGUF layers a compiled dequantization; `describe_ops` says which."""
    kind = torch.device(device).type
    if not fusion_enabled(kind) or (kind == "cuda" and not triton_importable()):
        return PLAIN
    return FUSED


def use_ops(model: nn.Module, ops: Ops, device: torch.device | str | None = None) -> Ops:
    """Install `ops` on every module of `model` that computes with ops; logs `describe_ops` when the
    model's ops change. Returns the ops the model had before."""
    before = model.__dict__.get("ops")
    for module in model.modules():
        if isinstance(module, UsesOps):
            module.ops = ops
    model.__dict__["ops"] = ops
    if before is not ops and log.isEnabledFor(logging.INFO):
        log.info("%s", describe_ops(model, device))
    return before if before is not None else FUSED


def ops_of(model: nn.Module) -> Ops:
    """The ops `model` computes with."""
    return model.__dict__.get("ops") or next((m.ops for m in model.modules() if isinstance(m, UsesOps)), FUSED)


def describe_ops(model: nn.Module, device: torch.device | str | None = None) -> str:
    """One line saying how `model` computes on `device` (default: where its weights are): its ops and
    what each building block runs as there, its compute dtype, its linear layers' storage and its
    LoRAs (how each storage merges them)."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    device = torch.device(device) if device is not None else (tensors[0].device if tensors else torch.device("cpu"))
    dtype = compute_dtype(model)
    ops = ops_of(model)
    linears = [m for m in model.modules() if hasattr(m, "storage_name")]
    storage = Counter(m.storage_name() for m in linears)
    loras = Counter(m.lora_mode(dtype) for m in linears if m.lora_mode(dtype) is not None)
    parts = [f"{ops.name} ops on {device} in {str(dtype).removeprefix('torch.')}"]
    parts += [f"{block}: {how}" for block, how in ops.paths(device).items()]
    if linears:
        parts.append("linear layers: " + ", ".join(f"{n} {name}" for name, n in storage.most_common()))
    if any(isinstance(m, nn.Linear) and not hasattr(m, "storage_name") for m in model.modules()):
        parts.append("other nn.Linear layers as stored")
    if loras:
        parts.append("LoRA on " + ", ".join(f"{n} layers {mode}" for mode, n in loras.most_common()))
    return f"{type(model).__name__}: " + "; ".join(parts)


def compute_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a model computes in: its `dtype` property if it has one, else that of its first
    floating-point parameter of at least 16 bits (fp8 weights are expanded to the activations')."""
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    wide = (p.dtype for p in model.parameters() if p.is_floating_point() and p.element_size() >= 2)
    return next(wide, torch.float32)
