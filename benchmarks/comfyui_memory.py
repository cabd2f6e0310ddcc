"""Memory over 20 prompts with model switches, inside a real ComfyUI server (issue #14, low-memory paths).

Full-size random-weight files (benchmarks/model_files.py, sparse: written in seconds) in two sets: "bf16"
(the 2B 0.9.1 single-file checkpoint with its VAE, T5-XXL in bf16) and "quantized" (the 2B transformer as
GGUF Q8_0, the 0.9.1 VAE file, T5-XXL in fp8). The pack's text-to-video graph runs 20 times at
768×512×49 with 4 steps, in rounds of four prompts: bf16/default, quantized/default, bf16/low_vram,
quantized/low_vram. Every prompt changes the loaders' inputs, so every prompt loads its models anew
and ComfyUI drops those of the prompt before. After each prompt (test node LTXTestDeviceMemory, in
the server, after the saved video; and nvidia-smi) it records the prompt's time, PyTorch's GPU memory
in the server (allocated, reserved, peak during the prompt), the GPU memory in use (nvidia-smi), the
server's resident host memory, the models core holds loaded and the pack's live block streamers (the
first prompt of each set and mode includes compiling the fused kernels). After every round it asks
`/free` to unload the models (the menu's *Unload models*) and records again, with the round's last
prompt queued once more (all cached but the report: its models stay in the cache, in CPU memory, as in
an idle server); at the end `/free` also drops the node cache.

It prints a table, writes the records to JSON (default ./comfyui_memory.json, or $OUT/, with the server's log
beside it), and then checks, failing with exit status 1:
  1. every prompt ran (within --budget-s) and succeeded;
  2. the memory mode took effect: 2 block streamers (transformer and T5) after a low_vram prompt, none
     after a default one;
  3. GPU memory does not grow with the number of prompts: after each prompt, allocated and reserved
     memory are at most those after the first prompt of the same set and mode + 512 MiB (a model kept by
     mistake is ≥ 1.9 GB: the VAE), and nvidia-smi's used memory at most the first round's highest
     + 1 GiB (it also counts the blocks PyTorch's allocator keeps cached from the prompt before, of
     another set or mode, so it is compared with the whole first round);
  4. `/free` gives the GPU back, and no less after later rounds: nothing of the pack stays loaded or
     streamed, and allocated (nvidia-smi) memory after each round's /free is at most the first
     round's + 256 MiB (512 MiB);
  5. host memory is bounded: after the first round (in which the process meets all it will hold),
     resident memory never exceeds the first round's highest by more than 1 GiB (half the smallest
     model, the 1.9 GB VAE: any model or packed copy kept alive shows).
With --tiny (2-block transformers of 42 and 85 MB) the tolerance of 5 is 64 MiB.

On a GPU (from ComfyUI's source tarball; ComfyUI's requirements installed first):
  python3 benchmarks/comfyui_memory.py --tarball DIR/ComfyUI-a125cd84.tar.gz --budget-s 450
CPU, tiny models, against an installed ComfyUI (COMFYUI_PATH, COMFYUI_PYTHON as for the tests):
  python benchmarks/comfyui_memory.py --tiny --cpu
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfyui_server import (  # noqa: E402
    FROM_MODEL,
    gpu_name,
    gpu_used_bytes,
    start_server,
    text_to_video,
    unpack_comfyui,
)
from model_files import CHECKPOINT, FULL, GGUF, T5_BF16, T5_FP8, TINY, VAE, ModelSizes, file_bytes, write_model_files  # noqa: E402

from comfy_server import Server  # noqa: E402

GiB, MiB = 2**30, 2**20
SETS = {  # model loader's file, its VAE, the text encoder
    "bf16": (CHECKPOINT, FROM_MODEL, T5_BF16),
    "quantized": (GGUF, VAE, T5_FP8),
}
ROUND = (("bf16", "default"), ("quantized", "default"), ("bf16", "low_vram"), ("quantized", "low_vram"))
STREAMED = 2  # modules low_vram streams: the transformer and T5
GPU_TOLERANCE = 512 * MiB  # allocated after a prompt vs the same state's first (allocator rounding, workspaces)
SMI_TOLERANCE = GiB  # nvidia-smi's used memory, which also sees the allocator's cached blocks
FREE_TOLERANCE = 256 * MiB  # allocated after /free vs the first /free's
FREE_SMI_TOLERANCE = 512 * MiB


@dataclass(frozen=True)
class Preset:
    """Model sizes, the prompt's size, and how far resident memory may rise after the first round."""

    models: ModelSizes
    width: int
    height: int
    frames: int
    steps: int
    rss_tolerance: int


