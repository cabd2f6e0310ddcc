"""A real ComfyUI server for the tests: started on 127.0.0.1 over a base folder of the test's own,
spoken to as a user's client does (POST /prompt, GET /history, the websocket's events).

COMFYUI_PATH names a ComfyUI checkout and COMFYUI_PYTHON the interpreter that runs it (with the pack's
requirements installed); `.ci/install-comfyui` makes both. Without COMFYUI_PATH the tests marked
`comfyui` skip and say why; with LTX_REQUIRE_COMFYUI=1 (CI) such a skip fails the run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMFYUI = os.environ.get("COMFYUI_PATH")
PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
REPO = Path(__file__).resolve().parents[1]
PACK_FOLDER = "ltx-pack"  # the pack's folder name under custom_nodes/ (any name works; this one has a hyphen)
SKIP_REASON = (
    "set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its interpreter) to run the real-server "
    "tests; `bash .ci/install-comfyui TARBALL DIR` installs one"
)
TEST_NODES = Path(__file__).resolve().parent / "comfy_test_nodes.py"


@dataclass
class Run:
    """One queued prompt: its id, its history entry, and the websocket events it caused."""

    prompt_id: str
    history: dict[str, Any]
    events: list[tuple[str, dict]] = field(default_factory=list)
    previews: int = 0  # binary preview frames received while it ran

    @property
    def status(self) -> str:
        return self.history["status"]["status_str"]

    @property
    def outputs(self) -> dict[str, dict]:
        return self.history["outputs"]

    def messages(self, kind: str) -> list[dict]:
        return [data for name, data in self.history["status"]["messages"] if name == kind]

    def error(self) -> dict:
        """The execution_error message (node_id, node_type, exception_type, exception_message, ...)."""
        (error,) = self.messages("execution_error")
        return error

    def executed(self) -> set[str]:
        """Ids of the nodes that ran (not served from the cache)."""
        return {data["node"] for name, data in self.events if name == "executing" and data.get("node")}

    def cached(self) -> set[str]:
        return {n for name, data in self.events if name == "execution_cached" for n in data["nodes"]}


class Server:
    """A running ComfyUI with a websocket client attached: by default COMFYUI_PATH's, run by COMFYUI_PYTHON
    on the CPU (the benchmarks pass another checkout and interpreter, on the GPU)."""

    def __init__(
        self,
        base: Path,
        extra_args: tuple[str, ...] = (),
        *,
        comfyui: Path | str | None = None,
        python: str | None = None,
        cpu: bool = True,
    ) -> None:
        import websocket  # websocket-client

        self.base = base
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        command = [
            python or PYTHON,
            "main.py",
            *(["--cpu"] if cpu else []),
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--base-directory",
            str(base),
            "--database-url",
            f"sqlite:///{base / 'comfyui.db'}",
            "--disable-api-nodes",
            "--preview-method",
            "latent2rgb",
            *extra_args,
        ]
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(command, cwd=comfyui or COMFYUI, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_until_up()
        self.client_id = uuid.uuid4().hex
        self._events: list[tuple[str, Any]] = []
        self._lock = threading.Condition()
        self._ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}")
        threading.Thread(target=self._listen, daemon=True).start()

    # --- lifecycle ---------------------------------------------------------------------------------

    def _wait_until_up(self, seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited at start-up:\n{self.log()[-4000:]}")
            try:
                self.get("/object_info/LTXPackSampler")
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {seconds} s:\n{self.log()[-4000:]}")

    def alive(self) -> bool:
        try:
            return self.process.poll() is None and "exec_info" in self.get("/prompt")
        except OSError:
            return False

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self._ws.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()

    def _listen(self) -> None:
        import websocket

        while True:
            try:
                data = self._ws.recv()  # whole messages: str for JSON events, bytes for previews
            except (websocket.WebSocketException, OSError):
                return
            if not data:  # the server closed the connection
                return
            event = ("binary", data) if isinstance(data, bytes) else _text_event(data)
            with self._lock:
                self._events.append(event)
                self._lock.notify_all()

    # --- HTTP ----------------------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        """POST JSON; returns (status, parsed body) for errors too."""
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            text = error.read()
            try:
                return error.code, json.loads(text)
            except json.JSONDecodeError:
                return error.code, text.decode(errors="replace")

    # --- prompts ------------------------------------------------------------------------------------

    def queue(self, prompt: dict, workflow: dict | None = None) -> tuple[int, dict]:
        body: dict[str, Any] = {"prompt": prompt, "client_id": self.client_id}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        return self.post("/prompt", body)

    def run(self, prompt: dict, workflow: dict | None = None, timeout: float = 300) -> Run:
        """Queue a prompt that passes validation and wait for it to end (success, error or interrupt)."""
        status, answer = self.queue(prompt, workflow)
        if status != 200:
            raise AssertionError(f"the prompt was refused ({status}): {json.dumps(answer, indent=1)[:4000]}")
        return self.wait(answer["prompt_id"], timeout)

    def wait(self, prompt_id: str, timeout: float = 300) -> Run:
        ends = ("execution_success", "execution_error", "execution_interrupted")
        deadline = time.monotonic() + timeout
        with self._lock:
            while not any(n in ends and d.get("prompt_id") == prompt_id for n, d in self._own_events()):
                if not self._lock.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"prompt {prompt_id} did not end within {timeout} s:\n{self.log()[-4000:]}")
            events, previews = self._events_of(prompt_id)
        for _ in range(100):  # the history entry is written just after the last event
            history = self.get(f"/history/{prompt_id}").get(prompt_id)
            if history and history["status"]["completed"] is not None and history["status"]["messages"]:
                if any(name in ends for name, _ in history["status"]["messages"]):
                    return Run(prompt_id, history, events, previews)
            time.sleep(0.1)
        raise AssertionError(f"no history for prompt {prompt_id}")

    def wait_for_event(self, kind: str, predicate=lambda data: True, timeout: float = 120) -> dict:
        """Block until a websocket event of `kind` whose data satisfies `predicate` has arrived."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for name, data in self._own_events():
                    if name == kind and predicate(data):
                        return data
                if not self._lock.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"no {kind} event within {timeout} s")

    def forget_events(self) -> None:
        with self._lock:
            self._events.clear()

    def _own_events(self) -> list[tuple[str, dict]]:
        return [(n, d) for n, d in self._events if n != "binary"]

    def _events_of(self, prompt_id: str) -> tuple[list[tuple[str, dict]], int]:
        """The events from this prompt's execution_start to its end, and the preview frames among them."""
        ours, previews, inside = [], 0, False
        for name, data in self._events:
            if name == "execution_start" and data.get("prompt_id") == prompt_id:
                inside = True
            if not inside:
                continue
            if name == "binary":
                previews += 1
                continue
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            ours.append((name, data))
            if name in ("execution_success", "execution_error", "execution_interrupted"):
                break
        return ours, previews

    def output_file(self, entry: dict) -> Path:
        """The file a save node reported in its UI output."""
        root = {"output": "output", "temp": "temp"}[entry["type"]]
        return self.base / root / entry["subfolder"] / entry["filename"]


def _text_event(data: str) -> tuple[str, Any]:
    message = json.loads(data)
    return message["type"], message.get("data") or {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_base(base: Path) -> Path:
    """A ComfyUI base folder: the pack and the test nodes under custom_nodes/, empty models/ and input/."""
    nodes = base / "custom_nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    (nodes / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    (nodes / TEST_NODES.name).symlink_to(TEST_NODES)
    for folder in ("models", "input", "output"):
        (base / folder).mkdir(exist_ok=True)
    return base


def run_in_comfyui(script: Path, *args: str) -> str:
    """Run a Python file with ComfyUI's interpreter and its checkout importable; returns stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([COMFYUI, str(REPO / "tests")])}
    done = subprocess.run(
        [PYTHON, str(script), *args], cwd=COMFYUI, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return done.stdout
