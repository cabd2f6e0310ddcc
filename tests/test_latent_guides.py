"""Frame conditions inside a LATENT's noise mask, and the sampler's sigma choice."""

from __future__ import annotations

import pytest
import torch

from ltx_core import FrameCondition
from ltx_core.latent_guides import add_condition, choose_sigmas, conditions_from_mask, frame_index, guide_conditions
from ltx_core.sampling.conditioning import appended_token_count


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
