"""The pipeline and the command-line generator end to end on tiny checkpoints: an mp4 comes out, from
local files or from the default release on a local stand-in for the Hugging Face Hub (hub_server.py),
and every mistake in bad_invocations.py is explained before anything loads."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from bad_invocations import BAD, applies, problems, run_in_process, write_fixtures
from hub_server import DEFAULT_REPO, pointed_at, serve, tiny_files, tiny_hub
from ltx_core.generate import main
from ltx_core.loading.safetensors import read_header
from ltx_core.media import read_video
from ltx_core.pipeline import Models, Settings, image_to_video, text_to_video, video_to_video
from tiny import tiny_lora, write_tiny_checkpoints, write_tiny_upsampler

SMALL = Settings(width=64, height=96, frames=9, steps=2, device="cpu")


@pytest.fixture(scope="module")
def files():
    return tiny_files()


@pytest.fixture(scope="module")
def models(files):
    return Models.load(files["checkpoint"], files["text_encoder"], dtype=torch.float32)


def test_text_to_video_is_seeded(models):
    assert models.release.name == "0.9.1"
    first = text_to_video(models, "a red fox", settings=SMALL)
    assert first.shape == (1, 9, 96, 64, 3) and first.dtype == torch.float32
    assert 0 <= first.min() and first.max() <= 1 and first.std() > 0.01
    assert torch.equal(first, text_to_video(models, "a red fox", settings=SMALL))
    other = text_to_video(models, "a red fox", settings=Settings(**{**SMALL.__dict__, "seed": 1}))
    assert not torch.equal(first, other)


def test_image_and_video_to_video_run(models):
    image = torch.rand(50, 70, 3, generator=torch.Generator().manual_seed(0))
    frames = image_to_video(models, image, "a red fox", settings=SMALL, strength=1.0)
    assert frames.shape == (1, 9, 96, 64, 3)
    again = video_to_video(models, frames[0], "a red fox", settings=SMALL, denoise=0.5)
    assert again.shape == frames.shape
    with pytest.raises(ValueError, match="expected \\(frames, height, width, 3\\) with 9 frames"):
        video_to_video(models, frames[0, :5], "a red fox", settings=SMALL)


def test_bad_settings_are_explained(models):
    with pytest.raises(ValueError, match="use 9 or 17"):
        text_to_video(models, "x", settings=Settings(width=64, height=96, frames=10, steps=1, device="cpu"))
    with pytest.raises(ValueError, match="use 64 or 96"):
        text_to_video(models, "x", settings=Settings(width=70, height=96, frames=9, steps=1, device="cpu"))


def test_command_line_writes_an_mp4(files, tmp_path, capsys):
    out = tmp_path / "fox.mp4"
    common = ["--checkpoint", str(files["checkpoint"]), "--text-encoder", str(files["text_encoder"])]
    size = ["--width", "64", "--height", "96", "--frames", "17", "--steps", "2", "--device", "cpu"]
    assert main(["--prompt", "a red fox", *common, *size, "--dtype", "fp32", "--output", str(out)]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (17, 96, 64, 3) and fps == pytest.approx(25.0)
    err = capsys.readouterr().err
    stages = ["loading the models", "encoding the prompt", "sampling 1/2", "sampling 2/2", "decoding 17 frames"]
    stages += ["writing", f"wrote {out}"]
    assert [err.index(stage) for stage in stages] == sorted(err.index(stage) for stage in stages), err
    assert "s for the first step" in err and "s/step" in err
    assert "downloading" not in err  # local files only: the Hub is not asked
    settings = "settings: 2 steps (--steps 2), shifted schedule, CFG 3, STG 1, STG mode attention_values, STG blocks 19"
    assert settings in err and err.index(settings) < err.index("loading the models")
    assert "unmarked: LTX-Video 0.9.1 2B's defaults (from github.com/Lightricks/LTX-Video configs/ltxv-2b-0.9.1" in err

    image = tmp_path / "start.png"
    Image.fromarray((np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)).save(image)
    out_i2v = tmp_path / "i2v.mp4"
    args = ["--prompt", "a fox", *common, *size, "--image", str(image), "--memory", "low_vram", "--quiet"]
    assert main([*args, "--output", str(out_i2v)]) == 0
    assert read_video(out_i2v)[0].shape == (17, 96, 64, 3)
    assert capsys.readouterr().err == ""  # --quiet: nothing but errors


def test_command_line_keyframes_video_and_extend(files, tmp_path):
    """Each conditioning option end to end: the mp4 has the length the option promises."""
    from ltx_core.media import write_mp4

    common = [
        "--prompt",
        "a fox",
        "--checkpoint",
        str(files["checkpoint"]),
        "--text-encoder",
        str(files["text_encoder"]),
    ]
    common += ["--width", "64", "--height", "96", "--steps", "1", "--device", "cpu", "--dtype", "fp32", "--quiet"]
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 30, 3)) * 255).astype(np.uint8)).save(tmp_path / "start.png")
    Image.fromarray((rng.random((40, 30, 3)) * 255).astype(np.uint8)).save(tmp_path / "end.png")
    write_mp4(tmp_path / "clip.mp4", torch.rand(9, 96, 64, 3, generator=torch.Generator().manual_seed(0)), 25)

    # --image at frame 0, a 9-frame clip from frame 8, a picture at the last frame (24) kept at 0.8
    keyed = tmp_path / "keyed.mp4"
    keys = ["--image", str(tmp_path / "start.png"), "--keyframe", f"{tmp_path / 'clip.mp4'}@8"]
    keys += ["--keyframe", f"{tmp_path / 'end.png'}@-1:0.8", "--frames", "25"]
    assert main([*common, *keys, "--output", str(keyed)]) == 0
    assert read_video(keyed)[0].shape == (25, 96, 64, 3)

    # 17 new frames before the 25, sharing 9: 25 + 17 − 9
    extended = tmp_path / "extended.mp4"
    how = ["--extend", str(keyed), "--extend-direction", "backward", "--extend-overlap", "9", "--frames", "17"]
    assert main([*common, *how, "--extend-strength", "0.9", "--output", str(extended)]) == 0
    assert read_video(extended)[0].shape == (33, 96, 64, 3)

    # the first 17 frames of the 25, re-generated
    again = tmp_path / "again.mp4"
    assert main([*common, "--video", str(keyed), "--strength", "0.5", "--frames", "17", "--output", str(again)]) == 0
    assert read_video(again)[0].shape == (17, 96, 64, 3)


def test_sampling_options_reach_the_sampler_and_are_named(files, tmp_path, monkeypatch, capsys):
    """Each sampling option replaces its part of the release's settings, and the settings line says which."""
    from ltx_core import pipeline

    seen = {}
    sample = pipeline.sample
    monkeypatch.setattr(pipeline, "sample", lambda *a, **k: seen.update(k) or sample(*a, **k))
    common = [
        "--prompt",
        "a fox",
        "--checkpoint",
        str(files["checkpoint"]),
        "--text-encoder",
        str(files["text_encoder"]),
    ]
    size = ["--width", "64", "--height", "64", "--frames", "9", "--steps", "1", "--device", "cpu", "--fps", "24"]
    options = ["--guidance", "5", "--stg-scale", "2", "--stg-mode", "stg_as", "--stg-blocks", "3,4"]
    options += ["--rescaling", "1", "--cfg-star", "--stochastic"]
    assert main([*common, *size, *options, "--output", str(tmp_path / "fox.mp4")]) == 0
    guidance = seen["guidance"]
    assert (guidance.guidance_scale, guidance.stg_scale, guidance.stg_mode) == (5, 2, "attention_skip")
    assert (guidance.skip_block_list, guidance.rescaling_scale, guidance.cfg_star_rescale) == ((3, 4), 1, True)
    assert seen["stochastic_sampling"] is True and seen["frame_rate"] == 24
    err = capsys.readouterr().err
    marked = [
        "1 steps (--steps 1)",
        "CFG 5 (--guidance 5)",
        "STG 2 (--stg-scale 2)",
        "STG mode attention_skip (--stg-mode stg_as)",
        "STG blocks 3,4 (--stg-blocks 3,4)",
        "rescaling 1 (--rescaling 1)",
        "CFG-zero* on (--cfg-star)",
        "stochastic sampling on (--stochastic)",
        "24 fps (--fps 24)",
        "128 prompt tokens,",  # unmarked: the release's
    ]
    assert all(words in err for words in marked), err
    assert main([*common, *size, "--no-cfg-star", "--no-stochastic", "--output", str(tmp_path / "b.mp4")]) == 0
    err = capsys.readouterr().err
    assert "CFG-zero* off (--no-cfg-star)" in err and "stochastic sampling off (--no-stochastic)" in err


