"""Model files from the Hugging Face Hub: references, checks before any download, cached downloads.

A reference names a repository and a file or folder in it, in any of the forms users copy:
`Lightricks/LTX-Video/ltx-video-2b-v0.9.1.safetensors`, `hf://Lightricks/LTX-Video@main/text_encoder`
(huggingface_hub's file-system form, `@revision` optional) or a huggingface.co address
(`…/blob/main/…`, `…/resolve/main/…`, `…/tree/main/…`). A bare `owner/name/…` is a reference only when
no local path of that name exists.

Downloads go through `huggingface_hub` (its cache under HF_HOME, resumed when interrupted, a progress
bar per file; HF_ENDPOINT and HF_TOKEN as usual). `plan()` asks the Hub what a reference is and how
big it is without downloading, so every reference is checked before the first byte of weights
arrives; `fetch()` then downloads. Without a connection (or with HF_HUB_OFFLINE=1) the cache is used.
"""

from __future__ import annotations

import difflib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

DEFAULT_REPO = "Lightricks/LTX-Video"

# What a folder reference downloads for each flag: the files that flag's loader reads, in the folder
# itself or in its diffusers subfolders, never the whole repository (Lightricks/LTX-Video holds every
# release, over 100 GB). A text encoder also takes the tokenizer that lies beside its folder.
FOLDER_FILES: dict[str, tuple[str, ...]] = {
    "checkpoint": ("model_index.json", "config.json", "diffusion_pytorch_model*", "transformer/*", "vae/*"),
    "vae": ("config.json", "diffusion_pytorch_model*", "vae/*"),
    "text_encoder": (
        "config.json",
        "model.safetensors",
        "model-*.safetensors",
        "model.safetensors.index.json",
        "spiece.model",
        "tokenizer.json",
        "text_encoder/*",
        "tokenizer/*",
    ),
    "tokenizer": ("spiece.model", "tokenizer.json", "tokenizer/*"),
    "upsampler": ("config.json", "diffusion_pytorch_model*", "latent_upsampler/*"),  # diffusers' upscaler repos
    "lora": ("pytorch_lora_weights.safetensors",),  # the file diffusers' save_lora_weights writes
}
BESIDE_FILES: dict[str, tuple[str, ...]] = {"text_encoder": ("spiece.model", "tokenizer.json", "tokenizer/*")}
# Weights in formats no loader here reads (pickles, TensorFlow, Flax, ONNX): never downloaded.
IGNORED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx*")
TOKENIZER_FILES = ("spiece.model", "tokenizer.json")

_NAME = r"[A-Za-z0-9][\w.-]*"
_REPO = rf"(?P<repo>{_NAME}/{_NAME})"
HF_URI = re.compile(rf"^hf://(?:models/)?{_REPO}(?:@(?P<revision>[^/]+))?(?:/(?P<path>.*))?$")
BARE = re.compile(rf"^{_REPO}(?:@(?P<revision>[^/]+))?(?:/(?P<path>.*))?$")
HUB_HOSTS = r"https?://(?:www\.)?(?:huggingface\.co|hf\.co)"
URL_TAIL = rf"/{_REPO}(?:/(?:blob|resolve|tree)/(?P<revision>[^/]+)(?:/(?P<path>.*))?)?/?$"


class HubError(Exception):
    """A reference that cannot be had from the Hub: what happened and what to do."""


@dataclass(frozen=True)
class HubRef:
    """A file or folder (`path`, "" for the repository's root) of a Hub repository at `revision`."""

    repo_id: str
    path: str = ""
    revision: str = "main"
    bare: bool = field(default=False, compare=False)  # written as owner/name/…: it could have been a local path

    def __str__(self) -> str:
        at = f"@{self.revision}" if self.revision != "main" else ""
        return f"{self.repo_id}{at}{'/' + self.path if self.path else ''}"


@dataclass(frozen=True)
class Plan:
    """What `fetch` will download for a reference: its kind, files and their sizes (None: unknown, offline)."""

    ref: HubRef
    role: str
    is_file: bool
    files: tuple[str, ...] = ()
    size: int | None = None
    missing: int | None = None  # bytes not yet in the cache
    offline: str = ""  # why the Hub cannot be asked (then `fetch` takes the cache's copy)


