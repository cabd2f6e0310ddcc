"""Guidance as the official `LTXVideoPipeline` (ltx_video 0.1.2) runs it, on the same tiny weights, text
embeddings and noise: STG in each of its four modes, STG with and without CFG and rescaling, CFG-zero*,
the 13B dev config's guidance per noise-level range, a distilled config's timesteps, stochastic sampling,
and STG with an image condition. diffusers is a second oracle where it implements the same thing for
LTX-Video: its layer-skip hooks (whole block; attention scores skipped, i.e. attention values) with its
SkipLayerGuidance guider (CFG + STG + rescale), and its CFG-zero* guider.

The noise: the official pipeline's generator, seeded, draws the video's noise (token-major), then the
re-noising of strength-1 conditions each step; ours draws the same numbers from a generator seeded alike.
The official scheduler draws its stochastic-sampling noise from torch's global generator instead; the
tests route that draw to the pipeline's generator, the one stream ours uses. Conditioning media are
"encoded" by a stand-in that returns fixed latents, so no VAE is involved.

Tolerance 1e-5 max |Δ| on the final latents in float32. Negative controls (a wrong block, a wrong mode,
rescaling or CFG-zero* or stochastic sampling left out, the ranges' block lists rotated) must miss by
more than 1e-2.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch

from ltx_core import LTXVideoTransformer, video_positions
from ltx_core.loading.keymaps import transformer_from_diffusers
from ltx_core.model.patchify import from_tokens
from ltx_core.sampling.conditioning import FrameCondition
from ltx_core.sampling.guidance import Guidance
from ltx_core.sampling.sampler import sample
from ltx_core.sampling.schedule import custom_sigmas, linear_quadratic_sigmas, shifted_sigmas
from ltx_core.text.encoder import Conditioning
from official import official_pipeline, official_transformer, official_vae
from tiny import TINY_VAE_LAYOUTS, diffusers_transformer, random_state_dict, tiny_transformer_config

pytestmark = pytest.mark.parity

TOL = 1e-5
CONTROL = 1e-2
FRAMES, HEIGHT, WIDTH = 17, 64, 96  # → latent 3 × 2 × 3 = 18 tokens
LATENT = (1, 16, 3, 2, 3)
FPS = 25
SIGMAS = shifted_sigmas(6, 18)  # 1, .878, .734, .563, .356, .1, 0
COND_NOISE = 0.15  # the official `image_cond_noise_scale` default

# Lightricks/LTX-Video configs/ltxv-13b-0.9.8-dev.yaml, `first_pass` (30 steps, the last 3 skipped)
DEV_13B_FIRST_PASS = {
    "guidance_scale": [1, 1, 6, 8, 6, 1, 1],
    "stg_scale": [0, 0, 4, 4, 4, 2, 1],
    "rescaling_scale": [1, 1, 0.5, 0.5, 1, 1, 1],
    "guidance_timesteps": [1.0, 0.996, 0.9933, 0.9850, 0.9767, 0.9008, 0.6180],
    "skip_block_list": [[], [11, 25, 35, 39], [22, 35, 39], [28], [28], [28], [28]],
    "cfg_star_rescale": True,
}
# configs/ltxv-2b-0.9.8-distilled.yaml, `first_pass` (guidance_scale 1, stg_scale 0: one forward per step)
DISTILLED_TIMESTEPS = [1.0000, 0.9937, 0.9875, 0.9812, 0.9750, 0.9094, 0.7250]


@dataclass
class Setup:
    ours: LTXVideoTransformer
    official: object  # LTXVideoPipeline
    diffusers: object  # LTXVideoTransformer3DModel
    module: object  # ltx_video.pipelines.pipeline_ltx_video
    strategies: dict
    text: Conditioning


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one CPU thread is faster than several, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _models(layers: int, seed: int) -> tuple[LTXVideoTransformer, object, object]:
    cfg = tiny_transformer_config(heads=2, head_dim=16, layers=layers, causal=True)  # 0.9.5+ positions
    reference = diffusers_transformer(cfg)
    weights = random_state_dict({k: v.shape for k, v in reference.state_dict().items()}, seed)
    reference.load_state_dict(weights)
    original = transformer_from_diffusers(weights)
    ours = LTXVideoTransformer.from_state_dict(cfg, dict(original))
    vae = official_vae(TINY_VAE_LAYOUTS["0.9.5"][0])  # shapes only
    return ours, official_pipeline(official_transformer(cfg, original), vae), reference


@pytest.fixture(scope="module")
def setup():
    pytest.importorskip("diffusers")
    module = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")
    from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy

    ours, official, reference = _models(3, 81)
    strategies = {
        "attention_values": SkipLayerStrategy.AttentionValues,
        "attention_skip": SkipLayerStrategy.AttentionSkip,
        "residual": SkipLayerStrategy.Residual,
        "transformer_block": SkipLayerStrategy.TransformerBlock,
    }
    gen = torch.Generator().manual_seed(82)
    negative = Conditioning(torch.randn(1, 6, 24, generator=gen), torch.tensor([[1, 1, 1, 0, 0, 0]]))
    text = Conditioning(torch.randn(1, 6, 24, generator=gen), torch.tensor([[1, 1, 1, 1, 1, 0]]), negative)
    return Setup(ours, official, reference, module, strategies, text)


@pytest.fixture
def fixed_encoder(monkeypatch, setup):
    """Conditioning media "encode" to fixed latents on the official side (returned by the fixture)."""
    latents = torch.randn(1, 16, 1, 2, 3, generator=torch.Generator().manual_seed(83))
    monkeypatch.setattr(setup.module, "vae_encode", lambda media, vae, **_: latents.clone())
    return latents


def _official(setup: Setup, pipe, monkeypatch, *, seed: int, sigmas=SIGMAS, image=None, **settings) -> torch.Tensor:
    """The official pipeline's final latents (1, 16, 3, 2, 3); settings are its keyword arguments."""
    generator = torch.Generator().manual_seed(seed)
    settings = copy.deepcopy(settings)
    mode = setup.strategies[settings.pop("stg_mode", "attention_values")]
    items = None
    if image is not None:  # a strength-1 image at frame 0; `fixed_encoder` gives its latents
        items = [setup.module.ConditioningItem(torch.zeros(1, 3, 1, HEIGHT, WIDTH), 0, 1.0)]
    text = setup.text
    with monkeypatch.context() as m:  # stochastic sampling's noise from the pipeline's generator
        m.setattr(torch, "randn_like", lambda t, **_: torch.randn(t.shape, generator=generator, dtype=t.dtype))
        return pipe(
            height=HEIGHT,
            width=WIDTH,
            num_frames=FRAMES,
            frame_rate=FPS,
            negative_prompt=None,
            timesteps=sigmas[:-1].tolist(),
            generator=generator,
            prompt_embeds=text.context,
            prompt_attention_mask=text.mask,
            negative_prompt_embeds=text.negative.context,
            negative_prompt_attention_mask=text.negative.mask,
            output_type="latent",
            conditioning_items=items,
            is_video=True,
            vae_per_channel_normalize=True,
            image_cond_noise_scale=COND_NOISE,
            skip_layer_strategy=mode,
            **settings,
        ).images


