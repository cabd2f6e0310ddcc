"""load_transformer(): any supported file or folder → a ready LTXVideoTransformer."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..config import TRANSFORMER_SHAPE_KEYS, TransformerConfig, settings_from_metadata, shape_fields
from ..model.transformer import LTXVideoTransformer
from .detect import (
    Detected,
    ReleaseHints,
    diffusers_component_dir,
    diffusers_weight_files,
    find_components,
    hints_from_config,
    hints_from_diffusers,
    is_gguf,
    main_dtype,
    model_size,
    require_component,
)
from .errors import CheckpointError
from .gguf import QuantizedTensor, read_gguf
from .keymaps import TRANSFORMER_DIFFUSERS_SEGMENTS, rename_segments
from .materialize import FP8_COMPUTE_DTYPE, FP8_DTYPES, CheckpointMismatchError, cast, materialize, storage_dtype
from .quantized import swap_fp8_linears, swap_linears
from .safetensors import SafetensorsHeader, checkpoint_config, load_tensors, read_header

HEADS = 32  # every released LTX-Video transformer has 32 heads; split files carry no config
COMPLETE = "the complete weights of one LTX-Video transformer (a damaged file? download it again)"
OFFICIAL = "the config of a released LTX-Video transformer"
logger = logging.getLogger(__name__)
_STORED_FP8 = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
# ComfyUI's scaled fp8 (comfy/ops.py scaled_fp8_ops): a `scaled_fp8` marker tensor next to the weights,
# each fp8 weight's per-tensor scale as `<layer>.scale_weight` (weight = values × scale), and for its
# fp8 matmuls `<layer>.scale_input`.
SCALED_FP8_MARKER = "scaled_fp8"
SCALE_SUFFIX = ".scale_weight"
SCALE_INPUT_SUFFIX = ".scale_input"


def config_from_shapes(shapes: Mapping[str, tuple[int, ...]], *, causal: bool, heads: int = HEADS) -> TransformerConfig:
    """The shape fields of an original-key transformer read off its tensors, as ComfyUI core reads
    them (blocks counted, widths from patchify_proj, caption_projection and attn2.to_k). No tensor
    records the number of heads (the q/k norms span all of them): `heads` is assumed."""
    blocks = {int(k.split(".")[1]) for k in shapes if k.startswith("transformer_blocks.")}
    dim, in_channels = shapes["patchify_proj.weight"]
    return TransformerConfig(
        num_layers=max(blocks) + 1 if blocks else 0,
        num_heads=heads,
        head_dim=dim // heads,
        in_channels=in_channels,
        out_channels=shapes["proj_out.weight"][0],
        caption_channels=shapes["caption_projection.linear_1.weight"][1],
        cross_attention_dim=shapes["transformer_blocks.0.attn2.to_k.weight"][1] if blocks else dim,
        causal_temporal_positioning=causal,
    )


def _config_of_tensors(
    path: Path, shapes: Mapping[str, tuple[int, ...]], causal: bool, heads: int = HEADS
) -> TransformerConfig:
    try:
        return config_from_shapes(shapes, causal=causal, heads=heads)
    except KeyError as exc:
        raise CheckpointError(path, f"lacks the tensor {exc}", "a complete LTX-Video transformer") from exc
    except ValueError as exc:  # widths no transformer config can have
        raise CheckpointError(path, f"has tensor shapes that do not fit together ({exc})", COMPLETE) from exc


def _config_without_metadata(
    path: Path, shapes: Mapping[str, tuple[int, ...]], causal: bool | None
) -> TransformerConfig:
    """Config from shapes. Nothing in such a file says whether the release uses the causal RoPE fix
    (0.9.5+): `causal` None leaves it off, as TransformerConfig does; release-aware callers pass the
    release's value (loading/release.py decides it with the VAE, or the user names the release)."""
    return _config_of_tensors(path, shapes, bool(causal))