def parse_ref(text: str) -> HubRef | Path:
    """A command-line model argument → a Hub reference, or a local path (which may not exist)."""
    from huggingface_hub import constants

    hosts = f"(?:{HUB_HOSTS}|{re.escape(constants.ENDPOINT)})"  # huggingface.co, or the HF_ENDPOINT in use
    match = HF_URI.match(text) or re.match(f"^{hosts}{URL_TAIL}", text)
    if text.startswith("hf://") and match is None:
        raise HubError(f"{text}: not a Hub reference; write hf://owner/name/file (e.g. hf://{DEFAULT_REPO}/…)")
    local = Path(text).expanduser()
    if match is None and not local.exists() and not text.startswith((".", "/", "~")):
        if (match := BARE.match(text)) and Path(text.split("/")[0]).exists():
            match = None  # the first part is a local folder: a local path with a typo, not a repository
    if match is None:
        return local
    path = unquote(match["path"] or "").strip("/")
    return HubRef(match["repo"], path, unquote(match["revision"] or "main"), bare=match.re is BARE)


def folder_patterns(role: str, path: str) -> list[str]:
    """The allow-patterns of a folder reference `path` for `role` (see FOLDER_FILES)."""
    inside = [str(PurePosixPath(path, p)) if path else p for p in FOLDER_FILES[role]]
    parent = str(PurePosixPath(path).parent) if path else ""
    beside = [p if parent in ("", ".") else f"{parent}/{p}" for p in BESIDE_FILES.get(role, ()) if path]
    return inside + beside


def plan(ref: HubRef, role: str) -> Plan:
    """Ask the Hub what `ref` is (a file or a folder), which files `role` needs from it and how big they
    are, downloading nothing. Without a connection the plan says so and `fetch` looks in the cache."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return Plan(ref, role, is_file=_looks_like_file(ref), offline="HF_HUB_OFFLINE is set")
    try:
        return _ask_hub(ref, role)
    except HubError:
        raise
    except Exception as error:  # the network's own errors: their types come from the HTTP library
        if _hub_http_status(error) is not None:
            raise HubError(_http_message(ref, error)) from error
        why = f"cannot reach the Hub at {constants.ENDPOINT} ({error})"
        return Plan(ref, role, is_file=_looks_like_file(ref), offline=why)


def _ask_hub(ref: HubRef, role: str) -> Plan:
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import EntryNotFoundError, filter_repo_objects

    if ref.path:
        try:
            meta = get_hf_file_metadata(hf_hub_url(ref.repo_id, ref.path, revision=ref.revision))
            missing = 0 if _cached(ref, ref.path) else meta.size
            return Plan(ref, role, True, (ref.path,), meta.size, missing)
        except EntryNotFoundError:
            pass  # not a file: a folder, or nothing
    api = HfApi()
    tree = api.list_repo_tree(ref.repo_id, recursive=True, revision=ref.revision)
    sizes = {f.path: f.size for f in tree if getattr(f, "size", None) is not None}  # files; folders have no size
    if ref.path and not any(name.startswith(f"{ref.path}/") for name in sizes):
        raise HubError(_not_found(ref, sizes))
    files = tuple(filter_repo_objects(sizes, allow_patterns=folder_patterns(role, ref.path), ignore_patterns=IGNORED))
    if not files:
        wanted = ", ".join(FOLDER_FILES[role])
        raise HubError(f"{ref}: holds none of the files this option reads ({wanted})")
    missing = sum(sizes[f] for f in files if not _cached(ref, f))
    return Plan(ref, role, False, files, sum(sizes[f] for f in files), missing)


def _not_found(ref: HubRef, sizes: dict[str, int]) -> str:
    """The message for a path that is neither a file nor a folder of the repository, with near names."""
    names = set(sizes) | {str(p) for name in sizes for p in PurePosixPath(name).parents if str(p) != "."}
    near = difflib.get_close_matches(ref.path, sorted(names), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(f'{ref.repo_id}/{n}' for n in near)}?" if near else ""
    return f"{ref}: {ref.repo_id} has no file or folder {ref.path!r} at revision {ref.revision}.{hint}"


def _cached(ref: HubRef, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(ref.repo_id, filename, revision=ref.revision), str)


def _looks_like_file(ref: HubRef) -> bool:
    """Offline, a path with a file extension is taken as a file (the Hub cannot be asked)."""
    return PurePosixPath(ref.path).suffix in (".safetensors", ".gguf", ".model", ".json", ".sft")


def _hub_http_status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _http_message(ref: HubRef, error: BaseException) -> str:
    """The Hub's answer to `ref` in words: which part of the reference is wrong and what to do."""
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(error, GatedRepoError):
        return (
            f"{ref}: {ref.repo_id} is gated: accept its terms on huggingface.co/{ref.repo_id} and log in "
            "(`hf auth login`, or set HF_TOKEN)"
        )
    if isinstance(error, RepositoryNotFoundError):
        local = "there is no such local file or folder, and " if ref.bare else ""
        return (
            f"{ref}: {local}there is no repository {ref.repo_id} on the Hugging Face Hub (or it is private: log "
            f"in with `hf auth login` or set HF_TOKEN). Check the spelling; Hub references look like "
            f"{DEFAULT_REPO}/<file>"
        )
    if isinstance(error, RevisionNotFoundError):
        return f"{ref}: {ref.repo_id} has no revision {ref.revision!r}; use a branch, tag or commit that exists"
    return f"{ref}: the Hub answered HTTP {_hub_http_status(error)} ({error})"


