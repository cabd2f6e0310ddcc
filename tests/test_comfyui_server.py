"""Opt-in: the shared API workflows queued on a real ComfyUI server with the pack installed.

Set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to the interpreter that runs it, if not
this one). The server starts with `--cpu` and `--base-directory` pointing at a temporary folder that
holds the pack (linked into custom_nodes/), tiny model files and the input images, so the checkout
is not touched.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ltx_core.media import read_video
from test_workflows import NAMES, SMALL, load, shrink
from tiny_comfy import write_comfy_models, write_input_images

COMFYUI = os.environ.get("COMFYUI_PATH")
REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout to run")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
        return json.loads(response.read() or b"{}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ltx-pack").symlink_to(REPO, target_is_directory=True)
    write_comfy_models(base / "models")
    write_input_images(base / "input")
    port = _free_port()
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    command = [
        python,
        "main.py",
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-directory",
        str(base),
        "--disable-api-nodes",
        "--preview-method",
        "latent2rgb",
    ]
    log = (base / "server.log").open("w")
    process = subprocess.Popen(command, cwd=COMFYUI, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited: {(base / 'server.log').read_text()[-3000:]}")
            try:
                _request(f"{url}/object_info/LTXPackSampler")
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"ComfyUI did not start: {(base / 'server.log').read_text()[-3000:]}")
        yield url, base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_nodes_are_registered(server):
    url, _ = server
    info = _request(f"{url}/object_info")
    ours = {k: v for k, v in info.items() if k.startswith("LTXPack")}
    assert len(ours) == 9 and all(v["python_module"] == "custom_nodes.ltx-pack" for v in ours.values())
    assert "EmptyLTXVLatentVideo" in info  # core's LTX nodes are still there


@pytest.mark.parametrize("name", NAMES)
def test_workflow_runs_on_the_server(server, name):
    url, base = server
    ui, api = load(name)
    queued = _request(f"{url}/prompt", {"prompt": shrink(api), "extra_data": {"extra_pnginfo": {"workflow": ui}}})
    assert queued["node_errors"] == {}, queued
    prompt_id = queued["prompt_id"]
    for _ in range(600):
        history = _request(f"{url}/history/{prompt_id}").get(prompt_id)
        if history and history["status"]["completed"] or history and history["status"]["status_str"] == "error":
            break
        time.sleep(0.5)
    assert history and history["status"]["status_str"] == "success", json.dumps(history, indent=1)[-4000:]
    (saved,) = [out for out in history["outputs"].values() if "images" in out]
    (entry,) = saved["images"]
    frames, _ = read_video(base / "output" / entry["subfolder"] / entry["filename"])
    assert frames.shape == (SMALL["length"], SMALL["height"], SMALL["width"], 3)
    _request(f"{url}/free", {"unload_models": True, "free_memory": True})
