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

from ..config import (
    TRANSFORMER_SHAPE_KEYS,
    TransformerConfig,
    detect_vae_layout,
    settings_from_metadata,
    shape_fields,
)
from ..model.transformer import LTXVideoTransformer
from .detect import (
    Detected,
    diffusers_component_dir,
    diffusers_weight_files,
    find_components,
    is_gguf,
    main_dtype,
    require_component,
)
from .errors import CheckpointError
from .gguf import QuantizedTensor, read_gguf
from .keymaps import TRANSFORMER_DIFFUSERS_SEGMENTS, rename_segments
from .materialize import CheckpointMismatchError, materialize
from .quantized import swap_linears
from .safetensors import SafetensorsHeader, checkpoint_config, load_tensors, read_header
from .vae import vae_release

HEADS = 32  # every released LTX-Video transformer has 32 heads; split files carry no config
COMPLETE = "the complete weights of one LTX-Video transformer (a damaged file? download it again)"
OFFICIAL = "the config of a released LTX-Video transformer"
logger = logging.getLogger(__name__)
_STORED_FP8 = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def transformer_release(cfg: TransformerConfig) -> str:
    size = "13B" if cfg.hidden_dim == 4096 else "2B" if cfg.hidden_dim == 2048 else f"{cfg.hidden_dim}-wide"
    positions = "0.9.5+ (causal RoPE)" if cfg.causal_temporal_positioning else "0.9.0/0.9.1 positions"
    return f"{size}, {positions}"


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
    """Config from shapes; the causal RoPE fix defaults to on for 13B (only 0.9.7+ exist), off for 2B."""
    is_13b = shapes.get("patchify_proj.weight", (0,))[0] == 4096
    return _config_of_tensors(path, shapes, is_13b if causal is None else causal)


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


def _vae_is_095_or_later(header: SafetensorsHeader, prefix: str) -> bool | None:
    """True if the file's VAE has the 0.9.5+ layout, whose transformer uses the causal RoPE fix."""
    try:
        layout = detect_vae_layout({k[len(prefix) :]: s for k, s in header.shapes.items() if k.startswith(prefix)})
    except ValueError:
        return None  # not a released layout: no opinion
    return vae_release(layout) == "0.9.5+"


def _renamer(prefix: str, naming: str) -> Callable[[str], str | None]:
    def rename(key: str) -> str | None:
        if not key.startswith(prefix):
            return None  # another component of the same file
        key = key[len(prefix) :]
        return rename_segments(key, TRANSFORMER_DIFFUSERS_SEGMENTS) if naming == "diffusers" else key

    return rename


Source = tuple[list[SafetensorsHeader], Callable[[str], str | None], Detected]  # files, key renamer, findings


def _from_safetensors(path: Path, causal: bool | None) -> Source:
    header = read_header(path)
    components = find_components(header.shapes)
    component = require_component(path, components, "transformer")
    rename = _renamer(component.prefix, component.naming)
    shapes = {name: s for k, s in header.shapes.items() if (name := rename(k)) is not None}
    metadata = checkpoint_config(header).get("transformer")
    if metadata:
        cfg = _config_with_metadata(path, shapes, metadata, causal)
    else:
        if causal is None and "vae" in components:  # the VAE sharing the file tells the release
            causal = _vae_is_095_or_later(header, components["vae"].prefix)
        cfg = _config_without_metadata(path, shapes, causal)
    fmt = "single file" if component.prefix else "split file"
    dtype = main_dtype(header, rename)
    return [header], rename, Detected(path, fmt, transformer_release(cfg), dtype, cfg)


def _from_diffusers(path: Path, causal: bool | None) -> Source:
    folder = diffusers_component_dir(path, "transformer", "LTXVideoTransformer3DModel")
    raw = json.loads((folder / "config.json").read_text())
    # diffusers does not record the causal RoPE fix; only 0.9.5+ releases have it, and all 13B ones do
    is_13b = int(raw.get("attention_head_dim", 64)) == 128
    cfg = TransformerConfig.from_diffusers(raw, causal_temporal_positioning=is_13b if causal is None else causal)
    headers = [read_header(f) for f in diffusers_weight_files(folder)]
    dtype = main_dtype(headers[0])
    return headers, _renamer("", "diffusers"), Detected(path, "diffusers folder", transformer_release(cfg), dtype, cfg)


def _load_gguf(
    path: Path, dtype: torch.dtype | None, device: torch.device | str | None, causal: bool | None
) -> tuple[LTXVideoTransformer, Detected]:
    """GGUF: linear weights stay quantized (dequantized per layer at use); the rest is cast to dtype."""
    tensors, _ = read_gguf(path, architecture="ltxv")
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    require_component(path, find_components(shapes), "transformer")
    cfg = _config_without_metadata(path, shapes, causal)
    kinds = Counter(v.qtype.name for v in tensors.values() if isinstance(v, QuantizedTensor))
    stored = "+".join(name for name, _ in kinds.most_common()) or "unquantized"
    with torch.device("meta"):
        model = LTXVideoTransformer(cfg)
    try:
        rest = swap_linears(model, tensors, device=device)
        materialize(model, rest, dtype=dtype, device=device, what="LTX-Video transformer", consume=True)
    except CheckpointMismatchError as exc:
        raise CheckpointError(path, exc.found, COMPLETE) from exc
    return model, Detected(path, "gguf", transformer_release(cfg), stored, cfg)


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
    stores the linear weights in fp8 and everything else in bf16, the compute dtype. For GGUF it is
    the dtype of the unquantized tensors; quantized weights are expanded to it at use.
    causal_temporal_positioning overrides what the checkpoint says (files without metadata cannot
    say it: 13B defaults to on, 2B to off).
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
    if dtype is None and detected.stored_dtype in _STORED_FP8:
        dtype = _STORED_FP8[detected.stored_dtype]  # fp8 linear weights stay fp8; the rest computes in bf16
    tensors = load_tensors(headers, rename, dtype=dtype)
    try:
        model = LTXVideoTransformer.from_state_dict(detected.config, tensors, device=device, consume=True)
    except CheckpointMismatchError as exc:
        tensors.clear()  # the traceback keeps frames alive; the weights must not stay with it
        raise CheckpointError(path, exc.found, COMPLETE) from exc
    return model, detected
