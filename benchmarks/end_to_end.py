"""Full-size text-to-video on a GPU with random weights: seconds per stage and end to end.

2B transformer, 0.9.1 VAE and T5 v1.1 XXL at their real sizes in bf16, all resident on the GPU
(the default mode), 768×512×121 video, classifier-free guidance. Speed does not depend on the
weights' values; the prompt's token ids come from a stand-in tokenizer (T5's vocabulary size).
Usage: python benchmarks/end_to_end.py [--steps 20 50] [--frames 121]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltx_core import (  # noqa: E402
    LTXV_2B,
    VAE_091,
    VAE_095,
    LTXVideoTransformer,
    Models,
    Settings,
    TransformerConfig,
    VAEConfig,
    VideoVAE,
    text_to_video,
)
from ltx_core.loading.materialize import materialize  # noqa: E402
from ltx_core.model.patchify import to_tokens  # noqa: E402
from ltx_core.sampling.noise import seeded_noise  # noqa: E402
from ltx_core.sampling.sampler import sample  # noqa: E402
from ltx_core.sampling.schedule import shifted_sigmas  # noqa: E402
from ltx_core.text.encoder import T5TextEncoder  # noqa: E402
from ltx_core.text.tokenizer import PromptTokenizer  # noqa: E402

DEVICE, DTYPE = "cuda", torch.bfloat16  # --small switches to the CPU and tiny models, to check the script
PROMPT = "a red fox runs through a snowy forest at dawn, golden light, the camera follows it slowly " * 2


def random_fill(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights of a sane scale for a module built on `meta`, created directly on the GPU."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    weights = {}
    for key, meta in module.state_dict().items():
        t = torch.randn(meta.shape, generator=gen, device=DEVICE)
        if key.endswith("timestep_scale_multiplier"):
            t = torch.full(meta.shape, 1000.0, device=DEVICE)
        elif "std-of-means" in key or "norm" in key.rsplit(".", 2)[-2:][0]:
            t = 1 + 0.1 * t
        else:
            t = t * (meta.shape[1:].numel() ** -0.5 if meta.ndim >= 2 else 0.1)
        weights[key] = t.to(DTYPE)
    return materialize(module, weights)


def small_transformer_config(like: TransformerConfig, caption_channels: int, channels: int) -> TransformerConfig:
    """A narrow transformer of the kind of `like`: its depth (which also tells 13B from 2B,
    loading/detect.py, and holds the blocks that STG skips) and its causal fix."""
    return TransformerConfig(
        num_layers=like.num_layers,
        num_heads=4,
        head_dim=16,
        cross_attention_dim=64,
        caption_channels=caption_channels,
        in_channels=channels,
        out_channels=channels,
        causal_temporal_positioning=like.causal_temporal_positioning,
    )


def build_models(
    small: bool, transformer_cfg: TransformerConfig = LTXV_2B, vae_layout: str = "0.9.1", release: str = "0.9.1"
) -> Models:
    """Random models: the transformer of `transformer_cfg` and the VAE of `vae_layout` ("0.9.1" or
    "0.9.5") at full size, or tiny ones of the same kind and depth with `small`, told `release`."""
    import transformers

    t5_width, t5_layers, t5_heads, ff = (64, 2, 4, 128) if small else (4096, 24, 64, 10240)
    vae_cfg = {"0.9.1": VAE_091, "0.9.5": VAE_095}[vae_layout]
    if small:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny import TINY_VAE_LAYOUTS

        vae_cfg = VAEConfig.from_metadata(TINY_VAE_LAYOUTS[vae_layout][0])
        transformer_cfg = small_transformer_config(transformer_cfg, t5_width, vae_cfg.latent_channels)
    with torch.device("meta"):
        transformer = LTXVideoTransformer(transformer_cfg)
        vae = VideoVAE(vae_cfg)
        t5_config = transformers.T5Config(
            vocab_size=32128,
            d_model=t5_width,
            d_kv=t5_width // t5_heads,
            num_heads=t5_heads,
            d_ff=ff,
            num_layers=t5_layers,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
            use_cache=False,
        )
        t5 = transformers.T5EncoderModel(t5_config)
    tokenizer = PromptTokenizer(
        source=Path("stand-in"),
        encode_batch=lambda prompts: [[2 + hash(w) % 32000 for w in p.split()] for p in prompts],
        vocab_size=32128,
    )
    text_encoder = T5TextEncoder(random_fill(t5, 2), tokenizer)
    return Models(random_fill(transformer, 0), random_fill(vae, 1), text_encoder, release)


class Timer:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float]] = []

    def __call__(self, name: str, fn, *args, **kwargs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        torch.cuda.synchronize()
        self.rows.append((name, time.perf_counter() - start))
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--small", action="store_true", help="tiny models on the CPU: checks the script runs")
    args = parser.parse_args()
    global DEVICE, DTYPE
    if args.small:
        DEVICE, DTYPE = "cpu", torch.float32
        torch.cuda.synchronize = lambda: None  # nothing to wait for on the CPU
        torch.cuda.reset_peak_memory_stats = lambda: None
        torch.cuda.max_memory_allocated = lambda: 0
        torch.cuda.get_device_name = lambda: "CPU (--small)"
    t0 = time.perf_counter()
    models = build_models(args.small)
    print(f"built random full-size models in {time.perf_counter() - t0:.1f} s", flush=True)
    settings = dict(width=768, height=512, frames=args.frames, device=DEVICE)
    shape = (1, models.transformer.config.in_channels, (args.frames - 1) // 8 + 1, 16, 24)
    tokens = shape[2] * shape[3] * shape[4]
    timer = Timer()
    with torch.inference_mode():
        text_to_video(models, PROMPT, settings=Settings(**settings, steps=2))  # warm-up: kernels, allocator
        torch.cuda.reset_peak_memory_stats()
        text = timer("text encode (T5-XXL, 2 prompts × 128 tokens)", models.text_encoder.encode, PROMPT, "")
        for steps in args.steps:
            sigmas = shifted_sigmas(steps, tokens)
            noise = seeded_noise(shape, 0, device=DEVICE)
            latents = timer(f"sampling, {steps} CFG steps", sample, models.transformer, noise, sigmas, text)
        timer("VAE decode (0.9.1, t=0.05, noise 0.025)", models.vae.decode, latents, 0.05, noise_scale=0.025)
        for steps in args.steps:
            timer(
                f"end to end, {steps} steps",
                text_to_video,
                models,
                PROMPT,
                settings=Settings(**settings, steps=steps),
            )
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"\n{torch.cuda.get_device_name()}, bf16, 768×512×{args.frames} ({tokens} tokens), all models on the GPU")
    print(f"peak GPU memory: {peak:.1f} GiB; latent tokens {to_tokens(latents).shape[1]}")
    for name, seconds in timer.rows:
        print(f"{name:<48}{seconds:>8.2f} s")


if __name__ == "__main__":
    main()
