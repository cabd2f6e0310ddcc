"""Key-rename tables between checkpoint layouts, as data, plus the tiny applier.

Our modules use the original (Lightricks / ComfyUI) key names, so an original checkpoint needs only
its prefix stripped. diffusers renames a few whole dotted segments; rules match exact segments, so
their order never matters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


# --- LoRA -----------------------------------------------------------------------------------------

# A LoRA key is PREFIX + module + SUFFIX. Prefixes: ComfyUI's and Lightricks' `-comfyui` files
# (original module names), diffusers' `save_lora_weights` (`transformer.`, diffusers module names),
# a bare PEFT model, kohya-style `lora_unet_` with the module's dots written as underscores.
LORA_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "base_model.model.", "lora_unet_")
# Suffix → which factor it holds: `down` (rank, in) multiplies first, `up` (out, rank) second.
LORA_FACTORS = {
    ".lora_A.weight": "down",  # PEFT / diffusers
    ".lora_B.weight": "up",
    ".lora_down.weight": "down",  # kohya / ComfyUI
    ".lora_up.weight": "up",
}
LORA_ALPHA = ".alpha"  # a scalar per module: the update is scaled by alpha / rank
# Keys of LoRA variants this loader does not compute (their updates are not down·up).
LORA_UNSUPPORTED = {
    ".dora_scale": "DoRA",
    ".lora_magnitude_vector": "DoRA",
    ".lora_B.bias": "a LoRA bias",
    ".hada_w1_a": "LoHa",
    ".lokr_w1": "LoKr",
    ".diff": "a full weight difference",
    ".diff_b": "a bias difference",
}
# The diffusers safetensors metadata key that holds the PEFT LoraConfig (r, lora_alpha, patterns).
LORA_PEFT_METADATA = "lora_adapter_metadata"


def split_lora_key(key: str) -> tuple[str, str] | None:
    """A LoRA key → (module name with any prefix stripped, suffix), or None if it ends in no
    LoRA factor or alpha suffix."""
    for suffix in (*LORA_FACTORS, LORA_ALPHA):
        if key.endswith(suffix):
            return strip_prefix(key[: -len(suffix)], LORA_PREFIXES), suffix
    return None


# --- VAE ------------------------------------------------------------------------------------------

VAE_PREFIXES = ("vae.",)
# Statistics that original checkpoints carry besides mean-of-means / std-of-means; nothing reads them.
VAE_UNUSED_STATISTICS = tuple(
    f"per_channel_statistics.{name}" for name in ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")
)
# Whole-key prefixes, original → diffusers, besides the block indices derived from the block lists.
VAE_DIFFUSERS_FIXED_PREFIXES = {
    "decoder.last_time_embedder": "decoder.time_embedder",
    "decoder.last_scale_shift_table": "decoder.scale_shift_table",
    "per_channel_statistics.mean-of-means": "latents_mean",
    "per_channel_statistics.std-of-means": "latents_std",
}
# Runs of segments inside a block, original → diffusers.
VAE_DIFFUSERS_SEGMENT_RUNS = {
    ("res_blocks",): ("resnets",),
    ("conv_shortcut",): ("conv_shortcut", "conv"),  # diffusers wraps the 1×1×1 conv in a causal conv
    ("norm3", "norm"): ("norm3",),  # the original wraps LayerNorm to permute channels last
}


def vae_state_dict(state_dict: Mapping[str, T]) -> dict[str, T]:
    """An original VAE state dict as VideoVAE keys: keep only `vae.` keys if there are any, strip the
    prefix, drop the unused statistics."""
    if any(k.startswith(VAE_PREFIXES) for k in state_dict):
        state_dict = {k: v for k, v in state_dict.items() if k.startswith(VAE_PREFIXES)}
    out = {strip_prefix(k, VAE_PREFIXES): v for k, v in state_dict.items()}
    return {k: v for k, v in out.items() if k not in VAE_UNUSED_STATISTICS}


def vae_block_prefixes(encoder_kinds: Sequence[str], decoder_kinds: Sequence[str]) -> dict[str, str]:
    """Original block prefix → diffusers block prefix, derived from the original block lists.

    Encoder (forward): each `res_x` opens diffusers down block d (`resnets`), a following compress is
    `d.downsamplers.0`, a `res_x_y` is `d.conv_out`; the last `res_x` is `mid_block`. Decoder (the
    reversed list): the first `res_x` is `mid_block`; after each `res_x` a new up block u opens as
    `[u.conv_in (res_x_y)] [u.upsamplers.0 (compress)] u (res_x)`.
    """
    table = dict(VAE_DIFFUSERS_FIXED_PREFIXES)
    down = -1
    for i, kind in enumerate(encoder_kinds):
        if i == len(encoder_kinds) - 1:
            _expect(kind, "res_x", "the last encoder block")
            table[f"encoder.down_blocks.{i}"] = "encoder.mid_block"
            continue
        if kind == "res_x":
            down += 1
        elif down < 0:
            raise ValueError(f"encoder block 0 is {kind!r}; the diffusers layout needs res_x first")
        table[f"encoder.down_blocks.{i}"] = f"encoder.down_blocks.{down}" + _ENCODER_SUFFIX[_family(kind)]
    up, previous = -1, None
    for j, kind in enumerate(reversed(decoder_kinds)):
        if j == 0:
            _expect(kind, "res_x", "the decoder's innermost block (the last of the list)")
            table["decoder.up_blocks.0"] = "decoder.mid_block"
        else:
            up += previous == "res_x"
            table[f"decoder.up_blocks.{j}"] = f"decoder.up_blocks.{up}" + _DECODER_SUFFIX[_family(kind)]
        previous = kind
    return table


_ENCODER_SUFFIX = {"res_x": "", "compress": ".downsamplers.0", "res_x_y": ".conv_out"}
_DECODER_SUFFIX = {"res_x": "", "compress": ".upsamplers.0", "res_x_y": ".conv_in"}


def _family(kind: str) -> str:
    return "compress" if kind.startswith("compress") else kind


def _expect(kind: str, wanted: str, what: str) -> None:
    if kind != wanted:
        raise ValueError(f"{what} is {kind!r}; the diffusers layout needs {wanted!r} there")


def rename_prefix(key: str, table: Mapping[str, str]) -> str:
    """Replace the longest dotted-segment prefix of `key` found in `table` (whole segments only)."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        head = ".".join(parts[:n])
        if head in table:
            return ".".join([table[head], *parts[n:]])
    return key


