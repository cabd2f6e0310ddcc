"""ltx_core/passes.py: the noise levels and guidance of each pass of a release.

A pass's own levels are what the official pipeline runs (`retrieve_timesteps`: the `num_inference_steps`
schedule less the skipped steps, the last kept step going to 0; explicit `timesteps` as given), and what
the core's multiscale settings resolve (`resolve_multiscale`); another step count keeps the pass's window.
"""

from __future__ import annotations

import pytest
import torch

from ltx_core import Guidance, Settings, defaults_for, make_schedule
from ltx_core.multiscale import resolve_multiscale
from ltx_core.passes import FIRST, SECOND, SINGLE, PassWindow, pass_guidance, pass_sigmas, pass_window
from ltx_core.settings import resolve_settings

TOKENS = 4 * 6 * 8
MULTISCALE = [("0.9.8-dev", "13B"), ("0.9.7-dev", "13B"), ("0.9.8-distilled", "13B"), ("0.9.8-distilled", "2B")]


def test_13b_dev_passes_are_windows_of_its_30_steps():
    defaults = defaults_for("0.9.8-dev", "13B")
    full = make_schedule("linear_quadratic", 30, TOKENS)  # 31 levels, the last 0
    zero = torch.zeros(1)
    assert torch.equal(pass_sigmas(defaults, FIRST, TOKENS), torch.cat([full[:27], zero]))  # 3 final skipped
    assert torch.equal(pass_sigmas(defaults, SECOND, TOKENS), full[17:])  # 17 initial skipped
    assert torch.equal(pass_sigmas(defaults, SINGLE, TOKENS), full)
    assert pass_window(defaults, defaults.second_pass) == PassWindow(30, 17, 30)
    # another count keeps the window: 5 steps of the second pass are steps 7 … 11 of 12 (17 … 29 of 30)
    assert torch.equal(pass_sigmas(defaults, SECOND, TOKENS, 5), make_schedule("linear_quadratic", 12, TOKENS)[7:])
    assert torch.equal(pass_sigmas(defaults, SECOND, TOKENS, 13), full[17:])
    two = pass_sigmas(defaults, FIRST, TOKENS, 2)
    assert two.numel() == 3 and two[0] == 1 and two[-1] == 0


def test_distilled_passes_run_their_own_levels_which_are_windows_of_the_eight():
    defaults = defaults_for("0.9.8-distilled", "13B")
    assert pass_sigmas(defaults, FIRST, TOKENS).tolist() == pytest.approx([*defaults.first_pass.timesteps, 0.0])
    assert pass_sigmas(defaults, SECOND, TOKENS).tolist() == pytest.approx([0.9094, 0.725, 0.4219, 0.0])
    assert pass_window(defaults, defaults.first_pass) == PassWindow(8, 0, 7)
    assert pass_window(defaults, defaults.second_pass) == PassWindow(8, 5, 8)
    # other counts: the same window of the linear-quadratic curve the eight lie on
    assert torch.equal(pass_sigmas(defaults, SECOND, TOKENS, 2), make_schedule("linear_quadratic", 5, TOKENS)[3:])
    with_schedule = pass_sigmas(defaults, SECOND, TOKENS, schedule="linear_quadratic")
    assert torch.equal(with_schedule, make_schedule("linear_quadratic", 8, TOKENS)[5:])


@pytest.mark.parametrize(("release", "size"), MULTISCALE)
def test_own_levels_and_guidance_equal_the_cores_multiscale_settings(release, size):
    defaults = defaults_for(release, size)
    resolved = resolve_multiscale(Settings(), defaults)
    for which, one in ((FIRST, resolved.first), (SECOND, resolved.second)):
        assert torch.equal(pass_sigmas(defaults, which, TOKENS), one.sigmas(TOKENS)), which
        assert pass_guidance(defaults, which) == one.guidance, which
    single = resolve_settings(Settings(), defaults)
    assert torch.equal(pass_sigmas(defaults, SINGLE, TOKENS), single.sigmas(TOKENS))
    assert pass_guidance(defaults, SINGLE) == single.guidance


def test_13b_dev_second_pass_guidance_is_its_own():
    defaults = defaults_for("0.9.8-dev", "13B")
    second = pass_guidance(defaults, SECOND)
    assert second == Guidance(
        guidance_scale=1.0, stg_scale=1.0, rescaling_scale=1.0, skip_block_list=(27,), cfg_star_rescale=True
    )
    assert pass_guidance(defaults, FIRST) == pass_guidance(defaults, SINGLE) != second


def test_releases_without_multiscale_and_bad_names_are_refused():
    with pytest.raises(ValueError, match="0.9.1 2B has no multiscale recipe, so no second pass"):
        pass_sigmas(defaults_for("0.9.1"), SECOND, TOKENS)
    with pytest.raises(ValueError, match="unknown pass 'third'"):
        pass_guidance(defaults_for("0.9.1"), "third")
    with pytest.raises(ValueError, match="steps must be 0"):
        pass_sigmas(defaults_for("0.9.8-dev", "13B"), FIRST, TOKENS, -1)
