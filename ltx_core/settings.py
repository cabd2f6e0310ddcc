"""Settings: what one generation runs with. Every sampling, text and decode field left None takes the
value of the model's release, as Lightricks' official config for it sets it (defaults.py, one pass);
`resolve_settings` fills those gaps and says which values were given.

Guidance is overridden one part at a time, as the official pipeline's own arguments are independent:
`guidance_scale` replaces only classifier-free guidance (CFG) and keeps the release's spatio-temporal
guidance (STG), so 1 turns CFG off and leaves STG on where the release has it (`stg_scale=0` turns
that off). `stg_scale`, `stg_mode`, `stg_blocks`, `rescaling_scale` and `cfg_star_rescale` each
replace their part likewise. A release with guidance per noise-level range (13B dev) keeps its ranges:
a single value given here applies to every range. `guidance` replaces the release's whole guidance
(ranges included); the single fields then apply on top of it.

`multiscale=True` runs the release's two official passes instead of one (0.9.7 on): multiscale.py
resolves each pass from the release's steps or noise levels and guidance as above, the guidance fields
given here applying to both passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .defaults import ReleaseDefaults
from .parallel.layout import Parallel
from .sampling.guidance import PERTURBING_MODES, Guidance
from .sampling.rules import conditioning_rule
from .sampling.schedule import (
    SCHEDULES,
    custom_sigmas,
    explicit_sigmas,
    make_schedule,
    partial_schedule,
    skip_steps,
)

# Settings field → the Guidance field it replaces (the official config key)
GUIDANCE_FIELDS = {
    "guidance_scale": "guidance_scale",
    "stg_scale": "stg_scale",
    "stg_mode": "stg_mode",
    "stg_blocks": "skip_block_list",
    "rescaling_scale": "rescaling_scale",
    "cfg_star_rescale": "cfg_star_rescale",
}
# the fields whose None means "the release's value"
RELEASE_FIELDS = (
    "steps",
    "timesteps",
    "schedule",
    "guidance",
    *GUIDANCE_FIELDS,
    "stochastic_sampling",
    "frame_rate",
    "text_tokens",
    "conditioning",
    "cond_noise_scale",
    "decode_timestep",
    "decode_noise_scale",
)


@dataclass(frozen=True)
class Settings:
    """Generation settings. Size, seed, batch, device, memory mode and the processes that share the work
    (`parallel`: every process of the group calls the pipeline with the same settings and gets the same
    frames) are the caller's; every other field left None takes the value of the models' release (see the
    module docstring for guidance)."""

    width: int = 768
    height: int = 512
    frames: int = 121
    frame_rate: float | None = None  # told to the model, and the written video's rate
    steps: int | None = None  # a distilled release's fixed noise levels are for its count; others: linear-quadratic
    guidance_scale: float | None = None  # CFG (1 = off); the release's STG stays
    seed: int = 0
    batch: int = 1
    device: torch.device | str | None = None
    memory: str = "default"  # or "low_vram": see memory.MEMORY_MODES
    timesteps: Sequence[float] | None = None  # the noise level of each step, high to low: replaces steps, schedule
    schedule: str | None = None  # a name of sampling/schedule.py's SCHEDULES
    guidance: Guidance | None = None  # replaces the release's whole guidance; the fields below apply over it
    stg_scale: float | None = None  # STG (0 = off)
    stg_mode: str | None = None  # one of guidance.STG_MODES, or its short name (stg_av, stg_as, stg_r, stg_t)
    stg_blocks: Sequence[int] | None = None  # the blocks STG perturbs (official `skip_block_list`), every range
    rescaling_scale: float | None = None  # STG's rescaling in [0, 1] (1 = none)
    cfg_star_rescale: bool | None = None  # CFG-zero*
    stochastic_sampling: bool | None = None  # each step re-noises the clean estimate instead of an Euler step
    text_tokens: int | None = None  # prompts padded / cut to this many T5 tokens
    conditioning: str | None = None  # "in_place" or "appended" (sampling/rules.py); the release's fits its model
    cond_noise_scale: float | None = None  # strength-1 conditions re-noised by this·σ² each step
    decode_timestep: float | None = None  # the VAE decoder's timestep (0.9.1+ decoders)
    decode_noise_scale: float | None = None  # noise mixed into the latents before decoding
    multiscale: bool = False  # the release's two passes with the spatial upsampler between them (0.9.7+)
    parallel: Parallel | None = None  # processes sharing each step and the decode (ltx_core.parallel.init_parallel)

    def __post_init__(self) -> None:
        for name in ("timesteps", "stg_blocks"):  # lists become tuples: the settings stay hashable
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, bytes)) and isinstance(value, Sequence):
                object.__setattr__(self, name, tuple(value))

    @property
    def given(self) -> frozenset[str]:
        """The names of the release-overriding fields that are set."""
        return frozenset(name for name in RELEASE_FIELDS if getattr(self, name) is not None)


@dataclass(frozen=True)
class ResolvedSettings:
    """Settings with every gap filled from the release: what a generation runs with."""

    steps: int
    schedule: str  # a name of SCHEDULES, or "timesteps" for explicit noise levels
    timesteps: tuple[float, ...] | None  # the noise level of each step, when explicit
    skip_initial_steps: int  # steps of the schedule not run at its start (a multi-scale second pass)
    skip_final_steps: int  # steps not run at its end (a first pass that another pass continues)
    guidance: Guidance
    stochastic_sampling: bool
    frame_rate: float
    text_tokens: int
    conditioning: str
    cond_noise_scale: float
    decode_timestep: float | None  # None: the decoder is not timestep-conditioned (0.9.0)
    decode_noise_scale: float
    tone_map_compression: float  # tone mapping of the latents before decoding (13B 0.9.8 distilled's second pass)
    release: str  # the release and size, e.g. "0.9.8-distilled 2B"
    source: str  # where the release's values come from (its official config)
    given: frozenset[str]  # the Settings fields the caller set

    @property
    def steps_run(self) -> int:
        """The model's steps: `steps` less the skipped ones."""
        return self.steps - self.skip_initial_steps - self.skip_final_steps

    def sigmas(self, tokens: int, denoise: float = 1.0) -> torch.Tensor:
        """The noise levels of the steps that run, ending in 0, for a video of `tokens` latent tokens:
        `steps` of them less the skipped ones, starting at about `denoise` (video-to-video: the last steps
        of a longer schedule, as ComfyUI does)."""
        timesteps = self.timesteps
        if timesteps is not None:
            full = partial_schedule(lambda n: explicit_sigmas(timesteps, n), self.steps, denoise)
        else:
            full = partial_schedule(lambda n: make_schedule(self.schedule, n, tokens), self.steps, denoise)
        if self.skip_initial_steps or self.skip_final_steps:
            return skip_steps(full, self.skip_initial_steps, self.skip_final_steps)
        return full

    def perturbed_blocks(self) -> tuple[int, ...]:
        """The blocks STG perturbs in some noise-level range, sorted (empty without STG)."""
        g = self.guidance
        if g.stg_mode not in PERTURBING_MODES:
            return ()
        ranges = len(g.guidance_timesteps) if g.guidance_timesteps is not None else 1
        scales = g.stg_scale if isinstance(g.stg_scale, tuple) else (g.stg_scale,) * ranges
        nested = bool(g.skip_block_list) and isinstance(g.skip_block_list[0], tuple)
        blocks = g.skip_block_list if nested else (g.skip_block_list,) * ranges
        return tuple(sorted({i for scale, used in zip(scales, blocks, strict=True) if scale > 0 for i in used}))

    def check_blocks(self, num_layers: int) -> None:
        """A ValueError when STG would perturb a block that a model of `num_layers` blocks does not have."""
        blocks = self.perturbed_blocks()
        if blocks and blocks[-1] >= num_layers:
            origin = "the Settings' STG" if self.given & {"stg_blocks", "guidance"} else f"{self.release}'s STG"
            raise ValueError(
                f"{origin} perturbs block {', '.join(map(str, blocks))}, but this model has "
                f"{count_blocks(num_layers)}: set Settings.stg_blocks to blocks it has, or stg_scale=0"
            )

    def describe(self, given_as: Mapping[str, str] | None = None) -> str:
        """One line: each value, marked with how it was given when the release did not set it (`given_as`:
        Settings field → words such as the flag that set it; "set" for the others)."""
        marks = self.marks(given_as)
        shown = describe_items([*self.pass_items(), *self.run_items()], marks)
        return f"{shown}; {self.unmarked()}"

    def marks(self, given_as: Mapping[str, str] | None = None) -> dict[str, str]:
        """Settings field → how it was given, for each field the caller set."""
        return {name: "set" for name in self.given} | dict(given_as or {})

    def unmarked(self) -> str:
        return f"unmarked: LTX-Video {self.release}'s defaults (from {self.source})"

    def pass_items(self) -> list[tuple[str, tuple[str, ...]]]:
        """(words, the Settings fields that set them) for what one pass runs: steps, noise levels, guidance."""
        g = self.guidance
        skipped = [f"the first {self.skip_initial_steps} skipped"] * bool(self.skip_initial_steps)
        skipped += [f"the last {self.skip_final_steps} skipped"] * bool(self.skip_final_steps)
        items = [
            (", ".join([f"{self.steps} steps", *skipped]), ("steps", "timesteps")),
            (self._schedule_words(), ("schedule", "timesteps")),
            (f"CFG {_values(g.guidance_scale)}", ("guidance_scale", "guidance")),
            (f"STG {_values(g.stg_scale)}", ("stg_scale", "guidance")),
            (f"STG mode {g.stg_mode}", ("stg_mode", "guidance")),
            (f"STG blocks {_blocks(g.skip_block_list)}", ("stg_blocks", "guidance")),
            (f"rescaling {_values(g.rescaling_scale)}", ("rescaling_scale", "guidance")),
            (f"CFG-zero* {_on(g.cfg_star_rescale)}", ("cfg_star_rescale", "guidance")),
            (f"stochastic sampling {_on(self.stochastic_sampling)}", ("stochastic_sampling",)),
        ]
        if g.guidance_timesteps is not None:  # per range: "CFG 1/1/6/…" reads against these
            items.insert(2, (f"guidance by σ range from {_values(g.guidance_timesteps)}", ("guidance",)))
        if self.tone_map_compression:
            items.append((f"tone map {self.tone_map_compression:g}", ()))
        return items

    def run_items(self) -> list[tuple[str, tuple[str, ...]]]:
        """(words, the Settings fields that set them) for what every pass shares: text, conditions, decoding."""
        return [
            (f"{self.frame_rate:g} fps", ("frame_rate",)),
            (f"{self.text_tokens} prompt tokens", ("text_tokens",)),
            (f"conditions {self.conditioning.replace('_', ' ')}", ("conditioning",)),
            (f"condition noise {self.cond_noise_scale:g}", ("cond_noise_scale",)),
            (self._decode_words(), ("decode_timestep", "decode_noise_scale")),
        ]

    def _schedule_words(self) -> str:
        if self.timesteps is None:
            return f"{self.schedule.replace('_', '-')} schedule"
        if len(self.timesteps) == self.steps:
            return f"noise levels {_values(self.timesteps)}"
        return f"linear-quadratic schedule (the fixed noise levels are for {len(self.timesteps)} steps)"

    def _decode_words(self) -> str:
        if self.decode_timestep is None:
            return f"decode noise {self.decode_noise_scale:g}"
        return f"decode at timestep {self.decode_timestep:g} with noise {self.decode_noise_scale:g}"