def test_command_line_multiscale(tmp_path, capsys, monkeypatch):
    """--multiscale: the release's two passes with the spatial upsampler between them, the mp4 at the size
    asked for; without --upsampler the release's own is fetched from the Hub (and nothing else), and a
    diffusers folder of it from a repository of its own."""
    from ltx_core import generate

    written = []  # the frames of each run (x264 itself does not encode noise-like frames repeatably)
    write = generate.write
    monkeypatch.setattr(generate, "write", lambda frames, *args: written.append(frames) or write(frames, *args))
    made = write_tiny_checkpoints(tmp_path / "made", layout="0.9.5")
    upsampler = write_tiny_upsampler(tmp_path / "upsampler.safetensors")
    common = ["--prompt", "a fox", "--checkpoint", str(made["checkpoint"]), "--text-encoder", str(made["text_encoder"])]
    common += ["--release", "0.9.8-distilled", "--width", "96", "--height", "64", "--frames", "9", "--device", "cpu"]
    common += ["--dtype", "fp32", "--multiscale"]
    out = tmp_path / "fox.mp4"
    assert main([*common, "--upsampler", str(upsampler), "--output", str(out)]) == 0
    assert read_video(out)[0].shape == (9, 64, 96, 3)
    err = capsys.readouterr().err
    assert "settings: multiscale: first pass at 32×32: 7 steps, noise levels 1/0.9937/" in err
    assert "second pass at 64×64 from the upscaled latents: 3 steps" in err and "resized to 96×64" in err
    assert "sampling 10/10" in err and "sampling 8/10" in err  # both passes, as one run

    repo = tmp_path / "hub" / DEFAULT_REPO
    repo.mkdir(parents=True)
    shutil.copyfile(upsampler, repo / "ltxv-spatial-upscaler-0.9.8.safetensors")
    (repo / "ltxv-spatial-upscaler-0.9.7.safetensors").write_bytes(b"not to be downloaded")
    # the same upsampler as a diffusers repository (model_index.json, latent_upsampler/, vae/)
    folder = tmp_path / "hub" / "Lightricks" / "ltxv-spatial-upscaler-0.9.8"
    (folder / "latent_upsampler").mkdir(parents=True)
    (folder / "vae").mkdir()
    config = json.loads(read_header(upsampler).metadata["config"]) | {"_class_name": "LTXLatentUpsamplerModel"}
    (folder / "latent_upsampler" / "config.json").write_text(json.dumps(config))
    shutil.copyfile(upsampler, folder / "latent_upsampler" / "diffusion_pytorch_model.safetensors")
    (folder / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"not to be downloaded")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LTXLatentUpsamplePipeline"}))
    repos = {DEFAULT_REPO: repo, "Lightricks/ltxv-spatial-upscaler-0.9.8": folder}
    with serve(repos) as hub, pointed_at(hub.url, tmp_path / "hf"):
        assert main([*common, "--output", str(tmp_path / "hub.mp4")]) == 0  # the release's, by default
        assert hub.downloaded() == ["ltxv-spatial-upscaler-0.9.8.safetensors"]
        by_folder = ["--upsampler", "Lightricks/ltxv-spatial-upscaler-0.9.8", "--output", str(tmp_path / "dir.mp4")]
        assert main([*common, *by_folder]) == 0
        assert sorted(hub.downloaded()[1:]) == [
            "latent_upsampler/config.json",
            "latent_upsampler/diffusion_pytorch_model.safetensors",
        ]
    assert f"downloading {DEFAULT_REPO}/ltxv-spatial-upscaler-0.9.8.safetensors" in capsys.readouterr().err
    assert len(written) == 3 and all(torch.equal(frames, written[0]) for frames in written)  # the same upsampler


