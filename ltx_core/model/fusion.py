"""Elementwise steps and their compiled form: the switch (`set_fusion`) and the compiler wrapper
(`fused`) behind the ops of `model.ops`.

A step (`@step`: the transformer's norms, adaLN modulation and residuals; the VAE's skips and
unfolds; fp8 quantization; GGUF dequantization) is plain torch and runs as written when called; a
model runs it through its ops (`ops.run(step, *args)`), which may compile it here (torch.compile,
on CUDA only) or hand it to a Triton kernel (`kernels`). The CPU runs the plain form, which is what
the parity tests check. On CUDA a compiled step's first call compiles it, so the first forward and
the first decode take a few seconds longer (benchmarks/README.md has the measured first-call times).
If compiling fails (no Triton, say), a warning is logged once and the plain function runs. Running
out of memory is not such a failure: it propagates (`raise_if_out_of_memory`), to the caller that
can free memory or retry smaller (the VAE's automatic tiling), and the fast path stays on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

import torch

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., torch.Tensor])

_settings: dict[str, object] = {"enabled": True, "devices": ("cuda",)}

# Compiled variants one fused function may collect (torch.compile's default is 8, after which it
# runs the function unfused). The VAE's functions meet a new shape, memory order or optional input
# at many stages and tile sizes of a decode; each variant is a small pointwise kernel, compiled once.
RECOMPILE_LIMIT = 64


def set_fusion(enabled: bool, devices: tuple[str, ...] = ("cuda",)) -> None:
    """Turn compiled fusion on or off for every fused function (on by default, for CUDA tensors)."""
    _settings["enabled"], _settings["devices"] = enabled, devices


def fusion_enabled(device_type: str) -> bool:
    """Whether fusion is on for tensors of `device_type` (compiled functions, Triton kernels)."""
    return bool(_settings["enabled"]) and device_type in _settings["devices"]


def raise_if_out_of_memory(error: BaseException) -> None:
    """Raise `error` again if it is, or was caused by, running out of memory, as torch.OutOfMemoryError
    (what callers catch to retry smaller); return otherwise. For the fallbacks of the fast paths,
    which must switch themselves off for a failure to build or launch, never for out-of-memory.
    Besides torch's own error, compilers and Triton's launcher report a failed allocation as an
    error of their own whose message (or cause) says "out of memory"."""
    cause: BaseException | None = error
    for _ in range(8):  # the chain of causes: a compiler wraps the error it met
        if cause is None:
            return
        if isinstance(cause, torch.OutOfMemoryError):
            raise cause if cause is error else torch.OutOfMemoryError(str(cause)) from error
        if "out of memory" in str(cause).lower():
            raise torch.OutOfMemoryError(str(cause)) from error
        cause = cause.__cause__ or cause.__context__


def fused(fn: F) -> F:
    """Compile `fn` on its first call with a first argument on a fusing device (CUDA); fall back to
    `fn` for good if compiling or running the compiled version fails."""
    compiled: list[Callable[..., torch.Tensor]] = []
    failed: list[bool] = []

    @functools.wraps(fn)
    def run(*args: object) -> torch.Tensor:
        first = args[0]
        if failed or not (isinstance(first, torch.Tensor) and fusion_enabled(first.device.type)):
            return fn(*args)
        if not compiled:
            compiled.append(torch.compile(fn))
        try:
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                return compiled[0](*args)
        except Exception as error:  # a missing or broken compiler must not stop generation
            raise_if_out_of_memory(error)
            log.warning("fusing %s failed (%s); running it unfused", fn.__name__, error)
            failed.append(True)
            return fn(*args)

    return run  # type: ignore[return-value]


class Step:
    """A piece of elementwise work written in plain torch (see the module docstring). Calling it runs
    it as written; `compiled` is its torch.compile'd form (compiled on first use on a fusing device)."""

    def __init__(self, fn: Callable[..., object]) -> None:
        functools.update_wrapper(self, fn)  # __wrapped__, __name__, __doc__
        self.compiled = fused(fn)

    def __call__(self, *args: object) -> object:
        return self.__wrapped__(*args)

    def __repr__(self) -> str:
        return f"<step {self.__module__}.{self.__qualname__}>"


def step(fn: Callable[..., object]) -> Step:
    """Mark `fn` as an elementwise step that a model's ops may compile or replace by a kernel."""
    return Step(fn)
