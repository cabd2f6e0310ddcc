"""sample(): the Euler flow-matching loop with guidance (CFG, STG) and frame conditions.

The loop works on tokens: conditioning.py builds the starting sequence (video tokens, plus appended
condition tokens in the 0.9.5+ layout), rules.py says which noise level each token is told and how it
steps, guidance.py which branches each step runs and how their velocities combine. State, sigmas and the
Euler update stay in float32; only the model call runs in the model's dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F

from ..model.patchify import from_tokens
from ..model.transformer import LTXVideoTransformer, SkipLayers
from ..parallel.denoise import parallel_forward
from ..parallel.layout import Parallel
from ..text.encoder import Conditioning
from .conditioning import FrameCondition
from .guidance import BRANCH_PROMPTS, Guidance, StepGuidance
from .noise import draw_noise, seeded_generator
from .rules import conditioning_rule, renoise_hard_conditions

log = logging.getLogger(__name__)

# on_step(step, total_steps, denoised): the current clean-video estimate (B, C, F, H, W) float32,
# for progress and previews; raising from it cancels sampling.
StepCallback = Callable[[int, int, torch.Tensor], None]


def _prompt_batches(text: Conditioning, batch: int, negative: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"positive": (context (B, L, D), mask (B, L)), "negative": … when used}, each broadcast to `batch`
    and right-padded with masked tokens to one length, so that branches can share a model call."""
    parts = {"negative": text.negative, "positive": text} if negative else {"positive": text}
    length = max(p.context.shape[1] for p in parts.values())
    out = {}
    for name, part in parts.items():
        if part.context.shape[0] not in (1, batch):
            raise ValueError(f"{part.context.shape[0]} prompts for {batch} videos: give one prompt or one per video")
        pad = length - part.context.shape[1]
        out[name] = (
            F.pad(part.context, (0, 0, 0, pad)).expand(batch, -1, -1),
            F.pad(part.mask, (0, pad)).expand(batch, -1),
        )
    return out


def _guided_velocity(
    model: LTXVideoTransformer,
    x: torch.Tensor,
    token_sigma: torch.Tensor,
    prompts: dict[str, tuple[torch.Tensor, torch.Tensor]],
    positions: torch.Tensor,
    step: StepGuidance,
    parallel: Parallel | None = None,
) -> torch.Tensor:
    """One model call on x (B, N, C) at token_sigma (B, N) or (B, 1) for all of the step's branches
    (negative prompt, positive prompt, perturbed: up to 3B samples), combined by `step`. With `parallel`
    the call's rows and tokens are split over processes, and every process gets every velocity back."""
    call = model if parallel is None else partial(parallel_forward, parallel, model)
    branches, b = step.branches, x.shape[0]
    n = len(branches)
    sigma = token_sigma[:, 0] if token_sigma.shape[1] == 1 else token_sigma  # (B,): no per-token modulation
    context = torch.cat([prompts[BRANCH_PROMPTS[name]][0] for name in branches])  # (n·B, L, D)
    context_mask = torch.cat([prompts[BRANCH_PROMPTS[name]][1] for name in branches])
    x_in, sigma_in = (x, sigma) if n == 1 else (torch.cat([x] * n), torch.cat([sigma] * n))  # (n·B, N, C)
    if "perturbed" in branches:  # the last B samples run with the step's blocks skipped
        perturbed = torch.arange(n * b, device=x.device) >= (n - 1) * b
        skip = SkipLayers(step.stg_mode, frozenset(step.skip_blocks), perturbed)
        velocity = call(x_in, sigma_in, context, context_mask, positions, skip=skip)
    else:
        velocity = call(x_in, sigma_in, context, context_mask, positions)
    return step.combine(dict(zip(branches, velocity.float().chunk(n), strict=True)))  # (B, N, C)


def _plan(
    model: LTXVideoTransformer, guidance: Guidance, sigmas: torch.Tensor, text: Conditioning
) -> list[StepGuidance]:
    """Each step's guidance, checked against the model and the prompts."""
    plan = guidance.per_step(sigmas[:-1])
    cfg = next((step.guidance_scale for step in plan if step.cfg), None)
    if cfg is not None and text.negative is None:
        raise ValueError(f"guidance_scale {cfg:g} needs a negative prompt; encode one, or use 1.0")
    if guidance.stg_mode == "residual" and any(step.stg for step in plan):
        log.warning(
            "stg_mode 'residual' perturbs nothing in LTX-Video (as in the official code, whose residual mode acts "
            "only on attention layers with their own residual): STG adds only its rescaling"
        )
    skipped = sorted({i for step in plan for i in step.skip_blocks})
    if skipped and skipped[-1] >= model.config.num_layers:
        raise ValueError(
            f"skip_block_list names blocks {skipped}, but this model has blocks 0 … {model.config.num_layers - 1}: "
            "use the skip_block_list of the model's release"
        )
    return plan


