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
    # the 0.9.7+ latent upsamplers (spatial and temporal), released files and diffusers folders alike
    "post_upsample_res_blocks.0.conv1.weight": ("latent_upsampler", "original"),
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
    "latent_upsampler": "an LTX-Video latent upsampler",
}

EXAMPLES = {  # released files of each kind, for errors about files that hold none of them
    "transformer": "ltx-video-2b-v0.9.1.safetensors",
    "vae": "the VAE of ltx-video-2b-v0.9.1.safetensors",
    "text_encoder": "t5xxl_fp16.safetensors (T5 v1.1 XXL)",
    "latent_upsampler": "ltxv-spatial-upscaler-0.9.8.safetensors",
}


@dataclass(frozen=True)
class ReleaseHints:
    """What a transformer file says about the release it belongs to (loading/release.py weighs it
    with the VAE). None: the file does not say."""

    size: str  # "13B" for the 13B model's width 4096; "2B" for every other width (test models too)
    causal: bool | None  # the causal RoPE fix of 0.9.5+ (`causal_temporal_positioning`)
    distilled: bool | None  # True: names `allowed_inference_steps`; False: an embedded config without them
    schedule: str | None  # the sigma schedule its scheduler config selects (a name of SCHEDULES)
    allowed_timesteps: tuple[float, ...] | None  # the only noise levels the official pipeline lets it run
    said_by: str  # where the hints come from ("its embedded config", …); "" when the file says nothing

    def describe(self) -> str:
        if not self.said_by:
            return f"{self.size}, no release in the file"
        said = [] if self.causal is None else ["0.9.5+ positions" if self.causal else "0.9.0/0.9.1 positions"]
        said += [] if self.distilled is None else ["distilled" if self.distilled else "not distilled"]
        return f"{self.size}, {self.said_by}: {', '.join(said) or 'no release'}"


@dataclass(frozen=True)
class Detected:
    """What a loader found: the file's format, the model release and how its weights were stored."""

    path: Path
    format: str  # "single file", "split file", "diffusers folder", "gguf"
    release: str  # the VAE's layout ("0.9.0", "0.9.1", "0.9.5+"); for a transformer, `hints.describe()`
    stored_dtype: str  # as the file names it: "BF16", "F8_E4M3", "Q8_0", …
    config: Any  # the component's config dataclass
    hints: ReleaseHints | None = None  # transformers: what the file says about its release


@dataclass(frozen=True)
class Component:
    """Where one component lives inside a set of keys."""

    name: str  # "transformer", "vae" or "text_encoder"
    prefix: str  # stripped from every key of this component ("" for split files)
    naming: str  # "original", "diffusers" or "t5"


def model_size(hidden_dim: int, num_layers: int) -> str:
    """ "13B" for the 13B model's width (4096) or depth (48 blocks), "2B" for the 2B model's (2048 wide,
    28 blocks) and any other: only these two were released, and test models are built narrow, with the
    depth of the size they stand in for."""
    return "13B" if hidden_dim == 4096 or num_layers >= 48 else "2B"


# The scheduler configs of the original files (`config.scheduler`; ltx_video/schedulers/rf.py) that
# name a schedule of sampling/schedule.py: (sampler, shifting, target_shift_terminal) → schedule.
SCHEDULER_CONFIGS: dict[tuple[str, str | None, float | None], str] = {
    ("Uniform", "SD3", 0.1): "shifted",  # 0.9.0 / 0.9.1 (diffusers_config_mapping.OURS_SCHEDULER_CONFIG)
    ("LinearQuadratic", None, None): "linear_quadratic",
}


def hints_from_config(config: Mapping[str, Any], hidden_dim: int, num_layers: int) -> ReleaseHints:
    """The release hints of an original checkpoint's embedded `config` JSON ({"transformer": …,
    "scheduler": …, "allowed_inference_steps": …}), for a transformer of that width and depth."""
    transformer = config.get("transformer")
    allowed = config.get("allowed_inference_steps")
    scheduler = config.get("scheduler") if isinstance(config.get("scheduler"), Mapping) else {}
    sampler = scheduler.get("sampler") or "Uniform"
    shifting = None if sampler == "LinearQuadratic" else scheduler.get("shifting")
    terminal = None if sampler == "LinearQuadratic" else scheduler.get("target_shift_terminal")
    said = isinstance(transformer, Mapping) and bool(transformer)
    return ReleaseHints(
        size=model_size(hidden_dim, num_layers),
        causal=bool(transformer.get("causal_temporal_positioning", False)) if said else None,
        distilled=(allowed is not None) if said else None,
        schedule=SCHEDULER_CONFIGS.get((sampler, shifting, terminal)),
        allowed_timesteps=tuple(float(t) for t in allowed) if isinstance(allowed, list) else None,
        said_by="its embedded config" if said else "",
    )


def hints_from_diffusers(folder: Path, hidden_dim: int, num_layers: int) -> ReleaseHints:
    """A diffusers folder's release hints: diffusers records no causal fix, but its conversions give
    0.9.0 / 0.9.1 a resolution-shifted scheduler (`use_dynamic_shifting`) and 0.9.5 on a fixed one,
    used with the pipeline that applies the fix (scripts/convert_ltx_to_diffusers.py)."""
    for root in (folder, folder.parent):
        candidate = root / "scheduler" / "scheduler_config.json"
        if candidate.is_file():
            try:
                dynamic = json.loads(candidate.read_text()).get("use_dynamic_shifting")
            except json.JSONDecodeError as exc:
                raise CheckpointError(candidate, f"is not valid JSON ({exc})", "a diffusers scheduler config") from exc
            if isinstance(dynamic, bool):
                size = model_size(hidden_dim, num_layers)
                return ReleaseHints(size, not dynamic, None, None, None, "its scheduler config")
    return ReleaseHints(model_size(hidden_dim, num_layers), None, None, None, None, "")


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
