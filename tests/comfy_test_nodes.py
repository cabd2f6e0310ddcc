"""Helper nodes that the real-server tests install next to the pack (never shipped with it).

LTXTestSeedTorch seeds torch's global generator on its way through a LATENT, so that core nodes that
draw from it (core's LTX VAE decode mixes in `randn_like` noise) become reproducible in a test.
LTXTestSaveTensor writes whatever reaches it to output/<name>.pt, so a test can compare the numbers.
LTXTestLoadedModels lists the models ComfyUI's memory manager holds loaded.
LTXTestMemoryReport reports this process's resident memory, what the pack's block streaming holds,
and for each of the pack's models the size core's patcher reports next to the bytes the module holds
(counted here, independently of the pack) and core's own state-dict measure, and which of the pack's
file lists folder_paths holds in its cache; it can also switch on
streaming to the CPU, so that low_vram mode streams on a machine without a GPU.
"""

import gc
import os
import sys

import folder_paths
import torch


class LTXTestSeedTorch:
    CATEGORY = "testing"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "seed"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    def seed(self, samples, seed):
        torch.manual_seed(seed)
        return (samples,)


class LTXTestSaveTensor:
    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",), "name": ("STRING", {"default": "tensor"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True  # any type: IMAGE, LATENT, CONDITIONING

    def save(self, value, name):
        torch.save(value, os.path.join(folder_paths.get_output_directory(), f"{name}.pt"))
        return {"ui": {"tensors": [name]}}


class LTXTestLoadedModels:
    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    @classmethod
    def IS_CHANGED(cls):
        return float("nan")  # never cached: the answer changes between prompts

    def report(self):
        import comfy.model_management as mm

        return {"ui": {"models": [type(loaded.model.model).__name__ for loaded in mm.current_loaded_models]}}


def _pack_memory_module():
    """The pack's ltx_core.memory, as ComfyUI imported it (under the pack folder's path)."""
    (module,) = {m for name, m in sys.modules.items() if name.endswith(".ltx_core.memory")}
    return module


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _held_bytes(module) -> int:
    """Bytes of every parameter and buffer (persistent or not), each tensor once."""
    tensors = {id(t): t for _, t in module.named_parameters()}
    tensors.update({id(t): t for _, t in module.named_buffers()})
    return sum(t.numel() * t.element_size() for t in tensors.values())


class LTXTestMemoryReport:
    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"stream_on_cpu": ("BOOLEAN", {"default": False})}, "optional": {"after": ("*",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True  # `after` takes anything: it only orders this node after another

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # never cached: the answer changes between prompts

    def report(self, stream_on_cpu, after=None):
        import comfy.model_management as mm

        memory = _pack_memory_module()
        if stream_on_cpu:
            memory.stream_on_cpu(True)
        gc.collect()
        models = [
            {
                "name": type(loaded.model.model).__name__,
                "patcher_size": loaded.model.model_size(),
                "held_bytes": _held_bytes(loaded.model.model.held),
                "core_module_size": mm.module_size(loaded.model.model),
                "loaded_size": loaded.model.loaded_size(),
            }
            for loaded in mm.current_loaded_models
            if type(loaded.model.model).__name__.startswith("LTXPack")
        ]
        lists = sorted(k for k in folder_paths.filename_list_cache if k.startswith("ltx_pack_"))
        report = {"rss": _rss_bytes(), "streaming": memory.streaming_report(), "models": models, "cached_lists": lists}
        return {"ui": {"memory": [report]}}


NODE_CLASS_MAPPINGS = {
    "LTXTestSeedTorch": LTXTestSeedTorch,
    "LTXTestSaveTensor": LTXTestSaveTensor,
    "LTXTestLoadedModels": LTXTestLoadedModels,
    "LTXTestMemoryReport": LTXTestMemoryReport,
}
