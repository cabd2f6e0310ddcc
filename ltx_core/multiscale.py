"""The multi-scale pipeline of LTX-Video 0.9.7+: its settings, sizes and the steps around the two passes.

`Settings(multiscale=True)` makes the core pipeline (pipeline.py) run a release's two official passes as
Lightricks' `LTXMultiScalePipeline` (ltx_video 0.1.2, `pipelines/pipeline_ltx_video.py`, called by
`inference.py` with the release's config, e.g. `configs/ltxv-13b-0.9.8-distilled.yaml`) runs them. It is
a switch in the settings rather than a function of its own because it is a way of sampling that text,
images, keyframes and video extension all take alike. Step by step, with the reference each follows:

1. The first pass at `downscale_factor` of the size: each side int(size · factor), rounded down to a
   multiple of 32 (`LTXMultiScalePipeline.__call__`; `multiscale_sizes`), sampled with the config's
   `first_pass` (its steps or noise levels and guidance), stopping `skip_final_steps` early with a last
   step to 0 (`retrieve_timesteps` cuts the timesteps; the scheduler steps the last one to 0).
2. Its latents doubled by the spatial upsampler, then AdaIN against them (`_upsample_latents` and
   `adain_filter_latent`, factor 1; upsampling.py's `upsample_latents`).
3. The second pass at twice the first size with the config's `second_pass`, from the upsampled latents
   mixed with fresh noise at its first noise level, σ·noise + (1 − σ)·latents (`prepare_latents` with
   `latents` given), skipping `skip_initial_steps` of its schedule. Its noise comes from the generator the
   first pass drew from, as the official pipeline hands one generator to both passes.
4. Decoded at that size with the release's decode timestep and noise; where the second pass sets
   `tone_map_compression_ratio` (13B 0.9.8 distilled: 0.6) the latents are tone-mapped after the noise is
   mixed in and before decoding (`LTXVideoPipeline.__call__`: `tone_map_latents`; `decode_input`).
5. Resized to the size asked for, bilinear without antialiasing (`LTXMultiScalePipeline.__call__`;
   `resize_frames`). The second pass's size is not that size: 768 × 512 samples at 480 × 320, then
   960 × 640, and is resized down.

Images, keyframes and clips are prepared at the full size as in one pass (resized, cropped, compressed
like H.264), then resized to each pass's size (bilinear, no antialiasing: `_resize_conditioning_item`,
called by `prepare_conditioning` in each pass) and encoded there, at the same frames in both passes.
The guidance fields of `Settings` apply to both passes; steps, timesteps and schedule are each pass's own.
Files that cannot tell two releases apart that run alike in one pass (13B 0.9.7 and 0.9.8) must have the
release named, as their upsamplers and second passes differ (`undecided`).

Deliberate differences: the official command line crops conditioning images to the aspect ratio at
their own resolution and blurs them before the pipeline resizes them; ours are resized and cropped to
the full size first (as in one pass), so they are resized twice. Decode noise comes from the seeded
generator, as in one pass (official: torch's global generator). diffusers' recipe (the multi-scale
examples of its LTX-Video docs, `LTXConditionPipeline` + `LTXLatentUpsamplePipeline`) is not followed
where it differs: a downscale of exactly 2/3 (768 × 512 → 512 × 320), a fresh generator per pass,
`denoise_strength` and other timesteps instead of the configs' skipped steps, tone mapping at upsampling
on un-normalised latents instead of before decoding, and PIL's resize at the end. Video-to-video has no
multi-scale form: the official pipeline cannot take an input video and the upsampled latents together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .defaults import ReleaseDefaults, defaults_for, multiscale_releases
from .loading.release import Release
from .settings import ResolvedSettings, Settings, describe_items, resolve_settings
from .types import VAE_SPATIAL_SCALE
from .upsampling import tone_map_latents

# Settings fields that belong to one pass: each multi-scale pass runs the release's own.
ONE_PASS_FIELDS = ("steps", "timesteps", "schedule")
# What a release's multi-scale pipeline takes from its defaults beyond one pass, in words.
MULTISCALE_FIELDS = {
    "first_pass": "first pass",
    "second_pass": "second pass",
    "downscale_factor": "downscale factor",
    "spatial_upscaler": "spatial upsampler",
}


@dataclass(frozen=True)
class MultiscaleSettings:
    """What a multi-scale generation runs with, as the official `LTXMultiScalePipeline` given the
    release's config: the first pass at `first_size`, its latents doubled by the spatial upscaler, the
    second pass at `second_size` from them, decoded there and resized to `size`. Sizes are (width, height)."""

    first: ResolvedSettings
    second: ResolvedSettings
    first_size: tuple[int, int]
    second_size: tuple[int, int]  # twice the first, not the size asked for (768 × 512: 960 × 640)
    size: tuple[int, int]  # the video's, as asked for
    downscale_factor: float
    spatial_upscaler: str  # the release's upscaler file in Lightricks/LTX-Video

    @property
    def frame_rate(self) -> float:
        return self.second.frame_rate

    def check_blocks(self, num_layers: int) -> None:
        """A ValueError when either pass's STG would perturb a block the model does not have."""
        self.first.check_blocks(num_layers)
        self.second.check_blocks(num_layers)

    def describe(self, given_as: Mapping[str, str] | None = None) -> str:
        """One line, as `ResolvedSettings.describe`: each pass's sampling, then what they share."""
        marks = self.first.marks(given_as)
        first, second = (describe_items(run.pass_items(), marks) for run in (self.first, self.second))
        (w1, h1), (w2, h2), (w, h) = self.first_size, self.second_size, self.size
        resized = f", resized to {w}×{h}" if (w2, h2) != (w, h) else ""
        return (
            f"multiscale: first pass at {w1}×{h1}: {first}; ×2 by the spatial upscaler with AdaIN; second pass at "
            f"{w2}×{h2} from the upscaled latents: {second}; {describe_items(self.second.run_items(), marks)}; "
            f"decoded at {w2}×{h2}{resized}; {self.second.unmarked()}"
        )


