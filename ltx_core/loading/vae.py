"""load_vae(): any supported file or folder → a ready VideoVAE."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..config import VAEConfig, detect_vae_layout
from ..model.vae.autoencoder import VideoVAE
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
from .gguf import GGUF_COMPONENTS, read_gguf
from .keymaps import vae_from_diffusers, vae_state_dict
from .materialize import FP8_DTYPES, CheckpointMismatchError, mismatches
from .safetensors import SafetensorsHeader, checkpoint_config, load_tensors, read_header

OFFICIAL = "the config of an LTX-Video VAE"
AGREE = "a VAE whose weights and embedded config agree (a damaged or edited file? download it again)"
COMPLETE = "the complete weights of one LTX-Video VAE (a damaged file? download it again)"


def vae_release(cfg: VAEConfig) -> str:
    """0.9.0 (no timestep conditioning), 0.9.1 (conditioned decoder) or 0.9.5+ (residual encoder)."""
    if any(b.kind.endswith("_res") for b in cfg.encoder_blocks):
        return "0.9.5+"
    return "0.9.1" if cfg.timestep_conditioning else "0.9.0"


def _config_with_metadata(path: Path, metadata: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> VAEConfig:
    """The embedded config, checked against the tensor shapes before any tensor is read. Its block
    layout cannot be read off shapes alone (a block's kind and order leave no trace in key names),
    so a config that does not fit its tensors is an error, not something to repair."""
    try:
        cfg = VAEConfig.from_metadata(metadata)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(path, f"has an embedded VAE config that cannot be used ({exc})", OFFICIAL) from exc
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in VideoVAE(cfg).state_dict().items()}
    problems = mismatches(expected, vae_state_dict(shapes))
    if problems:
        found = f"has tensors that do not fit its embedded VAE config ({'; '.join(problems)})"
        raise CheckpointError(path, found, AGREE)
    return cfg


def _from_safetensors(path: Path) -> tuple[list[SafetensorsHeader], Callable[[str], str | None], Detected]:
    header = read_header(path)
    component = require_component(path, find_components(header.shapes), "vae")

    def keep(key: str) -> str | None:  # VideoVAE.from_state_dict strips the prefix itself
        return key if key.startswith(component.prefix) else None

    shapes = {k[len(component.prefix) :]: s for k, s in header.shapes.items() if keep(k)}
    metadata = checkpoint_config(header).get("vae")
    if metadata:
        cfg = _config_with_metadata(path, metadata, shapes)
    else:
        try:
            cfg = detect_vae_layout(shapes)
        except ValueError as exc:
            raise CheckpointError(path, str(exc), "a released LTX-Video VAE") from exc
    fmt = "single file" if component.prefix else "split file"
    return [header], keep, Detected(path, fmt, vae_release(cfg), main_dtype(header, keep), cfg)


def _from_diffusers(path: Path) -> tuple[list[SafetensorsHeader], Callable[[str], str | None], Detected]:
    folder = diffusers_component_dir(path, "vae", "AutoencoderKLLTXVideo")
    cfg = VAEConfig.from_diffusers(json.loads((folder / "config.json").read_text()))
    headers = [read_header(f) for f in diffusers_weight_files(folder)]
    encoder_kinds = [b.kind for b in cfg.encoder_blocks]
    decoder_kinds = [b.kind for b in cfg.decoder_blocks]
    keys = [k for h in headers for k in h.shapes]
    original = vae_from_diffusers(dict(zip(keys, keys, strict=True)), encoder_kinds, decoder_kinds)
    rename = {diffusers_key: original_key for original_key, diffusers_key in original.items()}.get
    return headers, rename, Detected(path, "diffusers folder", vae_release(cfg), main_dtype(headers[0]), cfg)


def _inspect(path: Path) -> tuple[list[SafetensorsHeader], Callable[[str], str | None], Detected]:
    if not path.exists():
        raise CheckpointError(path, "does not exist", "a checkpoint file or a diffusers folder")
    if path.is_dir():
        return _from_diffusers(path)
    if is_gguf(path):
        architecture = read_gguf(path, architecture=None)[1].get("general.architecture")
        found = f"is a GGUF file (general.architecture {architecture!r})"
        raise CheckpointError(path, found, "a safetensors VAE", GGUF_COMPONENTS.get(architecture))
    return _from_safetensors(path)


def inspect_vae(path: str | Path) -> Detected:
    """What the VAE file or folder at `path` holds (format, layout, stored dtype; `release` is the
    layout's: "0.9.0", "0.9.1" or "0.9.5+"), from headers and configs only: no weight is read."""
    return _inspect(Path(path))[2]


def load_vae(
    path: str | Path, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> tuple[VideoVAE, Detected]:
    """Load the LTX-Video VAE from an original single-file checkpoint (its `vae.` part), a ComfyUI
    VAE file or a diffusers folder, deciding by content; the layout comes from the embedded
    config, else from tensor shapes. dtype: bf16, fp16 or fp32 (default: as stored)."""
    path = Path(path)
    if dtype in FP8_DTYPES:
        raise ValueError(f"{dtype} storage is for the transformer; load the VAE in bfloat16, float16 or float32")
    headers, rename, detected = _inspect(path)
    tensors = load_tensors(headers, rename, dtype=dtype)
    try:
        vae = VideoVAE.from_state_dict(detected.config, tensors, device=device)
    except CheckpointMismatchError as exc:
        tensors.clear()  # the traceback keeps frames alive; the weights must not stay with it
        raise CheckpointError(path, exc.found, COMPLETE) from exc
    return vae, detected
