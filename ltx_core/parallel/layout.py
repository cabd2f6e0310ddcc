"""How one generation is spread over the processes of a `torch.distributed` group: world = cfg × ulysses.

Ranks are laid out ulysses-minor: rank = cfg_rank · ulysses + ulysses_rank, so the processes that
exchange activations at every attention (one Ulysses group) are neighbours, on the GPUs of one host
(joined by NVLink) when the world spans several, and the processes that only exchange one step's
velocities (the cfg groups) are the far ones.

Every rank holds the whole sampling state (latents, noise, sigmas, prompts) and runs the whole loop;
only the model call (denoise.py) and the VAE decode (vae.py) are split. Noise comes from the same
seeded CPU generator on every rank, so a seed gives the same video whatever the world size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist


def split_sizes(total: int, parts: int) -> list[int]:
    """`total` items in `parts` contiguous runs as even as can be, the longer runs first:
    split_sizes(7, 3) == [3, 2, 2]."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def span(sizes: list[int], index: int) -> slice:
    """The items of run `index` of `sizes`."""
    start = sum(sizes[:index])
    return slice(start, start + sizes[index])


@dataclass(frozen=True, eq=False)
class Parallel:
    """The layout of a generation over `group`'s processes (this one being `rank` in it) and the process
    groups it communicates over: `ulysses_group` (this rank's Ulysses group: the ranks that split one
    batch row's tokens), `cfg_group` (the ranks with this rank's ulysses_rank: one per share of the
    batch rows). Made by `init_parallel`; one per process, shared by every model call and decode."""

    cfg: int
    ulysses: int
    rank: int
    group: dist.ProcessGroup | None  # None: the default (world) group
    ulysses_group: dist.ProcessGroup | None
    cfg_group: dist.ProcessGroup | None

    @property
    def world(self) -> int:
        return self.cfg * self.ulysses

    @property
    def cfg_rank(self) -> int:
        return self.rank // self.ulysses

    @property
    def ulysses_rank(self) -> int:
        return self.rank % self.ulysses

    def describe(self) -> str:
        return f"{self.world} processes: CFG-parallel {self.cfg} × Ulysses {self.ulysses} (this is rank {self.rank})"


def choose_layout(world: int, cfg: int | None = None, ulysses: int | None = None) -> tuple[int, int]:
    """(cfg, ulysses) with cfg · ulysses = world from what is given: both, one of them (the other
    follows), or neither: CFG-parallel over 2 when the world is even (guidance's two branches then cost
    one exchange per step instead of two per layer), Ulysses over the rest."""
    if cfg is None and ulysses is None:
        cfg = 2 if world % 2 == 0 else 1
    if cfg is None:
        cfg = world // ulysses if ulysses and world % ulysses == 0 else 0
    if ulysses is None:
        ulysses = world // cfg if cfg and world % cfg == 0 else 0
    if cfg < 1 or ulysses < 1 or cfg * ulysses != world:
        raise ValueError(
            f"CFG-parallel {cfg} × Ulysses {ulysses} does not make the {world} processes started: give sizes whose "
            f"product is {world} (e.g. --cfg-parallel {2 if world % 2 == 0 else 1} --ulysses "
            f"{world // 2 if world % 2 == 0 else world}), or start as many processes as their product"
        )
    return cfg, ulysses


def init_parallel(
    cfg: int | None = None, ulysses: int | None = None, group: dist.ProcessGroup | None = None
) -> Parallel:
    """The layout over `group` (default: the world) of an initialised `torch.distributed`, with its
    process groups; cfg and ulysses as `choose_layout` reads them. Every process of the group must call
    this, in the same order as its other group creations (`dist.new_group` is collective)."""
    if not dist.is_initialized():
        raise RuntimeError(
            "torch.distributed is not initialised: start the processes with torchrun (or call "
            "torch.distributed.init_process_group) before init_parallel"
        )
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    cfg, ulysses = choose_layout(world, cfg, ulysses)
    ranks = dist.get_process_group_ranks(group) if group is not None else list(range(world))
    ulysses_group = cfg_group = None
    for k in range(cfg):  # every process creates every group, in one order
        new = dist.new_group([ranks[k * ulysses + j] for j in range(ulysses)])
        ulysses_group = new if k == rank // ulysses else ulysses_group
    for j in range(ulysses):
        new = dist.new_group([ranks[k * ulysses + j] for k in range(cfg)])
        cfg_group = new if j == rank % ulysses else cfg_group
    return Parallel(cfg, ulysses, rank, group, ulysses_group, cfg_group)
