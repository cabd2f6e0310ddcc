"""Releases: the per-release registry against Lightricks' official configs, and which release a pair of
files is, decided by content (embedded config, widths, the VAE's layout) or named, in every format.

The detection files are synthetic: full-size headers (2B: 28 blocks × 2048, 13B: 48 × 4096, the
released VAE layouts) over sparse data, so nothing but the headers costs anything. Their embedded
config is what Lightricks' single files carry as far as the public code establishes it: the
`transformer` and `vae` entries (TransformerConfig / VAEConfig.to_metadata, the official keys), the
`scheduler` entry (0.9.0 / 0.9.1: ltx_video/utils/diffusers_config_mapping.py; 0.9.5 on: the
LinearQuadratic sampler the configs' `sampler: from_checkpoint` resolves to, assumed) and, for the
distilled releases, `allowed_inference_steps` (read by ltx_video/inference.py; its values assumed to be
the configs' timesteps).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from pathlib import Path

import pytest
import torch

from ltx_core import LTXV_2B, LTXV_2B_CAUSAL, LTXV_13B, VAE_090, VAE_091, VAE_095, LTXVideoTransformer, VideoVAE
from ltx_core.defaults import RELEASE_DEFAULTS, RELEASES, defaults_for
from ltx_core.loading.errors import CheckpointError
from ltx_core.loading.keymaps import transformer_to_diffusers, vae_to_diffusers
from ltx_core.loading.release import Release, detect_release
from ltx_core.loading.safetensors import read_header
from ltx_core.loading.transformer import inspect_transformer, load_transformer
from ltx_core.sampling.schedule import linear_quadratic_sigmas, make_schedule

# --- the official configs, as read (github.com/Lightricks/LTX-Video) --------------------------------
# configs/*.yaml @ 5260738 (2025-10-25); the 0.9.7 configs @ 98a0ce6 (2025-07-02). Numbers copied from
# the yaml files, not from the registry.
TWO_B = {"guidance_scale": 3, "stg_scale": 1, "rescaling_scale": 0.7, "skip_block_list": [19]}
YAML = {
    "2b-0.9.0": {**TWO_B, "num_inference_steps": 40, "stochastic_sampling": False},
    "2b-0.9.1": {**TWO_B, "num_inference_steps": 40, "stochastic_sampling": False},
    "2b-0.9.5": {**TWO_B, "num_inference_steps": 40, "stochastic_sampling": False},
    "2b-0.9.6-dev": {**TWO_B, "num_inference_steps": 40, "stochastic_sampling": False},
    "2b-0.9.6-distilled": {
        "guidance_scale": 1,
        "stg_scale": 0,
        "rescaling_scale": 1,
        "skip_block_list": [],
        "num_inference_steps": 8,
        "stochastic_sampling": True,
    },
}
DEV_13B = {  # ltxv-13b-0.9.7-dev.yaml = ltxv-13b-0.9.8-dev.yaml (and their -fp8 twins)
    "first_pass": {
        "guidance_scale": [1, 1, 6, 8, 6, 1, 1],
        "stg_scale": [0, 0, 4, 4, 4, 2, 1],
        "rescaling_scale": [1, 1, 0.5, 0.5, 1, 1, 1],
        "guidance_timesteps": [1.0, 0.996, 0.9933, 0.9850, 0.9767, 0.9008, 0.6180],
        "skip_block_list": [[], [11, 25, 35, 39], [22, 35, 39], [28], [28], [28], [28]],
        "num_inference_steps": 30,
        "skip_final_inference_steps": 3,
        "cfg_star_rescale": True,
    },
    "second_pass": {
        "guidance_scale": [1],
        "stg_scale": [1],
        "rescaling_scale": [1],
        "guidance_timesteps": [1.0],
        "skip_block_list": [27],
        "num_inference_steps": 30,
        "skip_initial_inference_steps": 17,
        "cfg_star_rescale": True,
    },
}
DISTILLED = {  # ltxv-13b-0.9.7-distilled, ltxv-13b-0.9.8-distilled, ltxv-2b-0.9.8-distilled (and -fp8)
    "first_pass": {"timesteps": [1.0000, 0.9937, 0.9875, 0.9812, 0.9750, 0.9094, 0.7250], "skip_block_list": [42]},
    "second_pass": {"timesteps": [0.9094, 0.7250, 0.4219], "skip_block_list": [42]},
}
TONE_MAP = {"13b-0.9.7-distilled": 0.0, "13b-0.9.8-distilled": 0.6, "2b-0.9.8-distilled": 0.0}
MULTI_SCALE = {"downscale_factor": 0.6666666, "decode_timestep": 0.05, "decode_noise_scale": 0.025}


def _check_pass(settings, yaml: dict) -> None:
    """A PassSettings against a config's (first_pass / second_pass) entry with lists per σ range."""
    ranges = settings.guidance
    assert [r.from_sigma for r in ranges] == yaml.get("guidance_timesteps", [1.0])
    for ours, key in (("cfg_scale", "guidance_scale"), ("stg_scale", "stg_scale"), ("stg_rescale", "rescaling_scale")):
        values = yaml.get(key, [1])
        assert [getattr(r, ours) for r in ranges] == (values if isinstance(values, list) else [values]), key
    blocks = yaml["skip_block_list"]
    blocks = blocks if blocks and isinstance(blocks[0], list) else [blocks]
    assert [list(r.stg_skip_blocks) for r in ranges] == blocks
    assert settings.skip_initial_steps == yaml.get("skip_initial_inference_steps", 0)
    assert settings.skip_final_steps == yaml.get("skip_final_inference_steps", 0)
    assert settings.cfg_star_rescale == yaml.get("cfg_star_rescale", False)