def _ours(
    setup: Setup, model=None, *, seed: int, sigmas=SIGMAS, image=None, stochastic_sampling=False, **settings
) -> torch.Tensor:
    """Our final latents for the same official settings (built into a Guidance from their keys)."""
    generator = torch.Generator().manual_seed(seed)
    b, c, f, h, w = LATENT
    noise = from_tokens(torch.randn(b, f * h * w, c, generator=generator), f, h, w)  # token-major, as official
    conditions = [] if image is None else [FrameCondition(image, 0, 1.0)]
    with torch.no_grad():
        return sample(
            model or setup.ours,
            noise,
            sigmas,
            setup.text,
            guidance=Guidance.from_config(settings),
            stochastic_sampling=stochastic_sampling,
            frame_rate=FPS,
            conditions=conditions,
            layout="appended",
            cond_noise_scale=COND_NOISE,
            generator=generator,
        )


def _check(theirs: torch.Tensor, ours: torch.Tensor, *controls: torch.Tensor) -> None:
    assert theirs.abs().mean() > 0.1
    error = (ours - theirs).abs().max().item()
    assert error <= TOL, f"max |Δ| {error:.2e}"
    for i, control in enumerate(controls):
        miss = (control - theirs).abs().max().item()
        assert miss > CONTROL, f"control {i} is only {miss:.2e} away"


STG = dict(guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7, skip_block_list=[1])  # the 2B configs' kind
MODES = ["attention_values", "attention_skip", "residual", "transformer_block"]


@pytest.mark.parametrize("mode", MODES)
def test_each_stg_mode_with_cfg_and_rescaling(setup, monkeypatch, mode):
    settings = dict(STG, stg_mode=mode)
    theirs = _official(setup, setup.official, monkeypatch, seed=1, **settings)
    ours = _ours(setup, seed=1, **settings)
    other_mode = MODES[(MODES.index(mode) + 1) % len(MODES)]
    controls = [_ours(setup, seed=1, **dict(settings, stg_mode=other_mode))]
    if mode != "residual":  # which block is skipped matters to every mode that perturbs
        controls.append(_ours(setup, seed=1, **dict(settings, skip_block_list=[2])))
    _check(theirs, ours, *controls)


