"""GGUF files → torch tensors, with quantized tensors kept as their raw GGML blocks.

Quantized data stays memory-mapped uint8 until a layer dequantizes it on the compute device
(see `quantized.py`); F32 / F16 / BF16 tensors become plain torch tensors without a copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .dequant import GGMLType, dequantize, raw_size, supported_type
from .errors import CheckpointError

# Types that need no dequantization: the bytes are viewed as the torch dtype directly.
_PLAIN_DTYPES = {GGMLType.F32: torch.float32, GGMLType.F16: torch.float16, GGMLType.BF16: torch.bfloat16}

# general.architecture → the component such a file holds (gguf-py's names: MODEL_ARCH.T5ENCODER, T5
# with a decoder, and city96's "ltxv"). Lets a GGUF chosen for the wrong role say where it belongs.
GGUF_COMPONENTS = {"ltxv": "transformer", "t5encoder": "text_encoder", "t5": "text_encoder"}


@dataclass(frozen=True)
class QuantizedTensor:
    """The raw GGML blocks of one tensor: `raw` uint8 bytes, their `qtype` and the torch `shape`."""

    raw: torch.Tensor
    qtype: GGMLType
    shape: torch.Size

    def __post_init__(self) -> None:
        if self.raw.dtype != torch.uint8 or self.raw.numel() != raw_size(self.qtype, self.shape):
            raise ValueError(
                f"{self.qtype.name} tensor of shape {tuple(self.shape)} needs {raw_size(self.qtype, self.shape)} "
                f"uint8 bytes, got {self.raw.numel()} of {self.raw.dtype}."
            )

    @property
    def device(self) -> torch.device:
        return self.raw.device

    def dequantize(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        """Float values of `shape` in `dtype`, computed on `device` (default: where the bytes are)."""
        raw = self.raw if device is None else self.raw.to(device)
        return dequantize(raw, self.qtype, self.shape, dtype)

    def to(self, device: torch.device | str) -> QuantizedTensor:
        """The same tensor with its raw bytes on `device`."""
        return QuantizedTensor(self.raw.to(device), self.qtype, self.shape)


def _open_reader(path: Path) -> Any:
    try:
        from gguf import GGUFReader
    except ImportError as error:
        raise ImportError(f"Reading {path.name} needs the `gguf` package: pip install gguf") from error
    try:
        # copy-on-write mapping: writable arrays for torch.from_numpy, nothing is read until used
        return GGUFReader(path, "c")
    except (ValueError, KeyError, IndexError, TypeError, OverflowError) as error:
        expected = "a complete GGUF file (truncated or corrupted? download it again)"
        raise CheckpointError(path, f"not a readable GGUF file ({error})", expected) from error


def _metadata(reader: Any) -> dict[str, Any]:
    """Key-value metadata; the reader's own `GGUF.*` pseudo fields (version, counts) are left out."""
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def _to_torch(tensor: Any, shape: torch.Size, path: Path) -> QuantizedTensor | torch.Tensor:
    """One reader tensor → a plain tensor (float types) or a QuantizedTensor, sharing the mapped bytes."""
    qtype = supported_type(int(tensor.tensor_type), tensor.tensor_type.name, f"{path.name}: {tensor.name}: ")
    raw = torch.from_numpy(tensor.data.reshape(-1)).view(torch.uint8)  # bytes, whatever numpy's dtype
    if raw.numel() != raw_size(qtype, shape):
        raise CheckpointError(
            path,
            f"tensor {tensor.name} ({qtype.name}, shape {tuple(shape)}) has {raw.numel()} bytes of data",
            f"{raw_size(qtype, shape)} bytes (truncated or corrupted? download it again)",
        )
    if qtype in _PLAIN_DTYPES:
        return raw.view(_PLAIN_DTYPES[qtype]).reshape(shape)  # bf16 as a view equals the 16-bit shift exactly
    return QuantizedTensor(raw, qtype, shape)


def read_gguf(
    path: str | os.PathLike[str], architecture: str | None = "ltxv"
) -> tuple[dict[str, QuantizedTensor | torch.Tensor], dict[str, Any]]:
    """Read a GGUF file: (tensors by name, metadata).

    Torch shapes are the reversed ggml `ne`. Quantized tensors come back as QuantizedTensor
    (memory-mapped raw blocks, nothing dequantized); F32 / F16 / BF16 as plain tensors. With
    `architecture` given, `general.architecture` must match it ("ltxv" for the transformer).
    """
    path = Path(path)
    reader = _open_reader(path)
    if reader.byte_order != "I":
        raise CheckpointError(path, "a big-endian GGUF file", "a little-endian one, as all released files are")
    metadata = _metadata(reader)
    found = metadata.get("general.architecture")
    if architecture is not None and found != architecture:
        expected = f"{architecture!r}; this GGUF holds another model"
        raise CheckpointError(path, f"general.architecture is {found!r}", expected, GGUF_COMPONENTS.get(found))
    tensors = {}
    for tensor in reader.tensors:
        shape = torch.Size(int(n) for n in reversed(tensor.shape))  # ggml `ne` is innermost first
        tensors[tensor.name] = _to_torch(tensor, shape, path)
    return tensors, metadata
