"""Writes the shared workflows in both of ComfyUI's formats from one description each.

    python workflows/build.py          # rewrite workflows/*.json and workflows/api/*.json

UI format (`<name>.json`, drag into ComfyUI) and API format (`api/<name>.json`, the body's "prompt"
for `POST /prompt`). The tests check that the committed files equal what this script writes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
CONTROL_VALUE = "fixed"  # the frontend's control_after_generate widget value stored after seed-like INTs

# The core nodes the workflows use, as ComfyUI 0.3.64 declares them: inputs (name, type), outputs.
CORE_NODES: dict[str, dict[str, Any]] = {
    "LoadImage": {"inputs": [("image", "COMBO")], "outputs": [("IMAGE", "IMAGE"), ("MASK", "MASK")], "upload": True},
    "LoadVideo": {"inputs": [("file", "COMBO")], "outputs": [("VIDEO", "VIDEO")], "upload": True},
    "ImageScale": {
        "inputs": [
            ("image", "IMAGE"),
            ("upscale_method", "COMBO"),
            ("width", "INT"),
            ("height", "INT"),
            ("crop", "COMBO"),
        ],
        "outputs": [("IMAGE", "IMAGE")],
        "upload": False,
    },
    "GetVideoComponents": {
        "inputs": [("video", "VIDEO")],
        "outputs": [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")],
        "upload": False,
    },
}


def import_pack(name: str = "ltxpack") -> ModuleType:
    """The pack imported as a package (as ComfyUI imports it, so its relative imports work)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    importlib.import_module(f"{name}.nodes")
    return sys.modules[name]


@dataclass
class Node:
    id: int
    type: str
    values: dict[str, Any] = field(default_factory=dict)  # widget values and links (source id, output slot)
    title: str | None = None


@dataclass
class Workflow:
    name: str
    note: str
    nodes: list[Node]


def node_spec(node_type: str) -> dict[str, Any]:
    """inputs [(name, type, options)] in declaration order and outputs [(name, type)] of a node type."""
    if node_type in CORE_NODES:
        core = CORE_NODES[node_type]
        return {"inputs": [(n, t, {}) for n, t in core["inputs"]], "outputs": core["outputs"], "upload": core["upload"]}
    cls = import_pack().nodes.NODE_CLASS_MAPPINGS[node_type]
    declared = cls.INPUT_TYPES()
    inputs = [(n, s[0], s[1]) for group in ("required", "optional") for n, s in declared.get(group, {}).items()]
    names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
    return {"inputs": inputs, "outputs": list(zip(names, cls.RETURN_TYPES, strict=True)), "upload": False}


def is_widget(kind: Any) -> bool:
    return isinstance(kind, list) or kind in WIDGET_TYPES or kind == "COMBO"


def to_api(workflow: Workflow) -> dict[str, Any]:
    prompt = {}
    for node in workflow.nodes:
        inputs = {k: [str(v[0]), v[1]] if isinstance(v, tuple) else v for k, v in node.values.items()}
        title = node.title or import_pack().nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node.type, node.type)
        prompt[str(node.id)] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": title}}
    return prompt


def _depths(workflow: Workflow) -> dict[int, int]:
    by_id = {n.id: n for n in workflow.nodes}

    def depth(node: Node) -> int:
        sources = [v[0] for v in node.values.values() if isinstance(v, tuple)]
        return 1 + max((depth(by_id[s]) for s in sources), default=-1)

    return {n.id: depth(n) for n in workflow.nodes}


def to_ui(workflow: Workflow) -> dict[str, Any]:
    depths, rows, links, nodes = _depths(workflow), {}, [], []
    outputs: dict[tuple[int, int], list[int]] = {}
    for node in workflow.nodes:
        spec = node_spec(node.type)
        widgets, sockets = [], []
        for name, kind, options in spec["inputs"]:
            value = node.values.get(name)
            if isinstance(value, tuple):
                links.append([len(links) + 1, value[0], value[1], node.id, len(sockets), kind])
                outputs.setdefault(value, []).append(len(links))
                sockets.append({"name": name, "type": kind, "link": len(links)})
            elif is_widget(kind):
                widgets.append(value)
                if options.get("control_after_generate"):
                    widgets.append(CONTROL_VALUE)
                if spec["upload"] and kind == "COMBO":
                    widgets.append("image")
            else:  # an unconnected socket (the optional sigmas)
                sockets.append({"name": name, "type": kind, "link": None})
        column, outs = depths[node.id], spec["outputs"]
        rows[column] = rows.get(column, 0) + 1
        entry = {
            "id": node.id,
            "type": node.type,
            "pos": [420 * column + 40, 380 * (rows[column] - 1) + 300],  # room for the frontend's node heights
            "size": [380, 330],
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": sockets,
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outs)],
            "properties": {"Node name for S&R": node.type},
            "widgets_values": widgets,
        }
        if node.title:
            entry["title"] = node.title
        nodes.append(entry)
    for node in nodes:
        for slot, out in enumerate(node["outputs"]):
            out["links"] = outputs.get((node["id"], slot), [])
    for order, node in enumerate(sorted(nodes, key=lambda n: depths[n["id"]])):
        node["order"] = order
    note_id = max(n.id for n in workflow.nodes) + 1
    note = {
        "id": note_id,
        "type": "Note",
        "pos": [40, 20],
        "size": [1200, 250],
        "flags": {},
        "order": len(nodes),
        "mode": 0,
        "inputs": [],
        "outputs": [],
        "properties": {},
        "widgets_values": [workflow.note],
        "color": "#432",
        "bgcolor": "#653",
    }
    return {
        "last_node_id": note_id,
        "last_link_id": len(links),
        "nodes": [*nodes, note],
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
    }


def build() -> dict[str, tuple[dict, dict]]:
    """name → (UI workflow, API prompt) for every workflow in `workflows/definitions.py`."""
    spec = importlib.util.spec_from_file_location("ltxpack_workflow_definitions", HERE / "definitions.py")
    definitions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(definitions)
    return {w.name: (to_ui(w), to_api(w)) for w in definitions.make(Node, Workflow)}


def dumps(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    # Listing model files needs ComfyUI; the descriptions name their files themselves.
    bridge = import_pack().nodes.comfy_bridge
    bridge.list_models = lambda folders: []
    (HERE / "api").mkdir(exist_ok=True)
    for name, (ui, api) in build().items():
        (HERE / f"{name}.json").write_text(dumps(ui))
        (HERE / "api" / f"{name}.json").write_text(dumps(api))
        print(f"wrote workflows/{name}.json and workflows/api/{name}.json")


if __name__ == "__main__":
    main()
