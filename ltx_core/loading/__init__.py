"""Checkpoint reading, key renaming and module materialisation."""

from .materialize import CheckpointMismatchError, materialize

__all__ = ["CheckpointMismatchError", "materialize"]
