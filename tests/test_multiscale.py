"""Multi-scale generation (`Settings(multiscale=True)`, multiscale.py) on tiny models: the sizes rounded as
the official pipeline rounds them, each pass's settings from the release, the generation end to end with
its progress counted over both passes, what it refuses, and latent upsampler files told apart from the
other models by content. The numbers against the official pipeline: test_multiscale_parity.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltx_core import CheckpointError, load_transformer, load_vae
from ltx_core.cli.models import CLI_ADVICE
from ltx_core.defaults import RELEASE_DEFAULTS
from ltx_core.loading.errors import API_ADVICE
from ltx_core.loading.release import Release
from ltx_core.multiscale import multiscale_sizes, resize_frames, resolve_multiscale, undecided
from ltx_core.pipeline import Models, image_to_video, text_to_video, video_to_video
from ltx_core.sampling.schedule import linear_quadratic_sigmas
from ltx_core.settings import Settings
from tiny import TINY_LATENT, write_tiny_checkpoints, write_tiny_upsampler

DEV = RELEASE_DEFAULTS["13b-0.9.8-dev"]
DISTILLED = RELEASE_DEFAULTS["13b-0.9.8-distilled"]
SMALL = Settings(width=96, height=64, frames=9, device="cpu", multiscale=True)  # passes at 32 × 32, 64 × 64


def test_sizes_are_rounded_as_the_official_pipeline_rounds_them():
    factor = 0.6666666  # every 0.9.7+ config's downscale_factor

    def official(size: int) -> int:  # LTXMultiScalePipeline.__call__
        x = int(size * factor)
        return x - x % 32

    for width, height in ((768, 512), (1216, 704), (64, 64), (96, 160), (1280, 720)):
        first = (official(width), official(height))
        assert multiscale_sizes(width, height, factor) == (first, (2 * first[0], 2 * first[1]))
    assert multiscale_sizes(768, 512, factor) == ((480, 320), (960, 640))  # not 512 × 320: int() of 511.99…
    with pytest.raises(ValueError, match="32×64 gives 0×32; make the video at least 64 pixels wide and high"):
        multiscale_sizes(32, 64, factor)


def test_each_pass_runs_the_release_settings_of_that_pass():
    dev = resolve_multiscale(Settings(), DEV)
    schedule = linear_quadratic_sigmas(30)
    assert dev.first.sigmas(100).tolist() == [*schedule[:27].tolist(), 0.0]  # the last 3 steps skipped
    assert dev.second.sigmas(100).tolist() == schedule[17:].tolist()  # the first 17 skipped
    assert (dev.first.steps_run, dev.second.steps_run) == (27, 13)
    assert dev.first.guidance.guidance_timesteps is not None and dev.first.guidance.cfg_star_rescale
    assert (dev.second.guidance.guidance_scale, dev.second.guidance.skip_block_list) == (1.0, (27,))
    assert dev.first_size == (480, 320) and dev.second_size == (960, 640) and dev.size == (768, 512)

    distilled = resolve_multiscale(Settings(), DISTILLED)
    assert distilled.first.sigmas(1)[:-1].tolist() == pytest.approx(DISTILLED.first_pass.timesteps)
    assert distilled.second.sigmas(1)[:-1].tolist() == pytest.approx([0.9094, 0.7250, 0.4219])
    assert (distilled.first.tone_map_compression, distilled.second.tone_map_compression) == (0.0, 0.6)
    assert resolve_multiscale(Settings(), RELEASE_DEFAULTS["2b-0.9.8-distilled"]).second.tone_map_compression == 0
    assert resolve_multiscale(Settings(), RELEASE_DEFAULTS["13b-0.9.7-distilled"]).second.tone_map_compression == 0

    # a guidance field given applies to both passes, over each pass's own guidance
    over = resolve_multiscale(Settings(stg_scale=0.0, cfg_star_rescale=False), DEV)
    for run in (over.first, over.second):
        assert run.guidance.stg_scale == 0.0 and not run.guidance.cfg_star_rescale
    assert over.first.guidance.guidance_scale == dev.first.guidance.guidance_scale  # CFG per range kept


def test_describe_names_both_passes_their_sizes_and_the_resize():
    line = resolve_multiscale(Settings(guidance_scale=2.0), DISTILLED).describe({"guidance_scale": "--guidance 2"})
    assert line.startswith("multiscale: first pass at 480×320: 7 steps, noise levels 1/0.9937/")
    assert "second pass at 960×640 from the upscaled latents: 3 steps, noise levels 0.9094/0.725/0.4219" in line
    assert line.count("CFG 2 (--guidance 2)") == 2 and "tone map 0.6" in line
    assert "decoded at 960×640, resized to 768×512; unmarked: LTX-Video 0.9.8-distilled 13B's defaults" in line
    dev = resolve_multiscale(Settings(), DEV).describe()
    assert "30 steps, the last 3 skipped" in dev and "30 steps, the first 17 skipped" in dev


def test_what_multiscale_refuses():
    with pytest.raises(ValueError, match=r"0.9.1 2B has no multi-scale pipeline \(the releases with one: 0.9.7-dev"):
        resolve_multiscale(Settings(), RELEASE_DEFAULTS["2b-0.9.1"])
    for given in ({"steps": 4}, {"timesteps": (1.0, 0.5)}, {"schedule": "shifted"}):
        with pytest.raises(ValueError, match=f"Settings.{next(iter(given))} set with multiscale"):
            resolve_multiscale(Settings(**given), DEV)


def test_a_release_the_files_cannot_tell_must_be_named():
    """13B 0.9.7 and 0.9.8 files are alike in one pass (detection keeps the first and lists the other), but
    not in the multi-scale pipeline: another upsampler, and 0.9.8 distilled tone-maps."""
    import argparse

    from ltx_core.cli.checks import check_multiscale
    from ltx_core.cli.flags import UsageError

    guessed = Release(
        "0.9.7-distilled", "13B", RELEASE_DEFAULTS["13b-0.9.7-distilled"], "content", ("0.9.8-distilled",)
    )
    words = "0.9.7-distilled or 0.9.8-distilled 13B, whose multi-scale second pass and spatial upsampler differ"
    assert undecided(guessed) == f"its files can be LTX-Video {words}"
    args = argparse.Namespace(width=768, height=512)
    with pytest.raises(
        UsageError, match=f"--multiscale: its files can be LTX-Video {words}; .* --release 0.9.8-distilled"
    ):
        check_multiscale(args, guessed)
    dev = Release("0.9.7-dev", "13B", RELEASE_DEFAULTS["13b-0.9.7-dev"], "content", ("0.9.8-dev",))
    assert undecided(dev).endswith("whose multi-scale spatial upsampler differs")
    assert undecided(Release("0.9.8-distilled", "2B", RELEASE_DEFAULTS["2b-0.9.8-distilled"], "named")) == ""
    check_multiscale(args, Release("0.9.8-distilled", "2B", RELEASE_DEFAULTS["2b-0.9.8-distilled"], "named"))


def test_resize_frames_is_the_official_bilinear_resize():
    frames = torch.rand(2, 3, 20, 30, 3, generator=torch.Generator().manual_seed(0))
    official = torch.nn.functional.interpolate(
        frames.permute(0, 1, 4, 2, 3).flatten(0, 1), size=(16, 24), mode="bilinear", align_corners=False
    )
    ours = resize_frames(frames, 24, 16)
    assert torch.equal(ours, official.unflatten(0, (2, 3)).permute(0, 1, 3, 4, 2))
    assert resize_frames(frames, 30, 20) is frames


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny 0.9.5-layout checkpoint (run as 0.9.8-distilled 2B), its T5, and latent upsampler files."""
    folder = tmp_path_factory.mktemp("multiscale")
    made = write_tiny_checkpoints(folder, layout="0.9.5")
    made["upsampler"] = write_tiny_upsampler(folder / "spatial.safetensors")
    made["temporal"] = write_tiny_upsampler(folder / "temporal.safetensors", spatial=False, temporal=True)
    return made


