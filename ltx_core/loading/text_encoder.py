"""load_text_encoder(): any supported T5 file or folder → a ready T5TextEncoder with its tokenizer.

Formats, decided by content: a transformers T5 folder or a diffusers model folder (`text_encoder/`),
a ComfyUI single file (`t5xxl_fp16.safetensors`: transformers key names, optionally under
`text_encoders.t5xxl.transformer.`), its fp8 variants (plain `F8_E4M3`, or ComfyUI's "scaled" files
with a `scaled_fp8` marker and per-layer `<layer>.scale_weight`), and llama.cpp T5 GGUF files.

The linear layers of fp8 files stay in fp8 (Fp8WeightLinear, expanded per layer at use): T5-XXL then
holds ~4.9 GB instead of 9.5 GB in bf16, and computes the same numbers as weights expanded at load.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..text.encoder import T5TextEncoder, build_t5_encoder, import_transformers
from ..text.tokenizer import PromptTokenizer, find_tokenizer, load_tokenizer, not_found
from .detect import diffusers_weight_files, find_components, is_gguf, require_component
from .errors import CheckpointError
from .gguf import GGUF_COMPONENTS, QuantizedTensor, read_gguf
from .keymaps import t5_from_gguf_name
from .materialize import CheckpointMismatchError, materialize
from .quantized import swap_fp8_linears, swap_linears
from .safetensors import SafetensorsHeader, load_tensors, read_header

if TYPE_CHECKING:
    from transformers import T5Config, T5EncoderModel

GGUF_ARCHITECTURES = tuple(a for a, c in GGUF_COMPONENTS.items() if c == "text_encoder")
MAX_DISTANCE = 128  # relative_attention_max_distance of every released T5; no tensor records it
LAYER_NORM_EPS = 1e-6  # T5LayerNorm eps of every released T5
SCALE_SUFFIX = ".scale_weight"  # ComfyUI scaled fp8: weight = fp8 value × this per-tensor scale
# transformers keeps T5's FF output projection in float32 when the model is fp16
# (T5PreTrainedModel._keep_in_fp32_modules): T5 v1.1 activations there overflow fp16.
FP32_UNDER_FP16 = ".DenseReluDense.wo.weight"
COMPUTE_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
DTYPE_NAMES = {v: k for k, v in COMPUTE_DTYPES.items()}
FALLBACK_DTYPE = torch.bfloat16  # for fp8 and quantized files, as official LTX-Video runs T5
# diffusers' LTX-Video classes → the component, so that such a folder chosen as T5 says where it belongs
DIFFUSERS_COMPONENTS = {"LTXVideoTransformer3DModel": "transformer", "AutoencoderKLLTXVideo": "vae"}
COMPLETE = "the complete weights of one T5 encoder (a damaged file? download it again)"


@dataclass(frozen=True)
class DetectedTextEncoder:
    """What load_text_encoder found: format, how the weights were stored, the config, the tokenizer."""

    path: Path
    format: str  # "transformers folder", "single file", "gguf"
    stored_dtype: str  # e.g. "F16", "F8_E4M3 scaled", "Q8_0+F32"
    config: T5Config
    tokenizer: Path


Loader = Callable[[torch.dtype, "torch.device | str | None"], "T5EncoderModel"]


@dataclass(frozen=True)
class _Source:
    """A checkpoint inspected but not yet read: `load(dtype, device)` reads it."""

    format: str
    stored_dtype: str
    default_dtype: torch.dtype  # as stored for float files; bfloat16 for fp8 and quantized ones
    config: T5Config
    load: Loader


def t5_config_from_shapes(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> T5Config:
    """T5 config from tensor shapes (T5EncoderModel names); heads come from the relative bias, (buckets, heads)."""
    block0 = "encoder.block.0.layer"
    gated = f"{block0}.1.DenseReluDense.wi_0.weight" in shapes  # v1.1 gated-GELU; v1.0 has one `wi`
    try:
        vocab, d_model = shapes["shared.weight"]
        inner = shapes[f"{block0}.0.SelfAttention.q.weight"][0]  # heads × d_kv
        buckets, heads = shapes[f"{block0}.0.SelfAttention.relative_attention_bias.weight"]
        d_ff = shapes[f"{block0}.1.DenseReluDense.{'wi_0' if gated else 'wi'}.weight"][0]
    except KeyError as exc:
        raise CheckpointError(path, f"lacks the tensor {exc}", "a complete T5 encoder") from exc
    return import_transformers().T5Config(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=inner // heads,
        num_heads=heads,
        d_ff=d_ff,
        num_layers=len({k.split(".")[2] for k in shapes if k.startswith("encoder.block.")}),
        relative_attention_num_buckets=buckets,
        relative_attention_max_distance=MAX_DISTANCE,
        feed_forward_proj="gated-gelu" if gated else "relu",
        layer_norm_epsilon=LAYER_NORM_EPS,
        is_encoder_decoder=False,
        use_cache=False,
    )


def _t5_names(keys: Iterable[str], prefix: str) -> dict[str, str]:
    """File key → T5EncoderModel key (scales kept as `<layer>.scale_weight`); decoder, LM head and
    fp8 markers dropped. `encoder.embed_tokens` is tied to `shared`: used only when `shared` is absent."""
    names = {}
    for key in keys:
        name = key[len(prefix) :] if key.startswith(prefix) else None
        if name is not None and (name == "shared.weight" or name.startswith("encoder.")):
            if not name.endswith(".scale_input"):
                names[key] = name
    embed = prefix + "encoder.embed_tokens.weight"
    if embed in names:
        if "shared.weight" in names.values():
            del names[embed]
        else:
            names[embed] = "shared.weight"
    return names


def _convert(
    tensors: dict[str, torch.Tensor], scales: Mapping[str, torch.Tensor], dtype: torch.dtype, device: Any
) -> dict[str, torch.Tensor]:
    """Cast to `dtype` and move to `device` one tensor at a time, dropping each source as it goes.
    Scaled fp8 weights are multiplied by their scale in float32 and rounded once."""
    out = {}
    for key in list(tensors):
        tensor = tensors.pop(key)
        if key in scales:
            tensor = tensor.to(device=device, dtype=torch.float32) * scales[key].to(device, torch.float32)
        target = torch.float32 if dtype == torch.float16 and key.endswith(FP32_UNDER_FP16) else dtype
        out[key] = tensor.to(device=device, dtype=target if tensor.is_floating_point() else tensor.dtype)
    return out


def _adopt(model: T5EncoderModel, tensors: dict[str, torch.Tensor], path: Path) -> T5EncoderModel:
    """Assign the converted tensors to the meta-built model (strict), keeping the embedding tie."""
    if "shared.weight" in tensors:  # else materialize names it as missing
        tensors["encoder.embed_tokens.weight"] = tensors["shared.weight"]  # the same tensor, no copy
    try:
        materialize(model, tensors, what="T5 text encoder", consume=True)
    except CheckpointMismatchError as exc:
        tensors.clear()  # the traceback keeps frames alive; the weights must not stay with it
        raise CheckpointError(path, exc.found, COMPLETE) from exc
    model.encoder.embed_tokens = model.shared
    return model


def _safetensors_loader(path: Path, headers: list[SafetensorsHeader], names: dict[str, str], config: Any) -> Loader:
    def load(dtype: torch.dtype, device: torch.device | str | None) -> T5EncoderModel:
        tensors = load_tensors(headers, names.get)  # as stored; _convert casts one tensor at a time
        scale_keys = [k for k in tensors if k.endswith(SCALE_SUFFIX)]
        scales = {k[: -len(SCALE_SUFFIX)] + ".weight": tensors.pop(k) for k in scale_keys}
        model = build_t5_encoder(config)
        # fp8 linear weights stay fp8, except the FF output projection an fp16 model keeps in float32
        keep = (FP32_UNDER_FP16,) if dtype == torch.float16 else ()
        try:
            rest = swap_fp8_linears(model, tensors, scales, device, keep)
        except CheckpointMismatchError as exc:
            raise CheckpointError(path, exc.found, COMPLETE) from exc
        tensors.clear()
        return _adopt(model, _convert(rest, scales, dtype, device), path)

    return load


def _stored_dtype(headers: list[SafetensorsHeader], names: Mapping[str, str]) -> str:
    scaled = any(name.endswith(SCALE_SUFFIX) for name in names.values())
    weights = [k for k, name in names.items() if not name.endswith(SCALE_SUFFIX)]
    dtypes = Counter(h.dtypes[k] for h in headers for k in weights if k in h.dtypes)
    stored = dtypes.most_common(1)[0][0] if dtypes else "unknown"
    return f"{stored} scaled" if scaled else stored


def _folder_source(path: Path) -> _Source:
    """A transformers T5 folder, or a diffusers model folder whose text_encoder/ is one."""
    folder = _model_folder(path)
    if not (folder / "config.json").is_file():
        found = "is a folder without config.json or text_encoder/config.json"
        raise CheckpointError(path, found, "a transformers T5 folder or a diffusers model folder")
    try:
        raw = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(folder / "config.json", f"is not valid JSON ({exc})", "a T5 config.json") from exc
    if raw.get("model_type") != "t5":
        what = raw.get("_class_name") or raw.get("architectures") or raw.get("model_type")
        belongs = DIFFUSERS_COMPONENTS.get(raw.get("_class_name"))
        raise CheckpointError(folder / "config.json", f"describes {what!r}", "a T5 config (model_type 't5')", belongs)
    config = import_transformers().T5Config.from_dict(raw)
    headers = [read_header(f) for f in diffusers_weight_files(folder, stem="model")]
    names = _t5_names([k for h in headers for k in h.shapes], "")
    load = _safetensors_loader(path, headers, names, config)
    stored = _stored_dtype(headers, names)
    return _Source("transformers folder", stored, _default_dtype(stored), config, load)


def _single_file_source(path: Path) -> _Source:
    header = read_header(path)
    component = require_component(path, find_components(header.shapes), "text_encoder")
    names = _t5_names(header.shapes, component.prefix)
    config = t5_config_from_shapes(path, {name: header.shapes[k] for k, name in names.items()})
    load = _safetensors_loader(path, [header], names, config)
    stored = _stored_dtype([header], names)
    return _Source("single file", stored, _default_dtype(stored), config, load)


def _gguf_source(path: Path) -> _Source:
    """llama.cpp T5: quantized linears stay quantized (QuantizedLinear); everything else is cast."""
    tensors, metadata = read_gguf(path, architecture=None)
    architecture = metadata.get("general.architecture")
    if architecture not in GGUF_ARCHITECTURES:
        if components := find_components(tensors):  # an LTX-Video GGUF: say which part and where it belongs
            require_component(path, components, "text_encoder")
        expected = f"a T5 encoder GGUF (general.architecture one of {', '.join(map(repr, GGUF_ARCHITECTURES))})"
        raise CheckpointError(path, f"general.architecture is {architecture!r}", expected)
    named = {name: t for k, t in tensors.items() if (name := t5_from_gguf_name(k)) is not None}
    config = t5_config_from_shapes(path, {k: tuple(v.shape) for k, v in named.items()})
    kinds = Counter(v.qtype.name if isinstance(v, QuantizedTensor) else DTYPE_NAMES[v.dtype] for v in named.values())

    def load(dtype: torch.dtype, device: torch.device | str | None) -> T5EncoderModel:
        model = build_t5_encoder(config)
        try:
            rest = swap_linears(model, named, device=device)
        except CheckpointMismatchError as exc:
            raise CheckpointError(path, exc.found, COMPLETE) from exc
        return _adopt(model, _convert(rest, {}, dtype, device), path)

    quantized = any(isinstance(v, QuantizedTensor) for v in named.values())
    default = FALLBACK_DTYPE if quantized else _default_dtype(kinds.most_common(1)[0][0])
    return _Source("gguf", "+".join(name for name, _ in kinds.most_common()), default, config, load)


def _default_dtype(stored: str) -> torch.dtype:
    """As stored for F32 / F16 / BF16 weights; bfloat16 for fp8 and quantized ones."""
    return COMPUTE_DTYPES.get(stored, FALLBACK_DTYPE)


def _model_folder(path: Path) -> Path:
    """The folder of a T5 model folder that holds its config.json: itself, or a diffusers text_encoder/."""
    return path if (path / "config.json").is_file() else path / "text_encoder"


def tokenizer_folders(path: str | Path) -> list[Path]:
    """Where the tokenizer of the T5 file or folder `path` may lie (each folder and its `tokenizer/`
    subfolder are searched): a file's folder; a model folder and its parent (a diffusers model folder
    keeps text_encoder/ and tokenizer/ side by side)."""
    path = Path(path)
    if path.is_dir():
        folder = _model_folder(path)
        return [folder, folder.parent]
    return [path.parent]


def tokenizer_beside(path: str | Path) -> Path | None:
    """The tokenizer file (spiece.model or tokenizer.json) that lies beside the T5 file or folder
    `path`, as load_text_encoder finds it without `tokenizer_path`; None if there is none. Reads no
    weights, so a caller can choose a fallback tokenizer before loading."""
    return find_tokenizer(tokenizer_folders(path))


def _fits(tokenizer: PromptTokenizer, config: T5Config) -> PromptTokenizer:
    """The tokenizer, if its ids fit the model's embedding (checked before any weight is read)."""
    if tokenizer.vocab_size > config.vocab_size:
        found = f"has {tokenizer.vocab_size} tokens, more than the {config.vocab_size} rows of the T5 embedding"
        raise CheckpointError(tokenizer.source, found, "the tokenizer of this T5 model", "bad_tokenizer")
    return tokenizer


