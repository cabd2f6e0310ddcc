"""load_latent_upsampler(): a released upsampler file or a diffusers folder → a ready LatentUpsampler.

Two formats: Lightricks' single safetensors file (`ltxv-spatial-upscaler-0.9.7.safetensors`,
`ltxv-temporal-upscaler-0.9.7.safetensors`, `ltxv-spatial-upscaler-0.9.8.safetensors`: the model's
keys with no prefix, its config as JSON in the `config` metadata entry) and diffusers'
`LTXLatentUpsamplerModel` folder (`latent_upsampler/config.json` + `diffusion_pytorch_model.safetensors`).
diffusers keeps the original key names, so no key map is needed (the tests load a folder written by
diffusers' `save_pretrained` strictly). Every field a config states must fit the tensors; a field it
leaves out is read off them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..model.upsampler import LatentUpsampler, LatentUpsamplerConfig, config_from_shapes
from .detect import (
    COMPONENT_NAMES,
    Detected,
    describe_components,
    diffusers_component_dir,
    diffusers_weight_files,
    find_components,
    main_dtype,
)
from .errors import CheckpointError
from .materialize import FP8_DTYPES, CheckpointMismatchError, mismatches
from .safetensors import SafetensorsHeader, checkpoint_config, load_tensors, read_header

EXPECTED = "an LTX-Video latent upsampler such as ltxv-spatial-upscaler-0.9.7.safetensors"
COMPLETE = "the complete weights of one LTX-Video latent upsampler (a damaged file? download it again)"
AGREE = "an upsampler whose weights and config agree (a damaged or edited file? download it again)"
SPATIAL = (
    "a spatial latent upsampler such as ltxv-spatial-upscaler-0.9.8.safetensors (the multi-scale pipeline "
    "doubles height and width between its passes)"
)
SENTINELS = ("initial_conv.weight", "final_conv.weight")  # present in every upsampler, whatever its kind
# Class names a config may carry: the official LatentUpsampler and diffusers' LTXLatentUpsamplerModel.
CLASS_NAMES = ("LatentUpsampler", "LTXLatentUpsamplerModel")


def _require_upsampler(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """A CheckpointError naming what the file holds when it is not an upsampler (advice: its loader)."""
    if all(key in shapes for key in SENTINELS):
        if "upsampler.conv.weight" in shapes:  # LTX-2's rational resampler (×1.5) keeps its conv there
            raise CheckpointError(path, "is an LTX-2 latent upsampler (a rational resampler)", EXPECTED)
        return
    components = find_components(shapes)
    belongs = next((c for c in COMPONENT_NAMES if c in components), None)
    raise CheckpointError(path, f"contains {describe_components(components)}", EXPECTED, belongs)


def _config(path: Path, shapes: Mapping[str, tuple[int, ...]], stated: Mapping[str, Any]) -> LatentUpsamplerConfig:
    """The tensors' config with the stated fields put in, checked against the tensors before any is read."""
    class_name = stated.get("_class_name")
    if class_name is not None and class_name not in CLASS_NAMES:
        raise CheckpointError(
            path, f"has a config for {class_name!r}", f"{EXPECTED} (config {' or '.join(CLASS_NAMES)})"
        )
    try:
        cfg = replace(config_from_shapes(shapes), **LatentUpsamplerConfig.stated_fields(stated))
    except KeyError as exc:
        raise CheckpointError(path, f"lacks the tensor {exc}", COMPLETE) from exc
    except ValueError as exc:
        raise CheckpointError(path, f"has an upsampler this code cannot run ({exc})", EXPECTED) from exc
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in LatentUpsampler(cfg).state_dict().items()}
    problems = mismatches(expected, shapes)
    if problems:
        raise CheckpointError(path, f"has tensors that do not fit its config ({'; '.join(problems)})", AGREE)
    return cfg


def _from_safetensors(path: Path) -> tuple[list[SafetensorsHeader], Detected]:
    header = read_header(path)
    _require_upsampler(path, header.shapes)
    cfg = _config(path, header.shapes, checkpoint_config(header))
    return [header], Detected(path, "single file", cfg.kind, main_dtype(header), cfg)


def _from_diffusers(path: Path) -> tuple[list[SafetensorsHeader], Detected]:
    folder = diffusers_component_dir(path, "latent_upsampler", "LTXLatentUpsamplerModel")
    headers = [read_header(f) for f in diffusers_weight_files(folder)]
    shapes = {k: s for h in headers for k, s in h.shapes.items()}
    _require_upsampler(folder, shapes)
    cfg = _config(folder, shapes, json.loads((folder / "config.json").read_text()))
    return headers, Detected(path, "diffusers folder", cfg.kind, main_dtype(headers[0]), cfg)


def _inspect(path: Path) -> tuple[list[SafetensorsHeader], Detected]:
    if not path.exists():
        raise CheckpointError(path, "does not exist", "an upsampler file or a diffusers folder")
    return _from_diffusers(path) if path.is_dir() else _from_safetensors(path)


def inspect_latent_upsampler(path: str | Path) -> Detected:
    """What `load_latent_upsampler` would load from `path`, from its header or config alone (no weights
    are read): its format, kind (`Detected.release`: "spatial ×2", …) and config. CheckpointError for a
    file that is no upsampler (advice: where it belongs) or whose config and tensors disagree."""
    return _inspect(Path(path))[1]


def require_spatial(detected: Detected) -> None:
    """A CheckpointError unless `detected` is a spatial ×2 upsampler, the kind the multi-scale pipeline
    runs between its passes."""
    cfg = detected.config
    if (cfg.spatial_upsample, cfg.temporal_upsample) != (True, False):
        raise CheckpointError(detected.path, f"is a {cfg.kind} latent upsampler", SPATIAL)


def load_latent_upsampler(
    path: str | Path, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> tuple[LatentUpsampler, Detected]:
    """Load a 0.9.7+ latent upsampler (spatial or temporal ×2) from a released single file or a
    diffusers folder (the folder itself or one holding `latent_upsampler/`), deciding by content.
    dtype: bf16, fp16 or fp32 (default: as stored). `Detected.release` names the kind."""
    path = Path(path)
    if dtype in FP8_DTYPES:
        raise ValueError(f"{dtype} storage is for the transformer; load the upsampler in bfloat16, float16 or float32")
    headers, detected = _inspect(path)
    tensors = load_tensors(headers, lambda key: key, dtype=dtype)
    try:
        model = LatentUpsampler.from_state_dict(detected.config, tensors, device=device)
    except CheckpointMismatchError as exc:  # a diffusers shard set with extra or missing tensors
        tensors.clear()  # the traceback keeps frames alive; the weights must not stay with it
        raise CheckpointError(path, exc.found, COMPLETE) from exc
    return model, detected
