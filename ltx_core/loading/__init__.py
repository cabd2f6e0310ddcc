"""Checkpoint reading, key renaming and module materialisation."""

from .gguf import QuantizedTensor, read_gguf
from .materialize import CheckpointMismatchError, materialize
from .quantized import QuantizedLinear, swap_linears

__all__ = [
    "CheckpointMismatchError",
    "QuantizedLinear",
    "QuantizedTensor",
    "materialize",
    "read_gguf",
    "swap_linears",
]
