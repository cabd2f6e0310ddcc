"""The video extension nodes (LTX Extend Video, LTX Join Video) and video-to-video in the nodes: what
they put into the LATENT and the IMAGE, their errors in node-input words, and, on the same tiny
checkpoint, seed and inputs, the same latents and frames as the core pipeline's `extend_video` and
`video_to_video`."""

from __future__ import annotations

import pytest
import torch

from tiny_comfy import CHECKPOINT, CHECKPOINT_095, T5
from workflows.build import import_pack

pack = import_pack()
nodes, core = pack.nodes, pack.ltx_core
CONDITIONS_KEY = core.latent_guides.CONDITIONS_KEY
FROM_MODEL = "(from the model file)"
PROMPT, NEGATIVE, SEED, STEPS = "a red fox", "blurry", 5, 3
# the node sampler at guidance 3 runs classifier-free guidance alone; the core keeps the release's STG
# unless told otherwise
CFG_ONLY = {"guidance_scale": 3.0, "stg_scale": 0.0}


def _frames(count: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(seed))


def _encoded(vae, frames: torch.Tensor) -> torch.Tensor:
    """frames (T, H, W, 3) at the latent's size → latents, as the core pipeline encodes a condition."""
    with torch.inference_mode():
        return vae.module.encode(core.media.video_tensor_from_frames(frames)).float()


def test_extend_records_the_overlap_as_a_clip_at_the_start_or_the_end(comfy):
    _, vae, _ = nodes.LTXPackModelLoader().load(CHECKPOINT, FROM_MODEL, "default", "default")
    (latent,) = nodes.LTXPackEmptyLatentVideo().make(64, 64, 25, 1)  # 4 latent frames
    old = _frames(30, 40, 50, seed=1)  # another size: resized and centre-cropped
    extend = nodes.LTXPackExtendVideo().extend
    resized = core.media.resize_and_crop(old, 64, 64)
    for direction, shared, frame, mask in (
        ("forward", resized[-9:], 0, [0.0, 0.0, 1.0, 1.0]),
        ("backward", resized[:9], 16, [1.0, 1.0, 0.0, 0.0]),
    ):
        (out,) = extend(latent, vae, old, direction, 9, 1.0)
        (condition,) = out[CONDITIONS_KEY]
        assert (condition.frame, condition.strength) == (frame, 1.0), direction
        assert torch.equal(condition.latents, _encoded(vae, shared))  # no H.264 artefacts for clips
        assert out["noise_mask"].flatten().tolist() == mask  # in place too, for 0.9.1 models and core's nodes
        start = frame // 8
        assert torch.equal(out["samples"][:, :, start : start + 2], condition.latents)
    assert CONDITIONS_KEY not in latent and not latent["samples"].any()  # the input is not changed
    # After an image condition: both recorded, in order; strength reaches the mask.
    (first,) = nodes.LTXPackImageCondition().condition(latent, vae, old[:1], 0, 1.0, 0)
    (both,) = extend(first, vae, old, "backward", 9, 0.25)
    assert [(c.frame, c.strength) for c in both[CONDITIONS_KEY]] == [(0, 1.0), (16, 0.25)]
    assert both["noise_mask"].flatten().tolist() == [0.0, 1.0, 0.75, 0.75]


@pytest.mark.parametrize(
    ("length", "frames", "overlap", "strength", "message"),
    [
        (25, 30, 12, 1.0, "overlap 12 is not 1 + 8·k frames: set overlap to 9 or 17"),
        (25, 30, 0, 1.0, "overlap 0 is not 1 + 8·k frames: set overlap to 1 or 9"),
        (25, 12, 17, 1.0, "the video has 12 frames, fewer than the overlap of 17: lower overlap to 9 or give a"),
        (
            17,
            30,
            17,
            1.0,
            "the new video has 17 frames, no more than the overlap of 17, so nothing new would be made: "
            "set the empty latent's length to 25 or more, or lower overlap",
        ),  # fmt: skip
        (25, 30, 9, 1.5, "strength 1.5 is out of range"),
    ],
)
def test_extend_errors_speak_of_the_nodes_inputs(comfy, length, frames, overlap, strength, message):
    _, vae, _ = nodes.LTXPackModelLoader().load(CHECKPOINT, FROM_MODEL, "default", "default")
    (latent,) = nodes.LTXPackEmptyLatentVideo().make(64, 64, length, 1)
    with pytest.raises(ValueError) as error:
        nodes.LTXPackExtendVideo().extend(latent, vae, _frames(frames, 64, 64, 2), "forward", overlap, strength)
    assert message in str(error.value)
    with pytest.raises(ValueError, match=r"\(1, 4, 8, 8\) \(4 channels, 4-D\); an LTX-Video latent video"):
        nodes.LTXPackExtendVideo().extend({"samples": torch.zeros(1, 4, 8, 8)}, vae, _frames(30, 64, 64, 2),
                                          "forward", 9, 1.0)  # fmt: skip


