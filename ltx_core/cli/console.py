"""What the generator shows on stderr: the core's log, each line stamped with the time since the start,
and the sampling progress with the time per step."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger("ltx_core.generate")  # one name for the command's messages


@contextmanager
def console(quiet: bool) -> Iterator[None]:
    """Show the core's log on stderr, each line stamped with the seconds since the start, for the
    duration of the block; with `quiet` only errors and warnings (and no download bars)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    start = time.time()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Stamped(start))
    package = logging.getLogger("ltx_core")
    saved = package.level, package.propagate, are_progress_bars_disabled()
    package.addHandler(handler)
    package.setLevel(logging.WARNING if quiet else logging.INFO)
    package.propagate = False
    if quiet:
        disable_progress_bars()
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.level, package.propagate = saved[0], saved[1]
        if quiet and not saved[2]:
            enable_progress_bars()


class _Stamped(logging.Formatter):
    """`[  12.3 s] message`: the time since the command started, so each stage's duration shows."""

    def __init__(self, start: float) -> None:
        super().__init__()
        self.start = start

    def format(self, record: logging.LogRecord) -> str:
        return f"[{record.created - self.start:6.1f} s] {record.getMessage()}"


class ProgressBar:
    """Sampling progress: one updating line on a terminal (a line per step otherwise) with the time per
    step. The clock starts at the transformer's first call (`start`), after the prompt is encoded; the
    rate leaves out the first step, which on a GPU includes compiling the fused kernels."""

    def __init__(self, frames: int) -> None:
        self.started: float | None = None
        self.first_done = 0.0
        self.frames = frames
        self.tty = sys.stderr.isatty()

    def start(self, *_: object) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def __call__(self, step: int, total: int, denoised: torch.Tensor) -> None:
        done, now = step + 1, time.perf_counter()
        if done == 1:
            self.first_done = now
            rate = f"{now - (self.started or now):.2f} s for the first step"
        else:
            rate = f"{(now - self.first_done) / (done - 1):.2f} s/step"
        line = f"sampling {done}/{total} [{'#' * (30 * done // total):<30}] {rate}"
        if self.tty and log.isEnabledFor(logging.INFO):  # one line, rewritten in place
            print(f"\r{line:<80}", end="\n" if done == total else "", file=sys.stderr, flush=True)
        else:
            log.info(line)
        if done == total:
            log.info("decoding %d frames …", self.frames)
