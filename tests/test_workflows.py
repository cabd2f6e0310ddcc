"""The shared workflows: in sync with their description, only registered nodes, links of matching
types, widget values that fit, and every API workflow run end to end on tiny checkpoints to an mp4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ltx_core.media import read_image, read_video
from tiny_comfy import VIDEO_FRAMES
from workflows.build import CONTROL_VALUE, CORE_NODES, build, dumps, import_pack, is_widget, node_spec

nodes = import_pack().nodes
WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
NAMES = [
    "text_to_video",
    "image_to_video",
    "keyframe_interpolation",
    "low_vram",
    "video_extension",
    "text_to_video_distilled",
    "text_to_video_13b_dev",
    "text_to_video_multiscale",
    "text_to_video_lora",
]
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # virtual nodes: never sent to the server
SMALL = {"width": 64, "height": 96, "length": 17, "steps": 2, "max_tokens": 16, "overlap": 9}


def expected_frames(name: str) -> int:
    """Frames of the video a shrunk workflow saves: the new video's, or for the extension the joined one's."""
    if name == "video_extension":
        return VIDEO_FRAMES + SMALL["length"] - SMALL["overlap"]
    return SMALL["length"]


def load(name: str) -> tuple[dict, dict]:
    return json.loads((WORKFLOWS / f"{name}.json").read_text()), json.loads(
        (WORKFLOWS / "api" / f"{name}.json").read_text()
    )


def test_files_are_what_the_description_builds(comfy, monkeypatch):
    monkeypatch.setattr(nodes.comfy_bridge, "list_models", lambda folders: [])
    built = build()
    assert sorted(built) == sorted(NAMES)
    for name, (ui, api) in built.items():
        assert (WORKFLOWS / f"{name}.json").read_text() == dumps(ui), f"run python workflows/build.py ({name})"
        assert (WORKFLOWS / "api" / f"{name}.json").read_text() == dumps(api)


def _check_value(where: str, kind, options: dict, value) -> None:
    if isinstance(kind, list):
        assert value in kind, f"{where}: {value!r} is not one of {kind}"
    elif kind in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        assert options.get("min", value) <= value <= options.get("max", value), f"{where}: {value} out of range"
        if kind == "INT":
            assert isinstance(value, int), where
    elif kind == "STRING":
        assert isinstance(value, str), where


def ui_to_api(ui: dict, spec_of=node_spec) -> dict:
    """What the frontend's graphToPrompt makes of a flat UI workflow (virtual nodes dropped).
    `spec_of(node type)` gives the node's inputs and outputs as `workflows.build.node_spec` does."""
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        spec, widgets, sockets = spec_of(node["type"]), list(node["widgets_values"]), iter(node["inputs"])
        inputs = {}
        for name, kind, options in spec["inputs"]:
            if is_widget(kind):
                inputs[name] = widgets.pop(0)
                if options.get("control_after_generate"):
                    assert widgets.pop(0) == CONTROL_VALUE
                if spec["upload"]:
                    assert widgets.pop(0) == "image"
            else:
                socket = next(sockets)
                assert socket["name"] == name and socket["type"] == kind
                if socket["link"] is not None:
                    link = links[socket["link"]]
                    inputs[name] = [str(link[1]), link[2]]
        assert not widgets, f"node {node['id']} has extra widget values {widgets}"
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@pytest.mark.parametrize("name", NAMES)
def test_workflow_is_consistent(name, comfy):
    ui, api = load(name)
    registered = set(nodes.NODE_CLASS_MAPPINGS) | set(CORE_NODES)
    assert {n["class_type"] for n in api.values()} <= registered
    assert {n["type"] for n in ui["nodes"]} <= registered | FRONTEND_ONLY
    assert any(n["type"] == "Note" and "models/" in n["widgets_values"][0] for n in ui["nodes"])
    by_id = {n["id"]: n for n in ui["nodes"]}
    for link_id, source, slot, target, target_slot, kind in ui["links"]:
        assert by_id[source]["outputs"][slot]["type"] == kind == by_id[target]["inputs"][target_slot]["type"]
        assert (
            link_id in by_id[source]["outputs"][slot]["links"]
            and by_id[target]["inputs"][target_slot]["link"] == link_id
        )
    assert ui_to_api(ui) == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
    for node_id, node in api.items():
        spec = {n: (k, o) for n, k, o in node_spec(node["class_type"])["inputs"]}
        for input_name, value in node["inputs"].items():
            kind, options = spec[input_name]
            if isinstance(value, list):  # a link: the source's output type must match
                source = api[value[0]]
                assert node_spec(source["class_type"])["outputs"][value[1]][1] == kind, f"{node_id}.{input_name}"
            elif node["class_type"] not in CORE_NODES:
                _check_value(f"{name} node {node_id} {input_name}", kind, options, value)
        required = (
            nodes.NODE_CLASS_MAPPINGS[node["class_type"]].INPUT_TYPES()["required"]
            if node["class_type"] in nodes.NODE_CLASS_MAPPINGS
            else {}
        )
        assert set(required) <= set(node["inputs"]), f"{name} node {node_id} misses inputs"