def _heads(dim: int, metadata: Mapping[str, Any]) -> int:
    """The embedded config's head count when it splits the width `dim` into even head widths, else
    the one its head width gives, else 32 as in every release (and in ComfyUI core)."""
    heads = int(metadata.get("num_attention_heads") or 0)
    head_dim = int(metadata.get("attention_head_dim") or 0)
    if heads > 0 and dim % heads == 0 and dim // heads % 2 == 0:
        return heads
    if head_dim > 0 and head_dim % 2 == 0 and dim % head_dim == 0:
        return dim // head_dim
    return HEADS


def _config_with_metadata(
    path: Path, shapes: Mapping[str, tuple[int, ...]], metadata: Mapping[str, Any], causal: bool | None
) -> TransformerConfig:
    """Shapes from the tensors, the settings no shape records (RoPE, timestep multiplier, causal RoPE
    fix) from the embedded config. Files whose config misses or contradicts a shape exist (ComfyUI
    core loads them: it counts layers and widths off the tensors); the tensors are what gets loaded,
    so they win, and each disagreement is logged."""
    try:
        settings = settings_from_metadata(metadata)
        stated = shape_fields(metadata)
        heads = _heads(shapes.get("patchify_proj.weight", (0,))[0], metadata)
    except (TypeError, ValueError) as exc:  # a value of the wrong type, or a setting this code does not run
        raise CheckpointError(path, f"has an embedded config it cannot run ({exc})", OFFICIAL) from exc
    cfg = replace(_config_of_tensors(path, shapes, False, heads), **settings)
    disagree = [
        f"{key} {getattr(cfg, field)} (config: {stated[field]}{'' if key in metadata else ', by default'})"
        for field, key in TRANSFORMER_SHAPE_KEYS.items()
        if getattr(cfg, field) != stated[field]
    ]
    if disagree:
        logger.warning(
            "%s: its embedded transformer config disagrees with its tensors; using the tensors' %s",
            path.name,
            ", ".join(disagree),
        )
    return cfg if causal is None else replace(cfg, causal_temporal_positioning=causal)


def _renamer(prefix: str, naming: str) -> Callable[[str], str | None]:
    def rename(key: str) -> str | None:
        if not key.startswith(prefix):
            return None  # another component of the same file
        key = key[len(prefix) :]
        if key == SCALED_FP8_MARKER or key.endswith(SCALE_INPUT_SUFFIX):
            return None  # ComfyUI's scaled-fp8 marker, and input scales for its fp8 matmuls: not weights
        return rename_segments(key, TRANSFORMER_DIFFUSERS_SEGMENTS) if naming == "diffusers" else key

    return rename


Source = tuple[list[SafetensorsHeader], Callable[[str], str | None], Detected]  # files, key renamer, findings


def _from_safetensors(path: Path, causal: bool | None) -> Source:
    header = read_header(path)
    component = require_component(path, find_components(header.shapes), "transformer")
    rename = _renamer(component.prefix, component.naming)
    names = {k: name for k in header.shapes if (name := rename(k)) is not None}
    _refuse_int8(path, header, names)
    shapes = {name: header.shapes[k] for k, name in names.items() if not name.endswith(SCALE_SUFFIX)}
    config = checkpoint_config(header)
    if config.get("transformer"):
        cfg = _config_with_metadata(path, shapes, config["transformer"], causal)
    else:
        cfg = _config_without_metadata(path, shapes, causal)
    fmt = "single file" if component.prefix else "split file"
    dtype = main_dtype(header, lambda k: k in names and not names[k].endswith(SCALE_SUFFIX))
    if any(name.endswith(SCALE_SUFFIX) for name in names.values()):
        dtype += " scaled"
    hints = hints_from_config(config, cfg.hidden_dim, cfg.num_layers)
    return [header], rename, Detected(path, fmt, hints.describe(), dtype, cfg, hints)


