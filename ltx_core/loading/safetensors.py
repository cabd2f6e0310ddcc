"""safetensors files: header inspection without reading tensors, and tensor-by-tensor loading."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import CheckpointError
from .materialize import DtypeChoice, cast, storage_dtype

_MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_SUPPORTED = "one of " + ", ".join(_DTYPES)


@dataclass(frozen=True)
class SafetensorsHeader:
    """What a safetensors file says about itself: tensor shapes and dtypes, and its metadata."""

    path: Path
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    offsets: dict[str, tuple[int, int]]  # absolute byte range of each tensor in the file
    metadata: dict[str, str] = field(default_factory=dict)


def read_header(path: str | Path) -> SafetensorsHeader:
    """Parse the JSON header of a safetensors file, checking that the data it describes is there."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(path, f"is {size} bytes long, too short for a safetensors file", "a complete file")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_HEADER_BYTES, size - 8):
            found = "has no valid safetensors header (truncated, or not a safetensors file)"
            raise CheckpointError(path, found, "a complete safetensors file")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(path, f"has a corrupted safetensors header ({exc})", "a complete file") from exc
    metadata = header.pop("__metadata__", None) or {}
    data_size = size - 8 - header_len
    end = max((info["data_offsets"][1] for info in header.values()), default=0)
    if end > data_size:
        raise CheckpointError(
            path,
            f"is truncated: its header describes {end} bytes of tensors but only {data_size} are present",
            "a complete file; download it again",
        )
    start = 8 + header_len
    return SafetensorsHeader(
        path=path,
        shapes={k: tuple(v["shape"]) for k, v in header.items()},
        dtypes={k: v["dtype"] for k, v in header.items()},
        offsets={k: (start + v["data_offsets"][0], start + v["data_offsets"][1]) for k, v in header.items()},
        metadata=dict(metadata),
    )


def checkpoint_config(header: SafetensorsHeader) -> dict:
    """The embedded `config` JSON of an original LTX-Video checkpoint ({} when absent)."""
    raw = header.metadata.get("config")
    if raw is None:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(header.path, f"has an unreadable embedded config ({exc})", "valid JSON") from exc
    return config if isinstance(config, dict) else {}


def load_tensors(
    headers: Iterable[SafetensorsHeader],
    rename: Callable[[str], str | None],
    *,
    dtype: DtypeChoice = None,
) -> dict[str, torch.Tensor]:
    """Read tensors one at a time, renamed by `rename` (None = skip), floats cast as read (see
    `materialize.storage_dtype` for what `dtype` may be).

    Plain reads, no memory map. A tensor that keeps its dtype is read straight into its own
    buffer; one that is cast goes through a single reused scratch buffer. So loading holds one copy
    of the weights plus at most one tensor in its stored dtype.
    """
    tensors: dict[str, torch.Tensor] = {}
    scratch = torch.empty(0, dtype=torch.uint8)
    for header in headers:
        with header.path.open("rb") as f:
            for key, (begin, end) in header.offsets.items():
                name = rename(key)
                if name is None:
                    continue
                stored = _DTYPES.get(header.dtypes[key])
                if stored is None:
                    raise CheckpointError(header.path, f"stores {key} as {header.dtypes[key]}", _SUPPORTED)
                target = storage_dtype(dtype, name, torch.empty(header.shapes[key], dtype=stored, device="meta"))
                if target != stored and scratch.numel() < end - begin:
                    scratch = torch.empty(end - begin, dtype=torch.uint8)
                raw = scratch[: end - begin] if target != stored else torch.empty(end - begin, dtype=torch.uint8)
                f.seek(begin)
                if f.readinto(memoryview(raw.numpy())) != end - begin:
                    raise CheckpointError(header.path, f"ends inside tensor {key}", "a complete file")
                tensors[name] = cast(raw.view(stored).reshape(header.shapes[key]), target)
    return tensors
