"""The core pipeline samples each release as Lightricks' official `LTXVideoPipeline` (ltx_video 0.1.2) does
when called with that release's official config values, on the same tiny weights: `text_to_video` and
`keyframes_to_video` with default Settings (everything from the release) against the official pipeline
given the config's timesteps or scheduler and steps, guidance, STG and stochastic sampling.

- 0.9.8-distilled 2B (configs/ltxv-2b-0.9.8-distilled.yaml): its 8 fixed noise levels (first pass, then
  the second pass's last), guidance 1, STG 0, checked by the pipeline against the file's
  `allowed_inference_steps`; with a keyframe at the first and at the last frame.
- 0.9.6-distilled 2B (ltxv-2b-0.9.6-distilled.yaml): 8 linear-quadratic steps from its scheduler,
  guidance 1, stochastic sampling.
- 0.9.5 2B (ltxv-2b-0.9.5.yaml): 40 linear-quadratic steps, CFG 3 with STG 1 on block 19 rescaled by 0.7.

What is compared: the final latents (before decoding), captured from the pipeline's call of `sample()`,
whose text embeddings (our tiny T5's, 256 tokens as 0.9.5+ pad) are handed to the official pipeline.
Two adapters make both sides draw the same numbers, as in test_conditioning_parity.py and
test_guidance_parity.py: the pipeline's noise is drawn token-major as the official pipeline draws it
(from the same seeded generator, which then draws the appended conditions' and re-noising's noise on
both sides), and the official scheduler's stochastic noise, drawn from torch's global generator, is
routed to the pipeline's generator. The official VAE encoder is replaced by the latents our VAE gave the
pipeline for each keyframe (VAE parity is tested elsewhere).

Tolerance 1e-4 max |Δ| in float32. Negative controls must miss by more than 1e-2: for 0.9.5 the pipeline
as it ran before (CFG only), for 0.9.6-distilled without stochastic sampling, for 0.9.8-distilled with
the generic CFG 3.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltx_core import LTXVideoTransformer, VAEConfig, VideoVAE
from ltx_core.loading.text_encoder import load_text_encoder
from ltx_core.model.patchify import from_tokens
from ltx_core.pipeline import Keyframe, Models, keyframes_to_video, text_to_video
from ltx_core.settings import Settings
from official import official_pipeline, official_transformer, official_vae
from tiny import TINY_VAE_LAYOUTS, random_state_dict, random_vae_state_dict, tiny_transformer_config

pytestmark = pytest.mark.parity

TOL = 1e-4
CONTROL = 1e-2
FRAMES, HEIGHT, WIDTH = 17, 64, 96  # → latent 3 × 2 × 3 = 18 tokens
SEED = 5
COND_NOISE = 0.15  # inference.py `image_cond_noise_scale` default: the official command line's
FPS = 25  # the pipeline's default for every release (defaults.py); the official call is given the same

# configs/ltxv-2b-0.9.8-distilled.yaml: first_pass and second_pass (timesteps, guidance_scale 1, stg_scale 0,
# rescaling_scale 1, skip_block_list [42]), stochastic_sampling false; one pass runs the first pass's seven
# noise levels and the second pass's last
DISTILLED_098 = dict(
    timesteps=[1.0000, 0.9937, 0.9875, 0.9812, 0.9750, 0.9094, 0.7250, 0.4219],
    guidance_scale=1,
    stg_scale=0,
    rescaling_scale=1,
    skip_block_list=[42],
    stochastic_sampling=False,
)
# configs/ltxv-2b-0.9.6-distilled.yaml: num_inference_steps 8, guidance_scale 1, stg_scale 0,
# rescaling_scale 1, stochastic_sampling true; sampler from_checkpoint (the file's LinearQuadratic)
DISTILLED_096 = dict(num_inference_steps=8, guidance_scale=1, stg_scale=0, rescaling_scale=1, stochastic_sampling=True)
# configs/ltxv-2b-0.9.5.yaml: num_inference_steps 40, guidance_scale 3, stg_scale 1, rescaling_scale 0.7,
# skip_block_list [19], stg_mode attention_values; sampler from_checkpoint (LinearQuadratic)
DEV_095 = dict(num_inference_steps=40, guidance_scale=3, stg_scale=1, rescaling_scale=0.7, skip_block_list=[19])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one CPU thread is faster than several, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclasses.dataclass
class Setup:
    models: Models  # ours, as loaded for 0.9.5 (the releases are swapped by name)
    official_transformer: object
    official_vae: object
    module: object  # ltx_video.pipelines.pipeline_ltx_video


@pytest.fixture(scope="module")
def setup() -> Setup:
    module = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")
    from hub_server import tiny_files

    # 20 blocks: the 2B releases' STG perturbs block 19; 0.9.5+ positions (the causal fix)
    cfg = dataclasses.replace(
        tiny_transformer_config(heads=2, head_dim=16, layers=20, causal=True), caption_channels=32
    )  # the tiny T5's width
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    weights = random_state_dict(shapes, 91)
    transformer = LTXVideoTransformer.from_state_dict(cfg, dict(weights))
    vae_metadata = TINY_VAE_LAYOUTS["0.9.5"][0]
    vae_cfg = VAEConfig.from_metadata(vae_metadata)
    with torch.device("meta"):
        vae_shapes = {k: v.shape for k, v in VideoVAE(vae_cfg).state_dict().items()}
    vae = VideoVAE.from_state_dict(vae_cfg, random_vae_state_dict(vae_shapes, 92))
    t5, _ = load_text_encoder(tiny_files()["text_encoder"], dtype=torch.float32, device="cpu")
    models = Models(transformer, vae, t5, "0.9.5")
    return Setup(models, official_transformer(cfg, weights), official_vae(vae_metadata), module)


def _ours(setup: Setup, monkeypatch, release: str, keyframes=(), **settings) -> tuple[torch.Tensor, dict]:
    """The pipeline's final latents for `release` (defaults everywhere but `settings`) and what it handed
    `sample()`: its text embeddings and the keyframes' latents."""
    from ltx_core import pipeline

    seen = {}
    real_sample = pipeline.sample

    def sample(*args, **kwargs):
        seen["text"], seen["conditions"] = args[3], kwargs["conditions"]
        seen["latents"] = real_sample(*args, **kwargs)
        return seen["latents"]

    def token_major(shape, generator, *, device="cpu", dtype=torch.float32):  # the official draw
        b, c, f, h, w = shape
        return from_tokens(torch.randn(b, f * h * w, c, generator=generator), f, h, w).to(device, dtype)

    models = dataclasses.replace(setup.models, release=release)
    chosen = Settings(width=WIDTH, height=HEIGHT, frames=FRAMES, seed=SEED, device="cpu", **settings)
    with monkeypatch.context() as m:
        m.setattr(pipeline, "sample", sample)
        m.setattr(pipeline, "draw_noise", token_major)
        if keyframes:
            keyframes_to_video(models, keyframes, "a red fox", settings=chosen, image_crf=0)
        else:
            text_to_video(models, "a red fox", settings=chosen)
    return seen["latents"], seen