def check_space(plans: list[Plan]) -> None:
    """Raise HubError when the downloads planned do not fit on the cache's disk."""
    from huggingface_hub import constants

    needed = sum(p.missing or 0 for p in plans)
    if not needed:
        return
    cache = Path(constants.HF_HUB_CACHE)
    existing = next(p for p in (cache, *cache.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise HubError(
            f"the downloads need {gigabytes(needed)} in the Hugging Face cache ({cache}) but only "
            f"{gigabytes(free)} is free there: free some space, or set HF_HOME to a folder on a larger disk"
        )


def fetch(p: Plan) -> Path:
    """Download (or find in the cache) what `p` planned; returns the local file or folder."""
    from huggingface_hub import constants, hf_hub_download, snapshot_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    ref = p.ref
    try:
        if p.is_file:
            local = hf_hub_download(ref.repo_id, ref.path, revision=ref.revision, local_files_only=bool(p.offline))
            return Path(local)
        root = snapshot_download(
            ref.repo_id,
            revision=ref.revision,
            allow_patterns=folder_patterns(p.role, ref.path) if p.offline else list(p.files),
            ignore_patterns=list(IGNORED),
            local_files_only=bool(p.offline),
        )
    except Exception as error:  # not in the cache while offline, or the connection broke during the download
        if _hub_http_status(error) is not None:
            raise HubError(_http_message(ref, error)) from error
        cache = constants.HF_HUB_CACHE
        if isinstance(error, LocalEntryNotFoundError) and p.offline:
            raise HubError(
                f"{ref}: {p.offline}, and it is not in the cache ({cache}). Connect to the internet and run "
                "again, or download it yourself and pass its local path"
            ) from error
        raise HubError(f"{ref}: the download failed ({error}). Run again: it resumes where it stopped") from error
    local = Path(root, ref.path)
    if not local.exists():
        raise HubError(f"{ref}: not in the cached copy of {ref.repo_id} ({root}); run again with a connection")
    return local


def gigabytes(size: int | None) -> str:
    return "unknown size" if size is None else f"{size / 1e9:.2f} GB" if size >= 1e7 else f"{size / 1e6:.2f} MB"


def describe(p: Plan) -> str:
    """One line for the log: what happens to the reference, how many files, how much to download."""
    if p.offline:
        return f"{p.offline}: looking for {p.ref} in the cache"
    what = "" if p.is_file else f"{len(p.files)} files, "
    if not p.missing:
        return f"using {p.ref} ({what}{gigabytes(p.size)}, in the cache)"
    return f"downloading {p.ref} ({what}{gigabytes(p.size)}, {gigabytes(p.missing)} to download)"