@pytest.mark.parametrize("key", sorted(YAML))
def test_single_pass_releases_are_their_configs(key):
    entry, yaml = RELEASE_DEFAULTS[key], YAML[key]
    (guidance,) = entry.one_pass.guidance
    assert entry.steps == yaml["num_inference_steps"] and entry.timesteps is None
    assert (guidance.cfg_scale, guidance.stg_scale, guidance.stg_rescale) == (
        yaml["guidance_scale"],
        yaml["stg_scale"],
        yaml["rescaling_scale"],
    )
    assert list(guidance.stg_skip_blocks) == yaml["skip_block_list"] and entry.guidance_scale == yaml["guidance_scale"]
    assert entry.stochastic_sampling is yaml["stochastic_sampling"] and entry.stg_mode == "attention_values"
    assert entry.first_pass is entry.second_pass is None
    # decode_timestep 0.05 / decode_noise_scale 0.025 in every config; the 0.9.0 decoder takes no timestep
    assert (entry.decode_timestep, entry.decode_noise_scale) == ((None, 0.0) if key == "2b-0.9.0" else (0.05, 0.025))
    assert key.endswith(entry.release) and entry.source.endswith(
        f"configs/ltxv-{key.replace('-0.9.0', '-0.9')}.yaml @ 5260738 (2025-10-25)"
    )


@pytest.mark.parametrize("key", ["13b-0.9.7-dev", "13b-0.9.8-dev"])
def test_13b_dev_keeps_both_passes_and_runs_the_first_whole(key):
    entry = RELEASE_DEFAULTS[key]
    _check_pass(entry.first_pass, DEV_13B["first_pass"])
    _check_pass(entry.second_pass, DEV_13B["second_pass"])
    assert entry.first_pass.steps == entry.second_pass.steps == 30
    assert entry.one_pass == dataclasses.replace(entry.first_pass, skip_final_steps=0)  # one pass: all 30 steps
    assert (entry.downscale_factor, entry.decode_timestep, entry.decode_noise_scale) == tuple(MULTI_SCALE.values())
    assert entry.guidance_scale == 5.0 and not entry.stochastic_sampling and not entry.distilled
    assert entry.spatial_upscaler == f"ltxv-spatial-upscaler-{entry.release[:5]}.safetensors"


