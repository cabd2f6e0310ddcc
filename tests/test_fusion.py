"""Fused elementwise functions: plain torch off CUDA, compiled on a fusing device, and a failing
compiler falls back to the plain function with one warning."""

from __future__ import annotations

import logging

import pytest
import torch

from ltx_core.model import fusion


@pytest.fixture
def fusing_on_cpu():
    fusion.set_fusion(True, devices=("cpu",))
    yield
    fusion.set_fusion(True)


def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def test_plain_off_the_fusing_devices(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn: compiled.append(fn) or fn)
    double = fusion.fused(_double)
    assert torch.equal(double(torch.ones(2)), torch.full((2,), 2.0))
    assert compiled == []  # CPU tensors are not fused by default


def test_compiled_once_on_a_fusing_device(monkeypatch, fusing_on_cpu):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn: compiled.append(fn) or fn)
    double = fusion.fused(_double)
    for _ in range(3):
        assert torch.equal(double(torch.ones(2)), torch.full((2,), 2.0))
    assert compiled == [_double]


def test_a_failing_compiler_falls_back(monkeypatch, fusing_on_cpu, caplog):
    def broken(*args):
        raise RuntimeError("no triton")

    monkeypatch.setattr(torch, "compile", lambda fn: broken)
    double = fusion.fused(_double)
    with caplog.at_level(logging.WARNING):
        results = [double(torch.ones(2)) for _ in range(3)]
    assert all(torch.equal(r, torch.full((2,), 2.0)) for r in results)
    assert sum("running it unfused" in r.message for r in caplog.records) == 1


def test_switched_off(monkeypatch, fusing_on_cpu):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn: compiled.append(fn) or fn)
    fusion.set_fusion(False, devices=("cpu",))
    fusion.fused(_double)(torch.ones(2))
    assert compiled == []


def test_many_shapes_stay_compiled(monkeypatch, fusing_on_cpu):
    """More variants than torch.compile's default limit of 8 (shapes the VAE meets across stages and
    tiles, here 0-dimensional to 11-dimensional tensors) all run compiled, none falls back."""
    import torch._dynamo

    torch._dynamo.reset()
    frames = []
    original = torch.compile

    def counting_compile(fn):
        def backend(graph, example_inputs):
            frames.append(len(example_inputs))
            return graph.forward

        return original(fn, backend=backend)

    monkeypatch.setattr(torch, "compile", counting_compile)
    double = fusion.fused(_double)
    for ndim in range(12):
        x = torch.ones((2,) * ndim)
        assert torch.equal(double(x), x * 2)
    assert len(frames) == 12  # one compiled graph per rank, no unfused fallback after the 8th
