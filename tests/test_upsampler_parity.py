"""The 0.9.7+ latent upsamplers equal the official `LatentUpsampler` (ltx_video 0.1.2) and diffusers'
`LTXLatentUpsamplerModel` on the same tiny random weights (float32, ≤ 1e-5) for the spatial, temporal
and combined kinds; AdaIN and tone mapping equal both references' functions; `upsample_latents`
equals the official multiscale pipeline's upsampling step (`_upsample_latents` + AdaIN) and diffusers'
`LTXLatentUpsamplePipeline(output_type="latent")` with their VAEs holding our VAE's statistics.
Loading reads a single file written as the released files are (the official `from_pretrained` reads
the same file) and a folder written by diffusers' `save_pretrained`.

Temporal frame count, the same in all three implementations: F latent frames → 2F − 1 (the first of
the two frames made from the first latent frame is dropped), so pixel frames 1 + 8k → 1 + 16k.

Negative controls (each must move the result by more than 1e-2): depth-to-space with height and width
swapped, the two stages of residual blocks swapped (a wrong key map), AdaIN skipped, the upsampler
run on normalised latents, and tone mapping on the normalised latents (where the official pipeline
applies it before decoding) instead of diffusers' un-normalised ones.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from einops import rearrange
from safetensors.torch import save_file

from ltx_core import (
    LatentUpsampler,
    LatentUpsamplerConfig,
    VAEConfig,
    VideoVAE,
    adain_filter_latent,
    load_latent_upsampler,
    tone_map_latents,
    upsample_latents,
)
from ltx_core.loading.errors import CheckpointError
from ltx_core.loading.keymaps import vae_from_diffusers
from ltx_core.model import upsampler as upsampler_module
from ltx_core.types import latent_frames, pixel_frames
from tiny import TINY_LATENT, TINY_VAE_LAYOUTS, random_vae_state_dict

pytestmark = pytest.mark.parity

TOL = 1e-5
CONTROL = 1e-2
KINDS = {"spatial": (True, False), "temporal": (False, True), "spatiotemporal": (True, True)}
LATENTS = (2, TINY_LATENT, 3, 4, 6)  # batch, channels, frames 1 + k (k = 2: 17 pixel frames), height, width


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one CPU thread is faster than several, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(kind: str) -> LatentUpsamplerConfig:
    spatial, temporal = KINDS[kind]
    return LatentUpsamplerConfig(
        in_channels=TINY_LATENT,
        mid_channels=32,
        num_blocks_per_stage=2,
        spatial_upsample=spatial,
        temporal_upsample=temporal,
    )


def _kwargs(cfg: LatentUpsamplerConfig) -> dict:
    """The references' constructor arguments (the names of the released config)."""
    return {
        "in_channels": cfg.in_channels,
        "mid_channels": cfg.mid_channels,
        "num_blocks_per_stage": cfg.num_blocks_per_stage,
        "dims": cfg.dims,
        "spatial_upsample": cfg.spatial_upsample,
        "temporal_upsample": cfg.temporal_upsample,
    }


class Upsamplers:
    """Ours and both references holding the same random weights."""

    def __init__(self, kind: str, seed: int = 0):
        official = pytest.importorskip("ltx_video.models.autoencoders.latent_upsampler")
        modeling = pytest.importorskip("diffusers.pipelines.ltx.modeling_latent_upsampler")
        self.config = _config(kind)
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in LatentUpsampler(self.config).state_dict().items()}
        self.weights = random_vae_state_dict(shapes, seed)
        self.ours = LatentUpsampler.from_state_dict(self.config, self.weights)
        self.official = official.LatentUpsampler(**_kwargs(self.config)).eval()
        self.official.load_state_dict(self.weights, strict=True)
        self.diffusers = modeling.LTXLatentUpsamplerModel(**_kwargs(self.config)).eval()
        self.diffusers.load_state_dict(self.weights, strict=True)