@pytest.mark.parametrize("key", sorted(TONE_MAP))
def test_distilled_releases_keep_their_timesteps(key):
    entry = RELEASE_DEFAULTS[key]
    for name in ("first_pass", "second_pass"):
        settings, yaml = getattr(entry, name), DISTILLED[name]
        assert list(settings.timesteps) == yaml["timesteps"] and settings.steps == len(yaml["timesteps"])
        assert [(r.cfg_scale, r.stg_scale, r.stg_rescale, list(r.stg_skip_blocks)) for r in settings.guidance] == [
            (1, 0, 1, yaml["skip_block_list"])
        ]
    assert entry.second_pass.tone_map_compression == TONE_MAP[key] and entry.first_pass.tone_map_compression == 0
    # one pass: the first pass's seven noise levels and the second pass's last
    assert list(entry.timesteps) == [*DISTILLED["first_pass"]["timesteps"], 0.4219] and entry.steps == 8
    assert entry.guidance_scale == 1 and entry.schedule == "distilled" and entry.distilled
    sigmas = make_schedule(entry.schedule, entry.steps, 6144)
    assert sigmas.tolist() == pytest.approx([*DISTILLED["first_pass"]["timesteps"], 0.4219, 0.0], abs=1e-7)


def test_code_defaults_of_each_release():
    """What the configs leave to the code: prompt length (pipeline_ltx_video.py: 128 until e7ec4d0,
    256 from 0.9.5), re-noising of conditions (inference.py image_cond_noise_scale 0.15) and layout."""
    for entry in RELEASE_DEFAULTS.values():
        old = entry.release in ("0.9.0", "0.9.1")
        assert entry.text_tokens == (128 if old else 256)
        assert (entry.conditioning, entry.cond_noise_scale) == (("in_place", 0.0) if old else ("appended", 0.15))
        assert entry.causal_positions is not old and entry.vae == (entry.release if old else "0.9.5+")
        assert entry.frame_rate == 25.0 and entry.schedule == ("shifted" if old else entry.schedule)
    assert {e.size for e in RELEASE_DEFAULTS.values() if e.release == "0.9.8-distilled"} == {"2B", "13B"}
    assert RELEASES[0] == "0.9.0" and RELEASES[-1] == "0.9.8-distilled" and len(RELEASES) == 9


def test_distilled_schedule_for_other_step_counts():
    assert torch.equal(make_schedule("distilled", 4, 100), linear_quadratic_sigmas(4))
    assert (make_schedule("distilled", 8, 100) - linear_quadratic_sigmas(8)).abs().max() < 6e-5  # rounded to 4 digits


def test_unknown_release_and_size_are_named():
    with pytest.raises(ValueError, match="unknown LTX-Video release '0.9.9'; known: 0.9.0, 0.9.1"):
        defaults_for("0.9.9")
    with pytest.raises(ValueError, match="LTX-Video 0.9.7-dev was released as 13B, not 2B"):
        defaults_for("0.9.7-dev", "2B")