def multiscale_sizes(width: int, height: int, factor: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """((width, height) of the first pass, of the second) for a video of width × height, rounded as the
    official `LTXMultiScalePipeline` rounds: int(size · factor) down to a multiple of 32, then doubled.
    With the releases' factor 0.6666666 (a hair under 2/3), 768 × 512 gives 480 × 320 and 960 × 640,
    1216 × 704 (the official default) 800 × 448 and 1600 × 896."""
    scale = VAE_SPATIAL_SCALE
    first = tuple(int(size * factor) // scale * scale for size in (width, height))
    if min(first) < scale:
        smallest = next(n for n in range(scale, 1 << 16, scale) if int(n * factor) >= scale)
        raise ValueError(
            f"multiscale samples first at {factor} of the size, rounded down to a multiple of {scale}: "
            f"{width}×{height} gives {first[0]}×{first[1]}; make the video at least {smallest} pixels wide and high"
        )
    w, h = first
    return (w, h), (2 * w, 2 * h)


def resolve_multiscale(settings: Settings, defaults: ReleaseDefaults) -> MultiscaleSettings:
    """The two passes of the release's multi-scale pipeline with `settings` over each (see the module
    docstring), at the sizes `multiscale_sizes` gives. A ValueError for a release without the pipeline or
    a field that belongs to one pass."""
    if not defaults.multiscale:
        raise ValueError(
            f"LTX-Video {defaults.release} {defaults.size} has no multi-scale pipeline (the releases with one: "
            f"{multiscale_releases()}); generate it in one pass"
        )
    one_pass = [name for name in ONE_PASS_FIELDS if getattr(settings, name) is not None]
    if one_pass:
        raise ValueError(
            f"Settings.{' and '.join(one_pass)} set with multiscale: each multi-scale pass runs its own steps "
            "and noise levels (the release's); leave them out, or generate in one pass"
        )
    first_size, second_size = multiscale_sizes(settings.width, settings.height, defaults.downscale_factor)
    return MultiscaleSettings(
        first=resolve_settings(settings, defaults.pass_defaults("first")),
        second=resolve_settings(settings, defaults.pass_defaults("second")),
        first_size=first_size,
        second_size=second_size,
        size=(settings.width, settings.height),
        downscale_factor=defaults.downscale_factor,
        spatial_upscaler=defaults.spatial_upscaler,
    )


def undecided(release: Release) -> str:
    """ "" when `release` is known well enough for a multi-scale generation; else the releases its files
    could not be told from (`Release.alike`: alike in one pass) whose multi-scale settings differ, and how,
    in words: e.g. 13B 0.9.7 and 0.9.8 distilled files, whose second passes and upsamplers differ."""
    theirs = {name: defaults_for(name, release.size) for name in release.alike}
    differ = {
        words
        for other in theirs.values()
        for field, words in MULTISCALE_FIELDS.items()
        if getattr(other, field) != getattr(release.defaults, field)
    }
    if not differ:
        return ""
    names = " or ".join([release.name, *release.alike])
    verb = "differ" if len(differ) > 1 else "differs"
    return f"its files can be LTX-Video {names} {release.size}, whose multi-scale {' and '.join(sorted(differ))} {verb}"


def decode_input(
    latents: torch.Tensor, noise_scale: float, compression: float, generator: torch.Generator
) -> torch.Tensor:
    """Normalised latents (B, C, F, H, W) mixed with decode noise, `(1 − s)·z + s·noise`, then tone-mapped
    (`tone_map_latents`), as the official pipeline orders them before decoding. The noise is the next draw
    of `generator`, the same numbers `VideoVAE.decode` draws for its own mix, so decoding the result with
    noise_scale 0 and that generator equals decoding with the noise and a tone map in between."""
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents)
    return tone_map_latents((1 - noise_scale) * latents + noise_scale * noise, compression)


def resize_frames(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Frames (B, T, H, W, 3) → (B, T, height, width, 3), bilinear without antialiasing, as the official
    pipeline resizes conditioning media to a pass's size and its multi-scale output to the size asked for
    (`F.interpolate(…, mode="bilinear", align_corners=False)`). Frames of that size come back unchanged."""
    b, t, h, w, c = frames.shape
    if (h, w) == (height, width):
        return frames
    x = frames.reshape(b * t, h, w, c).permute(0, 3, 1, 2)  # (B·T, 3, H, W)
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(b, t, height, width, c).contiguous()
