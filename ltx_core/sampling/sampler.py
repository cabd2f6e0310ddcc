"""sample(): the Euler flow-matching loop with classifier-free guidance.

State, sigmas and the Euler update stay in float32; only the model call runs in the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..model.patchify import from_tokens, to_tokens
from ..model.rope import video_positions
from ..model.transformer import LTXVideoTransformer
from ..text.encoder import Conditioning
from .conditioning import FrameCondition, condition_latents

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
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Denoise `noise` (B, 128, F, H, W) along `sigmas` (steps + 1 values ending in 0).

    text: prompt embeddings; with guidance_scale ≠ 1 its `negative` is the unconditional branch, run
    in the same model call. conditions: frames kept (partly) clean, see `conditioning`. initial:
    normalised latents to start from for video-to-video (mixed with the noise at sigmas[0]).
    Returns normalised latents (B, 128, F, H, W) in float32.
    """
    if noise.ndim != 5 or noise.shape[1] != model.config.in_channels:
        raise ValueError(f"noise must be (B, {model.config.in_channels}, F, H, W), got {tuple(noise.shape)}")
    cfg = guidance_scale != 1.0
    if cfg and text.negative is None:
        raise ValueError(f"guidance_scale {guidance_scale} needs a negative prompt; encode one, or use 1.0")
    b, _, f, h, w = noise.shape
    device = noise.device
    sigmas = sigmas.to(device=device, dtype=torch.float32)
    positions = video_positions(f, h, w, frame_rate=frame_rate, causal_fix=model.config.causal_temporal_positioning)
    context, context_mask = _text_batch(text, b, cfg)
    context, context_mask, positions = context.to(device), context_mask.to(device), positions.to(device)

    base = torch.zeros_like(noise, dtype=torch.float32) if initial is None else initial.to(device, torch.float32)
    # Each token runs on σ·scale: 1 for free tokens, 1 − strength for conditioned ones. Without
    # conditions one σ per sample is passed, which spares the model per-token modulation.
    scale = torch.ones(b, 1, device=device)
    if conditions:
        clean, strength = condition_latents(noise.shape, conditions, device)
        base = torch.where(strength > 0, clean, base)
        scale = 1 - to_tokens(strength)[..., 0]  # (B, N)
    base, noise_tokens = to_tokens(base), to_tokens(noise.to(torch.float32))  # (B, N, C)

    x = base + (sigmas[0] * scale)[..., None] * (noise_tokens - base)  # (1 − σ)·base + σ·noise
    steps = sigmas.numel() - 1
    for i in range(steps):
        token_sigma = sigmas[i] * scale  # (B, N) or (B, 1)
        model_sigma = token_sigma if conditions else token_sigma[:, 0]  # (B, N) or (B,)
        x_in, sigma_in = (torch.cat([x, x]), torch.cat([model_sigma] * 2)) if cfg else (x, model_sigma)
        velocity = model(x_in, sigma_in, context, context_mask, positions).float()  # (B or 2B, N, C)
        if cfg:
            negative, positive = velocity.chunk(2)
            velocity = negative + guidance_scale * (positive - negative)
            if guidance_rescale > 0:
                velocity = _rescale(velocity, positive, guidance_rescale)
        if on_step is not None:
            on_step(i, steps, from_tokens(x - token_sigma[..., None] * velocity, f, h, w))  # x0 = x − σ·v
        x = x + ((sigmas[i + 1] - sigmas[i]) * scale)[..., None] * velocity  # Euler; conditioned tokens stay
    return from_tokens(x, f, h, w)