# --- synthetic files ---------------------------------------------------------------------------------
BYTES = {"F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "I8": 1}
DISTILLED_STEPS = [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219]
SCHEDULER_091 = {"_class_name": "RectifiedFlowScheduler", "shifting": "SD3", "target_shift_terminal": 0.1}
SCHEDULER_095 = {"_class_name": "RectifiedFlowScheduler", "shifting": None, "sampler": "LinearQuadratic"}


def write_sparse(path: Path, shapes: dict, metadata: dict | None = None, dtype=lambda key, shape: "BF16") -> Path:
    """A safetensors file with these tensor shapes whose data is a hole (no disk, all zeros)."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        kind = dtype(key, shape)
        size = math.prod(shape) * BYTES[kind]
        header[key] = {"dtype": kind, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = {k: json.dumps(v) for k, v in metadata.items()}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return path


def shapes_of(module_type, cfg) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in module_type(cfg).state_dict().items()}


SIZE_CFG = {"2B": LTXV_2B, "2B causal": LTXV_2B_CAUSAL, "13B": LTXV_13B}
VAES = {"0.9.0": VAE_090, "0.9.1": VAE_091, "0.9.5+": VAE_095}


def single_file(path: Path, size: str, vae: str, distilled: bool = False, fp8: bool = False) -> Path:
    """An original single file as Lightricks ships it: transformer + VAE + embedded config."""
    cfg = SIZE_CFG[size]
    shapes = {f"model.diffusion_model.{k}": s for k, s in shapes_of(LTXVideoTransformer, cfg).items()}
    shapes |= {f"vae.{k}": s for k, s in shapes_of(VideoVAE, VAES[vae]).items()}
    config = {
        "transformer": cfg.to_metadata(),
        "vae": VAES[vae].to_metadata(),
        "scheduler": SCHEDULER_095 if cfg.causal_temporal_positioning else SCHEDULER_091,
    }
    if distilled:
        config["allowed_inference_steps"] = DISTILLED_STEPS
    return write_sparse(path, shapes, {"config": config}, _fp8_blocks if fp8 else lambda k, s: "BF16")


def _fp8_blocks(key: str, shape: tuple) -> str:
    """Lightricks' *-fp8 files (q8-kernels' convert_weights.py): 2-D weights of the blocks' attention and
    feed-forward layers in e4m3, everything else bf16."""
    block = ".transformer_blocks." in key and ("attn" in key or ".ff." in key)
    return "F8_E4M3" if block and key.endswith(".weight") and len(shape) == 2 else "BF16"


def split_file(path: Path, size: str) -> Path:
    """A ComfyUI diffusion-model file: the transformer alone, original keys, no config."""
    return write_sparse(path, shapes_of(LTXVideoTransformer, SIZE_CFG[size]))


def vae_file(path: Path, vae: str, config: bool = False) -> Path:
    metadata = {"config": {"vae": VAES[vae].to_metadata()}} if config else None
    return write_sparse(path, shapes_of(VideoVAE, VAES[vae]), metadata)


@pytest.mark.parametrize(
    ("size", "vae", "distilled", "name", "alike"),
    [
        ("2B", "0.9.0", False, "0.9.0", ()),
        ("2B", "0.9.1", False, "0.9.1", ()),
        ("2B causal", "0.9.5+", False, "0.9.5", ("0.9.6-dev",)),
        ("13B", "0.9.5+", False, "0.9.7-dev", ("0.9.8-dev",)),
        ("13B", "0.9.5+", True, "0.9.7-distilled", ("0.9.8-distilled",)),
    ],
)
@pytest.mark.parametrize("fp8", [False, True])
def test_single_files_tell_their_release(tmp_path, size, vae, distilled, name, alike, fp8):
    path = single_file(tmp_path / "checkpoint.safetensors", size, vae, distilled, fp8)
    release = detect_release(path)
    assert (release.name, release.alike, release.size) == (name, alike, size.split()[0])
    assert release.defaults == defaults_for(name, release.size)  # the file's schedule is the release's
    assert release.causal_positions is (vae == "0.9.5+")
    assert "its embedded config" in release.basis and f"LTX-Video {name} {release.size}" in release.describe()
    assert inspect_transformer(path).stored_dtype == ("F8_E4M3" if fp8 else "BF16")


def test_2b_distilled_needs_its_name(tmp_path):
    """0.9.6-distilled and the 2B 0.9.8-distilled: the same file contents, not the same settings."""
    path = single_file(tmp_path / "ltxv-2b-distilled.safetensors", "2B causal", "0.9.5+", distilled=True)
    with pytest.raises(CheckpointError) as error:
        detect_release(path)
    message = str(error.value)
    assert message.startswith("ltxv-2b-distilled.safetensors: is a 2B transformer (28 blocks of width 2048) with a")
    assert "it can be 0.9.6-distilled or 0.9.8-distilled, whose settings differ (" in message
    assert "stochastic sampling" in message and "Name the release as release=" in message
    assert error.value.advice == "release"
    assert detect_release(path, release="0.9.6-distilled").defaults.stochastic_sampling is True
    named = detect_release(path, release="0.9.8-distilled")
    assert named.defaults.schedule == "distilled" and named.basis == "the release named (0.9.8-distilled)"
    with pytest.raises(CheckpointError, match=r"names allowed_inference_steps \(a distilled release\), but LTX-Vid"):
        detect_release(path, release="0.9.5")


def test_named_releases_must_fit_the_files(tmp_path):
    path = single_file(tmp_path / "v091.safetensors", "2B", "0.9.1")
    with pytest.raises(CheckpointError) as error:
        detect_release(path, release="0.9.5")
    assert (
        "its embedded config gives it 0.9.0 / 0.9.1 positions (no causal RoPE fix), but LTX-Video 0.9.5 has the "
        in str(error.value)
    )
    assert "expected auto, or a release that fits: 0.9.0 or 0.9.1" in str(error.value)
    with pytest.raises(CheckpointError, match=r"LTX-Video 0.9.7-dev was released as 13B; expected a 2B release: 0.9.0"):
        detect_release(path, release="0.9.7-dev")
    assert detect_release(path, release="0.9.1").name == "0.9.1"
    with pytest.raises(
        CheckpointError,
        match=r"holds a 0.9.1 VAE, but LTX-Video 0.9.0 \(named for the transformer v091.safet.*\) has the 0.9.0 one",
    ) as error:
        detect_release(path, release="0.9.0")  # the two share a transformer config: the VAE tells them apart
    assert error.value.advice == "matching_vae"
    assert detect_release(path, vae_file(tmp_path / "vae.safetensors", "0.9.0"), release="0.9.0").name == "0.9.0"


def test_files_without_a_config_take_the_vae_or_a_name(tmp_path):
    split = split_file(tmp_path / "transformer.safetensors", "2B")
    assert detect_release(split, vae_file(tmp_path / "v1.safetensors", "0.9.1")).name == "0.9.1"
    vae_095 = vae_file(tmp_path / "v5.safetensors", "0.9.5+", config=True)
    with pytest.raises(CheckpointError) as error:
        detect_release(split, vae_095)
    assert "(its file names no release): it can be 0.9.5, 0.9.6-dev, 0.9.6-distilled or 0.9.8-distilled" in str(
        error.value
    )
    release = detect_release(split, vae_095, release="0.9.6-dev")
    assert release.causal_positions and release.defaults.schedule == "linear_quadratic"
    big = split_file(tmp_path / "13b.safetensors", "13B")
    with pytest.raises(CheckpointError, match="it can be 0.9.7-dev, 0.9.7-distilled, 0.9.8-dev or 0.9.8-distilled"):
        detect_release(big, vae_095)
    with pytest.raises(CheckpointError, match=r"v1.safetensors: holds a 0.9.1 VAE, but the transformer 13b.safe"):
        detect_release(big, tmp_path / "v1.safetensors")
    assert detect_release(big, vae_095, release="0.9.8-distilled").defaults.timesteps == tuple(DISTILLED_STEPS)


def test_a_gguf_with_a_095_vae_runs_with_095_positions(tmp_path):
    """The 2B GGUF files of 0.9.5 on say nothing but their width: the release is named, and the model
    then has the causal RoPE fix (before, the width picked the 0.9.1 positions)."""
    from tiny_comfy import _transformer_tensors, _write_gguf

    _, tensors = _transformer_tensors()
    _write_gguf(tmp_path / "model.gguf", tensors)
    vae = vae_file(tmp_path / "vae.safetensors", "0.9.5+")
    with pytest.raises(CheckpointError, match="model.gguf: is a 2B transformer .* it can be 0.9.5, 0.9.6-dev, 0.9"):
        detect_release(tmp_path / "model.gguf", vae)
    release = detect_release(tmp_path / "model.gguf", vae, release="0.9.5")
    model, found = load_transformer(tmp_path / "model.gguf", causal_temporal_positioning=release.causal_positions)
    assert model.config.causal_temporal_positioning and found.format == "gguf" and found.hints.said_by == ""


# scripts/convert_ltx_to_diffusers.py get_vae_config("0.9.1") @ huggingface/diffusers 58eb52c
DIFFUSERS_VAE_091 = {
    "_class_name": "AutoencoderKLLTXVideo",
    "block_out_channels": [128, 256, 512, 512],
    "decoder_block_out_channels": [256, 512, 1024],
    "layers_per_block": [4, 3, 3, 3, 4],
    "decoder_layers_per_block": [5, 6, 7, 8],
    "spatio_temporal_scaling": [True, True, True, False],
    "decoder_spatio_temporal_scaling": [True, True, True],
    "decoder_inject_noise": [True, True, True, False],
    "upsample_residual": [True, True, True],
    "upsample_factor": [2, 2, 2],
    "timestep_conditioning": True,
}


def _diffusers_folder(root: Path, dynamic: bool | None) -> Path:
    """A diffusers folder as its converter writes it (scripts/convert_ltx_to_diffusers.py): configs and
    sparse weights in diffusers' key names."""
    (root / "transformer").mkdir(parents=True)
    (root / "vae").mkdir()
    raw = {"_class_name": "LTXVideoTransformer3DModel", "num_attention_heads": 32, "attention_head_dim": 64}
    raw |= {"cross_attention_dim": 2048, "num_layers": 28, "caption_channels": 4096, "in_channels": 128}
    (root / "transformer" / "config.json").write_text(json.dumps(raw))
    write_sparse(
        root / "transformer" / "diffusion_pytorch_model.safetensors",
        transformer_to_diffusers(shapes_of(LTXVideoTransformer, LTXV_2B)),
    )
    (root / "vae" / "config.json").write_text(json.dumps(DIFFUSERS_VAE_091))
    kinds = [b.kind for b in VAE_091.encoder_blocks], [b.kind for b in VAE_091.decoder_blocks]
    write_sparse(
        root / "vae" / "diffusion_pytorch_model.safetensors", vae_to_diffusers(shapes_of(VideoVAE, VAE_091), *kinds)
    )
    if dynamic is not None:
        (root / "scheduler").mkdir()
        (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"use_dynamic_shifting": dynamic}))
    return root


