"""What is in a checkpoint? Decided by content (magic bytes, keys, shapes, metadata), never by name."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .safetensors import SafetensorsHeader

# Sentinel key (after any prefix) → (component, key naming). One entry per layout we can load.
SENTINELS: dict[str, tuple[str, str]] = {
    "adaln_single.emb.timestep_embedder.linear_1.weight": ("transformer", "original"),
    "time_embed.emb.timestep_embedder.linear_1.weight": ("transformer", "diffusers"),
    "decoder.conv_in.conv.weight": ("vae", "original"),
    "encoder.block.0.layer.0.SelfAttention.q.weight": ("text_encoder", "t5"),
}

# Prefixes under which single-file checkpoints store each component.
PREFIXES: dict[str, str] = {
    "model.diffusion_model.": "transformer",
    "vae.": "vae",
    "text_encoders.t5xxl.transformer.": "text_encoder",
}

COMPONENT_NAMES = {
    "transformer": "an LTX-Video transformer",
    "vae": "an LTX-Video VAE",
    "text_encoder": "a T5 text encoder",
}

EXAMPLES = {  # released files of each kind, for errors about files that hold none of them
    "transformer": "ltx-video-2b-v0.9.1.safetensors",
    "vae": "the VAE of ltx-video-2b-v0.9.1.safetensors",
    "text_encoder": "t5xxl_fp16.safetensors (T5 v1.1 XXL)",
}


@dataclass(frozen=True)
class Detected:
    """What a loader found: the file's format, the model release and how its weights were stored."""

    path: Path
    format: str  # "single file", "split file", "diffusers folder", "gguf"
    release: str
    stored_dtype: str  # as the file names it: "BF16", "F8_E4M3", "Q8_0", …
    config: Any  # the component's config dataclass


@dataclass(frozen=True)
class Component:
    """Where one component lives inside a set of keys."""

    name: str  # "transformer", "vae" or "text_encoder"
    prefix: str  # stripped from every key of this component ("" for split files)
    naming: str  # "original", "diffusers" or "t5"


def find_components(keys: Iterable[str]) -> dict[str, Component]:
    """Every component whose sentinel key is present, with the prefix it sits under."""
    found: dict[str, Component] = {}
    for key in keys:
        for prefix in (*PREFIXES, ""):
            if key.startswith(prefix) and key[len(prefix) :] in SENTINELS:
                name, naming = SENTINELS[key[len(prefix) :]]
                found.setdefault(name, Component(name, prefix, naming))
    return found


def is_gguf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"GGUF"


def describe_components(components: Mapping[str, Component]) -> str:
    if not components:
        return "no known model (none of the LTX-Video transformer, VAE or T5 key layouts)"
    return " and ".join(COMPONENT_NAMES[c] for c in components)


def require_component(path: Path, components: Mapping[str, Component], wanted: str) -> Component:
    """The wanted component, or a CheckpointError saying what the file holds instead; its advice names
    where the file belongs (the first of transformer, VAE, text encoder that it holds)."""
    if wanted in components:
        return components[wanted]
    belongs = next((c for c in COMPONENT_NAMES if c in components), None)
    expected = COMPONENT_NAMES[wanted] if belongs else f"{COMPONENT_NAMES[wanted]} such as {EXAMPLES[wanted]}"
    raise CheckpointError(path, f"contains {describe_components(components)}", expected, belongs)


def diffusers_component_dir(path: Path, subfolder: str, class_name: str) -> Path:
    """The folder holding `config.json` of a diffusers component: `path/subfolder` or `path` itself."""
    for candidate in (path / subfolder, path):
        config = candidate / "config.json"
        if config.is_file():
            try:
                found = json.loads(config.read_text()).get("_class_name")
            except json.JSONDecodeError as exc:
                raise CheckpointError(config, f"is not valid JSON ({exc})", "a diffusers config.json") from exc
            if found == class_name:
                return candidate
    raise CheckpointError(
        path,
        f"is a folder without a diffusers {class_name} (no {subfolder}/config.json naming it)",
        f"a diffusers model folder containing {subfolder}/",
    )


def diffusers_weight_files(folder: Path, stem: str = "diffusion_pytorch_model") -> list[Path]:
    """The safetensors files of a diffusers component: one file, or the shards its index names."""
    single = folder / f"{stem}.safetensors"
    if single.is_file():
        return [single]
    index = folder / f"{stem}.safetensors.index.json"
    if not index.is_file():
        raise CheckpointError(
            folder, "has no weights", f"{stem}.safetensors or {stem}.safetensors.index.json with its shards"
        )
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    missing = [s for s in shards if not (folder / s).is_file()]
    if missing:
        raise CheckpointError(index, f"names shards that are missing: {', '.join(missing)}", "all shards present")
    return [folder / s for s in shards]


def main_dtype(header: SafetensorsHeader, keep: Callable[[str], object] = bool) -> str:
    """The stored dtype holding most of the bytes of the kept keys (fp8 files keep small tensors wider)."""
    size: Counter[str] = Counter()
    for key, (begin, end) in header.offsets.items():
        if keep(key):
            size[header.dtypes[key]] += end - begin
    return size.most_common(1)[0][0] if size else "unknown"
