"""Tiny random-weight models shared by the tests."""

from __future__ import annotations

import torch

from ltx_core import TransformerConfig


def tiny_transformer_config(
    heads: int = 2, head_dim: int = 16, layers: int = 2, causal: bool = False
) -> TransformerConfig:
    dim = heads * head_dim
    return TransformerConfig(
        num_layers=layers,
        num_heads=heads,
        head_dim=head_dim,
        in_channels=16,
        out_channels=16,
        caption_channels=24,
        cross_attention_dim=dim,
        causal_temporal_positioning=causal,
    )


def random_state_dict(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    """Random weights of a sensible scale for every tensor: norm weights near 2 (sharp attention, so
    positions matter), linears ~ 1/sqrt(fan_in), biases and modulation tables small."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=gen)
        module = key.rsplit(".", 2)[-2] if key.count(".") else ""
        if "norm" in module and key.endswith(".weight"):
            out[key] = 2 + 0.4 * noise
        elif key.endswith("scale_shift_table"):
            out[key] = 0.5 * noise
        elif len(shape) == 2:
            out[key] = noise / shape[1] ** 0.5
        else:
            out[key] = 0.1 * noise
    return out


# --- tiny video VAEs: the three released layouts with 1–2 res blocks and base width 8 ----------------

TINY_LATENT = 16
_RES = {"residual": True, "multiplier": 2}
_ENCODER_090 = [
    ["res_x", 1],
    ["compress_all", 1],
    ["res_x_y", 1],
    ["res_x", 1],
    ["compress_all", 1],
    ["res_x_y", 1],
    ["res_x", 1],
    ["compress_all", 1],
    ["res_x", 1],
    ["res_x", 2],
]


def _decoder_091(inject: bool) -> list:
    noisy = {"num_layers": 1, "inject_noise": inject}
    return [
        ["res_x", noisy],
        ["compress_all", _RES],
        ["res_x", noisy],
        ["compress_all", _RES],
        ["res_x", noisy],
        ["compress_all", _RES],
        ["res_x", {"num_layers": 2, "inject_noise": False}],
    ]


_ORIGINAL_COMMON = {
    "_class_name": "CausalVideoAutoencoder",
    "dims": 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": TINY_LATENT,
    "encoder_base_channels": 8,
    "decoder_base_channels": 8,
    "norm_layer": "pixel_norm",
    "patch_size": 4,
    "latent_log_var": "uniform",
    "use_quant_conv": False,
    "causal_decoder": False,
}
_DIFFUSERS_COMMON = {"in_channels": 3, "out_channels": 3, "latent_channels": TINY_LATENT, "patch_size": 4}
_DIFFUSERS_DECODER_091 = {
    "decoder_block_out_channels": (16, 32, 64),
    "decoder_layers_per_block": (1, 1, 1, 2),
    "decoder_spatio_temporal_scaling": (True, True, True),
    "upsample_residual": (True, True, True),
    "upsample_factor": (2, 2, 2),
    "timestep_conditioning": True,
}

# layout → (original `vae` metadata, diffusers AutoencoderKLLTXVideo kwargs)
TINY_VAE_LAYOUTS = {
    "0.9.0": (
        {**_ORIGINAL_COMMON, "blocks": _ENCODER_090},
        {
            **_DIFFUSERS_COMMON,
            "block_out_channels": (8, 16, 32, 32),
            "layers_per_block": (1, 1, 1, 1, 2),
            "decoder_block_out_channels": (8, 16, 32, 32),
            "decoder_layers_per_block": (1, 1, 1, 1, 2),
        },
    ),
    "0.9.1": (
        {
            **_ORIGINAL_COMMON,
            "encoder_blocks": _ENCODER_090,
            "decoder_blocks": _decoder_091(True),
            "timestep_conditioning": True,
        },
        {
            **_DIFFUSERS_COMMON,
            "block_out_channels": (8, 16, 32, 32),
            "layers_per_block": (1, 1, 1, 1, 2),
            **_DIFFUSERS_DECODER_091,
            "decoder_inject_noise": (True, True, True, False),
        },
    ),
    "0.9.5": (
        {
            **_ORIGINAL_COMMON,
            "encoder_blocks": [
                ["res_x", 1],
                ["compress_space_res", {"multiplier": 2}],
                ["res_x", 1],
                ["compress_time_res", {"multiplier": 2}],
                ["res_x", 1],
                ["compress_all_res", {"multiplier": 2}],
                ["res_x", 1],
                ["compress_all_res", {"multiplier": 2}],
                ["res_x", 2],
            ],
            "decoder_blocks": _decoder_091(False),
            "timestep_conditioning": True,
        },
        {
            **_DIFFUSERS_COMMON,
            "block_out_channels": (8, 16, 32, 64, 128),
            "down_block_types": ("LTXVideo095DownBlock3D",) * 4,
            "layers_per_block": (1, 1, 1, 1, 2),
            "spatio_temporal_scaling": (True, True, True, True),
            "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
            "spatial_compression_ratio": 32,  # as in the released config: not derivable from the flags
            "temporal_compression_ratio": 8,
            **_DIFFUSERS_DECODER_091,
            "decoder_inject_noise": (False, False, False, False),
        },
    ),
}


def random_vae_state_dict(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    """Random VAE weights (diffusers or original keys) that keep activations O(1): convs and linears
    ~ 1/sqrt(fan_in), noise scales and modulation tables clearly non-zero, the timestep multiplier at
    its real value 1000 and positive latent standard deviations."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=gen)
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "timestep_scale_multiplier":
            out[key] = torch.tensor(1000.0)
        elif leaf in ("latents_std", "std-of-means"):
            out[key] = 0.5 + torch.rand(shape, generator=gen)
        elif "scale_shift_table" in leaf or leaf.startswith("per_channel_scale"):
            out[key] = 0.5 * noise
        elif len(shape) >= 2:
            out[key] = noise / (shape[1:].numel()) ** 0.5
        else:
            out[key] = 0.2 * noise + (1.0 if "norm" in key and leaf == "weight" else 0.0)
    return out


# --- a tiny SentencePiece tokenizer with T5's special ids ------------------------------------------

TOKENIZER_WORDS = (
    "the quick brown jackdaw vexed zephyr quilts big mix of ultraviolet a red fox jumps over lazy dog while "
    "camera pans slowly across misty forest at dawn with golden light and soft shadows woman walks through "
    "city street night neon signs reflect on wet pavement"
).split()


def train_tiny_spiece(vocab_size: int = 100) -> bytes:
    """A unigram SentencePiece model (serialised) with pad 0, eos 1, unk 2 and no BOS, as T5's."""
    import io
    import random

    import sentencepiece

    rng = random.Random(0)
    sentences = [" ".join(rng.choice(TOKENIZER_WORDS) for _ in range(12)) for _ in range(300)]
    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buffer,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    return buffer.getvalue()


# --- complete tiny checkpoints, as a user would have them ------------------------------------------


def write_tiny_checkpoints(folder, layout: str = "0.9.1") -> dict[str, object]:
    """An original-format single file (transformer + VAE + embedded config) and a transformers T5
    folder with its spiece.model, all tiny and random. Returns their paths."""
    import dataclasses
    import json
    from pathlib import Path

    import transformers
    from safetensors.torch import save_file

    from ltx_core import LTXVideoTransformer, VAEConfig, VideoVAE

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # the 0.9.5 layout belongs to the releases with the causal RoPE fix; their embedded config says so.
    # 28 blocks, as the released 2B model: its releases' STG perturbs block 19.
    causal = layout == "0.9.5"
    cfg = dataclasses.replace(
        tiny_transformer_config(heads=2, head_dim=16, layers=28, causal=causal), caption_channels=32
    )
    vae_metadata = TINY_VAE_LAYOUTS[layout][0]
    with torch.device("meta"):
        transformer_shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
        vae_shapes = {k: v.shape for k, v in VideoVAE(VAEConfig.from_metadata(vae_metadata)).state_dict().items()}
    tensors = {f"model.diffusion_model.{k}": v for k, v in random_state_dict(transformer_shapes, 21).items()}
    tensors.update({f"vae.{k}": v for k, v in random_vae_state_dict(vae_shapes, 22).items()})
    checkpoint = folder / "ltx-video-tiny.safetensors"
    config = {"transformer": cfg.to_metadata(), "vae": vae_metadata}
    save_file(tensors, checkpoint, metadata={"config": json.dumps(config)})

    spiece = train_tiny_spiece()
    torch.manual_seed(23)
    text_encoder = folder / "t5"
    transformers.T5EncoderModel(tiny_t5_config()).save_pretrained(text_encoder)
    (text_encoder / "spiece.model").write_bytes(spiece)
    return {"checkpoint": checkpoint, "text_encoder": text_encoder}


def write_tiny_upsampler(
    path, spatial: bool = True, temporal: bool = False, channels: int = TINY_LATENT, seed: int = 24
):
    """A tiny latent upsampler file as Lightricks releases them (the model's keys, the official
    `LatentUpsampler.config()` as JSON under `config`) for latents of `channels`: 32 wide, one block per
    stage. Returns the path."""
    import dataclasses
    import json

    from safetensors.torch import save_file

    from ltx_core import LatentUpsampler, LatentUpsamplerConfig

    cfg = LatentUpsamplerConfig(
        in_channels=channels,
        mid_channels=32,
        num_blocks_per_stage=1,
        spatial_upsample=spatial,
        temporal_upsample=temporal,
    )
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LatentUpsampler(cfg).state_dict().items()}
    config = {"_class_name": "LatentUpsampler", **dataclasses.asdict(cfg)}
    save_file(random_vae_state_dict(shapes, seed), path, metadata={"config": json.dumps(config)})
    return path