def test_diffusers_folders(tmp_path):
    folder = _diffusers_folder(tmp_path / "LTX-Video-0.9.1", dynamic=True)
    release = detect_release(folder)
    assert release.name == "0.9.1" and release.basis.startswith("its scheduler config, the layout of its VAE (0.9.1)")
    assert inspect_transformer(folder).hints.causal is False
    odd = _diffusers_folder(tmp_path / "odd", dynamic=False)  # a 0.9.5+ scheduler with a 0.9.1 VAE
    with pytest.raises(CheckpointError, match="holds a 0.9.1 VAE, but the transformer odd is a 2B transformer"):
        detect_release(odd)
    assert detect_release(_diffusers_folder(tmp_path / "plain", dynamic=None)).name == "0.9.1"


# --- fp8 layouts ---------------------------------------------------------------------------------------


def _tiny_weights() -> tuple[object, dict[str, torch.Tensor]]:
    from tiny import random_state_dict, tiny_transformer_config

    cfg = tiny_transformer_config(heads=32, head_dim=2)
    return cfg, random_state_dict({k: torch.Size(s) for k, s in shapes_of(LTXVideoTransformer, cfg).items()}, 5)


def test_comfyui_scaled_fp8_loads_as_values_times_scale(tmp_path):
    """ComfyUI's scaled fp8 (comfy/ops.py scaled_fp8_ops): `scaled_fp8` marker, fp8 weights with a
    per-tensor `scale_weight` (and `scale_input`, unused). Kept in fp8 by default, expanded per call."""
    from safetensors.torch import save_file

    from ltx_core.loading.quantized import Fp8WeightLinear

    cfg, weights = _tiny_weights()
    stored, expected = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}
    for key, value in weights.items():
        if not (key.startswith("transformer_blocks.") and key.endswith(".weight") and value.ndim == 2):
            stored[key] = value.bfloat16()
            expected[key] = value.bfloat16()
            continue
        scale = value.abs().max() / 448
        stored[key] = (value / scale).to(torch.float8_e4m3fn)
        stored[key.removesuffix(".weight") + ".scale_weight"] = scale.float()
        stored[key.removesuffix(".weight") + ".scale_input"] = torch.tensor(1.0)
        expected[key] = (stored[key].float() * scale.float()).bfloat16()
    save_file(stored, tmp_path / "scaled.safetensors")
    model, found = load_transformer(tmp_path / "scaled.safetensors")
    assert found.stored_dtype == "F8_E4M3 scaled" and found.format == "split file" and model.dtype == torch.bfloat16
    layer = model.transformer_blocks[0].ff.net[2]
    assert isinstance(layer, Fp8WeightLinear) and layer.weight_fp8.dtype == torch.float8_e4m3fn
    assert model.patchify_proj.weight.dtype == torch.bfloat16  # kept as wide as stored
    reference = LTXVideoTransformer.from_state_dict(cfg, expected)
    x, context = torch.randn(1, 6, cfg.in_channels), torch.randn(1, 4, cfg.caption_channels)
    positions = torch.rand(1, 3, 6) * 4
    out = model(x, torch.tensor([0.5]), context, torch.ones(1, 4), positions)
    ref = reference(x, torch.tensor([0.5]), context, torch.ones(1, 4), positions)
    assert (out.float() - ref.float()).abs().max() <= 1e-2 * ref.float().abs().max()
    bf16, _ = load_transformer(tmp_path / "scaled.safetensors", dtype=torch.bfloat16)  # products taken at load
    assert torch.equal(bf16.transformer_blocks[0].ff.net[2].weight, expected["transformer_blocks.0.ff.net.2.weight"])


