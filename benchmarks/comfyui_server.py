"""A real ComfyUI server for benchmarks: on a GPU machine without ComfyUI installed, from ComfyUI's source
tarball, or on the CPU with an installed checkout (to check a benchmark with tiny models).

- `unpack_comfyui(tarball, into)`: the source tarball unpacked as `into/ComfyUI` (once).
- `start_server(comfyui, base, python, cpu)`: a server started from that folder with `python` over a base
  folder of its own (models/, custom_nodes/ with the pack and the test nodes, input/, output/, its
  database), with an empty front end (`--front-end-root`: the frontend package is not needed to queue
  graphs) and no API nodes, spoken to with the tests' client (tests/comfy_server.py: POST /prompt, the
  websocket's events, history).
- `text_to_video(...)`: the pack's text-to-video workflow (workflows/api/text_to_video.json) with chosen
  files, memory mode, size, steps and seed.
- `gpu_used_bytes()`, `gpu_name()`: what nvidia-smi says (None without one).

Where the Python that runs it lacks some of ComfyUI's requirements (its requirements.txt), install them
with `python3 -m pip install --target DIR` and put DIR on PYTHONPATH: the server inherits it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from comfy_server import Server, prepare_base  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "api" / "text_to_video.json"
FROM_MODEL = "(from the model file)"  # the model loader's vae_name for a checkpoint's own VAE (nodes/loaders.py)


def unpack_comfyui(tarball: Path, into: Path) -> Path:
    """`into/ComfyUI` from the source tarball (which holds `ComfyUI/`); kept if already there."""
    comfyui = into / "ComfyUI"
    if not (comfyui / "main.py").is_file():
        into.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as archive:
            archive.extractall(into, filter="data")
    if not (comfyui / "main.py").is_file():
        raise FileNotFoundError(f"{tarball} did not unpack to {comfyui}/main.py; give the ComfyUI source tarball")
    return comfyui


def start_server(comfyui: Path, base: Path, python: str = sys.executable, cpu: bool = False) -> Server:
    """The tests' ComfyUI server (tests/comfy_server.py) over `base` (prepared here: the pack and the test
    nodes in custom_nodes/), started from `comfyui` by `python`, on the GPU unless `cpu`, with an empty
    front end."""
    if not (base / "custom_nodes").is_dir():
        prepare_base(base)
    front_end = base / "front_end"
    front_end.mkdir(exist_ok=True)
    return Server(base, ("--front-end-root", str(front_end)), comfyui=comfyui, python=python, cpu=cpu)


def text_to_video(
    model: str,
    vae: str,
    text_encoder: str,
    memory: str,
    width: int,
    height: int,
    frames: int,
    steps: int,
    seed: int,
) -> dict:
    """The pack's text-to-video API workflow (loaders, text encode, empty latent, sampler, decode, save
    mp4) with these files (names under their models/ folders), memory mode (both loaders), size and steps."""
    prompt = json.loads(WORKFLOW.read_text())
    prompt["1"]["inputs"].update(model_name=model, vae_name=vae, memory=memory)
    prompt["2"]["inputs"].update(text_encoder_name=text_encoder, memory=memory)
    prompt["4"]["inputs"].update(width=width, height=height, length=frames)
    prompt["10"]["inputs"].update(steps=steps, seed=seed)
    prompt["12"]["inputs"]["filename_prefix"] = "benchmark/text_to_video"
    return prompt


def _nvidia_smi(query: str) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.splitlines()[0].strip() if done.returncode == 0 and done.stdout.strip() else None


def gpu_used_bytes() -> int | None:
    """Memory in use on the first GPU, all processes and the driver's own included (nvidia-smi)."""
    used = _nvidia_smi("memory.used")  # MiB
    return int(used) * 2**20 if used is not None else None


def gpu_name() -> str | None:
    return _nvidia_smi("name,driver_version")
