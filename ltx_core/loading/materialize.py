"""Adopt a state dict into a module built on the `meta` device, without a second copy of the weights."""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence

import torch
from torch import nn

_LISTED_KEYS = 5  # how many offending keys an error message names

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
FP8_COMPUTE_DTYPE = torch.bfloat16

# A storage dtype for every tensor, or a rule (key, tensor) → dtype; None keeps what is stored.
DtypeChoice = torch.dtype | Callable[[str, torch.Tensor], torch.dtype] | None


def linear_weights_in(dtype: torch.dtype) -> Callable[[str, torch.Tensor], torch.dtype]:
    """fp8 storage: 2-D `.weight` tensors (the linear layers) in `dtype`, everything else in bf16,
    which is also the compute dtype."""

    def rule(key: str, tensor: torch.Tensor) -> torch.dtype:
        return dtype if tensor.ndim == 2 and key.endswith(".weight") else FP8_COMPUTE_DTYPE

    return rule


def storage_dtype(choice: DtypeChoice, key: str, tensor: torch.Tensor) -> torch.dtype:
    """The dtype `tensor` is kept in: floats follow `choice` (fp8 alone means `linear_weights_in`)."""
    if choice is None or not tensor.is_floating_point():
        return tensor.dtype
    if choice in FP8_DTYPES:
        choice = linear_weights_in(choice)
    return choice(key, tensor) if callable(choice) else choice


def cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """tensor.to(dtype), saturating at the fp8 range instead of overflowing to NaN."""
    if dtype in FP8_DTYPES and tensor.dtype != dtype:
        limit = torch.finfo(dtype).max
        tensor = tensor.clamp(-limit, limit)
    return tensor.to(dtype)


class CheckpointMismatchError(ValueError):
    """The tensors of a checkpoint do not fit the module (`what`) they are loaded into; `problems`
    names the keys, one phrase per kind of mismatch."""

    def __init__(self, what: str, problems: Sequence[str]) -> None:
        self.what = what
        self.problems = list(problems)
        super().__init__(
            f"The weights do not fit the {what}: {'; '.join(self.problems)}. "
            "The file is probably a different model or release than its configuration says."
        )

    @property
    def found(self) -> str:
        """The mismatch as the `found` part of a CheckpointError about the file."""
        return f"its weights do not fit the {self.what} it was read as ({'; '.join(self.problems)})"


def _describe(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED_KEYS])
    return shown + (f", … ({len(keys)} in all)" if len(keys) > _LISTED_KEYS else "")


def mismatches(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> list[str]:
    """What keeps tensors of shapes `found` from fitting a module whose state dict has shapes `expected`:
    one phrase each for the missing, the unexpected and the mis-shaped keys (empty if they fit)."""
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    wrong_shape = [
        f"{k} {tuple(found[k])} (expected {tuple(v)})"
        for k, v in expected.items()
        if k in found and tuple(found[k]) != tuple(v)
    ]
    problems = []
    if missing:
        problems.append(f"missing {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected {_describe(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shape: {_describe(wrong_shape)}")
    return problems


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointMismatchError naming the missing, unexpected and mis-shaped keys."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = mismatches(expected, {k: tuple(v.shape) for k, v in state_dict.items()})
    if problems:
        raise CheckpointMismatchError(what, problems)


def materialize(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    dtype: DtypeChoice = None,
    device: torch.device | str | None = None,
    what: str = "model",
    consume: bool = False,
) -> nn.Module:
    """Load `state_dict` into `model` (built under `torch.device("meta")`) by assignment.

    Floating-point tensors are cast to `dtype` (a dtype, fp8 for fp8 linear weights with bf16 for
    the rest, or a rule per key) and moved to `device` one at a time. With
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
        converted[key] = cast(tensor.to(device), storage_dtype(dtype, key, tensor))
    model.load_state_dict(converted, strict=True, assign=True)
    return model.eval().requires_grad_(False)
