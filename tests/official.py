"""Lightricks' official `LTXVideoPipeline` (ltx_video 0.1.2) on tiny weights, for the parity tests: the
official transformer and VAE built from our configs, and the pipeline around them without text encoder
or prompt enhancer (the tests hand it prompt embeddings)."""

from __future__ import annotations

import copy

import torch

from ltx_core import TransformerConfig


def official_transformer(cfg: TransformerConfig, weights: dict[str, torch.Tensor]):
    """The official Transformer3DModel of `cfg`'s shape holding `weights` (original checkpoint keys), in eval mode."""
    from ltx_video.models.transformers.transformer3d import Transformer3DModel

    model = Transformer3DModel(**{k: v for k, v in cfg.to_metadata().items() if not k.startswith("_")}).eval()
    model.load_state_dict(weights)
    return model


def official_vae(metadata: dict, weights: dict[str, torch.Tensor] | None = None):
    """The official CausalVideoAutoencoder of an embedded VAE config, holding `weights` (None: random, for
    a pipeline that needs only its shape)."""
    from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder

    vae = CausalVideoAutoencoder.from_config(copy.deepcopy(metadata)).eval()
    if weights is not None:
        vae.load_state_dict(weights)
    return vae


def official_pipeline(transformer, vae, scheduler=None, allowed_inference_steps: list[float] | None = None):
    """LTXVideoPipeline around `transformer` and `vae`, with `scheduler` (default: the plain
    RectifiedFlowScheduler, which takes explicit timesteps) and, as a distilled file sets it,
    `allowed_inference_steps`; progress bar off."""
    from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
    from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
    from ltx_video.schedulers.rf import RectifiedFlowScheduler

    pipe = LTXVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler or RectifiedFlowScheduler(),
        patchifier=SymmetricPatchifier(patch_size=1),
        prompt_enhancer_image_caption_model=None,
        prompt_enhancer_image_caption_processor=None,
        prompt_enhancer_llm_model=None,
        prompt_enhancer_llm_tokenizer=None,
        allowed_inference_steps=allowed_inference_steps,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
