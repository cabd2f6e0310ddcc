"""load_vae() on synthetic checkpoints: single file, VAE-only file, diffusers folder, and errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from ltx_core import VAEConfig, VideoVAE
from ltx_core.loading.errors import CheckpointError
from ltx_core.loading.vae import load_vae
from tiny import TINY_VAE_LAYOUTS, random_vae_state_dict

STATISTICS = ("per_channel_statistics.mean-of-means", "per_channel_statistics.std-of-means")


def _original(layout: str) -> tuple[VAEConfig, dict[str, torch.Tensor]]:
    cfg = VAEConfig.from_metadata(TINY_VAE_LAYOUTS[layout][0])
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VideoVAE(cfg).state_dict().items()}
    return cfg, random_vae_state_dict(shapes, seed=5)


def _assert_loaded(vae: VideoVAE, weights: dict[str, torch.Tensor]) -> None:
    loaded = vae.state_dict()
    assert loaded.keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize(("layout", "release"), [("0.9.0", "0.9.0"), ("0.9.1", "0.9.1"), ("0.9.5", "0.9.5+")])
def test_single_file_checkpoint(tmp_path, layout, release):
    cfg, weights = _original(layout)
    tensors = {f"vae.{k}": v for k, v in weights.items()}
    tensors["vae.per_channel_statistics.channel"] = torch.arange(16.0)  # present in released files, unused
    tensors["model.diffusion_model.adaln_single.emb.timestep_embedder.linear_1.weight"] = torch.zeros(2, 2)
    path = tmp_path / "checkpoint.safetensors"
    save_file(tensors, path, metadata={"config": json.dumps({"vae": TINY_VAE_LAYOUTS[layout][0]})})
    vae, detected = load_vae(path, dtype=torch.bfloat16)
    assert detected.format == "single file" and detected.release == release and detected.config == cfg
    _assert_loaded(vae, {k: v.bfloat16() for k, v in weights.items()})


def test_vae_only_file(tmp_path):
    _, weights = _original("0.9.1")
    path = tmp_path / "vae.safetensors"
    save_file(weights, path, metadata={"config": json.dumps({"vae": TINY_VAE_LAYOUTS["0.9.1"][0]})})
    vae, detected = load_vae(path)
    assert detected.format == "split file" and detected.stored_dtype == "F32"
    _assert_loaded(vae, weights)


def test_vae_file_of_unknown_layout_without_metadata(tmp_path):
    _, weights = _original("0.9.0")  # tiny widths match no released layout
    path = tmp_path / "vae.safetensors"
    save_file(weights, path)
    with pytest.raises(CheckpointError, match="output channels; released LTX-Video VAEs have 512"):
        load_vae(path)


@pytest.mark.parity
@pytest.mark.parametrize("layout", ["0.9.0", "0.9.5"])
def test_diffusers_folder(tmp_path, layout):
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.AutoencoderKLLTXVideo(**TINY_VAE_LAYOUTS[layout][1])
    reference.load_state_dict(random_vae_state_dict({k: v.shape for k, v in reference.state_dict().items()}, 7))
    reference.save_pretrained(tmp_path / "LTX-Video" / "vae")
    vae, detected = load_vae(tmp_path / "LTX-Video")
    assert detected.format == "diffusers folder"
    video = torch.rand(1, 3, 9, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected = reference.encode(video).latent_dist.mean
        latents = vae.encode(video)
    expected = (expected - reference.latents_mean[None, :, None, None, None]) / reference.latents_std[
        None, :, None, None, None
    ]
    assert (latents - expected).abs().max() <= 1e-5


def test_transformer_given_as_vae(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"adaln_single.emb.timestep_embedder.linear_1.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="contains an LTX-Video transformer; expected an LTX-Video VAE"):
        load_vae(path)


def test_fp8_vae_is_refused(tmp_path):
    with pytest.raises(ValueError, match="bfloat16, float16 or float32"):
        load_vae(tmp_path / "vae.safetensors", dtype=torch.float8_e4m3fn)


def test_missing_statistics_are_named(tmp_path):
    _, weights = _original("0.9.0")
    del weights[STATISTICS[1]]
    path = tmp_path / "vae.safetensors"
    save_file(weights, path, metadata={"config": json.dumps({"vae": TINY_VAE_LAYOUTS["0.9.0"][0]})})
    with pytest.raises(CheckpointError, match="missing per_channel_statistics.std-of-means"):
        load_vae(path)
