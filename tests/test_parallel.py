"""One video over several processes (ltx_core/parallel) equals the one-process result: CFG-parallel, Ulysses
and both together, on 2 and 4 gloo processes on the CPU, for every case of parallel_cases.py (token counts
that 2 and 4 do not divide, keyframes with appended tokens, STG's third branch, two videos, stochastic
steps, the VAE decode split along time, the whole text_to_video), with a broken all-to-all as the
negative control; the generator under torchrun; and the pieces that need no processes: the layout, the
plan of each rank's calls and the decode's frame split.

Tolerance: 1e-5 of the result's largest magnitude (float32). Ulysses splits change no operation's
shape along its reduction and come out bit-equal here; a CFG-parallel share of one row runs the
timestep embedding as a matrix-vector product where two rows ran a matrix product, a few ulps per
forward, and the split decode runs its convolutions on shorter clips (measured: at most 1.1e-6 of the
largest value, 7e-6 absolute on latents up to 10; the broken all-to-all: 0.4 to 0.7).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import parallel_cases
from ltx_core.generate import main
from ltx_core.media import read_video
from ltx_core.model.vae.decoder_stream import Step
from ltx_core.parallel import choose_layout, split_sizes
from ltx_core.parallel.denoise import plan_calls
from ltx_core.parallel.layout import Parallel
from ltx_core.parallel.vae import frames_per_step
from tiny import write_tiny_checkpoints

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5
LAYOUTS = {2: [(2, 1), (1, 2)], 4: [(2, 2), (1, 4), (4, 1)]}  # world → (cfg, ulysses) layouts run on it


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    """Every case in this one process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: case(None) for name, case in parallel_cases.CASES.items()}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def split(request, tmp_path_factory) -> dict[tuple, object]:
    """{(case, cfg, ulysses, rank): result} for every case on every layout of a world of 2 or 4 gloo processes
    (one spawn each: about 3 and 6 s)."""
    world = request.param
    folder = tmp_path_factory.mktemp(f"world{world}")
    out = str(folder / "rank{rank}.pt")
    mp.spawn(parallel_cases.run_ranks, args=(world, str(folder / "init"), LAYOUTS[world], out), nprocs=world)
    return {(*key, rank): value for rank in range(world) for key, value in torch.load(out.format(rank=rank)).items()}


def _error(result: torch.Tensor, reference: torch.Tensor) -> float:
    assert result.shape == reference.shape
    return (result - reference).abs().max().item() / max(1.0, reference.abs().max().item())


@pytest.mark.parametrize("case", sorted(parallel_cases.CASES))
def test_every_layout_equals_one_process(split, expected, case):
    for (name, cfg, ulysses, rank), result in split.items():
        if name == case:
            where = f"{case} on CFG-parallel {cfg} × Ulysses {ulysses}, rank {rank}"
            assert _error(result, expected[case]) <= TOLERANCE, where


def test_ulysses_is_installed_through_the_ops_seam(split):
    # every layout ran some call with split tokens: CFG-parallel alone splits the third (STG) row's
    described = [line for (name, *_), line in split.items() if name == "ops"]
    assert described, "each layout said how the transformer computed"
    for line in described:
        assert "ulysses+fused ops" in line and "self-attention split over tokens" in line, line


def test_a_wrong_all_to_all_order_is_caught(split, expected):
    wrong = {key: result for key, result in split.items() if key[0] == "wrong_order"}
    assert wrong, "the negative control ran"
    for result in wrong.values():
        assert _error(result, expected["cfg"]) > 0.1


def test_layouts_from_what_is_given():
    assert choose_layout(2) == (2, 1)
    assert choose_layout(4) == (2, 2)
    assert choose_layout(3) == (1, 3)
    assert choose_layout(4, ulysses=4) == (1, 4)
    assert choose_layout(8, cfg=2) == (2, 4)
    for bad in [dict(cfg=3), dict(cfg=2, ulysses=1), dict(ulysses=3)]:
        with pytest.raises(ValueError, match="whose product is 4"):
            choose_layout(4, **bad)


def test_split_sizes_put_the_longer_runs_first():
    assert split_sizes(45, 4) == [12, 11, 11, 11]
    assert split_sizes(3, 2) == [2, 1]
    assert sum(split_sizes(6143, 8)) == 6143


