"""Frame conditions inside a LATENT's noise mask, and the sampler's sigma choice."""

from __future__ import annotations

import pytest
import torch

from ltx_core import FrameCondition
from ltx_core.latent_guides import (
    add_condition,
    choose_sigmas,
    conditions_from_mask,
    frame_index,
    guide_conditions,
    split_core_guides,
)
from ltx_core.model.patchify import to_tokens
from ltx_core.model.rope import video_positions
from ltx_core.sampling.conditioning import appended_start, appended_token_count, in_place_start
from ltx_core.sampling.noise import seeded_generator


def test_add_condition_round_trips_through_the_mask():
    latents = torch.zeros(2, 4, 3, 2, 2)
    image = torch.randn(1, 4, 1, 2, 2)
    written, mask = add_condition(latents, None, FrameCondition(image, 16, 0.75))
    assert mask.shape == (2, 1, 3, 1, 1) and mask.flatten().tolist() == [1, 1, 0.25, 1, 1, 0.25]
    assert torch.equal(latents, torch.zeros_like(latents))  # the input is not changed
    (condition,) = conditions_from_mask(written, mask)
    assert condition.frame == 16 and condition.strength == 0.75
    assert torch.equal(condition.latents, image.expand(2, -1, -1, -1, -1))
    with pytest.raises(ValueError, match="runs past the video's 3 latent frames"):
        add_condition(latents, None, FrameCondition(torch.zeros(1, 4, 2, 2, 2), 16))


def test_masks_that_vary_inside_a_frame_are_refused():
    with pytest.raises(ValueError, match="varies within a frame"):
        conditions_from_mask(torch.zeros(1, 4, 2, 2, 2), torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 1, 2))
    with pytest.raises(ValueError, match="expected \\(B or 1, 1, F, 1, 1\\)"):
        conditions_from_mask(torch.zeros(1, 4, 2, 2, 2), torch.ones(2, 2))


def test_frame_index_and_sigmas():
    assert frame_index(-1, 13) == 96 and frame_index(8, 13) == 8
    with pytest.raises(ValueError, match="outside the video's 97 frames"):
        frame_index(97, 13)
    assert choose_sigmas("shifted", 4, 100).shape == (5,)
    assert choose_sigmas("shifted", 4, 100, denoise=0.5)[0] < 1
    assert choose_sigmas("shifted", 4, 100, sigmas=torch.tensor([0.8, 0.3])).tolist() == pytest.approx([0.8, 0.3, 0])


def test_guide_conditions_follow_the_layout():
    latents = torch.zeros(1, 4, 3, 2, 2)
    first, between = FrameCondition(torch.ones(1, 4, 1, 2, 2), 0), FrameCondition(torch.ones(1, 4, 1, 2, 2), 13, 0.5)
    written, mask = add_condition(latents, None, first)
    assert guide_conditions(written, mask, [first, between], "appended") == [first, between]  # exact
    assert appended_token_count([first, between]) == 4  # one latent frame of 2×2 tokens after frame 0
    (in_place,) = guide_conditions(written, mask, None, "appended")  # no record: what the mask says
    assert in_place.frame == 0 and torch.equal(in_place.latents, first.latents)
    assert [c.frame for c in guide_conditions(written, mask, [first], "in_place")] == [0]
    with pytest.raises(ValueError, match="multiple of 8, got 13: use 8 or 16"):
        guide_conditions(written, mask, [first, between], "in_place")


# --- guides appended by ComfyUI's LTXVAddGuide ---------------------------------------------------------------