def _official(setup: Setup, monkeypatch, seen: dict, keyframes=(), **config) -> torch.Tensor:
    """The official pipeline's final latents for the config values `config`, given our text embeddings and
    keyframe latents; its scheduler as the 0.9.5+ files configure it (LinearQuadratic), or plain for
    explicit timesteps, which it checks against the distilled file's `allowed_inference_steps`."""
    from ltx_video.schedulers.rf import RectifiedFlowScheduler
    from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy

    explicit = "timesteps" in config
    scheduler = RectifiedFlowScheduler() if explicit else RectifiedFlowScheduler(sampler="LinearQuadratic")
    allowed = config["timesteps"] if explicit else None
    pipe = official_pipeline(setup.official_transformer, setup.official_vae, scheduler, allowed)
    text, generator = seen["text"], torch.Generator().manual_seed(SEED)
    # without CFG no negative prompt is encoded: the official pipeline is handed zeros, which it never reads
    negative = text.negative or dataclasses.replace(text, context=text.context * 0, mask=text.mask * 0)
    latents = iter(condition.latents for condition in seen["conditions"])
    items = [
        setup.module.ConditioningItem(torch.zeros(1, 3, 1, HEIGHT, WIDTH), key.frame % FRAMES, key.strength)
        for key in keyframes
    ]
    with monkeypatch.context() as m:
        m.setattr(torch, "randn_like", lambda t, **_: torch.randn(t.shape, generator=generator, dtype=t.dtype))
        m.setattr(setup.module, "vae_encode", lambda media, vae, **_: next(latents).clone())
        return pipe(
            height=HEIGHT,
            width=WIDTH,
            num_frames=FRAMES,
            frame_rate=FPS,
            negative_prompt=None,
            generator=generator,
            prompt_embeds=text.context,
            prompt_attention_mask=text.mask,
            negative_prompt_embeds=negative.context,
            negative_prompt_attention_mask=negative.mask,
            output_type="latent",
            conditioning_items=items or None,
            is_video=True,
            vae_per_channel_normalize=True,
            image_cond_noise_scale=COND_NOISE,
            skip_layer_strategy=SkipLayerStrategy.AttentionValues,  # stg_mode "attention_values"
            **config,
        ).images


def _check(theirs: torch.Tensor, ours: torch.Tensor, control: torch.Tensor) -> None:
    assert theirs.abs().mean() > 0.1
    error = (ours - theirs).abs().max().item()
    assert error <= TOL, f"max |Δ| {error:.2e}"
    miss = (control - theirs).abs().max().item()
    assert miss > CONTROL, f"the control is only {miss:.2e} away"


def _keyframes() -> list[Keyframe]:
    pictures = torch.rand(2, 40, 56, 3, generator=torch.Generator().manual_seed(93))
    return [Keyframe(pictures[0], 0), Keyframe(pictures[1], -1, 0.8)]


@pytest.mark.parametrize("keyed", [False, True], ids=["text", "keyframes"])
def test_098_distilled(setup, monkeypatch, keyed):
    keyframes = _keyframes() if keyed else ()
    ours, seen = _ours(setup, monkeypatch, "0.9.8-distilled", keyframes)
    assert seen["text"].context.shape[1] == 256 and seen["text"].negative is None
    theirs = _official(setup, monkeypatch, seen, keyframes, **DISTILLED_098)
    _check(theirs, ours, _ours(setup, monkeypatch, "0.9.8-distilled", keyframes, guidance_scale=3.0)[0])


def test_096_distilled_samples_stochastically(setup, monkeypatch):
    ours, seen = _ours(setup, monkeypatch, "0.9.6-distilled")
    theirs = _official(setup, monkeypatch, seen, **DISTILLED_096)
    _check(theirs, ours, _ours(setup, monkeypatch, "0.9.6-distilled", stochastic_sampling=False)[0])


def test_095_runs_cfg_with_stg(setup, monkeypatch):
    ours, seen = _ours(setup, monkeypatch, "0.9.5")
    assert seen["text"].negative is not None
    theirs = _official(setup, monkeypatch, seen, **DEV_095)
    _check(theirs, ours, _ours(setup, monkeypatch, "0.9.5", stg_scale=0.0)[0])