def rename_segment_runs(key: str, table: Mapping[tuple[str, ...], tuple[str, ...]]) -> str:
    """Replace each run of whole segments found in `table` (runs never overlap in our tables)."""
    parts, out, i = key.split("."), [], 0
    while i < len(parts):
        for run, replacement in table.items():
            if tuple(parts[i : i + len(run)]) == run:
                out.extend(replacement)
                i += len(run)
                break
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out)


def vae_to_diffusers(
    state_dict: Mapping[str, T], encoder_kinds: Sequence[str], decoder_kinds: Sequence[str]
) -> dict[str, T]:
    """Original VAE keys (prefixed or not) → AutoencoderKLLTXVideo keys; unused statistics dropped."""
    prefixes = vae_block_prefixes(encoder_kinds, decoder_kinds)
    return {
        rename_segment_runs(rename_prefix(k, prefixes), VAE_DIFFUSERS_SEGMENT_RUNS): v
        for k, v in vae_state_dict(state_dict).items()
    }


def vae_from_diffusers(
    state_dict: Mapping[str, T], encoder_kinds: Sequence[str], decoder_kinds: Sequence[str]
) -> dict[str, T]:
    """AutoencoderKLLTXVideo keys → original VAE keys (without the `vae.` prefix)."""
    prefixes = {v: k for k, v in vae_block_prefixes(encoder_kinds, decoder_kinds).items()}
    runs = {v: k for k, v in VAE_DIFFUSERS_SEGMENT_RUNS.items()}
    return {rename_prefix(rename_segment_runs(k, runs), prefixes): v for k, v in state_dict.items()}


# --- T5 text encoder, GGUF ------------------------------------------------------------------------

# llama.cpp T5 tensor names (gguf-py MODEL_TENSOR.ENC_*) → transformers T5EncoderModel names. Per
# block `enc.blk.{i}.<name>` → `encoder.block.{i}.<value>`; T5 v1.1's gated FF (wi_0 gate, wi_1 up).
T5_GGUF_BLOCK = {
    "attn_q": "layer.0.SelfAttention.q",
    "attn_k": "layer.0.SelfAttention.k",
    "attn_v": "layer.0.SelfAttention.v",
    "attn_o": "layer.0.SelfAttention.o",
    "attn_rel_b": "layer.0.SelfAttention.relative_attention_bias",
    "attn_norm": "layer.0.layer_norm",
    "ffn_gate": "layer.1.DenseReluDense.wi_0",
    "ffn_up": "layer.1.DenseReluDense.wi_1",
    "ffn_down": "layer.1.DenseReluDense.wo",
    "ffn_norm": "layer.1.layer_norm",
}
T5_GGUF_TOP = {"token_embd": "shared", "enc.output_norm": "encoder.final_layer_norm"}


def t5_from_gguf_name(name: str) -> str | None:
    """A llama.cpp T5 tensor name → its T5EncoderModel key; None for what the encoder does not use
    (the decoder `dec.*` and the LM head `output` of a full T5 file)."""
    stem, dot, leaf = name.rpartition(".")  # leaf: "weight"
    if stem in T5_GGUF_TOP:
        return f"{T5_GGUF_TOP[stem]}{dot}{leaf}"
    parts = stem.split(".")
    if len(parts) == 4 and parts[:2] == ["enc", "blk"] and parts[3] in T5_GGUF_BLOCK:
        return f"encoder.block.{parts[2]}.{T5_GGUF_BLOCK[parts[3]]}{dot}{leaf}"
    return None
