"""The noise levels and guidance of one pass of a release: its single pass, or the first or second pass
of the multiscale recipe of 0.9.7 and later (defaults.py: `one_pass`, `first_pass`, `second_pass`).

The official pipeline runs a pass as a window of a longer schedule: `retrieve_timesteps` builds the
`num_inference_steps` schedule and drops `skip_initial_inference_steps` at its start and
`skip_final_inference_steps` at its end; the last step then goes straight to σ = 0 (the scheduler pads
its timesteps with a 0). The 13B dev passes are windows of its 30-step linear-quadratic schedule (the
first pass steps 0 … 26, the second 17 … 29). The distilled passes name their noise levels instead,
and those are windows too: of the release's one-pass levels, the 8 distilled ones (the first pass the
first seven, the second the last three).

With another number of steps a pass keeps its place: the same window, of a schedule lengthened or
shortened so that the window holds that many steps (13B dev's second pass in 5 steps: steps 7 … 11 of
a 12-step schedule, as 17 … 29 of 30). This is also how ComfyUI's denoise shortens a schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .defaults import PassSettings, ReleaseDefaults
from .sampling.guidance import Guidance
from .sampling.schedule import custom_sigmas, make_schedule, skip_steps

SINGLE, FIRST, SECOND = "single", "first", "second"
PASSES = (SINGLE, FIRST, SECOND)


@dataclass(frozen=True)
class PassWindow:
    """Steps `start` … `stop` − 1 of a `total`-step schedule: where a pass sits in its release's schedule."""

    total: int
    start: int
    stop: int

    @property
    def steps(self) -> int:
        return self.stop - self.start


def pass_settings(defaults: ReleaseDefaults, which: str) -> PassSettings:
    """The settings of pass `which` (a name of PASSES) of a release. Raises ValueError for an unknown
    name, and for first / second on a release without a multiscale recipe (before 0.9.7)."""
    if which not in PASSES:
        raise ValueError(f"unknown pass {which!r}; choose one of {', '.join(PASSES)}")
    if which == SINGLE:
        return defaults.one_pass
    settings = defaults.first_pass if which == FIRST else defaults.second_pass
    if settings is None:
        raise ValueError(
            f"LTX-Video {defaults.release} {defaults.size} has no multiscale recipe, so no {which} pass (0.9.7 "
            "and later have one: 13B dev, 13B and 2B distilled); sample it in a single pass"
        )
    return settings


def pass_window(defaults: ReleaseDefaults, settings: PassSettings) -> PassWindow:
    """Where `settings` (a pass of `defaults`) sits: in its own schedule of `steps` steps less the
    skipped ones, or, for a pass that names its noise levels, among the release's one-pass levels
    (the pass's own levels when they are not among them)."""
    levels, own = defaults.one_pass.timesteps, settings.timesteps
    if own is None:
        return PassWindow(settings.steps, settings.skip_initial_steps, settings.steps - settings.skip_final_steps)
    if levels is not None:
        for start in range(len(levels) - len(own) + 1):
            if levels[start : start + len(own)] == own:
                return PassWindow(len(levels), start, start + len(own))
    return PassWindow(len(own), 0, len(own))


def pass_sigmas(
    defaults: ReleaseDefaults, which: str, tokens: int, steps: int = 0, schedule: str | None = None
) -> torch.Tensor:
    """The noise levels of pass `which` of a release for a video of `tokens` latent tokens: steps + 1
    values ending in 0 (float32). steps 0: the pass's own count; schedule None: the release's (a pass
    that names its noise levels runs those when both are left so). Another count keeps the pass's window
    (module docstring)."""
    settings = pass_settings(defaults, which)
    window = pass_window(defaults, settings)
    if steps < 0:
        raise ValueError(f"steps must be 0 (the pass's own) or more, got {steps}")
    count = steps or window.steps
    if settings.timesteps is not None and schedule is None and count == len(settings.timesteps):
        return custom_sigmas(settings.timesteps)
    total = max(count, round(count * window.total / window.steps))
    start = min(round(window.start * total / window.total), total - count)
    full = make_schedule(schedule or defaults.schedule, total, tokens)  # total + 1 levels, the last 0
    return skip_steps(full, start, total - start - count)  # the window, ending in 0 as the core's passes do


def pass_guidance(defaults: ReleaseDefaults, which: str) -> Guidance:
    """The official guidance of pass `which` of a release: CFG and STG per noise-level range, CFG-zero*."""
    return Guidance.from_config(defaults.guidance_config(pass_settings(defaults, which)))
