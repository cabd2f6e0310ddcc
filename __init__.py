"""LTX-Video nodes for ComfyUI.

Inside ComfyUI (recognised by its `folder_paths` module, which ComfyUI imports before loading custom
nodes) this module exports NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS, ComfyUI's V1
registration. Imported anywhere else (tests, the command-line generator) it imports nothing.
"""

import sys

if "folder_paths" in sys.modules:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F401

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