def test_q8_kernels_int8_files_are_refused(tmp_path):
    """LTX-VideoQ8 / q8-kernels' Q8Linear layout: int8 weights, per-channel `scales`, Hadamard-rotated."""
    shapes = shapes_of(LTXVideoTransformer, LTXV_2B)
    int8 = {k: s for k, s in shapes.items() if ".attn1.to_q.weight" in k}
    shapes |= {k.removesuffix(".weight") + ".scales": (s[0],) for k, s in int8.items()}
    path = write_sparse(tmp_path / "q8.safetensors", shapes, dtype=lambda k, s: "I8" if k in int8 else "F32")
    with pytest.raises(CheckpointError) as error:
        inspect_transformer(path)
    assert str(error.value).startswith("q8.safetensors: holds int8 weights with per-channel scales (")
    assert "the layout of Lightricks' q8-kernels (LTX-VideoQ8)" in str(error.value)
    assert "use the bf16 or fp8 file of the same release" in str(error.value)


def test_release_object_reads_as_its_name():
    entry = defaults_for("0.9.1")
    release = Release("0.9.1", "2B", entry, "the release named (0.9.1)")
    assert str(release) == "0.9.1" and f"this {release} model" == "this 0.9.1 model"
    assert release.describe() == "LTX-Video 0.9.1 2B, from the release named (0.9.1)"