def diffusers_transformer(cfg: TransformerConfig):
    """diffusers' LTXVideoTransformer3DModel with the shape of `cfg`, in eval mode (random init)."""
    from diffusers import LTXVideoTransformer3DModel

    model = LTXVideoTransformer3DModel(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        cross_attention_dim=cfg.cross_attention_dim,
        num_layers=cfg.num_layers,
        caption_channels=cfg.caption_channels,
    )
    return model.eval()


def diffusers_ltx_scheduler():
    """diffusers' scheduler configured as LTX-Video 0.9.0 / 0.9.1 ship it (resolution shift, terminal 0.1)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )


def tiny_t5_config(vocab_size: int = 100):
    """A 2-layer T5 v1.1 encoder config (gated GELU, 32 relative buckets), width 32."""
    import transformers

    return transformers.T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        num_heads=4,
        d_ff=64,
        num_layers=2,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
    )


def tiny_lora(config: TransformerConfig, seed: int, rank: int = 4, prefix: str = "diffusion_model.") -> dict:
    """A random LoRA on every linear layer of the transformer blocks of a model of `config`, in ComfyUI's
    key format (`<prefix><module>.lora_down.weight`, `.lora_up.weight`, `.alpha`, as ComfyUI's LoRA
    loader maps them onto `diffusion_model.*` weights), moving each layer's output by a few percent."""
    from ltx_core import LTXVideoTransformer
    from ltx_core.model.storage import linear_layers

    with torch.device("meta"):
        model = LTXVideoTransformer(config)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, layer in linear_layers(model, "transformer_blocks."):
        inputs, outputs = layer.in_features, layer.out_features
        tensors[f"{prefix}{name}.lora_down.weight"] = torch.randn(rank, inputs, generator=gen) / inputs**0.5
        tensors[f"{prefix}{name}.lora_up.weight"] = torch.randn(outputs, rank, generator=gen) * 0.2 / rank**0.5
        tensors[f"{prefix}{name}.alpha"] = torch.tensor(float(rank) / 2)  # scale 0.5, so that alpha counts
    return tensors
