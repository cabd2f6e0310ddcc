"""LTX Guidance (pack): the release's official guidance or custom CFG + STG for the sampler, and how the
sampler chooses its guidance from its inputs."""

from __future__ import annotations

import torch

from ..ltx_core.passes import SINGLE, pass_guidance
from ..ltx_core.sampling.guidance import STG_MODES, Guidance
from .types import CATEGORY, GUIDANCE, MODEL, Loaded, field

RELEASE, CUSTOM = "release", "custom"
NODE = "LTX Guidance (pack)"
# How to fix blocks beyond the model, by where they came from ({layers}: the model's block count).
BELOW = "name blocks below {layers} in skip_blocks (the official configs skip 19 on 2B models, 28 on 13B dev models)"
SAME_MODEL = f"connect the sampler's model to the model input of {NODE}, or name blocks below {{layers}} there"
NOT_RELEASE = f"use guidance 1 or more on the sampler, or {NODE} with preset custom and blocks below {{layers}}"


def release_guidance(model: Loaded) -> Guidance:
    """The release's official guidance for one pass: CFG and STG per noise-level range, CFG-zero*."""
    return Guidance.from_config(model.defaults.guidance_config())


def sampler_guidance(model: Loaded, guidance: float, settings: Guidance | None, which: str = SINGLE) -> Guidance:
    """The sampler's guidance in pass `which` (passes.PASSES): a connected guidance node's, else the
    release's for that pass (guidance 0), else constant classifier-free guidance without STG (guidance ≥ 1,
    as the sampler always did). The guidance node's preset release is the release's too: it gives the
    one-pass guidance, which a multiscale pass replaces by its own (13B dev's second pass: CFG 1, STG 1 on
    block 27); custom settings cannot give 13B dev's ranges, and distilled passes share one guidance."""
    if settings is not None and not (which != SINGLE and settings == release_guidance(model)):
        return check_blocks(settings, model, f"the {NODE} connected to guidance_settings", SAME_MODEL)
    if guidance == 0 or settings is not None:
        words = f"the {model.release} release's{'' if which == SINGLE else f' {which}-pass'} guidance"
        return check_blocks(pass_guidance(model.defaults, which), model, words, NOT_RELEASE)
    if guidance < 1:
        raise ValueError(
            f"guidance {guidance:g} of LTX Sampler (pack) is neither 0 (the release's guidance) nor 1 or more "
            "(constant classifier-free guidance; 1 = none): set 0, or a value from 1 (3 is usual)"
        )
    return Guidance(guidance_scale=guidance)


def check_blocks(guidance: Guidance, model: Loaded, what: str, fix: str) -> Guidance:
    """`guidance`, if every block its STG perturbs is one of the model's; else an error: `what` skips …, `fix`."""
    starts = torch.tensor(guidance.guidance_timesteps or (1.0,))  # each range's guidance at its start
    blocks = sorted({i for step in guidance.per_step(starts) for i in step.skip_blocks})
    layers = model.module.config.num_layers
    if blocks and blocks[-1] >= layers:
        raise ValueError(
            f"{what} skips block{'s' * (len(blocks) > 1)} {', '.join(map(str, blocks))} for STG, but this "
            f"{model.release.size} model has {layers} block{'s' * (layers > 1)} (0 to {layers - 1}): "
            + fix.format(layers=layers)
        )
    return guidance


def parse_blocks(text: str) -> tuple[int, ...]:
    """ "19" or "19, 20" → (19,) or (19, 20); empty → ()."""
    words = text.replace(",", " ").split()
    if not all(word.isascii() and word.isdigit() for word in words):
        raise ValueError(
            f"skip_blocks {text!r} of {NODE} is not a list of block numbers: write them like 19 or 19, 20 "
            "(blocks count from 0)"
        )
    return tuple(sorted({int(word) for word in words}))


class LTXPackGuidance:
    DESCRIPTION = (
        "Guidance for LTX Sampler (pack): the release's official settings (classifier-free and spatio-temporal "
        "guidance per noise level, CFG-zero*), or custom CFG + STG for every step."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (GUIDANCE,)
    RETURN_NAMES = ("guidance",)
    OUTPUT_TOOLTIPS = ("Connect to guidance_settings of LTX Sampler (pack); it replaces the sampler's guidance.",)
    FUNCTION = "guidance"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        custom = "Used with preset custom."
        return {
            "required": {
                "model": field(MODEL, "From the LTX model loader: its release and its number of blocks."),
                "preset": field(
                    [RELEASE, CUSTOM],
                    "release: the model's official guidance (2B dev: CFG 3 and STG 1 on block 19; 13B dev: CFG "
                    "and STG changing with the noise level, CFG-zero*; distilled: none), the widgets below "
                    "unused. custom: the widgets below, the same at every step.",
                    default=RELEASE,
                ),
                "cfg": field(
                    "FLOAT",
                    f"Classifier-free guidance scale; 1 = none. {custom}",
                    default=3.0,
                    min=1.0,
                    max=20.0,
                    step=0.1,
                    round=0.01,
                ),
                "stg_scale": field(
                    "FLOAT",
                    f"Spatio-temporal guidance scale; 0 = none. {custom}",
                    default=1.0,
                    min=0.0,
                    max=10.0,
                    step=0.1,
                    round=0.01,
                ),
                "stg_mode": field(
                    list(STG_MODES),
                    f"What STG does to the skipped blocks: replace self-attention by its values (official), skip "
                    f"self-attention, skip the residual (changes nothing in LTX-Video), or skip the block. {custom}",
                    default=STG_MODES[0],
                ),
                "skip_blocks": field(
                    "STRING",
                    f"The blocks STG perturbs, counted from 0, e.g. 19 or 19, 20 (official: 19 on 2B, 28 on 13B "
                    f"dev). {custom}",
                    default="19",
                ),
                "rescaling_scale": field(
                    "FLOAT",
                    f"Pulls the guided prediction's spread toward the prompt's after STG; 1 = none, 0.7 "
                    f"official for 2B. {custom}",
                    default=0.7,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                ),
                "cfg_star_rescale": field(
                    "BOOLEAN",
                    f"CFG-zero*: scale the negative prediction by its projection on the positive one "
                    f"(official for 13B dev). {custom}",
                    default=False,
                ),
            }
        }

    def guidance(
        self,
        model: Loaded,
        preset: str,
        cfg: float,
        stg_scale: float,
        stg_mode: str,
        skip_blocks: str,
        rescaling_scale: float,
        cfg_star_rescale: bool,
    ) -> tuple[Guidance]:
        if preset == RELEASE:
            official = release_guidance(model)
            return (check_blocks(official, model, f"the {model.release} release's guidance", NOT_RELEASE),)
        blocks = parse_blocks(skip_blocks)
        if stg_scale > 0 and not blocks:
            raise ValueError(
                f"stg_scale {stg_scale:g} of {NODE} has no block to perturb: name blocks in skip_blocks (e.g. 19 on "
                "2B, 28 on 13B), or set stg_scale 0"
            )
        settings = Guidance(
            guidance_scale=cfg,
            stg_scale=stg_scale,
            rescaling_scale=rescaling_scale,
            skip_block_list=blocks,
            stg_mode=stg_mode,
            cfg_star_rescale=cfg_star_rescale,
        )
        return (check_blocks(settings, model, f"skip_blocks {skip_blocks!r} of {NODE}", BELOW),)
