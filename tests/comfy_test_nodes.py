"""Helper nodes that the real-server tests install next to the pack (never shipped with it).

LTXTestSeedTorch seeds torch's global generator on its way through a LATENT, so that core nodes that
draw from it (core's LTX VAE decode mixes in `randn_like` noise) become reproducible in a test.
LTXTestSaveTensor writes whatever reaches it to output/<name>.pt, so a test can compare the numbers.
LTXTestPatchedWeights writes a core MODEL's diffusion-model weights with its patches (LoRAs) applied by
core, to output/<name>.pt.
LTXTestLoadedModels lists the models ComfyUI's memory manager holds loaded.
LTXTestMemoryReport reports this process's resident memory, what the pack's block streaming holds,
and for each of the pack's models the size core's patcher reports next to the bytes the module holds
(counted here, independently of the pack) and core's own state-dict measure, and which of the pack's
file lists folder_paths holds in its cache; it can also switch on
streaming to the CPU, so that low_vram mode streams on a machine without a GPU.
LTXTestDeviceMemory reports what a benchmark reads after each prompt (benchmarks/comfyui_memory.py):
PyTorch's GPU memory in this process (allocated, reserved, and their peaks since the last report),
the device's free memory, resident host memory, the models core holds loaded, what block streaming
holds, and when it started, so that the prompt's time before it can be told.
"""

import gc
import os
import sys
import time

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


def _proc_status(*fields: str) -> dict[str, int]:
    """Fields of /proc/self/status given in kB (VmRSS, VmHWM, RssFile, ...), in bytes."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in fields:
                found[name] = int(value.split()[0]) * 1024
    return found


def _cuda_memory() -> dict | None:
    """PyTorch's view of this process's GPU memory; the peaks are reset, so that the next report's
    peaks are those of the prompt in between. None without CUDA; a statistic that the allocator in
    use does not keep is None."""
    if not torch.cuda.is_available():
        return None

    def read(statistic):
        try:
            return statistic()
        except RuntimeError:
            return None

    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    report = {
        "allocated": read(torch.cuda.memory_allocated),
        "reserved": read(torch.cuda.memory_reserved),
        "peak_allocated": read(torch.cuda.max_memory_allocated),
        "peak_reserved": read(torch.cuda.max_memory_reserved),
        "device_free": free,
        "device_total": total,
        "device": torch.cuda.get_device_name(),
        "allocator": torch.cuda.get_allocator_backend(),  # ComfyUI picks cudaMallocAsync where it can
    }
    read(torch.cuda.reset_peak_memory_stats)
    return report


class LTXTestDeviceMemory:
    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {"after": ("*",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True  # `after` takes anything: it only orders this node after another

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # never cached: the answer changes between prompts

    def report(self, after=None):
        import comfy.model_management as mm

        started = time.time()
        gc.collect()  # what is unreachable is not held (ComfyUI collects between prompts too)
        host = _proc_status("VmRSS", "VmHWM", "RssFile")
        report = {
            "started": started,
            "torch": torch.__version__,
            "rss": host["VmRSS"],
            "rss_peak": host["VmHWM"],
            "rss_file": host.get("RssFile", 0),  # mapped files (GGUF weights stay mapped)
            "cuda": _cuda_memory(),
            "streaming": _pack_memory_module().streaming_report(),
            "models": [
                {"name": type(loaded.model.model).__name__, "loaded_size": loaded.model.loaded_size()}
                for loaded in mm.current_loaded_models
                if loaded.model is not None
            ],
        }
        return {"ui": {"memory": [report]}}


class LTXTestPatchedWeights:
    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "name": ("STRING", {"default": "weights"})}}

    def save(self, model, name):
        import comfy.model_management as mm

        mm.load_models_gpu([model], force_patch_weights=True)  # core writes its patches (LoRAs) into the weights
        weights = {k: v.detach().cpu().clone() for k, v in model.model.diffusion_model.state_dict().items()}
        torch.save(weights, os.path.join(folder_paths.get_output_directory(), f"{name}.pt"))
        return {"ui": {"tensors": [name]}}


NODE_CLASS_MAPPINGS = {
    "LTXTestSeedTorch": LTXTestSeedTorch,
    "LTXTestPatchedWeights": LTXTestPatchedWeights,
    "LTXTestSaveTensor": LTXTestSaveTensor,
    "LTXTestLoadedModels": LTXTestLoadedModels,
    "LTXTestMemoryReport": LTXTestMemoryReport,
    "LTXTestDeviceMemory": LTXTestDeviceMemory,
}
