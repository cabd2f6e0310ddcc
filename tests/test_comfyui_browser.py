"""The shared UI workflows in ComfyUI's real frontend, as a user opens them: headless Chromium loads
each `workflows/<name>.json` into the page served by a real ComfyUI (with the pack installed) through
the frontend's own `app.loadGraphData`, and the frontend's own `app.graphToPrompt` must give the graph
of the shipped `workflows/api/<name>.json`.

A load passes when every node type is registered in LiteGraph, no dialog (the missing-nodes one among
them) and no toast opens, and nothing is logged as an error. A copy with one node type renamed must be
caught by both the registry check and the frontend's missing-nodes dialog, so the checks can fail.
Each workflow leaves a screenshot in one temporary folder, whose path the test prints.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import pytest

from browser import INSTALL_HINT, Browser, find_chromium

pytestmark = pytest.mark.comfyui

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
NAMES = sorted(path.stem for path in WORKFLOWS.glob("*.json"))
READY = "window.app?.graph && window.app.canvas && Object.keys(window.LiteGraph?.registered_node_types ?? {}).length"
UNREGISTERED = "LTXPackNodeThatDoesNotExist"
# The frontend queues Load Video's preview widget too (as "video-preview": ""); the server reads only the
# inputs a node declares, so the shipped API workflows leave it out.
PREVIEW_INPUTS = {"video-preview"}

# Loads a UI workflow with the frontend's own loader (as dropping the file on the canvas does), lets it
# draw, and reports what a user would see: dialogs, toasts, the nodes as the frontend built them, and
# what it would queue. Called with (workflow, name).
LOAD = """async (workflow, name) => {
  await app.loadGraphData(workflow, true, true, name);
  // Image previews arrive after the load and grow their nodes: wait for them and for steady sizes.
  const sizes = () => JSON.stringify(app.graph.nodes.map((n) => [n.id, ...n.size]));
  const previews = () =>
    app.graph.nodes.every((n) => !n.widgets?.some((w) => w.name === "image") || n.imgs?.every((i) => i.complete));
  let last = sizes(), steady = 0;
  for (let tick = 0; tick < 100 && (steady < 5 || !previews()); tick++) {
    await new Promise((done) => setTimeout(done, 50));
    steady = sizes() === last ? steady + 1 : 0;
    last = sizes();
  }
  const texts = (selector) => [...document.querySelectorAll(selector)].map((e) => e.innerText);
  const { output, workflow: saved } = await app.graphToPrompt();
  return {
    missing: workflow.nodes.map((n) => n.type).filter((t) => !(t in LiteGraph.registered_node_types)),
    nodes: app.graph.nodes.map((n) => ({
      id: n.id, type: n.type, known: n.type in LiteGraph.registered_node_types, errors: !!n.has_errors,
      box: Array.from(n.getBounding()),
    })),
    previews: previews(),
    dialogs: texts(".p-dialog"),
    toasts: texts(".p-toast-message"),
    output,
    saved,
  };
}"""

# Fits every node into the window so the screenshot shows the whole graph.
FIT = """async () => {
  const boxes = app.graph.nodes.map((n) => n.getBounding());
  const left = Math.min(...boxes.map((b) => b[0])), top = Math.min(...boxes.map((b) => b[1]));
  const right = Math.max(...boxes.map((b) => b[0] + b[2])), bottom = Math.max(...boxes.map((b) => b[1] + b[3]));
  app.canvas.ds.fitToBounds([left, top, right - left, bottom - top], { zoom: 0.95 });
  app.canvas.setDirty(true, true);
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
}"""

CLOSE_DIALOGS = """(() => {
  document.querySelectorAll(".p-dialog .p-dialog-close-button").forEach((button) => button.click());
  return true;
})()"""


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """One folder for all screenshots, left in place so that a CI run's images can be looked at."""
    return Path(tempfile.mkdtemp(prefix="ltx-frontend-screenshots-"))


