"""The cases of tests/test_parallel.py: each runs one generation step of the pipeline (sampling or decoding)
on tiny models, in one process (parallel=None) or split over the processes of a gloo group, and the
entry point of those processes (`run_ranks`)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from ltx_core.config import VAEConfig
from ltx_core.model.ops import describe_ops
from ltx_core.model.transformer import LTXVideoTransformer
from ltx_core.model.vae.autoencoder import VideoVAE
from ltx_core.parallel import Parallel, decode_split, init_parallel
from ltx_core.pipeline import Models, Settings, text_to_video
from ltx_core.sampling.conditioning import FrameCondition
from ltx_core.sampling.guidance import Guidance
from ltx_core.sampling.noise import draw_noise, seeded_generator
from ltx_core.sampling.sampler import sample
from ltx_core.sampling.schedule import shifted_sigmas
from ltx_core.text.encoder import Conditioning, T5TextEncoder
from ltx_core.text.tokenizer import PromptTokenizer
from tiny import TINY_VAE_LAYOUTS, random_state_dict, random_vae_state_dict, tiny_t5_config, tiny_transformer_config

LATENT = (16, 3, 3, 5)  # C, F, H, W: 45 video tokens, which 2 and 4 do not divide
STEPS = 3
STG = {"stg_scale": 1.0, "skip_block_list": (1,), "rescaling_scale": 0.7}


@functools.cache
def transformer() -> LTXVideoTransformer:
    cfg = tiny_transformer_config(heads=4, head_dim=8, layers=2)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    return LTXVideoTransformer.from_state_dict(cfg, random_state_dict(shapes, 3))


@functools.cache
def vae() -> VideoVAE:
    cfg = VAEConfig.from_metadata(TINY_VAE_LAYOUTS["0.9.1"][0])  # noise injection and timestep conditioning
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VideoVAE(cfg).state_dict().items()}
    return VideoVAE.from_state_dict(cfg, random_vae_state_dict(shapes, 4))


def _text(batch: int) -> Conditioning:
    gen = torch.Generator().manual_seed(9)
    negative = Conditioning(torch.randn(batch, 4, 24, generator=gen), torch.tensor([[1, 1, 0, 0]] * batch))
    return Conditioning(torch.randn(batch, 5, 24, generator=gen), torch.ones(batch, 5, dtype=torch.int64), negative)


def _sample(parallel: Parallel | None, batch: int = 1, guidance: Guidance | None = None, **kwargs) -> torch.Tensor:
    generator = seeded_generator(7)  # the video's noise first, then everything else the loop draws
    noise = draw_noise((batch, *LATENT), generator)
    sigmas = shifted_sigmas(STEPS, LATENT[1] * LATENT[2] * LATENT[3])
    with torch.inference_mode():
        return sample(
            transformer(),
            noise,
            sigmas,
            _text(batch),
            guidance=guidance,
            generator=generator,
            parallel=parallel,
            **kwargs,
        )


def cfg(parallel: Parallel | None) -> torch.Tensor:
    """Text to video with CFG: 2 rows a step."""
    return _sample(parallel, guidance=Guidance(guidance_scale=3.0))


def stg(parallel: Parallel | None) -> torch.Tensor:
    """CFG + STG (whole perturbed blocks) with CFG-zero*: 3 rows a step."""
    guidance = Guidance(guidance_scale=3.0, stg_mode="transformer_block", cfg_star_rescale=True, **STG)
    return _sample(parallel, guidance=guidance)


def stg_batch(parallel: Parallel | None) -> torch.Tensor:
    """CFG + STG (attention values) on two videos: 6 rows a step."""
    return _sample(parallel, batch=2, guidance=Guidance(guidance_scale=3.0, **STG))


def keyframes(parallel: Parallel | None) -> torch.Tensor:
    """A first frame in place and a last frame appended (15 more tokens: 60), re-noised each step: noise
    levels per token."""
    gen = torch.Generator().manual_seed(11)
    first, last = (torch.randn(1, LATENT[0], 1, *LATENT[2:], generator=gen) for _ in range(2))
    conditions = [FrameCondition(first, 0, 1.0), FrameCondition(last, 16, 0.8)]
    guidance = Guidance(guidance_scale=3.0, **STG)
    return _sample(parallel, guidance=guidance, conditions=conditions, layout="appended", cond_noise_scale=0.15)


def distilled(parallel: Parallel | None) -> torch.Tensor:
    """No guidance and stochastic steps: 1 row a step, fresh noise each step."""
    return _sample(parallel, guidance=Guidance(guidance_scale=1.0), stochastic_sampling=True)


def _decode(parallel: Parallel | None, frames: int) -> torch.Tensor | None:
    latents = torch.randn(1, 16, frames, 2, 2, generator=torch.Generator().manual_seed(5))
    generator = seeded_generator(6)
    with torch.inference_mode():
        if parallel is None:
            return vae().decode(latents, 0.05, noise_scale=0.025, generator=generator, tiling="off")
        return decode_split(parallel, vae(), latents, 0.05, noise_scale=0.025, generator=generator)


def decode(parallel: Parallel | None) -> torch.Tensor | None:
    """0.9.1 decode of 9 latent frames (65 pixel frames), noise injected, split 5 + 4 or 3 + 2 + 2 + 2."""
    return _decode(parallel, 9)


def decode_short(parallel: Parallel | None) -> torch.Tensor | None:
    """3 latent frames: too few for 4 ranks to each hold a halo, so rank 0 decodes alone."""
    return _decode(parallel, 3)


@functools.cache
def models() -> Models:
    """Tiny models for the whole pipeline: the transformer reads the tiny T5's 32 channels."""
    import transformers

    cfg = dataclasses.replace(tiny_transformer_config(heads=4, head_dim=8, layers=2), caption_channels=32)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    torch.manual_seed(23)
    t5 = transformers.T5EncoderModel(tiny_t5_config()).eval()
    tokenizer = PromptTokenizer(Path("letters"), lambda prompts: [[2 + ord(c) % 90 for c in p] for p in prompts], 100)
    transformer_ = LTXVideoTransformer.from_state_dict(cfg, random_state_dict(shapes, 12))
    return Models(transformer_, vae(), T5TextEncoder(t5, tokenizer), "0.9.1")


