"""The LTX-Video sampler: flow matching with the release's guidance and steps, or the user's, over a LATENT."""

from __future__ import annotations

import torch

from ..ltx_core import FrameCondition, sample
from ..ltx_core.latent_guides import (
    CONDITIONS_KEY,
    GUIDE_FRAMES_KEY,
    choose_sigmas,
    guide_conditions,
    split_core_guides,
)
from ..ltx_core.loading.release import Release
from ..ltx_core.memory import MEMORY_MODES, placed, transformer_activation_bytes
from ..ltx_core.multiscale import undecided
from ..ltx_core.passes import FIRST, SECOND, SINGLE, pass_settings, pass_sigmas
from ..ltx_core.sampling.conditioning import appended_token_count
from ..ltx_core.sampling.guidance import Guidance
from ..ltx_core.sampling.noise import draw_noise, seeded_generator
from ..ltx_core.sampling.schedule import SCHEDULES, custom_sigmas
from ..ltx_core.types import LATENT_CHANNELS, VAE_TEMPORAL_SCALE
from . import comfy_bridge as bridge
from .guidance import sampler_guidance
from .lora import use_loras
from .types import (
    CATEGORY,
    GENERATOR_KEY,
    GUIDANCE,
    MODEL,
    TONE_MAP_KEY,
    Loaded,
    field,
    from_conditioning,
    video_latents,
)

AUTO = "auto"
FROM_LOADER = "from loader"
SAMPLINGS = {AUTO: None, "euler": False, "stochastic": True}  # → stochastic_sampling (None: the release's)
MULTISCALE = {"off": SINGLE, "first pass": FIRST, "second pass": SECOND}  # → a pass of ltx_core.passes
NODE = "LTX Sampler (pack)"


def _keyframe_idxs(positive: list) -> torch.Tensor | None:
    """The guide positions core's LTXVAddGuide put in the CONDITIONING, if any."""
    return positive[0][1].get("keyframe_idxs") if positive else None


def _split_guides(model: Loaded, latent: dict, keyframe_idxs: torch.Tensor | None) -> tuple[dict, list]:
    """A LATENT from core's LTXVAddGuide → (the video's LATENT, the guides as FrameConditions)."""
    if keyframe_idxs is None:
        return latent, []
    if CONDITIONS_KEY in latent:  # LTXVAddGuide builds a fresh LATENT: our node ran after it
        raise ValueError(
            "an LTX Image Condition (pack) node comes after core's LTXVAddGuide in this graph; the pack's node "
            "cannot see the guide frames LTXVAddGuide appended. Put the pack's condition nodes first, or use "
            "one kind of condition node"
        )
    if model.defaults.conditioning != "appended":
        raise ValueError(
            f"core's LTXVAddGuide appends guide frames, which this {model.release} model does not take (0.9.5+ "
            "models do); condition 0.9.0 / 0.9.1 models with LTX Image Condition (pack) or core's LTXVImgToVideo"
        )
    samples = video_latents(latent, LATENT_CHANNELS, NODE)
    video, mask, guides = split_core_guides(samples, latent.get("noise_mask"), keyframe_idxs)
    return {"samples": video, **({} if mask is None else {"noise_mask": mask})}, guides


def _conditions(model: Loaded, samples: torch.Tensor, latent: dict) -> list[FrameCondition]:
    """The latent's conditions as the model's release lays them out (see latent_guides.guide_conditions)."""
    layout, recorded = model.defaults.conditioning, latent.get(CONDITIONS_KEY)
    for cond in recorded if layout == "in_place" and recorded else ():
        if cond.frame % VAE_TEMPORAL_SCALE:
            below = cond.frame // VAE_TEMPORAL_SCALE * VAE_TEMPORAL_SCALE
            raise ValueError(
                f"an LTX Image Condition (pack) keeps an image at frame {cond.frame}, but this {model.release} "
                f"model writes conditions in place, at frame 0 or a multiple of {VAE_TEMPORAL_SCALE} (0.9.5+ "
                f"models take any frame): set that node's frame to {below} or {below + VAE_TEMPORAL_SCALE}"
            )
    return guide_conditions(samples, latent.get("noise_mask"), recorded, layout)