def _calls(cfg: int, ulysses: int, rows: int, tokens: int = 45, heads: int = 4) -> list[list[tuple]]:
    layout = Parallel(cfg, ulysses, 0, None, None, None)
    plan = plan_calls(layout, rows, tokens, heads)
    return [[(c.rows.start, c.rows.stop, c.tokens.start, c.tokens.stop, c.whole_world) for c in r] for r in plan]


def test_rows_left_over_by_cfg_parallel_are_split_over_every_rank():
    # CFG on 2 ranks: one row each, no tokens exchanged
    assert _calls(2, 1, 2) == [[(0, 1, 0, 45, False)], [(1, 2, 0, 45, False)]]
    # CFG + STG on 2 ranks: one row each, the third row's tokens split over both (1.5 rows of work each)
    assert _calls(2, 1, 3) == [
        [(0, 1, 0, 45, False), (2, 3, 0, 23, True)],
        [(1, 2, 0, 45, False), (2, 3, 23, 45, True)],
    ]
    # one row (no guidance) on CFG-parallel 2 × Ulysses 2: its tokens over all four ranks
    assert [r[0][2:] for r in _calls(2, 2, 1)] == [(0, 12, True), (12, 23, True), (23, 34, True), (34, 45, True)]
    # 6 heads do not divide by 4 ranks: the row left over goes to the first cfg rank's Ulysses group
    assert _calls(2, 2, 3, heads=6)[2] == [(1, 2, 0, 23, False)]
    assert _calls(2, 2, 3, heads=6)[0] == [(0, 1, 0, 23, False), (2, 3, 0, 23, False)]
    with pytest.raises(ValueError, match="divides"):
        _calls(1, 4, 2, heads=6)


def test_decode_split_keeps_each_parts_frames_and_refuses_too_short_parts():
    steps = [Step(None, 1, 1), Step(None, 2, 2), Step(None, 1, 1, stride=2), Step(None, 2, 2)]
    counts = frames_per_step(steps, [5, 4])
    assert counts[-1] == [9, 8] and sum(counts[-1]) == 2 * 9 - 1
    assert frames_per_step(steps, [2, 1]) is None  # part 1 cannot give part 0 the two frames behind it
    causal_up = [Step(None, 0, 0, stride=2)]  # reaches nothing behind: a later part still takes one frame
    assert frames_per_step(causal_up, [1, 1]) == [[1, 1], [1, 2]]


def test_the_generator_runs_under_torchrun(tmp_path, capsys):
    """torchrun with 2 processes writes the video once, the one process's video; sizes above 1 without
    torchrun, and Ulysses sizes that do not divide the heads, are refused before loading."""
    files = write_tiny_checkpoints(tmp_path / "models")
    common = ["--checkpoint", str(files["checkpoint"]), "--text-encoder", str(files["text_encoder"]), "--prompt", "fox"]
    common += ["--width", "64", "--height", "64", "--frames", "33", "--steps", "2", "--device", "cpu"]
    common += ["--dtype", "fp32", "--crf", "0"]  # lossless: H.264's encoder decisions vary between runs
    one, two = tmp_path / "one.mp4", tmp_path / "two.mp4"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # both runs in the same environment
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    for command in [
        [sys.executable, "-m", "ltx_core.generate", *common, "--output", str(one)],
        [*torchrun, "-m", "ltx_core.generate", *common, "--cfg-parallel", "2", "--output", str(two)],
    ]:
        run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.stderr.count("wrote ") == 1
    assert "CFG-parallel 2 × Ulysses 1" in run.stderr
    # the frames agree to float rounding (the `pipeline` case), which can flip an 8-bit level in YUV
    # (3/255 in RGB) at a few pixels (measured: mean 3e-7)
    difference = (read_video(one)[0] - read_video(two)[0]).abs()
    assert difference.max() <= 3.5 / 255 and difference.mean() < 1e-5

    capsys.readouterr()
    assert main([*common, "--cfg-parallel", "2", "--output", str(two)]) == 2
    assert "torchrun --nproc-per-node 2" in capsys.readouterr().err
    assert main([*common, "--ulysses", "3", "--output", str(two)]) == 2