@pytest.fixture(scope="module")
def models(files):
    return Models.load(
        files["checkpoint"],
        files["text_encoder"],
        dtype=torch.float32,
        release="0.9.8-distilled",
        upsampler=files["upsampler"],
    )


def test_generates_at_the_size_asked_for_counting_both_passes_as_one(models):
    steps = []
    frames = text_to_video(models, "a red fox", settings=SMALL, on_step=lambda i, n, x: steps.append((i, n, x.shape)))
    assert frames.shape == (1, 9, 64, 96, 3) and 0 <= frames.min() and frames.max() <= 1
    assert [(i, n) for i, n, _ in steps] == [(i, 10) for i in range(10)]  # 7 + 3 noise levels
    assert {shape for *_, shape in steps[:7]} == {(1, TINY_LATENT, 2, 1, 1)}  # 32 × 32
    assert {shape for *_, shape in steps[7:]} == {(1, TINY_LATENT, 2, 2, 2)}  # 64 × 64
    assert torch.equal(frames, text_to_video(models, "a red fox", settings=SMALL))
    image = torch.rand(40, 50, 3, generator=torch.Generator().manual_seed(1))
    assert image_to_video(models, image, "a red fox", settings=SMALL).shape == (1, 9, 64, 96, 3)


def test_the_pipeline_refuses_what_has_no_multiscale_form(models, files):
    with pytest.raises(ValueError, match="video_to_video has no multi-scale form"):
        video_to_video(models, torch.rand(9, 64, 96, 3), "a fox", settings=SMALL)
    with pytest.raises(ValueError, match="needs a spatial latent upsampler.*ltxv-spatial-upscaler-0.9.8.safetensors"):
        text_to_video(dataclasses.replace(models, upsampler=None), "a fox", settings=SMALL)
    with pytest.raises(ValueError, match="0.9.5 2B has no multi-scale pipeline"):
        text_to_video(dataclasses.replace(models, release="0.9.5"), "a fox", settings=SMALL)
    guessed = dataclasses.replace(models.release, alike=("0.9.6-distilled",))  # as if content could not tell
    with pytest.raises(ValueError, match="0.9.8-distilled or 0.9.6-distilled 2B, whose multi-scale .* differ; name"):
        text_to_video(dataclasses.replace(models, release=guessed), "a fox", settings=SMALL)
    with pytest.raises(CheckpointError, match="is a temporal ×2 latent upsampler; expected a spatial latent"):
        Models.load(files["checkpoint"], files["text_encoder"], release="0.9.8-distilled", upsampler=files["temporal"])


def test_an_upsampler_loaded_as_another_model_names_its_loader(files):
    for load, wanted in ((load_transformer, "an LTX-Video transformer"), (load_vae, "an LTX-Video VAE")):
        with pytest.raises(CheckpointError) as error:
            load(files["upsampler"])
        assert error.value.advice == "latent_upsampler"
        assert (
            f"contains an LTX-Video latent upsampler; expected {wanted}. Load it with load_latent_upsampler()"
            in str(error.value)
        )
        assert "Pass it as --upsampler, with --multiscale." in str(error.value.reworded(CLI_ADVICE))
    # every front end's table has every advice the core gives (reworded() looks each key up there)
    from workflows.build import import_pack

    assert set(API_ADVICE) <= set(CLI_ADVICE)
    assert set(API_ADVICE) <= set(import_pack().nodes.loaders.NODE_ADVICE)
