"""sample(): the Euler flow-matching loop with classifier-free guidance and frame conditions.

The loop works on tokens: conditioning.py builds the starting sequence (video tokens, plus appended
condition tokens in the 0.9.5+ layout), rules.py says which noise level each token is told and how it
steps. State, sigmas and the Euler update stay in float32; only the model call runs in the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..model.patchify import from_tokens
from ..model.transformer import LTXVideoTransformer
from ..text.encoder import Conditioning
from .conditioning import FrameCondition
from .noise import seeded_generator
from .rules import conditioning_rule, renoise_hard_conditions

# on_step(step, total_steps, denoised): the current clean-video estimate (B, C, F, H, W) float32,
# for progress and previews; raising from it cancels sampling.
StepCallback = Callable[[int, int, torch.Tensor], None]


def _text_batch(text: Conditioning, batch: int, cfg: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Context (B or 2B, L, D) and mask: [negative; positive] for guidance, each broadcast to `batch`."""
    parts = [text.negative, text] if cfg else [text]
    length = max(p.context.shape[1] for p in parts)
    contexts, masks = [], []
    for part in parts:
        if part.context.shape[0] not in (1, batch):
            raise ValueError(f"{part.context.shape[0]} prompts for {batch} videos: give one prompt or one per video")
        pad = length - part.context.shape[1]  # right-pad the shorter prompt batch with masked tokens
        contexts.append(F.pad(part.context, (0, 0, 0, pad)).expand(batch, -1, -1))
        masks.append(F.pad(part.mask, (0, pad)).expand(batch, -1))
    return torch.cat(contexts), torch.cat(masks)


def _rescale(guided: torch.Tensor, positive: torch.Tensor, amount: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023, §3.4): pull the guided velocity's std toward the positive one's."""
    dims = list(range(1, guided.ndim))
    rescaled = guided * (positive.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return amount * rescaled + (1 - amount) * guided


def _guided_velocity(
    model: LTXVideoTransformer,
    x: torch.Tensor,
    token_sigma: torch.Tensor,
    text: tuple[torch.Tensor, torch.Tensor],
    positions: torch.Tensor,
    guidance_scale: float,
    guidance_rescale: float,
) -> torch.Tensor:
    """One model call on x (B, N, C) at token_sigma (B, N) or (B, 1); with a 2B text batch the
    negative and positive prompts run together and are combined by classifier-free guidance."""
    context, context_mask = text
    cfg = context.shape[0] != x.shape[0]
    sigma = token_sigma[:, 0] if token_sigma.shape[1] == 1 else token_sigma  # (B,): no per-token modulation
    x_in, sigma_in = (torch.cat([x, x]), torch.cat([sigma, sigma])) if cfg else (x, sigma)
    velocity = model(x_in, sigma_in, context, context_mask, positions).float()  # (B or 2B, N, C)
    if not cfg:
        return velocity
    negative, positive = velocity.chunk(2)
    velocity = negative + guidance_scale * (positive - negative)
    return _rescale(velocity, positive, guidance_rescale) if guidance_rescale > 0 else velocity


def sample(
    model: LTXVideoTransformer,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    text: Conditioning,
    *,
    guidance_scale: float = 3.0,
    guidance_rescale: float = 0.0,
    frame_rate: float = 25.0,
    conditions: Sequence[FrameCondition] = (),
    initial: torch.Tensor | None = None,
    layout: str = "in_place",
    cond_noise_scale: float = 0.0,
    generator: torch.Generator | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Denoise `noise` (B, 128, F, H, W) along `sigmas` (steps + 1 values ending in 0).

    text: prompt embeddings; with guidance_scale ≠ 1 its `negative` is the unconditional branch, run
    in the same model call. conditions: frames kept (partly) clean, laid out and stepped by `layout`
    ("in_place" for 0.9.0 / 0.9.1, "appended" for 0.9.5+: see rules.py; `defaults.conditioning`
    holds each release's). initial: normalised latents to start from for video-to-video (mixed with
    the noise at sigmas[0]). cond_noise_scale: re-noise strength-1 conditions by this·σ² each step
    (official ≥0.9.5 default 0.15). generator: a CPU generator for the appended tokens' noise and the
    re-noising (default: seeded with 0); pass the one that drew `noise` to reproduce the references.
    Returns normalised latents (B, 128, F, H, W) in float32; appended tokens are dropped.
    """
    if noise.ndim != 5 or noise.shape[1] != model.config.in_channels:
        raise ValueError(f"noise must be (B, {model.config.in_channels}, F, H, W), got {tuple(noise.shape)}")
    cfg = guidance_scale != 1.0
    if cfg and text.negative is None:
        raise ValueError(f"guidance_scale {guidance_scale} needs a negative prompt; encode one, or use 1.0")
    rule = conditioning_rule(layout)
    b, _, f, h, w = noise.shape
    device = noise.device
    generator = seeded_generator(0) if generator is None else generator
    sigmas = sigmas.to(device=device, dtype=torch.float32)
    context, context_mask = (t.to(device) for t in _text_batch(text, b, cfg))
    state = rule.start(
        noise.to(torch.float32),
        sigmas[0],
        conditions,
        initial=None if initial is None else initial.to(device, torch.float32),
        frame_rate=frame_rate,
        causal_fix=model.config.causal_temporal_positioning,
        generator=generator,
    )
    renoise = cond_noise_scale > 0 and len(conditions) > 0

    x = state.tokens  # (B, N, C): appended condition tokens, then the video's
    steps = sigmas.numel() - 1
    for i in range(steps):
        if renoise:
            x = renoise_hard_conditions(x, state, sigmas[i], cond_noise_scale, generator)
        token_sigma = rule.noise_level(sigmas[i], state.strength)  # (B, N), or (B, 1) without conditions
        velocity = _guided_velocity(
            model, x, token_sigma, (context, context_mask), state.positions, guidance_scale, guidance_rescale
        )
        if on_step is not None:
            denoised = x - token_sigma[..., None] * velocity  # x0 = x − σ·v
            on_step(i, steps, from_tokens(denoised[:, state.appended :], f, h, w))
        x = rule.step(x, velocity, sigmas[i], sigmas[i + 1], state.strength)
    return from_tokens(x[:, state.appended :], f, h, w)
