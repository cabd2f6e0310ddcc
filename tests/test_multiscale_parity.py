"""The multi-scale pipeline (`Settings(multiscale=True)`) generates as Lightricks' official
`LTXMultiScalePipeline` (ltx_video 0.1.2) does when called with a release's config, on the same tiny
weights: the official transformer, VAE and latent upsampler hold the weights of ours.

- 13B 0.9.8 dev (configs/ltxv-13b-0.9.8-dev.yaml): text only; the first pass 30 linear-quadratic steps
  with the last 3 skipped and CFG / STG / CFG-zero* per noise-level range, the second pass the same
  schedule with the first 17 skipped, STG on block 27. The tiny transformer has 48 blocks, as the 13B model.
- 13B 0.9.8 distilled (configs/ltxv-13b-0.9.8-distilled.yaml): an image at the first frame and a keyframe
  at the last (strength 0.8, appended tokens), 7 + 3 fixed noise levels checked by the official pipeline
  against the distilled file's `allowed_inference_steps`, and tone mapping 0.6 before decoding; here the
  decoded and resized frames are compared too, and what each side hands its VAE decoder.

At 160 × 96 × 17 the first pass runs at 96 × 32 (int(size · 0.6666666) rounded down to a multiple of 32)
and the second at 192 × 64, which is resized to 160 × 96 after decoding.

Adapters, as in test_release_parity.py: the pipeline's noise is drawn token-major from the seeded
generator, as the official pipeline draws it (one generator through both passes on both sides); the
official decode noise (torch's global generator) comes from a generator seeded alike, as ours; the
official VAE encoder is replaced by ours (posterior mean; VAE parity is tested elsewhere), so both encode
the conditioning media each pipeline resized to the pass's size. Text embeddings are ours, handed over.

Tolerance 1e-4 max |Δ| in float32, on the second pass's final latents (and the decoder input and the
frames). Negative controls must miss by more than 1e-2 (or not even match in shape): the upsampled
latents without AdaIN; diffusers' downscale of exactly 2/3 (the first pass at 96 × 64); the second pass
from σ = 1 (the skipped steps not skipped, which ignores the upsampled latents); no tone mapping.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from ltx_core import LatentUpsampler, LatentUpsamplerConfig, LTXVideoTransformer, VAEConfig, VideoVAE
from ltx_core import pipeline as pipeline_module
from ltx_core.loading.release import Release
from ltx_core.loading.text_encoder import load_text_encoder
from ltx_core.media import video_tensor_from_frames
from ltx_core.model.patchify import from_tokens
from ltx_core.pipeline import Keyframe, Models, keyframes_to_video, text_to_video
from ltx_core.settings import Settings
from ltx_core.upsampling import upsample_latents
from official import official_pipeline, official_transformer, official_vae
from tiny import TINY_LATENT, TINY_VAE_LAYOUTS, random_state_dict, random_vae_state_dict, tiny_transformer_config

pytestmark = pytest.mark.parity

TOL = 1e-4
CONTROL = 1e-2
FRAMES, HEIGHT, WIDTH = 17, 96, 160
SEED = 5
FPS = 25  # the pipeline's default frame rate for every release; the official call is given the same
COND_NOISE = 0.15  # inference.py `image_cond_noise_scale` default

# configs/ltxv-13b-0.9.8-dev.yaml and ltxv-13b-0.9.8-distilled.yaml @ Lightricks/LTX-Video 5260738,
# as inference.py hands them to LTXMultiScalePipeline (decode settings and stochastic_sampling are
# top-level keys, passed to both passes)
COMMON = dict(decode_timestep=0.05, decode_noise_scale=0.025, stochastic_sampling=False)
DEV_098 = dict(
    downscale_factor=0.6666666,
    first_pass=dict(
        guidance_scale=[1, 1, 6, 8, 6, 1, 1],
        stg_scale=[0, 0, 4, 4, 4, 2, 1],
        rescaling_scale=[1, 1, 0.5, 0.5, 1, 1, 1],
        guidance_timesteps=[1.0, 0.996, 0.9933, 0.9850, 0.9767, 0.9008, 0.6180],
        skip_block_list=[[], [11, 25, 35, 39], [22, 35, 39], [28], [28], [28], [28]],
        num_inference_steps=30,
        skip_final_inference_steps=3,
        cfg_star_rescale=True,
    ),
    second_pass=dict(
        guidance_scale=[1],
        stg_scale=[1],
        rescaling_scale=[1],
        guidance_timesteps=[1.0],
        skip_block_list=[27],
        num_inference_steps=30,
        skip_initial_inference_steps=17,
        cfg_star_rescale=True,
    ),
)
DISTILLED_098 = dict(
    downscale_factor=0.6666666,
    first_pass=dict(
        timesteps=[1.0000, 0.9937, 0.9875, 0.9812, 0.9750, 0.9094, 0.7250],
        guidance_scale=1,
        stg_scale=0,
        rescaling_scale=1,
        skip_block_list=[42],
    ),
    second_pass=dict(
        timesteps=[0.9094, 0.7250, 0.4219],
        guidance_scale=1,
        stg_scale=0,
        rescaling_scale=1,
        skip_block_list=[42],
        tone_map_compression_ratio=0.6,
    ),
)
# the distilled file's `allowed_inference_steps`, which the official pipeline checks every timestep against
ALLOWED = [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one CPU thread is faster than several, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclasses.dataclass
class Setup:
    models: Models  # ours, the release swapped per test
    transformer: object  # the official Transformer3DModel
    vae: object  # the official CausalVideoAutoencoder
    upsampler: object  # the official LatentUpsampler
    module: object  # ltx_video.pipelines.pipeline_ltx_video


@pytest.fixture(scope="module")
def setup() -> Setup:
    module = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")
    official_upsampling = pytest.importorskip("ltx_video.models.autoencoders.latent_upsampler")
    from hub_server import tiny_files

    # 48 blocks, as the 13B model (its STG perturbs blocks up to 39); 0.9.5+ positions (the causal fix)
    cfg = dataclasses.replace(tiny_transformer_config(layers=48, causal=True), caption_channels=32)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    weights = random_state_dict(shapes, 91)
    transformer = LTXVideoTransformer.from_state_dict(cfg, dict(weights))

    vae_metadata = TINY_VAE_LAYOUTS["0.9.5"][0]
    vae_cfg = VAEConfig.from_metadata(vae_metadata)
    with torch.device("meta"):  # the original checkpoint's keys, latent statistics included
        vae_shapes = {k: v.shape for k, v in VideoVAE(vae_cfg).state_dict().items()}
    vae_weights = random_vae_state_dict(vae_shapes, 92)
    vae = VideoVAE.from_state_dict(vae_cfg, dict(vae_weights))
    theirs_vae = official_vae(vae_metadata, vae_weights)

    up_cfg = LatentUpsamplerConfig(in_channels=TINY_LATENT, mid_channels=32, num_blocks_per_stage=2)
    with torch.device("meta"):
        up_shapes = {k: v.shape for k, v in LatentUpsampler(up_cfg).state_dict().items()}
    up_weights = random_vae_state_dict(up_shapes, 93)
    upsampler = LatentUpsampler.from_state_dict(up_cfg, dict(up_weights))
    theirs_up = official_upsampling.LatentUpsampler(
        in_channels=TINY_LATENT, mid_channels=32, num_blocks_per_stage=2, dims=3, spatial_upsample=True
    ).eval()
    theirs_up.load_state_dict(up_weights, strict=True)

    t5, _ = load_text_encoder(tiny_files()["text_encoder"], dtype=torch.float32, device="cpu")
    models = Models(transformer, vae, t5, "0.9.8-dev", upsampler)
    assert models.defaults.key == "13b-0.9.8-dev"  # 48 blocks: the 13B releases' settings
    return Setup(models, official_transformer(cfg, weights), theirs_vae, theirs_up, module)


def _with(setup: Setup, release: str, **changes) -> Models:
    """Our models as `release` (13B), its multi-scale defaults changed by `changes` (for the controls)."""
    defaults = dataclasses.replace(dataclasses.replace(setup.models, release=release).defaults, **changes)
    return dataclasses.replace(setup.models, release=Release(release, "13B", defaults, "the test"))


def _ours(models: Models, monkeypatch, keyframes=(), adain: bool = True) -> dict:
    """Our multi-scale run: the final latents of each pass ("passes"), the text embeddings handed to the
    sampler, the latents handed to the VAE decoder and the frames."""
    seen: dict = {"passes": []}
    real_sample, real_decode = pipeline_module.sample, VideoVAE.decode

    def sample(*args, **kwargs):
        seen["text"] = args[3]
        seen["passes"].append(real_sample(*args, **kwargs))
        return seen["passes"][-1]

    def decode(vae, latents, *args, **kwargs):
        seen["decoded"] = latents.clone()
        return real_decode(vae, latents, *args, **kwargs)

    def token_major(shape, generator, *, device="cpu", dtype=torch.float32):  # the official draw
        b, c, f, h, w = shape
        return from_tokens(torch.randn(b, f * h * w, c, generator=generator), f, h, w).to(device, dtype)

    settings = Settings(width=WIDTH, height=HEIGHT, frames=FRAMES, seed=SEED, device="cpu", multiscale=True)
    with monkeypatch.context() as m:
        m.setattr(pipeline_module, "sample", sample)
        m.setattr(pipeline_module, "draw_noise", token_major)
        m.setattr(VideoVAE, "decode", decode)
        if not adain:
            m.setattr(pipeline_module, "upsample_latents", functools.partial(upsample_latents, adain_factor=0.0))
        if keyframes:
            seen["frames"] = keyframes_to_video(models, keyframes, "a red fox", settings=settings, image_crf=0)
        else:
            seen["frames"] = text_to_video(models, "a red fox", settings=settings)
    return seen


def _official(setup: Setup, monkeypatch, seen: dict, config: dict, keyframes=(), output_type="latent") -> dict:
    """The official multi-scale pipeline's output for `config` (the release's, as inference.py passes it),
    given our text embeddings: {"out": latents or frames (B, C, F, H, W), "decoded": the decoder's input}."""
    from ltx_video.schedulers.rf import RectifiedFlowScheduler
    from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy

    module = setup.module
    explicit = "timesteps" in config["first_pass"]
    scheduler = RectifiedFlowScheduler() if explicit else RectifiedFlowScheduler(sampler="LinearQuadratic")
    pipe = official_pipeline(setup.transformer, setup.vae, scheduler, ALLOWED if explicit else None)
    multiscale = module.LTXMultiScalePipeline(pipe, latent_upsampler=setup.upsampler)
    text, generator = seen["text"], torch.Generator().manual_seed(SEED)
    decode_noise = torch.Generator().manual_seed(SEED)  # ours: a fresh seeded generator for decoding
    # without CFG no negative prompt is encoded: the official pipeline is handed zeros, which it never reads
    negative = text.negative or dataclasses.replace(text, context=text.context * 0, mask=text.mask * 0)
    items = [
        module.ConditioningItem(video_tensor_from_frames(key.pixels[None]), key.frame % FRAMES, key.strength)
        for key in keyframes
    ]
    got: dict = {}
    real_decode = module.vae_decode

    def vae_decode(latents, vae, *args, **kwargs):
        got["decoded"] = latents.clone()
        return real_decode(latents, vae, *args, **kwargs)

    with monkeypatch.context() as m, torch.no_grad():
        m.setattr(torch, "randn_like", lambda t, **_: torch.randn(t.shape, generator=decode_noise, dtype=t.dtype))
        m.setattr(module, "vae_encode", lambda media, vae, **_: setup.models.vae.encode(media.float()))
        m.setattr(module, "vae_decode", vae_decode)
        got["out"] = multiscale(
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
            output_type=output_type,
            conditioning_items=items or None,
            is_video=True,
            vae_per_channel_normalize=True,
            image_cond_noise_scale=COND_NOISE,
            skip_layer_strategy=SkipLayerStrategy.AttentionValues,  # stg_mode "attention_values"
            **COMMON,
            **config,
        ).images
    return got


def _diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |Δ|, or infinity for tensors of different shapes."""
    return (ours - theirs).abs().max().item() if ours.shape == theirs.shape else float("inf")


def _keyframes() -> list[Keyframe]:
    """An image at the first frame and a keyframe at the last, at the video's size (so that the pipeline
    keeps them as they are before each pass resizes them)."""
    pictures = torch.rand(2, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(94))
    return [Keyframe(pictures[0], 0), Keyframe(pictures[1], -1, 0.8)]


def test_13b_dev(setup, monkeypatch):
    models = dataclasses.replace(setup.models, release="0.9.8-dev")
    seen = _ours(models, monkeypatch)
    first, second = seen["passes"]
    assert first.shape == (1, TINY_LATENT, 3, 1, 3) and second.shape == (1, TINY_LATENT, 3, 2, 6)
    assert seen["frames"].shape == (1, FRAMES, HEIGHT, WIDTH, 3) and seen["text"].negative is not None
    theirs = _official(setup, monkeypatch, seen, DEV_098)["out"]
    assert theirs.abs().mean() > 0.1
    assert _diff(second, theirs) <= TOL, f"max |Δ| {_diff(second, theirs):.2e}"

    controls = {
        "no AdaIN": _ours(models, monkeypatch, adain=False),
        "downscale 2/3": _ours(_with(setup, "0.9.8-dev", downscale_factor=2 / 3), monkeypatch),
        "second pass from σ = 1": _ours(
            _with(
                setup, "0.9.8-dev", second_pass=dataclasses.replace(models.defaults.second_pass, skip_initial_steps=0)
            ),
            monkeypatch,
        ),
    }
    for name, control in controls.items():
        assert _diff(control["passes"][-1], theirs) > CONTROL, name


def test_13b_098_distilled_with_keyframes_and_tone_mapping(setup, monkeypatch):
    models = dataclasses.replace(setup.models, release="0.9.8-distilled")
    assert models.defaults.second_pass.tone_map_compression == 0.6
    keyframes = _keyframes()
    seen = _ours(models, monkeypatch, keyframes)
    assert seen["text"].negative is None  # no CFG in either pass
    latents = _official(setup, monkeypatch, seen, DISTILLED_098, keyframes)["out"]
    assert latents.abs().mean() > 0.1
    assert _diff(seen["passes"][-1], latents) <= TOL, f"max |Δ| {_diff(seen['passes'][-1], latents):.2e}"

    decoded = _official(setup, monkeypatch, seen, DISTILLED_098, keyframes, output_type="pt")
    frames = decoded["out"].permute(0, 2, 3, 4, 1)  # b c f h w -> b f h w c
    assert frames.shape == seen["frames"].shape == (1, FRAMES, HEIGHT, WIDTH, 3)
    assert _diff(seen["decoded"], decoded["decoded"]) <= TOL, "the decoder's input"
    assert _diff(seen["frames"], frames) <= TOL, f"frames: max |Δ| {_diff(seen['frames'], frames):.2e}"

    assert _diff(_ours(models, monkeypatch, keyframes, adain=False)["passes"][-1], latents) > CONTROL
    no_tone_map = dataclasses.replace(models.defaults.second_pass, tone_map_compression=0.0)
    control = _ours(_with(setup, "0.9.8-distilled", second_pass=no_tone_map), monkeypatch, keyframes)
    assert _diff(control["passes"][-1], latents) <= TOL  # the same latents …
    assert _diff(control["decoded"], decoded["decoded"]) > CONTROL  # … decoded without tone mapping
