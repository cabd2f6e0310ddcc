"""load_vae() on synthetic checkpoints: single file, VAE-only file, diffusers folder, and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ltx_core import VAE_090, VAE_091, VAE_095, VAEConfig, VideoVAE
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


def _vae_file(tmp_path, weights: dict[str, torch.Tensor], metadata: dict | None) -> object:
    path = tmp_path / "vae.safetensors"
    save_file(weights, path, metadata={"config": json.dumps({"vae": metadata})} if metadata is not None else None)
    return path


def test_metadata_that_does_not_fit_the_tensors_names_the_file(tmp_path, monkeypatch):
    """The layout comes from the embedded config (shapes cannot tell it); one that does not fit the
    tensors is refused, before any tensor is read."""
    _, weights = _original("0.9.0")
    path = _vae_file(tmp_path, weights, TINY_VAE_LAYOUTS["0.9.1"][0])
    monkeypatch.setattr("ltx_core.loading.vae.load_tensors", lambda *a, **k: pytest.fail("tensors were read"))
    with pytest.raises(CheckpointError) as error:
        load_vae(path)
    message = str(error.value)
    assert message.startswith("vae.safetensors: has tensors that do not fit its embedded VAE config (missing ")
    assert "expected a VAE whose weights and embedded config agree" in message and str(path) in message


def test_unusable_metadata_names_the_file(tmp_path):
    _, weights = _original("0.9.0")
    path = _vae_file(tmp_path, weights, {"_class_name": "CausalVideoAutoencoder", "dims": 3})
    with pytest.raises(CheckpointError, match=r"vae\.safetensors: has an embedded VAE config that cannot be used"):
        load_vae(path)


def _padding_modes(vae: VideoVAE) -> tuple[set[str], set[str]]:
    def modes(part: torch.nn.Module) -> set[str]:
        return {m.padding_mode for m in part.modules() if isinstance(m, torch.nn.Conv3d)}

    return modes(vae.encoder), modes(vae.decoder)


@pytest.mark.parametrize(("stated", "padding"), [(None, "zeros"), ("zeros", "zeros"), ("reflect", "reflect")])
def test_spatial_padding_follows_the_reference_implementations(tmp_path, stated, padding):
    """Official LTX-Video reads `spatial_padding_mode` for encoder and decoder, "zeros" when absent, and
    diffusers always pads zeros; ComfyUI core alone pads its decoder with "reflect" without the key."""
    metadata = dict(TINY_VAE_LAYOUTS["0.9.5"][0])
    metadata.pop("spatial_padding_mode", None)
    if stated is not None:
        metadata["spatial_padding_mode"] = stated
    _, weights = _original("0.9.5")
    vae, detected = load_vae(_vae_file(tmp_path, weights, metadata))
    assert detected.config.decoder_padding == detected.config.spatial_padding_mode == padding
    assert _padding_modes(vae) == ({padding}, {padding})


def test_released_layouts_without_a_config_pad_with_zeros():
    for preset in (VAE_090, VAE_091, VAE_095):  # what detect_vae_layout gives files without a config
        assert preset.spatial_padding_mode == preset.decoder_padding == "zeros"
        assert VAEConfig.from_metadata(preset.to_metadata()) == preset


def test_gguf_given_as_vae_says_where_it_belongs(tmp_path):
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(tmp_path / "ltxv.gguf", "ltxv")
    writer.add_tensor("adaln_single.emb.timestep_embedder.linear_1.weight", np.zeros((2, 2), np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    with pytest.raises(CheckpointError) as error:
        load_vae(tmp_path / "ltxv.gguf")
    assert str(error.value).startswith(
        "ltxv.gguf: is a GGUF file (general.architecture 'ltxv'); expected a safetensors VAE. "
        "Load it with load_transformer(). (file: "
    )


def test_command_line_names_its_flags_and_keeps_file_names(tmp_path, capsys):
    from ltx_core.generate import main

    _, weights = _original("0.9.1")
    vae = _vae_file(tmp_path, weights, TINY_VAE_LAYOUTS["0.9.1"][0])
    t5 = tmp_path / "t5xxl_fp16.safetensors"
    save_file({"encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(2, 2)}, t5)
    assert main(["--prompt", "x", "--checkpoint", str(vae), "--text-encoder", str(t5)]) == 2  # before loading
    err = capsys.readouterr().err
    assert "vae.safetensors: contains an LTX-Video VAE; expected an LTX-Video transformer. Pass it as --vae." in err
    assert main(["--prompt", "x", "--checkpoint", str(tmp_path / "ltx_video_2b.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "ltx_video_2b.safetensors: no such file" in err  # underscores kept