class VAEs:
    """Our tiny 0.9.5-layout VAE and both references' VAEs holding the same statistics."""

    def __init__(self, seed: int = 3):
        diffusers = pytest.importorskip("diffusers")
        cva = pytest.importorskip("ltx_video.models.autoencoders.causal_video_autoencoder")
        metadata, diffusers_cfg = TINY_VAE_LAYOUTS["0.9.5"]
        config = VAEConfig.from_metadata(metadata)
        self.diffusers = diffusers.AutoencoderKLLTXVideo(**diffusers_cfg).eval()
        weights = random_vae_state_dict({k: v.shape for k, v in self.diffusers.state_dict().items()}, seed)
        weights["latents_mean"] = 0.5 * torch.randn(TINY_LATENT, generator=torch.Generator().manual_seed(seed))
        self.diffusers.load_state_dict(weights, strict=True)
        kinds = ([b.kind for b in config.encoder_blocks], [b.kind for b in config.decoder_blocks])
        original = vae_from_diffusers(weights, *kinds)
        self.official = cva.CausalVideoAutoencoder.from_config(copy.deepcopy(metadata)).eval()
        self.official.load_state_dict(dict(original), strict=True)
        self.ours = VideoVAE.from_state_dict(config, original)


@pytest.fixture(scope="module")
def vaes() -> VAEs:
    return VAEs()


def _latents(shape: tuple[int, ...] = LATENTS, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# --- the model -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_model_equals_both_references(kind):
    models = Upsamplers(kind)
    z = _latents()
    with torch.no_grad():
        ours = models.ours(z)
        official = models.official(z)
        reference = models.diffusers(z)
    b, c, f, h, w = LATENTS
    spatial, temporal = KINDS[kind]
    assert ours.shape == (b, c, 2 * f - 1 if temporal else f, 2 * h if spatial else h, 2 * w if spatial else w)
    assert ours.abs().mean() > 0.1
    assert _max_diff(ours, official) <= TOL
    assert _max_diff(ours, reference) <= TOL


@pytest.mark.parametrize("kind", ["temporal", "spatiotemporal"])
def test_temporal_frame_count(kind):
    """F latent frames → 2F − 1 in all three implementations: pixel frames 1 + 8k → 1 + 16k."""
    models = Upsamplers(kind)
    for pixels in (1, 9, 17, 25):
        f = latent_frames(pixels)
        z = _latents((1, TINY_LATENT, f, 2, 2))
        with torch.no_grad():
            counts = {models.ours(z).shape[2], models.official(z).shape[2], models.diffusers(z).shape[2]}
        assert counts == {2 * f - 1}
        assert pixel_frames(2 * f - 1) == 1 + 2 * (pixels - 1)


@pytest.mark.parametrize("kind", ["spatial", "spatiotemporal"])
def test_control_height_width_swapped_in_depth_to_space(monkeypatch: pytest.MonkeyPatch, kind):
    models = Upsamplers(kind)
    z = _latents()
    with torch.no_grad():
        official = models.official(z)

        def w_before_h(x, stride):
            t, s, _ = stride
            return rearrange(x, "b (c p1 p3 p2) t h w -> b c (t p1) (h p2) (w p3)", p1=t, p2=s, p3=s)

        monkeypatch.setattr(upsampler_module, "depth_to_space", w_before_h)
        assert _max_diff(models.ours(z), official) > CONTROL


def test_control_stages_swapped_by_a_wrong_key_map():
    models = Upsamplers("spatial")
    swapped = {}
    for key, value in models.weights.items():
        stage, _, rest = key.partition(".")
        other = {"res_blocks": "post_upsample_res_blocks", "post_upsample_res_blocks": "res_blocks"}.get(stage)
        swapped[f"{other}.{rest}" if other else key] = value
    wrong = LatentUpsampler.from_state_dict(models.config, swapped)
    z = _latents()
    with torch.no_grad():
        assert _max_diff(wrong(z), models.official(z)) > CONTROL


@pytest.mark.parametrize("kind", ["spatial", "temporal"])
def test_released_sizes_build_the_references_keys_and_shapes(kind):
    """At the released width (128 → 512 channels, 4 blocks per stage), built on `meta`: our keys and
    shapes are both references', and reading the kind back off the shapes gives the config."""
    official = pytest.importorskip("ltx_video.models.autoencoders.latent_upsampler")
    modeling = pytest.importorskip("diffusers.pipelines.ltx.modeling_latent_upsampler")
    spatial, temporal = KINDS[kind]
    cfg = LatentUpsamplerConfig(spatial_upsample=spatial, temporal_upsample=temporal)
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in LatentUpsampler(cfg).state_dict().items()}
        for reference in (official.LatentUpsampler(**_kwargs(cfg)), modeling.LTXLatentUpsamplerModel(**_kwargs(cfg))):
            assert ours == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert upsampler_module.config_from_shapes(ours) == cfg