PRESETS = {
    "full": Preset(FULL, 768, 512, 49, 4, rss_tolerance=GiB),
    "tiny": Preset(TINY, 64, 96, 17, 2, rss_tolerance=64 * MiB),
}


# --- measuring ----------------------------------------------------------------------------------------


def _memory_report(server: Server, prompt: dict | None = None) -> tuple[dict, dict | None]:
    """Run `prompt` (or nothing) with LTXTestDeviceMemory after its saved video; returns (record of the
    run, the node's report or None when the prompt failed before it)."""
    prompt = dict(prompt or {})
    prompt["99"] = {"class_type": "LTXTestDeviceMemory", "inputs": {"after": ["12", 0]} if "12" in prompt else {}}
    run = server.run(prompt, timeout=600)
    messages = dict(run.history["status"]["messages"])
    record = {"status": run.status, "executed": len(run.executed())}  # nodes run, not served from the cache
    if run.status != "success":
        error = messages.get("execution_error", {})
        record["error"] = f"{error.get('node_type')}: {error.get('exception_message', '').strip()}"[:2000]
        return record, None
    (report,) = run.outputs["99"]["memory"]
    record["wall_s"] = report["started"] - messages["execution_start"]["timestamp"] / 1000  # before the report
    return record, report


def _flatten(report: dict) -> dict:
    cuda = report["cuda"] or {}
    return {
        "allocated": cuda.get("allocated"),
        "reserved": cuda.get("reserved"),
        "peak_allocated": cuda.get("peak_allocated"),
        "peak_reserved": cuda.get("peak_reserved"),
        "gpu_used": gpu_used_bytes(),
        "rss": report["rss"],
        "rss_peak": report["rss_peak"],
        "rss_file": report["rss_file"],
        "streamers": report["streaming"]["streamers"],
        "streamed_bytes": report["streaming"]["host_bytes"],
        "pinned_bytes": report["streaming"]["pinned_bytes"],
        "models": {m["name"]: m["loaded_size"] for m in report["models"]},
    }


def measure_prompt(server: Server, prompt: dict) -> dict:
    record, report = _memory_report(server, prompt)
    if report is None:  # measure anyway, after the failed prompt
        record.update(_flatten(_memory_report(server)[1]))
    else:
        record.update(_flatten(report))
    return record


def free(server: Server, again: dict | None, free_memory: bool = False) -> dict:
    """POST /free to unload the models (the menu's *Unload models*; with `free_memory` also drop the node
    cache), then measure once the server has acted on it (it does between prompts, so the first
    measurement may run before). Measured by queueing `again`, the last prompt once more: all of it
    but the report comes from the cache, which keeps its models alive in CPU memory as a user's idle
    server does. (A prompt of the report alone would make the cache drop them.) None: the report alone."""
    status, _ = server.post("/free", {"unload_models": True, "free_memory": free_memory})
    if status != 200:
        raise RuntimeError(f"/free answered {status}")
    for _ in range(20):
        time.sleep(0.5)
        record, report = _memory_report(server, again)
        if report is None:
            raise RuntimeError(f"the measuring prompt failed after /free: {record}")
        record.pop("wall_s")
        if not _pack_models(m["name"] for m in report["models"]) and report["streaming"]["streamers"] == 0:
            break
    return record | _flatten(report)


# --- the run ------------------------------------------------------------------------------------------


def run_prompts(server: Server, preset: Preset, prompts: int, deadline: float, save) -> list[dict]:
    """`prompts` prompts in rounds of ROUND, /free after each round and at the end; `save(records)`
    after each record. No prompt starts after `deadline` (time.monotonic())."""
    records = [{"stage": "idle", **_flatten(_memory_report(server)[1])}]
    save(records)
    size = dict(width=preset.width, height=preset.height, frames=preset.frames, steps=preset.steps)
    ran = 0
    while ran < prompts and time.monotonic() < deadline:
        name, memory = ROUND[ran % len(ROUND)]
        prompt = text_to_video(*SETS[name], memory, seed=ran, **size)
        ran += 1
        records.append({"stage": "prompt", "index": ran, "set": name, "mode": memory, **measure_prompt(server, prompt)})
        save(records)
        if ran % len(ROUND) == 0:
            records.append({"stage": "free", "index": ran, **free(server, again=prompt)})
            save(records)
    if ran < prompts:
        print(f"--budget-s spent: stopped after {ran} prompts", flush=True)
    records.append({"stage": "free+cache", "index": ran, **free(server, again=None, free_memory=True)})
    save(records)
    return records


# --- report and checks --------------------------------------------------------------------------------

