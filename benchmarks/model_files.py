"""LTX-Video model files with random weights, at full size or tiny, in ComfyUI's models/ layout and
written fast, for benchmarks that load them as a user's downloads are loaded (in a ComfyUI server).

The files are real: headers, key names, dtypes, shapes and metadata as the released files have them,
and every tensor under 65,536 values (biases, norms, modulation tables, latent statistics) holds
random values of a sane scale. The larger tensors, which hold 99.9 % of the bytes, are written one of
two ways (`fill`):
- "sparse": holes in a sparse file. They read as zeros, take no disk and no time to write (the whole
  full-size set of 24 GB in seconds). Right for memory measurements: every byte is still read, cast,
  moved and streamed as a download's would be.
- "random": one random block of 1 MiB at the tensor's scale (1/sqrt(fan_in)), repeated. For speed
  measurements, where all-zero weights would flatter the matrix products (an H200 multiplies zeros
  ~13 % faster); costs writing every byte.

The files (names as users download them), and their size at full size:
  checkpoints/ltx-video-2b-v0.9.1.safetensors      5.7 GB  2B transformer + 0.9.1 VAE, bf16, `config` metadata
  diffusion_models/ltx-video-2b-v0.9.1-Q8_0.gguf   2.0 GB  the transformer as GGUF: large weights Q8_0, the rest
                                                           F32, as city96's files
  vae/ltx-video-2b-v0.9.1-vae.safetensors          1.9 GB  the 0.9.1 VAE alone, bf16, `config` metadata
  text_encoders/t5xxl_bf16.safetensors             9.5 GB  T5 v1.1 XXL encoder, bf16 (transformers' key names,
                                                           as ComfyUI's T5 files)
  text_encoders/t5xxl_fp8_e4m3fn.safetensors       4.8 GB  the same with its matrices in float8 e4m3, the rest
                                                           bf16
T5 files come without a tokenizer, as users download them: the pack then uses ComfyUI's bundled one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny configs and sane random values

from ltx_core import LTXV_2B, VAE_091, LTXVideoTransformer, TransformerConfig, VAEConfig, VideoVAE  # noqa: E402
from tiny import TINY_VAE_LAYOUTS, random_state_dict, random_vae_state_dict, tiny_transformer_config  # noqa: E402

CHECKPOINT = "ltx-video-2b-v0.9.1.safetensors"
GGUF = "ltx-video-2b-v0.9.1-Q8_0.gguf"
VAE = "ltx-video-2b-v0.9.1-vae.safetensors"
T5_BF16 = "t5xxl_bf16.safetensors"
T5_FP8 = "t5xxl_fp8_e4m3fn.safetensors"
FOLDERS = {
    CHECKPOINT: "checkpoints",
    GGUF: "diffusion_models",
    VAE: "vae",
    T5_BF16: "text_encoders",
    T5_FP8: "text_encoders",
}

BULK = 2**16  # values: tensors at least this large are holes or a repeated block (see `fill`)
BLOCK_BYTES = 2**20  # the random block repeated through a bulk tensor
FILLS = ("sparse", "random")
T5_VOCAB = 32128  # T5-XXL's: ComfyUI's bundled tokenizer (32,100 pieces) fits
# T5 v1.1 XXL's encoder (comfy/text_encoders/t5_config_xxl.json); d_model is the transformer's caption width
T5_XXL = dict(d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=24)
Q8_0_BLOCK = (32, 34)  # GGML Q8_0: 32 values in 34 bytes (an fp16 scale, then 32 int8)
ELEMENT_BYTES = {"F32": 4, "BF16": 2, "F8_E4M3": 1}
TORCH_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F8_E4M3": torch.float8_e4m3fn}


@dataclass(frozen=True)
class ModelSizes:
    """The architectures written: the transformer, the VAE and the T5 encoder's widths."""

    transformer: TransformerConfig
    vae: VAEConfig
    t5: dict[str, int]


FULL = ModelSizes(LTXV_2B, VAE_091, T5_XXL)
# 2 blocks of width 1024 (67 MB in bf16, so that a copy kept by mistake shows in a process's memory), the
# tiny 0.9.1 VAE with the released 128 latent channels, and a 2-layer T5 of width 32 with T5-XXL's vocabulary
TINY = ModelSizes(
    dataclasses.replace(
        tiny_transformer_config(heads=32, head_dim=32, layers=2), in_channels=128, out_channels=128, caption_channels=32
    ),
    VAEConfig.from_metadata({**TINY_VAE_LAYOUTS["0.9.1"][0], "latent_channels": 128}),
    dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2),
)


