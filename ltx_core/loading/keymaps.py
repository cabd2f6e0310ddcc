"""Key-rename tables between checkpoint layouts, as data, plus the tiny applier.

Our modules use the original (Lightricks / ComfyUI) key names, so an original checkpoint needs only
its prefix stripped. diffusers renames a few whole dotted segments; rules match exact segments, so
their order never matters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")

# Prefixes of the transformer inside single-file checkpoints.
TRANSFORMER_PREFIXES = ("model.diffusion_model.",)

# diffusers segment → original segment, for LTXVideoTransformer3DModel.
TRANSFORMER_DIFFUSERS_SEGMENTS = {
    "proj_in": "patchify_proj",
    "time_embed": "adaln_single",
    "norm_q": "q_norm",
    "norm_k": "k_norm",
}


def rename_segments(key: str, table: Mapping[str, str]) -> str:
    """Rename each dotted segment of `key` found in `table`."""
    return ".".join(table.get(segment, segment) for segment in key.split("."))


def strip_prefix(key: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def transformer_from_diffusers(state_dict: Mapping[str, T]) -> dict[str, T]:
    """diffusers transformer keys → original keys."""
    return {rename_segments(k, TRANSFORMER_DIFFUSERS_SEGMENTS): v for k, v in state_dict.items()}


def transformer_to_diffusers(state_dict: Mapping[str, T]) -> dict[str, T]:
    """Original transformer keys (prefixed or not) → diffusers keys."""
    inverse = {v: k for k, v in TRANSFORMER_DIFFUSERS_SEGMENTS.items()}
    return {rename_segments(strip_prefix(k, TRANSFORMER_PREFIXES), inverse): v for k, v in state_dict.items()}
