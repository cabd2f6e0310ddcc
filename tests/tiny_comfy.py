"""Tiny random-weight model files in ComfyUI's models/ layout, under the names the workflows use.

Latents have the released 128 channels (ComfyUI's LTX nodes and our empty latent assume them); the
transformer has 32 heads of width 2 so that its GGUF copy needs no config (heads are inferred).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from tiny import (
    TINY_VAE_LAYOUTS,
    random_state_dict,
    random_vae_state_dict,
    tiny_lora,
    tiny_t5_config,
    tiny_transformer_config,
    train_tiny_spiece,
)

CHECKPOINT = "ltx-video-2b-v0.9.1.safetensors"
CHECKPOINT_095 = "ltx-video-2b-v0.9.5.safetensors"  # 0.9.5 VAE layout + causal RoPE: appended conditions
# 0.9.5 VAE layout, causal RoPE and `allowed_inference_steps`: 2B distilled, 0.9.6 or 0.9.8 (named on the loader)
CHECKPOINT_DISTILLED = "ltxv-2b-0.9.8-distilled.safetensors"
CHECKPOINT_13B_DEV = "ltxv-13b-0.9.8-dev.safetensors"  # 48 narrow blocks stand in for the 13B model
GGUF = "ltx-video-2b-v0.9.1-Q8_0.gguf"
SPATIAL_UPSCALER = "ltxv-spatial-upscaler-0.9.8.safetensors"  # in models/latent_upscale_models
VAE = "ltx-video-2b-v0.9.1-vae.safetensors"
T5 = "t5xxl_fp16.safetensors"
T5_FP8 = "t5xxl_fp8_e4m3fn.safetensors"
# LoRAs for the 0.9.5 checkpoint's transformer in ComfyUI's key format (lora_down, lora_up, alpha), in
# models/loras under the names of Lightricks' 2B 0.9.5 effect LoRAs
LORA = "ltxv_095_cakeify_lora.safetensors"
LORA_2 = "ltxv_095_squish_lora.safetensors"
IMAGES = ("example.png", "first_frame.png", "last_frame.png")
VIDEO = "example.mp4"  # the video extension workflow's input
VIDEO_FRAMES, VIDEO_SIZE = 25, (56, 40)  # frames, (height, width): another shape than the workflows' videos
T5_VOCAB = 32128  # T5-XXL's: ids from ComfyUI's bundled T5 tokenizer (32,100 pieces) fit
# What Lightricks' 0.9.5+ single files embed besides the model configs, as tests/test_release.py writes it: the
# scheduler their configs' `sampler: from_checkpoint` reads, and the distilled files' allowed noise levels.
SCHEDULER_095 = {"_class_name": "RectifiedFlowScheduler", "shifting": None, "sampler": "LinearQuadratic"}
DISTILLED_STEPS = [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219]


def _transformer_tensors(causal: bool = False, layers: int = 1) -> tuple[object, dict[str, torch.Tensor]]:
    from ltx_core import LTXVideoTransformer

    cfg = dataclasses.replace(
        tiny_transformer_config(heads=32, head_dim=2, layers=layers, causal=causal),
        in_channels=128,
        out_channels=128,
        caption_channels=32,
    )
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    return cfg, random_state_dict(shapes, 31)


def _vae_tensors(layout: str = "0.9.1") -> tuple[dict, dict[str, torch.Tensor]]:
    from ltx_core import VAEConfig, VideoVAE

    metadata = {**TINY_VAE_LAYOUTS[layout][0], "latent_channels": 128}
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VideoVAE(VAEConfig.from_metadata(metadata)).state_dict().items()}
    return metadata, random_vae_state_dict(shapes, 32)


def _t5_tensors() -> dict[str, torch.Tensor]:
    import transformers

    torch.manual_seed(33)
    weights = transformers.T5EncoderModel(tiny_t5_config(T5_VOCAB)).state_dict()
    return {k: v.clone() for k, v in weights.items() if k != "encoder.embed_tokens.weight"}  # tied to shared


def _write_gguf(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), "ltxv")
    for name, tensor in tensors.items():
        data = tensor.float().numpy()
        if data.ndim == 2:  # linear weights quantized, as city96's files; the rest stays F32
            raw = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_single_file(path: Path, layers: int = 1, vae_layout: str = "0.9.1", **config: object) -> Path:
    """A single file as Lightricks ships it: transformer + VAE, their configs embedded (`config`: more
    entries of the embedded config). A 0.9.5 VAE comes with the causal RoPE fix."""
    from safetensors.torch import save_file

    cfg, transformer = _transformer_tensors(causal=vae_layout != "0.9.1", layers=layers)
    vae_metadata, vae = _vae_tensors(vae_layout)
    tensors = {
        **{f"model.diffusion_model.{k}": v for k, v in transformer.items()},
        **{f"vae.{k}": v for k, v in vae.items()},
    }
    metadata = json.dumps({"transformer": cfg.to_metadata(), "vae": vae_metadata, **config})
    save_file(tensors, path, metadata={"config": metadata})
    return path


def write_upsampler(path: Path, spatial: bool = True, temporal: bool = False, seed: int = 34) -> Path:
    """A latent upsampler file as Lightricks ships them: the model's keys without a prefix, the official
    `LatentUpsampler.config()` as JSON under `config`. 128 latent channels, narrow (32) and one block per stage."""
    from safetensors.torch import save_file

    from ltx_core import LatentUpsampler, LatentUpsamplerConfig

    cfg = LatentUpsamplerConfig(
        mid_channels=32, num_blocks_per_stage=1, spatial_upsample=spatial, temporal_upsample=temporal
    )
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LatentUpsampler(cfg).state_dict().items()}
    config = {"_class_name": "LatentUpsampler", **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}}
    save_file(random_vae_state_dict(shapes, seed), path, metadata={"config": json.dumps(config)})
    return path


def write_comfy_models(models: Path) -> dict[str, Path]:
    """checkpoints/, diffusion_models/, vae/, text_encoders/, latent_upscale_models/ and loras/ under `models`. The
    T5 files lie alone, as users download them: the tokenizer comes from ComfyUI's bundled one."""
    from safetensors.torch import save_file

    for folder in ("checkpoints", "diffusion_models", "vae", "text_encoders", "latent_upscale_models", "loras"):
        (models / folder).mkdir(parents=True, exist_ok=True)
    config, transformer = _transformer_tensors()
    vae_metadata, vae = _vae_tensors()
    write_single_file(models / "checkpoints" / CHECKPOINT)
    write_single_file(models / "checkpoints" / CHECKPOINT_095, vae_layout="0.9.5")
    write_single_file(
        models / "checkpoints" / CHECKPOINT_DISTILLED,
        vae_layout="0.9.5",
        scheduler=SCHEDULER_095,
        allowed_inference_steps=DISTILLED_STEPS,
    )
    write_single_file(models / "checkpoints" / CHECKPOINT_13B_DEV, 48, "0.9.5", scheduler=SCHEDULER_095)
    save_file(vae, models / "vae" / VAE, metadata={"config": json.dumps({"vae": vae_metadata})})
    _write_gguf(models / "diffusion_models" / GGUF, transformer)
    write_upsampler(models / "latent_upscale_models" / SPATIAL_UPSCALER)
    save_file(tiny_lora(config, 35), models / "loras" / LORA)
    save_file(tiny_lora(config, 36, rank=8), models / "loras" / LORA_2)
    t5 = _t5_tensors()
    save_file(t5, models / "text_encoders" / T5)
    fp8 = {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 and k != "shared.weight" else v for k, v in t5.items()}
    save_file(fp8, models / "text_encoders" / T5_FP8)
    return {"models": models}


def write_bundled_tokenizer(folder: Path) -> Path:
    """A stand-in for ComfyUI's bundled T5 tokenizer, for the tests that run without ComfyUI."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(train_tiny_spiece())
    return folder / "spiece.model"


def write_input_images(folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index, name in enumerate(IMAGES):
        pixels = (rng.random((48 + 8 * index, 40, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name)


def input_video_frames() -> torch.Tensor:
    """VIDEO's frames (T, H, W, 3) in [0, 1]: smooth moving stripes, which H.264 keeps closely."""
    t, y, x = torch.meshgrid(
        *(torch.arange(n, dtype=torch.float32) for n in (VIDEO_FRAMES, *VIDEO_SIZE)), indexing="ij"
    )
    phase = x / 6 + y / 9 + t / 4
    return torch.stack([0.5 + 0.4 * torch.sin(phase + shift) for shift in (0.0, 2.0, 4.0)], dim=-1)


def write_input_video(folder: Path) -> Path:
    """VIDEO, an H.264 mp4 at 25 fps, in the input folder `folder`."""
    from ltx_core.media import write_mp4

    return write_mp4(folder / VIDEO, input_video_frames(), 25.0, crf=12)