def test_join_keeps_the_old_frames_and_adds_the_new_ones_outside_the_overlap():
    join = nodes.LTXPackJoinVideo().join
    old, new = _frames(30, 40, 50, seed=3), _frames(17, 64, 64, seed=4)
    resized = core.media.resize_and_crop(old, 64, 64)
    (forward,) = join(old, new, "forward", 9, 1)
    assert forward.shape == (30 + 17 - 9, 64, 64, 3)
    assert torch.equal(forward[:30], resized) and torch.equal(forward[30:], new[9:])
    (backward,) = join(old, new, "backward", 9, 1)
    assert torch.equal(backward[:8], new[:8]) and torch.equal(backward[8:], resized)
    # A batch of two new videos (34 frames): each joined to the old video, one after the other.
    batch = torch.cat([new, 1 - new])
    (joined,) = join(old, batch, "forward", 9, 2)
    assert joined.shape[0] == 2 * 38 and torch.equal(joined[38:], join(old, 1 - new, "forward", 9, 1)[0])
    with pytest.raises(ValueError) as error:  # the same 34 frames read as one video
        join(old, batch, "forward", 9, 1)
    assert str(error.value) == (
        "new_frames holds 34 frames, which do not split into batch_size = 1 videos of 1 + 8·k frames each: set "
        "batch_size to the empty latent's batch_size (34 frames can be 2 of 17, 34 of 1 frames)"
    )
    with pytest.raises(ValueError, match="split into batch_size = 3 videos"):
        join(old, batch, "forward", 9, 3)
    with pytest.raises(ValueError, match="the video has 5 frames, fewer than the overlap of 9: lower overlap to 1"):
        join(old[:5], new, "forward", 9, 1)
    with pytest.raises(ValueError, match="overlap 8 is not 1 \\+ 8·k frames"):
        join(old, new, "backward", 8, 1)


def _loaded(checkpoint: str):
    """The nodes' model, VAE and text encoder, and the same modules as the core pipeline's Models."""
    model, vae, _ = nodes.LTXPackModelLoader().load(checkpoint, FROM_MODEL, "default", "default")
    (encoder,) = nodes.LTXPackTextEncoderLoader().load(T5, "default", "default")
    models = core.pipeline.Models(model.module, vae.module, encoder.module, model.release)
    text = nodes.LTXPackTextEncode().encode(encoder, PROMPT, NEGATIVE, model.defaults.text_tokens)
    return model, vae, models, text


def _spy_on_core_sampling(monkeypatch) -> list[torch.Tensor]:
    """The latents each core pipeline call samples (before decoding)."""
    sampled, real = [], core.pipeline.sample
    monkeypatch.setattr(core.pipeline, "sample", lambda *a, **k: sampled.append(real(*a, **k)) or sampled[-1])
    return sampled


def _sample_and_decode(model, vae, text, latent: dict, denoise: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    (out,) = nodes.LTXPackSampler().sample(model, *text, latent, SEED, STEPS, 3.0, "auto", 25.0, denoise)
    (frames,) = nodes.LTXPackVAEDecode().decode(out, vae, 0.05, 0.025, SEED, "auto")
    return out["samples"], frames


@pytest.mark.parametrize("checkpoint", [CHECKPOINT, CHECKPOINT_095])
def test_video_to_video_in_the_nodes_equals_the_core(comfy, monkeypatch, checkpoint):
    """VAE Encode (pack) → Sampler with denoise < 1 → Decode is the core's `video_to_video`."""
    model, vae, models, text = _loaded(checkpoint)
    sampled = _spy_on_core_sampling(monkeypatch)
    settings = core.Settings(width=64, height=64, frames=17, steps=STEPS, seed=SEED, device="cpu", **CFG_ONLY)
    video = _frames(17, 64, 64, seed=6)
    expected = core.pipeline.video_to_video(models, video, PROMPT, NEGATIVE, settings, denoise=0.6)
    (latent,) = nodes.LTXPackVAEEncode().encode(video, vae, "auto")
    samples, frames = _sample_and_decode(model, vae, text, latent, denoise=0.6)
    assert torch.equal(samples, sampled[0]) and torch.equal(frames, expected[0])
    # Negative control: another input video (same seed and settings) gives other latents.
    (other,) = nodes.LTXPackVAEEncode().encode(1 - video, vae, "auto")
    assert (_sample_and_decode(model, vae, text, other, denoise=0.6)[0] - sampled[0]).abs().max() > 1e-2


@pytest.mark.parametrize(
    ("checkpoint", "direction", "batch"),
    [(CHECKPOINT_095, "forward", 1), (CHECKPOINT_095, "backward", 1), (CHECKPOINT_095, "forward", 2),
     (CHECKPOINT, "backward", 1)],
)  # fmt: skip
def test_extension_nodes_equal_the_core_extend_video(comfy, monkeypatch, checkpoint, direction, batch):
    """Empty Latent → Extend Video → Sampler → Decode → Join Video is the core's `extend_video`: the
    same sampled latents and the same joined frames (0.9.5+: the clip appended or at frame 0 as the
    official pipeline does; 0.9.1: in place)."""
    model, vae, models, text = _loaded(checkpoint)
    sampled = _spy_on_core_sampling(monkeypatch)
    settings = core.Settings(
        width=64, height=64, frames=17, steps=STEPS, seed=SEED, batch=batch, device="cpu", **CFG_ONLY
    )
    old = _frames(25, 48, 40, seed=7)
    expected = core.pipeline.extend_video(models, old, PROMPT, NEGATIVE, settings, direction=direction, overlap=9)
    (latent,) = nodes.LTXPackEmptyLatentVideo().make(64, 64, 17, batch)
    (latent,) = nodes.LTXPackExtendVideo().extend(latent, vae, old, direction, 9, 1.0)
    samples, frames = _sample_and_decode(model, vae, text, latent)
    (joined,) = nodes.LTXPackJoinVideo().join(old, frames, direction, 9, batch)
    assert torch.equal(samples, sampled[0])
    assert joined.shape == (batch * (25 + 17 - 9), 64, 64, 3) and torch.equal(joined, expected.flatten(0, 1))
    # Negative control: the core extending the other way samples other latents.
    other = "backward" if direction == "forward" else "forward"
    core.pipeline.extend_video(models, old, PROMPT, NEGATIVE, settings, direction=other, overlap=9)
    assert (samples - sampled[1]).abs().max() > 1e-2