# --- AdaIN and tone mapping ------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1.0, 0.5, -0.3])
def test_adain_equals_both_references(factor):
    official = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")
    upsample_pipeline = pytest.importorskip("diffusers.pipelines.ltx.pipeline_ltx_latent_upsample")
    latents = 0.7 * _latents((2, 4, 5, 8, 12), seed=4) + 0.3
    reference = 1.8 * _latents((2, 4, 3, 4, 6), seed=5) - 0.5  # statistics from a smaller tensor, as upstream
    ours = adain_filter_latent(latents, reference, factor)
    pipe = object.__new__(upsample_pipeline.LTXLatentUpsamplePipeline)  # the method uses no pipeline state
    assert _max_diff(ours, official.adain_filter_latent(latents, reference, factor)) <= TOL
    assert _max_diff(ours, pipe.adain_filter_latent(latents, reference, factor)) <= TOL
    assert _max_diff(ours, latents) > CONTROL


def test_adain_commutes_with_per_channel_normalisation():
    """Why AdaIN after normalising (official) equals AdaIN before it (diffusers)."""
    latents, reference = _latents((1, 4, 3, 4, 4), seed=6), _latents((1, 4, 2, 2, 2), seed=7)
    scale, shift = torch.tensor([0.5, -1.5, 2.0, 0.9]).view(1, 4, 1, 1, 1), torch.randn(1, 4, 1, 1, 1)
    before = adain_filter_latent(latents, reference) * scale + shift
    after = adain_filter_latent(latents * scale + shift, reference * scale + shift)
    assert _max_diff(before, after) <= TOL


@pytest.mark.parametrize("compression", [0.0, 0.6, 1.0])
def test_tone_map_equals_both_references(compression):
    official = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")
    upsample_pipeline = pytest.importorskip("diffusers.pipelines.ltx.pipeline_ltx_latent_upsample")
    latents = 2.5 * _latents((2, 4, 3, 4, 6), seed=8)
    ours = tone_map_latents(latents, compression)
    pipe = object.__new__(upsample_pipeline.LTXLatentUpsamplePipeline)
    assert _max_diff(ours, official.LTXVideoPipeline.tone_map_latents(latents, compression)) <= TOL
    assert _max_diff(ours, pipe.tone_map_latents(latents, compression)) <= TOL
    assert (_max_diff(ours, latents) > CONTROL) == (compression > 0)


def test_tone_map_refuses_compression_outside_0_1():
    with pytest.raises(ValueError, match=r"in \[0, 1\], got 1.5"):
        tone_map_latents(torch.zeros(1), 1.5)


# --- upsample_latents against the two pipelines ----------------------------------------------------


def _official_multiscale_step(models: Upsamplers, vaes: VAEs, latents: torch.Tensor) -> torch.Tensor:
    """What LTXMultiScalePipeline.__call__ does between its two passes."""
    official = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")
    multiscale = object.__new__(official.LTXMultiScalePipeline)  # skips building the video pipeline
    multiscale.vae = vaes.official
    upsampled = multiscale._upsample_latents(models.official, latents)
    return official.adain_filter_latent(latents=upsampled, reference_latents=latents)