def _sigmas(model: Loaded, which: str, steps, schedule, denoise, sigmas, tokens: int) -> torch.Tensor:
    """The noise levels of pass `which`: connected sigmas, else the release's schedule of the pass."""
    defaults = model.defaults
    if which == SINGLE:
        name = defaults.schedule if schedule == AUTO else schedule
        return choose_sigmas(name, steps or defaults.steps, tokens, denoise, sigmas)
    words = f"multiscale {which} pass of {NODE}"
    if defaults.first_pass is None:
        raise ValueError(
            f"{words}: the {model.release} {model.release.size} release has no multiscale recipe (0.9.7 and later "
            "have one: 13B dev, 13B and 2B distilled); set multiscale to off"
        )
    unsure = undecided(model.release) if isinstance(model.release, Release) else ""
    if unsure:
        raise ValueError(
            f"{words}: {unsure}; set release on the LTX Model Loader (pack) to the file's release "
            f"({' or '.join([model.release.name, *model.release.alike])})"
        )
    if sigmas is not None:
        return custom_sigmas(sigmas)
    if denoise != 1:
        raise ValueError(
            f"denoise {denoise:g} with the {words}: the pass sets where sampling starts (the second from the "
            "upscaled latents); set denoise to 1, or connect sigmas"
        )
    return pass_sigmas(defaults, which, tokens, steps, None if schedule == AUTO else schedule)


def _generator(seed: int, state: torch.Tensor | None) -> torch.Generator:
    """The seed's generator, or one that goes on from a first pass's generator `state`."""
    if state is None:
        return seeded_generator(seed)
    generator = torch.Generator("cpu")
    generator.set_state(state)
    return generator


def _noted(result: dict, model: Loaded, which: str, generator: torch.Generator) -> dict:
    """The sampler's LATENT with what the next multiscale step needs: after a first pass its generator's
    state (for the second pass), after a second pass the tone mapping its release applies before decoding."""
    if which == FIRST:
        return {**result, GENERATOR_KEY: generator.get_state()}
    tone_map = pass_settings(model.defaults, which).tone_map_compression if which == SECOND else 0.0
    return {**result, TONE_MAP_KEY: tone_map} if tone_map else result