SHORT_NAMES = {"LTXPackLTXVideoTransformer": "transformer", "LTXPackVideoVAE": "vae", "LTXPackT5TextEncoder": "t5"}
COLUMNS = ("status", "wall s", "alloc", "reserved", "peak", "smi", "RSS", "RSS max", "strm")
TABLE_HEADER = f"{'# prompt or stage':<22}" + "".join(f"{c:>9}" for c in COLUMNS) + "  loaded (GiB on the device)"


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GiB:.3f}"


def table_row(record: dict) -> str:
    """One line per record: memory in GiB (alloc, reserved: PyTorch's in the server now; peak: allocated
    during the prompt; smi: nvidia-smi's used; RSS and its peak), block streamers, loaded models."""
    what = f"{record['set']} {record['mode']}" if record["stage"] == "prompt" else record["stage"]
    wall = f"{record['wall_s']:.1f}" if record["stage"] == "prompt" and "wall_s" in record else "-"
    cells = [record.get("status", ""), wall]
    cells += [_gib(record[k]) for k in ("allocated", "reserved", "peak_allocated", "gpu_used", "rss", "rss_peak")]
    cells.append(record["streamers"])
    loaded = " ".join(f"{SHORT_NAMES.get(n, n)}:{_gib(size)}" for n, size in record["models"].items())
    return f"{record.get('index', ''):>2} {what:<19}" + "".join(f"{c:>9}" for c in cells) + f"  {loaded}"


def _exceeds(value: int | None, reference: int | None, tolerance: int) -> bool:
    """value > reference + tolerance, where both were measured (nvidia-smi only where there is one)."""
    return value is not None and reference is not None and value > reference + tolerance


def _pack_models(models) -> list[str]:
    return [name for name in models if name.startswith("LTXPack")]


def _all_ran(prompts: list[dict], wanted: int) -> tuple[bool, str]:
    failed = [f"#{r['index']}: {r.get('error', r['status'])}" for r in prompts if r["status"] != "success"]
    return len(prompts) == wanted and not failed, f"{len(prompts)} of {wanted} prompts ran, failed: {failed or 'none'}"


def _modes_took_effect(prompts: list[dict]) -> tuple[bool, str]:
    wrong = [
        f"#{r['index']} {r['mode']}: {r['streamers']}"
        for r in prompts
        if r["streamers"] != STREAMED * (r["mode"] == "low_vram")
    ]
    return (
        not wrong,
        f"{STREAMED} block streamers after each low_vram prompt, none after default ones: {wrong or 'yes'}",
    )


def _gpu_flat_over_prompts(prompts: list[dict]) -> tuple[bool, str]:
    first: dict[tuple[str, str], dict] = {}
    smi = [r["gpu_used"] for r in prompts[: len(ROUND)] if r["gpu_used"] is not None]
    smi_bound = max(smi) + SMI_TOLERANCE if smi else None
    grew = []
    for r in prompts:
        base = first.setdefault((r["set"], r["mode"]), r)
        for key in ("allocated", "reserved"):
            if _exceeds(r[key], base[key], GPU_TOLERANCE):
                grew.append(f"#{r['index']} {key} {_gib(r[key])} > {_gib(base[key])} GiB of #{base['index']}")
        if _exceeds(r["gpu_used"], smi_bound, 0):
            grew.append(f"#{r['index']} nvidia-smi {_gib(r['gpu_used'])} > {_gib(smi_bound)} GiB")
    rule = (
        f"allocated and reserved ≤ the same set and mode's first prompt's + {GPU_TOLERANCE / GiB:g} GiB, "
        f"nvidia-smi ≤ the first round's highest + {SMI_TOLERANCE / GiB:g} GiB"
    )
    return not grew, f"GPU memory after each prompt: {rule}: {grew or 'yes'}"


def _free_gives_back(frees: list[dict]) -> tuple[bool, str]:
    held = [
        f"after #{r['index']}: {_pack_models(r['models'])}, {r['streamers']} streamers"
        for r in frees
        if _pack_models(r["models"]) or r["streamers"]
    ]
    grew = [
        f"#{r['index']} {key} {_gib(r[key])} > {_gib(frees[0][key])} GiB"
        for r in frees[1:]
        for key, tolerance in (("allocated", FREE_TOLERANCE), ("gpu_used", FREE_SMI_TOLERANCE))
        if _exceeds(r[key], frees[0][key], tolerance)
    ]
    rule = f"+ {FREE_TOLERANCE / GiB:g} GiB allocated, + {FREE_SMI_TOLERANCE / GiB:g} GiB nvidia-smi"
    found = f"nothing of the pack loaded or streamed after /free: {held or 'yes'}; "
    found += f"GPU memory after each /free ≤ the first /free's {rule}: {grew or 'yes'}"
    return bool(frees) and not held and not grew, found