def resolve_settings(settings: Settings, defaults: ReleaseDefaults) -> ResolvedSettings:
    """`settings` with each None taken from `defaults` (a release's, e.g. `Models.defaults`). Raises
    ValueError for a value out of range, naming the field."""
    s = settings
    timesteps, schedule = _schedule(s, defaults)
    steps = len(timesteps) if s.timesteps is not None else _pick(s.steps, defaults.steps)
    if s.timesteps is not None and s.steps is not None and s.steps != steps:
        raise ValueError(f"Settings: {steps} timesteps but steps={s.steps}; give one of them")
    for name, value in (("steps", steps), ("text_tokens", _pick(s.text_tokens, defaults.text_tokens))):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"Settings.{name} must be a whole number ≥ 1, got {value!r}")
    if s.frame_rate is not None and not (math.isfinite(s.frame_rate) and s.frame_rate > 0):
        raise ValueError(f"Settings.frame_rate must be a frame rate above 0, got {s.frame_rate}")
    if s.cond_noise_scale is not None and not (math.isfinite(s.cond_noise_scale) and s.cond_noise_scale >= 0):
        raise ValueError(f"Settings.cond_noise_scale must be a finite number ≥ 0, got {s.cond_noise_scale}")
    if s.decode_noise_scale is not None and not 0 <= s.decode_noise_scale <= 1:
        raise ValueError(f"Settings.decode_noise_scale must be in [0, 1], got {s.decode_noise_scale}")
    conditioning = _pick(s.conditioning, defaults.conditioning)
    conditioning_rule(conditioning)  # a known layout, or a ValueError naming them
    return ResolvedSettings(
        steps=steps,
        schedule=schedule,
        timesteps=timesteps,
        skip_initial_steps=defaults.one_pass.skip_initial_steps,
        skip_final_steps=defaults.one_pass.skip_final_steps,
        guidance=resolve_guidance(s, defaults),
        stochastic_sampling=bool(_pick(s.stochastic_sampling, defaults.stochastic_sampling)),
        frame_rate=float(_pick(s.frame_rate, defaults.frame_rate)),
        text_tokens=_pick(s.text_tokens, defaults.text_tokens),
        conditioning=conditioning,
        cond_noise_scale=float(_pick(s.cond_noise_scale, defaults.cond_noise_scale)),
        decode_timestep=_pick(s.decode_timestep, defaults.decode_timestep),
        decode_noise_scale=float(_pick(s.decode_noise_scale, defaults.decode_noise_scale)),
        tone_map_compression=defaults.one_pass.tone_map_compression,
        release=f"{defaults.release} {defaults.size}".strip(),
        source=defaults.source,
        given=s.given,
    )