@dataclass(frozen=True)
class Stored:
    """One tensor of a file: its shape, how it is stored ("BF16", "F32", "F8_E4M3" or "Q8_0"), and its
    values when it is small (None: a bulk tensor, written as `fill` says)."""

    shape: tuple[int, ...]
    dtype: str
    values: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        count = math.prod(self.shape)
        if self.dtype == "Q8_0":
            return count // Q8_0_BLOCK[0] * Q8_0_BLOCK[1]
        return count * ELEMENT_BYTES[self.dtype]

    @property
    def scale(self) -> float:
        """The standard deviation of a bulk tensor's random values: 1/sqrt(fan_in), as a layer's init."""
        return math.prod(self.shape[1:]) ** -0.5

    def small_bytes(self) -> bytes:
        return self.values.to(TORCH_DTYPES[self.dtype]).reshape(-1).view(torch.uint8).numpy().tobytes()


# --- what each file holds -------------------------------------------------------------------------


def _stored(shapes: dict[str, torch.Size], dtype: str, small_values) -> dict[str, Stored]:
    """Bulk tensors without values, the small ones with `small_values(shapes)` (the tests' sane random
    weights: norms near their scale, linears ~ 1/sqrt(fan_in), positive latent statistics)."""
    values = small_values({k: s for k, s in shapes.items() if s.numel() < BULK})
    return {k: Stored(tuple(s), dtype, values.get(k)) for k, s in shapes.items()}


def transformer_tensors(cfg: TransformerConfig, seed: int = 0) -> dict[str, Stored]:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    return _stored(shapes, "BF16", lambda small: random_state_dict(small, seed))


def vae_tensors(cfg: VAEConfig, seed: int = 1) -> dict[str, Stored]:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VideoVAE(cfg).state_dict().items()}
    return _stored(shapes, "BF16", lambda small: random_vae_state_dict(small, seed))


def t5_tensors(widths: dict[str, int], fp8: bool, seed: int = 2) -> dict[str, Stored]:
    """T5EncoderModel's keys (the embedding once, as `shared.weight`). fp8: the matrices in float8 e4m3
    except the embedding, as ComfyUI's t5xxl_fp8_e4m3fn.safetensors; the rest bf16."""
    import transformers

    config = transformers.T5Config(
        vocab_size=T5_VOCAB,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        **widths,
    )
    with torch.device("meta"):
        model = transformers.T5EncoderModel(config)
    shapes = {k: v.shape for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}  # tied
    tensors = _stored(shapes, "BF16", lambda small: random_state_dict(small, seed))
    if fp8:
        tensors = {
            k: dataclasses.replace(t, dtype="F8_E4M3") if len(t.shape) == 2 and k != "shared.weight" else t
            for k, t in tensors.items()
        }
    return tensors


def as_gguf(tensors: dict[str, Stored]) -> dict[str, Stored]:
    """The bulk matrices as Q8_0 (rows of whole 32-value blocks), everything else F32: small tensors stay
    unquantized, as in city96's converter."""

    def quantized(t: Stored) -> bool:
        return t.values is None and len(t.shape) == 2 and t.shape[1] % Q8_0_BLOCK[0] == 0

    return {
        k: Stored(t.shape, "Q8_0") if quantized(t) else dataclasses.replace(t, dtype="F32") for k, t in tensors.items()
    }


# --- writing ----------------------------------------------------------------------------------------


def _random_block(tensor: Stored, generator: torch.Generator) -> bytes:
    """Up to BLOCK_BYTES of random values at the tensor's scale, a whole number of its elements (Q8_0:
    of its 34-byte blocks, with scales that give the same spread)."""
    size = min(BLOCK_BYTES, tensor.nbytes)
    if tensor.dtype == "Q8_0":
        values, nbytes = Q8_0_BLOCK
        blocks = size // nbytes
        quants = torch.randint(-127, 128, (blocks, values), generator=generator, dtype=torch.int8)
        # uniform int8 in ±127 has a spread of 127/sqrt(3): this scale gives the tensor's
        scale = torch.full((blocks, 1), tensor.scale * math.sqrt(3) / 127, dtype=torch.float16)
        return torch.cat([scale.view(torch.uint8), quants.view(torch.uint8)], dim=1).numpy().tobytes()
    count = size // ELEMENT_BYTES[tensor.dtype]
    values = torch.randn(count, generator=generator) * tensor.scale
    return values.to(TORCH_DTYPES[tensor.dtype]).view(torch.uint8).numpy().tobytes()