def _diffusers_upsample(models: Upsamplers, vaes: VAEs, latents: torch.Tensor, adain: float, tone: float):
    upsample_pipeline = pytest.importorskip("diffusers.pipelines.ltx.pipeline_ltx_latent_upsample")
    pipe = upsample_pipeline.LTXLatentUpsamplePipeline(vae=vaes.diffusers, latent_upsampler=models.diffusers)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(latents=latents, adain_factor=adain, tone_map_compression_ratio=tone, output_type="latent")
    return out.frames


@pytest.mark.parametrize("kind", ["spatial", "temporal"])
def test_upsample_latents_equals_official_multiscale_step(vaes, kind):
    models = Upsamplers(kind)
    z = _latents()
    with torch.no_grad():
        official = _official_multiscale_step(models, vaes, z)
    ours = upsample_latents(models.ours, vaes.ours, z)  # defaults: AdaIN 1.0, no tone mapping
    assert _max_diff(ours, official) <= TOL
    skipped = upsample_latents(models.ours, vaes.ours, z, adain_factor=0.0)
    assert _max_diff(skipped, official) > CONTROL  # AdaIN matters


@pytest.mark.parametrize(("adain", "tone"), [(0.0, 0.0), (1.0, 0.0), (1.0, 0.6), (0.5, 1.0)])
@pytest.mark.parametrize("kind", ["spatial", "temporal"])
def test_upsample_latents_equals_diffusers_pipeline(vaes, kind, adain, tone):
    models = Upsamplers(kind)
    z = _latents()
    with torch.no_grad():
        reference = _diffusers_upsample(models, vaes, z, adain, tone)
    ours = upsample_latents(models.ours, vaes.ours, z, adain_factor=adain, tone_map_compression=tone)
    assert _max_diff(ours, reference) <= TOL


def test_controls_normalisation_and_tone_map_placement(vaes):
    models = Upsamplers("spatial")
    z = _latents()
    with torch.no_grad():
        reference = _diffusers_upsample(models, vaes, z, 1.0, 0.6)
        # upsampler run on the normalised latents: no un-normalising before, no normalising after
        unnormalised_skipped = tone_map_latents(adain_filter_latent(models.ours(z), z), 0.6)
        # the official placement: tone mapping on the normalised latents
        normalised_space = tone_map_latents(upsample_latents(models.ours, vaes.ours, z), 0.6)
    assert _max_diff(unnormalised_skipped, reference) > CONTROL
    assert _max_diff(normalised_space, reference) > CONTROL


def test_upsample_latents_keeps_dtype_and_checks_shapes(vaes):
    models = Upsamplers("spatial")
    z = _latents().bfloat16()
    assert upsample_latents(models.ours, vaes.ours, z).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"expected latents \(B, 16, F, H, W\).*got \(2, 8, 3, 4, 6\)"):
        upsample_latents(models.ours, vaes.ours, _latents((2, 8, 3, 4, 6)))


# --- loading ---------------------------------------------------------------------------------------


def _write_released_style(models: Upsamplers, path, metadata: dict | None) -> None:
    """As Lightricks' files: the model's keys with no prefix, the config JSON under `config`."""
    save_file(models.weights, path, metadata=None if metadata is None else {"config": json.dumps(metadata)})


