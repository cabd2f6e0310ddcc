"""Prompts → Conditioning(context, mask): the T5 v1.1 encoder as the LTX-Video text conditioning.

The network is transformers' `T5EncoderModel` (built on the `meta` device, weights adopted by the
loader); this module adds tokenization, batching of prompts with negative prompts, and the mask.

Divergence (fact sheet §9.1): official LTX-Video and ComfyUI pass the attention mask into T5, so
padding tokens are never attended to; diffusers runs T5 without it (padding attends and the context
of real tokens changes with the padded length). We follow official by default;
`mask_in_encoder=False` reproduces diffusers. Either way the returned mask goes to cross-attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .tokenizer import PromptTokenizer

if TYPE_CHECKING:
    from transformers import T5Config, T5EncoderModel


def import_transformers() -> Any:
    """The `transformers` module, or an ImportError that says how to install it."""
    try:
        import transformers
    except ImportError as error:
        raise ImportError("The T5 text encoder needs the `transformers` package: pip install transformers") from error
    return transformers


@dataclass(frozen=True)
class Conditioning:
    """Encoded prompts: `context` (B, L, d_model) T5 hidden states after the final layer norm and
    `mask` (B, L) int64, 1 = token, 0 = padding. `negative` holds the encoded negative prompts
    (same shapes) when they were given, for classifier-free guidance."""

    context: torch.Tensor
    mask: torch.Tensor
    negative: Conditioning | None = None

    def __post_init__(self) -> None:
        if self.context.shape[:2] != self.mask.shape:
            raise ValueError(f"context {tuple(self.context.shape)} and mask {tuple(self.mask.shape)} disagree")


def build_t5_encoder(config: T5Config) -> T5EncoderModel:
    """An empty T5EncoderModel on the `meta` device, for the loader to fill by assignment."""
    transformers = import_transformers()
    with torch.device("meta"):
        return transformers.T5EncoderModel(config)


class T5TextEncoder(nn.Module):
    """A loaded T5 encoder plus its tokenizer. Computes in the dtype of its weights."""

    def __init__(self, model: T5EncoderModel, tokenizer: PromptTokenizer) -> None:
        super().__init__()
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(
                f"the tokenizer {tokenizer.source} has {tokenizer.vocab_size} tokens but the encoder's "
                f"embedding has {model.config.vocab_size} rows; use the tokenizer that belongs to this model"
            )
        self.model = model
        self.tokenizer = tokenizer

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    @property
    def streamed_blocks(self) -> nn.ModuleList:
        """The encoder layers that low-VRAM mode streams (see `ltx_core.streaming`)."""
        return self.model.encoder.block

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """input_ids (B, L) int64, attention_mask (B, L) or None (padding attends) → (B, L, d_model)."""
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        out = self.model(input_ids=input_ids.to(self.device), attention_mask=attention_mask)
        return out.last_hidden_state  # (B, L, d_model), after encoder.final_layer_norm

    @torch.no_grad()
    def encode(
        self,
        prompts: str | Sequence[str],
        negative_prompts: str | Sequence[str] | None = None,
        max_length: int = 128,
        *,
        mask_in_encoder: bool = True,
    ) -> Conditioning:
        """Encode B prompts (and optionally B negative prompts, or one broadcast to all) in one batch.

        Every prompt is padded / truncated to `max_length` tokens (128 as official LTX-Video ≤ 0.9.1
        and diffusers' LTXPipeline; 256 for official HEAD). Returns Conditioning with context
        (B, max_length, d_model) in the encoder's dtype and mask (B, max_length) on its device.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        negatives = _match_batch(negative_prompts, len(prompts))
        ids, mask = self.tokenizer(prompts + (negatives or []), max_length)  # (B or 2B, L) each
        context = self(ids, mask if mask_in_encoder else None)  # (B or 2B, L, d_model)
        mask = mask.to(self.device)
        b = len(prompts)
        negative = Conditioning(context[b:], mask[b:]) if negatives is not None else None
        return Conditioning(context[:b], mask[:b], negative)


def _match_batch(negative_prompts: str | Sequence[str] | None, batch: int) -> list[str] | None:
    if negative_prompts is None:
        return None
    if isinstance(negative_prompts, str):
        return [negative_prompts] * batch
    if len(negative_prompts) != batch:
        raise ValueError(
            f"got {batch} prompts but {len(negative_prompts)} negative prompts; "
            "give one negative prompt per prompt, or a single string for all"
        )
    return list(negative_prompts)
