"""Loading never holds two full copies of the weights: peak memory while loading a mid-size
float32 file as bf16 stays near the size of the result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from ltx_core import LTXVideoTransformer
from tiny import tiny_transformer_config

REPO = Path(__file__).resolve().parents[1]
MiB = 2**20

# VmHWM (peak resident set of this process image) rather than ru_maxrss, which keeps the
# high-water mark of the forking parent across exec.
MEASURE = """
import sys, torch
from ltx_core.loading.transformer import load_transformer

def status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

torch.ones(1) + 1  # let torch finish its own lazy start-up first
before = status_kib("VmRSS")
model, _ = load_transformer(sys.argv[1], dtype=torch.bfloat16)
print((status_kib("VmHWM") - before) * 1024)
"""


FAILED_LOAD = """
import sys, torch
from ltx_core.loading.transformer import load_transformer

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024

torch.ones(1) + 1
before = rss()
try:
    load_transformer(sys.argv[1])
except ValueError as error:
    kept = error  # as ComfyUI keeps the error to report it
print(rss() - before)
"""


def _mid_size_file(path: Path, drop: str | None = None) -> dict[str, torch.Size]:
    cfg = tiny_transformer_config(heads=32, head_dim=32, layers=4)  # hidden 1024: ~300 MB in float32
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    save_file({k: torch.randn(s, generator=gen) for k, s in shapes.items() if k != drop}, path)
    return shapes


def test_peak_memory_of_loading_is_about_one_copy(tmp_path):
    path = tmp_path / "mid.safetensors"
    shapes = _mid_size_file(path)
    stored = path.stat().st_size
    result = stored // 2  # bf16
    largest = max(s.numel() for s in shapes.values()) * 4

    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], cwd=REPO, capture_output=True, text=True, check=True
    )
    growth = int(out.stdout.strip())
    # one bf16 copy + the float32 tensor being converted + allocator slack; two copies would be ≥ 1.5× stored
    assert growth <= result + largest + 64 * MiB, f"peak grew {growth / MiB:.0f} MiB for a {stored / MiB:.0f} MiB file"


def test_failed_load_leaves_nothing_behind(tmp_path):
    path = tmp_path / "incomplete.safetensors"
    _mid_size_file(path, drop="proj_out.bias")  # every tensor is read before the mismatch shows
    out = subprocess.run(
        [sys.executable, "-c", FAILED_LOAD, str(path)], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert int(out.stdout.strip()) <= 32 * MiB