def resolve_guidance(settings: Settings, defaults: ReleaseDefaults) -> Guidance:
    """The release's one-pass guidance (or `settings.guidance`) with the single guidance fields of
    `settings` replacing their parts."""
    base = settings.guidance or Guidance.from_config(defaults.guidance_config())
    overrides = {key: getattr(settings, name) for name, key in GUIDANCE_FIELDS.items()}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    return replace(base, **overrides) if overrides else base


def _schedule(s: Settings, defaults: ReleaseDefaults) -> tuple[tuple[float, ...] | None, str]:
    """(explicit noise levels or None, the schedule's name): the caller's timesteps win, then the caller's
    schedule, then the release's explicit timesteps (distilled), then its schedule."""
    if s.timesteps is not None:
        custom_sigmas(s.timesteps)  # checked: in [0, 1] and decreasing
        levels = tuple(float(t) for t in s.timesteps)
        return (levels[:-1] if levels[-1] == 0 else levels), "timesteps"  # a final 0 ends every schedule
    if s.schedule is not None:
        if s.schedule not in SCHEDULES:
            raise ValueError(f"Settings.schedule {s.schedule!r} is not one of {', '.join(SCHEDULES)}")
        return None, s.schedule
    if defaults.timesteps is not None:
        return defaults.timesteps, "timesteps"
    return None, defaults.schedule


def describe_items(items: list[tuple[str, tuple[str, ...]]], marks: Mapping[str, str]) -> str:
    """The items' words (see `ResolvedSettings.pass_items`) joined, each marked with how its first given
    field was given (`marks`: see `ResolvedSettings.marks`)."""
    shown = []
    for text, names in items:
        by = next((marks[name] for name in names if name in marks), None)
        shown.append(f"{text} ({by})" if by else text)
    return ", ".join(shown)


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _values(value: float | tuple[float, ...]) -> str:
    return "/".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"


def _blocks(blocks: tuple) -> str:
    if blocks and isinstance(blocks[0], tuple):  # one list per range
        return "/".join(",".join(map(str, b)) or "none" for b in blocks)
    return ",".join(map(str, blocks)) or "none"


def count_blocks(layers: int) -> str:
    """ "1 block (0)", "28 blocks (0 … 27)"."""
    return "1 block (0)" if layers == 1 else f"{layers} blocks (0 … {layers - 1})"


def _on(flag: bool) -> str:
    return "on" if flag else "off"