def pipeline(parallel: Parallel | None) -> torch.Tensor:
    """text_to_video with the release's CFG + STG (STG on block 1 of 2), 64×64×33: prompts, sampling and
    decoding (5 latent frames: split on 2 ranks, one rank alone on 4)."""
    settings = Settings(width=64, height=64, frames=33, steps=2, stg_blocks=(1,), device="cpu", parallel=parallel)
    return text_to_video(models(), "a red fox", settings=settings)


CASES: dict[str, Callable[[Parallel | None], torch.Tensor | None]] = {
    f.__name__: f for f in (cfg, stg, stg_batch, keyframes, distilled, decode, decode_short, pipeline)
}


def _wrong_order(tensors: list[torch.Tensor], shards) -> list[torch.Tensor]:
    """A broken all-to-all for the negative control: the ranks' token runs joined in reverse order."""
    return [torch.cat(t.split(shards.sizes, dim=1)[::-1], dim=1) for t in _wrong_order.original(tensors, shards)]


def run_ranks(rank: int, world: int, init_file: str, layouts: list[tuple[int, int]], out: str) -> None:
    """One process of a gloo group of `world`: every case on every (cfg, ulysses) layout, how the transformer
    computes after them (`describe_ops`), then the Ulysses layouts' `cfg` case again with a wrong
    all-to-all; saves {(case, cfg, ulysses): result} to `out` formatted with its rank."""
    from ltx_core.parallel import ulysses

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results = {}
    try:
        for layout in layouts:
            parallel = init_parallel(*layout)
            for name, case in CASES.items():
                results[(name, *layout)] = case(parallel)
            results[("ops", *layout)] = describe_ops(transformer())
            if layout[1] > 1:
                _wrong_order.original = ulysses.tokens_to_heads
                ulysses.tokens_to_heads = _wrong_order
                try:
                    results[("wrong_order", *layout)] = cfg(parallel)
                finally:
                    ulysses.tokens_to_heads = _wrong_order.original
        torch.save(results, out.format(rank=rank))
    finally:
        dist.destroy_process_group()
