"""Guidance settings in one frozen dataclass: classifier-free guidance (CFG), spatio-temporal guidance
(STG) with its rescaling, CFG-zero* and values per noise-level range, as the official `LTXVideoPipeline`
(ltx_video 0.1.2) defines them. Field names are the official config keys, so a release's config builds
one directly (`Guidance.from_config`).

One step's model call runs a batch of up to three branches, in the official order: the negative prompt
("uncond", with CFG), the positive prompt ("cond"), and the positive prompt through a weakened model
("perturbed", with STG: listed blocks' self-attention or whole block replaced, see
`model.transformer.SkipLayers`). Their velocities combine as

    v = v_u + g·(v_c − v_u)                  CFG (v_u ← α·v_u first with CFG-zero*, α = ⟨v_c, v_u⟩ / ‖v_u‖²)
    v ← v + s·(v_c − v_p)                    STG
    v ← v·(r·std(v_c) / std(v) + 1 − r)      STG's rescaling, std per sample over all tokens

Deliberate differences from the official code, each where it is broken or silent: CFG runs for any
g ≠ 1 (official: g > 1; ComfyUI and diffusers' guiders run it for g < 1 too); with several videos in a
batch each is perturbed and CFG-zero*-scaled on its own (the official skip mask picks samples
interleaved although the batch is laid out branch by branch, and its CFG-zero* factor does not
broadcast over a batch); STG with no block to perturb is refused instead of adding only the rescaling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import pairwise
from typing import Any

import torch

# The official `stg_mode` names, with the short names its command line also accepts. "residual" (the
# official Residual strategy) acts only on attention layers that add their own residual, which
# LTX-Video's never do: it perturbs nothing, so the perturbed branch equals the conditional one.
STG_MODES = ("attention_values", "attention_skip", "residual", "transformer_block")
STG_MODE_ALIASES = {
    "stg_av": "attention_values",
    "stg_as": "attention_skip",
    "stg_r": "residual",
    "stg_t": "transformer_block",
}
PERTURBING_MODES = ("attention_values", "attention_skip", "transformer_block")

# Which prompt each branch of the batch reads.
BRANCH_PROMPTS = {"uncond": "negative", "cond": "positive", "perturbed": "positive"}

# per-range scales: (lowest, highest, what the error says they must be)
SCALE_BOUNDS = {
    "guidance_scale": (-math.inf, math.inf, "a finite number"),
    "stg_scale": (0.0, math.inf, "a finite number ≥ 0 (0 turns STG off)"),
    "rescaling_scale": (0.0, 1.0, "in [0, 1] (1 and 0 mean no rescaling)"),
}

CFG_STAR_EPS = 1e-8  # official: added to ‖v_u‖² in the CFG-zero* factor

Scale = float | tuple[float, ...]
Blocks = tuple[int, ...] | tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class StepGuidance:
    """The guidance of one step, resolved from a `Guidance` at the step's noise level.

    skip_blocks: the blocks the perturbed branch skips; empty when no perturbed branch runs (no STG,
    or the "residual" mode, whose perturbed prediction is the conditional one)."""

    guidance_scale: float
    stg_scale: float
    rescaling_scale: float
    skip_blocks: tuple[int, ...]
    stg_mode: str
    cfg_star_rescale: bool = False
    guidance_rescale: float = 0.0

    @property
    def cfg(self) -> bool:
        return self.guidance_scale != 1.0

    @property
    def stg(self) -> bool:
        return self.stg_scale > 0

    @property
    def branches(self) -> tuple[str, ...]:
        """The batch's parts, each B samples, in the official order."""
        return ("uncond",) * self.cfg + ("cond",) + ("perturbed",) * (self.stg and bool(self.skip_blocks))

    def combine(self, predictions: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The guided velocity (B, N, C) from each branch's velocity (B, N, C), float32 (module docstring)."""
        cond = predictions["cond"]
        velocity = cond
        if self.cfg:
            uncond = predictions["uncond"]
            if self.cfg_star_rescale:
                uncond = _cfg_star(cond, uncond)
            velocity = uncond + self.guidance_scale * (cond - uncond)
        if self.stg:  # without a perturbed branch ("residual" mode) the perturbed prediction is cond itself
            perturbed = predictions["perturbed"] if "perturbed" in self.branches else cond
            velocity = velocity + self.stg_scale * (cond - perturbed)
            if self.rescaling_scale != 1.0:  # official: 1 switches the rescaling off (and 0 does nothing)
                velocity = std_rescale(velocity, cond, self.rescaling_scale)
        if self.cfg and self.guidance_rescale > 0:
            velocity = std_rescale(velocity, cond, self.guidance_rescale)
        return velocity


def std_rescale(velocity: torch.Tensor, reference: torch.Tensor, amount: float) -> torch.Tensor:
    """velocity (B, ...) scaled by amount·std(reference)/std(velocity) + 1 − amount, the standard deviations
    (unbiased) per sample over all other dimensions: STG's rescaling (official) and guidance rescale (Lin et
    al. 2023, §3.4, diffusers' `guidance_rescale`) are this same formula."""
    dims = list(range(1, velocity.ndim))
    factor = reference.std(dim=dims, keepdim=True) / velocity.std(dim=dims, keepdim=True)
    return velocity * (amount * factor + (1 - amount))


def _cfg_star(cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """CFG-zero* (Fan et al. 2025): uncond (B, ...) scaled per sample by its projection factor onto cond."""
    dims = list(range(1, cond.ndim))
    alpha = (cond * uncond).sum(dim=dims, keepdim=True) / ((uncond**2).sum(dim=dims, keepdim=True) + CFG_STAR_EPS)
    return alpha * uncond


@dataclass(frozen=True)
class Guidance:
    """How `sample()` guides each step; the defaults are plain CFG at 3, no STG.

    guidance_scale: CFG scale g (1 = no negative branch, one forward per step).
    stg_scale: STG scale s (0 = off). skip_block_list: the blocks the perturbed branch skips
    (official configs: [19] for 2B, per range for 13B dev). stg_mode: one of STG_MODES (or its short name).
    rescaling_scale: r in [0, 1], STG's pull of the guided velocity's std toward the conditional one's;
    as in the official code, 1 means no rescaling (so does 0), 0.7 is the 2B configs' value.
    guidance_timesteps: noise levels in [0, 1] from high to low, starting ranges (official 13B dev:
    1.0, 0.996, …). With them, guidance_scale, stg_scale, rescaling_scale may be one value per range and
    skip_block_list one list per range; a step at σ takes the first range whose start is ≤ σ (the last
    range if none).
    cfg_star_rescale: CFG-zero*: scale the negative prediction by its projection onto the positive one.
    guidance_rescale: diffusers' guidance rescale (same formula as r, applied after CFG whenever > 0).
    """

    guidance_scale: Scale = 3.0
    stg_scale: Scale = 0.0
    rescaling_scale: Scale = 0.7
    skip_block_list: Blocks = ()
    stg_mode: str = "attention_values"
    guidance_timesteps: tuple[float, ...] | None = None
    cfg_star_rescale: bool = False
    guidance_rescale: float = 0.0

    def __post_init__(self) -> None:
        ranges = self._check_timesteps()
        for name, (low, high, what) in SCALE_BOUNDS.items():
            value = self._as_value_or_tuple(name, ranges)
            if not all(math.isfinite(v) and low <= v <= high for v in _values(value)):
                raise ValueError(f"{name} must be {what}, got {value}")
        self._check_blocks(ranges)
        mode = STG_MODE_ALIASES.get(str(self.stg_mode).lower(), str(self.stg_mode).lower())
        if mode not in STG_MODES:
            raise ValueError(f"unknown stg_mode {self.stg_mode!r}; choose one of {', '.join(STG_MODES)}")
        object.__setattr__(self, "stg_mode", mode)
        if not isinstance(self.cfg_star_rescale, bool):
            raise ValueError(f"cfg_star_rescale must be true or false, got {self.cfg_star_rescale!r}")
        if not (isinstance(self.guidance_rescale, (int, float)) and 0 <= self.guidance_rescale <= 1):
            raise ValueError(f"guidance_rescale must be in [0, 1], got {self.guidance_rescale!r}")
        for index in range(ranges):
            stg_scale = _values(self.stg_scale)[index if isinstance(self.stg_scale, tuple) else 0]
            if stg_scale > 0 and not self._blocks_at(index):
                where = "" if ranges == 1 else f" in the range from σ = {self.guidance_timesteps[index]}"
                raise ValueError(
                    f"stg_scale {stg_scale:g}{where} has no block to perturb: set skip_block_list (the official "
                    "configs skip block 19 of a 2B model, 28 of a 13B dev model), or stg_scale 0"
                )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Guidance:
        """From a mapping with the official config keys (a release's settings, a pipeline config's
        `first_pass`, …): the keys named like this class's fields are used, the others ignored, and a
        None value means the default."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names and v is not None})

    @property
    def uses_negative(self) -> bool:
        """Whether some range runs CFG, which needs a negative prompt."""
        return any(g != 1.0 for g in _values(self.guidance_scale))

    def max_branches(self, sigmas: torch.Tensor) -> int:
        """The most branches (1 to 3) a step along `sigmas` runs: the model's batch is this × the videos'."""
        return max(len(step.branches) for step in self.per_step(sigmas))

    def per_step(self, sigmas: torch.Tensor) -> list[StepGuidance]:
        """The guidance of each step whose noise level is in `sigmas` (the steps' σ, without the final 0)."""
        levels = sigmas.detach().to("cpu", torch.float32)
        if self.guidance_timesteps is None:
            return [self._at(0)] * levels.numel()
        # float32 like the official comparison of its float list with the float32 timesteps
        starts = torch.tensor(self.guidance_timesteps, dtype=torch.float32)
        out = []
        for sigma in levels:
            started = (starts <= sigma).nonzero()
            out.append(self._at(int(started[0]) if len(started) else len(starts) - 1))
        return out

    def _at(self, index: int) -> StepGuidance:
        def pick(value: Scale) -> float:
            return float(value[index] if isinstance(value, tuple) else value)

        stg_scale = pick(self.stg_scale)
        perturbs = stg_scale > 0 and self.stg_mode in PERTURBING_MODES
        return StepGuidance(
            guidance_scale=pick(self.guidance_scale),
            stg_scale=stg_scale,
            rescaling_scale=pick(self.rescaling_scale),
            skip_blocks=self._blocks_at(index) if perturbs else (),
            stg_mode=self.stg_mode,
            cfg_star_rescale=self.cfg_star_rescale,
            guidance_rescale=float(self.guidance_rescale),
        )

    def _blocks_at(self, index: int) -> tuple[int, ...]:
        blocks = self.skip_block_list
        return blocks[index] if blocks and isinstance(blocks[0], tuple) else blocks  # type: ignore[return-value]

    def _check_timesteps(self) -> int:
        """Normalise guidance_timesteps to a tuple and return the number of ranges."""
        starts = self.guidance_timesteps
        if starts is None:
            return 1
        starts = tuple(float(t) for t in _sequence("guidance_timesteps", starts))
        if not starts or any(not 0 <= t <= 1 for t in starts) or any(a <= b for a, b in pairwise(starts)):
            raise ValueError(
                f"guidance_timesteps must be noise levels in [0, 1] from high to low (official 13B dev: "
                f"1.0, 0.996, 0.9933, …), got {list(starts)}"
            )
        object.__setattr__(self, "guidance_timesteps", starts)
        return len(starts)

    def _as_value_or_tuple(self, name: str, ranges: int) -> Scale:
        value = getattr(self, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            object.__setattr__(self, name, float(value))
            return float(value)
        values = _sequence(name, value)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{name} must be a number or a list of numbers, got {value!r}")
        values = tuple(float(v) for v in values)
        self._check_per_range(name, len(values), ranges)
        object.__setattr__(self, name, values)
        return values

    def _check_blocks(self, ranges: int) -> None:
        blocks = () if self.skip_block_list is None else _sequence("skip_block_list", self.skip_block_list)
        nested = [isinstance(b, Sequence) for b in blocks]
        if any(nested) and not all(nested):
            raise ValueError(f"skip_block_list must be block indices or one list of them per range, got {blocks}")
        if any(nested):
            normalised: Blocks = tuple(tuple(_block(i) for i in b) for b in blocks)
            self._check_per_range("skip_block_list", len(normalised), ranges)
        else:
            normalised = tuple(_block(i) for i in blocks)
        object.__setattr__(self, "skip_block_list", normalised)

    def _check_per_range(self, name: str, count: int, ranges: int) -> None:
        if self.guidance_timesteps is None:
            raise ValueError(f"{name} has one value per range ({count}); give guidance_timesteps to start the ranges")
        if count != ranges:
            raise ValueError(f"{name} has {count} values for {ranges} guidance_timesteps ranges: give one per range")


def _values(value: Scale) -> tuple[float, ...]:
    return value if isinstance(value, tuple) else (value,)


def _sequence(name: str, value: object) -> Sequence:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        what = "a list" if name in ("guidance_timesteps", "skip_block_list") else "a number or a list"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def _block(index: object) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"skip_block_list holds block indices (0, 1, …), got {index!r}")
    return index
