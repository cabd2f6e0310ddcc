"""Model files written with ComfyUI's own model classes, so that the real-server tests meet files as
ComfyUI lays them out, not only as the pack's tests imagine them.

`write_with_comfy_classes(models)` runs this file under ComfyUI's interpreter (run_in_comfyui); its
`__main__` part builds ComfyUI's LTXVModel, VideoVAE and T5 (random weights, seeded) and saves them
under models/*/comfy_written/ with `comfy.utils.save_torch_file`:

- checkpoints/comfy_written/ltx-video-2b-v0.9.1.safetensors: transformer + VAE with the `config`
  metadata as released (its `vae` entry has no `spatial_padding_mode`, as the 0.9.1 release).
- checkpoints/comfy_written/ltx-video-2b-v0.9.1-t5xxl-zeros.safetensors: the same VAE weights with
  `spatial_padding_mode: "zeros"` in the config, and a transformer for T5-XXL's 4096-wide output
  (for core's CLIPLoader).
- vae/comfy_written/ltx-video-2b-v0.9.1-vae.safetensors: the VAE alone (original keys, `config` metadata).
- diffusion_models/comfy_written/ltx-video-2b-v0.9.1-Q8_0.gguf: the first transformer as a GGUF.
- text_encoders/comfy_written/t5xxl_fp16.safetensors, t5xxl_fp8_e4m3fn.safetensors,
  t5xxl_fp8_e4m3fn_scaled.safetensors: a tiny T5 with T5-XXL's vocabulary (ComfyUI's bundled tokenizer
  fits), as fp16, plain fp8 and ComfyUI's scaled fp8 (`scaled_fp8` marker, per-layer `scale_weight`).
- text_encoders/t5xxl_full_fp8_e4m3fn_scaled.safetensors: a full-size T5-XXL encoder (core's CLIPLoader
  accepts nothing smaller) in ComfyUI's scaled fp8 layout, written as a sparse file: the block weights
  are zeros that take no disk, only the embedding (random), the norms (ones) and the scales are stored,
  so the encoder returns the normalised token embeddings: a token-dependent, nonzero output. Scaled
  rather than plain fp8 because ComfyUI keeps scaled weights in fp8 (9.8 GB peak, 14 s load here), while
  it converts a plain fp8 file to an fp16 model at load (14.4 GB peak, 38 s load on 2 cores).

ComfyUI's VideoVAE has no base-width option (always 128), so the tiny VAE keeps the width at 128 by
giving every channel-changing block a multiplier of 1; its config must therefore travel in the metadata.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBFOLDER = "comfy_written"
CHECKPOINT = "ltx-video-2b-v0.9.1.safetensors"
CHECKPOINT_4096 = "ltx-video-2b-v0.9.1-t5xxl-zeros.safetensors"
VAE = "ltx-video-2b-v0.9.1-vae.safetensors"
GGUF = "ltx-video-2b-v0.9.1-Q8_0.gguf"
T5 = "t5xxl_fp16.safetensors"
T5_FP8 = "t5xxl_fp8_e4m3fn.safetensors"
T5_FP8_SCALED = "t5xxl_fp8_e4m3fn_scaled.safetensors"
T5_FULL = "t5xxl_full_fp8_e4m3fn_scaled.safetensors"  # directly in text_encoders/, as a user puts it

_UP = ["compress_all", {"residual": True, "multiplier": 1}]
TINY_VAE = {  # a 0.9.1-style layout (timestep-conditioned decoder with noise injection), 128 wide throughout
    "_class_name": "CausalVideoAutoencoder",
    "dims": 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "encoder_blocks": [
        ["res_x", {"num_layers": 1}],
        ["compress_all", {}],
        ["res_x", {"num_layers": 1}],
        ["compress_all", {}],
        ["res_x", {"num_layers": 1}],
        ["compress_all", {}],
        ["res_x", {"num_layers": 1}],
    ],
    "decoder_blocks": [
        ["res_x", {"num_layers": 1, "inject_noise": True}],
        _UP,
        ["res_x", {"num_layers": 1, "inject_noise": True}],
        _UP,
        ["res_x", {"num_layers": 1, "inject_noise": True}],
        _UP,
        ["res_x", {"num_layers": 1, "inject_noise": False}],
    ],
    "scaling_factor": 1.0,
    "norm_layer": "pixel_norm",
    "patch_size": 4,
    "latent_log_var": "uniform",
    "use_quant_conv": False,
    "causal_decoder": False,
    "timestep_conditioning": True,
}
TINY_T5 = {  # comfy/text_encoders/t5_config_xxl.json with small widths and T5-XXL's vocabulary
    "d_ff": 64,
    "d_kv": 8,
    "d_model": 32,
    "num_heads": 4,
    "num_layers": 2,
    "dense_act_fn": "gelu_pytorch_tanh",
    "is_gated_act": True,
    "relative_attention_num_buckets": 32,
    "vocab_size": 32128,
    "model_type": "t5",
}


def transformer_metadata(caption_channels: int) -> dict:
    """The `transformer` entry of the config as the 0.9.1 release writes it, at the tiny size: 1 layer
    of 32 heads × 2 (so that files without metadata infer the heads), 128 latent channels."""
    return {
        "_class_name": "Transformer3DModel",
        "activation_fn": "gelu-approximate",
        "attention_bias": True,
        "attention_head_dim": 2,
        "attention_type": "default",
        "caption_channels": caption_channels,
        "cross_attention_dim": 64,
        "double_self_attention": False,
        "dropout": 0.0,
        "in_channels": 128,
        "norm_elementwise_affine": False,
        "norm_eps": 1e-06,
        "norm_num_groups": 32,
        "num_attention_heads": 32,
        "num_embeds_ada_norm": 1000,
        "num_layers": 1,
        "only_cross_attention": False,
        "out_channels": 128,
        "project_to_2d_pos": True,
        "upcast_attention": False,
        "use_linear_projection": False,
        "qk_norm": "rms_norm",
        "standardization_norm": "rms_norm",
        "positional_embedding_type": "rope",
        "positional_embedding_theta": 10000.0,
        "positional_embedding_max_pos": [20, 2048, 2048],
        "timestep_scale_multiplier": 1000,
    }


def write_with_comfy_classes(models: Path) -> None:
    """Write the files listed in the module docstring under `models` (runs ComfyUI's interpreter)."""
    from comfy_server import run_in_comfyui

    run_in_comfyui(Path(__file__), str(models))


# --- what follows runs under ComfyUI's interpreter, with ComfyUI importable ----------------------------


def _randomise(module, seed: int) -> dict:
    """Seeded random values of a sensible scale for every tensor of a ComfyUI module (its classes leave
    weights uninitialised), loaded back strictly; returns the module's state dict."""
    import torch

    from tiny import random_state_dict, random_vae_state_dict

    shapes = {k: v.shape for k, v in module.state_dict().items()}
    vae = any(k.startswith("decoder.") for k in shapes)
    values = random_vae_state_dict(shapes, seed) if vae else random_state_dict(shapes, seed)
    for key in shapes:
        if key.endswith(("mean-of-stds", "mean-of-stds_over_std-of-means")):  # statistics of stds: positive
            values[key] = values[key].abs() + 0.5
    module.load_state_dict(values, strict=True)
    weights = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    assert all(v.float().abs().sum() > 0 for k, v in weights.items() if v.numel() > 1), "a tensor stayed zero"
    assert all(torch.isfinite(v.float()).all() for v in weights.values())
    return weights


def _transformer(caption_channels: int) -> dict:
    import comfy.ops
    from comfy.ldm.lightricks.model import LTXVModel

    meta = transformer_metadata(caption_channels)
    model = LTXVModel(
        in_channels=meta["in_channels"],
        cross_attention_dim=meta["cross_attention_dim"],
        attention_head_dim=meta["attention_head_dim"],
        num_attention_heads=meta["num_attention_heads"],
        caption_channels=caption_channels,
        num_layers=meta["num_layers"],
        operations=comfy.ops.disable_weight_init,
    )
    return _randomise(model, 41 + caption_channels)


def _vae() -> dict:
    from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE

    return _randomise(VideoVAE(config=TINY_VAE), 42)


def _write_checkpoints(models: Path) -> None:
    from comfy.utils import save_torch_file

    from tiny_comfy import _write_gguf

    folders = {name: models / name / SUBFOLDER for name in ("checkpoints", "vae", "diffusion_models")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    vae = _vae()
    vae_keys = {f"vae.{k}": v for k, v in vae.items()}
    zeros = {**TINY_VAE, "spatial_padding_mode": "zeros"}
    for name, caption, vae_config in ((CHECKPOINT, 32, TINY_VAE), (CHECKPOINT_4096, 4096, zeros)):
        transformer = _transformer(caption)
        tensors = {**{f"model.diffusion_model.{k}": v for k, v in transformer.items()}, **vae_keys}
        config = {"transformer": transformer_metadata(caption), "vae": vae_config}
        save_torch_file(tensors, str(folders["checkpoints"] / name), metadata={"config": json.dumps(config)})
        if caption == 32:
            _write_gguf(folders["diffusion_models"] / GGUF, transformer)
    save_torch_file(vae, str(folders["vae"] / VAE), metadata={"config": json.dumps({"vae": TINY_VAE})})


def _tiny_t5(operations) -> object:
    import torch
    from comfy.text_encoders.t5 import T5

    return T5(TINY_T5, dtype=torch.float32, device="cpu", operations=operations)


def _write_tiny_t5(folder: Path) -> None:
    """fp16, plain fp8 (linear weights e4m3fn, the rest fp16) and scaled fp8, as ComfyUI's files."""
    import comfy.ops
    import torch
    from comfy.utils import save_torch_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = _randomise(_tiny_t5(comfy.ops.manual_cast), 43)
    save_torch_file({k: v.half() for k, v in weights.items()}, str(folder / T5))
    linear = {k for k, v in weights.items() if v.ndim == 2 and k != "shared.weight" and "relative_attention" not in k}
    fp8 = {k: v.to(torch.float8_e4m3fn) if k in linear else v.half() for k, v in weights.items()}
    save_torch_file(fp8, str(folder / T5_FP8))

    fp8_max = torch.finfo(torch.float8_e4m3fn).max
    scaled = dict(fp8)
    for key in linear:
        scale = weights[key].abs().max() / fp8_max
        scaled[key] = (weights[key] / scale).to(torch.float8_e4m3fn)
        scaled[key.removesuffix("weight") + "scale_weight"] = scale.reshape(())
    model = _tiny_t5(comfy.ops.scaled_fp8_ops(override_dtype=torch.float8_e4m3fn))  # layout check: strict load
    model.load_state_dict(scaled, strict=True)
    scaled["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)  # the marker ComfyUI detects
    save_torch_file(scaled, str(folder / T5_FP8_SCALED))


def _write_full_t5(path: Path) -> None:
    """T5-XXL (comfy/text_encoders/t5_config_xxl.json) in ComfyUI's scaled fp8 layout without holding it
    in memory: the header is written by hand, the stored tensors after it, and the file is extended with
    truncate() so that the linear weights and the position bias read as zeros from a sparse hole. Stored: the embedding
    (random, bounded), the norms (ones), each linear's `scale_weight` (1) and the `scaled_fp8` marker."""
    import comfy.ops
    import torch
    from comfy.text_encoders.t5 import T5

    config = json.loads((Path(comfy.ops.__file__).parent / "text_encoders" / "t5_config_xxl.json").read_text())
    operations = comfy.ops.scaled_fp8_ops(override_dtype=torch.float8_e4m3fn)
    with torch.device("meta"):
        model = T5(config, torch.float8_e4m3fn, "meta", operations)
    tensors = {k: (v.dtype, tuple(v.shape)) for k, v in model.state_dict().items()}
    tensors = {
        k: (torch.float8_e4m3fn if k.endswith(".weight") else dtype, shape) for k, (dtype, shape) in tensors.items()
    }
    tensors["scaled_fp8"] = (torch.float8_e4m3fn, (0,))
    hole = {k for k in tensors if k.endswith(".weight") and k != "shared.weight" and "norm" not in k}
    order = sorted(tensors, key=lambda k: k in hole)  # stored bytes first, then the hole
    names = {torch.float8_e4m3fn: "F8_E4M3", torch.float32: "F32"}
    header, offset = {}, 0
    for key in order:
        dtype, shape = tensors[key]
        size = torch.Size(shape).numel() * dtype.itemsize
        header[key] = {"dtype": names[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    generator = torch.Generator().manual_seed(44)
    with path.open("wb") as out:
        out.write(len(text).to_bytes(8, "little") + text)
        for key in order[: len(order) - len(hole)]:
            dtype, shape = tensors[key]
            rows = shape[0] if shape else 1
            for start in range(0, rows, 4096):  # the embedding in slices: no 4 GB buffers
                part = (min(4096, rows - start), *shape[1:]) if shape else ()
                if key == "shared.weight":
                    values = torch.randn(part, generator=generator).clamp(-3, 3)
                else:
                    values = torch.ones(part)
                out.write(values.to(dtype).reshape(-1).view(torch.uint8).numpy().tobytes())
        out.truncate(8 + len(text) + offset)


def main(models: Path) -> None:
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management is imported: this torch may have no CUDA
    sys.path.insert(0, str(REPO))  # tiny.py and tiny_comfy.py import ltx_core
    _write_checkpoints(models)
    _write_tiny_t5(models / "text_encoders" / SUBFOLDER)
    _write_full_t5(models / "text_encoders" / T5_FULL)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
