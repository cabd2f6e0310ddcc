"""The pack's layout: our own ltx_core is imported, and the pack imports cleanly outside ComfyUI."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

import ltx_core

REPO = Path(__file__).resolve().parents[1]


def _import_pack(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_ltx_core_is_this_repository():
    # PyPI has an unrelated package importable as `ltx_core`; the tests must exercise ours.
    assert Path(ltx_core.__file__).resolve().parent == REPO / "ltx_core"


def test_public_api_names_exist():
    for name in ltx_core.__all__:
        assert hasattr(ltx_core, name), name


def test_pack_imports_outside_comfyui():
    assert "comfy_api" not in sys.modules and "folder_paths" not in sys.modules
    pack = _import_pack("ltx_pack_outside")
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS")
    assert "comfy_api" not in sys.modules and "comfy" not in sys.modules
    # the core inside the pack resolves relatively, to the same files
    core = importlib.import_module("ltx_pack_outside.ltx_core")
    assert Path(core.__file__).resolve().parent == REPO / "ltx_core"


def test_pack_registers_v1_nodes_inside_comfyui(monkeypatch: pytest.MonkeyPatch):
    # ComfyUI imports `folder_paths` before it loads custom nodes; nothing of ComfyUI is imported
    # when the nodes are defined (comfy_bridge imports it lazily, at run time).
    monkeypatch.setitem(sys.modules, "folder_paths", types.ModuleType("folder_paths"))
    pack = _import_pack("ltx_pack_inside")
    assert pack.NODE_CLASS_MAPPINGS and set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert all(node_id.startswith("LTXPack") for node_id in pack.NODE_CLASS_MAPPINGS)
    assert "comfy" not in sys.modules and "comfy_api" not in sys.modules


def test_requirements_txt_matches_pyproject():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines() if line.strip()]
    assert requirements == project["dependencies"]
    assert not any(r.startswith("torch") for r in requirements)  # ComfyUI brings its own torch


def test_generator_runs_as_a_module_and_looks_for_the_default_release(tmp_path):
    import os
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}  # an empty cache, no network
    command = [sys.executable, "-m", "ltx_core.generate", "--prompt", "a red fox", "--output", str(tmp_path / "a.mp4")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--checkpoint Lightricks/LTX-Video/ltx-video-2b-v0.9.1.safetensors: HF_HUB_OFFLINE is set" in result.stderr


def test_importing_the_core_loads_no_optional_package():
    import subprocess

    code = "import sys, ltx_core; print(sorted(m for m in ('transformers', 'av', 'gguf', 'PIL') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