def _refuse_int8(path: Path, header: SafetensorsHeader, names: Mapping[str, str]) -> None:
    """Lightricks' q8-kernels (and the LTX-VideoQ8 files made with them) store int8 weights with a
    per-channel `scales` vector, rotated by a Hadamard transform that only their CUDA kernels undo."""
    int8 = [name for k, name in names.items() if header.dtypes[k] == "I8" or name.endswith(".scales")]
    if int8:
        raise CheckpointError(
            path,
            f"holds int8 weights with per-channel scales ({int8[0]}, … {len(int8)} tensors): the layout of "
            "Lightricks' q8-kernels (LTX-VideoQ8), which only its CUDA kernels compute with",
            "an LTX-Video transformer in bf16, fp16, fp32 or fp8 (as Lightricks' *-fp8.safetensors or "
            "ComfyUI's scaled fp8 files); use the bf16 or fp8 file of the same release",
        )


def _from_diffusers(path: Path, causal: bool | None) -> Source:
    folder = diffusers_component_dir(path, "transformer", "LTXVideoTransformer3DModel")
    raw = json.loads((folder / "config.json").read_text())
    shape = shape_fields(raw)
    hints = hints_from_diffusers(path, shape["num_heads"] * shape["head_dim"], shape["num_layers"])
    chosen = hints.causal if causal is None else causal  # diffusers' config.json does not record the fix
    cfg = TransformerConfig.from_diffusers(raw, causal_temporal_positioning=bool(chosen))
    headers = [read_header(f) for f in diffusers_weight_files(folder)]
    dtype = main_dtype(headers[0])
    return headers, _renamer("", "diffusers"), Detected(path, "diffusers folder", hints.describe(), dtype, cfg, hints)


def _load_gguf(
    path: Path, dtype: torch.dtype | None, device: torch.device | str | None, causal: bool | None
) -> tuple[LTXVideoTransformer, Detected]:
    """GGUF: linear weights stay quantized (dequantized per layer at use); the rest is cast to dtype."""
    tensors, detected = _inspect_gguf(path, causal)
    cfg = detected.config
    with torch.device("meta"):
        model = LTXVideoTransformer(cfg)
    try:
        rest = swap_linears(model, tensors, device=device)
        materialize(model, rest, dtype=dtype, device=device, what="LTX-Video transformer", consume=True)
    except CheckpointMismatchError as exc:
        raise CheckpointError(path, exc.found, COMPLETE) from exc
    return model, detected


def _inspect_gguf(path: Path, causal: bool | None) -> tuple[dict[str, Any], Detected]:
    """The tensors of a GGUF file (memory-mapped: nothing is read yet) and what it holds. GGUF files
    carry no LTX-Video config, so they say nothing of their release."""
    tensors, _ = read_gguf(path, architecture="ltxv")
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    require_component(path, find_components(shapes), "transformer")
    cfg = _config_without_metadata(path, shapes, causal)
    kinds = Counter(v.qtype.name for v in tensors.values() if isinstance(v, QuantizedTensor))
    stored = "+".join(name for name, _ in kinds.most_common()) or "unquantized"
    hints = ReleaseHints(model_size(cfg.hidden_dim, cfg.num_layers), None, None, None, None, "")
    return tensors, Detected(path, "gguf", hints.describe(), stored, cfg, hints)


