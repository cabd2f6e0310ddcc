"""The one error type for files that cannot be loaded."""

from __future__ import annotations

from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with what was found and what was expected."""

    def __init__(self, path: str | Path, found: str, expected: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path.name}: {found}; expected {expected}. (file: {self.path})")