def run_prompt(prompt: dict, comfy, workflow: dict) -> dict:
    """Execute an API prompt through the node functions in dependency order (ComfyUI's job)."""
    outputs: dict[str, tuple] = {}

    def execute(node_id: str) -> tuple:
        if node_id not in outputs:
            node = prompt[node_id]
            inputs = {k: execute(v[0])[v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
            if node["class_type"] == "LoadImage":  # core's nodes, as ComfyUI runs them
                image = read_image(comfy.input / inputs["image"])[None]
                outputs[node_id] = (image, torch.zeros(image.shape[:3]))
            elif node["class_type"] == "LoadVideo":
                outputs[node_id] = (comfy.input / inputs["file"],)
            elif node["class_type"] == "GetVideoComponents":
                frames, fps = read_video(inputs["video"])
                outputs[node_id] = (frames, None, fps)
            elif node["class_type"] == "ImageScale":  # bilinear, crop disabled: ComfyUI's common_upscale
                assert (inputs["upscale_method"], inputs["crop"]) == ("bilinear", "disabled")
                size = (inputs["height"], inputs["width"])
                scaled = torch.nn.functional.interpolate(inputs["image"].movedim(-1, 1), size=size, mode="bilinear")
                outputs[node_id] = (scaled.movedim(1, -1),)
            else:
                cls = nodes.NODE_CLASS_MAPPINGS[node["class_type"]]
                if "hidden" in cls.INPUT_TYPES():
                    inputs.update(prompt=prompt, extra_pnginfo={"workflow": workflow})
                result = getattr(cls(), cls.FUNCTION)(**inputs)
                outputs[node_id] = result["result"] if isinstance(result, dict) else result
                if isinstance(result, dict):
                    outputs[node_id + ":ui"] = result["ui"]
        return outputs[node_id]

    for node_id, node in prompt.items():
        if getattr(nodes.NODE_CLASS_MAPPINGS.get(node["class_type"]), "OUTPUT_NODE", False):
            execute(node_id)
    return outputs


def shrink(prompt: dict) -> dict:
    """The same graph at a tiny size and 2 steps (inputs keep their names and kinds)."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        node["inputs"].update({k: v for k, v in SMALL.items() if k in node["inputs"]})
    return prompt


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_runs_to_a_playable_mp4(name, comfy):
    ui, api = load(name)
    outputs = run_prompt(shrink(api), comfy, ui)
    (saved,) = [v for k, v in outputs.items() if k.endswith(":ui")]
    (entry,) = saved["images"]
    path = comfy.output / entry["subfolder"] / entry["filename"]
    assert entry["type"] == "output" and path.suffix == ".mp4" and saved["animated"] == (True,)
    frames, fps = read_video(path)
    assert frames.shape == (expected_frames(name), SMALL["height"], SMALL["width"], 3) and fps == pytest.approx(25.0)
    import av

    with av.open(str(path)) as container:
        assert json.loads(container.metadata["workflow"]) == ui
        assert json.loads(container.metadata["prompt"])["1"]["class_type"] == "LTXPackModelLoader"
    assert comfy.progress[-1] == (2, 2)