def test_command_line_loras_equal_apply_loras(files, tmp_path, monkeypatch, capsys):
    """--lora FILE:STRENGTH (repeated) gives the frames of `apply_loras` on the same models, local or from
    the Hub (a file, or a folder as diffusers saves one); none gives the frames without."""
    from ltx_core import generate
    from ltx_core.loading.transformer import inspect_transformer
    from ltx_core.lora import apply_loras

    written = []
    write = generate.write
    monkeypatch.setattr(generate, "write", lambda frames, *args: written.append(frames) or write(frames, *args))
    config = inspect_transformer(files["checkpoint"]).config
    style, motion = tmp_path / "style.safetensors", tmp_path / "motion.safetensors"
    save_file(tiny_lora(config, 1), style)
    save_file(tiny_lora(config, 2, rank=8, prefix="transformer."), motion)
    models = ["--checkpoint", str(files["checkpoint"]), "--text-encoder", str(files["text_encoder"])]
    common = ["--prompt", "a fox", *models, "--width", "64", "--height", "64", "--frames", "9", "--steps", "2"]
    common += ["--device", "cpu", "--dtype", "fp32", "--seed", "3"]
    loras = ["--lora", f"{style}:0.7", "--lora", str(motion)]
    assert main([*common, *loras, "--output", str(tmp_path / "loras.mp4")]) == 0
    assert "LoRAs: style.safetensors × 0.7, motion.safetensors × 1, on 280 layers" in capsys.readouterr().err
    assert main([*common, "--output", str(tmp_path / "none.mp4")]) == 0

    loaded = Models.load(files["checkpoint"], files["text_encoder"], dtype=torch.float32)
    settings = Settings(width=64, height=64, frames=9, steps=2, seed=3, device="cpu")
    apply_loras(loaded.transformer, [(style, 0.7), (motion, 1.0)])
    assert torch.equal(written[0], text_to_video(loaded, "a fox", settings=settings)[0])
    assert (written[0] - written[1]).abs().max() > 1e-2  # negative control: without the LoRAs

    repo = tmp_path / "hub" / "someone" / "fox-loras"
    (repo / "motion").mkdir(parents=True)
    shutil.copyfile(style, repo / "style.safetensors")
    shutil.copyfile(motion, repo / "motion" / "pytorch_lora_weights.safetensors")  # diffusers' folder layout
    with serve({"someone/fox-loras": repo}) as hub, pointed_at(hub.url, tmp_path / "hf"):
        from_hub = ["--lora", "someone/fox-loras/style.safetensors:0.7", "--lora", "hf://someone/fox-loras/motion"]
        assert main([*common, *from_hub, "--output", str(tmp_path / "hub.mp4")]) == 0
        assert sorted(hub.downloaded()) == ["motion/pytorch_lora_weights.safetensors", "style.safetensors"]
    assert torch.equal(written[2], written[0])
    assert "downloading someone/fox-loras/style.safetensors" in capsys.readouterr().err


