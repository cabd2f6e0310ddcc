"""Per-release settings: what Lightricks ships each LTX-Video release with, in one registry.

Each entry is one official pipeline config of Lightricks/LTX-Video (`configs/ltxv-<size>-<release>.yaml`,
whose stem, less `ltxv-`, is the entry's key), plus the few settings the configs leave to the code
(prompt length, frame rate, conditioning), each with its source written next to it. The configs were
read at these commits of github.com/Lightricks/LTX-Video:

- 5260738 (2025-10-25, the last 0.9.x tree): every config of 0.9.0, 0.9.1, 0.9.5, 0.9.6 and 0.9.8;
  `ltx_video/inference.py` and `ltx_video/pipelines/pipeline_ltx_video.py` for the code's defaults.
- 98a0ce6 (2025-07-02): the 0.9.7 configs, renamed to the 0.9.8 ones by 02844ce (2025-07-16).
- 925516e (2024-12-19): the pipeline that shipped 0.9.0 / 0.9.1 (prompts padded to 128 tokens).

The fp8 configs (`ltxv-13b-0.9.7-dev-fp8.yaml`, …, `ltxv-2b-0.9.8-distilled-fp8.yaml`) differ from their
bf16 twins only in `precision: "float8_e4m3fn"` (Lightricks' q8-kernels), so an fp8 file takes the
entry of its release.

Units: noise levels σ run from 1 (pure noise) to 0 (clean), as the configs' `timesteps` and
`guidance_timesteps` do; scales are plain factors; blocks are transformer block indices from 0.

What runs: the core pipeline (pipeline.py, through settings.py's `resolve_settings`) runs `one_pass` whole:
its steps or `timesteps`, its guidance per σ range (`guidance_config()`, read by sampling/guidance.py's
`Guidance`: CFG, STG, rescaling, CFG-zero*), and `schedule`, `stochastic_sampling`, `conditioning`,
`cond_noise_scale`, `text_tokens`, `frame_rate`, `decode_timestep`, `decode_noise_scale`; each can be
overridden. The multi-scale pipeline (`Settings(multiscale=True)`) runs `first_pass` and `second_pass`
the same way (`pass_defaults`), at the sizes `downscale_factor` gives, between them the spatial upscaler
(`spatial_upscaler`, its file in Lightricks/LTX-Video).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

LIGHTRICKS = "github.com/Lightricks/LTX-Video"
HEAD = "5260738 (2025-10-25)"
RELEASES_097 = "98a0ce6 (2025-07-02)"

# Spatio-temporal guidance modes of the official code (inference.py: `stg_mode`), what the perturbed
# forward of the listed blocks does: replace self-attention by its values, skip self-attention, skip
# the block's residual, or skip the whole block.
STG_MODES = ("attention_values", "attention_skip", "residual", "transformer_block")


@dataclass(frozen=True)
class GuidanceRange:
    """Guidance for the steps at noise levels σ ≤ `from_sigma` (down to the next range's `from_sigma`):
    the official pipeline gives each step the first range whose `from_sigma` is ≤ its σ
    (`guidance_timesteps`), the last range when none is."""

    from_sigma: float
    cfg_scale: float  # classifier-free guidance; 1 = none (no unconditional forward)
    stg_scale: float  # spatio-temporal guidance; 0 = none (no perturbed forward)
    stg_rescale: float  # `rescaling_scale`: blend toward the conditional prediction's std; 1 = none
    stg_skip_blocks: tuple[int, ...]  # the blocks perturbed for STG

    def __post_init__(self) -> None:
        if not 0 <= self.from_sigma <= 1:
            raise ValueError(f"GuidanceRange.from_sigma is a noise level in [0, 1], got {self.from_sigma}")


@dataclass(frozen=True)
class PassSettings:
    """One denoising pass as an official config spells it (`first_pass`, `second_pass`, or the whole
    config of a single-pass release)."""

    steps: int  # `num_inference_steps` of the schedule, before any skipping; len(timesteps) when given
    guidance: tuple[GuidanceRange, ...]  # from σ = 1 down, at least one range
    timesteps: tuple[float, ...] | None = None  # explicit σ of each model call (distilled); None: the schedule's
    skip_initial_steps: int = 0  # steps of the schedule not run at its start (a refining pass)
    skip_final_steps: int = 0  # steps not run at its end (a pass another pass continues)
    cfg_star_rescale: bool = False  # CFG-zero*: the unconditional prediction scaled by its projection
    tone_map_compression: float = 0.0  # `tone_map_compression_ratio` of the latents before decoding; 0 = none

    def __post_init__(self) -> None:
        if not self.guidance or self.guidance[0].from_sigma != 1.0:
            raise ValueError("PassSettings.guidance needs a first range from σ = 1")
        if self.timesteps is not None and len(self.timesteps) != self.steps:
            raise ValueError(f"PassSettings: {len(self.timesteps)} timesteps for {self.steps} steps")


def constant(cfg: float, stg: float, rescale: float, blocks: tuple[int, ...]) -> tuple[GuidanceRange, ...]:
    """The same guidance at every step (a config with scalar `guidance_scale`, `stg_scale`, …)."""
    return (GuidanceRange(1.0, cfg, stg, rescale, blocks),)


def by_sigma(
    from_sigmas: tuple[float, ...],
    cfg: tuple[float, ...],
    stg: tuple[float, ...],
    rescale: tuple[float, ...],
    blocks: tuple[tuple[int, ...], ...],
) -> tuple[GuidanceRange, ...]:
    """Guidance per σ range, from a config's parallel lists (`guidance_timesteps`, `guidance_scale`, …)."""
    lists = (cfg, stg, rescale, blocks)
    if any(len(values) != len(from_sigmas) for values in lists):
        raise ValueError(f"guidance lists of unequal length: {[len(from_sigmas), *map(len, lists)]}")
    return tuple(
        GuidanceRange(float(sigma), float(c), float(s), float(r), tuple(b))
        for sigma, c, s, r, b in zip(from_sigmas, *lists, strict=True)
    )


@dataclass(frozen=True)
class ReleaseDefaults:
    """What one release (at one model size) was made to run with; every field can be overridden by
    the caller. `one_pass` is what a single-pass generation at the full size uses; the multi-scale
    releases (0.9.7 on) also keep their two official passes."""

    release: str  # "0.9.8-distilled": a name of RELEASES
    size: str  # "2B" or "13B"
    vae: str  # the layout of the release's VAE, as load_vae reports it: "0.9.0", "0.9.1" or "0.9.5+"
    causal_positions: bool  # the transformer's "1 − frame" RoPE fix (TransformerConfig.causal_temporal_positioning)
    distilled: bool  # guidance- and timestep-distilled (its file names `allowed_inference_steps`)
    one_pass: PassSettings
    guidance_scale: float  # one CFG scale for a sampler that takes a single one (one_pass has the official guidance)
    schedule: str  # a name of sampling/schedule.py's SCHEDULES
    decode_timestep: float | None  # None: the decoder is not timestep-conditioned (0.9.0)
    decode_noise_scale: float
    text_tokens: int  # prompts are padded / cut to this many T5 tokens
    frame_rate: float
    conditioning: str  # how image and clip conditions sit among the tokens (sampling/rules.py)
    cond_noise_scale: float  # strength-1 conditions re-noised by this · σ² before each step
    stg_mode: str  # one of STG_MODES
    stochastic_sampling: bool  # each step re-noises the predicted clean latents instead of an Euler step
    source: str  # the config file and commit these values come from
    # multi-scale (0.9.7 on): a pass at `downscale_factor` of the size, the latents doubled by the
    # spatial upscaler, then a refining pass at the full size
    first_pass: PassSettings | None = None
    second_pass: PassSettings | None = None
    downscale_factor: float | None = None
    spatial_upscaler: str | None = None  # the upscaler's file in Lightricks/LTX-Video

    def __post_init__(self) -> None:
        if self.stg_mode not in STG_MODES:
            raise ValueError(f"{self.key}: stg_mode {self.stg_mode!r} is not one of {STG_MODES}")

    @property
    def key(self) -> str:
        """The registry key: the official config's stem less `ltxv-`, e.g. "13b-0.9.8-distilled"."""
        return release_key(self.release, self.size)

    @property
    def steps(self) -> int:
        return self.one_pass.steps

    @property
    def timesteps(self) -> tuple[float, ...] | None:
        return self.one_pass.timesteps

    def guidance_config(self, settings: PassSettings | None = None) -> dict[str, Any]:
        """The guidance of a pass (default: `one_pass`) in the official config's keys, with one value
        per σ range, or one value when there is one range: what sampling/guidance.py's
        `Guidance.from_config` reads."""
        ranges = (settings or self.one_pass).guidance

        def per_range(values: tuple[Any, ...]) -> Any:
            return values[0] if len(values) == 1 else values

        return {
            "guidance_scale": per_range(tuple(r.cfg_scale for r in ranges)),
            "stg_scale": per_range(tuple(r.stg_scale for r in ranges)),
            "rescaling_scale": per_range(tuple(r.stg_rescale for r in ranges)),
            "skip_block_list": per_range(tuple(r.stg_skip_blocks for r in ranges)),
            "guidance_timesteps": tuple(r.from_sigma for r in ranges) if len(ranges) > 1 else None,
            "cfg_star_rescale": (settings or self.one_pass).cfg_star_rescale,
            "stg_mode": self.stg_mode,
        }

    @property
    def multiscale(self) -> bool:
        """Whether the release has the official two-pass (multi-scale) pipeline: 0.9.7 on."""
        return self.first_pass is not None and self.second_pass is not None

    def pass_defaults(self, which: str) -> ReleaseDefaults:
        """These defaults with pass `which` ("first" or "second" of the multi-scale pipeline) as the pass
        that runs: what settings.py resolves each pass from, as it resolves `one_pass` for one pass."""
        chosen = {"first": self.first_pass, "second": self.second_pass}[which]
        if chosen is None:
            raise ValueError(f"LTX-Video {self.release} {self.size} has no multi-scale pipeline")
        return replace(self, one_pass=chosen)

    def one_pass_settings(self) -> ReleaseDefaults:
        """These defaults without what names them or serves only the multi-scale passes: two releases
        whose `one_pass_settings()` are equal generate alike in one pass."""
        return replace(
            self,
            release="",
            size="",
            source="",
            first_pass=None,
            second_pass=None,
            downscale_factor=None,
            spatial_upscaler=None,
        )


def release_key(release: str, size: str) -> str:
    return f"{size.lower()}-{release}"


def _config(name: str, commit: str = HEAD) -> str:
    return f"{LIGHTRICKS} configs/{name} @ {commit}"


# The guidance of every 2B config from 0.9.0 to 0.9.6-dev: guidance_scale 3, stg_scale 1,
# rescaling_scale 0.7, skip_block_list [19], num_inference_steps 40.
_2B_GUIDANCE = constant(cfg=3.0, stg=1.0, rescale=0.7, blocks=(19,))

# 13B dev, 0.9.7 and 0.9.8 alike (ltxv-13b-0.9.7-dev.yaml @ 98a0ce6 = ltxv-13b-0.9.8-dev.yaml @ 5260738).
_13B_DEV_FIRST = PassSettings(
    steps=30,
    guidance=by_sigma(
        from_sigmas=(1.0, 0.996, 0.9933, 0.9850, 0.9767, 0.9008, 0.6180),  # first_pass.guidance_timesteps
        cfg=(1, 1, 6, 8, 6, 1, 1),  # first_pass.guidance_scale
        stg=(0, 0, 4, 4, 4, 2, 1),  # first_pass.stg_scale
        rescale=(1, 1, 0.5, 0.5, 1, 1, 1),  # first_pass.rescaling_scale
        blocks=((), (11, 25, 35, 39), (22, 35, 39), (28,), (28,), (28,), (28,)),  # first_pass.skip_block_list
    ),
    skip_final_steps=3,
    cfg_star_rescale=True,
)
_13B_DEV_SECOND = PassSettings(
    steps=30,
    guidance=constant(cfg=1.0, stg=1.0, rescale=1.0, blocks=(27,)),
    skip_initial_steps=17,
    cfg_star_rescale=True,
)
# One pass at the full size takes the first pass's guidance over all 30 steps: the first pass stops
# 3 steps early only because the second pass goes on from the upscaled latents (at step 17 of 30),
# and the first pass's last range (σ < 0.618: no CFG, STG 1 on block 28) already covers the low
# noise levels the second pass refines.
_13B_DEV_ONE = replace(_13B_DEV_FIRST, skip_final_steps=0)

# Distilled 0.9.7 / 0.9.8 (2B and 13B): fixed noise levels, no CFG, no STG (skip_block_list [42] is
# kept as the configs spell it; unused while stg_scale is 0, and beyond the 2B model's 28 blocks).
_DISTILLED_GUIDANCE = constant(cfg=1.0, stg=0.0, rescale=1.0, blocks=(42,))
_DISTILLED_FIRST = PassSettings(
    steps=7, guidance=_DISTILLED_GUIDANCE, timesteps=(1.0, 0.9937, 0.9875, 0.9812, 0.9750, 0.9094, 0.7250)
)
_DISTILLED_SECOND = PassSettings(steps=3, guidance=_DISTILLED_GUIDANCE, timesteps=(0.9094, 0.7250, 0.4219))
# One pass calls the model at every noise level of the two passes once, in order: the first pass's
# seven, then the second pass's last (its first two repeat the first pass's after re-noising the
# upscaled latents). These eight are the 8-step linear-quadratic schedule that 0.9.6-distilled runs
# (`num_inference_steps: 8`) rounded to 4 digits, the "8 (recommended)" steps of the README.
DISTILLED_TIMESTEPS = (*_DISTILLED_FIRST.timesteps, _DISTILLED_SECOND.timesteps[-1])
_DISTILLED_ONE = PassSettings(steps=8, guidance=_DISTILLED_GUIDANCE, timesteps=DISTILLED_TIMESTEPS)

# Settings the configs leave to the code, for every release unless an entry says otherwise:
_COMMON = dict(
    # decode_timestep 0.05, decode_noise_scale 0.025: every config (for 0.9.5, the yaml written in
    # 2025-05; its March 2025 command line used 0.025 / 0.0125)
    decode_timestep=0.05,
    decode_noise_scale=0.025,
    # stg_mode "attention_values": every config
    stg_mode="attention_values",
    stochastic_sampling=False,
    # Not in any config. The official command line's default was 25 until eab705c (2025-04-17), then
    # 30 ("New default resolution and FPS: 1216 × 704 pixels at 30 FPS", README of 0.9.6, for every
    # release alike); diffusers' pipelines and ComfyUI's LTXVConditioning use 25. The model is told
    # the rate and any rate works: this is the rate of the written video when none is given.
    frame_rate=25.0,
)
# 0.9.5 on: prompts padded to 256 tokens (pipeline_ltx_video.py `text_encoder_max_tokens=256`, from
# e7ec4d0, 2025-03-05, the day of 0.9.5); conditions after frame 0 appended as extra tokens
# (`ConditioningItem`, 6189c45) and strength-1 conditions re-noised by 0.15·σ² each step
# (inference.py `image_cond_noise_scale` default 0.15).
_095 = dict(vae="0.9.5+", causal_positions=True, text_tokens=256, conditioning="appended", cond_noise_scale=0.15)

_ENTRIES = (
    ReleaseDefaults(
        release="0.9.0",
        size="2B",
        vae="0.9.0",
        causal_positions=False,
        distilled=False,
        one_pass=PassSettings(steps=40, guidance=_2B_GUIDANCE),
        guidance_scale=3.0,
        # sampler "from_checkpoint": the file's scheduler config is the resolution shift ("SD3") with
        # terminal 0.1 (ltx_video/utils/diffusers_config_mapping.py OURS_SCHEDULER_CONFIG)
        schedule="shifted",
        # the 0.9.0 decoder is not timestep-conditioned: the pipeline adds no decode noise whatever
        # the config says (pipeline_ltx_video.py: only `if self.vae.decoder.timestep_conditioning`)
        decode_timestep=None,
        decode_noise_scale=0.0,
        text_tokens=128,  # pipeline_ltx_video.py @ 925516e: max_length = 128
        # The first frame is written in place; the official code of the time re-noised it by 0.15·σ²,
        # diffusers and ComfyUI keep it clean, as this pack does (README: deliberate choices).
        conditioning="in_place",
        cond_noise_scale=0.0,
        source=_config("ltxv-2b-0.9.yaml"),
        **{k: v for k, v in _COMMON.items() if not k.startswith("decode")},
    ),
    ReleaseDefaults(
        release="0.9.1",
        size="2B",
        vae="0.9.1",
        causal_positions=False,
        distilled=False,
        one_pass=PassSettings(steps=40, guidance=_2B_GUIDANCE),
        guidance_scale=3.0,
        schedule="shifted",  # as 0.9.0
        text_tokens=128,  # as 0.9.0
        conditioning="in_place",  # as 0.9.0
        cond_noise_scale=0.0,
        source=_config("ltxv-2b-0.9.1.yaml"),
        **_COMMON,
    ),
    ReleaseDefaults(
        release="0.9.5",
        size="2B",
        distilled=False,
        one_pass=PassSettings(steps=40, guidance=_2B_GUIDANCE),
        guidance_scale=3.0,
        # sampler "from_checkpoint"; diffusers' conversions of 0.9.5 on drop the shift and its
        # LTXConditionPipeline supplies linear-quadratic sigmas (a file's own scheduler config wins:
        # loading/release.py)
        schedule="linear_quadratic",
        source=_config("ltxv-2b-0.9.5.yaml"),
        **_COMMON,
        **_095,
    ),
    ReleaseDefaults(
        release="0.9.6-dev",
        size="2B",
        distilled=False,
        one_pass=PassSettings(steps=40, guidance=_2B_GUIDANCE),  # the same config as 0.9.5
        guidance_scale=3.0,
        schedule="linear_quadratic",
        source=_config("ltxv-2b-0.9.6-dev.yaml"),
        **_COMMON,
        **_095,
    ),
    ReleaseDefaults(
        release="0.9.6-distilled",
        size="2B",
        distilled=True,
        # guidance_scale 1, stg_scale 0, rescaling_scale 1, no skip_block_list, num_inference_steps 8
        one_pass=PassSettings(steps=8, guidance=constant(cfg=1.0, stg=0.0, rescale=1.0, blocks=())),
        guidance_scale=1.0,
        schedule="linear_quadratic",  # sampler "from_checkpoint", 8 steps: no explicit timesteps
        source=_config("ltxv-2b-0.9.6-distilled.yaml"),
        **{**_COMMON, "stochastic_sampling": True},  # stochastic_sampling: true
        **_095,
    ),
    *(
        ReleaseDefaults(
            release=f"{version}-dev",
            size="13B",
            distilled=False,
            one_pass=_13B_DEV_ONE,
            # The per-range scales above peak at 8; a sampler that has one scale for every step uses
            # 5, the value of diffusers' LTX-Video 0.9.7-dev example (docs/source/en/api/pipelines/
            # ltx_video.md @ huggingface/diffusers 58eb52c).
            guidance_scale=5.0,
            schedule="linear_quadratic",  # as 0.9.5 (30 steps, sampler "from_checkpoint")
            first_pass=_13B_DEV_FIRST,
            second_pass=_13B_DEV_SECOND,
            downscale_factor=0.6666666,
            spatial_upscaler=f"ltxv-spatial-upscaler-{version}.safetensors",
            source=_config(f"ltxv-13b-{version}-dev.yaml", commit),
            **_COMMON,
            **_095,
        )
        for version, commit in (("0.9.7", RELEASES_097), ("0.9.8", HEAD))
    ),
    *(
        ReleaseDefaults(
            release=f"{version}-distilled",
            size=size,
            distilled=True,
            one_pass=_DISTILLED_ONE,
            guidance_scale=1.0,  # first_pass / second_pass guidance_scale 1
            schedule="distilled",  # the explicit timesteps (sampling/schedule.py)
            first_pass=_DISTILLED_FIRST,
            # second_pass.tone_map_compression_ratio 0.6 in the 13B 0.9.8 config only
            second_pass=replace(_DISTILLED_SECOND, tone_map_compression=tone_map),
            downscale_factor=0.6666666,
            spatial_upscaler=f"ltxv-spatial-upscaler-{version}.safetensors",
            source=_config(f"ltxv-{size.lower()}-{version}-distilled.yaml", commit),
            **_COMMON,
            **_095,
        )
        for version, size, commit, tone_map in (
            ("0.9.7", "13B", RELEASES_097, 0.0),
            ("0.9.8", "13B", HEAD, 0.6),
            ("0.9.8", "2B", HEAD, 0.0),
        )
    ),
)

# key ("2b-0.9.1", "13b-0.9.8-distilled", …) → the release's defaults at that size
RELEASE_DEFAULTS: dict[str, ReleaseDefaults] = {entry.key: entry for entry in _ENTRIES}
# The release names, oldest first: what a user chooses (the size is read off the model).
RELEASES: tuple[str, ...] = tuple(
    sorted({e.release for e in _ENTRIES}, key=lambda name: (tuple(map(int, name.split("-")[0].split("."))), name))
)
SIZES: dict[str, tuple[str, ...]] = {
    name: tuple(e.size for e in _ENTRIES if e.release == name) for name in RELEASES
}  # release → its model sizes


def defaults_for(release: str, size: str = "2B") -> ReleaseDefaults:
    """The defaults of `release` (a name of RELEASES) at model `size` ("2B" or "13B")."""
    if release not in SIZES:
        raise ValueError(f"unknown LTX-Video release {release!r}; known: {', '.join(RELEASES)}")
    if size not in SIZES[release]:
        raise ValueError(f"LTX-Video {release} was released as {' and '.join(SIZES[release])}, not {size}")
    return RELEASE_DEFAULTS[release_key(release, size)]


def multiscale_releases() -> str:
    """The releases with a multi-scale pipeline, in words: "0.9.7-dev (13B), …, 0.9.8-distilled (13B, 2B)"."""
    sizes: dict[str, list[str]] = {}
    for entry in _ENTRIES:
        if entry.multiscale:
            sizes.setdefault(entry.release, []).append(entry.size)
    return ", ".join(f"{release} ({', '.join(sizes[release])})" for release in RELEASES if release in sizes)


def changed_fields(a: ReleaseDefaults, b: ReleaseDefaults) -> list[str]:
    """The names of the one-pass settings in which `a` and `b` differ."""
    one, other = a.one_pass_settings(), b.one_pass_settings()
    return [f.name for f in fields(ReleaseDefaults) if getattr(one, f.name) != getattr(other, f.name)]