@pytest.fixture(scope="module")
def frontend(comfy_server):
    """A headless Chromium showing the frontend that comfy_server serves, ready to load workflows."""
    binary = find_chromium()
    if binary is None:
        pytest.fail(f"no Chromium to run ComfyUI's frontend in: {INSTALL_HINT}")
    # A returning user: a fresh settings file opens the template browser over the canvas on start.
    status, _ = comfy_server.post("/settings/Comfy.TutorialCompleted", True)
    assert status == 200
    # Large enough that the fitted graphs stay above LiteGraph's low-quality zoom (below 0.6 it draws no text).
    browser = Browser(binary, width=2200, height=1400)
    try:
        browser.navigate(comfy_server.url)
        browser.wait_for(READY, timeout=60)
        yield browser
    finally:
        browser.close()


def load(browser: Browser, workflow: dict, name: str) -> dict:
    browser.console.clear()  # errors logged at start-up belong to the frontend, not to a workflow
    return browser.evaluate(f"({LOAD})({json.dumps(workflow)}, {json.dumps(name)})")


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def graph(prompt: dict) -> dict:
    """An API prompt without titles: node id -> (class_type, inputs), less PREVIEW_INPUTS."""
    return {
        node_id: (node["class_type"], {k: v for k, v in node["inputs"].items() if k not in PREVIEW_INPUTS})
        for node_id, node in prompt.items()
    }


def overlapping(nodes: list[dict]) -> list[tuple[str, str]]:
    """Pairs of nodes whose boxes (title bar included, [x, y, width, height]) intersect."""
    pairs = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            (ax, ay, aw, ah), (bx, by, bw, bh) = a["box"], b["box"]
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                pairs.append((f"{a['id']} ({a['type']})", f"{b['id']} ({b['type']})"))
    return pairs


def test_every_workflow_has_an_api_twin():
    assert len(NAMES) == 9, NAMES
    assert sorted(path.stem for path in (WORKFLOWS / "api").glob("*.json")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_frontend_loads_workflow(name, frontend, screenshots, capsys):
    workflow = read(WORKFLOWS / f"{name}.json")
    seen = load(frontend, workflow, name)

    assert seen["missing"] == [], f"{name}: node types the frontend does not know: {seen['missing']}"
    assert [n for n in seen["nodes"] if not n["known"] or n["errors"]] == []
    assert sorted(n["id"] for n in seen["nodes"]) == sorted(n["id"] for n in workflow["nodes"])
    assert seen["previews"], f"{name}: a Load Image node shows no preview (is its image in input/?)"
    assert seen["dialogs"] == [], f"{name}: the frontend opened a dialog"
    assert seen["toasts"] == [], f"{name}: the frontend showed a notice"
    assert frontend.errors() == [], f"{name}: errors in the browser console"

    assert graph(seen["output"]) == graph(read(WORKFLOWS / "api" / f"{name}.json"))
    # The frontend kept every widget value as written (no clamping, no combo reset, no migration).
    saved = {n["id"]: n.get("widgets_values") for n in seen["saved"]["nodes"]}
    assert saved == {n["id"]: n.get("widgets_values") for n in workflow["nodes"]}

    for first, second in overlapping(seen["nodes"]):
        warnings.warn(f"{name}: as the frontend sizes them, node {first} overlaps node {second}", stacklevel=1)

    frontend.evaluate(f"({FIT})()")
    path = frontend.screenshot(screenshots / f"{name}.png")
    with capsys.disabled():
        print(f"\nfrontend screenshot of {name}: {path}")


def test_renamed_node_type_is_reported_missing(frontend, screenshots):
    """The negative control: the same checks catch a node type that no extension registers."""
    workflow = read(WORKFLOWS / "text_to_video.json")
    (renamed,) = [n for n in workflow["nodes"] if n["type"] == "LTXPackSampler"]
    renamed["type"] = UNREGISTERED
    try:
        seen = load(frontend, workflow, "renamed_node")
        frontend.screenshot(screenshots / "negative_control_missing_node.png")
    finally:
        frontend.evaluate(CLOSE_DIALOGS)
        frontend.wait_for("!document.querySelector('.p-dialog')", timeout=10)

    assert seen["missing"] == [UNREGISTERED]
    assert [n["id"] for n in seen["nodes"] if not n["known"]] == [renamed["id"]]
    (dialog,) = seen["dialogs"]
    assert UNREGISTERED in dialog, dialog