def _assert_same_weights(model: LatentUpsampler, weights: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key


@pytest.mark.parametrize("kind", ["spatial", "temporal"])
def test_load_single_file_as_released(tmp_path, kind):
    """The file carries the official `LatentUpsampler.config()` as metadata and the official
    `from_pretrained` reads it; ours reads the same file to the same outputs."""
    official = pytest.importorskip("ltx_video.models.autoencoders.latent_upsampler")
    models = Upsamplers(kind)
    path = tmp_path / "ltxv-upscaler.safetensors"
    _write_released_style(models, path, models.official.config())
    ours, detected = load_latent_upsampler(path)
    assert detected.format == "single file" and detected.stored_dtype == "F32" and detected.config == models.config
    assert detected.release == {"spatial": "spatial ×2", "temporal": "temporal ×2"}[kind]
    _assert_same_weights(ours, models.weights)
    reread = official.LatentUpsampler.from_pretrained(path).eval()
    z = _latents()
    with torch.no_grad():
        assert _max_diff(ours(z), reread(z)) <= TOL


def test_load_single_file_without_metadata_and_in_bf16(tmp_path):
    models = Upsamplers("temporal")
    path = tmp_path / "upscaler.safetensors"
    _write_released_style(models, path, None)
    ours, detected = load_latent_upsampler(path, dtype=torch.bfloat16)
    assert detected.config == models.config
    _assert_same_weights(ours, models.weights)
    assert ours.initial_conv.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("kind", ["spatial", "temporal"])
def test_load_diffusers_folder_written_by_diffusers(tmp_path, kind):
    """`save_pretrained` into `latent_upsampler/` (the layout of Lightricks' diffusers repository);
    the folder above it and the component folder itself both load."""
    models = Upsamplers(kind)
    models.diffusers.save_pretrained(tmp_path / "latent_upsampler")
    z = _latents()
    with torch.no_grad():
        reference = models.diffusers(z)
    for path in (tmp_path, tmp_path / "latent_upsampler"):
        ours, detected = load_latent_upsampler(path)
        assert detected.format == "diffusers folder" and detected.config == models.config
        _assert_same_weights(ours, models.weights)
        with torch.no_grad():
            assert _max_diff(ours(z), reference) <= TOL


def test_load_diffusers_folder_whose_config_states_only_the_class(tmp_path):
    """A diffusers config.json may name only the class, leaving every width to diffusers' defaults."""
    models = Upsamplers("spatial")
    models.diffusers.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "LTXLatentUpsamplerModel"}))
    _, detected = load_latent_upsampler(tmp_path)
    assert detected.config == models.config


def test_error_for_a_vae_file(tmp_path):
    path = tmp_path / "vae.safetensors"
    save_file({"decoder.conv_in.conv.weight": torch.zeros(2, 2, 3, 3, 3)}, path)
    with pytest.raises(
        CheckpointError,
        match=r"vae.safetensors: contains an LTX-Video VAE; expected an LTX-Video "
        r"latent upsampler such as ltxv-spatial-upscaler-0.9.7.safetensors. Load it with load_vae\(\)",
    ):
        load_latent_upsampler(path)


def test_error_for_metadata_that_does_not_fit_the_tensors(tmp_path):
    models = Upsamplers("spatial")
    path = tmp_path / "upscaler.safetensors"
    _write_released_style(
        models, path, {**models.official.config(), "spatial_upsample": False, "temporal_upsample": True}
    )
    with pytest.raises(CheckpointError, match=r"tensors that do not fit its config \(wrong shape: upsampler.0.weight"):
        load_latent_upsampler(path)


def test_error_for_an_ltx2_rational_resampler(tmp_path):
    models = Upsamplers("spatial")
    path = tmp_path / "ltx2.safetensors"
    metadata = {**models.official.config(), "spatial_scale": 1.5, "rational_resampler": True}
    _write_released_style(models, path, metadata)
    with pytest.raises(CheckpointError, match=r"spatial_scale=1.5 belongs to a later upsampler \(LTX-2\)"):
        load_latent_upsampler(path)


def test_error_for_a_missing_tensor_and_a_missing_file(tmp_path):
    models = Upsamplers("spatial")
    path = tmp_path / "upscaler.safetensors"
    save_file({k: v for k, v in models.weights.items() if k != "final_conv.bias"}, path)
    with pytest.raises(CheckpointError, match=r"do not fit its config \(missing final_conv.bias\)"):
        load_latent_upsampler(path)
    with pytest.raises(CheckpointError, match="absent.safetensors: does not exist"):
        load_latent_upsampler(tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="load the upsampler in bfloat16"):
        load_latent_upsampler(path, dtype=torch.float8_e4m3fn)