def _rss_bounded(prompts: list[dict], tolerance: int) -> tuple[bool, str]:
    first_round, later = prompts[: len(ROUND)], prompts[len(ROUND) :]
    bound = max((r["rss"] for r in first_round), default=0) + tolerance
    over = [f"#{r['index']}: {_gib(r['rss'])} GiB" for r in later if r["rss"] > bound]
    rule = f"{_gib(bound)} GiB (the first round's highest + {tolerance / MiB:.0f} MiB)"
    found = (over or "yes") if later else "no prompt after the first round to compare"
    return bool(later) and not over, f"resident memory after the first round ≤ {rule}: {found}"


def check(records: list[dict], preset: Preset, prompts: int) -> list[tuple[bool, str]]:
    """The checks of the module docstring, in its order: (passed, what was found) each."""
    ran = [r for r in records if r["stage"] == "prompt"]
    frees = [r for r in records if r["stage"] == "free"]
    return [
        _all_ran(ran, prompts),
        _modes_took_effect(ran),
        _gpu_flat_over_prompts(ran),
        _free_gives_back(frees),
        _rss_bounded(ran, preset.rss_tolerance),
    ]


# --- main -------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tarball", type=Path, help="ComfyUI's source tarball, unpacked into --workdir")
    source.add_argument("--comfyui", type=Path, help="an installed ComfyUI (default: $COMFYUI_PATH)")
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON", sys.executable), help="ComfyUI's Python")
    parser.add_argument("--tiny", action="store_true", help="tiny models and video (to check this on the CPU)")
    parser.add_argument("--cpu", action="store_true", help="ComfyUI with --cpu (low_vram then streams to the CPU)")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--fill", choices=("sparse", "random"), default="sparse", help="bulk weights (model_files.py)")
    parser.add_argument("--workdir", type=Path, help="for ComfyUI, its base folder and models (default: temporary)")
    parser.add_argument("--json", type=Path, default=Path(os.environ.get("OUT", ".")) / "comfyui_memory.json")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="start no prompt after this many s")
    args = parser.parse_args()
    args.comfyui = args.comfyui or (Path(os.environ["COMFYUI_PATH"]) if "COMFYUI_PATH" in os.environ else None)
    if args.tarball is None and args.comfyui is None:
        parser.error("give --tarball or --comfyui (or set COMFYUI_PATH)")
    return args


class Results:
    """The JSON file, rewritten after every record (what a run cut short leaves is still there), and
    the table, printed as records come."""

    def __init__(self, path: Path, settings: dict) -> None:
        self.path, self.settings, self.shown, self.gpu = path, settings, 0, gpu_name()
        path.parent.mkdir(parents=True, exist_ok=True)

    def save(self, records: list[dict], checks: list | None = None) -> None:
        content = {"gpu": self.gpu, "settings": self.settings, "records": records}
        self.path.write_text(json.dumps(content | ({"checks": checks} if checks else {}), indent=1))
        for record in records[self.shown :]:
            print(table_row(record), flush=True)
        self.shown = len(records)


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    preset = PRESETS["tiny" if args.tiny else "full"]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="comfyui-memory-"))
    comfyui = unpack_comfyui(args.tarball, work) if args.tarball else args.comfyui
    base = work / "base"
    files = write_model_files(base / "models", preset.models, args.fill)
    size = file_bytes(files.values()) / 1e9
    print(f"model files ({args.fill}): {size:.1f} GB in {time.monotonic() - started:.0f} s", flush=True)
    settings = {k: v for k, v in preset.__dict__.items() if k != "models"} | {k: str(v) for k, v in vars(args).items()}
    results = Results(args.json, settings)
    server = None
    try:
        server = start_server(comfyui, base, args.python, cpu=args.cpu)
        print(f"server up at {time.monotonic() - started:.0f} s; GPU: {results.gpu or 'none'}", flush=True)
        if args.cpu:  # low_vram streams to the CPU as to a GPU (the streamers' bookkeeping then runs here)
            server.run({"1": {"class_type": "LTXTestMemoryReport", "inputs": {"stream_on_cpu": True}}})
        print(TABLE_HEADER, flush=True)
        records = run_prompts(server, preset, args.prompts, started + args.budget_s, results.save)
    finally:
        if server is not None:
            server.stop()
        if (base / "server.log").is_file():
            shutil.copy(base / "server.log", args.json.with_name(args.json.stem + "_server.log"))
    checks = check(records, preset, args.prompts)
    results.save(records, checks)
    print(f"\n{time.monotonic() - started:.0f} s in all; records in {args.json}")
    for passed, found in checks:
        print(f"{'ok    ' if passed else 'FAILED'} {found}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    if not all(passed for passed, _ in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