class LTXPackSampler:
    DESCRIPTION = "Generates the latent video from noise (or from the input latents when denoise < 1)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent video; decode it with the LTX VAE decode node.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        seed = {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}
        return {
            "required": {
                "model": field(MODEL, "From the LTX model loader."),
                "positive": field("CONDITIONING", "The encoded prompt."),
                "negative": field("CONDITIONING", "The encoded negative prompt."),
                "latent": field("LATENT", "Empty latent video, conditioned latents, or encoded video for denoise < 1."),
                "seed": field(
                    "INT",
                    "Seed of the initial noise; a seed gives the same video on any device. A multiscale second pass "
                    "after a first pass goes on with the first pass's random numbers instead, as the official "
                    "pipeline does.",
                    **seed,
                ),
                "steps": field(
                    "INT",
                    "Denoising steps; 0: the release's (40 for 2B dev, 30 for 13B dev, 8 for distilled: the 0.9.7+ "
                    "distilled models at their fixed noise levels, other counts on the curve those lie on). In a "
                    "multiscale pass, the pass's (13B dev: 27, then 13; distilled: 7, then 3); another count keeps "
                    "the pass's part of the schedule.",
                    default=0,
                    min=0,
                    max=200,
                ),
                "guidance": field(
                    "FLOAT",
                    "0: the release's official guidance (classifier-free and spatio-temporal, per noise level; "
                    "none for distilled models). 1 or more: that classifier-free guidance scale at every step, "
                    "without STG (1 = none; the negative prompt is then unused). A guidance node connected to "
                    "guidance_settings replaces this.",
                    default=0.0,
                    min=0.0,
                    max=20.0,
                    step=0.1,
                    round=0.01,
                ),
                "schedule": field(
                    [AUTO, *SCHEDULES],
                    "Noise schedule: auto picks the release's (shifted up to 0.9.1, linear_quadratic from 0.9.5, "
                    "distilled for the fixed noise levels of the 0.9.7+ distilled models).",
                    default=AUTO,
                ),
                "frame_rate": field(
                    "FLOAT",
                    "Frames per second the model assumes (it conditions on it).",
                    default=25.0,
                    min=1.0,
                    max=120.0,
                    step=0.01,
                ),
                "denoise": field(
                    "FLOAT",
                    "1 starts from pure noise; lower keeps more of the input latents.",
                    default=1.0,
                    min=0.01,
                    max=1.0,
                    step=0.01,
                ),
            },
            "optional": {
                "memory": field(
                    [FROM_LOADER, *MEMORY_MODES],
                    "How the transformer uses the GPU while sampling: the loader's memory mode, or default "
                    "(whole on the GPU, fastest) or low_vram (blocks streamed from CPU memory) for this sampler.",
                    default=FROM_LOADER,
                ),
                "sigmas": field(
                    "SIGMAS", "Noise levels (e.g. from core's LTXVScheduler); replace steps, schedule and denoise."
                ),
                "sampling": field(
                    list(SAMPLINGS),
                    "How each step moves to the next noise level: auto = the release's (stochastic for "
                    "0.9.6-distilled, euler otherwise); euler: a deterministic Euler step; stochastic: the clean "
                    "estimate re-noised with fresh noise from the seed.",
                    default=AUTO,
                ),
                "guidance_settings": field(
                    GUIDANCE, "From LTX Guidance (pack): replaces the guidance widget (CFG + STG, per noise level)."
                ),
                "multiscale": field(
                    list(MULTISCALE),
                    "off: one pass at the full size. first pass / second pass: that pass of the release's multiscale "
                    "recipe (0.9.7+: 13B dev, 13B and 2B distilled), with its noise levels and guidance where steps, "
                    "guidance and schedule say 0 / auto: the first at about 2/3 of the size, then LTX Latent Upscale "
                    "(pack), then the second from the upscaled latents (denoise stays 1: the pass sets its start).",
                    default="off",
                ),
            },
        }

    def sample(
        self,
        model: Loaded,
        positive,
        negative,
        latent,
        seed,
        steps,
        guidance,
        schedule,
        frame_rate,
        denoise,
        sigmas=None,
        memory=FROM_LOADER,
        sampling=AUTO,
        guidance_settings: Guidance | None = None,
        multiscale="off",
    ):
        transformer, defaults = model.module, model.defaults
        with_guides = latent
        latent, guides = _split_guides(model, latent, _keyframe_idxs(positive))
        samples = video_latents(latent, transformer.config.in_channels, NODE)
        which = MULTISCALE[multiscale]
        chosen = _sigmas(model, which, steps, schedule, denoise, sigmas, samples[0, 0].numel())
        plan = sampler_guidance(model, guidance, guidance_settings, which)
        stochastic = defaults.stochastic_sampling if SAMPLINGS[sampling] is None else SAMPLINGS[sampling]
        text = from_conditioning(positive, negative if plan.uses_negative else None, transformer.dtype)
        for name, cond in (("positive", text), ("negative", text.negative)):
            if cond is not None and cond.context.shape[-1] != transformer.config.caption_channels:
                raise ValueError(
                    f"the {name} CONDITIONING holds text features of width {cond.context.shape[-1]}; this model "
                    f"reads T5-XXL features of width {transformer.config.caption_channels}. Encode the prompt "
                    "with a T5 text encoder (LTX Text Encode, or core's CLIPLoader with type ltxv)"
                )
        conditions = [*_conditions(model, samples, latent), *guides]
        mode = model.handle.memory if memory == FROM_LOADER else memory
        batch = samples.shape[0] * plan.max_branches(chosen[:-1])  # CFG and STG each add a batch per step
        tokens = samples[0, 0].numel()
        if defaults.conditioning == "appended":  # conditions after frame 0 become extra tokens
            tokens += appended_token_count(conditions)
        activations = transformer_activation_bytes(  # conditions: a noise level per token
            transformer.config.hidden_dim, batch, tokens, transformer.dtype, bool(conditions)
        )
        use_loras(model)  # this output's LoRA stack onto the shared transformer, before it is placed
        device = model.handle.load(mode, activations)
        on_step = bridge.step_callback(len(chosen) - 1, samples.shape[1])
        # One generator draws the video's noise, then the appended conditions' and the re-noising's,
        # as the references do: a seed gives the same video on every device. A second pass goes on with
        # the first pass's generator, as the official multiscale pipeline hands one to both passes.
        generator = _generator(seed, with_guides.get(GENERATOR_KEY) if which == SECOND else None)
        noise = draw_noise(tuple(samples.shape), generator, device=device)
        with placed(transformer, device, mode, keep_pinned=True), torch.inference_mode():
            out = sample(
                transformer,
                noise,
                chosen,
                text,
                guidance=plan,
                stochastic_sampling=stochastic,
                frame_rate=frame_rate,
                initial=samples.to(device),
                conditions=conditions,
                layout=defaults.conditioning,
                cond_noise_scale=defaults.cond_noise_scale,
                generator=generator,
                on_step=on_step,
            )
        result = {"samples": out.cpu()}  # the video's latents only: sample() drops appended tokens
        if guides:
            # Core's guide frames go back after the video's, as core's sampler leaves them, so that
            # LTXVCropGuides can cut them; our decode leaves them out by itself (GUIDE_FRAMES_KEY).
            tail = with_guides["samples"][:, :, samples.shape[2] :]
            result = {"samples": torch.cat([result["samples"], tail.float()], dim=2), GUIDE_FRAMES_KEY: len(guides)}
        return (_noted(result, model, which, generator),)
