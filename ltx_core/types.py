"""Pixel ↔ latent geometry shared by the VAE, the transformer and the sampler."""

from __future__ import annotations

LATENT_CHANNELS = 128
VAE_TEMPORAL_SCALE = 8  # latent frame k ≥ 1 covers pixel frames 8k−7 … 8k; latent frame 0 is pixel frame 0
VAE_SPATIAL_SCALE = 32
