"""The order samples are visited in: a seeded shuffle per epoch, sharded across processes.

It yields ``(index, epoch)`` pairs, so each sample's random draws are fixed by (seed, epoch, index).
Rank r of W takes positions r, r+W, ...: with a per-process batch of B/W, step k of every rank together
covers exactly the B samples one process takes at step k, which makes DDP equal to one process.
"""

from __future__ import annotations

from typing import Iterator

import torch


class EpochOrder(torch.utils.data.Sampler):
    """Indices of one epoch (shuffled by ``seed`` and the epoch when ``shuffle``), for one rank."""

    def __init__(self, length: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 global_batch: int | None = None):
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size = rank, world_size
        # Drop the ragged tail so every rank takes the same number of full steps (the last global batch too).
        usable = length if global_batch is None else length - length % global_batch
        self.per_rank = usable // world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=gen).tolist()
        else:
            order = list(range(self.length))
        mine = order[self.rank:self.per_rank * self.world_size:self.world_size]
        return iter([(i, self.epoch) for i in mine])