def _write_tensor(out: BinaryIO, tensor: Stored, fill: str, generator: torch.Generator) -> None:
    """The tensor's bytes at the file's current position; a bulk tensor of a sparse file is skipped
    (the hole reads as zeros once the file is extended past it)."""
    if tensor.values is not None:
        out.write(tensor.small_bytes())
    elif fill == "sparse":
        out.seek(tensor.nbytes, 1)
    else:
        block = memoryview(_random_block(tensor, generator))
        for start in range(0, tensor.nbytes, len(block)):
            out.write(block[: min(len(block), tensor.nbytes - start)])


def write_safetensors(path: Path, tensors: dict[str, Stored], metadata: dict[str, str], fill: str) -> None:
    """A safetensors file: 8-byte header length, JSON header (padded to 8), tensors back to back."""
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, tensor in tensors.items():
        header[name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    generator = torch.Generator().manual_seed(len(tensors))
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        for tensor in tensors.values():
            _write_tensor(out, tensor, fill, generator)
        out.truncate(8 + len(text) + offset)


def write_gguf(path: Path, tensors: dict[str, Stored], fill: str, architecture: str = "ltxv") -> None:
    """A GGUF file: gguf's writer lays out the header and tensor infos, the data is written here (each
    tensor at its aligned offset, as the writer itself would put it)."""
    import gguf

    types = {"F32": gguf.GGMLQuantizationType.F32, "Q8_0": gguf.GGMLQuantizationType.Q8_0}
    writer = gguf.GGUFWriter(str(path), architecture)
    for name, tensor in tensors.items():  # shapes in torch order; the writer reverses them into ggml's
        writer.add_tensor_info(name, tensor.shape, np.dtype(np.float32), tensor.nbytes, raw_dtype=types[tensor.dtype])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    (out,) = writer.fout
    align = writer.data_alignment
    start = out.tell() + (-out.tell() % align)
    generator = torch.Generator().manual_seed(len(tensors))
    offset = 0
    for tensor in tensors.values():
        out.seek(start + offset)
        _write_tensor(out, tensor, fill, generator)
        offset += tensor.nbytes + (-tensor.nbytes % align)
    out.truncate(start + offset)
    writer.close()


def write_model_files(models: Path, sizes: ModelSizes = FULL, fill: str = "sparse") -> dict[str, Path]:
    """The five files of the module docstring under `models` (ComfyUI's models/ folder); returns
    {file name: path}. The transformer's caption width must be the T5's."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    if sizes.transformer.caption_channels != sizes.t5["d_model"]:
        raise ValueError(
            f"the transformer reads {sizes.transformer.caption_channels}-wide text features but the T5 is "
            f"{sizes.t5['d_model']} wide; make caption_channels the T5's d_model"
        )
    paths = {name: models / folder / name for name, folder in FOLDERS.items()}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    transformer, vae = transformer_tensors(sizes.transformer), vae_tensors(sizes.vae)
    vae_config = {"vae": sizes.vae.to_metadata()}
    checkpoint = {
        **{f"model.diffusion_model.{k}": t for k, t in transformer.items()},
        **{f"vae.{k}": t for k, t in vae.items()},
    }
    config = json.dumps({"transformer": sizes.transformer.to_metadata(), **vae_config})
    write_safetensors(paths[CHECKPOINT], checkpoint, {"config": config}, fill)
    write_gguf(paths[GGUF], as_gguf(transformer), fill)
    write_safetensors(paths[VAE], vae, {"config": json.dumps(vae_config)}, fill)
    write_safetensors(paths[T5_BF16], t5_tensors(sizes.t5, fp8=False), {}, fill)
    write_safetensors(paths[T5_FP8], t5_tensors(sizes.t5, fp8=True), {}, fill)
    return paths


def file_bytes(paths: Iterable[Path]) -> int:
    """Apparent size of the files (holes included): what a loader reads."""
    return sum(path.stat().st_size for path in paths)