def load_text_encoder(
    path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    tokenizer_path: str | Path | None = None,
) -> tuple[T5TextEncoder, DetectedTextEncoder]:
    """Load a T5 encoder and its tokenizer from any supported file or folder, deciding by content.

    dtype: compute dtype (default: as stored for float files, bfloat16 for fp8 and GGUF-quantized
    ones, whose weights are dequantized at load or, for GGUF linears, at use). The tokenizer comes
    from `tokenizer_path`, else from beside the model (`tokenizer_beside`). The file is inspected and
    the tokenizer opened before any weight is read, so every mistake is reported without the wait.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "does not exist", "a T5 encoder file or folder")
    if path.is_dir():
        source = _folder_source(path)
    elif is_gguf(path):
        source = _gguf_source(path)
    else:
        source = _single_file_source(path)
    if tokenizer_path is None:
        tokenizer_path = tokenizer_beside(path)
        if tokenizer_path is None:
            raise not_found(path, tokenizer_folders(path))
    tokenizer = _fits(load_tokenizer(tokenizer_path), source.config)
    model = source.load(dtype or source.default_dtype, device)
    detected = DetectedTextEncoder(path, source.format, source.stored_dtype, source.config, tokenizer.source)
    return T5TextEncoder(model, tokenizer), detected