def sample(
    model: LTXVideoTransformer,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    text: Conditioning,
    *,
    guidance: Guidance | None = None,
    guidance_scale: float | None = None,
    guidance_rescale: float | None = None,
    stochastic_sampling: bool = False,
    frame_rate: float = 25.0,
    conditions: Sequence[FrameCondition] = (),
    initial: torch.Tensor | None = None,
    layout: str = "in_place",
    cond_noise_scale: float = 0.0,
    generator: torch.Generator | None = None,
    on_step: StepCallback | None = None,
    parallel: Parallel | None = None,
) -> torch.Tensor:
    """Denoise `noise` (B, 128, F, H, W) along `sigmas` (steps + 1 values ending in 0).

    text: prompt embeddings; its `negative` is the unconditional branch of classifier-free guidance.
    guidance: CFG, STG, CFG-zero* and their values per noise-level range (see `Guidance`); each step's
    branches (negative, positive, perturbed) run in one model call. guidance_scale / guidance_rescale:
    shorthand for `Guidance(guidance_scale=…, guidance_rescale=…)` (default 3, 0), not with `guidance`.
    stochastic_sampling: each step re-noises the clean estimate to the next level with fresh noise from
    `generator` (official distilled 0.9.6) instead of the Euler step. conditions: frames kept (partly)
    clean, laid out and stepped by `layout` ("in_place" for 0.9.0 / 0.9.1, "appended" for 0.9.5+: see
    rules.py; `defaults.conditioning` holds each release's). initial: normalised latents to start from
    for video-to-video (mixed with the noise at sigmas[0]). cond_noise_scale: re-noise strength-1
    conditions by this·σ² each step (official ≥0.9.5 default 0.15). generator: a CPU generator for the
    appended tokens' noise, the re-noising and the stochastic steps' noise (default: seeded with 0); pass
    the one that drew `noise` to reproduce the references. parallel: split each step's model call over
    the processes of a `torch.distributed` group (ltx_core.parallel: CFG-parallel rows, Ulysses tokens);
    every process calls sample() with the same arguments and gets the same latents.
    Returns normalised latents (B, 128, F, H, W) in float32; appended tokens are dropped.
    """
    if noise.ndim != 5 or noise.shape[1] != model.config.in_channels:
        raise ValueError(f"noise must be (B, {model.config.in_channels}, F, H, W), got {tuple(noise.shape)}")
    if guidance is None:
        guidance = Guidance(
            guidance_scale=3.0 if guidance_scale is None else guidance_scale,
            guidance_rescale=0.0 if guidance_rescale is None else guidance_rescale,
        )
    elif guidance_scale is not None or guidance_rescale is not None:
        raise ValueError("give guidance_scale and guidance_rescale inside `guidance`, not beside it")
    plan = _plan(model, guidance, sigmas, text)  # each step's guidance
    rule = conditioning_rule(layout)
    b, _, f, h, w = noise.shape
    device = noise.device
    generator = seeded_generator(0) if generator is None else generator
    sigmas = sigmas.to(device=device, dtype=torch.float32)
    prompts = {
        name: (context.to(device), mask.to(device))
        for name, (context, mask) in _prompt_batches(text, b, any(step.cfg for step in plan)).items()
    }
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
        velocity = _guided_velocity(model, x, token_sigma, prompts, state.positions, plan[i], parallel)
        if on_step is not None:
            denoised = x - token_sigma[..., None] * velocity  # x0 = x − σ·v
            on_step(i, steps, from_tokens(denoised[:, state.appended :], f, h, w))
        step_noise = draw_noise(tuple(x.shape), generator, device=device) if stochastic_sampling else None
        x = rule.step(x, velocity, sigmas[i], sigmas[i + 1], state.strength, step_noise)
    return from_tokens(x[:, state.appended :], f, h, w)
