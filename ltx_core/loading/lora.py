"""LoRA files for the LTX-Video transformer, recognised by their keys (never by their file name).

Two families of keys are in use (see `keymaps.LORA_*`): diffusers / PEFT files, written by diffusers'
`save_lora_weights` (`transformer.<module>.lora_A.weight` / `.lora_B.weight`, the scale in the
PEFT config that diffusers stores in the file's metadata), and ComfyUI's original-key files, as
Lightricks publishes its `-comfyui` LoRAs (`diffusion_model.<module>.lora_down.weight` /
`.lora_up.weight` with an optional `.alpha` each); either naming may use either module names. A
module's update is ΔW = scale · up · down with scale = alpha / rank (alpha / √rank for rsLoRA), and 1
where no alpha is given, as ComfyUI and diffusers both compute it. Which of the model's layers a
module is, and whether the shapes fit, is decided when the LoRA is applied (`ltx_core.lora`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError
from .keymaps import LORA_ALPHA, LORA_FACTORS, LORA_PEFT_METADATA, LORA_UNSUPPORTED, split_lora_key
from .safetensors import SafetensorsHeader, load_tensors, read_header

EXPECTED = (
    "a LoRA for the LTX-Video transformer: `<module>.lora_A.weight` / `.lora_B.weight` pairs (diffusers, "
    "PEFT) or `<module>.lora_down.weight` / `.lora_up.weight` pairs with an optional `.alpha` (ComfyUI)"
)
_LISTED = 3  # keys an error message names


@dataclass(frozen=True)
class LoraModule:
    """The update of one module: ΔW = scale · up · down, with down (rank, in) and up (out, rank)."""

    down: torch.Tensor
    up: torch.Tensor
    scale: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]


@dataclass(frozen=True)
class LoRA:
    """A LoRA as read: its modules by name (as the file names them, prefix stripped), where it came
    from (`path`, None for a state dict) and which key family it uses (`format`)."""

    name: str
    path: Path | None
    format: str
    modules: dict[str, LoraModule]

    def error(self, found: str, expected: str = EXPECTED) -> CheckpointError:
        """A CheckpointError about this LoRA, naming its file."""
        return CheckpointError(self.path if self.path is not None else Path(self.name), found, expected)


def load_lora(source: str | Path | Mapping[str, torch.Tensor], name: str | None = None) -> LoRA:
    """Read a LoRA from a safetensors file or a state dict (e.g. diffusers' `lora_state_dict`).
    Raises CheckpointError, naming the file, for anything that is not such a LoRA."""
    if isinstance(source, Mapping):
        return lora_from_state_dict(dict(source), name=name or "LoRA state dict")
    path = Path(source)
    header = check_lora_file(path)  # before any tensor is read
    tensors = load_tensors([header], lambda key: key)
    return lora_from_state_dict(tensors, header.metadata, name=name or path.name, path=path)


def check_lora_file(path: str | Path) -> SafetensorsHeader:
    """The header of the LoRA file at `path`, checked to hold a LoRA by its keys alone (no tensor is
    read). Raises CheckpointError, naming the file, for a missing file or one that is no such LoRA."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "does not exist", "a LoRA file (.safetensors)")
    header = read_header(path)
    _check_keys(path, list(header.shapes))
    return header


def lora_from_state_dict(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    *,
    name: str = "LoRA state dict",
    path: Path | None = None,
) -> LoRA:
    """The LoRA in `tensors` (+ a safetensors file's `metadata`, where diffusers keeps the PEFT config)."""
    where = path if path is not None else Path(name)
    _check_keys(where, list(tensors))
    factors: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    suffixes = set()
    for key, tensor in tensors.items():
        module, suffix = split_lora_key(key)
        if suffix == LORA_ALPHA:
            alphas[module] = float(tensor.float().item())
        else:
            factors.setdefault(module, {})[LORA_FACTORS[suffix]] = tensor
            suffixes.add(suffix)
    config = _peft_config(where, metadata or {})
    modules = {}
    for module, pair in factors.items():
        if set(pair) != {"down", "up"} or pair["down"].ndim != 2 or pair["up"].ndim != 2:
            shapes = {k: tuple(v.shape) for k, v in pair.items()}
            raise CheckpointError(where, f"has an incomplete LoRA pair for {module} ({shapes})", EXPECTED)
        down, up = pair["down"], pair["up"]
        if up.shape[1] != down.shape[0]:
            found = f"has LoRA factors of different ranks for {module}: {tuple(down.shape)} and {tuple(up.shape)}"
            raise CheckpointError(where, found, EXPECTED)
        modules[module] = LoraModule(down, up, _scale(module, down.shape[0], alphas.get(module), config))
    orphans = sorted(set(alphas) - set(factors))
    if orphans:
        raise CheckpointError(where, f"has an alpha without factors for {', '.join(orphans[:_LISTED])}", EXPECTED)
    family = "diffusers/PEFT (lora_A, lora_B)" if ".lora_A.weight" in suffixes else "ComfyUI (lora_down, lora_up)"
    return LoRA(name, path, family, modules)


def _check_keys(path: Path, keys: list[str]) -> None:
    """Refuse a file that holds no LoRA, or keys of a LoRA kind this loader does not compute."""
    unsupported = {kind for key in keys for suffix, kind in LORA_UNSUPPORTED.items() if key.endswith(suffix)}
    if unsupported:
        found = f"holds {' and '.join(sorted(unsupported))} weights, which this loader does not apply"
        raise CheckpointError(path, found, EXPECTED)
    unknown = [key for key in keys if split_lora_key(key) is None]
    if len(unknown) == len(keys):
        listed = ", ".join(keys[:_LISTED]) or "no tensors"
        raise CheckpointError(
            path, f"is not a LoRA (its keys: {listed}{', …' if len(keys) > _LISTED else ''})", EXPECTED
        )
    if unknown:
        listed = ", ".join(unknown[:_LISTED]) + (f", … ({len(unknown)} in all)" if len(unknown) > _LISTED else "")
        raise CheckpointError(path, f"has keys that are no LoRA factor or alpha ({listed})", EXPECTED)


def _peft_config(where: Path, metadata: Mapping[str, str]) -> dict:
    """The PEFT LoraConfig diffusers stores in the metadata (keys prefixed with the component, e.g.
    `transformer.lora_alpha`), without the prefix; {} when absent."""
    raw = metadata.get(LORA_PEFT_METADATA)
    if raw is None:
        return {}
    try:
        packed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(where, f"has unreadable {LORA_PEFT_METADATA} ({exc})", "valid JSON") from exc
    config = {key.split(".", 1)[1] if key.startswith("transformer.") else key: v for key, v in packed.items()}
    if config.get("use_dora"):
        raise CheckpointError(
            where, "is a DoRA (use_dora in its PEFT config), which this loader does not apply", EXPECTED
        )
    return config


def _scale(module: str, rank: int, alpha: float | None, config: Mapping) -> float:
    """alpha / rank (PEFT's rsLoRA: alpha / √rank): the file's `.alpha`, else the PEFT config's alpha for
    this module (its `alpha_pattern` entry matching the module name's end, as PEFT matches them, else
    `lora_alpha`), else no scaling."""
    if alpha is None and config:
        patterns = config.get("alpha_pattern") or {}
        key = next((k for k in patterns if re.fullmatch(rf"(.*\.)?({k})", module)), None)
        alpha = patterns[key] if key is not None else config.get("lora_alpha")
    if alpha is None:
        return 1.0
    return float(alpha) / (math.sqrt(rank) if config.get("use_rslora") else rank)
