"""ComfyUI nodes over ltx_core. Imported only inside ComfyUI."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

# Every node id starts with this prefix: ComfyUI silently drops pack nodes whose ids equal its own.
NODE_ID_PREFIX = "LTXPack"

NODE_CLASSES: list[type[io.ComfyNode]] = []


class LTXPackExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_CLASSES)


async def comfy_entrypoint() -> LTXPackExtension:
    return LTXPackExtension()
