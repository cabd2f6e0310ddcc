"""Sigma schedules as pure functions. Each returns a float32 tensor of steps + 1 noise levels from
(at most) 1 down to a final 0."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..defaults import DISTILLED_TIMESTEPS

BASE_SHIFT, MAX_SHIFT = 0.95, 2.05  # LTX-Video's shift at 1,024 and 4,096 latent tokens
BASE_TOKENS, MAX_TOKENS = 1024, 4096
TERMINAL = 0.1  # the last non-zero sigma after stretching (0.9.0 / 0.9.1 checkpoints)


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number ≥ 1, got {steps!r}")


def resolution_shift(tokens: int, base_shift: float = BASE_SHIFT, max_shift: float = MAX_SHIFT) -> float:
    """mu of the time shift, linear in the number of latent tokens (F·H·W), through
    (1024, base_shift) and (4096, max_shift); more tokens keep more noise for longer."""
    slope = (max_shift - base_shift) / (MAX_TOKENS - BASE_TOKENS)
    return base_shift + slope * (tokens - BASE_TOKENS)


def shifted_sigmas(
    steps: int,
    tokens: int,
    *,
    base_shift: float = BASE_SHIFT,
    max_shift: float = MAX_SHIFT,
    terminal: float | None = TERMINAL,
) -> torch.Tensor:
    """The resolution-shifted flow-matching schedule with terminal stretch (the default of 0.9.0 /
    0.9.1): t = linspace(1, 1/steps), σ = e^mu / (e^mu + 1/t − 1), then stretched so that the last
    non-zero σ equals `terminal` (None: no stretch)."""
    _check_steps(steps)
    e_mu = math.exp(resolution_shift(tokens, base_shift, max_shift))
    t = torch.linspace(1.0, 1.0 / steps, steps, dtype=torch.float64)
    sigmas = e_mu / (e_mu + (1 / t - 1))
    if terminal is not None:
        if not 0 < terminal < 1:
            raise ValueError(f"terminal must be in (0, 1), got {terminal}")
        if steps > 1:  # one step is σ = 1 → 0; the stretch would divide 0 by 0 (as the references do)
            sigmas = 1 - (1 - sigmas) * (1 - terminal) / (1 - sigmas[-1])
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)


def linear_quadratic_sigmas(
    steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> torch.Tensor:
    """The linear-quadratic schedule (0.9.6+ and distilled models, no shift): the first
    `linear_steps` (default steps // 2) lower σ linearly from 1 to 1 − threshold_noise, the rest
    follow a parabola that continues that slope and reaches 0."""
    _check_steps(steps)
    if steps == 1:
        return torch.tensor([1.0, 0.0])
    n_lin = steps // 2 if linear_steps is None else linear_steps
    if not 0 < n_lin < steps:
        raise ValueError(f"linear_steps must be in [1, {steps - 1}], got {n_lin}")
    n_quad = steps - n_lin
    slope = threshold_noise / n_lin  # τ = 1 − σ per step along the linear part
    curve = (1 - threshold_noise - slope * n_quad) / n_quad**2  # τ(steps) = 1
    i = torch.arange(steps, dtype=torch.float64)
    tau = torch.where(i < n_lin, i * slope, threshold_noise + slope * (i - n_lin) + curve * (i - n_lin) ** 2)
    return torch.cat([1 - tau, tau.new_zeros(1)]).to(torch.float32)


def custom_sigmas(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """A user's sigma list, checked: decreasing, within [0, 1]; a final 0 is appended if missing."""
    sigmas = torch.as_tensor(values, dtype=torch.float32).flatten()
    if sigmas.numel() == 0:
        raise ValueError("the sigma list is empty; give at least one value, e.g. [1.0, 0.5]")
    if sigmas.max() > 1 or sigmas.min() < 0:
        raise ValueError(f"sigmas must lie in [0, 1], got {sigmas.tolist()}")
    if sigmas[-1] != 0:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    if (sigmas[1:] >= sigmas[:-1]).any():
        raise ValueError(f"sigmas must strictly decrease, got {sigmas.tolist()}")
    return sigmas


def explicit_sigmas(timesteps: Sequence[float], steps: int) -> torch.Tensor:
    """The noise levels `timesteps` (one per model call, from 1 down) and a final 0, for as many steps
    as they have. For another number of steps: the linear-quadratic schedule, which the distilled
    releases' timesteps follow (they are its 8 steps rounded to 4 digits), so that fewer steps stay
    on the curve those models were distilled for."""
    _check_steps(steps)
    if steps != len(timesteps):
        return linear_quadratic_sigmas(steps)
    return custom_sigmas(timesteps)


def partial_schedule(make: Callable[[int], torch.Tensor], steps: int, denoise: float) -> torch.Tensor:
    """The last `steps` steps of a schedule built for steps / denoise steps (as ComfyUI does), for
    video-to-video: sampling starts from σ ≈ denoise instead of 1. `make(n)` builds an n-step schedule."""
    _check_steps(steps)
    if not 0 < denoise <= 1:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}")
    return make(max(steps, round(steps / denoise)))[-(steps + 1) :]


def skip_steps(sigmas: torch.Tensor, initial: int = 0, final: int = 0) -> torch.Tensor:
    """A schedule (steps + 1 noise levels ending in 0) without its first `initial` and last `final`
    steps, as the official pipeline's `skip_initial_inference_steps` / `skip_final_inference_steps` cut
    its timesteps: the last step kept still goes to 0 (a pass that stops early ends on its clean
    estimate), and a pass that starts late starts at the first level kept."""
    steps = sigmas.numel() - 1
    if initial < 0 or final < 0 or initial + final >= steps:
        raise ValueError(
            f"cannot skip {initial} initial and {final} final steps of {steps}: both must be ≥ 0 and leave a step"
        )
    return torch.cat([sigmas[initial : steps - final], sigmas.new_zeros(1)])


# schedule name → (steps, latent tokens) → sigmas; the names are what defaults and nodes refer to
SCHEDULES: dict[str, Callable[[int, int], torch.Tensor]] = {
    "shifted": lambda steps, tokens: shifted_sigmas(steps, tokens),
    "linear_quadratic": lambda steps, tokens: linear_quadratic_sigmas(steps),
    # the 0.9.7+ distilled releases' fixed noise levels (defaults.py), for 8 steps
    "distilled": lambda steps, tokens: explicit_sigmas(DISTILLED_TIMESTEPS, steps),
}


def make_schedule(name: str, steps: int, tokens: int) -> torch.Tensor:
    """The named schedule for `steps` steps of a video with `tokens` latent tokens."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name](steps, tokens)
