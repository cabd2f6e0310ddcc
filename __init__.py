"""LTX-Video nodes for ComfyUI.

Inside ComfyUI this module exposes `comfy_entrypoint()`, which registers the pack's nodes. Imported
anywhere else (tests, the command-line generator) it imports nothing from ComfyUI.
"""

try:
    import comfy_api.latest  # noqa: F401  (present only inside ComfyUI)
except ImportError:
    pass
else:
    from .nodes import comfy_entrypoint  # noqa: F401