def test_default_release_comes_from_the_hub(tmp_path, capsys):
    """No model options: the default release is downloaded (the checkpoint file, text_encoder/ and the
    tokenizer/ beside it, nothing else of the repository) and cached; offline, the cache serves."""
    hub = tiny_hub()
    size = ["--width", "64", "--height", "64", "--frames", "9", "--steps", "1", "--device", "cpu"]
    before = len(hub.downloaded())
    with pointed_at(hub.url, tmp_path / "hf"):
        assert main(["--prompt", "a red fox", *size, "--output", str(tmp_path / "a.mp4")]) == 0
    downloaded = hub.downloaded()[before:]
    needed = [f for f in hub.repos[DEFAULT_REPO].files if f.startswith(("ltx-video-2b-v0.9.1", "text_encoder/", "tok"))]
    assert sorted(downloaded) == sorted(needed) and len(needed) == 8  # checkpoint, config, 3 shards, index, tokenizer
    err = capsys.readouterr().err
    assert f"downloading {DEFAULT_REPO}/ltx-video-2b-v0.9.1.safetensors" in err
    assert f"downloading {DEFAULT_REPO}/text_encoder (" in err

    with pointed_at(hub.url, tmp_path / "hf"):  # again: nothing is downloaded twice
        assert main(["--prompt", "a red fox", *size, "--output", str(tmp_path / "b.mp4")]) == 0
    with pointed_at(hub.url, tmp_path / "hf", offline=True):
        assert main(["--prompt", "a red fox", *size, "--output", str(tmp_path / "c.mp4")]) == 0
    assert len(hub.downloaded()) == before + len(downloaded)
    assert read_video(tmp_path / "a.mp4")[0].shape == read_video(tmp_path / "c.mp4")[0].shape == (9, 64, 64, 3)