def inspect_transformer(path: str | Path) -> Detected:
    """What the transformer file or folder at `path` holds (format, config, stored dtype and its
    release hints), from headers and configs only: no weight is read."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "does not exist", "a checkpoint file or a diffusers folder")
    if path.is_dir():
        return _from_diffusers(path, None)[2]
    if is_gguf(path):
        return _inspect_gguf(path, None)[1]
    return _from_safetensors(path, None)[2]


def load_transformer(
    path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    causal_temporal_positioning: bool | None = None,
) -> tuple[LTXVideoTransformer, Detected]:
    """Load the LTX-Video transformer from an original single-file checkpoint, a ComfyUI split
    (diffusion_models) file, a diffusers folder or a GGUF file, deciding by content.

    dtype: storage and compute dtype of the weights (default: as stored). float8_e4m3fn (or e5m2)
    stores the linear weights in fp8 and everything else in bf16, the compute dtype. An fp8 file
    (Lightricks' *-fp8 files: fp8 block weights, the rest bf16; ComfyUI's scaled fp8: fp8 weights
    times a per-tensor `scale_weight`) keeps its fp8 weights as stored by default. For GGUF it is the
    dtype of the unquantized tensors; quantized weights are expanded to it at use.
    causal_temporal_positioning: the release's causal RoPE fix, over what the file says; files
    without an embedded config (GGUF, split files, most diffusers folders) do not say it and get it
    off unless given. `loading.release.detect_release` decides it for a release.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "does not exist", "a checkpoint file or a diffusers folder")
    if path.is_dir():
        headers, rename, detected = _from_diffusers(path, causal_temporal_positioning)
    elif is_gguf(path):
        return _load_gguf(path, dtype, device, causal_temporal_positioning)
    else:
        headers, rename, detected = _from_safetensors(path, causal_temporal_positioning)
    stored = detected.stored_dtype.removesuffix(" scaled")
    keep_fp8 = (dtype is None and stored in _STORED_FP8) or dtype in FP8_DTYPES
    tensors = load_tensors(headers, rename, dtype=_storage_rule(dtype, keep_fp8))
    # a scale without its weight stays among the tensors, for the mismatch error to name
    scale_keys = [
        k for k in tensors if k.endswith(SCALE_SUFFIX) and k.removesuffix(SCALE_SUFFIX) + ".weight" in tensors
    ]
    scales = {k.removesuffix(SCALE_SUFFIX) + ".weight": tensors.pop(k) for k in scale_keys}
    try:
        if not scales:
            model = LTXVideoTransformer.from_state_dict(detected.config, tensors, device=device, consume=True)
        else:
            model = _with_scaled_fp8(detected.config, tensors, scales, dtype, keep_fp8, device)
    except CheckpointMismatchError as exc:
        tensors.clear()  # the traceback keeps frames alive; the weights must not stay with it
        raise CheckpointError(path, exc.found, COMPLETE) from exc
    return model, detected


def _storage_rule(dtype: torch.dtype | None, keep_fp8: bool) -> Callable[[str, torch.Tensor], torch.dtype]:
    """The dtype each tensor is read into: fp8 scales as stored (float32); with `keep_fp8`, fp8 weights
    as stored and, by default, everything else in bf16, the compute dtype (so an fp8 file's wider
    layers stay as wide as the file has them); otherwise as `dtype` asks (None: as stored)."""

    def rule(key: str, tensor: torch.Tensor) -> torch.dtype:
        if key.endswith(SCALE_SUFFIX) or (keep_fp8 and tensor.dtype in FP8_DTYPES):
            return tensor.dtype
        if dtype is None:
            return FP8_COMPUTE_DTYPE if keep_fp8 else tensor.dtype
        return storage_dtype(dtype, key, tensor)

    return rule


def _with_scaled_fp8(
    cfg: TransformerConfig,
    tensors: dict[str, torch.Tensor],
    scales: dict[str, torch.Tensor],
    dtype: torch.dtype | None,
    keep_fp8: bool,
    device: torch.device | str | None,
) -> LTXVideoTransformer:
    """ComfyUI's scaled fp8: a weight is its fp8 values × its `scale_weight`. Kept in fp8, each such
    linear layer expands values × scale per call (Fp8WeightLinear); otherwise, and for a scaled weight
    that is not fp8, the product is taken once here, in float32."""
    target = dtype if dtype is not None and dtype not in FP8_DTYPES else FP8_COMPUTE_DTYPE
    for key in [k for k in scales if not keep_fp8 or tensors[k].element_size() != 1]:
        tensors[key] = cast(tensors[key].float() * scales.pop(key).float(), target)
    with torch.device("meta"):
        model = LTXVideoTransformer(cfg)
    rest = swap_fp8_linears(model, tensors, scales, device)
    tensors.clear()
    return materialize(model, rest, device=device, what="LTX-Video transformer", consume=True)