def test_stg_without_cfg(setup, monkeypatch):
    """guidance_scale 1: the batch is (positive, perturbed)."""
    settings = dict(guidance_scale=1.0, stg_scale=2.0, rescaling_scale=0.7, skip_block_list=[0, 2])
    theirs = _official(setup, setup.official, monkeypatch, seed=2, **settings)
    _check(theirs, _ours(setup, seed=2, **settings), _ours(setup, seed=2, **dict(settings, skip_block_list=[0])))


def test_rescaling_one_means_none(setup, monkeypatch):
    """The official convention: rescaling_scale 1 switches STG's rescaling off."""
    settings = dict(STG, rescaling_scale=1.0, stg_scale=2.0)
    theirs = _official(setup, setup.official, monkeypatch, seed=3, **settings)
    _check(theirs, _ours(setup, seed=3, **settings), _ours(setup, seed=3, **dict(settings, rescaling_scale=0.7)))


def test_cfg_star(setup, monkeypatch):
    settings = dict(guidance_scale=4.0, stg_scale=0.0, cfg_star_rescale=True)
    theirs = _official(setup, setup.official, monkeypatch, seed=4, **settings)
    _check(theirs, _ours(setup, seed=4, **settings), _ours(setup, seed=4, **dict(settings, cfg_star_rescale=False)))


def test_13b_dev_guidance_per_range(setup, monkeypatch):
    """The 13B dev config's first pass on a tiny 40-block model: seven ranges of guidance, STG, rescaling and
    skipped blocks over 27 linear-quadratic steps, with CFG-zero*; from batch 1 to 3 between ranges."""
    ours_model, pipe, _ = _models(40, 84)
    sigmas = torch.cat([linear_quadratic_sigmas(30)[:27], torch.zeros(1)])
    run = dict(sigmas=sigmas, seed=5)
    theirs = _official(setup, pipe, monkeypatch, **run, **DEV_13B_FIRST_PASS)
    ours = _ours(setup, ours_model, **run, **DEV_13B_FIRST_PASS)
    blocks = DEV_13B_FIRST_PASS["skip_block_list"]
    rotated = dict(DEV_13B_FIRST_PASS, skip_block_list=[blocks[0], *blocks[2:], blocks[1]])
    no_star = dict(DEV_13B_FIRST_PASS, cfg_star_rescale=False)
    _check(theirs, ours, _ours(setup, ours_model, **run, **rotated), _ours(setup, ours_model, **run, **no_star))


def test_distilled_timesteps_one_forward_per_step(setup, monkeypatch):
    settings = dict(guidance_scale=1.0, stg_scale=0.0, rescaling_scale=1.0, skip_block_list=[42])
    sigmas = custom_sigmas(DISTILLED_TIMESTEPS)
    calls = []
    hook = setup.ours.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        ours = _ours(setup, seed=6, sigmas=sigmas, **settings)
    finally:
        hook.remove()
    theirs = _official(setup, setup.official, monkeypatch, seed=6, sigmas=sigmas, **settings)
    _check(theirs, ours, _ours(setup, seed=6, sigmas=sigmas, guidance_scale=3.0))
    assert calls == [1] * len(DISTILLED_TIMESTEPS)


@pytest.mark.parametrize("with_image", [False, True], ids=["text", "image@0"])
def test_stochastic_sampling(setup, monkeypatch, fixed_encoder, with_image):
    """The 0.9.6 distilled config: guidance 1, stochastic steps, 8 linear-quadratic steps."""
    image = fixed_encoder if with_image else None
    run = dict(seed=7, sigmas=linear_quadratic_sigmas(8), image=image, guidance_scale=1.0, stg_scale=0.0)
    theirs = _official(setup, setup.official, monkeypatch, stochastic_sampling=True, rescaling_scale=1.0, **run)
    ours = _ours(setup, stochastic_sampling=True, **run)
    _check(theirs, ours, _ours(setup, **run))


def test_stg_with_an_image_condition(setup, monkeypatch, fixed_encoder):
    """Per-token noise levels through a batch of three, with the condition re-noised every step."""
    settings = dict(STG, stg_mode="attention_values")
    theirs = _official(setup, setup.official, monkeypatch, seed=8, image=fixed_encoder, **settings)
    ours = _ours(setup, seed=8, image=fixed_encoder, **settings)
    _check(theirs, ours, _ours(setup, seed=8, image=fixed_encoder, **dict(settings, skip_block_list=[0])))