def test_a_t5_file_alone_gets_the_default_tokenizer(files, tmp_path, capsys):
    """ComfyUI's t5xxl_fp16.safetensors comes without a tokenizer: the default release's is fetched."""
    alone = tmp_path / "t5xxl.safetensors"
    shutil.copyfile(files["text_encoder"] / "model.safetensors", alone)
    size = ["--width", "64", "--height", "64", "--frames", "9", "--steps", "1", "--device", "cpu"]
    models = ["--checkpoint", str(files["checkpoint"]), "--text-encoder", str(alone)]
    with pointed_at(tiny_hub().url, tmp_path / "hf"):
        assert main(["--prompt", "a fox", *models, *size, "--output", str(tmp_path / "fox.mp4")]) == 0
    err = capsys.readouterr().err
    assert f"no T5 tokenizer beside the text encoder: using {DEFAULT_REPO}/tokenizer" in err


def test_a_failed_write_keeps_the_video(files, tmp_path, monkeypatch, capsys):
    """The output folder vanishes while generating: the frames go to a fallback file, named in the error."""
    from ltx_core import media

    out = tmp_path / "gone" / "fox.mp4"
    out.parent.mkdir()
    real_write = media.write_mp4

    def write_mp4(path, *args, **kwargs):
        if Path(path) == out:
            raise PermissionError(13, "Permission denied", str(path))
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(media, "write_mp4", write_mp4)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    models = ["--checkpoint", str(files["checkpoint"]), "--text-encoder", str(files["text_encoder"])]
    size = ["--width", "64", "--height", "64", "--frames", "9", "--steps", "1", "--device", "cpu"]
    assert main(["--prompt", "a fox", *models, *size, "--output", str(out)]) == 1
    err = capsys.readouterr().err
    kept = next(tmp_path.glob("ltx-video-*.mp4"))
    assert f"could not write --output {out}" in err and "Permission denied" in err and str(kept) in err
    assert read_video(kept)[0].shape == (9, 64, 64, 3)


def test_help_shows_every_option_its_default_and_what_is_required(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    parser_options = ["--prompt", "--checkpoint", "--vae", "--release", "--text-encoder", "--tokenizer"]
    parser_options += ["--negative-prompt"]
    parser_options += ["--image", "--image-strength", "--width", "--height", "--frames", "--fps", "--steps"]
    parser_options += ["--keyframe", "--video", "--strength", "--extend", "--extend-direction", "--extend-overlap"]
    parser_options += [
        "--extend-strength",
        "--guidance",
        "--stg-scale",
        "--stg-mode",
        "--stg-blocks",
        "--rescaling",
        "--upsampler",
        "--lora",
        "--multiscale",
        "--cfg-star, --no-cfg-star",
        "--stochastic, --no-stochastic",
        "--seed",
        "--dtype",
        "--device",
        "--memory",
        "--output",
        "--crf",
        "--quiet",
    ]
    for option in parser_options:
        assert f"  {option} " in text or f"  {option}\n" in text, option
    assert "required:\n  --prompt" in text and text.count("(default:") >= len(parser_options) - 2
    assert f"(default: {DEFAULT_REPO}/ltx-video-2b-v0.9.1.safetensors)" in " ".join(text.split())


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    return {**write_fixtures(tmp_path_factory.mktemp("bad"), tiny_files()), "hub": tiny_hub().url}


@pytest.mark.parametrize("bad", [b for b in BAD if applies(b)], ids=lambda b: " ".join(b.args)[:50])
def test_a_bad_invocation_says_which_option_and_what_to_do(bad, fields, tmp_path):
    status, err, seconds = run_in_process(bad, fields, tmp_path / "hf")
    assert problems(bad, status, err, seconds) == [], err


def test_on_device_visits_and_returns_without_copying_back(monkeypatch):
    from ltx_core import memory

    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    pointers = lambda: [t.data_ptr() for t in (*module.parameters(), *module.buffers())]  # noqa: E731
    home = pointers()
    with memory.on_device(module, "cpu"):  # already there: untouched
        assert pointers() == home
    monkeypatch.setattr(memory, "same_device", lambda a, b: False)  # pretend the CPU is elsewhere
    with memory.on_device(module, "cpu"):  # every parameter and buffer visits as a copy
        assert all(a != b for a, b in zip(pointers(), home, strict=True))
    assert pointers() == home  # and points back at the same home copies afterwards
    monkeypatch.undo()
    assert memory.same_device("cpu", torch.device("cpu"))
    assert not memory.same_device("cpu", "meta")
