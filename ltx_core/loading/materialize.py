"""Adopt a state dict into a module built on the `meta` device, without a second copy of the weights."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import torch
from torch import nn

_LISTED_KEYS = 5  # how many offending keys an error message names


class CheckpointMismatchError(ValueError):
    """The tensors of a checkpoint do not fit the module they are loaded into."""


def _describe(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED_KEYS])
    return shown + (f", … ({len(keys)} in all)" if len(keys) > _LISTED_KEYS else "")


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointMismatchError naming the missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    wrong_shape = [
        f"{k} {tuple(state_dict[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected {_describe(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shape: {_describe(wrong_shape)}")
    if problems:
        raise CheckpointMismatchError(
            f"The weights do not fit the {what}: " + "; ".join(problems) + ". "
            "The file is probably a different model or release than its configuration says."
        )


def materialize(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    what: str = "model",
    consume: bool = False,
) -> nn.Module:
    """Load `state_dict` into `model` (built under `torch.device("meta")`) by assignment.

    Floating-point tensors are cast to `dtype` and moved to `device` one at a time. With
    `consume=True` (and a mutable mapping) each source tensor is dropped as soon as it is
    converted, so a cast never holds two full copies of the weights.
    Returns the model in eval mode with gradients off.
    """
    check_state_dict(model, state_dict, what)
    converted = {}
    for key in list(state_dict.keys()):
        tensor = state_dict[key]
        if consume and isinstance(state_dict, MutableMapping):
            del state_dict[key]
        target_dtype = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        converted[key] = tensor.to(device=device, dtype=target_dtype)
    model.load_state_dict(converted, strict=True, assign=True)
    return model.eval().requires_grad_(False)
