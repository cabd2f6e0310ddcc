"""Video VAE properties: presets and their sizes, config parsing, layout detection, key renames,
temporal causality, input rules and seeded determinism (tiny random weights, CPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltx_core.config import VAE_090, VAE_091, VAE_095, VAEConfig, detect_vae_layout
from ltx_core.loading import CheckpointMismatchError
from ltx_core.loading.keymaps import vae_from_diffusers, vae_state_dict, vae_to_diffusers
from ltx_core.model.vae.autoencoder import VideoVAE
from ltx_core.model.vae.convolution import CausalConv3d, Prologue, channel_noise, pad_time, per_channel, pixel_norm
from tiny import TINY_VAE_LAYOUTS, random_vae_state_dict

PRESETS = {"0.9.0": (VAE_090, 419.2e6), "0.9.1": (VAE_091, 935.0e6), "0.9.5": (VAE_095, 1246.9e6)}

# The released diffusers vae/config.json layouts (scripts/convert_ltx_to_diffusers.py); 0.9.0 = all defaults.
_DECODER_091 = {
    "decoder_block_out_channels": (256, 512, 1024),
    "decoder_spatio_temporal_scaling": (True, True, True),
    "upsample_residual": (True, True, True),
    "upsample_factor": (2, 2, 2),
    "timestep_conditioning": True,
}
DIFFUSERS_RELEASED = {
    "0.9.0": {},
    "0.9.1": {**_DECODER_091, "decoder_layers_per_block": (5, 6, 7, 8), "decoder_inject_noise": (True,) * 3 + (False,)},
    "0.9.5": {
        **_DECODER_091,
        "block_out_channels": (128, 256, 512, 1024, 2048),
        "down_block_types": ("LTXVideo095DownBlock3D",) * 4,
        "layers_per_block": (4, 6, 6, 2, 2),
        "spatio_temporal_scaling": (True,) * 4,
        "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        "decoder_layers_per_block": (5, 5, 5, 5),
        "decoder_inject_noise": (False,) * 4,
    },
}


def _kinds(cfg: VAEConfig) -> tuple[list[str], list[str]]:
    return [b.kind for b in cfg.encoder_blocks], [b.kind for b in cfg.decoder_blocks]


def _meta_model(cfg: VAEConfig) -> VideoVAE:
    with torch.device("meta"):
        return VideoVAE(cfg)


def tiny_vae(layout: str = "0.9.1", seed: int = 0) -> VideoVAE:
    cfg = VAEConfig.from_metadata(TINY_VAE_LAYOUTS[layout][0])
    shapes = {k: v.shape for k, v in _meta_model(cfg).state_dict().items()}
    return VideoVAE.from_state_dict(cfg, random_vae_state_dict(shapes, seed))


@pytest.mark.parametrize("version", PRESETS)
def test_preset_parameter_counts_match_the_releases(version):
    cfg, expected = PRESETS[version]
    count = sum(p.numel() for p in _meta_model(cfg).parameters())
    assert abs(count - expected) < 0.05e6, f"{version}: {count / 1e6:.1f}M parameters"


@pytest.mark.parametrize("version", PRESETS)
def test_detect_layout_from_shapes(version):
    cfg, _ = PRESETS[version]
    shapes = {f"vae.{k}": tuple(v.shape) for k, v in _meta_model(cfg).state_dict().items()}
    assert detect_vae_layout(shapes) is cfg


def test_detect_layout_rejects_other_state_dicts():
    with pytest.raises(ValueError, match="up_blocks.0.res_blocks.0.conv1"):
        detect_vae_layout({"encoder.conv_in.conv.weight": (128, 48, 3, 3, 3)})


@pytest.mark.parametrize("version", PRESETS)
def test_metadata_round_trip_and_diffusers_config(version):
    cfg, _ = PRESETS[version]
    assert VAEConfig.from_metadata(cfg.to_metadata()) == dataclasses.replace(cfg, decoder_spatial_padding_mode=None)
    from_diffusers = VAEConfig.from_diffusers(DIFFUSERS_RELEASED[version])
    assert from_diffusers == dataclasses.replace(cfg, decoder_spatial_padding_mode=None)


def test_original_shared_blocks_list_is_read():
    metadata = {
        "_class_name": "CausalVideoAutoencoder",
        "dims": 3,
        "latent_channels": 128,
        "patch_size": 4,
        "norm_layer": "pixel_norm",
        "latent_log_var": "uniform",
        "use_quant_conv": False,
        "blocks": VAE_090.to_metadata()["encoder_blocks"],
    }
    assert VAEConfig.from_metadata(metadata) == VAE_090


@pytest.mark.parametrize(
    ("change", "message"),
    [({"norm_layer": "group_norm"}, "norm_layer"), ({"spatial_padding_mode": "circular"}, "circular")],
)
def test_unsupported_metadata_is_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        VAEConfig.from_metadata({**VAE_090.to_metadata(), **change})


@pytest.mark.parametrize("layout", TINY_VAE_LAYOUTS)
def test_tiny_layouts_parse_the_same_from_both_formats(layout):
    metadata, diffusers_cfg = TINY_VAE_LAYOUTS[layout]
    assert VAEConfig.from_metadata(metadata) == VAEConfig.from_diffusers(diffusers_cfg)


@pytest.mark.parametrize("version", PRESETS)
def test_vae_keymap_round_trip(version):
    cfg, _ = PRESETS[version]
    original = {k: tuple(v.shape) for k, v in _meta_model(cfg).state_dict().items()}
    diffusers_keys = vae_to_diffusers(original, *_kinds(cfg))
    assert len(diffusers_keys) == len(original)
    assert vae_from_diffusers(diffusers_keys, *_kinds(cfg)) == original


def test_vae_keymap_matches_diffusers_module_names():
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        reference = diffusers.AutoencoderKLLTXVideo(**DIFFUSERS_RELEASED["0.9.1"])
    original = {k: tuple(v.shape) for k, v in _meta_model(VAE_091).state_dict().items()}
    renamed = vae_to_diffusers(original, *_kinds(VAE_091))
    assert renamed == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert (
        renamed["decoder.up_blocks.0.upsamplers.0.conv.conv.weight"] == original["decoder.up_blocks.1.conv.conv.weight"]
    )


def test_checkpoint_extras_are_handled():
    sd = {
        "vae.encoder.x": 1,
        "vae.per_channel_statistics.channel": 2,
        "vae.per_channel_statistics.mean-of-stds": 3,
        "vae.per_channel_statistics.std-of-means": 4,
        "model.diffusion_model.proj_out.weight": 5,
    }
    assert vae_state_dict(sd) == {"encoder.x": 1, "per_channel_statistics.std-of-means": 4}


def test_wrong_weights_are_reported():
    cfg = VAEConfig.from_metadata(TINY_VAE_LAYOUTS["0.9.0"][0])
    shapes = {k: v.shape for k, v in _meta_model(cfg).state_dict().items()}
    sd = random_vae_state_dict(shapes, 0)
    del sd["per_channel_statistics.mean-of-means"]
    with pytest.raises(CheckpointMismatchError, match="mean-of-means"):
        VideoVAE.from_state_dict(cfg, sd)


# --- behaviour ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", TINY_VAE_LAYOUTS)
def test_encoder_is_temporally_causal(layout):
    vae = tiny_vae(layout)
    video = torch.rand(1, 3, 17, 32, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        full = vae.encode(video)
        first = vae.encode(video[:, :, :1])
        nine = vae.encode(video[:, :, :9])
    assert full.shape == (1, 16, 3, 1, 2)
    assert (first[:, :, 0] - full[:, :, 0]).abs().max() <= 1e-5
    assert (nine - full[:, :, :2]).abs().max() <= 1e-5  # latent frame k sees pixel frames ≤ 8k only


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 3, 20, 64, 64), "got 20 frames; LTX-Video needs 1 \\+ 8·k frames: use 17 or 25"),
        ((1, 3, 17, 100, 64), "got height 100; .* use 96 or 128"),
        ((1, 3, 17, 64, 48), "got width 48; .* use 32 or 64"),
        ((3, 17, 64, 64), "\\(B, 3, T, H, W\\)"),
    ],
)
def test_bad_video_shapes_raise_clear_errors(shape, message):
    vae = tiny_vae("0.9.0")
    with pytest.raises(ValueError, match=message):
        vae.encode(torch.zeros(shape))


def test_bad_latents_and_missing_timestep_raise():
    vae = tiny_vae("0.9.1")
    with pytest.raises(ValueError, match="latents \\(B, 16, F, h, w\\)"):
        vae.decode(torch.zeros(1, 8, 2, 1, 1), 0.05)
    with pytest.raises(ValueError, match="timestep-conditioned"):
        vae.decode(torch.zeros(1, 16, 2, 1, 1))


def test_noise_injection_and_sampling_follow_the_generator():
    vae = tiny_vae("0.9.1")
    z = torch.randn(1, 16, 2, 1, 1, generator=torch.Generator().manual_seed(0))

    def decode(seed: int, **kwargs) -> torch.Tensor:
        with torch.no_grad():
            return vae.decode(z, 0.05, generator=torch.Generator().manual_seed(seed), **kwargs)

    assert decode(0).shape == (1, 3, 9, 32, 32)
    assert torch.equal(decode(0), decode(0))
    assert (decode(0) - decode(1)).abs().max() > 1e-3  # the injected noise matters
    assert (decode(0, noise_scale=0.5) - decode(0)).abs().max() > 1e-3
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        mean = vae.encode(video)
        a = vae.encode(video, sample=True, generator=torch.Generator().manual_seed(5))
        b = vae.encode(video, sample=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, mean)


def test_bfloat16_weights_run():
    vae = tiny_vae("0.9.1").to(torch.bfloat16)
    with torch.no_grad():
        out = vae.decode(torch.zeros(1, 16, 2, 1, 1), 0.05, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.bfloat16 and out.isfinite().all()


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize("causal", [True, False])
def test_prologue_pads_like_the_convolution(mode, causal):
    """With a prologue the spatial padding of reflect / replicate convolutions moves into the prologue's
    pass; the result must be what nn.Conv3d computes on the normed, time-padded input."""
    gen = torch.Generator().manual_seed(5)
    conv = CausalConv3d(6, 4, causal=causal, padding_mode=mode)
    for p in conv.parameters():
        p.data = torch.randn(p.shape, generator=gen)
    x, bias, noise, noise_scale = (torch.randn(s, generator=gen) for s in ((2, 6, 3, 4, 5), (6,), (4, 5), (6,)))
    shift, scale = (0.3 * torch.randn(2, 6, generator=gen) for _ in range(2))
    prologue = Prologue(bias=bias, noise=noise, noise_scale=noise_scale, shift=shift, scale=scale)
    with torch.no_grad():
        out = conv(x, prologue)
        normed = pixel_norm(x + per_channel(bias) + channel_noise(noise, noise_scale))
        expected = conv.conv(
            pad_time(
                torch.nn.functional.silu(normed * (1 + per_channel(scale)) + per_channel(shift)), *conv.time_padding
            )
        )
    assert out.shape == expected.shape == (2, 4, 3, 4, 5)
    assert torch.allclose(out, expected, atol=1e-5)
