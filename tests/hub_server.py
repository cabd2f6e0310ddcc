"""A stand-in for the Hugging Face Hub on 127.0.0.1: serves folders in the Hub's URL layout, so that
`huggingface_hub` (pointed at it with HF_ENDPOINT) downloads from it exactly as from huggingface.co.

The requests huggingface_hub makes (read from its source, `file_download.py`, `_snapshot_download.py`
and `hf_api.py`):

  HEAD/GET /{repo}/resolve/{revision}/{path}      a file; the answer carries X-Repo-Commit and ETag
                                                  (X-Linked-Etag / X-Linked-Size for LFS files), and
                                                  GET honours `Range: bytes=N-` (resumed downloads)
  GET /api/models/{repo}[/revision/{revision}]    repo_info(): the commit sha and the file list
  GET /api/models/{repo}/tree/{revision}[/{path}] list_repo_tree() (snapshot_download), `recursive`
                                                  as a query parameter

Errors are 404s with the X-Error-Code the Hub sends (RepoNotFound, RevisionNotFound, EntryNotFound),
which huggingface_hub turns into its exception types. Each repository is served at one commit (a hash
of its files), reachable as `main` or by that hash.

Run as a script: `python tests/hub_server.py FOLDER` serves FOLDER/{owner}/{name}/…, and with
`--tiny-release` first writes the generator's default release there as tiny random-weight files
(`write_tiny_release`). It prints its address on the first line of stdout, then serves until killed.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import hashlib
import json
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_REPO = "Lightricks/LTX-Video"
CHECKPOINT = "ltx-video-2b-v0.9.1.safetensors"
# Files of the real repository that the default release must never download (it holds every release).
DECOYS = ("ltx-video-2b-v0.9.5.safetensors", "ltxv-13b-0.9.7-dev.safetensors")

RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")
INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<revision>[^/]+))?$")
TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?$")


@dataclass
class Repo:
    """One served repository: its folder, its files (relative POSIX paths) and its commit."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    commit: str = ""

    @classmethod
    def scan(cls, folder: Path) -> Repo:
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        digest = hashlib.sha1()
        for name, path in files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
        return cls(folder, files, digest.hexdigest())