# --- diffusers as a second oracle: its layer-skip hooks and guiders ----------------------------------


def _diffusers_loop(setup: Setup, seed: int, guider, skip=None) -> torch.Tensor:
    """diffusers' transformer and guider stepped along SIGMAS by Euler: the negative, positive and (with
    `skip`, a hook registrar) perturbed predictions, each its own forward."""
    from diffusers.hooks import HookRegistry

    b, c, f, h, w = LATENT
    x = torch.randn(b, f * h * w, c, generator=torch.Generator().manual_seed(seed))
    positions = video_positions(f, h, w, frame_rate=FPS, causal_fix=True)
    text = setup.text

    def predict(prompt: Conditioning, sigma: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return setup.diffusers(
                hidden_states=x,
                encoder_hidden_states=prompt.context,
                timestep=(sigma * 1000).expand(b),
                encoder_attention_mask=prompt.mask,
                video_coords=positions,
                return_dict=False,
            )[0]

    for i, (sigma, sigma_next) in enumerate(zip(SIGMAS[:-1], SIGMAS[1:], strict=True)):
        guider.set_state(step=i, num_inference_steps=None, timestep=sigma)  # no start / stop window
        predictions = {"pred_cond": predict(text, sigma), "pred_uncond": predict(text.negative, sigma)}
        if skip is not None:
            skip(setup.diffusers)
            predictions["pred_cond_skip"] = predict(text, sigma)
            HookRegistry.check_if_exists_or_initialize(setup.diffusers).remove_hook("stg", recurse=True)
        x = x + (sigma_next - sigma) * guider.forward(**predictions).pred
    return from_tokens(x, f, h, w)


def _skip_block(model) -> None:
    from diffusers.hooks.layer_skip import LayerSkipConfig, _apply_layer_skip_hook

    _apply_layer_skip_hook(model, LayerSkipConfig([1], fqn="transformer_blocks"), name="stg")


def _skip_attention_scores(model) -> None:
    """diffusers' attention-score skip (the attention returns its values) on block 1's self-attention. Its
    `LayerSkipConfig` cannot reach LTX-Video's attention class, so the hook is registered directly."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.layer_skip import AttentionProcessorSkipHook

    registry = HookRegistry.check_if_exists_or_initialize(model.transformer_blocks[1].attn1)
    registry.register_hook(AttentionProcessorSkipHook(None, skip_attention_scores=True), "stg")


@pytest.mark.parametrize(
    ("mode", "skip"), [("transformer_block", _skip_block), ("attention_values", _skip_attention_scores)]
)
def test_stg_matches_diffusers_skip_layer_guidance(setup, mode, skip):
    from diffusers.guiders import SkipLayerGuidance

    guider = SkipLayerGuidance(
        guidance_scale=3.0,
        skip_layer_guidance_scale=1.0,
        skip_layer_guidance_start=0.0,
        skip_layer_guidance_stop=1.0,
        skip_layer_guidance_layers=[1],
        guidance_rescale=0.7,  # the same formula as STG's rescaling_scale 0.7
    )
    theirs = _diffusers_loop(setup, 9, guider, skip)
    other = "attention_values" if mode == "transformer_block" else "transformer_block"
    ours = _ours_from_token_noise(setup, seed=9, **STG, stg_mode=mode)
    _check(theirs, ours, _ours_from_token_noise(setup, seed=9, **STG, stg_mode=other))


def test_cfg_star_matches_diffusers(setup):
    from diffusers.guiders import ClassifierFreeZeroStarGuidance

    guider = ClassifierFreeZeroStarGuidance(guidance_scale=4.0, zero_init_steps=0)
    theirs = _diffusers_loop(setup, 10, guider)
    settings = dict(guidance_scale=4.0, cfg_star_rescale=True)
    ours = _ours_from_token_noise(setup, seed=10, **settings)
    _check(theirs, ours, _ours_from_token_noise(setup, seed=10, guidance_scale=4.0))


def _ours_from_token_noise(setup: Setup, *, seed: int, **settings) -> torch.Tensor:
    """Ours from the noise `_diffusers_loop` starts at (drawn token-major there)."""
    b, c, f, h, w = LATENT
    noise = from_tokens(torch.randn(b, f * h * w, c, generator=torch.Generator().manual_seed(seed)), f, h, w)
    with torch.no_grad():
        return sample(setup.ours, noise, SIGMAS, setup.text, guidance=Guidance.from_config(settings), frame_rate=FPS)
