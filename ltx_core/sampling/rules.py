"""How conditioned tokens are laid out, which noise level the model is told for them, and how the Euler
step moves them: one rule per generation of reference pipelines, chosen by name.

- "in_place" (0.9.0 / 0.9.1; diffusers' LTXImageToVideoPipeline, ComfyUI, the official pipeline of
  January 2025): a token of strength s is told σ·(1 − s) and moves by (σ' − σ)·(1 − s)·v, so a
  strength-1 token never moves and a partial one is re-generated all along the schedule.
- "appended" (0.9.5 on; the official `LTXVideoPipeline` with `ConditioningItem`s and diffusers'
  LTXConditionPipeline): a token is told min(σ, 1 − s) and stays put while σ ≥ 1 − s (within 1e-6);
  after that it follows the schedule like a free token (`denoising_step` / the per-token scheduler
  step: x − (σ_token − σ')·v). Strength-1 tokens never move.

Both references also re-noise strength-1 tokens before every step (`image_cond_noise_scale`):
`renoise_hard_conditions`.

With `noise` given, a step is stochastic (the official `stochastic_sampling`, set by the 0.9.6 distilled
config): instead of the Euler step, a token goes to its clean estimate x − σ_token·v and is noised afresh
to its next level σ'_token: (1 − σ'_token)·x0 + σ'_token·noise. Tokens that do not move stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .conditioning import TokenState, appended_start, in_place_start
from .noise import draw_noise

EPS = 1e-6  # the references' `t_eps`: how far below 1 − s the noise level must be for a token to move


def scaled_noise_level(sigma: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    return sigma * (1 - strength)


def renoised(clean: torch.Tensor, level: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The clean estimate (B, N, C) noised to `level` (a scalar, or per token (B, N) / (B, 1)), as the
    official scheduler's `add_noise`: (1 − σ)·clean + σ·noise."""
    level = level[..., None] if level.ndim else level
    return (1 - level) * clean + level * noise


def scaled_step(
    x: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    strength: torch.Tensor,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    if noise is None:
        return x + ((sigma_next - sigma) * (1 - strength))[..., None] * velocity
    clean = x - scaled_noise_level(sigma, strength)[..., None] * velocity
    return renoised(clean, scaled_noise_level(sigma_next, strength), noise)


def capped_noise_level(sigma: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    return torch.minimum(sigma, 1 - strength)


def held_step(
    x: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    strength: torch.Tensor,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    # The references step each token from its own level to the largest schedule value below it, which
    # for a moving token is sigma_next.
    moving = (sigma - EPS < 1 - strength)[..., None]
    level = capped_noise_level(sigma, strength)[..., None]
    if noise is None:
        return torch.where(moving, x - (level - sigma_next) * velocity, x)
    return torch.where(moving, renoised(x - level * velocity, sigma_next, noise), x)


@dataclass(frozen=True)
class ConditioningRule:
    """start: (noise, σ0, conditions, *, initial, frame_rate, causal_fix, generator) → TokenState.
    noise_level: (σ, strength (B, N)) → the per-token σ the model is told.
    step: (x, velocity, σ, σ', strength, noise=None) → x after the Euler step, or the stochastic one
    with noise (B, N, C); all float32."""

    start: Callable[..., TokenState]
    noise_level: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    step: Callable[..., torch.Tensor]


CONDITIONING_RULES: dict[str, ConditioningRule] = {
    "in_place": ConditioningRule(in_place_start, scaled_noise_level, scaled_step),
    "appended": ConditioningRule(appended_start, capped_noise_level, held_step),
}


def conditioning_rule(name: str) -> ConditioningRule:
    if name not in CONDITIONING_RULES:
        raise ValueError(f"unknown conditioning layout {name!r}; choose one of {', '.join(CONDITIONING_RULES)}")
    return CONDITIONING_RULES[name]


def renoise_hard_conditions(
    x: torch.Tensor, state: TokenState, sigma: torch.Tensor, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """Tokens of strength 1 reset to their start + scale·noise·σ² (the references'
    `add_noise_to_image_conditioning_latents`; official default scale 0.15), the noise (B, N, C) drawn
    from `generator` for every token, as the references draw it."""
    noise = draw_noise(tuple(x.shape), generator, device=x.device)
    hard = (state.strength > 1 - EPS)[..., None]
    return torch.where(hard, state.tokens + scale * noise * sigma**2, x)