class HubServer(ThreadingHTTPServer):
    """Serves `repos` (repo id → folder); every request line is kept in `requests`."""

    daemon_threads = True

    def __init__(self, repos: dict[str, Path], port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.repos = {repo_id: Repo.scan(folder) for repo_id, folder in repos.items()}
        self.requests: list[str] = []
        self.interrupt: set[str] = set()  # paths whose next download breaks off halfway (then leave the set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def downloaded(self) -> list[str]:
        """The paths of the file bodies sent (GET …/resolve/…), in order."""
        return [m["path"] for r in self.requests if r.startswith("GET ") and (m := RESOLVE.match(r[4:]))]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests read `requests`
        pass

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    def _route(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append(f"{self.command} {path}")
        if match := RESOLVE.match(path):
            self._file(match["repo"], match["revision"], match["path"], body)
        elif match := TREE.match(path):
            self._tree(match["repo"], match["revision"], match["path"] or "")
        elif match := INFO.match(path):
            self._info(match["repo"], match["revision"] or "main")
        else:
            self._error(404, "RepoNotFound", "Repository not found")

    def _repo(self, repo_id: str, revision: str) -> Repo | None:
        repo = self.server.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", repo)
            return None
        return repo

    def _file(self, repo_id: str, revision: str, name: str, body: bool) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        if name not in repo.files:
            self._error(404, "EntryNotFound", "Entry not found", repo)
            return
        data = repo.files[name].read_bytes()
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        start = 0
        if body and (ranged := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))):
            start = min(int(ranged[1]), len(data))
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", etag)
        self.send_header("X-Linked-Etag", etag)
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if body and name in self.server.interrupt:  # the connection drops halfway through the body
            self.server.interrupt.discard(name)
            self.wfile.write(data[start : (start + len(data)) // 2])
            self.close_connection = True
        elif body:
            self.wfile.write(data[start:])

    def _info(self, repo_id: str, revision: str) -> None:
        if repo := self._repo(repo_id, revision):
            siblings = [{"rfilename": name} for name in repo.files]
            self._json({"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False, "siblings": siblings})

    def _tree(self, repo_id: str, revision: str, under: str) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        recursive = parse_qs(urlsplit(self.path).query).get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{under.strip('/')}/" if under.strip("/") else ""
        entries: dict[str, dict] = {}
        for name, path in repo.files.items():
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "path": folder, "oid": "0" * 40, "size": 0})
            if recursive or len(parts) == 1:
                oid = hashlib.sha1(path.read_bytes()).hexdigest()
                entries[name] = {"type": "file", "path": name, "oid": oid, "size": path.stat().st_size}
        if prefix and not entries:
            self._error(404, "EntryNotFound", f"{under} does not exist on {revision}", repo)
            return
        self._json(list(entries.values()))

    def _json(self, value: object) -> None:
        data = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str, repo: Repo | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if repo is not None:
            self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


@contextmanager
def serve(repos: dict[str, Path]) -> Iterator[HubServer]:
    """A HubServer on a free port in a background thread, for the duration of the block."""
    server = HubServer(repos)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def write_tiny_release(folder: Path, made: dict[str, Path] | None = None) -> dict[str, Path]:
    """The generator's default release (`Lightricks/LTX-Video`: the 0.9.1 checkpoint, diffusers'
    `text_encoder/` in shards with its index, `tokenizer/` beside it) as tiny random-weight files (copied
    from `made`, the output of write_tiny_checkpoints, or written anew), next to decoys the generator must
    not download. Returns {repo id: its folder}."""
    import transformers

    from tiny import write_tiny_checkpoints

    made = made or write_tiny_checkpoints(folder / "made")
    repo = folder / DEFAULT_REPO
    (repo / "tokenizer").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(made["checkpoint"], repo / CHECKPOINT)
    t5 = transformers.T5EncoderModel.from_pretrained(made["text_encoder"])
    t5.save_pretrained(repo / "text_encoder", max_shard_size="40KB")  # in shards with an index, as released
    shutil.copyfile(made["text_encoder"] / "spiece.model", repo / "tokenizer" / "spiece.model")
    (repo / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    (repo / "model_index.json").write_text(json.dumps({"_class_name": "LTXPipeline"}))
    for decoy in DECOYS:
        (repo / decoy).write_bytes(b"not to be downloaded")
    return {DEFAULT_REPO: repo}


def _temporary_folder(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, True)
    return folder


@functools.cache
def tiny_files() -> dict[str, Path]:
    """write_tiny_checkpoints once per test process (the tests of several modules share them)."""
    from tiny import write_tiny_checkpoints

    return write_tiny_checkpoints(_temporary_folder("ltx-tiny-"))


@functools.cache
def tiny_hub() -> HubServer:
    """A HubServer of the tiny default release, started once per test process; its `requests` grow."""
    server = HubServer(write_tiny_release(_temporary_folder("ltx-hub-"), tiny_files()))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@contextmanager
def pointed_at(url: str, cache: Path, offline: bool = False) -> Iterator[None]:
    """Point the already imported huggingface_hub at `url`, caching in `cache`, for the block: what
    HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE do for a new process (huggingface_hub reads them once,
    at import)."""
    from huggingface_hub import constants

    values = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": offline,
    }
    saved = {name: getattr(constants, name) for name in values}
    for name, value in values.items():
        setattr(constants, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(constants, name, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="holds {owner}/{name}/ repository folders")
    parser.add_argument("--tiny-release", action="store_true", help="first write the default release, tiny")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.tiny_release:
        write_tiny_release(args.folder)
    repos = {f"{o.name}/{r.name}": r for o in args.folder.iterdir() if o.is_dir() for r in o.iterdir() if r.is_dir()}
    server = HubServer(repos, args.port)
    print(server.url, flush=True)
    sys.stdout.close()  # the reader waits for the address only
    server.serve_forever()


if __name__ == "__main__":
    main()