def _core_guided(strengths=(1.0, 0.75), frames=(17, 25)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What LTXVAddGuide leaves for a 3-latent-frame video (1 × 2 tokens per frame) with one image
    written in place at frame 0 and one image guide per entry of `frames`: latents (1, 4, 3 + g, 1, 2),
    noise mask (1, 1, 3 + g, 1, 1) and keyframe_idxs (1, 3, g·2) in pixel units."""
    latents = torch.randn(1, 4, 3 + len(frames), 1, 2, generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([0.0, 1.0, 1.0, *(1 - s for s in strengths)]).reshape(1, 1, -1, 1, 1)
    idxs = torch.tensor([[[t, t] for t in frames], [[0, 0]] * len(frames), [[0, 32]] * len(frames)]).flatten(1)
    return latents, mask, idxs[None]


def test_core_guides_split_into_the_video_and_conditions_at_their_positions():
    latents, mask, idxs = _core_guided()
    video, video_mask, guides = split_core_guides(latents, mask, idxs)
    assert torch.equal(video, latents[:, :, :3]) and torch.equal(video_mask, mask[:, :, :3])
    assert [(g.frame, g.strength) for g in guides] == [(17, 1.0), (25, 0.75)]
    assert torch.equal(guides[1].latents, latents[:, :, 4:5]) and guides[1].positions.tolist() == [
        [25, 25],
        [0, 0],
        [0, 32],
    ]
    conditions = [*guide_conditions(video, video_mask, None, "appended"), *guides]
    assert [c.in_place for c in conditions] == [True, False, False] and appended_token_count(conditions) == 4
    state = appended_start(
        torch.zeros(1, 4, 3, 1, 2),
        torch.tensor(1.0),
        conditions,
        initial=None,
        frame_rate=25.0,
        causal_fix=True,
        generator=seeded_generator(0),
    )
    assert state.appended == 4 and (state.positions[0, 0, :4] * 25).round().tolist() == [17, 17, 25, 25]
    assert state.positions[0, 1:, :4].tolist() == [[0, 0, 0, 0], [0, 32, 0, 32]]
    assert torch.equal(state.tokens[:, :2], to_tokens(latents[:, :, 3:4]))  # strength 1: kept exactly
    assert torch.equal(state.tokens[:, 4:6], to_tokens(latents[:, :, :1]))  # the mask's frame, in place


def test_a_guide_at_an_image_frame_is_that_image_condition():
    """An image guide whose positions are those the release gives an image at frame 17 starts the sampler
    exactly where our own condition at frame 17 does (so LTXVAddGuide's images, which it positions this
    way, sample as ours); the same latents one position later do not (the negative control)."""
    image = torch.randn(1, 4, 1, 2, 3, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(1, 4, 4, 2, 3, generator=torch.Generator().manual_seed(5))
    where = (video_positions(1, 2, 3, frame_rate=1.0, causal_fix=True, start_frame=17)[0]).to(torch.int64)

    def start(condition: FrameCondition):
        return appended_start(
            noise,
            torch.tensor(1.0),
            [condition],
            initial=None,
            frame_rate=25.0,
            causal_fix=True,
            generator=seeded_generator(6),
        )

    ours, guide = start(FrameCondition(image, 17, 0.6)), start(FrameCondition(image, 17, 0.6, positions=where))
    for name in ("tokens", "strength", "positions"):
        assert torch.equal(getattr(ours, name), getattr(guide, name)), name
    shifted = start(FrameCondition(image, 18, 0.6, positions=where + torch.tensor([[1], [0], [0]])))
    assert torch.equal(shifted.tokens, ours.tokens) and not torch.equal(shifted.positions, ours.positions)


def test_core_guides_are_checked():
    latents, mask, idxs = _core_guided()
    with pytest.raises(ValueError, match=r"keyframe_idxs \(1, 3, 3\) do not fit latents \(1, 4, 5, 1, 2\)"):
        split_core_guides(latents, mask, idxs[:, :, :3])
    with pytest.raises(ValueError, match="names 5 guide frames but the latent has only 5 frames"):
        split_core_guides(latents, mask, idxs.repeat(1, 1, 3)[:, :, :10])
    with pytest.raises(ValueError, match=r"must be \(3, 2\)"):
        FrameCondition(latents[:, :, :1], 0, positions=idxs[0])
    (_, _, guides) = split_core_guides(latents, mask, idxs)
    with pytest.raises(ValueError, match="need the appended layout of 0.9.5\\+ models"):
        in_place_start(
            torch.zeros(1, 4, 3, 1, 2),
            torch.tensor(1.0),
            guides,
            initial=None,
            frame_rate=25.0,
            causal_fix=False,
            generator=seeded_generator(0),
        )
