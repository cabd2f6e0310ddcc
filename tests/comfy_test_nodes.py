"""Helper nodes that the real-server tests install next to the pack (never shipped with it).

LTXTestSeedTorch seeds torch's global generator on its way through a LATENT, so that core nodes that
draw from it (core's LTX VAE decode mixes in `randn_like` noise) become reproducible in a test.
LTXTestSaveTensor writes whatever reaches it to output/<name>.pt, so a test can compare the numbers.
LTXTestLoadedModels lists the models ComfyUI's memory manager holds loaded.
"""

import os

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


NODE_CLASS_MAPPINGS = {
    "LTXTestSeedTorch": LTXTestSeedTorch,
    "LTXTestSaveTensor": LTXTestSaveTensor,
    "LTXTestLoadedModels": LTXTestLoadedModels,
}
