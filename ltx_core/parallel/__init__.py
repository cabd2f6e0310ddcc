"""One video on several processes (one per GPU) over `torch.distributed`: CFG-parallel and Ulysses
sequence-parallel sampling (denoise.py, ulysses.py) and the VAE decode split along time (vae.py),
each equal to the one-process result within float rounding. layout.py says how ranks are arranged,
launch.py starts a process under torchrun."""

from .denoise import parallel_forward
from .layout import Parallel, choose_layout, init_parallel, split_sizes
from .ulysses import UlyssesOps
from .vae import decode_split

__all__ = [
    "Parallel",
    "UlyssesOps",
    "choose_layout",
    "decode_split",
    "init_parallel",
    "parallel_forward",
    "split_sizes",
]