# --- the loader node's release input -------------------------------------------------------------------


def test_loader_node_release_input(comfy):
    """GGUF (no config) with the 0.9.5 checkpoint's VAE: auto asks, naming the input; the named
    release gives the causal positions and shows in the release output; a name that does not fit
    the files is refused in the node's words."""
    from tiny_comfy import CHECKPOINT, CHECKPOINT_095, GGUF
    from workflows.build import import_pack

    nodes = import_pack().nodes
    loader = nodes.LTXPackModelLoader()
    assert loader.INPUT_TYPES()["optional"]["release"][0] == ["auto", *RELEASES]
    assert loader.RETURN_NAMES == ("model", "vae", "release")
    with pytest.raises(ValueError) as error:
        loader.load(GGUF, CHECKPOINT_095, "default", "cpu")
    message = str(error.value)
    assert f"{GGUF}: is a 2B transformer (1 block of width 64) with a 0.9.5+ VAE (its file names no release)" in message
    assert "it can be 0.9.5, 0.9.6-dev, 0.9.6-distilled or 0.9.8-distilled" in message
    assert "Choose the release in release of the LTX Model Loader (pack)" in message and "release=" not in message
    model, vae, text = loader.load(GGUF, CHECKPOINT_095, "default", "cpu", release="0.9.6-dev")
    assert model.module.config.causal_temporal_positioning and model.release.name == vae.release.name == "0.9.6-dev"
    assert model.defaults.steps == 40 and model.defaults.conditioning == "appended"
    assert text == "LTX-Video 0.9.6-dev 2B, from the release named (0.9.6-dev)"
    distilled, _, _ = loader.load(GGUF, CHECKPOINT_095, "default", "cpu", release="0.9.8-distilled")
    choose_sigmas = import_pack().ltx_core.latent_guides.choose_sigmas  # the sampler node's schedule "auto"
    sigmas = choose_sigmas(distilled.defaults.schedule, distilled.defaults.steps, 16)
    assert sigmas.tolist() == pytest.approx([*DISTILLED_STEPS, 0.0]) and distilled.defaults.guidance_scale == 1
    _, _, text = loader.load(CHECKPOINT, "(from the model file)", "default", "cpu")  # auto, told by the file
    assert text == "LTX-Video 0.9.1 2B, from its embedded config, the layout of its VAE (0.9.1) and its width"
    with pytest.raises(ValueError) as error:
        loader.load(CHECKPOINT, "(from the model file)", "default", "cpu", release="0.9.8-distilled")
    assert (
        "but LTX-Video 0.9.8-distilled has the causal RoPE fix; expected auto, or a release that fits: 0.9.0 or 0.9.1"
        in str(error.value)
    )
    with pytest.raises(ValueError, match="Choose the VAE of the transformer's release in vae_name of the LTX Mo"):
        loader.load(CHECKPOINT_095, CHECKPOINT, "default", "cpu")


