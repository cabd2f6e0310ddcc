"""Per-release sampling and decoding defaults, chosen from what the loader detected."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReleaseDefaults:
    """What a release was tuned for; every field can be overridden by the caller."""

    steps: int
    guidance_scale: float
    schedule: str  # "shifted" (resolution shift + terminal stretch) or "linear_quadratic"
    decode_timestep: float | None  # None: the decoder is not timestep-conditioned (0.9.0)
    decode_noise_scale: float
    text_tokens: int
    frame_rate: float = 25.0
    # How image and clip conditions sit among the tokens and are stepped (sampling/rules.py), and how
    # much strength-1 conditions are re-noised each step (·σ²), as the release's reference pipeline did.
    conditioning: str = "in_place"
    cond_noise_scale: float = 0.0


# keyed by the VAE release, the most specific thing a checkpoint tells about itself
RELEASE_DEFAULTS: dict[str, ReleaseDefaults] = {
    "0.9.0": ReleaseDefaults(40, 3.0, "shifted", None, 0.0, 128),
    "0.9.1": ReleaseDefaults(40, 3.0, "shifted", 0.05, 0.025, 128),
    # diffusers' conversions of 0.9.5+ drop the shift and supply linear-quadratic sigmas;
    # the official code pads prompts to 256 tokens from 0.9.5 on, appends conditions after frame 0
    # as extra tokens and re-noises kept conditions (inference.py: image_cond_noise_scale 0.15)
    "0.9.5+": ReleaseDefaults(
        40, 3.0, "linear_quadratic", 0.05, 0.025, 256, conditioning="appended", cond_noise_scale=0.15
    ),
}


def defaults_for(release: str) -> ReleaseDefaults:
    """The defaults of `release` ("0.9.0", "0.9.1" or "0.9.5+", as the loader reports it)."""
    if release not in RELEASE_DEFAULTS:
        raise ValueError(f"no defaults for release {release!r}; known: {', '.join(RELEASE_DEFAULTS)}")
    return RELEASE_DEFAULTS[release]