# --- the generator's --release -----------------------------------------------------------------------------


def test_generator_names_the_release_and_takes_release(tmp_path, capsys):
    from hub_server import tiny_files
    from ltx_core.generate import main

    files = tiny_files()
    args = ["--prompt", "a fox", "--checkpoint", str(files["checkpoint"]), "--text-encoder", str(files["text_encoder"])]
    args += ["--width", "64", "--height", "64", "--frames", "9", "--steps", "1", "--device", "cpu", "--dtype", "fp32"]
    assert main([*args, "--release", "0.9.1", "--output", str(tmp_path / "a.mp4")]) == 0
    err = capsys.readouterr().err
    assert "LTX-Video 0.9.1 2B, from the release named (0.9.1)" in err
    assert err.index("from the release named") < err.index("loading the models")


def test_a_files_own_scheduler_config_picks_the_schedule(tmp_path):
    """As the configs' `sampler: from_checkpoint`: the file's scheduler config wins over the release's
    schedule, except over a distilled release's explicit timesteps."""
    path = single_file(tmp_path / "v095.safetensors", "2B causal", "0.9.5+")
    header = read_header(path)
    config, shapes = json.loads(header.metadata["config"]), header.shapes
    write_sparse(path, shapes, {"config": {**config, "scheduler": SCHEDULER_091}})
    assert detect_release(path).defaults.schedule == "shifted"
    assert detect_release(path, release="0.9.8-distilled").defaults.schedule == "distilled"
    write_sparse(path, shapes, {"config": {**config, "scheduler": {"sampler": "Constant", "shift": 3}}})
    assert detect_release(path).defaults.schedule == "linear_quadratic"  # a sampler no schedule here matches


def test_registry_guidance_builds_the_samplers_guidance():
    """Each pass's guidance, in the official keys, is what sampling/guidance.py's Guidance reads."""
    guidance = pytest.importorskip("ltx_core.sampling.guidance")
    for entry in RELEASE_DEFAULTS.values():
        for settings in filter(None, (entry.one_pass, entry.first_pass, entry.second_pass)):
            built = guidance.Guidance.from_config(entry.guidance_config(settings))
            assert built.uses_negative == any(r.cfg_scale != 1 for r in settings.guidance)
    dev = guidance.Guidance.from_config(RELEASE_DEFAULTS["13b-0.9.8-dev"].guidance_config())
    steps = dev.per_step(torch.tensor([1.0, 0.99, 0.5]))  # ranges from σ 1, 0.985 and 0.618 (the last)
    assert [(s.guidance_scale, s.stg_scale, s.skip_blocks) for s in steps] == [(1, 0, ()), (8, 4, (28,)), (1, 1, (28,))]
    assert all(s.cfg_star_rescale for s in steps)


def test_size_is_read_off_width_or_depth():
    """The released sizes differ in width and depth: narrow test models stand in for 13B by its 48 blocks."""
    from ltx_core.loading.detect import model_size

    sizes = [model_size(2048, 28), model_size(4096, 48), model_size(64, 48), model_size(64, 2), model_size(4096, 2)]
    assert sizes == ["2B", "13B", "13B", "2B", "13B"]
